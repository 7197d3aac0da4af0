/* Real-mode setup code of the test bzImage, placed right after the setup header (offset 0x268, which the
 * jump at 0x200 reaches). Boot loaders that use the 16-bit protocol (QEMU's -kernel) enter here with
 * DS = ES = SS = the setup segment. Like Linux's setup it asks the BIOS for the e820 map (INT 15h, E820h)
 * into the zero page, then switches to flat 32-bit protected mode and jumps to code32_start with
 * %esi = the zero page. VMDesk's micro-VMM skips all this and takes the 64-bit entry directly. */
    .code16
    .text
    .globl _start
_start:
    cli
    cld
    mov %ds, %ax
    mov %ax, %es
    xor %ebx, %ebx
    mov $0x2d0, %di                 /* boot_params.e820_table */
    xor %si, %si
1:  mov $0xe820, %eax
    mov $0x534d4150, %edx           /* "SMAP" */
    mov $20, %ecx
    int $0x15
    jc 2f
    cmp $0x534d4150, %eax
    jne 2f
    add $20, %di
    inc %si
    cmp $32, %si
    jae 2f
    test %ebx, %ebx
    jnz 1b
2:  mov %si, %ax
    movb %al, (0x1e8)               /* boot_params.e820_entries */

    xor %ebp, %ebp
    mov %ds, %bp
    shl $4, %ebp                    /* linear address of the zero page */
    mov $gdt, %eax
    add %ebp, %eax
    mov %eax, (gdt_ptr + 2)
    mov $pm32, %eax
    add %ebp, %eax
    mov %eax, (jmp_ptr)
    lgdtl (gdt_ptr)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(jmp_ptr)

    .code32
pm32:
    mov $0x18, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %ebp, %esi
    mov 0x214(%esi), %eax           /* code32_start */
    jmp *%eax

    .balign 8
gdt:
    .quad 0
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x10: flat 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x18: flat data */
gdt_ptr:
    .word 31
    .long 0
jmp_ptr:
    .long 0
    .word 0x10

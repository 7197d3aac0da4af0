/* Entry points of the test guest, laid out like a Linux bzImage payload: the 32-bit entry at offset 0
 * (unused: the VMM must take the 64-bit one) and the 64-bit entry at offset 0x200, entered in long mode
 * with identity page tables and %rsi = zero page. Also the real-mode trampoline application CPUs start in. */
    .section .head, "ax"
    .code32
    .globl startup_32
/* 32-bit boot protocol entry (what firmware such as QEMU's linuxboot uses): flat protected mode, paging
 * off, %esi = zero page. Builds identity page tables for the first 4 GiB and enters long mode. */
startup_32:
    cli
    mov %esi, %ebp
    mov $boot_pgt, %edi
    mov $(6 * 4096 / 4), %ecx
    xor %eax, %eax
    rep stosl
    movl $(boot_pgt + 0x1000 + 3), boot_pgt          /* PML4[0] -> PDPT */
    mov $(boot_pgt + 0x1000), %edi
    mov $(boot_pgt + 0x2000 + 3), %eax
    mov $4, %ecx
1:  mov %eax, (%edi)                                 /* PDPT[i] -> PD i */
    add $0x1000, %eax
    add $8, %edi
    loop 1b
    mov $(boot_pgt + 0x2000), %edi
    mov $0x83, %eax                                  /* 2 MiB page, writable, present */
    mov $2048, %ecx
2:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 2b
    lgdt boot_gdt_ptr
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pgt, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    mov %ebp, %esi
    ljmp $0x10, $startup_64
    .balign 8
boot_gdt:
    .quad 0
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
boot_gdt_ptr:
    .word 31
    .long boot_gdt

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    cli
    movabs $bsp_stack_top, %rsp
    mov %rsi, %rbx          /* keep the zero page across bss clearing */
    movabs $__bss_start, %rdi
    movabs $__bss_end, %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    call guest_main
2:  cli
    hlt
    jmp 2b

/* Copied to 0x6000 by the BSP; the SIPI vector 0x06 starts an AP here in real mode. Goes straight to long
 * mode on the same identity page tables (CR3 = 0x9000, built by the VMM) and jumps to ap_main. */
    .section .rodata
    .globl ap_tramp_start, ap_tramp_end
    .code16
ap_tramp_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (0x6000 + tramp_gdt_ptr - ap_tramp_start)
    mov %cr4, %eax
    or $0x20, %eax          /* PAE */
    mov %eax, %cr4
    mov $0x9000, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx   /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax    /* PG | PE */
    mov %eax, %cr0
    ljmpl $0x10, $(0x6000 + tramp64 - ap_tramp_start)
    .code64
tramp64:
    mov $0x18, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    movabs $ap_stack_top, %rsp
    movabs $ap_main, %rax
    call *%rax
3:  cli
    hlt
    jmp 3b
    .balign 8
tramp_gdt:
    .quad 0
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
tramp_gdt_ptr:
    .word 31
    .long 0x6000 + tramp_gdt - ap_tramp_start
ap_tramp_end:

    /* Outside .bss: startup_64 clears .bss while these tables are live. */
    .section .pgt, "aw", @nobits
    .balign 4096
boot_pgt:
    .space 6 * 4096

    .section .bss
    .balign 16
    .space 16384
bsp_stack_top:
    .space 16384
    .globl ap_stack_top
ap_stack_top:

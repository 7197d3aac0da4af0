/* Entry points of the test guest, laid out like a Linux bzImage payload: the 32-bit entry at offset 0
 * (unused: the VMM must take the 64-bit one) and the 64-bit entry at offset 0x200, entered in long mode
 * with identity page tables and %rsi = zero page. Also the real-mode trampoline application CPUs start in. */
    .section .head, "ax"
    .code32
    .globl startup_32
startup_32:
1:  hlt                     /* a loader that jumps here is wrong: stop visibly */
    jmp 1b

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

    .section .bss
    .balign 16
    .space 16384
bsp_stack_top:
    .space 16384
    .globl ap_stack_top
ap_stack_top:

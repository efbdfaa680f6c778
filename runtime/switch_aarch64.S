/*
 * Context switch for aarch64 (AAPCS64). rt__switch(void **save, void *to)
 * saves x19-x30, d8-d15 and FPCR in a 176-byte frame on the current stack,
 * stores sp in *save, loads `to` and restores the same frame from it
 * (FPCR is written only when it differs from the current one).
 */
#if defined(__aarch64__)
    .text
    .globl rt__switch
    .hidden rt__switch
    .type rt__switch,%function
    .p2align 4
rt__switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x10, [sp, #160]
    cmp x9, x10
    b.ne 1f
2:  add sp, sp, #176
    ret
    /* Writing FPCR may serialize: only when it differs (almost never). */
1:  msr fpcr, x10
    b 2b
    .size rt__switch,.-rt__switch

/* First instruction of a new coroutine: x19 holds the coroutine, x20 the
 * entry function, which never returns. */
    .globl rt__trampoline
    .hidden rt__trampoline
    .type rt__trampoline,%function
    .p2align 4
rt__trampoline:
    mov x29, #0
    mov x30, #0
    mov x0, x19
    blr x20
    brk #0
    .size rt__trampoline,.-rt__trampoline
#endif
    .section .note.GNU-stack,"",%progbits

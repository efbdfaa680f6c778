/*
 * Context switch for x86_64 (System V). rt__switch(void **save, void *to)
 * pushes the callee-saved registers and the FP control state (MXCSR and the
 * x87 control word), stores the stack pointer in *save, loads `to` and pops
 * the same frame from the other stack (the control state is loaded only
 * when it differs). No syscall, no signal mask. rax, rdx are caller-saved.
 */
#if defined(__x86_64__)
    .text
    .globl rt__switch
    .hidden rt__switch
    .type rt__switch,@function
    .p2align 4
rt__switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movl (%rsp), %eax
    movzwl 4(%rsp), %edx
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    cmpl (%rsp), %eax
    jne 1f
    cmpw 4(%rsp), %dx
    jne 1f
2:  addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    /* ldmxcsr and fldcw are microcoded and slow: load the other context's
     * control state only when it differs from ours (almost never). */
1:  ldmxcsr (%rsp)
    fldcw 4(%rsp)
    jmp 2b
    .cfi_endproc
    .size rt__switch,.-rt__switch

/* First instruction of a new coroutine: rbx holds the coroutine, r12 the
 * entry function, which never returns. */
    .globl rt__trampoline
    .hidden rt__trampoline
    .type rt__trampoline,@function
    .p2align 4
rt__trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %rbx, %rdi
    callq *%r12
    ud2
    .cfi_endproc
    .size rt__trampoline,.-rt__trampoline
#endif
    .section .note.GNU-stack,"",@progbits

// Entering and leaving user tasks.
//
// The kernel has one stack per CPU and never blocks on it: a task's state lives entirely in its
// `Context` (kernel/src/task.rs, layout fixed below). Entry from EL0 saves the general registers
// and EL0 system registers into the current task's Context (TPIDR_EL1), calls `el0_trap`, and
// resumes whatever Context that returns. FP/SIMD registers are saved and restored only when the
// task changes (`fp_save`/`fp_restore`): the kernel is softfloat and never touches them.

.equ CTX_SP_EL0,  248
.equ CTX_SPSR,    264
.equ CTX_FP,      288

.section .text
.global el0_entry
el0_entry:
    // x0 = Context, x1 = kind (0 sync, 1 IRQ, 2 FIQ, 3 SError); user x0/x1 on the stack.
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, sp_el0
    mrs     x3, elr_el1
    stp     x2, x3, [x0, #CTX_SP_EL0]
    mrs     x2, spsr_el1
    mrs     x3, tpidr_el0
    stp     x2, x3, [x0, #CTX_SPSR]
    mov     x29, xzr
    mov     x30, xzr
    bl      el0_trap
    // fall through: x0 = Context to resume

.global return_to_user
return_to_user:
    // x0 = Context. The kernel stack is empty here.
    msr     tpidr_el1, x0
    ldp     x2, x3, [x0, #CTX_SP_EL0]
    msr     sp_el0, x2
    msr     elr_el1, x3
    ldp     x2, x3, [x0, #CTX_SPSR]
    msr     spsr_el1, x2
    msr     tpidr_el0, x3
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret

// enter_user(context, stack_top): abandon the kernel stack and resume a task.
.global enter_user
enter_user:
    mov     sp, x1
    b       return_to_user

.arch_extension fp
.arch_extension simd

// fp_save(context): q0-q31, FPCR, FPSR into the Context.
.global fp_save
fp_save:
    add     x1, x0, #CTX_FP
    stp     q0, q1, [x1, #0]
    stp     q2, q3, [x1, #32]
    stp     q4, q5, [x1, #64]
    stp     q6, q7, [x1, #96]
    stp     q8, q9, [x1, #128]
    stp     q10, q11, [x1, #160]
    stp     q12, q13, [x1, #192]
    stp     q14, q15, [x1, #224]
    stp     q16, q17, [x1, #256]
    stp     q18, q19, [x1, #288]
    stp     q20, q21, [x1, #320]
    stp     q22, q23, [x1, #352]
    stp     q24, q25, [x1, #384]
    stp     q26, q27, [x1, #416]
    stp     q28, q29, [x1, #448]
    stp     q30, q31, [x1, #480]
    mrs     x2, fpcr
    mrs     x3, fpsr
    add     x1, x1, #512
    stp     x2, x3, [x1]
    ret

// fp_restore(context)
.global fp_restore
fp_restore:
    add     x1, x0, #CTX_FP
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    add     x1, x1, #512
    ldp     x2, x3, [x1]
    msr     fpcr, x2
    msr     fpsr, x3
    ret

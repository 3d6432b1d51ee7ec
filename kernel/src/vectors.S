// Moat exception vectors (VBAR_EL1).
//
// Kernel-mode synchronous exceptions, FIQs and SErrors are fatal: the entry saves the registers
// into `fatal_frame` and switches to a dedicated stack before calling Rust, so even a kernel
// stack overflow into its guard page is reported. IRQs taken in the kernel save the
// caller-saved registers on the current stack and call `irq_handler`.
// Exceptions from EL0 save the task's registers into its `Context` (TPIDR_EL1 points at it)
// and call `el0_trap`, which returns the context to resume: the same task or another.

.equ FATAL_FRAME_SIZE, 288       // x0-x30, sp, elr, spsr, esr, far
.equ IRQ_FRAME_SIZE,   192       // x0-x18, x29, x30, elr, spsr (16-byte multiple)

.macro FATAL kind
    .balign 0x80
    msr     tpidr_el1, x0
    adrp    x0, fatal_frame
    add     x0, x0, :lo12:fatal_frame
    stp     x1, x2, [x0, #8]
    mrs     x1, tpidr_el1
    str     x1, [x0]
    mov     x1, #\kind
    b       fatal_common
.endm

.section .text.vectors, "ax"
.balign 2048
.global exception_vectors
exception_vectors:
    // Current EL with SP_EL0: the kernel never runs on SP_EL0.
    FATAL 0
    FATAL 1
    FATAL 2
    FATAL 3
    // Current EL with SP_ELx.
    FATAL 4
    .balign 0x80
    sub     sp, sp, #IRQ_FRAME_SIZE
    stp     x0, x1, [sp]
    b       irq_from_kernel
    FATAL 6
    FATAL 7
    // Lower EL, AArch64: a task trapped (syscall, fault) or was interrupted.
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el1
    mov     x1, #0
    b       el0_entry
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el1
    mov     x1, #1
    b       el0_entry
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el1
    mov     x1, #2
    b       el0_entry
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el1
    mov     x1, #3
    b       el0_entry
    // Lower EL, AArch32.
    FATAL 12
    FATAL 13
    FATAL 14
    FATAL 15

fatal_common:
    // x0 = fatal_frame with x0-x2 saved, x1 = vector index.
    stp     x3, x4, [x0, #24]
    stp     x5, x6, [x0, #40]
    stp     x7, x8, [x0, #56]
    stp     x9, x10, [x0, #72]
    stp     x11, x12, [x0, #88]
    stp     x13, x14, [x0, #104]
    stp     x15, x16, [x0, #120]
    stp     x17, x18, [x0, #136]
    stp     x19, x20, [x0, #152]
    stp     x21, x22, [x0, #168]
    stp     x23, x24, [x0, #184]
    stp     x25, x26, [x0, #200]
    stp     x27, x28, [x0, #216]
    stp     x29, x30, [x0, #232]
    mov     x2, sp
    str     x2, [x0, #248]
    mrs     x2, elr_el1
    str     x2, [x0, #256]
    mrs     x2, spsr_el1
    str     x2, [x0, #264]
    mrs     x2, esr_el1
    str     x2, [x0, #272]
    mrs     x2, far_el1
    str     x2, [x0, #280]
    adrp    x2, __fatal_stack_top
    add     x2, x2, :lo12:__fatal_stack_top
    mov     sp, x2
    mov     x29, xzr
    bl      fatal_exception
1:  wfe
    b       1b

irq_from_kernel:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #168]
    bl      irq_handler
    ldp     x0, x1, [sp, #168]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    ldp     x0, x1, [sp]
    add     sp, sp, #IRQ_FRAME_SIZE
    eret

.section .bss.fatal_frame, "aw", %nobits
.balign 16
.global fatal_frame
fatal_frame:
    .space FATAL_FRAME_SIZE

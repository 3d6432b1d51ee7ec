// realm-sim entry and EL2 exception vectors.
//
// QEMU loads realm-sim's ELF at SIM_BASE and enters `_start` at EL2 with the MMU off (it passes
// no DTB pointer to an ELF that is not a Linux kernel: the DTB is at the base of RAM). Before
// any Rust runs, the stub turns on an EL2 stage-1 identity map (Normal write-back memory for RAM,
// Device-nGnRE for the first GiB, where QEMU virt's devices are), so Rust code gets unaligned
// accesses and exclusives.

.equ EL2_L1_DEVICE,    0x0040000000000441   // block | AttrIndx 0 | AP[1] | AF | XN
.equ EL2_L1_NORMAL,    0x745                // block | AttrIndx 1 | AP[1] | inner shareable | AF
.equ EL2_RAM_GIBS,     16                   // identity-map Normal memory from 1 GiB to 16 GiB
.equ MAIR_EL2_VALUE,   0xff04               // 0: Device-nGnRE, 1: Normal write-back
.equ TCR_EL2_VALUE,    0x80823519           // RES1, PS 40-bit, 4 KiB, ISH, WBWA, T0SZ 25
.equ SCTLR_EL2_VALUE,  0x30c5183d           // RES1 | M | C | SA | I; little-endian, WXN off
.equ DTB_ADDRESS,      0x40000000           // where QEMU put its DTB
.equ FRAME_SIZE,       (32 * 8)             // x0..x30 and padding

.section .text.entry, "ax"
.global _start
_start:
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    park                            // realm-sim needs EL2 (virtualization=on)

    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    adr     x1, el2_vectors
    msr     vbar_el2, x1

    // EL2 stage-1 identity map, 1 GiB blocks.
    adrp    x1, __el2_l1
    mov     x2, #512
    mov     x3, x1
3:  str     xzr, [x3], #8                       // the table lives in NOLOAD memory: clear it
    subs    x2, x2, #1
    b.ne    3b
    ldr     x2, =EL2_L1_DEVICE
    str     x2, [x1]
    mov     x3, #1
    mov     x4, #EL2_L1_NORMAL
4:  lsl     x2, x3, #30
    orr     x2, x2, x4
    str     x2, [x1, x3, lsl #3]
    add     x3, x3, #1
    cmp     x3, #EL2_RAM_GIBS
    b.lo    4b
    dsb     sy

    ldr     x2, =MAIR_EL2_VALUE
    msr     mair_el2, x2
    ldr     x2, =TCR_EL2_VALUE
    msr     tcr_el2, x2
    msr     ttbr0_el2, x1
    isb
    tlbi    alle2
    ic      iallu
    dsb     sy
    isb
    ldr     x2, =SCTLR_EL2_VALUE
    msr     sctlr_el2, x2
    isb

    ldr     x0, =DTB_ADDRESS
    bl      realm_sim_main
park:
    wfe
    b       park

// Enters the Realm: x0 = entry IPA, x1 = DTB IPA. EL2 registers are already set up.
.global realm_sim_enter
realm_sim_enter:
    msr     elr_el2, x0
    mov     x0, #0x3c5                          // EL1h, D A I F masked
    msr     spsr_el2, x0
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret

// Saves x0..x30 in a frame on the EL2 stack, calls `handler(frame, kind)`, restores, erets.
.macro SAVE_AND_CALL handler, kind
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #(0 * 16)]
    stp     x2, x3, [sp, #(1 * 16)]
    stp     x4, x5, [sp, #(2 * 16)]
    stp     x6, x7, [sp, #(3 * 16)]
    stp     x8, x9, [sp, #(4 * 16)]
    stp     x10, x11, [sp, #(5 * 16)]
    stp     x12, x13, [sp, #(6 * 16)]
    stp     x14, x15, [sp, #(7 * 16)]
    stp     x16, x17, [sp, #(8 * 16)]
    stp     x18, x19, [sp, #(9 * 16)]
    stp     x20, x21, [sp, #(10 * 16)]
    stp     x22, x23, [sp, #(11 * 16)]
    stp     x24, x25, [sp, #(12 * 16)]
    stp     x26, x27, [sp, #(13 * 16)]
    stp     x28, x29, [sp, #(14 * 16)]
    str     x30, [sp, #(15 * 16)]
    mov     x0, sp
    mov     x1, #\kind
    bl      \handler
    b       restore_and_return
.endm

.section .text.vectors, "ax"
.balign 2048
el2_vectors:
    // Current EL with SP0: never used.
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 0
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 1
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 2
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 3
    // Current EL with SPx: a fault in realm-sim itself.
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 4
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 5
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 6
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 7
    // Lower EL, AArch64: the Realm.
    .balign 0x80
    SAVE_AND_CALL realm_sim_trap, 8
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 9
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 10
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 11
    // Lower EL, AArch32: never enabled.
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 12
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 13
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 14
    .balign 0x80
    SAVE_AND_CALL realm_sim_fatal, 15

restore_and_return:
    ldp     x0, x1, [sp, #(0 * 16)]
    ldp     x2, x3, [sp, #(1 * 16)]
    ldp     x4, x5, [sp, #(2 * 16)]
    ldp     x6, x7, [sp, #(3 * 16)]
    ldp     x8, x9, [sp, #(4 * 16)]
    ldp     x10, x11, [sp, #(5 * 16)]
    ldp     x12, x13, [sp, #(6 * 16)]
    ldp     x14, x15, [sp, #(7 * 16)]
    ldp     x16, x17, [sp, #(8 * 16)]
    ldp     x18, x19, [sp, #(9 * 16)]
    ldp     x20, x21, [sp, #(10 * 16)]
    ldp     x22, x23, [sp, #(11 * 16)]
    ldp     x24, x25, [sp, #(12 * 16)]
    ldp     x26, x27, [sp, #(13 * 16)]
    ldp     x28, x29, [sp, #(14 * 16)]
    ldr     x30, [sp, #(15 * 16)]
    add     sp, sp, #FRAME_SIZE
    eret

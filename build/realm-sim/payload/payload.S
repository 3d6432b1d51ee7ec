// realm-sim test payload (EL1, MMU off, so every data access is Device memory: aligned only).
//
// Checks, in order, printing one line each through the UART's unprotected alias:
//  1. RSI_VERSION(1.0) succeeds with 1.0;
//  2. REALM_CONFIG into a granule of the payload's .bss reports ipa_width 39, SHA-256;
//  3. IPA_STATE_SET RAM over [TEST, TEST + 1 MiB), looping on partial progress (stress mode);
//     IPA_STATE_GET reports the run; a pattern written there reads back;
//  4. IPA_STATE_SET EMPTY over the first 64 KiB (CHANGE_DESTROYED); a pattern written through
//     the alias reads back through the alias;
//  5. a read of the protected IPA (RIPAS EMPTY) takes a synchronous external abort (EC 0x25,
//     FSC 0x10) that realm-sim injected; so does the UART at its canonical address;
//  6. back to RAM: the granule reads as zero (realm-sim zeroed it);
//  7. MEASUREMENT_EXTEND / MEASUREMENT_READ of REM0 round-trip; the RIM is not zero;
//  8. PSCI_VERSION, then SYSTEM_OFF (QEMU exits with status 0 after "payload: PASS").
// A failing check prints "payload: FAIL <n>" and powers off.

.equ SHARED_BIT,      (1 << 38)
.equ UART_ALIAS,      (SHARED_BIT | 0x09000000)
.equ UART_CANONICAL,  0x09000000
.equ TEST_BASE,       0x41000000
.equ TEST_TOP,        0x41100000
.equ SHARE_TOP,       0x41010000
.equ RSI_VERSION,     0xC4000190
.equ RSI_MEAS_READ,   0xC4000192
.equ RSI_MEAS_EXTEND, 0xC4000193
.equ RSI_REALM_CONFIG,0xC4000196
.equ RSI_STATE_SET,   0xC4000197
.equ RSI_STATE_GET,   0xC4000198
.equ PSCI_VERSION,    0x84000000
.equ PSCI_SYSTEM_OFF, 0x84000008

.macro CHECK_EQ reg, value, code
    ldr     x16, =\value
    cmp     \reg, x16
    mov     x17, #\code
    b.ne    fail
.endm

.macro SAY label
    adr     x0, \label
    bl      puts
.endm

.section .text.head, "ax"
.global _start
_start:
    b       entry
    .long   0
    .quad   0                       // text_offset
    .quad   __image_size            // image_size
    .quad   0xa                     // little-endian, 4 KiB pages, anywhere
    .quad   0, 0, 0
    .long   0x644d5241              // "ARM\x64"
    .long   0

.text
entry:
    mov     x19, x0                 // DTB
    adr     x0, vectors
    msr     vbar_el1, x0
    isb
    SAY     msg_start

    // 1. RSI_VERSION
    ldr     x0, =RSI_VERSION
    mov     x1, #0x10000
    smc     #0
    CHECK_EQ x0, 0, 1
    CHECK_EQ x1, 0x10000, 1
    SAY     msg_version

    // 2. REALM_CONFIG
    adrp    x20, __config_granule
    ldr     x0, =RSI_REALM_CONFIG
    mov     x1, x20
    smc     #0
    CHECK_EQ x0, 0, 2
    ldr     x1, [x20]
    CHECK_EQ x1, 39, 2
    ldrb    w1, [x20, #8]
    CHECK_EQ x1, 0, 2
    SAY     msg_config

    // 3. RAM over the test range, looping on partial progress.
    ldr     x1, =TEST_BASE
    ldr     x2, =TEST_TOP
    mov     x3, #1
    mov     x4, #0
    bl      state_set
    CHECK_EQ x21, 256, 3            // granules; x22 = calls
    ldr     x0, =RSI_STATE_GET
    ldr     x1, =TEST_BASE
    ldr     x2, =TEST_TOP
    smc     #0
    CHECK_EQ x0, 0, 3
    CHECK_EQ x1, TEST_TOP, 3
    CHECK_EQ x2, 1, 3
    ldr     x5, =TEST_BASE
    ldr     x6, =0x5eed5eed12345678
    str     x6, [x5]
    str     x6, [x5, #0x1ff8]
    ldr     x7, [x5]
    CHECK_EQ x7, 0x5eed5eed12345678, 3
    mov     x0, x22
    adr     x1, msg_ram
    bl      put_count

    // 4. Share the first 64 KiB; write and read through the alias.
    ldr     x1, =TEST_BASE
    ldr     x2, =SHARE_TOP
    mov     x3, #0
    mov     x4, #1
    bl      state_set
    CHECK_EQ x21, 16, 4
    ldr     x5, =(SHARED_BIT | TEST_BASE)
    ldr     x6, =0xa11a5a11a5a11a50
    str     x6, [x5, #8]
    ldr     x7, [x5, #8]
    CHECK_EQ x7, 0xa11a5a11a5a11a50, 4
    SAY     msg_shared

    // 5. The protected IPA (RIPAS EMPTY) and the canonical UART: injected external aborts.
    mov     x23, #0                 // aborts taken (the vector counts them)
    ldr     x5, =TEST_BASE
    ldr     x7, [x5]
    mov     x5, #UART_CANONICAL
    ldr     w7, [x5, #0x18]
    CHECK_EQ x23, 2, 5
    SAY     msg_abort

    // 6. Back to RAM: zeroed by realm-sim.
    ldr     x1, =TEST_BASE
    ldr     x2, =SHARE_TOP
    mov     x3, #1
    mov     x4, #0
    bl      state_set
    ldr     x5, =TEST_BASE
    ldr     x7, [x5, #8]
    CHECK_EQ x7, 0, 6
    ldr     x7, [x5]
    CHECK_EQ x7, 0, 6
    SAY     msg_zeroed

    // 7. Measurements.
    ldr     x0, =RSI_MEAS_EXTEND
    mov     x1, #1                  // REM0
    mov     x2, #8
    ldr     x3, =0x0123456789abcdef
    mov     x4, #0
    mov     x5, #0
    mov     x6, #0
    mov     x7, #0
    mov     x8, #0
    mov     x9, #0
    mov     x10, #0
    smc     #0
    CHECK_EQ x0, 0, 7
    ldr     x0, =RSI_MEAS_READ
    mov     x1, #1
    smc     #0
    CHECK_EQ x0, 0, 7
    cbz     x1, 1f                  // a SHA-256 of something: not zero
    CHECK_EQ x5, 0, 7               // bytes 32.. are zero for SHA-256
    ldr     x0, =RSI_MEAS_READ
    mov     x1, #0                  // RIM
    smc     #0
    CHECK_EQ x0, 0, 7
    orr     x1, x1, x2
    cbnz    x1, 2f
1:  mov     x17, #7
    b       fail
2:  SAY     msg_measure

    // 8. PSCI.
    ldr     x0, =PSCI_VERSION
    smc     #0
    CHECK_EQ x0, 0x10000, 8
    SAY     msg_pass
    ldr     x0, =PSCI_SYSTEM_OFF
    smc     #0
    b       .

// IPA_STATE_SET(x1, x2, x3, x4) until done. Returns x21 = granules, x22 = calls.
// Fails on an error status, REJECT or zero progress.
state_set:
    mov     x24, x1
    mov     x25, x2
    mov     x26, x3
    mov     x27, x4
    mov     x22, #0
    mov     x28, x1
1:  ldr     x0, =RSI_STATE_SET
    mov     x1, x28
    mov     x2, x25
    mov     x3, x26
    mov     x4, x27
    smc     #0
    add     x22, x22, #1
    mov     x17, #9
    cbnz    x0, fail
    cbnz    x2, fail                // REJECT
    cmp     x1, x28
    b.ls    fail                    // zero progress (or backwards)
    cmp     x1, x25
    b.hi    fail
    mov     x28, x1
    b.lo    1b
    sub     x21, x25, x24
    lsr     x21, x21, #12
    ret

fail:
    SAY     msg_fail
    add     x0, x17, #'0'
    bl      putc
    mov     x0, #'\n'
    bl      putc
    ldr     x0, =PSCI_SYSTEM_OFF
    smc     #0
    b       .

// puts(x0 = NUL-terminated string). Clobbers x0..x3, x9.
puts:
    mov     x9, x30
    mov     x2, x0
1:  ldrb    w0, [x2], #1
    cbz     w0, 2f
    bl      putc
    b       1b
2:  mov     x30, x9
    ret

// putc(x0 = byte) through the UART's alias. Clobbers x1, x3.
putc:
    ldr     x1, =UART_ALIAS
1:  ldr     w3, [x1, #0x18]
    tbnz    w3, #5, 1b
    str     w0, [x1]
    ret

// put_count(x0 = number < 1000, x1 = string to follow): prints "payload: RAM set in N calls".
put_count:
    mov     x10, x30
    mov     x11, x0
    mov     x12, x1
    adr     x0, msg_prefix
    bl      puts
    mov     x13, #100
    udiv    x0, x11, x13
    msub    x11, x0, x13, x11
    add     x0, x0, #'0'
    bl      putc
    mov     x13, #10
    udiv    x0, x11, x13
    msub    x11, x0, x13, x11
    add     x0, x0, #'0'
    bl      putc
    add     x0, x11, #'0'
    bl      putc
    mov     x0, x12
    bl      puts
    mov     x30, x10
    ret

// EL1 vectors: a synchronous exception from EL1h must be realm-sim's injected external abort
// (EC 0x25, FSC 0x10); count it and skip the faulting load. Anything else fails.
.balign 2048
vectors:
    .rept 4
    .balign 0x80
    b       unexpected
    .endr
    .balign 0x80
    mrs     x15, esr_el1
    lsr     x16, x15, #26
    cmp     x16, #0x25
    b.ne    unexpected
    and     x16, x15, #0x3f
    cmp     x16, #0x10
    b.ne    unexpected
    add     x23, x23, #1
    mrs     x15, elr_el1
    add     x15, x15, #4
    msr     elr_el1, x15
    eret
    .rept 11
    .balign 0x80
    b       unexpected
    .endr
unexpected:
    mov     x17, #('x' - '0')
    b       fail

.section .rodata
msg_start:   .asciz "payload: start at EL1\n"
msg_version: .asciz "payload: RSI_VERSION 1.0 ok\n"
msg_config:  .asciz "payload: REALM_CONFIG ipa_width 39, SHA-256 ok\n"
msg_prefix:  .asciz "payload: RIPAS RAM over 1 MiB in "
msg_ram:     .asciz " call(s), memory reads back ok\n"
msg_shared:  .asciz "payload: 64 KiB EMPTY, write/read through the alias ok\n"
msg_abort:   .asciz "payload: protected EMPTY read and canonical UART read took injected external aborts ok\n"
msg_zeroed:  .asciz "payload: back to RAM, zeroed ok\n"
msg_measure: .asciz "payload: MEASUREMENT_EXTEND/READ ok, RIM non-zero\n"
msg_pass:    .asciz "payload: PASS\n"
msg_fail:    .asciz "payload: FAIL "

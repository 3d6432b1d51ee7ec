// memcpy and memset for the kernel: 16 bytes per load/store pair, then the tail in 8-, 4-, 2-
// and 1-byte steps. The compiler's versions (compiler_builtins) move 8 bytes per four
// instructions; message copies (headers, payloads, wait records) are on the IPC path.
// (The kernel is softfloat: general-purpose registers only. Unaligned accesses are fine: the
// kernel only copies Normal memory.)

.section .text.mem, "ax"
.global memcpy
memcpy:
    mov     x3, x0
    cmp     x2, #16
    b.lo    2f
1:  ldp     x4, x5, [x1], #16
    stp     x4, x5, [x3], #16
    sub     x2, x2, #16
    cmp     x2, #16
    b.hs    1b
2:  tbz     x2, #3, 3f
    ldr     x4, [x1], #8
    str     x4, [x3], #8
3:  tbz     x2, #2, 4f
    ldr     w4, [x1], #4
    str     w4, [x3], #4
4:  tbz     x2, #1, 5f
    ldrh    w4, [x1], #2
    strh    w4, [x3], #2
5:  tbz     x2, #0, 6f
    ldrb    w4, [x1]
    strb    w4, [x3]
6:  ret

.global memset
memset:
    mov     x3, x0
    and     x1, x1, #0xff
    orr     x1, x1, x1, lsl #8
    orr     x1, x1, x1, lsl #16
    orr     x1, x1, x1, lsl #32
    cmp     x2, #16
    b.lo    2f
1:  stp     x1, x1, [x3], #16
    sub     x2, x2, #16
    cmp     x2, #16
    b.hs    1b
2:  tbz     x2, #3, 3f
    str     x1, [x3], #8
3:  tbz     x2, #2, 4f
    str     w1, [x3], #4
4:  tbz     x2, #1, 5f
    strh    w1, [x3], #2
5:  tbz     x2, #0, 6f
    strb    w1, [x3]
6:  ret

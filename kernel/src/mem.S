// memcpy and memset for the kernel: 16 bytes per load/store pair. The compiler's versions
// (compiler_builtins) move 8 bytes per four instructions; message copies are on the IPC path.
// (The kernel is softfloat: general-purpose registers only.)

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
2:  cbz     x2, 4f
3:  ldrb    w4, [x1], #1
    strb    w4, [x3], #1
    subs    x2, x2, #1
    b.ne    3b
4:  ret

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
2:  cbz     x2, 4f
3:  strb    w1, [x3], #1
    subs    x2, x2, #1
    b.ne    3b
4:  ret

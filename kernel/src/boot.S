// Moat boot stub: the Linux arm64 Image header and the code that runs with the MMU off.
//
// Entry (Documentation/arch/arm64/booting.rst): x0 = physical address of the DTB, MMU off,
// at EL2 or EL1. Everything here is position independent (PC-relative `adr`/`adrp`; `ldr =`
// only loads link-time constants from a PC-relative literal pool), because it runs at whatever
// 2 MiB-aligned physical address the loader chose while the image is linked in the upper half.
// No Rust runs before the MMU is on: until then every data access is Device memory and absolute
// addresses (vtables, statics) are wrong.
//
// The stub builds minimal boot tables in .bss:
//   TTBR0: an identity map of the 1 GiB block holding the image, only so that the instructions
//          right after MMU-on keep running;
//   TTBR1: the whole image at KERNEL_BASE in 4 KiB pages, and the DTB read-only at DTB_WINDOW.
// Rust then builds the kernel's real tables (page-granular permissions, guard pages, linear map,
// devices) and switches to them.

.equ SCTLR_EL1_RES1,     0x30d00800          // RES1 bits; EE = 0 (little-endian), MMU off
.equ SCTLR_EL1_MMU_ON,   0x30d0181d          // RES1 | M | C | SA | SA0 | I
.equ HCR_EL2_RW,         (1 << 31)           // EL1 is AArch64
.equ SPSR_EL1H_MASKED,   0x3c5               // EL1h, D A I F masked
.equ CPACR_FPEN,         (3 << 20)           // FP/SIMD usable at EL0 and EL1
.equ MAIR_VALUE,         0x44ff04            // 0: Device-nGnRE, 1: Normal WB, 2: Normal NC
.equ TCR_VALUE,          0xb5193519          // T0SZ = T1SZ = 25 (39-bit), 4 KiB granules, WB, ISH
.equ BLOCK_RWX,          0x705               // block | AttrIndx 1 | inner shareable | AF
.equ PAGE_RWX,           0x707               // page  | AttrIndx 1 | inner shareable | AF
.equ BLOCK_RO_XN,        0x0060000000000785  // BLOCK_RWX | AP read-only | PXN | UXN
.equ KERNEL_L1_INDEX,    510                 // KERNEL_BASE  0xffffffff80000000
.equ DTB_L1_INDEX,       509                 // DTB_WINDOW   0xffffffff40000000

.section .text.head, "ax"
.global _start
_start:
    b       primary_entry                    // code0
    .long   0                                // code1
    .quad   0                                // text_offset
    .quad   __image_size                     // image_size, .bss and stacks included
    .quad   0xa                              // flags: little-endian, 4 KiB pages, any placement
    .quad   0                                // res2
    .quad   0                                // res3
    .quad   0                                // res4
    .long   0x644d5241                       // magic "ARM\x64"
    .long   0                                // res5 (no PE header)

.section .text.boot, "ax"
primary_entry:
    mov     x19, x0                          // DTB physical address
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2                 // exception level we were entered at
    adr     x21, _start                      // physical load address of the image
    cmp     x20, #2
    b.eq    el2_entry
    cmp     x20, #1
    b.eq    el1_entry
    b       park                             // EL3 entry is not supported

el2_entry:
    // Drop to EL1 with the hypervisor out of the way: AArch64 EL1, no traps of timers, FP or
    // GIC system registers, no stage 2.
    mov     x0, #HCR_EL2_RW
    msr     hcr_el2, x0
    mrs     x0, cnthctl_el2
    orr     x0, x0, #3                       // EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x33ff                      // CPTR_EL2 RES1 bits, TFP = 0
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    mrs     x0, id_aa64pfr0_el1
    ubfx    x0, x0, #24, #4                  // GIC system register interface present?
    cbz     x0, 1f
    mrs     x0, S3_4_C12_C9_5                // ICC_SRE_EL2
    mov     x1, #0x9                         // SRE | Enable (EL1 may use ICC_SRE_EL1)
    orr     x0, x0, x1
    msr     S3_4_C12_C9_5, x0
    isb
1:  msr     vttbr_el2, xzr
    ldr     x0, =SCTLR_EL1_RES1
    msr     sctlr_el1, x0
    mov     x0, #SPSR_EL1H_MASKED
    msr     spsr_el2, x0
    adr     x0, el1_entry
    msr     elr_el2, x0
    eret

el1_entry:
    msr     daifset, #0xf
    ldr     x0, =SCTLR_EL1_RES1
    msr     sctlr_el1, x0
    isb
    mov     x0, #CPACR_FPEN
    msr     cpacr_el1, x0

    // Zero .bss (the boot tables live there). The loader does not.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
2:  cmp     x0, x1
    b.hs    3f
    stp     xzr, xzr, [x0], #16
    b       2b
3:
    // TTBR0: identity-map the 1 GiB block that holds the image.
    adrp    x0, boot_l1_identity
    lsr     x1, x21, #30
    cmp     x1, #512
    b.hs    park                             // beyond what a 39-bit identity map can reach
    lsl     x2, x1, #30
    mov     x3, #BLOCK_RWX
    orr     x2, x2, x3
    str     x2, [x0, x1, lsl #3]

    // TTBR1: L1[510] -> L2 -> L3 tables, one per 2 MiB of image.
    adrp    x0, boot_l1_upper
    adrp    x1, boot_l2_image
    orr     x2, x1, #3
    str     x2, [x0, #(KERNEL_L1_INDEX * 8)]
    adrp    x3, boot_l3_image
    ldr     x5, =__image_size
    ldr     x6, =0x1fffff
    add     x5, x5, x6
    lsr     x5, x5, #21                      // L3 tables needed
    mov     x4, #0
4:  add     x6, x3, x4, lsl #12
    orr     x6, x6, #3
    str     x6, [x1, x4, lsl #3]
    add     x4, x4, #1
    cmp     x4, x5
    b.lo    4b
    // The L3 tables are contiguous, so page i's entry is at boot_l3_image + 8 * i.
    ldr     x5, =__image_size
    lsr     x5, x5, #12                      // pages in the image
    mov     x4, #0
    mov     x7, #PAGE_RWX
5:  add     x6, x21, x4, lsl #12
    orr     x6, x6, x7
    str     x6, [x3, x4, lsl #3]
    add     x4, x4, #1
    cmp     x4, x5
    b.lo    5b

    // TTBR1: L1[509] -> L2 with the two 2 MiB blocks from the DTB's block on, read-only.
    adrp    x1, boot_l2_dtb
    orr     x2, x1, #3
    str     x2, [x0, #(DTB_L1_INDEX * 8)]
    and     x2, x19, #~0x1fffff
    ldr     x3, =BLOCK_RO_XN
    orr     x4, x2, x3
    str     x4, [x1]
    add     x2, x2, #0x200000
    orr     x4, x2, x3
    str     x4, [x1, #8]

    // The tables were written with caches off: drop any stale lines for .bss so the table
    // walker and the cached accesses that follow see memory.
    dsb     sy
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
    mrs     x3, ctr_el0
    ubfx    x3, x3, #16, #4
    mov     x2, #4
    lsl     x2, x2, x3                       // data cache line size
    sub     x4, x2, #1
    bic     x0, x0, x4
6:  dc      ivac, x0
    add     x0, x0, x2
    cmp     x0, x1
    b.lo    6b
    dsb     sy

    ldr     x0, =MAIR_VALUE
    msr     mair_el1, x0
    ldr     x0, =TCR_VALUE
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #7                       // PARange
    mov     x2, #5
    cmp     x1, x2
    csel    x1, x2, x1, hi                   // at most 48 bits with 4 KiB pages
    bfi     x0, x1, #32, #3                  // TCR.IPS
    msr     tcr_el1, x0
    adrp    x0, boot_l1_identity
    msr     ttbr0_el1, x0
    adrp    x0, boot_l1_upper
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    ldr     x0, =SCTLR_EL1_MMU_ON
    msr     sctlr_el1, x0
    isb

    // MMU on; still running through the identity map. Move to the upper half.
    ldr     x0, =__boot_stack_top
    mov     sp, x0
    ldr     x0, =exception_vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    ldr     x3, =kmain
    br      x3

park:
    wfe
    b       park
.ltorg

.section .bss.boot_tables, "aw", %nobits
.balign 4096
boot_l1_identity:   .space 4096
boot_l1_upper:      .space 4096
boot_l2_image:      .space 4096
boot_l2_dtb:        .space 4096
boot_l3_image:      .space 4096 * 8

//! The user address space: where the kernel puts the task information page, the image and the
//! stack, and where tasks map memory themselves.
//!
//! Every task runs in its own 39-bit address space (TTBR0). From the bottom up:
//!
//! | range                                   | what                                             |
//! |-----------------------------------------|--------------------------------------------------|
//! | `0` .. [`TASK_INFO_VA`]                 | never mapped: null and small-offset pointers fault |
//! | [`TASK_INFO_VA`], one page              | [`TaskInfo`](crate::TaskInfo), read-only, filled by the kernel |
//! | [`USER_IMAGE_BASE`] ..                  | the task's ELF image (text, rodata, data, bss; each page aligned) |
//! | [`MAP_BASE`] .. [`MAP_LIMIT`]           | where the task maps memory and MMIO (`MemMap`, `MmioMap`); userlib's heap lives here too |
//! | below [`STACK_TOP`]                     | the stack, `stack_pages` from the manifest, with an unmapped guard page below it |
//! | [`USER_VA_LIMIT`]                       | end of the user address space                   |
//!
//! # Entry
//!
//! The kernel starts a task at its ELF entry point with `x0` = [`TASK_INFO_VA`],
//! `sp` = [`STACK_TOP`], every other general register 0 and FP/SIMD enabled.

/// Lowest address the kernel ever maps in a task: everything below is a guaranteed fault.
pub const LOWEST_USER_VA: usize = 0x0010_0000;

/// Address of the read-only [`TaskInfo`](crate::TaskInfo) page the kernel fills before the task
/// starts (also passed in `x0` at entry).
pub const TASK_INFO_VA: usize = 0x0010_0000;

/// Address task binaries are linked at (static, non-PIE; see `build/link/task.ld`).
pub const USER_IMAGE_BASE: usize = 0x0020_0000;

/// First address of the region where a task maps memory with `MemMap` and `MmioMap`.
pub const MAP_BASE: usize = 0x1_0000_0000;

/// End (exclusive) of the region where a task maps memory.
pub const MAP_LIMIT: usize = 0x40_0000_0000;

/// Initial stack pointer: the stack grows down from here. The page at `STACK_TOP` itself is
/// never mapped.
pub const STACK_TOP: usize = 0x7f_ffff_f000;

/// End (exclusive) of the user address space: 39-bit virtual addresses through TTBR0.
pub const USER_VA_LIMIT: usize = 1 << 39;

/// Whether `[address, address + length)` lies inside the map region and does not wrap.
pub const fn in_map_region(address: usize, length: usize) -> bool {
    match address.checked_add(length) {
        Some(end) => address >= MAP_BASE && end <= MAP_LIMIT,
        None => false,
    }
}

const _: () = assert!(TASK_INFO_VA >= LOWEST_USER_VA);
const _: () = assert!(TASK_INFO_VA + crate::PAGE_SIZE <= USER_IMAGE_BASE);
const _: () = assert!(USER_IMAGE_BASE < MAP_BASE);
const _: () = assert!(MAP_BASE < MAP_LIMIT);
const _: () = assert!(MAP_LIMIT < STACK_TOP);
const _: () = assert!(STACK_TOP < USER_VA_LIMIT);
const _: () = assert!(STACK_TOP.is_multiple_of(16) && STACK_TOP.is_multiple_of(crate::PAGE_SIZE));
const _: () = assert!(
    MAP_BASE.is_multiple_of(crate::PAGE_SIZE) && MAP_LIMIT.is_multiple_of(crate::PAGE_SIZE)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_region_bounds() {
        assert!(in_map_region(MAP_BASE, crate::PAGE_SIZE));
        assert!(in_map_region(
            MAP_LIMIT - crate::PAGE_SIZE,
            crate::PAGE_SIZE
        ));
        assert!(!in_map_region(
            MAP_LIMIT - crate::PAGE_SIZE,
            2 * crate::PAGE_SIZE
        ));
        assert!(!in_map_region(MAP_BASE - 1, 1));
        assert!(!in_map_region(usize::MAX, 2));
    }
}

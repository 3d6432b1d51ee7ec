//! The kernel's virtual address layout.
//!
//! Both halves use 39-bit virtual addresses with 4 KiB pages (three levels, root at level 1):
//! TTBR0 covers `0..2^39` for user tasks, TTBR1 covers the top 512 GiB for the kernel.
//!
//! ```text
//! 0xffff_ff80_0000_0000  physmap: all RAM, linear (PA p at PHYSMAP_BASE + p), RW, never executable
//! 0xffff_ffc0_0000_0000  device window: MMIO mapped on demand, Device-nGnRE
//! 0xffff_ffff_4000_0000  the DTB, read-only (the boot stub maps 4 MiB around it)
//! 0xffff_ffff_8000_0000  the kernel image, page-granular permissions
//! ```
//! The boot stub (assembly) uses the same constants; the kernel crate checks they agree.

/// Bits of virtual address in each half.
pub const VA_BITS: u32 = 39;
/// Size of a page and of a translation granule.
pub const PAGE_SIZE: usize = 4096;
/// Start of the linear map of physical memory.
pub const PHYSMAP_BASE: usize = 0xffff_ff80_0000_0000;
/// Highest physical address the linear map can cover (exclusive).
pub const PHYSMAP_LIMIT: u64 = 0x40_0000_0000;
/// Start of the device MMIO window.
pub const DEVICE_BASE: usize = 0xffff_ffc0_0000_0000;
/// Size of the device MMIO window.
pub const DEVICE_WINDOW: usize = 0x3f_0000_0000;
/// Where the boot stub maps the DTB (plus its offset inside a 2 MiB block).
pub const DTB_WINDOW: usize = 0xffff_ffff_4000_0000;
/// Link address of the kernel image.
pub const KERNEL_BASE: usize = 0xffff_ffff_8000_0000;
/// Largest DTB the kernel accepts (the arm64 boot protocol's limit).
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// The physmap virtual address of a physical address, if the linear map covers it.
pub const fn physmap(pa: u64) -> Option<usize> {
    if pa < PHYSMAP_LIMIT {
        Some(PHYSMAP_BASE + pa as usize)
    } else {
        None
    }
}

// The regions are disjoint and in this order (checked at compile time).
const _: () = assert!(PHYSMAP_BASE + PHYSMAP_LIMIT as usize <= DEVICE_BASE);
const _: () = assert!(DEVICE_BASE + DEVICE_WINDOW <= DTB_WINDOW);
const _: () = assert!(DTB_WINDOW + 2 * MAX_DTB_SIZE <= KERNEL_BASE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_in_the_upper_half_and_disjoint() {
        let upper_start = usize::MAX - (1usize << VA_BITS) + 1;
        assert_eq!(PHYSMAP_BASE, upper_start);
        assert_eq!(physmap(0x4000_0000), Some(PHYSMAP_BASE + 0x4000_0000));
        assert_eq!(physmap(PHYSMAP_LIMIT), None);
    }
}

//! A client's data region as the driver reaches it: bounds-checked bulk copies only.
//!
//! The region is private (Realm) memory that the client shares with the driver, so the device
//! never sees it: data moves between it and the driver's bounce grants in two copies (region ↔
//! private staging buffer ↔ grant). The client can change the region at any moment, so the
//! driver treats it like any memory another party writes: no Rust reference into it, raw
//! copies only, and what it reads is only ever forwarded, never interpreted.
//!
//! [`MappedRegion`] holds this crate's only `unsafe` code.

use core::ptr::{self, NonNull};

/// A client's data region.
pub trait ClientRegion {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `out.len()` bytes at `offset` into `out`; `false` (nothing copied) if the range
    /// is not inside the region.
    fn read(&self, offset: usize, out: &mut [u8]) -> bool;
    /// Copies `data` to `offset`; `false` (nothing copied) if the range is not inside the
    /// region.
    fn write(&self, offset: usize, data: &[u8]) -> bool;
}

/// Whether `offset..offset + len` lies in `0..size`.
pub fn fits(offset: usize, len: usize, size: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// A region mapped into this task at a fixed address.
#[derive(Debug)]
pub struct MappedRegion {
    base: NonNull<u8>,
    len: usize,
}

impl MappedRegion {
    /// The region of `len` bytes at `base`; `None` if `base` is null or the range wraps.
    ///
    /// # Safety
    ///
    /// `base..base + len` must stay mapped readable and writable for as long as the value
    /// lives, and no Rust reference to any byte of it may exist (another task writes it).
    pub unsafe fn new(base: *mut u8, len: usize) -> Option<MappedRegion> {
        let base = NonNull::new(base)?;
        (base.as_ptr() as usize).checked_add(len)?;
        Some(MappedRegion { base, len })
    }

    /// The first byte's address (to unmap the region).
    pub fn address(&self) -> usize {
        self.base.as_ptr() as usize
    }
}

impl ClientRegion for MappedRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        if !fits(offset, out.len(), self.len) {
            return false;
        }
        // SAFETY: offset + out.len() <= len (checked above), so the source range is inside the
        // mapping, which `new`'s contract keeps mapped readable. `out` is a Rust reference, so
        // it is not in the region (no reference into the region exists): no overlap. Any byte
        // is a valid u8, whatever the client writes concurrently.
        unsafe {
            ptr::copy_nonoverlapping(self.base.as_ptr().add(offset), out.as_mut_ptr(), out.len())
        };
        true
    }

    fn write(&self, offset: usize, data: &[u8]) -> bool {
        if !fits(offset, data.len(), self.len) {
            return false;
        }
        // SAFETY: the destination range is inside the mapping (checked above), mapped writable
        // by `new`'s contract; `data` is a Rust reference and so outside the region.
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(offset), data.len())
        };
        true
    }
}

/// Maps regions into this task with the kernel's memory calls.
#[derive(Debug)]
pub struct KernelRegions<S: moat_userlib::Syscalls> {
    syscalls: S,
    /// Largest region accepted, in bytes.
    max_len: usize,
}

impl<S: moat_userlib::Syscalls> KernelRegions<S> {
    /// Maps regions of at most `max_len` bytes through `syscalls`.
    pub fn new(syscalls: S, max_len: usize) -> Self {
        KernelRegions { syscalls, max_len }
    }
}

/// A region mapped by [`KernelRegions`], with what is needed to unmap it.
#[derive(Debug)]
pub struct KernelRegion {
    region: MappedRegion,
    mapping: moat_userlib::memory::Mapping,
}

impl ClientRegion for KernelRegion {
    fn len(&self) -> usize {
        self.region.len()
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        self.region.read(offset, out)
    }
    fn write(&self, offset: usize, data: &[u8]) -> bool {
        self.region.write(offset, data)
    }
}

impl<S: moat_userlib::Syscalls> crate::service::RegionMapper for KernelRegions<S> {
    type Region = KernelRegion;

    fn map(
        &mut self,
        memory: moat_abi::CapSlot,
        _rights: moat_abi::Rights,
    ) -> Result<KernelRegion, moat_blk_api::BlkError> {
        let fail = |syscalls: &S| {
            let _ = syscalls.cap_drop(memory);
            moat_blk_api::BlkError::BadRegion
        };
        let pages = match self.syscalls.mem_info(memory) {
            Ok(info) if info.pages > 0 && info.pages * moat_abi::PAGE_SIZE <= self.max_len => {
                info.pages
            }
            _ => return Err(fail(&self.syscalls)),
        };
        let mapping = match moat_userlib::memory::map(
            &self.syscalls,
            memory,
            moat_blk_api::REGION_RIGHTS,
            0,
            pages,
        ) {
            Ok(mapping) => mapping,
            Err(_) => return Err(fail(&self.syscalls)),
        };
        // SAFETY: the kernel has just mapped `mapping.len()` bytes read-write at an address
        // range reserved for this mapping alone; it stays mapped until `unmap` below, which
        // runs only when no request names the region; this crate never forms a reference into
        // it (only MappedRegion's raw copies touch it).
        match unsafe { MappedRegion::new(mapping.as_ptr(), mapping.len()) } {
            Some(region) => Ok(KernelRegion { region, mapping }),
            None => Err(fail(&self.syscalls)),
        }
    }

    fn unmap(&mut self, region: KernelRegion) {
        let KernelRegion { mapping, .. } = region;
        // SAFETY: the MappedRegion over the range is gone (moved in and dropped above) and nothing else points
        // into it (the service unmaps a region only when no request uses it).
        let _ = unsafe { moat_userlib::memory::unmap(&self.syscalls, mapping) };
        let _ = self.syscalls.cap_drop(mapping.capability);
    }
}

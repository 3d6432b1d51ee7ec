//! Mapping memory and MMIO at addresses from the task's [`vmem`](crate::vmem) allocator.

use moat_abi::{CapSlot, Error, PAGE_SIZE, Rights};

use crate::syscalls::{Syscalls, pages_to_bytes};
use crate::vmem;

/// A range of the task's address space with memory or MMIO mapped in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The Memory or Mmio capability mapped.
    pub capability: CapSlot,
    /// First mapped address (page aligned).
    pub address: usize,
    /// Pages mapped.
    pub pages: usize,
}

impl Mapping {
    /// Mapped bytes.
    pub const fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Whether nothing is mapped (never true for a mapping this module made).
    pub const fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The first byte, for volatile or raw-pointer access.
    pub const fn as_ptr(&self) -> *mut u8 {
        self.address as *mut u8
    }
}

/// Allocates `pages` fresh zeroed pages and maps them with `rights` at a new address.
pub fn allocate<S: Syscalls + ?Sized>(
    syscalls: &S,
    pages: usize,
    rights: Rights,
) -> Result<Mapping, Error> {
    pages_to_bytes(pages)?;
    let memory = syscalls.mem_alloc(pages, 0)?;
    match map(syscalls, memory, rights, 0, pages) {
        Ok(mapping) => Ok(mapping),
        Err(error) => {
            // Give the frames back; nothing else refers to them.
            let _ = syscalls.cap_drop(memory);
            Err(error)
        }
    }
}

/// Maps `pages` pages of the Memory capability `memory` from `first_page` with `rights` at a
/// new address (e.g. a region another task transferred).
pub fn map<S: Syscalls + ?Sized>(
    syscalls: &S,
    memory: CapSlot,
    rights: Rights,
    first_page: usize,
    pages: usize,
) -> Result<Mapping, Error> {
    let address = vmem::reserve(pages).ok_or(Error::BadLength)?;
    match syscalls.mem_map(memory, address, rights, first_page, pages) {
        Ok(()) => Ok(Mapping {
            capability: memory,
            address,
            pages,
        }),
        Err(error) => {
            vmem::release(address, pages);
            Err(error)
        }
    }
}

/// Maps the MMIO region of `mmio` with `rights` at a new address. `max_bytes` bounds the region
/// size: the kernel maps the whole region, and one larger than `max_bytes` is unmapped again and
/// refused with [`Error::BadLength`].
pub fn map_mmio<S: Syscalls + ?Sized>(
    syscalls: &S,
    mmio: CapSlot,
    rights: Rights,
    max_bytes: usize,
) -> Result<Mapping, Error> {
    let pages = max_bytes.div_ceil(PAGE_SIZE);
    let address = vmem::reserve(pages).ok_or(Error::BadLength)?;
    let size = match syscalls.mmio_map(mmio, address, rights) {
        Ok(size) => size,
        Err(error) => {
            vmem::release(address, pages);
            return Err(error);
        }
    };
    let mapped_pages = size.div_ceil(PAGE_SIZE);
    if mapped_pages > pages {
        // SAFETY: the range was mapped by the call above and nothing has used it yet.
        let _ = unsafe { syscalls.mem_unmap(address, mapped_pages) };
        vmem::release(address, pages);
        return Err(Error::BadLength);
    }
    if pages - mapped_pages >= 2 {
        // Return the unused tail of the reservation, keeping a guard page after the region.
        vmem::release(
            address + (mapped_pages + 1) * PAGE_SIZE,
            pages - mapped_pages - 1,
        );
    }
    Ok(Mapping {
        capability: mmio,
        address,
        pages: mapped_pages,
    })
}

/// Unmaps `mapping` and returns its addresses to the allocator (the capability is kept).
///
/// # Safety
///
/// Nothing may still use the mapped range (see [`Syscalls::mem_unmap`]).
pub unsafe fn unmap<S: Syscalls + ?Sized>(syscalls: &S, mapping: Mapping) -> Result<(), Error> {
    // SAFETY: the caller guarantees the range is unused.
    unsafe { syscalls.mem_unmap(mapping.address, mapping.pages) }?;
    vmem::release(mapping.address, mapping.pages);
    Ok(())
}

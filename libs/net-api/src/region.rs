//! Access to a frame region: copies in and out through raw pointers, never a Rust reference.
//!
//! The peer task maps the same frames and may write them at any moment, so (as for shared
//! memory, DESIGN.md section 8) bytes are copied out into private buffers before anyone looks at
//! them, and no `&[u8]` over the region ever exists. [`MappedRegion`] holds the crate's only
//! `unsafe` code.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;

/// A frame region as one side sees it. Every call is bounds-checked: `false` means nothing was
/// copied.
pub trait FrameMemory {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` into the region at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> bool;
    /// Copies `out.len()` bytes at `offset` out of the region.
    fn read(&self, offset: usize, out: &mut [u8]) -> bool;
}

fn fits(offset: usize, count: usize, len: usize) -> bool {
    offset.checked_add(count).is_some_and(|end| end <= len)
}

/// A frame region mapped into this task.
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
    /// lives, and no Rust reference to any of its bytes may exist (another task writes them).
    pub unsafe fn new(base: *mut u8, len: usize) -> Option<MappedRegion> {
        (base as usize).checked_add(len)?;
        Some(MappedRegion {
            base: NonNull::new(base)?,
            len,
        })
    }
}

impl FrameMemory for MappedRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn write(&self, offset: usize, data: &[u8]) -> bool {
        if !fits(offset, data.len(), self.len) {
            return false;
        }
        // SAFETY: offset + data.len() <= len (checked), so the destination lies in the mapping
        // `new`'s contract keeps valid; `data` is private memory, so the two do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(offset),
                data.len(),
            )
        };
        true
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        if !fits(offset, out.len(), self.len) {
            return false;
        }
        // SAFETY: as in `write`, for a source inside the mapping and a private destination.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        true
    }
}

/// A frame region on the heap, for host tests: clones share the bytes, like two tasks mapping
/// one Memory capability.
#[derive(Clone, Debug)]
pub struct HeapRegion {
    bytes: Arc<spin::Mutex<Vec<u8>>>,
}

impl HeapRegion {
    /// `len` zero bytes.
    pub fn new(len: usize) -> HeapRegion {
        HeapRegion {
            bytes: Arc::new(spin::Mutex::new(vec![0; len])),
        }
    }
}

impl FrameMemory for HeapRegion {
    fn len(&self) -> usize {
        self.bytes.lock().len()
    }

    fn write(&self, offset: usize, data: &[u8]) -> bool {
        let mut bytes = self.bytes.lock();
        match bytes.get_mut(offset..offset.saturating_add(data.len())) {
            Some(target) if fits(offset, data.len(), target.len() + offset) => {
                target.copy_from_slice(data);
                true
            }
            _ => false,
        }
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        let bytes = self.bytes.lock();
        match bytes.get(offset..offset.saturating_add(out.len())) {
            Some(source) if source.len() == out.len() => {
                out.copy_from_slice(source);
                true
            }
            _ => false,
        }
    }
}

//! Raw access to shared memory: the only `unsafe` in this crate.
//!
//! A [`Window`] is the client's mapping of its shared window. The host can read and change
//! every byte of it at any moment, so (DESIGN.md section 8) no Rust reference to it is ever
//! formed: bulk data moves with `ptr::copy_nonoverlapping` / `ptr::write_bytes` on raw
//! pointers, and small fields of coherent structures with volatile accesses. Every access goes
//! through a [`Span`], a bounds-checked range of a window, so the copies in this module are the
//! only places where an address is dereferenced, and each one is checked against the span
//! first.

use core::ptr::{self, NonNull};

use moat_abi::{CapSlot, PAGE_SIZE};
use moat_userlib::Syscalls;

use crate::protocol::WINDOW_RIGHTS;
use crate::types::DmaError;

/// The client's mapping of its DMA window: `len` bytes at a fixed client address, device
/// address `device_base` for the first byte.
///
/// A window is never unmapped while the task runs (it survives even the DMA server's view of
/// the client dying: a dead task has no address space left), so the grants carved from it may
/// hold raw pointers into it without a lifetime.
#[derive(Debug)]
pub struct Window {
    base: NonNull<u8>,
    len: usize,
    device_base: u64,
}

impl Window {
    /// A window over `len` bytes at `base`, whose first byte the device sees at `device_base`.
    /// `None` if `base` is null, `len` is zero, or the range wraps the address space or the
    /// device address space.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be mapped readable and writable for the rest of the program, and
    /// no Rust reference to any byte of it may exist, now or later (the memory is changed
    /// behind the compiler's back by the device and the host).
    pub unsafe fn new(base: *mut u8, len: usize, device_base: u64) -> Option<Window> {
        let base = NonNull::new(base)?;
        if len == 0
            || (base.as_ptr() as usize).checked_add(len).is_none()
            || device_base.checked_add(len as u64).is_none()
        {
            return None;
        }
        Some(Window {
            base,
            len,
            device_base,
        })
    }

    /// Window size in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty (never: [`Window::new`] refuses that).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Client-virtual address of the first byte.
    pub fn client_base(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Device address of the first byte.
    pub const fn device_base(&self) -> u64 {
        self.device_base
    }

    /// The span `offset..offset + len` of the window, or `None` if it does not fit.
    pub(crate) fn span(&self, offset: usize, len: usize) -> Option<Span> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset <= end <= self.len, so the result stays inside the mapped window (or
        // one past its end when len == 0), which Window::new checked does not wrap.
        let start = unsafe { self.base.add(offset) };
        Some(Span { start, len })
    }

    #[cfg(any(test, feature = "fake"))]
    /// The span at device address `device_address`, or `None` if it is not inside the window.
    pub(crate) fn span_at_device(&self, device_address: u64, len: usize) -> Option<Span> {
        let offset = device_address.checked_sub(self.device_base)?;
        self.span(usize::try_from(offset).ok()?, len)
    }
}

/// A bounds-checked range of a [`Window`]: raw pointer and length. Only [`Window::span`] makes
/// one, so `start..start + len` is always inside a live window.
#[derive(Debug)]
pub(crate) struct Span {
    start: NonNull<u8>,
    len: usize,
}

impl Span {
    /// Bytes in the span.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// The client address of the first byte (for descriptors and logs; never dereferenced as a
    /// reference).
    pub(crate) fn address(&self) -> usize {
        self.start.as_ptr() as usize
    }

    /// Whether `at..at + count` lies in the span.
    fn fits(&self, at: usize, count: usize) -> bool {
        at.checked_add(count).is_some_and(|end| end <= self.len)
    }

    /// Copies `source` into the span at `at`; `false` (and nothing copied) if it does not fit.
    pub(crate) fn copy_in(&self, at: usize, source: &[u8]) -> bool {
        if !self.fits(at, source.len()) {
            return false;
        }
        // SAFETY: the destination is inside the window (checked above), which is mapped
        // writable (Window::new's contract). It cannot overlap `source`: no Rust reference into
        // a window exists, so `source` lies in private memory. The host may change the
        // destination concurrently; raw copies are the accepted discipline for shared memory
        // (DESIGN.md section 8) and the bytes are never read back as Rust values here.
        unsafe {
            ptr::copy_nonoverlapping(source.as_ptr(), self.start.as_ptr().add(at), source.len())
        };
        true
    }

    /// Copies from the span at `at` into `destination`; `false` (and nothing copied) if it does
    /// not fit.
    pub(crate) fn copy_out(&self, at: usize, destination: &mut [u8]) -> bool {
        if !self.fits(at, destination.len()) {
            return false;
        }
        // SAFETY: the source is inside the window (checked above), mapped readable. It cannot
        // overlap `destination`, a Rust reference and so private memory. Any byte values are
        // valid u8s, so whatever the host wrote is a valid result.
        unsafe {
            ptr::copy_nonoverlapping(
                self.start.as_ptr().add(at),
                destination.as_mut_ptr(),
                destination.len(),
            )
        };
        true
    }

    /// Writes `count` copies of `byte` at `at`; `false` (and nothing written) if it does not
    /// fit.
    pub(crate) fn fill(&self, at: usize, count: usize, byte: u8) -> bool {
        if !self.fits(at, count) {
            return false;
        }
        if count == 0 {
            // Nothing to write (a bounce that fills its grant exactly): no call into memset.
            return true;
        }
        // SAFETY: the range is inside the window (checked above), mapped writable.
        unsafe { ptr::write_bytes(self.start.as_ptr().add(at), byte, count) };
        true
    }

    /// Reads a naturally aligned little-endian `u16`, `u32` or `u64` (by `N` bytes) at `at`
    /// with one volatile access; `None` if it does not fit or is misaligned.
    pub(crate) fn read_volatile<const N: usize>(&self, at: usize) -> Option<u64> {
        if !self.fits(at, N) {
            return None;
        }
        // SAFETY: `at + N` is inside the window (checked above), so `add` stays in bounds.
        let address = unsafe { self.start.as_ptr().add(at) };
        if !(address as usize).is_multiple_of(N) {
            return None;
        }
        // SAFETY: `address` is inside the window, mapped readable, and aligned for the type
        // read (checked above); every bit pattern is a valid integer.
        let value = unsafe {
            match N {
                1 => u64::from(ptr::read_volatile(address)),
                2 => u64::from(u16::from_le(ptr::read_volatile(address.cast::<u16>()))),
                4 => u64::from(u32::from_le(ptr::read_volatile(address.cast::<u32>()))),
                8 => u64::from_le(ptr::read_volatile(address.cast::<u64>())),
                _ => return None,
            }
        };
        Some(value)
    }

    /// Writes the low `N` bytes of `value` (1, 2, 4 or 8), little-endian, naturally aligned, at
    /// `at` with one volatile access; `false` if it does not fit or is misaligned.
    pub(crate) fn write_volatile<const N: usize>(&self, at: usize, value: u64) -> bool {
        if !self.fits(at, N) {
            return false;
        }
        // SAFETY: `at + N` is inside the window (checked above), so `add` stays in bounds.
        let address = unsafe { self.start.as_ptr().add(at) };
        if !(address as usize).is_multiple_of(N) {
            return false;
        }
        // SAFETY: `address` is inside the window, mapped writable, and aligned for the type
        // written (checked above). Truncating `value` is the documented behaviour.
        unsafe {
            match N {
                1 => ptr::write_volatile(address, value as u8),
                2 => ptr::write_volatile(address.cast::<u16>(), (value as u16).to_le()),
                4 => ptr::write_volatile(address.cast::<u32>(), (value as u32).to_le()),
                8 => ptr::write_volatile(address.cast::<u64>(), value.to_le()),
                _ => return false,
            }
        }
        true
    }
}

/// Maps the window capability `memory` (`size` bytes, whole pages) at a fresh address from the
/// task's address allocator and wraps it as a [`Window`].
pub(crate) fn map_window<S: Syscalls + ?Sized>(
    syscalls: &S,
    memory: CapSlot,
    size: usize,
    device_base: u64,
) -> Result<Window, DmaError> {
    if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
        return Err(DmaError::Malformed);
    }
    let mapping = moat_userlib::memory::map(syscalls, memory, WINDOW_RIGHTS, 0, size / PAGE_SIZE)
        .map_err(|_| DmaError::Backing)?;
    // SAFETY: the kernel has just mapped `size` bytes read-write at a range the allocator
    // reserved for this mapping alone; the client never unmaps its window, and nothing forms a
    // reference into it (only this module's raw accesses touch it).
    unsafe { Window::new(mapping.as_ptr(), mapping.len(), device_base) }.ok_or(DmaError::Malformed)
}

#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeDevice, FakeWindow};

#[cfg(any(test, feature = "fake"))]
mod fake {
    extern crate alloc;

    use alloc::vec;
    use alloc::vec::Vec;

    use super::Window;

    /// Device address of a fake window's first byte.
    pub const FAKE_DEVICE_BASE: u64 = 0x8800_0000;

    /// A window over leaked heap memory, for host tests: behaves like a mapped shared window,
    /// and [`FakeWindow::device`] gives a device that reads and writes it by device address.
    #[derive(Debug)]
    pub struct FakeWindow {
        window: Window,
    }

    impl FakeWindow {
        /// A window of `len` bytes (at least 1) filled with `stale` bytes, standing for what
        /// earlier transfers or the host left behind.
        pub fn new(len: usize, stale: u8) -> FakeWindow {
            FakeWindow::with_device_base(len, stale, FAKE_DEVICE_BASE)
        }

        /// As [`FakeWindow::new`], with the first byte at device address `device_base` (to
        /// match a server's grants in tests). A base so high that the window would wrap the
        /// device address space is moved down to fit.
        pub fn with_device_base(len: usize, stale: u8, device_base: u64) -> FakeWindow {
            let memory: &'static mut [u8] = vec![stale; len.max(1)].leak();
            let length = memory.len();
            let base = memory.as_mut_ptr();
            let device_base = device_base.min(u64::MAX - length as u64);
            // SAFETY: the buffer is leaked, so it stays valid for reads and writes for the rest
            // of the program; `memory` (the only reference to it) is not used again, so from
            // here on it is reached only through the window's raw pointers.
            let window = unsafe { Window::new(base, length, device_base) };
            FakeWindow {
                window: window.unwrap_or_else(|| unreachable!("a leaked buffer is non-null")),
            }
        }

        /// The window, as a client would see it (one fake window per client in tests).
        pub fn into_window(self) -> Window {
            self.window
        }

        /// A device that accesses the same memory as `window`.
        pub fn device(window: &Window) -> FakeDevice {
            FakeDevice {
                base: window.client_base(),
                len: window.len(),
                device_base: window.device_base(),
            }
        }
    }

    /// A fake device: reads and writes a window by device address, as DMA would.
    #[derive(Clone, Copy, Debug)]
    pub struct FakeDevice {
        base: usize,
        len: usize,
        device_base: u64,
    }

    impl FakeDevice {
        fn window(&self) -> Window {
            // SAFETY: the range was a live fake window (leaked memory: valid forever) and this
            // is only another raw view of it; no reference is formed.
            let window = unsafe { Window::new(self.base as *mut u8, self.len, self.device_base) };
            window.unwrap_or_else(|| unreachable!("copied from a valid window"))
        }

        /// Reads `len` bytes at `device_address`, as a device DMA read; `None` outside the
        /// window.
        pub fn read(&self, device_address: u64, len: usize) -> Option<Vec<u8>> {
            let span = self.window().span_at_device(device_address, len)?;
            let mut out = vec![0; len];
            span.copy_out(0, &mut out).then_some(out)
        }

        /// Writes `bytes` at `device_address`, as a device DMA write; `false` outside the
        /// window.
        pub fn write(&self, device_address: u64, bytes: &[u8]) -> bool {
            self.window()
                .span_at_device(device_address, bytes.len())
                .is_some_and(|span| span.copy_in(0, bytes))
        }
    }
}

//! The real [`Backing`]: windows are Memory objects from the kernel's shareable region, made
//! shared with the Share syscall and handed to clients as capabilities.
//!
//! Creating a window is one batch of four syscalls, never repeated per I/O:
//!
//! 1. `MemAlloc(pages, 0, MEM_ALLOC_SHAREABLE)`: frames from the kernel's shareable region (the
//!    only memory `Share` accepts), charged to the DMA server's memory quota;
//! 2. `Share(share, memory)`: the whole object becomes shared (the kernel refuses memory that any
//!    task maps, so this happens before any mapping), is zeroed by the kernel through its new
//!    mapping, and its device address comes back;
//! 3. `MemMap`: the server maps the window itself (at the unprotected alias, which the kernel
//!    picks for shared memory), so it can zero it again right away — the host may have written
//!    to it since the kernel zeroed it — and whenever pages change state;
//! 4. the server's Memory capability (rights `READ | WRITE | TRANSFER`) travels, as a copy with
//!    rights `WINDOW_RIGHTS` (`READ | WRITE`) only, in the reply to the client's `Register`.
//!
//! The server never maps a window into a client: the client maps its capability wherever it
//! likes, so [`Backing::map_into_client`] only checks the region and returns 0 (the client base
//! is the client's business; grants travel as window offsets). A dead client's mappings vanish
//! with its address space, so [`Backing::unmap_from_client`] has nothing to do either.
//!
//! Zeroing writes through the server's mapping with a function the binary supplies (raw
//! `write_bytes` on the target; host tests write through the fake kernel), so this module needs
//! `unsafe` only for the two syscalls whose wrappers are `unsafe fn`: `Share` and `Unshare`.

use alloc::vec::Vec;

use moat_abi::{CapSlot, Error, MEM_ALLOC_SHAREABLE, PAGE_SIZE, Rights, Syscall};
use moat_userlib::Syscalls;
use moat_userlib::memory::{self, Mapping};

use crate::backing::{Backing, SharedRegion};
use crate::error::DmaError;
use crate::grant::ClientRef;

/// Writes `len` zero bytes at `address` in the server's own address space (where the backing
/// mapped a window).
pub type ZeroFn<S> = fn(&S, usize, usize) -> Result<(), DmaError>;

/// One window's memory.
#[derive(Debug)]
struct WindowMemory {
    region: SharedRegion,
    /// The server's Memory capability for the whole object.
    memory: CapSlot,
    /// The server's own mapping (absent only while the state changes).
    mapping: Option<Mapping>,
}

/// The [`Backing`] over the kernel's memory and share syscalls.
#[derive(Debug)]
pub struct SyscallBacking<S: Syscalls> {
    syscalls: S,
    share: CapSlot,
    zero: ZeroFn<S>,
    windows: Vec<Option<WindowMemory>>,
}

/// A kernel error as the DMA protocol reports it: running out of memory is the server's budget
/// ([`DmaError::OutOfMemory`]); everything else is a refusal of the backing.
fn backing_error(error: Error) -> DmaError {
    match error {
        Error::OutOfMemory | Error::QuotaExceeded => DmaError::OutOfMemory,
        _ => DmaError::Backing,
    }
}

impl<S: Syscalls> SyscallBacking<S> {
    /// A backing that makes memory shared with the Share capability in slot `share` and zeroes
    /// windows with `zero`.
    pub fn new(syscalls: S, share: CapSlot, zero: ZeroFn<S>) -> Self {
        SyscallBacking {
            syscalls,
            share,
            zero,
            windows: Vec::new(),
        }
    }

    /// The syscalls handle.
    pub fn syscalls(&self) -> &S {
        &self.syscalls
    }

    /// The server's Memory capability for `region`, to attach (with rights `WINDOW_RIGHTS`) to
    /// the reply to a `Register`. `None` for a region this backing does not know.
    pub fn capability(&self, region: &SharedRegion) -> Option<CapSlot> {
        self.window(region).map(|window| window.memory)
    }

    /// The server's mapping of `region` (for tests and diagnostics).
    pub fn server_mapping(&self, region: &SharedRegion) -> Option<Mapping> {
        self.window(region).and_then(|window| window.mapping)
    }

    fn window(&self, region: &SharedRegion) -> Option<&WindowMemory> {
        match self.windows.get(region.handle as usize) {
            Some(Some(window)) if window.region == *region => Some(window),
            _ => None,
        }
    }

    fn window_mut(&mut self, region: &SharedRegion) -> Result<&mut WindowMemory, DmaError> {
        match self.windows.get_mut(region.handle as usize) {
            Some(Some(window)) if window.region == *region => Ok(window),
            _ => Err(DmaError::Backing),
        }
    }

    /// `MemAlloc` with the shareable flag (the typed wrapper has no flags argument).
    fn alloc_shareable(&self, pages: usize) -> Result<CapSlot, DmaError> {
        // SAFETY: MemAlloc takes no pointer and changes no memory the task uses.
        let results = unsafe {
            self.syscalls.syscall(
                Syscall::MemAlloc,
                [pages as u64, 0, MEM_ALLOC_SHAREABLE, 0, 0, 0],
            )
        };
        let results = moat_userlib::syscalls::check(results).map_err(backing_error)?;
        u32::try_from(results[1])
            .map(CapSlot)
            .map_err(|_| DmaError::Backing)
    }

    fn map_server(&self, memory: CapSlot, pages: usize) -> Result<Mapping, DmaError> {
        memory::map(
            &self.syscalls,
            memory,
            Rights::READ | Rights::WRITE,
            0,
            pages,
        )
        .map_err(backing_error)
    }

    fn unmap_server(&self, mapping: Mapping) -> Result<(), DmaError> {
        // SAFETY: the server never forms a reference into a window: its only accesses are the
        // raw writes of the zero function, none of which is in progress.
        unsafe { memory::unmap(&self.syscalls, mapping) }.map_err(backing_error)
    }
}

impl<S: Syscalls> Backing for SyscallBacking<S> {
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn share(&mut self, pages: usize) -> Result<SharedRegion, DmaError> {
        if pages == 0 || u32::try_from(pages).is_err() {
            return Err(DmaError::InvalidArgument);
        }
        let memory = self.alloc_shareable(pages)?;
        // SAFETY: the memory was allocated just now and is mapped nowhere, so no reference to
        // it exists; its content is not needed.
        let device_base = match unsafe { self.syscalls.share(self.share, memory) } {
            Ok(address) => address,
            Err(error) => {
                let _ = self.syscalls.cap_drop(memory);
                return Err(backing_error(error));
            }
        };
        let mapping = match self.map_server(memory, pages) {
            Ok(mapping) => mapping,
            Err(error) => {
                // Dropping the last capability returns the frames; the kernel makes shared
                // frames private (and zeroes them) before anyone reuses them.
                let _ = self.syscalls.cap_drop(memory);
                return Err(error);
            }
        };
        let handle = match self.windows.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.windows.push(None);
                self.windows.len() - 1
            }
        };
        let region = SharedRegion {
            handle: handle as u32,
            device_base,
            pages,
        };
        self.windows[handle] = Some(WindowMemory {
            region,
            memory,
            mapping: Some(mapping),
        });
        Ok(region)
    }

    fn zero(&mut self, region: &SharedRegion) -> Result<(), DmaError> {
        let mapping = self
            .window(region)
            .and_then(|window| window.mapping)
            .ok_or(DmaError::Backing)?;
        (self.zero)(&self.syscalls, mapping.address, mapping.len())
    }

    fn map_into_client(
        &mut self,
        region: &SharedRegion,
        _client: ClientRef,
    ) -> Result<u64, DmaError> {
        // The client maps the capability itself (see the module documentation).
        self.window(region).map(|_| 0).ok_or(DmaError::Backing)
    }

    fn unmap_from_client(
        &mut self,
        region: &SharedRegion,
        _client: ClientRef,
    ) -> Result<(), DmaError> {
        self.window(region).map(drop).ok_or(DmaError::Backing)
    }

    fn unshare(&mut self, region: &SharedRegion) -> Result<(), DmaError> {
        let window = self.window_mut(region)?;
        let (memory, mapping) = (window.memory, window.mapping.take());
        // The kernel refuses to change the state of memory that any task maps, the server
        // included.
        if let Some(mapping) = mapping
            && let Err(error) = self.unmap_server(mapping)
        {
            self.window_mut(region)?.mapping = Some(mapping);
            return Err(error);
        }
        // SAFETY: the server's mapping is gone and no reference into the window exists.
        unsafe { self.syscalls.unshare(self.share, memory) }.map_err(backing_error)?;
        // Map the now private pages again, for the zeroing that follows.
        let mapping = self.map_server(memory, region.pages)?;
        self.window_mut(region)?.mapping = Some(mapping);
        Ok(())
    }

    fn release(&mut self, region: SharedRegion) -> Result<(), DmaError> {
        let window = self.window_mut(&region)?;
        if let Some(mapping) = window.mapping.take() {
            self.unmap_server(mapping)?;
        }
        let memory = self.window_mut(&region)?.memory;
        self.syscalls.cap_drop(memory).map_err(backing_error)?;
        self.windows[region.handle as usize] = None;
        Ok(())
    }
}

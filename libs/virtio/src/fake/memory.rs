//! Heap-backed device-visible memory with a hook on every driver read.

use std::boxed::Box;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec;
use std::vec::Vec;

use crate::memory::SharedRegion;

/// One driver read of fake memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadEvent {
    /// Offset of the first byte read from the start of the [`FakeMemory`].
    pub offset: usize,
    /// Device address of the first byte read.
    pub address: u64,
    /// Bytes read.
    pub width: usize,
}

/// Runs before every driver read with the whole memory in hand; whatever it writes is what
/// the read returns (and what the device sees).
pub type ReadHook = Box<dyn FnMut(ReadEvent, &mut [u8]) + Send>;

struct Inner {
    bytes: Vec<u8>,
    hook: Option<ReadHook>,
    reads: u64,
}

/// Device-visible memory for tests: `len` bytes at device address `device_base`. Clones share
/// the memory. The driver side reaches it through [`FakeRegion`]s, the device side through
/// [`DeviceBus`].
#[derive(Clone)]
pub struct FakeMemory {
    inner: Arc<Mutex<Inner>>,
    device_base: u64,
    len: usize,
}

impl core::fmt::Debug for FakeMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeMemory")
            .field("device_base", &format_args!("{:#x}", self.device_base))
            .field("len", &self.len)
            .finish()
    }
}

impl FakeMemory {
    /// `len` zero bytes at device address `device_base`.
    pub fn new(len: usize, device_base: u64) -> FakeMemory {
        FakeMemory {
            inner: Arc::new(Mutex::new(Inner {
                bytes: vec![0; len],
                hook: None,
                reads: 0,
            })),
            device_base,
            len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Device address of the first byte.
    pub const fn device_base(&self) -> u64 {
        self.device_base
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The driver's view of `offset..offset + len`, or `None` if it does not fit.
    pub fn region(&self, offset: usize, len: usize) -> Option<FakeRegion> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| FakeRegion {
            memory: self.clone(),
            offset,
            len,
        })
    }

    /// Installs `hook`, run before every driver read (replacing any earlier hook).
    pub fn set_read_hook(&self, hook: impl FnMut(ReadEvent, &mut [u8]) + Send + 'static) {
        self.lock().hook = Some(Box::new(hook));
    }

    /// Removes the read hook.
    pub fn clear_read_hook(&self) {
        self.lock().hook = None;
    }

    /// Driver reads so far.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// Offset of device address `address` if `address..address + len` is inside the memory.
    fn offset_of(&self, address: u64, len: usize) -> Option<usize> {
        let offset = usize::try_from(address.checked_sub(self.device_base)?).ok()?;
        (offset.checked_add(len)? <= self.len).then_some(offset)
    }

    /// A driver read of `N` bytes at `offset` (aligned to `N`), after the hook.
    fn driver_read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        if end > self.len || !offset.is_multiple_of(N) {
            return None;
        }
        let mut inner = self.lock();
        inner.reads += 1;
        let event = ReadEvent {
            offset,
            address: self.device_base + offset as u64,
            width: N,
        };
        let Inner { bytes, hook, .. } = &mut *inner;
        if let Some(hook) = hook {
            hook(event, bytes);
        }
        let mut out = [0; N];
        out.copy_from_slice(&bytes[offset..end]);
        Some(out)
    }

    fn driver_write(&self, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len()) else {
            return false;
        };
        if end > self.len || !offset.is_multiple_of(data.len().max(1)) {
            return false;
        }
        self.lock().bytes[offset..end].copy_from_slice(data);
        true
    }
}

/// Device-side access to memory by device address, as DMA would: no hooks, no alignment.
pub trait DeviceBus {
    /// Reads `out.len()` bytes at `address`; `false` (and `out` untouched) outside the memory.
    fn read(&self, address: u64, out: &mut [u8]) -> bool;
    /// Writes `data` at `address`; `false` (and nothing written) outside the memory.
    fn write(&self, address: u64, data: &[u8]) -> bool;
}

impl DeviceBus for FakeMemory {
    fn read(&self, address: u64, out: &mut [u8]) -> bool {
        let Some(offset) = self.offset_of(address, out.len()) else {
            return false;
        };
        out.copy_from_slice(&self.lock().bytes[offset..offset + out.len()]);
        true
    }

    fn write(&self, address: u64, data: &[u8]) -> bool {
        let Some(offset) = self.offset_of(address, data.len()) else {
            return false;
        };
        self.lock().bytes[offset..offset + data.len()].copy_from_slice(data);
        true
    }
}

/// A fake DMA window's device: the queue and `Bounce`d grants in one window.
impl DeviceBus for moat_dma_api::FakeDevice {
    fn read(&self, address: u64, out: &mut [u8]) -> bool {
        match moat_dma_api::FakeDevice::read(self, address, out.len()) {
            Some(bytes) => {
                out.copy_from_slice(&bytes);
                true
            }
            None => false,
        }
    }

    fn write(&self, address: u64, data: &[u8]) -> bool {
        moat_dma_api::FakeDevice::write(self, address, data)
    }
}

/// The driver's view of part of a [`FakeMemory`], as a [`SharedRegion`].
#[derive(Clone, Debug)]
pub struct FakeRegion {
    memory: FakeMemory,
    offset: usize,
    len: usize,
}

impl FakeRegion {
    /// The memory this region is part of.
    pub fn memory(&self) -> &FakeMemory {
        &self.memory
    }

    fn at(&self, offset: usize, width: usize) -> Option<usize> {
        let end = offset.checked_add(width)?;
        (end <= self.len).then_some(self.offset + offset)
    }
}

impl SharedRegion for FakeRegion {
    fn device_address(&self) -> u64 {
        self.memory.device_base + self.offset as u64
    }

    fn len(&self) -> usize {
        self.len
    }

    fn read_u16(&self, offset: usize) -> Option<u16> {
        let at = self.at(offset, 2)?;
        self.memory.driver_read::<2>(at).map(u16::from_le_bytes)
    }

    fn read_u32(&self, offset: usize) -> Option<u32> {
        let at = self.at(offset, 4)?;
        self.memory.driver_read::<4>(at).map(u32::from_le_bytes)
    }

    fn write_u16(&self, offset: usize, value: u16) -> bool {
        self.at(offset, 2)
            .is_some_and(|at| self.memory.driver_write(at, &value.to_le_bytes()))
    }

    fn write_u32(&self, offset: usize, value: u32) -> bool {
        self.at(offset, 4)
            .is_some_and(|at| self.memory.driver_write(at, &value.to_le_bytes()))
    }

    fn write_u64(&self, offset: usize, value: u64) -> bool {
        self.at(offset, 8)
            .is_some_and(|at| self.memory.driver_write(at, &value.to_le_bytes()))
    }

    fn zero(&self) {
        let mut inner = self.memory.lock();
        inner.bytes[self.offset..self.offset + self.len].fill(0);
    }
}

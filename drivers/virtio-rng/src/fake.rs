//! Fakes for host tests (feature `test-utils`).
//!
//! - [`FakeDma`]: a DMA server's window over heap memory (filled with [`STALE`] bytes, what an
//!   earlier user or the host left). It hands out real `moat_dma_api` grants, so the driver's
//!   `Bounce` zeroing and copies run for real.
//! - [`FakeEntropy`]: a virtio-rng device: a `moat_virtio` fake register model plus the device
//!   side of queue 0, writing pseudo-random bytes into every buffer it is given. It records what
//!   it wrote ([`FakeEntropy::produced`]), checks every buffer is device-writable and inside the
//!   window, and misbehaves on request ([`Misbehaviour`]).
//! - [`FakeIrq`]: the driver's [`Interrupt`]: a wait lets the fake device serve what is queued
//!   and reports whether it raised its interrupt.

use core::cell::{Cell, RefCell};
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use moat_dma_api::{Coherent, FakeDevice, FakeWindow, FromDevice, Grant, Window, fake};
use moat_rng_api::RngError;
use moat_virtio::fake::{Chain, FakeMmioDevice, FakeQueueDevice};
use moat_virtio::features::{ACCESS_PLATFORM, VERSION_1};

use crate::device::{DEVICE_ID, DmaPort, Interrupt};

/// What the window holds where nothing was copied.
pub const STALE: u8 = 0x5a;

/// Bytes of the fake window.
pub const WINDOW: usize = 64 * 1024;

/// A fake DMA window with a bump allocator.
#[derive(Debug)]
pub struct FakeDma {
    window: Window,
    next: Cell<usize>,
    next_id: Cell<u64>,
    maps_left: Cell<Option<usize>>,
    reset_completes: Cell<u32>,
}

impl Default for FakeDma {
    fn default() -> Self {
        FakeDma::new()
    }
}

impl FakeDma {
    /// A fresh window of [`WINDOW`] bytes of [`STALE`].
    pub fn new() -> FakeDma {
        FakeDma {
            window: FakeWindow::new(WINDOW, STALE).into_window(),
            next: Cell::new(0),
            next_id: Cell::new(1),
            maps_left: Cell::new(None),
            reset_completes: Cell::new(0),
        }
    }

    /// The device's view of the window.
    pub fn device(&self) -> FakeDevice {
        FakeWindow::device(&self.window)
    }

    /// After `maps` more allocations every allocation fails (`None`: never).
    pub fn set_maps_left(&self, maps: Option<usize>) {
        self.maps_left.set(maps);
    }

    /// `ResetComplete`s so far.
    pub fn reset_completes(&self) -> u32 {
        self.reset_completes.get()
    }

    fn allocate(&self, len: usize, align: usize) -> Result<(u64, usize), RngError> {
        if let Some(left) = self.maps_left.get() {
            if left == 0 {
                return Err(RngError::NoMemory);
            }
            self.maps_left.set(Some(left - 1));
        }
        let offset = self.next.get().next_multiple_of(align.max(16));
        if len == 0 || offset + len > self.window.len() {
            return Err(RngError::NoMemory);
        }
        self.next.set(offset + len);
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Ok((id, offset))
    }
}

impl DmaPort for FakeDma {
    fn reset_complete(&self) -> Result<(), RngError> {
        self.reset_completes.set(self.reset_completes.get() + 1);
        Ok(())
    }

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, RngError> {
        let (id, offset) = self.allocate(size, align)?;
        fake::coherent(&self.window, id, offset, size).ok_or(RngError::NoMemory)
    }

    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, RngError> {
        let (id, offset) = self.allocate(len, 0)?;
        fake::grant(&self.window, id, offset, len).ok_or(RngError::NoMemory)
    }
}

/// How the fake device answers while set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Used length to report instead of the bytes written.
    pub written: Option<u32>,
    /// Write only this many bytes (and report that many).
    pub short: Option<usize>,
    /// Take requests but never complete them (and raise no interrupt).
    pub silent: bool,
    /// Before the real completion, publish a used entry with this descriptor id.
    pub forged_id: Option<u32>,
    /// Publish a used index far ahead instead of completing.
    pub jump: bool,
}

/// A fake virtio-rng device whose DMA reaches a [`FakeDma`] window.
pub struct FakeEntropy {
    /// The register model (the driver owns a clone).
    pub mmio: FakeMmioDevice,
    /// Misbehaviour applied to every request while set.
    pub misbehave: Misbehaviour,
    /// Every byte the device wrote, in order.
    pub produced: Vec<u8>,
    /// Buffers that were not device-writable or not inside the window (a test expects none).
    pub violations: Vec<String>,
    bus: FakeDevice,
    queue: Option<FakeQueueDevice<FakeDevice>>,
    state: u64,
}

impl core::fmt::Debug for FakeEntropy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeEntropy")
            .field("produced", &self.produced.len())
            .finish()
    }
}

impl FakeEntropy {
    /// A modern entropy device (`VERSION_1`, `ACCESS_PLATFORM`) with one queue of at most
    /// `queue_max` entries.
    pub fn new(dma: &FakeDma, queue_max: u32) -> FakeEntropy {
        FakeEntropy {
            mmio: FakeMmioDevice::new(DEVICE_ID, VERSION_1 | ACCESS_PLATFORM, 1, queue_max),
            misbehave: Misbehaviour::default(),
            produced: Vec::new(),
            violations: Vec::new(),
            bus: dma.device(),
            queue: None,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn queue(&mut self) -> Option<&mut FakeQueueDevice<FakeDevice>> {
        if self.queue.is_none() {
            let registers = self.mmio.queue(0).filter(|queue| queue.ready)?;
            self.queue = Some(FakeQueueDevice::from_registers(self.bus, &registers));
        }
        self.queue.as_mut()
    }

    fn next_byte(&mut self) -> u8 {
        // xorshift64: not random, but no two neighbouring bytes repeat a pattern a test could
        // mistake for a copy bug.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 24) as u8
    }

    /// Serves every available request; raises the interrupt if any completed. Returns how many
    /// were taken.
    pub fn process(&mut self) -> usize {
        let mut taken = 0;
        let mut completed = false;
        while let Some(chain) = self.queue().and_then(FakeQueueDevice::pop) {
            taken += 1;
            completed |= self.serve(&chain);
        }
        if completed {
            self.mmio.raise_interrupt(1);
        }
        taken
    }

    fn serve(&mut self, chain: &Chain) -> bool {
        for segment in &chain.segments {
            let inside = self
                .bus
                .read(segment.address, segment.len as usize)
                .is_some();
            if !segment.writable || !inside {
                self.violations.push(format!(
                    "segment {:#x}+{} writable={} inside={inside}",
                    segment.address, segment.len, segment.writable
                ));
            }
        }
        let capacity = chain.writable_capacity() as usize;
        let count = self.misbehave.short.unwrap_or(capacity).min(capacity);
        let bytes: Vec<u8> = (0..count).map(|_| self.next_byte()).collect();
        let written = chain.write(&self.bus, &bytes).unwrap_or(0);
        self.produced.extend_from_slice(&bytes[..written as usize]);
        let misbehave = self.misbehave;
        if misbehave.silent {
            return false;
        }
        let Some(queue) = self.queue() else {
            return false;
        };
        if let Some(id) = misbehave.forged_id {
            queue.push_used(id, 1);
        }
        if misbehave.jump {
            let jumped = queue.used_idx().wrapping_add(1000);
            queue.set_used_idx(jumped);
        } else {
            queue.complete(chain.head, misbehave.written.unwrap_or(written));
        }
        true
    }
}

/// The driver's interrupt over a shared [`FakeEntropy`]: each wait lets the device run.
#[derive(Clone, Debug)]
pub struct FakeIrq {
    device: Rc<RefCell<FakeEntropy>>,
    waits: Rc<Cell<u32>>,
    unmasks: Rc<Cell<u32>>,
}

impl FakeIrq {
    /// The interrupt of `device`.
    pub fn new(device: &Rc<RefCell<FakeEntropy>>) -> FakeIrq {
        FakeIrq {
            device: device.clone(),
            waits: Rc::new(Cell::new(0)),
            unmasks: Rc::new(Cell::new(0)),
        }
    }

    /// Waits so far.
    pub fn waits(&self) -> u32 {
        self.waits.get()
    }

    /// Unmasks so far.
    pub fn unmasks(&self) -> u32 {
        self.unmasks.get()
    }
}

impl Interrupt for FakeIrq {
    fn wait(&mut self) -> bool {
        self.waits.set(self.waits.get() + 1);
        let mut device = self.device.borrow_mut();
        device.process();
        device.mmio.interrupt_status() != 0
    }

    fn unmask(&mut self) {
        self.unmasks.set(self.unmasks.get() + 1);
    }
}

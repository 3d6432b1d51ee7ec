//! One virtio-rng device: bring-up, then one request at a time — a single device-writable
//! buffer, which the device fills with random bytes (VirtIO 1.2 section 5.4).
//!
//! # Bring-up ([`RngDevice::start`])
//!
//! Probe the slot, **reset and wait for the status to read back 0** (only then has the device
//! stopped writing memory a previous instance gave it), tell the DMA server so (its quarantined
//! grants may be reused), negotiate (no device feature bits; the transport accepts `VERSION_1`
//! and `ACCESS_PLATFORM`), set up queue 0 with its rings in one coherent allocation, map one
//! from-device grant of [`MAX_FILL`] bytes, `DRIVER_OK`.
//!
//! # A request ([`RngDevice::fill`])
//!
//! `Bounce::from_device` zeroes the grant and hands it out as an `InFlight`; its segment goes on
//! the queue; the driver waits for the interrupt. The used entry is checked by `moat-virtio`
//! (id outstanding, length within what was posted) before it is acted on, and only the
//! reported number of bytes is copied out of shared memory — a device that claims more than
//! it was given, jumps the used index or never answers gets reset and the driver refuses
//! everything after ([`RngError::DeviceFailed`], [`RngError::TimedOut`]). Used entries naming
//! nothing outstanding are counted and ignored.

use core::fmt;

use moat_dma_api::{Bounce, Coherent, DmaClient, FromDevice, Grant};
use moat_rng_api::{EntropySource, MAX_FILL, RngError};
use moat_userlib::Syscalls;
use moat_virtio::memory::DeviceBuffer;
use moat_virtio::{Mmio, SetupError, SplitQueue, Token, Transport, TransportError, UsedError};

/// VirtIO device type of an entropy device.
pub const DEVICE_ID: u32 = 4;

/// Status polls after a reset before giving up.
pub const RESET_POLLS: u32 = 100_000;

/// Interrupts waited for per request before the device counts as dead.
pub const MAX_WAITS: u32 = 16;

/// Queue entries asked for: one request is in flight at a time.
const QUEUE_SIZE: u16 = 4;

/// Bytes between virtio-mmio slots (QEMU `virt`).
pub const SLOT_STRIDE: usize = 0x200;

/// The offset of the first modern entropy device in a mapping of `len` bytes (the page an
/// Mmio capability maps may hold several slots). Reads only the identification registers.
pub fn find_slot<T: Mmio>(page: &T, len: usize) -> Option<usize> {
    use moat_virtio::mmio::{MAGIC, REGION_SIZE, register};
    (0..len)
        .step_by(SLOT_STRIDE)
        .take_while(|offset| offset + REGION_SIZE <= len)
        .find(|&offset| {
            page.read32(offset + register::MAGIC_VALUE) == MAGIC
                && page.read32(offset + register::VERSION) == 2
                && page.read32(offset + register::DEVICE_ID) == DEVICE_ID
        })
}

/// What the driver needs from the DMA server (implemented for `DmaClient`; tests use
/// `crate::fake::FakeDma`).
pub trait DmaPort {
    /// Tells the server the device has been reset (status read back 0).
    fn reset_complete(&self) -> Result<(), RngError>;
    /// Ring memory: `size` bytes, device address aligned to `align`.
    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, RngError>;
    /// A streaming grant of `len` bytes that the device writes.
    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, RngError>;
}

impl<S: Syscalls> DmaPort for DmaClient<S> {
    fn reset_complete(&self) -> Result<(), RngError> {
        DmaClient::reset_complete(self)
            .map(drop)
            .map_err(|_| RngError::NoMemory)
    }

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, RngError> {
        DmaClient::alloc_coherent(self, size, align as u64).map_err(|_| RngError::NoMemory)
    }

    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, RngError> {
        self.map::<FromDevice>(len, 0, 0)
            .map_err(|_| RngError::NoMemory)
    }
}

/// The device's interrupt (on the target: a notification bit and `IrqAck`).
pub trait Interrupt {
    /// Waits for the interrupt; `false` if none came within the task's timeout.
    fn wait(&mut self) -> bool;
    /// Unmasks the line again, after the device's interrupt status was acknowledged.
    fn unmask(&mut self);
}

/// Why the device could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The transport refused (no device, legacy, reset timeout, features refused, …).
    Transport(TransportError),
    /// The slot holds another device type.
    NotEntropy(u32),
    /// The DMA server refused memory or the reset declaration.
    Dma(RngError),
    /// The queue could not be set up.
    Queue(SetupError),
}

impl From<TransportError> for StartError {
    fn from(error: TransportError) -> Self {
        StartError::Transport(error)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Transport(error) => write!(f, "transport: {error}"),
            StartError::NotEntropy(id) => write!(f, "device type {id} is not an entropy device"),
            StartError::Dma(error) => write!(f, "dma: {error}"),
            StartError::Queue(error) => write!(f, "queue: {error:?}"),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests completed by the device.
    pub completed: u64,
    /// Bytes copied out.
    pub bytes: u64,
    /// Used entries that named nothing outstanding or lied about their length.
    pub hostile_entries: u64,
    /// Interrupts waited for.
    pub interrupts: u64,
}

/// A started virtio-rng device. See the [module docs](self).
pub struct RngDevice<T: Mmio, I: Interrupt> {
    transport: Transport<T>,
    queue: SplitQueue<Coherent>,
    irq: I,
    /// The one bounce buffer; `None` once the device failed with it in flight.
    buffer: Option<Grant<FromDevice>>,
    failed: bool,
    stats: Stats,
}

impl<T: Mmio, I: Interrupt> RngDevice<T, I> {
    /// Brings the device in `mmio` up; `wait` runs between status polls during the reset.
    pub fn start(
        mmio: T,
        dma: &impl DmaPort,
        irq: I,
        wait: impl FnMut(),
    ) -> Result<Self, StartError> {
        let mut transport = Transport::probe(mmio)?;
        if transport.device_id() != DEVICE_ID {
            return Err(StartError::NotEntropy(transport.device_id()));
        }
        transport.reset_with(RESET_POLLS, wait)?;
        dma.reset_complete().map_err(StartError::Dma)?;
        transport.initialize(0, RESET_POLLS)?;
        match Self::queue_and_buffer(&mut transport, dma) {
            Ok((queue, buffer)) => {
                transport.driver_ok();
                Ok(RngDevice {
                    transport,
                    queue,
                    irq,
                    buffer: Some(buffer),
                    failed: false,
                    stats: Stats::default(),
                })
            }
            Err(error) => {
                transport.fail();
                Err(error)
            }
        }
    }

    fn queue_and_buffer(
        transport: &mut Transport<T>,
        dma: &impl DmaPort,
    ) -> Result<(SplitQueue<Coherent>, Grant<FromDevice>), StartError> {
        let size = SplitQueue::<Coherent>::fit_size(transport.queue_max_size(0)?, QUEUE_SIZE);
        let bytes = SplitQueue::<Coherent>::region_size(size)
            .ok_or(StartError::Queue(SetupError::BadSize(size)))?;
        let region = dma
            .alloc_coherent(bytes, SplitQueue::<Coherent>::REGION_ALIGN)
            .map_err(StartError::Dma)?;
        let queue = SplitQueue::new(0, size, region, false).map_err(StartError::Queue)?;
        transport.attach_queue(&queue)?;
        let buffer = dma.map_from_device(MAX_FILL).map_err(StartError::Dma)?;
        Ok((queue, buffer))
    }

    /// Counters.
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the device has failed (everything is refused).
    pub const fn failed(&self) -> bool {
        self.failed
    }

    /// Waits for the device to finish `token`; the bytes it says it wrote.
    fn wait_for(&mut self, token: Token) -> Result<u32, RngError> {
        for _ in 0..MAX_WAITS {
            // At most a queue's worth of entries per round: a device that keeps publishing
            // cannot keep the driver here.
            for _ in 0..self.queue.size() {
                match self.queue.pop_used() {
                    None => break,
                    Some(Ok(done)) if done.token == token => return Ok(done.written),
                    Some(Ok(_))
                    | Some(Err(UsedError::IdOutOfRange { .. }))
                    | Some(Err(UsedError::NotOutstanding { .. })) => {
                        self.stats.hostile_entries += 1
                    }
                    Some(Err(_)) => {
                        // A length beyond the buffer, a jumping index, unreadable rings.
                        self.stats.hostile_entries += 1;
                        return Err(RngError::DeviceFailed);
                    }
                }
            }
            self.stats.interrupts += 1;
            if !self.irq.wait() {
                return Err(RngError::TimedOut);
            }
            // Acknowledge at the device first, then unmask the line (edge-triggered).
            self.transport.take_interrupt();
            self.irq.unmask();
        }
        Err(RngError::TimedOut)
    }

    /// Resets the device (its DMA stops once the status reads 0) and refuses everything from
    /// now on.
    fn fail(&mut self) {
        self.failed = true;
        let _ = self.transport.reset(RESET_POLLS);
    }
}

impl<T: Mmio, I: Interrupt> EntropySource for RngDevice<T, I> {
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, RngError> {
        let Some(grant) = self.buffer.take().filter(|_| !self.failed) else {
            return Err(RngError::DeviceFailed);
        };
        let len = out.len().min(grant.len());
        if len == 0 {
            self.buffer = Some(grant);
            return Ok(0);
        }
        let in_flight = match Bounce::from_device(grant, len) {
            Ok(in_flight) => in_flight,
            Err(refused) => {
                self.buffer = Some(refused.value);
                return Err(RngError::BadLength);
            }
        };
        let added = match in_flight.segment() {
            Some(segment) => self.queue.add(&[segment]).ok(),
            None => None,
        };
        let Some(token) = added else {
            // Nothing was made available: the device never saw the buffer.
            self.buffer = in_flight.complete(&mut []).ok();
            return Err(RngError::DeviceFailed);
        };
        if self.queue.should_notify() {
            self.transport.notify(self.queue.index());
        }
        match self.wait_for(token) {
            Ok(written) => {
                // moat-virtio checked `written` against what was posted; bound it again.
                let written = (written as usize).min(len);
                self.buffer = in_flight.complete(&mut out[..written]).ok();
                self.stats.completed += 1;
                self.stats.bytes += written as u64;
                Ok(written)
            }
            Err(error) => {
                self.fail();
                // The buffer stays allocated: a device that did not stop may still write it.
                let _ = in_flight;
                Err(error)
            }
        }
    }
}

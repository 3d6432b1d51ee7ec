//! The modern virtio-mmio transport (VirtIO 1.2 section 4.2, version 2 only).
//!
//! Initialisation follows section 3.1.1: reset (write 0 to `Status`, then wait until it reads
//! back 0: only then has the device stopped touching memory), `ACKNOWLEDGE`, `DRIVER`, feature
//! negotiation, `FEATURES_OK` confirmed by reading it back, queue setup, `DRIVER_OK`. Legacy
//! (version 1) devices are refused.
//!
//! The status the driver has set is kept privately and written whole; the device's `Status` is
//! read only to confirm reset and `FEATURES_OK` and to report `DEVICE_NEEDS_RESET`. Every value
//! read from the device is untrusted: it can make a call fail, never panic.

use core::fmt;

use crate::features;
use crate::memory::SharedRegion;
use crate::mmio::{CONFIG_SIZE, MAGIC, Mmio, interrupt, register, status};
use crate::queue::{QueueAddresses, SplitQueue};

/// Times [`Transport::read_config`] retries when the configuration generation changes under
/// it, before giving up.
pub const CONFIG_ATTEMPTS: u32 = 16;

/// Why a transport operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The magic value is wrong: no virtio-mmio device here.
    BadMagic(u32),
    /// A legacy (version 1) device: only modern devices are driven.
    Legacy,
    /// A version this crate does not know.
    UnsupportedVersion(u32),
    /// Device id 0: an empty slot.
    NoDevice,
    /// The status register did not read back 0 within the allowed polls after a reset.
    ResetTimeout {
        /// The last status read.
        status: u32,
    },
    /// The device does not offer a feature the driver requires (`VERSION_1`).
    MissingFeatures(u64),
    /// The device cleared `FEATURES_OK`: it does not support the accepted subset. The device
    /// has been marked `FAILED`.
    FeaturesRefused,
    /// The queue does not exist (its maximum size reads 0).
    QueueUnavailable(u16),
    /// The queue is already set up (`QueueReady` is not 0): reset the device first.
    QueueInUse(u16),
    /// The requested size is 0, not a power of two, or above the device's maximum.
    BadQueueSize {
        /// The queue.
        index: u16,
        /// The size asked for.
        size: u16,
        /// The device's maximum.
        max: u32,
    },
    /// A configuration read outside the configuration space or misaligned.
    ConfigOutOfRange {
        /// Offset in the configuration space.
        offset: usize,
        /// Access width.
        width: usize,
    },
    /// The configuration generation kept changing during reads.
    ConfigUnstable,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::BadMagic(magic) => write!(f, "bad magic {magic:#x}"),
            TransportError::Legacy => f.write_str("legacy virtio-mmio device"),
            TransportError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            TransportError::NoDevice => f.write_str("no device"),
            TransportError::ResetTimeout { status } => {
                write!(f, "reset timed out (status {status:#x})")
            }
            TransportError::MissingFeatures(bits) => write!(f, "missing features {bits:#x}"),
            TransportError::FeaturesRefused => f.write_str("device refused the features"),
            TransportError::QueueUnavailable(index) => write!(f, "queue {index} unavailable"),
            TransportError::QueueInUse(index) => write!(f, "queue {index} already in use"),
            TransportError::BadQueueSize { index, size, max } => {
                write!(f, "queue {index}: size {size} not allowed (max {max})")
            }
            TransportError::ConfigOutOfRange { offset, width } => {
                write!(f, "config access {offset:#x}+{width} out of range")
            }
            TransportError::ConfigUnstable => f.write_str("config generation unstable"),
        }
    }
}

/// Pending interrupt causes, as read from `InterruptStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterruptStatus(u32);

impl InterruptStatus {
    /// The raw bits (only the known causes).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Some queue has new used buffers.
    pub const fn used_buffer(self) -> bool {
        self.0 & interrupt::USED_BUFFER != 0
    }

    /// The configuration space changed.
    pub const fn config_changed(self) -> bool {
        self.0 & interrupt::CONFIG_CHANGE != 0
    }

    /// Nothing pending.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One virtio-mmio device. See the [module docs](self).
#[derive(Debug)]
pub struct Transport<T: Mmio> {
    mmio: T,
    device_id: u32,
    vendor_id: u32,
    /// The status bits this driver has set since the last reset.
    status: u32,
    /// The features accepted by the last successful negotiation.
    features: u64,
}

impl<T: Mmio> Transport<T> {
    /// Checks that a modern virtio-mmio device is behind `mmio`: the magic value, version 2
    /// (legacy version 1 is refused) and a non-zero device id. Touches no other register.
    pub fn probe(mmio: T) -> Result<Self, TransportError> {
        let magic = mmio.read32(register::MAGIC_VALUE);
        if magic != MAGIC {
            return Err(TransportError::BadMagic(magic));
        }
        match mmio.read32(register::VERSION) {
            2 => {}
            1 => return Err(TransportError::Legacy),
            other => return Err(TransportError::UnsupportedVersion(other)),
        }
        let device_id = mmio.read32(register::DEVICE_ID);
        if device_id == 0 {
            return Err(TransportError::NoDevice);
        }
        let vendor_id = mmio.read32(register::VENDOR_ID);
        Ok(Transport {
            mmio,
            device_id,
            vendor_id,
            status: 0,
            features: 0,
        })
    }

    /// The device type (e.g. 2 for block).
    pub const fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The vendor id.
    pub const fn vendor_id(&self) -> u32 {
        self.vendor_id
    }

    /// The register access (e.g. for a fake device's test handle).
    pub const fn mmio(&self) -> &T {
        &self.mmio
    }

    /// The features accepted by the last negotiation (0 before one).
    pub const fn features(&self) -> u64 {
        self.features
    }

    /// Resets the device and waits, reading `Status` at most `max_polls` times, until it reads
    /// back 0: only then has the device stopped using the queues' memory.
    pub fn reset(&mut self, max_polls: u32) -> Result<(), TransportError> {
        self.reset_with(max_polls, || {})
    }

    /// As [`Self::reset`], calling `wait` between polls (e.g. to yield or sleep).
    pub fn reset_with(
        &mut self,
        max_polls: u32,
        mut wait: impl FnMut(),
    ) -> Result<(), TransportError> {
        self.status = 0;
        self.features = 0;
        self.mmio.write32(register::STATUS, 0);
        let mut last = u32::MAX;
        for poll in 0..max_polls {
            if poll > 0 {
                wait();
            }
            last = self.mmio.read32(register::STATUS);
            if last == 0 {
                return Ok(());
            }
        }
        Err(TransportError::ResetTimeout { status: last })
    }

    /// Sets `bits` in the device status (with the bits set before).
    fn set_status(&mut self, bits: u32) {
        self.status |= bits;
        self.mmio.write32(register::STATUS, self.status);
    }

    /// The device status as the device reports it (untrusted).
    pub fn device_status(&self) -> u32 {
        self.mmio.read32(register::STATUS)
    }

    /// Whether the device reports `DEVICE_NEEDS_RESET`.
    pub fn needs_reset(&self) -> bool {
        self.device_status() & status::DEVICE_NEEDS_RESET != 0
    }

    /// The features the device offers (both 32-bit halves).
    pub fn device_features(&self) -> u64 {
        self.mmio.write32(register::DEVICE_FEATURES_SEL, 0);
        let low = self.mmio.read32(register::DEVICE_FEATURES);
        self.mmio.write32(register::DEVICE_FEATURES_SEL, 1);
        let high = self.mmio.read32(register::DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Resets the device (see [`Self::reset`]), acknowledges it, and negotiates features:
    /// accepts `VERSION_1` (required), `ACCESS_PLATFORM` when offered, and of `wanted` the
    /// device-type bits (0 to 23) and the transport bits this crate implements
    /// ([`features::TRANSPORT_SUPPORTED`]) that the device offers. Returns the accepted set,
    /// confirmed by `FEATURES_OK` reading back set.
    ///
    /// Next: set up queues ([`Self::attach_queue`]), then [`Self::driver_ok`].
    pub fn initialize(&mut self, wanted: u64, max_polls: u32) -> Result<u64, TransportError> {
        self.reset(max_polls)?;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);

        let offered = self.device_features();
        if offered & features::VERSION_1 == 0 {
            self.fail();
            return Err(TransportError::MissingFeatures(features::VERSION_1));
        }
        let acceptable = (wanted & features::DEVICE_RANGE)
            | (wanted & features::TRANSPORT_SUPPORTED)
            | features::VERSION_1
            | features::ACCESS_PLATFORM;
        let accepted = offered & acceptable;
        self.mmio.write32(register::DRIVER_FEATURES_SEL, 0);
        self.mmio
            .write32(register::DRIVER_FEATURES, accepted as u32);
        self.mmio.write32(register::DRIVER_FEATURES_SEL, 1);
        self.mmio
            .write32(register::DRIVER_FEATURES, (accepted >> 32) as u32);

        self.set_status(status::FEATURES_OK);
        if self.device_status() & status::FEATURES_OK == 0 {
            self.fail();
            return Err(TransportError::FeaturesRefused);
        }
        self.features = accepted;
        Ok(accepted)
    }

    /// Selects queue `index` and returns its maximum size (at most 32768, not necessarily a
    /// power of two: pick the size with [`SplitQueue::fit_size`]); fails if the queue does not
    /// exist or is already set up.
    pub fn queue_max_size(&self, index: u16) -> Result<u16, TransportError> {
        self.mmio.write32(register::QUEUE_SEL, u32::from(index));
        if self.mmio.read32(register::QUEUE_READY) != 0 {
            return Err(TransportError::QueueInUse(index));
        }
        match self.mmio.read32(register::QUEUE_NUM_MAX) {
            0 => Err(TransportError::QueueUnavailable(index)),
            // A larger maximum than a split queue can have is capped to what one can be.
            max => Ok(max.min(u32::from(crate::ring::MAX_QUEUE_SIZE)) as u16),
        }
    }

    /// Programs queue `index` with `size` entries at `addresses` and marks it ready.
    pub fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        addresses: QueueAddresses,
    ) -> Result<(), TransportError> {
        self.mmio.write32(register::QUEUE_SEL, u32::from(index));
        if self.mmio.read32(register::QUEUE_READY) != 0 {
            return Err(TransportError::QueueInUse(index));
        }
        let max = self.mmio.read32(register::QUEUE_NUM_MAX);
        if max == 0 {
            return Err(TransportError::QueueUnavailable(index));
        }
        if size == 0 || !size.is_power_of_two() || u32::from(size) > max {
            return Err(TransportError::BadQueueSize { index, size, max });
        }
        self.mmio.write32(register::QUEUE_NUM, u32::from(size));
        let pairs = [
            (register::QUEUE_DESC_LOW, addresses.descriptors),
            (register::QUEUE_DRIVER_LOW, addresses.driver),
            (register::QUEUE_DEVICE_LOW, addresses.device),
        ];
        for (low, address) in pairs {
            self.mmio.write32(low, address as u32);
            self.mmio.write32(low + 4, (address >> 32) as u32);
        }
        self.mmio.write32(register::QUEUE_READY, 1);
        Ok(())
    }

    /// Programs the device with `queue` (its index, size and ring addresses).
    pub fn attach_queue<M: SharedRegion>(
        &mut self,
        queue: &SplitQueue<M>,
    ) -> Result<(), TransportError> {
        self.setup_queue(queue.index(), queue.size(), queue.addresses())
    }

    /// Sets `DRIVER_OK`: the device is live.
    pub fn driver_ok(&mut self) {
        self.set_status(status::DRIVER_OK);
    }

    /// Sets `FAILED`: the driver has given up on the device (reset it to start again).
    pub fn fail(&mut self) {
        self.set_status(status::FAILED);
    }

    /// Tells the device that queue `index` has new available buffers.
    pub fn notify(&self, index: u16) {
        self.mmio.write32(register::QUEUE_NOTIFY, u32::from(index));
    }

    /// Reads the pending interrupt causes (unknown bits dropped).
    pub fn interrupt_status(&self) -> InterruptStatus {
        let bits = self.mmio.read32(register::INTERRUPT_STATUS);
        InterruptStatus(bits & (interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE))
    }

    /// Acknowledges `causes`.
    pub fn acknowledge_interrupt(&self, causes: InterruptStatus) {
        if !causes.is_empty() {
            self.mmio.write32(register::INTERRUPT_ACK, causes.0);
        }
    }

    /// Reads and acknowledges the pending causes. Interrupts are edge-triggered: call this
    /// **before** draining the used rings, so a completion that lands during the drain raises a
    /// new interrupt rather than being acknowledged unseen.
    pub fn take_interrupt(&self) -> InterruptStatus {
        let causes = self.interrupt_status();
        self.acknowledge_interrupt(causes);
        causes
    }

    /// Runs `read` over the configuration space until the configuration generation is the same
    /// before and after it (at most [`CONFIG_ATTEMPTS`] times), so multi-field and 64-bit values
    /// are consistent. `read` may run several times; its result from a consistent run is
    /// returned.
    pub fn read_config<R>(
        &self,
        mut read: impl FnMut(&Config<'_, T>) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let config = Config { mmio: &self.mmio };
        for _ in 0..CONFIG_ATTEMPTS {
            let before = self.mmio.read32(register::CONFIG_GENERATION);
            let value = read(&config)?;
            let after = self.mmio.read32(register::CONFIG_GENERATION);
            if before == after {
                return Ok(value);
            }
        }
        Err(TransportError::ConfigUnstable)
    }

    /// A consistent 64-bit configuration field at `offset` (two 32-bit reads).
    pub fn config_u64(&self, offset: usize) -> Result<u64, TransportError> {
        self.read_config(|config| config.read_u64(offset))
    }

    /// A 32-bit configuration field at `offset`.
    pub fn config_u32(&self, offset: usize) -> Result<u32, TransportError> {
        self.read_config(|config| config.read_u32(offset))
    }

    /// A 16-bit configuration field at `offset`.
    pub fn config_u16(&self, offset: usize) -> Result<u16, TransportError> {
        self.read_config(|config| config.read_u16(offset))
    }

    /// An 8-bit configuration field at `offset`.
    pub fn config_u8(&self, offset: usize) -> Result<u8, TransportError> {
        self.read_config(|config| config.read_u8(offset))
    }
}

/// The device configuration space during a [`Transport::read_config`]. Offsets are from the
/// start of the configuration space; each access must be naturally aligned (64-bit fields
/// 4-byte aligned, read as two 32-bit halves) and inside it.
#[derive(Debug)]
pub struct Config<'a, T: Mmio> {
    mmio: &'a T,
}

impl<T: Mmio> Config<'_, T> {
    fn offset(offset: usize, width: usize, align: usize) -> Result<usize, TransportError> {
        match offset.checked_add(width) {
            Some(end) if end <= CONFIG_SIZE && offset.is_multiple_of(align) => {
                Ok(register::CONFIG + offset)
            }
            _ => Err(TransportError::ConfigOutOfRange { offset, width }),
        }
    }

    /// The byte at `offset`.
    pub fn read_u8(&self, offset: usize) -> Result<u8, TransportError> {
        Ok(self.mmio.read8(Self::offset(offset, 1, 1)?))
    }

    /// The 16-bit field at `offset`.
    pub fn read_u16(&self, offset: usize) -> Result<u16, TransportError> {
        Ok(self.mmio.read16(Self::offset(offset, 2, 2)?))
    }

    /// The 32-bit field at `offset`.
    pub fn read_u32(&self, offset: usize) -> Result<u32, TransportError> {
        Ok(self.mmio.read32(Self::offset(offset, 4, 4)?))
    }

    /// The 64-bit field at `offset`, low half first.
    pub fn read_u64(&self, offset: usize) -> Result<u64, TransportError> {
        let at = Self::offset(offset, 8, 4)?;
        let low = self.mmio.read32(at);
        let high = self.mmio.read32(at + 4);
        Ok(u64::from(high) << 32 | u64::from(low))
    }
}

//! Fake devices for host tests (feature `test-utils`), well-behaved and hostile.
//!
//! - [`FakeMemory`] / [`FakeRegion`]: heap-backed device-visible memory. A [`ReadHook`] runs on
//!   every driver read, with the bytes in hand, so a test can change shared memory *between*
//!   two reads the driver makes (as the host may).
//! - [`FakeMmioDevice`]: a virtio-mmio register model: identity, feature negotiation (with a
//!   device that refuses features), reset (with a device that shows status 0 only after some
//!   reads), queue registers, notifications, interrupts, and a configuration space whose
//!   generation can be made to churn.
//! - [`FakeQueueDevice`]: the device side of a split virtqueue, working on the rings through a
//!   [`DeviceBus`] (device addresses), with well-behaved operations ([`FakeQueueDevice::pop`],
//!   [`FakeQueueDevice::complete`]) and hostile ones (arbitrary used entries and indices).
//!
//! [`DeviceBus`] is also implemented for `moat_dma_api::FakeDevice`, so a driver test can run
//! the queue over a fake DMA window with real `Bounce`d grants.

mod memory;
mod mmio;
mod queue;

pub use memory::{DeviceBus, FakeMemory, FakeRegion, ReadEvent, ReadHook};
pub use mmio::{FakeMmioDevice, FakeQueueRegisters, NotifyHook};
pub use queue::{Chain, FakeQueueDevice};

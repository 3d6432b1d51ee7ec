//! VirtIO for Moat: the modern virtio-mmio transport and split virtqueues whose rings and buffers
//! live in device-visible memory from the DMA server.
//!
//! # Design
//!
//! - [`transport`]: a virtio-mmio (version 2 only) device behind the [`Mmio`] register trait:
//!   reset that waits for the status register to read back 0, the status handshake, feature
//!   negotiation (always accepting `VERSION_1` and, when offered, `ACCESS_PLATFORM`), queue
//!   setup, notification, interrupt status and acknowledgement, and device configuration reads
//!   under the configuration generation counter.
//! - [`queue`]: a split virtqueue whose three rings share one coherent allocation
//!   ([`SharedRegion`]). Everything the driver relies on (free descriptors, which heads are
//!   outstanding, each chain's length and device-writable capacity, the indices it owns, the
//!   queue size) is kept in private memory. Values read from the rings are copied out once and
//!   then checked against that private state: a hostile device can fail a request, never make
//!   the driver access memory out of bounds, complete a request twice, or panic.
//! - [`memory`]: what the queue needs from device-visible memory, and the adapters to
//!   `moat-dma-api` (rings from `alloc_coherent`, buffers from `Bounce`d grants).
//! - [`mmio`]: register offsets, status bits, and [`MmioRegion`], the volatile register access
//!   over a mapped slot: the only `unsafe` code in the crate.
//! - `fake` (feature `test-utils`): fake devices for host tests, well-behaved and hostile.
//!
//! Shared-memory discipline (DESIGN.md section 8): no Rust reference to device-visible memory is
//! ever formed here; ring fields go through [`SharedRegion`]'s volatile accessors, and bulk data
//! never passes through this crate (it is copied by `moat-dma-api`'s `Bounce`).
//!
//! # Typical driver sequence
//!
//! ```ignore
//! let mut transport = Transport::probe(mmio)?;                 // magic, version 2, device id
//! let features = transport.initialize(WANTED, RESET_POLLS)?;    // reset .. FEATURES_OK
//! let max = transport.queue_max_size(0)?;
//! let size = SplitQueue::<Coherent>::fit_size(max, 64);
//! let mut queue = SplitQueue::allocate(&dma, 0, size, features & EVENT_IDX != 0)?;
//! transport.attach_queue(&queue)?;
//! transport.driver_ok();
//! let token = queue.add(&[header, data, status])?;
//! if queue.should_notify() { transport.notify(queue.index()); }
//! // On the interrupt: acknowledge first, then drain the used ring (edge-triggered).
//! transport.take_interrupt();
//! while let Some(result) = queue.pop_used() { /* complete or fail the request */ }
//! ```
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod features;
pub mod memory;
pub mod mmio;
pub mod queue;
mod ring;
pub mod transport;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

pub use memory::{CoherentAllocator, DeviceBuffer, Segment, SharedRegion};
pub use mmio::{Mmio, MmioRegion};
pub use queue::{
    AddError, AllocateError, Completion, QueueAddresses, SetupError, SplitQueue, Token, UsedError,
};
pub use transport::{Config, InterruptStatus, Transport, TransportError};

//! The Moat virtio-net driver: a network card behind the modern virtio-mmio transport, serving
//! `moat-net-api` to one TCP/IP stack.
//!
//! # Design
//!
//! - [`device::NetDevice`] owns the transport, the receive queue (0) and the transmit queue (1).
//!   Every buffer the device touches is a DMA bounce grant from the DMA server ([`DmaMemory`]):
//!   receive buffers are `FromDevice` grants kept posted (each re-posted as soon as its frame is
//!   copied out); transmit buffers are `ToDevice` grants, reused, that a frame is copied into
//!   before the device is notified.
//! - **Copy, then check** ([`frame`]): a completed receive buffer is copied once into private
//!   memory (the length the device reported was already checked against the buffer by
//!   `moat-virtio`), then its 12-byte net header (`VERSION_1`) and Ethernet header are checked on
//!   the private copy: nothing parses a frame that is still in shared memory, and a frame that
//!   fails a check is dropped and counted by reason ([`moat_net_api::RxDrops`]).
//! - Hostile devices: used ids that name no outstanding buffer, repeated completions, lengths
//!   beyond a buffer and ring indices that jump are caught by `moat-virtio` and counted here; a
//!   ring fault (index jump, unreadable ring) stops the device ([`device::NetDevice::faulted`]).
//!   The task then resets the device and exits, and the supervisor restarts it (the DMA server
//!   keeps the old grants in quarantine until the new instance has reset the device).
//! - [`server::NetServer`] answers `net-api` requests: frames move between the client's frame
//!   region and the device with one private copy each way ([`server`] explains).
//!
//! All logic is host-tested against `moat-virtio`'s fake devices and a fake DMA window
//! ([`fake`], feature `test-utils`). The crate has no `unsafe` code.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod device;
pub mod dma;
pub mod frame;
pub mod server;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

pub use device::{InitError, NetDevice, SendError};
pub use dma::DmaMemory;

/// virtio-net device type.
pub const DEVICE_ID: u32 = 1;

/// virtio-net feature bits (VirtIO 1.2 section 5.1.3) the driver uses.
pub mod features {
    /// The device reports its maximum MTU in the configuration space.
    pub const MTU: u64 = 1 << 3;
    /// The device has a MAC address in the configuration space.
    pub const MAC: u64 = 1 << 5;
    /// The device reports link status in the configuration space.
    pub const STATUS: u64 = 1 << 16;
    /// What the driver asks for (no checksum offload, GSO or merged buffers: every frame is a
    /// whole frame in one buffer with a zero net header).
    pub const WANTED: u64 = MTU | MAC | STATUS;
}

/// Offsets in the virtio-net configuration space.
pub mod config {
    /// `mac[6]`.
    pub const MAC: usize = 0;
    /// `status` (u16): bit 0 link up.
    pub const STATUS: usize = 6;
    /// `mtu` (u16).
    pub const MTU: usize = 10;
    /// `status` bit: the link is up.
    pub const STATUS_LINK_UP: u16 = 1;
}

//! The Moat virtio-blk driver: brings a virtio-mmio block device up and serves the block
//! protocol (`moat-blk-api`) with many requests in flight, every byte of I/O through bounce
//! grants from the DMA server.
//!
//! # Design
//!
//! - [`spec`]: virtio-blk's feature bits, configuration layout, request header and status.
//! - [`device`]: one device: bring-up (reset first and wait for status 0, tell the DMA server,
//!   negotiate, one queue with rings from `alloc_coherent`) and *parts* — one virtio request
//!   each (header, data, status), every buffer a `Bounce`d grant from pooled grants, state per
//!   queue token slot, completions checked before they are acted on.
//! - [`service`]: the blk-api side: clients (by badge), their data regions, requests checked
//!   and split into parts no larger than the DMA server's maximum mapping size, deferred replies
//!   (a `call` is answered when its request completes; `send`-ed requests are reaped), and the
//!   serve loop over one `Recv` that also wakes for the device interrupt.
//! - [`dma`]: what the driver needs from the DMA server, as a trait ([`dma::DmaPort`]) that
//!   `moat_dma_api::DmaClient` implements.
//! - [`region`]: client data regions; [`region::MappedRegion`] holds the crate's only
//!   `unsafe` code (two bounds-checked raw copies).
//! - `fake` (feature `test-utils`): a fake DMA server window, a fake virtio-blk disk (also
//!   hostile) and heap-backed regions, for host tests and the fuzz target.
//!
//! Where each copy happens and what is checked is described in `docs/virtio.md`.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod device;
pub mod dma;
#[allow(unsafe_code)]
pub mod region;
pub mod service;
pub mod spec;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

pub use device::{BlkDevice, Limits, Part, PartKind, StartError, SubmitError};
pub use dma::{DmaFailure, DmaPort};
pub use region::{ClientRegion, KernelRegions, MappedRegion};
pub use service::{RegionMapper, Service};

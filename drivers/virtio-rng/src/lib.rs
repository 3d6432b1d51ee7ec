//! The Moat virtio-rng driver: brings a virtio-mmio entropy device (VirtIO 1.2 section 5.4)
//! up and serves the entropy protocol (`moat-rng-api`), every byte through a bounce grant from
//! the DMA server.
//!
//! This crate is the worked example of `docs/writing-a-driver.md`: [`device`] is all the
//! device-specific code; the serve loop is `moat_rng_api::RngServer` on `moat_ipc::Server`.
//! `fake` (feature `test-utils`) holds a fake DMA window, a fake entropy device that can
//! misbehave and a fake interrupt, for host tests.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod device;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

pub use device::{DEVICE_ID, DmaPort, Interrupt, RngDevice, StartError, Stats};

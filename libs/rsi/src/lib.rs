//! The Arm Realm Services Interface (RSI) 1.0 as typed Rust.
//!
//! # Design
//! A Realm guest talks to the Realm Management Monitor (RMM) with SMC calls. This crate splits
//! that into layers that each build and test on the host:
//! - [`abi`]: the numbers (function ids, statuses, RIPAS, flags, versions) with checked
//!   decoding of every register the RMM returns;
//! - [`Conduit`]: how a call reaches the RMM, an SMC on target (`SmcConduit`, aarch64 only) and a model in
//!   tests;
//! - [`Rsi`]: the typed client. It validates what the RMM answers (versions, RIPAS, the new
//!   base of each IPA_STATE_SET step) and loops over partial progress without ever spinning;
//! - [`ripas`] and `measurement`: the RMM's side (input checks, RIPAS per granule, REM
//!   extension), free of `std` and `alloc` so that realm-sim can run them at EL2;
//! - `model` (feature `test-utils`): an RMM model behind the [`Conduit`] trait for host tests
//!   of everything that uses RSI.
//!
//! Facts relied on, and where they were checked, are listed in the crate's `README.md`.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(any(test, feature = "test-utils"))]
extern crate alloc;

pub mod abi;
mod client;
pub mod conduit;
pub mod config;
#[cfg(any(test, feature = "measurement"))]
pub mod measurement;
#[cfg(any(test, feature = "test-utils"))]
pub mod model;
pub mod ripas;

#[cfg(test)]
mod tests;

pub use abi::{
    ChangeDestroyed, Function, GRANULE_SIZE, HashAlgorithm, Response, Ripas, Status, Version,
};
pub use client::{
    Error, IpaState, Measurement, MeasurementIndex, NegotiatedVersion, Result, Rsi, StateSetReport,
};
#[cfg(target_arch = "aarch64")]
pub use conduit::SmcConduit;
pub use conduit::{Conduit, Granule};
pub use config::{ConfigError, RealmConfig};

//! realm-sim's logic, free of hardware: the stand-in for the Realm Management Monitor.
//!
//! # Design
//! realm-sim (DESIGN.md section 7) runs at EL2 under QEMU and plays the RMM for one Realm at
//! EL1. Everything it decides lives here and is tested on the host; the EL2 binary
//! (`build/realm-sim`) only copies bytes, writes system registers and takes exceptions:
//! - [`layout`]: where the Realm's RAM, the host's memory, private memory and realm-sim live;
//! - [`dtb`]: reading the host's device tree and rewriting it into the Realm's view;
//! - [`image`]: the Linux arm64 `Image` header;
//! - [`options`]: realm-sim's own keys on the kernel command line;
//! - [`stage2`]: which IPA maps where under which RIPAS, as stage-2 descriptors;
//! - [`realm`]: the Realm's state (RIPAS, measurements, stage 2) and the SMC dispatch (RSI 1.0,
//!   PSCI, SMCCC) over an abstract [`realm::Machine`];
//! - [`fault`]: trap classification and the synchronous external abort injected into the Realm.
//!
//! RSI numbers, input checks, the RIPAS table and measurements come from `moat-rsi`.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod dtb;
pub mod fault;
pub mod image;
pub mod layout;
pub mod options;
pub mod realm;
pub mod stage2;

#[cfg(test)]
mod tests;

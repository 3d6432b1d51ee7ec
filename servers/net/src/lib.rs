//! The Moat TCP/IP stack: `smoltcp` over a `net-api` link, with DHCP and a static fallback, and
//! the entropy it needs.
//!
//! # Design
//!
//! A **library that applications link**, not a server: the application that owns the network
//! (today `userland/netdemo`) runs [`Stack`] in its own loop, and the stack talks to the
//! virtio-net driver through [`link::NetApiLink`] (frames through a private frame region,
//! `moat-net-api`). This keeps TCP state and socket buffers in the application's memory (no
//! socket protocol, no second copy through another task); the price is one network application
//! per driver (the driver serves one client). A socket server that multiplexes applications can
//! be built on the same [`Stack`] later; `docs/networking.md` has the data path and the copies.
//!
//! - [`stack`]: [`Stack`], the interface, the socket set, DHCP (`smoltcp`'s client) and the static
//!   fallback (10.0.2.15/24 via 10.0.2.2, QEMU user networking's defaults) when no lease comes.
//! - [`link`]: [`Link`], the frame queue between the stack and a driver; [`link::NetApiLink`]
//!   over `net-api`; [`link::MemoryLink`], an in-memory cable for tests.
//! - [`entropy`]: seeding `smoltcp`'s random numbers (TCP initial sequence numbers, ephemeral
//!   ports, DHCP transaction ids) and what can be trusted in a Realm.
//!
//! No `unsafe` code: the frame region copies are in `moat-net-api`, reading the counter is the
//! application's business (it passes samples in).
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod entropy;
pub mod link;
pub mod stack;

#[cfg(test)]
mod tests;

pub use entropy::Entropy;
pub use link::{Link, LinkError};
pub use stack::{Addressing, Stack, StackConfig};

pub use smoltcp;

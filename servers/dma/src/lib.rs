//! The DMA server: sole holder of the Share capability; bounce pool, grants and quarantine.
//!
//! This crate is the server's logic, free of IPC and syscalls so it builds and tests on the
//! host:
//!
//! - [`pool`]: the slot allocator carving each window into runs of fixed-size slots, with
//!   alignment and boundary constraints, in time independent of the window size;
//! - [`grant`]: generation-tagged grant ids and the grant table;
//! - [`server`]: the [`DmaServer`] model (windows per client identity, map/unmap, coherent
//!   allocations, revoke → quarantine → reclaim, retire);
//! - [`backing`]: the trait behind which the real server makes pages shared and maps them;
//! - [`stats`]: counters and the recent-event ring, serde types for postcard replies;
//! - [`error`]: fixed-number error codes.
//!
//! - [`dispatch`]: decodes `moat-dma-api` requests, takes the caller from the message badge and
//!   sender, applies roles and manifest quotas, calls the model and encodes the reply.
//!
//! The wire types (errors, directions, grant ids, statistics) are defined once, in
//! `moat-dma-api`, and re-exported here. The thin binary (not here yet: it needs the kernel's
//! Share syscalls) runs `Dispatcher::handle_message` in its serve loop.
#![no_std]
// Tests implement the `Syscalls` trait, whose raw entry point is an `unsafe fn`; nothing else
// may use `unsafe`.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod backing;
pub mod dispatch;
pub mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod grant;
pub mod pool;
pub mod server;
pub mod stats;

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod server_tests;

pub use backing::{Backing, SharedRegion};
pub use dispatch::{Caller, Dispatcher, Outcome};
pub use error::DmaError;
pub use grant::{ClientIdentity, ClientRef, Direction, GrantId, GrantKind, InstanceGeneration};
pub use pool::{SlotPool, SlotRun};
pub use server::{DmaServer, GrantInfo, ServerConfig, Supervisor, WindowInfo};
pub use stats::{ClientStats, DmaStats, Event, EventKind};

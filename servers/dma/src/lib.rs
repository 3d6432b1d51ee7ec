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
//! The thin binary (not here yet) decodes requests, stamps the caller from the message badge,
//! calls the model and encodes the reply.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod backing;
pub mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod grant;
pub mod pool;
pub mod server;
pub mod stats;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod server_tests;

pub use backing::{Backing, SharedRegion};
pub use error::DmaError;
pub use grant::{ClientIdentity, ClientRef, Direction, GrantId, GrantKind, InstanceGeneration};
pub use pool::{SlotPool, SlotRun};
pub use server::{DmaServer, GrantInfo, ServerConfig, Supervisor, WindowInfo};
pub use stats::{ClientStats, DmaStats, Event, EventKind};

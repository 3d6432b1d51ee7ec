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
//! - [`syscall_backing`]: the real [`Backing`] over the kernel's MemAlloc (shareable), Share,
//!   MemMap and capability syscalls;
//! - [`serve`]: the task's serve loop on the `dma` and `dma-admin` endpoints.
//!
//! The wire types (errors, directions, grant ids, statistics) are defined once, in
//! `moat-dma-api`, and re-exported here. The thin binary (`src/main.rs`, bin `dma`) reads its
//! configuration from the task information page and runs [`serve::Serve`].
#![no_std]
// Only `syscall_backing` may use `unsafe` (the Share and Unshare wrappers and the raw MemAlloc
// with flags are `unsafe fn`s); tests implement the `Syscalls` trait, whose raw entry point is
// one too.
#![deny(unsafe_code)]

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
pub mod serve;
pub mod server;
pub mod stats;
#[allow(unsafe_code)]
pub mod syscall_backing;

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod serve_tests;
#[cfg(test)]
mod server_tests;

pub use backing::{Backing, SharedRegion};
pub use dispatch::{Caller, Dispatcher, Outcome};
pub use error::DmaError;
pub use grant::{ClientIdentity, ClientRef, Direction, GrantId, GrantKind, InstanceGeneration};
pub use pool::{SlotPool, SlotRun};
pub use serve::{Endpoints, Serve};
pub use server::{DmaServer, GrantInfo, ServerConfig, Supervisor, WindowInfo};
pub use stats::{ClientStats, Event, EventKind, StatsSummary};
pub use syscall_backing::SyscallBacking;

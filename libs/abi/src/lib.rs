//! Moat ABI: syscall numbers, errors, rights, capability kinds and the IPC message format, shared
//! by the kernel and every user task.
//!
//! This crate is the bottom of the dependency graph: it imports nothing of ours, so the kernel and
//! `libs/userlib` agree on every number by construction. Every type that crosses the boundary has
//! a fixed numeric representation and an explicit, checked conversion from the raw value
//! (`TryFrom<u32>`): a number that arrives from the other side of the boundary is never trusted.
//!
//! # Syscall convention
//!
//! A task enters the kernel with `svc #0` (the immediate is ignored and should be 0):
//!
//! | register | on entry                                   | on return                         |
//! |----------|--------------------------------------------|-----------------------------------|
//! | `x8`     | syscall number ([`Syscall`])               | preserved                         |
//! | `x0`–`x5`| arguments (unused ones are ignored)        | `x0` = status, `x1`–`x3` = results|
//! | others   | —                                          | preserved (`x4`–`x7` unspecified) |
//!
//! The status in `x0` is `0` for success or an [`Error`] value; results in `x1`–`x3` are
//! meaningful only on success (and are zero otherwise). Unused argument registers are ignored,
//! but reserved arguments documented as "0" must be 0 so they can gain a meaning later.
//! [`Syscall`] documents the arguments and results of each call.
//!
//! Registers `x4`–`x7` may be clobbered; everything else, including the FP/SIMD state, is
//! preserved across a syscall.
//!
//! # Objects and authority
//!
//! Every syscall that touches a kernel object names it by a [`CapSlot`]: an index into the
//! calling task's capability table. A capability has a [`CapabilityKind`], a set of [`Rights`] and,
//! for endpoints and notifications, a badge the kernel stamps on every message sent through it.
//! A task can only name objects it holds a capability to, so there are no global names to guess.
//!
//! # Messages
//!
//! IPC moves fixed-size [`Message`]s of [`MESSAGE_SIZE`] bytes: a [`MessageHeader`] and up to
//! [`MAX_PAYLOAD`] bytes of payload. The kernel copies a message by value out of the sender's
//! memory and into the receiver's; it never keeps a reference into user memory. Bulk data
//! travels in memory shared through a Memory capability, never in payloads.
//!
//! # Design
//!
//! The crate is `no_std`, forbids `unsafe` and has no hardware knowledge. Byte views of
//! [`Message`] come from `zerocopy`, so both sides can copy messages without casts.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod caps;
mod error;
mod info;
mod layout;
mod message;
mod syscall;
mod task;
mod time;

pub use caps::{CapSlot, CapabilityKind, Rights};
pub use error::{Error, ErrorClass, UnknownValue, status_from_raw, status_to_raw};
pub use info::{
    CAP_NAME_LEN, CapEntry, ENTROPY_HOST_CONTROLLED, ENTROPY_RNDR, FaultReason, FaultReport,
    LABEL_FAULT_REPORT, MAX_INITIAL_CAPS, MAX_TASK_CONFIG, TASK_INFO_MAGIC, TASK_INFO_VERSION,
    TASK_NAME_LEN, TaskInfo,
};
pub use layout::{
    LOWEST_USER_VA, MAP_BASE, MAP_LIMIT, STACK_TOP, TASK_INFO_VA, USER_IMAGE_BASE, USER_VA_LIMIT,
    in_map_region,
};
pub use message::{HEADER_SIZE, MAX_PAYLOAD, MESSAGE_SIZE, Message, MessageFlags, MessageHeader};
pub use syscall::{
    MEM_ALLOC_PHYSICAL_FOR_TESTS, MEM_ALLOC_SHAREABLE, RecvKind, Syscall, TaskState,
};
pub use task::TaskId;
pub use time::Timeout;

/// The immediate operand of the `svc` instruction used for syscalls.
pub const SVC_IMMEDIATE: u16 = 0;

/// Size of a page (and of a frame) in bytes: the unit of `MemAlloc`, `MemMap` and friends.
pub const PAGE_SIZE: usize = 4096;

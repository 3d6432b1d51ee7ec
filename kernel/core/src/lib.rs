//! The Moat kernel's pure algorithms, built and tested on the host.
//!
//! The kernel binary (`kernel/`) does the hardware work: boot, exception vectors, page tables,
//! interrupt controller. Everything that can be decided without touching hardware lives here, so
//! that it runs under `cargo test` on any machine: reading the boot device tree, the command
//! line, the physical memory map and frame allocator, and decoding faults for reports.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cap;
pub mod cmdline;
pub mod elf;
pub mod esr;
pub mod frame;
pub mod layout;
pub mod notify;
pub mod platform;
pub mod queue;
pub mod range;
pub mod ring;
pub mod sched;
pub mod system;
pub mod task;

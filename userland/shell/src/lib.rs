//! `shell`: the interactive shell on the Moat console (`cargo xtask run --shell`).
//!
//! Design: the binary (`main.rs`) looks its capabilities up, maps a block data region and runs
//! [`session::Shell::serve`]; everything else — the line editor ([`line`]), the command parser
//! ([`command`]), the task table xtask compiles into the shell's configuration ([`tasks`]) and
//! the commands themselves ([`session`]) — is generic over the syscall trait and tested on the
//! host against the testkit fake kernel. See docs/shell.md.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod command;
pub mod line;
pub mod session;
pub mod tasks;

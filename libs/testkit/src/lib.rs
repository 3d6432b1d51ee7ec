//! A fake Moat kernel for host tests: it implements `moat_userlib::Syscalls`, so servers and
//! drivers written against the trait run unchanged in `cargo test`.
//!
//! # Model
//!
//! A [`FakeKernel`] holds tasks, each with a capability table of
//! [`CAP_TABLE_SIZE`] slots and a notification word; endpoints with the kernel's own bounded
//! queue (`moat_kernel_core::queue`, capacity [`QUEUE_CAPACITY`], a per-sender limit);
//! calls answered through one-shot Reply capabilities; capability transfer in messages with the
//! kernel's rules (transferable kind, `TRANSFER` right, rights only shrink); memory objects
//! backed by `Vec<u8>` with a quota, mappings, slices, Share/Unshare and `MappedElsewhere`;
//! MMIO regions; interrupt lines that mask until acknowledged; task control (kill, restart,
//! status) with generations, `Dead` for stale peers, and fault reports queued for the supervisor
//! (task index 0). Every syscall is recorded ([`FakeKernel::records`]).
//!
//! Each [`FakeTask`] is one task's view and implements `Syscalls`. The test sets up what the
//! manifest would (tasks, endpoints, named capabilities) through [`FakeKernel`], and can read
//! [`FakeTask::task_info`] to hand a task the page the kernel would give it.
//!
//! # Running servers
//!
//! Blocking syscalls really block, on a condition variable, so there are two ways to run a
//! server against a client:
//! - **Threads**: [`FakeKernel::spawn`] runs the server's real loop on a thread; the test calls
//!   it from its own thread. Dropping the returned [`TaskThread`] shuts the kernel down, which
//!   ends blocked tasks quietly.
//! - **Pumps** (single-threaded, deterministic): [`FakeKernel::set_pump`] attaches code that
//!   serves one message (e.g. `moat_ipc`'s `serve_one`) to an endpoint; a `call` to that
//!   endpoint runs it inline while a message is queued.
//!
//! A task "blocked forever" for longer than [`DEFAULT_STALL_LIMIT`] makes the fake panic with a
//! deadlock report rather than hang the test run. `exit` unwinds the calling thread with
//! [`TaskExit`]; wrap a task body in [`run_task`] to observe it.
//!
//! # Limits
//!
//! The fake does not dereference raw pointers: the raw `syscall` entry answers only calls
//! without pointer arguments (the others return `BadAddress`); use the typed methods. Mapped
//! memory is reached through [`FakeTask::read`] / [`FakeTask::write`] and
//! [`FakeKernel::memory`], not through the mapped address. `MemUnmap` removes whole mappings
//! only. There is no scheduler: priorities and time slices are not modelled.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod state;
mod task;

pub use state::{
    CAP_TABLE_SIZE, DEFAULT_PER_SENDER_LIMIT, FAKE_DEVICE_BASE, QUEUE_CAPACITY, Record,
};
pub use task::{
    DEFAULT_STALL_LIMIT, EndpointId, FakeKernel, FakeTask, IrqId, Outcome, TaskExit, TaskStopped,
    TaskThread, run_task,
};

//! The Moat task runtime: entry point, syscall wrappers, heap, console logger and capability
//! lookup.
//!
//! # Writing a task
//!
//! A task binary is `#![no_std]`, `#![no_main]`, depends on this crate, links with
//! `build/link/task.ld`, and names its `main` with [`entry!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! moat_userlib::entry!(main);            // or entry!(main, heap_pages = 64)
//!
//! fn main() -> Result<(), moat_abi::Error> {
//!     let kernel = moat_userlib::Kernel;
//!     let dma = moat_userlib::caps::expect("dma", moat_abi::CapabilityKind::Endpoint);
//!     log::info!("started");
//!     Ok(())
//! }
//! ```
//!
//! `main` may return `()`, a `u64` exit code, or a `Result` (an error is logged and the task
//! exits with [`exit::EXIT_FAILURE`]). Before `main` runs the runtime has checked and installed
//! the task information page ([`task`]), installed the `log` backend (records go to the console
//! as `name: message`, level `Info` and up), and mapped a heap of
//! [`heap::DEFAULT_HEAP_PAGES`] pages (64 KiB) so `alloc` works. A panic prints
//! `name: PANIC: …` and exits with [`exit::EXIT_PANIC`].
//!
//! # Design
//!
//! Everything a task does to the kernel goes through the [`Syscalls`] trait, so servers and
//! drivers are written as `fn serve<S: Syscalls>(syscalls: &S, …)` and run in host tests
//! against `moat_testkit`'s fake kernel. [`Kernel`], the `svc` implementation, and the runtime
//! in `rt` (`_start`, heap, panic handler) exist only when building for
//! `aarch64-unknown-none`; the rest builds and is tested on the host.
//!
//! The heap is a `linked_list_allocator` over a fixed number of pages mapped once at start
//! (chosen in [`entry!`]); it does not grow. Tasks that need big buffers map memory themselves
//! with [`memory`], which takes addresses from the [`vmem`] allocator over the map region.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod caps;
pub mod exit;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod kernel;
pub mod logger;
pub mod memory;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[doc(hidden)]
pub mod rt;
pub mod syscalls;
pub mod task;
pub mod vmem;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use kernel::Kernel;
pub use syscalls::{CapInfo, MemoryInfo, Received, Syscalls, TaskStatus};

/// Heap sizing.
pub mod heap {
    /// Heap pages mapped at start when [`entry!`](crate::entry) names no size: 64 KiB.
    pub const DEFAULT_HEAP_PAGES: usize = 16;
}

/// Names the task's `main` function and, optionally, its heap size in pages.
///
/// `entry!(main)` or `entry!(main, heap_pages = 64)`. `main` is any `fn() -> T` with
/// `T:` [`exit::Termination`]. The macro defines the `moat_task_start` symbol that userlib's
/// `_start` calls; use it exactly once, in the binary crate.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!($main, heap_pages = $crate::heap::DEFAULT_HEAP_PAGES);
    };
    ($main:path, heap_pages = $pages:expr) => {
        /// Called by userlib's `_start` with the task information page address.
        #[unsafe(no_mangle)]
        pub extern "C" fn moat_task_start(task_info: usize) -> ! {
            $crate::rt::start(task_info, $pages, $main)
        }
    };
}

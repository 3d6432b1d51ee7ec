//! The task runtime (target only): `_start`, the start sequence, the heap and the panic handler.
//!
//! The kernel enters `_start` with `x0` = the task information page and `sp` = `STACK_TOP`.
//! `_start` clears the frame pointer and link register (so backtraces end here) and calls
//! `moat_task_start`, which the [`entry!`](crate::entry) macro defines in the task binary and
//! which calls [`start`]: check and install the task information page, install the logger, map
//! the heap, run `main`, exit with its code.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::LockedHeap;
use log::LevelFilter;
use moat_abi::{Rights, TaskInfo};

use crate::exit::{EXIT_BAD_TASK_INFO, EXIT_PANIC, Termination};
use crate::kernel::Kernel;
use crate::logger::{ConsoleLogger, ConsoleWriter};
use crate::syscalls::Syscalls;

core::arch::global_asm!(
    ".section .text._start, \"ax\", %progbits",
    ".global _start",
    ".type _start, %function",
    "_start:",
    "    mov x29, xzr",
    "    mov x30, xzr",
    "    bl moat_task_start",
    "    udf #0",
    ".size _start, . - _start",
);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static LOGGER: ConsoleLogger<Kernel> = ConsoleLogger::new(Kernel);

static PANICKING: AtomicBool = AtomicBool::new(false);

/// Runs the task: called by the `moat_task_start` that [`entry!`](crate::entry) defines.
///
/// `task_info` is the address the kernel passed in `x0`; `heap_pages` pages are allocated and
/// mapped for the heap before `main` runs (0 = no heap).
pub fn start<T: Termination>(task_info: usize, heap_pages: usize, main: fn() -> T) -> ! {
    let kernel = Kernel;
    let pointer = task_info as *const TaskInfo;
    if task_info != moat_abi::TASK_INFO_VA || !pointer.is_aligned() {
        let _ = kernel.console_write(b"moat-userlib: task information page missing\n");
        kernel.exit(EXIT_BAD_TASK_INFO);
    }
    // SAFETY: the kernel maps a read-only TaskInfo page at TASK_INFO_VA (checked above) before
    // the task starts and neither unmaps nor changes it while the task runs; the address is
    // aligned (checked) and every bit pattern is a valid TaskInfo.
    let info: &'static TaskInfo = unsafe { &*pointer };
    if info.check().is_err() {
        let _ = kernel.console_write(b"moat-userlib: task information page malformed\n");
        kernel.exit(EXIT_BAD_TASK_INFO);
    }
    crate::task::install(info);
    crate::logger::install(&LOGGER, LevelFilter::Info);
    if heap_pages > 0
        && let Err(error) = init_heap(&kernel, heap_pages)
    {
        log::error!("no heap ({heap_pages} pages): {error}");
    }
    let code = main().report();
    kernel.exit(code)
}

fn init_heap(kernel: &Kernel, pages: usize) -> Result<(), moat_abi::Error> {
    let mapping = crate::memory::allocate(kernel, pages, Rights::READ | Rights::WRITE)?;
    // SAFETY: the range was just mapped read-write for this task alone, nothing else uses it,
    // and the runtime never unmaps it: it stays valid for the rest of the task's life.
    unsafe { HEAP.lock().init(mapping.as_ptr(), mapping.len()) };
    Ok(())
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let kernel = Kernel;
    if PANICKING.swap(true, Ordering::SeqCst) {
        // Panicked while reporting a panic: leave without formatting anything.
        kernel.exit(EXIT_PANIC);
    }
    let mut writer = ConsoleWriter::new(&kernel);
    let _ = core::fmt::write(
        &mut writer,
        format_args!("{}: PANIC: {}\n", crate::task::name(), info),
    );
    writer.flush();
    kernel.exit(EXIT_PANIC)
}

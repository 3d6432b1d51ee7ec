//! Fatal exceptions and the panic handler: a report a person can act on, then power-off with a
//! failure status.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use moat_kernel_core::esr;

use crate::console::write_fmt_breaking_lock;
use crate::{mmu, power};

/// Registers saved by the fatal entry path in `vectors.S` (layout fixed there).
#[repr(C)]
pub struct FatalFrame {
    x: [u64; 31],
    sp: u64,
    elr: u64,
    spsr: u64,
    esr: u64,
    far: u64,
}

static DYING: AtomicBool = AtomicBool::new(false);

macro_rules! report {
    ($($arg:tt)*) => { write_fmt_breaking_lock(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Entered from `vectors.S` on the fatal-exception stack for every exception the kernel cannot
/// handle. Prints the cause and registers and powers off with status 1.
#[unsafe(no_mangle)]
extern "C" fn fatal_exception(frame: &FatalFrame, vector: u64) -> ! {
    if DYING.swap(true, Ordering::SeqCst) {
        report!("KERNEL FAULT while already failing (vector {vector}); halting");
        power::exit(2);
    }
    const ORIGIN: [&str; 4] = [
        "current EL with SP_EL0",
        "current EL with SP_ELx",
        "lower EL (AArch64)",
        "lower EL (AArch32)",
    ];
    const KIND: [&str; 4] = ["synchronous exception", "IRQ", "FIQ", "SError"];
    let origin = ORIGIN[(vector as usize / 4) % 4];
    let kind = KIND[vector as usize % 4];
    report!("");
    report!("KERNEL FAULT: {kind} from {origin}");
    let ec = esr::exception_class(frame.esr);
    let iss = esr::syndrome(frame.esr);
    if vector.is_multiple_of(4) {
        report!("  cause: {} (EC {ec:#04x})", esr::class_name(ec));
        if esr::is_abort(ec) {
            let access = if ec & 0x4 != 0 && esr::is_write(iss) {
                "write"
            } else {
                "read/fetch"
            };
            match esr::fault_level(iss) {
                Some(level) => report!(
                    "  {}, level {level}, on {access} of {:#018x}",
                    esr::fault_status_name(iss),
                    frame.far
                ),
                None => report!(
                    "  {}, on {access} of {:#018x}",
                    esr::fault_status_name(iss),
                    frame.far
                ),
            }
            let image = mmu::ImageLayout::get();
            let far = frame.far as usize;
            if (image.boot_stack_guard..image.boot_stack_guard + 4096).contains(&far)
                || (image.fatal_stack_guard..image.fatal_stack_guard + 4096).contains(&far)
            {
                report!("  kernel stack overflow: the access hit a stack guard page");
            }
        }
    }
    report!("  ESR  {:#018x}  FAR  {:#018x}", frame.esr, frame.far);
    report!(
        "  ELR  {:#018x}  SPSR {:#018x}  SP {:#018x}",
        frame.elr,
        frame.spsr,
        frame.sp
    );
    report!("register dump:");
    for row in 0..11 {
        let mut line = heapless::String::<96>::new();
        for column in 0..3 {
            let index = row + 11 * column;
            if index < 31 {
                let _ = core::fmt::write(
                    &mut line,
                    format_args!("  x{index:<2} {:#018x}", frame.x[index]),
                );
            }
        }
        report!("{line}");
    }
    report!("moat: halted after a kernel fault");
    power::exit(1);
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if DYING.swap(true, Ordering::SeqCst) {
        report!("KERNEL PANIC while already failing; halting");
        power::exit(2);
    }
    report!("");
    match info.location() {
        Some(location) => report!(
            "KERNEL PANIC at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        ),
        None => report!("KERNEL PANIC: {}", info.message()),
    }
    report!("moat: halted after a kernel panic");
    power::exit(1);
}

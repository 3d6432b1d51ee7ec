//! Ending the system: PSCI SYSTEM_OFF, or semihosting SYS_EXIT when the runner enabled it.
//!
//! PSCI has no failure status: SYSTEM_OFF always looks like success to the VMM. When xtask runs
//! the kernel it enables Arm semihosting and says so on the command line (`semihosting`); the
//! kernel then ends through SYS_EXIT so a failure reaches the runner as a non-zero status.

use core::sync::atomic::{AtomicU8, Ordering};

use moat_kernel_core::platform::Conduit;

const CONDUIT_UNKNOWN: u8 = 0;
const CONDUIT_HVC: u8 = 1;
const CONDUIT_SMC: u8 = 2;

static CONDUIT: AtomicU8 = AtomicU8::new(CONDUIT_UNKNOWN);
static SEMIHOSTING: AtomicU8 = AtomicU8::new(0);

/// Records how to reach PSCI and whether semihosting may be used.
pub fn init(conduit: Option<Conduit>, semihosting: bool) {
    let value = match conduit {
        Some(Conduit::Hvc) => CONDUIT_HVC,
        Some(Conduit::Smc) => CONDUIT_SMC,
        None => CONDUIT_UNKNOWN,
    };
    CONDUIT.store(value, Ordering::Relaxed);
    SEMIHOSTING.store(u8::from(semihosting), Ordering::Relaxed);
}

/// Whether the runner enabled semihosting.
pub fn semihosting() -> bool {
    SEMIHOSTING.load(Ordering::Relaxed) != 0
}

/// The PSCI conduit, if the device tree named one.
pub fn conduit() -> Option<Conduit> {
    match CONDUIT.load(Ordering::Relaxed) {
        CONDUIT_HVC => Some(Conduit::Hvc),
        CONDUIT_SMC => Some(Conduit::Smc),
        _ => None,
    }
}

/// Semihosting SYS_EXIT with an exit status (AArch64 form: a two-word parameter block).
fn semihosting_exit(status: u32) {
    const SYS_EXIT: u32 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    // SAFETY: semihosting was enabled by the runner (checked by the caller); the call reads the
    // two-word block and does not return.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            in("w0") SYS_EXIT,
            in("x1") block.as_ptr(),
            options(nostack, readonly),
        );
    }
}

/// Powers the system off, reporting `status` (0 = success) where the platform can carry it.
pub fn exit(status: u32) -> ! {
    if semihosting() {
        semihosting_exit(status);
    }
    let _ = match conduit() {
        Some(Conduit::Hvc) => smccc::psci::system_off::<smccc::Hvc>(),
        Some(Conduit::Smc) => smccc::psci::system_off::<smccc::Smc>(),
        None => Ok(()),
    };
    // No way to power off: stop here with interrupts masked.
    loop {
        aarch64_cpu::asm::wfe();
    }
}

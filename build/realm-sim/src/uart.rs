//! realm-sim's console: the host's PL011, written by polling (no interrupts, no setup: QEMU's
//! PL011 is ready at reset).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// PL011 base, or 0 before the DTB named one (output is dropped then).
static BASE: AtomicU64 = AtomicU64::new(0);

const DATA: u64 = 0x00;
const FLAGS: u64 = 0x18;
const TX_FULL: u32 = 1 << 5;

/// Uses the PL011 at `base` from now on.
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
}

/// A handle for `write!`.
pub struct Console;

impl Console {
    fn put(&self, base: u64, byte: u8) {
        // SAFETY: `base` is the PL011 the DTB names, in the first GiB that the EL2 stage-1 map
        // covers as Device memory; FR and DR are 32-bit registers at these offsets.
        unsafe {
            while core::ptr::read_volatile((base + FLAGS) as *const u32) & TX_FULL != 0 {}
            core::ptr::write_volatile((base + DATA) as *mut u32, u32::from(byte));
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let base = BASE.load(Ordering::Relaxed);
        if base == 0 {
            return Ok(());
        }
        for byte in text.bytes() {
            if byte == b'\n' {
                self.put(base, b'\r');
            }
            self.put(base, byte);
        }
        Ok(())
    }
}

/// Prints a line prefixed with `realm-sim: `.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::uart::Console, "realm-sim: ");
        let _ = writeln!($crate::uart::Console, $($arg)*);
    }};
}

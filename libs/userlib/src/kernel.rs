//! The real kernel: syscalls through `svc #0` (target only).

use core::arch::asm;

use moat_abi::Syscall;

use crate::syscalls::Syscalls;

/// The Moat kernel, reached with `svc #0` as `moat_abi` documents. A zero-sized handle: copy it
/// freely.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel;

impl Syscalls for Kernel {
    unsafe fn syscall(&self, number: Syscall, args: [u64; 6]) -> [u64; 4] {
        let (x0, x1, x2, x3): (u64, u64, u64, u64);
        // SAFETY: the kernel preserves every register but x0-x7 (x0-x3 are results, x4-x7 are
        // declared clobbered), the stack and FP/SIMD state. Memory it reads or writes is what
        // the caller vouched for (this method's safety contract), so the asm is not `nomem`.
        unsafe {
            asm!(
                "svc #0",
                inlateout("x0") args[0] => x0,
                inlateout("x1") args[1] => x1,
                inlateout("x2") args[2] => x2,
                inlateout("x3") args[3] => x3,
                inlateout("x4") args[4] => _,
                inlateout("x5") args[5] => _,
                lateout("x6") _,
                lateout("x7") _,
                in("x8") u64::from(number.to_raw()),
                options(nostack),
            );
        }
        [x0, x1, x2, x3]
    }
}

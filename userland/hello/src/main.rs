//! `hello`: the smallest Moat task. Logs a greeting with its name and id, does some
//! floating-point work with a yield in the middle (so the kernel must save and restore FP/SIMD
//! state across a task switch), and exits 0 — or 2 if the arithmetic came out wrong.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use core::hint::black_box;

    use moat_userlib::{Kernel, Syscalls};

    moat_userlib::entry!(main);

    /// Exit code when the floating-point result is wrong.
    const EXIT_BAD_ARITHMETIC: u64 = 2;

    fn main() -> u64 {
        let kernel = Kernel;
        let id = moat_userlib::task::id().unwrap_or(moat_abi::TaskId(0));
        log::info!(
            "hello from {} (task id {}.{})",
            moat_userlib::task::name(),
            id.index(),
            id.generation()
        );
        let pi = estimate_pi(&kernel, black_box(2000));
        if (pi - core::f64::consts::PI).abs() > 1e-3 {
            log::error!("floating point went wrong: pi = {pi}");
            return EXIT_BAD_ARITHMETIC;
        }
        log::info!("pi is about {pi:.6}; goodbye");
        0
    }

    /// π from the Basel series (Σ 1/k² = π²/6) and a Newton square root, yielding halfway with
    /// the partial sum live in FP registers.
    fn estimate_pi(kernel: &Kernel, terms: u32) -> f64 {
        let mut sum = 0.0f64;
        for k in 1..=terms {
            let k = f64::from(k);
            sum += 1.0 / (k * k);
            if k == f64::from(terms / 2) {
                kernel.yield_now();
            }
        }
        // The tail of the series is about 1/terms.
        let squared = 6.0 * (sum + 1.0 / f64::from(terms));
        let mut root = squared;
        for _ in 0..32 {
            root = 0.5 * (root + squared / root);
        }
        root
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("hello is a Moat task: build it with --target aarch64-unknown-none");
}

//! A tiny EL1 test payload for realm-sim: a Linux arm64 Image written in assembly
//! (`payload.S`) that exercises RSI, stage 2 and PSCI from the Realm's side.
//!
//! Build: `cargo build --release --example realm-payload --target aarch64-unknown-none-softfloat`,
//! then make the raw Image with `llvm-objcopy -O binary`. See the crate's README.
#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("payload.S"));

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

//! Links the kernel with the checked-in linker script (build/link/kernel.ld) and embeds the
//! system archive (compiled manifest + task binaries) that `cargo xtask build` produced.
//!
//! xtask passes the archive's path in `MOAT_SYSTEM_ARCHIVE`. Without it (a plain
//! `cargo build -p moat-kernel`) the kernel embeds an empty archive and runs only its boot
//! self-check.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = Path::new(&manifest).join("../build/link/kernel.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/boot.S");
    println!("cargo:rerun-if-changed=src/vectors.S");
    println!("cargo:rerun-if-changed=src/switch.S");
    println!("cargo:rerun-if-changed=src/mem.S");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());

    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("system.bin");
    println!("cargo:rerun-if-env-changed=MOAT_SYSTEM_ARCHIVE");
    match std::env::var_os("MOAT_SYSTEM_ARCHIVE") {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", Path::new(&path).display());
            std::fs::copy(&path, &out).unwrap_or_else(|e| {
                panic!(
                    "cannot read the system archive {}: {e}",
                    Path::new(&path).display()
                )
            });
        }
        None => std::fs::write(&out, []).expect("OUT_DIR is writable"),
    }
}

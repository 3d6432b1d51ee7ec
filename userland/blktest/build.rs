//! Links the task with the shared task linker script (`build/link/task.ld`) when building for the
//! Moat target.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = manifest_dir.join("../../build/link/task.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        // Segments are 4 KiB aligned in memory; keep the file from padding them to 64 KiB.
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}

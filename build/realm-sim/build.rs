//! Links realm-sim with its checked-in linker script (link.ld) and the test payload with
//! payload/payload.ld.

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest);
    let script = dir.join("link.ld");
    let payload_script = dir.join("payload/payload.ld");
    for path in [
        "link.ld",
        "src/entry.S",
        "payload/payload.ld",
        "payload/payload.S",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!(
        "cargo:rustc-link-arg-examples=-T{}",
        payload_script.display()
    );
}

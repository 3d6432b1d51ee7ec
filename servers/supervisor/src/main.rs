//! The supervisor task binary: looks up its capabilities and runs the serve loop.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapabilityKind, Error};
    use moat_userlib::{Kernel, caps};

    moat_userlib::entry!(main);

    fn main() -> Result<(), Error> {
        let endpoint = caps::expect("serve:supervisor", CapabilityKind::Endpoint)
            .map_err(|_| Error::InvalidCapability)?;
        let tasks = caps::expect("task-control", CapabilityKind::TaskControl)
            .map_err(|_| Error::InvalidCapability)?;
        // Present when the system has a DMA server (docs/manifest.md).
        let dma_admin = caps::expect("call:dma-admin", CapabilityKind::Endpoint).ok();
        log::info!(
            "watching for task faults{}",
            if dma_admin.is_some() {
                "; revoking DMA grants of ended tasks"
            } else {
                ""
            }
        );
        let caps = moat_supervisor::Capabilities { tasks, dma_admin };
        moat_supervisor::serve(&Kernel, endpoint, caps)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("supervisor is a Moat task: build it with --target aarch64-unknown-none");
}

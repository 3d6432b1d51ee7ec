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
        log::info!("watching for task faults");
        moat_supervisor::serve(&Kernel, endpoint, tasks)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("supervisor is a Moat task: build it with --target aarch64-unknown-none");
}

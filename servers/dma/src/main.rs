//! The DMA server task binary: reads its configuration (client identities and quotas, compiled
//! by `cargo xtask` from the manifest) from the task information page, looks up its
//! capabilities and runs the serve loop (`moat_dma_server::serve`).
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapabilityKind, Error};
    use moat_dma_api::DmaConfig;
    use moat_dma_server::{DmaError, Endpoints, Serve};
    use moat_userlib::{Kernel, caps};

    // Grant tables, pools and client records live on the heap: 256 KiB.
    moat_userlib::entry!(main, heap_pages = 64);

    /// Zeroes `len` bytes of a window at `address` in this task, through the mapping the
    /// backing made (at the unprotected alias while the window is shared).
    fn zero(_: &Kernel, address: usize, len: usize) -> Result<(), DmaError> {
        // SAFETY: the backing calls this only with the range of its own mapping of a window,
        // mapped read-write in this task; no Rust reference into that range exists (the window
        // is shared memory: DESIGN.md section 8), so raw writes alias nothing.
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, len) };
        Ok(())
    }

    fn main() -> Result<(), Error> {
        let clients = caps::expect("serve:dma", CapabilityKind::Endpoint)
            .map_err(|_| Error::InvalidCapability)?;
        let share =
            caps::expect("share", CapabilityKind::Share).map_err(|_| Error::InvalidCapability)?;
        let admin = caps::expect("serve:dma-admin", CapabilityKind::Endpoint).ok();
        let blob = moat_userlib::task::info().map_or(&[][..], |info| info.config());
        let config = DmaConfig::decode(blob).unwrap_or_else(|error| {
            log::error!("configuration refused ({error}); no client may register");
            DmaConfig::default()
        });
        log::info!(
            "serving {} client(s), {} KiB of windows{}",
            config.clients.len(),
            config.budget_bytes / 1024,
            if admin.is_some() {
                ", revoke on dma-admin"
            } else {
                ""
            }
        );
        let endpoints = Endpoints { clients, admin };
        let mut server = Serve::new(Kernel, share, zero, config, endpoints);
        match server.run() {
            Ok(never) => match never {},
            Err(error) => Err(error),
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("dma is a Moat task: build it with --target aarch64-unknown-none");
}

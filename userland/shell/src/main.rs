//! `shell`: the interactive shell task. Needs `console-input`; uses `task-control`,
//! `call:dma` (observer role), `call:blk`, `call:net` and `call:rng` when the manifest gives
//! them (a command whose capability is missing says so). See docs/shell.md.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod task {
    use alloc::boxed::Box;
    use core::fmt::{self, Write};

    use moat_abi::{CapSlot, CapabilityKind, Rights};
    use moat_userlib::memory::{self, Mapping};
    use moat_userlib::{Kernel, Syscalls, caps};
    use shell::session::{DataRegion, Services, Shell};
    use shell::tasks::TaskTable;

    moat_userlib::entry!(main, heap_pages = 64);

    /// Pages of the block data region (64 KiB: one `blk bench` request).
    const REGION_PAGES: usize = 16;

    /// Exit code when the console cannot be read.
    const EXIT_NO_CONSOLE: u64 = 2;

    /// Writes straight to the console.
    struct Console;

    impl Write for Console {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            let mut bytes = text.as_bytes();
            while !bytes.is_empty() {
                let written = Kernel.console_write(bytes).map_err(|_| fmt::Error)?;
                if written == 0 {
                    return Err(fmt::Error);
                }
                bytes = bytes.get(written..).unwrap_or(&[]);
            }
            Ok(())
        }
    }

    /// The block data region: copied in and out with raw copies only (the driver writes it).
    struct Region(Mapping);

    impl DataRegion for Region {
        fn capability(&self) -> CapSlot {
            self.0.capability
        }

        fn len(&self) -> usize {
            self.0.len()
        }

        fn put(&self, offset: usize, data: &[u8]) -> bool {
            if offset
                .checked_add(data.len())
                .is_none_or(|end| end > self.0.len())
            {
                return false;
            }
            // SAFETY: the range is inside the mapping (checked above), which is mapped
            // read-write and never unmapped; no reference into it exists (raw copies only) and
            // `data` is private memory.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.0.as_ptr().add(offset),
                    data.len(),
                )
            };
            true
        }

        fn get(&self, offset: usize, out: &mut [u8]) -> bool {
            if offset
                .checked_add(out.len())
                .is_none_or(|end| end > self.0.len())
            {
                return false;
            }
            // SAFETY: as in `put`; every byte value is a valid u8.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.0.as_ptr().add(offset),
                    out.as_mut_ptr(),
                    out.len(),
                )
            };
            true
        }
    }

    fn endpoint(name: &str) -> Option<CapSlot> {
        caps::expect(name, CapabilityKind::Endpoint).ok()
    }

    fn main() -> u64 {
        let mut out = Console;
        let console_input = match caps::expect("console-input", CapabilityKind::ConsoleInput) {
            Ok(slot) => slot,
            Err(error) => {
                let _ = writeln!(out, "shell: no console input: {error}");
                return EXIT_NO_CONSOLE;
            }
        };
        let services = Services {
            console_input,
            task_control: caps::expect("task-control", CapabilityKind::TaskControl).ok(),
            dma: endpoint("call:dma"),
            blk: endpoint("call:blk"),
            net: endpoint("call:net"),
            rng: endpoint("call:rng"),
        };
        let tasks =
            TaskTable::parse(moat_userlib::task::info().map_or(&[][..], |info| info.config()));
        let region = if services.blk.is_some() {
            match memory::allocate(&Kernel, REGION_PAGES, Rights::READ | Rights::WRITE) {
                Ok(mapping) => Some(Box::new(Region(mapping)) as Box<dyn DataRegion>),
                Err(error) => {
                    let _ = writeln!(out, "shell: no block data region: {error:?}");
                    None
                }
            }
        } else {
            None
        };
        let _ = writeln!(
            out,
            "shell: Moat shell on the console ({} tasks in this system); type `help`",
            tasks.len()
        );
        let mut shell = Shell::new(Kernel, services, tasks, region);
        let error = shell.serve(&mut out);
        let _ = writeln!(out, "shell: console input failed: {error:?}");
        EXIT_NO_CONSOLE
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("shell is a Moat task: build it with --target aarch64-unknown-none");
}

//! `cargo xtask`: the single entry point to build, run and test Moat (`cargo xtask --help`).
//!
//! Design: every decision that can be made without running anything — parsing arguments,
//! turning the kernel ELF into an Image, building QEMU's command line, judging a console log —
//! checking the system manifest, reading benchmark output — is a pure function with unit tests
//! (`cargo test -p xtask`). This file only sequences them and turns the outcome into an exit
//! status.

mod args;
mod bench;
mod boot_tests;
mod console;
mod image;
mod manifest;
mod qemu;
mod system;
mod workspace;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::args::{BuildOptions, Command, RunOptions, TestOptions};
use crate::console::Ending;
use crate::system::{KTEST_MANIFEST_PATH, SystemPaths};
use crate::workspace::Workspace;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = args::parse(&arguments)
        .map_err(anyhow::Error::from)
        .and_then(|command| match command {
            Command::Help(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Build(options) => build(options),
            Command::Run(options) => run(options),
            Command::Test(options) => test(options),
            Command::Bench(options) => bench::run(options).map(|passed| {
                if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }),
        });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The system a `--manifest` option names, or the default one.
fn system_paths(workspace: &Workspace, manifest: Option<&Path>) -> SystemPaths {
    match manifest {
        Some(path) => SystemPaths::other_system(workspace, path),
        None => SystemPaths::default_system(workspace),
    }
}

/// `cargo xtask build`.
fn build(options: BuildOptions) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let paths = system_paths(&workspace, options.manifest.as_deref());
    let image = workspace::build_system(&workspace, &paths)?;
    println!("ELF:   {}", workspace.kernel_elf().display());
    println!("{}", image.display());
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask run`.
fn run(options: RunOptions) -> Result<ExitCode> {
    if !options.no_realm {
        eprintln!("xtask: Realm mode is not implemented yet; running the plain guest (--no-realm)");
    }
    let workspace = Workspace::locate()?;
    let paths = system_paths(&workspace, options.manifest.as_deref());
    let image = workspace::build_system(&workspace, &paths)?;
    qemu::ensure_installed()?;
    let disk = workspace.output_dir().join("disk.img");
    workspace::ensure_disk(&disk)?;
    let setup = qemu::Setup::Full {
        disk,
        el2: options.el2,
        gdb: options.gdb,
        kernel_args: options.kernel_args,
    };
    let command = qemu::command(&image, &setup);
    eprintln!(
        "xtask: {} {}",
        qemu::QEMU,
        qemu::arguments(&image, &setup).join(" ")
    );
    if options.gdb {
        eprintln!(
            "xtask: QEMU is halted waiting for a debugger on localhost:1234. Attach with:\n    \
             gdb-multiarch {} -ex 'target remote localhost:1234'\n  \
             (the ELF's symbols are high-half virtual addresses; until the boot stub turns the \
             MMU on, break on physical addresses instead)",
            workspace.kernel_elf().display()
        );
    }
    eprintln!("xtask: quit QEMU with Ctrl-A X");
    let ending = qemu::run_interactive(command)?;
    Ok(match ending {
        Ending::Exited(0) => ExitCode::SUCCESS,
        Ending::Exited(status) => {
            eprintln!("xtask: guest exited with status {status}");
            // Statuses outside 1..=255 cannot be passed on; report a plain failure.
            ExitCode::from(u8::try_from(status).unwrap_or(1))
        }
        Ending::Signalled | Ending::TimedOut | Ending::Stopped => {
            eprintln!("xtask: QEMU was killed by a signal");
            ExitCode::FAILURE
        }
    })
}

/// `cargo xtask test`.
fn test(options: TestOptions) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    // (what, passed) for the summary.
    let mut results: Vec<(String, bool)> = Vec::new();

    if !options.boot_only {
        println!("==== host tests: cargo test ====");
        let status = workspace.cargo().arg("test").status()?;
        results.push(("host tests (cargo test)".into(), status.success()));
    }

    println!("==== kernel build: default system and kernel test system ====");
    let ready = workspace::build_kernel(&workspace).and_then(|image| {
        let tasks = system::load_manifest(&SystemPaths::default_system(&workspace))?
            .tasks
            .len();
        qemu::ensure_installed()?;
        Ok((image, tasks))
    });
    match ready {
        Err(error) => {
            println!("xtask: cannot run the boot tests: {error:#}");
            results.push(("kernel build and QEMU".into(), false));
        }
        Ok((image, default_tasks)) => {
            results.push(("kernel build and QEMU".into(), true));
            let ktest_paths =
                SystemPaths::other_system(&workspace, &workspace.root.join(KTEST_MANIFEST_PATH));
            let ktest = workspace::build_system(&workspace, &ktest_paths)
                .and_then(|image| Ok((image, system::load_manifest(&ktest_paths)?.tasks.len())));
            let ktest = match ktest {
                Ok(built) => {
                    results.push(("kernel test system build".into(), true));
                    Some(built)
                }
                Err(error) => {
                    println!("xtask: cannot build {KTEST_MANIFEST_PATH}: {error:#}");
                    results.push(("kernel test system build".into(), false));
                    None
                }
            };
            let tests = boot_tests::boot_tests(default_tasks, ktest.as_ref().map(|k| k.1));
            let images = boot_tests::Images {
                default: image,
                ktest: ktest.map(|k| k.0),
            };
            println!(
                "==== QEMU boot tests: {} tests, {} at a time, timeout {} s each ====",
                tests.len(),
                boot_tests::PARALLEL,
                options.timeout.as_secs()
            );
            let log_dir = workspace.output_dir().join("test-logs");
            for outcome in boot_tests::run_all(&tests, &images, &log_dir, options.timeout)? {
                let label = format!(
                    "boot test {} ({:.1} s)",
                    outcome.name,
                    outcome.elapsed.as_secs_f64()
                );
                results.push((label, outcome.problems.is_empty()));
            }
        }
    }

    println!("==== summary ====");
    for (what, passed) in &results {
        println!("{} {what}", if *passed { "PASS" } else { "FAIL" });
    }
    let failed = results.iter().filter(|(_, passed)| !passed).count();
    if failed == 0 {
        println!("all {} passed", results.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} of {} FAILED", results.len());
        Ok(ExitCode::FAILURE)
    }
}

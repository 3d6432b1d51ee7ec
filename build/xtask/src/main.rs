//! `cargo xtask`: the single entry point to build, run and test Moat (`cargo xtask --help`).
//!
//! Design: every decision that can be made without running anything — parsing arguments,
//! turning the kernel ELF into an Image, building QEMU's command line, judging a console log —
//! checking the system manifest, reading benchmark output — is a pure function with unit tests
//! (`cargo test -p xtask`). This file only sequences them and turns the outcome into an exit
//! status.

mod args;
mod bench;
mod blk_tests;
mod boot_tests;
mod console;
mod faulty_tests;
mod image;
mod manifest;
mod net_tests;
mod new_driver;
mod qemu;
mod realm;
mod shell_tests;
mod system;
mod variants;
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
            Command::NewDriver(options) => {
                new_driver::new_driver(&options.name, &options.device).map(|()| ExitCode::SUCCESS)
            }
            Command::TestKit => new_driver::test_kit().map(|()| ExitCode::SUCCESS),
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

/// How long `cargo xtask run` (without `--serve`) waits after netdemo has its address before
/// it visits the network itself (netdemo's own window without a visitor is longer).
const RUN_VISIT_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// `cargo xtask run`.
fn run(options: RunOptions) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let shell_manifest = workspace.root.join(shell_tests::SHELL_MANIFEST_PATH);
    let manifest = if options.shell {
        Some(shell_manifest.as_path())
    } else {
        options.manifest.as_deref()
    };
    let mut paths = system_paths(&workspace, manifest);
    if options.serve && !options.shell {
        match variants::serve_system(&workspace, &paths)? {
            Some(serve) => paths = serve,
            None => eprintln!(
                "xtask: --serve: {} has no `demo` endpoint, so nothing powers it off by itself; \
                 booting it as it is",
                paths.label
            ),
        }
    }
    let image = workspace::build_system(&workspace, &paths)?;
    let mode = if options.realm() {
        let realm_sim = workspace::build_realm_sim(&workspace)?;
        let ram_file = workspace.realm_ram_file();
        workspace::remove_if_present(&ram_file)?;
        qemu::Mode::Realm(qemu::Realm {
            realm_sim,
            ram_file,
            stress_host: options.stress_host,
        })
    } else {
        qemu::Mode::Plain { el2: options.el2 }
    };
    qemu::ensure_installed()?;
    let disk = workspace.output_dir().join("disk.img");
    workspace::ensure_disk(&disk)?;
    let setup = qemu::Setup::Full {
        disk: disk.clone(),
        mode: mode.clone(),
        gdb: options.gdb,
        kernel_args: options.kernel_args.clone(),
    };
    // Host ports on 127.0.0.1 forwarded to the guest's network services (net_tests).
    let forwards = net_tests::Forwards::pick()?;
    let mut command = std::process::Command::new(qemu::QEMU);
    command.args(net_tests::with_forwards(
        qemu::arguments(&image, &setup),
        &forwards,
    ));
    eprintln!("xtask: {}", qemu::command_text(&command));
    match &mode {
        qemu::Mode::Realm(realm) => {
            eprintln!(
                "xtask: Realm mode under realm-sim{} (--no-realm for the plain guest)",
                if realm.stress_host {
                    ", stress mode"
                } else {
                    ""
                }
            );
            eprintln!("xtask:   realm-sim  {}", realm.realm_sim.display());
            eprintln!(
                "xtask:   Image      {} (loaded at {}; realm-sim copies it into private memory)",
                image.display(),
                qemu::REALM_IMAGE_ADDRESS
            );
            eprintln!(
                "xtask:   guest RAM  {} ({}; file offset = PA - 0x40000000: host memory \
                 [0, 512 MiB), private memory [512 MiB, 1 GiB))",
                realm.ram_file.display(),
                qemu::REALM_QEMU_RAM
            );
        }
        qemu::Mode::Plain { el2 } => {
            eprintln!(
                "xtask: plain guest entered at {}",
                if *el2 { "EL2" } else { "EL1" }
            );
            eprintln!("xtask:   Image      {}", image.display());
        }
    }
    eprintln!("xtask:   kernel ELF {}", workspace.kernel_elf().display());
    eprintln!("xtask:   disk       {} (virtio-blk)", disk.display());
    eprintln!(
        "xtask:   network    virtio-net on QEMU user networking, forwarded on 127.0.0.1 only: {}",
        forwards.describe()
    );
    eprintln!(
        "xtask:              netdemo serves them: curl http://127.0.0.1:{}/ (10 s after it \
         prints its address, xtask echoes {} KiB and fetches the page itself){}",
        forwards.http,
        net_tests::VISIT_ECHO / 1024,
        if options.serve {
            "; --serve: it serves until you stop QEMU"
        } else {
            ""
        }
    );
    if options.gdb {
        eprintln!(
            "xtask: QEMU is halted waiting for a debugger on localhost:1234. Attach with:\n    \
             gdb-multiarch {} -ex 'target remote localhost:1234'\n  \
             (the ELF's symbols are high-half virtual addresses; until the boot stub turns the \
             MMU on, break on physical addresses instead{})",
            workspace.kernel_elf().display(),
            if options.realm() {
                "; realm-sim runs first, at EL2: `add-symbol-file` its ELF for its symbols"
            } else {
                ""
            }
        );
    }
    if options.shell {
        eprintln!(
            "xtask: the shell reads this terminal once `moat> ` appears: type `help`; \
             `poweroff` ends the session"
        );
    }
    eprintln!("xtask: quit QEMU with Ctrl-A X");
    let serve = options.serve;
    let mut visited = false;
    let ending = qemu::run_interactive_watching(command, move |console| {
        if visited || !console.contains(net_tests::ADDRESS_LINE) {
            return;
        }
        visited = true;
        // The host side of the demo: a real client of the guest's network services. Without
        // --serve the demo ends soon after this visit, so leave the user time to curl first.
        std::thread::spawn(move || {
            if !serve {
                eprintln!(
                    "xtask: the network is up: curl http://127.0.0.1:{}/ (xtask visits it in {} s; \
                     the demo then ends, --serve keeps it up)",
                    forwards.http,
                    RUN_VISIT_DELAY.as_secs()
                );
                std::thread::sleep(RUN_VISIT_DELAY);
            }
            match net_tests::visit(&forwards, net_tests::VISIT_ECHO) {
                Ok(visit) => {
                    eprintln!("xtask: network: {}", visit.summary(forwards.http));
                    for line in visit.page.lines() {
                        eprintln!("xtask: | {line}");
                    }
                }
                Err(error) => eprintln!("xtask: network: the host client failed: {error:#}"),
            }
            if serve {
                eprintln!(
                    "xtask: serving until you stop QEMU (Ctrl-A X): curl http://127.0.0.1:{}/",
                    forwards.http
                );
            }
        });
    })?;
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

/// Records whether a build step worked (printing why not) and passes on its value.
fn record<T>(results: &mut Vec<(String, bool)>, what: &str, outcome: Result<T>) -> Option<T> {
    match outcome {
        Ok(value) => {
            results.push((what.to_string(), true));
            Some(value)
        }
        Err(error) => {
            println!("xtask: {what} failed: {error:#}");
            results.push((what.to_string(), false));
            None
        }
    }
}

/// `cargo xtask test`.
fn test(options: TestOptions) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    // (what, passed) for the summary.
    let mut results: Vec<(String, bool)> = Vec::new();
    if options.shell_only {
        shell_sessions(&workspace, &options, &mut results, None);
        return Ok(summary(&results));
    }

    if !options.boot_only {
        println!("==== host tests: cargo test ====");
        let status = workspace.cargo().arg("test").status()?;
        results.push(("host tests (cargo test)".into(), status.success()));
    }

    println!(
        "==== builds: default system, test-hooks kernel, faulty-DMA system, scan variant, kernel \
         test system, realm-sim ===="
    );
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
            // Built before the kernel test system, so the kernel ELF cargo leaves behind is a
            // normal (not test-hooks) one.
            let test_hooks = record(
                &mut results,
                "test-hooks kernel build (default system)",
                workspace::build_test_hooks_system(
                    &workspace,
                    &SystemPaths::default_system(&workspace),
                ),
            );
            // The faulty-DMA test system, also with a test-hooks kernel (faulty_tests).
            let faulty = record(
                &mut results,
                "faulty-DMA test system build (test-hooks kernel)",
                faulty_tests::build(&workspace),
            );
            // The default system plus the confidentiality canary, for the Realm demo boots.
            let scan = record(
                &mut results,
                "scan system build (default system + canary)",
                variants::scan_system(&workspace)
                    .and_then(|paths| workspace::build_system(&workspace, &paths)),
            );
            let ktest_paths =
                SystemPaths::other_system(&workspace, &workspace.root.join(KTEST_MANIFEST_PATH));
            let ktest = record(
                &mut results,
                "kernel test system build",
                workspace::build_system(&workspace, &ktest_paths).and_then(|image| {
                    Ok((image, system::load_manifest(&ktest_paths)?.tasks.len()))
                }),
            );
            let realm_sim = record(
                &mut results,
                "realm-sim build",
                workspace::build_realm_sim(&workspace),
            );
            let mut tests = boot_tests::boot_tests(default_tasks, ktest.as_ref().map(|k| k.1));
            let images = boot_tests::Images {
                default: image,
                ktest: ktest.map(|k| k.0),
                test_hooks,
                scan,
                realm_sim,
            };
            // What did not build is reported above; its tests cannot run.
            tests.retain(|test| images.can_run(test));
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
            // The network system, driven from the host (net_tests).
            println!("==== network system: {} ====", net_tests::NET_MANIFEST_PATH);
            let net_paths = SystemPaths::other_system(
                &workspace,
                &workspace.root.join(net_tests::NET_MANIFEST_PATH),
            );
            if let Some(net_image) = record(
                &mut results,
                "network system build",
                workspace::build_system(&workspace, &net_paths),
            ) {
                let net = net_tests::run_tests(&workspace, &net_image, &log_dir);
                if let Some(net_results) = record(&mut results, "network tests", net) {
                    results.extend(net_results);
                }
            }
            // The block systems: persistence across boots, the driver killed mid-workload.
            println!("==== block systems: persistence, driver restart (blk_tests) ====");
            results.extend(blk_tests::run_tests(&workspace, &log_dir, options.timeout));
            // A driver handing its device a private buffer, as a Realm and plain (faulty_tests).
            if let Some(faulty) = faulty {
                println!("==== faulty DMA: {} ====", faulty_tests::MANIFEST_PATH);
                results.extend(faulty_tests::run_tests(
                    &faulty,
                    images.realm_sim.as_deref(),
                    &log_dir,
                    options.timeout,
                ));
            }
            shell_sessions(&workspace, &options, &mut results, images.realm_sim.clone());
        }
    }
    Ok(summary(&results))
}

/// The shell system's scripted sessions (shell_tests); builds realm-sim unless given.
fn shell_sessions(
    workspace: &Workspace,
    options: &TestOptions,
    results: &mut Vec<(String, bool)>,
    realm_sim: Option<std::path::PathBuf>,
) {
    println!(
        "==== shell system: {} ====",
        shell_tests::SHELL_MANIFEST_PATH
    );
    let paths = SystemPaths::other_system(
        workspace,
        &workspace.root.join(shell_tests::SHELL_MANIFEST_PATH),
    );
    let Some(image) = record(
        results,
        "shell system build",
        workspace::build_system(workspace, &paths),
    ) else {
        return;
    };
    let realm_sim = match realm_sim {
        Some(path) => Some(path),
        None => record(
            results,
            "realm-sim build",
            workspace::build_realm_sim(workspace),
        ),
    };
    let log_dir = workspace.output_dir().join("test-logs");
    let sessions = qemu::ensure_installed().and_then(|()| {
        shell_tests::run_all(&image, realm_sim.as_deref(), &log_dir, options.timeout)
    });
    if let Some(sessions) = record(results, "shell sessions", sessions) {
        results.extend(sessions);
    }
}

/// Prints the summary; the exit status says whether everything passed.
fn summary(results: &[(String, bool)]) -> ExitCode {
    println!("==== summary ====");
    for (what, passed) in results {
        println!("{} {what}", if *passed { "PASS" } else { "FAIL" });
    }
    let failed = results.iter().filter(|(_, passed)| !passed).count();
    if failed == 0 {
        println!("all {} passed", results.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} FAILED", results.len());
        ExitCode::FAILURE
    }
}

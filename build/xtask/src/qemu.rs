//! QEMU: the command line for each kind of guest, installing QEMU when it is missing, and
//! running it either on the terminal or captured with a timeout.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::console::Ending;

/// The QEMU binary xtask runs.
pub const QEMU: &str = "qemu-system-aarch64";

/// The Debian/Ubuntu package that provides [`QEMU`].
pub const QEMU_PACKAGE: &str = "qemu-system-arm";

/// Guest RAM of the plain guest.
pub const PLAIN_RAM: &str = "512M";

/// QEMU's RAM under realm-sim (build/realm-sim/README.md): the Realm's 512 MiB of host memory,
/// its 512 MiB of private memory, then realm-sim itself and the Image as loaded.
pub const REALM_QEMU_RAM: &str = "1088M";

/// Where the host loads the Moat Image for realm-sim (`-device loader,addr=`).
pub const REALM_IMAGE_ADDRESS: &str = "0x82000000";

/// The kernel command-line word that turns on realm-sim's stress mode.
pub const STRESS_HOST_WORD: &str = "realm-sim.stress-host";

/// The DMA-address form realm-sim needs (DESIGN.md section 6: QEMU's devices see
/// guest-physical addresses).
pub const DMA_ADDRESS_WORD: &str = "dma-address=canonical";

/// How the kernel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The plain guest, entered at EL1, or at EL2 (`virtualization=on`) if `el2`.
    Plain {
        /// Enter at EL2.
        el2: bool,
    },
    /// A Realm under realm-sim (DESIGN.md section 7).
    Realm(Realm),
}

/// A Realm boot: realm-sim at EL2, the Image loaded beside it, guest RAM in a file the host
/// (a test) can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    /// realm-sim's ELF (`-kernel`).
    pub realm_sim: PathBuf,
    /// Guest RAM (`memory-backend-file`, share=on): file offset = PA − 0x4000_0000.
    pub ram_file: PathBuf,
    /// realm-sim's stress mode: IPA_STATE_SET makes one granule of progress per call.
    pub stress_host: bool,
}

/// How QEMU is set up around the kernel image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// The guest xtask normally runs: semihosting for the exit status, one virtio-blk disk, one
    /// virtio-net device and one virtio-rng device (the host's entropy), as modern virtio-mmio
    /// with `iommu_platform=on`.
    Full {
        /// Raw disk image behind the virtio-blk device.
        disk: PathBuf,
        /// Plain guest or Realm.
        mode: Mode,
        /// Start halted with a gdb stub on port 1234.
        gdb: bool,
        /// Appended to the kernel command line after `semihosting` (and, in a Realm,
        /// [`DMA_ADDRESS_WORD`] and [`STRESS_HOST_WORD`] when asked for).
        kernel_args: Vec<String>,
    },
    /// Exactly what booting a Linux kernel needs and nothing more: no semihosting, no devices,
    /// no command line.
    Bare,
}

/// A path as one value of a QEMU `key=value,...` option (a comma is written twice).
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The arguments of `qemu-system-aarch64` that boot `image` set up as `setup` says.
pub fn arguments(image: &Path, setup: &Setup) -> Vec<String> {
    let mode = match setup {
        Setup::Full { mode, .. } => mode.clone(),
        Setup::Bare => Mode::Plain { el2: false },
    };
    let mut arguments: Vec<String> = Vec::new();
    let mut push = |words: &[&str]| arguments.extend(words.iter().map(|word| word.to_string()));
    match &mode {
        Mode::Plain { el2 } => {
            let machine = if *el2 {
                "virt,gic-version=3,virtualization=on"
            } else {
                "virt,gic-version=3"
            };
            push(&["-M", machine, "-cpu", "cortex-a72", "-m", PLAIN_RAM]);
            push(&["-nographic", "-no-reboot", "-kernel"]);
            push(&[&image.display().to_string()]);
        }
        Mode::Realm(realm) => {
            push(&[
                "-M",
                "virt,gic-version=3,virtualization=on,memory-backend=ram",
                "-object",
                &format!(
                    "memory-backend-file,id=ram,size={REALM_QEMU_RAM},mem-path={},share=on",
                    option_value(&realm.ram_file)
                ),
                "-cpu",
                "cortex-a72",
                "-m",
                REALM_QEMU_RAM,
                "-nographic",
                "-no-reboot",
                "-kernel",
                &realm.realm_sim.display().to_string(),
                "-device",
                &format!(
                    "loader,file={},addr={REALM_IMAGE_ADDRESS},force-raw=on",
                    option_value(image)
                ),
            ]);
        }
    }

    if let Setup::Full {
        disk,
        gdb,
        kernel_args,
        ..
    } = setup
    {
        let mut command_line = vec!["semihosting"];
        if let Mode::Realm(realm) = &mode {
            command_line.push(DMA_ADDRESS_WORD);
            if realm.stress_host {
                command_line.push(STRESS_HOST_WORD);
            }
        }
        command_line.extend(kernel_args.iter().map(String::as_str));
        arguments.extend(
            [
                "-semihosting-config",
                "enable=on,target=native",
                "-global",
                "virtio-mmio.force-legacy=false",
                "-drive",
                &format!("if=none,id=disk0,file={},format=raw", option_value(disk)),
                "-device",
                "virtio-blk-device,drive=disk0,iommu_platform=on",
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-device,netdev=net0,iommu_platform=on",
                "-device",
                "virtio-rng-device,iommu_platform=on",
                "-append",
                &command_line.join(" "),
            ]
            .map(String::from),
        );
        if *gdb {
            arguments.extend(["-s", "-S"].map(String::from));
        }
    }
    arguments
}

/// What to do when QEMU is missing.
#[derive(Debug, PartialEq, Eq)]
pub enum InstallPlan {
    /// Root on Debian or Ubuntu: install with apt-get.
    AptGet,
    /// Anything else: tell the user this, and stop.
    Manual(String),
}

/// Reads a `KEY=value` line of /etc/os-release, without quotes.
fn os_release_value<'a>(os_release: &'a str, key: &str) -> Option<&'a str> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim().trim_matches('"').trim_matches('\''))
    })
}

/// Decides how to get QEMU from the contents of /etc/os-release (if readable) and the user id.
pub fn install_plan(os_release: Option<&str>, user_id: Option<u32>) -> InstallPlan {
    let debian_like = os_release.is_some_and(|text| {
        let id = os_release_value(text, "ID").unwrap_or_default();
        let id_like = os_release_value(text, "ID_LIKE").unwrap_or_default();
        std::iter::once(id)
            .chain(id_like.split_whitespace())
            .any(|name| name == "debian" || name == "ubuntu")
    });
    let command = format!("apt-get install -y {QEMU_PACKAGE}");
    match (debian_like, user_id) {
        (true, Some(0)) => InstallPlan::AptGet,
        (true, _) => InstallPlan::Manual(format!(
            "{QEMU} is missing; install it with:\n    sudo {command}"
        )),
        (false, _) => InstallPlan::Manual(format!(
            "{QEMU} is missing; install QEMU's AArch64 system emulator with your package \
             manager, on Debian or Ubuntu:\n    sudo {command}"
        )),
    }
}

/// Whether `name` is an executable file in a PATH directory.
fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|directory| directory.join(name).is_file())
}

/// The real user id, from /proc/self/status.
fn user_id() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes sure [`QEMU`] is installed: installs it with apt-get as root on Debian/Ubuntu,
/// otherwise fails with the exact command to run.
pub fn ensure_installed() -> Result<()> {
    if on_path(QEMU) {
        return Ok(());
    }
    let os_release = std::fs::read_to_string("/etc/os-release").ok();
    match install_plan(os_release.as_deref(), user_id()) {
        InstallPlan::Manual(message) => bail!("{message}"),
        InstallPlan::AptGet => {
            eprintln!("xtask: {QEMU} is missing; installing {QEMU_PACKAGE} with apt-get");
            if !apt_get(&["install", "-y", QEMU_PACKAGE])? {
                eprintln!("xtask: install failed; running apt-get update and trying again");
                if !apt_get(&["update"])? || !apt_get(&["install", "-y", QEMU_PACKAGE])? {
                    bail!("`apt-get install -y {QEMU_PACKAGE}` failed");
                }
            }
            if !on_path(QEMU) {
                bail!("{QEMU_PACKAGE} is installed but {QEMU} is still not on PATH");
            }
            Ok(())
        }
    }
}

fn apt_get(arguments: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(arguments)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    Ok(status.success())
}

/// The `qemu-system-aarch64` command for `image` and `setup`.
pub fn command(image: &Path, setup: &Setup) -> Command {
    let mut command = Command::new(QEMU);
    command.args(arguments(image, setup));
    command
}

/// `command` as one line a shell would accept (arguments with spaces in double quotes), for
/// logs and for the user to copy.
pub fn command_text(command: &Command) -> String {
    let words = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| {
            let text = word.to_string_lossy();
            if text.contains(' ') {
                format!("\"{text}\"")
            } else {
                text.into_owned()
            }
        });
    words.collect::<Vec<String>>().join(" ")
}

/// Converts an exit status to how the guest ended.
fn ending(status: ExitStatus) -> Ending {
    match status.code() {
        Some(code) => Ending::Exited(code),
        None => Ending::Signalled,
    }
}

/// Runs QEMU with stdin and stderr on this terminal and its stdout (the console) copied to
/// ours as it arrives, each chunk also passed to `watch` (which sees the output so far); returns
/// how QEMU ended.
pub fn run_interactive_watching(
    mut command: Command,
    mut watch: impl FnMut(&str) + Send + 'static,
) -> Result<Ending> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;
    let mut pipe = child.stdout.take().context("QEMU's stdout")?;
    let copier = thread::spawn(move || {
        use std::io::Write;
        let mut buffer = [0u8; 4096];
        let mut seen = Vec::new();
        while let Ok(count @ 1..) = pipe.read(&mut buffer) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buffer[..count]);
            let _ = out.flush();
            drop(out);
            seen.extend_from_slice(&buffer[..count]);
            watch(&String::from_utf8_lossy(&seen));
        }
    });
    let status = child.wait().context("waiting for QEMU")?;
    let _ = copier.join();
    Ok(ending(status))
}

/// The console output of a captured run and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// Everything QEMU wrote to stdout and stderr, interleaved as it arrived.
    pub log: String,
    /// How QEMU ended.
    pub ending: Ending,
    /// Wall-clock time from start to end.
    pub elapsed: Duration,
    /// Wall-clock time from start until the output first satisfied `stop` ([`run_until`]).
    pub awaited_after: Option<Duration>,
}

/// Runs `command` with stdout and stderr captured; kills it if it is still running after
/// `timeout` ([`Ending::TimedOut`]), and stops it ([`Ending::Stopped`]) `grace` after `stop`
/// first returns true for the output so far (the grace period catches what follows, e.g. a
/// fault right after the awaited line).
pub fn run_until(
    mut command: Command,
    timeout: Duration,
    stop: &dyn Fn(&str) -> bool,
    grace: Duration,
) -> Result<Captured> {
    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut awaited_after = None;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;

    // One reader thread per pipe; each sends chunks until its pipe closes.
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let readers = read_output(&mut child, move |chunk| sender.send(chunk.to_vec()).is_ok());

    let mut output = Vec::new();
    let mut expired = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(chunk) => {
                output.extend_from_slice(&chunk);
                if awaited_after.is_none() && stop(&String::from_utf8_lossy(&output)) {
                    awaited_after = Some(started.elapsed());
                    deadline = deadline.min(Instant::now() + grace);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                expired = true;
                break;
            }
        }
    }

    // Both pipes closed means QEMU is exiting; still bound the wait by the deadline.
    let status = loop {
        if expired {
            break None;
        }
        match child.try_wait().context("waiting for QEMU")? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                expired = true;
                break None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    if expired {
        // Ignore errors: QEMU may have exited on its own just now.
        let _ = child.kill();
        let _ = child.wait();
    }
    for reader in readers {
        let _ = reader.join();
    }
    output.extend(receiver.try_iter().flatten());

    let ending = match status {
        Some(status) => ending(status),
        None if awaited_after.is_some() => Ending::Stopped,
        None => Ending::TimedOut,
    };
    Ok(Captured {
        log: String::from_utf8_lossy(&output).into_owned(),
        ending,
        elapsed: started.elapsed(),
        awaited_after,
    })
}

/// Reads `child`'s stdout and stderr (those that are piped), one thread each, handing every
/// chunk to `sink` as it arrives until the pipe closes or `sink` returns false. The threads end
/// with the pipes; join them to be sure every chunk was handed over.
pub fn read_output(
    child: &mut std::process::Child,
    sink: impl FnMut(&[u8]) -> bool + Clone + Send + 'static,
) -> Vec<thread::JoinHandle<()>> {
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ];
    pipes
        .into_iter()
        .flatten()
        .map(|mut pipe| {
            let mut sink = sink.clone();
            thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(count @ 1..) = pipe.read(&mut buffer) {
                    if !sink(&buffer[..count]) {
                        break;
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured, never stopped early.
    fn run_captured(command: Command, timeout: Duration) -> Result<Captured> {
        run_until(command, timeout, &|_| false, Duration::ZERO)
    }

    fn full(el2: bool, gdb: bool, kernel_args: &[&str]) -> Setup {
        Setup::Full {
            disk: "/t/moat/disk.img".into(),
            mode: Mode::Plain { el2 },
            gdb,
            kernel_args: kernel_args
                .iter()
                .map(|argument| argument.to_string())
                .collect(),
        }
    }

    #[test]
    fn plain_guest_command_line() {
        let arguments = arguments(Path::new("/t/moat/Image"), &full(false, false, &[]));
        assert_eq!(
            arguments.join(" "),
            "-M virt,gic-version=3 -cpu cortex-a72 -m 512M -nographic -no-reboot \
             -kernel /t/moat/Image -semihosting-config enable=on,target=native \
             -global virtio-mmio.force-legacy=false \
             -drive if=none,id=disk0,file=/t/moat/disk.img,format=raw \
             -device virtio-blk-device,drive=disk0,iommu_platform=on \
             -netdev user,id=net0 -device virtio-net-device,netdev=net0,iommu_platform=on \
             -device virtio-rng-device,iommu_platform=on \
             -append semihosting"
        );
    }

    #[test]
    fn el2_gdb_and_kernel_arguments() {
        let arguments = arguments(
            Path::new("I"),
            &full(true, true, &["fault=data-abort", "x=1"]),
        );
        assert_eq!(arguments[1], "virt,gic-version=3,virtualization=on");
        let append = arguments
            .iter()
            .position(|argument| argument == "-append")
            .unwrap();
        // The whole command line is one argument.
        assert_eq!(arguments[append + 1], "semihosting fault=data-abort x=1");
        assert_eq!(&arguments[arguments.len() - 2..], ["-s", "-S"]);
        let plain = super::arguments(Path::new("I"), &full(false, false, &[]));
        assert!(!plain.contains(&"-s".to_string()) && !plain.contains(&"-S".to_string()));
    }

    #[test]
    fn command_text_quotes_the_kernel_command_line() {
        let text = command_text(&command(Path::new("I"), &full(false, false, &["a=b"])));
        assert!(
            text.starts_with("qemu-system-aarch64 -M virt,gic-version=3 "),
            "{text}"
        );
        assert!(text.ends_with(r#" -append "semihosting a=b""#), "{text}");
    }

    fn realm(stress_host: bool, kernel_args: &[&str]) -> Setup {
        Setup::Full {
            disk: "/t/moat/disk.img".into(),
            mode: Mode::Realm(Realm {
                realm_sim: "/t/realm-sim".into(),
                ram_file: "/t/moat/realm-ram.bin".into(),
                stress_host,
            }),
            gdb: false,
            kernel_args: kernel_args
                .iter()
                .map(|argument| argument.to_string())
                .collect(),
        }
    }

    #[test]
    fn realm_command_line() {
        let arguments = arguments(Path::new("/t/moat/Image"), &realm(false, &[]));
        assert_eq!(
            arguments.join(" "),
            "-M virt,gic-version=3,virtualization=on,memory-backend=ram \
             -object memory-backend-file,id=ram,size=1088M,mem-path=/t/moat/realm-ram.bin,share=on \
             -cpu cortex-a72 -m 1088M -nographic -no-reboot -kernel /t/realm-sim \
             -device loader,file=/t/moat/Image,addr=0x82000000,force-raw=on \
             -semihosting-config enable=on,target=native \
             -global virtio-mmio.force-legacy=false \
             -drive if=none,id=disk0,file=/t/moat/disk.img,format=raw \
             -device virtio-blk-device,drive=disk0,iommu_platform=on \
             -netdev user,id=net0 -device virtio-net-device,netdev=net0,iommu_platform=on \
             -device virtio-rng-device,iommu_platform=on \
             -append semihosting dma-address=canonical"
        );
    }

    #[test]
    fn realm_stress_mode_and_kernel_arguments_share_one_command_line() {
        let arguments = arguments(Path::new("I"), &realm(true, &["fault=data-abort"]));
        let append = arguments
            .iter()
            .position(|argument| argument == "-append")
            .unwrap();
        assert_eq!(
            arguments[append + 1],
            "semihosting dma-address=canonical realm-sim.stress-host fault=data-abort"
        );
        // The plain guest never gets the Realm words.
        let plain = super::arguments(Path::new("I"), &full(true, false, &[]));
        assert!(!plain.join(" ").contains("realm-sim"));
        assert!(!plain.join(" ").contains("dma-address"));
    }

    #[test]
    fn commas_in_paths_are_escaped_in_qemu_options() {
        let setup = Setup::Full {
            disk: "/a,b/disk.img".into(),
            mode: Mode::Realm(Realm {
                realm_sim: "/s".into(),
                ram_file: "/a,b/ram".into(),
                stress_host: false,
            }),
            gdb: false,
            kernel_args: vec![],
        };
        let text = arguments(Path::new("/a,b/Image"), &setup).join(" ");
        assert!(text.contains("mem-path=/a,,b/ram,share=on"), "{text}");
        assert!(text.contains("loader,file=/a,,b/Image,addr"), "{text}");
        assert!(text.contains("file=/a,,b/disk.img,format=raw"), "{text}");
    }

    #[test]
    fn bare_guest_is_only_what_linux_needs() {
        assert_eq!(
            arguments(Path::new("Image"), &Setup::Bare).join(" "),
            "-M virt,gic-version=3 -cpu cortex-a72 -m 512M -nographic -no-reboot -kernel Image"
        );
    }

    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
    const MINT: &str = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
    const FEDORA: &str = "ID=fedora\nID_LIKE=\"rhel centos\"\n";

    #[test]
    fn installs_only_as_root_on_debian_like_systems() {
        assert_eq!(install_plan(Some(DEBIAN), Some(0)), InstallPlan::AptGet);
        assert_eq!(install_plan(Some(MINT), Some(0)), InstallPlan::AptGet);
        let InstallPlan::Manual(message) = install_plan(Some(DEBIAN), Some(1000)) else {
            panic!("non-root must not install");
        };
        assert!(
            message.contains("sudo apt-get install -y qemu-system-arm"),
            "{message}"
        );
        assert!(matches!(
            install_plan(Some(FEDORA), Some(0)),
            InstallPlan::Manual(_)
        ));
        assert!(matches!(
            install_plan(None, Some(0)),
            InstallPlan::Manual(_)
        ));
        assert!(matches!(
            install_plan(Some(DEBIAN), None),
            InstallPlan::Manual(_)
        ));
    }

    #[test]
    fn captures_output_and_exit_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo to-stdout; echo to-stderr >&2; exit 3"]);
        let captured = run_captured(command, Duration::from_secs(20)).expect("runs");
        assert_eq!(captured.ending, Ending::Exited(3));
        assert!(captured.log.contains("to-stdout\n"), "{:?}", captured.log);
        assert!(captured.log.contains("to-stderr\n"), "{:?}", captured.log);
    }

    #[test]
    fn kills_on_timeout_and_keeps_the_output_so_far() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 30"]);
        let captured = run_captured(command, Duration::from_millis(500)).expect("runs");
        assert_eq!(captured.ending, Ending::TimedOut);
        assert!(captured.log.contains("started"));
        assert!(
            captured.elapsed < Duration::from_secs(10),
            "{:?}",
            captured.elapsed
        );
    }

    #[test]
    fn stops_a_grace_period_after_the_awaited_output() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo ready; sleep 0.3; echo after; exec sleep 30"]);
        let captured = run_until(
            command,
            Duration::from_secs(20),
            &|log| log.contains("ready\n"),
            Duration::from_secs(2),
        )
        .expect("runs");
        assert_eq!(captured.ending, Ending::Stopped);
        assert!(captured.log.contains("after"), "{:?}", captured.log);
        let awaited = captured.awaited_after.expect("the awaited line was seen");
        assert!(awaited < captured.elapsed, "{awaited:?}");
        assert!(
            captured.elapsed < Duration::from_secs(10),
            "{:?}",
            captured.elapsed
        );
        // A program that exits during the grace period keeps its status.
        let mut command = Command::new("sh");
        command.args(["-c", "echo ready; exit 4"]);
        let captured = run_until(
            command,
            Duration::from_secs(20),
            &|log| log.contains("ready"),
            Duration::from_secs(5),
        )
        .expect("runs");
        assert_eq!(captured.ending, Ending::Exited(4));
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let error = run_captured(Command::new("/nonexistent/qemu"), Duration::from_secs(1))
            .expect_err("cannot start");
        assert!(
            format!("{error:#}").contains("starting qemu-system-aarch64"),
            "{error:#}"
        );
    }
}

//! Command-line parsing for `cargo xtask`: the subcommands, their flags and their help texts.
//!
//! Parsing is a pure function from the argument list to a [`Command`], so it is unit-tested on
//! the host without running anything.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What `cargo xtask` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print this help text and exit successfully.
    Help(&'static str),
    /// Build the tasks and the kernel and write the raw `Image`.
    Build(BuildOptions),
    /// Build, then boot under QEMU with the console on stdio.
    Run(RunOptions),
    /// Host tests, then QEMU boot tests.
    Test(TestOptions),
    /// Measurements: prints a table and writes `target/bench/results.json`.
    Bench(BenchOptions),
    /// Generate a driver crate, its protocol crate and a system from the templates.
    NewDriver(NewDriverOptions),
    /// Check that a freshly generated driver and the guide's example build and pass their tests.
    TestKit,
}

/// Options of `cargo xtask new-driver`.
#[derive(Debug, PartialEq, Eq)]
pub struct NewDriverOptions {
    /// The driver's name: package, binary, task and endpoint.
    pub name: String,
    /// `--device TYPE`: the VirtIO device type (default `entropy`).
    pub device: String,
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BenchOptions {
    /// `--quick`: shorter criterion warm-up and measurement (noisier numbers, for trying things).
    pub quick: bool,
}

/// Options of `cargo xtask build`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--manifest PATH`: build this system instead of build/system.toml.
    pub manifest: Option<PathBuf>,
}

/// Options of `cargo xtask run`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `--no-realm`: the plain guest instead of a Realm under realm-sim.
    pub no_realm: bool,
    /// `--el2`: the plain guest entered at EL2 (`-M virt,virtualization=on`).
    pub el2: bool,
    /// `--stress-host`: realm-sim's stress mode (one granule per IPA_STATE_SET).
    pub stress_host: bool,
    /// `--gdb`: start QEMU halted with a gdb stub on TCP port 1234.
    pub gdb: bool,
    /// `--serve`: keep the system serving (the network) until the user stops QEMU.
    pub serve: bool,
    /// `--manifest PATH`: boot this system instead of build/system.toml.
    pub manifest: Option<PathBuf>,
    /// `--shell`: boot the shell system (build/system-shell.toml) with the console on stdin.
    pub shell: bool,
    /// Everything after `--`: appended to the kernel command line.
    pub kernel_args: Vec<String>,
}

impl RunOptions {
    /// Whether this run is a Realm under realm-sim (the default; `--no-realm` and `--el2` are
    /// plain guests).
    pub fn realm(&self) -> bool {
        !self.no_realm && !self.el2
    }
}

/// Options of `cargo xtask test`.
#[derive(Debug, PartialEq, Eq)]
pub struct TestOptions {
    /// `--timeout SECONDS`: how long one QEMU boot test may run before QEMU is killed.
    pub timeout: Duration,
    /// `--boot-only`: skip `cargo test` and run only the QEMU boot tests.
    pub boot_only: bool,
    /// `--shell-only`: only build the shell system and run its scripted sessions.
    pub shell_only: bool,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
            boot_only: false,
            shell_only: false,
        }
    }
}

/// Timeout of a single QEMU boot test unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 120;

/// A command line that does not parse; the message says what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} (see `cargo xtask --help`)", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Top-level help.
pub const MAIN_HELP: &str = "\
cargo xtask: build, run and test Moat.

Usage: cargo xtask <COMMAND> [OPTIONS]

Commands:
  build   Build the kernel and write the raw Linux arm64 Image (last output line: its path)
  run     Build, then boot the kernel under QEMU with the console on this terminal
  test    Run the host tests (`cargo test`), then boot tests under QEMU
  bench   Run the benchmarks: print a table, write <target-dir>/bench/results.json
  new-driver NAME
          Generate drivers/NAME, libs/NAME-api and build/system-NAME.toml (a new driver)
  test-kit
          Check that a freshly generated driver and the guide's example build and pass tests
  help    Print this help, or a command's help: `cargo xtask help run`

Run `cargo xtask <COMMAND> --help` for a command's options.
";

/// Help of `cargo xtask build`.
pub const BUILD_HELP: &str = "\
cargo xtask build: build the task binaries and the kernel image.

Usage: cargo xtask build [--manifest PATH]

1. Checks the system manifest build/system.toml (docs/manifest.md); a mistake is an error
   naming its line.
2. Builds every task binary it names (cargo build --release --target aarch64-unknown-none),
   strips each to what the kernel loads and packs them with the compiled manifest into
   <target-dir>/moat/system.bin.
3. Builds `moat-kernel` for aarch64-unknown-none-softfloat (release) with that archive
   embedded (MOAT_SYSTEM_ARCHIVE; an empty archive when the manifest lists no task), and
   converts the ELF's loadable segments into a raw Linux arm64 Image at
   <target-dir>/moat/Image.
Adds the Rust targets with rustup if they are missing. Prints the ELF path, then the Image
path as the last line.

Options:
  --manifest PATH   Build the system described by PATH instead of build/system.toml; its
                    Image is <target-dir>/moat/<stem>.Image (the default Image is untouched)
";

/// Help of `cargo xtask run`.
pub const RUN_HELP: &str = "\
cargo xtask run: build, then boot Moat under QEMU.

Usage: cargo xtask run [--no-realm | --el2] [--stress-host] [--gdb] [--serve]
                       [--manifest PATH | --shell] [-- KERNEL_ARGS...]

By default Moat boots as an Arm CCA Realm under realm-sim, the project's RMM stand-in
(build/realm-sim, built first):
  qemu-system-aarch64 -M virt,gic-version=3,virtualization=on,memory-backend=ram
    -object memory-backend-file,id=ram,size=1088M,mem-path=<target-dir>/moat/realm-ram.bin,share=on
    -cpu cortex-a72 -m 1088M -kernel <realm-sim ELF>
    -device loader,file=<Image>,addr=0x82000000,force-raw=on
and the kernel command line starts `semihosting dma-address=canonical`. realm-sim runs at
EL2 and enters the kernel at EL1 as a Realm with 512 MiB of RAM. Guest RAM is a file, made
fresh for every run and left behind for inspection: offsets [0, 512 MiB) are host memory
(what the host and the devices see), [512 MiB, 1 GiB) the Realm's private memory.
With --no-realm (or --el2) it boots the plain guest:
  qemu-system-aarch64 -M virt,gic-version=3 -cpu cortex-a72 -m 512M -kernel <Image>
Either way: one virtio-blk disk (<target-dir>/moat/disk.img, created when missing), one
virtio-net device (QEMU user networking) and one virtio-rng device (entropy from the host),
all modern virtio-mmio, semihosting enabled and the console on stdio. xtask prints the paths (and the gdb port) before QEMU starts.

The network: QEMU forwards four free host ports on 127.0.0.1 (printed before QEMU starts)
to netdemo's HTTP (80), echo (7), sink (9) and source (19) services. 10 s after netdemo
prints its address (at once with --serve), xtask itself echoes 1 MiB through the echo service,
fetches the status page (uptime, the net counters, dmastat's figures) and prints it; netdemo
then lets the demo power off. Until then `curl` the printed address yourself (a page fetched
before any echo does not end the demo). With --serve the system keeps serving until you stop
QEMU.
Exits with the guest's status: the kernel's semihosting exit status, or 0 after a PSCI
SYSTEM_OFF. Quit QEMU by hand with Ctrl-A X (--serve: the only way it ends).

Options:
  --no-realm     The plain guest, entered at EL1
  --el2          The plain guest entered at EL2 (-M virt,virtualization=on); it drops to EL1
  --stress-host  Realm mode with realm-sim's stress mode (`realm-sim.stress-host`:
                 IPA_STATE_SET makes one granule of progress per call)
  --gdb          Start halted with a gdb stub on localhost:1234 (QEMU -s -S)
  --serve        Keep serving until QEMU is stopped: boots the system plus `demo-serve`, a
                 task that holds the demo's power-off (<target-dir>/moat/<stem>-serve.toml;
                 only for a system whose demo serves the `demo` endpoint, like the default)
  --manifest PATH
                 Boot the system described by PATH instead of build/system.toml
  --shell        Boot the shell system (build/system-shell.toml; docs/shell.md): the
                 supervisor, the DMA server, the blk, rng and net drivers and the interactive
                 shell on the console (type `help`; `poweroff` ends the session). Realm mode
                 by default like any run; --no-realm works too
  -- ARGS...     Append ARGS to the kernel command line, e.g. `-- loglevel=debug`. (Test
                 hooks such as `fault=data-abort` are refused in a Realm unless the kernel is
                 built with the `test-hooks` feature; they work with --no-realm.)
";

/// Help of `cargo xtask test`.
pub const TEST_HELP: &str = "\
cargo xtask test: everything CI runs after fmt and clippy.

Usage: cargo xtask test [--timeout SECONDS] [--boot-only | --shell-only]

1. `cargo test` at the workspace root (the host crates, the default members).
2. Builds the default system (build/system.toml, as `build` does), the same with a
   `test-hooks` kernel, the kernel test system (build/system-ktest.toml) and realm-sim, then
   runs the QEMU boot tests, two at a time, each with a timeout after which QEMU is killed:
     realm-ktest
                the kernel test system as a Realm under realm-sim (as `cargo xtask run`):
                realm-sim's layout and RIM lines, `realm: Arm CCA Realm, RSI 1.0`, `realm: IPA
                width 39, shared bit 0x4000000000, hash Sha256, device addresses canonical`,
                the initial measurement (must equal realm-sim's RIM), the command line and
                later the manifest measured into REM0, the RIPAS RAM pass, then as ktest-el1;
                no `realm-sim: error` or `realm-sim: refused` line. Then the confidentiality
                scan of its guest RAM file (<target-dir>/moat/test-logs/<test>.ram, removed
                when the test passes): ktest-canary's page pattern must be in private memory
                (offsets [512 MiB, 1 GiB); so the scan can fail) and never in host memory
                ([0, 512 MiB)), and must not be in the Image itself
     realm-ktest-stress
                the same with `realm-sim.stress-host` (the RIPAS RAM pass must take one RSI
                call per 4 KiB granule)
     ktest-el1  the kernel test system entered at EL1: `tasks: N started` (N from its
                manifest), `moat: ready`, `ktest: all N passed` counting every
                `ktest: PASS` line, no `ktest: FAIL`, exit status 0 (the ktest task powers
                off with the number of failures)
     ktest-el2  the same entered at EL2 (-M virt,virtualization=on)
     realm-demo the whole demo as a Realm under realm-sim, booted with the confidentiality
                canary appended (<target-dir>/moat/system-scan.toml, crate::variants):
                realm-sim's and the kernel's Realm lines as above, `tasks: N started`, then
                `blkcheck: PASS`, `moat: ready` and netdemo's `a host client exercised echo and
                HTTP` (any order), then `demo: demo complete; powering off with status 0` and
                exit status 0. QEMU forwards host ports to netdemo; when it prints its address
                the test echoes 1 MiB (every byte checked) and fetches the status page, whose
                uptime, net counters and dmastat figures must parse and be plausible. Then the
                disk image must hold blkcheck's pattern and the confidentiality scan runs (as
                for realm-ktest)
     realm-demo-stress
                the same in realm-sim's stress mode
     el1        the default system entered at EL1: banner, memory map, devices (virtio-blk
                and virtio-net), `moat: boot self-check passed`, then `tasks: N started` and
                the whole demo with the network visited, as realm-demo (no scan), or, with no
                tasks, exit status 0
     el2        the same entered at EL2
     fault-data-abort, fault-undef, fault-panic, fault-stack-overflow, fault-write-text
                the default system with `fault=<hook>`: the kernel's fault report (register
                dump; `kernel stack overflow`; `permission fault`; the panic message) and a
                non-zero exit status, before the self-check ends
     bare       booted exactly as a Linux kernel would be (only -kernel, so no devices):
                banner, self-check, `tasks: N started`, `moat: ready` (then xtask stops QEMU)
     realm-hook-refused
                the default system as a Realm with `fault=data-abort`: the kernel refuses the
                hook (`test hook: fault=... refused`) and boots on: self-check passed, the
                manifest measured, `tasks: N started` (then xtask stops QEMU)
     realm-hook-test-build
                the same with a kernel built with cargo feature `test-hooks`
                (<target-dir>/moat/system-test-hooks.Image, built with `-p moat-kernel` alone):
                the hook fires and the kernel reports the data abort
     realm-empty-ipa
                the test-hooks kernel as a Realm with `fault=empty-ipa`: it makes a frame
                RIPAS EMPTY as `Share` does, maps its protected address again and reads it;
                realm-sim injects a synchronous external abort and the kernel reports it
   No test may print KERNEL FAULT or KERNEL PANIC unless it expects them; no Realm test may
   print `realm-sim: error` (realm-sim then powers off with status 0). A test passes when
   every expected console line appears in order, no forbidden line appears and the exit is as
   expected. A failing test prints its whole console log; every log is also written to
   <target-dir>/moat/test-logs/<test>.log.
3. The network system (build/system-net.toml), plain guest at EL1, driven from the host
   (build/xtask/src/net_tests.rs): netdemo's address, the status page, 16 MiB of echo over
   4 connections, the driver killed mid-transfer and restarted (log: test-logs/net.log).
4. The faulty-DMA system (build/system-faultydma.toml, built with a `test-hooks` kernel:
   <target-dir>/moat/system-faultydma-test-hooks.Image; build/xtask/src/faulty_tests.rs),
   each boot with a fresh disk (test-logs/<test>.disk):
     faultydma-realm
                as a Realm under realm-sim: the faultydma task writes a sector from the
                address of its private page holding a secret (its seed, sector and address
                printed) and reads it back through a bounce grant:
                `faultydma: PASS device got host bytes, not the private buffer (Realm)`, exit
                status 0, no `realm-sim: error`/`refused`, KERNEL FAULT or `faultydma: ERROR`.
                Then on the host: the secret (recomputed from the seed) is not in that sector,
                nowhere on the disk and nowhere in host memory of the guest RAM file, and it
                is in private memory exactly at the task's address (so the test can fail)
     faultydma-plain
                the control, plain guest at EL1: nothing protects memory, the task says
                `faultydma: plain guest: the device read the private buffer` and the sector
                on the disk must hold the secret (the disk check detects a leak)
Prints a summary and exits non-zero if anything failed.

3. The shell system (build/system-shell.toml), after the network system: a scripted session
   typed on QEMU's stdin at the shell's prompts, as a Realm under realm-sim (shell-realm) and
   as the plain guest (shell-el1): `ps`, `dmastat`, `rng`, `kill virtio-blk`, `ps`,
   `poweroff`. Passes when the kernel took console input by the UART's interrupt, ps lists
   every task, dmastat prints the pool summary and client table, rng prints 32 bytes, kill
   reports the kill and the supervisor's restart, the second ps shows blk alive at
   generation 1, and QEMU exits with status 0 after `poweroff`. Logs:
   <target-dir>/moat/test-logs/shell-realm.log and shell-el1.log.

Options:
  --timeout SECONDS   Timeout of each boot test and shell session (default 120)
  --boot-only         Skip `cargo test`; only the QEMU boot tests
  --shell-only        Only build the shell system and realm-sim and run the shell sessions
";

/// Help of `cargo xtask bench`.
pub const BENCH_HELP: &str = "\
cargo xtask bench: measure, print a table and write <target-dir>/bench/results.json.

Usage: cargo xtask bench [--quick]

Builds the image (tasks included), then runs every measurement and writes one flat JSON
object {\"name_with_unit\": number, ...} with the names the table shows:
  image_KiB                   size of the bootable Image, task binaries included
  dma_map_unmap_ns            DMA server: one map + unmap pair (4 KiB), median, pool at 50%
                              occupancy, 4 MiB pool (criterion, `cargo bench -p moat-dma-server`)
  dma_map_unmap_ns_256MiB     the same with a 256 MiB pool
  dma_map_unmap_scaling       256 MiB time / 4 MiB time (target <= 1.2)
  dma_*_ns                    every other criterion benchmark of that run, by its id
  dma_pool_metadata_bytes_per_MiB, and any `moat-bench: NAME = NUMBER` line a bench prints
  ram_at_ready_KiB            RAM in use when the kernel prints `moat: ready` (QEMU boot of
                              the default system; of build/system-ktest.toml while the default
                              system has no task)
  ipc_call_reply_instructions instructions per IPC call + reply round trip between two user
                              tasks: the kernel test system's 10,000 timed round trips under
                              QEMU -icount shift=0 (1 instruction per ns: ticks x 1e9 / counter
                              Hz / round trips)
  realm_boot_to_ready_ms      wall-clock time from starting QEMU to `moat: ready` as a Realm
                              under realm-sim (xtask's clock when the line arrives: the kernel
                              prints no timestamps; QEMU TCG, so host load matters)
  plain_boot_to_ready_ms      the same for the plain guest at EL1
  net_tcp_tx_MBps             bulk TCP guest -> host (netdemo's source, 64 MiB, every byte
                              checked) over QEMU user networking, build/system-net.toml, plain
                              guest; MB = 10^6 bytes
  net_tcp_rx_MBps             bulk TCP host -> guest (into netdemo's sink, 64 MiB)
  realm_net_tcp_tx_MBps, realm_net_tcp_rx_MBps
                              the same booted as a Realm under realm-sim (every frame through
                              the DMA server's shared bounce windows)
  blk_read_4k_MBps, blk_read_64k_MBps, blk_write_64k_MBps, the same with _qd32 before _MBps,
  and realm_blk_* for all six: blkbench's sequential I/O over the 64 MiB disk at queue depth
                              1 and 32 (build/system-blk-bench.toml, virtio-blk cache=unsafe),
                              plain guest and Realm; blk_*_dma_maps: DMA-server maps meanwhile
A measurement that cannot run yet is shown as skipped; one that fails makes the exit status
non-zero. Benchmarks are never run as timed assertions in tests.

Options:
  --quick   Criterion with 1 s warm-up and 2 s measurement per benchmark (noisier)
";

/// Help of `cargo xtask new-driver`.
pub const NEW_DRIVER_HELP: &str = "\
cargo xtask new-driver: start a new driver from the templates (docs/writing-a-driver.md).

Usage: cargo xtask new-driver NAME [--device TYPE]

Writes, from build/xtask/templates/:
  drivers/NAME            package and binary NAME: device bring-up (reset first), one request
                          at a time through a bounce grant, the serve loop, a fake device that
                          can misbehave, host tests
  libs/NAME-api           package NAME-api: the protocol (Info, Read), a typed client and the
                          serving side, host tests
  build/system-NAME.toml  a system of the supervisor, the DMA server and the driver:
                          cargo xtask run --no-realm --manifest build/system-NAME.toml
and adds both crates to the root Cargo.toml (members, default-members) and NAME-api to
[workspace.dependencies], then formats them with cargo fmt. It prints the [[task]] and
[[endpoint]] to paste into build/system.toml to add the driver to the default system.
The generated driver builds for aarch64-unknown-none and its tests pass as they are
(`cargo xtask test-kit` checks that in CI).

NAME: 1 to 28 characters a-z, 0-9 and single `-`, starting with a letter; not a Rust keyword,
not an existing package, and no existing drivers/NAME, libs/NAME-api or build/system-NAME.toml.

Options:
  --device TYPE   The VirtIO device type the driver claims (virtio:TYPE:0): network, block,
                  console, entropy (default: QEMU's virtio-rng-device, attached by every
                  `cargo xtask run`), balloon, scsi, 9p, gpu, input, vsock, crypto, fs
";

/// Help of `cargo xtask test-kit`.
pub const TEST_KIT_HELP: &str = "\
cargo xtask test-kit: the driver kit's CI check.

Usage: cargo xtask test-kit

1. Copies the workspace's sources to <target-dir>/kit-check/workspace (the repository stays
   clean), runs `new-driver kitcheck` there, and checks the generated crates untouched:
   cargo fmt --check, cargo test, cargo clippy -D warnings (host and aarch64-unknown-none),
   and the release task binary for aarch64-unknown-none (into this workspace's target
   directory, so the dependencies it already built are reused); then builds
   build/system-kitcheck.toml there and boots it (plain guest, the usual devices): the
   driver must print `kitcheck: ready; self-check read 16 bytes` (read from QEMU's
   virtio-rng) before `moat: ready`. Log: <target-dir>/kit-check/boot.log.
2. The guide's worked example in this workspace: cargo test -p moat-virtio-rng -p
   moat-rng-api and the virtio-rng task binary; every path docs/writing-a-driver.md names
   must exist.
";

/// Parses the arguments that follow `cargo xtask` (the program name already removed).
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some((subcommand, rest)) = args.split_first() else {
        return Ok(Command::Help(MAIN_HELP));
    };
    match subcommand.as_str() {
        "-h" | "--help" => Ok(Command::Help(MAIN_HELP)),
        "help" => match rest.first().map(String::as_str) {
            None => Ok(Command::Help(MAIN_HELP)),
            Some("build") => Ok(Command::Help(BUILD_HELP)),
            Some("run") => Ok(Command::Help(RUN_HELP)),
            Some("test") => Ok(Command::Help(TEST_HELP)),
            Some("bench") => Ok(Command::Help(BENCH_HELP)),
            Some("new-driver") => Ok(Command::Help(NEW_DRIVER_HELP)),
            Some("test-kit") => Ok(Command::Help(TEST_KIT_HELP)),
            Some(other) => Err(UsageError(format!("no help for unknown command `{other}`"))),
        },
        "build" => parse_build(rest),
        "run" => parse_run(rest),
        "test" => parse_test(rest),
        "bench" => parse_bench(rest),
        "new-driver" => parse_new_driver(rest),
        "test-kit" => match rest.first() {
            None => Ok(Command::TestKit),
            Some(arg) if is_help(arg) => Ok(Command::Help(TEST_KIT_HELP)),
            Some(arg) => Err(UsageError(format!("unknown `test-kit` argument `{arg}`"))),
        },
        other => Err(UsageError(format!("unknown command `{other}`"))),
    }
}

fn is_help(arg: &str) -> bool {
    arg == "-h" || arg == "--help"
}

fn parse_manifest(value: Option<&String>) -> Result<Option<PathBuf>, UsageError> {
    match value {
        Some(path) if !path.is_empty() && !path.starts_with('-') => Ok(Some(PathBuf::from(path))),
        _ => Err(UsageError(
            "`--manifest` needs the path of a system manifest".into(),
        )),
    }
}

fn parse_build(args: &[String]) -> Result<Command, UsageError> {
    let mut options = BuildOptions::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--manifest" => options.manifest = parse_manifest(iter.next())?,
            _ if is_help(arg) => return Ok(Command::Help(BUILD_HELP)),
            _ => return Err(UsageError(format!("unknown `build` argument `{arg}`"))),
        }
    }
    Ok(Command::Build(options))
}

fn parse_run(args: &[String]) -> Result<Command, UsageError> {
    let mut options = RunOptions::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--no-realm" => options.no_realm = true,
            "--stress-host" => options.stress_host = true,
            "--el2" => options.el2 = true,
            "--gdb" => options.gdb = true,
            "--serve" => options.serve = true,
            "--manifest" => options.manifest = parse_manifest(iter.next())?,
            "--shell" => options.shell = true,
            "--" => {
                options.kernel_args = iter.cloned().collect();
                break;
            }
            _ if is_help(arg) => return Ok(Command::Help(RUN_HELP)),
            _ => {
                return Err(UsageError(format!(
                    "unknown `run` argument `{arg}` (kernel arguments go after `--`)"
                )));
            }
        }
    }
    if options.shell && options.manifest.is_some() {
        return Err(UsageError(
            "`--shell` boots build/system-shell.toml; it cannot go with `--manifest`".into(),
        ));
    }
    if options.shell && options.serve {
        return Err(UsageError(
            "`--shell` already keeps the system up until `poweroff`; it cannot go with `--serve`"
                .into(),
        ));
    }
    if options.stress_host && !options.realm() {
        return Err(UsageError(
            "`--stress-host` is a realm-sim mode; it cannot go with `--no-realm` or `--el2`".into(),
        ));
    }
    Ok(Command::Run(options))
}

fn parse_test(args: &[String]) -> Result<Command, UsageError> {
    let mut options = TestOptions::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--boot-only" => options.boot_only = true,
            "--shell-only" => options.shell_only = true,
            "--timeout" => {
                let value = iter
                    .next()
                    .ok_or_else(|| UsageError("`--timeout` needs a number of seconds".into()))?;
                options.timeout = parse_seconds(value)?;
            }
            _ if is_help(arg) => return Ok(Command::Help(TEST_HELP)),
            _ => return Err(UsageError(format!("unknown `test` argument `{arg}`"))),
        }
    }
    Ok(Command::Test(options))
}

fn parse_bench(args: &[String]) -> Result<Command, UsageError> {
    let mut options = BenchOptions::default();
    for arg in args {
        match arg.as_str() {
            "--quick" => options.quick = true,
            _ if is_help(arg) => return Ok(Command::Help(BENCH_HELP)),
            _ => return Err(UsageError(format!("unknown `bench` argument `{arg}`"))),
        }
    }
    Ok(Command::Bench(options))
}

fn parse_new_driver(args: &[String]) -> Result<Command, UsageError> {
    let mut name = None;
    let mut device = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--device" => match iter.next() {
                Some(kind) if !kind.starts_with('-') => device = Some(kind.clone()),
                _ => {
                    return Err(UsageError(
                        "`--device` needs a VirtIO device type, e.g. `--device block`".into(),
                    ));
                }
            },
            _ if is_help(arg) => return Ok(Command::Help(NEW_DRIVER_HELP)),
            _ if arg.starts_with('-') => {
                return Err(UsageError(format!("unknown `new-driver` argument `{arg}`")));
            }
            _ if name.is_none() => name = Some(arg.clone()),
            _ => {
                return Err(UsageError(format!(
                    "`new-driver` takes one NAME, got `{arg}` too"
                )));
            }
        }
    }
    let name = name.ok_or_else(|| UsageError("`new-driver` needs a NAME".into()))?;
    Ok(Command::NewDriver(NewDriverOptions {
        name,
        device: device.unwrap_or_else(|| crate::new_driver::DEFAULT_DEVICE.to_string()),
    }))
}

fn parse_seconds(value: &str) -> Result<Duration, UsageError> {
    match value.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(UsageError(format!(
            "`--timeout` wants a positive whole number of seconds, got `{value}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn no_arguments_and_help_flags_print_main_help() {
        assert_eq!(parse_str(""), Ok(Command::Help(MAIN_HELP)));
        assert_eq!(parse_str("--help"), Ok(Command::Help(MAIN_HELP)));
        assert_eq!(parse_str("-h"), Ok(Command::Help(MAIN_HELP)));
        assert_eq!(parse_str("help"), Ok(Command::Help(MAIN_HELP)));
    }

    #[test]
    fn every_subcommand_has_its_own_help() {
        for (name, text) in [
            ("build", BUILD_HELP),
            ("run", RUN_HELP),
            ("test", TEST_HELP),
            ("bench", BENCH_HELP),
        ] {
            assert_eq!(
                parse_str(&format!("{name} --help")),
                Ok(Command::Help(text))
            );
            assert_eq!(parse_str(&format!("{name} -h")), Ok(Command::Help(text)));
            assert_eq!(parse_str(&format!("help {name}")), Ok(Command::Help(text)));
            assert!(
                MAIN_HELP.contains(&format!("\n  {name} ")),
                "{name} missing from main help"
            );
        }
        assert!(parse_str("help frobnicate").is_err());
    }

    #[test]
    fn build_takes_an_optional_manifest() {
        assert_eq!(
            parse_str("build"),
            Ok(Command::Build(BuildOptions::default()))
        );
        assert_eq!(
            parse_str("build --manifest tests/ipc.toml"),
            Ok(Command::Build(BuildOptions {
                manifest: Some("tests/ipc.toml".into())
            }))
        );
        assert!(parse_str("build --manifest").is_err());
        assert!(parse_str("build --manifest --el2").is_err());
        assert!(parse_str("build --el2").is_err());
    }

    #[test]
    fn run_flags() {
        assert_eq!(parse_str("run"), Ok(Command::Run(RunOptions::default())));
        assert_eq!(
            parse_str("run --el2 --gdb --no-realm --manifest m.toml --serve"),
            Ok(Command::Run(RunOptions {
                no_realm: true,
                el2: true,
                stress_host: false,
                gdb: true,
                serve: true,
                manifest: Some("m.toml".into()),
                shell: false,
                kernel_args: vec![]
            }))
        );
        let Ok(Command::Run(options)) = parse_str("run --shell --no-realm") else {
            panic!("run --shell parses");
        };
        assert!(options.shell && !options.realm());
        let error = parse_str("run --shell --manifest m.toml").unwrap_err();
        assert!(error.0.contains("--shell"), "{error}");
        assert!(RUN_HELP.contains("--shell"));
        assert!(parse_str("run --shell --serve").is_err());
    }

    #[test]
    fn realm_mode_is_the_default_and_el2_is_a_plain_guest() {
        let Ok(Command::Run(options)) = parse_str("run") else {
            panic!("run parses");
        };
        assert!(options.realm());
        let Ok(Command::Run(options)) = parse_str("run --stress-host --gdb") else {
            panic!("run --stress-host parses");
        };
        assert!(options.realm() && options.stress_host && options.gdb);
        for plain in ["run --no-realm", "run --el2"] {
            let Ok(Command::Run(options)) = parse_str(plain) else {
                panic!("{plain} parses");
            };
            assert!(!options.realm(), "{plain}");
        }
        let error = parse_str("run --no-realm --stress-host").unwrap_err();
        assert!(error.0.contains("--stress-host"), "{error}");
        assert!(parse_str("run --el2 --stress-host").is_err());
        assert!(RUN_HELP.contains("--stress-host") && RUN_HELP.contains("realm-sim"));
    }

    #[test]
    fn run_passes_everything_after_double_dash_to_the_kernel() {
        assert_eq!(
            parse_str("run --no-realm -- fault=data-abort --el2 --"),
            Ok(Command::Run(RunOptions {
                no_realm: true,
                el2: false,
                stress_host: false,
                gdb: false,
                serve: false,
                manifest: None,
                shell: false,
                kernel_args: vec!["fault=data-abort".into(), "--el2".into(), "--".into()],
            }))
        );
    }

    #[test]
    fn run_rejects_unknown_flags_and_bare_kernel_arguments() {
        let error = parse_str("run --realm").unwrap_err();
        assert!(error.0.contains("--realm"), "{error}");
        assert!(parse_str("run fault=data-abort").is_err());
    }

    #[test]
    fn test_options() {
        assert_eq!(parse_str("test"), Ok(Command::Test(TestOptions::default())));
        assert_eq!(
            parse_str("test --timeout 5 --boot-only"),
            Ok(Command::Test(TestOptions {
                timeout: Duration::from_secs(5),
                boot_only: true,
                shell_only: false,
            }))
        );
        assert_eq!(
            parse_str("test --shell-only"),
            Ok(Command::Test(TestOptions {
                shell_only: true,
                ..TestOptions::default()
            }))
        );
        assert!(parse_str("test --timeout").is_err());
        assert!(parse_str("test --timeout 0").is_err());
        assert!(parse_str("test --timeout soon").is_err());
        assert!(parse_str("test --el2").is_err());
    }

    #[test]
    fn bench_options() {
        assert_eq!(
            parse_str("bench"),
            Ok(Command::Bench(BenchOptions::default()))
        );
        assert_eq!(
            parse_str("bench --quick"),
            Ok(Command::Bench(BenchOptions { quick: true }))
        );
        assert!(parse_str("bench --slow").is_err());
    }

    #[test]
    fn new_driver_and_test_kit() {
        assert_eq!(
            parse_str("new-driver my-dev"),
            Ok(Command::NewDriver(NewDriverOptions {
                name: "my-dev".into(),
                device: "entropy".into()
            }))
        );
        assert_eq!(
            parse_str("new-driver --device block my-dev"),
            Ok(Command::NewDriver(NewDriverOptions {
                name: "my-dev".into(),
                device: "block".into()
            }))
        );
        assert!(parse_str("new-driver").is_err());
        assert!(parse_str("new-driver a b").is_err());
        assert!(parse_str("new-driver a --device").is_err());
        assert!(parse_str("new-driver a --el2").is_err());
        assert_eq!(
            parse_str("new-driver --help"),
            Ok(Command::Help(NEW_DRIVER_HELP))
        );
        assert_eq!(
            parse_str("help new-driver"),
            Ok(Command::Help(NEW_DRIVER_HELP))
        );
        assert_eq!(parse_str("test-kit"), Ok(Command::TestKit));
        assert_eq!(parse_str("test-kit -h"), Ok(Command::Help(TEST_KIT_HELP)));
        assert!(parse_str("test-kit now").is_err());
    }

    #[test]
    fn unknown_command_is_an_error() {
        let error = parse_str("frobnicate").unwrap_err();
        assert!(error.to_string().contains("unknown command `frobnicate`"));
    }
}

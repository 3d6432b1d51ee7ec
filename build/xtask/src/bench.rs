//! `cargo xtask bench`: named measurements, a printed table and `target/bench/results.json`
//! (one flat JSON object, `{"name_with_unit": number, ...}`, DESIGN.md section 10).
//!
//! Design: a measurement is an entry in [`MEASUREMENTS`] — a label and a function from the
//! shared [`Bench`] context to named values, or to a reason it was skipped. Adding one (for
//! example `ipc_call_reply_instructions` from a QEMU run with `-icount shift=0`) is one function
//! and one line in that list; [`Bench::boot`] boots a built image with extra QEMU and kernel
//! arguments and returns the console log, and [`number_on_line`] reads a figure off it. The
//! parsers (criterion's JSON, bench output lines, console lines) are pure and unit-tested.
//!
//! Two systems are booted: the default one (build/system.toml) and the kernel test system
//! (build/system-ktest.toml, built on first use), whose `ktest` task times 10,000 IPC round
//! trips with the virtual counter and prints `ktest: ipc N round trips in T counter ticks`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::args::BenchOptions;
use crate::qemu::{self, Captured, Setup};
use crate::system::{self, KTEST_MANIFEST_PATH, SystemPaths};
use crate::workspace::{self, Workspace};

/// What a measurement produced.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Named values (`name_with_unit`, value).
    Values(Vec<(String, f64)>),
    /// It cannot run yet, and why (not a failure).
    Skipped(String),
}

/// One measurement: a label for the table and the function that measures.
pub struct Measurement {
    /// What is measured, shown when it fails or is skipped.
    pub label: &'static str,
    /// Runs it.
    pub run: fn(&mut Bench) -> Result<Outcome>,
}

/// Every measurement, in table order.
pub const MEASUREMENTS: &[Measurement] = &[
    Measurement {
        label: "image size",
        run: image_size,
    },
    Measurement {
        label: "DMA server (criterion)",
        run: dma_server,
    },
    Measurement {
        label: "RAM in use at `moat: ready` (QEMU)",
        run: ram_at_ready,
    },
    Measurement {
        label: "IPC call + reply round trip (QEMU -icount shift=0)",
        run: ipc_call_reply,
    },
    Measurement {
        label: "boot to `moat: ready`, Realm under realm-sim and plain guest (QEMU, wall clock)",
        run: boot_to_ready,
    },
    Measurement {
        label: "bulk TCP over QEMU user networking, 64 MiB each way, plain and Realm (build/system-net.toml)",
        run: net_tcp,
    },
    Measurement {
        label: "virtio-blk sequential, qd1 and qd32, plain and Realm (build/system-blk-bench.toml)",
        run: blk_sequential,
    },
];

/// `blk_{read_4k,read_64k,write_64k}[_qd32]_MBps` (and `realm_…`): blkbench over the whole
/// 64 MiB disk, one request at a time and 32 in flight, with the DMA server's figures
/// (crate::blk_tests).
fn blk_sequential(bench: &mut Bench) -> Result<Outcome> {
    Ok(Outcome::Values(crate::blk_tests::bench(&bench.workspace)?))
}

/// `net_tcp_tx_MBps` (guest → host) and `net_tcp_rx_MBps` (host → guest): the network system
/// booted as the plain guest, 64 MiB from netdemo's source and into its sink
/// (crate::net_tests); then `realm_net_tcp_tx_MBps` / `realm_net_tcp_rx_MBps`, the same booted
/// as a Realm under realm-sim.
fn net_tcp(bench: &mut Bench) -> Result<Outcome> {
    qemu::ensure_installed()?;
    let paths = SystemPaths::other_system(
        &bench.workspace,
        &bench
            .workspace
            .root
            .join(crate::net_tests::NET_MANIFEST_PATH),
    );
    let image = workspace::build_system(&bench.workspace, &paths)
        .with_context(|| format!("building {}", crate::net_tests::NET_MANIFEST_PATH))?;
    let disk = bench.workspace.output_dir().join("bench-net-disk.img");
    workspace::ensure_disk(&disk)?;
    let mut values = crate::net_tests::bench(&image, &disk, qemu::Mode::Plain { el2: false }, "")?;
    // The same as a Realm under realm-sim: every frame through the DMA server's shared
    // bounce windows.
    let realm_sim = workspace::build_realm_sim(&bench.workspace)?;
    let ram_file = bench.workspace.output_dir().join("bench-net-realm-ram.bin");
    workspace::remove_if_present(&ram_file)?;
    let realm = qemu::Mode::Realm(qemu::Realm {
        realm_sim,
        ram_file: ram_file.clone(),
        stress_host: false,
    });
    let realm_values = crate::net_tests::bench(&image, &disk, realm, "realm_");
    workspace::remove_if_present(&ram_file)?;
    values.extend(realm_values?);
    Ok(Outcome::Values(
        values
            .into_iter()
            .map(|(name, value)| (name, round(value, 2)))
            .collect(),
    ))
}

/// The shared context of one `cargo xtask bench` run.
pub struct Bench {
    /// The workspace.
    pub workspace: Workspace,
    /// The default system's Image (tasks included).
    pub image: PathBuf,
    /// Tasks in the default system.
    pub default_tasks: usize,
    /// The kernel test system's Image, once built.
    ktest_image: Option<PathBuf>,
    /// Options.
    pub options: BenchOptions,
}

/// Timeout of one QEMU boot made for a measurement.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a boot that is stopped on a console line keeps running after it.
const STOP_GRACE: Duration = Duration::from_millis(500);

impl Bench {
    /// Boots `image` (the plain guest, entered at EL1) with `qemu_args` appended to QEMU's
    /// command line and `kernel_args` to the kernel's; returns the captured console. If `until`
    /// is given, QEMU is stopped shortly after a complete console line contains it (for a
    /// system that keeps serving).
    pub fn boot(
        &self,
        image: &Path,
        qemu_args: &[&str],
        kernel_args: &[&str],
        until: Option<&str>,
    ) -> Result<Captured> {
        self.boot_in(
            qemu::Mode::Plain { el2: false },
            image,
            qemu_args,
            kernel_args,
            until,
        )
    }

    /// [`Bench::boot`] as a plain guest or a Realm (`mode`).
    pub fn boot_in(
        &self,
        mode: qemu::Mode,
        image: &Path,
        qemu_args: &[&str],
        kernel_args: &[&str],
        until: Option<&str>,
    ) -> Result<Captured> {
        qemu::ensure_installed()?;
        let disk = self.workspace.output_dir().join("bench-disk.img");
        workspace::ensure_disk(&disk)?;
        let setup = Setup::Full {
            disk,
            mode,
            gdb: false,
            kernel_args: kernel_args.iter().map(|s| s.to_string()).collect(),
        };
        let mut command = qemu::command(image, &setup);
        command.args(qemu_args);
        let stop = |log: &str| {
            until.is_some_and(|needle| log.lines().any(|line| line.contains(needle)))
                && log.ends_with('\n')
        };
        qemu::run_until(command, BOOT_TIMEOUT, &stop, STOP_GRACE)
    }

    /// The kernel test system's Image, built on first use.
    pub fn ktest_image(&mut self) -> Result<PathBuf> {
        if let Some(image) = &self.ktest_image {
            return Ok(image.clone());
        }
        let paths = SystemPaths::other_system(
            &self.workspace,
            &self.workspace.root.join(KTEST_MANIFEST_PATH),
        );
        let image = workspace::build_system(&self.workspace, &paths)
            .with_context(|| format!("building {KTEST_MANIFEST_PATH}"))?;
        self.ktest_image = Some(image.clone());
        Ok(image)
    }

    /// Where criterion keeps its results for this workspace.
    fn criterion_home(&self) -> PathBuf {
        self.workspace.target_dir.join("criterion")
    }

    /// `cargo bench -p <package>`, its output shown and captured; returns stdout and the
    /// criterion medians (benchmark id → ns) of the benchmarks this run wrote.
    fn criterion(&self, package: &str) -> Result<(String, BTreeMap<String, f64>)> {
        let started = SystemTime::now();
        let mut command = self.workspace.cargo();
        command
            .args(["bench", "-p", package, "--", "--noplot"])
            .env("CRITERION_HOME", self.criterion_home());
        if self.options.quick {
            command.args(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        let stdout = run_teed(command).with_context(|| format!("cargo bench -p {package}"))?;
        let medians = criterion_medians(&self.criterion_home(), started)?;
        Ok((stdout, medians))
    }
}

/// Runs `command` with stdout shown line by line and captured; stderr goes to ours.
fn run_teed(mut command: Command) -> Result<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting it")?;
    let mut captured = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading its output")?;
            println!("{line}");
            captured.push_str(&line);
            captured.push('\n');
        }
    }
    let status = child.wait().context("waiting for it")?;
    if !status.success() {
        bail!("it failed ({status})");
    }
    Ok(captured)
}

// ---- Measurements ----

fn image_size(bench: &mut Bench) -> Result<Outcome> {
    let bytes = fs::metadata(&bench.image)
        .with_context(|| format!("reading {}", bench.image.display()))?
        .len();
    Ok(Outcome::Values(vec![(
        "image_KiB".into(),
        round(bytes as f64 / 1024.0, 1),
    )]))
}

/// The DMA server's criterion benchmark ids that stand for the named results, in order of
/// preference (the first one present wins).
pub const DMA_MAP_UNMAP_4MIB: &[&str] = &[
    "dma_map_unmap/server_4KiB/4MiB",
    "dma_map_unmap/4MiB",
    "map_unmap/4MiB",
];
/// As [`DMA_MAP_UNMAP_4MIB`], with the 256 MiB pool.
pub const DMA_MAP_UNMAP_256MIB: &[&str] = &[
    "dma_map_unmap/server_4KiB/256MiB",
    "dma_map_unmap/256MiB",
    "map_unmap/256MiB",
];

fn dma_server(bench: &mut Bench) -> Result<Outcome> {
    const PACKAGE: &str = "moat-dma-server";
    if !bench.workspace.root.join("servers/dma/benches").is_dir() {
        return Ok(Outcome::Skipped(format!("{PACKAGE} has no benches yet")));
    }
    let (stdout, medians) = bench.criterion(PACKAGE)?;
    Ok(Outcome::Values(dma_results(&stdout, &medians)))
}

/// Names the DMA server's results: the headline figures, every criterion median by its id,
/// and the figures the bench prints.
pub fn dma_results(stdout: &str, medians: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let pick = |ids: &[&str]| ids.iter().find_map(|id| medians.get(*id).copied());
    let mut values = Vec::new();
    let small = pick(DMA_MAP_UNMAP_4MIB);
    let large = pick(DMA_MAP_UNMAP_256MIB);
    if let Some(small) = small {
        values.push(("dma_map_unmap_ns".to_string(), round(small, 1)));
    }
    if let Some(large) = large {
        values.push(("dma_map_unmap_ns_256MiB".to_string(), round(large, 1)));
    }
    if let (Some(small), Some(large)) = (small, large) {
        values.push(("dma_map_unmap_scaling".to_string(), round(large / small, 3)));
    }
    for (id, ns) in medians {
        values.push((format!("{}_ns", metric_name(id)), round(*ns, 1)));
    }
    // The bench prints its bookkeeping figure for each pool size; the 4 MiB pool's is first.
    if let Some(per_mib) = stdout
        .lines()
        .find(|line| line.starts_with("dma_pool_metadata_bytes_per_MiB"))
        .and_then(|line| line.split_once(':'))
        .and_then(|(_, rest)| first_number(rest))
    {
        values.push(("dma_pool_metadata_bytes_per_MiB".to_string(), per_mib));
    }
    values.extend(result_lines(stdout));
    values
}

/// RAM in use at `moat: ready`: the default system's, or the kernel test system's while the
/// default system has no task (it then never gets ready).
fn ram_at_ready(bench: &mut Bench) -> Result<Outcome> {
    let (captured, which) = if bench.default_tasks > 0 {
        let image = bench.image.clone();
        (
            bench.boot(&image, &[], &[], Some("moat: ready"))?,
            system::MANIFEST_PATH,
        )
    } else {
        let image = bench.ktest_image()?;
        (bench.boot(&image, &[], &[], None)?, KTEST_MANIFEST_PATH)
    };
    match ready_ram_kib(&captured.log) {
        ReadyLine::Missing => bail!(
            "{which} never printed `moat: ready` ({:?}); console:\n{}",
            captured.ending,
            captured.log
        ),
        ReadyLine::WithoutFigure(line) => Ok(Outcome::Skipped(format!(
            "`{line}` names no figure in KiB (wanted e.g. `moat: ready, 1234 KiB in use`)"
        ))),
        ReadyLine::KiB(kib) => {
            println!(
                "{which}: {}",
                captured
                    .log
                    .lines()
                    .find(|l| l.contains("moat: ready"))
                    .unwrap_or_default()
                    .trim()
            );
            Ok(Outcome::Values(vec![("ram_at_ready_KiB".into(), kib)]))
        }
    }
}

/// Instructions per IPC call + reply round trip between two user tasks.
///
/// The kernel test system's `ktest` task times 10,000 round trips with the virtual counter
/// (CNTVCT_EL0) and prints `ktest: ipc N round trips in T counter ticks`. Under
/// `-icount shift=0` QEMU's virtual clock advances 2^0 = 1 ns per instruction executed, so the
/// virtual CPU runs exactly 1 instruction per ns, deterministically, whatever the host's speed.
/// The counter runs at the frequency the boot log reports (`timer ... F Hz`; QEMU 7.2's virt
/// board: 62,500,000 Hz, one tick = 16 ns = 16 instructions), so
/// `instructions = T × 1e9 / F` and per round trip `T × 1e9 / F / N`. The counter's resolution
/// is one tick (16 instructions); over 10,000 round trips that is below 0.01 instructions.
fn ipc_call_reply(bench: &mut Bench) -> Result<Outcome> {
    let image = bench.ktest_image()?;
    let captured = bench.boot(&image, &["-icount", "shift=0"], &[], None)?;
    let measured = ipc_measurement(&captured.log).with_context(|| {
        format!(
            "reading the IPC measurement off the console ({:?}):\n{}",
            captured.ending, captured.log
        )
    })?;
    println!(
        "counter {} Hz ({} instructions per tick with -icount shift=0); {} round trips in {} ticks",
        measured.frequency_hz,
        1e9 / measured.frequency_hz,
        measured.round_trips,
        measured.ticks
    );
    Ok(Outcome::Values(vec![(
        "ipc_call_reply_instructions".into(),
        round(measured.instructions_per_round_trip(), 1),
    )]))
}

/// Wall-clock time from starting QEMU to the kernel's `moat: ready` line, as a Realm under
/// realm-sim (`realm_boot_to_ready_ms`; it includes realm-sim copying and measuring the Image and the
/// kernel's RIPAS RAM pass over all 512 MiB) and as the plain guest (`plain_boot_to_ready_ms`). The
/// kernel prints no timestamps, so this is xtask's clock at the moment the line arrives: QEMU
/// start-up included, TCG speed, host load matters. The default system is booted, or the kernel
/// test system while the default system has no task.
fn boot_to_ready(bench: &mut Bench) -> Result<Outcome> {
    let image = if bench.default_tasks > 0 {
        bench.image.clone()
    } else {
        bench.ktest_image()?
    };
    let realm_sim = workspace::build_realm_sim(&bench.workspace)?;
    let ram_file = bench.workspace.output_dir().join("bench-realm-ram.bin");
    workspace::remove_if_present(&ram_file)?;
    let realm = qemu::Mode::Realm(qemu::Realm {
        realm_sim,
        ram_file: ram_file.clone(),
        stress_host: false,
    });
    let mut values = Vec::new();
    for (name, mode) in [
        ("realm_boot_to_ready_ms", realm),
        ("plain_boot_to_ready_ms", qemu::Mode::Plain { el2: false }),
    ] {
        let captured = bench.boot_in(mode, &image, &[], &[], Some("moat: ready"))?;
        let Some(ready) = captured.awaited_after else {
            bail!(
                "{name}: no `moat: ready` ({:?}); console:\n{}",
                captured.ending,
                captured.log
            );
        };
        values.push((name.to_string(), round(ready.as_secs_f64() * 1000.0, 0)));
    }
    workspace::remove_if_present(&ram_file)?;
    Ok(Outcome::Values(values))
}

/// What the kernel test system's IPC measurement printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IpcMeasurement {
    /// The virtual counter's frequency (`timer ... F Hz`).
    pub frequency_hz: f64,
    /// Round trips timed.
    pub round_trips: f64,
    /// Counter ticks they took.
    pub ticks: f64,
}

impl IpcMeasurement {
    /// Instructions per round trip under `-icount shift=0` (1 instruction per ns):
    /// `ticks × 1e9 / frequency / round_trips`.
    pub fn instructions_per_round_trip(&self) -> f64 {
        self.ticks * 1e9 / self.frequency_hz / self.round_trips
    }
}

/// Reads the counter frequency (the boot log's `timer ... F Hz` device line) and
/// `ktest: ipc N round trips in T counter ticks` off a console log.
pub fn ipc_measurement(log: &str) -> Result<IpcMeasurement> {
    let frequency_hz = log
        .lines()
        .find(|line| line.trim_start().starts_with("timer ") && line.contains(" Hz"))
        .and_then(|line| number_on_line(line, " Hz"))
        .filter(|hz| *hz > 0.0)
        .context("no `timer ... <frequency> Hz` line")?;
    let line = log
        .lines()
        .find(|line| line.contains("ktest: ipc ") && line.contains("counter ticks"))
        .context("no `ktest: ipc N round trips in T counter ticks` line")?;
    let round_trips = number_on_line(line, "round trips")
        .filter(|n| *n > 0.0)
        .with_context(|| format!("no round-trip count on {line:?}"))?;
    let ticks = number_on_line(line, "counter ticks")
        .with_context(|| format!("no tick count on {line:?}"))?;
    Ok(IpcMeasurement {
        frequency_hz,
        round_trips,
        ticks,
    })
}

/// What the console says at `moat: ready`.
#[derive(Debug, PartialEq)]
pub enum ReadyLine {
    /// No such line.
    Missing,
    /// The line, without a `<number> KiB` figure.
    WithoutFigure(String),
    /// The figure.
    KiB(f64),
}

/// Reads the memory in use off the `moat: ready` console line: the number before `KiB`.
pub fn ready_ram_kib(log: &str) -> ReadyLine {
    let Some(line) = log.lines().find(|line| line.contains("moat: ready")) else {
        return ReadyLine::Missing;
    };
    match number_on_line(line, "KiB") {
        Some(kib) => ReadyLine::KiB(kib),
        None => ReadyLine::WithoutFigure(line.trim().to_string()),
    }
}

// ---- Parsers ----

/// The number right before `unit` on `line` (`"... 1234 KiB ..."`, `"1234KiB"`).
pub fn number_on_line(line: &str, unit: &str) -> Option<f64> {
    let before = &line[..line.find(unit)?];
    let before = before.trim_end();
    let start = before
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_' || c == ','))
        .map_or(0, |at| at + 1);
    before[start..].replace(['_', ','], "").parse().ok()
}

/// The first decimal number in `text`.
fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Lines `moat-bench: NAME = NUMBER` that a benchmark prints to report a figure criterion does
/// not measure (ratios, sizes). NAME must be a valid result name.
pub fn result_lines(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("moat-bench:"))
        .filter_map(|rest| rest.split_once('='))
        .filter_map(|(name, value)| {
            let name = name.trim();
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value: f64 = value.trim().parse().ok()?;
            (valid && value.is_finite()).then(|| (name.to_string(), value))
        })
        .collect()
}

/// A criterion id as a result name: `dma_map_unmap/pool_4KiB/4MiB` → `dma_map_unmap_pool_4KiB_4MiB`.
pub fn metric_name(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while name.contains("__") {
        name = name.replace("__", "_");
    }
    name.trim_matches('_').to_string()
}

/// Criterion's median for one benchmark, from its `new/benchmark.json` (the id) and
/// `new/estimates.json` (the estimate, in ns).
pub fn criterion_median(benchmark_json: &str, estimates_json: &str) -> Result<(String, f64)> {
    let benchmark: serde_json::Value =
        serde_json::from_str(benchmark_json).context("benchmark.json is not JSON")?;
    let estimates: serde_json::Value =
        serde_json::from_str(estimates_json).context("estimates.json is not JSON")?;
    let id = benchmark["full_id"]
        .as_str()
        .context("benchmark.json has no full_id")?
        .to_string();
    let median = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median.point_estimate")?;
    Ok((id, median))
}

/// Every criterion result under `home` written at or after `since` (this run's), by id.
pub fn criterion_medians(home: &Path, since: SystemTime) -> Result<BTreeMap<String, f64>> {
    let mut medians = BTreeMap::new();
    let mut directories = vec![home.to_path_buf()];
    while let Some(directory) = directories.pop() {
        let Ok(entries) = fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let estimates = path.join("estimates.json");
            if path.file_name().is_some_and(|n| n == "new") && estimates.is_file() {
                let fresh = fs::metadata(&estimates)
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| modified >= since);
                if fresh {
                    let (id, median) = criterion_median(
                        &fs::read_to_string(path.join("benchmark.json"))?,
                        &fs::read_to_string(&estimates)?,
                    )
                    .with_context(|| format!("reading {}", path.display()))?;
                    medians.insert(id, median);
                }
            } else {
                directories.push(path);
            }
        }
    }
    Ok(medians)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The results as one flat JSON object, names sorted.
pub fn results_json(results: &[(String, f64)]) -> String {
    let object: BTreeMap<&str, f64> = results
        .iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(name, value)| (name.as_str(), *value))
        .collect();
    let mut text = serde_json::to_string_pretty(&object).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// The printed table.
pub fn table(results: &[(String, f64)], notes: &[(String, String)]) -> String {
    let width = results
        .iter()
        .map(|(name, _)| name.len())
        .chain(notes.iter().map(|(label, _)| label.len()))
        .max()
        .unwrap_or(0)
        .max("name".len());
    let mut text = format!("{:<width$}  value\n", "name");
    text.push_str(&format!("{}  {}\n", "-".repeat(width), "-".repeat(12)));
    for (name, value) in results {
        text.push_str(&format!("{name:<width$}  {value}\n"));
    }
    for (label, note) in notes {
        text.push_str(&format!("{label:<width$}  {note}\n"));
    }
    text
}

/// `cargo xtask bench`. Returns true when no measurement failed.
pub fn run(options: BenchOptions) -> Result<bool> {
    let workspace = Workspace::locate()?;
    let image = workspace::build_kernel(&workspace)?;
    let default_tasks = system::load_manifest(&SystemPaths::default_system(&workspace))?
        .tasks
        .len();
    let mut bench = Bench {
        workspace,
        image,
        default_tasks,
        ktest_image: None,
        options,
    };
    let mut results: Vec<(String, f64)> = Vec::new();
    let mut notes: Vec<(String, String)> = Vec::new();
    let mut failed = 0;
    for measurement in MEASUREMENTS {
        println!("==== bench: {} ====", measurement.label);
        match (measurement.run)(&mut bench) {
            Ok(Outcome::Values(values)) => {
                for (name, value) in values {
                    if let Some(slot) = results.iter_mut().find(|(n, _)| *n == name) {
                        slot.1 = value;
                    } else {
                        results.push((name, value));
                    }
                }
            }
            Ok(Outcome::Skipped(why)) => {
                notes.push((measurement.label.to_string(), format!("skipped: {why}")));
            }
            Err(error) => {
                failed += 1;
                notes.push((measurement.label.to_string(), format!("FAILED: {error:#}")));
            }
        }
    }
    let directory = bench.workspace.target_dir.join("bench");
    fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
    let path = directory.join("results.json");
    fs::write(&path, results_json(&results))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("==== bench results ====");
    print!("{}", table(&results, &notes));
    println!("written to {}", path.display());
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_medians() {
        let benchmark = r#"{"group_id":"dma_map_unmap","function_id":"server_4KiB","value_str":"4MiB","throughput":null,"full_id":"dma_map_unmap/server_4KiB/4MiB","directory_name":"dma_map_unmap/server_4KiB/4MiB","title":"dma_map_unmap/server_4KiB/4MiB"}"#;
        let estimates = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":40.1,"upper_bound":41.0},"point_estimate":40.5,"standard_error":0.2},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":39.0,"upper_bound":39.9},"point_estimate":39.5,"standard_error":0.2},"median_abs_dev":null,"slope":null,"std_dev":null}"#;
        assert_eq!(
            criterion_median(benchmark, estimates).unwrap(),
            ("dma_map_unmap/server_4KiB/4MiB".to_string(), 39.5)
        );
        assert!(criterion_median("{}", estimates).is_err());
        assert!(criterion_median(benchmark, "{\"mean\":{}}").is_err());
    }

    #[test]
    fn finds_this_runs_criterion_results_only() {
        let home = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let write = |id: &str, median: f64| {
            let new = home.join(id).join("new");
            fs::create_dir_all(&new).unwrap();
            fs::write(
                new.join("benchmark.json"),
                format!(r#"{{"full_id":"{id}"}}"#),
            )
            .unwrap();
            fs::write(
                new.join("estimates.json"),
                format!(r#"{{"median":{{"point_estimate":{median}}}}}"#),
            )
            .unwrap();
            // criterion's previous run sits beside it and is ignored.
            let base = home.join(id).join("base");
            fs::create_dir_all(&base).unwrap();
            fs::write(base.join("estimates.json"), "not read").unwrap();
        };
        write("old/x", 1.0);
        let since = SystemTime::now() + Duration::from_millis(0);
        std::thread::sleep(Duration::from_millis(20));
        let since = since.max(
            fs::metadata(home.join("old/x/new/estimates.json"))
                .unwrap()
                .modified()
                .unwrap()
                + Duration::from_millis(1),
        );
        write("g/a/4MiB", 10.0);
        write("g/a/256MiB", 11.0);
        let medians = criterion_medians(&home, since).unwrap();
        fs::remove_dir_all(&home).unwrap();
        assert_eq!(
            medians.into_iter().collect::<Vec<_>>(),
            vec![
                ("g/a/256MiB".to_string(), 11.0),
                ("g/a/4MiB".to_string(), 10.0)
            ]
        );
    }

    #[test]
    fn names_the_dma_results() {
        let medians: BTreeMap<String, f64> = [
            ("dma_map_unmap/server_4KiB/4MiB", 50.0),
            ("dma_map_unmap/server_4KiB/256MiB", 55.0),
            ("dma_map_unmap/pool_4KiB/4MiB", 20.04),
        ]
        .into_iter()
        .map(|(id, ns)| (id.to_string(), ns))
        .collect();
        let stdout = "dma_pool_metadata_bytes_per_MiB (4MiB pool, 2048 B slots): 96.5 (SWIOTLB: 12288; target <= 1229)\n\
                      dma_pool_metadata_bytes_per_MiB (256MiB pool, 2048 B slots): 80.0\n\
                      moat-bench: bounce_copy_ratio_64k = 0.91\n\
                      moat-bench: bad name = 3\n\
                      moat-bench: nan_value = NaN\n";
        let values = dma_results(stdout, &medians);
        let get = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("dma_map_unmap_ns"), Some(50.0));
        assert_eq!(get("dma_map_unmap_ns_256MiB"), Some(55.0));
        assert_eq!(get("dma_map_unmap_scaling"), Some(1.1));
        assert_eq!(get("dma_map_unmap_pool_4KiB_4MiB_ns"), Some(20.0));
        assert_eq!(get("dma_pool_metadata_bytes_per_MiB"), Some(96.5));
        assert_eq!(get("bounce_copy_ratio_64k"), Some(0.91));
        assert_eq!(get("nan_value"), None);
        assert_eq!(get("bad name"), None);
    }

    #[test]
    fn alternative_bench_ids_are_recognised() {
        let medians: BTreeMap<String, f64> = [("map_unmap/4MiB", 10.0), ("map_unmap/256MiB", 30.0)]
            .into_iter()
            .map(|(id, ns)| (id.to_string(), ns))
            .collect();
        let values = dma_results("", &medians);
        assert!(values.contains(&("dma_map_unmap_scaling".to_string(), 3.0)));
    }

    #[test]
    fn reads_figures_off_console_lines() {
        assert_eq!(ready_ram_kib("Moat\nno ready line\n"), ReadyLine::Missing);
        assert_eq!(
            ready_ram_kib("x\nmoat: ready\n"),
            ReadyLine::WithoutFigure("moat: ready".into())
        );
        assert_eq!(
            ready_ram_kib("moat: ready (5 tasks, 1_234 KiB in use)\n"),
            ReadyLine::KiB(1234.0)
        );
        assert_eq!(number_on_line("ram=2048KiB", "KiB"), Some(2048.0));
        assert_eq!(
            number_on_line("ipc: 1412.5 instructions", "instructions"),
            Some(1412.5)
        );
        assert_eq!(number_on_line("no number KiB", "KiB"), None);
    }

    #[test]
    fn reads_the_ipc_measurement() {
        let log = "  gic       GICv3\n  timer     EL1 virtual timer, INTID 27, 62500000 Hz, tick 100 Hz\n\
                   timer: 5 ticks by interrupt in 49 ms\n\
                   ktest: 1000 call/reply round trips\n\
                   ktest: ipc 10000 round trips in 3855176 counter ticks\n";
        let measured = ipc_measurement(log).unwrap();
        assert_eq!(
            measured,
            IpcMeasurement {
                frequency_hz: 62_500_000.0,
                round_trips: 10_000.0,
                ticks: 3_855_176.0
            }
        );
        // 16 instructions per tick at 62.5 MHz.
        assert!((measured.instructions_per_round_trip() - 6168.2816).abs() < 1e-6);
        assert!(ipc_measurement("ktest: ipc 10 round trips in 5 counter ticks\n").is_err());
        let no_result = log.replace(
            "ktest: ipc 10000 round trips in 3855176 counter ticks\n",
            "",
        );
        assert!(ipc_measurement(&no_result).is_err());
        let zero = log.replace("ipc 10000", "ipc 0");
        assert!(ipc_measurement(&zero).is_err());
    }

    #[test]
    fn metric_names_are_plain() {
        assert_eq!(
            metric_name("dma_map_unmap/pool_4KiB/4MiB"),
            "dma_map_unmap_pool_4KiB_4MiB"
        );
        assert_eq!(metric_name("a b//c-"), "a_b_c");
    }

    #[test]
    fn results_are_one_flat_json_object() {
        let json = results_json(&[
            ("image_KiB".into(), 812.5),
            ("dma_map_unmap_ns".into(), 41.0),
            ("broken".into(), f64::NAN),
        ]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 2);
        assert_eq!(object["image_KiB"], 812.5);
        assert_eq!(object["dma_map_unmap_ns"], 41.0);
    }

    #[test]
    fn the_table_shows_the_same_names() {
        let text = table(
            &[("image_KiB".into(), 812.5)],
            &[("ram".into(), "skipped: later".into())],
        );
        assert!(text.contains("image_KiB  812.5"), "{text}");
        assert!(text.contains("skipped: later"), "{text}");
    }
}

//! The system manifest `build/system.toml`: parsing, validation with errors that name the line,
//! and compilation into the kernel's [`SystemManifest`].
//!
//! The format is documented at the top of `build/system.toml` and in `docs/manifest.md`. In
//! short: `[[task]]` tables (in start order, the supervisor first) name a cargo package and
//! binary, a priority, a memory quota, a stack size, a restart policy and capabilities by name;
//! `[[endpoint]]` tables name the message queues. Devices are named symbolically
//! (`virtio:block:0`), never by address or IRQ number: the kernel resolves them at boot.
//!
//! Design: [`parse`] is a pure function from the file's text to a checked [`Manifest`] or a
//! list of [`Problem`]s, each with the line (and column) it is about, so every rule has a host
//! unit test. [`Manifest::compile`] then turns a checked manifest into the exact
//! [`SystemManifest`] the kernel reads; binary references are filled in later by
//! [`moat_kernel_core::system::build_archive`].

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use moat_kernel_core::platform::{MAX_VIRTIO_SLOTS, virtio_device_name};
use moat_kernel_core::system::{
    BinaryRef, CapSpec, DeviceName, EndpointSpec, NamedCap, RestartPolicy, SystemManifest, TaskSpec,
};
use serde::Deserialize;
use toml::Spanned;

/// Limits the manifest is checked against. They mirror what the kernel is built for; a manifest
/// outside them is refused at build time rather than at boot.
pub mod limits {
    /// Most tasks in one system.
    pub const MAX_TASKS: usize = 64;
    /// Most endpoints in one system.
    pub const MAX_ENDPOINTS: usize = 256;
    /// Lowest (least urgent) priority; 0 is the most urgent.
    pub const MAX_PRIORITY: i64 = 15;
    /// Page size: quotas and stacks are whole pages.
    pub const PAGE_KIB: i64 = 4;
    /// Smallest memory quota (image, stack, a few pages of heap).
    pub const MIN_MEMORY_KIB: i64 = 16;
    /// Largest memory quota of one task.
    pub const MAX_MEMORY_KIB: i64 = 256 * 1024;
    /// Default stack size.
    pub const DEFAULT_STACK_KIB: i64 = 16;
    /// Largest stack.
    pub const MAX_STACK_KIB: i64 = 1024;
    /// Largest endpoint queue depth.
    pub const MAX_DEPTH: i64 = 64;
    /// Default endpoint queue depth.
    pub const DEFAULT_DEPTH: i64 = 16;
    /// Default per-sender limit (capped at the depth).
    pub const DEFAULT_PER_SENDER: i64 = 4;
    /// Notification bits per task.
    pub const NOTIFICATION_BITS: i64 = 64;
    /// Most capabilities one task starts with.
    pub const MAX_CAPS_PER_TASK: usize = 64;
    /// Longest task or endpoint name.
    pub const MAX_NAME_LEN: usize = 32;
}

/// The one task that may hold the Share capability (DESIGN.md 4, issue 4): the DMA server.
pub const SHARE_HOLDER: &str = "dma";

/// The supervisor's task name: when present it must be listed first and hold TaskControl.
pub const SUPERVISOR: &str = "supervisor";

/// The DMA server's part of the manifest: client quotas (`dma-quota-kib`), roles (`dma-role`)
/// and the endpoints whose badges carry them (see `moat_dma_api::badge` and docs/dma.md).
pub mod dma {
    /// The DMA server's client endpoint.
    pub const ENDPOINT: &str = moat_dma_api::config::CLIENT_ENDPOINT;
    /// The supervisor's endpoint to the DMA server (only the supervisor may call it).
    pub const ADMIN_ENDPOINT: &str = moat_dma_api::config::ADMIN_ENDPOINT;
    /// The kernel's shareable region (`SHAREABLE_SIZE` in kernel/src/main.rs, with 256 MiB of
    /// RAM or more): every window comes from it, so the quotas of a system must fit in it.
    pub const SHAREABLE_KIB: i64 = 32 * 1024;
    /// Smallest quota: one page.
    pub const MIN_QUOTA_KIB: i64 = 4;
    /// What the DMA server needs besides its clients' windows (image, stack, 256 KiB heap):
    /// windows are charged to its memory quota, so `memory-kib` must exceed the quotas' sum by
    /// this much.
    pub const SERVER_OVERHEAD_KIB: i64 = 512;
    /// Most clients with a quota (the configuration must fit the task configuration blob).
    pub const MAX_CLIENTS: usize = moat_dma_api::config::MAX_CLIENTS;
}

/// How the DMA server treats a task's calls (`dma-role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmaRole {
    /// A driver: its own window, grants and figures (the default).
    #[default]
    Client,
    /// A monitoring tool (dmastat): every client's figures and events.
    Observer,
}

/// One thing wrong with a manifest, at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a manifest was refused: every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// How the file is named in messages (`build/system.toml`).
    pub file: String,
    /// The problems, sorted by line.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(
                formatter,
                "{}:{}:{}: {}",
                self.file, problem.line, problem.column, problem.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// A restart policy as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `restart = "never"` (the default).
    Never,
    /// `restart = { max-restarts = N }`.
    Restart(u32),
}

/// An IRQ a task receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    /// The device, as written (`virtio:block:0`).
    pub device: String,
    /// Its resolved form.
    pub resolved: DeviceName,
    /// Notification bit it arrives on.
    pub bit: u8,
}

/// A checked task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unique name.
    pub name: String,
    /// Cargo package that builds its binary.
    pub package: String,
    /// Binary name in that package.
    pub bin: String,
    /// 0 = most urgent.
    pub priority: u8,
    /// Memory quota in pages.
    pub memory_pages: u32,
    /// Stack in pages.
    pub stack_pages: u32,
    /// Restart policy.
    pub restart: Restart,
    /// Indices of endpoints served.
    pub serve: Vec<usize>,
    /// Indices of endpoints called.
    pub call: Vec<usize>,
    /// MMIO regions, as written and resolved.
    pub mmio: Vec<(String, DeviceName)>,
    /// IRQs.
    pub irq: Vec<Irq>,
    /// Holds Share.
    pub share: bool,
    /// Holds TaskControl.
    pub task_control: bool,
    /// Holds ConsoleInput (`console-input = true`): reads what is typed on the console.
    pub console_input: bool,
    /// `dma-quota-kib`: the size of its DMA window, if it is a DMA client.
    pub dma_quota_kib: Option<u32>,
    /// `dma-role`: the role its `call:dma` badge carries.
    pub dma_role: DmaRole,
}

/// A checked endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Unique name.
    pub name: String,
    /// Queue depth.
    pub depth: u16,
    /// Per-sender limit.
    pub per_sender: u16,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Tasks in start order.
    pub tasks: Vec<Task>,
    /// Endpoints in file order.
    pub endpoints: Vec<Endpoint>,
}

// ---- The file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    task: Vec<RawTask>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTask {
    name: Spanned<String>,
    package: Spanned<String>,
    bin: Option<Spanned<String>>,
    priority: Spanned<i64>,
    memory_kib: Spanned<i64>,
    stack_kib: Option<Spanned<i64>>,
    restart: Option<Spanned<toml::Value>>,
    #[serde(default)]
    serve: Vec<Spanned<String>>,
    #[serde(default)]
    call: Vec<Spanned<String>>,
    #[serde(default)]
    mmio: Vec<Spanned<String>>,
    #[serde(default)]
    irq: Vec<Spanned<RawIrq>>,
    share: Option<Spanned<bool>>,
    task_control: Option<Spanned<bool>>,
    console_input: Option<Spanned<bool>>,
    dma_quota_kib: Option<Spanned<i64>>,
    dma_role: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIrq {
    device: Spanned<String>,
    bit: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEndpoint {
    name: Spanned<String>,
    depth: Option<Spanned<i64>>,
    per_sender: Option<Spanned<i64>>,
}

/// Collects problems with their positions.
struct Problems<'a> {
    source: &'a str,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_and_column(self.source, span.start);
        self.found.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }
}

/// 1-based line and column of byte `offset` in `source`.
pub fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses a symbolic device name: `virtio:<type>:<instance>`, the type by its VirtIO name
/// (`network`, `block`, `console`, `entropy`, ...), the instance counted from 0 in slot order.
pub fn parse_device(name: &str) -> Result<DeviceName, String> {
    if let Some(rest) = name.strip_prefix("dt:") {
        // `dt:<compatible>:<instance>`; compatible strings contain commas but never colons.
        let (compatible, instance) = rest.rsplit_once(':').ok_or_else(|| {
            format!("bad device name `{name}`: expected `dt:<compatible>:<instance>`, e.g. `dt:arm,pl031:0`")
        })?;
        let valid = !compatible.is_empty()
            && compatible.len() <= 64
            && compatible
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ",-._+".contains(c));
        if !valid {
            return Err(format!(
                "bad device name `{name}`: `{compatible}` is not a compatible string"
            ));
        }
        let instance = match instance.parse::<u16>() {
            Ok(n) if n < 64 && !instance.starts_with('+') => n,
            _ => {
                return Err(format!(
                    "bad device name `{name}`: instance `{instance}` is not a number below 64"
                ));
            }
        };
        return Ok(DeviceName::Compatible {
            compatible: compatible.to_string(),
            instance,
        });
    }
    let mut parts = name.split(':');
    let (Some(bus), Some(kind), Some(instance), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "bad device name `{name}`: expected `virtio:<type>:<instance>`, e.g. `virtio:block:0`"
        ));
    };
    if bus != "virtio" {
        return Err(format!(
            "bad device name `{name}`: unknown bus `{bus}` (known: `virtio`, `dt`)"
        ));
    }
    let Some(device_id) = virtio_device_id(kind) else {
        return Err(format!(
            "bad device name `{name}`: unknown VirtIO device type `{kind}` (known: {})",
            virtio_type_names().join(", ")
        ));
    };
    let instance = match instance.parse::<u16>() {
        Ok(n) if usize::from(n) < MAX_VIRTIO_SLOTS && !instance.starts_with('+') => n,
        _ => {
            return Err(format!(
                "bad device name `{name}`: instance `{instance}` is not a number below {MAX_VIRTIO_SLOTS}"
            ));
        }
    };
    Ok(DeviceName::Virtio {
        device_id,
        instance,
    })
}

/// The VirtIO device types the kernel has names for, as (id, name).
fn virtio_types() -> impl Iterator<Item = (u32, &'static str)> {
    (1..64u32)
        .map(|id| (id, virtio_device_name(id)))
        .filter(|(_, name)| *name != "unknown" && *name != "none")
}

fn virtio_device_id(kind: &str) -> Option<u32> {
    virtio_types()
        .find(|(_, name)| *name == kind)
        .map(|(id, _)| id)
}

fn virtio_type_names() -> Vec<&'static str> {
    virtio_types().map(|(_, name)| name).collect()
}

fn check_name(problems: &mut Problems<'_>, what: &str, name: &Spanned<String>) {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= limits::MAX_NAME_LEN
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && text.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        problems.at(
            name.span(),
            format!(
                "bad {what} name `{text}`: use 1 to {} characters a-z, 0-9, `-` or `_`, \
                 starting with a letter",
                limits::MAX_NAME_LEN
            ),
        );
    }
}

/// Checks `value` is in `range` (inclusive) and, if `multiple` > 1, a multiple of it.
fn check_int(
    problems: &mut Problems<'_>,
    what: &str,
    value: &Spanned<i64>,
    range: std::ops::RangeInclusive<i64>,
    multiple: i64,
) -> Option<i64> {
    let v = *value.get_ref();
    if !range.contains(&v) {
        problems.at(
            value.span(),
            format!(
                "{what} {v} is out of range ({} to {})",
                range.start(),
                range.end()
            ),
        );
        return None;
    }
    if multiple > 1 && v % multiple != 0 {
        problems.at(
            value.span(),
            format!("{what} {v} is not a multiple of {multiple} (whole 4 KiB pages)"),
        );
        return None;
    }
    Some(v)
}

fn parse_restart(problems: &mut Problems<'_>, value: &Spanned<toml::Value>) -> Restart {
    let bad = "`restart` must be \"never\" or { max-restarts = N } with N from 1 to 1000000";
    match value.get_ref() {
        toml::Value::String(text) if text == "never" => Restart::Never,
        toml::Value::Table(table) => {
            let max = table.get("max-restarts").and_then(toml::Value::as_integer);
            match max {
                Some(n @ 1..=1_000_000) if table.len() == 1 => Restart::Restart(n as u32),
                _ => {
                    problems.at(value.span(), bad);
                    Restart::Never
                }
            }
        }
        _ => {
            problems.at(value.span(), bad);
            Restart::Never
        }
    }
}

/// Parses and checks the manifest text. `file` names it in messages.
pub fn parse(source: &str, file: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(source).map_err(|error| {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_and_column(source, span.start));
        ManifestError {
            file: file.to_string(),
            problems: vec![Problem {
                line,
                column,
                message: error
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            }],
        }
    })?;
    let mut problems = Problems {
        source,
        found: Vec::new(),
    };
    let manifest = check(&raw, &mut problems);
    if problems.found.is_empty() {
        Ok(manifest)
    } else {
        let mut found = problems.found;
        found.sort_by_key(|p| (p.line, p.column));
        Err(ManifestError {
            file: file.to_string(),
            problems: found,
        })
    }
}

fn check(raw: &RawManifest, problems: &mut Problems<'_>) -> Manifest {
    // Endpoints first, so tasks can refer to them.
    let mut endpoints = Vec::new();
    let mut endpoint_index: HashMap<&str, usize> = HashMap::new();
    if raw.endpoint.len() > limits::MAX_ENDPOINTS {
        problems.at(
            raw.endpoint[limits::MAX_ENDPOINTS].name.span(),
            format!("more than {} endpoints", limits::MAX_ENDPOINTS),
        );
    }
    for endpoint in &raw.endpoint {
        check_name(problems, "endpoint", &endpoint.name);
        let name = endpoint.name.get_ref().as_str();
        if endpoint_index.contains_key(name) {
            problems.at(
                endpoint.name.span(),
                format!("duplicate endpoint name `{name}`"),
            );
        } else {
            endpoint_index.insert(name, endpoints.len());
        }
        let depth = match &endpoint.depth {
            Some(depth) => check_int(problems, "depth", depth, 1..=limits::MAX_DEPTH, 1),
            None => Some(limits::DEFAULT_DEPTH),
        }
        .unwrap_or(limits::DEFAULT_DEPTH);
        let per_sender = match &endpoint.per_sender {
            Some(limit) => check_int(problems, "per-sender limit", limit, 1..=depth, 1),
            None => Some(limits::DEFAULT_PER_SENDER.min(depth)),
        }
        .unwrap_or(1);
        endpoints.push(Endpoint {
            name: name.to_string(),
            depth: depth as u16,
            per_sender: per_sender as u16,
        });
    }

    let mut tasks = Vec::new();
    let mut task_names: HashMap<&str, ()> = HashMap::new();
    // Endpoint index -> index of the task that serves it.
    let mut servers: HashMap<usize, usize> = HashMap::new();
    // Device -> task name, per kind of capability.
    // (DeviceName has no Hash; systems are small.)
    let mut irq_owners: Vec<(DeviceName, String)> = Vec::new();
    let mut mmio_owners: Vec<(DeviceName, String)> = Vec::new();
    let mut share_holder: Option<String> = None;
    let mut console_input_holder: Option<String> = None;
    // Where the first `console-input = true` is, for the task table check below.
    let mut console_input_span: Option<std::ops::Range<usize>> = None;
    let mut dma_total_kib = 0i64;
    let mut dma_clients = 0usize;

    if raw.task.len() > limits::MAX_TASKS {
        problems.at(
            raw.task[limits::MAX_TASKS].name.span(),
            format!("more than {} tasks", limits::MAX_TASKS),
        );
    }
    for (index, task) in raw.task.iter().enumerate() {
        check_name(problems, "task", &task.name);
        let name = task.name.get_ref().as_str();
        if task_names.insert(name, ()).is_some() {
            problems.at(task.name.span(), format!("duplicate task name `{name}`"));
        }
        if name == SUPERVISOR && index != 0 {
            problems.at(
                task.name.span(),
                "the supervisor must be the first task listed (it starts first)",
            );
        }
        if task.package.get_ref().trim().is_empty() {
            problems.at(task.package.span(), "`package` is empty");
        }
        let bin = task
            .bin
            .as_ref()
            .map_or_else(|| task.package.get_ref().clone(), |b| b.get_ref().clone());
        if let Some(b) = task.bin.as_ref().filter(|_| bin.trim().is_empty()) {
            problems.at(b.span(), "`bin` is empty");
        }
        let priority = check_int(
            problems,
            "priority",
            &task.priority,
            0..=limits::MAX_PRIORITY,
            1,
        )
        .unwrap_or(0);
        let memory_kib = check_int(
            problems,
            "memory-kib",
            &task.memory_kib,
            limits::MIN_MEMORY_KIB..=limits::MAX_MEMORY_KIB,
            limits::PAGE_KIB,
        );
        let stack_kib = match &task.stack_kib {
            Some(stack) => check_int(
                problems,
                "stack-kib",
                stack,
                limits::PAGE_KIB..=limits::MAX_STACK_KIB,
                limits::PAGE_KIB,
            ),
            None => Some(limits::DEFAULT_STACK_KIB),
        };
        if let (Some(memory), Some(stack)) = (memory_kib, stack_kib)
            && stack >= memory
        {
            let span = task
                .stack_kib
                .as_ref()
                .map_or(task.memory_kib.span(), Spanned::span);
            problems.at(
                span,
                format!(
                    "stack ({stack} KiB) does not fit in the memory quota ({memory} KiB) \
                     with room for the image"
                ),
            );
        }
        let restart = task
            .restart
            .as_ref()
            .map_or(Restart::Never, |value| parse_restart(problems, value));

        let mut serve = Vec::new();
        for entry in &task.serve {
            let endpoint = entry.get_ref();
            match endpoint_index.get(endpoint.as_str()) {
                None => problems.at(
                    entry.span(),
                    format!("task `{name}` serves unknown endpoint `{endpoint}`"),
                ),
                Some(&e) if serve.contains(&e) => problems.at(
                    entry.span(),
                    format!("task `{name}` lists endpoint `{endpoint}` twice in `serve`"),
                ),
                Some(&e) => {
                    if let Some(&other) = servers.get(&e) {
                        let other: &RawTask = &raw.task[other];
                        problems.at(
                            entry.span(),
                            format!(
                                "endpoint `{endpoint}` is served twice: by `{}` and by `{name}`",
                                other.name.get_ref()
                            ),
                        );
                    } else {
                        servers.insert(e, index);
                    }
                    serve.push(e);
                }
            }
        }
        let mut call = Vec::new();
        for entry in &task.call {
            let endpoint = entry.get_ref();
            match endpoint_index.get(endpoint.as_str()) {
                None => problems.at(
                    entry.span(),
                    format!("task `{name}` calls unknown endpoint `{endpoint}`"),
                ),
                Some(&e) if call.contains(&e) => problems.at(
                    entry.span(),
                    format!("task `{name}` lists endpoint `{endpoint}` twice in `call`"),
                ),
                Some(&e) if serve.contains(&e) => problems.at(
                    entry.span(),
                    format!("task `{name}` calls endpoint `{endpoint}`, which it serves itself"),
                ),
                Some(&e) => call.push(e),
            }
        }
        let mut mmio = Vec::new();
        for entry in &task.mmio {
            match parse_device(entry.get_ref()) {
                Err(message) => problems.at(entry.span(), message),
                Ok(device) => {
                    if let Some((_, owner)) = mmio_owners.iter().find(|(d, _)| *d == device) {
                        problems.at(
                            entry.span(),
                            format!(
                                "the MMIO region of `{}` is given twice: to `{owner}` and to \
                                 `{name}` (one driver per device)",
                                entry.get_ref()
                            ),
                        );
                    } else {
                        mmio_owners.push((device.clone(), name.to_string()));
                        mmio.push((entry.get_ref().clone(), device));
                    }
                }
            }
        }
        let mut irq: Vec<Irq> = Vec::new();
        for entry in &task.irq {
            let raw_irq = entry.get_ref();
            let bit = check_int(
                problems,
                "notification bit",
                &raw_irq.bit,
                0..=limits::NOTIFICATION_BITS - 1,
                1,
            );
            let device = parse_device(raw_irq.device.get_ref());
            let (Some(bit), Ok(device)) = (
                bit,
                device.map_err(|m| problems.at(raw_irq.device.span(), m)),
            ) else {
                continue;
            };
            if let Some((_, owner)) = irq_owners.iter().find(|(d, _)| *d == device) {
                problems.at(
                    raw_irq.device.span(),
                    format!(
                        "the IRQ of `{}` has two owners: `{owner}` and `{name}`",
                        raw_irq.device.get_ref()
                    ),
                );
                continue;
            }
            if let Some(other) = irq.iter().find(|i| i64::from(i.bit) == bit) {
                problems.at(
                    raw_irq.bit.span(),
                    format!(
                        "task `{name}` uses notification bit {bit} for two IRQs (`{}` and `{}`)",
                        other.device,
                        raw_irq.device.get_ref()
                    ),
                );
                continue;
            }
            irq_owners.push((device.clone(), name.to_string()));
            irq.push(Irq {
                device: raw_irq.device.get_ref().clone(),
                resolved: device,
                bit: bit as u8,
            });
        }
        let share = task.share.as_ref().is_some_and(|s| *s.get_ref());
        if share {
            let span = task.share.as_ref().map_or(0..0, Spanned::span);
            if let Some(holder) = &share_holder {
                problems.at(
                    span.clone(),
                    format!(
                        "more than one holder of Share: `{holder}` and `{name}` (only the DMA \
                         server, task `{SHARE_HOLDER}`, may hold it)"
                    ),
                );
            } else {
                share_holder = Some(name.to_string());
            }
            if name != SHARE_HOLDER {
                problems.at(
                    span,
                    format!(
                        "task `{name}` may not hold Share: only the DMA server (the task named \
                         `{SHARE_HOLDER}`) may make memory shared with the host"
                    ),
                );
            }
        }
        let console_input = task.console_input.as_ref().is_some_and(|c| *c.get_ref());
        if console_input {
            let span = task.console_input.as_ref().map_or(0..0, Spanned::span);
            if let Some(holder) = &console_input_holder {
                problems.at(
                    span.clone(),
                    format!(
                        "more than one holder of ConsoleInput: `{holder}` and `{name}` (one task \
                         reads the console)"
                    ),
                );
            } else {
                console_input_holder = Some(name.to_string());
                console_input_span = Some(span.clone());
            }
            if task.serve.iter().any(|e| e.get_ref() == dma::ENDPOINT) {
                problems.at(
                    span,
                    format!(
                        "task `{name}` serves `{}` and may not hold ConsoleInput (both use the \
                         task configuration)",
                        dma::ENDPOINT
                    ),
                );
            }
        }
        let task_control = task.task_control.as_ref().is_some_and(|t| *t.get_ref());
        if name == SUPERVISOR && !task_control {
            problems.at(
                task.name.span(),
                "the supervisor must hold TaskControl (`task-control = true`)",
            );
        }
        let calls_dma = task
            .call
            .iter()
            .any(|entry| entry.get_ref() == dma::ENDPOINT);
        let dma_quota_kib = task.dma_quota_kib.as_ref().and_then(|quota| {
            let kib = check_int(
                problems,
                "dma-quota-kib",
                quota,
                dma::MIN_QUOTA_KIB..=dma::SHAREABLE_KIB,
                limits::PAGE_KIB,
            )?;
            if !calls_dma {
                problems.at(
                    quota.span(),
                    format!(
                        "task `{name}` has a DMA quota but does not call `{}` (add it to `call`)",
                        dma::ENDPOINT
                    ),
                );
                return None;
            }
            let before = dma_total_kib;
            dma_total_kib += kib;
            if before <= dma::SHAREABLE_KIB && dma_total_kib > dma::SHAREABLE_KIB {
                problems.at(
                    quota.span(),
                    format!(
                        "DMA quotas add up to {dma_total_kib} KiB here, more than the kernel's \
                         shareable region ({} KiB)",
                        dma::SHAREABLE_KIB
                    ),
                );
            }
            dma_clients += 1;
            if dma_clients == dma::MAX_CLIENTS + 1 {
                problems.at(
                    quota.span(),
                    format!("more than {} tasks with a DMA quota", dma::MAX_CLIENTS),
                );
            }
            Some(kib as u32)
        });
        let dma_role = match &task.dma_role {
            None => DmaRole::Client,
            Some(role) => {
                if !calls_dma {
                    problems.at(
                        role.span(),
                        format!(
                            "task `{name}` has a `dma-role` but does not call `{}`",
                            dma::ENDPOINT
                        ),
                    );
                }
                match role.get_ref().as_str() {
                    "client" => DmaRole::Client,
                    "observer" => DmaRole::Observer,
                    other => {
                        problems.at(
                            role.span(),
                            format!("`dma-role` must be \"client\" or \"observer\", not `{other}`"),
                        );
                        DmaRole::Client
                    }
                }
            }
        };
        if name != SUPERVISOR {
            for entry in task
                .call
                .iter()
                .filter(|e| e.get_ref() == dma::ADMIN_ENDPOINT)
            {
                problems.at(
                    entry.span(),
                    format!(
                        "task `{name}` may not call `{}`: only the supervisor revokes DMA clients",
                        dma::ADMIN_ENDPOINT
                    ),
                );
            }
        }
        let cap_count = serve.len()
            + call.len()
            + mmio.len()
            + irq.len()
            + usize::from(share)
            + usize::from(task_control)
            + usize::from(console_input);
        if cap_count > limits::MAX_CAPS_PER_TASK {
            problems.at(
                task.name.span(),
                format!(
                    "task `{name}` starts with {cap_count} capabilities (at most {})",
                    limits::MAX_CAPS_PER_TASK
                ),
            );
        }
        tasks.push(Task {
            name: name.to_string(),
            package: task.package.get_ref().clone(),
            bin,
            priority: priority as u8,
            memory_pages: (memory_kib.unwrap_or(0) / limits::PAGE_KIB) as u32,
            stack_pages: (stack_kib.unwrap_or(0) / limits::PAGE_KIB) as u32,
            restart,
            serve,
            call,
            mmio,
            irq,
            share,
            task_control,
            console_input,
            dma_quota_kib,
            dma_role,
        });
    }
    if let Some(span) = console_input_span {
        let table: usize = tasks
            .iter()
            .map(|task| task.name.len() + task.bin.len() + 2)
            .sum();
        if table > moat_abi::MAX_TASK_CONFIG {
            problems.at(
                span,
                format!(
                    "the task table for the console-input holder would be {table} bytes, more \
                     than the {} a task configuration holds (shorter task or binary names)",
                    moat_abi::MAX_TASK_CONFIG
                ),
            );
        }
    }
    check_dma_server(
        raw,
        &tasks,
        &endpoint_index,
        &servers,
        dma_total_kib,
        problems,
    );

    for (index, endpoint) in raw.endpoint.iter().enumerate() {
        let first = endpoint_index.get(endpoint.name.get_ref().as_str()) == Some(&index);
        if first && !servers.contains_key(&index) {
            problems.at(
                endpoint.name.span(),
                format!(
                    "endpoint `{}` is served by no task (add it to one task's `serve`)",
                    endpoint.name.get_ref()
                ),
            );
        }
    }
    Manifest { tasks, endpoints }
}

/// The DMA server's rules that span tasks: clients with quotas need the `dma` endpoint served by
/// the Share holder, whose memory quota holds every window; `dma-admin` is served by the same
/// task.
fn check_dma_server(
    raw: &RawManifest,
    tasks: &[Task],
    endpoint_index: &HashMap<&str, usize>,
    servers: &HashMap<usize, usize>,
    total_kib: i64,
    problems: &mut Problems<'_>,
) {
    let server_of = |endpoint: &str| {
        endpoint_index
            .get(endpoint)
            .map(|&e| (e, servers.get(&e).copied()))
    };
    let client_server = server_of(dma::ENDPOINT);
    if let Some((admin, Some(admin_server))) = server_of(dma::ADMIN_ENDPOINT)
        && client_server.and_then(|(_, server)| server) != Some(admin_server)
    {
        problems.at(
            raw.endpoint[admin].name.span(),
            format!(
                "endpoint `{}` must be served by the task that serves `{}` (the DMA server)",
                dma::ADMIN_ENDPOINT,
                dma::ENDPOINT
            ),
        );
    }
    let (Some((endpoint, Some(server))), true) = (client_server, total_kib > 0) else {
        return;
    };
    let (Some(task), Some(raw_task)) = (tasks.get(server), raw.task.get(server)) else {
        return;
    };
    if !task.share {
        problems.at(
            raw.endpoint[endpoint].name.span(),
            format!(
                "endpoint `{}` is served by `{}`, which does not hold Share: tasks with a DMA \
                 quota need the DMA server",
                dma::ENDPOINT,
                task.name
            ),
        );
    }
    let memory_kib = i64::from(task.memory_pages) * limits::PAGE_KIB;
    if memory_kib != 0 && memory_kib < total_kib + dma::SERVER_OVERHEAD_KIB {
        problems.at(
            raw_task.memory_kib.span(),
            format!(
                "the DMA server's memory-kib ({memory_kib}) must hold its clients' windows \
                 ({total_kib} KiB) plus {} KiB for itself",
                dma::SERVER_OVERHEAD_KIB
            ),
        );
    }
}

/// Capability names as the kernel hands them to tasks (name → slot table).
pub mod cap_names {
    /// `serve:<endpoint>`.
    pub fn serve(endpoint: &str) -> String {
        format!("serve:{endpoint}")
    }
    /// `call:<endpoint>`.
    pub fn call(endpoint: &str) -> String {
        format!("call:{endpoint}")
    }
    /// `mmio:<device>`.
    pub fn mmio(device: &str) -> String {
        format!("mmio:{device}")
    }
    /// `irq:<device>`.
    pub fn irq(device: &str) -> String {
        format!("irq:{device}")
    }
    /// `share`.
    pub const SHARE: &str = "share";
    /// `task-control`.
    pub const TASK_CONTROL: &str = "task-control";
    /// `console-input`.
    pub const CONSOLE_INPUT: &str = "console-input";
}

/// The badge the kernel stamps on messages sent through a task's `call` capabilities: the
/// caller's task index + 1, a stable identity (the manifest's, not the instance's) that survives
/// restarts. 0 is never a task's badge.
pub fn caller_badge(task_index: usize) -> u64 {
    task_index as u64 + 1
}

/// The badge of a task's capability to `endpoint`: the caller badge, with the DMA role bits for
/// the DMA server's endpoints (`moat_dma_api::badge`).
fn call_badge(task_index: usize, task: &Task, endpoint: &str) -> u64 {
    use moat_dma_api::protocol::{Role, badge};
    let identity = moat_dma_api::ClientIdentity(caller_badge(task_index) as u32);
    match endpoint {
        dma::ENDPOINT => badge::encode(
            identity,
            match task.dma_role {
                DmaRole::Client => Role::Client,
                DmaRole::Observer => Role::Observer,
            },
        ),
        dma::ADMIN_ENDPOINT => badge::encode(identity, Role::Supervisor),
        _ => caller_badge(task_index),
    }
}

impl Manifest {
    /// The DMA server's configuration: every task with a DMA quota, by identity (its caller
    /// badge), with the sum of the quotas as the budget.
    pub fn dma_config(&self) -> moat_dma_api::DmaConfig {
        let mut config = moat_dma_api::DmaConfig::default();
        for (index, task) in self.tasks.iter().enumerate() {
            if let Some(kib) = task.dma_quota_kib {
                // Cannot fail on a checked manifest (at most MAX_CLIENTS, names of 32).
                let _ = config.add_client(
                    moat_dma_api::ClientIdentity(caller_badge(index) as u32),
                    u64::from(kib) * 1024,
                    &task.name,
                );
            }
        }
        config
    }

    /// The DMA server's configuration blob (postcard), for the task that serves `dma`.
    pub fn dma_config_blob(&self) -> Vec<u8> {
        let mut buffer = vec![0u8; moat_abi::MAX_TASK_CONFIG];
        match self.dma_config().encode(&mut buffer) {
            Ok(used) => buffer.truncate(used),
            // A checked manifest always fits; an empty blob registers nobody.
            Err(_) => buffer.clear(),
        }
        buffer
    }

    /// The task table the ConsoleInput holder (the shell) gets as its configuration: one line
    /// per task in manifest order, `<name> <bin>\n` (so `ps` can name tasks and `kill` can
    /// find one by task or binary name). `parse` refuses a manifest whose table would not fit
    /// [`moat_abi::MAX_TASK_CONFIG`]; should one get here anyway, the blob is empty.
    pub fn task_table_blob(&self) -> Vec<u8> {
        let mut table = String::new();
        for task in &self.tasks {
            table.push_str(&task.name);
            table.push(' ');
            table.push_str(&task.bin);
            table.push('\n');
        }
        if table.len() > moat_abi::MAX_TASK_CONFIG {
            return Vec::new();
        }
        table.into_bytes()
    }

    /// True when there is nothing to pack (the kernel then embeds an empty archive).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The kernel's form. Binary references are zero until
    /// [`moat_kernel_core::system::build_archive`] fills them in. Capabilities are installed in
    /// this order: serve, call, mmio, irq (each in the order written), share, task-control,
    /// console-input.
    pub fn compile(&self) -> SystemManifest {
        let endpoints = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| EndpointSpec {
                name: endpoint.name.clone(),
                server: self
                    .tasks
                    .iter()
                    .position(|task| task.serve.contains(&index))
                    .unwrap_or(0) as u16,
                depth: endpoint.depth,
                per_sender: endpoint.per_sender,
            })
            .collect();
        let dma_server = self
            .endpoints
            .iter()
            .position(|endpoint| endpoint.name == dma::ENDPOINT)
            .and_then(|e| self.tasks.iter().position(|task| task.serve.contains(&e)));
        let tasks = self
            .tasks
            .iter()
            .enumerate()
            .map(|(index, task)| {
                let mut caps = Vec::new();
                for &e in &task.serve {
                    caps.push(NamedCap {
                        name: cap_names::serve(&self.endpoints[e].name),
                        cap: CapSpec::Serve { endpoint: e as u16 },
                    });
                }
                for &e in &task.call {
                    caps.push(NamedCap {
                        name: cap_names::call(&self.endpoints[e].name),
                        cap: CapSpec::Call {
                            endpoint: e as u16,
                            badge: call_badge(index, task, &self.endpoints[e].name),
                        },
                    });
                }
                for (written, device) in &task.mmio {
                    caps.push(NamedCap {
                        name: cap_names::mmio(written),
                        cap: CapSpec::Mmio {
                            device: device.clone(),
                        },
                    });
                }
                for irq in &task.irq {
                    caps.push(NamedCap {
                        name: cap_names::irq(&irq.device),
                        cap: CapSpec::Irq {
                            device: irq.resolved.clone(),
                            bit: irq.bit,
                        },
                    });
                }
                if task.share {
                    caps.push(NamedCap {
                        name: cap_names::SHARE.to_string(),
                        cap: CapSpec::Share,
                    });
                }
                if task.task_control {
                    caps.push(NamedCap {
                        name: cap_names::TASK_CONTROL.to_string(),
                        cap: CapSpec::TaskControl,
                    });
                }
                if task.console_input {
                    caps.push(NamedCap {
                        name: cap_names::CONSOLE_INPUT.to_string(),
                        cap: CapSpec::ConsoleInput,
                    });
                }
                TaskSpec {
                    name: task.name.clone(),
                    binary: BinaryRef { offset: 0, len: 0 },
                    priority: task.priority,
                    memory_pages: task.memory_pages,
                    stack_pages: task.stack_pages,
                    restart: match task.restart {
                        Restart::Never => RestartPolicy::Never,
                        Restart::Restart(max_restarts) => RestartPolicy::Restart { max_restarts },
                    },
                    caps,
                    config: if dma_server == Some(index) {
                        self.dma_config_blob()
                    } else if task.console_input {
                        self.task_table_blob()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        SystemManifest { tasks, endpoints }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid system used as the base of most tests.
    const GOOD: &str = r#"
[[task]]
name = "supervisor"
package = "moat-supervisor"
priority = 0
memory-kib = 256
task-control = true
serve = ["supervisor"]

[[task]]
name = "dma"
package = "moat-dma-server"
bin = "dma"
priority = 1
memory-kib = 8192
stack-kib = 32
restart = { max-restarts = 3 }
serve = ["dma"]
share = true

[[task]]
name = "blk"
package = "moat-virtio-blk"
priority = 2
memory-kib = 1024
restart = "never"
serve = ["blk"]
call = ["dma", "supervisor"]
mmio = ["virtio:block:0"]
irq = [{ device = "virtio:block:0", bit = 3 }]

[[endpoint]]
name = "supervisor"

[[endpoint]]
name = "dma"
depth = 32
per-sender = 8

[[endpoint]]
name = "blk"
depth = 2
"#;

    fn problems(source: &str) -> Vec<String> {
        match parse(source, "build/system.toml") {
            Ok(_) => panic!("accepted:\n{source}"),
            Err(error) => error.to_string().lines().map(String::from).collect(),
        }
    }

    /// Asserts the manifest is refused with exactly one problem, on `line`, whose message
    /// contains `what`.
    fn refused(source: &str, line: usize, what: &str) {
        let found = problems(source);
        assert_eq!(found.len(), 1, "{found:#?}");
        let prefix = format!("build/system.toml:{line}:");
        assert!(
            found[0].starts_with(&prefix) && found[0].contains(what),
            "wanted `{prefix}` and `{what}`, got: {}",
            found[0]
        );
    }

    /// Line of the first occurrence of `needle` (which may span lines) in `source`.
    fn line_of(source: &str, needle: &str) -> usize {
        let at = source
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in source"));
        line_and_column(source, at).0
    }

    #[test]
    fn a_good_manifest_compiles() {
        let manifest = parse(GOOD, "build/system.toml").expect("valid");
        let blk = &manifest.tasks[2];
        assert_eq!(blk.bin, "moat-virtio-blk", "bin defaults to the package");
        assert_eq!(blk.stack_pages, 4, "default stack is 16 KiB");
        assert_eq!(blk.memory_pages, 256);
        assert_eq!(manifest.tasks[1].restart, Restart::Restart(3));
        assert_eq!(manifest.endpoints[0].depth, 16, "default depth");
        assert_eq!(manifest.endpoints[0].per_sender, 4, "default per-sender");
        assert_eq!(
            manifest.endpoints[2].per_sender, 2,
            "per-sender default capped at depth"
        );

        let compiled = manifest.compile();
        assert_eq!(
            compiled.endpoints,
            vec![
                EndpointSpec {
                    name: "supervisor".into(),
                    server: 0,
                    depth: 16,
                    per_sender: 4
                },
                EndpointSpec {
                    name: "dma".into(),
                    server: 1,
                    depth: 32,
                    per_sender: 8
                },
                EndpointSpec {
                    name: "blk".into(),
                    server: 2,
                    depth: 2,
                    per_sender: 2
                },
            ]
        );
        let blk = &compiled.tasks[2];
        assert_eq!(blk.priority, 2);
        assert_eq!(blk.restart, RestartPolicy::Never);
        let block0 = DeviceName::Virtio {
            device_id: 2,
            instance: 0,
        };
        assert_eq!(
            blk.caps,
            vec![
                NamedCap {
                    name: "serve:blk".into(),
                    cap: CapSpec::Serve { endpoint: 2 }
                },
                NamedCap {
                    name: "call:dma".into(),
                    cap: CapSpec::Call {
                        endpoint: 1,
                        badge: 3
                    }
                },
                NamedCap {
                    name: "call:supervisor".into(),
                    cap: CapSpec::Call {
                        endpoint: 0,
                        badge: 3
                    }
                },
                NamedCap {
                    name: "mmio:virtio:block:0".into(),
                    cap: CapSpec::Mmio {
                        device: block0.clone()
                    }
                },
                NamedCap {
                    name: "irq:virtio:block:0".into(),
                    cap: CapSpec::Irq {
                        device: block0,
                        bit: 3
                    }
                },
            ]
        );
        assert_eq!(
            compiled.tasks[1].caps.last().map(|c| &c.cap),
            Some(&CapSpec::Share)
        );
        assert_eq!(
            compiled.tasks[0].caps.last().map(|c| &c.cap),
            Some(&CapSpec::TaskControl)
        );
        assert_eq!(
            compiled.tasks[1].restart,
            RestartPolicy::Restart { max_restarts: 3 }
        );
        assert_eq!(compiled.tasks[1].stack_pages, 8);
    }

    #[test]
    fn the_compiled_manifest_packs_into_an_archive_the_kernel_reads() {
        let mut compiled = parse(GOOD, "x").expect("valid").compile();
        let binaries: [&[u8]; 3] = [b"one", b"two", b"three"];
        let bytes =
            moat_kernel_core::system::build_archive(&mut compiled, &binaries).expect("packs");
        let archive = moat_kernel_core::system::SystemArchive::parse(&bytes).expect("parses");
        assert_eq!(archive.manifest, compiled);
        assert_eq!(
            archive.binary(compiled.tasks[2].binary),
            Some(&b"three"[..])
        );
    }

    #[test]
    fn empty_and_task_free_manifests_are_empty_systems() {
        assert!(parse("", "x").expect("empty file").is_empty());
        assert!(parse("task = []\n", "x").expect("no tasks").is_empty());
    }

    #[test]
    fn the_checked_in_manifest_and_its_documented_example_are_valid() {
        let source = include_str!("../../system.toml");
        parse(source, "build/system.toml").expect("build/system.toml is valid");
        // The commented example at the end of the file, uncommented.
        let example: String = source
            .lines()
            .skip_while(|line| !line.starts_with("# Example of a full system"))
            .skip(2)
            .map(|line| {
                line.strip_prefix("# ")
                    .unwrap_or(line.trim_start_matches('#'))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let manifest = parse(&example, "example").expect("the documented example is valid");
        assert_eq!(manifest.tasks.len(), 3);
        assert_eq!(manifest.tasks[0].name, SUPERVISOR);
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let source = GOOD.replace("priority = 2", "priority = ");
        refused(&source, line_of(GOOD, "priority = 2"), "");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let source = GOOD.replace("priority = 2", "priority = 2\nirqs = []");
        refused(&source, line_of(&source, "irqs"), "unknown field `irqs`");
        let source = GOOD.replace("depth = 32", "depth = 32\nsize = 4");
        refused(&source, line_of(&source, "size"), "unknown field `size`");
        let source = format!("{GOOD}\n[[tasks]]\nname = \"x\"\n");
        refused(
            &source,
            line_of(&source, "[[tasks]]"),
            "unknown field `tasks`",
        );
        let source = GOOD.replace("bit = 3 }", "bit = 3, line = 9 }");
        refused(
            &source,
            line_of(&source, "line = 9"),
            "unknown field `line`",
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_refused() {
        let source = GOOD.replace("memory-kib = 1024\n", "");
        refused(
            &source,
            line_of(&source, "[[task]]\nname = \"blk\""),
            "missing field `memory-kib`",
        );
        let source = GOOD.replace("priority = 2", "priority = \"high\"");
        refused(&source, line_of(&source, "\"high\""), "invalid type");
    }

    #[test]
    fn unknown_endpoints_are_refused() {
        let source = GOOD.replace("call = [\"dma\", ", "call = [\"dam\", ");
        refused(
            &source,
            line_of(&source, "\"dam\""),
            "calls unknown endpoint `dam`",
        );
        let source = GOOD.replace("serve = [\"blk\"]", "serve = [\"blk\", \"net\"]");
        refused(
            &source,
            line_of(&source, "\"net\""),
            "serves unknown endpoint `net`",
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let source = GOOD.replace("name = \"blk\"\npackage", "name = \"dma\"\npackage");
        refused(
            &source,
            line_of(&source, "package = \"moat-virtio-blk\"") - 1,
            "duplicate task name `dma`",
        );
        let source = format!("{GOOD}\n[[endpoint]]\nname = \"dma\"\n");
        refused(
            &source,
            source.lines().count(),
            "duplicate endpoint name `dma`",
        );
    }

    #[test]
    fn endpoints_are_served_exactly_once() {
        let source = format!("{GOOD}\n[[endpoint]]\nname = \"net\"\n");
        refused(
            &source,
            source.lines().count(),
            "`net` is served by no task",
        );
        let source = GOOD
            .replace("serve = [\"blk\"]", "serve = [\"blk\", \"dma\"]")
            .replace("call = [\"dma\", ", "call = [");
        let line = line_of(&source, "serve = [\"blk\", \"dma\"]");
        refused(
            &source,
            line,
            "`dma` is served twice: by `dma` and by `blk`",
        );
        let source = GOOD.replace("serve = [\"blk\"]", "serve = [\"blk\", \"blk\"]");
        refused(&source, line, "twice in `serve`");
        let source = GOOD.replace("call = [\"dma\", \"supervisor\"]", "call = [\"blk\"]");
        refused(
            &source,
            line_of(&source, "call = [\"blk\"]"),
            "which it serves itself",
        );
        let source = GOOD.replace("\"dma\", \"supervisor\"]", "\"dma\", \"dma\"]");
        refused(
            &source,
            line_of(&source, "\"dma\", \"dma\""),
            "twice in `call`",
        );
    }

    #[test]
    fn an_irq_has_one_owner() {
        let source = GOOD.replace(
            "share = true",
            "share = true\nirq = [{ device = \"virtio:block:0\", bit = 1 }]",
        );
        refused(
            &source,
            line_of(&source, "bit = 3"),
            "IRQ of `virtio:block:0` has two owners: `dma` and `blk`",
        );
        let source = GOOD.replace(
            "irq = [{ device = \"virtio:block:0\", bit = 3 }]",
            "irq = [{ device = \"virtio:block:0\", bit = 3 }, { device = \"virtio:block:1\", bit = 3 }]",
        );
        refused(
            &source,
            line_of(&source, "virtio:block:1"),
            "notification bit 3 for two IRQs",
        );
        let source = GOOD.replace("bit = 3", "bit = 64");
        refused(
            &source,
            line_of(&source, "bit = 64"),
            "notification bit 64 is out of range (0 to 63)",
        );
    }

    #[test]
    fn a_device_has_one_driver() {
        let source = GOOD.replace("share = true", "share = true\nmmio = [\"virtio:block:0\"]");
        refused(
            &source,
            line_of(&source, "mmio = [\"virtio:block:0\"]\nirq"),
            "given twice: to `dma` and to `blk`",
        );
    }

    #[test]
    fn console_input_compiles_into_a_capability_and_the_task_table() {
        let source = GOOD.replace(
            "restart = \"never\"",
            "restart = \"never\"\nconsole-input = true",
        );
        let compiled = parse(&source, "x").expect("valid").compile();
        let blk = &compiled.tasks[2];
        assert_eq!(
            blk.caps.last(),
            Some(&NamedCap {
                name: "console-input".to_string(),
                cap: CapSpec::ConsoleInput,
            })
        );
        assert_eq!(
            String::from_utf8(blk.config.clone()).expect("text"),
            "supervisor moat-supervisor\ndma dma\nblk moat-virtio-blk\n"
        );
        // Nobody else reads the console or gets the table.
        assert!(compiled.tasks[0].config.is_empty());
        assert!(
            compiled.tasks[..2]
                .iter()
                .all(|task| !task.caps.iter().any(|c| c.cap == CapSpec::ConsoleInput))
        );
        // `console-input = false` is no capability at all.
        let source = GOOD.replace(
            "restart = \"never\"",
            "restart = \"never\"\nconsole-input = false",
        );
        let compiled = parse(&source, "x").expect("valid").compile();
        assert!(compiled.tasks[2].config.is_empty());
    }

    #[test]
    fn a_task_table_too_big_for_the_configuration_is_refused() {
        let mut source = GOOD.replace(
            "restart = \"never\"",
            "restart = \"never\"\nconsole-input = true",
        );
        for index in 0..40 {
            source.push_str(&format!(
                "\n[[task]]\nname = \"worker-with-a-long-name-{index:02}\"\npackage = \"hello\"\n\
                 bin = \"a-binary-with-a-long-name-{index:02}\"\npriority = 5\nmemory-kib = 64\n"
            ));
        }
        refused(
            &source,
            line_of(&source, "console-input = true"),
            "the task table for the console-input holder would be",
        );
    }

    #[test]
    fn console_input_has_one_holder_and_not_the_dma_server() {
        let source = GOOD
            .replace(
                "task-control = true",
                "task-control = true\nconsole-input = true",
            )
            .replace(
                "restart = \"never\"",
                "restart = \"never\"\nconsole-input = true",
            );
        refused(
            &source,
            line_of(&source, "restart = \"never\"") + 1,
            "more than one holder of ConsoleInput: `supervisor` and `blk`",
        );
        let source = GOOD.replace("share = true", "share = true\nconsole-input = true");
        refused(
            &source,
            line_of(&source, "share = true") + 1,
            "serves `dma` and may not hold ConsoleInput",
        );
    }

    #[test]
    fn share_is_held_by_the_dma_server_alone() {
        let source = GOOD.replace("task-control = true", "task-control = true\nshare = true");
        let found = problems(&source);
        let line = line_of(&source, "task-control = true") + 1;
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with(&format!("build/system.toml:{line}:"))
                && found[0].contains("task `supervisor` may not hold Share"),
            "{}",
            found[0]
        );
        let dma_line = line_of(&source, "restart = { max-restarts = 3 }") + 2;
        assert!(
            found[1].starts_with(&format!("build/system.toml:{dma_line}:"))
                && found[1].contains("more than one holder of Share: `supervisor` and `dma`"),
            "{}",
            found[1]
        );
        // Share on a task that is not named `dma`, even as the only holder.
        let source = GOOD
            .replace("share = true\n", "")
            .replace("mmio = [", "share = true\nmmio = [");
        refused(
            &source,
            line_of(&source, "share = true"),
            "only the DMA server (the task named `dma`)",
        );
        // `share = false` is no Share at all.
        let source = GOOD.replace("task-control = true", "task-control = true\nshare = false");
        parse(&source, "x").expect("share = false is fine");
    }

    /// GOOD with a DMA admin endpoint the supervisor calls, a 256 KiB quota on `blk` and an
    /// observer (`dmastat`, task index 3).
    fn with_dma_clients() -> String {
        GOOD.replace(
            "serve = [\"dma\"]\nshare = true",
            "serve = [\"dma\", \"dma-admin\"]\nshare = true",
        )
        .replace(
            "serve = [\"supervisor\"]\n",
            "serve = [\"supervisor\"]\ncall = [\"dma-admin\"]\n",
        )
        .replace("mmio = [", "dma-quota-kib = 256\nmmio = [")
            + "\n[[endpoint]]\nname = \"dma-admin\"\n\n[[task]]\nname = \"dmastat\"\n\
               package = \"dmastat\"\npriority = 5\nmemory-kib = 64\ncall = [\"dma\"]\n\
               dma-role = \"observer\"\n"
    }

    #[test]
    fn dma_quotas_and_roles_compile_into_badges_and_the_server_configuration() {
        use moat_dma_api::ClientIdentity;
        use moat_dma_api::protocol::{Role, badge};
        let manifest = parse(&with_dma_clients(), "x").expect("valid");
        assert_eq!(manifest.tasks[2].dma_quota_kib, Some(256));
        assert_eq!(manifest.tasks[3].dma_role, DmaRole::Observer);
        let compiled = manifest.compile();
        let badge_of = |task: usize, name: &str| {
            compiled.tasks[task]
                .caps
                .iter()
                .find(|cap| cap.name == name)
                .map(|cap| match cap.cap {
                    CapSpec::Call { badge, .. } => badge,
                    _ => panic!("not a call capability"),
                })
        };
        assert_eq!(
            badge_of(2, "call:dma"),
            Some(badge::encode(ClientIdentity(3), Role::Client))
        );
        assert_eq!(
            badge_of(2, "call:supervisor"),
            Some(3),
            "other endpoints: plain"
        );
        assert_eq!(
            badge_of(3, "call:dma"),
            Some(badge::encode(ClientIdentity(4), Role::Observer))
        );
        assert_eq!(
            badge_of(0, "call:dma-admin"),
            Some(badge::encode(ClientIdentity(1), Role::Supervisor))
        );
        // Only the DMA server gets the configuration.
        let config = moat_dma_api::DmaConfig::decode(&compiled.tasks[1].config).expect("decodes");
        assert_eq!(config.budget_bytes, 256 * 1024);
        assert_eq!(config.clients.len(), 1);
        assert_eq!(config.clients[0].identity, ClientIdentity(3));
        assert_eq!(config.clients[0].quota_bytes, 256 * 1024);
        assert_eq!(config.clients[0].name.as_str(), "blk");
        for (index, task) in compiled.tasks.iter().enumerate() {
            assert_eq!(task.config.is_empty(), index != 1, "{}", task.name);
        }
        // A DMA server without clients still gets a (valid, empty) configuration.
        let plain = parse(GOOD, "x").expect("valid").compile();
        assert_eq!(
            moat_dma_api::DmaConfig::decode(&plain.tasks[1].config)
                .expect("decodes")
                .clients
                .len(),
            0
        );
    }

    #[test]
    fn dma_keys_are_checked() {
        let base = with_dma_clients();
        // A quota on a task that does not call `dma`.
        let source = base.replace(
            "call = [\"dma-admin\"]\n",
            "call = [\"dma-admin\"]\ndma-quota-kib = 64\n",
        );
        refused(
            &source,
            line_of(&source, "dma-quota-kib = 64"),
            "has a DMA quota but does not call `dma`",
        );
        // Whole pages.
        let source = base.replace("dma-quota-kib = 256", "dma-quota-kib = 6");
        refused(
            &source,
            line_of(&source, "dma-quota-kib = 6"),
            "not a multiple of 4",
        );
        // The quotas must fit the shareable region together.
        let source = base
            .replace("memory-kib = 8192", "memory-kib = 65536")
            .replace("dma-quota-kib = 256", "dma-quota-kib = 32768")
            + "dma-quota-kib = 4\n";
        refused(
            &source,
            line_of(&source, "dma-quota-kib = 4\n"),
            "more than the kernel's shareable region (32768 KiB)",
        );
        // The DMA server's memory holds the windows.
        let source = base.replace("dma-quota-kib = 256", "dma-quota-kib = 8192");
        refused(
            &source,
            line_of(&source, "memory-kib = 8192"),
            "must hold its clients' windows (8192 KiB) plus 512 KiB",
        );
        // Roles.
        let source = base.replace("\"observer\"", "\"admin\"");
        refused(
            &source,
            line_of(&source, "dma-role"),
            "`dma-role` must be \"client\" or \"observer\"",
        );
        let source = base.replace("call = [\"dma\"]\ndma-role", "dma-role");
        refused(
            &source,
            line_of(&source, "dma-role"),
            "has a `dma-role` but does not call `dma`",
        );
        // Only the supervisor calls dma-admin, and the DMA server serves it.
        let source = base.replace(
            "call = [\"dma\", \"supervisor\"]",
            "call = [\"dma\", \"supervisor\", \"dma-admin\"]",
        );
        refused(
            &source,
            line_of(&source, "\"dma-admin\"]\ndma-quota-kib"),
            "only the supervisor revokes DMA clients",
        );
        let source = base
            .replace("serve = [\"dma\", \"dma-admin\"]", "serve = [\"dma\"]")
            .replace("serve = [\"blk\"]", "serve = [\"blk\", \"dma-admin\"]");
        refused(
            &source,
            line_of(&source, "name = \"dma-admin\""),
            "must be served by the task that serves `dma`",
        );
        // Quotas need the Share holder behind `dma`.
        let source = base.replace("share = true\n", "");
        refused(
            &source,
            line_of(&source, "name = \"dma\"\ndepth"),
            "which does not hold Share",
        );
    }

    #[test]
    fn bad_device_names_are_refused() {
        for (bad, what) in [
            ("virtio:blk:0", "unknown VirtIO device type `blk`"),
            ("virtio:block", "expected `virtio:<type>:<instance>`"),
            ("virtio:block:0:1", "expected `virtio:<type>:<instance>`"),
            ("pci:block:0", "unknown bus `pci`"),
            ("virtio:block:32", "not a number below 32"),
            ("virtio:block:-1", "not a number below 32"),
            ("0x0a000000", "expected `virtio:<type>:<instance>`"),
        ] {
            let source = GOOD.replace(
                "mmio = [\"virtio:block:0\"]",
                &format!("mmio = [\"{bad}\"]"),
            );
            refused(&source, line_of(&source, "mmio = ["), what);
        }
        let source = GOOD.replace(
            "{ device = \"virtio:block:0\"",
            "{ device = \"virtio:disk:0\"",
        );
        refused(
            &source,
            line_of(&source, "virtio:disk:0"),
            "unknown VirtIO device type `disk`",
        );
        assert_eq!(
            parse_device("virtio:network:1"),
            Ok(DeviceName::Virtio {
                device_id: 1,
                instance: 1
            })
        );
        assert_eq!(
            parse_device("virtio:entropy:0"),
            Ok(DeviceName::Virtio {
                device_id: 4,
                instance: 0
            })
        );
        assert_eq!(
            parse_device("virtio:console:31"),
            Ok(DeviceName::Virtio {
                device_id: 3,
                instance: 31
            })
        );
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for (from, to, what) in [
            (
                "priority = 2",
                "priority = 16",
                "priority 16 is out of range (0 to 15)",
            ),
            (
                "priority = 2",
                "priority = -1",
                "priority -1 is out of range",
            ),
            (
                "memory-kib = 1024",
                "memory-kib = 1022",
                "not a multiple of 4",
            ),
            (
                "memory-kib = 1024",
                "memory-kib = 12",
                "memory-kib 12 is out of range",
            ),
            (
                "memory-kib = 1024",
                "memory-kib = 1048576",
                "memory-kib 1048576 is out of range",
            ),
            (
                "stack-kib = 32",
                "stack-kib = 0",
                "stack-kib 0 is out of range",
            ),
            ("stack-kib = 32", "stack-kib = 30", "not a multiple of 4"),
            (
                "stack-kib = 32",
                "stack-kib = 8192",
                "stack-kib 8192 is out of range",
            ),
            (
                "depth = 32",
                "depth = 0",
                "depth 0 is out of range (1 to 64)",
            ),
            ("depth = 32", "depth = 65", "depth 65 is out of range"),
            (
                "per-sender = 8",
                "per-sender = 33",
                "per-sender limit 33 is out of range (1 to 32)",
            ),
            (
                "restart = \"never\"",
                "restart = \"always\"",
                "`restart` must be",
            ),
            ("max-restarts = 3", "max-restarts = 0", "`restart` must be"),
            ("max-restarts = 3", "max = 3", "`restart` must be"),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let source = GOOD.replace(from, to);
            refused(&source, line_of(&source, to), what);
        }
    }

    #[test]
    fn the_stack_fits_in_the_quota() {
        let source = GOOD.replace("memory-kib = 8192", "memory-kib = 32");
        refused(
            &source,
            line_of(&source, "stack-kib = 32"),
            "stack (32 KiB) does not fit in the memory quota (32 KiB)",
        );
    }

    #[test]
    fn names_are_checked() {
        let source = GOOD.replace("name = \"blk\"\npackage", "name = \"Blk!\"\npackage");
        refused(&source, line_of(&source, "Blk!"), "bad task name `Blk!`");
        let source = GOOD.replace("package = \"moat-virtio-blk\"", "package = \"\"");
        refused(
            &source,
            line_of(&source, "package = \"\""),
            "`package` is empty",
        );
    }

    #[test]
    fn the_supervisor_comes_first_and_controls_tasks() {
        // Move the supervisor's table to the end.
        let (head, rest) = GOOD.split_at(GOOD.find("[[task]]\nname = \"dma\"").unwrap());
        let source = format!("{rest}\n{head}");
        refused(
            &source,
            line_of(&source, "name = \"supervisor\"\npackage"),
            "must be the first task",
        );
        let source = GOOD.replace("task-control = true\n", "");
        refused(
            &source,
            line_of(&source, "name = \"supervisor\"\npackage"),
            "must hold TaskControl",
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let source = GOOD
            .replace("priority = 2", "priority = 99")
            .replace("bit = 3", "bit = 99")
            .replace("name = \"supervisor\"\n\n", "name = \"nobody-serves\"\n\n");
        let found = problems(&source);
        // The renamed endpoint also leaves `supervisor` unknown to the two tasks using it.
        assert_eq!(found.len(), 5, "{found:#?}");
        let lines: Vec<usize> = found
            .iter()
            .map(|p| p.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{found:#?}");
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("ab\ncd", 99), (2, 3));
    }
}

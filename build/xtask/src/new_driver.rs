//! `cargo xtask new-driver NAME [--device TYPE]`: a new driver from the templates in
//! `build/xtask/templates/`, and `cargo xtask test-kit`, which checks in CI that a freshly
//! generated driver builds, passes its tests and boots untouched (and that the guide's example,
//! `drivers/virtio-rng`, builds and passes its tests, and the guide matches the code).
//!
//! Generated, for `NAME` and a VirtIO device type (default `entropy`):
//! - `drivers/NAME`: package and binary `NAME` — device bring-up, a one-buffer request path
//!   through bounce grants, the serve loop, a fake device and host tests;
//! - `libs/NAME-api`: package `NAME-api` — the protocol (`Info`, `Read`), a typed client and
//!   the serving side, with host tests;
//! - `build/system-NAME.toml`: a bootable system (supervisor, DMA server, the driver) for
//!   `cargo xtask run --manifest build/system-NAME.toml`; its `[[task]]` and `[[endpoint]]` are
//!   also printed for pasting into `build/system.toml`;
//! - root `Cargo.toml`: both crates appended to `members` and `default-members`, and
//!   `NAME-api` to `[workspace.dependencies]` (a line each; nothing else is touched).
//!
//! Everything that decides (names, rendering, the Cargo.toml edit) is a pure function with unit
//! tests; [`generate`] and [`test_kit`] only write files and run cargo.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace::Workspace;
use crate::{console, manifest, qemu};

/// The device type a driver is generated for unless `--device` says otherwise: QEMU's
/// `virtio-rng-device`, which every `cargo xtask run` attaches.
pub const DEFAULT_DEVICE: &str = "entropy";

/// Longest driver name (`NAME-api` must stay a valid 32-character task name too).
pub const MAX_NAME_LEN: usize = 28;

/// The name `cargo xtask test-kit` generates.
pub const KIT_CHECK_NAME: &str = "kitcheck";

/// A template: where its output goes (`{{name}}` replaced) and its text.
struct Template {
    path: &'static str,
    text: &'static str,
}

const TEMPLATES: [Template; 10] = [
    Template {
        path: "drivers/{{name}}/Cargo.toml",
        text: include_str!("../templates/driver/Cargo.toml.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/build.rs",
        text: include_str!("../templates/driver/build.rs.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/src/lib.rs",
        text: include_str!("../templates/driver/lib.rs.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/src/device.rs",
        text: include_str!("../templates/driver/device.rs.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/src/main.rs",
        text: include_str!("../templates/driver/main.rs.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/src/fake.rs",
        text: include_str!("../templates/driver/fake.rs.tmpl"),
    },
    Template {
        path: "drivers/{{name}}/src/tests.rs",
        text: include_str!("../templates/driver/tests.rs.tmpl"),
    },
    Template {
        path: "libs/{{name}}-api/Cargo.toml",
        text: include_str!("../templates/api/Cargo.toml.tmpl"),
    },
    Template {
        path: "libs/{{name}}-api/src/lib.rs",
        text: include_str!("../templates/api/lib.rs.tmpl"),
    },
    Template {
        path: "build/system-{{name}}.toml",
        text: include_str!("../templates/system.toml.tmpl"),
    },
];

/// Rust keywords (strict, reserved and 2024-edition) and crates every crate can name: a crate
/// called one of these could not be imported.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "crate",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "std",
    "core",
    "alloc",
    "test",
    "proc_macro",
    "union",
    "macro_rules",
];

/// Task and endpoint names the generated system already uses.
const SYSTEM_NAMES: [&str; 3] = ["supervisor", "dma", "dma-admin"];

/// Everything the templates are filled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The driver's package, binary, task and endpoint name (`my-dev`).
    pub name: String,
    /// Its crate name in Rust (`my_dev`).
    pub crate_name: String,
    /// The protocol package (`my-dev-api`).
    pub api: String,
    /// The protocol crate in Rust (`my_dev_api`).
    pub api_crate: String,
    /// The prefix of the generated types (`MyDev`).
    pub camel: String,
    /// The VirtIO device type (`entropy`).
    pub device_type: String,
    /// Its VirtIO device id (4).
    pub device_id: u32,
    /// The protocol's message label: the first three letters of the name in capitals, then 0
    /// (like `RNG\0` and `BLK\0`), as a Rust literal.
    pub protocol_id: String,
}

/// The VirtIO device id of a device type named as in the manifest (`block`, `entropy`, ...).
pub fn device_id(device_type: &str) -> Option<u32> {
    (1..64).find(|&id| moat_kernel_core::platform::virtio_device_name(id) == device_type)
}

fn device_types() -> Vec<&'static str> {
    (1..64)
        .map(moat_kernel_core::platform::virtio_device_name)
        .filter(|name| *name != "unknown")
        .collect()
}

/// Names the templates use themselves: type names (capitalised identifiers) and paths
/// (`word::`, crates and modules). A generated type or crate name equal to one would not
/// compile.
fn template_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut types = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for template in &TEMPLATES {
        let text = template.text.replace("{{", " ").replace("}}", " ");
        let mut rest = text.as_str();
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
            rest = &rest[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                types.insert(word.to_string());
            } else if rest.starts_with("::") {
                paths.insert(word.to_string());
            }
        }
    }
    (types, paths)
}

/// Checks `name` and `device_type` and works out every name the templates need.
pub fn names(name: &str, device_type: &str) -> Result<Names, String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !well_formed {
        return Err(format!(
            "bad driver name `{name}`: use 1 to {MAX_NAME_LEN} characters a-z, 0-9 and single \
             `-` between words, starting with a letter (it names the package, the binary, the \
             task and the endpoint), e.g. `my-sensor`"
        ));
    }
    let crate_name = name.replace('-', "_");
    let camel: String = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if RESERVED.contains(&crate_name.as_str()) || SYSTEM_NAMES.contains(&name) {
        return Err(format!(
            "driver name `{name}` is reserved (a Rust keyword, a built-in crate or a task of \
             the generated system); pick another"
        ));
    }
    let (types, paths) = template_names();
    let crates = [crate_name.clone(), format!("{crate_name}_api")];
    let generated_types = [
        format!("{camel}Protocol"),
        format!("{camel}Error"),
        format!("{camel}Server"),
        format!("{camel}Client"),
        format!("{camel}Device"),
        format!("{camel}FakeDevice"),
    ];
    let clash = crates
        .iter()
        .find(|name| paths.contains(*name))
        .or_else(|| generated_types.iter().find(|name| types.contains(*name)));
    if let Some(clash) = clash {
        return Err(format!(
            "driver name `{name}` would generate `{clash}`, which the driver templates already \
             use; pick another"
        ));
    }
    let Some(device_id) = device_id(device_type) else {
        return Err(format!(
            "unknown VirtIO device type `{device_type}` (known: {})",
            device_types().join(", ")
        ));
    };
    let mut letters: Vec<u8> = name
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|byte| byte.to_ascii_uppercase())
        .take(3)
        .collect();
    letters.resize(3, b'_');
    let protocol_id = u32::from_be_bytes([letters[0], letters[1], letters[2], 0]);
    Ok(Names {
        name: name.to_string(),
        api: format!("{name}-api"),
        api_crate: format!("{crate_name}_api"),
        crate_name,
        camel,
        device_type: device_type.to_string(),
        device_id,
        protocol_id: format!("0x{:04x}_{:04x}", protocol_id >> 16, protocol_id & 0xffff),
    })
}

/// `template` with every `{{key}}` filled in; an unknown key is an error (a template bug).
pub fn render(template: &str, names: &Names) -> Result<String, String> {
    let values = [
        ("name", names.name.as_str()),
        ("crate", names.crate_name.as_str()),
        ("api", names.api.as_str()),
        ("api_crate", names.api_crate.as_str()),
        ("Name", names.camel.as_str()),
        ("device_type", names.device_type.as_str()),
        ("protocol_id", names.protocol_id.as_str()),
    ];
    let device_id = names.device_id.to_string();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed `{{` in a template".to_string())?;
        let key = &after[..end];
        let value = match key {
            "device_id" => device_id.as_str(),
            _ => values
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("unknown template key `{{{{{key}}}}}`"))?,
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The files to write: (path relative to the workspace root, contents).
pub fn files(names: &Names) -> Result<Vec<(PathBuf, String)>, String> {
    TEMPLATES
        .iter()
        .map(|template| {
            Ok((
                PathBuf::from(render(template.path, names)?),
                render(template.text, names)?,
            ))
        })
        .collect()
}

/// Inserts `entries` (already quoted and indented) before the `]` that closes the array
/// starting at the line `opening`.
fn insert_into_array(text: &str, opening: &str, entries: &str) -> Result<String, String> {
    let start = text
        .lines()
        .position(|line| line.trim_end() == opening)
        .ok_or_else(|| format!("no `{opening}` line in the root Cargo.toml"))?;
    let lines: Vec<&str> = text.lines().collect();
    let close = lines[start..]
        .iter()
        .position(|line| line.trim_end() == "]")
        .map(|offset| start + offset)
        .ok_or_else(|| format!("`{opening}` is not closed by a `]` line"))?;
    let mut out: Vec<String> = lines[..close].iter().map(|line| line.to_string()).collect();
    out.extend(entries.lines().map(str::to_string));
    out.extend(lines[close..].iter().map(|line| line.to_string()));
    Ok(out.join("\n") + if text.ends_with('\n') { "\n" } else { "" })
}

/// The root Cargo.toml with the two crates in `members` and `default-members` and the
/// protocol crate in `[workspace.dependencies]` (after the last `path =` dependency there).
/// Refuses a workspace that already has either.
pub fn add_to_workspace(cargo_toml: &str, names: &Names) -> Result<String, String> {
    let parsed: toml::Table = toml::from_str(cargo_toml)
        .map_err(|error| format!("the root Cargo.toml does not parse: {error}"))?;
    let workspace = parsed
        .get("workspace")
        .and_then(toml::Value::as_table)
        .ok_or("the root Cargo.toml has no [workspace]")?;
    let driver_path = format!("drivers/{}", names.name);
    let api_path = format!("libs/{}", names.api);
    let listed = |key: &str, path: &str| {
        workspace
            .get(key)
            .and_then(toml::Value::as_array)
            .is_some_and(|members| members.iter().any(|m| m.as_str() == Some(path)))
    };
    for path in [&driver_path, &api_path] {
        if listed("members", path) || listed("default-members", path) {
            return Err(format!("`{path}` is already a workspace member"));
        }
    }
    let dependencies = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table);
    for key in [&names.name, &names.api] {
        if dependencies.is_some_and(|table| table.contains_key(key.as_str())) {
            return Err(format!(
                "`{key}` is already in [workspace.dependencies]; pick another name"
            ));
        }
    }
    let entries = format!("    \"{driver_path}\",\n    \"{api_path}\",\n");
    let text = insert_into_array(cargo_toml, "members = [", &entries)?;
    let text = insert_into_array(&text, "default-members = [", &entries)?;

    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|line| line.trim() == "[workspace.dependencies]")
        .ok_or("no [workspace.dependencies] in the root Cargo.toml")?;
    let section_end = lines[header + 1..]
        .iter()
        .position(|line| line.trim_start().starts_with('['))
        .map_or(lines.len(), |offset| header + 1 + offset);
    let after = lines[header + 1..section_end]
        .iter()
        .rposition(|line| line.contains("{ path = "))
        .map_or(header + 1, |offset| header + 2 + offset);
    let dependency = format!("{} = {{ path = \"{api_path}\" }}", names.api);
    let mut out: Vec<&str> = lines[..after].to_vec();
    out.push(&dependency);
    out.extend(&lines[after..]);
    let result = out.join("\n") + if text.ends_with('\n') { "\n" } else { "" };
    // The edit must leave a manifest that parses and lists what was added.
    let reparsed: toml::Table =
        toml::from_str(&result).map_err(|error| format!("edited Cargo.toml: {error}"))?;
    let workspace = reparsed
        .get("workspace")
        .and_then(toml::Value::as_table)
        .ok_or("edited Cargo.toml lost [workspace]")?;
    let has = |key: &str, path: &str| {
        workspace
            .get(key)
            .and_then(toml::Value::as_array)
            .is_some_and(|members| members.iter().any(|m| m.as_str() == Some(path)))
    };
    let dependency_added = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .is_some_and(|table| table.contains_key(names.api.as_str()));
    if !(has("members", &driver_path)
        && has("members", &api_path)
        && has("default-members", &driver_path)
        && has("default-members", &api_path)
        && dependency_added)
    {
        return Err("could not add the crates to the root Cargo.toml; add them by hand".into());
    }
    Ok(result)
}

/// Package names of the workspace's members (read from each member's Cargo.toml).
fn package_names(root: &Path, cargo_toml: &str) -> Result<BTreeSet<String>> {
    let parsed: toml::Table = toml::from_str(cargo_toml).context("the root Cargo.toml")?;
    let members = parsed
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for member in members.iter().filter_map(toml::Value::as_str) {
        let path = root.join(member).join("Cargo.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let member: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(name) = member
            .get("package")
            .and_then(|package| package.get("name"))
            .and_then(toml::Value::as_str)
        {
            names.insert(name.to_string());
        }
    }
    Ok(names)
}

/// The `[[task]]` and `[[endpoint]]` to paste into `build/system.toml`.
pub fn task_entry(names: &Names) -> String {
    let system = render(TEMPLATES[9].text, names).unwrap_or_default();
    let start = system
        .find(&format!("[[task]]\nname = \"{}\"", names.name))
        .unwrap_or(0);
    let task_end = system[start..]
        .find("\n\n")
        .map_or(system.len(), |end| start + end);
    format!(
        "{}\n\n[[endpoint]]\nname = \"{}\"\n",
        &system[start..task_end],
        names.name
    )
}

/// Writes the driver, its protocol crate and its system into the workspace at `root`, adds
/// the crates to the root Cargo.toml and formats them with `cargo fmt` (the cargo at `cargo`).
/// Returns the paths written.
pub fn generate(root: &Path, names: &Names, cargo: &Path) -> Result<Vec<PathBuf>> {
    let cargo_path = root.join("Cargo.toml");
    let cargo_toml = fs::read_to_string(&cargo_path).context("reading the root Cargo.toml")?;
    let files = files(names).map_err(anyhow::Error::msg)?;
    for directory in [
        format!("drivers/{}", names.name),
        format!("libs/{}", names.api),
    ] {
        if root.join(&directory).exists() {
            bail!("{directory} already exists; pick another name or remove it");
        }
    }
    let system = format!("build/system-{}.toml", names.name);
    if root.join(&system).exists() {
        bail!("{system} already exists; pick another name or remove it");
    }
    let packages = package_names(root, &cargo_toml)?;
    for package in [&names.name, &names.api] {
        if packages.contains(package.as_str()) {
            bail!("the workspace already has a package `{package}`; pick another name");
        }
    }
    let edited = add_to_workspace(&cargo_toml, names).map_err(anyhow::Error::msg)?;
    // The generated system must be a valid manifest (the template is checked like any other).
    let (_, system_text) = files
        .iter()
        .find(|(path, _)| path == Path::new(&system))
        .context("the system template is missing")?;
    manifest::parse(system_text, &system).map_err(|error| anyhow::anyhow!("{error}"))?;

    let mut written = Vec::new();
    for (path, text) in &files {
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&full, text).with_context(|| format!("writing {}", full.display()))?;
        written.push(path.clone());
    }
    fs::write(&cargo_path, edited).context("writing the root Cargo.toml")?;
    let formatted = Command::new(cargo)
        .current_dir(root)
        .args(["fmt", "-p", &names.name, "-p", &names.api])
        .status();
    if !formatted.is_ok_and(|status| status.success()) {
        eprintln!(
            "xtask: `cargo fmt -p {} -p {}` failed; the crates are written but not formatted",
            names.name, names.api
        );
    }
    Ok(written)
}

/// The cargo that runs xtask (cargo sets `CARGO`), else the one on PATH.
fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// `cargo xtask new-driver`.
pub fn new_driver(name: &str, device_type: &str) -> Result<()> {
    let names = names(name, device_type).map_err(anyhow::Error::msg)?;
    let workspace = Workspace::locate()?;
    let written = generate(&workspace.root, &names, &cargo_program())?;
    for path in &written {
        println!("created {}", path.display());
    }
    let Names {
        name,
        api,
        device_type,
        device_id,
        ..
    } = &names;
    println!(
        "added drivers/{name} and libs/{api} to the workspace members and default-members, and \
         {api} to [workspace.dependencies] (Cargo.toml)\n\
         \n\
         The driver is for VirtIO device type {device_id} (`{device_type}`, --device to change).\n\
         Next (docs/writing-a-driver.md walks through each):\n\
         \x20 cargo test -p {name} -p {api}\n\
         \x20 cargo build --release --target aarch64-unknown-none -p {name}\n\
         \x20 cargo xtask run --no-realm --manifest build/system-{name}.toml\n\
         \x20 add `-p {name} -p {api}` to the aarch64-unknown-none clippy line in .ci/run\n\
         \n\
         To add it to the default system, paste into build/system.toml (only if no task there\n\
         claims virtio:{device_type}:0 already: one task per device) and give a client\n\
         `call = [\"{name}\"]`:\n"
    );
    print!("{}", task_entry(&names));
    Ok(())
}

/// Copies the workspace's sources (not `target`, `.git` or fuzz corpora) from `from` to `to`,
/// keeping modification times.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if [".git", "target", "corpus", "artifacts"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if kind.is_file() {
            let target = to.join(&name);
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            // Keep the modification time, so cargo sees unchanged sources as unchanged and
            // rebuilds only the generated crates in the scratch target directory.
            let modified = entry.metadata()?.modified()?;
            fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|file| file.set_modified(modified))
                .with_context(|| format!("setting the time of {}", target.display()))?;
        }
    }
    Ok(())
}

/// Runs `command`, failing with `what` if it does not succeed.
fn run(mut command: Command, what: &str) -> Result<()> {
    println!("xtask: {what}");
    let status = command
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask test-kit`: generates a driver into a scratch copy of the workspace
/// (`<target-dir>/kit-check/workspace`, so the repository stays clean) and checks that it
/// builds for the target, passes clippy and its host tests untouched, and boots and reads from
/// QEMU's virtio-rng in its generated system ([`boot_generated`]); then checks the guide's
/// example (`moat-virtio-rng`, `moat-rng-api`) the same way in the real workspace. Builds go to
/// this workspace's target directory, so what `cargo test` and `cargo xtask build` compiled
/// before is reused.
pub fn test_kit() -> Result<()> {
    let workspace = Workspace::locate()?;
    crate::workspace::ensure_rust_targets(&workspace)?;
    let cargo = cargo_program();
    let kit = workspace.target_dir.join("kit-check");
    let scratch = kit.join("workspace");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    copy_tree(&workspace.root, &scratch)?;
    let names = names(KIT_CHECK_NAME, DEFAULT_DEVICE).map_err(anyhow::Error::msg)?;
    generate(&scratch, &names, &cargo)?;
    // The scratch copy builds into this workspace's target directory: registry crates already
    // built there are reused (their artifacts do not depend on the workspace's path), and the
    // copies of our crates get artifacts of their own (a path crate's id includes its path).
    let scratch_cargo = |args: &[&str]| {
        let mut command = Command::new(&cargo);
        command
            .current_dir(&scratch)
            .env("CARGO_TARGET_DIR", &workspace.target_dir)
            .args(args);
        command
    };
    let (name, api) = (names.name.as_str(), names.api.as_str());
    run(
        scratch_cargo(&["fmt", "-p", name, "-p", api, "--", "--check"]),
        "generated driver: cargo fmt --check",
    )?;
    run(
        scratch_cargo(&["test", "-p", name, "-p", api]),
        "generated driver: host tests",
    )?;
    run(
        scratch_cargo(&[
            "clippy",
            "--all-targets",
            "-p",
            name,
            "-p",
            api,
            "--",
            "-D",
            "warnings",
        ]),
        "generated driver: clippy (host)",
    )?;
    run(
        scratch_cargo(&[
            "clippy",
            "--target",
            "aarch64-unknown-none",
            "-p",
            name,
            "-p",
            api,
            "--",
            "-D",
            "warnings",
        ]),
        "generated driver: clippy (aarch64-unknown-none)",
    )?;
    run(
        scratch_cargo(&[
            "build",
            "--release",
            "--target",
            "aarch64-unknown-none",
            "-p",
            name,
            "--bin",
            name,
        ]),
        "generated driver: task binary (aarch64-unknown-none)",
    )?;
    boot_generated(&workspace, &scratch, &names)?;
    // The guide's worked example, in the real workspace.
    let mut tests = workspace.cargo();
    tests.args(["test", "-p", "moat-virtio-rng", "-p", "moat-rng-api"]);
    run(
        tests,
        "guide example: host tests (moat-virtio-rng, moat-rng-api)",
    )?;
    let mut build = workspace.cargo();
    build.args([
        "build",
        "--release",
        "--target",
        "aarch64-unknown-none",
        "-p",
        "moat-virtio-rng",
        "--bin",
        "virtio-rng",
    ]);
    run(build, "guide example: task binary (aarch64-unknown-none)")?;
    check_guide(&workspace.root)?;
    println!("xtask: test-kit passed");
    Ok(())
}

/// What a boot of a generated driver's system must print: the tasks started, then the driver's
/// self-check and `moat: ready` in either order (the self-check waits for the device's
/// interrupt, and the kernel counts a task waiting for notifications as having reached its
/// loop, so `moat: ready` may come first).
pub fn generated_boot_expectations(names: &Names) -> console::Expectations {
    let self_check = format!("{}: ready; self-check read 16 bytes", names.name);
    console::Expectations {
        steps: vec![
            console::Step::line("tasks: 3 started"),
            console::Step::new(&[&[self_check.as_str()], &["moat: ready"]]),
        ],
        forbidden: vec!["KERNEL FAULT", "KERNEL PANIC", "self-check read failed"],
        checks: vec![],
        exit: console::ExpectedExit::SuccessOrStopped,
    }
}

/// Builds the generated system (`build/system-NAME.toml`) in the scratch workspace with
/// `cargo xtask build --manifest` and boots it as a plain guest with the usual devices: the
/// driver must find QEMU's virtio-rng, read from it and reach its serve loop.
fn boot_generated(workspace: &Workspace, scratch: &Path, names: &Names) -> Result<()> {
    let manifest = format!("build/system-{}.toml", names.name);
    println!("xtask: generated driver: cargo xtask build --manifest {manifest}");
    let output = Command::new(cargo_program())
        .current_dir(scratch)
        .env("CARGO_TARGET_DIR", &workspace.target_dir)
        .args(["xtask", "build", "--manifest", &manifest])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo xtask build in the scratch workspace")?;
    if !output.status.success() {
        bail!(
            "cargo xtask build --manifest {manifest} failed ({})",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let image = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !image.is_file() {
        bail!("cargo xtask build printed no Image path (got {:?})", image);
    }
    qemu::ensure_installed()?;
    let kit = workspace.target_dir.join("kit-check");
    let disk = kit.join("disk.img");
    crate::workspace::ensure_disk(&disk)?;
    let setup = qemu::Setup::Full {
        disk,
        mode: qemu::Mode::Plain { el2: false },
        gdb: false,
        kernel_args: vec![],
    };
    let expected = generated_boot_expectations(names);
    println!("xtask: generated driver: booting {}", image.display());
    let captured = qemu::run_until(
        qemu::command(&image, &setup),
        std::time::Duration::from_secs(120),
        &|log| console::steps_matched(log, &expected),
        std::time::Duration::from_millis(500),
    )?;
    let log_path = kit.join("boot.log");
    fs::write(&log_path, &captured.log)
        .with_context(|| format!("writing {}", log_path.display()))?;
    let problems = console::judge(&captured.log, captured.ending, &expected);
    if !problems.is_empty() {
        bail!(
            "the generated driver's system did not boot as expected (log: {}):\n  {}",
            log_path.display(),
            problems.join("\n  ")
        );
    }
    println!(
        "xtask: generated driver: booted; `{}: ready; self-check read 16 bytes` after {:.1} s",
        names.name,
        captured
            .awaited_after
            .unwrap_or(captured.elapsed)
            .as_secs_f64()
    );
    Ok(())
}

/// The guide.
pub const GUIDE: &str = "docs/writing-a-driver.md";

/// Every repository path the guide names in backticks (`drivers/…`, `libs/…`, `build/…`,
/// `docs/…`) that has no placeholder must exist, so the guide cannot drift from the tree.
pub fn guide_paths(guide: &str) -> Vec<String> {
    guide
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            ["drivers/", "libs/", "build/", "docs/"]
                .iter()
                .any(|prefix| span.starts_with(prefix))
                && !span.contains(char::is_whitespace)
                && !span.contains("NAME")
                && !span.contains('<')
                && !span.contains('*')
        })
        .map(|span| span.trim_end_matches(['.', ',', ':']).to_string())
        .collect()
}

/// A line without its trailing `// comment`, trimmed; `None` for a comment-only or empty line.
fn code_part(line: &str) -> Option<&str> {
    let code = line.find(" // ").map_or(line, |at| &line[..at]).trim();
    (!code.is_empty() && !code.starts_with("//")).then_some(code)
}

/// What is wrong with the guide's Rust excerpts. Each ```` ```rust ```` block starts with
/// `// <path>` and its other lines (trailing comments, comment-only lines and `// ...` aside)
/// are lines of that file, in order: an excerpt that no longer matches the code fails.
/// `read` returns a file's text by repository path.
pub fn excerpt_problems(guide: &str, read: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut lines = guide.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim() != "```rust" {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| line.trim() != "```")
            .collect();
        let at = number + 1;
        let Some(path) = block
            .first()
            .and_then(|first| first.trim().strip_prefix("// "))
        else {
            problems.push(format!(
                "line {at}: a Rust excerpt must start with `// <path>`"
            ));
            continue;
        };
        let Some(source) = read(path) else {
            problems.push(format!("line {at}: {path} does not exist"));
            continue;
        };
        let mut source_lines = source.lines().filter_map(code_part);
        for wanted in block[1..].iter().filter_map(|line| code_part(line)) {
            if !source_lines.any(|line| line == wanted) {
                problems.push(format!(
                    "line {at}: `{wanted}` is not in {path} (in this order)"
                ));
                break;
            }
        }
    }
    problems
}

fn check_guide(root: &Path) -> Result<()> {
    let guide = fs::read_to_string(root.join(GUIDE)).with_context(|| format!("reading {GUIDE}"))?;
    let problems = excerpt_problems(&guide, |path| fs::read_to_string(root.join(path)).ok());
    if !problems.is_empty() {
        bail!("{GUIDE}: {}", problems.join("; "));
    }
    println!("xtask: {GUIDE}: every Rust excerpt matches its source");
    let missing: Vec<String> = guide_paths(&guide)
        .into_iter()
        .filter(|path| {
            !root
                .join(path.split(['#', ':']).next().unwrap_or(path))
                .exists()
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "{GUIDE} names paths that do not exist: {}",
            missing.join(", ")
        );
    }
    println!("xtask: {GUIDE}: every path it names exists");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = include_str!("../../../Cargo.toml");

    #[test]
    fn names_are_derived_from_the_driver_name() {
        let names = names("my-sensor2", "entropy").expect("valid");
        assert_eq!(names.crate_name, "my_sensor2");
        assert_eq!(names.api, "my-sensor2-api");
        assert_eq!(names.api_crate, "my_sensor2_api");
        assert_eq!(names.camel, "MySensor2");
        assert_eq!(names.device_id, 4);
        assert_eq!(names.protocol_id, "0x4d59_5300");
        assert_eq!(
            super::names("ab", "block").expect("valid").protocol_id,
            "0x4142_5f00"
        );
        assert_eq!(device_id("network"), Some(1));
        assert_eq!(device_id("nothing"), None);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in [
            "",
            "My",
            "1st",
            "a_b",
            "a--b",
            "a-",
            "-a",
            "a b",
            "ünï",
            "abcdefghijklmnopqrstuvwxyz123",
        ] {
            let error = names(bad, "entropy").expect_err(bad);
            assert!(error.contains("bad driver name"), "{bad}: {error}");
        }
        for reserved in ["fn", "type", "std", "core", "test", "dma", "supervisor"] {
            let error = names(reserved, "entropy").expect_err(reserved);
            assert!(error.contains("reserved"), "{reserved}: {error}");
        }
        // Names whose generated types or crates collide with what the templates use.
        for clash in [
            "log",
            "serde",
            "heapless",
            "fmt",
            "client",
            "start",
            "transport",
            "used",
            "setup",
            "ipc",
        ] {
            assert!(names(clash, "entropy").is_err(), "{clash}");
        }
        // Ordinary words are fine even where the templates use them in prose or as fields.
        for fine in ["source", "sensor", "dma-port", "read"] {
            assert!(names(fine, "entropy").is_ok(), "{fine}");
        }
        let error = names("ok", "floppy").expect_err("unknown type");
        assert!(error.contains("known: network, block"), "{error}");
    }

    #[test]
    fn every_template_renders_without_leftover_keys() {
        let names = names("my-sensor", "block").expect("valid");
        let files = files(&names).expect("renders");
        assert_eq!(files.len(), TEMPLATES.len());
        for (path, text) in &files {
            assert!(
                !text.contains("{{") && !text.contains("}}"),
                "{}",
                path.display()
            );
            assert!(!path.display().to_string().contains('{'));
        }
        let device = files
            .iter()
            .find(|(path, _)| path.ends_with("src/device.rs"))
            .expect("device.rs");
        assert!(device.1.contains("pub const DEVICE_ID: u32 = 2;"));
        assert!(device.1.contains("use my_sensor_api::"));
        assert_eq!(
            render("{{nope}}", &names),
            Err("unknown template key `{{nope}}`".into())
        );
        assert!(render("{{name", &names).is_err());
    }

    #[test]
    fn the_generated_system_is_a_valid_manifest() {
        for device in ["entropy", "block", "console"] {
            let names = names("my-sensor", device).expect("valid");
            let files = files(&names).expect("renders");
            let (path, text) = files.last().expect("the system");
            assert_eq!(path, Path::new("build/system-my-sensor.toml"));
            let manifest = manifest::parse(text, "system-my-sensor.toml").expect("valid manifest");
            assert_eq!(manifest.tasks.len(), 3);
            let entry = task_entry(&names);
            assert!(
                entry.starts_with("[[task]]\nname = \"my-sensor\""),
                "{entry}"
            );
            assert!(
                entry.contains(&format!("mmio = [\"virtio:{device}:0\"]")),
                "{entry}"
            );
            assert!(
                entry.ends_with("[[endpoint]]\nname = \"my-sensor\"\n"),
                "{entry}"
            );
        }
    }

    #[test]
    fn the_workspace_edit_adds_five_lines_and_nothing_else() {
        let names = names("my-sensor", "entropy").expect("valid");
        let edited = add_to_workspace(ROOT, &names).expect("edits");
        let added: Vec<&str> = edited
            .lines()
            .filter(|line| !ROOT.lines().any(|old| old == *line))
            .collect();
        assert_eq!(
            added,
            [
                // members, then default-members
                "    \"drivers/my-sensor\",",
                "    \"libs/my-sensor-api\",",
                "    \"drivers/my-sensor\",",
                "    \"libs/my-sensor-api\",",
                "my-sensor-api = { path = \"libs/my-sensor-api\" }",
            ]
        );
        assert_eq!(edited.lines().count(), ROOT.lines().count() + 5);
        // Twice is refused.
        let error = add_to_workspace(&edited, &names).expect_err("already there");
        assert!(error.contains("already a workspace member"), "{error}");
        // An existing crate's name is refused.
        let rng = Names {
            api: "moat-rng-api".into(),
            ..names.clone()
        };
        assert!(add_to_workspace(ROOT, &rng).is_err());
    }

    #[test]
    fn the_workspace_edit_handles_a_minimal_manifest() {
        let names = names("x1", "entropy").expect("valid");
        let minimal = "[workspace]\nmembers = [\n]\ndefault-members = [\n    \"a\",\n]\n\n\
                       [workspace.dependencies]\nserde = \"1\"\n";
        let edited = add_to_workspace(minimal, &names).expect("edits");
        assert!(
            edited.contains("[workspace.dependencies]\nx1-api = { path = \"libs/x1-api\" }\nserde")
        );
        assert!(add_to_workspace("[package]\nname = \"a\"\n", &names).is_err());
        assert!(add_to_workspace("[workspace]\nmembers = [\"a\"]\n", &names).is_err());
    }

    #[test]
    fn generate_writes_a_workspace_and_refuses_to_overwrite() {
        let root = std::env::temp_dir().join(format!("moat-new-driver-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("libs/a")).expect("dirs");
        fs::write(
            root.join("Cargo.toml"),
            "[workspace]\nmembers = [\n    \"libs/a\",\n]\ndefault-members = [\n]\n\n\
             [workspace.dependencies]\na = { path = \"libs/a\" }\n",
        )
        .expect("root");
        fs::write(
            root.join("libs/a/Cargo.toml"),
            "[package]\nname = \"taken\"\n",
        )
        .expect("a");
        // `true` stands in for cargo: formatting is not what this test checks.
        let written = generate(
            &root,
            &names("probe", "entropy").expect("valid"),
            Path::new("true"),
        )
        .expect("generates");
        assert_eq!(written.len(), TEMPLATES.len());
        assert!(root.join("drivers/probe/src/device.rs").is_file());
        assert!(root.join("build/system-probe.toml").is_file());
        let again = generate(
            &root,
            &names("probe", "entropy").expect("valid"),
            Path::new("true"),
        )
        .expect_err("exists");
        assert!(
            again.to_string().contains("drivers/probe already exists"),
            "{again}"
        );
        let taken = generate(
            &root,
            &names("taken", "entropy").expect("valid"),
            Path::new("true"),
        )
        .expect_err("package exists");
        assert!(
            taken.to_string().contains("already has a package `taken`"),
            "{taken}"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn excerpts_must_be_the_sources_lines_in_order() {
        let source = "fn a() {\n    let x = 1; // one\n    /// doc\n    let y = 2;\n}\n";
        let read = |path: &str| (path == "src/a.rs").then(|| source.to_string());
        let good = "text\n```rust\n// src/a.rs\nfn a() {\n// ...\nlet y = 2;   // two\n```\n";
        assert!(excerpt_problems(good, read).is_empty());
        let order = "```rust\n// src/a.rs\nlet y = 2;\nlet x = 1;\n```\n";
        assert_eq!(excerpt_problems(order, read).len(), 1);
        let changed = "```rust\n// src/a.rs\nlet x = 3;\n```\n";
        assert!(excerpt_problems(changed, read)[0].contains("`let x = 3;` is not in src/a.rs"));
        let no_path = "```rust\nfn a() {\n```\n";
        assert!(excerpt_problems(no_path, read)[0].contains("must start with"));
        let missing = "```rust\n// src/b.rs\n```\n";
        assert!(excerpt_problems(missing, read)[0].contains("src/b.rs does not exist"));
        // Other languages are not checked.
        assert!(excerpt_problems("```toml\nx = 1\n```\n", read).is_empty());
    }

    #[test]
    fn the_guides_excerpts_match_the_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let guide = fs::read_to_string(root.join(GUIDE)).expect("the guide");
        let problems = excerpt_problems(&guide, |path| fs::read_to_string(root.join(path)).ok());
        assert!(problems.is_empty(), "{problems:#?}");
        let missing: Vec<String> = guide_paths(&guide)
            .into_iter()
            .filter(|path| !root.join(path.split('#').next().unwrap_or(path)).exists())
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
    }

    #[test]
    fn a_generated_boot_needs_the_self_check_and_ready() {
        let names = names("probe", "entropy").expect("valid");
        let expected = generated_boot_expectations(&names);
        let good =
            "tasks: 3 started\nprobe: ready; self-check read 16 bytes\nmoat: ready (3 tasks)\n";
        assert!(console::judge(good, console::Ending::Stopped, &expected).is_empty());
        let ready_first =
            "tasks: 3 started\nmoat: ready (3 tasks)\nprobe: ready; self-check read 16 bytes\n";
        assert!(console::judge(ready_first, console::Ending::Stopped, &expected).is_empty());
        let no_check = "tasks: 3 started\nmoat: ready (3 tasks)\n";
        assert!(!console::judge(no_check, console::Ending::Stopped, &expected).is_empty());
        let failed = "tasks: 3 started\nprobe: ready; self-check read failed: device timed out\n\
                      moat: ready\n";
        assert!(!console::judge(failed, console::Ending::Stopped, &expected).is_empty());
        let faulted = good.to_string() + "KERNEL FAULT: data abort\n";
        assert!(!console::judge(&faulted, console::Ending::Stopped, &expected).is_empty());
    }

    #[test]
    fn guide_paths_are_found_in_backticks() {
        let text = "See `drivers/virtio-rng/src/device.rs`, `libs/NAME-api` and `cargo test`; \
                    `docs/dma.md#bounce`, `build/system.toml`.";
        assert_eq!(
            guide_paths(text),
            [
                "drivers/virtio-rng/src/device.rs",
                "docs/dma.md#bounce",
                "build/system.toml"
            ]
        );
    }
}

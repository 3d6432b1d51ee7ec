//! The workspace and its tools: where things are, the Rust targets, and building the kernel.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image;
use crate::system::{self, SystemPaths};

/// The Rust target the kernel is built for (no FP/SIMD in privileged code).
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";

/// Every Rust target the workspace needs: tasks use the hard-float one.
pub const RUST_TARGETS: [&str; 2] = ["aarch64-unknown-none", KERNEL_TARGET];

/// Cargo package and binary name of the kernel.
pub const KERNEL_PACKAGE: &str = "moat-kernel";

/// Cargo package and binary name of realm-sim, the RMM stand-in (build/realm-sim).
pub const REALM_SIM_PACKAGE: &str = "realm-sim";

/// The kernel feature that honours test hooks in a Realm (images built for tests).
pub const TEST_HOOKS_FEATURE: &str = "test-hooks";

/// The variable that tells `kernel/build.rs` which system archive to embed.
pub const SYSTEM_ARCHIVE_VARIABLE: &str = "MOAT_SYSTEM_ARCHIVE";

/// Size of the virtio-blk disk image created when it is missing.
pub const DISK_BYTES: u64 = 64 << 20;

/// Paths this workspace builds into.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root (where the root Cargo.toml is).
    pub root: PathBuf,
    /// Cargo's target directory, as `cargo metadata` reports it (honours CARGO_TARGET_DIR).
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Finds the workspace root (two levels above this crate) and asks cargo for the target
    /// directory.
    pub fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .context("xtask is not at build/xtask inside the workspace")?
            .to_path_buf();
        let output = Command::new(cargo())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(&root)
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!(
                "`cargo metadata` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let metadata = String::from_utf8_lossy(&output.stdout);
        let target_dir = json_string_field(&metadata, "target_directory")
            .context("`cargo metadata` printed no target_directory")?;
        Ok(Self {
            root,
            target_dir: PathBuf::from(target_dir),
        })
    }

    /// Where xtask puts its own outputs: the Image, the disk, test logs.
    pub fn output_dir(&self) -> PathBuf {
        self.target_dir.join("moat")
    }

    /// The kernel ELF cargo builds.
    pub fn kernel_elf(&self) -> PathBuf {
        self.target_dir
            .join(KERNEL_TARGET)
            .join("release")
            .join(KERNEL_PACKAGE)
    }

    /// realm-sim's ELF, which QEMU loads with `-kernel` in Realm mode.
    pub fn realm_sim_elf(&self) -> PathBuf {
        self.target_dir
            .join(KERNEL_TARGET)
            .join("release")
            .join(REALM_SIM_PACKAGE)
    }

    /// The guest RAM file of `cargo xtask run` in Realm mode (made fresh for every run).
    pub fn realm_ram_file(&self) -> PathBuf {
        self.output_dir().join("realm-ram.bin")
    }

    /// The raw Linux arm64 Image made from the ELF.
    pub fn kernel_image(&self) -> PathBuf {
        self.output_dir().join("Image")
    }

    /// A cargo command run at the workspace root.
    pub fn cargo(&self) -> Command {
        let mut command = Command::new(cargo());
        command.current_dir(&self.root);
        command
    }
}

/// The cargo that runs xtask (cargo sets `CARGO`), else the one on PATH.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Extracts the string value of `"key":` from JSON text. Enough for `cargo metadata`'s
/// top-level `target_directory` without a JSON dependency; returns None if absent or malformed.
pub fn json_string_field(json: &str, key: &str) -> Option<String> {
    let quoted_key = format!("\"{key}\"");
    let after_key = &json[json.find(&quoted_key)? + quoted_key.len()..];
    let after_colon = after_key.trim_start().strip_prefix(':')?.trim_start();
    let mut characters = after_colon.strip_prefix('"')?.chars();
    let mut value = String::new();
    loop {
        match characters.next()? {
            '"' => return Some(value),
            '\\' => match characters.next()? {
                '"' => value.push('"'),
                '\\' => value.push('\\'),
                '/' => value.push('/'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = characters.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            other => value.push(other),
        }
    }
}

/// Adds the Rust targets with rustup when any is missing (this machine sets
/// `RUSTUP_AUTO_INSTALL=0`, so the rust-toolchain.toml list is not installed by itself).
pub fn ensure_rust_targets(workspace: &Workspace) -> Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&workspace.root)
        .output()
        .context("running `rustup target list --installed` (is rustup installed?)")?;
    if !output.status.success() {
        bail!(
            "`rustup target list --installed` failed ({})",
            output.status
        );
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<&str> = RUST_TARGETS
        .into_iter()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: adding missing Rust targets: rustup target add {}",
        RUST_TARGETS.join(" ")
    );
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(RUST_TARGETS)
        .current_dir(&workspace.root)
        .status()
        .context("running `rustup target add`")?;
    if !status.success() {
        bail!(
            "`rustup target add {}` failed ({status})",
            RUST_TARGETS.join(" ")
        );
    }
    Ok(())
}

/// Builds the default system (`build/system.toml`): see [`build_system`].
pub fn build_kernel(workspace: &Workspace) -> Result<PathBuf> {
    build_system(workspace, &SystemPaths::default_system(workspace))
}

/// Checks the system's manifest, builds its task binaries and archive, builds the kernel ELF
/// with the archive embedded and writes the raw Image; returns the Image's path.
pub fn build_system(workspace: &Workspace, paths: &SystemPaths) -> Result<PathBuf> {
    build_system_with(workspace, paths, &[], &paths.image)
}

/// The Image of the system `paths` names with a kernel built for tests (cargo feature
/// [`TEST_HOOKS_FEATURE`]: test hooks honoured in a Realm): `<stem>-test-hooks.Image` beside
/// the normal one, which stays as it is.
pub fn build_test_hooks_system(workspace: &Workspace, paths: &SystemPaths) -> Result<PathBuf> {
    build_system_with(
        workspace,
        paths,
        &[TEST_HOOKS_FEATURE],
        &test_hooks_image(&paths.image),
    )
}

/// `…/Image` (the default system) → `…/system-test-hooks.Image`, `…/x.Image` →
/// `…/x-test-hooks.Image`.
pub fn test_hooks_image(image: &Path) -> PathBuf {
    let name = image.file_name().map_or_else(
        || "Image".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let stem = match name.strip_suffix(".Image") {
        Some(stem) => stem,
        None if name == "Image" => "system",
        None => &name,
    };
    image.with_file_name(format!("{stem}-test-hooks.Image"))
}

/// [`build_system`] with kernel `features`, writing the Image to `image_path`. The kernel
/// package is built alone (`-p moat-kernel`), so its features never unify with another
/// package's; cargo keeps each feature set's artifacts apart, so switching back and forth
/// costs a re-link at most.
pub fn build_system_with(
    workspace: &Workspace,
    paths: &SystemPaths,
    features: &[&str],
    image_path: &Path,
) -> Result<PathBuf> {
    ensure_rust_targets(workspace)?;
    let archive = system::build(workspace, paths)?;
    let mut command = workspace.cargo();
    // kernel/build.rs embeds the archive named here, or an empty one when it is unset.
    match &archive {
        Some(path) => command.env(SYSTEM_ARCHIVE_VARIABLE, path),
        None => command.env_remove(SYSTEM_ARCHIVE_VARIABLE),
    };
    command.args([
        "build",
        "--release",
        "-p",
        KERNEL_PACKAGE,
        "--target",
        KERNEL_TARGET,
    ]);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let status = command
        .status()
        .context("running cargo build for the kernel")?;
    if !status.success() {
        bail!("building {KERNEL_PACKAGE} failed ({status})");
    }
    let elf_path = workspace.kernel_elf();
    let elf = fs::read(&elf_path)
        .with_context(|| format!("reading the kernel ELF {}", elf_path.display()))?;
    let image = image::elf_to_image(&elf)
        .with_context(|| format!("converting {} to an Image", elf_path.display()))?;
    if let Some(parent) = image_path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(image_path, &image).with_context(|| format!("writing {}", image_path.display()))?;
    Ok(image_path.to_path_buf())
}

/// Builds realm-sim (release, [`KERNEL_TARGET`], on its own) and returns its ELF.
pub fn build_realm_sim(workspace: &Workspace) -> Result<PathBuf> {
    ensure_rust_targets(workspace)?;
    let status = workspace
        .cargo()
        .args([
            "build",
            "--release",
            "-p",
            REALM_SIM_PACKAGE,
            "--target",
            KERNEL_TARGET,
        ])
        .status()
        .context("running cargo build for realm-sim")?;
    if !status.success() {
        bail!("building {REALM_SIM_PACKAGE} failed ({status})");
    }
    let elf = workspace.realm_sim_elf();
    if !elf.is_file() {
        bail!(
            "cargo built {REALM_SIM_PACKAGE} but {} is missing",
            elf.display()
        );
    }
    Ok(elf)
}

/// Removes `path` if it exists (a fresh guest RAM file for every Realm boot).
pub fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Creates a zero-filled (sparse) disk image of [`DISK_BYTES`] at `path` unless it exists.
pub fn ensure_disk(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file =
        fs::File::create(path).with_context(|| format!("creating disk {}", path.display()))?;
    file.set_len(DISK_BYTES)
        .with_context(|| format!("sizing disk {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_target_directory_from_cargo_metadata_output() {
        let json = r#"{"packages":[],"target_directory" : "/work/main/target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/work/main/target")
        );
    }

    #[test]
    fn decodes_json_escapes() {
        let json = r#"{"target_directory":"C:\\moat \"x\"\/t\u00e9"}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("C:\\moat \"x\"/t\u{e9}")
        );
    }

    #[test]
    fn missing_or_malformed_fields_give_none() {
        assert_eq!(
            json_string_field(r#"{"workspace_root":"/w"}"#, "target_directory"),
            None
        );
        assert_eq!(
            json_string_field(r#"{"target_directory":3}"#, "target_directory"),
            None
        );
        assert_eq!(
            json_string_field(r#"{"target_directory":"/unterminated"#, "target_directory"),
            None
        );
    }

    #[test]
    fn kernel_paths_live_in_the_target_directory() {
        let workspace = Workspace {
            root: "/w".into(),
            target_dir: "/t".into(),
        };
        assert_eq!(
            workspace.kernel_elf(),
            Path::new("/t/aarch64-unknown-none-softfloat/release/moat-kernel")
        );
        assert_eq!(workspace.kernel_image(), Path::new("/t/moat/Image"));
        assert_eq!(
            workspace.realm_sim_elf(),
            Path::new("/t/aarch64-unknown-none-softfloat/release/realm-sim")
        );
        assert_eq!(
            workspace.realm_ram_file(),
            Path::new("/t/moat/realm-ram.bin")
        );
    }

    #[test]
    fn test_hooks_images_sit_beside_the_normal_ones() {
        assert_eq!(
            test_hooks_image(Path::new("/t/moat/Image")),
            Path::new("/t/moat/system-test-hooks.Image")
        );
        assert_eq!(
            test_hooks_image(Path::new("/t/moat/system-ktest.Image")),
            Path::new("/t/moat/system-ktest-test-hooks.Image")
        );
    }

    #[test]
    fn creates_a_disk_of_the_right_size_once() {
        let directory = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        let disk = directory.join("sub").join("disk.img");
        ensure_disk(&disk).expect("creates the disk");
        assert_eq!(fs::metadata(&disk).expect("exists").len(), DISK_BYTES);
        fs::write(&disk, b"keep").expect("writes");
        ensure_disk(&disk).expect("leaves an existing disk alone");
        assert_eq!(fs::read(&disk).expect("reads"), b"keep");
        fs::remove_dir_all(&directory).expect("cleans up");
    }
}

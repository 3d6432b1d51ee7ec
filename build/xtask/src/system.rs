//! The system archive: builds the task binaries `build/system.toml` names, strips them to what
//! the kernel loads, and packs them with the compiled manifest into `<target>/moat/system.bin`,
//! which the kernel build embeds (`MOAT_SYSTEM_ARCHIVE`, read by `kernel/build.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use moat_kernel_core::elf::Executable;
use moat_kernel_core::layout::VA_BITS;
use moat_kernel_core::system::{SystemArchive, build_archive};

use crate::manifest::{self, Manifest};
use crate::workspace::Workspace;

/// The Rust target task binaries are built for (hard-float: tasks may use FP/SIMD).
pub const TASK_TARGET: &str = "aarch64-unknown-none";

/// The manifest, relative to the workspace root (also how messages name it).
pub const MANIFEST_PATH: &str = "build/system.toml";

/// The kernel test system `cargo xtask test` and `cargo xtask bench` boot, relative to the
/// workspace root.
pub const KTEST_MANIFEST_PATH: &str = "build/system-ktest.toml";

/// One system to build: its manifest and where its archive and Image go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPaths {
    /// The manifest file.
    pub manifest: PathBuf,
    /// How messages name the manifest.
    pub label: String,
    /// Whether a missing manifest is an empty system (the default manifest) or an error.
    pub optional: bool,
    /// The packed archive.
    pub archive: PathBuf,
    /// The kernel Image with that archive embedded.
    pub image: PathBuf,
}

impl SystemPaths {
    /// `build/system.toml` → `<target>/moat/system.bin` and `<target>/moat/Image`.
    pub fn default_system(workspace: &Workspace) -> Self {
        Self {
            manifest: workspace.root.join(MANIFEST_PATH),
            label: MANIFEST_PATH.to_string(),
            optional: true,
            archive: workspace.output_dir().join("system.bin"),
            image: workspace.kernel_image(),
        }
    }

    /// Another manifest (`--manifest PATH`, or a test system): `<stem>.toml` →
    /// `<target>/moat/<stem>.system.bin` and `<target>/moat/<stem>.Image`, so it never
    /// overwrites the default system's Image.
    pub fn other_system(workspace: &Workspace, manifest: &Path) -> Self {
        let stem = manifest
            .file_stem()
            .map_or_else(|| "system".into(), |s| s.to_string_lossy().into_owned());
        Self {
            manifest: manifest.to_path_buf(),
            label: manifest.display().to_string(),
            optional: false,
            archive: workspace.output_dir().join(format!("{stem}.system.bin")),
            image: workspace.output_dir().join(format!("{stem}.Image")),
        }
    }
}

/// Reads and checks a manifest. A missing default manifest is an empty system.
pub fn load_manifest(paths: &SystemPaths) -> Result<Manifest> {
    let source = match fs::read_to_string(&paths.manifest) {
        Ok(source) => source,
        Err(error) if paths.optional && error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Manifest::default());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", paths.manifest.display()));
        }
    };
    manifest::parse(&source, &paths.label)
        .map_err(|error| anyhow::anyhow!("{error}\n{} is not valid", paths.label))
}

/// Checks the manifest, builds every task binary and writes the system archive. Returns its
/// absolute path, or `None` when the manifest lists no task (the kernel then embeds an empty
/// archive and runs only its boot self-check).
pub fn build(workspace: &Workspace, paths: &SystemPaths) -> Result<Option<PathBuf>> {
    let manifest = load_manifest(paths)?;
    if manifest.is_empty() {
        return Ok(None);
    }
    let binaries = build_binaries(workspace, &manifest, &paths.label)?;
    let mut compiled = manifest.compile();
    let slices: Vec<&[u8]> = binaries.iter().map(Vec::as_slice).collect();
    let archive = build_archive(&mut compiled, &slices)
        .map_err(|error| anyhow::anyhow!("packing the system archive: {error:?}"))?;
    // Read it back as the kernel will, so a packing bug is a build error, not a boot failure.
    SystemArchive::parse(&archive)
        .map_err(|error| anyhow::anyhow!("the packed system archive does not parse: {error:?}"))?;
    let path = &paths.archive;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, &archive).with_context(|| format!("writing {}", path.display()))?;
    let path = fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    eprintln!(
        "xtask: system archive {} ({} tasks, {} endpoints, {} bytes)",
        path.display(),
        compiled.tasks.len(),
        compiled.endpoints.len(),
        archive.len()
    );
    Ok(Some(path))
}

/// The ELF cargo writes for a task binary.
pub fn task_elf(workspace: &Workspace, bin: &str) -> PathBuf {
    workspace
        .target_dir
        .join(TASK_TARGET)
        .join("release")
        .join(bin)
}

/// `cargo build --release --target aarch64-unknown-none -p <package>... --bin <bin>...` in one
/// invocation, then each binary stripped and checked. `result[i]` belongs to `manifest.tasks[i]`.
fn build_binaries(workspace: &Workspace, manifest: &Manifest, label: &str) -> Result<Vec<Vec<u8>>> {
    let mut packages: Vec<&str> = manifest.tasks.iter().map(|t| t.package.as_str()).collect();
    packages.sort_unstable();
    packages.dedup();
    let mut bins: Vec<&str> = manifest.tasks.iter().map(|t| t.bin.as_str()).collect();
    bins.sort_unstable();
    bins.dedup();
    let mut command = workspace.cargo();
    command.args(["build", "--release", "--target", TASK_TARGET]);
    for package in &packages {
        command.args(["-p", package]);
    }
    for bin in &bins {
        command.args(["--bin", bin]);
    }
    let status = command
        .status()
        .context("running cargo build for the task binaries")?;
    if !status.success() {
        bail!(
            "building the task binaries ({}) failed ({status}); every `package` in \
             {label} must be a workspace member with a binary named by `bin`",
            packages.join(", ")
        );
    }
    manifest
        .tasks
        .iter()
        .map(|task| {
            let path = task_elf(workspace, &task.bin);
            let elf = fs::read(&path).with_context(|| {
                format!("reading task `{}`'s ELF {}", task.name, path.display())
            })?;
            load_ready(&elf).with_context(|| format!("task `{}` ({})", task.name, path.display()))
        })
        .collect()
}

/// Strips `elf` and checks it the way the kernel's loader will.
fn load_ready(elf: &[u8]) -> Result<Vec<u8>> {
    let stripped = strip_elf(elf)?;
    Executable::parse(&stripped, 0..(1u64 << VA_BITS))
        .map_err(|error| anyhow::anyhow!("the kernel's ELF loader refuses it: {error:?}"))?;
    Ok(stripped)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .context("ELF headers are cut short")
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(field(bytes, at)?))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(field(bytes, at)?))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(field(bytes, at)?))
}

/// Keeps what the kernel loads from a task ELF — the ELF header, the program headers and the
/// file contents of the `PT_LOAD` segments — and drops the rest (section headers, symbols, debug
/// information), so the image carries no debug info. The unstripped ELF stays in the target
/// directory for gdb. Program headers other than `PT_LOAD` whose contents were cut become
/// `PT_NULL`.
pub fn strip_elf(elf: &[u8]) -> Result<Vec<u8>> {
    const PT_NULL: u32 = 0;
    const PT_LOAD: u32 = 1;
    if elf.get(0..4) != Some(b"\x7fELF".as_slice()) || elf.get(4..6) != Some([2u8, 1].as_slice()) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let phoff = usize::try_from(u64_at(elf, 32)?).context("program header offset")?;
    let phentsize = usize::from(u16_at(elf, 54)?);
    let phnum = usize::from(u16_at(elf, 56)?);
    if phentsize < 56 {
        bail!("program header entries of {phentsize} bytes (want at least 56)");
    }
    let table_end = phoff
        .checked_add(phentsize * phnum)
        .filter(|&end| end <= elf.len())
        .context("the program header table lies outside the file")?;
    let mut keep = table_end.max(64);
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        if u32_at(elf, at)? == PT_LOAD {
            let end = u64_at(elf, at + 8)?
                .checked_add(u64_at(elf, at + 32)?)
                .filter(|&end| end <= elf.len() as u64)
                .with_context(|| format!("PT_LOAD segment {index} lies outside the file"))?;
            keep = keep.max(end as usize);
        }
    }
    let mut out = elf[..keep].to_vec();
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let kind = u32_at(&out, at)?;
        let end = u64_at(&out, at + 8)?.saturating_add(u64_at(&out, at + 32)?);
        if kind != PT_LOAD && kind != PT_NULL && end > keep as u64 {
            out[at..at + 4].copy_from_slice(&PT_NULL.to_le_bytes());
        }
    }
    // No section headers: e_shoff, e_shnum, e_shstrndx.
    out[40..48].fill(0);
    out[60..64].fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal AArch64 executable: header, two program headers (a PT_LOAD with code and a
    /// PT_NOTE after it), then "debug" bytes and a section header table.
    fn sample_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 2 * 56];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4..7].copy_from_slice(&[2, 1, 1]);
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        elf[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes()); // entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        let code_offset = elf.len() as u64;
        elf.extend_from_slice(&[0xd5, 0x03, 0x20, 0x1f].repeat(4)); // nops
        let load = 64;
        elf[load..load + 4].copy_from_slice(&1u32.to_le_bytes());
        elf[load + 4..load + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        elf[load + 8..load + 16].copy_from_slice(&code_offset.to_le_bytes());
        elf[load + 16..load + 24].copy_from_slice(&0x40_0000u64.to_le_bytes());
        elf[load + 32..load + 40].copy_from_slice(&16u64.to_le_bytes());
        elf[load + 40..load + 48].copy_from_slice(&16u64.to_le_bytes());
        let note_offset = elf.len() as u64;
        elf.extend_from_slice(&[0xaa; 100]); // debug info, notes
        let note = 64 + 56;
        elf[note..note + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[note + 8..note + 16].copy_from_slice(&note_offset.to_le_bytes());
        elf[note + 32..note + 40].copy_from_slice(&100u64.to_le_bytes());
        let shoff = elf.len() as u64;
        elf.extend_from_slice(&[0xbb; 128]);
        elf[40..48].copy_from_slice(&shoff.to_le_bytes());
        elf[60..62].copy_from_slice(&2u16.to_le_bytes());
        elf[62..64].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn stripping_keeps_exactly_what_the_loader_needs() {
        let elf = sample_elf();
        let before = Executable::parse(&elf, 0..1 << 39).expect("sample parses");
        let stripped = strip_elf(&elf).expect("strips");
        assert_eq!(stripped.len(), 64 + 2 * 56 + 16);
        assert_eq!(Executable::parse(&stripped, 0..1 << 39), Ok(before));
        assert_eq!(&stripped[40..48], &[0; 8], "no section header offset");
        assert_eq!(&stripped[60..64], &[0; 4], "no section headers");
        assert_eq!(
            u32_at(&stripped, 64 + 56).unwrap(),
            0,
            "cut PT_NOTE is now PT_NULL"
        );
        assert!(load_ready(&elf).is_ok());
    }

    #[test]
    fn stripping_refuses_broken_files() {
        assert!(strip_elf(b"not an elf at all").is_err());
        let mut elf = sample_elf();
        elf[64 + 32..64 + 40].copy_from_slice(&10_000u64.to_le_bytes());
        assert!(strip_elf(&elf).is_err(), "PT_LOAD past the end");
        let mut elf = sample_elf();
        elf[56..58].copy_from_slice(&500u16.to_le_bytes());
        assert!(strip_elf(&elf).is_err(), "program headers past the end");
    }

    #[test]
    fn the_loader_check_catches_what_the_kernel_would_refuse() {
        let mut elf = sample_elf();
        elf[64 + 4..64 + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        let error = load_ready(&elf).unwrap_err();
        assert!(format!("{error:#}").contains("BadSegment"), "{error:#}");
    }

    #[test]
    fn other_systems_do_not_overwrite_the_default_image() {
        let workspace = Workspace {
            root: "/w".into(),
            target_dir: "/t".into(),
        };
        let default = SystemPaths::default_system(&workspace);
        assert_eq!(default.manifest, Path::new("/w/build/system.toml"));
        assert_eq!(default.archive, Path::new("/t/moat/system.bin"));
        assert_eq!(default.image, Path::new("/t/moat/Image"));
        assert!(default.optional);
        let other = SystemPaths::other_system(&workspace, Path::new("tests/ipc.toml"));
        assert_eq!(other.archive, Path::new("/t/moat/ipc.system.bin"));
        assert_eq!(other.image, Path::new("/t/moat/ipc.Image"));
        assert_eq!(other.label, "tests/ipc.toml");
        assert!(!other.optional);
    }

    #[test]
    fn a_missing_manifest_is_empty_only_when_it_is_the_default() {
        let workspace = Workspace {
            root: "/nonexistent-moat".into(),
            target_dir: "/t".into(),
        };
        let default = SystemPaths::default_system(&workspace);
        assert!(load_manifest(&default).expect("empty system").is_empty());
        let other = SystemPaths::other_system(&workspace, Path::new("/nonexistent-moat/x.toml"));
        assert!(load_manifest(&other).is_err());
    }

    #[test]
    fn task_binaries_are_built_for_the_hard_float_target() {
        let workspace = Workspace {
            root: "/w".into(),
            target_dir: "/t".into(),
        };
        assert_eq!(
            task_elf(&workspace, "hello"),
            Path::new("/t/aarch64-unknown-none/release/hello")
        );
    }
}

//! Systems xtask derives from a checked-in manifest by appending one task, so they never drift
//! from it:
//!
//! - **serve** (`cargo xtask run --serve`): the system plus `demo-serve`, a task of the `demo`
//!   package that holds the demo's power-off and never releases it (userland/demo), so the
//!   system keeps serving until the user stops QEMU. Only for a system whose demo serves the
//!   `demo` endpoint.
//! - **scan** (the Realm demo boot tests): the default system plus `ktest-canary`, which fills
//!   a page of its private memory with the confidentiality canary ([`crate::realm::canary`]),
//!   so the scan runs after the block and network workloads of the real demo.
//!
//! Appending keeps every other task's index, and so its badge, unchanged. The derived manifest
//! is written under `<target>/moat/` and checked and built like any other.

use std::fs;

use anyhow::{Context, Result};

use crate::system::{self, SystemPaths};
use crate::workspace::Workspace;

/// The task `--serve` appends.
pub const SERVE_TASK: &str = "
# Appended by `cargo xtask run --serve` (build/xtask/src/variants.rs): holds the demo's
# power-off, so the system serves until QEMU is stopped.
[[task]]
name = \"demo-serve\"
package = \"demo\"
priority = 6
memory-kib = 256
call = [\"demo\"]
";

/// The task the scan variant appends.
pub const CANARY_TASK: &str = "
# Appended by `cargo xtask test` (build/xtask/src/variants.rs): the confidentiality canary.
[[task]]
name = \"ktest-canary\"
package = \"ktest\"
priority = 4
memory-kib = 256
";

/// `source` with `block` appended (a newline between them if `source` lacks one).
pub fn append_task(source: &str, block: &str) -> String {
    let mut text = source.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(block);
    text
}

/// Writes `<target>/moat/<stem>-<suffix>.toml` = `base`'s manifest + `block`, and returns its
/// paths (checked: the manifest loads).
fn derive(
    workspace: &Workspace,
    base: &SystemPaths,
    suffix: &str,
    block: &str,
) -> Result<SystemPaths> {
    let source = fs::read_to_string(&base.manifest)
        .with_context(|| format!("reading {}", base.manifest.display()))?;
    let stem = base
        .manifest
        .file_stem()
        .map_or_else(|| "system".into(), |s| s.to_string_lossy().into_owned());
    let directory = workspace.output_dir();
    fs::create_dir_all(&directory)?;
    let path = directory.join(format!("{stem}-{suffix}.toml"));
    fs::write(&path, append_task(&source, block))
        .with_context(|| format!("writing {}", path.display()))?;
    let paths = SystemPaths::other_system(workspace, &path);
    system::load_manifest(&paths)?;
    Ok(paths)
}

/// Whether the system at `paths` has a `demo` endpoint (its demo task honours holds).
pub fn has_demo_endpoint(paths: &SystemPaths) -> Result<bool> {
    Ok(system::load_manifest(paths)?
        .endpoints
        .iter()
        .any(|endpoint| endpoint.name == "demo"))
}

/// The serve variant of `base`, or `None` if `base` has no demo endpoint (nothing to hold).
pub fn serve_system(workspace: &Workspace, base: &SystemPaths) -> Result<Option<SystemPaths>> {
    if !has_demo_endpoint(base)? {
        return Ok(None);
    }
    derive(workspace, base, "serve", SERVE_TASK).map(Some)
}

/// The default system with the confidentiality canary.
pub fn scan_system(workspace: &Workspace) -> Result<SystemPaths> {
    derive(
        workspace,
        &SystemPaths::default_system(workspace),
        "scan",
        CANARY_TASK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    #[test]
    fn appended_tasks_keep_the_other_indices_and_compile() {
        let base = include_str!("../../system.toml");
        let original = manifest::parse(base, "system.toml").expect("the default system parses");
        for block in [SERVE_TASK, CANARY_TASK] {
            let derived =
                manifest::parse(&append_task(base, block), "derived").expect("derived parses");
            assert_eq!(derived.tasks.len(), original.tasks.len() + 1);
            for (a, b) in original.tasks.iter().zip(&derived.tasks) {
                assert_eq!(a.name, b.name);
            }
        }
        assert_eq!(append_task("a = 1", "b"), "a = 1\nb");
        assert_eq!(append_task("a = 1\n", "b"), "a = 1\nb");
    }
}

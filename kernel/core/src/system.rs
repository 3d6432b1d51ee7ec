//! The system image: the compiled manifest and the task binaries that `cargo xtask` packs into
//! the kernel image, and the kernel reads at boot.
//!
//! `build/system.toml` is the source; xtask validates it (unknown tasks, two owners of one IRQ,
//! more than one Share holder, endpoints nobody serves, ...) and compiles it into a
//! [`SystemManifest`], encoded with postcard. The archive layout is:
//!
//! ```text
//! offset 0   magic  b"MOATSYS\0"
//! offset 8   format version, u32 little-endian (FORMAT_VERSION)
//! offset 12  manifest length in bytes, u32 little-endian
//! offset 16  the postcard-encoded SystemManifest
//! ...        task binaries, each referenced by (offset, length) from the archive start
//! ```
//! Capabilities are named in the manifest; the kernel installs each task's capabilities in the
//! listed order and tells the task the (name → slot) table, so tasks never hard-code slots.

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// First bytes of a system archive.
pub const MAGIC: [u8; 8] = *b"MOATSYS\0";
/// Archive format version this kernel reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed archive header.
pub const HEADER_SIZE: usize = 16;

/// A device named symbolically, resolved at boot from the DTB (never an address in the
/// manifest). `virtio:block:0` is the first virtio-mmio slot whose DeviceID is 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceName {
    /// The `instance`-th (from 0, in slot address order) virtio-mmio device of a VirtIO device
    /// type (1 = network, 2 = block, 4 = entropy, ...).
    Virtio {
        /// VirtIO device ID.
        device_id: u32,
        /// Which one of that type.
        instance: u16,
    },
    /// The `instance`-th (from 0, in tree order) device-tree node whose first `compatible`
    /// string is `compatible` (`dt:arm,pl031:0` in the manifest).
    Compatible {
        /// The node's first compatible string.
        compatible: String,
        /// Which one of them.
        instance: u16,
    },
}

/// What a task should do when it faults or is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Stay dead.
    Never,
    /// Restart, at most this many times.
    Restart {
        /// Restarts allowed before the task is left dead.
        max_restarts: u32,
    },
}

/// One capability a task starts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapSpec {
    /// Receive on an endpoint (the task serves it).
    Serve {
        /// Index into [`SystemManifest::endpoints`].
        endpoint: u16,
    },
    /// Send and call on an endpoint; the kernel stamps `badge` on every message.
    Call {
        /// Index into [`SystemManifest::endpoints`].
        endpoint: u16,
        /// The caller's identity as the server sees it (stable across restarts).
        badge: u64,
    },
    /// Map a device's MMIO registers.
    Mmio {
        /// Which device.
        device: DeviceName,
    },
    /// Receive a device's interrupt as notification bit `bit`.
    Irq {
        /// Which device.
        device: DeviceName,
        /// Notification bit (0..64).
        bit: u8,
    },
    /// Change the Realm state of memory (the DMA server only).
    Share,
    /// Kill, restart and inspect other tasks (the supervisor, and test tasks).
    TaskControl,
    /// Read the kernel console's input (`ConsoleRead`); at most one task (the shell).
    ConsoleInput,
}

/// A named capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCap {
    /// Name the task looks it up by.
    pub name: String,
    /// What it is.
    pub cap: CapSpec,
}

/// An endpoint: a bounded message queue served by one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// Name, for reports.
    pub name: String,
    /// Index of the serving task.
    pub server: u16,
    /// Messages the queue holds.
    pub depth: u16,
    /// Messages one sender may have queued at once.
    pub per_sender: u16,
}

/// Where a binary sits in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryRef {
    /// Offset from the archive start.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// One task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Name, unique in the system.
    pub name: String,
    /// Its ELF binary.
    pub binary: BinaryRef,
    /// Scheduling priority: 0 is the most urgent.
    pub priority: u8,
    /// Pages the task may allocate in all (its image and stack included).
    pub memory_pages: u32,
    /// Stack size in pages.
    pub stack_pages: u32,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Capabilities, installed in this order.
    pub caps: Vec<NamedCap>,
    /// Task-specific configuration compiled by xtask (at most 1024 bytes; the kernel hands it
    /// to the task in its information page). For the DMA server: its clients' quotas.
    pub config: Vec<u8>,
}

/// The compiled manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemManifest {
    /// Tasks, in start order (the supervisor first).
    pub tasks: Vec<TaskSpec>,
    /// Endpoints.
    pub endpoints: Vec<EndpointSpec>,
}

/// Why an archive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemError {
    /// Wrong magic or shorter than its header.
    NotAnArchive,
    /// A format version this kernel does not read.
    Version(u32),
    /// The manifest does not decode.
    BadManifest,
    /// A binary reference or endpoint index points outside the archive or the manifest.
    BadReference,
}

/// A checked archive: the manifest, and access to binaries.
#[derive(Debug)]
pub struct SystemArchive<'a> {
    /// The whole archive.
    bytes: &'a [u8],
    /// The manifest bytes (for measurement).
    manifest_bytes: &'a [u8],
    /// The decoded manifest.
    pub manifest: SystemManifest,
}

impl<'a> SystemArchive<'a> {
    /// Checks the header, decodes the manifest and checks every reference in it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SystemError> {
        if bytes.len() < HEADER_SIZE || bytes[0..8] != MAGIC {
            return Err(SystemError::NotAnArchive);
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(SystemError::Version(version));
        }
        let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let manifest_bytes = bytes
            .get(
                HEADER_SIZE
                    ..HEADER_SIZE
                        .checked_add(len)
                        .ok_or(SystemError::NotAnArchive)?,
            )
            .ok_or(SystemError::NotAnArchive)?;
        let manifest: SystemManifest =
            postcard::from_bytes(manifest_bytes).map_err(|_| SystemError::BadManifest)?;
        let archive = SystemArchive {
            bytes,
            manifest_bytes,
            manifest,
        };
        for task in &archive.manifest.tasks {
            archive
                .binary(task.binary)
                .ok_or(SystemError::BadReference)?;
            for cap in &task.caps {
                if let CapSpec::Serve { endpoint } | CapSpec::Call { endpoint, .. } = cap.cap
                    && usize::from(endpoint) >= archive.manifest.endpoints.len()
                {
                    return Err(SystemError::BadReference);
                }
            }
        }
        for endpoint in &archive.manifest.endpoints {
            if usize::from(endpoint.server) >= archive.manifest.tasks.len() {
                return Err(SystemError::BadReference);
            }
        }
        Ok(archive)
    }

    /// The bytes of a binary, if the reference is inside the archive.
    pub fn binary(&self, binary: BinaryRef) -> Option<&'a [u8]> {
        let start = binary.offset as usize;
        self.bytes
            .get(start..start.checked_add(binary.len as usize)?)
    }

    /// The encoded manifest, as measured.
    pub fn manifest_bytes(&self) -> &'a [u8] {
        self.manifest_bytes
    }
}

/// Builds an archive from a manifest whose binary references are filled in by this function
/// (xtask's side; also used by tests). `binaries[i]` belongs to `manifest.tasks[i]`.
pub fn build_archive(
    manifest: &mut SystemManifest,
    binaries: &[&[u8]],
) -> Result<Vec<u8>, SystemError> {
    if binaries.len() != manifest.tasks.len() {
        return Err(SystemError::BadReference);
    }
    // References change the manifest's encoded length, so encode twice: with placeholders of the
    // final width (postcard varints), then with the real offsets.
    let mut offset_guess = 0u32;
    for _ in 0..3 {
        let encoded = postcard::to_allocvec(manifest).map_err(|_| SystemError::BadManifest)?;
        let start = (HEADER_SIZE + encoded.len()).next_multiple_of(16);
        if start as u32 == offset_guess {
            break;
        }
        offset_guess = start as u32;
        let mut offset = start;
        for (task, binary) in manifest.tasks.iter_mut().zip(binaries) {
            task.binary = BinaryRef {
                offset: offset as u32,
                len: binary.len() as u32,
            };
            offset = (offset + binary.len()).next_multiple_of(16);
        }
    }
    let encoded = postcard::to_allocvec(manifest).map_err(|_| SystemError::BadManifest)?;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    for (task, binary) in manifest.tasks.iter().zip(binaries) {
        if out.len() > task.binary.offset as usize {
            return Err(SystemError::BadReference);
        }
        out.resize(task.binary.offset as usize, 0);
        out.extend_from_slice(binary);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn manifest() -> SystemManifest {
        SystemManifest {
            tasks: vec![
                TaskSpec {
                    name: "supervisor".to_string(),
                    binary: BinaryRef { offset: 0, len: 0 },
                    priority: 0,
                    memory_pages: 64,
                    stack_pages: 4,
                    restart: RestartPolicy::Never,
                    caps: vec![NamedCap {
                        name: "tasks".to_string(),
                        cap: CapSpec::TaskControl,
                    }],
                    config: vec![1, 2, 3],
                },
                TaskSpec {
                    name: "blk".to_string(),
                    binary: BinaryRef { offset: 0, len: 0 },
                    priority: 2,
                    memory_pages: 256,
                    stack_pages: 4,
                    restart: RestartPolicy::Restart { max_restarts: 3 },
                    caps: vec![
                        NamedCap {
                            name: "serve".to_string(),
                            cap: CapSpec::Serve { endpoint: 0 },
                        },
                        NamedCap {
                            name: "irq".to_string(),
                            cap: CapSpec::Irq {
                                device: DeviceName::Virtio {
                                    device_id: 2,
                                    instance: 0,
                                },
                                bit: 0,
                            },
                        },
                    ],
                    config: vec![],
                },
            ],
            endpoints: vec![EndpointSpec {
                name: "blk".to_string(),
                server: 1,
                depth: 32,
                per_sender: 8,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let mut m = manifest();
        let a: &[u8] = &[1, 2, 3];
        let b: &[u8] = &[7; 300];
        let bytes = build_archive(&mut m, &[a, b]).unwrap();
        let archive = SystemArchive::parse(&bytes).unwrap();
        assert_eq!(archive.manifest, m);
        assert_eq!(archive.binary(m.tasks[0].binary), Some(a));
        assert_eq!(archive.binary(m.tasks[1].binary), Some(b));
        assert_eq!(
            archive.manifest_bytes().len(),
            u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize
        );
    }

    #[test]
    fn refuses_bad_archives() {
        let mut m = manifest();
        let bytes = build_archive(&mut m, &[&[1], &[2]]).unwrap();
        assert_eq!(
            SystemArchive::parse(&bytes[..10]).unwrap_err(),
            SystemError::NotAnArchive
        );
        let mut v = bytes.clone();
        v[8] = 9;
        assert_eq!(
            SystemArchive::parse(&v).unwrap_err(),
            SystemError::Version(9)
        );
        let mut v = bytes.clone();
        v.truncate(v.len() - 1);
        assert_eq!(
            SystemArchive::parse(&v).unwrap_err(),
            SystemError::BadReference
        );
        let mut bad = manifest();
        bad.endpoints[0].server = 9;
        let bytes = build_archive(&mut bad, &[&[1], &[2]]).unwrap();
        assert_eq!(
            SystemArchive::parse(&bytes).unwrap_err(),
            SystemError::BadReference
        );
    }

    proptest::proptest! {
        #[test]
        fn corrupted_archives_never_panic(flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..8)) {
            let mut m = manifest();
            let mut bytes = build_archive(&mut m, &[&[1; 40], &[2; 40]]).unwrap();
            for (at, v) in flips { let at = at % bytes.len(); bytes[at] = v; }
            let _ = SystemArchive::parse(&bytes);
        }
    }
}

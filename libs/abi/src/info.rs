//! Structures the kernel writes for user space: the task information page and fault reports.
//!
//! Both are `#[repr(C)]` with no padding and derive `zerocopy`'s byte conversions, like
//! [`Message`]: the kernel builds them in private memory and copies the bytes out; a task reads
//! them without casts and checks every field it relies on.

use core::mem::size_of;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::caps::{CapSlot, CapabilityKind};
use crate::error::{Error, UnknownValue};
use crate::message::{MAX_PAYLOAD, Message, MessageHeader};
use crate::task::TaskId;

/// [`TaskInfo::magic`]: the bytes `"MOAT"` read as a little-endian `u32`.
pub const TASK_INFO_MAGIC: u32 = u32::from_le_bytes(*b"MOAT");
/// [`TaskInfo::version`] of the layout defined here. A task refuses a page with another version.
pub const TASK_INFO_VERSION: u32 = 2;
/// Bytes in [`TaskInfo::name`] (NUL padded; a name of exactly this length has no NUL).
pub const TASK_NAME_LEN: usize = 32;
/// Bytes in [`CapEntry::name`] (NUL padded).
pub const CAP_NAME_LEN: usize = 24;
/// Entries in [`TaskInfo::capabilities`]: the most initial capabilities a task can be given.
pub const MAX_INITIAL_CAPS: usize = 64;
/// Largest per-task configuration blob ([`TaskInfo::config`]).
pub const MAX_TASK_CONFIG: usize = 1024;

/// Label of a [`FaultReport`] message (the first kernel-reserved label).
pub const LABEL_FAULT_REPORT: u32 = MessageHeader::KERNEL_LABEL_BASE;

/// One of a task's initial capabilities, by the name the system manifest gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CapEntry {
    /// The manifest name (e.g. `"dma"`, `"irq"`, `"mmio"`, `"serve"`, `"tasks"`), NUL padded.
    pub name: [u8; CAP_NAME_LEN],
    /// Where the capability sits in the task's table.
    pub slot: CapSlot,
    /// Raw [`CapabilityKind`].
    pub kind: u32,
}

impl CapEntry {
    /// An entry, or [`Error::BadLength`] for an empty name or one longer than
    /// [`CAP_NAME_LEN`], or [`Error::InvalidArgument`] for a name containing NUL.
    pub fn new(name: &str, slot: CapSlot, kind: CapabilityKind) -> Result<CapEntry, Error> {
        let mut entry = CapEntry {
            name: [0; CAP_NAME_LEN],
            slot,
            kind: kind.to_raw(),
        };
        copy_name(&mut entry.name, name.as_bytes())?;
        Ok(entry)
    }

    /// The name without its NUL padding.
    pub fn name(&self) -> &[u8] {
        trim_nul(&self.name)
    }

    /// The capability's slot.
    pub const fn slot(&self) -> CapSlot {
        self.slot
    }

    /// The capability's kind, checked.
    pub fn kind(&self) -> Result<CapabilityKind, UnknownValue> {
        CapabilityKind::try_from(self.kind)
    }
}

/// The read-only page at [`TASK_INFO_VA`](crate::TASK_INFO_VA) describing the task to itself.
///
/// The kernel fills it before the task's first instruction. Tasks find their initial
/// capabilities here by manifest name ([`TaskInfo::find_capability`]) and never hard-code slots.
/// Nothing in it is secret or authoritative: holding a slot number grants nothing by itself.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TaskInfo {
    /// [`TASK_INFO_MAGIC`].
    pub magic: u32,
    /// [`TASK_INFO_VERSION`].
    pub version: u32,
    /// The task's own id (index and generation) for this instance.
    pub task_id: TaskId,
    /// The task's index in the manifest (equal to `task_id.index()`).
    pub task_index: u16,
    /// How many entries of `capabilities` are meaningful (at most [`MAX_INITIAL_CAPS`]).
    pub capability_count: u16,
    /// The task's manifest name, NUL padded.
    pub name: [u8; TASK_NAME_LEN],
    /// The initial capabilities; only the first `capability_count` are meaningful.
    pub capabilities: [CapEntry; MAX_INITIAL_CAPS],
    /// How many bytes of `config` are meaningful.
    pub config_length: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Task-specific configuration that `cargo xtask` compiled from the manifest (for the DMA
    /// server: its clients' quotas), postcard-encoded by convention.
    pub config: [u8; MAX_TASK_CONFIG],
    /// Where `entropy` came from: [`ENTROPY_RNDR`] (the CPU's random number instruction mixed
    /// in) or [`ENTROPY_HOST_CONTROLLED`] (boot loader seed and timer jitter only — in a Realm
    /// the host controls both, so such entropy is not secret from the host).
    pub entropy_source: u32,
    /// Reserved, zero.
    pub reserved2: u32,
    /// 32 bytes of per-instance entropy from the kernel's pool, for seeding a task's generator
    /// (TCP sequence numbers, ports, DHCP transaction ids).
    pub entropy: [u8; 32],
}

/// [`TaskInfo::entropy_source`]: the CPU's RNDR instruction contributed.
pub const ENTROPY_RNDR: u32 = 1;
/// [`TaskInfo::entropy_source`]: only host-controllable sources (DTB seed, timer jitter).
pub const ENTROPY_HOST_CONTROLLED: u32 = 2;

const _: () = assert!(size_of::<CapEntry>() == 32);
const _: () =
    assert!(size_of::<TaskInfo>() == 48 + 32 * MAX_INITIAL_CAPS + 8 + MAX_TASK_CONFIG + 40);
const _: () = assert!(size_of::<TaskInfo>() <= crate::PAGE_SIZE);

impl TaskInfo {
    /// A page for task `task_id` named `name` with no capabilities, or [`Error::BadLength`] if the
    /// name is empty or longer than [`TASK_NAME_LEN`] ([`Error::InvalidArgument`] if it
    /// contains NUL).
    pub fn new(task_id: TaskId, name: &str) -> Result<TaskInfo, Error> {
        let mut info: TaskInfo = FromZeros::new_zeroed();
        info.magic = TASK_INFO_MAGIC;
        info.version = TASK_INFO_VERSION;
        info.task_id = task_id;
        info.task_index = task_id.index();
        copy_name(&mut info.name, name.as_bytes())?;
        Ok(info)
    }

    /// Adds a capability: [`Error::CapabilityTableFull`] when [`MAX_INITIAL_CAPS`] are already
    /// listed, [`Error::SlotInUse`] when the name is already listed, else as [`CapEntry::new`].
    pub fn push_capability(
        &mut self,
        name: &str,
        slot: CapSlot,
        kind: CapabilityKind,
    ) -> Result<(), Error> {
        let entry = CapEntry::new(name, slot, kind)?;
        if self.find_capability(name).is_some() {
            return Err(Error::SlotInUse);
        }
        let index = usize::from(self.capability_count);
        let destination = self
            .capabilities
            .get_mut(index)
            .ok_or(Error::CapabilityTableFull)?;
        *destination = entry;
        self.capability_count += 1;
        Ok(())
    }

    /// Sets the configuration blob ([`Error::BadLength`] if longer than [`MAX_TASK_CONFIG`]).
    pub fn set_config(&mut self, config: &[u8]) -> Result<(), Error> {
        let destination = self
            .config
            .get_mut(..config.len())
            .ok_or(Error::BadLength)?;
        destination.copy_from_slice(config);
        self.config_length = config.len() as u32;
        Ok(())
    }

    /// The configuration blob (empty if the manifest gave none).
    pub fn config(&self) -> &[u8] {
        let length = (self.config_length as usize).min(MAX_TASK_CONFIG);
        &self.config[..length]
    }

    /// Checks the magic, the version and the counts ([`Error::InvalidArgument`]).
    pub fn check(&self) -> Result<(), Error> {
        if self.magic != TASK_INFO_MAGIC
            || self.version != TASK_INFO_VERSION
            || usize::from(self.capability_count) > MAX_INITIAL_CAPS
            || self.config_length as usize > MAX_TASK_CONFIG
        {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// The task's name without NUL padding.
    pub fn name(&self) -> &[u8] {
        trim_nul(&self.name)
    }

    /// The task's name as text (`"?"` if it is not UTF-8).
    pub fn name_str(&self) -> &str {
        core::str::from_utf8(self.name()).unwrap_or("?")
    }

    /// The meaningful capability entries (the count is clamped to [`MAX_INITIAL_CAPS`]).
    pub fn capabilities(&self) -> &[CapEntry] {
        let count = usize::from(self.capability_count).min(MAX_INITIAL_CAPS);
        &self.capabilities[..count]
    }

    /// The entry for the capability the manifest calls `name`, if the task has one.
    pub fn find_capability(&self, name: &str) -> Option<&CapEntry> {
        self.capabilities()
            .iter()
            .find(|entry| entry.name() == name.as_bytes())
    }

    /// The page's bytes (what the kernel copies to the task).
    pub fn to_bytes(&self) -> &[u8] {
        self.as_bytes()
    }

    /// A page read from bytes (at least `size_of::<TaskInfo>()` long; the rest is ignored), or
    /// `None` if too short. Not checked: call [`TaskInfo::check`].
    pub fn from_prefix(bytes: &[u8]) -> Option<TaskInfo> {
        TaskInfo::read_from_prefix(bytes).ok().map(|(info, _)| info)
    }
}

/// Why a task stopped, in a [`FaultReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FaultReason {
    /// A data abort (bad load or store); `far` is the faulting address.
    DataAbort = 1,
    /// An instruction abort (jump to unmapped or non-executable memory); `far` is the address.
    InstructionAbort = 2,
    /// An undefined or not-allowed instruction.
    Undefined = 3,
    /// A syscall the kernel treats as a fault (an unknown number); `detail` is the number.
    BadSyscall = 4,
    /// Stopped by `TaskKill`; `detail` is the raw id of the killer.
    Killed = 5,
    /// Ended with `Exit`; `detail` is the exit code.
    Exited = 6,
    /// Any other exception (alignment, SP alignment, breakpoint…); `esr` tells which.
    Other = 7,
}

impl FaultReason {
    /// Every reason, in numeric order.
    pub const ALL: [FaultReason; 7] = [
        FaultReason::DataAbort,
        FaultReason::InstructionAbort,
        FaultReason::Undefined,
        FaultReason::BadSyscall,
        FaultReason::Killed,
        FaultReason::Exited,
        FaultReason::Other,
    ];

    /// The raw value.
    pub const fn to_raw(self) -> u16 {
        self as u16
    }

    /// A short lower-case description, for logs.
    pub const fn description(self) -> &'static str {
        match self {
            FaultReason::DataAbort => "data abort",
            FaultReason::InstructionAbort => "instruction abort",
            FaultReason::Undefined => "undefined instruction",
            FaultReason::BadSyscall => "bad syscall",
            FaultReason::Killed => "killed",
            FaultReason::Exited => "exited",
            FaultReason::Other => "other exception",
        }
    }
}

impl TryFrom<u16> for FaultReason {
    type Error = UnknownValue;

    fn try_from(raw: u16) -> Result<Self, UnknownValue> {
        Ok(match raw {
            1 => FaultReason::DataAbort,
            2 => FaultReason::InstructionAbort,
            3 => FaultReason::Undefined,
            4 => FaultReason::BadSyscall,
            5 => FaultReason::Killed,
            6 => FaultReason::Exited,
            7 => FaultReason::Other,
            other => return Err(UnknownValue(u64::from(other))),
        })
    }
}

/// The payload of a [`LABEL_FAULT_REPORT`] message: a task stopped.
///
/// The kernel queues it on the supervisor's endpoint (task index 0, its first Serve capability)
/// with sender [`TaskId::KERNEL`] and badge 0 whenever a task faults, is killed or exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FaultReport {
    /// The stopped task's index.
    pub task_index: u16,
    /// Raw [`FaultReason`].
    pub reason: u16,
    /// The id of the instance that stopped (already stale when the report arrives).
    pub task_id: TaskId,
    /// Exception syndrome register (0 when not an exception).
    pub esr: u64,
    /// Fault address register (0 when not meaningful).
    pub far: u64,
    /// Address of the instruction that faulted (or of the syscall).
    pub elr: u64,
    /// Exit code, killer id or syscall number, by reason (see [`FaultReason`]).
    pub detail: u64,
}

const _: () = assert!(size_of::<FaultReport>() == 40);
const _: () = assert!(size_of::<FaultReport>() <= MAX_PAYLOAD);

impl FaultReport {
    /// The reason, checked.
    pub fn reason(&self) -> Result<FaultReason, UnknownValue> {
        FaultReason::try_from(self.reason)
    }

    /// The message the kernel queues for this report (label [`LABEL_FAULT_REPORT`], sender
    /// [`TaskId::KERNEL`], badge 0).
    pub fn to_message(&self) -> Message {
        let mut message = Message::empty(LABEL_FAULT_REPORT);
        message.header.sender = TaskId::KERNEL;
        message.payload[..size_of::<FaultReport>()].copy_from_slice(self.as_bytes());
        message.header.length = size_of::<FaultReport>() as u16;
        message
    }

    /// The report in `message`, or `None` unless it has label [`LABEL_FAULT_REPORT`], comes
    /// from [`TaskId::KERNEL`] and carries exactly one report. (A task cannot forge the sender.)
    pub fn from_message(message: &Message) -> Option<FaultReport> {
        if message.label() != LABEL_FAULT_REPORT || message.header.sender != TaskId::KERNEL {
            return None;
        }
        FaultReport::read_from_bytes(message.payload()).ok()
    }
}

fn copy_name(destination: &mut [u8], name: &[u8]) -> Result<(), Error> {
    if name.is_empty() || name.len() > destination.len() {
        return Err(Error::BadLength);
    }
    if name.contains(&0) {
        return Err(Error::InvalidArgument);
    }
    destination.fill(0);
    destination[..name.len()].copy_from_slice(name);
    Ok(())
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::mem::offset_of;

    use super::*;

    #[test]
    fn layout_is_fixed() {
        assert_eq!(offset_of!(TaskInfo, magic), 0);
        assert_eq!(offset_of!(TaskInfo, version), 4);
        assert_eq!(offset_of!(TaskInfo, task_id), 8);
        assert_eq!(offset_of!(TaskInfo, task_index), 12);
        assert_eq!(offset_of!(TaskInfo, capability_count), 14);
        assert_eq!(offset_of!(TaskInfo, name), 16);
        assert_eq!(offset_of!(TaskInfo, capabilities), 48);
        assert_eq!(offset_of!(CapEntry, slot), 24);
        assert_eq!(offset_of!(CapEntry, kind), 28);
        assert_eq!(offset_of!(FaultReport, task_id), 4);
        assert_eq!(offset_of!(FaultReport, esr), 8);
        assert_eq!(offset_of!(FaultReport, detail), 32);
        assert_eq!(&TASK_INFO_MAGIC.to_le_bytes(), b"MOAT");
    }

    #[test]
    fn task_info_names_and_capabilities() {
        let mut info = TaskInfo::new(TaskId::new(3, 1), "blk").expect("valid");
        assert_eq!(info.check(), Ok(()));
        assert_eq!(info.name(), b"blk");
        assert_eq!(info.name_str(), "blk");
        assert_eq!(info.task_index, 3);
        info.push_capability("dma", CapSlot(2), CapabilityKind::Endpoint)
            .expect("room");
        info.push_capability("irq", CapSlot(5), CapabilityKind::Irq)
            .expect("room");
        assert_eq!(
            info.push_capability("dma", CapSlot(9), CapabilityKind::Endpoint),
            Err(Error::SlotInUse)
        );
        let dma = info.find_capability("dma").expect("listed");
        assert_eq!(dma.slot(), CapSlot(2));
        assert_eq!(dma.kind(), Ok(CapabilityKind::Endpoint));
        assert_eq!(
            info.find_capability("irq").map(CapEntry::slot),
            Some(CapSlot(5))
        );
        assert!(info.find_capability("dm").is_none());
        assert!(info.find_capability("").is_none());

        let copy = TaskInfo::from_prefix(info.to_bytes()).expect("long enough");
        assert_eq!(copy, info);
        assert!(TaskInfo::from_prefix(&info.to_bytes()[1..]).is_none());
    }

    #[test]
    fn task_info_rejects_bad_input() {
        assert_eq!(TaskInfo::new(TaskId(0), "").err(), Some(Error::BadLength));
        assert_eq!(
            TaskInfo::new(TaskId(0), &"x".repeat(33)).err(),
            Some(Error::BadLength)
        );
        assert!(TaskInfo::new(TaskId(0), &"x".repeat(32)).is_ok());
        assert_eq!(
            TaskInfo::new(TaskId(0), "a\0b").err(),
            Some(Error::InvalidArgument)
        );
        assert_eq!(
            CapEntry::new(&"c".repeat(25), CapSlot(0), CapabilityKind::Irq),
            Err(Error::BadLength)
        );

        let mut info = TaskInfo::new(TaskId(0), "full").expect("valid");
        for index in 0..MAX_INITIAL_CAPS {
            let name = [b'a' + (index / 26) as u8, b'a' + (index % 26) as u8];
            let name = core::str::from_utf8(&name).expect("ascii");
            info.push_capability(name, CapSlot(index as u32), CapabilityKind::Memory)
                .expect("room");
        }
        assert_eq!(
            info.push_capability("zz", CapSlot(99), CapabilityKind::Memory),
            Err(Error::CapabilityTableFull)
        );

        let mut corrupt = info.clone();
        corrupt.capability_count = u16::MAX;
        assert_eq!(corrupt.check(), Err(Error::InvalidArgument));
        assert_eq!(corrupt.capabilities().len(), MAX_INITIAL_CAPS);
        let mut wrong_magic = info.clone();
        wrong_magic.magic = 0;
        assert_eq!(wrong_magic.check(), Err(Error::InvalidArgument));
        let mut wrong_version = info.clone();
        wrong_version.version = TASK_INFO_VERSION + 1;
        assert_eq!(wrong_version.check(), Err(Error::InvalidArgument));
        let mut long_config = info.clone();
        long_config.config_length = MAX_TASK_CONFIG as u32 + 1;
        assert_eq!(long_config.check(), Err(Error::InvalidArgument));
        let mut configured = info;
        assert_eq!(
            configured.set_config(&[0; MAX_TASK_CONFIG + 1]),
            Err(Error::BadLength)
        );
        configured.set_config(b"quota").expect("fits");
        assert_eq!(configured.config(), b"quota");
        assert_eq!(configured.check(), Ok(()));
    }

    #[test]
    fn fault_reasons_round_trip() {
        for (index, reason) in FaultReason::ALL.iter().enumerate() {
            assert_eq!(usize::from(reason.to_raw()), index + 1);
            assert_eq!(FaultReason::try_from(reason.to_raw()), Ok(*reason));
            assert!(!reason.description().is_empty());
        }
        assert!(FaultReason::try_from(0).is_err());
        assert!(FaultReason::try_from(8).is_err());
    }

    #[test]
    fn fault_report_messages() {
        let report = FaultReport {
            task_index: 4,
            reason: FaultReason::DataAbort.to_raw(),
            task_id: TaskId::new(4, 2),
            esr: 0x9200_0046,
            far: 0xdead_0000,
            elr: 0x20_1234,
            detail: 0,
        };
        let message = report.to_message();
        assert_eq!(message.label(), LABEL_FAULT_REPORT);
        assert!(message.label() >= MessageHeader::KERNEL_LABEL_BASE);
        assert_eq!(FaultReport::from_message(&message), Some(report));
        assert_eq!(report.reason(), Ok(FaultReason::DataAbort));

        let mut forged = message.clone();
        forged.header.sender = TaskId::new(1, 0);
        assert_eq!(FaultReport::from_message(&forged), None);
        let mut short = message.clone();
        short.header.length -= 1;
        assert_eq!(FaultReport::from_message(&short), None);
        let mut relabelled = message;
        relabelled.header.label = 1;
        assert_eq!(FaultReport::from_message(&relabelled), None);
    }
}

//! Syscall numbers (`x8`), with the arguments and results of each, and the small enums they
//! return.

use crate::error::UnknownValue;

/// A syscall number, passed in `x8`.
///
/// Each variant lists its arguments (`x0`…) and its results (`x1`…, valid only when `x0` = 0).
/// "slot" arguments are [`CapSlot`] values; "message" arguments are the address of a
/// [`Message`]-sized buffer ([`MESSAGE_SIZE`] bytes, 8-byte aligned, mapped readable for sends and
/// writable for receives — otherwise [`Error::BadAddress`] / [`Error::BadAlignment`]).
///
/// [`CapSlot`]: crate::CapSlot
/// [`Message`]: crate::Message
/// [`MESSAGE_SIZE`]: crate::MESSAGE_SIZE
/// [`Error::BadAddress`]: crate::Error::BadAddress
/// [`Error::BadAlignment`]: crate::Error::BadAlignment
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Syscall {
    /// Give up the rest of the time slice to tasks of the same priority. No arguments or results.
    Yield = 0,
    /// End the calling task. `x0` = exit code (reported to the supervisor). Does not return.
    Exit = 1,
    /// Write bytes to the kernel console. `x0` = address, `x1` = length (at most 4096).
    /// Result: `x1` = bytes written.
    ConsoleWrite = 2,
    /// Read the monotonic clock. Result: `x1` = nanoseconds since boot.
    Time = 3,
    /// The caller's own id. Result: `x1` = raw [`TaskId`](crate::TaskId).
    TaskSelf = 4,

    /// Queue a message on an endpoint; never blocks. `x0` = endpoint slot (needs `SEND`),
    /// `x1` = message. The kernel stamps the capability's badge and the sender's id.
    /// Errors: [`QueueFull`](crate::Error::QueueFull) when the queue, or this sender's share of
    /// it, is full; [`Dead`](crate::Error::Dead) when the serving task is gone.
    Send = 5,
    /// Wait for a message or a notification. `x0` = endpoint slot (needs `RECEIVE`), or
    /// `CapSlot::NONE` to wait for notifications only; `x1` = message buffer; `x2` = raw
    /// [`Timeout`](crate::Timeout); `x3` = notification mask (pending bits in the mask end the
    /// wait; 0 = messages only). Results: `x1` = [`RecvKind`]; for
    /// [`RecvKind::Notification`], `x2` = the pending bits of the mask (now cleared) and the
    /// buffer is untouched. Notifications are checked first, so an interrupt is never starved by
    /// a busy queue.
    Recv = 6,
    /// Send a message and wait for the reply. `x0` = endpoint slot (needs `SEND`), `x1` = message
    /// (the request on entry, the reply on return), `x2` = raw [`Timeout`](crate::Timeout) for
    /// the whole exchange. The server sees the request with a one-shot Reply capability.
    /// Errors: as for `Send`, plus [`Dead`](crate::Error::Dead) if the server dies or drops the
    /// Reply capability, [`TimedOut`](crate::Error::TimedOut).
    Call = 7,
    /// Answer a call. `x0` = Reply slot (consumed, whatever the outcome), `x1` = message.
    /// Error: [`Dead`](crate::Error::Dead) when the caller is gone or stopped waiting.
    Reply = 8,

    /// Wait for notification bits. `x0` = mask, `x1` = raw [`Timeout`](crate::Timeout).
    /// Result: `x1` = the pending bits of the mask (now cleared).
    NotifyWait = 9,
    /// Set bits in another task's notification word. `x0` = notification slot (needs `SEND`);
    /// the bits set are the capability's badge, so a holder cannot raise bits it was not given.
    NotifySignal = 10,
    /// Acknowledge an interrupt and unmask its line. `x0` = Irq slot.
    IrqAck = 11,

    /// Describe a capability. `x0` = slot. Results: `x1` = [`CapabilityKind`](crate::CapabilityKind),
    /// `x2` = [`Rights`](crate::Rights) bits, `x3` = badge.
    CapInfo = 12,
    /// Copy a capability with fewer rights and optionally a badge. `x0` = slot, `x1` = rights
    /// (must be a subset of the source's), `x2` = badge (0 = keep the source's; a new badge only
    /// on an unbadged Endpoint or Notification). Result: `x1` = new slot.
    CapDerive = 13,
    /// Remove a capability from the caller's table. `x0` = slot. Dropping a Reply capability
    /// fails the waiting call with [`Dead`](crate::Error::Dead).
    CapDrop = 14,

    /// Allocate physically contiguous frames from the task's quota. `x0` = page count,
    /// `x1` = alignment in pages (a power of two; 0 means 1), `x2` = flags
    /// ([`MEM_ALLOC_SHAREABLE`]: from the shareable region, the only memory `Share` accepts). Result: `x1` = Memory slot with
    /// `READ | WRITE | TRANSFER` (plus `PHYSICAL` with [`MEM_ALLOC_PHYSICAL_FOR_TESTS`], which
    /// only a kernel built for tests accepts). The frames are
    /// zeroed and return to the quota when the last capability to them is dropped.
    MemAlloc = 15,
    /// Map memory into the caller. `x0` = Memory slot, `x1` = virtual address (page aligned),
    /// `x2` = rights for the mapping (`READ`, `WRITE`, `EXECUTE`; a subset of the capability's,
    /// never `WRITE` with `EXECUTE`), `x3` = first page within the object, `x4` = page count
    /// (0 = to the end).
    MemMap = 16,
    /// Unmap memory. `x0` = virtual address (page aligned), `x1` = page count.
    MemUnmap = 17,
    /// Describe a Memory capability. `x0` = slot. Results: `x1` = page count, `x2` = device
    /// address of the first page (only with `PHYSICAL`, else 0), `x3` = state bits (bit 0: shared
    /// with the host).
    MemInfo = 18,
    /// Make a capability to a sub-range of a Memory object. `x0` = Memory slot, `x1` = first
    /// page, `x2` = page count, `x3` = rights (a subset of the source's). Result: `x1` = new slot.
    /// The DMA server carves client windows out of its pool this way.
    MemSlice = 19,
    /// Map a device MMIO region (Device-nGnRE). `x0` = Mmio slot, `x1` = virtual address (page
    /// aligned), `x2` = rights (`READ`, `WRITE`). Result: `x1` = region size in bytes.
    MmioMap = 20,

    /// Make memory shared with the host (Realm state EMPTY, mapped at the unprotected alias).
    /// `x0` = Share slot, `x1` = Memory slot. Content is not preserved. Refused with
    /// [`MappedElsewhere`](crate::Error::MappedElsewhere) when another task maps any of the
    /// frames. Result: `x1` = device address of the first page.
    Share = 21,
    /// Return shared memory to private (Realm state RAM). `x0` = Share slot, `x1` = Memory slot.
    /// Content is not preserved.
    Unshare = 22,

    /// Stop a task. `x0` = TaskControl slot, `x1` = raw [`TaskId`](crate::TaskId) (a stale id
    /// gives [`Dead`](crate::Error::Dead), so the supervisor never kills a newer instance).
    TaskKill = 23,
    /// Start a fresh instance of a task from its image (stopping the current one if it runs).
    /// `x0` = TaskControl slot, `x1` = task index. Result: `x1` = the new raw
    /// [`TaskId`](crate::TaskId).
    TaskRestart = 24,
    /// Inspect a task. `x0` = TaskControl slot, `x1` = task index. Results: `x1` =
    /// [`TaskState`], `x2` = current raw [`TaskId`](crate::TaskId), `x3` = detail (exit code, or
    /// the fault's syndrome register for [`TaskState::Faulted`]).
    TaskStatus = 25,
    /// Power the system off. `x0` = TaskControl slot, `x1` = exit status (0 = success; reported
    /// through semihosting when the runner enabled it, else PSCI SYSTEM_OFF). Does not return.
    SystemOff = 26,
    /// Answer a call and wait for the next message in one trap: a server's loop. `x0` = Reply
    /// slot as for `Reply`, or `CapSlot::NONE` to only receive; `x1` = message buffer (the reply
    /// on entry, the next message on return); `x2`, `x3`, `x4` = endpoint slot, raw
    /// [`Timeout`](crate::Timeout) and notification mask, as `x0`, `x2`, `x3` of `Recv`. Results
    /// as for `Recv`. A caller that is gone or stopped waiting does not stop the receive (the
    /// reply is dropped, as `Reply` would report [`Dead`](crate::Error::Dead)); any other reply
    /// error is returned at once and nothing is received (the Reply capability is consumed).
    ReplyRecv = 27,
    /// Read bytes typed on the kernel console. `x0` = ConsoleInput slot (needs `RECEIVE`),
    /// `x1` = buffer address (any alignment, mapped writable, not device memory), `x2` = length
    /// (1 to [`Syscall::CONSOLE_READ_MAX`]), `x3` = raw [`Timeout`](crate::Timeout). Blocks until
    /// at least one byte has arrived. Result: `x1` = bytes read (at least 1). Errors:
    /// [`WouldBlock`](crate::Error::WouldBlock) (non-blocking, nothing typed),
    /// [`TimedOut`](crate::Error::TimedOut), [`BadAddress`](crate::Error::BadAddress),
    /// [`BadLength`](crate::Error::BadLength), [`Busy`](crate::Error::Busy) when another task
    /// already waits for input.
    ConsoleRead = 28,
}

/// `MemAlloc` flag: allocate from the kernel's shareable region. Only such memory can be made
/// shared with the host (`Share`); the region is mapped page by page so pages can change state.
pub const MEM_ALLOC_SHAREABLE: u64 = 1 << 0;

/// `MemAlloc` flag, honoured **only by a kernel built for tests** (cargo feature `test-hooks`;
/// any other kernel refuses it with `InvalidArgument`): the Memory capability also carries
/// `PHYSICAL`, so `MemInfo` reports the frames' address. It exists for one test task,
/// `faultydma`, which hands a device the address of its *private* memory on purpose to show
/// that in a Realm the device sees host memory there, never the private bytes
/// (docs/realm.md). No real task has a reason to learn a private frame's address.
pub const MEM_ALLOC_PHYSICAL_FOR_TESTS: u64 = 1 << 1;

impl Syscall {
    /// Every syscall, in numeric order.
    pub const ALL: [Syscall; 29] = [
        Syscall::Yield,
        Syscall::Exit,
        Syscall::ConsoleWrite,
        Syscall::Time,
        Syscall::TaskSelf,
        Syscall::Send,
        Syscall::Recv,
        Syscall::Call,
        Syscall::Reply,
        Syscall::NotifyWait,
        Syscall::NotifySignal,
        Syscall::IrqAck,
        Syscall::CapInfo,
        Syscall::CapDerive,
        Syscall::CapDrop,
        Syscall::MemAlloc,
        Syscall::MemMap,
        Syscall::MemUnmap,
        Syscall::MemInfo,
        Syscall::MemSlice,
        Syscall::MmioMap,
        Syscall::Share,
        Syscall::Unshare,
        Syscall::TaskKill,
        Syscall::TaskRestart,
        Syscall::TaskStatus,
        Syscall::SystemOff,
        Syscall::ReplyRecv,
        Syscall::ConsoleRead,
    ];

    /// Largest number of bytes one `ConsoleWrite` accepts.
    pub const CONSOLE_WRITE_MAX: usize = 4096;

    /// Largest number of bytes one `ConsoleRead` asks for.
    pub const CONSOLE_READ_MAX: usize = 4096;

    /// The value for `x8`.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }
}

impl From<Syscall> for u32 {
    fn from(syscall: Syscall) -> u32 {
        syscall.to_raw()
    }
}

impl TryFrom<u32> for Syscall {
    type Error = UnknownValue;

    fn try_from(raw: u32) -> Result<Self, UnknownValue> {
        Ok(match raw {
            0 => Syscall::Yield,
            1 => Syscall::Exit,
            2 => Syscall::ConsoleWrite,
            3 => Syscall::Time,
            4 => Syscall::TaskSelf,
            5 => Syscall::Send,
            6 => Syscall::Recv,
            7 => Syscall::Call,
            8 => Syscall::Reply,
            9 => Syscall::NotifyWait,
            10 => Syscall::NotifySignal,
            11 => Syscall::IrqAck,
            12 => Syscall::CapInfo,
            13 => Syscall::CapDerive,
            14 => Syscall::CapDrop,
            15 => Syscall::MemAlloc,
            16 => Syscall::MemMap,
            17 => Syscall::MemUnmap,
            18 => Syscall::MemInfo,
            19 => Syscall::MemSlice,
            20 => Syscall::MmioMap,
            21 => Syscall::Share,
            22 => Syscall::Unshare,
            23 => Syscall::TaskKill,
            24 => Syscall::TaskRestart,
            25 => Syscall::TaskStatus,
            26 => Syscall::SystemOff,
            27 => Syscall::ReplyRecv,
            28 => Syscall::ConsoleRead,
            other => return Err(UnknownValue(u64::from(other))),
        })
    }
}

impl TryFrom<u64> for Syscall {
    type Error = UnknownValue;

    /// Decodes the full `x8` register: any bit above the low 32 makes the number unknown.
    fn try_from(raw: u64) -> Result<Self, UnknownValue> {
        let narrow = u32::try_from(raw).map_err(|_| UnknownValue(raw))?;
        Syscall::try_from(narrow)
    }
}

/// What ended a `Recv` (its result in `x1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RecvKind {
    /// A message was written to the buffer.
    Message = 0,
    /// Notification bits are in `x2`; the buffer is untouched.
    Notification = 1,
}

impl RecvKind {
    /// The raw value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }
}

impl TryFrom<u32> for RecvKind {
    type Error = UnknownValue;

    fn try_from(raw: u32) -> Result<Self, UnknownValue> {
        match raw {
            0 => Ok(RecvKind::Message),
            1 => Ok(RecvKind::Notification),
            other => Err(UnknownValue(u64::from(other))),
        }
    }
}

/// The state of a task slot, as `TaskStatus` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TaskState {
    /// No task has been created in this slot.
    Empty = 0,
    /// Running or ready to run.
    Runnable = 1,
    /// Waiting in `Recv`, `Call` or `NotifyWait`.
    Blocked = 2,
    /// Stopped by a fault; the detail is the syndrome (ESR) value.
    Faulted = 3,
    /// Ended with `Exit`; the detail is the exit code.
    Exited = 4,
    /// Stopped by `TaskKill`.
    Killed = 5,
}

impl TaskState {
    /// Every state, in numeric order.
    pub const ALL: [TaskState; 6] = [
        TaskState::Empty,
        TaskState::Runnable,
        TaskState::Blocked,
        TaskState::Faulted,
        TaskState::Exited,
        TaskState::Killed,
    ];

    /// The raw value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// Whether a task in this state is alive (its id still accepts IPC).
    pub const fn is_alive(self) -> bool {
        matches!(self, TaskState::Runnable | TaskState::Blocked)
    }
}

impl TryFrom<u32> for TaskState {
    type Error = UnknownValue;

    fn try_from(raw: u32) -> Result<Self, UnknownValue> {
        Ok(match raw {
            0 => TaskState::Empty,
            1 => TaskState::Runnable,
            2 => TaskState::Blocked,
            3 => TaskState::Faulted,
            4 => TaskState::Exited,
            5 => TaskState::Killed,
            other => return Err(UnknownValue(u64::from(other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscalls_round_trip_and_are_dense() {
        for (number, syscall) in Syscall::ALL.iter().enumerate() {
            assert_eq!(syscall.to_raw() as usize, number);
            assert_eq!(Syscall::try_from(syscall.to_raw()), Ok(*syscall));
            assert_eq!(Syscall::try_from(u64::from(syscall.to_raw())), Ok(*syscall));
        }
        let count = Syscall::ALL.len() as u32;
        assert_eq!(
            Syscall::try_from(count),
            Err(UnknownValue(u64::from(count)))
        );
        assert!(Syscall::try_from(u32::MAX).is_err());
        assert!(
            Syscall::try_from(1u64 << 32).is_err(),
            "high bits are not ignored"
        );
    }

    #[test]
    fn recv_kinds_round_trip() {
        for kind in [RecvKind::Message, RecvKind::Notification] {
            assert_eq!(RecvKind::try_from(kind.to_raw()), Ok(kind));
        }
        assert!(RecvKind::try_from(2).is_err());
    }

    #[test]
    fn task_states_round_trip() {
        for (number, state) in TaskState::ALL.iter().enumerate() {
            assert_eq!(state.to_raw() as usize, number);
            assert_eq!(TaskState::try_from(state.to_raw()), Ok(*state));
        }
        assert!(TaskState::try_from(6).is_err());
        assert!(TaskState::Blocked.is_alive());
        assert!(!TaskState::Faulted.is_alive());
    }
}

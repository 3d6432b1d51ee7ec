//! The [`Syscalls`] trait: one raw entry point plus typed wrappers for every syscall.
//!
//! Task code is written against `S: Syscalls`. On the target `S` is [`Kernel`](crate::Kernel),
//! which issues `svc #0`; in host tests it is `moat_testkit`'s fake kernel, which overrides the
//! typed methods (so it never has to dereference a raw pointer) and answers the raw entry point
//! for the calls that carry no pointer.

use moat_abi::{
    CapSlot, CapabilityKind, Error, MESSAGE_SIZE, Message, PAGE_SIZE, RecvKind, Rights, Syscall,
    TaskId, TaskState, Timeout, status_from_raw,
};

/// What ended a successful [`Syscalls::recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message was written to the buffer.
    Message,
    /// Notification bits of the mask were pending (they are now cleared); the buffer is
    /// untouched.
    Notification(u64),
}

/// What [`Syscalls::cap_info`] reports about a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapInfo {
    /// The capability's kind.
    pub kind: CapabilityKind,
    /// Its rights.
    pub rights: Rights,
    /// Its badge (0 when unbadged or not a badged kind).
    pub badge: u64,
}

/// What [`Syscalls::mem_info`] reports about a Memory capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Size in pages.
    pub pages: usize,
    /// Device address of the first page (only with `PHYSICAL`, else 0).
    pub device_address: u64,
    /// Whether the memory is currently shared with the host.
    pub shared: bool,
}

/// What [`Syscalls::task_status`] reports about a task slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// The slot's state.
    pub state: TaskState,
    /// The id of the current (or last) instance.
    pub id: TaskId,
    /// Exit code, or the fault's syndrome (ESR) for [`TaskState::Faulted`].
    pub detail: u64,
}

/// What ended a `Recv` or `ReplyRecv`, from its results (`x1` = kind, `x2` = bits).
fn received(results: [u64; 4]) -> Result<Received, Error> {
    let kind = u32::try_from(results[1])
        .ok()
        .and_then(|raw| RecvKind::try_from(raw).ok())
        .ok_or(Error::InvalidArgument)?;
    Ok(match kind {
        RecvKind::Message => Received::Message,
        RecvKind::Notification => Received::Notification(results[2]),
    })
}

/// Decodes the status in `x0`: the results on success, the error otherwise. A status this ABI
/// version does not know is reported as [`Error::InvalidArgument`] (the kernel and the task
/// disagree about the ABI; there is no better description).
pub fn check(results: [u64; 4]) -> Result<[u64; 4], Error> {
    match status_from_raw(results[0]) {
        Ok(Ok(())) => Ok(results),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::InvalidArgument),
    }
}

/// A slot number from a result register; a value that does not fit is
/// [`Error::InvalidArgument`].
fn slot_from(raw: u64) -> Result<CapSlot, Error> {
    u32::try_from(raw)
        .map(CapSlot)
        .map_err(|_| Error::InvalidArgument)
}

fn slot_arg(slot: CapSlot) -> u64 {
    u64::from(slot.0)
}

fn usize_arg(value: usize) -> u64 {
    // usize is at most 64 bits on every target Moat supports.
    value as u64
}

/// The syscall interface of a Moat task.
///
/// Only [`Syscalls::syscall`] must be implemented; every typed method has a default built on
/// it that follows the register convention in `moat_abi`. Fakes override the typed methods.
/// Errors are [`moat_abi::Error`] values exactly as the kernel returned them.
pub trait Syscalls {
    /// Issues syscall `number` with arguments `x0`–`x5` and returns `x0`–`x3`.
    ///
    /// # Safety
    ///
    /// Every pointer argument must be valid for the access the syscall documents (a message
    /// buffer readable, or writable and not aliased, for [`MESSAGE_SIZE`] bytes; console bytes
    /// readable), and calls that change the address space (`MemUnmap`, `Share`, `Unshare`) must
    /// not affect memory that Rust code still references.
    unsafe fn syscall(&self, number: Syscall, args: [u64; 6]) -> [u64; 4];

    /// Gives up the rest of the time slice.
    fn yield_now(&self) {
        // SAFETY: Yield takes no pointer and changes no memory.
        unsafe { self.syscall(Syscall::Yield, [0; 6]) };
    }

    /// Ends the task with `code` (0 = success); reported to the supervisor.
    fn exit(&self, code: u64) -> ! {
        // SAFETY: Exit takes no pointer.
        unsafe { self.syscall(Syscall::Exit, [code, 0, 0, 0, 0, 0]) };
        // The kernel never returns from Exit; if it did, do not run on.
        loop {
            core::hint::spin_loop();
        }
    }

    /// Writes up to [`Syscall::CONSOLE_WRITE_MAX`] bytes of `bytes` to the console and returns
    /// how many were written.
    fn console_write(&self, bytes: &[u8]) -> Result<usize, Error> {
        let length = bytes.len().min(Syscall::CONSOLE_WRITE_MAX);
        let address = bytes.as_ptr() as u64;
        // SAFETY: the kernel reads `length` bytes from `bytes`, which we borrow for the call.
        let results = check(unsafe {
            self.syscall(
                Syscall::ConsoleWrite,
                [address, usize_arg(length), 0, 0, 0, 0],
            )
        })?;
        Ok(usize::try_from(results[1]).unwrap_or(length).min(length))
    }

    /// Nanoseconds since boot (0 if the kernel refuses, which it does not).
    fn time(&self) -> u64 {
        // SAFETY: Time takes no pointer.
        check(unsafe { self.syscall(Syscall::Time, [0; 6]) }).map_or(0, |results| results[1])
    }

    /// The calling task's own id.
    fn task_self(&self) -> Result<TaskId, Error> {
        // SAFETY: TaskSelf takes no pointer.
        let results = check(unsafe { self.syscall(Syscall::TaskSelf, [0; 6]) })?;
        u32::try_from(results[1])
            .map(TaskId::from_raw)
            .map_err(|_| Error::InvalidArgument)
    }

    /// Queues `message` on `endpoint`; never blocks.
    fn send(&self, endpoint: CapSlot, message: &Message) -> Result<(), Error> {
        let address = core::ptr::from_ref(message) as u64;
        // SAFETY: the kernel reads MESSAGE_SIZE bytes from `message`, which we borrow.
        check(unsafe { self.syscall(Syscall::Send, [slot_arg(endpoint), address, 0, 0, 0, 0]) })
            .map(drop)
    }

    /// Waits for a message on `endpoint` (or [`CapSlot::NONE`]) or for notification bits in
    /// `mask`, up to `timeout`.
    fn recv(
        &self,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
        mask: u64,
    ) -> Result<Received, Error> {
        let address = core::ptr::from_mut(message) as u64;
        // SAFETY: the kernel writes MESSAGE_SIZE bytes to `message`, which we borrow mutably;
        // every bit pattern is a valid Message.
        let results = check(unsafe {
            self.syscall(
                Syscall::Recv,
                [slot_arg(endpoint), address, timeout.to_raw(), mask, 0, 0],
            )
        })?;
        received(results)
    }

    /// Sends `message` as a call on `endpoint` and waits up to `timeout` for the reply, which
    /// replaces `message`.
    fn call(
        &self,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let address = core::ptr::from_mut(message) as u64;
        // SAFETY: the kernel reads and then writes MESSAGE_SIZE bytes at `message`, which we
        // borrow mutably; every bit pattern is a valid Message.
        check(unsafe {
            self.syscall(
                Syscall::Call,
                [slot_arg(endpoint), address, timeout.to_raw(), 0, 0, 0],
            )
        })
        .map(drop)
    }

    /// Answers a call through its one-shot `reply` capability (consumed whatever the outcome).
    fn reply(&self, reply: CapSlot, message: &Message) -> Result<(), Error> {
        let address = core::ptr::from_ref(message) as u64;
        // SAFETY: the kernel reads MESSAGE_SIZE bytes from `message`, which we borrow.
        check(unsafe { self.syscall(Syscall::Reply, [slot_arg(reply), address, 0, 0, 0, 0]) })
            .map(drop)
    }

    /// A server's loop step in one trap: answers the call behind `reply` with `message` (skip
    /// with `CapSlot::NONE`), then waits on `endpoint` like [`Syscalls::recv`], the next
    /// message landing in the same buffer. A caller that is gone (`Dead`) does not stop the
    /// receive; another reply error is returned without receiving.
    fn reply_recv(
        &self,
        reply: CapSlot,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
        mask: u64,
    ) -> Result<Received, Error> {
        let address = core::ptr::from_mut(message) as u64;
        // SAFETY: the kernel reads the reply from `message` and then writes up to MESSAGE_SIZE
        // bytes of the next message to it, which we borrow mutably; every bit pattern is a
        // valid Message.
        let results = check(unsafe {
            self.syscall(
                Syscall::ReplyRecv,
                [
                    slot_arg(reply),
                    address,
                    slot_arg(endpoint),
                    timeout.to_raw(),
                    mask,
                    0,
                ],
            )
        })?;
        received(results)
    }

    /// Waits up to `timeout` for notification bits in `mask`; returns (and clears) those pending.
    fn notify_wait(&self, mask: u64, timeout: Timeout) -> Result<u64, Error> {
        // SAFETY: NotifyWait takes no pointer.
        let results = check(unsafe {
            self.syscall(Syscall::NotifyWait, [mask, timeout.to_raw(), 0, 0, 0, 0])
        })?;
        Ok(results[1])
    }

    /// Sets the badge bits of `notification` in its target's notification word.
    fn notify_signal(&self, notification: CapSlot) -> Result<(), Error> {
        // SAFETY: NotifySignal takes no pointer.
        check(unsafe {
            self.syscall(
                Syscall::NotifySignal,
                [slot_arg(notification), 0, 0, 0, 0, 0],
            )
        })
        .map(drop)
    }

    /// Acknowledges the interrupt of `irq` and unmasks its line.
    fn irq_ack(&self, irq: CapSlot) -> Result<(), Error> {
        // SAFETY: IrqAck takes no pointer.
        check(unsafe { self.syscall(Syscall::IrqAck, [slot_arg(irq), 0, 0, 0, 0, 0]) }).map(drop)
    }

    /// Describes the capability in `slot`.
    fn cap_info(&self, slot: CapSlot) -> Result<CapInfo, Error> {
        // SAFETY: CapInfo takes no pointer.
        let results =
            check(unsafe { self.syscall(Syscall::CapInfo, [slot_arg(slot), 0, 0, 0, 0, 0]) })?;
        let kind = u32::try_from(results[1])
            .ok()
            .and_then(|raw| CapabilityKind::try_from(raw).ok())
            .ok_or(Error::InvalidArgument)?;
        let rights = u32::try_from(results[2])
            .ok()
            .and_then(Rights::from_bits)
            .ok_or(Error::InvalidArgument)?;
        Ok(CapInfo {
            kind,
            rights,
            badge: results[3],
        })
    }

    /// Copies the capability in `slot` with `rights` (a subset) and `badge` (0 = keep).
    fn cap_derive(&self, slot: CapSlot, rights: Rights, badge: u64) -> Result<CapSlot, Error> {
        // SAFETY: CapDerive takes no pointer.
        let results = check(unsafe {
            self.syscall(
                Syscall::CapDerive,
                [slot_arg(slot), u64::from(rights.bits()), badge, 0, 0, 0],
            )
        })?;
        slot_from(results[1])
    }

    /// Removes the capability in `slot` from the caller's table.
    fn cap_drop(&self, slot: CapSlot) -> Result<(), Error> {
        // SAFETY: CapDrop takes no pointer.
        check(unsafe { self.syscall(Syscall::CapDrop, [slot_arg(slot), 0, 0, 0, 0, 0]) }).map(drop)
    }

    /// Allocates `pages` zeroed, physically contiguous frames aligned to `align_pages` (a power
    /// of two; 0 means 1) and returns the Memory capability.
    fn mem_alloc(&self, pages: usize, align_pages: usize) -> Result<CapSlot, Error> {
        // SAFETY: MemAlloc takes no pointer.
        let results = check(unsafe {
            self.syscall(
                Syscall::MemAlloc,
                [usize_arg(pages), usize_arg(align_pages), 0, 0, 0, 0],
            )
        })?;
        slot_from(results[1])
    }

    /// Maps `pages` pages (0 = to the end) of `memory`, from `first_page`, at `address` with
    /// `rights` (`READ`, `WRITE`, `EXECUTE`, never `WRITE` with `EXECUTE`).
    ///
    /// Safe: the kernel refuses to map over anything already mapped, so no memory Rust uses
    /// changes. Reading the new mapping is up to the caller.
    fn mem_map(
        &self,
        memory: CapSlot,
        address: usize,
        rights: Rights,
        first_page: usize,
        pages: usize,
    ) -> Result<(), Error> {
        // SAFETY: MemMap takes no pointer that the kernel dereferences and cannot replace an
        // existing mapping (AlreadyMapped).
        check(unsafe {
            self.syscall(
                Syscall::MemMap,
                [
                    slot_arg(memory),
                    usize_arg(address),
                    u64::from(rights.bits()),
                    usize_arg(first_page),
                    usize_arg(pages),
                    0,
                ],
            )
        })
        .map(drop)
    }

    /// Unmaps `pages` pages at `address`.
    ///
    /// # Safety
    ///
    /// No Rust reference, heap allocation, stack or code may live in the range: after the call
    /// touching it faults, and memory mapped there later would alias whatever still points in.
    unsafe fn mem_unmap(&self, address: usize, pages: usize) -> Result<(), Error> {
        // SAFETY: the caller guarantees nothing in the range is still in use.
        check(unsafe {
            self.syscall(
                Syscall::MemUnmap,
                [usize_arg(address), usize_arg(pages), 0, 0, 0, 0],
            )
        })
        .map(drop)
    }

    /// Describes a Memory capability.
    fn mem_info(&self, memory: CapSlot) -> Result<MemoryInfo, Error> {
        // SAFETY: MemInfo takes no pointer.
        let results =
            check(unsafe { self.syscall(Syscall::MemInfo, [slot_arg(memory), 0, 0, 0, 0, 0]) })?;
        Ok(MemoryInfo {
            pages: usize::try_from(results[1]).map_err(|_| Error::InvalidArgument)?,
            device_address: results[2],
            shared: results[3] & 1 != 0,
        })
    }

    /// Makes a capability to `pages` pages of `memory` from `first_page`, with `rights`.
    fn mem_slice(
        &self,
        memory: CapSlot,
        first_page: usize,
        pages: usize,
        rights: Rights,
    ) -> Result<CapSlot, Error> {
        // SAFETY: MemSlice takes no pointer.
        let results = check(unsafe {
            self.syscall(
                Syscall::MemSlice,
                [
                    slot_arg(memory),
                    usize_arg(first_page),
                    usize_arg(pages),
                    u64::from(rights.bits()),
                    0,
                    0,
                ],
            )
        })?;
        slot_from(results[1])
    }

    /// Maps the whole MMIO region of `mmio` at `address` with `rights` (`READ`, `WRITE`) and
    /// returns its size in bytes.
    fn mmio_map(&self, mmio: CapSlot, address: usize, rights: Rights) -> Result<usize, Error> {
        // SAFETY: MmioMap dereferences no pointer and cannot replace an existing mapping.
        let results = check(unsafe {
            self.syscall(
                Syscall::MmioMap,
                [
                    slot_arg(mmio),
                    usize_arg(address),
                    u64::from(rights.bits()),
                    0,
                    0,
                    0,
                ],
            )
        })?;
        usize::try_from(results[1]).map_err(|_| Error::InvalidArgument)
    }

    /// Makes `memory` shared with the host and returns the device address of its first page.
    ///
    /// # Safety
    ///
    /// The content is not preserved and the host may change it at any time afterwards: no Rust
    /// reference to the memory may exist (use volatile accesses and raw copies, DESIGN.md §8).
    unsafe fn share(&self, share: CapSlot, memory: CapSlot) -> Result<u64, Error> {
        // SAFETY: the caller guarantees no reference into the memory exists.
        let results = check(unsafe {
            self.syscall(
                Syscall::Share,
                [slot_arg(share), slot_arg(memory), 0, 0, 0, 0],
            )
        })?;
        Ok(results[1])
    }

    /// Returns shared `memory` to private.
    ///
    /// # Safety
    ///
    /// As for [`Syscalls::share`]: the content is not preserved.
    unsafe fn unshare(&self, share: CapSlot, memory: CapSlot) -> Result<(), Error> {
        // SAFETY: the caller guarantees no reference into the memory exists.
        check(unsafe {
            self.syscall(
                Syscall::Unshare,
                [slot_arg(share), slot_arg(memory), 0, 0, 0, 0],
            )
        })
        .map(drop)
    }

    /// Stops the task instance `task` (a stale id gives [`Error::Dead`]).
    fn task_kill(&self, control: CapSlot, task: TaskId) -> Result<(), Error> {
        // SAFETY: TaskKill takes no pointer.
        check(unsafe {
            self.syscall(
                Syscall::TaskKill,
                [slot_arg(control), u64::from(task.to_raw()), 0, 0, 0, 0],
            )
        })
        .map(drop)
    }

    /// Starts a fresh instance of the task at `index` and returns its id.
    fn task_restart(&self, control: CapSlot, index: u16) -> Result<TaskId, Error> {
        // SAFETY: TaskRestart takes no pointer.
        let results = check(unsafe {
            self.syscall(
                Syscall::TaskRestart,
                [slot_arg(control), u64::from(index), 0, 0, 0, 0],
            )
        })?;
        u32::try_from(results[1])
            .map(TaskId::from_raw)
            .map_err(|_| Error::InvalidArgument)
    }

    /// Reports the state of the task at `index`.
    fn task_status(&self, control: CapSlot, index: u16) -> Result<TaskStatus, Error> {
        // SAFETY: TaskStatus takes no pointer.
        let results = check(unsafe {
            self.syscall(
                Syscall::TaskStatus,
                [slot_arg(control), u64::from(index), 0, 0, 0, 0],
            )
        })?;
        let state = u32::try_from(results[1])
            .ok()
            .and_then(|raw| TaskState::try_from(raw).ok())
            .ok_or(Error::InvalidArgument)?;
        let id = u32::try_from(results[2])
            .map(TaskId::from_raw)
            .map_err(|_| Error::InvalidArgument)?;
        Ok(TaskStatus {
            state,
            id,
            detail: results[3],
        })
    }

    /// Reads console input into `buffer` (1 to [`Syscall::CONSOLE_READ_MAX`] bytes long) with the
    /// ConsoleInput capability `input`, waiting up to `timeout` for the first byte. Returns how
    /// many bytes were read (at least 1). Errors: [`Error::WouldBlock`] (non-blocking, nothing
    /// typed), [`Error::TimedOut`], [`Error::BadLength`], [`Error::Busy`].
    fn console_read(
        &self,
        input: CapSlot,
        buffer: &mut [u8],
        timeout: Timeout,
    ) -> Result<usize, Error> {
        let length = buffer.len();
        if length == 0 || length > Syscall::CONSOLE_READ_MAX {
            return Err(Error::BadLength);
        }
        // SAFETY: the kernel writes at most `length` bytes into `buffer`, which we borrow
        // mutably for the call.
        let results = check(unsafe {
            self.syscall(
                Syscall::ConsoleRead,
                [
                    slot_arg(input),
                    buffer.as_mut_ptr() as u64,
                    usize_arg(length),
                    timeout.to_raw(),
                    0,
                    0,
                ],
            )
        })?;
        Ok(usize::try_from(results[1]).unwrap_or(0).min(length))
    }

    /// Powers the system off with exit `status` (0 = success). Needs the TaskControl
    /// capability `control`; returns only if the kernel refuses, with the reason.
    fn system_off(&self, control: CapSlot, status: u64) -> Error {
        // SAFETY: SystemOff takes no pointer.
        let results =
            unsafe { self.syscall(Syscall::SystemOff, [slot_arg(control), status, 0, 0, 0, 0]) };
        check(results).err().unwrap_or(Error::InvalidArgument)
    }
}

/// Bytes in `pages` pages, or [`Error::BadLength`] on overflow.
pub fn pages_to_bytes(pages: usize) -> Result<usize, Error> {
    pages.checked_mul(PAGE_SIZE).ok_or(Error::BadLength)
}

const _: () = assert!(MESSAGE_SIZE == core::mem::size_of::<Message>());

#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::RefCell;
    use std::vec::Vec;

    use super::*;

    /// Records raw calls and answers from a script: enough to check the register encoding.
    struct Recorder {
        calls: RefCell<Vec<(Syscall, [u64; 6])>>,
        answer: [u64; 4],
    }

    impl Recorder {
        fn answering(answer: [u64; 4]) -> Recorder {
            Recorder {
                calls: RefCell::new(Vec::new()),
                answer,
            }
        }

        fn last(&self) -> (Syscall, [u64; 6]) {
            *self.calls.borrow().last().expect("a call")
        }
    }

    impl Syscalls for Recorder {
        unsafe fn syscall(&self, number: Syscall, args: [u64; 6]) -> [u64; 4] {
            self.calls.borrow_mut().push((number, args));
            self.answer
        }
    }

    #[test]
    fn errors_and_unknown_statuses_decode() {
        assert_eq!(check([0, 1, 2, 3]), Ok([0, 1, 2, 3]));
        assert_eq!(check([4, 0, 0, 0]), Err(Error::Dead));
        assert_eq!(check([0x3f, 0, 0, 0]), Err(Error::InvalidArgument));
        let dead = Recorder::answering([Error::Dead.to_raw().into(), 9, 9, 9]);
        assert_eq!(dead.task_self(), Err(Error::Dead));
        assert_eq!(dead.time(), 0);
    }

    #[test]
    fn arguments_land_in_the_documented_registers() {
        let kernel = Recorder::answering([0, 7, 0, 0]);
        assert_eq!(kernel.mem_alloc(4, 2), Ok(CapSlot(7)));
        assert_eq!(kernel.last(), (Syscall::MemAlloc, [4, 2, 0, 0, 0, 0]));

        kernel
            .mem_map(
                CapSlot(7),
                0x1_0000_0000,
                Rights::READ | Rights::WRITE,
                1,
                2,
            )
            .expect("ok");
        assert_eq!(
            kernel.last(),
            (
                Syscall::MemMap,
                [
                    7,
                    0x1_0000_0000,
                    u64::from((Rights::READ | Rights::WRITE).bits()),
                    1,
                    2,
                    0
                ]
            )
        );

        kernel.task_kill(CapSlot(3), TaskId::new(5, 6)).expect("ok");
        assert_eq!(
            kernel.last(),
            (
                Syscall::TaskKill,
                [3, u64::from(TaskId::new(5, 6).to_raw()), 0, 0, 0, 0]
            )
        );

        let mut message = Message::empty(1);
        kernel
            .call(CapSlot(2), &mut message, Timeout::from_milliseconds(1))
            .expect("ok");
        let (number, args) = kernel.last();
        assert_eq!(number, Syscall::Call);
        assert_eq!(args[0], 2);
        assert_eq!(args[1], core::ptr::from_ref(&message) as u64);
        assert_eq!(args[2], 1_000_000);
    }

    #[test]
    fn results_are_decoded_and_checked() {
        let notified = Recorder::answering([0, RecvKind::Notification.to_raw().into(), 0b101, 0]);
        let mut message = Message::empty(0);
        assert_eq!(
            notified.recv(CapSlot::NONE, &mut message, Timeout::Forever, 0b111),
            Ok(Received::Notification(0b101))
        );
        assert_eq!(notified.last().1[0], u64::from(u32::MAX));

        let bogus_kind = Recorder::answering([0, 9, 0, 0]);
        assert_eq!(
            bogus_kind.recv(CapSlot(1), &mut message, Timeout::NonBlocking, 0),
            Err(Error::InvalidArgument)
        );

        let info = Recorder::answering([0, 6, u64::from(Rights::READ.bits()), 42]);
        assert_eq!(
            info.cap_info(CapSlot(0)),
            Ok(CapInfo {
                kind: CapabilityKind::Memory,
                rights: Rights::READ,
                badge: 42
            })
        );
        let bad_rights = Recorder::answering([0, 6, 1 << 20, 0]);
        assert_eq!(bad_rights.cap_info(CapSlot(0)), Err(Error::InvalidArgument));

        let huge_slot = Recorder::answering([0, 1 << 40, 0, 0]);
        assert_eq!(
            huge_slot.cap_derive(CapSlot(0), Rights::SEND, 0),
            Err(Error::InvalidArgument)
        );

        let status = Recorder::answering([0, 3, u64::from(TaskId::new(2, 1).to_raw()), 0x96]);
        assert_eq!(
            status.task_status(CapSlot(0), 2),
            Ok(TaskStatus {
                state: TaskState::Faulted,
                id: TaskId::new(2, 1),
                detail: 0x96
            })
        );

        let memory = Recorder::answering([0, 4, 0x8000_0000, 1]);
        assert_eq!(
            memory.mem_info(CapSlot(0)),
            Ok(MemoryInfo {
                pages: 4,
                device_address: 0x8000_0000,
                shared: true
            })
        );
    }

    #[test]
    fn console_write_is_bounded() {
        let kernel = Recorder::answering([0, 5000, 0, 0]);
        let bytes = [b'x'; 5000];
        assert_eq!(kernel.console_write(&bytes), Ok(Syscall::CONSOLE_WRITE_MAX));
        assert_eq!(kernel.last().1[1], Syscall::CONSOLE_WRITE_MAX as u64);
    }

    #[test]
    fn console_read_passes_its_buffer_and_bounds_the_count() {
        let recorder = Recorder::answering([0, 3, 0, 0]);
        let mut buffer = [0u8; 16];
        let address = buffer.as_ptr() as u64;
        let read = recorder.console_read(CapSlot(5), &mut buffer, Timeout::from_milliseconds(2));
        assert_eq!(read, Ok(3));
        assert_eq!(
            recorder.last(),
            (Syscall::ConsoleRead, [5, address, 16, 2_000_000, 0, 0])
        );
        // A kernel claiming more than the buffer holds is clamped to the buffer.
        let recorder = Recorder::answering([0, 99, 0, 0]);
        assert_eq!(
            recorder.console_read(CapSlot(5), &mut buffer, Timeout::Forever),
            Ok(16)
        );
        // Lengths the kernel would refuse are refused before the trap.
        assert_eq!(
            recorder.console_read(CapSlot(5), &mut [], Timeout::Forever),
            Err(Error::BadLength)
        );
        let mut big = [0u8; Syscall::CONSOLE_READ_MAX + 1];
        assert_eq!(
            recorder.console_read(CapSlot(5), &mut big, Timeout::Forever),
            Err(Error::BadLength)
        );
    }
}

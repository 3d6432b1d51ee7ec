//! User tasks: saved register state, address space, capabilities, and loading a task from its
//! ELF binary.

use alloc::boxed::Box;
use moat_abi::{Error, HEADER_SIZE, MessageHeader, TaskId};
use moat_kernel_core::cap::CapabilityTable;
use moat_kernel_core::elf::Executable;
use moat_kernel_core::frame::FRAME_SIZE;
use moat_kernel_core::notify::NotificationWord;
use zerocopy::IntoBytes;

use crate::memory;
use crate::uspace::{Access, AddressSpace, USER_VA_END, USER_VA_START};

/// Capability slots per task.
pub const CAP_SLOTS: usize = 64;

/// A translated user buffer of at most one page: one or two physical pieces (it may cross one
/// page boundary). Valid while the kernel lock is held and the owner's tables are unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// (physical address, length) of each piece; the second is empty unless the buffer
    /// crosses a page boundary.
    chunks: [(u64, usize); 2],
}

impl Span {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.chunks[0].1 + self.chunks[1].1
    }

    /// The physical address of byte `offset` and how many bytes follow it contiguously.
    fn at(&self, offset: usize) -> (u64, usize) {
        let (first, first_len) = self.chunks[0];
        if offset < first_len {
            (first + offset as u64, first_len - offset)
        } else {
            let (second, second_len) = self.chunks[1];
            let offset = offset - first_len;
            (second + offset as u64, second_len.saturating_sub(offset))
        }
    }

    /// The message header at the start of the buffer (at least [`HEADER_SIZE`] long).
    pub fn read_header(&self) -> MessageHeader {
        let (first, first_len) = self.chunks[0];
        if first_len >= HEADER_SIZE {
            // The common case: whole in the first page (spans start 8-byte aligned).
            return zerocopy::transmute!(memory::read_phys_words(first));
        }
        let mut header = MessageHeader::new(0);
        self.read(0, header.as_mut_bytes());
        header
    }

    /// Writes a message header at the start of the buffer.
    pub fn write_header(&self, header: &MessageHeader) {
        let (first, first_len) = self.chunks[0];
        if first_len >= HEADER_SIZE {
            memory::write_phys_words(first, zerocopy::transmute!(*header));
            return;
        }
        self.write(0, header.as_bytes());
    }

    /// Copies `out.len()` bytes starting at `offset` out of the buffer.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.len(), "read inside the span");
        let (first, first_len) = self.chunks[0];
        if offset + out.len() <= first_len {
            // Inside the first page: the common case.
            memory::read_phys(first + offset as u64, out);
            return;
        }
        let mut done = 0;
        while done < out.len() {
            let (pa, run) = self.at(offset + done);
            let count = run.min(out.len() - done);
            memory::read_phys(pa, &mut out[done..done + count]);
            done += count;
        }
    }

    /// Copies `bytes` into the buffer at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len(), "write inside the span");
        let (first, first_len) = self.chunks[0];
        if offset + bytes.len() <= first_len {
            memory::write_phys(first + offset as u64, bytes);
            return;
        }
        let mut done = 0;
        while done < bytes.len() {
            let (pa, run) = self.at(offset + done);
            let count = run.min(bytes.len() - done);
            memory::write_phys(pa, &bytes[done..done + count]);
            done += count;
        }
    }

    /// Copies `len` bytes from `source` at `source_offset` into this buffer at `offset`,
    /// physical page to physical page (no intermediate copy; the two may be the same memory).
    pub fn copy_from(&self, offset: usize, source: &Span, source_offset: usize, len: usize) {
        assert!(
            offset + len <= self.len() && source_offset + len <= source.len(),
            "copy inside both spans"
        );
        let (to, to_len) = self.chunks[0];
        let (from, from_len) = source.chunks[0];
        if offset + len <= to_len && source_offset + len <= from_len {
            memory::copy_phys(from + source_offset as u64, to + offset as u64, len);
            return;
        }
        let mut done = 0;
        while done < len {
            let (to, to_run) = self.at(offset + done);
            let (from, from_run) = source.at(source_offset + done);
            let count = to_run.min(from_run).min(len - done);
            memory::copy_phys(from, to, count);
            done += count;
        }
    }
}

/// A task's saved user state. The layout is fixed by `switch.S`.
#[repr(C, align(16))]
pub struct Context {
    /// x0–x30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp: u64,
    /// Where the task resumes.
    pub elr: u64,
    /// Saved PSTATE.
    pub spsr: u64,
    /// TPIDR_EL0 (thread pointer).
    pub tpidr: u64,
    padding: u64,
    /// q0–q31.
    pub fp: [u128; 32],
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
}

const _: () = assert!(core::mem::offset_of!(Context, sp) == 248);
const _: () = assert!(core::mem::offset_of!(Context, spsr) == 264);
const _: () = assert!(core::mem::offset_of!(Context, fp) == 288);
const _: () = assert!(core::mem::offset_of!(Context, fpcr) == 800);

impl Context {
    fn new(entry: u64, stack_top: u64, argument: u64) -> Box<Context> {
        let mut context = Box::new(Context {
            x: [0; 31],
            sp: stack_top,
            elr: entry,
            // EL0t with all exceptions unmasked.
            spsr: 0,
            tpidr: 0,
            padding: 0,
            fp: [0; 32],
            fpcr: 0,
            fpsr: 0,
        });
        context.x[0] = argument;
        context
    }

    /// Sets a syscall's return registers: x0 = status, x1.. = results.
    pub fn set_result(&mut self, result: Result<[u64; 3], Error>) {
        match result {
            Ok(values) => {
                self.x[0] = 0;
                self.x[1..4].copy_from_slice(&values);
            }
            Err(error) => {
                self.x[0] = u64::from(error.to_raw());
                self.x[1..4].fill(0);
            }
        }
    }
}

/// What a blocked task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// In Recv on an endpoint (or notifications only), writing to `buffer`.
    Receive {
        /// Endpoint index, if waiting for messages.
        endpoint: Option<u16>,
        /// The message buffer, translated when the wait began (a blocked task cannot change
        /// its own mappings and no other task can); `None` when waiting for notifications only.
        buffer: Option<Span>,
        /// Notification bits that end the wait.
        mask: u64,
    },
    /// In NotifyWait.
    Notification {
        /// Bits that end the wait.
        mask: u64,
    },
    /// In ConsoleRead, waiting for console input.
    ConsoleRead {
        /// The buffer (any alignment, at most one page long), translated when the wait began.
        buffer: Span,
    },
    /// In Call, waiting for the server's reply.
    Reply {
        /// The server instance the request went to.
        server: TaskId,
        /// The reply buffer, translated (whole message, writable) when the call began.
        buffer: Span,
    },
}

/// Run state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// On the run queue.
    Runnable,
    /// Waiting; `deadline` in counter ticks, if any.
    Blocked {
        /// What for.
        wait: Wait,
        /// When to give up (CNTVCT value).
        deadline: Option<u64>,
    },
}

/// Kernel objects a capability can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// An endpoint, by index.
    Endpoint(u16),
    /// The right to answer one call from `caller`.
    Reply {
        /// The waiting caller.
        caller: TaskId,
    },
    /// An interrupt line, by index.
    Irq(u16),
    /// Device registers.
    Mmio {
        /// Physical base (page aligned).
        base: u64,
        /// Size in bytes (page multiple).
        size: u64,
    },
    /// A range of a memory object.
    Memory {
        /// Memory object id.
        id: u32,
        /// First page of the range within the object.
        first: u32,
        /// Pages in the range.
        pages: u32,
    },
    /// The Share capability.
    Share,
    /// The TaskControl capability.
    TaskControl,
    /// The ConsoleInput capability.
    ConsoleInput,
}

/// A live task.
pub struct Task {
    /// Its id (index + generation).
    pub id: TaskId,
    /// Saved registers (boxed: TPIDR_EL1 points at it while the task runs).
    pub context: Box<Context>,
    /// Its address space.
    pub space: AddressSpace,
    /// Its capabilities.
    pub caps: CapabilityTable<Object, CAP_SLOTS>,
    /// Scheduling priority (0 most urgent).
    pub priority: u8,
    /// Runnable or blocked.
    pub state: RunState,
    /// Pending notification bits.
    pub notifications: NotificationWord,
    /// Frames charged to the task (image, stack, tables, allocations).
    pub frames_used: usize,
    /// Frames it may use.
    pub frames_quota: usize,
    /// Frames of its image, stack and info page, freed when it dies.
    pub own_frames: alloc::vec::Vec<u64>,
    /// Has reached its serve loop (first blocking receive) or exited.
    pub ready: bool,
}

/// Where the first user page goes: read-only task information.
pub const TASK_INFO_VA: u64 = moat_abi::TASK_INFO_VA as u64;
/// Top of the user stack.
pub const STACK_TOP: u64 = moat_abi::STACK_TOP as u64;

/// Why a task could not be created.
#[derive(Debug)]
#[allow(dead_code, reason = "fields are shown through Debug in boot reports")]
pub enum LoadError {
    /// The binary is not a valid task executable.
    Elf(moat_kernel_core::elf::ElfError),
    /// Out of frames or quota, or a mapping failed.
    Memory(Error),
}

impl Task {
    /// Creates task `id` from an ELF binary: maps its segments, a stack of `stack_pages` under
    /// [`STACK_TOP`] with a guard page below, and the task-information page `info`.
    pub fn load(
        id: TaskId,
        binary: &[u8],
        stack_pages: usize,
        frames_quota: usize,
        priority: u8,
        info: &[u8],
    ) -> Result<Task, LoadError> {
        let executable =
            Executable::parse(binary, USER_VA_START..USER_VA_END).map_err(LoadError::Elf)?;
        // ASID 0 is the kernel's (TTBR1 entries are global anyway); tasks use index + 1.
        let space = AddressSpace::new(id.index() + 1).map_err(LoadError::Memory)?;
        let mut task = Task {
            id,
            context: Context::new(executable.entry, STACK_TOP, TASK_INFO_VA),
            space,
            caps: CapabilityTable::new(),
            priority,
            state: RunState::Runnable,
            notifications: NotificationWord::default(),
            frames_used: 0,
            frames_quota,
            own_frames: alloc::vec::Vec::new(),
            ready: false,
        };
        for segment in &executable.segments {
            let start = segment.vaddr & !(FRAME_SIZE - 1);
            let end = (segment.vaddr + segment.mem_size).div_ceil(FRAME_SIZE) * FRAME_SIZE;
            let access = if segment.flags.execute {
                Access::EXECUTE
            } else if segment.flags.write {
                Access::READ_WRITE
            } else {
                Access::READ
            };
            for page in (start..end).step_by(FRAME_SIZE as usize) {
                let frame = task.take_frame()?;
                // Copy the part of the file that lands in this page.
                let page_end = page + FRAME_SIZE;
                let file_start = segment.vaddr;
                let file_end = segment.vaddr + segment.file_size;
                let copy_start = page.max(file_start);
                let copy_end = page_end.min(file_end);
                if copy_start < copy_end {
                    let offset_in_file = (segment.file_offset + (copy_start - file_start)) as usize;
                    let bytes =
                        &binary[offset_in_file..offset_in_file + (copy_end - copy_start) as usize];
                    memory::write_frame(frame, (copy_start - page) as usize, bytes);
                }
                task.space
                    .map(page, frame, 1, access)
                    .map_err(LoadError::Memory)?;
            }
        }
        let stack_bottom = STACK_TOP - stack_pages as u64 * FRAME_SIZE;
        for page in (stack_bottom..STACK_TOP).step_by(FRAME_SIZE as usize) {
            let frame = task.take_frame()?;
            task.space
                .map(page, frame, 1, Access::READ_WRITE)
                .map_err(LoadError::Memory)?;
        }
        let frame = task.take_frame()?;
        memory::write_frame(frame, 0, &info[..info.len().min(FRAME_SIZE as usize)]);
        task.space
            .map(TASK_INFO_VA, frame, 1, Access::READ)
            .map_err(LoadError::Memory)?;
        Ok(task)
    }

    /// A zeroed frame charged to the task and freed with it.
    fn take_frame(&mut self) -> Result<u64, LoadError> {
        let frame = self.charge_frame().map_err(LoadError::Memory)?;
        self.own_frames.push(frame);
        Ok(frame)
    }

    /// Allocates a zeroed frame against the task's quota.
    pub fn charge_frame(&mut self) -> Result<u64, Error> {
        if self.frames_used >= self.frames_quota {
            return Err(Error::QuotaExceeded);
        }
        let frame = memory::alloc_frame().map_err(|_| Error::OutOfMemory)?;
        memory::zero_frame(frame);
        self.frames_used += 1;
        Ok(frame)
    }

    /// Translates a message-sized user buffer: `len` bytes (at most one page) at `va`, 8-byte
    /// aligned, every page mapped as normal memory (readable; writable too if `write`).
    /// Errors: [`Error::BadAlignment`], [`Error::BadLength`], [`Error::BadAddress`].
    pub fn span(&self, va: u64, len: usize, write: bool) -> Result<Span, Error> {
        if !va.is_multiple_of(8) {
            return Err(Error::BadAlignment);
        }
        self.translate_span(va, len, write)
    }

    /// Translates a byte buffer of any alignment: `len` bytes (1 to one page) at `va`, every
    /// page mapped as normal memory (never device registers), writable if `write`.
    /// Errors: [`Error::BadLength`], [`Error::BadAddress`].
    pub fn byte_span(&self, va: u64, len: usize, write: bool) -> Result<Span, Error> {
        if len == 0 {
            return Err(Error::BadLength);
        }
        self.translate_span(va, len, write)
    }

    /// The translation behind [`Task::span`] and [`Task::byte_span`]: at most one page, so at
    /// most two pieces.
    #[inline(always)]
    fn translate_span(&self, va: u64, len: usize, write: bool) -> Result<Span, Error> {
        if len > FRAME_SIZE as usize {
            return Err(Error::BadLength);
        }
        va.checked_add(len as u64).ok_or(Error::BadAddress)?;
        let usable = |address: u64| match self.space.translate(address) {
            Some((pa, access)) if !access.device && (access.write || !write) => Ok(pa),
            _ => Err(Error::BadAddress),
        };
        let first = ((FRAME_SIZE - va % FRAME_SIZE) as usize).min(len);
        let mut span = Span {
            chunks: [(usable(va)?, first), (0, 0)],
        };
        if first < len {
            span.chunks[1] = (usable(va + first as u64)?, len - first);
        }
        Ok(span)
    }

    /// Copies `bytes.len()` bytes from user address `va`.
    pub fn copy_from_user(&self, va: u64, bytes: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        while done < bytes.len() {
            let address = va.checked_add(done as u64).ok_or(Error::BadAddress)?;
            let (pa, access) = self.space.translate(address).ok_or(Error::BadAddress)?;
            if access.device {
                // Device registers are not RAM: the linear map does not cover them.
                return Err(Error::BadAddress);
            }
            let in_page = (FRAME_SIZE - (address % FRAME_SIZE)) as usize;
            let count = in_page.min(bytes.len() - done);
            memory::read_phys(pa, &mut bytes[done..done + count]);
            done += count;
        }
        Ok(())
    }
}

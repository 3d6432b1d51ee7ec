//! The kernel proper: tasks from the system manifest, scheduling, IPC, notifications and
//! interrupts, memory objects, faults and restarts.
//!
//! Design: one kernel stack per CPU and no kernel threads. Every entry from a task saves its
//! registers into its `Context`; the kernel handles the trap with interrupts masked under one
//! lock, then resumes whichever task the scheduler picks. A task that blocks simply is not
//! resumed: its syscall's results are written into its saved registers when it is woken.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use aarch64_cpu::registers::{CNTVCT_EL0, Readable};
use moat_abi::{
    CapSlot, CapabilityKind, Error, FaultReason, FaultReport, HEADER_SIZE, MAX_PAYLOAD,
    MESSAGE_SIZE, Message, MessageFlags, MessageHeader, RecvKind, Rights, Syscall, TaskId,
    TaskInfo, TaskState, Timeout,
};
use moat_kernel_core::cap::Capability;
use moat_kernel_core::esr;
use moat_kernel_core::frame::FRAME_SIZE;
use moat_kernel_core::notify::{IrqAction, IrqLine};
use moat_kernel_core::platform::Platform;
use moat_kernel_core::queue::{MessageQueue, SenderKey};
use moat_kernel_core::sched::RunQueue;
use moat_kernel_core::system::{CapSpec, DeviceName, RestartPolicy, SystemArchive, TaskSpec};
use moat_kernel_core::task::TaskTable;
use spin::Mutex;
use zerocopy::IntoBytes;

use crate::task::{Context, Object, RunState, Span, Task, Wait};
use crate::uspace::Access;
use crate::{irq, kprintln, memory, power};

/// Most tasks the kernel runs.
pub const MAX_TASKS: usize = 32;
const LEVELS: usize = 16;
const QUEUE_CAPACITY: usize = 64;

/// A message waiting in an endpoint's queue.
#[derive(Clone, Debug)]
struct Pending {
    message: Message,
    /// For a call: the caller to answer.
    reply_to: Option<TaskId>,
    /// A capability travelling with the message.
    cap: Option<Capability<Object>>,
}

struct Endpoint {
    server: u16,
    depth: usize,
    queue: MessageQueue<Pending, QUEUE_CAPACITY>,
}

struct IrqRoute {
    intid: u32,
    owner: u16,
    line: IrqLine,
}

struct MemoryObject {
    base: u64,
    pages: u32,
    /// Capabilities plus mappings referring to it.
    refs: u32,
    charged_to: u16,
    /// Allocated from the shareable region (only such memory may be shared).
    shareable: bool,
    /// Currently shared with the host (RIPAS EMPTY in a Realm).
    shared: bool,
    /// (task index, user address, first page, pages).
    mappings: Vec<(u16, u64, u32, u32)>,
}

/// What became of a task slot, for TaskStatus.
#[derive(Clone, Copy)]
struct Outcome {
    state: TaskState,
    detail: u64,
}

struct Device {
    name: DeviceName,
    regs: moat_kernel_core::range::PhysRange,
    /// Its interrupt, if it has one.
    interrupt: Option<moat_kernel_core::platform::Interrupt>,
}

/// The whole kernel state.
pub struct Kernel {
    tasks: TaskTable<Box<Task>, MAX_TASKS>,
    specs: Vec<TaskSpec>,
    archive: &'static [u8],
    restarts: Vec<u32>,
    outcomes: Vec<Outcome>,
    run_queue: RunQueue<MAX_TASKS, LEVELS>,
    current: Option<usize>,
    fp_owner: Option<usize>,
    /// Whether EL0 may use FP/SIMD now (CPACR_EL1.FPEN), i.e. the current task owns them.
    fp_access: bool,
    endpoints: Vec<Endpoint>,
    irqs: Vec<IrqRoute>,
    memory: Vec<Option<MemoryObject>>,
    devices: Vec<Device>,
    ready_announced: bool,
    frequency: u64,
    /// `ticks_per_ns_fixed(frequency)`.
    ticks_per_ns: u64,
    stack_top: usize,
    /// Whether a task may read console input (the UART's receiver is then on).
    console_input: bool,
    /// The console UART's interrupt, when console input is on and the tree names it.
    console_intid: Option<u32>,
}

static KERNEL: Mutex<Option<Box<Kernel>>> = Mutex::new(None);

unsafe extern "C" {
    fn enter_user(context: *mut Context, stack_top: usize) -> !;
    fn fp_save(context: *mut Context);
    fn fp_restore(context: *mut Context);
}

/// Names the devices present so manifest names resolve: virtio devices by type and instance
/// in slot order, other device-tree devices by compatible string and instance in tree order.
fn discover_devices(platform: &Platform<'_>) -> Vec<Device> {
    let mut devices = Vec::new();
    let mut counts = [0u16; 64];
    for slot in &platform.virtio {
        if let crate::devices::SlotProbe::Device { device_id, .. } = crate::devices::probe(slot) {
            let instance = counts.get(device_id as usize).copied().unwrap_or(0);
            if let Some(count) = counts.get_mut(device_id as usize) {
                *count += 1;
            }
            devices.push(Device {
                name: DeviceName::Virtio {
                    device_id,
                    instance,
                },
                regs: slot.regs,
                interrupt: Some(slot.interrupt),
            });
        }
    }
    // Never hand out what the kernel itself drives (console, GIC); virtio-mmio slots are named
    // above by their device type.
    let mut kernel_owned: Vec<moat_kernel_core::range::PhysRange> = Vec::new();
    if let Some(uart) = platform.uart {
        kernel_owned.push(uart.regs);
    }
    if let Some(gic) = platform.gic {
        kernel_owned.push(gic.distributor);
        kernel_owned.push(gic.redistributors);
    }
    let mut seen: Vec<(&str, u16)> = Vec::new();
    for device in &platform.devices {
        if device.compatible == "virtio,mmio"
            || kernel_owned.iter().any(|r| r.overlaps(&device.regs))
        {
            continue;
        }
        let instance = match seen.iter_mut().find(|(c, _)| *c == device.compatible) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                seen.push((device.compatible, 0));
                0
            }
        };
        devices.push(Device {
            name: DeviceName::Compatible {
                compatible: String::from(device.compatible),
                instance,
            },
            regs: device.regs,
            interrupt: device.interrupt,
        });
    }
    devices
}

/// Starts every task in the archive and never returns. Called once at the end of boot.
pub fn start(
    archive_bytes: &'static [u8],
    platform: &Platform<'_>,
    frequency: u64,
    stack_top: usize,
) -> ! {
    let archive = match SystemArchive::parse(archive_bytes) {
        Ok(archive) => archive,
        Err(error) => panic!("the system archive is unusable: {error:?}"),
    };
    // The manifest decides what every task may touch: in a Realm, measure it before acting on it.
    if crate::realm::info().is_some() {
        match crate::realm::measure(archive.manifest_bytes()) {
            Ok(digest) => kprintln!(
                "realm: manifest measured into REM0 ({} bytes)",
                digest.len()
            ),
            Err(error) => panic!("the manifest could not be measured: {error:?}"),
        }
    }
    let devices = discover_devices(platform);
    let manifest = archive.manifest.clone();
    let task_count = manifest.tasks.len();
    if task_count == 0 || task_count > MAX_TASKS {
        panic!("the manifest lists {task_count} tasks; 1 to {MAX_TASKS} are supported");
    }
    let endpoints = manifest
        .endpoints
        .iter()
        .map(|spec| Endpoint {
            server: spec.server,
            depth: usize::from(spec.depth).clamp(1, QUEUE_CAPACITY),
            queue: MessageQueue::new(usize::from(spec.per_sender).max(1)),
        })
        .collect();
    let mut kernel = Box::new(Kernel {
        tasks: TaskTable::new(),
        specs: manifest.tasks.clone(),
        archive: archive_bytes,
        restarts: alloc::vec![0; task_count],
        outcomes: alloc::vec![Outcome { state: TaskState::Empty, detail: 0 }; task_count],
        run_queue: RunQueue::new(),
        current: None,
        fp_owner: None,
        fp_access: true,
        endpoints,
        irqs: Vec::new(),
        memory: Vec::new(),
        devices,
        ready_announced: false,
        frequency,
        ticks_per_ns: ticks_per_ns_fixed(frequency),
        stack_top,
        console_input: false,
        console_intid: None,
    });
    // Console input only when some task may read it (`console-input` in the manifest).
    let console_input = manifest
        .tasks
        .iter()
        .any(|spec| spec.caps.iter().any(|c| c.cap == CapSpec::ConsoleInput));
    if console_input {
        kernel.console_input = true;
        crate::console::enable_input();
        match platform.uart.and_then(|uart| uart.interrupt) {
            Some(interrupt) => {
                irq::configure_spi(interrupt.intid, interrupt.edge);
                kernel.console_intid = Some(interrupt.intid);
                kprintln!("console: input on (interrupt {})", interrupt.intid);
            }
            None => kprintln!("console: input on (polled every timer tick)"),
        }
    }
    for (index, spec) in manifest.tasks.iter().enumerate() {
        for cap in &spec.caps {
            if let CapSpec::Irq { device, bit } = &cap.cap {
                let Some(interrupt) = kernel
                    .devices
                    .iter()
                    .find(|d| &d.name == device)
                    .and_then(|d| d.interrupt)
                else {
                    kprintln!(
                        "tasks: {}: no device {device:?} with an interrupt for `{}`",
                        spec.name,
                        cap.name
                    );
                    continue;
                };
                kernel.irqs.push(IrqRoute {
                    intid: interrupt.intid,
                    owner: index as u16,
                    line: IrqLine::new(1u64 << (bit % 64)),
                });
                irq::configure_spi(interrupt.intid, interrupt.edge);
            }
        }
    }
    for index in 0..task_count {
        if let Err(error) = kernel.spawn(index) {
            panic!(
                "task {} could not start: {error:?}",
                manifest.tasks[index].name
            );
        }
    }
    kprintln!("tasks: {} started", task_count);
    // Tasks may read the virtual counter (CNTKCTL_EL1.EL0VCTEN) for timing.
    // SAFETY: only widens what EL0 may read; no memory is affected.
    unsafe {
        core::arch::asm!("mrs {t}, cntkctl_el1", "orr {t}, {t}, #2", "msr cntkctl_el1, {t}", "isb", t = out(reg) _, options(nostack));
    }
    // Let TTBR0 walks happen from now on.
    // SAFETY: clearing EPD0 only re-enables TTBR0 translation; TTBR0 is set per task before
    // any user address is touched.
    unsafe {
        core::arch::asm!("mrs {t}, tcr_el1", "bic {t}, {t}, #(1 << 7)", "msr tcr_el1, {t}", "isb", t = out(reg) _, options(nostack));
    }
    *KERNEL.lock() = Some(kernel);
    idle()
}

impl Kernel {
    /// Creates (or re-creates) the task at `index` from its manifest entry.
    fn spawn(&mut self, index: usize) -> Result<TaskId, crate::task::LoadError> {
        let spec = self.specs[index].clone();
        let binary = SystemArchive::parse(self.archive)
            .ok()
            .and_then(|a| a.binary(spec.binary))
            .ok_or(crate::task::LoadError::Memory(Error::InvalidArgument))?;
        let generation = self.tasks.generation(index).unwrap_or(0);
        let id = TaskId::new(index as u16, generation);
        let mut info = TaskInfo::new(id, &spec.name).map_err(crate::task::LoadError::Memory)?;
        info.set_config(&spec.config)
            .map_err(crate::task::LoadError::Memory)?;
        let (entropy, from_rndr) = crate::entropy::for_task(id.index(), id.generation());
        info.entropy = entropy;
        info.entropy_source = if from_rndr {
            moat_abi::ENTROPY_RNDR
        } else {
            moat_abi::ENTROPY_HOST_CONTROLLED
        };
        // Capabilities in manifest order; slots are what the table hands out.
        let mut caps: Vec<(String, Capability<Object>)> = Vec::new();
        for named in &spec.caps {
            let cap = match &named.cap {
                CapSpec::Serve { endpoint } => Capability::new(
                    CapabilityKind::Endpoint,
                    Object::Endpoint(*endpoint),
                    Rights::RECEIVE,
                    0,
                ),
                CapSpec::Call { endpoint, badge } => Capability::new(
                    CapabilityKind::Endpoint,
                    Object::Endpoint(*endpoint),
                    Rights::SEND,
                    *badge,
                ),
                CapSpec::Mmio { device } => {
                    let Some(found) = self.devices.iter().find(|d| &d.name == device) else {
                        continue;
                    };
                    let base = found.regs.start & !(FRAME_SIZE - 1);
                    let size = (found.regs.end - base).div_ceil(FRAME_SIZE) * FRAME_SIZE;
                    Capability::new(
                        CapabilityKind::Mmio,
                        Object::Mmio { base, size },
                        Rights::READ | Rights::WRITE,
                        0,
                    )
                }
                CapSpec::Irq { device, .. } => {
                    let Some(line) = self.irqs.iter().position(|r| {
                        r.owner as usize == index
                            && self.devices.iter().any(|d| {
                                &d.name == device && d.interrupt.map(|i| i.intid) == Some(r.intid)
                            })
                    }) else {
                        continue;
                    };
                    Capability::new(
                        CapabilityKind::Irq,
                        Object::Irq(line as u16),
                        Rights::RECEIVE,
                        0,
                    )
                }
                CapSpec::Share => {
                    Capability::new(CapabilityKind::Share, Object::Share, Rights::ALL, 0)
                }
                CapSpec::TaskControl => Capability::new(
                    CapabilityKind::TaskControl,
                    Object::TaskControl,
                    Rights::ALL,
                    0,
                ),
                CapSpec::ConsoleInput => Capability::new(
                    CapabilityKind::ConsoleInput,
                    Object::ConsoleInput,
                    Rights::RECEIVE,
                    0,
                ),
            };
            caps.push((named.name.clone(), cap));
        }
        let mut table = moat_kernel_core::cap::CapabilityTable::new();
        for (name, cap) in caps {
            let kind = cap.kind;
            let slot = table.insert(cap).map_err(crate::task::LoadError::Memory)?;
            info.push_capability(&name, slot, kind)
                .map_err(crate::task::LoadError::Memory)?;
        }
        let mut task = Task::load(
            id,
            binary,
            spec.stack_pages as usize,
            spec.memory_pages as usize,
            spec.priority,
            zerocopy::IntoBytes::as_bytes(&info),
        )?;
        task.caps = table;
        let id = self
            .tasks
            .create_at(index, Box::new(task))
            .map_err(crate::task::LoadError::Memory)?;
        let priority = spec.priority.min(LEVELS as u8 - 1);
        let _ = self.run_queue.insert(index, priority);
        self.outcomes[index] = Outcome {
            state: TaskState::Runnable,
            detail: 0,
        };
        Ok(id)
    }

    fn task(&self, index: usize) -> Option<&Task> {
        self.tasks.get_by_index(index).map(|(_, t)| &**t)
    }

    fn task_mut(&mut self, index: usize) -> Option<&mut Task> {
        let id = self.tasks.current_id(index)?;
        self.tasks.get_mut(id).ok().map(|t| &mut **t)
    }

    fn block(&mut self, index: usize, wait: Wait, timeout: Timeout) {
        let deadline = match timeout {
            Timeout::Forever => None,
            Timeout::NonBlocking => Some(0),
            Timeout::Nanoseconds(ns) => Some(
                CNTVCT_EL0
                    .get()
                    .saturating_add(ns_to_ticks(ns.get(), self.ticks_per_ns).max(1)),
            ),
        };
        let _ = self.run_queue.remove(index);
        let mut newly_ready = false;
        if let Some(task) = self.task_mut(index) {
            task.state = RunState::Blocked { wait, deadline };
            if matches!(
                wait,
                Wait::Receive { .. } | Wait::Notification { .. } | Wait::ConsoleRead { .. }
            ) && !task.ready
            {
                task.ready = true;
                newly_ready = true;
            }
        }
        if newly_ready {
            self.check_all_ready();
        }
    }

    fn wake(&mut self, index: usize, result: Result<[u64; 3], Error>) {
        let Some(task) = self.task_mut(index) else {
            return;
        };
        task.state = RunState::Runnable;
        task.context.set_result(result);
        let priority = task.priority.min(LEVELS as u8 - 1);
        let _ = self.run_queue.insert(index, priority);
    }

    fn check_all_ready(&mut self) {
        if self.ready_announced {
            return;
        }
        let all = (0..self.specs.len()).all(|i| match self.task(i) {
            Some(task) => task.ready,
            None => true,
        });
        if all {
            self.ready_announced = true;
            kprintln!(
                "moat: ready ({} tasks, {} KiB of RAM in use)",
                self.tasks.len(),
                memory::used_frames() * FRAME_SIZE as usize / 1024
            );
        }
    }

    // ---- IPC ----------------------------------------------------------------------------

    fn endpoint_cap(&self, index: usize, slot: u64, right: Rights) -> Result<(u16, u64), Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        let cap = task
            .caps
            .lookup(slot_of(slot)?, CapabilityKind::Endpoint, right)?;
        match cap.object {
            Object::Endpoint(endpoint) => Ok((endpoint, cap.badge)),
            _ => Err(Error::WrongKind),
        }
    }

    /// Send or call: queue the message, or hand it straight to a waiting server.
    fn send(
        &mut self,
        index: usize,
        slot: u64,
        buffer: u64,
        call: Option<Timeout>,
    ) -> Result<[u64; 3], Error> {
        let (endpoint, badge) = self.endpoint_cap(index, slot, Rights::SEND)?;
        let task = self.task(index).ok_or(Error::Dead)?;
        let sender = task.id;
        // The whole message buffer must be mapped (readable; for a call also writable: the
        // reply lands in it), whatever length the header declares.
        let source = task.span(buffer, MESSAGE_SIZE, call.is_some())?;
        let mut header = source.read_header();
        header.check_from_sender()?;
        let length = usize::from(header.length);
        let server_index = self.endpoints[endpoint as usize].server as usize;
        let server = self.tasks.current_id(server_index).ok_or(Error::Dead)?;
        let waiting_buffer = match self.task(server_index).map(|t| &t.state) {
            Some(RunState::Blocked {
                wait:
                    Wait::Receive {
                        endpoint: Some(e),
                        buffer: Some(buffer),
                        ..
                    },
                ..
            }) if *e == endpoint => Some(*buffer),
            _ => None,
        };
        match waiting_buffer {
            // The fast path: the server waits and no capability travels. The message goes
            // from the sender's buffer to the server's, page to page, without being queued.
            Some(server_buffer) if !header.flags.contains(MessageFlags::CARRIES_CAPABILITY) => {
                header.stamp(badge, sender);
                if call.is_some() {
                    header.flags = header.flags.with(MessageFlags::EXPECTS_REPLY);
                }
                let result = self.transfer(
                    &source,
                    header,
                    server_index,
                    server_buffer,
                    call.map(|_| sender),
                );
                self.wake(
                    server_index,
                    result.map(|()| [RecvKind::Message as u64, 0, 0]),
                );
                // A failed delivery is the sender's error too: a caller must not wait for a
                // reply to a message the server never got.
                result?;
            }
            _ => {
                let mut message = Message::zeroed();
                message.header = header;
                source.read(HEADER_SIZE, &mut message.payload[..length.min(MAX_PAYLOAD)]);
                let task = self.task(index).ok_or(Error::Dead)?;
                let cap = match message.capability() {
                    Some((cap_slot, rights)) => Some(task.caps.prepare_transfer(cap_slot, rights)?),
                    None => None,
                };
                message.stamp(badge, sender);
                if call.is_some() {
                    message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
                }
                let key = SenderKey::for_message(badge, sender);
                {
                    let ep = &self.endpoints[endpoint as usize];
                    if ep.queue.len() >= ep.depth {
                        return Err(Error::QueueFull);
                    }
                    ep.queue.check_room(key)?;
                }
                if let Some(cap) = &cap {
                    self.retain(&cap.object);
                }
                let pending = Pending {
                    message,
                    reply_to: call.map(|_| sender),
                    cap,
                };
                if waiting_buffer.is_some() {
                    self.deliver(server_index, pending)?;
                } else {
                    self.endpoints[endpoint as usize]
                        .queue
                        .push(key, sender, pending)?;
                }
            }
        }
        if let Some(timeout) = call {
            self.block(
                index,
                Wait::Reply {
                    server,
                    buffer: source,
                },
                timeout,
            );
        }
        Ok([0; 3])
    }

    /// Writes a stamped message without a capability from `source` (a sender's or replier's
    /// translated buffer) into `receiver`'s buffer at `buffer`: the header, then the payload
    /// straight from page to page. For a call, `reply_to` gets a Reply capability installed in
    /// the receiver first.
    fn transfer(
        &mut self,
        source: &Span,
        mut header: MessageHeader,
        receiver: usize,
        destination: Span,
        reply_to: Option<TaskId>,
    ) -> Result<(), Error> {
        let length = usize::from(header.length);
        if destination.len() < HEADER_SIZE + length {
            return Err(Error::BadAddress);
        }
        let task = self.task_mut(receiver).ok_or(Error::Dead)?;
        header.capability = CapSlot::NONE;
        header.capability_rights = 0;
        header.reply = CapSlot::NONE;
        if let Some(caller) = reply_to {
            let reply = Capability::new(
                CapabilityKind::Reply,
                Object::Reply { caller },
                Rights::SEND,
                0,
            );
            header.reply = task.caps.insert(reply)?;
        }
        destination.write_header(&header);
        destination.copy_from(HEADER_SIZE, source, HEADER_SIZE, length);
        Ok(())
    }

    /// Gives a pending message to a server blocked in Recv and wakes it (with the message, or
    /// with the error if it could not be written).
    fn deliver(&mut self, server_index: usize, pending: Pending) -> Result<(), Error> {
        let Some(RunState::Blocked {
            wait:
                Wait::Receive {
                    buffer: Some(buffer),
                    ..
                },
            ..
        }) = self.task(server_index).map(|t| t.state)
        else {
            return Err(Error::Dead);
        };
        let result = self.receive_into(server_index, buffer, pending);
        self.wake(
            server_index,
            result.map(|()| [RecvKind::Message as u64, 0, 0]),
        );
        // A failed delivery is the sender's error too: a caller must not wait for a reply to
        // a message the server never got.
        result
    }

    /// Writes a message into a receiver's buffer, installing its reply and transferred caps.
    fn receive_into(
        &mut self,
        receiver: usize,
        buffer: Span,
        pending: Pending,
    ) -> Result<(), Error> {
        let Pending {
            mut message,
            reply_to,
            cap,
        } = pending;
        let mut released = None;
        let task = self.task_mut(receiver).ok_or(Error::Dead)?;
        message.header.capability = CapSlot::NONE;
        message.header.reply = CapSlot::NONE;
        if let Some(cap) = cap {
            let rights = cap.rights;
            let object = cap.object;
            match task.caps.insert(cap) {
                Ok(slot) => {
                    message.header.capability = slot;
                    message.header.capability_rights = rights.bits();
                }
                Err(_) => {
                    message.header.flags = message
                        .header
                        .flags
                        .without(MessageFlags::CARRIES_CAPABILITY);
                    released = Some(object);
                }
            }
        }
        if let Some(caller) = reply_to {
            let reply = Capability::new(
                CapabilityKind::Reply,
                Object::Reply { caller },
                Rights::SEND,
                0,
            );
            match task.caps.insert(reply) {
                Ok(slot) => message.header.reply = slot,
                Err(error) => {
                    // No room for the reply capability: the caller learns it at once.
                    self.fail_caller(caller, receiver, error);
                    return Err(Error::CapabilityTableFull);
                }
            }
        }
        if let Some(object) = released {
            self.release(&object);
        }
        buffer.write(0, &message.as_bytes()[..message.used_size()]);
        Ok(())
    }

    /// Wakes `caller` with `error` if it is waiting for a reply from the task at `server`
    /// (whose Reply capability or queued request just went away).
    fn fail_caller(&mut self, caller: TaskId, server: usize, error: Error) {
        if self.tasks.is_alive(caller) {
            let index = usize::from(caller.index());
            if matches!(
                self.task(index).map(|t| &t.state),
                Some(RunState::Blocked {
                    wait: Wait::Reply { server: s, .. },
                    ..
                }) if usize::from(s.index()) == server
            ) {
                self.wake(index, Err(error));
            }
        }
    }

    /// `translated`: the buffer's span if the caller (ReplyRecv) already translated it
    /// writable.
    fn recv(
        &mut self,
        index: usize,
        slot: u64,
        buffer: u64,
        timeout: u64,
        mask: u64,
        translated: Option<Span>,
    ) -> Result<[u64; 3], Error> {
        let endpoint = if slot == u64::from(CapSlot::NONE.0) {
            None
        } else {
            let task = self.task(index).ok_or(Error::Dead)?;
            let cap =
                task.caps
                    .lookup(slot_of(slot)?, CapabilityKind::Endpoint, Rights::RECEIVE)?;
            match cap.object {
                Object::Endpoint(e) => Some(e),
                _ => return Err(Error::WrongKind),
            }
        };
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        let bits = task.notifications.take(mask);
        if bits != 0 {
            return Ok([RecvKind::Notification as u64, bits, 0]);
        }
        let span = match (endpoint, translated) {
            (None, _) => None,
            (Some(_), Some(span)) => Some(span),
            (Some(_), None) => Some(task.span(buffer, MESSAGE_SIZE, true)?),
        };
        if let Some(endpoint) = endpoint
            && let Some(span) = span
            && let Some(queued) = self.endpoints[endpoint as usize].queue.pop()
        {
            self.receive_into(index, span, queued.item)?;
            return Ok([RecvKind::Message as u64, 0, 0]);
        }
        let timeout = Timeout::from_raw(timeout);
        if timeout == Timeout::NonBlocking {
            return Err(Error::WouldBlock);
        }
        if endpoint.is_none() && mask == 0 {
            return Err(Error::InvalidArgument);
        }
        self.block(
            index,
            Wait::Receive {
                endpoint,
                buffer: span,
                mask,
            },
            timeout,
        );
        Ok([0; 3])
    }

    /// `buffer`: the reply's buffer translated (readable, [`MESSAGE_SIZE`] bytes), or why it
    /// could not be.
    fn reply(
        &mut self,
        index: usize,
        slot: u64,
        buffer: Result<Span, Error>,
    ) -> Result<[u64; 3], Error> {
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        let cap = task.caps.take_reply(slot_of(slot)?)?;
        let Object::Reply { caller } = cap.object else {
            return Err(Error::WrongKind);
        };
        // The Reply capability is gone now: whatever goes wrong from here, the caller must not
        // wait on for an answer that cannot come.
        let result = buffer.and_then(|source| self.answer(index, source, caller));
        if result.is_err() {
            self.fail_caller(caller, index, Error::Dead);
        }
        result
    }

    /// The body of `reply` once the Reply capability is consumed.
    fn answer(&mut self, index: usize, source: Span, caller: TaskId) -> Result<[u64; 3], Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        let mut header = source.read_header();
        header.check_from_sender()?;
        let length = usize::from(header.length);
        let me = task.id;
        let caller_index = usize::from(caller.index());
        let reply_buffer = match self.task(caller_index).map(|t| &t.state) {
            Some(RunState::Blocked {
                wait: Wait::Reply { server, buffer },
                ..
            }) if *server == me && self.tasks.is_alive(caller) => *buffer,
            _ => return Err(Error::Dead),
        };
        header.stamp(0, me);
        header.flags = header.flags.with(MessageFlags::IS_REPLY);
        if !header.flags.contains(MessageFlags::CARRIES_CAPABILITY) {
            // The common case: straight from the replier's buffer into the caller's.
            let written = self.transfer(&source, header, caller_index, reply_buffer, None);
            self.wake(caller_index, written.map(|()| [0; 3]));
            return Ok([0; 3]);
        }
        // A reply may carry one capability (the DMA server hands out windows this way), under
        // the same rules as a send: the replier must hold TRANSFER and names the copy's rights.
        let mut message = Message::zeroed();
        message.header = header;
        source.read(HEADER_SIZE, &mut message.payload[..length.min(MAX_PAYLOAD)]);
        let Some((cap_slot, rights)) = message.capability() else {
            return Err(Error::InvalidCapability);
        };
        let transfer = task.caps.prepare_transfer(cap_slot, rights)?;
        message.header.capability = CapSlot::NONE;
        message.header.reply = CapSlot::NONE;
        let rights = transfer.rights;
        let object = transfer.object;
        let caller_task = self.task_mut(caller_index).ok_or(Error::Dead)?;
        match caller_task.caps.insert(transfer) {
            Ok(new_slot) => {
                self.retain(&object);
                message.header.capability = new_slot;
                message.header.capability_rights = rights.bits();
            }
            Err(_) => {
                message.header.flags = message
                    .header
                    .flags
                    .without(MessageFlags::CARRIES_CAPABILITY);
            }
        }
        reply_buffer.write(0, &message.as_bytes()[..message.used_size()]);
        self.wake(caller_index, Ok([0; 3]));
        Ok([0; 3])
    }

    // ---- notifications and interrupts -------------------------------------------------------

    fn notify_wait(&mut self, index: usize, mask: u64, timeout: u64) -> Result<[u64; 3], Error> {
        if mask == 0 {
            return Err(Error::InvalidArgument);
        }
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        let bits = task.notifications.take(mask);
        if bits != 0 {
            return Ok([bits, 0, 0]);
        }
        let timeout = Timeout::from_raw(timeout);
        if timeout == Timeout::NonBlocking {
            return Err(Error::WouldBlock);
        }
        self.block(index, Wait::Notification { mask }, timeout);
        Ok([0; 3])
    }

    /// Raises notification bits for a task, waking it if it waits for any of them.
    fn signal(&mut self, index: usize, bits: u64) {
        let Some(task) = self.task_mut(index) else {
            return;
        };
        let waiting = match task.state {
            RunState::Blocked {
                wait: Wait::Notification { mask },
                ..
            } => mask,
            RunState::Blocked {
                wait: Wait::Receive { mask, .. },
                ..
            } => mask,
            _ => 0,
        };
        if task.notifications.signal(bits, waiting) {
            let taken = task.notifications.take(waiting);
            let result = match task.state {
                RunState::Blocked {
                    wait: Wait::Notification { .. },
                    ..
                } => [taken, 0, 0],
                _ => [RecvKind::Notification as u64, taken, 0],
            };
            self.wake(index, Ok(result));
        }
    }

    /// An interrupt arrived: mask it and tell its owner.
    pub fn interrupt(&mut self, intid: u32) -> bool {
        let Some(line) = self.irqs.iter().position(|r| r.intid == intid) else {
            return false;
        };
        let route = &mut self.irqs[line];
        irq::set_enabled(intid, false);
        if let Some(IrqAction::MaskAndNotify { bits }) = route.line.fire() {
            let owner = route.owner as usize;
            self.signal(owner, bits);
        }
        true
    }

    fn irq_ack(&mut self, index: usize, slot: u64) -> Result<[u64; 3], Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        let cap = task
            .caps
            .lookup(slot_of(slot)?, CapabilityKind::Irq, Rights::NONE)?;
        let Object::Irq(line) = cap.object else {
            return Err(Error::WrongKind);
        };
        let route = self
            .irqs
            .get_mut(line as usize)
            .ok_or(Error::InvalidCapability)?;
        if let IrqAction::Unmask = route.line.acknowledge()? {
            irq::set_enabled(route.intid, true);
        }
        Ok([0; 3])
    }

    // ---- memory ------------------------------------------------------------------------------

    fn retain(&mut self, object: &Object) {
        if let Object::Memory { id, .. } = object
            && let Some(Some(m)) = self.memory.get_mut(*id as usize)
        {
            m.refs += 1;
        }
    }

    fn release(&mut self, object: &Object) {
        if let Object::Memory { id, .. } = object {
            let id = *id as usize;
            let Some(Some(m)) = self.memory.get_mut(id) else {
                return;
            };
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                let (base, pages, owner, shared) = (m.base, m.pages, m.charged_to, m.shared);
                self.memory[id] = None;
                let range = moat_kernel_core::range::PhysRange::new(
                    base,
                    base + u64::from(pages) * FRAME_SIZE,
                );
                // Shared frames go back to private (and are zeroed) before anyone reuses them;
                // if the RMM refuses, they are never reused.
                if shared && !make_private(range) {
                    kprintln!("memory: {range} could not be made private again; it is not reused");
                    return;
                }
                for page in 0..u64::from(pages) {
                    let _ = memory::free_frame(base + page * FRAME_SIZE);
                }
                if let Some(task) = self.task_mut(owner as usize) {
                    task.frames_used = task.frames_used.saturating_sub(pages as usize);
                }
            }
        }
    }

    fn mem_alloc(
        &mut self,
        index: usize,
        pages: u64,
        align: u64,
        flags: u64,
    ) -> Result<[u64; 3], Error> {
        let align = if align == 0 { 1 } else { align };
        if pages == 0 || pages > 1 << 20 || !align.is_power_of_two() || align > 1 << 18 {
            return Err(Error::InvalidArgument);
        }
        // MEM_ALLOC_PHYSICAL_FOR_TESTS exists only in a kernel built for tests (the faulty-DMA
        // test task, docs/realm.md); any other kernel refuses it like an unknown flag.
        let known = if cfg!(feature = "test-hooks") {
            moat_abi::MEM_ALLOC_SHAREABLE | moat_abi::MEM_ALLOC_PHYSICAL_FOR_TESTS
        } else {
            moat_abi::MEM_ALLOC_SHAREABLE
        };
        if flags & !known != 0 {
            return Err(Error::InvalidArgument);
        }
        let shareable = flags & moat_abi::MEM_ALLOC_SHAREABLE != 0;
        let physical = flags & moat_abi::MEM_ALLOC_PHYSICAL_FOR_TESTS != 0;
        let task = self.task(index).ok_or(Error::Dead)?;
        if task.frames_used + pages as usize > task.frames_quota {
            return Err(Error::QuotaExceeded);
        }
        let base = if shareable {
            memory::alloc_shareable(pages as usize, align as usize)
        } else {
            memory::alloc_contiguous(pages as usize, align as usize)
        }
        .map_err(|_| Error::OutOfMemory)?;
        let id = match self.memory.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.memory.push(None);
                self.memory.len() - 1
            }
        };
        self.memory[id] = Some(MemoryObject {
            base,
            pages: pages as u32,
            refs: 1,
            charged_to: index as u16,
            shareable,
            shared: false,
            mappings: Vec::new(),
        });
        let object = Object::Memory {
            id: id as u32,
            first: 0,
            pages: pages as u32,
        };
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        task.frames_used += pages as usize;
        let rights = if physical {
            Rights::READ | Rights::WRITE | Rights::TRANSFER | Rights::PHYSICAL
        } else {
            Rights::READ | Rights::WRITE | Rights::TRANSFER
        };
        let cap = Capability::new(CapabilityKind::Memory, object, rights, 0);
        match task.caps.insert(cap) {
            Ok(slot) => Ok([u64::from(slot.0), 0, 0]),
            Err(error) => {
                self.release(&object);
                Err(error)
            }
        }
    }

    fn memory_cap(
        &self,
        index: usize,
        slot: u64,
    ) -> Result<(Capability<Object>, u32, u32, u32), Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        let cap = *task
            .caps
            .lookup(slot_of(slot)?, CapabilityKind::Memory, Rights::NONE)?;
        match cap.object {
            Object::Memory { id, first, pages } => Ok((cap, id, first, pages)),
            _ => Err(Error::WrongKind),
        }
    }

    fn mem_map(&mut self, index: usize, args: [u64; 6]) -> Result<[u64; 3], Error> {
        let [slot, va, rights, first_page, count, _] = args;
        let (cap, id, first, pages) = self.memory_cap(index, slot)?;
        let rights = rights_of(rights)?;
        if !cap
            .rights
            .contains(rights.intersection(Rights::READ | Rights::WRITE))
            || rights.contains(Rights::EXECUTE)
        {
            return Err(Error::MissingRight);
        }
        if first_page >= u64::from(pages) {
            return Err(Error::InvalidArgument);
        }
        let count = if count == 0 {
            u64::from(pages) - first_page
        } else {
            count
        };
        if first_page + count > u64::from(pages) {
            return Err(Error::BadLength);
        }
        let object = self
            .memory
            .get(id as usize)
            .and_then(|m| m.as_ref())
            .ok_or(Error::InvalidCapability)?;
        let pa = object.base + (u64::from(first) + first_page) * FRAME_SIZE;
        // Shared memory is reachable only at its unprotected alias.
        let pa = if object.shared {
            crate::realm::alias(pa)
        } else {
            pa
        };
        let access = Access {
            write: rights.contains(Rights::WRITE),
            execute: false,
            device: false,
        };
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        task.space.map(va, pa, count as usize, access)?;
        let record = (index as u16, va, first + first_page as u32, count as u32);
        if let Some(Some(m)) = self.memory.get_mut(id as usize) {
            m.mappings.push(record);
            m.refs += 1;
        }
        Ok([0; 3])
    }

    fn mem_unmap(&mut self, index: usize, va: u64, count: u64) -> Result<[u64; 3], Error> {
        // Only whole mappings made by MemMap may be removed.
        let found = self.memory.iter().enumerate().find_map(|(id, m)| {
            let m = m.as_ref()?;
            m.mappings
                .iter()
                .position(|&(t, v, _, p)| t as usize == index && v == va && u64::from(p) == count)
                .map(|position| (id, position))
        });
        let (id, position) = found.ok_or(Error::NotMapped)?;
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        task.space.unmap(va, count as usize)?;
        let object = match self.memory[id].as_mut() {
            Some(m) => {
                m.mappings.swap_remove(position);
                Object::Memory {
                    id: id as u32,
                    first: 0,
                    pages: m.pages,
                }
            }
            None => return Ok([0; 3]),
        };
        self.release(&object);
        Ok([0; 3])
    }

    fn mem_slice(&mut self, index: usize, args: [u64; 6]) -> Result<[u64; 3], Error> {
        let [slot, first_page, count, rights, ..] = args;
        let (cap, id, first, pages) = self.memory_cap(index, slot)?;
        let rights = rights_of(rights)?;
        if !cap.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        if count == 0 || first_page >= u64::from(pages) || count > u64::from(pages) - first_page {
            return Err(Error::InvalidArgument);
        }
        let object = Object::Memory {
            id,
            first: first + first_page as u32,
            pages: count as u32,
        };
        let slice = Capability::new(CapabilityKind::Memory, object, rights, cap.badge);
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        let new_slot = task.caps.insert(slice)?;
        self.retain(&object);
        Ok([u64::from(new_slot.0), 0, 0])
    }

    /// Share (or unshare) a whole memory object with the host. In a plain guest this only
    /// records the state (the device address is the physical address); the Realm-mode work
    /// plugs RSI in here. Pages are zeroed on every state change.
    /// Share (or unshare) a whole memory object from the shareable region with the host.
    ///
    /// No task may map the memory while its state changes (the DMA server shares a window
    /// before mapping it anywhere), so the only mapping to break is the kernel's own linear map.
    /// In a Realm: break the linear map, IPA_STATE_SET (EMPTY with CHANGE_DESTROYED, or RAM),
    /// map the linear map at the alias (shared) or the private page (private), and zero the pages
    /// through that new mapping: a shared page holds whatever the host left there. In a plain
    /// guest only the state and the zeroing remain. Returns the device address when sharing.
    fn share(
        &mut self,
        index: usize,
        share_slot: u64,
        memory_slot: u64,
        shared: bool,
    ) -> Result<[u64; 3], Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        task.caps
            .lookup(slot_of(share_slot)?, CapabilityKind::Share, Rights::NONE)?;
        let (_, id, first, pages) = self.memory_cap(index, memory_slot)?;
        let object = self
            .memory
            .get_mut(id as usize)
            .and_then(|m| m.as_mut())
            .ok_or(Error::InvalidCapability)?;
        if first != 0 || pages != object.pages || !object.shareable {
            return Err(Error::InvalidArgument);
        }
        if !object.mappings.is_empty() {
            return Err(Error::MappedElsewhere);
        }
        if object.shared == shared {
            return Err(Error::InvalidArgument);
        }
        let range = moat_kernel_core::range::PhysRange::new(
            object.base,
            object.base + u64::from(object.pages) * FRAME_SIZE,
        );
        if crate::realm::info().is_some() {
            use crate::mmu::{PhysmapState, set_physmap};
            set_physmap(range, PhysmapState::Unmapped).map_err(|_| Error::InvalidArgument)?;
            let changed = if shared {
                crate::realm::set_empty(range)
            } else {
                crate::realm::set_ram(range, false)
            };
            if let Err(error) = changed {
                // The RMM (or the host behind it) refused: the pages may now be in either state,
                // so they stay out of the linear map and the object is unusable for sharing.
                kprintln!("share: IPA_STATE_SET over {range} failed: {error:?}");
                object.shareable = false;
                return Err(Error::Busy);
            }
            let state = if shared {
                PhysmapState::Alias
            } else {
                PhysmapState::Private
            };
            set_physmap(range, state).map_err(|_| Error::InvalidArgument)?;
        }
        object.shared = shared;
        for page in 0..u64::from(object.pages) {
            memory::zero_frame(object.base + page * FRAME_SIZE);
        }
        Ok([
            if shared {
                crate::realm::dma_address(object.base)
            } else {
                0
            },
            0,
            0,
        ])
    }

    fn mem_info(&self, index: usize, slot: u64) -> Result<[u64; 3], Error> {
        let (cap, id, first, pages) = self.memory_cap(index, slot)?;
        let object = self
            .memory
            .get(id as usize)
            .and_then(|m| m.as_ref())
            .ok_or(Error::InvalidCapability)?;
        let base = object.base + u64::from(first) * FRAME_SIZE;
        let address = if object.shared {
            crate::realm::dma_address(base)
        } else if cap.rights.contains(Rights::PHYSICAL) {
            base
        } else {
            0
        };
        Ok([u64::from(pages), address, u64::from(object.shared)])
    }

    fn mmio_map(
        &mut self,
        index: usize,
        slot: u64,
        va: u64,
        rights: u64,
    ) -> Result<[u64; 3], Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        let rights = rights_of(rights)?;
        let cap = task
            .caps
            .lookup(slot_of(slot)?, CapabilityKind::Mmio, rights)?;
        let Object::Mmio { base, size } = cap.object else {
            return Err(Error::WrongKind);
        };
        if rights.contains(Rights::EXECUTE) {
            return Err(Error::MissingRight);
        }
        let access = Access {
            write: rights.contains(Rights::WRITE),
            execute: false,
            device: true,
        };
        let task = self.task_mut(index).ok_or(Error::Dead)?;
        task.space.map(
            va,
            crate::realm::alias(base),
            (size / FRAME_SIZE) as usize,
            access,
        )?; // devices only at their alias in a Realm
        Ok([size, 0, 0])
    }

    // ---- tasks -------------------------------------------------------------------------------

    /// Ends a task: frees what it holds, fails its peers' waits, reports to the supervisor.
    fn end_task(&mut self, index: usize, reason: FaultReason, esr: u64, far: u64, detail: u64) {
        let Some(id) = self.tasks.current_id(index) else {
            return;
        };
        let Ok(mut task) = self.tasks.kill(id) else {
            return;
        };
        let _ = self.run_queue.remove(index);
        if self.current == Some(index) {
            self.current = None;
        }
        if self.fp_owner == Some(index) {
            self.fp_owner = None;
        }
        let elr = task.context.elr;
        // Capabilities: release memory references; reply caps fail their callers.
        let caps: Vec<Capability<Object>> = task.caps.iter().map(|(_, c)| *c).collect();
        task.caps.clear();
        for cap in &caps {
            match cap.object {
                Object::Reply { caller } => self.fail_caller(caller, index, Error::Dead),
                other => self.release(&other),
            }
        }
        // Mappings of memory objects in its address space.
        let mut released = Vec::new();
        for (id, object) in self.memory.iter_mut().enumerate() {
            if let Some(m) = object {
                let before = m.mappings.len();
                m.mappings.retain(|&(t, ..)| t as usize != index);
                for _ in m.mappings.len()..before {
                    released.push(Object::Memory {
                        id: id as u32,
                        first: 0,
                        pages: 0,
                    });
                }
            }
        }
        for object in released {
            self.release(&object);
        }
        for frame in task.own_frames.drain(..) {
            let _ = memory::free_frame(frame);
        }
        // Its interrupts stay masked until a new instance acknowledges them.
        for route in self.irqs.iter_mut().filter(|r| r.owner as usize == index) {
            route.line.owner_died();
            irq::set_enabled(route.intid, false);
        }
        drop(task);
        // Calls it queued are dropped (no one could take the reply); one-way messages it sent
        // before it ended are still delivered. Calls waiting on it (as a server) fail with Dead.
        let mut dropped_caps = Vec::new();
        for endpoint in self.endpoints.iter_mut() {
            endpoint.queue.remove_where(|queued| {
                let drop = queued.sender == id && queued.item.reply_to.is_some();
                if drop && let Some(cap) = &queued.item.cap {
                    dropped_caps.push(cap.object);
                }
                drop
            });
        }
        for object in dropped_caps {
            self.release(&object);
        }
        let served: Vec<usize> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.server as usize == index)
            .map(|(i, _)| i)
            .collect();
        for endpoint in served {
            while let Some(queued) = self.endpoints[endpoint].queue.pop() {
                if let Some(caller) = queued.item.reply_to {
                    self.fail_caller(caller, index, Error::Dead);
                }
                if let Some(cap) = queued.item.cap {
                    self.release(&cap.object);
                }
            }
        }
        let waiting_on_it: Vec<usize> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, RunState::Blocked { wait: Wait::Reply { server, .. }, .. } if server == id))
            .map(|(tid, _)| usize::from(tid.index()))
            .collect();
        for caller in waiting_on_it {
            self.wake(caller, Err(Error::Dead));
        }
        self.outcomes[index] = Outcome {
            state: match reason {
                FaultReason::Exited => TaskState::Exited,
                FaultReason::Killed => TaskState::Killed,
                _ => TaskState::Faulted,
            },
            detail: if reason == FaultReason::Exited {
                detail
            } else {
                esr
            },
        };
        let name = self.specs[index].name.clone();
        match reason {
            FaultReason::Exited => kprintln!("task {name} exited with status {detail}"),
            FaultReason::Killed => kprintln!("task {name} killed"),
            _ => kprintln!(
                "task {name} {}: ESR {esr:#x} ({}), FAR {far:#x}, ELR {elr:#x}",
                reason.description(),
                esr::class_name(esr::exception_class(esr))
            ),
        }
        // Report to the supervisor (task 0), unless it is the one that died.
        if index != 0 {
            let report = FaultReport {
                task_index: index as u16,
                reason: reason.to_raw(),
                task_id: id,
                esr,
                far,
                elr,
                detail,
            };
            self.post_to_supervisor(report.to_message());
        }
        self.check_all_ready();
    }

    fn post_to_supervisor(&mut self, message: Message) {
        let Some(endpoint) = self.endpoints.iter().position(|e| e.server == 0) else {
            return;
        };
        let pending = Pending {
            message,
            reply_to: None,
            cap: None,
        };
        let waiting = matches!(
            self.task(0).map(|t| t.state),
            Some(RunState::Blocked { wait: Wait::Receive { endpoint: Some(e), .. }, .. }) if e as usize == endpoint
        );
        if waiting {
            let _ = self.deliver(0, pending);
        } else if self.endpoints[endpoint]
            .queue
            .push(SenderKey::Task(u16::MAX), TaskId::KERNEL, pending)
            .is_err()
        {
            kprintln!("supervisor queue full: a fault report was dropped");
        }
    }

    fn task_control(&self, index: usize, slot: u64) -> Result<(), Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        task.caps
            .lookup(slot_of(slot)?, CapabilityKind::TaskControl, Rights::NONE)?;
        Ok(())
    }

    fn task_kill(&mut self, index: usize, slot: u64, target: u64) -> Result<[u64; 3], Error> {
        self.task_control(index, slot)?;
        let target = TaskId::from_raw(u32::try_from(target).map_err(|_| Error::InvalidArgument)?);
        if !self.tasks.is_alive(target) {
            return Err(Error::Dead);
        }
        self.end_task(usize::from(target.index()), FaultReason::Killed, 0, 0, 0);
        Ok([0; 3])
    }

    fn task_restart(&mut self, index: usize, slot: u64, target: u64) -> Result<[u64; 3], Error> {
        self.task_control(index, slot)?;
        let target = usize::try_from(target).map_err(|_| Error::InvalidArgument)?;
        if target >= self.specs.len() || target == 0 {
            return Err(Error::InvalidArgument);
        }
        if let RestartPolicy::Restart { max_restarts } = self.specs[target].restart {
            if self.restarts[target] >= max_restarts {
                return Err(Error::QuotaExceeded);
            }
        } else {
            return Err(Error::InvalidArgument);
        }
        if self.tasks.current_id(target).is_some() {
            self.end_task(target, FaultReason::Killed, 0, 0, 0);
        }
        self.restarts[target] += 1;
        let id = self.spawn(target).map_err(|_| Error::OutOfMemory)?;
        kprintln!(
            "task {} restarted ({} of its restarts used)",
            self.specs[target].name,
            self.restarts[target]
        );
        Ok([u64::from(id.to_raw()), 0, 0])
    }

    fn task_status(&self, index: usize, slot: u64, target: u64) -> Result<[u64; 3], Error> {
        self.task_control(index, slot)?;
        let target = usize::try_from(target).map_err(|_| Error::InvalidArgument)?;
        if target >= self.specs.len() {
            return Err(Error::InvalidArgument);
        }
        let (state, id) = match self.tasks.get_by_index(target) {
            Some((id, task)) => (
                match task.state {
                    RunState::Runnable => TaskState::Runnable,
                    RunState::Blocked { .. } => TaskState::Blocked,
                },
                id.to_raw(),
            ),
            None => (
                self.outcomes[target].state,
                TaskId::new(target as u16, self.tasks.generation(target).unwrap_or(0)).to_raw(),
            ),
        };
        Ok([state as u64, u64::from(id), self.outcomes[target].detail])
    }

    // ---- dispatch ----------------------------------------------------------------------------

    fn syscall(&mut self, index: usize) -> Option<Result<[u64; 3], Error>> {
        let task = self.task(index)?;
        let number = task.context.x[8];
        let a = [
            task.context.x[0],
            task.context.x[1],
            task.context.x[2],
            task.context.x[3],
            task.context.x[4],
            task.context.x[5],
        ];
        let Ok(number) = u32::try_from(number) else {
            return Some(Err(Error::NoSuchSyscall));
        };
        let Ok(call) = Syscall::try_from(number) else {
            return Some(Err(Error::NoSuchSyscall));
        };
        let result = match call {
            Syscall::Yield => {
                let _ = self.run_queue.rotate(index);
                Ok([0; 3])
            }
            Syscall::Exit => {
                if let Some(task) = self.task_mut(index) {
                    task.ready = true;
                }
                self.end_task(index, FaultReason::Exited, 0, 0, a[0]);
                return None;
            }
            Syscall::ConsoleWrite => self.console_write(index, a[0], a[1]),
            Syscall::Time => {
                let ticks = u128::from(CNTVCT_EL0.get());
                Ok([
                    (ticks * 1_000_000_000 / u128::from(self.frequency)) as u64,
                    0,
                    0,
                ])
            }
            Syscall::TaskSelf => Ok([u64::from(task.id.to_raw()), 0, 0]),
            Syscall::Send => self.send(index, a[0], a[1], None),
            Syscall::Call => self.send(index, a[0], a[1], Some(Timeout::from_raw(a[2]))),
            Syscall::Recv => self.recv(index, a[0], a[1], a[2], a[3], None),
            Syscall::Reply => {
                let buffer = task.span(a[1], MESSAGE_SIZE, false);
                self.reply(index, a[0], buffer)
            }
            Syscall::ReplyRecv => {
                // One translation serves both halves: the reply is read from the buffer the
                // next message is written to (writable unless only notifications are awaited).
                let receives = a[2] != u64::from(CapSlot::NONE.0);
                let buffer = task.span(a[1], MESSAGE_SIZE, receives);
                let replied = if a[0] == u64::from(CapSlot::NONE.0) {
                    Ok([0; 3])
                } else {
                    self.reply(index, a[0], buffer)
                };
                match replied {
                    Ok(_) | Err(Error::Dead) => self.recv(
                        index,
                        a[2],
                        a[1],
                        a[3],
                        a[4],
                        buffer.ok().filter(|_| receives),
                    ),
                    Err(error) => Err(error),
                }
            }
            Syscall::NotifyWait => self.notify_wait(index, a[0], a[1]),
            Syscall::NotifySignal => Err(Error::NoSuchSyscall),
            Syscall::IrqAck => self.irq_ack(index, a[0]),
            Syscall::CapInfo => slot_of(a[0]).and_then(|slot| task.caps.get(slot)).map(|c| {
                [
                    u64::from(c.kind.to_raw()),
                    u64::from(c.rights.bits()),
                    c.badge,
                ]
            }),
            Syscall::CapDerive => {
                let task = self.task_mut(index)?;
                let rights = rights_of(a[1]);
                match rights.and_then(|r| slot_of(a[0]).and_then(|s| task.caps.derive(s, r, a[2])))
                {
                    Ok(slot) => {
                        let object = task.caps.get(slot).map(|c| c.object);
                        if let Ok(object) = object {
                            self.retain(&object);
                        }
                        Ok([u64::from(slot.0), 0, 0])
                    }
                    Err(e) => Err(e),
                }
            }
            Syscall::CapDrop => {
                let task = self.task_mut(index)?;
                match slot_of(a[0]).and_then(|s| task.caps.remove(s)) {
                    Ok(cap) => {
                        match cap.object {
                            Object::Reply { caller } => {
                                self.fail_caller(caller, index, Error::Dead)
                            }
                            other => self.release(&other),
                        }
                        Ok([0; 3])
                    }
                    Err(e) => Err(e),
                }
            }
            Syscall::MemAlloc => self.mem_alloc(index, a[0], a[1], a[2]),
            Syscall::MemMap => self.mem_map(index, a),
            Syscall::MemUnmap => self.mem_unmap(index, a[0], a[1]),
            Syscall::MemInfo => self.mem_info(index, a[0]),
            Syscall::MemSlice => self.mem_slice(index, a),
            Syscall::MmioMap => self.mmio_map(index, a[0], a[1], a[2]),
            Syscall::Share => self.share(index, a[0], a[1], true),
            Syscall::Unshare => self.share(index, a[0], a[1], false),
            Syscall::TaskKill => self.task_kill(index, a[0], a[1]),
            Syscall::TaskRestart => self.task_restart(index, a[0], a[1]),
            Syscall::TaskStatus => self.task_status(index, a[0], a[1]),
            Syscall::ConsoleRead => self.console_read(index, a[0], a[1], a[2], a[3]),
            Syscall::SystemOff => match self.task_control(index, a[0]) {
                Ok(()) => {
                    kprintln!(
                        "moat: system off requested by {} (status {})",
                        self.specs[index].name,
                        a[1]
                    );
                    power::exit(a[1] as u32)
                }
                Err(e) => Err(e),
            },
        };
        Some(result)
    }

    fn console_write(&self, index: usize, address: u64, length: u64) -> Result<[u64; 3], Error> {
        if length as usize > Syscall::CONSOLE_WRITE_MAX {
            return Err(Error::BadLength);
        }
        let task = self.task(index).ok_or(Error::Dead)?;
        let mut buffer = alloc::vec![0u8; length as usize];
        task.copy_from_user(address, &mut buffer)?;
        let text = String::from_utf8_lossy(&buffer);
        crate::kprint!("{text}");
        Ok([length, 0, 0])
    }

    /// `ConsoleRead`: bytes from the input ring now, or a wait until some arrive.
    fn console_read(
        &mut self,
        index: usize,
        slot: u64,
        address: u64,
        length: u64,
        timeout: u64,
    ) -> Result<[u64; 3], Error> {
        let task = self.task(index).ok_or(Error::Dead)?;
        task.caps.lookup(
            slot_of(slot)?,
            CapabilityKind::ConsoleInput,
            Rights::RECEIVE,
        )?;
        let length = usize::try_from(length).map_err(|_| Error::BadLength)?;
        if length == 0 || length > Syscall::CONSOLE_READ_MAX {
            return Err(Error::BadLength);
        }
        let buffer = task.byte_span(address, length, true)?;
        crate::console::drain_input();
        let read = Self::read_input(&buffer);
        if read > 0 {
            return Ok([read as u64, 0, 0]);
        }
        if self.console_reader().is_some() {
            return Err(Error::Busy);
        }
        let timeout = Timeout::from_raw(timeout);
        if timeout == Timeout::NonBlocking {
            return Err(Error::WouldBlock);
        }
        self.block(index, Wait::ConsoleRead { buffer }, timeout);
        Ok([0; 3])
    }

    /// Copies input into a translated buffer; returns the bytes copied.
    fn read_input(buffer: &Span) -> usize {
        let mut bytes = [0u8; 256];
        let mut done = 0;
        while done < buffer.len() {
            let want = (buffer.len() - done).min(bytes.len());
            let count = crate::console::take_input(&mut bytes[..want]);
            if count == 0 {
                break;
            }
            buffer.write(done, &bytes[..count]);
            done += count;
        }
        done
    }

    /// The task waiting in `ConsoleRead`, and its buffer.
    fn console_reader(&self) -> Option<(usize, Span)> {
        self.tasks.iter().find_map(|(id, task)| match task.state {
            RunState::Blocked {
                wait: Wait::ConsoleRead { buffer },
                ..
            } => Some((usize::from(id.index()), buffer)),
            _ => None,
        })
    }

    /// Takes what the UART received and hands it to a waiting reader.
    fn console_input(&mut self) {
        if !crate::console::drain_input() {
            return;
        }
        if let Some((reader, buffer)) = self.console_reader() {
            let read = Self::read_input(&buffer);
            if read > 0 {
                self.wake(reader, Ok([read as u64, 0, 0]));
            }
        }
    }

    /// Handles a synchronous exception from the current task.
    /// Allows or traps EL0's FP/SIMD use (CPACR_EL1.FPEN 0b11 or 0b01; EL1 never traps: the
    /// kernel is softfloat and only `fp_save`/`fp_restore` touch the registers). The write
    /// takes effect at the `eret` back to the task, a context synchronization event.
    fn set_fp_access(&mut self, allowed: bool) {
        if self.fp_access != allowed {
            let value: u64 = if allowed { 0b11 << 20 } else { 0b01 << 20 };
            // SAFETY: CPACR_EL1.FPEN only controls FP/SIMD traps; nothing else changes.
            unsafe { core::arch::asm!("msr cpacr_el1, {0}", in(reg) value, options(nostack)) };
            self.fp_access = allowed;
        }
    }

    /// The task at `index` used FP/SIMD while another task's state was in the registers:
    /// save that state into its owner's context, load this task's, and let it run on (it
    /// resumes at the trapped instruction). False if the task already owned the registers
    /// with access allowed (the trap did not come from FPEN; treated as a fault).
    fn claim_fp(&mut self, index: usize) -> bool {
        if self.fp_owner == Some(index) && self.fp_access {
            return false;
        }
        if self.fp_owner != Some(index) {
            if let Some(owner) = self.fp_owner
                && let Some(task) = self.task_mut(owner)
            {
                // SAFETY: the context belongs to a live task; the FP registers hold its state.
                unsafe { fp_save(&mut *task.context) };
            }
            let Some(task) = self.task_mut(index) else {
                return false;
            };
            // SAFETY: as above, loading this task's saved FP state (all of it: nothing of the
            // previous owner's survives).
            unsafe { fp_restore(&mut *task.context) };
            self.fp_owner = Some(index);
        }
        self.set_fp_access(true);
        true
    }

    fn sync_exception(&mut self, index: usize, esr_value: u64, far: u64) {
        let ec = esr::exception_class(esr_value);
        if ec == 0x07 && self.claim_fp(index) {
            return;
        }
        if ec == 0x15 {
            if let Some(result) = self.syscall(index) {
                // A blocked task's registers are written when it wakes.
                if let Some(task) = self.task_mut(index)
                    && task.state == RunState::Runnable
                {
                    task.context.set_result(result);
                }
            }
            return;
        }
        let reason = match ec {
            0x20 => FaultReason::InstructionAbort,
            0x24 => FaultReason::DataAbort,
            0x00 => FaultReason::Undefined,
            _ => FaultReason::Other,
        };
        self.end_task(index, reason, esr_value, far, 0);
    }

    /// Wakes tasks whose deadline has passed.
    fn expire_timeouts(&mut self) {
        let now = CNTVCT_EL0.get();
        let expired: Vec<usize> = self
            .tasks
            .iter()
            .filter(
                |(_, t)| matches!(t.state, RunState::Blocked { deadline: Some(d), .. } if d <= now),
            )
            .map(|(id, _)| usize::from(id.index()))
            .collect();
        for index in expired {
            self.wake(index, Err(Error::TimedOut));
        }
    }

    /// Picks the next task and prepares the CPU for it; `None` means idle.
    fn schedule(&mut self) -> Option<*mut Context> {
        let next = self.run_queue.pick()?;
        // Lazy FP/SIMD switching: the registers keep their owner's state and other tasks trap
        // on their first FP/SIMD instruction (`claim_fp`). Tasks that trade messages without
        // touching FP/SIMD (most IPC) switch without saving or loading 528 bytes.
        self.set_fp_access(self.fp_owner == Some(next));
        let task = self.task_mut(next)?;
        let ttbr0 = task.space.ttbr0();
        let context: *mut Context = &mut *task.context;
        if self.current != Some(next) {
            // SAFETY: the new TTBR0 is a valid table tree for this task's ASID.
            unsafe {
                core::arch::asm!("msr ttbr0_el1, {0}", "isb", in(reg) ttbr0, options(nostack))
            };
        }
        self.current = Some(next);
        Some(context)
    }
}

/// Counter ticks per nanosecond as a 32.32 fixed-point number (computed once at boot): the IPC
/// path converts every call's timeout, and a 128-bit division is a library call.
fn ticks_per_ns_fixed(frequency: u64) -> u64 {
    u64::try_from((u128::from(frequency) << 32) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// Nanoseconds to counter ticks, rounded down and saturating: exact when the frequency times
/// 2^32 is a multiple of 1e9 (QEMU's 62.5 MHz: 1/16 tick per ns), otherwise short by at most
/// one tick per 2^32 ns (4.3 s) of timeout.
fn ns_to_ticks(ns: u64, ticks_per_ns: u64) -> u64 {
    u64::try_from((u128::from(ns) * u128::from(ticks_per_ns)) >> 32).unwrap_or(u64::MAX)
}

/// Returns shared frames to private: break the alias mapping, RIPAS RAM, map the private page,
/// zero it. In a plain guest only the zeroing is left. False if the RMM refused.
fn make_private(range: moat_kernel_core::range::PhysRange) -> bool {
    if crate::realm::info().is_some() {
        use crate::mmu::{PhysmapState, set_physmap};
        if set_physmap(range, PhysmapState::Unmapped).is_err()
            || crate::realm::set_ram(range, false).is_err()
        {
            return false;
        }
        if set_physmap(range, PhysmapState::Private).is_err() {
            return false;
        }
    }
    let mut page = range.start;
    while page < range.end {
        memory::zero_frame(page);
        page += FRAME_SIZE;
    }
    true
}

/// A rights argument: every bit must be a known right.
fn rights_of(raw: u64) -> Result<Rights, Error> {
    u32::try_from(raw)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(Error::InvalidArgument)
}

fn slot_of(raw: u64) -> Result<CapSlot, Error> {
    u32::try_from(raw)
        .map(CapSlot)
        .map_err(|_| Error::InvalidCapability)
}

/// Called from `switch.S` for every exception from EL0. Returns the context to resume.
#[unsafe(no_mangle)]
extern "C" fn el0_trap(context: *mut Context, kind: u64) -> *mut Context {
    let mut guard = KERNEL.lock();
    let Some(kernel) = guard.as_mut() else {
        panic!("a task trapped before the kernel started tasks")
    };
    let current = kernel.current.filter(|&i| {
        kernel
            .task(i)
            .is_some_and(|t| core::ptr::eq(&*t.context, context))
    });
    match (kind, current) {
        (0, Some(index)) => {
            let esr_value: u64;
            let far: u64;
            // SAFETY: reading the syndrome registers of the exception being handled.
            unsafe {
                core::arch::asm!("mrs {0}, esr_el1", "mrs {1}, far_el1", out(reg) esr_value, out(reg) far, options(nostack));
            }
            kernel.sync_exception(index, esr_value, far);
        }
        (1, _) => handle_irqs(kernel),
        (_, Some(index)) => kernel.end_task(index, FaultReason::Other, 0, 0, kind),
        (_, None) => panic!("exception from a task that is not current"),
    }
    if let Some(next) = kernel.schedule() {
        return next;
    }
    drop(guard);
    idle()
}

/// Acknowledges and routes every pending interrupt; the timer drives timeouts and time slices.
fn handle_irqs(kernel: &mut Kernel) {
    while let Some(intid) = irq::acknowledge() {
        if irq::is_timer(intid) {
            irq::timer_tick();
            if kernel.console_input {
                // The fallback: input is taken even if the UART's interrupt never comes.
                kernel.console_input();
            }
            kernel.expire_timeouts();
            if let Some(current) = kernel.current {
                let _ = kernel.run_queue.rotate(current);
            }
        } else if kernel.console_intid == Some(intid) {
            kernel.console_input();
        } else if !kernel.interrupt(intid) {
            kprintln!("irq: unexpected interrupt {intid}");
        }
        irq::end(intid);
    }
}

/// Called by the EL1 IRQ path while the kernel idles.
pub fn irq_while_idle() -> bool {
    match KERNEL.try_lock() {
        Some(mut guard) => match guard.as_mut() {
            Some(kernel) => {
                handle_irqs(kernel);
                true
            }
            None => false,
        },
        None => false,
    }
}

/// Waits with interrupts enabled until some task can run, then runs it.
fn idle() -> ! {
    loop {
        {
            let mut guard = KERNEL.lock();
            if let Some(kernel) = guard.as_mut()
                && let Some(context) = kernel.schedule()
            {
                let stack_top = kernel.stack_top;
                drop(guard);
                // SAFETY: `context` is the saved state of the task just scheduled, whose address
                // space is now in TTBR0; the kernel stack is abandoned, nothing on it is live.
                unsafe { enter_user(context, stack_top) };
            }
            if let Some(kernel) = guard.as_mut() {
                kernel.current = None;
            }
        }
        // SAFETY: unmask IRQs, wait, mask again; the handler runs in between on this stack.
        unsafe {
            core::arch::asm!(
                "msr daifclr, #2",
                "wfi",
                "msr daifset, #2",
                options(nostack)
            )
        };
    }
}

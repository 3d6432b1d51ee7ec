//! The fake kernel's state and the non-blocking half of every operation.
//!
//! Each method here runs with the state locked and never waits: the blocking syscalls in
//! [`crate::task`] loop over these, waiting on the kernel's condition variable in between.

use std::collections::HashMap;

use moat_abi::{
    CapSlot, CapabilityKind, Error, FaultReason, FaultReport, LOWEST_USER_VA, Message,
    MessageFlags, PAGE_SIZE, Rights, Syscall, TaskId, TaskState, USER_VA_LIMIT,
};
use moat_kernel_core::queue::{MessageQueue, SenderKey};

/// Messages an endpoint queue holds at most.
pub const QUEUE_CAPACITY: usize = 16;
/// Messages one sender may have waiting on an endpoint, unless set per endpoint.
pub const DEFAULT_PER_SENDER_LIMIT: usize = 4;
/// Slots in each fake task's capability table.
pub const CAP_TABLE_SIZE: usize = 64;
/// Device address of the first fake frame (frames are handed out upwards from here).
pub const FAKE_DEVICE_BASE: u64 = 0x8000_0000;

/// What a capability names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    Endpoint(usize),
    Reply(u64),
    /// The notification word of the task at this index.
    Notification(u16),
    Irq(usize),
    Mmio(usize),
    /// `pages` pages of memory object `object` from `first_page`.
    Memory {
        object: usize,
        first_page: usize,
        pages: usize,
    },
    Share,
    TaskControl,
    ConsoleInput,
}

impl Object {
    pub(crate) fn kind(self) -> CapabilityKind {
        match self {
            Object::Endpoint(_) => CapabilityKind::Endpoint,
            Object::Reply(_) => CapabilityKind::Reply,
            Object::Notification(_) => CapabilityKind::Notification,
            Object::Irq(_) => CapabilityKind::Irq,
            Object::Mmio(_) => CapabilityKind::Mmio,
            Object::Memory { .. } => CapabilityKind::Memory,
            Object::Share => CapabilityKind::Share,
            Object::TaskControl => CapabilityKind::TaskControl,
            Object::ConsoleInput => CapabilityKind::ConsoleInput,
        }
    }
}

/// One capability in a task's table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cap {
    pub object: Object,
    pub rights: Rights,
    pub badge: u64,
    /// Given by the test setup (like the manifest): survives a restart.
    pub initial: bool,
}

/// A recorded syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The calling task instance.
    pub task: TaskId,
    /// The syscall.
    pub syscall: Syscall,
    /// How it ended.
    pub result: Result<(), Error>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapTarget {
    /// Memory object and the first page of it mapped.
    Memory {
        object: usize,
        first_page: usize,
    },
    Mmio(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping {
    pub address: usize,
    pub pages: usize,
    pub target: MapTarget,
    pub rights: Rights,
}

impl Mapping {
    fn end(&self) -> usize {
        self.address + self.pages * PAGE_SIZE
    }
}

pub(crate) struct Task {
    pub name: String,
    pub id: TaskId,
    pub state: TaskState,
    pub detail: u64,
    pub caps: Vec<Option<Cap>>,
    /// Initial capabilities by name, in the order granted.
    pub named: Vec<(String, CapSlot)>,
    pub notifications: u64,
    pub console: Vec<u8>,
    pub mappings: Vec<Mapping>,
    pub quota_pages: usize,
    pub used_pages: usize,
    pub physical: bool,
}

pub(crate) struct Pending {
    pub message: Message,
    pub call: Option<u64>,
    pub capability: Option<Cap>,
}

pub(crate) struct Endpoint {
    pub server: u16,
    pub queue: MessageQueue<Pending, QUEUE_CAPACITY>,
}

pub(crate) struct MemoryObject {
    pub bytes: Vec<u8>,
    pub shared: Vec<bool>,
    pub device_address: u64,
    /// The task whose quota pays for the frames (until they are released).
    pub owner: Option<u16>,
}

pub(crate) struct MmioRegion {
    pub bytes: Vec<u8>,
}

pub(crate) struct Irq {
    pub owner: u16,
    pub bit: u32,
    pub masked: bool,
    pub pending: bool,
    pub acks: usize,
}

pub(crate) enum CallState {
    Waiting { caller: TaskId },
    Replied(Box<Message>, Option<Cap>),
    Failed(Error),
}

pub(crate) type Pump = Box<dyn FnMut() + Send>;

pub(crate) struct State {
    pub tasks: Vec<Task>,
    pub endpoints: Vec<Endpoint>,
    pub memories: Vec<MemoryObject>,
    pub mmios: Vec<MmioRegion>,
    pub irqs: Vec<Irq>,
    pub calls: HashMap<u64, CallState>,
    pub next_call: u64,
    pub next_device_address: u64,
    pub records: Vec<Record>,
    pub console: Vec<u8>,
    /// Console input typed by the test, not yet read (`ConsoleRead`).
    pub console_input: std::collections::VecDeque<u8>,
    pub clock: u64,
    pub shutdown: bool,
    pub system_off: Option<u64>,
    /// Per endpoint: code that serves one queued message, for single-threaded tests. `None`
    /// while it runs.
    pub pumps: HashMap<usize, Option<Pump>>,
}

fn slot_index(slot: CapSlot) -> Result<usize, Error> {
    slot.index()
        .filter(|index| *index < CAP_TABLE_SIZE)
        .ok_or(Error::InvalidCapability)
}

fn require(cap: Cap, kind: CapabilityKind, rights: Rights) -> Result<Cap, Error> {
    if cap.object.kind() != kind {
        return Err(Error::WrongKind);
    }
    if !cap.rights.contains(rights) {
        return Err(Error::MissingRight);
    }
    Ok(cap)
}

impl State {
    pub fn new() -> State {
        State {
            tasks: Vec::new(),
            endpoints: Vec::new(),
            memories: Vec::new(),
            mmios: Vec::new(),
            irqs: Vec::new(),
            calls: HashMap::new(),
            next_call: 1,
            next_device_address: FAKE_DEVICE_BASE,
            records: Vec::new(),
            console: Vec::new(),
            console_input: std::collections::VecDeque::new(),
            clock: 0,
            shutdown: false,
            system_off: None,
            pumps: HashMap::new(),
        }
    }

    pub fn task(&self, index: u16) -> &Task {
        &self.tasks[usize::from(index)]
    }

    pub fn task_mut(&mut self, index: u16) -> &mut Task {
        &mut self.tasks[usize::from(index)]
    }

    pub fn alive(&self, index: u16) -> bool {
        self.task(index).state.is_alive()
    }

    pub fn record(&mut self, index: u16, syscall: Syscall, result: Result<(), Error>) {
        let task = self.task(index).id;
        self.records.push(Record {
            task,
            syscall,
            result,
        });
    }

    // --- capability tables ----------------------------------------------------------------

    pub fn cap(&self, index: u16, slot: CapSlot) -> Result<Cap, Error> {
        let slot = slot_index(slot)?;
        self.task(index).caps[slot].ok_or(Error::InvalidCapability)
    }

    pub fn insert_cap(&mut self, index: u16, cap: Cap) -> Result<CapSlot, Error> {
        let caps = &mut self.task_mut(index).caps;
        let slot = caps
            .iter()
            .position(Option::is_none)
            .ok_or(Error::CapabilityTableFull)?;
        caps[slot] = Some(cap);
        Ok(CapSlot(slot as u32))
    }

    fn free_slots(&self, index: u16) -> usize {
        self.task(index)
            .caps
            .iter()
            .filter(|cap| cap.is_none())
            .count()
    }

    /// Removes a capability; a Reply capability fails its waiting call with `Dead`.
    pub fn remove_cap(&mut self, index: u16, slot: CapSlot) -> Result<Cap, Error> {
        let slot = slot_index(slot)?;
        let cap = self.task_mut(index).caps[slot]
            .take()
            .ok_or(Error::InvalidCapability)?;
        match cap.object {
            Object::Reply(call) => self.fail_call(call, Error::Dead),
            Object::Memory { object, .. } => self.release_if_unused(object),
            _ => {}
        }
        Ok(cap)
    }

    /// Returns a memory object's frames to its owner's quota once no capability or mapping
    /// refers to it.
    fn release_if_unused(&mut self, object: usize) {
        let referenced = self.tasks.iter().any(|task| {
            task.caps.iter().flatten().any(|cap| {
                matches!(cap.object, Object::Memory { object: other, .. } if other == object)
            }) || task.mappings.iter().any(|mapping| {
                matches!(mapping.target, MapTarget::Memory { object: other, .. } if other == object)
            })
        });
        if referenced {
            return;
        }
        let memory = &mut self.memories[object];
        if let Some(owner) = memory.owner.take() {
            let pages = memory.shared.len();
            let task = &mut self.tasks[usize::from(owner)];
            task.used_pages = task.used_pages.saturating_sub(pages);
        }
    }

    pub fn cap_info(
        &self,
        index: u16,
        slot: CapSlot,
    ) -> Result<(CapabilityKind, Rights, u64), Error> {
        let cap = self.cap(index, slot)?;
        Ok((cap.object.kind(), cap.rights, cap.badge))
    }

    pub fn cap_derive(
        &mut self,
        index: u16,
        slot: CapSlot,
        rights: Rights,
        badge: u64,
    ) -> Result<CapSlot, Error> {
        let source = self.cap(index, slot)?;
        let kind = source.object.kind();
        if !kind.is_derivable() {
            return Err(Error::WrongKind);
        }
        if !source.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        let badge = if badge == 0 {
            source.badge
        } else if kind.is_badged() && source.badge == 0 {
            badge
        } else {
            return Err(Error::InvalidArgument);
        };
        self.insert_cap(
            index,
            Cap {
                object: source.object,
                rights,
                badge,
                initial: false,
            },
        )
    }

    /// The copy a message carries, checked as the kernel checks a transfer.
    fn transfer_copy(&self, index: u16, message: &Message) -> Result<Option<Cap>, Error> {
        let Some((slot, rights)) = message.capability() else {
            return Ok(None);
        };
        let source = self.cap(index, slot)?;
        if !source.object.kind().is_transferable() {
            return Err(Error::WrongKind);
        }
        if !source.rights.contains(Rights::TRANSFER) || !source.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        Ok(Some(Cap {
            object: source.object,
            rights,
            badge: source.badge,
            initial: false,
        }))
    }

    // --- messages -------------------------------------------------------------------------

    fn endpoint_for_send(&self, index: u16, slot: CapSlot) -> Result<(usize, u64), Error> {
        let cap = require(
            self.cap(index, slot)?,
            CapabilityKind::Endpoint,
            Rights::SEND,
        )?;
        let Object::Endpoint(endpoint) = cap.object else {
            return Err(Error::WrongKind);
        };
        if !self.alive(self.endpoints[endpoint].server) {
            return Err(Error::Dead);
        }
        Ok((endpoint, cap.badge))
    }

    /// Queues a message (a call when `call` is set); returns the endpoint.
    pub fn enqueue(
        &mut self,
        index: u16,
        slot: CapSlot,
        message: &Message,
        call: Option<u64>,
    ) -> Result<usize, Error> {
        let (endpoint, badge) = self.endpoint_for_send(index, slot)?;
        message.check_from_sender()?;
        let capability = self.transfer_copy(index, message)?;
        let sender = self.task(index).id;
        let mut message = message.clone();
        message.stamp(badge, sender);
        let key = SenderKey::for_message(badge, sender);
        self.endpoints[endpoint].queue.push(
            key,
            sender,
            Pending {
                message,
                call,
                capability,
            },
        )?;
        Ok(endpoint)
    }

    pub fn start_call(
        &mut self,
        index: u16,
        slot: CapSlot,
        message: &Message,
    ) -> Result<(u64, usize), Error> {
        let call = self.next_call;
        let endpoint = self.enqueue(index, slot, message, Some(call))?;
        self.next_call += 1;
        self.calls.insert(
            call,
            CallState::Waiting {
                caller: self.task(index).id,
            },
        );
        Ok((call, endpoint))
    }

    /// Takes a pending call's outcome, if it has one.
    pub fn finish_call(&mut self, index: u16, call: u64) -> Option<Result<Message, Error>> {
        match self.calls.remove(&call)? {
            CallState::Waiting { caller } => {
                self.calls.insert(call, CallState::Waiting { caller });
                None
            }
            CallState::Failed(error) => Some(Err(error)),
            CallState::Replied(mut message, capability) => {
                if let Some(capability) = capability {
                    match self.insert_cap(index, capability) {
                        Ok(slot) => message.header.capability = slot,
                        Err(error) => return Some(Err(error)),
                    }
                }
                Some(Ok(*message))
            }
        }
    }

    /// Abandons a call that timed out: it leaves the queue, and a late reply gets `Dead`.
    pub fn cancel_call(&mut self, endpoint: usize, call: u64) {
        self.calls.remove(&call);
        self.endpoints[endpoint]
            .queue
            .remove_where(|queued| queued.item.call == Some(call));
    }

    fn fail_call(&mut self, call: u64, error: Error) {
        if let Some(state @ CallState::Waiting { .. }) = self.calls.get_mut(&call) {
            *state = CallState::Failed(error);
        }
    }

    /// Checks a ConsoleInput capability of task `index`.
    pub fn console_input_cap(&self, index: u16, slot: CapSlot) -> Result<(), Error> {
        let cap = self
            .task(index)
            .caps
            .get(slot_index(slot)?)
            .copied()
            .flatten()
            .ok_or(Error::InvalidCapability)?;
        require(cap, CapabilityKind::ConsoleInput, Rights::RECEIVE).map(drop)
    }

    /// Takes pending notification bits of `mask`.
    pub fn take_notifications(&mut self, index: u16, mask: u64) -> u64 {
        let task = self.task_mut(index);
        let bits = task.notifications & mask;
        task.notifications &= !bits;
        bits
    }

    /// One non-blocking receive: `Ok(None)` when nothing is there.
    pub fn try_recv(
        &mut self,
        index: u16,
        slot: CapSlot,
        mask: u64,
    ) -> Result<Option<RecvOutcome>, Error> {
        let endpoint = if slot.is_none() {
            None
        } else {
            let cap = require(
                self.cap(index, slot)?,
                CapabilityKind::Endpoint,
                Rights::RECEIVE,
            )?;
            let Object::Endpoint(endpoint) = cap.object else {
                return Err(Error::WrongKind);
            };
            Some(endpoint)
        };
        let bits = self.take_notifications(index, mask);
        if bits != 0 {
            return Ok(Some(RecvOutcome::Notification(bits)));
        }
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let Some(front) = self.endpoints[endpoint].queue.peek() else {
            return Ok(None);
        };
        let needed =
            usize::from(front.item.call.is_some()) + usize::from(front.item.capability.is_some());
        if self.free_slots(index) < needed {
            return Err(Error::CapabilityTableFull);
        }
        let Some(queued) = self.endpoints[endpoint].queue.pop() else {
            return Ok(None);
        };
        let Pending {
            mut message,
            call,
            capability,
        } = queued.item;
        if let Some(capability) = capability {
            message.header.capability = self.insert_cap(index, capability)?;
            message.header.capability_rights = capability.rights.bits();
        }
        if let Some(call) = call {
            let reply = self.insert_cap(
                index,
                Cap {
                    object: Object::Reply(call),
                    rights: Rights::SEND,
                    badge: 0,
                    initial: false,
                },
            )?;
            message.header.reply = reply;
            message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
        }
        Ok(Some(RecvOutcome::Message(Box::new(message))))
    }

    pub fn reply(&mut self, index: u16, slot: CapSlot, message: &Message) -> Result<(), Error> {
        let cap = self.cap(index, slot)?;
        let Object::Reply(call) = cap.object else {
            return Err(Error::WrongKind);
        };
        // Consumed whatever the outcome; the call is answered below, not failed.
        slot_index(slot).map(|slot| self.task_mut(index).caps[slot] = None)?;
        let checked = message
            .check_from_sender()
            .and_then(|()| self.transfer_copy(index, message));
        let capability = match checked {
            Ok(capability) => capability,
            Err(error) => {
                self.fail_call(call, Error::Dead);
                return Err(error);
            }
        };
        match self.calls.get(&call) {
            Some(CallState::Waiting { caller }) if self.is_current(*caller) => {}
            _ => {
                self.calls.remove(&call);
                return Err(Error::Dead);
            }
        }
        let mut reply = message.clone();
        reply.stamp(0, self.task(index).id);
        reply.header.flags = reply.header.flags.with(MessageFlags::IS_REPLY);
        self.calls
            .insert(call, CallState::Replied(Box::new(reply), capability));
        Ok(())
    }

    fn is_current(&self, id: TaskId) -> bool {
        self.tasks
            .get(usize::from(id.index()))
            .is_some_and(|task| task.id == id && task.state.is_alive())
    }

    // --- notifications and interrupts -----------------------------------------------------

    pub fn notify_signal(&mut self, index: u16, slot: CapSlot) -> Result<(), Error> {
        let cap = require(
            self.cap(index, slot)?,
            CapabilityKind::Notification,
            Rights::SEND,
        )?;
        let Object::Notification(target) = cap.object else {
            return Err(Error::WrongKind);
        };
        if !self.alive(target) {
            return Err(Error::Dead);
        }
        self.task_mut(target).notifications |= cap.badge;
        Ok(())
    }

    pub fn raise_irq(&mut self, irq: usize) {
        let line = &mut self.irqs[irq];
        if line.masked {
            line.pending = true;
            return;
        }
        line.masked = true;
        let (owner, bit) = (line.owner, line.bit);
        self.task_mut(owner).notifications |= 1 << bit;
    }

    pub fn irq_ack(&mut self, index: u16, slot: CapSlot) -> Result<(), Error> {
        let cap = require(self.cap(index, slot)?, CapabilityKind::Irq, Rights::NONE)?;
        let Object::Irq(irq) = cap.object else {
            return Err(Error::WrongKind);
        };
        let line = &mut self.irqs[irq];
        line.acks += 1;
        line.masked = false;
        if std::mem::take(&mut line.pending) {
            self.raise_irq(irq);
        }
        Ok(())
    }

    // --- memory ---------------------------------------------------------------------------

    pub fn mem_alloc(
        &mut self,
        index: u16,
        pages: usize,
        align_pages: usize,
    ) -> Result<CapSlot, Error> {
        if pages == 0 || pages > (1 << 20) {
            return Err(Error::BadLength);
        }
        if align_pages != 0 && !align_pages.is_power_of_two() {
            return Err(Error::InvalidArgument);
        }
        let task = self.task(index);
        if task.used_pages + pages > task.quota_pages {
            return Err(Error::QuotaExceeded);
        }
        let mut rights = Rights::READ | Rights::WRITE | Rights::TRANSFER;
        if task.physical {
            rights = rights | Rights::PHYSICAL;
        }
        let align = (align_pages.max(1) * PAGE_SIZE) as u64;
        let device_address = self.next_device_address.next_multiple_of(align);
        let object = self.memories.len();
        let slot = self.insert_cap(
            index,
            Cap {
                object: Object::Memory {
                    object,
                    first_page: 0,
                    pages,
                },
                rights,
                badge: 0,
                initial: false,
            },
        )?;
        self.next_device_address = device_address + (pages * PAGE_SIZE) as u64;
        self.memories.push(MemoryObject {
            bytes: vec![0; pages * PAGE_SIZE],
            shared: vec![false; pages],
            device_address,
            owner: Some(index),
        });
        self.task_mut(index).used_pages += pages;
        Ok(slot)
    }

    fn check_free_range(&self, index: u16, address: usize, pages: usize) -> Result<(), Error> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(Error::BadAlignment);
        }
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|length| address.checked_add(length))
            .ok_or(Error::BadLength)?;
        if address < LOWEST_USER_VA || end > USER_VA_LIMIT {
            return Err(Error::InvalidArgument);
        }
        let overlaps = self
            .task(index)
            .mappings
            .iter()
            .any(|mapping| mapping.address < end && address < mapping.end());
        if overlaps {
            return Err(Error::AlreadyMapped);
        }
        Ok(())
    }

    pub fn mem_map(
        &mut self,
        index: u16,
        slot: CapSlot,
        address: usize,
        rights: Rights,
        first_page: usize,
        pages: usize,
    ) -> Result<(), Error> {
        let cap = require(self.cap(index, slot)?, CapabilityKind::Memory, Rights::NONE)?;
        let Object::Memory {
            object,
            first_page: base,
            pages: cap_pages,
        } = cap.object
        else {
            return Err(Error::WrongKind);
        };
        let mapping_rights = Rights::READ | Rights::WRITE | Rights::EXECUTE;
        if rights.is_empty()
            || !mapping_rights.contains(rights)
            || rights.contains(Rights::WRITE | Rights::EXECUTE)
        {
            return Err(Error::InvalidArgument);
        }
        if !cap.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        if first_page >= cap_pages {
            return Err(Error::BadLength);
        }
        let pages = if pages == 0 {
            cap_pages - first_page
        } else {
            pages
        };
        if pages > cap_pages - first_page {
            return Err(Error::BadLength);
        }
        self.check_free_range(index, address, pages)?;
        self.task_mut(index).mappings.push(Mapping {
            address,
            pages,
            target: MapTarget::Memory {
                object,
                first_page: base + first_page,
            },
            rights,
        });
        Ok(())
    }

    pub fn mmio_map(
        &mut self,
        index: u16,
        slot: CapSlot,
        address: usize,
        rights: Rights,
    ) -> Result<usize, Error> {
        let cap = require(self.cap(index, slot)?, CapabilityKind::Mmio, Rights::NONE)?;
        let Object::Mmio(region) = cap.object else {
            return Err(Error::WrongKind);
        };
        if rights.is_empty() || !(Rights::READ | Rights::WRITE).contains(rights) {
            return Err(Error::InvalidArgument);
        }
        if !cap.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        let size = self.mmios[region].bytes.len();
        let pages = size.div_ceil(PAGE_SIZE);
        self.check_free_range(index, address, pages)?;
        self.task_mut(index).mappings.push(Mapping {
            address,
            pages,
            target: MapTarget::Mmio(region),
            rights,
        });
        Ok(size)
    }

    /// Unmaps whole mappings: the range must be exactly covered by mappings.
    pub fn mem_unmap(&mut self, index: u16, address: usize, pages: usize) -> Result<(), Error> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(Error::BadAlignment);
        }
        if pages == 0 {
            return Err(Error::BadLength);
        }
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|length| address.checked_add(length))
            .ok_or(Error::BadLength)?;
        let mappings = &mut self.tasks[usize::from(index)].mappings;
        let inside: usize = mappings
            .iter()
            .filter(|mapping| mapping.address >= address && mapping.end() <= end)
            .map(|mapping| mapping.pages)
            .sum();
        let straddles = mappings.iter().any(|mapping| {
            mapping.address < end
                && address < mapping.end()
                && !(mapping.address >= address && mapping.end() <= end)
        });
        if inside != pages || straddles {
            return Err(Error::NotMapped);
        }
        mappings.retain(|mapping| !(mapping.address >= address && mapping.end() <= end));
        Ok(())
    }

    pub fn mem_info(&self, index: u16, slot: CapSlot) -> Result<(usize, u64, bool), Error> {
        let cap = require(self.cap(index, slot)?, CapabilityKind::Memory, Rights::NONE)?;
        let Object::Memory {
            object,
            first_page,
            pages,
        } = cap.object
        else {
            return Err(Error::WrongKind);
        };
        let memory = &self.memories[object];
        let device_address = if cap.rights.contains(Rights::PHYSICAL) {
            memory.device_address + (first_page * PAGE_SIZE) as u64
        } else {
            0
        };
        let shared = memory.shared[first_page..first_page + pages]
            .iter()
            .all(|shared| *shared);
        Ok((pages, device_address, shared))
    }

    pub fn mem_slice(
        &mut self,
        index: u16,
        slot: CapSlot,
        first_page: usize,
        pages: usize,
        rights: Rights,
    ) -> Result<CapSlot, Error> {
        let cap = require(self.cap(index, slot)?, CapabilityKind::Memory, Rights::NONE)?;
        let Object::Memory {
            object,
            first_page: base,
            pages: cap_pages,
        } = cap.object
        else {
            return Err(Error::WrongKind);
        };
        if pages == 0 || first_page >= cap_pages || pages > cap_pages - first_page {
            return Err(Error::BadLength);
        }
        if !cap.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        self.insert_cap(
            index,
            Cap {
                object: Object::Memory {
                    object,
                    first_page: base + first_page,
                    pages,
                },
                rights,
                badge: 0,
                initial: false,
            },
        )
    }

    fn share_target(
        &self,
        index: u16,
        share: CapSlot,
        memory: CapSlot,
    ) -> Result<(usize, usize, usize), Error> {
        require(
            self.cap(index, share)?,
            CapabilityKind::Share,
            Rights::WRITE,
        )?;
        let cap = require(
            self.cap(index, memory)?,
            CapabilityKind::Memory,
            Rights::NONE,
        )?;
        let Object::Memory {
            object,
            first_page,
            pages,
        } = cap.object
        else {
            return Err(Error::WrongKind);
        };
        let mapped_elsewhere = self.tasks.iter().enumerate().any(|(other, task)| {
            other != usize::from(index)
                && task.mappings.iter().any(|mapping| match mapping.target {
                    MapTarget::Memory {
                        object: mapped,
                        first_page: mapped_first,
                    } => {
                        mapped == object
                            && mapped_first < first_page + pages
                            && first_page < mapped_first + mapping.pages
                    }
                    MapTarget::Mmio(_) => false,
                })
        });
        if mapped_elsewhere {
            return Err(Error::MappedElsewhere);
        }
        Ok((object, first_page, pages))
    }

    pub fn set_shared(
        &mut self,
        index: u16,
        share: CapSlot,
        memory: CapSlot,
        shared: bool,
    ) -> Result<u64, Error> {
        let (object, first_page, pages) = self.share_target(index, share, memory)?;
        let memory = &mut self.memories[object];
        memory.bytes[first_page * PAGE_SIZE..(first_page + pages) * PAGE_SIZE].fill(0);
        memory.shared[first_page..first_page + pages].fill(shared);
        Ok(memory.device_address + (first_page * PAGE_SIZE) as u64)
    }

    /// Resolves `[address, address + length)` of a task's mappings to byte ranges of memory
    /// objects or MMIO regions, one piece per page.
    pub fn translate(
        &self,
        index: u16,
        address: usize,
        length: usize,
        needed: Rights,
    ) -> Result<Vec<(MapTarget, usize, usize)>, Error> {
        let mut pieces = Vec::new();
        let mut cursor = address;
        let end = address.checked_add(length).ok_or(Error::BadLength)?;
        while cursor < end {
            let mapping = self
                .task(index)
                .mappings
                .iter()
                .find(|mapping| mapping.address <= cursor && cursor < mapping.end())
                .ok_or(Error::BadAddress)?;
            if !mapping.rights.contains(needed) {
                return Err(Error::BadAddress);
            }
            let take = (mapping.end() - cursor).min(end - cursor);
            let offset = cursor - mapping.address;
            let (target, start) = match mapping.target {
                MapTarget::Memory { object, first_page } => (
                    MapTarget::Memory { object, first_page },
                    first_page * PAGE_SIZE + offset,
                ),
                MapTarget::Mmio(region) => (MapTarget::Mmio(region), offset),
            };
            pieces.push((target, start, take));
            cursor += take;
        }
        Ok(pieces)
    }

    pub fn bytes_mut(&mut self, target: MapTarget) -> &mut Vec<u8> {
        match target {
            MapTarget::Memory { object, .. } => &mut self.memories[object].bytes,
            MapTarget::Mmio(region) => &mut self.mmios[region].bytes,
        }
    }

    // --- tasks ----------------------------------------------------------------------------

    /// Stops the task instance at `index`: it leaves `reason` with `detail`, every id of it goes
    /// stale, its queued messages and calls fail, and the supervisor gets a fault report.
    pub fn stop_task(&mut self, index: u16, state: TaskState, report: Option<FaultReport>) {
        if !self.alive(index) {
            return;
        }
        let old = self.task(index).id;
        {
            let task = self.task_mut(index);
            task.id = old.next_generation();
            task.state = state;
            task.notifications = 0;
            task.mappings.clear();
            task.used_pages = 0;
        }
        // The new instance starts with a fresh quota (a simplification: frames still shared
        // with other tasks are no longer charged to anyone).
        for memory in &mut self.memories {
            if memory.owner == Some(index) {
                memory.owner = None;
            }
        }
        // Its non-initial capabilities go; Reply capabilities it held fail their callers.
        let slots: Vec<CapSlot> = self
            .task(index)
            .caps
            .iter()
            .enumerate()
            .filter(|(_, cap)| cap.is_some_and(|cap| !cap.initial))
            .map(|(slot, _)| CapSlot(slot as u32))
            .collect();
        for slot in slots {
            let _ = self.remove_cap(index, slot);
        }
        // Calls it made are abandoned; messages it sent are purged.
        let abandoned: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, call)| matches!(call, CallState::Waiting { caller } if *caller == old))
            .map(|(call, _)| *call)
            .collect();
        for call in abandoned {
            self.calls.remove(&call);
        }
        for endpoint in &mut self.endpoints {
            endpoint.queue.purge_sender(old);
        }
        // Requests queued on endpoints it served fail with Dead.
        let mut failed = Vec::new();
        for endpoint in self
            .endpoints
            .iter_mut()
            .filter(|endpoint| endpoint.server == index)
        {
            while let Some(queued) = endpoint.queue.pop() {
                failed.extend(queued.item.call);
            }
        }
        for call in failed {
            self.fail_call(call, Error::Dead);
        }
        if let Some(report) = report {
            self.deliver_fault_report(report);
        }
    }

    /// Queues a fault report on the supervisor's first served endpoint (task index 0), if any.
    pub fn deliver_fault_report(&mut self, report: FaultReport) {
        let Some(endpoint) = self
            .endpoints
            .iter_mut()
            .find(|endpoint| endpoint.server == 0)
        else {
            return;
        };
        let message = report.to_message();
        let _ = endpoint.queue.push(
            SenderKey::Task(TaskId::KERNEL.index()),
            TaskId::KERNEL,
            Pending {
                message,
                call: None,
                capability: None,
            },
        );
    }

    pub fn report(index: u16, id: TaskId, reason: FaultReason, detail: u64) -> FaultReport {
        FaultReport {
            task_index: index,
            reason: reason.to_raw(),
            task_id: id,
            esr: 0,
            far: 0,
            elr: 0,
            detail,
        }
    }

    pub fn control(&self, index: u16, slot: CapSlot) -> Result<(), Error> {
        require(
            self.cap(index, slot)?,
            CapabilityKind::TaskControl,
            Rights::WRITE,
        )
        .map(drop)
    }

    pub fn task_kill(&mut self, index: u16, slot: CapSlot, target: TaskId) -> Result<(), Error> {
        self.control(index, slot)?;
        if usize::from(target.index()) >= self.tasks.len() {
            return Err(Error::InvalidArgument);
        }
        if !self.is_current(target) {
            return Err(Error::Dead);
        }
        let killer = self.task(index).id;
        let report = State::report(
            target.index(),
            target,
            FaultReason::Killed,
            u64::from(killer.to_raw()),
        );
        self.stop_task(target.index(), TaskState::Killed, Some(report));
        Ok(())
    }

    pub fn task_restart(
        &mut self,
        index: u16,
        slot: CapSlot,
        target: u16,
    ) -> Result<TaskId, Error> {
        self.control(index, slot)?;
        if usize::from(target) >= self.tasks.len() {
            return Err(Error::InvalidArgument);
        }
        self.stop_task(target, TaskState::Killed, None);
        let task = self.task_mut(target);
        task.state = TaskState::Runnable;
        task.detail = 0;
        Ok(task.id)
    }

    pub fn task_status(
        &self,
        index: u16,
        slot: CapSlot,
        target: u16,
    ) -> Result<(TaskState, TaskId, u64), Error> {
        self.control(index, slot)?;
        let task = self
            .tasks
            .get(usize::from(target))
            .ok_or(Error::InvalidArgument)?;
        Ok((task.state, task.id, task.detail))
    }
}

/// What a successful non-blocking receive found.
pub(crate) enum RecvOutcome {
    Message(Box<Message>),
    Notification(u64),
}

//! The blk-api service: clients, their data regions, requests split into parts, deferred
//! replies, and the serve loop.
//!
//! A request is accepted without waiting for earlier ones: it is checked (region range,
//! sectors, length, read-only), split into parts of at most [`BlkDevice::part_bytes`], and its
//! parts are fed to the device as room allows. Its reply — the deferred answer to a `call`, or
//! a completion queued for [`Request::Reap`] after a `send` — goes out when its last part is
//! done. Per-request state is in private memory (a table indexed by the part cookies), per-part
//! state in the device (indexed by the queue's token slot).
//!
//! Clients are told apart by the kernel-stamped badge; a message from a new instance of a
//! client (same badge, new task id) drops what the old instance had queued, and the old
//! instance's requests still in flight complete into the void.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use moat_abi::{CapSlot, Error, Message, Rights, TaskId, Timeout};
use moat_blk_api::{
    Blk, BlkError, Completion, DeviceInfo, MAX_COMPLETIONS, Operation, REGION_RIGHTS, Request,
    Response, SECTOR_SIZE,
};
use moat_ipc::{Protocol, REPLY_ERROR, REPLY_OK, RemoteError};
use moat_userlib::{Received, Syscalls};
use moat_virtio::Mmio;

use crate::device::{BlkDevice, Part, PartKind, SubmitError};
use crate::dma::DmaPort;
use crate::region::{ClientRegion, fits};

/// Largest read or write a client may ask for (split into parts by the driver).
pub const MAX_TRANSFER: u32 = 1024 * 1024;

/// Clients served at once (by badge).
pub const MAX_CLIENTS: usize = 16;

/// Requests one client may have accepted and not yet reaped (in flight plus completions
/// waiting for `Reap`); beyond it requests fail with `Busy`.
pub const MAX_PER_CLIENT: usize = 64;

/// Completions kept for one client that does not reap; beyond it (only `Busy` refusals can get
/// there) they are dropped, so a client cannot make the driver's memory grow.
pub const MAX_QUEUED: usize = 2 * MAX_PER_CLIENT;

/// Maps the data regions clients hand over.
pub trait RegionMapper {
    /// A mapped region.
    type Region: ClientRegion;
    /// Maps the Memory capability `memory` (already in this task's table, with `rights`).
    /// On failure the capability has been dropped.
    fn map(&mut self, memory: CapSlot, rights: Rights) -> Result<Self::Region, BlkError>;
    /// Unmaps a region nobody uses any more and drops its capability.
    fn unmap(&mut self, region: Self::Region);
}

struct RegionEntry<R> {
    region: R,
    /// Requests that name it.
    users: usize,
    /// Replaced by a newer region: unmap when `users` reaches 0.
    retired: bool,
}

struct ClientState {
    badge: u64,
    instance: TaskId,
    /// Bumped by every `SetupRegion`: completions of `send`-ed requests from an earlier session
    /// are discarded (the client reports them lost on its side).
    session: u64,
    region: Option<usize>,
    completions: VecDeque<Completion>,
    reaper: Option<CapSlot>,
    accepted: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
}

struct Pending {
    client: usize,
    instance: TaskId,
    session: u64,
    tag: u32,
    reply: Option<CapSlot>,
    op: Op,
    sector: u64,
    region: Option<usize>,
    offset: usize,
    len: usize,
    /// Bytes handed to the device so far.
    submitted: usize,
    /// Parts at the device.
    parts_out: usize,
    /// Every part has been handed to the device.
    all_submitted: bool,
    error: Option<BlkError>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Requests accepted.
    pub requests: u64,
    /// Requests completed with an error.
    pub failed: u64,
    /// Replies the kernel refused (client gone).
    pub lost_replies: u64,
    /// Completions dropped because their client did not reap.
    pub dropped_completions: u64,
}

/// The service over one device. See the [module docs](self).
pub struct Service<S: Syscalls, T: Mmio, D: DmaPort, M: RegionMapper> {
    syscalls: S,
    device: BlkDevice<T, D>,
    mapper: M,
    regions: Vec<Option<RegionEntry<M::Region>>>,
    clients: Vec<ClientState>,
    requests: Vec<Option<Pending>>,
    free_requests: Vec<usize>,
    waiting: VecDeque<usize>,
    staging: Vec<u8>,
    finished: Vec<usize>,
    stats: ServiceStats,
}

impl<S: Syscalls, T: Mmio, D: DmaPort, M: RegionMapper> core::fmt::Debug for Service<S, T, D, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("device", &self.device)
            .field("clients", &self.clients.len())
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<S: Syscalls, T: Mmio, D: DmaPort, M: RegionMapper> Service<S, T, D, M> {
    /// A service over a started device.
    pub fn new(syscalls: S, device: BlkDevice<T, D>, mapper: M) -> Self {
        let staging = vec![0; device.part_bytes()];
        Service {
            syscalls,
            device,
            mapper,
            regions: Vec::new(),
            clients: Vec::new(),
            requests: Vec::new(),
            free_requests: Vec::new(),
            waiting: VecDeque::new(),
            staging,
            finished: Vec::new(),
            stats: ServiceStats::default(),
        }
    }

    /// The device.
    pub fn device(&self) -> &BlkDevice<T, D> {
        &self.device
    }

    /// The device, mutably (tests).
    pub fn device_mut(&mut self) -> &mut BlkDevice<T, D> {
        &mut self.device
    }

    /// Counters.
    pub const fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// Requests accepted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.requests.iter().flatten().count()
    }

    /// What clients are told about the device.
    pub fn info(&self) -> DeviceInfo {
        let part = u32::try_from(self.device.part_bytes()).unwrap_or(u32::MAX);
        DeviceInfo {
            capacity_sectors: self.device.capacity(),
            block_size: self.device.config().sane_block_size(),
            read_only: self.device.read_only(),
            flush: self.device.has_flush(),
            max_transfer: MAX_TRANSFER.max(part),
            queue_depth: u16::try_from(self.device.max_in_flight()).unwrap_or(u16::MAX),
        }
    }

    /// Serves forever: messages on `endpoint`, the device interrupt as notification bits
    /// `irq_mask` (acknowledged with `irq`).
    pub fn run(&mut self, endpoint: CapSlot, irq: CapSlot, irq_mask: u64) -> Error {
        // The line may have been left masked by a previous instance.
        let _ = self.syscalls.irq_ack(irq);
        loop {
            if let Err(error) = self.serve_one(endpoint, irq, irq_mask, Timeout::Forever)
                && !matches!(error, Error::TimedOut | Error::WouldBlock | Error::Dead)
            {
                log::warn!("recv: {error:?}");
                if matches!(error, Error::InvalidCapability | Error::WrongKind) {
                    return error;
                }
            }
        }
    }

    /// Waits for one message or interrupt and deals with it, then feeds the device.
    pub fn serve_one(
        &mut self,
        endpoint: CapSlot,
        irq: CapSlot,
        irq_mask: u64,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let mut message = Message::empty(0);
        match self
            .syscalls
            .recv(endpoint, &mut message, timeout, irq_mask)?
        {
            Received::Notification(bits) => {
                if bits & irq_mask != 0 {
                    self.interrupt();
                    // Unmask only after the device's status was acknowledged and the ring
                    // drained (edge-triggered interrupts).
                    let _ = self.syscalls.irq_ack(irq);
                }
            }
            Received::Message => self.handle(&message),
        }
        self.pump();
        Ok(())
    }

    fn reply(&mut self, reply: CapSlot, label: u32, message: Option<Message>) {
        let message = message.unwrap_or_else(|| Message::empty(label));
        if self.syscalls.reply(reply, &message).is_err() {
            self.stats.lost_replies += 1;
        }
    }

    fn answer(&mut self, reply: Option<CapSlot>, response: &Response) {
        if let Some(reply) = reply {
            match moat_ipc::encode(REPLY_OK, response) {
                Some(message) => self.reply(reply, REPLY_OK, Some(message)),
                None => self.refuse(Some(reply), RemoteError::ResponseTooLarge),
            }
        }
    }

    fn refuse(&mut self, reply: Option<CapSlot>, error: RemoteError) {
        if let Some(reply) = reply {
            let message = moat_ipc::encode(REPLY_ERROR, &error);
            self.reply(reply, REPLY_ERROR, message);
        }
    }

    /// Handles one received message (not yet feeding the device: see [`Self::pump`]).
    pub fn handle(&mut self, message: &Message) {
        let reply = message.reply_capability();
        let carried = message.capability();
        let request = if message.label() != Blk::ID {
            Err(RemoteError::UnknownProtocol)
        } else {
            moat_ipc::decode::<Request>(message.payload()).ok_or(RemoteError::MalformedRequest)
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                self.drop_capability(carried);
                self.refuse(reply, error);
                return;
            }
        };
        if !matches!(request, Request::SetupRegion) {
            self.drop_capability(carried);
        }
        let Some(client) = self.client_index(message.header.badge, message.header.sender) else {
            if matches!(request, Request::SetupRegion) {
                self.drop_capability(carried);
            }
            self.answer(reply, &Response::Refused(BlkError::Busy));
            return;
        };
        match request {
            Request::Info => {
                let info = self.info();
                self.answer(reply, &Response::Info(info));
            }
            Request::SetupRegion => {
                let response = self.setup_region(client, carried);
                self.answer(reply, &response);
            }
            Request::Io { tag, operation } => self.accept(client, reply, tag, operation),
            Request::Reap { wait } => self.reap(client, reply, wait),
        }
    }

    fn drop_capability(&self, capability: Option<(CapSlot, Rights)>) {
        if let Some((slot, _)) = capability {
            let _ = self.syscalls.cap_drop(slot);
        }
    }

    /// The client with `badge`, created if new; a new `sender` instance resets its queue.
    fn client_index(&mut self, badge: u64, sender: TaskId) -> Option<usize> {
        if let Some(index) = self.clients.iter().position(|c| c.badge == badge) {
            let client = &mut self.clients[index];
            if client.instance != sender {
                client.instance = sender;
                client.completions.clear();
                if let Some(old) = client.reaper.take() {
                    let _ = self.syscalls.cap_drop(old);
                }
                client.accepted = 0;
                if let Some(region) = client.region.take() {
                    self.release_region_owner(region);
                }
            }
            return Some(index);
        }
        if self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        self.clients.push(ClientState {
            badge,
            instance: sender,
            session: 0,
            region: None,
            completions: VecDeque::new(),
            reaper: None,
            accepted: 0,
        });
        Some(self.clients.len() - 1)
    }

    /// The client no longer names `region` as its own: retire it, unmapping now if no request
    /// uses it.
    fn release_region_owner(&mut self, region: usize) {
        if let Some(slot) = self.regions.get_mut(region)
            && let Some(entry) = slot
        {
            entry.retired = true;
            if entry.users == 0
                && let Some(entry) = slot.take()
            {
                self.mapper.unmap(entry.region);
            }
        }
    }

    fn region_user_done(&mut self, region: usize) {
        if let Some(slot) = self.regions.get_mut(region)
            && let Some(entry) = slot
        {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0
                && entry.retired
                && let Some(entry) = slot.take()
            {
                self.mapper.unmap(entry.region);
            }
        }
    }

    fn setup_region(&mut self, client: usize, carried: Option<(CapSlot, Rights)>) -> Response {
        let Some((slot, rights)) = carried else {
            return Response::Refused(BlkError::BadRegion);
        };
        if !rights.contains(REGION_RIGHTS) {
            let _ = self.syscalls.cap_drop(slot);
            return Response::Refused(BlkError::BadRegion);
        }
        let region = match self.mapper.map(slot, rights) {
            Ok(region) => region,
            Err(error) => return Response::Refused(error),
        };
        let len = region.len() as u64;
        let entry = RegionEntry {
            region,
            users: 0,
            retired: false,
        };
        let index = match self.regions.iter().position(Option::is_none) {
            Some(index) => {
                self.regions[index] = Some(entry);
                index
            }
            None => {
                self.regions.push(Some(entry));
                self.regions.len() - 1
            }
        };
        if let Some(old) = self.clients[client].region.replace(index) {
            self.release_region_owner(old);
        }
        // A new session: what the client has not reaped belongs to the old one.
        let state = &mut self.clients[client];
        state.session += 1;
        self.stats.dropped_completions += state.completions.len() as u64;
        state.completions.clear();
        if let Some(reaper) = state.reaper.take() {
            self.answer(Some(reaper), &Response::Completions(heapless::Vec::new()));
        }
        Response::Region { len }
    }

    fn region_len(&self, region: usize) -> usize {
        self.regions
            .get(region)
            .and_then(Option::as_ref)
            .map_or(0, |entry| entry.region.len())
    }

    /// Checks an operation against the client's region and the device.
    fn check(&self, client: usize, operation: &Operation) -> Result<(), BlkError> {
        let (sector, offset, len) = match *operation {
            Operation::Flush => return Ok(()),
            Operation::Read {
                sector,
                offset,
                len,
            }
            | Operation::Write {
                sector,
                offset,
                len,
            } => (sector, offset, len),
        };
        if len == 0 || u64::from(len) % SECTOR_SIZE != 0 || len > self.info().max_transfer {
            return Err(BlkError::BadLength);
        }
        let region = self.clients[client].region.ok_or(BlkError::NoRegion)?;
        let offset = usize::try_from(offset).map_err(|_| BlkError::BadRegion)?;
        if !fits(offset, len as usize, self.region_len(region)) {
            return Err(BlkError::BadRegion);
        }
        let sectors = u64::from(len) / SECTOR_SIZE;
        if sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.device.capacity())
        {
            return Err(BlkError::OutOfRange);
        }
        if matches!(operation, Operation::Write { .. }) && self.device.read_only() {
            return Err(BlkError::ReadOnly);
        }
        if self.device.failed() {
            return Err(BlkError::DeviceFailed);
        }
        Ok(())
    }

    fn accept(&mut self, client: usize, reply: Option<CapSlot>, tag: u32, operation: Operation) {
        self.stats.requests += 1;
        let state = &self.clients[client];
        if state.accepted + state.completions.len() >= MAX_PER_CLIENT {
            self.deliver(
                client,
                reply,
                Completion {
                    tag,
                    result: Err(BlkError::Busy),
                },
            );
            return;
        }
        if let Err(error) = self.check(client, &operation) {
            self.deliver(
                client,
                reply,
                Completion {
                    tag,
                    result: Err(error),
                },
            );
            return;
        }
        if operation == Operation::Flush && !self.device.has_flush() {
            // No write cache: every completed write is already durable.
            self.deliver(
                client,
                reply,
                Completion {
                    tag,
                    result: Ok(()),
                },
            );
            return;
        }
        let (op, sector, offset, len) = match operation {
            Operation::Read {
                sector,
                offset,
                len,
            } => (Op::Read, sector, offset as usize, len as usize),
            Operation::Write {
                sector,
                offset,
                len,
            } => (Op::Write, sector, offset as usize, len as usize),
            Operation::Flush => (Op::Flush, 0, 0, 0),
        };
        let region = match op {
            Op::Flush => None,
            _ => self.clients[client].region,
        };
        if let Some(region) = region
            && let Some(Some(entry)) = self.regions.get_mut(region)
        {
            entry.users += 1;
        }
        let pending = Pending {
            client,
            instance: self.clients[client].instance,
            session: self.clients[client].session,
            tag,
            reply,
            op,
            sector,
            region,
            offset,
            len,
            submitted: 0,
            parts_out: 0,
            all_submitted: false,
            error: None,
        };
        let id = match self.free_requests.pop() {
            Some(id) => {
                self.requests[id] = Some(pending);
                id
            }
            None => {
                self.requests.push(Some(pending));
                self.requests.len() - 1
            }
        };
        self.clients[client].accepted += 1;
        self.waiting.push_back(id);
    }

    fn reap(&mut self, client: usize, reply: Option<CapSlot>, wait: bool) {
        let Some(reply) = reply else {
            return;
        };
        // Wait only while something can still complete: a client with nothing in flight (a new
        // instance, or a client whose driver restarted) is answered at once, never left
        // waiting forever.
        let state = &self.clients[client];
        if state.completions.is_empty() && wait && state.accepted > 0 {
            if let Some(old) = self.clients[client].reaper.replace(reply) {
                self.answer(Some(old), &Response::Completions(heapless::Vec::new()));
            }
            return;
        }
        self.send_completions(client, reply);
    }

    fn send_completions(&mut self, client: usize, reply: CapSlot) {
        let mut batch = heapless::Vec::<Completion, MAX_COMPLETIONS>::new();
        while batch.len() < MAX_COMPLETIONS {
            match self.clients[client].completions.pop_front() {
                Some(completion) => {
                    let _ = batch.push(completion);
                }
                None => break,
            }
        }
        self.answer(Some(reply), &Response::Completions(batch));
    }

    /// Gives a finished request's result to its client.
    fn deliver(&mut self, client: usize, reply: Option<CapSlot>, completion: Completion) {
        if completion.result.is_err() {
            self.stats.failed += 1;
        }
        match reply {
            Some(reply) => self.answer(Some(reply), &Response::Done(completion)),
            None => {
                let state = &mut self.clients[client];
                if state.completions.len() >= MAX_QUEUED {
                    self.stats.dropped_completions += 1;
                    return;
                }
                state.completions.push_back(completion);
                if let Some(reaper) = state.reaper.take() {
                    self.send_completions(client, reaper);
                }
            }
        }
    }

    /// Feeds waiting requests' parts to the device while it has room, then notifies it.
    pub fn pump(&mut self) {
        let part_bytes = self.device.part_bytes();
        while let Some(&id) = self.waiting.front() {
            let Some(Some(pending)) = self.requests.get(id) else {
                self.waiting.pop_front();
                continue;
            };
            if pending.error.is_some() || pending.all_submitted {
                self.waiting.pop_front();
                self.maybe_finish(id);
                continue;
            }
            let chunk = (pending.len - pending.submitted).min(part_bytes);
            let sector = pending.sector + (pending.submitted as u64) / SECTOR_SIZE;
            let cookie = ((id as u64) << 32) | pending.submitted as u64;
            let kind = match pending.op {
                Op::Read => PartKind::Read { len: chunk },
                Op::Write => PartKind::Write,
                Op::Flush => PartKind::Flush,
            };
            let mut data: &[u8] = &[];
            if pending.op == Op::Write {
                let at = pending.offset + pending.submitted;
                let staging = &mut self.staging[..chunk];
                let copied = pending
                    .region
                    .and_then(|region| self.regions.get(region))
                    .and_then(Option::as_ref)
                    .is_some_and(|entry| entry.region.read(at, staging));
                if !copied {
                    self.fail_pending(id, BlkError::BadRegion);
                    continue;
                }
                data = &self.staging[..chunk];
            }
            let part = Part {
                cookie,
                kind,
                sector,
            };
            match self.device.submit(part, data) {
                Ok(()) => {
                    if let Some(Some(pending)) = self.requests.get_mut(id) {
                        pending.parts_out += 1;
                        pending.submitted += chunk;
                        if pending.op == Op::Flush || pending.submitted >= pending.len {
                            pending.all_submitted = true;
                            self.waiting.pop_front();
                        }
                    }
                }
                Err(SubmitError::Busy) => break,
                Err(SubmitError::Failed(error)) => self.fail_pending(id, error),
            }
        }
        self.device.kick();
    }

    fn fail_pending(&mut self, id: usize, error: BlkError) {
        if let Some(Some(pending)) = self.requests.get_mut(id) {
            pending.error.get_or_insert(error);
        }
        if self.waiting.front() == Some(&id) {
            self.waiting.pop_front();
        }
        self.maybe_finish(id);
    }

    /// Finishes request `id` if nothing of it is at the device and nothing more will be.
    fn maybe_finish(&mut self, id: usize) {
        let done = match self.requests.get(id) {
            Some(Some(pending)) => {
                pending.parts_out == 0 && (pending.error.is_some() || pending.all_submitted)
            }
            _ => false,
        };
        if !done {
            return;
        }
        let Some(pending) = self.requests.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.free_requests.push(id);
        self.waiting.retain(|&waiting| waiting != id);
        if let Some(region) = pending.region {
            self.region_user_done(region);
        }
        let completion = Completion {
            tag: pending.tag,
            result: pending.error.map_or(Ok(()), Err),
        };
        let current = self
            .clients
            .get(pending.client)
            .is_some_and(|client| client.instance == pending.instance);
        if current {
            let state = &mut self.clients[pending.client];
            state.accepted = state.accepted.saturating_sub(1);
            if pending.reply.is_some() || state.session == pending.session {
                self.deliver(pending.client, pending.reply, completion);
            } else {
                // Sent in a session the client has since ended with `SetupRegion`.
                self.stats.dropped_completions += 1;
                // A reaper waiting for nothing that can complete any more is answered.
                let state = &mut self.clients[pending.client];
                if state.accepted == 0
                    && state.completions.is_empty()
                    && let Some(reaper) = state.reaper.take()
                {
                    self.answer(Some(reaper), &Response::Completions(heapless::Vec::new()));
                }
            }
        } else if let Some(reply) = pending.reply {
            // The old instance is gone; its reply capability is stale.
            let _ = self.syscalls.cap_drop(reply);
        }
    }

    /// Handles the device interrupt: copies read data into the regions and finishes requests
    /// whose last part completed.
    pub fn interrupt(&mut self) {
        let requests = &mut self.requests;
        let regions = &self.regions;
        let finished = &mut self.finished;
        self.device.interrupt(|cookie, result| {
            let id = (cookie >> 32) as usize;
            let part_offset = (cookie & 0xffff_ffff) as usize;
            let Some(Some(pending)) = requests.get_mut(id) else {
                return;
            };
            pending.parts_out = pending.parts_out.saturating_sub(1);
            match result {
                Ok(data) if pending.op == Op::Read && pending.error.is_none() => {
                    let written = pending
                        .region
                        .and_then(|region| regions.get(region))
                        .and_then(Option::as_ref)
                        .is_some_and(|entry| {
                            entry.region.write(pending.offset + part_offset, data)
                        });
                    if !written {
                        pending.error = Some(BlkError::BadRegion);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    pending.error.get_or_insert(error);
                }
            }
            if pending.parts_out == 0 {
                finished.push(id);
            }
        });
        let finished = core::mem::take(&mut self.finished);
        for &id in &finished {
            self.maybe_finish(id);
        }
        self.finished = finished;
        self.finished.clear();
    }
}

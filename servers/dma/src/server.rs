//! The DMA server model: client windows, grants, quarantine and statistics, independent of IPC
//! and syscalls (the real server feeds it decoded requests and a syscall-backed [`Backing`]).
//!
//! Each client identity owns one window: a batch of shared pages sized by its manifest quota,
//! made shared and zeroed once when the client first registers, and kept across the client's
//! restarts. Grants are carved from the window by a [`SlotPool`] of its own, so one client's
//! exhaustion or quota overrun is never felt by another. When a client dies its grants go to
//! quarantine inside its own window; only the same identity, after its new instance has
//! registered and declared its device reset, gets those slots back.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::backing::{Backing, SharedRegion};
use crate::error::DmaError;
use crate::grant::{
    ClientIdentity, ClientRef, Direction, Grant, GrantId, GrantKind, GrantTable, InstanceGeneration,
};
use crate::pool::{DEFAULT_SLOT_SIZE, SlotPool, SlotRun};
use crate::stats::{
    ClientStats, EVENT_RING_LEN, Event, EventKind, EventRing, FailureCounts, StatsSummary,
};

/// Server configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Slot size in bytes (a power of two, at most the page size so windows stay slot-aligned).
    pub slot_size: usize,
    /// The most bytes the server shares for windows altogether (its memory quota).
    pub budget_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            slot_size: DEFAULT_SLOT_SIZE,
            budget_bytes: 64 << 20,
        }
    }
}

/// What `register` returns: where the client's window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// Client-virtual address of the window in the registering instance.
    pub client_base: u64,
    /// Device address of the window's first byte.
    pub device_base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Largest length one `map` or `alloc_coherent` can request.
    pub max_mapping_size: u64,
    /// Whether quarantined slots wait for [`DmaServer::reset_complete`].
    pub reset_pending: bool,
}

/// What `map` and `alloc_coherent` return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The grant's id, to pass to `unmap`.
    pub id: GrantId,
    /// Byte offset in the client's window.
    pub window_offset: u64,
    /// Client-virtual address of the buffer.
    pub client_address: u64,
    /// Device address of the buffer.
    pub device_address: u64,
    /// Length in bytes (as requested).
    pub length: u64,
}

/// The authority to act as the supervisor (`revoke`, `retire`). The serve loop creates one only
/// for requests that arrive on the supervisor's own endpoint.
#[derive(Debug)]
pub struct Supervisor {
    _private: (),
}

impl Supervisor {
    /// Asserts that the current request came from the supervisor's endpoint.
    pub const fn from_supervisor_endpoint() -> Self {
        Supervisor { _private: () }
    }
}

#[derive(Debug)]
struct Client {
    identity: ClientIdentity,
    /// The live instance, `None` while the client is dead.
    instance: Option<InstanceGeneration>,
    /// The last instance that was revoked; it may not register again.
    dead_instance: Option<InstanceGeneration>,
    region: SharedRegion,
    client_base: u64,
    pool: SlotPool,
    quarantine: Vec<SlotRun>,
    quarantined_slots: u64,
    grants: u64,
    granted_bytes: u64,
    bytes_to_device: u64,
    bytes_from_device: u64,
    failures: u64,
}

impl Client {
    /// Whether `caller` is this client's live instance.
    fn check_caller(&self, caller: ClientRef) -> Result<(), DmaError> {
        match self.instance {
            Some(instance) if instance == caller.instance => Ok(()),
            Some(_) => Err(DmaError::StaleInstance),
            None if self.dead_instance == Some(caller.instance) => Err(DmaError::StaleInstance),
            None => Err(DmaError::NotRegistered),
        }
    }

    fn window_info(&self) -> WindowInfo {
        WindowInfo {
            client_base: self.client_base,
            device_base: self.region.device_base,
            size: self.pool.window_bytes() as u64,
            slot_size: self.pool.slot_size() as u32,
            max_mapping_size: self.pool.max_mapping_size() as u64,
            reset_pending: !self.quarantine.is_empty(),
        }
    }
}

/// The clients, sorted by identity: found by a binary search over a few contiguous entries (at
/// most 16 in a manifest), with no hashing and no tree to walk.
#[derive(Debug, Default)]
struct ClientList {
    clients: Vec<Client>,
}

impl ClientList {
    fn position(&self, identity: ClientIdentity) -> Result<usize, usize> {
        self.clients
            .binary_search_by_key(&identity, |client| client.identity)
    }

    #[inline]
    fn get(&self, identity: &ClientIdentity) -> Option<&Client> {
        let index = self.position(*identity).ok()?;
        self.clients.get(index)
    }

    #[inline]
    fn get_mut(&mut self, identity: &ClientIdentity) -> Option<&mut Client> {
        let index = self.position(*identity).ok()?;
        self.clients.get_mut(index)
    }

    fn contains_key(&self, identity: &ClientIdentity) -> bool {
        self.position(*identity).is_ok()
    }

    /// Adds a client whose identity is not in the list yet (else replaces it).
    fn insert(&mut self, client: Client) {
        match self.position(client.identity) {
            Ok(index) => self.clients[index] = client,
            Err(index) => self.clients.insert(index, client),
        }
    }

    fn remove(&mut self, identity: &ClientIdentity) -> Option<Client> {
        let index = self.position(*identity).ok()?;
        Some(self.clients.remove(index))
    }

    fn len(&self) -> usize {
        self.clients.len()
    }

    fn iter(&self) -> core::slice::Iter<'_, Client> {
        self.clients.iter()
    }

    /// The first client after `after` in identity order (`None`: the first of all).
    fn first_after(&self, after: Option<ClientIdentity>) -> Option<&Client> {
        let index = match after {
            None => 0,
            Some(after) => self
                .clients
                .partition_point(|client| client.identity <= after),
        };
        self.clients.get(index)
    }
}

/// The DMA server's state.
#[derive(Debug)]
pub struct DmaServer<B: Backing> {
    config: ServerConfig,
    backing: B,
    clients: ClientList,
    grants: GrantTable,
    shared_bytes: u64,
    total_slots: u64,
    used_slots: u64,
    high_water_slots: u64,
    quarantined_slots: u64,
    bytes_to_device: u64,
    bytes_from_device: u64,
    maps: u64,
    unmaps: u64,
    coherent_allocs: u64,
    failures: FailureCounts,
    events: EventRing,
}

impl<B: Backing> DmaServer<B> {
    /// A server with no client yet.
    pub fn new(config: ServerConfig, backing: B) -> Self {
        DmaServer {
            config,
            backing,
            clients: ClientList::default(),
            grants: GrantTable::new(),
            shared_bytes: 0,
            total_slots: 0,
            used_slots: 0,
            high_water_slots: 0,
            quarantined_slots: 0,
            bytes_to_device: 0,
            bytes_from_device: 0,
            maps: 0,
            unmaps: 0,
            coherent_allocs: 0,
            failures: FailureCounts::default(),
            events: EventRing::new(),
        }
    }

    /// The backing (tests inspect the fake through this).
    pub fn backing(&self) -> &B {
        &self.backing
    }

    /// The largest mapping a client can request, in bytes.
    pub fn max_mapping_size(&self) -> u64 {
        (crate::pool::SLOTS_PER_BLOCK * self.config.slot_size) as u64
    }

    /// Registers `caller`, creating its window of `quota_bytes` (rounded up to whole pages) on
    /// first registration, or attaching the existing window to a restarted instance. A window
    /// keeps the size it was created with.
    ///
    /// A registration from a new instance while an older one is still registered means the older
    /// one died: its grants go to quarantine as if the supervisor had revoked it.
    pub fn register(
        &mut self,
        caller: ClientRef,
        quota_bytes: u64,
    ) -> Result<WindowInfo, DmaError> {
        let result = self.try_register(caller, quota_bytes);
        self.note(caller.identity, result)
    }

    /// Allocates a long-lived device-visible buffer (for example a virtqueue ring) from the
    /// caller's window. Freed with [`unmap`](Self::unmap).
    pub fn alloc_coherent(
        &mut self,
        caller: ClientRef,
        size: u64,
        align: u64,
    ) -> Result<GrantInfo, DmaError> {
        let result = self.try_allocate(
            caller,
            size,
            align,
            0,
            Direction::Bidirectional,
            GrantKind::Coherent,
        );
        self.note(caller.identity, result)
    }

    /// Grants a streaming bounce buffer of `len` bytes for one transfer in `direction`, at a
    /// device address aligned to `align` (0 = slot) that does not cross a multiple of `boundary`
    /// (0 = none).
    pub fn map(
        &mut self,
        caller: ClientRef,
        len: u64,
        direction: Direction,
        align: u64,
        boundary: u64,
    ) -> Result<GrantInfo, DmaError> {
        let result = self.try_allocate(
            caller,
            len,
            align,
            boundary,
            direction,
            GrantKind::Streaming,
        );
        self.note(caller.identity, result)
    }

    /// Returns a grant's slots to the caller's window. Stale, foreign and unknown ids fail with
    /// [`DmaError::UnknownGrant`].
    pub fn unmap(&mut self, caller: ClientRef, id: GrantId) -> Result<(), DmaError> {
        let result = self.try_unmap(caller, id);
        self.note(caller.identity, result)
    }

    /// Declares that the caller's restarted instance has reset its device (for VirtIO: the
    /// status register read back 0), so nothing can still be writing into quarantined slots;
    /// they return to the caller's window. Returns the number of slots reclaimed.
    pub fn reset_complete(&mut self, caller: ClientRef) -> Result<u64, DmaError> {
        let result = self.try_reset_complete(caller);
        self.note(caller.identity, result)
    }

    /// Supervisor only: the client died. Its window is unmapped from the dead instance and its
    /// grants go to quarantine. Returns the number of slots quarantined by this call.
    ///
    /// An identity without a window is [`DmaError::NotRegistered`], which is not counted as a
    /// failure: the supervisor revokes every task that ends, and most are no DMA clients.
    pub fn revoke(
        &mut self,
        _authority: &Supervisor,
        identity: ClientIdentity,
    ) -> Result<u64, DmaError> {
        match self.clients.contains_key(&identity) {
            true => Ok(self.quarantine_client(identity)),
            false => Err(DmaError::NotRegistered),
        }
    }

    /// Supervisor only: the client is gone for good. Its window is made private, zeroed and
    /// returned to the server's memory. Fails with [`DmaError::Busy`] while it holds grants or
    /// quarantined slots (a device may still write there, so those pages may not serve anyone
    /// else).
    pub fn retire(
        &mut self,
        _authority: &Supervisor,
        identity: ClientIdentity,
    ) -> Result<(), DmaError> {
        let result = self.try_retire(identity);
        self.note(identity, result)
    }

    /// Server-wide statistics (the protocol's summary; failures by reason from [`Self::failures`]).
    pub fn stats(&self) -> StatsSummary {
        StatsSummary {
            slot_size: self.config.slot_size as u32,
            max_mapping_size: self.max_mapping_size(),
            total_slots: self.total_slots,
            used_slots: self.used_slots,
            high_water_slots: self.high_water_slots,
            quarantined_slots: self.quarantined_slots,
            grants: self.grants.len() as u64,
            clients: self.clients.len() as u32,
            budget_bytes: self.config.budget_bytes,
            shared_bytes: self.shared_bytes,
            bytes_to_device: self.bytes_to_device,
            bytes_from_device: self.bytes_from_device,
            maps: self.maps,
            unmaps: self.unmaps,
            coherent_allocs: self.coherent_allocs,
            failures: self.failures.total(),
            metadata_bytes: self.metadata_bytes() as u64,
            events: self.events_total(),
        }
    }

    /// Failed requests by reason.
    pub fn failures(&self) -> FailureCounts {
        self.failures
    }

    /// One client's statistics.
    pub fn client_stats(&self, identity: ClientIdentity) -> Option<ClientStats> {
        self.clients.get(&identity).map(|client| ClientStats {
            identity,
            instance: client.instance,
            window_bytes: client.pool.window_bytes() as u64,
            grants: client.grants,
            granted_bytes: client.granted_bytes,
            used_slots: client.pool.used_slots() as u64 - client.quarantined_slots,
            quarantined_slots: client.quarantined_slots,
            reset_pending: !client.quarantine.is_empty(),
            bytes_to_device: client.bytes_to_device,
            bytes_from_device: client.bytes_from_device,
            failures: client.failures,
        })
    }

    /// Every client's statistics, by identity.
    pub fn all_client_stats(&self) -> impl Iterator<Item = ClientStats> + '_ {
        self.clients
            .iter()
            .filter_map(|client| self.client_stats(client.identity))
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> heapless::Vec<Event, EVENT_RING_LEN> {
        self.events.snapshot()
    }

    /// Restarts high-water tracking from the current use.
    pub fn reset_high_water(&mut self) {
        self.high_water_slots = self.used_slots;
    }

    /// Bookkeeping bytes: every pool plus the grant table.
    pub fn metadata_bytes(&self) -> usize {
        self.grants.metadata_bytes()
            + self
                .clients
                .iter()
                .map(|client| client.pool.metadata_bytes())
                .sum::<usize>()
    }

    /// Checks the server's internal invariants: each window's slot use equals its grants plus
    /// its quarantine, no two of them overlap, and the global counters match. Linear cost; for
    /// tests.
    pub fn check_consistency(&self) -> bool {
        let mut total = 0u64;
        let mut used = 0u64;
        let mut quarantined = 0u64;
        for client in self.clients.iter() {
            let identity = &client.identity;
            if !client.pool.check_consistency() {
                return false;
            }
            let mut runs: Vec<SlotRun> = client.quarantine.clone();
            runs.extend(
                self.grants
                    .iter()
                    .filter(|(_, grant)| grant.client == *identity)
                    .map(|(_, grant)| grant.run),
            );
            runs.sort_by_key(|run| run.first);
            if runs.windows(2).any(|pair| pair[0].end() > pair[1].first) {
                return false;
            }
            let slots: usize = runs.iter().map(|run| run.count).sum();
            if slots != client.pool.used_slots()
                || runs
                    .iter()
                    .any(|run| (run.first..run.end()).any(|slot| client.pool.is_slot_free(slot)))
            {
                return false;
            }
            let quarantine: usize = client.quarantine.iter().map(|run| run.count).sum();
            if quarantine as u64 != client.quarantined_slots {
                return false;
            }
            total += client.pool.total_slots() as u64;
            used += client.pool.used_slots() as u64;
            quarantined += client.quarantined_slots;
        }
        total == self.total_slots
            && used == self.used_slots
            && quarantined == self.quarantined_slots
    }

    /// Counts a failure found before the model saw the request (a request that did not decode,
    /// a badge without the needed role) against its reason and, if known, its client.
    pub fn record_failure(&mut self, identity: ClientIdentity, error: DmaError) {
        let _ = self.note::<()>(identity, Err(error));
    }

    /// The shared region behind `identity`'s window (the serve loop hands its Memory capability
    /// to the client in the `register` reply).
    pub fn window_region(&self, identity: ClientIdentity) -> Option<SharedRegion> {
        self.clients.get(&identity).map(|client| client.region)
    }

    /// The figures of the first client after `after` in identity order (`None` = the first).
    pub fn next_client_stats(&self, after: Option<ClientIdentity>) -> Option<ClientStats> {
        let client = self.clients.first_after(after)?;
        self.client_stats(client.identity)
    }

    /// Events recorded since the server started (the ring keeps the last
    /// [`EVENT_RING_LEN`](crate::stats::EVENT_RING_LEN)).
    pub fn events_total(&self) -> u64 {
        self.events.total()
    }

    /// Counts a failure against its reason and its client, and passes the result through.
    fn note<T>(
        &mut self,
        identity: ClientIdentity,
        result: Result<T, DmaError>,
    ) -> Result<T, DmaError> {
        if let Err(error) = &result {
            self.failures.record(*error);
            if let Some(client) = self.clients.get_mut(&identity) {
                client.failures = client.failures.saturating_add(1);
            }
        }
        result
    }

    fn try_register(
        &mut self,
        caller: ClientRef,
        quota_bytes: u64,
    ) -> Result<WindowInfo, DmaError> {
        if let Some(client) = self.clients.get(&caller.identity) {
            if client.instance == Some(caller.instance) {
                return Ok(client.window_info());
            }
            if client.dead_instance == Some(caller.instance) {
                return Err(DmaError::StaleInstance);
            }
            if client.instance.is_some() {
                // A newer instance: the old one is dead.
                self.quarantine_client(caller.identity);
            }
            return self.attach(caller);
        }
        self.create_window(caller, quota_bytes)
    }

    fn attach(&mut self, caller: ClientRef) -> Result<WindowInfo, DmaError> {
        let client = self
            .clients
            .get_mut(&caller.identity)
            .ok_or(DmaError::NotRegistered)?;
        client.client_base = self.backing.map_into_client(&client.region, caller)?;
        client.instance = Some(caller.instance);
        Ok(client.window_info())
    }

    fn create_window(
        &mut self,
        caller: ClientRef,
        quota_bytes: u64,
    ) -> Result<WindowInfo, DmaError> {
        let page_size = self.backing.page_size() as u64;
        let granule = page_size.max(self.config.slot_size as u64);
        if quota_bytes == 0 || !granule.is_power_of_two() {
            return Err(DmaError::InvalidArgument);
        }
        let window_bytes = quota_bytes
            .checked_next_multiple_of(granule)
            .ok_or(DmaError::OutOfMemory)?;
        let after = self
            .shared_bytes
            .checked_add(window_bytes)
            .ok_or(DmaError::OutOfMemory)?;
        if after > self.config.budget_bytes {
            return Err(DmaError::OutOfMemory);
        }
        let pages = usize::try_from(window_bytes / page_size).map_err(|_| DmaError::OutOfMemory)?;
        let region = self.backing.share(pages)?;
        // From here on, undo the share if anything fails.
        let created = self.backing.zero(&region).and_then(|()| {
            let pool = SlotPool::new(
                pages * page_size as usize,
                self.config.slot_size,
                region.device_base,
            )?;
            let client_base = self.backing.map_into_client(&region, caller)?;
            Ok((pool, client_base))
        });
        let (pool, client_base) = match created {
            Ok(created) => created,
            Err(error) => {
                self.discard_region(region, None);
                return Err(error);
            }
        };
        self.shared_bytes = after;
        self.total_slots += pool.total_slots() as u64;
        let client = Client {
            identity: caller.identity,
            instance: Some(caller.instance),
            dead_instance: None,
            region,
            client_base,
            pool,
            quarantine: Vec::new(),
            quarantined_slots: 0,
            grants: 0,
            granted_bytes: 0,
            bytes_to_device: 0,
            bytes_from_device: 0,
            failures: 0,
        };
        let info = client.window_info();
        self.clients.insert(client);
        Ok(info)
    }

    /// Returns a region to private memory: unmap, unshare, zero, release. A step that fails
    /// leaves the pages out of circulation, which is safe.
    fn discard_region(&mut self, region: SharedRegion, mapped_into: Option<ClientRef>) -> bool {
        if let Some(client) = mapped_into
            && self.backing.unmap_from_client(&region, client).is_err()
        {
            return false;
        }
        self.backing.unshare(&region).is_ok()
            && self.backing.zero(&region).is_ok()
            && self.backing.release(region).is_ok()
    }

    #[inline(always)]
    fn try_allocate(
        &mut self,
        caller: ClientRef,
        len: u64,
        align: u64,
        boundary: u64,
        direction: Direction,
        kind: GrantKind,
    ) -> Result<GrantInfo, DmaError> {
        let client = self
            .clients
            .get_mut(&caller.identity)
            .ok_or(DmaError::NotRegistered)?;
        client.check_caller(caller)?;
        let run = match client.pool.alloc(len, align, boundary) {
            Ok(run) => run,
            // More slots than the window has free: the client's quota, not the pool, is the
            // limit (a failed allocation changes nothing).
            Err(DmaError::PoolExhausted)
                if len.div_ceil(client.pool.slot_size() as u64)
                    > client.pool.free_slots() as u64 =>
            {
                return Err(DmaError::QuotaExceeded);
            }
            Err(error) => return Err(error),
        };
        let offset = client.pool.offset_of(run) as u64;
        let grant = Grant {
            client: caller.identity,
            length: len,
            direction,
            kind,
            run,
        };
        let id = match self.grants.insert(grant) {
            Ok(id) => id,
            Err(error) => {
                // Cannot fail: the run was just allocated.
                let _ = client.pool.free(run);
                return Err(error);
            }
        };
        client.grants += 1;
        client.granted_bytes += len;
        let device_address = client.region.device_base + offset;
        let info = GrantInfo {
            id,
            window_offset: offset,
            client_address: client.client_base + offset,
            device_address,
            length: len,
        };
        let event = match kind {
            GrantKind::Streaming => {
                self.maps += 1;
                if matches!(direction, Direction::ToDevice | Direction::Bidirectional) {
                    self.bytes_to_device += len;
                    client.bytes_to_device += len;
                }
                if matches!(direction, Direction::FromDevice | Direction::Bidirectional) {
                    self.bytes_from_device += len;
                    client.bytes_from_device += len;
                }
                EventKind::Map
            }
            GrantKind::Coherent => {
                self.coherent_allocs += 1;
                EventKind::AllocCoherent
            }
        };
        self.used_slots += run.count as u64;
        self.high_water_slots = self.high_water_slots.max(self.used_slots);
        self.events
            .push(event, caller.identity, direction, device_address, len);
        Ok(info)
    }

    #[inline(always)]
    fn try_unmap(&mut self, caller: ClientRef, id: GrantId) -> Result<(), DmaError> {
        let client = self
            .clients
            .get_mut(&caller.identity)
            .ok_or(DmaError::NotRegistered)?;
        client.check_caller(caller)?;
        let grant = self.grants.remove(id, caller.identity)?;
        let device_address = client.region.device_base + client.pool.offset_of(grant.run) as u64;
        client.pool.free(grant.run)?;
        client.grants -= 1;
        client.granted_bytes -= grant.length;
        self.used_slots -= grant.run.count as u64;
        self.unmaps += 1;
        self.events.push(
            EventKind::Unmap,
            caller.identity,
            grant.direction,
            device_address,
            grant.length,
        );
        Ok(())
    }

    fn try_reset_complete(&mut self, caller: ClientRef) -> Result<u64, DmaError> {
        let client = self
            .clients
            .get_mut(&caller.identity)
            .ok_or(DmaError::NotRegistered)?;
        client.check_caller(caller)?;
        let device_base = client.region.device_base;
        let slot_size = client.pool.slot_size() as u64;
        let runs = core::mem::take(&mut client.quarantine);
        let mut reclaimed = 0u64;
        for run in runs {
            client.pool.free(run)?;
            reclaimed += run.count as u64;
            self.events.push(
                EventKind::Reclaim,
                caller.identity,
                Direction::Bidirectional,
                device_base + run.first as u64 * slot_size,
                run.count as u64 * slot_size,
            );
        }
        client.quarantined_slots -= reclaimed;
        self.quarantined_slots -= reclaimed;
        self.used_slots -= reclaimed;
        Ok(reclaimed)
    }

    /// Moves every grant of `identity` to quarantine and marks the client dead. Returns the
    /// number of slots quarantined.
    fn quarantine_client(&mut self, identity: ClientIdentity) -> u64 {
        let Self {
            clients,
            grants,
            events,
            backing,
            quarantined_slots,
            ..
        } = self;
        let Some(client) = clients.get_mut(&identity) else {
            return 0;
        };
        if let Some(instance) = client.instance.take() {
            // The instance is dead or being killed; a failure only means its address space is
            // already gone.
            let _ = backing.unmap_from_client(&client.region, ClientRef { identity, instance });
            client.dead_instance = Some(instance);
        }
        let device_base = client.region.device_base;
        let slot_size = client.pool.slot_size() as u64;
        let mut slots = 0u64;
        grants.drain_client(identity, |grant| {
            client.quarantine.push(grant.run);
            client.grants -= 1;
            client.granted_bytes -= grant.length;
            slots += grant.run.count as u64;
            events.push(
                EventKind::Quarantine,
                identity,
                grant.direction,
                device_base + grant.run.first as u64 * slot_size,
                grant.length,
            );
        });
        client.quarantined_slots += slots;
        *quarantined_slots += slots;
        slots
    }

    fn try_retire(&mut self, identity: ClientIdentity) -> Result<(), DmaError> {
        let client = self.clients.get(&identity).ok_or(DmaError::NotRegistered)?;
        if client.grants != 0 || !client.quarantine.is_empty() {
            return Err(DmaError::Busy);
        }
        let Some(client) = self.clients.remove(&identity) else {
            return Err(DmaError::NotRegistered);
        };
        let mapped_into = client
            .instance
            .map(|instance| ClientRef { identity, instance });
        self.shared_bytes -= client.pool.window_bytes() as u64;
        self.total_slots -= client.pool.total_slots() as u64;
        if self.discard_region(client.region, mapped_into) {
            Ok(())
        } else {
            // The pages are out of circulation; the budget they used stays spent.
            self.shared_bytes += client.pool.window_bytes() as u64;
            Err(DmaError::Backing)
        }
    }
}

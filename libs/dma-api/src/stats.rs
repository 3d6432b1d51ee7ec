//! Observability types: the server-wide summary, failures by reason, per-client figures and the
//! recent-event ring (what `dmastat` prints).
//!
//! Each travels in its own reply so every reply fits one message payload whatever the counter
//! values (checked by tests with every counter at its maximum): a [`StatsSummary`], the
//! [`FailureCounts`], one [`ClientStats`] per call (paged by identity) and [`EventPage`]s of up
//! to [`EVENTS_PER_PAGE`] events (paged by sequence number).

use serde::{Deserialize, Serialize};

use crate::types::{ClientIdentity, Direction, DmaError, InstanceGeneration};

/// How many recent events the server keeps.
pub const EVENT_RING_LEN: usize = 32;

/// Events per [`EventPage`].
pub const EVENTS_PER_PAGE: usize = 4;

/// Failures counted by reason, one counter per [`DmaError`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCounts {
    /// Counters indexed by error code minus one (see [`DmaError::ALL`]).
    pub by_code: [u64; DmaError::ALL.len()],
}

impl FailureCounts {
    /// Counts one failure.
    pub fn record(&mut self, error: DmaError) {
        let index = (error.code() as usize).wrapping_sub(1);
        if let Some(counter) = self.by_code.get_mut(index) {
            *counter = counter.saturating_add(1);
        }
    }

    /// The count for one reason.
    pub fn get(&self, error: DmaError) -> u64 {
        self.by_code
            .get((error.code() as usize).wrapping_sub(1))
            .copied()
            .unwrap_or(0)
    }

    /// The total over every reason (saturating).
    pub fn total(&self) -> u64 {
        self.by_code
            .iter()
            .fold(0u64, |sum, count| sum.saturating_add(*count))
    }

    /// The reasons with a non-zero count, in code order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DmaError, u64)> + '_ {
        DmaError::ALL
            .iter()
            .map(|error| (*error, self.get(*error)))
            .filter(|(_, count)| *count != 0)
    }
}

/// Server-wide figures (failures by reason come separately, as [`FailureCounts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSummary {
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Largest mapping a client can request, in bytes.
    pub max_mapping_size: u64,
    /// Slots in every window together.
    pub total_slots: u64,
    /// Slots in use (granted or quarantined).
    pub used_slots: u64,
    /// The most slots ever in use at once since the last high-water reset.
    pub high_water_slots: u64,
    /// Slots held in quarantine for dead clients.
    pub quarantined_slots: u64,
    /// Live grants.
    pub grants: u64,
    /// Registered clients (alive or awaiting restart).
    pub clients: u32,
    /// Bytes of the server's memory budget.
    pub budget_bytes: u64,
    /// Bytes of the budget given to windows (shared with the host).
    pub shared_bytes: u64,
    /// Bytes mapped for transfers to the device (streaming maps, by requested length).
    pub bytes_to_device: u64,
    /// Bytes mapped for transfers from the device.
    pub bytes_from_device: u64,
    /// Successful streaming maps.
    pub maps: u64,
    /// Successful unmaps (streaming and coherent).
    pub unmaps: u64,
    /// Successful coherent allocations.
    pub coherent_allocs: u64,
    /// Failed requests, all reasons together.
    pub failures: u64,
    /// Allocator and grant-table bookkeeping in bytes.
    pub metadata_bytes: u64,
    /// Events recorded since the server started (the ring keeps the last few).
    pub events: u64,
}

/// One client's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStats {
    /// The client's manifest identity.
    pub identity: ClientIdentity,
    /// The registered instance, `None` while the client is dead (revoked).
    pub instance: Option<InstanceGeneration>,
    /// Window size in bytes.
    pub window_bytes: u64,
    /// Live grants.
    pub grants: u64,
    /// Bytes requested by live grants.
    pub granted_bytes: u64,
    /// Slots used by live grants.
    pub used_slots: u64,
    /// Slots in quarantine.
    pub quarantined_slots: u64,
    /// Whether quarantine waits for the client to declare its device reset.
    pub reset_pending: bool,
    /// Bytes mapped towards the device.
    pub bytes_to_device: u64,
    /// Bytes mapped from the device.
    pub bytes_from_device: u64,
    /// Requests of this client that failed.
    pub failures: u64,
}

/// What happened, in an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A streaming map.
    Map,
    /// An unmap (streaming or coherent).
    Unmap,
    /// A coherent allocation.
    AllocCoherent,
    /// A grant went to quarantine because its client died.
    Quarantine,
    /// A quarantined run was given back to its client's pool.
    Reclaim,
}

impl EventKind {
    /// A short lower-case name, for tables.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Map => "map",
            EventKind::Unmap => "unmap",
            EventKind::AllocCoherent => "coherent",
            EventKind::Quarantine => "quarantine",
            EventKind::Reclaim => "reclaim",
        }
    }
}

/// One recent event (like SWIOTLB's `swiotlb_bounced` tracepoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, counting every event since the server started.
    pub sequence: u64,
    /// What happened.
    pub kind: EventKind,
    /// The client it happened to.
    pub client: ClientIdentity,
    /// Transfer direction.
    pub direction: Direction,
    /// Device address of the buffer.
    pub device_address: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A page of recent events, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events with a sequence number at or after the one asked for (the caller's own only,
    /// unless it is an observer).
    pub events: heapless::Vec<Event, EVENTS_PER_PAGE>,
    /// The sequence number to ask for next; equal to the one asked for when nothing is left.
    pub next: u64,
}

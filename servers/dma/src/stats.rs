//! Observability: counters, per-client figures and a ring of recent events, in serde types that
//! travel in postcard payloads (what `dmastat` prints).

use serde::{Deserialize, Serialize};

pub use moat_dma_api::{ClientStats, Event, EventKind, FailureCounts};

use crate::grant::{ClientIdentity, Direction};

/// How many recent events the server keeps (part of the protocol: clients page through them).
pub use moat_dma_api::stats::EVENT_RING_LEN;

/// Server-wide figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaStats {
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Largest mapping a client can request, in bytes.
    pub max_mapping_size: u64,
    /// Slots in every window together.
    pub total_slots: u64,
    /// Slots in use (granted or quarantined).
    pub used_slots: u64,
    /// The most slots ever in use at once since the last reset.
    pub high_water_slots: u64,
    /// Slots held in quarantine for dead clients.
    pub quarantined_slots: u64,
    /// Live grants.
    pub grants: u64,
    /// Registered clients (alive or awaiting restart).
    pub clients: u32,
    /// Bytes of the server's memory budget.
    pub budget_bytes: u64,
    /// Bytes of the budget given to windows.
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
    /// Failed requests by reason.
    pub failures: FailureCounts,
    /// Allocator and grant-table bookkeeping in bytes.
    pub metadata_bytes: u64,
}

/// A fixed-size ring of the last [`EVENT_RING_LEN`] events.
#[derive(Clone, Debug)]
pub struct EventRing {
    events: [Option<Event>; EVENT_RING_LEN],
    next_sequence: u64,
}

impl Default for EventRing {
    fn default() -> Self {
        EventRing::new()
    }
}

impl EventRing {
    /// An empty ring.
    pub const fn new() -> Self {
        EventRing {
            events: [None; EVENT_RING_LEN],
            next_sequence: 0,
        }
    }

    /// Records an event, overwriting the oldest when full; fills in its sequence number.
    pub fn push(
        &mut self,
        kind: EventKind,
        client: ClientIdentity,
        direction: Direction,
        device_address: u64,
        size: u64,
    ) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.events[(sequence % EVENT_RING_LEN as u64) as usize] = Some(Event {
            sequence,
            kind,
            client,
            direction,
            device_address,
            size,
        });
    }

    /// Events recorded so far (including those overwritten).
    pub fn total(&self) -> u64 {
        self.next_sequence
    }

    /// The kept events, oldest first.
    pub fn snapshot(&self) -> heapless::Vec<Event, EVENT_RING_LEN> {
        let kept = self.next_sequence.min(EVENT_RING_LEN as u64);
        let mut out = heapless::Vec::new();
        for sequence in self.next_sequence - kept..self.next_sequence {
            if let Some(event) = self.events[(sequence % EVENT_RING_LEN as u64) as usize] {
                // Cannot overflow: at most EVENT_RING_LEN events are pushed.
                let _ = out.push(event);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_events_in_order() {
        let mut ring = EventRing::new();
        assert!(ring.snapshot().is_empty());
        for i in 0..(EVENT_RING_LEN as u64 + 5) {
            ring.push(
                EventKind::Map,
                ClientIdentity(1),
                Direction::ToDevice,
                0x1000 * i,
                i,
            );
        }
        let events = ring.snapshot();
        assert_eq!(events.len(), EVENT_RING_LEN);
        assert_eq!(events[0].sequence, 5);
        assert_eq!(events[EVENT_RING_LEN - 1].size, EVENT_RING_LEN as u64 + 4);
        assert!(
            events
                .windows(2)
                .all(|w| w[0].sequence + 1 == w[1].sequence)
        );
        assert_eq!(ring.total(), EVENT_RING_LEN as u64 + 5);
    }

    #[test]
    fn stats_round_trip_through_postcard() {
        use crate::error::DmaError;

        let mut stats = DmaStats {
            total_slots: 512,
            ..DmaStats::default()
        };
        stats.failures.record(DmaError::PoolExhausted);
        stats.failures.record(DmaError::PoolExhausted);
        let bytes = postcard::to_allocvec(&stats).unwrap();
        let back: DmaStats = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, stats);
        assert_eq!(back.failures.get(DmaError::PoolExhausted), 2);
        assert_eq!(back.failures.total(), 2);

        let mut ring = EventRing::new();
        ring.push(
            EventKind::Quarantine,
            ClientIdentity(7),
            Direction::FromDevice,
            0x8000_0000,
            4096,
        );
        let events = ring.snapshot();
        let bytes = postcard::to_allocvec(&events).unwrap();
        let back: heapless::Vec<Event, EVENT_RING_LEN> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, events);
    }
}

//! Observability: counters, per-client figures and a ring of recent events, in serde types that
//! travel in postcard payloads (what `dmastat` prints).

pub use moat_dma_api::{ClientStats, Event, EventKind, FailureCounts};

use crate::grant::{ClientIdentity, Direction};

/// How many recent events the server keeps (part of the protocol: clients page through them).
pub use moat_dma_api::stats::{EVENT_RING_LEN, StatsSummary};

/// A fixed-size ring of the last [`EVENT_RING_LEN`] events. Recording one is a handful of
/// stores into a 24-byte slot: the slot is `sequence % EVENT_RING_LEN`, so the sequence number
/// is not stored, and which slots hold events follows from the count.
#[derive(Clone, Debug)]
pub struct EventRing {
    slots: [Slot; EVENT_RING_LEN],
    next_sequence: u64,
}

/// One recorded event without its sequence number.
#[derive(Clone, Copy, Debug)]
struct Slot {
    device_address: u64,
    size: u64,
    client: ClientIdentity,
    kind: EventKind,
    direction: Direction,
}

/// What fills the ring's unused slots (never reported).
const NO_EVENT: Slot = Slot {
    device_address: 0,
    size: 0,
    client: ClientIdentity(0),
    kind: EventKind::Map,
    direction: Direction::Bidirectional,
};

impl Default for EventRing {
    fn default() -> Self {
        EventRing::new()
    }
}

impl EventRing {
    /// An empty ring.
    pub const fn new() -> Self {
        EventRing {
            slots: [NO_EVENT; EVENT_RING_LEN],
            next_sequence: 0,
        }
    }

    /// Records an event, overwriting the oldest when full; fills in its sequence number.
    #[inline]
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
        self.slots[(sequence % EVENT_RING_LEN as u64) as usize] = Slot {
            device_address,
            size,
            client,
            kind,
            direction,
        };
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
            // Cannot overflow: at most EVENT_RING_LEN events are pushed.
            let slot = self.slots[(sequence % EVENT_RING_LEN as u64) as usize];
            let _ = out.push(Event {
                sequence,
                kind: slot.kind,
                client: slot.client,
                direction: slot.direction,
                device_address: slot.device_address,
                size: slot.size,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_small_and_give_back_every_field() {
        assert!(core::mem::size_of::<Slot>() <= 24);
        let mut ring = EventRing::new();
        ring.push(
            EventKind::Reclaim,
            ClientIdentity(9),
            Direction::FromDevice,
            0x5e00_0800,
            6144,
        );
        assert_eq!(
            ring.snapshot()[..],
            [Event {
                sequence: 0,
                kind: EventKind::Reclaim,
                client: ClientIdentity(9),
                direction: Direction::FromDevice,
                device_address: 0x5e00_0800,
                size: 6144,
            }]
        );
    }

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

        let stats = StatsSummary {
            total_slots: 512,
            failures: 2,
            ..StatsSummary::default()
        };
        let bytes = postcard::to_allocvec(&stats).unwrap();
        let back: StatsSummary = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, stats);
        let mut failures = FailureCounts::default();
        failures.record(DmaError::PoolExhausted);
        failures.record(DmaError::PoolExhausted);
        let bytes = postcard::to_allocvec(&failures).unwrap();
        let back: FailureCounts = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.get(DmaError::PoolExhausted), 2);
        assert_eq!(back.total(), 2);

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

//! Grants: what a client holds in its window, named by generation-tagged ids so that stale and
//! foreign ids are rejected.
//!
//! A [`GrantId`] is a `u64`: the table index in the low 32 bits and the entry's generation in the
//! high 32 bits. Generations start at 1 and advance every time an entry is released, so an id
//! stays unique for 2^32 reuses of its entry; an entry whose generation would wrap is retired
//! instead of reused. The raw value 0 is never a valid id.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

pub use moat_dma_api::{ClientIdentity, Direction, GrantId, InstanceGeneration};

use crate::error::DmaError;
use crate::pool::SlotRun;

/// Who sent a request: the manifest identity and the sending instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientRef {
    /// The client's manifest identity.
    pub identity: ClientIdentity,
    /// The instance that sent the request.
    pub instance: InstanceGeneration,
}

/// What kind of allocation a grant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum GrantKind {
    /// A streaming bounce buffer for one transfer (`map`).
    Streaming = 0,
    /// A long-lived device-visible structure such as a virtqueue ring (`alloc_coherent`).
    Coherent = 1,
}

/// One grant: a run of slots in a client's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The client (by manifest identity) that owns the grant.
    pub client: ClientIdentity,
    /// Length requested, in bytes.
    pub length: u64,
    /// Transfer direction (coherent allocations are bidirectional).
    pub direction: Direction,
    /// Streaming or coherent.
    pub kind: GrantKind,
    /// The slots the grant occupies.
    pub run: SlotRun,
}

/// One table entry: a grant, packed, or a free or retired entry. 20 bytes.
///
/// A grant always covers at least one slot, so `count == 0` marks an entry that holds none: a
/// free one (on the free list) or a retired one (generation exhausted, never reused).
#[derive(Clone, Copy, Debug)]
struct Entry {
    generation: u32,
    /// The owner's identity (in use).
    client: u32,
    /// In use: the first slot. Free: the next free entry's index + 1, 0 at the end of the list.
    first: u32,
    /// Length in bytes (in use).
    length: u32,
    /// Slots (in use), 0 when not in use.
    count: u8,
    direction: Direction,
    kind: GrantKind,
}

impl Entry {
    fn grant(&self) -> Grant {
        Grant {
            client: ClientIdentity(self.client),
            length: self.length as u64,
            direction: self.direction,
            kind: self.kind,
            run: SlotRun {
                first: self.first as usize,
                count: self.count as usize,
            },
        }
    }

    /// The entry holding `grant`, or `None` if the grant is too large to store (a run of more
    /// than 255 slots or 4 GiB, or no slot at all).
    fn holding(grant: &Grant, generation: u32) -> Option<Entry> {
        let count = u8::try_from(grant.run.count)
            .ok()
            .filter(|count| *count != 0)?;
        Some(Entry {
            generation,
            client: grant.client.0,
            first: u32::try_from(grant.run.first).ok()?,
            length: u32::try_from(grant.length).ok()?,
            count,
            direction: grant.direction,
            kind: grant.kind,
        })
    }

    fn in_use(&self) -> bool {
        self.count != 0
    }
}

/// The table of live grants of every client: a slab indexed by the id's low half, so lookup,
/// insertion and removal are O(1).
#[derive(Clone, Debug, Default)]
pub struct GrantTable {
    entries: Vec<Entry>,
    /// The first free entry's index + 1, 0 when none is free.
    free_head: u32,
    live: usize,
}

impl GrantTable {
    /// An empty table.
    pub const fn new() -> Self {
        GrantTable {
            entries: Vec::new(),
            free_head: 0,
            live: 0,
        }
    }

    /// The number of live grants.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there is no live grant.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Stores a grant and returns its id. Fails with [`DmaError::OutOfMemory`] only when the
    /// table has 2^32 - 1 entries, and with [`DmaError::InvalidArgument`] for a grant that
    /// cannot be stored (a run of no slot or more than 255, or 4 GiB or more).
    pub fn insert(&mut self, grant: Grant) -> Result<GrantId, DmaError> {
        if let Some(index) = self.free_head.checked_sub(1) {
            let entry = self
                .entries
                .get_mut(index as usize)
                .ok_or(DmaError::OutOfMemory)?;
            let next_free = entry.first;
            *entry = Entry::holding(&grant, entry.generation).ok_or(DmaError::InvalidArgument)?;
            self.free_head = next_free;
            self.live += 1;
            return Ok(GrantId::new(index, entry.generation));
        }
        let entry = Entry::holding(&grant, 1).ok_or(DmaError::InvalidArgument)?;
        // Index u32::MAX stays unused so that `index + 1` always fits the free list's links.
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|index| *index != u32::MAX)
            .ok_or(DmaError::OutOfMemory)?;
        self.entries.push(entry);
        self.live += 1;
        Ok(GrantId::new(index, 1))
    }

    /// The grant named by `id`, if the id is current.
    pub fn get(&self, id: GrantId) -> Option<Grant> {
        let entry = self.entries.get(id.index() as usize)?;
        (entry.in_use() && entry.generation == id.generation()).then(|| entry.grant())
    }

    /// Removes the grant named by `id` if it is current and owned by `client`; the id (and every
    /// copy of it) becomes stale. Stale, foreign and never-issued ids are all
    /// [`DmaError::UnknownGrant`].
    pub fn remove(&mut self, id: GrantId, client: ClientIdentity) -> Result<Grant, DmaError> {
        let index = id.index();
        match self.entries.get_mut(index as usize) {
            Some(entry)
                if entry.in_use()
                    && entry.generation == id.generation()
                    && entry.client == client.0 =>
            {
                let grant = entry.grant();
                Self::free_entry(entry, index, &mut self.free_head);
                self.live -= 1;
                Ok(grant)
            }
            _ => Err(DmaError::UnknownGrant),
        }
    }

    /// Removes every grant of `client`, calling `each` with it.
    pub fn drain_client(&mut self, client: ClientIdentity, mut each: impl FnMut(Grant)) {
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            if entry.in_use() && entry.client == client.0 {
                // The index fits in u32: entries never exceed 2^32 - 1 (see `insert`).
                if let Some(grant) = self.release(index as u32) {
                    each(grant);
                }
            }
        }
    }

    /// Iterates over the live grants with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (GrantId, Grant)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.in_use())
            .map(|(index, entry)| (GrantId::new(index as u32, entry.generation), entry.grant()))
    }

    /// Bytes of bookkeeping the table holds.
    pub fn metadata_bytes(&self) -> usize {
        core::mem::size_of::<Self>() + self.entries.capacity() * core::mem::size_of::<Entry>()
    }

    /// Frees a used entry and returns its grant (`None` if the entry is not in use).
    fn release(&mut self, index: u32) -> Option<Grant> {
        let entry = self.entries.get_mut(index as usize)?;
        if !entry.in_use() {
            return None;
        }
        let grant = entry.grant();
        Self::free_entry(entry, index, &mut self.free_head);
        self.live -= 1;
        Some(grant)
    }

    /// Marks entry `index` unused: a new generation and onto the free list, or retired for good
    /// when its generation is exhausted (reusing it would repeat generation 1's ids).
    fn free_entry(entry: &mut Entry, index: u32, free_head: &mut u32) {
        entry.count = 0;
        if entry.generation != u32::MAX {
            entry.generation += 1;
            entry.first = *free_head;
            // `index + 1` fits: `insert` never uses index u32::MAX.
            *free_head = index + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(client: u32, first: usize) -> Grant {
        Grant {
            client: ClientIdentity(client),
            length: 100,
            direction: Direction::ToDevice,
            kind: GrantKind::Streaming,
            run: SlotRun { first, count: 1 },
        }
    }

    #[test]
    fn ids_are_generation_tagged() {
        let mut table = GrantTable::new();
        let a = table.insert(grant(1, 0)).unwrap();
        assert_ne!(a.raw(), 0);
        assert_eq!(a.generation(), 1);
        assert_eq!(table.remove(a, ClientIdentity(1)).unwrap().run.first, 0);
        // Stale: the same index comes back with a new generation.
        let b = table.insert(grant(1, 5)).unwrap();
        assert_eq!(b.index(), a.index());
        assert_ne!(b, a);
        assert_eq!(
            table.remove(a, ClientIdentity(1)),
            Err(DmaError::UnknownGrant)
        );
        assert_eq!(table.get(b).unwrap().run.first, 5);
        // Foreign.
        assert_eq!(
            table.remove(b, ClientIdentity(2)),
            Err(DmaError::UnknownGrant)
        );
        // Never issued.
        assert_eq!(
            table.remove(GrantId::from_raw(0), ClientIdentity(1)),
            Err(DmaError::UnknownGrant)
        );
        assert_eq!(
            table.remove(GrantId::new(99, 1), ClientIdentity(1)),
            Err(DmaError::UnknownGrant)
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn entries_stay_small() {
        assert!(core::mem::size_of::<Entry>() <= 20);
    }

    #[test]
    fn free_entries_are_reused_last_freed_first() {
        let mut table = GrantTable::new();
        let ids: Vec<_> = (0..4).map(|i| table.insert(grant(1, i)).unwrap()).collect();
        table.remove(ids[1], ClientIdentity(1)).unwrap();
        table.remove(ids[3], ClientIdentity(1)).unwrap();
        // A removed entry no longer answers to its id, nor can it be removed twice.
        assert!(table.get(ids[3]).is_none());
        assert_eq!(
            table.remove(ids[3], ClientIdentity(1)),
            Err(DmaError::UnknownGrant)
        );
        let a = table.insert(grant(2, 10)).unwrap();
        let b = table.insert(grant(2, 11)).unwrap();
        let c = table.insert(grant(2, 12)).unwrap();
        assert_eq!((a.index(), a.generation()), (3, 2));
        assert_eq!((b.index(), b.generation()), (1, 2));
        assert_eq!((c.index(), c.generation()), (4, 1));
        assert_eq!(table.get(b).unwrap().run.first, 11);
        assert_eq!(table.len(), 5);
        assert_eq!(table.iter().count(), 5);
    }

    #[test]
    fn zero_slot_grants_are_refused() {
        let mut table = GrantTable::new();
        let mut empty = grant(1, 0);
        empty.run.count = 0;
        assert_eq!(table.insert(empty), Err(DmaError::InvalidArgument));
        // Also when a free entry would be reused.
        let id = table.insert(grant(1, 0)).unwrap();
        table.remove(id, ClientIdentity(1)).unwrap();
        assert_eq!(table.insert(empty), Err(DmaError::InvalidArgument));
        assert!(table.is_empty());
        assert_eq!(table.insert(grant(1, 0)).unwrap().generation(), 2);
    }

    #[test]
    fn oversized_grants_are_refused() {
        let mut table = GrantTable::new();
        let mut big = grant(1, 0);
        big.run.count = 256;
        assert_eq!(table.insert(big), Err(DmaError::InvalidArgument));
        let mut long = grant(1, 0);
        long.length = 1 << 32;
        assert_eq!(table.insert(long), Err(DmaError::InvalidArgument));
        assert!(table.is_empty());
    }

    #[test]
    fn exhausted_generation_retires_entry() {
        let mut table = GrantTable::new();
        let id = table.insert(grant(1, 0)).unwrap();
        table.entries[0].generation = u32::MAX;
        let id = GrantId::new(id.index(), u32::MAX);
        table.remove(id, ClientIdentity(1)).unwrap();
        let next = table.insert(grant(1, 1)).unwrap();
        assert_eq!(next.index(), 1);
        assert!(table.get(id).is_none());
    }

    #[test]
    fn drain_client_takes_only_that_client() {
        let mut table = GrantTable::new();
        let ids: Vec<_> = (0..6)
            .map(|i| table.insert(grant(i % 2, i as usize)).unwrap())
            .collect();
        let mut drained = Vec::new();
        table.drain_client(ClientIdentity(1), |g| drained.push(g.run.first));
        assert_eq!(drained, [1, 3, 5]);
        assert_eq!(table.len(), 3);
        assert!(table.get(ids[1]).is_none());
        assert!(table.get(ids[0]).is_some());
        assert_eq!(table.iter().count(), 3);
    }

    #[test]
    fn direction_decodes() {
        assert_eq!(Direction::try_from(2), Ok(Direction::Bidirectional));
        assert_eq!(Direction::try_from(3), Err(DmaError::InvalidArgument));
    }
}

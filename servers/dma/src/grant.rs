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

/// A grant as stored: 16 bytes instead of [`Grant`]'s 40, so the table costs at most 24 bytes
/// per entry.
#[derive(Clone, Copy, Debug)]
struct PackedGrant {
    client: u32,
    first: u32,
    length: u32,
    count: u8,
    direction: Direction,
    kind: GrantKind,
}

impl PackedGrant {
    fn pack(grant: &Grant) -> Option<Self> {
        Some(PackedGrant {
            client: grant.client.0,
            first: u32::try_from(grant.run.first).ok()?,
            length: u32::try_from(grant.length).ok()?,
            count: u8::try_from(grant.run.count).ok()?,
            direction: grant.direction,
            kind: grant.kind,
        })
    }

    fn unpack(self) -> Grant {
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
}

#[derive(Clone, Debug)]
enum EntryState {
    Free {
        next: Option<u32>,
    },
    Used(PackedGrant),
    /// The generation is exhausted; the entry is never reused.
    Retired,
}

#[derive(Clone, Debug)]
struct Entry {
    generation: u32,
    state: EntryState,
}

/// The table of live grants of every client.
#[derive(Clone, Debug, Default)]
pub struct GrantTable {
    entries: Vec<Entry>,
    free_head: Option<u32>,
    live: usize,
}

impl GrantTable {
    /// An empty table.
    pub const fn new() -> Self {
        GrantTable {
            entries: Vec::new(),
            free_head: None,
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
    /// table has 2^32 entries, and with [`DmaError::InvalidArgument`] for a grant too large to
    /// store (a run of more than 255 slots, or 4 GiB).
    pub fn insert(&mut self, grant: Grant) -> Result<GrantId, DmaError> {
        let grant = PackedGrant::pack(&grant).ok_or(DmaError::InvalidArgument)?;
        let index = match self.free_head {
            Some(index) => {
                let entry = &mut self.entries[index as usize];
                self.free_head = match entry.state {
                    EntryState::Free { next } => next,
                    _ => None,
                };
                entry.state = EntryState::Used(grant);
                index
            }
            None => {
                let index = u32::try_from(self.entries.len()).map_err(|_| DmaError::OutOfMemory)?;
                self.entries.push(Entry {
                    generation: 1,
                    state: EntryState::Used(grant),
                });
                index
            }
        };
        self.live += 1;
        Ok(GrantId::new(index, self.entries[index as usize].generation))
    }

    /// The grant named by `id`, if the id is current.
    pub fn get(&self, id: GrantId) -> Option<Grant> {
        let entry = self.entries.get(id.index() as usize)?;
        match entry.state {
            EntryState::Used(grant) if entry.generation == id.generation() => Some(grant.unpack()),
            _ => None,
        }
    }

    /// Removes the grant named by `id` if it is current and owned by `client`; the id (and every
    /// copy of it) becomes stale.
    pub fn remove(&mut self, id: GrantId, client: ClientIdentity) -> Result<Grant, DmaError> {
        match self.get(id) {
            Some(grant) if grant.client == client => {}
            _ => return Err(DmaError::UnknownGrant),
        }
        self.release(id.index()).ok_or(DmaError::UnknownGrant)
    }

    /// Removes every grant of `client`, calling `each` with it.
    pub fn drain_client(&mut self, client: ClientIdentity, mut each: impl FnMut(Grant)) {
        for index in 0..self.entries.len() {
            if let EntryState::Used(grant) = &self.entries[index].state
                && grant.client == client.0
            {
                // The index fits in u32: entries never exceed 2^32 (see `insert`).
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
            .filter_map(|(index, entry)| match entry.state {
                EntryState::Used(grant) => {
                    Some((GrantId::new(index as u32, entry.generation), grant.unpack()))
                }
                _ => None,
            })
    }

    /// Bytes of bookkeeping the table holds.
    pub fn metadata_bytes(&self) -> usize {
        core::mem::size_of::<Self>() + self.entries.capacity() * core::mem::size_of::<Entry>()
    }

    /// Frees a used entry and returns its grant (`None` if the entry is not in use).
    fn release(&mut self, index: u32) -> Option<Grant> {
        let entry = self.entries.get_mut(index as usize)?;
        let EntryState::Used(grant) = entry.state else {
            return None;
        };
        if entry.generation == u32::MAX {
            // Retired for good: reusing it would repeat generation 1's ids.
            entry.state = EntryState::Retired;
        } else {
            entry.generation += 1;
            entry.state = EntryState::Free {
                next: self.free_head,
            };
            self.free_head = Some(index);
        }
        self.live -= 1;
        Some(grant.unpack())
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
        assert!(core::mem::size_of::<Entry>() <= 24);
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

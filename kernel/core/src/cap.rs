//! Per-task capability tables: fixed slots holding kind, object, rights and badge.
//!
//! A task names kernel objects only through slots of its own table, so every syscall starts with
//! a [`CapabilityTable::lookup`] that checks the slot, the kind and the rights in one step and
//! returns the ABI error the task sees. The table has a fixed number of slots chosen by the
//! kernel, so a task cannot grow kernel memory by collecting capabilities.
//!
//! The object reference `O` is generic: the kernel uses its own handle type (an index into an
//! object table, for instance); tests use integers.
//!
//! Rules enforced here:
//! - rights only shrink: [`CapabilityTable::derive`] and [`CapabilityTable::prepare_transfer`]
//!   refuse to grant a right the source lacks;
//! - a badge is set once: only an unbadged Endpoint or Notification can be given a badge;
//! - a capability leaves a table in a message only if its kind is transferable and it holds
//!   [`Rights::TRANSFER`]; the copy keeps only the rights the sender chose, so a server hands out
//!   a shared window without `TRANSFER` and the client cannot pass it on;
//! - Reply capabilities are one-shot: [`CapabilityTable::take_reply`] removes them as they are
//!   used.

use moat_abi::{CapSlot, CapabilityKind, Error, Rights};

/// One capability: what it names and what the holder may do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability<O> {
    /// The kind of object.
    pub kind: CapabilityKind,
    /// The kernel's reference to the object.
    pub object: O,
    /// What the holder may do.
    pub rights: Rights,
    /// Stamped on messages (endpoints) or raised as bits (notifications); 0 = unbadged.
    pub badge: u64,
}

impl<O> Capability<O> {
    /// A capability to `object`. Rights that mean nothing for `kind` are dropped, so a table never
    /// holds, say, an executable endpoint.
    pub fn new(kind: CapabilityKind, object: O, rights: Rights, badge: u64) -> Capability<O> {
        Capability {
            kind,
            object,
            rights: rights & kind.meaningful_rights(),
            badge,
        }
    }

    /// Checks that the capability is of `kind` and holds every right in `rights`.
    pub fn check(&self, kind: CapabilityKind, rights: Rights) -> Result<(), Error> {
        if self.kind != kind {
            return Err(Error::WrongKind);
        }
        if !self.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        Ok(())
    }
}

/// A task's capability table with `N` slots.
#[derive(Debug)]
pub struct CapabilityTable<O, const N: usize> {
    slots: [Option<Capability<O>>; N],
    used: usize,
}

impl<O, const N: usize> Default for CapabilityTable<O, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O, const N: usize> CapabilityTable<O, N> {
    /// An empty table.
    pub const fn new() -> Self {
        // Slot numbers must fit below CapSlot::NONE.
        const { assert!(N < u32::MAX as usize) };
        CapabilityTable {
            slots: [const { None }; N],
            used: 0,
        }
    }

    /// Number of slots.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of occupied slots.
    pub const fn len(&self) -> usize {
        self.used
    }

    /// Whether no slot is occupied.
    pub const fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether at least one slot is free (the kernel checks this before taking a message that
    /// carries a capability off a queue).
    pub const fn has_free_slot(&self) -> bool {
        self.used < N
    }

    fn slot(&self, slot: CapSlot) -> Result<&Option<Capability<O>>, Error> {
        slot.index()
            .and_then(|index| self.slots.get(index))
            .ok_or(Error::InvalidCapability)
    }

    fn slot_mut(&mut self, slot: CapSlot) -> Result<&mut Option<Capability<O>>, Error> {
        slot.index()
            .and_then(|index| self.slots.get_mut(index))
            .ok_or(Error::InvalidCapability)
    }

    /// Puts `capability` in the lowest free slot, or returns [`Error::CapabilityTableFull`].
    pub fn insert(&mut self, capability: Capability<O>) -> Result<CapSlot, Error> {
        let index = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::CapabilityTableFull)?;
        self.slots[index] = Some(capability);
        self.used += 1;
        // Cannot truncate: N < u32::MAX (asserted in `new`).
        Ok(CapSlot(index as u32))
    }

    /// Puts `capability` in a specific slot (for the capabilities a task starts with, whose slots
    /// the system manifest fixes). Errors: [`Error::InvalidCapability`] for a slot out of range,
    /// [`Error::SlotInUse`].
    pub fn insert_at(&mut self, slot: CapSlot, capability: Capability<O>) -> Result<(), Error> {
        let entry = self.slot_mut(slot)?;
        if entry.is_some() {
            return Err(Error::SlotInUse);
        }
        *entry = Some(capability);
        self.used += 1;
        Ok(())
    }

    /// The capability in `slot`, or [`Error::InvalidCapability`] if the slot is out of range or
    /// empty.
    pub fn get(&self, slot: CapSlot) -> Result<&Capability<O>, Error> {
        self.slot(slot)?.as_ref().ok_or(Error::InvalidCapability)
    }

    /// The capability in `slot` if it is of `kind` and holds `rights`. Errors, in this order:
    /// [`Error::InvalidCapability`], [`Error::WrongKind`], [`Error::MissingRight`].
    pub fn lookup(
        &self,
        slot: CapSlot,
        kind: CapabilityKind,
        rights: Rights,
    ) -> Result<&Capability<O>, Error> {
        let capability = self.get(slot)?;
        capability.check(kind, rights)?;
        Ok(capability)
    }

    /// Removes and returns the capability in `slot` (`CapDrop`).
    pub fn remove(&mut self, slot: CapSlot) -> Result<Capability<O>, Error> {
        let capability = self
            .slot_mut(slot)?
            .take()
            .ok_or(Error::InvalidCapability)?;
        self.used -= 1;
        Ok(capability)
    }

    /// Removes and returns the one-shot Reply capability in `slot`: [`Error::WrongKind`] (and the
    /// slot is left alone) if it holds anything else.
    pub fn take_reply(&mut self, slot: CapSlot) -> Result<Capability<O>, Error> {
        self.lookup(slot, CapabilityKind::Reply, Rights::NONE)?;
        self.remove(slot)
    }

    /// Removes every capability for which `remove` returns true (revocation: the object died or
    /// was destroyed) and returns how many went.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&Capability<O>) -> bool) -> usize {
        let mut removed = 0;
        for entry in &mut self.slots {
            if entry.as_ref().is_some_and(&mut remove) {
                *entry = None;
                removed += 1;
            }
        }
        self.used -= removed;
        removed
    }

    /// Empties the table (a task being restarted starts again from its manifest).
    pub fn clear(&mut self) {
        self.slots = [const { None }; N];
        self.used = 0;
    }

    /// The occupied slots and their capabilities, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (CapSlot, &Capability<O>)> {
        self.slots.iter().enumerate().filter_map(|(index, entry)| {
            // Cannot truncate: N < u32::MAX.
            entry
                .as_ref()
                .map(|capability| (CapSlot(index as u32), capability))
        })
    }
}

impl<O: Clone, const N: usize> CapabilityTable<O, N> {
    /// Copies the capability in `slot` into a free slot with only `rights` and, for an unbadged
    /// Endpoint or Notification, a new badge (`badge` 0 keeps the source's) — `CapDerive`.
    ///
    /// Errors: [`Error::InvalidCapability`]; [`Error::WrongKind`] for a Reply capability;
    /// [`Error::MissingRight`] if `rights` is not a subset of the source's;
    /// [`Error::InvalidArgument`] for a badge on a kind without badges or on an already badged
    /// capability; [`Error::CapabilityTableFull`].
    pub fn derive(&mut self, slot: CapSlot, rights: Rights, badge: u64) -> Result<CapSlot, Error> {
        let source = self.get(slot)?;
        if !source.kind.is_derivable() {
            return Err(Error::WrongKind);
        }
        if !source.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        let badge = match badge {
            0 => source.badge,
            new if source.kind.is_badged() && source.badge == 0 => new,
            _ => return Err(Error::InvalidArgument),
        };
        let derived = Capability {
            kind: source.kind,
            object: source.object.clone(),
            rights,
            badge,
        };
        self.insert(derived)
    }

    /// The copy of the capability in `slot` that a message carries to another task, keeping only
    /// `rights`. The sender keeps its own capability.
    ///
    /// Errors: [`Error::InvalidCapability`]; [`Error::WrongKind`] for kinds that never travel
    /// (Reply, Irq, Share, TaskControl); [`Error::MissingRight`] if the source lacks
    /// [`Rights::TRANSFER`] or `rights` is not a subset of its rights.
    pub fn prepare_transfer(&self, slot: CapSlot, rights: Rights) -> Result<Capability<O>, Error> {
        let source = self.get(slot)?;
        if !source.kind.is_transferable() {
            return Err(Error::WrongKind);
        }
        if !source.rights.contains(Rights::TRANSFER) || !source.rights.contains(rights) {
            return Err(Error::MissingRight);
        }
        Ok(Capability {
            kind: source.kind,
            object: source.object.clone(),
            rights,
            badge: source.badge,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Table = CapabilityTable<u32, 8>;

    fn endpoint(object: u32, rights: Rights) -> Capability<u32> {
        Capability::new(CapabilityKind::Endpoint, object, rights, 0)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut table = Table::new();
        assert!(table.is_empty());
        let slot = table
            .insert(endpoint(7, Rights::SEND | Rights::TRANSFER))
            .expect("room");
        assert_eq!(slot, CapSlot(0));
        assert_eq!(table.len(), 1);
        let found = table
            .lookup(slot, CapabilityKind::Endpoint, Rights::SEND)
            .expect("held");
        assert_eq!(found.object, 7);
        assert_eq!(
            table.lookup(slot, CapabilityKind::Memory, Rights::NONE),
            Err(Error::WrongKind)
        );
        assert_eq!(
            table.lookup(slot, CapabilityKind::Endpoint, Rights::RECEIVE),
            Err(Error::MissingRight)
        );
        assert_eq!(
            table.lookup(CapSlot(1), CapabilityKind::Endpoint, Rights::SEND),
            Err(Error::InvalidCapability)
        );
        assert_eq!(table.get(CapSlot(8)), Err(Error::InvalidCapability));
        assert_eq!(table.get(CapSlot::NONE), Err(Error::InvalidCapability));
        assert_eq!(table.remove(slot).map(|c| c.object), Ok(7));
        assert_eq!(table.remove(slot), Err(Error::InvalidCapability));
        assert!(table.is_empty());
    }

    #[test]
    fn constructor_drops_meaningless_rights() {
        let capability = endpoint(1, Rights::ALL);
        assert_eq!(
            capability.rights,
            Rights::SEND | Rights::RECEIVE | Rights::TRANSFER
        );
    }

    #[test]
    fn full_table_and_fixed_slots() {
        let mut table = Table::new();
        table
            .insert_at(CapSlot(3), endpoint(3, Rights::SEND))
            .expect("free");
        assert_eq!(
            table.insert_at(CapSlot(3), endpoint(4, Rights::SEND)),
            Err(Error::SlotInUse)
        );
        assert_eq!(
            table.insert_at(CapSlot(8), endpoint(4, Rights::SEND)),
            Err(Error::InvalidCapability)
        );
        for _ in 0..7 {
            let slot = table.insert(endpoint(0, Rights::SEND)).expect("room");
            assert_ne!(slot, CapSlot(3));
        }
        assert!(!table.has_free_slot());
        assert_eq!(
            table.insert(endpoint(0, Rights::SEND)),
            Err(Error::CapabilityTableFull)
        );
        table.clear();
        assert!(table.is_empty());
        assert!(table.has_free_slot());
    }

    #[test]
    fn derive_only_shrinks_rights_and_badges_once() {
        let mut table = Table::new();
        let source = table
            .insert(endpoint(5, Rights::SEND | Rights::TRANSFER))
            .expect("room");
        let derived = table.derive(source, Rights::SEND, 42).expect("subset");
        let copy = table.get(derived).expect("inserted");
        assert_eq!(
            (copy.object, copy.rights, copy.badge),
            (5, Rights::SEND, 42)
        );
        assert_eq!(
            table.derive(source, Rights::SEND | Rights::RECEIVE, 0),
            Err(Error::MissingRight)
        );
        assert_eq!(
            table.derive(derived, Rights::SEND, 43),
            Err(Error::InvalidArgument),
            "a badge cannot be replaced"
        );
        let same_badge = table.derive(derived, Rights::NONE, 0).expect("keeps badge");
        assert_eq!(table.get(same_badge).map(|c| c.badge), Ok(42));

        let memory = table
            .insert(Capability::new(
                CapabilityKind::Memory,
                9,
                Rights::READ | Rights::WRITE,
                0,
            ))
            .expect("room");
        assert_eq!(
            table.derive(memory, Rights::READ, 1),
            Err(Error::InvalidArgument),
            "memory has no badge"
        );

        let reply = table
            .insert(Capability::new(CapabilityKind::Reply, 1, Rights::SEND, 0))
            .expect("room");
        assert_eq!(table.derive(reply, Rights::SEND, 0), Err(Error::WrongKind));
    }

    #[test]
    fn transfer_needs_the_right_and_a_travelling_kind() {
        let mut table = Table::new();
        let window = table
            .insert(Capability::new(
                CapabilityKind::Memory,
                1,
                Rights::READ | Rights::WRITE | Rights::TRANSFER,
                0,
            ))
            .expect("room");
        // A shared window is handed out without TRANSFER ...
        let copy = table
            .prepare_transfer(window, Rights::READ | Rights::WRITE)
            .expect("has TRANSFER");
        assert_eq!(copy.rights, Rights::READ | Rights::WRITE);
        // ... so the receiver cannot pass it on.
        let mut receiver = Table::new();
        let received = receiver.insert(copy).expect("room");
        assert_eq!(
            receiver.prepare_transfer(received, Rights::READ),
            Err(Error::MissingRight)
        );
        // Rights cannot grow on the way.
        assert_eq!(
            table.prepare_transfer(window, Rights::EXECUTE),
            Err(Error::MissingRight)
        );
        // The sender keeps its capability.
        assert!(table.get(window).is_ok());

        let share = table
            .insert(Capability::new(CapabilityKind::Share, 0, Rights::ALL, 0))
            .expect("room");
        assert_eq!(
            table.prepare_transfer(share, Rights::NONE),
            Err(Error::WrongKind)
        );
    }

    #[test]
    fn reply_is_one_shot() {
        let mut table = Table::new();
        let reply = table
            .insert(Capability::new(CapabilityKind::Reply, 11, Rights::SEND, 0))
            .expect("room");
        let other = table.insert(endpoint(2, Rights::SEND)).expect("room");
        assert_eq!(table.take_reply(other), Err(Error::WrongKind));
        assert!(table.get(other).is_ok(), "wrong kind leaves the slot alone");
        assert_eq!(table.take_reply(reply).map(|c| c.object), Ok(11));
        assert_eq!(table.take_reply(reply), Err(Error::InvalidCapability));
    }

    #[test]
    fn revocation() {
        let mut table = Table::new();
        for object in 0..6 {
            table
                .insert(endpoint(object % 2, Rights::SEND))
                .expect("room");
        }
        assert_eq!(table.remove_where(|c| c.object == 1), 3);
        assert_eq!(table.len(), 3);
        assert!(table.iter().all(|(_, c)| c.object == 0));
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Insert(u32),
        Remove(u32),
        Derive(u32, u32),
        Transfer(u32, u32),
        Revoke(u32),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            (0u32..4).prop_map(Operation::Insert),
            (0u32..10).prop_map(Operation::Remove),
            (0u32..10, 0u32..128).prop_map(|(slot, rights)| Operation::Derive(slot, rights)),
            (0u32..10, 0u32..128).prop_map(|(slot, rights)| Operation::Transfer(slot, rights)),
            (0u32..4).prop_map(Operation::Revoke),
        ]
    }

    proptest! {
        /// Whatever a task does, the count stays right, it never exceeds the capacity, and no
        /// capability ever gains a right its object was created without.
        #[test]
        fn rights_never_grow(operations in proptest::collection::vec(operation(), 0..64)) {
            let original = |object: u32| Rights::from_bits_truncate(object * 21 + 3)
                & CapabilityKind::Memory.meaningful_rights();
            let mut table = Table::new();
            for operation in operations {
                match operation {
                    Operation::Insert(object) => {
                        let _ = table.insert(Capability::new(
                            CapabilityKind::Memory, object, original(object), 0));
                    }
                    Operation::Remove(slot) => { let _ = table.remove(CapSlot(slot)); }
                    Operation::Derive(slot, rights) => {
                        let _ = table.derive(CapSlot(slot), Rights::from_bits_truncate(rights), 0);
                    }
                    Operation::Transfer(slot, rights) => {
                        if let Ok(copy) =
                            table.prepare_transfer(CapSlot(slot), Rights::from_bits_truncate(rights))
                        {
                            let _ = table.insert(copy);
                        }
                    }
                    Operation::Revoke(object) => { table.remove_where(|c| c.object == object); }
                }
                prop_assert_eq!(table.iter().count(), table.len());
                prop_assert!(table.len() <= table.capacity());
                for (_, capability) in table.iter() {
                    prop_assert!(original(capability.object).contains(capability.rights));
                }
            }
        }
    }
}

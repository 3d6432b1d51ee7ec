//! Capability kinds, rights and slot numbers.

use core::fmt;
use core::ops::{BitAnd, BitOr};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::UnknownValue;

/// The index of a capability in the calling task's capability table.
///
/// Slots are small integers chosen by the kernel (or fixed by the system manifest for the
/// capabilities a task starts with). [`CapSlot::NONE`] marks "no capability" in message headers.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(transparent)]
pub struct CapSlot(pub u32);

impl CapSlot {
    /// No capability.
    pub const NONE: CapSlot = CapSlot(u32::MAX);

    /// The slot as an index, or `None` for [`CapSlot::NONE`].
    pub const fn index(self) -> Option<usize> {
        if self.0 == u32::MAX {
            None
        } else {
            Some(self.0 as usize)
        }
    }

    /// Whether this is [`CapSlot::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == u32::MAX
    }
}

impl fmt::Display for CapSlot {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            formatter.write_str("slot:none")
        } else {
            write!(formatter, "slot:{}", self.0)
        }
    }
}

/// What kind of kernel object a capability names.
///
/// Zero is not a kind, so a zeroed record never looks like a valid capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CapabilityKind {
    /// A message queue. `SEND` lets the holder send (and call) with the capability's badge;
    /// `RECEIVE` lets the holder receive from the queue (only the serving task has it).
    Endpoint = 1,
    /// A one-shot right to answer one `call`. The kernel creates it when the receiver takes a
    /// call from the queue and removes it when `Reply` uses it or the caller stops waiting.
    /// Never transferred, never derived.
    Reply = 2,
    /// A word of notification bits. `SEND` lets the holder set bits (`NotifySignal`).
    Notification = 3,
    /// An interrupt line delivered to its single owner as a notification bit; `IrqAck` unmasks
    /// it. Exactly one owner, from the manifest; never transferred.
    Irq = 4,
    /// A device MMIO region, mapped with `MmioMap` (`READ`/`WRITE` bound the mapping).
    Mmio = 5,
    /// A physically contiguous run of frames: mapped with `MemMap`, sliced with `MemSlice`,
    /// transferred in a message to set up a private data region between two tasks.
    Memory = 6,
    /// The authority to change the Realm state of memory (`Share`/`Unshare`). Exactly one holder,
    /// the DMA server; never transferred.
    Share = 7,
    /// The authority to kill, restart and inspect tasks. The supervisor only; never transferred.
    TaskControl = 8,
    /// The right to read the kernel console's input (`ConsoleRead`). At most one holder, from
    /// the manifest (`console-input = true`); never transferred.
    ConsoleInput = 9,
}

impl CapabilityKind {
    /// Every kind, in numeric order.
    pub const ALL: [CapabilityKind; 9] = [
        CapabilityKind::Endpoint,
        CapabilityKind::Reply,
        CapabilityKind::Notification,
        CapabilityKind::Irq,
        CapabilityKind::Mmio,
        CapabilityKind::Memory,
        CapabilityKind::Share,
        CapabilityKind::TaskControl,
        CapabilityKind::ConsoleInput,
    ];

    /// The raw value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// Whether a capability of this kind may ever travel in a message (it still needs the
    /// `TRANSFER` right). Reply, Irq, Share, TaskControl and ConsoleInput capabilities stay
    /// where the kernel put them.
    pub const fn is_transferable(self) -> bool {
        matches!(
            self,
            CapabilityKind::Endpoint
                | CapabilityKind::Notification
                | CapabilityKind::Mmio
                | CapabilityKind::Memory
        )
    }

    /// Whether `CapDerive` may make a copy with fewer rights (everything but Reply).
    pub const fn is_derivable(self) -> bool {
        !matches!(self, CapabilityKind::Reply)
    }

    /// Whether capabilities of this kind carry a badge the kernel stamps on what they deliver.
    pub const fn is_badged(self) -> bool {
        matches!(
            self,
            CapabilityKind::Endpoint | CapabilityKind::Notification
        )
    }

    /// The rights that mean something for this kind; others are never granted.
    pub const fn meaningful_rights(self) -> Rights {
        match self {
            CapabilityKind::Endpoint => {
                Rights(Rights::SEND.0 | Rights::RECEIVE.0 | Rights::TRANSFER.0)
            }
            CapabilityKind::Reply => Rights::SEND,
            CapabilityKind::Notification => Rights(Rights::SEND.0 | Rights::TRANSFER.0),
            CapabilityKind::Irq => Rights::RECEIVE,
            CapabilityKind::Mmio => Rights(Rights::READ.0 | Rights::WRITE.0 | Rights::TRANSFER.0),
            CapabilityKind::Memory => Rights(
                Rights::READ.0
                    | Rights::WRITE.0
                    | Rights::EXECUTE.0
                    | Rights::TRANSFER.0
                    | Rights::PHYSICAL.0,
            ),
            CapabilityKind::Share => Rights::WRITE,
            CapabilityKind::TaskControl => Rights::WRITE,
            CapabilityKind::ConsoleInput => Rights::RECEIVE,
        }
    }
}

impl From<CapabilityKind> for u32 {
    fn from(kind: CapabilityKind) -> u32 {
        kind.to_raw()
    }
}

impl TryFrom<u32> for CapabilityKind {
    type Error = UnknownValue;

    fn try_from(raw: u32) -> Result<Self, UnknownValue> {
        Ok(match raw {
            1 => CapabilityKind::Endpoint,
            2 => CapabilityKind::Reply,
            3 => CapabilityKind::Notification,
            4 => CapabilityKind::Irq,
            5 => CapabilityKind::Mmio,
            6 => CapabilityKind::Memory,
            7 => CapabilityKind::Share,
            8 => CapabilityKind::TaskControl,
            9 => CapabilityKind::ConsoleInput,
            other => return Err(UnknownValue(u64::from(other))),
        })
    }
}

/// A set of rights on a capability.
///
/// Rights only ever shrink: a derived or transferred capability has at most the rights of its
/// source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u32);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// Send messages to an endpoint (including `call`); set notification bits; use a Reply.
    pub const SEND: Rights = Rights(1 << 0);
    /// Receive from an endpoint; own an interrupt line.
    pub const RECEIVE: Rights = Rights(1 << 1);
    /// Pass a copy of this capability to another task in a message.
    pub const TRANSFER: Rights = Rights(1 << 2);
    /// Map memory or MMIO readable.
    pub const READ: Rights = Rights(1 << 3);
    /// Map memory or MMIO writable; use Share and TaskControl capabilities.
    pub const WRITE: Rights = Rights(1 << 4);
    /// Map memory executable (never together with `WRITE` in one mapping).
    pub const EXECUTE: Rights = Rights(1 << 5);
    /// Learn the device (bus) address of memory with `MemInfo` (the DMA server needs it; a
    /// driver gets device addresses from the DMA server instead).
    pub const PHYSICAL: Rights = Rights(1 << 6);
    /// Every defined right.
    pub const ALL: Rights = Rights((1 << 7) - 1);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Rights from raw bits, or `None` if an undefined bit is set.
    pub const fn from_bits(bits: u32) -> Option<Rights> {
        if bits & !Rights::ALL.0 == 0 {
            Some(Rights(bits))
        } else {
            None
        }
    }

    /// Rights from raw bits, dropping undefined bits.
    pub const fn from_bits_truncate(bits: u32) -> Rights {
        Rights(bits & Rights::ALL.0)
    }

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in both sets.
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The rights in either set.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// `self` without the rights in `other`.
    pub const fn difference(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Rights {
    type Output = Rights;

    fn bitor(self, other: Rights) -> Rights {
        self.union(other)
    }
}

impl BitAnd for Rights {
    type Output = Rights;

    fn bitand(self, other: Rights) -> Rights {
        self.intersection(other)
    }
}

impl TryFrom<u32> for Rights {
    type Error = UnknownValue;

    fn try_from(bits: u32) -> Result<Self, UnknownValue> {
        Rights::from_bits(bits).ok_or(UnknownValue(u64::from(bits)))
    }
}

impl From<Rights> for u32 {
    fn from(rights: Rights) -> u32 {
        rights.bits()
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Rights, &str); 7] = [
            (Rights::SEND, "SEND"),
            (Rights::RECEIVE, "RECEIVE"),
            (Rights::TRANSFER, "TRANSFER"),
            (Rights::READ, "READ"),
            (Rights::WRITE, "WRITE"),
            (Rights::EXECUTE, "EXECUTE"),
            (Rights::PHYSICAL, "PHYSICAL"),
        ];
        formatter.write_str("Rights(")?;
        let mut first = true;
        for (right, name) in NAMES {
            if self.contains(right) {
                if !first {
                    formatter.write_str(" | ")?;
                }
                formatter.write_str(name)?;
                first = false;
            }
        }
        formatter.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in CapabilityKind::ALL {
            assert_eq!(CapabilityKind::try_from(kind.to_raw()), Ok(kind));
            assert!(kind.meaningful_rights().bits() & !Rights::ALL.bits() == 0);
        }
        assert!(CapabilityKind::try_from(0).is_err());
        assert!(CapabilityKind::try_from(10).is_err());
        let known = (0..=64)
            .filter(|raw| CapabilityKind::try_from(*raw).is_ok())
            .count();
        assert_eq!(known, CapabilityKind::ALL.len());
    }

    #[test]
    fn only_ordinary_objects_travel() {
        assert!(CapabilityKind::Memory.is_transferable());
        assert!(CapabilityKind::Endpoint.is_transferable());
        assert!(!CapabilityKind::Share.is_transferable());
        assert!(!CapabilityKind::TaskControl.is_transferable());
        assert!(!CapabilityKind::Reply.is_transferable());
        assert!(!CapabilityKind::Irq.is_transferable());
        assert!(!CapabilityKind::ConsoleInput.is_transferable());
        assert!(!CapabilityKind::Reply.is_derivable());
    }

    #[test]
    fn rights_round_trip_and_reject_unknown_bits() {
        for bits in 0..=Rights::ALL.bits() {
            let rights = Rights::try_from(bits).expect("defined bits");
            assert_eq!(u32::from(rights), bits);
        }
        assert!(Rights::try_from(1 << 7).is_err());
        assert!(Rights::try_from(u32::MAX).is_err());
        assert_eq!(Rights::from_bits_truncate(u32::MAX), Rights::ALL);
    }

    #[test]
    fn rights_algebra() {
        let read_write = Rights::READ | Rights::WRITE;
        assert!(read_write.contains(Rights::READ));
        assert!(!read_write.contains(Rights::READ | Rights::EXECUTE));
        assert!(read_write.contains(Rights::NONE));
        assert_eq!(read_write & Rights::WRITE, Rights::WRITE);
        assert_eq!(read_write.difference(Rights::READ), Rights::WRITE);
        assert!(Rights::NONE.is_empty());
        assert_eq!(format!("{read_write:?}"), "Rights(READ | WRITE)");
    }

    #[test]
    fn slot_none() {
        assert!(CapSlot::NONE.is_none());
        assert_eq!(CapSlot::NONE.index(), None);
        assert_eq!(CapSlot(3).index(), Some(3));
        assert_eq!(format!("{}", CapSlot(3)), "slot:3");
    }
}

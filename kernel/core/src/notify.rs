//! Notification words and interrupt lines delivered as notification bits.
//!
//! Each task has one 64-bit word of pending notification bits. `NotifySignal` ORs the signalling
//! capability's badge into it; an interrupt sets the bit the manifest assigned to it. A wait with
//! a mask takes (and clears) the pending bits in the mask.
//!
//! An interrupt line is masked at the interrupt controller from the moment it fires until its
//! owner acknowledges it with `IrqAck`, so a device cannot flood the kernel with interrupts its
//! driver has not handled. [`IrqLine`] is that state machine; the kernel does the masking.

use moat_abi::Error;

/// A task's pending notification bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotificationWord {
    pending: u64,
}

impl NotificationWord {
    /// No bits pending.
    pub const fn new() -> Self {
        NotificationWord { pending: 0 }
    }

    /// Sets `bits`. Returns whether a waiter with `waiting_mask` should now wake.
    pub fn signal(&mut self, bits: u64, waiting_mask: u64) -> bool {
        self.pending |= bits;
        self.pending & waiting_mask != 0
    }

    /// Takes and clears the pending bits in `mask`; 0 if none is pending.
    pub fn take(&mut self, mask: u64) -> u64 {
        let taken = self.pending & mask;
        self.pending &= !mask;
        taken
    }

    /// The pending bits, left in place.
    pub const fn pending(&self) -> u64 {
        self.pending
    }

    /// Clears everything (the task restarted).
    pub fn clear(&mut self) {
        self.pending = 0;
    }
}

/// What the kernel must do after an interrupt line changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqAction {
    /// Mask the line at the interrupt controller and raise `bits` in the owner's notification
    /// word.
    MaskAndNotify {
        /// The owner's notification bit(s) for this line.
        bits: u64,
    },
    /// Unmask the line at the interrupt controller.
    Unmask,
}

/// One interrupt line owned by one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqLine {
    bits: u64,
    masked: bool,
}

impl IrqLine {
    /// A line delivered as `bits` to its owner, initially unmasked.
    pub const fn new(bits: u64) -> Self {
        IrqLine {
            bits,
            masked: false,
        }
    }

    /// Whether the line is masked waiting for its owner's acknowledgement.
    pub const fn is_masked(&self) -> bool {
        self.masked
    }

    /// The line fired. `None` if it was already masked (a spurious or edge-coalesced delivery:
    /// nothing new to tell the owner).
    pub fn fire(&mut self) -> Option<IrqAction> {
        if self.masked {
            return None;
        }
        self.masked = true;
        Some(IrqAction::MaskAndNotify { bits: self.bits })
    }

    /// The owner acknowledged the interrupt (`IrqAck`). [`Error::InvalidArgument`] if the line
    /// is not masked (nothing to acknowledge), which tells a confused driver about its bug.
    pub fn acknowledge(&mut self) -> Result<IrqAction, Error> {
        if !self.masked {
            return Err(Error::InvalidArgument);
        }
        self.masked = false;
        Ok(IrqAction::Unmask)
    }

    /// The owner died: the line is left masked until the new instance acknowledges it (after
    /// resetting its device), so a stale device interrupt cannot storm.
    pub fn owner_died(&mut self) {
        self.masked = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_bits_accumulate_and_are_taken_by_mask() {
        let mut word = NotificationWord::new();
        assert!(!word.signal(0b0001, 0b0110));
        assert!(word.signal(0b0100, 0b0110));
        assert_eq!(word.pending(), 0b0101);
        assert_eq!(word.take(0b0110), 0b0100);
        assert_eq!(word.pending(), 0b0001);
        assert_eq!(word.take(0b0110), 0);
        word.clear();
        assert_eq!(word.pending(), 0);
    }

    #[test]
    fn irq_stays_masked_until_acknowledged() {
        let mut line = IrqLine::new(1 << 3);
        assert_eq!(line.acknowledge(), Err(Error::InvalidArgument));
        assert_eq!(line.fire(), Some(IrqAction::MaskAndNotify { bits: 1 << 3 }));
        assert!(line.is_masked());
        assert_eq!(line.fire(), None);
        assert_eq!(line.acknowledge(), Ok(IrqAction::Unmask));
        assert!(!line.is_masked());
        line.owner_died();
        assert_eq!(line.fire(), None);
        assert_eq!(line.acknowledge(), Ok(IrqAction::Unmask));
    }
}

//! The device side of a split virtqueue, for tests: reads what the driver made available and
//! writes used entries, well-behaved or not.

use std::vec::Vec;

use super::memory::DeviceBus;
use crate::memory::Segment;
use crate::queue::QueueAddresses;
use crate::ring::{DESC_F_NEXT, DESC_F_WRITE, DESCRIPTOR_SIZE};

use super::mmio::FakeQueueRegisters;

/// A descriptor chain the driver made available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor: the id to put in the used entry.
    pub head: u16,
    /// The chain's buffers in order.
    pub segments: Vec<Segment>,
}

impl Chain {
    /// Total bytes of the device-readable segments.
    pub fn readable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| !s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Total bytes of the device-writable segments.
    pub fn writable_capacity(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// The device-readable bytes, concatenated; `None` if a segment is outside `bus`.
    pub fn read<B: DeviceBus>(&self, bus: &B) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for segment in self.segments.iter().filter(|s| !s.writable) {
            let start = out.len();
            out.resize(start + segment.len as usize, 0);
            if !bus.read(segment.address, &mut out[start..]) {
                return None;
            }
        }
        Some(out)
    }

    /// Scatters `data` over the device-writable segments in order; returns the bytes written
    /// (fewer than `data.len()` if it does not fit), or `None` if a segment is outside `bus`.
    pub fn write<B: DeviceBus>(&self, bus: &B, data: &[u8]) -> Option<u32> {
        let mut rest = data;
        let mut written = 0u32;
        for segment in self.segments.iter().filter(|s| s.writable) {
            if rest.is_empty() {
                break;
            }
            let take = rest.len().min(segment.len as usize);
            if !bus.write(segment.address, &rest[..take]) {
                return None;
            }
            rest = &rest[take..];
            written += take as u32;
        }
        Some(written)
    }
}

/// The device side of one split virtqueue, reaching the rings through `bus` by device address
/// (like a real device doing DMA). It keeps its own copies of the indices it owns.
#[derive(Debug)]
pub struct FakeQueueDevice<B: DeviceBus> {
    bus: B,
    size: u16,
    addresses: QueueAddresses,
    next_avail: u16,
    used_idx: u16,
}

impl<B: DeviceBus> FakeQueueDevice<B> {
    /// The device side of a queue of `size` entries (a power of two) at `addresses`.
    pub fn new(bus: B, size: u16, addresses: QueueAddresses) -> Self {
        FakeQueueDevice {
            bus,
            size: size.max(1),
            addresses,
            next_avail: 0,
            used_idx: 0,
        }
    }

    /// The device side of the queue a driver programmed into a [`super::FakeMmioDevice`].
    pub fn from_registers(bus: B, registers: &FakeQueueRegisters) -> Self {
        Self::new(bus, registers.size(), registers.addresses())
    }

    /// The memory the device reaches.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn slot(&self, position: u16) -> u64 {
        u64::from(position & (self.size - 1))
    }

    fn read_u16(&self, address: u64) -> Option<u16> {
        let mut bytes = [0; 2];
        self.bus
            .read(address, &mut bytes)
            .then(|| u16::from_le_bytes(bytes))
    }

    fn read_u32(&self, address: u64) -> Option<u32> {
        let mut bytes = [0; 4];
        self.bus
            .read(address, &mut bytes)
            .then(|| u32::from_le_bytes(bytes))
    }

    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.bus
            .read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    fn write_u16(&self, address: u64, value: u16) {
        self.bus.write(address, &value.to_le_bytes());
    }

    fn write_u32(&self, address: u64, value: u32) {
        self.bus.write(address, &value.to_le_bytes());
    }

    /// The driver's `avail.idx`.
    pub fn avail_idx(&self) -> Option<u16> {
        self.read_u16(self.addresses.driver + 2)
    }

    /// The driver's `avail.flags`.
    pub fn avail_flags(&self) -> Option<u16> {
        self.read_u16(self.addresses.driver)
    }

    /// The driver's `used_event` (event-idx notification threshold).
    pub fn used_event(&self) -> Option<u16> {
        self.read_u16(self.addresses.driver + 4 + 2 * u64::from(self.size))
    }

    /// Chains available and not yet taken.
    pub fn pending(&self) -> u16 {
        self.avail_idx()
            .map_or(0, |idx| idx.wrapping_sub(self.next_avail))
    }

    /// Takes the next available chain. `None` if nothing is available, or if the chain is
    /// malformed (then it is not taken).
    pub fn pop(&mut self) -> Option<Chain> {
        if self.pending() == 0 {
            return None;
        }
        let entry = self.addresses.driver + 4 + 2 * self.slot(self.next_avail);
        let head = self.read_u16(entry)?;
        if head >= self.size {
            return None;
        }
        let mut segments = Vec::new();
        let mut index = head;
        loop {
            if segments.len() >= usize::from(self.size) {
                return None;
            }
            let at = self.addresses.descriptors + DESCRIPTOR_SIZE as u64 * u64::from(index);
            let address = self.read_u64(at)?;
            let len = self.read_u32(at + 8)?;
            let flags = self.read_u16(at + 12)?;
            let next = self.read_u16(at + 14)?;
            segments.push(Segment {
                address,
                len,
                writable: flags & DESC_F_WRITE != 0,
            });
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            if next >= self.size {
                return None;
            }
            index = next;
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Some(Chain { head, segments })
    }

    /// Well-behaved completion: the used entry `(head, written)`, then the index.
    pub fn complete(&mut self, head: u16, written: u32) {
        self.push_used(u32::from(head), written);
    }

    /// Publishes any used entry `(id, len)`, then bumps the used index (hostile when `id` or
    /// `len` is wrong).
    pub fn push_used(&mut self, id: u32, len: u32) {
        self.write_used_entry(self.used_idx, id, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        self.write_u16(self.addresses.device + 2, self.used_idx);
    }

    /// Writes the used entry at ring position `position` without touching the index.
    pub fn write_used_entry(&self, position: u16, id: u32, len: u32) {
        let at = self.addresses.device + 4 + 8 * self.slot(position);
        self.write_u32(at, id);
        self.write_u32(at + 4, len);
    }

    /// Publishes `idx` as the used index, whatever it is (hostile when it jumps).
    pub fn set_used_idx(&mut self, idx: u16) {
        self.used_idx = idx;
        self.write_u16(self.addresses.device + 2, idx);
    }

    /// The used index this device has published.
    pub const fn used_idx(&self) -> u16 {
        self.used_idx
    }

    /// Writes `used.flags` (1 = `NO_NOTIFY`).
    pub fn set_used_flags(&self, flags: u16) {
        self.write_u16(self.addresses.device, flags);
    }

    /// Writes `avail_event` (event-idx notification threshold).
    pub fn set_avail_event(&self, idx: u16) {
        self.write_u16(self.addresses.device + 4 + 8 * u64::from(self.size), idx);
    }
}

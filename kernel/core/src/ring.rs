//! A fixed-size byte ring: the kernel's console input buffer, filled from the UART's receive
//! FIFO (by its interrupt, and on every timer tick as a fallback) and drained by `ConsoleRead`.
//!
//! When the ring is full new bytes are dropped (and counted): a reader that is not keeping up
//! loses what was typed last, never what it has not read yet.

/// A ring of at most `N` bytes.
#[derive(Debug)]
pub struct ByteRing<const N: usize> {
    bytes: [u8; N],
    /// Index of the oldest byte.
    head: usize,
    /// Bytes held.
    len: usize,
    /// Bytes dropped because the ring was full.
    dropped: u64,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Bytes held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes dropped so far because the ring was full.
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `byte`; false (and counted as dropped) when the ring is full.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.len == N {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        let tail = (self.head + self.len) % N;
        self.bytes[tail] = byte;
        self.len += 1;
        true
    }

    /// Moves up to `out.len()` of the oldest bytes into `out`; returns how many.
    pub fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let count = out.len().min(self.len);
        for slot in out.iter_mut().take(count) {
            *slot = self.bytes[self.head];
            self.head = (self.head + 1) % N;
        }
        self.len -= count;
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let mut ring = ByteRing::<4>::new();
        assert!(ring.is_empty());
        for byte in b"abc" {
            assert!(ring.push(*byte));
        }
        let mut out = [0u8; 2];
        assert_eq!(ring.pop_into(&mut out), 2);
        assert_eq!(&out, b"ab");
        for byte in b"def" {
            assert!(ring.push(*byte));
        }
        assert_eq!(ring.len(), 4);
        let mut out = [0u8; 8];
        assert_eq!(ring.pop_into(&mut out), 4);
        assert_eq!(&out[..4], b"cdef");
        assert_eq!(ring.pop_into(&mut out), 0);
    }

    #[test]
    fn a_full_ring_drops_the_newest_bytes() {
        let mut ring = ByteRing::<2>::new();
        assert!(ring.push(1));
        assert!(ring.push(2));
        assert!(!ring.push(3));
        assert!(!ring.push(4));
        assert_eq!(ring.dropped(), 2);
        let mut out = [0u8; 2];
        assert_eq!(ring.pop_into(&mut out), 2);
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn an_empty_buffer_takes_nothing() {
        let mut ring = ByteRing::<2>::new();
        ring.push(7);
        assert_eq!(ring.pop_into(&mut []), 0);
        assert_eq!(ring.len(), 1);
    }
}

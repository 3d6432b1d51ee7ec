//! A virtual-address allocator over the map region (`MAP_BASE..MAP_LIMIT`).
//!
//! Every reservation is followed by one unmapped guard page, so running off the end of a
//! mapping faults instead of reaching the next one. Released ranges go on a small first-fit free
//! list and are merged with their neighbours; when the list is full a released range is simply
//! forgotten (the region is 252 GiB, so losing a range costs nothing that matters).
//!
//! The allocator only hands out addresses; mapping them is the caller's job
//! ([`crate::memory`]). The task-wide instance is [`reserve`] / [`release`].

use heapless::Vec;
use moat_abi::{MAP_BASE, MAP_LIMIT, PAGE_SIZE};
use spin::Mutex;

/// Free ranges remembered at most.
const FREE_RANGES: usize = 32;

/// A free range, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

/// Hands out page-aligned, guard-separated ranges of one address region.
#[derive(Debug)]
pub struct VirtualAllocator {
    /// Everything at or above this (up to `limit`) has never been handed out.
    next: usize,
    limit: usize,
    free: Vec<Range, FREE_RANGES>,
}

impl VirtualAllocator {
    /// An allocator over `[base, limit)`; both are rounded inwards to pages.
    pub const fn new(base: usize, limit: usize) -> VirtualAllocator {
        let base = base.next_multiple_of(PAGE_SIZE);
        let limit = limit - limit % PAGE_SIZE;
        VirtualAllocator {
            next: base,
            limit,
            free: Vec::new(),
        }
    }

    /// Reserves `pages` pages (plus a guard page after them) and returns the start address, or
    /// `None` if `pages` is 0 or no range is large enough.
    pub fn reserve(&mut self, pages: usize) -> Option<usize> {
        let length = span(pages)?;
        if let Some(index) = self
            .free
            .iter()
            .position(|range| range.end - range.start >= length)
        {
            let range = &mut self.free[index];
            let start = range.start;
            range.start += length;
            if range.start == range.end {
                self.free.remove(index);
            }
            return Some(start);
        }
        let start = self.next;
        let end = start.checked_add(length)?;
        if end > self.limit {
            return None;
        }
        self.next = end;
        Some(start)
    }

    /// Gives back a range from [`VirtualAllocator::reserve`] with the same `pages`. Returns
    /// false if the range was forgotten instead (the free list was full) or is not one this
    /// allocator could have handed out.
    pub fn release(&mut self, address: usize, pages: usize) -> bool {
        let Some(length) = span(pages) else {
            return false;
        };
        let Some(end) = address.checked_add(length) else {
            return false;
        };
        if !address.is_multiple_of(PAGE_SIZE) || end > self.next {
            return false;
        }
        let mut released = Range {
            start: address,
            end,
        };
        // Merge with free neighbours (the list is kept sorted by start).
        let mut index = self
            .free
            .partition_point(|range| range.start < released.start);
        if index > 0 && self.free[index - 1].end == released.start {
            released.start = self.free[index - 1].start;
            self.free.remove(index - 1);
            index -= 1;
        }
        if index < self.free.len() && self.free[index].start == released.end {
            released.end = self.free[index].end;
            self.free.remove(index);
        }
        // A range ending at the untouched top simply lowers it.
        if released.end == self.next {
            self.next = released.start;
            return true;
        }
        self.free.insert(index, released).is_ok()
    }

    /// Bytes never handed out plus bytes on the free list.
    pub fn available(&self) -> usize {
        let free: usize = self.free.iter().map(|range| range.end - range.start).sum();
        self.limit - self.next + free
    }
}

/// Bytes for `pages` pages plus the guard page.
fn span(pages: usize) -> Option<usize> {
    if pages == 0 {
        return None;
    }
    pages.checked_add(1)?.checked_mul(PAGE_SIZE)
}

static TASK_ALLOCATOR: Mutex<VirtualAllocator> =
    Mutex::new(VirtualAllocator::new(MAP_BASE, MAP_LIMIT));

/// Reserves `pages` pages of the task's map region (see [`VirtualAllocator::reserve`]).
pub fn reserve(pages: usize) -> Option<usize> {
    TASK_ALLOCATOR.lock().reserve(pages)
}

/// Returns a range from [`reserve`] (see [`VirtualAllocator::release`]).
pub fn release(address: usize, pages: usize) -> bool {
    TASK_ALLOCATOR.lock().release(address, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x1_0000_0000;

    #[test]
    fn reservations_are_guarded_and_disjoint() {
        let mut allocator = VirtualAllocator::new(BASE, BASE + 64 * PAGE_SIZE);
        let first = allocator.reserve(2).expect("room");
        let second = allocator.reserve(1).expect("room");
        assert_eq!(first, BASE);
        assert_eq!(second, BASE + 3 * PAGE_SIZE, "one guard page between");
        assert_eq!(allocator.reserve(0), None);
        assert_eq!(allocator.reserve(64), None);
        assert_eq!(allocator.available(), 59 * PAGE_SIZE);
    }

    #[test]
    fn released_ranges_are_reused_and_merged() {
        let mut allocator = VirtualAllocator::new(BASE, BASE + 64 * PAGE_SIZE);
        let a = allocator.reserve(1).expect("room");
        let b = allocator.reserve(1).expect("room");
        let c = allocator.reserve(1).expect("room");
        assert!(allocator.release(a, 1));
        assert!(allocator.release(b, 1));
        // a and b merged into one 4-page range: a 3-page reservation fits there.
        assert_eq!(allocator.reserve(3), Some(a));
        assert!(allocator.release(a, 3));
        assert!(allocator.release(c, 1));
        // Everything merged back into the untouched top.
        assert_eq!(allocator.available(), 64 * PAGE_SIZE);
        assert_eq!(allocator.reserve(63), Some(BASE));
    }

    #[test]
    fn bogus_releases_are_refused() {
        let mut allocator = VirtualAllocator::new(BASE, BASE + 16 * PAGE_SIZE);
        let a = allocator.reserve(1).expect("room");
        assert!(!allocator.release(a + 1, 1));
        assert!(!allocator.release(a, 0));
        assert!(
            !allocator.release(BASE + 8 * PAGE_SIZE, 1),
            "never handed out"
        );
        assert!(!allocator.release(usize::MAX - PAGE_SIZE + 1, 1));
    }

    #[test]
    fn full_free_list_forgets_ranges() {
        let mut allocator = VirtualAllocator::new(BASE, BASE + 1024 * PAGE_SIZE);
        let ranges: std::vec::Vec<usize> = (0..100)
            .map(|_| allocator.reserve(1).expect("room"))
            .collect();
        let mut forgotten = 0;
        // Release every other range so none merge.
        for address in ranges.iter().step_by(2) {
            if !allocator.release(*address, 1) {
                forgotten += 1;
            }
        }
        assert_eq!(forgotten, 50 - FREE_RANGES);
    }

    extern crate std;
}

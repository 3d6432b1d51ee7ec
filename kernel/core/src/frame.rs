//! The physical frame allocator: one bit per 4 KiB frame, one bitmap per memory range.
//!
//! Allocation scans for a word that is not all ones, starting at a rotating hint, so a single
//! frame costs O(1) amortised whatever the memory size. The bitmaps live in storage the caller
//! provides (the kernel carves it out of the first free frames), so the allocator needs no heap.

use heapless::Vec;

use crate::range::PhysRange;

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;
/// At most this many separate ranges are managed.
pub const MAX_RANGES: usize = 16;

const BITS: usize = 64;

/// Why an allocator operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame (or no free run of the requested length and alignment).
    OutOfMemory,
    /// The address is not a frame this allocator manages.
    NotManaged,
    /// The frame is already free.
    DoubleFree,
    /// The caller's bitmap storage is too small; the value is the number of words needed.
    StorageTooSmall(usize),
    /// More ranges than [`MAX_RANGES`].
    TooManyRanges,
    /// A count or alignment of zero, or an alignment that is not a power of two.
    BadRequest,
}

struct Region<'a> {
    base: u64,
    frames: usize,
    /// Bit set = frame in use. Bits past `frames` in the last word are set.
    bits: &'a mut [u64],
    /// Word index where the next search starts.
    hint: usize,
    /// Set aside: only [`FrameAllocator::alloc_contiguous_dedicated`] allocates here.
    dedicated: bool,
}

impl Region<'_> {
    fn contains(&self, address: u64) -> bool {
        address >= self.base && (address - self.base) / FRAME_SIZE < self.frames as u64
    }

    fn index(&self, address: u64) -> usize {
        ((address - self.base) / FRAME_SIZE) as usize
    }

    fn is_used(&self, index: usize) -> bool {
        self.bits[index / BITS] & (1 << (index % BITS)) != 0
    }

    fn set_used(&mut self, index: usize, used: bool) {
        if used {
            self.bits[index / BITS] |= 1 << (index % BITS);
        } else {
            self.bits[index / BITS] &= !(1 << (index % BITS));
        }
    }

    fn alloc_one(&mut self) -> Option<u64> {
        let words = self.bits.len();
        for step in 0..words {
            let w = (self.hint + step) % words;
            let word = self.bits[w];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as usize;
                self.bits[w] |= 1 << bit;
                self.hint = w;
                return Some(self.base + ((w * BITS + bit) as u64) * FRAME_SIZE);
            }
        }
        None
    }

    fn alloc_run(&mut self, count: usize, align_frames: usize) -> Option<u64> {
        // First frame index whose address is aligned.
        let base_frame = self.base / FRAME_SIZE;
        let align = align_frames as u64;
        let mut first = ((base_frame.div_ceil(align) * align) - base_frame) as usize;
        while first + count <= self.frames {
            match (first..first + count).rev().find(|&i| self.is_used(i)) {
                None => {
                    for i in first..first + count {
                        self.set_used(i, true);
                    }
                    return Some(self.base + first as u64 * FRAME_SIZE);
                }
                // Skip past the used frame to the next aligned start.
                Some(used) => {
                    let offset = first % align_frames;
                    let next = used + 1;
                    first = next + (offset + align_frames - next % align_frames) % align_frames;
                }
            }
        }
        None
    }
}

/// Physical frame allocator over a set of page-aligned ranges.
pub struct FrameAllocator<'a> {
    regions: Vec<Region<'a>, MAX_RANGES>,
    free: usize,
    total: usize,
}

impl core::fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("free", &self.free)
            .field("total", &self.total)
            .finish()
    }
}

impl<'a> FrameAllocator<'a> {
    /// Bitmap words needed to manage `ranges` (each shrunk to whole frames).
    pub fn words_needed(ranges: &[PhysRange]) -> usize {
        ranges
            .iter()
            .map(|r| r.shrink_to_alignment(FRAME_SIZE))
            .map(|r| (r.size() / FRAME_SIZE) as usize)
            .map(|frames| frames.div_ceil(BITS))
            .sum()
    }

    /// Manages every whole frame in `ranges`, all initially free, with bitmaps in `storage`.
    pub fn new(ranges: &[PhysRange], storage: &'a mut [u64]) -> Result<Self, FrameError> {
        let needed = Self::words_needed(ranges);
        if storage.len() < needed {
            return Err(FrameError::StorageTooSmall(needed));
        }
        let mut regions = Vec::new();
        let mut rest = storage;
        let mut total = 0;
        for range in ranges {
            let range = range.shrink_to_alignment(FRAME_SIZE);
            let frames = (range.size() / FRAME_SIZE) as usize;
            if frames == 0 {
                continue;
            }
            let (bits, tail) = rest.split_at_mut(frames.div_ceil(BITS));
            rest = tail;
            bits.fill(0);
            if !frames.is_multiple_of(BITS) {
                let last = bits.len() - 1;
                bits[last] = !0u64 << (frames % BITS);
            }
            regions
                .push(Region {
                    base: range.start,
                    frames,
                    bits,
                    hint: 0,
                    dedicated: false,
                })
                .map_err(|_| FrameError::TooManyRanges)?;
            total += frames;
        }
        Ok(Self {
            regions,
            free: total,
            total,
        })
    }

    /// Marks every managed frame that overlaps `range` as in use (for memory taken before the
    /// allocator existed, such as its own bitmaps). Returns how many frames changed.
    pub fn reserve(&mut self, range: PhysRange) -> usize {
        let Some(range) = range.grow_to_alignment(FRAME_SIZE) else {
            return 0;
        };
        let mut changed = 0;
        for region in self.regions.iter_mut() {
            let mut address = range.start.max(region.base);
            while address < range.end && region.contains(address) {
                let index = region.index(address);
                if !region.is_used(index) {
                    region.set_used(index, true);
                    changed += 1;
                }
                address += FRAME_SIZE;
            }
        }
        self.free -= changed;
        changed
    }

    /// Sets aside every managed range that lies inside `range`: ordinary allocations skip it,
    /// and only [`Self::alloc_contiguous_dedicated`] allocates from it. (The kernel sets aside
    /// the shareable region this way.) Returns how many frames were set aside.
    pub fn dedicate(&mut self, range: PhysRange) -> usize {
        let mut frames = 0;
        for region in self.regions.iter_mut() {
            let end = region.base + region.frames as u64 * FRAME_SIZE;
            if region.base >= range.start && end <= range.end {
                region.dedicated = true;
                frames += region.frames;
            }
        }
        frames
    }

    /// Allocates `count` contiguous frames from the dedicated ranges only.
    pub fn alloc_contiguous_dedicated(
        &mut self,
        count: usize,
        align_frames: usize,
    ) -> Result<u64, FrameError> {
        if count == 0 || align_frames == 0 || !align_frames.is_power_of_two() {
            return Err(FrameError::BadRequest);
        }
        for region in self.regions.iter_mut().filter(|r| r.dedicated) {
            if let Some(address) = region.alloc_run(count, align_frames) {
                self.free -= count;
                return Ok(address);
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Allocates one frame; returns its physical address.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        for region in self.regions.iter_mut().filter(|r| !r.dedicated) {
            if let Some(address) = region.alloc_one() {
                self.free -= 1;
                return Ok(address);
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Allocates `count` physically contiguous frames whose first address is a multiple of
    /// `align_frames` frames.
    pub fn alloc_contiguous(
        &mut self,
        count: usize,
        align_frames: usize,
    ) -> Result<u64, FrameError> {
        if count == 0 || align_frames == 0 || !align_frames.is_power_of_two() {
            return Err(FrameError::BadRequest);
        }
        if count > self.free {
            return Err(FrameError::OutOfMemory);
        }
        for region in self.regions.iter_mut().filter(|r| !r.dedicated) {
            if let Some(address) = region.alloc_run(count, align_frames) {
                self.free -= count;
                return Ok(address);
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Returns one frame.
    pub fn free(&mut self, address: u64) -> Result<(), FrameError> {
        if !address.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::NotManaged);
        }
        let region = self
            .regions
            .iter_mut()
            .find(|r| r.contains(address))
            .ok_or(FrameError::NotManaged)?;
        let index = region.index(address);
        if !region.is_used(index) {
            return Err(FrameError::DoubleFree);
        }
        region.set_used(index, false);
        self.free += 1;
        Ok(())
    }

    /// Frames free now.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Frames managed in all.
    pub fn total_frames(&self) -> usize {
        self.total
    }

    /// Bytes of bitmap the allocator uses.
    pub fn metadata_bytes(&self) -> usize {
        self.regions.iter().map(|r| r.bits.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ranges() -> [PhysRange; 2] {
        [
            PhysRange::new(0x4000_0000, 0x4010_0000),
            PhysRange::new(0x8000_0800, 0x8000_9000),
        ]
    }

    #[test]
    fn counts_whole_frames_only() {
        let r = ranges();
        let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
        let a = FrameAllocator::new(&r, &mut storage).unwrap();
        assert_eq!(a.total_frames(), 256 + 8);
        assert_eq!(a.free_frames(), 264);
    }

    #[test]
    fn too_little_storage_is_an_error() {
        let r = ranges();
        let mut storage = vec![0u64; 1];
        assert_eq!(
            FrameAllocator::new(&r, &mut storage).unwrap_err(),
            FrameError::StorageTooSmall(5)
        );
    }

    #[test]
    fn alloc_until_empty_then_free() {
        let r = ranges();
        let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
        let mut a = FrameAllocator::new(&r, &mut storage).unwrap();
        let mut seen = HashSet::new();
        while let Ok(f) = a.alloc() {
            assert_eq!(f % FRAME_SIZE, 0);
            assert!(
                r.iter()
                    .any(|x| x.contains(f) && x.contains(f + FRAME_SIZE - 1)),
                "{f:#x}"
            );
            assert!(seen.insert(f));
        }
        assert_eq!(seen.len(), 264);
        assert_eq!(a.free_frames(), 0);
        let f = *seen.iter().next().unwrap();
        a.free(f).unwrap();
        assert_eq!(a.free(f), Err(FrameError::DoubleFree));
        assert_eq!(a.alloc(), Ok(f));
        assert_eq!(a.free(0x1234_5000), Err(FrameError::NotManaged));
        assert_eq!(a.free(f + 1), Err(FrameError::NotManaged));
    }

    #[test]
    fn reserve_marks_frames_used() {
        let r = ranges();
        let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
        let mut a = FrameAllocator::new(&r, &mut storage).unwrap();
        assert_eq!(a.reserve(PhysRange::new(0x3fff_f000, 0x4000_2001)), 3);
        assert_eq!(a.reserve(PhysRange::new(0x4000_0000, 0x4000_1000)), 0);
        assert_eq!(a.free_frames(), 261);
        let f = a.alloc().unwrap();
        assert_eq!(f, 0x4000_3000);
    }

    #[test]
    fn dedicated_ranges_serve_only_dedicated_requests() {
        let r = [
            PhysRange::new(0x4000_0000, 0x4000_4000),
            PhysRange::new(0x5000_0000, 0x5000_4000),
        ];
        let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
        let mut a = FrameAllocator::new(&r, &mut storage).unwrap();
        assert_eq!(a.dedicate(PhysRange::new(0x5000_0000, 0x6000_0000)), 4);
        for _ in 0..4 {
            assert!(a.alloc().unwrap() < 0x5000_0000);
        }
        assert_eq!(a.alloc(), Err(FrameError::OutOfMemory));
        assert_eq!(a.alloc_contiguous(2, 1), Err(FrameError::OutOfMemory));
        let d = a.alloc_contiguous_dedicated(4, 4).unwrap();
        assert_eq!(d, 0x5000_0000);
        assert_eq!(
            a.alloc_contiguous_dedicated(1, 1),
            Err(FrameError::OutOfMemory)
        );
        a.free(d).unwrap();
        assert_eq!(a.alloc_contiguous_dedicated(1, 1), Ok(d));
    }

    #[test]
    fn contiguous_respects_alignment_and_holes() {
        let r = [PhysRange::new(0x4000_1000, 0x4020_0000)];
        let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
        let mut a = FrameAllocator::new(&r, &mut storage).unwrap();
        a.reserve(PhysRange::new(0x4001_0000, 0x4001_1000));
        let run = a.alloc_contiguous(16, 16).unwrap();
        assert_eq!(run % (16 * FRAME_SIZE), 0);
        assert!(run >= 0x4001_1000, "{run:#x}");
        let big = a.alloc_contiguous(256, 256).unwrap();
        assert_eq!(big, 0x4010_0000);
        assert_eq!(a.alloc_contiguous(256, 256), Err(FrameError::OutOfMemory));
        assert_eq!(a.alloc_contiguous(0, 1), Err(FrameError::BadRequest));
        assert_eq!(a.alloc_contiguous(1, 3), Err(FrameError::BadRequest));
    }

    proptest! {
        #[test]
        fn never_hands_out_a_frame_twice(ops in prop::collection::vec((0u8..4, 1usize..9), 1..300)) {
            let r = ranges();
            let mut storage = vec![0u64; FrameAllocator::words_needed(&r)];
            let mut a = FrameAllocator::new(&r, &mut storage).unwrap();
            let mut held: std::vec::Vec<u64> = std::vec::Vec::new();
            for (op, n) in ops {
                match op {
                    0 | 1 => if let Ok(f) = a.alloc() { held.push(f) },
                    2 => if let Ok(f) = a.alloc_contiguous(n, n.next_power_of_two()) {
                        for i in 0..n as u64 { held.push(f + i * FRAME_SIZE) }
                    },
                    _ => if !held.is_empty() {
                        let f = held.swap_remove(n % held.len());
                        prop_assert_eq!(a.free(f), Ok(()));
                    },
                }
                let unique: HashSet<_> = held.iter().collect();
                prop_assert_eq!(unique.len(), held.len());
                prop_assert_eq!(a.free_frames() + held.len(), a.total_frames());
            }
        }
    }
}

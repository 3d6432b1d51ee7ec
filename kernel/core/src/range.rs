//! Physical address ranges and the arithmetic the boot memory map needs.

use heapless::Vec;

/// A half-open range of physical addresses `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysRange {
    /// First address in the range.
    pub start: u64,
    /// First address past the range.
    pub end: u64,
}

impl PhysRange {
    /// A range from `start` up to, not including, `end`. An inverted range is empty.
    pub const fn new(start: u64, end: u64) -> Self {
        if end < start {
            Self { start, end: start }
        } else {
            Self { start, end }
        }
    }

    /// A range of `size` bytes at `base`, or `None` if it would wrap past 2^64.
    pub fn from_base_size(base: u64, size: u64) -> Option<Self> {
        Some(Self {
            start: base,
            end: base.checked_add(size)?,
        })
    }

    /// Length in bytes.
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no address.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `address` lies inside.
    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// Whether the two ranges share an address.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The largest range inside this one whose ends are multiples of `align` (a power of two).
    pub fn shrink_to_alignment(&self, align: u64) -> PhysRange {
        debug_assert!(align.is_power_of_two());
        let start = self.start.checked_add(align - 1).map(|s| s & !(align - 1));
        let end = self.end & !(align - 1);
        match start {
            Some(start) if start < end => PhysRange { start, end },
            _ => PhysRange {
                start: self.start,
                end: self.start,
            },
        }
    }

    /// The smallest range whose ends are multiples of `align` (a power of two) that covers this
    /// one, or `None` if it would wrap.
    pub fn grow_to_alignment(&self, align: u64) -> Option<PhysRange> {
        debug_assert!(align.is_power_of_two());
        Some(PhysRange {
            start: self.start & !(align - 1),
            end: self.end.checked_add(align - 1)? & !(align - 1),
        })
    }
}

impl core::fmt::Display for PhysRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#012x}..{:#012x}", self.start, self.end)
    }
}

/// Error from [`subtract`]: the result has more pieces than fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyPieces;

/// `available` minus every range in `holes`, as sorted, disjoint, non-empty ranges.
pub fn subtract<const N: usize>(
    available: &[PhysRange],
    holes: &[PhysRange],
) -> Result<Vec<PhysRange, N>, TooManyPieces> {
    let mut out: Vec<PhysRange, N> = Vec::new();
    for range in available {
        let mut pieces: Vec<PhysRange, N> = Vec::new();
        if !range.is_empty() {
            pieces.push(*range).map_err(|_| TooManyPieces)?;
        }
        for hole in holes.iter().filter(|h| !h.is_empty()) {
            let mut next: Vec<PhysRange, N> = Vec::new();
            for piece in &pieces {
                if !piece.overlaps(hole) {
                    next.push(*piece).map_err(|_| TooManyPieces)?;
                    continue;
                }
                if piece.start < hole.start {
                    next.push(PhysRange::new(piece.start, hole.start))
                        .map_err(|_| TooManyPieces)?;
                }
                if hole.end < piece.end {
                    next.push(PhysRange::new(hole.end, piece.end))
                        .map_err(|_| TooManyPieces)?;
                }
            }
            pieces = next;
        }
        for piece in pieces {
            out.push(piece).map_err(|_| TooManyPieces)?;
        }
    }
    out.sort_unstable_by_key(|r| r.start);
    Ok(out)
}

/// The highest `size`-byte range, aligned to `align` (a power of two), that fits inside one of
/// `usable`. The kernel takes its shareable region (the memory the DMA server may share with the
/// host) this way, from the top of RAM.
pub fn carve_top(usable: &[PhysRange], size: u64, align: u64) -> Option<PhysRange> {
    debug_assert!(align.is_power_of_two());
    usable
        .iter()
        .filter_map(|r| {
            let start = r.end.checked_sub(size)? & !(align - 1);
            (start >= r.start && size > 0).then(|| PhysRange::new(start, start + size))
        })
        .max_by_key(|r| r.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subtract_splits_and_trims() {
        let mem = [PhysRange::new(0x1000, 0x9000)];
        let holes = [
            PhysRange::new(0x0, 0x2000),
            PhysRange::new(0x4000, 0x5000),
            PhysRange::new(0x8000, 0xa000),
        ];
        let out: Vec<PhysRange, 8> = subtract(&mem, &holes).unwrap();
        assert_eq!(
            out.as_slice(),
            &[
                PhysRange::new(0x2000, 0x4000),
                PhysRange::new(0x5000, 0x8000)
            ]
        );
    }

    #[test]
    fn carve_top_takes_the_highest_aligned_fit() {
        let usable = [
            PhysRange::new(0x4000_0000, 0x4800_0000),
            PhysRange::new(0x4810_0000, 0x6000_0000),
        ];
        assert_eq!(
            carve_top(&usable, 0x400_0000, 0x20_0000),
            Some(PhysRange::new(0x5c00_0000, 0x6000_0000))
        );
        let ragged = [PhysRange::new(0x4000_0000, 0x4ff0_1000)];
        assert_eq!(
            carve_top(&ragged, 0x10_0000, 0x20_0000),
            Some(PhysRange::new(0x4fe0_0000, 0x4ff0_0000))
        );
        assert_eq!(carve_top(&usable, 0x4000_0000, 0x1000), None);
        assert_eq!(carve_top(&[], 0x1000, 0x1000), None);
    }

    #[test]
    fn alignment() {
        let r = PhysRange::new(0x1001, 0x3fff);
        assert_eq!(
            r.shrink_to_alignment(0x1000),
            PhysRange::new(0x2000, 0x3000)
        );
        assert!(
            PhysRange::new(0x1001, 0x1fff)
                .shrink_to_alignment(0x1000)
                .is_empty()
        );
        assert_eq!(
            r.grow_to_alignment(0x1000),
            Some(PhysRange::new(0x1000, 0x4000))
        );
        assert_eq!(PhysRange::new(0, u64::MAX).grow_to_alignment(0x1000), None);
    }

    proptest! {
        #[test]
        fn subtract_is_exact(
            mem in prop::collection::vec((0u64..1 << 20, 0u64..1 << 16), 1..4),
            holes in prop::collection::vec((0u64..1 << 20, 0u64..1 << 16), 0..6),
        ) {
            let mem: std::vec::Vec<PhysRange> = mem.into_iter().map(|(b, s)| PhysRange::new(b, b + s)).collect();
            let holes: std::vec::Vec<PhysRange> = holes.into_iter().map(|(b, s)| PhysRange::new(b, b + s)).collect();
            let out: Vec<PhysRange, 64> = subtract(&mem, &holes).unwrap();
            // Sample addresses: in the result iff in some bank and in no hole.
            for probe in (0u64..(1 << 20) + (1 << 16)).step_by(509) {
                let expect = mem.iter().any(|r| r.contains(probe)) && !holes.iter().any(|h| h.contains(probe));
                let got = out.iter().any(|r| r.contains(probe));
                prop_assert_eq!(expect, got, "address {:#x}", probe);
            }
            prop_assert!(out.iter().all(|r| !r.is_empty()));
        }
    }
}

//! A strict reader for the task binaries packed into the kernel image: 64-bit little-endian
//! AArch64 ELF executables, statically linked, loaded by their PT_LOAD segments.
//!
//! The binaries come from the project's own build, but the kernel still checks every offset and
//! size against the file and the user address range before using it, so a corrupt archive is an
//! error and never an out-of-bounds access.

use heapless::Vec;

/// At most this many loadable segments per binary.
pub const MAX_SEGMENTS: usize = 8;

/// Why a binary was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its headers claim.
    Truncated,
    /// Not ELF, not 64-bit little-endian, not AArch64 or not an executable.
    NotAarch64Executable,
    /// A program header is malformed (sizes, alignment, overlap or overflow).
    BadSegment,
    /// A segment or the entry point lies outside the allowed user range.
    OutOfRange,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
    /// No loadable segment.
    NoSegments,
}

/// Access a segment needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    /// PF_R.
    pub read: bool,
    /// PF_W.
    pub write: bool,
    /// PF_X.
    pub execute: bool,
}

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (the part past `file_size` is zero).
    pub mem_size: u64,
    /// Offset of the initialised bytes in the file.
    pub file_offset: u64,
    /// Initialised bytes.
    pub file_size: u64,
    /// Permissions.
    pub flags: SegmentFlags,
}

/// A checked executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// Entry point.
    pub entry: u64,
    /// Loadable segments, sorted by address, non-overlapping at page granularity.
    pub segments: Vec<Segment, MAX_SEGMENTS>,
}

const PT_LOAD: u32 = 1;
const EM_AARCH64: u16 = 183;
const ET_EXEC: u16 = 2;
const PAGE: u64 = 4096;

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, ElfError> {
    let b = bytes.get(at..at + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, ElfError> {
    let b = bytes.get(at..at + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, ElfError> {
    let b = bytes.get(at..at + 8).ok_or(ElfError::Truncated)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Ok(u64::from_le_bytes(word))
}

impl Executable {
    /// Checks `file` and returns its entry point and loadable segments, all of which must lie
    /// inside `user_range` (half-open).
    pub fn parse(file: &[u8], user_range: core::ops::Range<u64>) -> Result<Self, ElfError> {
        if file.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ElfError::NotAarch64Executable);
        }
        // ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
        if file.get(4..7) != Some([2u8, 1, 1].as_slice()) {
            return Err(ElfError::NotAarch64Executable);
        }
        if u16_at(file, 16)? != ET_EXEC || u16_at(file, 18)? != EM_AARCH64 {
            return Err(ElfError::NotAarch64Executable);
        }
        let entry = u64_at(file, 24)?;
        let phoff = u64_at(file, 32)?;
        let phentsize = u16_at(file, 54)? as u64;
        let phnum = u16_at(file, 56)? as u64;
        if phentsize < 56 {
            return Err(ElfError::BadSegment);
        }
        let mut segments: Vec<Segment, MAX_SEGMENTS> = Vec::new();
        for index in 0..phnum {
            let at = index
                .checked_mul(phentsize)
                .and_then(|o| o.checked_add(phoff))
                .and_then(|o| usize::try_from(o).ok())
                .ok_or(ElfError::Truncated)?;
            if u32_at(file, at)? != PT_LOAD {
                continue;
            }
            let flags = u32_at(file, at + 4)?;
            let segment = Segment {
                file_offset: u64_at(file, at + 8)?,
                vaddr: u64_at(file, at + 16)?,
                file_size: u64_at(file, at + 32)?,
                mem_size: u64_at(file, at + 40)?,
                flags: SegmentFlags {
                    execute: flags & 1 != 0,
                    write: flags & 2 != 0,
                    read: flags & 4 != 0,
                },
            };
            if segment.mem_size == 0 {
                continue;
            }
            if segment.file_size > segment.mem_size {
                return Err(ElfError::BadSegment);
            }
            let file_end = segment
                .file_offset
                .checked_add(segment.file_size)
                .ok_or(ElfError::BadSegment)?;
            if file_end > file.len() as u64 {
                return Err(ElfError::Truncated);
            }
            let end = segment
                .vaddr
                .checked_add(segment.mem_size)
                .ok_or(ElfError::OutOfRange)?;
            if segment.vaddr < user_range.start || end > user_range.end {
                return Err(ElfError::OutOfRange);
            }
            if segment.flags.write && segment.flags.execute {
                // W^X: a task binary never needs a writable and executable page.
                return Err(ElfError::BadSegment);
            }
            segments
                .push(segment)
                .map_err(|_| ElfError::TooManySegments)?;
        }
        if segments.is_empty() {
            return Err(ElfError::NoSegments);
        }
        segments.sort_unstable_by_key(|s| s.vaddr);
        for pair in segments.windows(2) {
            // Segments are mapped page by page with their own permissions: no page may be shared.
            let first_end_page = (pair[0].vaddr + pair[0].mem_size).div_ceil(PAGE);
            if first_end_page > pair[1].vaddr / PAGE {
                return Err(ElfError::BadSegment);
            }
        }
        let entry_ok = segments
            .iter()
            .any(|s| s.flags.execute && entry >= s.vaddr && entry < s.vaddr + s.mem_size);
        if !entry_ok {
            return Err(ElfError::OutOfRange);
        }
        Ok(Executable { entry, segments })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF with the given (vaddr, flags, file bytes, mem size) segments.
    pub(crate) fn build(entry: u64, segments: &[(u64, u32, &[u8], u64)]) -> std::vec::Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segments.len() as u64;
        let mut file = vec![0u8; data_start as usize];
        file[0..4].copy_from_slice(b"\x7fELF");
        file[4..7].copy_from_slice(&[2, 1, 1]);
        file[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        file[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        file[24..32].copy_from_slice(&entry.to_le_bytes());
        file[32..40].copy_from_slice(&phoff.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (vaddr, flags, bytes, mem)) in segments.iter().enumerate() {
            let offset = file.len() as u64;
            file.extend_from_slice(bytes);
            let at = (phoff + 56 * i as u64) as usize;
            file[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            file[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 32..at + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            file[at + 40..at + 48].copy_from_slice(&mem.to_le_bytes());
        }
        file
    }

    const USER: core::ops::Range<u64> = 0x10_0000..0x1_0000_0000;

    #[test]
    fn parses_text_and_data() {
        let f = build(
            0x20_0000,
            &[
                (0x20_0000, 5, &[1, 2, 3, 4], 4),
                (0x20_1000, 6, &[9], 0x2000),
            ],
        );
        let e = Executable::parse(&f, USER).unwrap();
        assert_eq!(e.entry, 0x20_0000);
        assert_eq!(e.segments.len(), 2);
        assert!(e.segments[0].flags.execute && !e.segments[0].flags.write);
        assert_eq!(e.segments[1].mem_size, 0x2000);
    }

    #[test]
    fn refuses_bad_binaries() {
        let ok = build(0x20_0000, &[(0x20_0000, 5, &[0; 8], 8)]);
        assert!(Executable::parse(&ok, USER).is_ok());
        assert_eq!(Executable::parse(&ok[..40], USER), Err(ElfError::Truncated));
        assert_eq!(
            Executable::parse(b"MZ", USER),
            Err(ElfError::NotAarch64Executable)
        );
        // Writable and executable.
        let wx = build(0x20_0000, &[(0x20_0000, 7, &[0; 8], 8)]);
        assert_eq!(Executable::parse(&wx, USER), Err(ElfError::BadSegment));
        // Outside the user range (kernel address).
        let high = build(
            0xffff_0000_0000_0000,
            &[(0xffff_0000_0000_0000, 5, &[0; 8], 8)],
        );
        assert_eq!(Executable::parse(&high, USER), Err(ElfError::OutOfRange));
        // Entry point not in an executable segment.
        let entry = build(0x30_0000, &[(0x20_0000, 5, &[0; 8], 8)]);
        assert_eq!(Executable::parse(&entry, USER), Err(ElfError::OutOfRange));
        // Two segments sharing a page.
        let overlap = build(
            0x20_0000,
            &[(0x20_0000, 5, &[0; 8], 8), (0x20_0800, 6, &[0; 8], 8)],
        );
        assert_eq!(Executable::parse(&overlap, USER), Err(ElfError::BadSegment));
        // File size larger than memory size.
        let sizes = build(0x20_0000, &[(0x20_0000, 5, &[0; 8], 4)]);
        assert_eq!(Executable::parse(&sizes, USER), Err(ElfError::BadSegment));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Executable::parse(&bytes, USER);
        }

        #[test]
        fn corrupted_headers_never_panic(flips in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8)) {
            let mut f = build(0x20_0000, &[(0x20_0000, 5, &[0; 8], 8), (0x20_1000, 6, &[0; 8], 0x3000)]);
            for (at, v) in flips { let at = at % f.len(); f[at] = v; }
            if let Ok(e) = Executable::parse(&f, USER) {
                for s in &e.segments {
                    proptest::prop_assert!(s.file_offset + s.file_size <= f.len() as u64);
                    proptest::prop_assert!(s.vaddr >= USER.start && s.vaddr + s.mem_size <= USER.end);
                }
            }
        }
    }
}

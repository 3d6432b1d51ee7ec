//! ELF to raw Linux arm64 `Image` conversion (what `objcopy -O binary` would do), and a check
//! of the Image header.
//!
//! The kernel ELF is linked at a high virtual address and begins with the 64-byte Linux arm64
//! Image header at the start of its first loadable segment. The raw Image is the bytes of every
//! `PT_LOAD` segment placed at (vaddr - lowest vaddr), gaps zero-filled, ending at the last byte
//! that has file content. Zero-initialised memory past that (bss) is not in the file; the
//! header's `image_size` field tells the loader to reserve it.

use std::fmt;

/// Why an ELF could not be turned into an Image.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Not a 64-bit little-endian AArch64 ELF file, or its headers are cut short.
    NotAarch64Elf(&'static str),
    /// A program header points outside the file.
    SegmentOutsideFile { index: usize },
    /// No `PT_LOAD` segment has file content.
    NothingToLoad,
    /// Two segments' file contents claim the same virtual addresses.
    OverlappingSegments { first: usize, second: usize },
    /// The segments are spread over more than [`MAX_IMAGE_BYTES`].
    TooLarge { bytes: u64 },
    /// The output does not start with a valid Linux arm64 Image header.
    BadHeader(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAarch64Elf(why) => write!(formatter, "not a 64-bit AArch64 ELF file: {why}"),
            Self::SegmentOutsideFile { index } => {
                write!(formatter, "program header {index} points outside the file")
            }
            Self::NothingToLoad => write!(formatter, "no PT_LOAD segment has file content"),
            Self::OverlappingSegments { first, second } => {
                write!(formatter, "PT_LOAD segments {first} and {second} overlap")
            }
            Self::TooLarge { bytes } => write!(
                formatter,
                "the loadable segments span {bytes} bytes (more than {MAX_IMAGE_BYTES}); \
                 is something linked far away from the kernel?"
            ),
            Self::BadHeader(why) => write!(formatter, "bad Linux arm64 Image header: {why}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// Largest Image we are willing to write (the plain guest has 512 MiB of RAM).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// The magic number at offset 56 of a Linux arm64 Image header: "ARM\x64".
pub const ARM64_IMAGE_MAGIC: u32 = 0x644d_5241;

/// Size of the Linux arm64 Image header.
pub const HEADER_BYTES: usize = 64;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_CLASS_64: u8 = 2;
const ELF_DATA_LITTLE_ENDIAN: u8 = 1;
const ELF_MACHINE_AARCH64: u16 = 183;
const ELF_HEADER_BYTES: usize = 64;
const PROGRAM_HEADER_BYTES: usize = 56;
const PT_LOAD: u32 = 1;

/// One `PT_LOAD` program header, reduced to what the conversion needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    index: usize,
    file_offset: u64,
    virtual_address: u64,
    file_size: u64,
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

/// Reads the `PT_LOAD` program headers of a 64-bit little-endian AArch64 ELF file.
fn load_segments(elf: &[u8]) -> Result<Vec<Segment>, ImageError> {
    use ImageError::NotAarch64Elf;
    if elf.len() < ELF_HEADER_BYTES || &elf[..4] != ELF_MAGIC {
        return Err(NotAarch64Elf("no ELF magic"));
    }
    if elf[4] != ELF_CLASS_64 {
        return Err(NotAarch64Elf("not ELF64"));
    }
    if elf[5] != ELF_DATA_LITTLE_ENDIAN {
        return Err(NotAarch64Elf("not little-endian"));
    }
    if read_u16(elf, 18) != Some(ELF_MACHINE_AARCH64) {
        return Err(NotAarch64Elf("machine is not AArch64"));
    }
    const TRUNCATED: ImageError = NotAarch64Elf("program headers cut short");
    let table_offset = read_u64(elf, 32).ok_or(NotAarch64Elf("header cut short"))?;
    let entry_size = usize::from(read_u16(elf, 54).ok_or(NotAarch64Elf("header cut short"))?);
    let count = usize::from(read_u16(elf, 56).ok_or(NotAarch64Elf("header cut short"))?);
    if count > 0 && entry_size < PROGRAM_HEADER_BYTES {
        return Err(NotAarch64Elf("program header entries too small"));
    }
    let table_offset = usize::try_from(table_offset).map_err(|_| NotAarch64Elf("bad e_phoff"))?;

    let mut segments = Vec::new();
    for index in 0..count {
        let header = index
            .checked_mul(entry_size)
            .and_then(|offset| offset.checked_add(table_offset))
            .ok_or(NotAarch64Elf("bad e_phoff"))?;
        let field = |offset: usize| read_u64(elf, header + offset);
        let kind = read_u32(elf, header).ok_or(TRUNCATED)?;
        if kind != PT_LOAD {
            continue;
        }
        let (Some(file_offset), Some(virtual_address), Some(file_size)) =
            (field(8), field(16), field(32))
        else {
            return Err(TRUNCATED);
        };
        let end = file_offset.checked_add(file_size);
        if end.is_none_or(|end| end > elf.len() as u64) {
            return Err(ImageError::SegmentOutsideFile { index });
        }
        if virtual_address.checked_add(file_size).is_none() {
            return Err(ImageError::SegmentOutsideFile { index });
        }
        segments.push(Segment {
            index,
            file_offset,
            virtual_address,
            file_size,
        });
    }
    Ok(segments)
}

/// Converts the bytes of an AArch64 ELF file into the raw image its `PT_LOAD` segments
/// describe: each segment's file content at (vaddr - lowest vaddr), gaps filled with zeros,
/// ending at the last byte with file content.
pub fn elf_to_raw(elf: &[u8]) -> Result<Vec<u8>, ImageError> {
    let segments = load_segments(elf)?;
    let base = segments
        .iter()
        .map(|segment| segment.virtual_address)
        .min()
        .ok_or(ImageError::NothingToLoad)?;
    let mut with_content: Vec<Segment> = segments
        .into_iter()
        .filter(|segment| segment.file_size > 0)
        .collect();
    with_content.sort_by_key(|segment| segment.virtual_address);
    for pair in with_content.windows(2) {
        if pair[0].virtual_address + pair[0].file_size > pair[1].virtual_address {
            return Err(ImageError::OverlappingSegments {
                first: pair[0].index,
                second: pair[1].index,
            });
        }
    }
    let last = with_content.last().ok_or(ImageError::NothingToLoad)?;
    let length = last.virtual_address + last.file_size - base;
    if length > MAX_IMAGE_BYTES {
        return Err(ImageError::TooLarge { bytes: length });
    }
    // Both conversions are in range: `length` is at most MAX_IMAGE_BYTES and every segment
    // lies inside `elf`, which is in memory.
    let mut image = vec![0u8; length as usize];
    for segment in &with_content {
        let source =
            segment.file_offset as usize..(segment.file_offset + segment.file_size) as usize;
        let start = (segment.virtual_address - base) as usize;
        image[start..start + source.len()].copy_from_slice(&elf[source]);
    }
    Ok(image)
}

/// The fields of a Linux arm64 Image header that xtask checks.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from a 2 MiB-aligned base at which the image wants to be loaded.
    pub text_offset: u64,
    /// Bytes the loaded image occupies in memory, bss included.
    pub image_size: u64,
}

/// Checks that `image` starts with a Linux arm64 Image header whose `image_size` covers the
/// whole file, and returns the header.
pub fn check_header(image: &[u8]) -> Result<ImageHeader, ImageError> {
    if image.len() < HEADER_BYTES {
        return Err(ImageError::BadHeader(format!(
            "the image is only {} bytes, shorter than the {HEADER_BYTES}-byte header",
            image.len()
        )));
    }
    let magic = read_u32(image, 56).unwrap_or_default();
    if magic != ARM64_IMAGE_MAGIC {
        return Err(ImageError::BadHeader(format!(
            "magic at offset 56 is {magic:#010x}, expected {ARM64_IMAGE_MAGIC:#010x} (\"ARM\\x64\"); \
             does the first PT_LOAD segment start with the header?"
        )));
    }
    let header = ImageHeader {
        text_offset: read_u64(image, 8).unwrap_or_default(),
        image_size: read_u64(image, 16).unwrap_or_default(),
    };
    if header.image_size < image.len() as u64 {
        return Err(ImageError::BadHeader(format!(
            "image_size {} is smaller than the {}-byte file",
            header.image_size,
            image.len()
        )));
    }
    Ok(header)
}

/// [`elf_to_raw`] followed by [`check_header`].
pub fn elf_to_image(elf: &[u8]) -> Result<Vec<u8>, ImageError> {
    let image = elf_to_raw(elf)?;
    check_header(&image)?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIGH: u64 = 0xffff_ffff_8000_0000;

    /// A program header for the test ELF builder: (type, file bytes, vaddr, memsz).
    struct TestSegment {
        kind: u32,
        content: Vec<u8>,
        virtual_address: u64,
        memory_size: u64,
    }

    fn load(content: Vec<u8>, virtual_address: u64) -> TestSegment {
        let memory_size = content.len() as u64;
        TestSegment {
            kind: PT_LOAD,
            content,
            virtual_address,
            memory_size,
        }
    }

    /// Builds a minimal ELF64 AArch64 file: header, program headers, then each segment's bytes.
    fn build_elf(segments: &[TestSegment]) -> Vec<u8> {
        let mut elf = vec![0u8; ELF_HEADER_BYTES];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = ELF_CLASS_64;
        elf[5] = ELF_DATA_LITTLE_ENDIAN;
        elf[6] = 1;
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&ELF_MACHINE_AARCH64.to_le_bytes());
        elf[32..40].copy_from_slice(&(ELF_HEADER_BYTES as u64).to_le_bytes());
        elf[52..54].copy_from_slice(&(ELF_HEADER_BYTES as u16).to_le_bytes());
        elf[54..56].copy_from_slice(&(PROGRAM_HEADER_BYTES as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        let mut data_offset = (ELF_HEADER_BYTES + segments.len() * PROGRAM_HEADER_BYTES) as u64;
        for segment in segments {
            let mut header = [0u8; PROGRAM_HEADER_BYTES];
            header[0..4].copy_from_slice(&segment.kind.to_le_bytes());
            header[8..16].copy_from_slice(&data_offset.to_le_bytes());
            header[16..24].copy_from_slice(&segment.virtual_address.to_le_bytes());
            header[24..32].copy_from_slice(&segment.virtual_address.to_le_bytes());
            header[32..40].copy_from_slice(&(segment.content.len() as u64).to_le_bytes());
            header[40..48].copy_from_slice(&segment.memory_size.to_le_bytes());
            elf.extend_from_slice(&header);
            data_offset += segment.content.len() as u64;
        }
        for segment in segments {
            elf.extend_from_slice(&segment.content);
        }
        elf
    }

    /// A 64-byte Linux arm64 header followed by `body`, with the given image_size.
    fn header_then(body: &[u8], image_size: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[56..60].copy_from_slice(&ARM64_IMAGE_MAGIC.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn segments_are_laid_out_by_virtual_address_with_zero_gaps() {
        let text = header_then(&[0xaa; 16], 0x3000);
        let data = vec![0xbb; 8];
        let elf = build_elf(&[
            // Out of order in the file on purpose, plus a non-load header and a bss segment.
            load(data.clone(), HIGH + 0x1000),
            TestSegment {
                kind: 0x6474_e551,
                content: vec![],
                virtual_address: 0,
                memory_size: 0,
            },
            load(text.clone(), HIGH),
            TestSegment {
                kind: PT_LOAD,
                content: vec![],
                virtual_address: HIGH + 0x2000,
                memory_size: 0x1000,
            },
        ]);
        let image = elf_to_image(&elf).expect("converts");
        assert_eq!(
            image.len(),
            0x1000 + data.len(),
            "ends at the last byte with file content"
        );
        assert_eq!(&image[..text.len()], &text[..]);
        assert!(
            image[text.len()..0x1000].iter().all(|&byte| byte == 0),
            "gap is zero-filled"
        );
        assert_eq!(&image[0x1000..], &data[..]);
        assert_eq!(
            check_header(&image),
            Ok(ImageHeader {
                text_offset: 0,
                image_size: 0x3000
            })
        );
    }

    #[test]
    fn a_segment_with_partial_file_content_contributes_only_its_file_bytes() {
        let text = header_then(&[1, 2, 3], 0x1000);
        let mut segment = load(text.clone(), HIGH);
        segment.memory_size = 0x1000;
        let image = elf_to_image(&build_elf(&[segment])).expect("converts");
        assert_eq!(image, text);
    }

    #[test]
    fn rejects_files_that_are_not_aarch64_elf64() {
        let good = build_elf(&[load(header_then(&[], 64), HIGH)]);
        assert!(elf_to_image(&good).is_ok());

        let mut not_elf = good.clone();
        not_elf[0] = 0;
        assert_eq!(
            elf_to_raw(&not_elf),
            Err(ImageError::NotAarch64Elf("no ELF magic"))
        );

        let mut elf32 = good.clone();
        elf32[4] = 1;
        assert_eq!(
            elf_to_raw(&elf32),
            Err(ImageError::NotAarch64Elf("not ELF64"))
        );

        let mut big_endian = good.clone();
        big_endian[5] = 2;
        assert_eq!(
            elf_to_raw(&big_endian),
            Err(ImageError::NotAarch64Elf("not little-endian"))
        );

        let mut x86 = good.clone();
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert_eq!(
            elf_to_raw(&x86),
            Err(ImageError::NotAarch64Elf("machine is not AArch64"))
        );

        assert!(matches!(
            elf_to_raw(&good[..100]),
            Err(ImageError::NotAarch64Elf(_))
        ));
        assert!(matches!(
            elf_to_raw(&good[..10]),
            Err(ImageError::NotAarch64Elf(_))
        ));
    }

    #[test]
    fn rejects_segments_outside_the_file() {
        let mut elf = build_elf(&[load(header_then(&[], 64), HIGH)]);
        elf.truncate(elf.len() - 1);
        assert_eq!(
            elf_to_raw(&elf),
            Err(ImageError::SegmentOutsideFile { index: 0 })
        );
    }

    #[test]
    fn rejects_elves_without_loadable_content() {
        assert_eq!(elf_to_raw(&build_elf(&[])), Err(ImageError::NothingToLoad));
        let bss_only = TestSegment {
            kind: PT_LOAD,
            content: vec![],
            virtual_address: HIGH,
            memory_size: 0x1000,
        };
        assert_eq!(
            elf_to_raw(&build_elf(&[bss_only])),
            Err(ImageError::NothingToLoad)
        );
    }

    #[test]
    fn rejects_overlapping_segments() {
        let elf = build_elf(&[load(vec![1; 32], HIGH), load(vec![2; 32], HIGH + 16)]);
        assert_eq!(
            elf_to_raw(&elf),
            Err(ImageError::OverlappingSegments {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn rejects_segments_spread_too_far_apart() {
        let elf = build_elf(&[
            load(vec![1; 4], 0x4000_0000),
            load(vec![2; 4], 0x4000_0000 + (1 << 40)),
        ]);
        assert!(matches!(elf_to_raw(&elf), Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn header_check_wants_magic_and_an_image_size_covering_the_file() {
        assert!(check_header(&header_then(&[0; 100], 164)).is_ok());
        assert!(matches!(
            check_header(&header_then(&[0; 100], 163)),
            Err(ImageError::BadHeader(_))
        ));
        assert!(matches!(
            check_header(&header_then(&[], 0)),
            Err(ImageError::BadHeader(_))
        ));
        let mut no_magic = header_then(&[], 64);
        no_magic[56] = 0;
        assert!(matches!(
            check_header(&no_magic),
            Err(ImageError::BadHeader(_))
        ));
        assert!(matches!(
            check_header(&[0; 10]),
            Err(ImageError::BadHeader(_))
        ));
        // An ELF whose first segment does not start with the header converts but fails the check.
        let elf = build_elf(&[load(vec![0; 128], HIGH)]);
        assert!(elf_to_raw(&elf).is_ok());
        assert!(matches!(elf_to_image(&elf), Err(ImageError::BadHeader(_))));
    }
}

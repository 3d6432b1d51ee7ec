//! The Linux arm64 `Image` header (Documentation/arch/arm64/booting.rst), as realm-sim reads it.
//!
//! ```text
//! 0x00 code0/code1   0x08 text_offset   0x10 image_size   0x18 flags
//! 0x20..0x38 reserved   0x38 magic "ARM\x64"   0x3c PE header offset
//! ```
//! realm-sim needs `image_size` (the whole footprint, `.bss` included, that gets RIPAS RAM and
//! is copied and measured) and `text_offset` (where the Image sits above a 2 MiB boundary).

/// Length of the header.
pub const HEADER_LEN: usize = 64;

/// `ARM\x64`, little-endian at offset 0x38.
pub const MAGIC: u32 = 0x644d_5241;

/// Why an Image was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer than 64 bytes.
    Short,
    /// The magic is not `ARM\x64`.
    Magic,
    /// `image_size` is zero (pre-3.17 kernels; the footprint is unknown) or absurd.
    Size(u64),
    /// The Image is big-endian, or asks for a page size other than 4 KiB.
    Flags(u64),
    /// `text_offset` is not below 2 MiB and 4 KiB aligned.
    TextOffset(u64),
}

/// The header fields realm-sim uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the Image above a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the Image occupies once running, from its first byte.
    pub image_size: u64,
    /// The flags word.
    pub flags: u64,
}

fn le64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Largest `image_size` accepted (the Realm's RAM bounds it further).
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;

/// Parses and checks the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes.len() < HEADER_LEN {
        return Err(ImageError::Short);
    }
    let magic = u32::from_le_bytes([bytes[0x38], bytes[0x39], bytes[0x3a], bytes[0x3b]]);
    if magic != MAGIC {
        return Err(ImageError::Magic);
    }
    let text_offset = le64(bytes, 0x08);
    let image_size = le64(bytes, 0x10);
    let flags = le64(bytes, 0x18);
    if image_size == 0 || image_size > MAX_IMAGE_SIZE {
        return Err(ImageError::Size(image_size));
    }
    // Bit 0: big-endian kernel. Bits 2:1: page size, 0 unspecified or 1 = 4 KiB.
    let page_size = (flags >> 1) & 0b11;
    if flags & 1 != 0 || page_size > 1 {
        return Err(ImageError::Flags(flags));
    }
    if text_offset >= 2 << 20 || !text_offset.is_multiple_of(4096) {
        return Err(ImageError::TextOffset(text_offset));
    }
    Ok(ImageHeader {
        text_offset,
        image_size,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes
    }

    #[test]
    fn parses_moat_style_header() {
        let parsed = parse(&header(0, 0x13_5000, 0xa)).unwrap();
        assert_eq!(parsed.text_offset, 0);
        assert_eq!(parsed.image_size, 0x13_5000);
        assert_eq!(parsed.flags, 0xa);
        // Linux's classic text_offset.
        assert_eq!(
            parse(&header(0x8_0000, 4096, 2)).unwrap().text_offset,
            0x8_0000
        );
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(parse(&[0; 63]), Err(ImageError::Short));
        let mut no_magic = header(0, 4096, 0xa);
        no_magic[0x38] = b'X';
        assert_eq!(parse(&no_magic), Err(ImageError::Magic));
        assert_eq!(parse(&header(0, 0, 0xa)), Err(ImageError::Size(0)));
        assert_eq!(
            parse(&header(0, u64::MAX, 0xa)),
            Err(ImageError::Size(u64::MAX))
        );
        assert_eq!(parse(&header(0, 4096, 0xb)), Err(ImageError::Flags(0xb)));
        // 64 KiB pages.
        assert_eq!(parse(&header(0, 4096, 0x6)), Err(ImageError::Flags(0x6)));
        assert_eq!(
            parse(&header(2 << 20, 4096, 0xa)),
            Err(ImageError::TextOffset(2 << 20))
        );
        assert_eq!(
            parse(&header(0x10, 4096, 0xa)),
            Err(ImageError::TextOffset(0x10))
        );
    }
}

//! The host's device tree: what realm-sim reads from it, and the rewrite into the Realm's view.
//!
//! A minimal flattened-device-tree reader (no allocation) that finds, in one pass over the
//! structure block: the root's `#address-cells`/`#size-cells`, the `/memory` node's `reg`,
//! `/chosen/bootargs` and the first PL011 UART. The rewrites are in place and keep the blob's
//! size, so the measured DTB is exactly the bytes the Realm receives:
//! - `/memory`'s size cell(s) set to the Realm's RAM size N;
//! - realm-sim's own `realm-sim.*` command-line words overwritten with spaces.
//!
//! Everything is bounds-checked: a malformed blob is an error, never a panic.

use crate::options::PREFIX;

/// FDT magic.
pub const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Deepest nesting the reader follows (QEMU's trees are 4 deep).
const MAX_DEPTH: usize = 16;

/// Why a blob was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// Too short, wrong magic, or header offsets outside the blob.
    Header,
    /// The structure block is malformed (bad token, truncated, too deep).
    Structure,
    /// No `/memory` node with a `reg`.
    NoMemory,
    /// More than one memory node or more than one range: realm-sim handles one RAM range.
    MultipleMemoryRanges,
    /// `#address-cells` or `#size-cells` of the root is neither 1 nor 2.
    Cells,
}

/// A span of bytes inside the blob.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Offset from the start of the blob.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The `/memory` node's single range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// First PA.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Where the size cell(s) are in the blob.
    pub size_cells: Span,
}

/// What realm-sim needs from the host's DTB.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DtbInfo {
    /// `totalsize` from the header.
    pub total_size: usize,
    /// The RAM range.
    pub memory: Memory,
    /// `/chosen/bootargs` (without assuming a terminating NUL), if present.
    pub bootargs: Option<Span>,
    /// Base of the first `arm,pl011` directly under the root, if any.
    pub pl011: Option<u64>,
}

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

/// Reads `cells` (1 or 2) big-endian cells at `offset`.
fn read_cells(bytes: &[u8], offset: usize, cells: u32) -> Option<u64> {
    match cells {
        1 => be32(bytes, offset).map(u64::from),
        2 => Some(u64::from(be32(bytes, offset)?) << 32 | u64::from(be32(bytes, offset + 4)?)),
        _ => None,
    }
}

fn align4(value: usize) -> Option<usize> {
    value.checked_next_multiple_of(4)
}

/// Returns the NUL-terminated string at `offset` (without the NUL).
fn c_string(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let tail = bytes.get(offset..)?;
    let len = tail.iter().position(|&byte| byte == 0)?;
    Some(&tail[..len])
}

/// Returns true if the `compatible` string list `value` contains `wanted`.
fn compatible_contains(value: &[u8], wanted: &[u8]) -> bool {
    value.split(|&byte| byte == 0).any(|entry| entry == wanted)
}

/// Returns the blob's `totalsize` if `bytes` starts with an FDT header.
pub fn total_size(bytes: &[u8]) -> Option<usize> {
    if be32(bytes, 0)? != MAGIC {
        return None;
    }
    usize::try_from(be32(bytes, 4)?).ok()
}

/// Per-node facts gathered while its properties go by.
#[derive(Copy, Clone, Default)]
struct NodeFacts {
    is_memory_name: bool,
    is_memory_type: bool,
    is_pl011: bool,
    reg: Option<Span>,
}

/// Parses the blob `bytes` (at least `totalsize` long).
pub fn parse(bytes: &[u8]) -> Result<DtbInfo, DtbError> {
    let total = total_size(bytes).ok_or(DtbError::Header)?;
    if total < HEADER_LEN || total > bytes.len() {
        return Err(DtbError::Header);
    }
    let bytes = &bytes[..total];
    let header = |index: usize| be32(bytes, index * 4).ok_or(DtbError::Header);
    let struct_offset = header(2)? as usize;
    let strings_offset = header(3)? as usize;
    let strings_size = header(8)? as usize;
    let struct_size = header(9)? as usize;
    let struct_end = struct_offset
        .checked_add(struct_size)
        .filter(|&end| end <= total)
        .ok_or(DtbError::Header)?;
    let strings_end = strings_offset
        .checked_add(strings_size)
        .filter(|&end| end <= total)
        .ok_or(DtbError::Header)?;
    let strings = &bytes[strings_offset..strings_end];

    let mut address_cells = 2;
    let mut size_cells = 1;
    let mut depth = 0usize;
    let mut in_chosen = false;
    let mut facts = NodeFacts::default();
    let mut memory: Option<Memory> = None;
    let mut memory_nodes = 0;
    let mut bootargs = None;
    let mut pl011 = None;
    let mut offset = struct_offset;
    loop {
        if offset >= struct_end {
            return Err(DtbError::Structure);
        }
        let token = be32(bytes, offset).ok_or(DtbError::Structure)?;
        offset += 4;
        match token {
            BEGIN_NODE => {
                let name = c_string(bytes, offset).ok_or(DtbError::Structure)?;
                offset = align4(offset + name.len() + 1).ok_or(DtbError::Structure)?;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DtbError::Structure);
                }
                if depth == 2 {
                    let unit = name.split(|&byte| byte == b'@').next().unwrap_or(name);
                    in_chosen = unit == b"chosen";
                    facts = NodeFacts {
                        is_memory_name: unit == b"memory",
                        ..NodeFacts::default()
                    };
                }
            }
            END_NODE => {
                if depth == 0 {
                    return Err(DtbError::Structure);
                }
                if depth == 2 {
                    if facts.is_memory_type || facts.is_memory_name {
                        memory_nodes += 1;
                        if let Some(reg) = facts.reg {
                            memory = Some(memory_range(bytes, reg, address_cells, size_cells)?);
                        }
                    }
                    if facts.is_pl011
                        && pl011.is_none()
                        && let Some(reg) = facts.reg
                    {
                        pl011 = read_cells(bytes, reg.offset, address_cells);
                    }
                    in_chosen = false;
                }
                depth -= 1;
            }
            PROP => {
                let len = be32(bytes, offset).ok_or(DtbError::Structure)? as usize;
                let name_offset = be32(bytes, offset + 4).ok_or(DtbError::Structure)? as usize;
                let value = offset + 8;
                let value_end = value
                    .checked_add(len)
                    .filter(|&end| end <= struct_end)
                    .ok_or(DtbError::Structure)?;
                let name = c_string(strings, name_offset).ok_or(DtbError::Structure)?;
                let span = Span { offset: value, len };
                let data = &bytes[value..value_end];
                match depth {
                    1 if name == b"#address-cells" => {
                        address_cells = be32(data, 0).ok_or(DtbError::Cells)?;
                    }
                    1 if name == b"#size-cells" => {
                        size_cells = be32(data, 0).ok_or(DtbError::Cells)?;
                    }
                    2 => match name {
                        b"reg" => facts.reg = Some(span),
                        b"device_type" => facts.is_memory_type = data == b"memory\0",
                        b"compatible" => facts.is_pl011 = compatible_contains(data, b"arm,pl011"),
                        b"bootargs" if in_chosen => bootargs = Some(span),
                        _ => {}
                    },
                    _ => {}
                }
                offset = align4(value_end).ok_or(DtbError::Structure)?;
            }
            NOP => {}
            END => break,
            _ => return Err(DtbError::Structure),
        }
    }
    if depth != 0 {
        return Err(DtbError::Structure);
    }
    if memory_nodes > 1 {
        return Err(DtbError::MultipleMemoryRanges);
    }
    Ok(DtbInfo {
        total_size: total,
        memory: memory.ok_or(DtbError::NoMemory)?,
        bootargs,
        pl011,
    })
}

fn memory_range(
    bytes: &[u8],
    reg: Span,
    address_cells: u32,
    size_cells: u32,
) -> Result<Memory, DtbError> {
    if !matches!(address_cells, 1 | 2) || !matches!(size_cells, 1 | 2) {
        return Err(DtbError::Cells);
    }
    let entry = 4 * (address_cells + size_cells) as usize;
    if reg.len != entry {
        return Err(if reg.len > entry && reg.len.is_multiple_of(entry) {
            DtbError::MultipleMemoryRanges
        } else {
            DtbError::NoMemory
        });
    }
    let base = read_cells(bytes, reg.offset, address_cells).ok_or(DtbError::NoMemory)?;
    let size_offset = reg.offset + 4 * address_cells as usize;
    let size = read_cells(bytes, size_offset, size_cells).ok_or(DtbError::NoMemory)?;
    Ok(Memory {
        base,
        size,
        size_cells: Span {
            offset: size_offset,
            len: 4 * size_cells as usize,
        },
    })
}

/// Sets `/memory`'s size to `size` in place. Fails (leaving the blob alone) if `size` does not
/// fit the node's size cells or the span lies outside `bytes`.
pub fn set_memory_size(bytes: &mut [u8], memory: &Memory, size: u64) -> Result<(), DtbError> {
    let span = memory.size_cells;
    let target = bytes
        .get_mut(span.offset..span.offset + span.len)
        .ok_or(DtbError::NoMemory)?;
    match span.len {
        4 => {
            let value = u32::try_from(size).map_err(|_| DtbError::Cells)?;
            target.copy_from_slice(&value.to_be_bytes());
        }
        8 => target.copy_from_slice(&size.to_be_bytes()),
        _ => return Err(DtbError::Cells),
    }
    Ok(())
}

/// The bootargs bytes up to the first NUL.
pub fn bootargs<'a>(bytes: &'a [u8], info: &DtbInfo) -> &'a [u8] {
    let Some(span) = info.bootargs else {
        return &[];
    };
    let value = bytes
        .get(span.offset..span.offset + span.len)
        .unwrap_or(&[]);
    let end = value
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(value.len());
    &value[..end]
}

/// Overwrites every `realm-sim.*` word of `/chosen/bootargs` with spaces, in place, so the
/// Realm's kernel never sees realm-sim's keys. Returns the number of words blanked.
pub fn blank_realm_sim_words(bytes: &mut [u8], info: &DtbInfo) -> usize {
    let Some(span) = info.bootargs else {
        return 0;
    };
    let Some(value) = bytes.get_mut(span.offset..span.offset + span.len) else {
        return 0;
    };
    let end = value
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(value.len());
    let line = &mut value[..end];
    let mut blanked = 0;
    let mut start = 0;
    while start < line.len() {
        if line[start].is_ascii_whitespace() {
            start += 1;
            continue;
        }
        let word_end = line[start..]
            .iter()
            .position(u8::is_ascii_whitespace)
            .map_or(line.len(), |len| start + len);
        if line[start..word_end].starts_with(PREFIX) {
            line[start..word_end].fill(b' ');
            blanked += 1;
        }
        start = word_end;
    }
    blanked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-system-aarch64 -M virt,gic-version=3,virtualization=on,dumpdtb=… -cpu cortex-a72
    /// -m 1088M -append "console=x realm-sim.stress-host loglevel=info"`, compacted with dtc.
    const VIRT: &[u8] = include_bytes!("../tests/data/virt-1088m.dtb");

    #[test]
    fn reads_qemu_virt() {
        let info = parse(VIRT).unwrap();
        assert_eq!(info.total_size, VIRT.len());
        assert_eq!(info.memory.base, 0x4000_0000);
        assert_eq!(info.memory.size, 1088 << 20);
        assert_eq!(info.memory.size_cells.len, 8);
        assert_eq!(info.pl011, Some(0x0900_0000));
        assert_eq!(
            bootargs(VIRT, &info),
            b"console=x realm-sim.stress-host loglevel=info"
        );
    }

    #[test]
    fn rewrites_memory_and_bootargs_in_place() {
        let mut blob = VIRT.to_vec();
        let info = parse(&blob).unwrap();
        set_memory_size(&mut blob, &info.memory, 512 << 20).unwrap();
        assert_eq!(blank_realm_sim_words(&mut blob, &info), 1);
        assert_eq!(blob.len(), VIRT.len());
        let again = parse(&blob).unwrap();
        assert_eq!(again.memory.base, 0x4000_0000);
        assert_eq!(again.memory.size, 512 << 20);
        assert_eq!(
            bootargs(&blob, &again),
            b"console=x                       loglevel=info"
        );
        // Only the size cells changed besides the command line: 0x4400_0000 → 0x2000_0000
        // is one byte.
        let differing = blob.iter().zip(VIRT).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1 + "realm-sim.stress-host".len());
    }

    #[test]
    fn size_cells_of_one() {
        let mut blob = VIRT.to_vec();
        let info = parse(&blob).unwrap();
        let one_cell = Memory {
            size_cells: Span {
                offset: info.memory.size_cells.offset + 4,
                len: 4,
            },
            ..info.memory
        };
        assert_eq!(
            set_memory_size(&mut blob, &one_cell, 1 << 32),
            Err(DtbError::Cells)
        );
        set_memory_size(&mut blob, &one_cell, 0x2000_0000).unwrap();
        assert_eq!(parse(&blob).unwrap().memory.size, 0x2000_0000);
    }

    #[test]
    fn refuses_malformed_blobs() {
        assert_eq!(parse(&[]), Err(DtbError::Header));
        assert_eq!(parse(&VIRT[..39]), Err(DtbError::Header));
        // Truncated: totalsize beyond the slice.
        assert_eq!(parse(&VIRT[..VIRT.len() - 1]), Err(DtbError::Header));
        let mut bad_magic = VIRT.to_vec();
        bad_magic[0] = 0;
        assert_eq!(parse(&bad_magic), Err(DtbError::Header));
        // A bad token right at the start of the structure block.
        let mut bad_token = VIRT.to_vec();
        let struct_offset = be32(VIRT, 8).unwrap() as usize;
        bad_token[struct_offset..struct_offset + 4].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse(&bad_token), Err(DtbError::Structure));
        // Every truncation of the structure block is an error, never a panic.
        for cut in (struct_offset..VIRT.len()).step_by(97) {
            let mut blob = VIRT[..cut].to_vec();
            blob[4..8].copy_from_slice(&(cut as u32).to_be_bytes());
            assert!(parse(&blob).is_err());
        }
        // Random corruption never panics.
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut blob = VIRT.to_vec();
            for _ in 0..4 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let index = HEADER_LEN + (seed as usize >> 8) % (blob.len() - HEADER_LEN);
                blob[index] = (seed >> 3) as u8;
            }
            let _ = parse(&blob);
        }
    }
}

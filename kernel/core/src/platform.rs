//! Platform discovery: everything the kernel needs from the boot device tree, read once into a
//! plain value.
//!
//! The DTB comes from the host (in a Realm, from an untrusted VMM), so nothing here trusts it:
//! malformed or oversized input gives a [`PlatformError`], never a panic, and every list has a
//! fixed bound. Addresses are translated through each bus's `ranges` so a node under a
//! `simple-bus` is reported at its CPU physical address.

use flat_device_tree::Fdt;
use flat_device_tree::node::FdtNode;
use heapless::Vec;

use crate::range::PhysRange;

/// At most this many `/memory` banks are recorded.
pub const MAX_MEMORY_BANKS: usize = 8;
/// At most this many reserved ranges (`/memreserve/` plus `/reserved-memory`) are recorded.
pub const MAX_RESERVED: usize = 16;
/// At most this many virtio-mmio slots are recorded (QEMU's virt machine has 32).
pub const MAX_VIRTIO_SLOTS: usize = 32;
/// Buses deeper than this are not searched (QEMU and real boards use one or two levels).
const MAX_BUS_DEPTH: usize = 4;

/// Why the device tree could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The blob is not a valid flattened device tree.
    BadDeviceTree,
    /// There is no usable `/memory` node.
    NoMemory,
    /// More memory banks, reserved ranges or virtio slots than the fixed bounds allow.
    TooMany(&'static str),
    /// A property has the wrong size or shape.
    BadProperty(&'static str),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadDeviceTree => write!(f, "not a valid flattened device tree"),
            Self::NoMemory => write!(f, "no usable /memory node"),
            Self::TooMany(what) => write!(f, "too many {what}"),
            Self::BadProperty(what) => write!(f, "malformed property {what}"),
        }
    }
}

/// Which UART programming model the console uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011.
    Pl011,
    /// 16550-compatible; registers are `1 << reg_shift` bytes apart, accessed `reg_io_width`
    /// bytes wide.
    Ns16550 {
        /// log2 of the register stride.
        reg_shift: u32,
        /// Access width in bytes (1 or 4).
        reg_io_width: u32,
    },
}

/// The console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Programming model.
    pub kind: UartKind,
    /// Register block.
    pub regs: PhysRange,
    /// Input clock, when the tree gives it.
    pub clock_hz: Option<u32>,
    /// Its interrupt (the first of `interrupts`), when the tree gives one: the kernel takes
    /// console input from it.
    pub interrupt: Option<Interrupt>,
}

/// How to reach firmware (PSCI): `hvc` or `smc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// Hypervisor call: the firmware is an EL2 hypervisor.
    Hvc,
    /// Secure monitor call: the firmware is at EL3 (or, for a Realm, the RMM behind EL2).
    Smc,
}

/// A GICv3 interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// Distributor registers.
    pub distributor: PhysRange,
    /// The first redistributor region.
    pub redistributors: PhysRange,
}

/// An interrupt as the GIC numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// GIC INTID: 16–31 for PPIs, 32 and up for SPIs.
    pub intid: u32,
    /// Edge-triggered (`true`) or level-sensitive.
    pub edge: bool,
}

/// The architected generic timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// EL1 physical timer PPI.
    pub physical: Interrupt,
    /// EL1 virtual timer PPI.
    pub virtual_timer: Interrupt,
    /// `clock-frequency` when the tree overrides CNTFRQ_EL0 (firmware that did not set it).
    pub frequency_hz: Option<u32>,
}

/// One virtio-mmio transport slot (whether a device sits behind it is read from its registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioSlot {
    /// Register block.
    pub regs: PhysRange,
    /// Its interrupt.
    pub interrupt: Interrupt,
}

/// Any other device the tree describes with a `compatible` and a `reg`, so the manifest can
/// name it (`dt:<compatible>:<instance>`) for a driver task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericDevice<'a> {
    /// The node's first `compatible` string.
    pub compatible: &'a str,
    /// Its first register block.
    pub regs: PhysRange,
    /// Its first interrupt, if it has one.
    pub interrupt: Option<Interrupt>,
}

/// At most this many generic devices are recorded.
pub const MAX_GENERIC_DEVICES: usize = 64;

/// What the kernel learned from the boot device tree.
#[derive(Clone, Debug, Default)]
pub struct Platform<'a> {
    /// RAM banks from `/memory` nodes, sorted by address.
    pub memory: Vec<PhysRange, MAX_MEMORY_BANKS>,
    /// Ranges the kernel must not allocate: `/memreserve/` entries and `/reserved-memory`
    /// children with a `reg`.
    pub reserved: Vec<PhysRange, MAX_RESERVED>,
    /// `/chosen/bootargs`, or empty.
    pub bootargs: &'a str,
    /// `/chosen/stdout-path` as written (alias and options included), when present.
    pub stdout_path: Option<&'a str>,
    /// The console UART: the `stdout-path` node, or else the first PL011 or 16550 found.
    pub uart: Option<Uart>,
    /// The PSCI conduit, when a `/psci` node names one.
    pub psci: Option<Conduit>,
    /// The GICv3, when present.
    pub gic: Option<Gic>,
    /// The generic timer, when present.
    pub timer: Option<Timer>,
    /// Every virtio-mmio slot, in address order.
    pub virtio: Vec<VirtioSlot, MAX_VIRTIO_SLOTS>,
    /// Every other node with a `compatible` and a `reg` (in tree order), for manifest names.
    pub devices: Vec<GenericDevice<'a>, MAX_GENERIC_DEVICES>,
    /// `/chosen/rng-seed`: bytes the boot loader offers as entropy (host-controlled in a
    /// Realm), empty if absent.
    pub rng_seed: &'a [u8],
    /// Size of the blob as its header states.
    pub dtb_size: usize,
}

impl<'a> Platform<'a> {
    /// Reads everything the kernel needs from a flattened device tree.
    pub fn parse(dtb: &'a [u8]) -> Result<Self, PlatformError> {
        check_header(dtb)?;
        let fdt = Fdt::new(dtb).map_err(|_| PlatformError::BadDeviceTree)?;
        let mut platform = Platform {
            dtb_size: fdt.total_size(),
            ..Platform::default()
        };

        for reservation in fdt.memory_reservations() {
            let range =
                PhysRange::from_base_size(reservation.address() as u64, reservation.size() as u64)
                    .ok_or(PlatformError::BadProperty("/memreserve/"))?;
            if !range.is_empty() {
                platform
                    .reserved
                    .push(range)
                    .map_err(|_| PlatformError::TooMany("reserved ranges"))?;
            }
        }

        if let Ok(chosen) = fdt.chosen() {
            platform.bootargs = chosen.bootargs().unwrap_or("").trim_end_matches('\0');
            platform.stdout_path = fdt
                .find_node("/chosen")
                .and_then(|n| n.property("stdout-path"))
                .and_then(|p| p.as_str())
                .map(|s| s.trim_end_matches('\0'));
            platform.rng_seed = fdt
                .find_node("/chosen")
                .and_then(|n| n.property("rng-seed"))
                .map(|p| p.value)
                .unwrap_or(&[]);
        }
        let stdout_node_name = fdt
            .chosen()
            .ok()
            .and_then(|c| c.stdout())
            .map(|s| s.node().name);

        let root = fdt.find_node("/").ok_or(PlatformError::BadDeviceTree)?;
        let mut console_candidate: Option<Uart> = None;
        walk(root, &[], 0, &mut |node, translate| {
            visit(
                &fdt,
                node,
                translate,
                stdout_node_name,
                &mut platform,
                &mut console_candidate,
            )
        })?;
        if platform.uart.is_none() {
            platform.uart = console_candidate;
        }

        if platform.memory.is_empty() {
            return Err(PlatformError::NoMemory);
        }
        platform.memory.sort_unstable_by_key(|r| r.start);
        platform.reserved.sort_unstable_by_key(|r| r.start);
        platform.virtio.sort_unstable_by_key(|s| s.regs.start);
        Ok(platform)
    }
}

/// Checks the FDT header's offsets and sizes against the blob before the parser follows them:
/// `flat_device_tree` slices by these fields and would panic on a hostile header.
fn check_header(dtb: &[u8]) -> Result<(), PlatformError> {
    let field = |index: usize| -> Result<usize, PlatformError> {
        let at = index * 4;
        let bytes = dtb.get(at..at + 4).ok_or(PlatformError::BadDeviceTree)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    const HEADER_LEN: usize = 40;
    if dtb.len() < HEADER_LEN || field(0)? != 0xd00d_feed {
        return Err(PlatformError::BadDeviceTree);
    }
    let total = field(1)?;
    let (off_struct, off_strings, off_rsvmap) = (field(2)?, field(3)?, field(4)?);
    let (size_strings, size_struct) = (field(8)?, field(9)?);
    let version = field(5)?;
    let within = |offset: usize, size: usize| {
        offset >= HEADER_LEN && offset.checked_add(size).is_some_and(|end| end <= total)
    };
    if total > dtb.len()
        || version < 17
        || !within(off_struct, size_struct)
        || !within(off_strings, size_strings)
        || !within(off_rsvmap, 16)
        || !off_rsvmap.is_multiple_of(8)
        || !off_struct.is_multiple_of(4)
    {
        return Err(PlatformError::BadDeviceTree);
    }
    // The reservation map is a list of (address, size) pairs ending with (0, 0) inside the blob.
    let mut at = off_rsvmap;
    loop {
        let entry = dtb
            .get(at..at + 16)
            .filter(|_| at + 16 <= total)
            .ok_or(PlatformError::BadDeviceTree)?;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
        at += 16;
    }
    Ok(())
}

/// One bus translation window: child address range → parent address.
#[derive(Clone, Copy, Debug)]
struct Window {
    child: u64,
    parent: u64,
    size: u64,
}

/// Translates a bus address to a CPU physical address through the chain of windows, innermost
/// first. An empty chain (or an identity `ranges;`) means no translation.
fn translate(chain: &[Vec<Window, 8>], mut address: u64) -> Option<u64> {
    for windows in chain.iter().rev() {
        if windows.is_empty() {
            continue;
        }
        let window = windows
            .iter()
            .find(|w| address >= w.child && address - w.child < w.size)?;
        address = window.parent.checked_add(address - window.child)?;
    }
    Some(address)
}

type Visitor<'v, 'b, 'a> =
    dyn FnMut(FdtNode<'b, 'a>, &dyn Fn(u64) -> Option<u64>) -> Result<(), PlatformError> + 'v;

/// Visits every node reachable through buses that have a `ranges` property.
fn walk<'b, 'a>(
    node: FdtNode<'b, 'a>,
    chain: &[Vec<Window, 8>],
    depth: usize,
    visitor: &mut Visitor<'_, 'b, 'a>,
) -> Result<(), PlatformError> {
    for child in node.children() {
        visitor(child, &|a| translate(chain, a))?;
        if depth < MAX_BUS_DEPTH
            && child.property("ranges").is_some()
            && child.name != "reserved-memory"
        {
            let mut windows: Vec<Window, 8> = Vec::new();
            for range in child.ranges() {
                windows
                    .push(Window {
                        child: range.child_bus_address as u64,
                        parent: range.parent_bus_address as u64,
                        size: range.size as u64,
                    })
                    .map_err(|_| PlatformError::TooMany("bus ranges"))?;
            }
            let mut inner: Vec<Vec<Window, 8>, MAX_BUS_DEPTH> = Vec::new();
            for level in chain {
                let _ = inner.push(level.clone());
            }
            inner
                .push(windows)
                .map_err(|_| PlatformError::TooMany("nested buses"))?;
            walk(child, &inner, depth + 1, visitor)?;
        }
    }
    Ok(())
}

fn is_compatible(node: &FdtNode<'_, '_>, names: &[&str]) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|have| names.contains(&have)))
}

fn u32_property(node: &FdtNode<'_, '_>, name: &'static str) -> Result<Option<u32>, PlatformError> {
    match node.property(name) {
        None => Ok(None),
        Some(p) => {
            let bytes: [u8; 4] = p
                .value
                .try_into()
                .map_err(|_| PlatformError::BadProperty(name))?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
    }
}

/// The first `reg` entry, translated to a CPU physical range.
fn first_reg(
    node: &FdtNode<'_, '_>,
    translate: &dyn Fn(u64) -> Option<u64>,
    what: &'static str,
) -> Result<Option<PhysRange>, PlatformError> {
    regs(node, translate, what).map(|mut it| it.next())
}

/// Every `reg` entry, translated. Entries with no size are skipped (not memory-mapped).
fn regs<'x>(
    node: &FdtNode<'_, 'x>,
    translate: &'x dyn Fn(u64) -> Option<u64>,
    what: &'static str,
) -> Result<impl Iterator<Item = PhysRange> + 'x, PlatformError> {
    let mut out: Vec<PhysRange, MAX_MEMORY_BANKS> = Vec::new();
    for reg in node.reg() {
        let Some(size) = reg.size else { continue };
        let start =
            translate(reg.starting_address as u64).ok_or(PlatformError::BadProperty(what))?;
        let range = PhysRange::from_base_size(start, size as u64)
            .ok_or(PlatformError::BadProperty(what))?;
        out.push(range).map_err(|_| PlatformError::TooMany(what))?;
    }
    Ok(out.into_iter())
}

/// Decodes the GIC three-cell interrupt specifiers of a node.
fn interrupts(node: &FdtNode<'_, '_>) -> Result<Vec<Interrupt, 8>, PlatformError> {
    let mut out = Vec::new();
    let Some(prop) = node.property("interrupts") else {
        return Ok(out);
    };
    if prop.value.len() % 12 != 0 {
        return Err(PlatformError::BadProperty("interrupts"));
    }
    for spec in prop.value.chunks_exact(12) {
        let cell = |i: usize| {
            u32::from_be_bytes([
                spec[4 * i],
                spec[4 * i + 1],
                spec[4 * i + 2],
                spec[4 * i + 3],
            ])
        };
        let (kind, number, flags) = (cell(0), cell(1), cell(2));
        let intid = match kind {
            0 if number < 988 => 32 + number,
            1 if number < 16 => 16 + number,
            _ => return Err(PlatformError::BadProperty("interrupts")),
        };
        // Trigger flags: 1 = rising edge, 2 = falling edge, 4 = level high, 8 = level low.
        let edge = flags & 0x3 != 0;
        out.push(Interrupt { intid, edge })
            .map_err(|_| PlatformError::TooMany("interrupts"))?;
    }
    Ok(out)
}

fn visit<'a>(
    fdt: &Fdt<'a>,
    node: FdtNode<'_, 'a>,
    translate: &dyn Fn(u64) -> Option<u64>,
    stdout_node_name: Option<&str>,
    platform: &mut Platform<'a>,
    console_candidate: &mut Option<Uart>,
) -> Result<(), PlatformError> {
    let _ = fdt;
    let device_type = node.property("device_type").and_then(|p| p.as_str());
    if device_type.map(|s| s.trim_end_matches('\0')) == Some("memory") {
        for range in regs(&node, translate, "/memory reg")? {
            if !range.is_empty() {
                platform
                    .memory
                    .push(range)
                    .map_err(|_| PlatformError::TooMany("memory banks"))?;
            }
        }
        return Ok(());
    }
    if node.name == "reserved-memory" {
        for child in node.children() {
            for range in regs(&child, translate, "/reserved-memory reg")? {
                platform
                    .reserved
                    .push(range)
                    .map_err(|_| PlatformError::TooMany("reserved ranges"))?;
            }
        }
        return Ok(());
    }
    if node.name == "psci" || is_compatible(&node, &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"]) {
        platform.psci = match node
            .property("method")
            .and_then(|p| p.as_str())
            .map(|s| s.trim_end_matches('\0'))
        {
            Some("hvc") => Some(Conduit::Hvc),
            Some("smc") => Some(Conduit::Smc),
            _ => return Err(PlatformError::BadProperty("/psci method")),
        };
        return Ok(());
    }
    if is_compatible(&node, &["arm,gic-v3"]) {
        let mut it = regs(&node, translate, "GIC reg")?;
        let distributor = it.next().ok_or(PlatformError::BadProperty("GIC reg"))?;
        let redistributors = it.next().ok_or(PlatformError::BadProperty("GIC reg"))?;
        platform.gic = Some(Gic {
            distributor,
            redistributors,
        });
        return Ok(());
    }
    if is_compatible(&node, &["arm,armv8-timer", "arm,armv7-timer"]) {
        let irqs = interrupts(&node)?;
        // Order fixed by the binding: secure phys, non-secure phys, virtual, hypervisor.
        let (Some(physical), Some(virtual_timer)) = (irqs.get(1), irqs.get(2)) else {
            return Err(PlatformError::BadProperty("timer interrupts"));
        };
        platform.timer = Some(Timer {
            physical: *physical,
            virtual_timer: *virtual_timer,
            frequency_hz: u32_property(&node, "clock-frequency")?,
        });
        return Ok(());
    }
    if is_compatible(&node, &["virtio,mmio"]) {
        let regs = first_reg(&node, translate, "virtio-mmio reg")?
            .ok_or(PlatformError::BadProperty("virtio-mmio reg"))?;
        let interrupt = *interrupts(&node)?
            .first()
            .ok_or(PlatformError::BadProperty("virtio-mmio interrupts"))?;
        platform
            .virtio
            .push(VirtioSlot { regs, interrupt })
            .map_err(|_| PlatformError::TooMany("virtio-mmio slots"))?;
        return Ok(());
    }
    record_generic(&node, translate, platform)?;
    let kind = if is_compatible(&node, &["arm,pl011"]) {
        Some(UartKind::Pl011)
    } else if is_compatible(&node, &["ns16550a", "ns16550", "snps,dw-apb-uart"]) {
        Some(UartKind::Ns16550 {
            reg_shift: u32_property(&node, "reg-shift")?.unwrap_or(0),
            reg_io_width: u32_property(&node, "reg-io-width")?.unwrap_or(1),
        })
    } else {
        None
    };
    if let Some(kind) = kind {
        if let UartKind::Ns16550 {
            reg_shift,
            reg_io_width,
        } = kind
            && (reg_shift > 4 || !matches!(reg_io_width, 1 | 4))
        {
            return Err(PlatformError::BadProperty("16550 reg-shift/reg-io-width"));
        }
        let Some(regs) = first_reg(&node, translate, "UART reg")? else {
            return Ok(());
        };
        let uart = Uart {
            kind,
            regs,
            clock_hz: u32_property(&node, "clock-frequency")?,
            interrupt: interrupts(&node)
                .ok()
                .and_then(|irqs| irqs.first().copied()),
        };
        if stdout_node_name == Some(node.name) {
            platform.uart = Some(uart);
        } else if console_candidate.is_none() {
            *console_candidate = Some(uart);
        }
    }
    Ok(())
}

/// Records a node as a generic device if it has a `compatible` and a memory-mapped `reg`.
fn record_generic<'a>(
    node: &FdtNode<'_, 'a>,
    translate: &dyn Fn(u64) -> Option<u64>,
    platform: &mut Platform<'a>,
) -> Result<(), PlatformError> {
    let Some(compatible) = node.compatible().and_then(|c| c.first()) else {
        return Ok(());
    };
    let Ok(Some(regs)) = first_reg(node, translate, "device reg") else {
        return Ok(());
    };
    let interrupt = interrupts(node).ok().and_then(|irqs| irqs.first().copied());
    // Devices beyond the bound are not nameable; the rest of the tree still parses.
    let _ = platform.devices.push(GenericDevice {
        compatible,
        regs,
        interrupt,
    });
    Ok(())
}

/// Names a VirtIO device ID (VirtIO 1.2 section 5).
pub fn virtio_device_name(device_id: u32) -> &'static str {
    match device_id {
        0 => "none",
        1 => "network",
        2 => "block",
        3 => "console",
        4 => "entropy",
        5 => "balloon",
        8 => "scsi",
        9 => "9p",
        16 => "gpu",
        18 => "input",
        19 => "vsock",
        20 => "crypto",
        26 => "fs",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT_EL1: &[u8] = include_bytes!("../tests/data/virt-el1.dtb");
    const VIRT_EL2: &[u8] = include_bytes!("../tests/data/virt-el2.dtb");
    const CUSTOM: &[u8] = include_bytes!("../tests/data/custom.dtb");

    #[test]
    fn qemu_virt_plain() {
        let p = Platform::parse(VIRT_EL1).unwrap();
        assert_eq!(
            p.memory.as_slice(),
            &[PhysRange::new(0x4000_0000, 0x6000_0000)]
        );
        assert!(p.reserved.is_empty());
        assert_eq!(p.psci, Some(Conduit::Hvc));
        assert_eq!(p.stdout_path, Some("/pl011@9000000"));
        let uart = p.uart.unwrap();
        assert_eq!(uart.kind, UartKind::Pl011);
        assert_eq!(uart.regs, PhysRange::new(0x0900_0000, 0x0900_1000));
        assert_eq!(
            uart.interrupt,
            Some(Interrupt {
                intid: 33,
                edge: false
            })
        );
        let gic = p.gic.unwrap();
        assert_eq!(gic.distributor.start, 0x0800_0000);
        assert_eq!(gic.redistributors.start, 0x080a_0000);
        let timer = p.timer.unwrap();
        assert_eq!(
            timer.virtual_timer,
            Interrupt {
                intid: 27,
                edge: false
            }
        );
        assert_eq!(timer.physical.intid, 30);
        assert_eq!(p.virtio.len(), 32);
        assert_eq!(p.virtio[0].regs, PhysRange::new(0x0a00_0000, 0x0a00_0200));
        assert_eq!(
            p.virtio[0].interrupt,
            Interrupt {
                intid: 48,
                edge: true
            }
        );
        assert_eq!(p.virtio[31].regs.start, 0x0a00_3e00);
        assert_eq!(p.virtio[31].interrupt.intid, 79);
        assert_eq!(p.dtb_size, VIRT_EL1.len());
        assert_eq!(p.rng_seed.len(), 32);
        let rtc = p
            .devices
            .iter()
            .find(|d| d.compatible == "arm,pl031")
            .unwrap();
        assert_eq!(rtc.regs, PhysRange::new(0x0901_0000, 0x0901_1000));
        assert_eq!(
            rtc.interrupt,
            Some(Interrupt {
                intid: 34,
                edge: false
            })
        );
    }

    #[test]
    fn qemu_virt_el2_uses_smc() {
        let p = Platform::parse(VIRT_EL2).unwrap();
        assert_eq!(p.psci, Some(Conduit::Smc));
    }

    #[test]
    fn custom_board_ns16550_reserved_and_bus_translation() {
        let p = Platform::parse(CUSTOM).unwrap();
        assert_eq!(
            p.memory.as_slice(),
            &[
                PhysRange::new(0x8000_0000, 0x9000_0000),
                PhysRange::new(0x8_8000_0000, 0x8_8400_0000)
            ]
        );
        assert_eq!(
            p.reserved.as_slice(),
            &[
                PhysRange::new(0x4800_0000, 0x4801_0000),
                PhysRange::new(0x8f00_0000, 0x9000_0000)
            ]
        );
        assert_eq!(p.bootargs, "loglevel=debug fault=undef");
        assert_eq!(p.stdout_path, Some("serial0:115200n8"));
        let uart = p.uart.unwrap();
        assert_eq!(
            uart.kind,
            UartKind::Ns16550 {
                reg_shift: 2,
                reg_io_width: 4
            }
        );
        // /soc maps child 0 to parent 0 (identity here), so the address is unchanged.
        assert_eq!(uart.regs, PhysRange::new(0x1c00_0000, 0x1c00_0100));
        assert_eq!(uart.clock_hz, Some(24_000_000));
        assert_eq!(p.psci, Some(Conduit::Smc));
        assert_eq!(p.timer.unwrap().frequency_hz, Some(100_000_000));
        assert_eq!(p.virtio.len(), 1);
        assert_eq!(
            p.virtio[0].interrupt,
            Interrupt {
                intid: 74,
                edge: true
            }
        );
    }

    #[test]
    fn bus_translation_applies_offsets() {
        let mut windows: Vec<Window, 8> = Vec::new();
        windows
            .push(Window {
                child: 0,
                parent: 0x1_0000_0000,
                size: 0x1000,
            })
            .unwrap();
        let chain = [windows];
        assert_eq!(translate(&chain, 0x10), Some(0x1_0000_0010));
        assert_eq!(translate(&chain, 0x1000), None);
        assert_eq!(translate(&[], 0x1234), Some(0x1234));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            Platform::parse(&[]).unwrap_err(),
            PlatformError::BadDeviceTree
        );
        assert_eq!(
            Platform::parse(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0]).unwrap_err(),
            PlatformError::BadDeviceTree
        );
        // Every truncation of a real tree is either parsed or rejected, never a panic.
        for len in (0..VIRT_EL1.len()).step_by(97) {
            let _ = Platform::parse(&VIRT_EL1[..len]);
        }
    }

    proptest::proptest! {
        #[test]
        fn corrupted_trees_never_panic(flips in proptest::collection::vec((0usize..7556, proptest::num::u8::ANY), 1..16)) {
            let mut blob = VIRT_EL1.to_vec();
            for (at, value) in flips {
                let at = at % blob.len();
                blob[at] = value;
            }
            let _ = Platform::parse(&blob);
        }

        #[test]
        fn corrupted_headers_never_panic(flips in proptest::collection::vec((0usize..40, proptest::num::u8::ANY), 1..6)) {
            // The header's offsets and sizes steer the parser: a hostile host can set any of them.
            let mut blob = VIRT_EL1.to_vec();
            for (at, value) in flips {
                blob[at] = value;
            }
            let _ = Platform::parse(&blob);
        }
    }
}

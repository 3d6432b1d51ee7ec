//! The Moat microkernel.
//!
//! Boot path: `boot.S` (Linux arm64 Image header; drops from EL2 to EL1 when entered at EL2;
//! boot page tables; MMU on; jump to the upper half) → [`kmain`]: read the device tree, build
//! the kernel's own tables, bring up the console, memory, interrupts and the timer.
//! Pure logic (device tree, command line, frame allocation, fault decoding) lives in
//! `moat-kernel-core`, where it is tested on the host.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod console;
mod devices;
mod entropy;
mod irq;
mod memory;
mod mmu;
mod power;
mod realm;
mod sys;
mod task;
mod trap;
mod uspace;

use aarch64_cpu::registers::{CNTVCT_EL0, DAIF, Readable, VBAR_EL1, Writeable};
use moat_kernel_core::cmdline::{CommandLine, DmaAddressForm, FaultHook};
use moat_kernel_core::layout::{DEVICE_BASE, DEVICE_WINDOW, DTB_WINDOW, MAX_DTB_SIZE};
use moat_kernel_core::platform::{Conduit, Platform, UartKind};
use moat_kernel_core::range::PhysRange;

use crate::devices::SlotProbe;

core::arch::global_asm!(include_str!("boot.S"));
core::arch::global_asm!(include_str!("vectors.S"));
core::arch::global_asm!(include_str!("switch.S"));
core::arch::global_asm!(include_str!("mem.S"));

/// The system archive xtask packed in (empty when built without xtask).
static SYSTEM_ARCHIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/system.bin"));

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Size of the shareable region (at most an eighth of RAM): the only memory the DMA server may
/// make shared, mapped page by page in the linear map so pages can change state one by one.
const SHAREABLE_SIZE: u64 = 32 << 20;
const SHAREABLE_ALIGN: u64 = 2 << 20;
/// Timer ticks the boot self-check waits for unless `ticks=N` says otherwise.
const DEFAULT_SELF_CHECK_TICKS: u32 = 5;

/// The DTB as the boot stub mapped it: two 2 MiB blocks from the DTB's 2 MiB block on.
fn device_tree(dtb_pa: u64) -> Option<&'static [u8]> {
    const BLOCK: usize = 2 << 20;
    let offset = dtb_pa as usize & (BLOCK - 1);
    let va = DTB_WINDOW + offset;
    // SAFETY: the boot stub mapped [DTB_WINDOW, DTB_WINDOW + 2 * BLOCK) read-only, so the
    // 8-byte header read is inside the window (offset < BLOCK).
    let header = unsafe { core::slice::from_raw_parts(va as *const u8, 8) };
    if header[0..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return None;
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(40..=MAX_DTB_SIZE).contains(&size) || offset + size > 2 * BLOCK {
        return None;
    }
    // SAFETY: checked just above that [va, va + size) lies inside the read-only window; the
    // DTB is never written while the kernel runs.
    Some(unsafe { core::slice::from_raw_parts(va as *const u8, size) })
}

/// Stops early boot before a console exists: nothing can be printed, so end as the platform
/// allows (PSCI if the device tree named it, else wait forever).
fn early_failure() -> ! {
    power::exit(1)
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// Rust entry point, called by `boot.S` in the upper half with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn kmain(dtb_pa: u64, entry_el: u64, phys_base: u64) -> ! {
    let Some(dtb) = device_tree(dtb_pa) else {
        early_failure()
    };
    let Ok(platform) = Platform::parse(dtb) else {
        early_failure()
    };
    let cmdline = CommandLine::parse(platform.bootargs);
    power::init(platform.psci, cmdline.semihosting);

    // Realm detection comes before any device is touched: in a Realm, host-emulated devices are
    // reachable only at their unprotected alias (DESIGN.md section 6).
    let dma_alias = cmdline.dma_address != Some(DmaAddressForm::Canonical);
    let Ok(realm) = realm::detect(platform.psci == Some(Conduit::Smc), phys_base, dma_alias) else {
        early_failure()
    };
    let mut realm_setup = None;
    if realm.is_some() {
        // The command line comes from the host: measure it before acting on it. Then make all
        // of RAM RIPAS RAM before any of it is used.
        let Ok(digest) = realm::measure(platform.bootargs.as_bytes()) else {
            early_failure()
        };
        let mut calls = 0;
        for bank in &platform.memory {
            match realm::set_ram(*bank, false) {
                Ok(made) => calls += made,
                Err(_) => early_failure(),
            }
        }
        realm_setup = Some((digest, calls));
    }

    let layout = mmu::ImageLayout::get();
    let image_pa = PhysRange::new(phys_base, phys_base + layout.size() as u64);
    let dtb_range = PhysRange::new(dtb_pa, dtb_pa + dtb.len() as u64);
    let mut holes: heapless::Vec<PhysRange, 24> = platform.reserved.iter().copied().collect();
    let _ = holes.push(image_pa);
    let _ = holes.push(dtb_range);
    let Ok(usable) = moat_kernel_core::range::subtract::<32>(&platform.memory, &holes) else {
        early_failure()
    };
    let total: u64 = usable.iter().map(PhysRange::size).sum();
    let shareable_size = SHAREABLE_SIZE.min(total / 8) & !(SHAREABLE_ALIGN - 1);
    let Some(shareable) =
        moat_kernel_core::range::carve_top(&usable, shareable_size, SHAREABLE_ALIGN)
    else {
        early_failure()
    };

    let Ok(image) = mmu::init(phys_base, dtb_pa, &platform.memory, shareable) else {
        early_failure()
    };
    if let Some(uart) = platform.uart
        && let Ok(va) = mmu::map_device(uart.regs)
    {
        // SAFETY: the UART's registers were just mapped as Device memory at `va`, and the
        // kernel is their only user.
        console::init(unsafe { console::Uart::new(uart.kind, va) });
    }

    let dropped = if entry_el == 2 {
        ", dropped to EL1"
    } else {
        ""
    };
    kprintln!(
        "Moat {VERSION} - capability microkernel for Arm CCA Realms, entered at EL{entry_el}{dropped}"
    );
    kprintln!(
        "  image: {} KiB at phys {phys_base:#x} (text RX, rodata R, data/bss RW+XN, stack guard pages)",
        image.size() / 1024
    );
    kprintln!("  command line: \"{}\"", platform.bootargs);
    for warning in &cmdline.warnings {
        kprintln!("  command line: {warning}");
    }
    report_realm(realm, realm_setup, &platform);

    kprintln!("memory map:");
    for bank in &platform.memory {
        kprintln!("  RAM       {bank}  {} MiB", mib(bank.size()));
    }
    for reserved in &platform.reserved {
        kprintln!("  reserved  {reserved}  {} KiB", reserved.size() / 1024);
    }
    kprintln!("  kernel    {image_pa}  {} KiB", image_pa.size() / 1024);
    kprintln!("  dtb       {dtb_range}  {} bytes", dtb_range.size());
    kprintln!(
        "  shareable {shareable}  {} MiB (the only memory the DMA server may share)",
        mib(shareable.size())
    );
    let report = match memory::init(&platform.memory, &holes, shareable) {
        Ok(report) => report,
        Err(error) => panic!("memory setup failed: {error:?}"),
    };
    for usable in &report.usable {
        kprintln!("  usable    {usable}  {} MiB", mib(usable.size()));
    }
    kprintln!(
        "  frames: {} free of {} ({} MiB); bitmap {} at {}; heap {} KiB at {}",
        report.free_frames,
        report.total_frames,
        mib(report.total_frames as u64 * 4096),
        report.bitmap.size(),
        report.bitmap,
        report.heap.size() / 1024,
        report.heap
    );
    heap_self_check();
    let rndr = entropy::init(platform.rng_seed);
    kprintln!(
        "  entropy: {}DTB rng-seed ({} bytes) and timer jitter{}",
        if rndr { "RNDR, " } else { "" },
        platform.rng_seed.len(),
        if rndr {
            ""
        } else {
            " (no RNDR: in a Realm all of these are host-controlled)"
        }
    );

    kprintln!("devices:");
    if let Some(uart) = platform.uart {
        let kind = match uart.kind {
            UartKind::Pl011 => "PL011",
            UartKind::Ns16550 { .. } => "16550",
        };
        kprintln!(
            "  console   {kind} at {:#x} (stdout-path {:?})",
            uart.regs.start,
            platform.stdout_path.unwrap_or("none")
        );
    }
    match platform.psci {
        Some(Conduit::Hvc) => kprintln!("  psci      via hvc"),
        Some(Conduit::Smc) => kprintln!("  psci      via smc"),
        None => kprintln!("  psci      none: power-off is not available"),
    }
    let (Some(gic), Some(timer)) = (platform.gic, platform.timer) else {
        panic!("the device tree names no GICv3 or no generic timer");
    };
    kprintln!(
        "  gic       GICv3, distributor {}, redistributors {}",
        gic.distributor,
        gic.redistributors
    );
    let frequency = match irq::init(&gic, &timer) {
        Ok(frequency) => frequency,
        Err(error) => panic!("interrupt setup failed: {error:?}"),
    };
    kprintln!(
        "  timer     EL1 virtual timer, INTID {}, {frequency} Hz, tick {} Hz",
        timer.virtual_timer.intid,
        irq::TICK_HZ
    );
    let mut empty = 0;
    for slot in &platform.virtio {
        match devices::probe(slot) {
            SlotProbe::Device {
                device_id,
                version,
                vendor,
            } => {
                let transport = if version == 2 { "modern" } else { "legacy" };
                kprintln!(
                    "  virtio-mmio@{:#x} irq {}: {} (device id {device_id}, {transport} v{version}, vendor {vendor:#x})",
                    slot.regs.start,
                    slot.interrupt.intid,
                    devices::name(device_id)
                );
            }
            SlotProbe::Empty => empty += 1,
            SlotProbe::BadMagic(magic) => {
                kprintln!(
                    "  virtio-mmio@{:#x}: bad magic {magic:#x}, ignored",
                    slot.regs.start
                )
            }
            SlotProbe::Unmapped => kprintln!(
                "  virtio-mmio@{:#x}: cannot be mapped, ignored",
                slot.regs.start
            ),
        }
    }
    kprintln!(
        "  virtio-mmio: {} slots, {empty} empty",
        platform.virtio.len()
    );
    kprintln!(
        "  exceptions: vectors at {:#x}; kernel page tables: {} pages",
        VBAR_EL1.get(),
        mmu::tables_used()
    );

    if let Some(hook) = cmdline.fault {
        // The command line comes from the host: in a Realm it may not steer the kernel into a
        // test path unless the image was built for tests.
        if realm.is_some() && !cfg!(feature = "test-hooks") {
            kprintln!(
                "test hook: fault={hook:?} refused: in a Realm, test hooks need an image built for tests"
            );
        } else {
            kprintln!("test hook: fault={hook:?}");
            trigger_fault(hook);
        }
    }

    let wanted = u64::from(cmdline.ticks.unwrap_or(DEFAULT_SELF_CHECK_TICKS));
    let start = CNTVCT_EL0.get();
    // Allow ten times the expected time before declaring the timer broken.
    let deadline = start + frequency / irq::TICK_HZ * wanted * 10 + frequency;
    DAIF.write(DAIF::I::Unmasked);
    while irq::ticks() < wanted {
        if CNTVCT_EL0.get() > deadline {
            panic!(
                "timer interrupts are not arriving ({} of {wanted} ticks)",
                irq::ticks()
            );
        }
        core::hint::spin_loop();
    }
    DAIF.write(DAIF::I::Masked);
    let elapsed_ms = (CNTVCT_EL0.get() - start) * 1000 / frequency;
    kprintln!("timer: {wanted} ticks by interrupt in {elapsed_ms} ms");
    let (used, free) = memory::heap_usage();
    kprintln!(
        "heap: {used} bytes used, {free} free; frames free: {}",
        memory::free_frames()
    );
    kprintln!("moat: boot self-check passed");
    if SYSTEM_ARCHIVE.is_empty() {
        kprintln!("no system archive: nothing else to run");
        power::exit(0)
    }
    sys::start(SYSTEM_ARCHIVE, &platform, frequency, image.boot_stack.1)
}

/// Prints the Realm status (or why the kernel runs as a plain guest).
fn report_realm(
    realm: Option<realm::RealmInfo>,
    setup: Option<([u8; 32], u64)>,
    platform: &Platform<'_>,
) {
    let Some(realm) = realm else {
        match platform.psci {
            Some(Conduit::Smc) => kprintln!("realm: RSI_VERSION not supported: plain guest"),
            _ => kprintln!("realm: PSCI conduit is not smc: plain guest"),
        }
        return;
    };
    let ((major, minor), (high_major, high_minor)) = realm.version;
    kprintln!(
        "realm: Arm CCA Realm, RSI {major}.{minor} (RMM implements up to {high_major}.{high_minor})"
    );
    kprintln!(
        "realm: IPA width {}, shared bit {:#x}, hash {:?}, device addresses {}",
        realm.ipa_width,
        realm.shared_bit,
        realm.hash,
        if realm.dma_alias {
            "at the alias"
        } else {
            "canonical"
        }
    );
    let digest_len = match realm.hash {
        moat_rsi::HashAlgorithm::Sha256 => 32,
        _ => 64,
    };
    match realm::initial_measurement() {
        Ok(rim) => kprintln!("realm: initial measurement {}", Hex(&rim[..digest_len])),
        Err(error) => kprintln!("realm: initial measurement unreadable: {error:?}"),
    }
    if let Some((digest, calls)) = setup {
        kprintln!(
            "realm: command line measured into REM0 (sha256 {})",
            Hex(&digest)
        );
        kprintln!("realm: RIPAS RAM over all memory in {calls} RSI calls");
    }
}

/// Lowercase hex of a byte string.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Exercises the heap and the frame allocator once, so a broken setup fails at boot.
fn heap_self_check() {
    let values: alloc::vec::Vec<u64> = (0..4096).collect();
    let sum: u64 = values.iter().sum();
    assert_eq!(sum, 4096 * 4095 / 2, "heap returned corrupted memory");
    drop(values);
    let frame = memory::alloc_frame().expect("a frame is free right after boot");
    memory::free_frame(frame).expect("the frame just allocated can be freed");
}

/// Deliberately faults, for the QEMU tests of the fault path (`fault=` on the command line).
fn trigger_fault(hook: FaultHook) {
    match hook {
        FaultHook::DataAbort => {
            // The top page of the device window is never mapped.
            let address = DEVICE_BASE + DEVICE_WINDOW - 4096;
            // SAFETY: not safe at all, on purpose: this read faults and the fatal-exception
            // path reports it and powers off. It never returns.
            let value = unsafe { core::ptr::read_volatile(address as *const u64) };
            kprintln!("test hook: read {value:#x} from an unmapped address?");
        }
        FaultHook::Undefined => {
            // SAFETY: deliberately executes a permanently undefined instruction; the
            // fatal-exception path reports it and powers off.
            unsafe { core::arch::asm!("udf #0xdead") };
        }
        FaultHook::Panic => panic!("test hook: fault=panic"),
        FaultHook::WriteText => {
            let address = kmain as *const () as usize;
            // SAFETY: not safe, on purpose: kernel text is mapped read-only, so this write
            // takes a permission fault that the fatal-exception path reports.
            unsafe { core::ptr::write_volatile(address as *mut u32, 0) };
            kprintln!("test hook: kernel text at {address:#x} is writable!");
        }
        FaultHook::StackOverflow => {
            kprintln!("test hook: recursion depth {}", recurse(0));
        }
        FaultHook::EmptyIpa => read_empty_ipa(),
    }
}

/// Makes one shareable frame RIPAS EMPTY the way `Share` does (linear map broken first), then
/// maps its *protected* address again without changing the RIPAS and reads it: the RMM
/// (realm-sim) refuses a protected IPA that is not RAM with a synchronous external abort, which
/// the fatal-exception path reports. In a plain guest there is no RIPAS: the hook says so.
fn read_empty_ipa() {
    use crate::mmu::{PhysmapState, set_physmap};
    if realm::info().is_none() {
        kprintln!("test hook: empty-ipa needs Realm mode (a plain guest has no RIPAS)");
        return;
    }
    let Ok(frame) = memory::alloc_shareable(1, 1) else {
        kprintln!("test hook: empty-ipa: no shareable frame");
        return;
    };
    let range = PhysRange {
        start: frame,
        end: frame + moat_kernel_core::frame::FRAME_SIZE,
    };
    if set_physmap(range, PhysmapState::Unmapped).is_err() || realm::set_empty(range).is_err() {
        kprintln!("test hook: empty-ipa: could not make {frame:#x} RIPAS EMPTY");
        return;
    }
    if set_physmap(range, PhysmapState::Private).is_err() {
        kprintln!("test hook: empty-ipa: could not map {frame:#x} again");
        return;
    }
    kprintln!("test hook: reading protected IPA {frame:#x} (RIPAS EMPTY)");
    let address = moat_kernel_core::layout::physmap(frame).unwrap_or(0);
    // SAFETY: not safe, on purpose: the page is mapped but its IPA is EMPTY, so the RMM
    // injects a synchronous external abort and the fatal-exception path reports it and powers
    // off. It never returns (if it does, the abort was not injected: said below).
    let value = unsafe { core::ptr::read_volatile(address as *const u64) };
    kprintln!("test hook: read {value:#x} from an EMPTY protected IPA: no abort was injected!");
}

/// Recurses with a large frame until the boot stack's guard page stops it.
#[inline(never)]
#[allow(unconditional_recursion, reason = "the guard page ends it")]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 256];
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + frame[depth as usize % 256]
}

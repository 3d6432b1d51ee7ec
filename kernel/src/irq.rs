//! Interrupts: the GICv3 (distributor, redistributor, CPU interface) and the generic timer
//! ticking by interrupt.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTV_CTL_EL0, CNTV_TVAL_EL0, Readable, Writeable};
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, InterruptGroup, Trigger};
use moat_kernel_core::platform::{Gic, Timer};
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

use crate::mmu;

/// Timer interrupts per second.
pub const TICK_HZ: u64 = 100;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);
static TICKS: AtomicU64 = AtomicU64::new(0);
static TIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static TIMER_RELOAD: AtomicU64 = AtomicU64::new(0);

/// Why interrupts could not be set up.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "fields are shown through Debug in boot failure reports"
)]
pub enum IrqError {
    /// The GIC registers could not be mapped.
    Map(mmu::MmuError),
    /// The GIC driver refused.
    Gic(arm_gic::gicv3::GicError),
    /// The timer interrupt is not a PPI.
    BadTimerInterrupt(u32),
    /// The timer frequency is zero.
    NoTimerFrequency,
}

fn int_id(intid: u32) -> Option<IntId> {
    match intid {
        16..=31 => Some(IntId::ppi(intid - 16)),
        32..=1019 => Some(IntId::spi(intid - 32)),
        _ => None,
    }
}

/// Brings up the GIC for this CPU and starts the EL1 virtual timer at [`TICK_HZ`]. Interrupts
/// stay masked at the CPU until the caller unmasks them. Returns the timer frequency.
pub fn init(gic: &Gic, timer: &Timer) -> Result<u64, IrqError> {
    let gicd = mmu::map_device(gic.distributor).map_err(IrqError::Map)?;
    let gicr = mmu::map_device(gic.redistributors).map_err(IrqError::Map)?;
    // SAFETY: both regions were just mapped as Device memory at these addresses, and this is
    // the only driver instance for them.
    let mut driver = unsafe {
        GicV3::new(
            UniqueMmioPointer::new(
                NonNull::new(gicd as *mut Gicd).expect("device window is not null"),
            ),
            NonNull::new(gicr as *mut GicrSgi).expect("device window is not null"),
            1,
        )
    }
    .map_err(IrqError::Gic)?;
    driver.setup(0);
    GicCpuInterface::set_priority_mask(0xff);

    let intid = timer.virtual_timer.intid;
    let id = int_id(intid)
        .filter(|id| id.is_ppi())
        .ok_or(IrqError::BadTimerInterrupt(intid))?;
    driver
        .set_interrupt_priority(id, Some(0), 0x80)
        .map_err(IrqError::Gic)?;
    driver
        .set_trigger(id, Some(0), Trigger::Level)
        .map_err(IrqError::Gic)?;
    driver
        .enable_interrupt(id, Some(0), true)
        .map_err(IrqError::Gic)?;
    *GIC.lock() = Some(driver);

    let frequency = match timer.frequency_hz {
        Some(hz) => u64::from(hz),
        None => CNTFRQ_EL0.get(),
    };
    if frequency == 0 {
        return Err(IrqError::NoTimerFrequency);
    }
    let reload = (frequency / TICK_HZ).max(1);
    TIMER_RELOAD.store(reload, Ordering::Relaxed);
    TIMER_INTID.store(intid, Ordering::Relaxed);
    CNTV_TVAL_EL0.set(reload);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    Ok(frequency)
}

/// Timer ticks since [`init`].
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Takes the highest-priority pending interrupt, if any (it must then be [`end`]ed).
pub fn acknowledge() -> Option<u32> {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(u32::from)
}

/// Ends (and deactivates) an acknowledged interrupt.
pub fn end(intid: u32) {
    if let Some(id) = int_id(intid) {
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    }
}

/// Whether `intid` is the timer's.
pub fn is_timer(intid: u32) -> bool {
    intid == TIMER_INTID.load(Ordering::Relaxed)
}

/// Counts a tick and re-arms the timer.
pub fn timer_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    CNTV_TVAL_EL0.set(TIMER_RELOAD.load(Ordering::Relaxed));
}

/// Configures a device interrupt (SPI) for this CPU: trigger, priority, enabled.
pub fn configure_spi(intid: u32, edge: bool) {
    let Some(id) = int_id(intid) else { return };
    if let Some(gic) = GIC.lock().as_mut() {
        let trigger = if edge { Trigger::Edge } else { Trigger::Level };
        let _ = gic.set_trigger(id, None, trigger);
        let _ = gic.set_interrupt_priority(id, None, 0x80);
        let _ = gic.enable_interrupt(id, None, true);
    }
}

/// Masks or unmasks one interrupt at the distributor.
pub fn set_enabled(intid: u32, enabled: bool) {
    let Some(id) = int_id(intid) else { return };
    if let Some(gic) = GIC.lock().as_mut() {
        let _ = gic.enable_interrupt(id, if id.is_private() { Some(0) } else { None }, enabled);
    }
}

/// Called from `vectors.S` for an IRQ taken at EL1 (during boot, or while the kernel idles).
#[unsafe(no_mangle)]
extern "C" fn irq_handler() {
    if crate::sys::irq_while_idle() {
        return;
    }
    while let Some(intid) = acknowledge() {
        if is_timer(intid) {
            timer_tick();
        } else {
            crate::kprintln!("irq: unexpected interrupt {intid}");
        }
        end(intid);
    }
}

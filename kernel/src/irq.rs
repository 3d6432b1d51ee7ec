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

/// Called from `vectors.S` for an IRQ taken at EL1.
#[unsafe(no_mangle)]
extern "C" fn irq_handler() {
    while let Some(id) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) {
        let intid = u32::from(id);
        if intid == TIMER_INTID.load(Ordering::Relaxed) {
            TICKS.fetch_add(1, Ordering::Relaxed);
            CNTV_TVAL_EL0.set(TIMER_RELOAD.load(Ordering::Relaxed));
        } else {
            crate::kprintln!("irq: unexpected interrupt {intid}");
        }
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    }
}

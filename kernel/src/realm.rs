//! Realm mode (Arm CCA, RSI 1.0): detection, configuration, RIPAS changes and measurements.
//!
//! Detection runs before any device is touched: only when the DTB's PSCI conduit is `smc` does
//! the kernel call RSI_VERSION; SMCCC NOT_SUPPORTED means a plain guest. In a Realm every
//! host-emulated device is mapped at its unprotected alias (`pa | shared bit`), all of RAM is set
//! to RIPAS RAM before use, and memory changes state only through the DMA server's Share
//! capability ([`set_shared`]). DESIGN.md section 6.

use moat_kernel_core::range::PhysRange;
use moat_rsi::{ChangeDestroyed, Granule, HashAlgorithm, MeasurementIndex, Ripas, Rsi, SmcConduit};
use sha2::{Digest, Sha256};
use spin::Once;

/// What the kernel learned about the Realm.
#[derive(Clone, Copy, Debug)]
pub struct RealmInfo {
    /// `1 << (ipa_width - 1)`: set in an IPA, it selects the unprotected (shared) alias.
    pub shared_bit: u64,
    /// IPA width in bits.
    pub ipa_width: u8,
    /// Measurement hash algorithm.
    pub hash: HashAlgorithm,
    /// Whether devices are given the alias (`x | shared bit`) as the DMA address of a shared
    /// buffer (real Realm VMMs) or the canonical address (realm-sim, whose devices are QEMU's).
    pub dma_alias: bool,
    /// RSI revision in use and highest implemented (major, minor).
    pub version: ((u16, u16), (u16, u16)),
}

static REALM: Once<RealmInfo> = Once::new();

/// The zeroed, 4 KiB-aligned protected granule REALM_CONFIG writes into (part of the image,
/// which the loader put in RIPAS RAM memory).
struct ConfigGranule(core::cell::UnsafeCell<Granule>);

// SAFETY: only `detect` touches the granule, once, on the boot CPU before anything else runs.
unsafe impl Sync for ConfigGranule {}

static CONFIG_GRANULE: ConfigGranule =
    ConfigGranule(core::cell::UnsafeCell::new(Granule::zeroed()));

/// Why Realm mode could not be set up. The kernel refuses to run: a Realm that cannot keep
/// its memory private must not start tasks.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "fields are shown through Debug in boot failure reports"
)]
pub enum RealmError {
    /// An RSI call failed.
    Rsi(moat_rsi::Error),
}

/// Calls RSI_VERSION (only for an `smc` PSCI conduit) and, in a Realm, REALM_CONFIG.
/// `phys_base` is the image's physical address (to find the config granule's IPA).
pub fn detect(
    smc_conduit: bool,
    phys_base: u64,
    dma_alias: bool,
) -> Result<Option<RealmInfo>, RealmError> {
    if !smc_conduit {
        return Ok(None);
    }
    let mut rsi = Rsi::new(SmcConduit);
    let negotiated = match rsi.negotiate() {
        Ok(negotiated) => negotiated,
        Err(moat_rsi::Error::NotRealm) => return Ok(None),
        Err(error) => return Err(RealmError::Rsi(error)),
    };
    let granule_va = CONFIG_GRANULE.0.get() as usize;
    let granule_ipa = (granule_va - moat_kernel_core::layout::KERNEL_BASE) as u64 + phys_base;
    // SAFETY: boot is single-threaded and this is the granule's only use.
    let granule = unsafe { &mut *CONFIG_GRANULE.0.get() };
    let config = rsi
        .realm_config(granule, granule_ipa)
        .map_err(RealmError::Rsi)?;
    let v = |version: moat_rsi::Version| (version.major, version.minor);
    let info = RealmInfo {
        shared_bit: config.shared_bit(),
        ipa_width: config.ipa_width(),
        hash: config.hash_algorithm(),
        dma_alias,
        version: (v(negotiated.version), v(negotiated.highest)),
    };
    Ok(Some(*REALM.call_once(|| info)))
}

/// The Realm, if the kernel runs in one.
pub fn info() -> Option<RealmInfo> {
    REALM.get().copied()
}

/// The unprotected alias of a physical address in a Realm; the address itself otherwise.
pub fn alias(pa: u64) -> u64 {
    info().map_or(pa, |realm| pa | realm.shared_bit)
}

/// The address a device uses for shared memory at `pa`.
pub fn dma_address(pa: u64) -> u64 {
    match info() {
        Some(realm) if realm.dma_alias => pa | realm.shared_bit,
        _ => pa,
    }
}

/// Sets RIPAS RAM over a range (boot: all of RAM before use). Returns the calls it took.
pub fn set_ram(range: PhysRange, change_destroyed: bool) -> Result<u64, RealmError> {
    let flags = if change_destroyed {
        ChangeDestroyed::ChangeDestroyed
    } else {
        ChangeDestroyed::NoChangeDestroyed
    };
    let report = Rsi::new(SmcConduit)
        .ipa_state_set(range.start, range.end, Ripas::Ram, flags)
        .map_err(RealmError::Rsi)?;
    Ok(report.calls)
}

/// Sets RIPAS EMPTY over a range (making it shared); content is destroyed.
pub fn set_empty(range: PhysRange) -> Result<u64, RealmError> {
    let report = Rsi::new(SmcConduit)
        .ipa_state_set(
            range.start,
            range.end,
            Ripas::Empty,
            ChangeDestroyed::ChangeDestroyed,
        )
        .map_err(RealmError::Rsi)?;
    Ok(report.calls)
}

/// The Realm Initial Measurement.
pub fn initial_measurement() -> Result<[u8; 64], RealmError> {
    Rsi::new(SmcConduit)
        .measurement_read(MeasurementIndex::Rim)
        .map(|m| m.0)
        .map_err(RealmError::Rsi)
}

/// Extends REM0 with the SHA-256 of `bytes` (the command line, then the manifest), so an
/// attestation covers what the host handed the kernel before the kernel acts on it.
pub fn measure(bytes: &[u8]) -> Result<[u8; 32], RealmError> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    Rsi::new(SmcConduit)
        .measurement_extend(MeasurementIndex::Rem0, &digest)
        .map_err(RealmError::Rsi)?;
    Ok(digest)
}

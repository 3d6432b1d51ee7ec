//! Entropy for tasks: RNDR when the CPU has FEAT_RNG, mixed with the boot loader's
//! `/chosen/rng-seed` and counter jitter through SHA-256.
//!
//! In a Realm every source but RNDR is host-controlled (the DTB and the timer come from the
//! host), so without RNDR the entropy is not secret from the host; tasks are told which case
//! holds (`TaskInfo::entropy_source`). Under `-cpu cortex-a72` there is no RNDR.

use aarch64_cpu::registers::{CNTVCT_EL0, Readable};
use sha2::{Digest, Sha256};
use spin::Mutex;

static POOL: Mutex<Option<([u8; 32], bool)>> = Mutex::new(None);

/// Reads RNDR once, if the CPU implements it.
fn rndr() -> Option<u64> {
    let isar0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        core::arch::asm!("mrs {0}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack))
    };
    if (isar0 >> 60) & 0xf == 0 {
        return None;
    }
    let value: u64;
    let ok: u64;
    // SAFETY: RNDR (s3_3_c2_c4_0) exists (checked above); it sets NZCV.Z on failure.
    unsafe {
        core::arch::asm!("mrs {v}, s3_3_c2_c4_0", "cset {ok}, ne", v = out(reg) value, ok = out(reg) ok, options(nomem, nostack));
    }
    (ok != 0).then_some(value)
}

/// Seeds the pool from the DTB seed, counter jitter and RNDR. Returns whether RNDR contributed.
pub fn init(rng_seed: &[u8]) -> bool {
    let mut hasher = Sha256::new();
    hasher.update(b"moat entropy pool v1");
    hasher.update(rng_seed);
    // Jitter: how long small bursts of work take, sampled by the counter.
    let mut previous = CNTVCT_EL0.get();
    for round in 0..64u64 {
        let mut x = round;
        for _ in 0..(round % 7 + 1) * 16 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let now = CNTVCT_EL0.get();
        hasher.update((now - previous).to_le_bytes());
        hasher.update(x.to_le_bytes());
        previous = now;
    }
    let mut from_rndr = false;
    for _ in 0..4 {
        if let Some(value) = rndr() {
            hasher.update(value.to_le_bytes());
            from_rndr = true;
        }
    }
    *POOL.lock() = Some((hasher.finalize().into(), from_rndr));
    from_rndr
}

/// 32 bytes for one task instance, and whether RNDR contributed. The pool is ratcheted after
/// every use so two instances never see related values.
pub fn for_task(index: u16, generation: u16) -> ([u8; 32], bool) {
    let mut guard = POOL.lock();
    let (pool, from_rndr) = guard.get_or_insert(([0; 32], false));
    let mut hasher = Sha256::new();
    hasher.update(*pool);
    hasher.update(index.to_le_bytes());
    hasher.update(generation.to_le_bytes());
    hasher.update(CNTVCT_EL0.get().to_le_bytes());
    if let Some(value) = rndr() {
        hasher.update(value.to_le_bytes());
    }
    let out: [u8; 32] = hasher.finalize().into();
    let mut ratchet = Sha256::new();
    ratchet.update(*pool);
    ratchet.update(b"ratchet");
    *pool = ratchet.finalize().into();
    (out, *from_rndr)
}

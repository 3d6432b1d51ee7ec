//! Entropy for the stack: a SHA-256 pool fed with whatever sources the task has.
//!
//! `smoltcp` takes one 64-bit seed (`Config::random_seed`) and derives TCP initial sequence
//! numbers, ephemeral ports and DHCP transaction ids from it. Predictable values let an
//! off-path attacker guess sequence numbers and inject into or reset connections, so the seed
//! should be unpredictable to the party we defend against.
//!
//! # Sources, and who controls them in a Realm
//!
//! | source                               | available to a task today | host-controlled in a Realm |
//! |--------------------------------------|---------------------------|----------------------------|
//! | `RNDR` (FEAT_RNG, ID_AA64ISAR0_EL1)  | no: `cortex-a72` lacks it, and EL0 cannot read ID registers without a kernel trap handler | **no** (the CPU's own generator) |
//! | DTB `/chosen/rng-seed`               | no: the kernel does not pass it on yet | yes (the host writes the DTB) |
//! | counter (`CNTVCT_EL0`) jitter        | yes                       | yes (the host schedules the vCPU and can trap or offset the counter) |
//! | `time()` syscall                     | yes                       | yes (derived from the same counter) |
//! | virtio-entropy device                | no driver yet             | yes (the host emulates it) |
//!
//! So in a Realm **only `RNDR` is outside the host's control**; everything this module mixes
//! today can be observed or chosen by the host. That is acceptable for the threat model of the
//! data path (the host sees every packet anyway: TLS above the stack is what protects data), but
//! it means TCP sequence numbers are not secret from the host. What the kernel should provide
//! (asked of the lead): a `GetRandom`-style syscall or a seed field in the task information page
//! that mixes `RNDR` (when the kernel sees FEAT_RNG in ID_AA64ISAR0_EL1) with `/chosen/rng-seed`,
//! and a flag saying whether `RNDR` contributed.
//!
//! The pool is SHA-256 over everything added; outputs are SHA-256 of the pool state and a
//! counter. It is not a certified DRBG; it whitens and combines sources, it does not create
//! entropy they lack.

use sha2::{Digest, Sha256};

/// An entropy pool. Add sources, then take values.
#[derive(Clone, Debug)]
pub struct Entropy {
    pool: Sha256,
    outputs: u64,
    samples: u64,
}

impl Default for Entropy {
    fn default() -> Self {
        Entropy::new()
    }
}

impl Entropy {
    /// An empty pool (domain-separated).
    pub fn new() -> Entropy {
        let mut pool = Sha256::new();
        pool.update(b"moat-net entropy v1");
        Entropy {
            pool,
            outputs: 0,
            samples: 0,
        }
    }

    /// Mixes in `bytes` from a source (a seed, a device's output, a MAC address for
    /// uniqueness).
    pub fn add(&mut self, source: &[u8], bytes: &[u8]) {
        self.pool.update((source.len() as u64).to_le_bytes());
        self.pool.update(source);
        self.pool.update((bytes.len() as u64).to_le_bytes());
        self.pool.update(bytes);
    }

    /// Mixes in `count` counter samples from `read`, with `between` run between samples (e.g. a
    /// yield or a short computation, so the samples pick up scheduling and timing noise).
    /// Returns how many successive samples differed (a crude sign that the counter moves).
    pub fn add_jitter(
        &mut self,
        count: usize,
        mut read: impl FnMut() -> u64,
        mut between: impl FnMut(),
    ) -> usize {
        let mut previous = read();
        let mut changes = 0;
        for _ in 0..count {
            between();
            let sample = read();
            if sample != previous {
                changes += 1;
            }
            self.pool
                .update(sample.wrapping_sub(previous).to_le_bytes());
            self.pool.update(sample.to_le_bytes());
            previous = sample;
            self.samples += 1;
        }
        changes
    }

    /// Counter samples mixed so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        let mut output = self.pool.clone();
        output.update(b"output");
        output.update(self.outputs.to_le_bytes());
        self.outputs += 1;
        let digest = output.finalize();
        let mut word = [0; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(word)
    }
}

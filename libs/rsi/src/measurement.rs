//! The RMM's side of measurements: the RIM and four REMs, extended with SHA-256 or SHA-512.
//!
//! Free of `std` and `alloc`, for the RMM model (`model`) and realm-sim.
//!
//! Semantics (TF-RMM `runtime/rsi/realm_attest.c`, `lib/measurement`):
//! - slot 0 is the RIM, slots 1..=4 the REMs; all REMs start zero;
//! - MEASUREMENT_READ takes an index 0..=4 and returns all 64 bytes (zero past the digest);
//! - MEASUREMENT_EXTEND takes an index 1..=4 and a size 0..=64, and sets
//!   `REM = H(REM[..digest_len] || value[..size])`.

use sha2::Digest;

use crate::abi::{HashAlgorithm, MAX_MEASUREMENT_LEN, MEASUREMENT_SLOTS, Status};

/// A measurement value: `digest_len` meaningful bytes, zero-padded to 64.
pub type MeasurementBytes = [u8; MAX_MEASUREMENT_LEN];

/// Hashes `parts` (concatenated) with `algorithm`, zero-padded to 64 bytes.
pub fn digest(algorithm: HashAlgorithm, parts: &[&[u8]]) -> MeasurementBytes {
    let mut out = [0u8; MAX_MEASUREMENT_LEN];
    match algorithm {
        HashAlgorithm::Sha256 => {
            let mut hasher = sha2::Sha256::new();
            for part in parts {
                hasher.update(part);
            }
            out[..32].copy_from_slice(&hasher.finalize());
        }
        HashAlgorithm::Sha512 => {
            let mut hasher = sha2::Sha512::new();
            for part in parts {
                hasher.update(part);
            }
            out.copy_from_slice(&hasher.finalize());
        }
    }
    out
}

/// The extend operation: `H(current[..digest_len] || value)`.
pub fn extend(
    algorithm: HashAlgorithm,
    current: &MeasurementBytes,
    value: &[u8],
) -> MeasurementBytes {
    digest(algorithm, &[&current[..algorithm.digest_len()], value])
}

/// A Realm's measurement slots.
#[derive(Clone, Debug)]
pub struct Measurements {
    algorithm: HashAlgorithm,
    slots: [MeasurementBytes; MEASUREMENT_SLOTS],
}

impl Measurements {
    /// Slots for `algorithm` with the given RIM (zero-padded or cut to 64 bytes) and zero REMs.
    pub fn new(algorithm: HashAlgorithm, rim: &[u8]) -> Self {
        let mut slots = [[0u8; MAX_MEASUREMENT_LEN]; MEASUREMENT_SLOTS];
        let len = rim.len().min(algorithm.digest_len());
        slots[0][..len].copy_from_slice(&rim[..len]);
        Measurements { algorithm, slots }
    }

    /// The algorithm the slots are extended with.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// MEASUREMENT_READ: the slot at `index` (0 = RIM, 1..=4 = REMs).
    pub fn read(&self, index: u64) -> Result<MeasurementBytes, Status> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.slots.get(index))
            .copied()
            .ok_or(Status::ErrorInput)
    }

    /// MEASUREMENT_EXTEND: extends REM `index` (1..=4) with the first `size` bytes of `value`.
    pub fn extend(
        &mut self,
        index: u64,
        size: u64,
        value: &MeasurementBytes,
    ) -> Result<(), Status> {
        let slot = match usize::try_from(index) {
            Ok(slot @ 1..MEASUREMENT_SLOTS) => slot,
            _ => return Err(Status::ErrorInput),
        };
        let size = match usize::try_from(size) {
            Ok(size @ 0..=MAX_MEASUREMENT_LEN) => size,
            _ => return Err(Status::ErrorInput),
        };
        self.slots[slot] = extend(self.algorithm, &self.slots[slot], &value[..size]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> [u8; 128] {
        let mut out = [b'0'; 128];
        for (index, byte) in bytes.iter().enumerate() {
            out[2 * index] = b"0123456789abcdef"[usize::from(byte >> 4)];
            out[2 * index + 1] = b"0123456789abcdef"[usize::from(byte & 15)];
        }
        out
    }

    #[test]
    fn digest_known_values() {
        // FIPS 180-2 example "abc".
        let sha256 = digest(HashAlgorithm::Sha256, &[b"abc"]);
        assert_eq!(
            &hex(&sha256[..32])[..64],
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256[32..].iter().all(|&byte| byte == 0));
        let sha512 = digest(HashAlgorithm::Sha512, &[b"a", b"bc"]);
        assert_eq!(&hex(&sha512)[..32], b"ddaf35a193617abacc417349ae204131");
    }

    #[test]
    fn index_and_size_rules() {
        let mut measurements = Measurements::new(HashAlgorithm::Sha256, &[7; 32]);
        assert_eq!(measurements.read(0).unwrap()[..32], [7; 32]);
        assert_eq!(measurements.read(4).unwrap(), [0; 64]);
        assert_eq!(measurements.read(5), Err(Status::ErrorInput));
        let value = [0u8; 64];
        // The RIM cannot be extended.
        assert_eq!(measurements.extend(0, 1, &value), Err(Status::ErrorInput));
        assert_eq!(measurements.extend(5, 1, &value), Err(Status::ErrorInput));
        assert_eq!(measurements.extend(1, 65, &value), Err(Status::ErrorInput));
        assert_eq!(measurements.extend(1, 64, &value), Ok(()));
        assert_eq!(measurements.extend(4, 0, &value), Ok(()));
        assert_ne!(measurements.read(4).unwrap(), [0; 64]);
    }
}

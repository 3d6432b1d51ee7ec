//! The Realm configuration that RSI_REALM_CONFIG writes, and what follows from it.

use crate::abi::HashAlgorithm;
use crate::conduit::Granule;

/// Offset of `ipa_width` (u64, little-endian) in the REALM_CONFIG granule.
pub const IPA_WIDTH_OFFSET: usize = 0x0;

/// Offset of the hash algorithm (u8) in the REALM_CONFIG granule.
pub const HASH_ALGORITHM_OFFSET: usize = 0x8;

/// Smallest IPA width accepted from the RMM: the smallest Armv8-A physical address range.
pub const MIN_IPA_WIDTH: u8 = 32;

/// Largest IPA width accepted from the RMM: 52 bits (FEAT_LPA / FEAT_LPA2).
pub const MAX_IPA_WIDTH: u8 = 52;

/// Why a REALM_CONFIG granule was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `ipa_width` is outside [`MIN_IPA_WIDTH`]..=[`MAX_IPA_WIDTH`].
    IpaWidth(u64),
    /// The hash algorithm is neither SHA-256 nor SHA-512.
    HashAlgorithm(u8),
}

/// The Realm configuration, validated.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RealmConfig {
    ipa_width: u8,
    hash_algorithm: HashAlgorithm,
}

impl RealmConfig {
    /// Builds a configuration from raw values, validating them as the client does.
    pub fn new(ipa_width: u64, hash_algorithm: u8) -> Result<Self, ConfigError> {
        let width = match u8::try_from(ipa_width) {
            Ok(width) if (MIN_IPA_WIDTH..=MAX_IPA_WIDTH).contains(&width) => width,
            _ => return Err(ConfigError::IpaWidth(ipa_width)),
        };
        let hash_algorithm =
            HashAlgorithm::try_from(hash_algorithm).map_err(ConfigError::HashAlgorithm)?;
        Ok(RealmConfig {
            ipa_width: width,
            hash_algorithm,
        })
    }

    /// Decodes the granule the RMM wrote. Fields other than the two RMM 1.0 ones are ignored.
    pub fn decode(granule: &Granule) -> Result<Self, ConfigError> {
        let mut width = [0u8; 8];
        width.copy_from_slice(&granule.0[IPA_WIDTH_OFFSET..IPA_WIDTH_OFFSET + 8]);
        RealmConfig::new(u64::from_le_bytes(width), granule.0[HASH_ALGORITHM_OFFSET])
    }

    /// Writes this configuration into a granule as the RMM lays it out (for models).
    pub fn encode_into(&self, granule: &mut Granule) {
        granule.0[IPA_WIDTH_OFFSET..IPA_WIDTH_OFFSET + 8]
            .copy_from_slice(&u64::from(self.ipa_width).to_le_bytes());
        granule.0[HASH_ALGORITHM_OFFSET] = self.hash_algorithm as u8;
    }

    /// Width of the Realm's IPA space in bits.
    pub const fn ipa_width(&self) -> u8 {
        self.ipa_width
    }

    /// The algorithm of the Realm's measurements.
    pub const fn hash_algorithm(&self) -> HashAlgorithm {
        self.hash_algorithm
    }

    /// The top IPA bit, which selects the unprotected half: `1 << (ipa_width - 1)`.
    pub const fn shared_bit(&self) -> u64 {
        1 << (self.ipa_width - 1)
    }

    /// End (exclusive) of the protected IPA range `[0, shared_bit)`.
    pub const fn protected_top(&self) -> u64 {
        self.shared_bit()
    }

    /// Returns true if `[base, top)` lies inside the protected IPA range.
    pub const fn is_protected_range(&self, base: u64, top: u64) -> bool {
        base < top && top <= self.protected_top()
    }

    /// The unprotected alias of protected IPA `ipa`, or `None` if `ipa` is not protected.
    pub const fn unprotected_alias(&self, ipa: u64) -> Option<u64> {
        if ipa < self.protected_top() {
            Some(ipa | self.shared_bit())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bit_derivation() {
        let config = RealmConfig::new(39, 0).unwrap();
        assert_eq!(config.shared_bit(), 1 << 38);
        assert_eq!(config.protected_top(), 0x40_0000_0000);
        assert_eq!(config.unprotected_alias(0x4000_0000), Some(0x40_4000_0000));
        assert_eq!(config.unprotected_alias(1 << 38), None);
        assert!(config.is_protected_range(0x4000_0000, 0x6000_0000));
        assert!(!config.is_protected_range(0x4000_0000, (1 << 38) + 0x1000));
        assert_eq!(
            RealmConfig::new(48, 1).unwrap().shared_bit(),
            0x8000_0000_0000
        );
    }

    #[test]
    fn validation() {
        assert_eq!(RealmConfig::new(0, 0), Err(ConfigError::IpaWidth(0)));
        assert_eq!(RealmConfig::new(31, 0), Err(ConfigError::IpaWidth(31)));
        assert_eq!(RealmConfig::new(53, 0), Err(ConfigError::IpaWidth(53)));
        assert_eq!(
            RealmConfig::new(1 << 40 | 39, 0),
            Err(ConfigError::IpaWidth(1 << 40 | 39))
        );
        assert_eq!(RealmConfig::new(39, 2), Err(ConfigError::HashAlgorithm(2)));
        assert!(RealmConfig::new(32, 0).is_ok());
        assert!(RealmConfig::new(52, 1).is_ok());
    }

    #[test]
    fn granule_round_trip() {
        let mut granule = Granule::zeroed();
        granule.0[0] = 40;
        granule.0[8] = 1;
        // Later-revision fields (RPV at 0x200) are ignored.
        granule.0[0x200] = 0xAA;
        let config = RealmConfig::decode(&granule).unwrap();
        assert_eq!(config.ipa_width(), 40);
        assert_eq!(config.hash_algorithm(), HashAlgorithm::Sha512);

        let mut written = Granule::zeroed();
        config.encode_into(&mut written);
        assert_eq!(&written.0[..16], &granule.0[..16]);

        // A width that only fits in the upper bytes of the u64 is refused.
        let mut bad = Granule::zeroed();
        bad.0[4] = 1;
        assert!(matches!(
            RealmConfig::decode(&bad),
            Err(ConfigError::IpaWidth(_))
        ));
    }
}

//! realm-sim's own keys on the kernel command line (`/chosen/bootargs`, from QEMU `-append`).
//!
//! | key | meaning |
//! | --- | --- |
//! | `realm-sim.stress-host` | IPA_STATE_SET makes one granule of progress per call |
//! | `realm-sim.ram=SIZE` | the Realm's RAM size N (`K`/`M`/`G` suffixes; a multiple of 2 MiB) |
//!
//! realm-sim blanks these words before the Realm sees the command line (see
//! [`crate::dtb::blank_realm_sim_words`]); other words are the kernel's business.

/// Prefix of every realm-sim key.
pub const PREFIX: &[u8] = b"realm-sim.";

/// The options realm-sim runs with.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Answer IPA_STATE_SET with one granule of progress per call.
    pub stress_host: bool,
    /// Realm RAM size asked for, if any.
    pub ram: Option<u64>,
}

/// A `realm-sim.*` word realm-sim does not understand (reported, then ignored).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UnknownWord<'a>(pub &'a [u8]);

/// Parses a size: decimal or `0x` hex, optionally followed by `K`, `M` or `G`.
pub fn parse_size(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let (digits, radix) = match digits.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        let digit = char::from(digit).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    value.checked_mul(1 << shift)
}

/// Parses realm-sim's keys out of `bootargs`. Returns the options and the first realm-sim word
/// that was not understood, if any.
pub fn parse(bootargs: &[u8]) -> (Options, Option<UnknownWord<'_>>) {
    let mut options = Options::default();
    let mut unknown = None;
    for word in bootargs
        .split(u8::is_ascii_whitespace)
        .filter(|word| word.starts_with(PREFIX))
    {
        let key = &word[PREFIX.len()..];
        let understood = match key {
            b"stress-host" => {
                options.stress_host = true;
                true
            }
            _ => match key.strip_prefix(b"ram=").and_then(parse_size) {
                Some(size) => {
                    options.ram = Some(size);
                    true
                }
                None => false,
            },
        };
        if !understood && unknown.is_none() {
            unknown = Some(UnknownWord(word));
        }
    }
    (options, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"512M"), Some(512 << 20));
        assert_eq!(parse_size(b"1g"), Some(1 << 30));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"0x200000"), Some(2 << 20));
        assert_eq!(parse_size(b"64K"), Some(64 << 10));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"M"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
        assert_eq!(parse_size(b"17179869184G"), None);
    }

    #[test]
    fn keys() {
        let (options, unknown) = parse(b"console=x realm-sim.stress-host loglevel=info");
        assert_eq!(
            options,
            Options {
                stress_host: true,
                ram: None
            }
        );
        assert_eq!(unknown, None);
        let (options, unknown) =
            parse(b"realm-sim.ram=64M realm-sim.bogus realm-sim.ram=x semihosting");
        assert_eq!(options.ram, Some(64 << 20));
        assert!(!options.stress_host);
        assert_eq!(unknown, Some(UnknownWord(b"realm-sim.bogus")));
        assert_eq!(parse(b"").0, Options::default());
    }
}

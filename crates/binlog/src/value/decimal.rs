//! `DECIMAL` values (column type 246, `MYSQL_TYPE_NEWDECIMAL`) in their row-image form.
//!
//! # Layout
//! A `DECIMAL(p, s)` has `p - s` integer digits and `s` fraction digits. Each side is cut into
//! groups of nine digits, and every whole group is a 4-byte big-endian integer. The digits
//! left over on each side (the most significant integer digits, the least significant
//! fraction digits) take only as many bytes as they need, per [`DIG2BYTES`]. The integer
//! groups come first, most significant first, then the fraction groups. The size therefore
//! depends only on `(p, s)`, never on the value.
//!
//! The sign is folded in so that `memcmp` orders values: a negative value has every byte
//! inverted, and then the top bit of the first byte is flipped. That bit is therefore set
//! for non-negative values and clear for negative ones; no valid group ever has its own top
//! bit set, so nothing is lost.
//!
//! # Invariants and recovery
//! [`Decimal::from_binary`] only checks the metadata and slices the bytes, so decoding a row
//! costs no digit work. A group larger than its digit count allows can only come from a
//! corrupt row image; [`Decimal::validate`] reports it, and `Display` prints `NaN` for it so
//! that the value cannot pass downstream as a plausible number.

use core::fmt;

use super::ValueError;

/// Decimal digits held by one whole 4-byte group.
const DIGITS_PER_GROUP: usize = 9;
/// Bytes needed for a group of `n` leftover digits, indexed by `n`.
const DIG2BYTES: [usize; DIGITS_PER_GROUP + 1] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
/// `10^n`, indexed by `n`; a group of `n` digits must be below `POW10[n]`.
const POW10: [u32; DIGITS_PER_GROUP + 1] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
/// Largest precision MySQL and MariaDB accept.
const MAX_PRECISION: u8 = 65;
/// Largest scale MySQL and MariaDB accept.
const MAX_SCALE: u8 = 30;

const KIND: &str = "decimal";

/// Bytes taken by a `DECIMAL(precision, scale)` value in a row image.
///
/// Metadata that MySQL would reject (scale above precision) is sized as if the integer part
/// were empty; [`Decimal::from_binary`] rejects such metadata before using the size.
pub fn decimal_binary_size(precision: u8, scale: u8) -> usize {
    let layout = Layout::new(precision, scale);
    layout.size()
}

/// How the digits of one `(precision, scale)` pair are spread over groups.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Digits in the partial integer group at the front (0 when the integer digits fill
    /// whole groups).
    int_lead: usize,
    /// Whole integer groups.
    int_full: usize,
    /// Whole fraction groups.
    frac_full: usize,
    /// Digits in the partial fraction group at the end.
    frac_tail: usize,
}

impl Layout {
    fn new(precision: u8, scale: u8) -> Self {
        let int_digits = usize::from(precision.saturating_sub(scale));
        let frac_digits = usize::from(scale);
        Layout {
            int_lead: int_digits % DIGITS_PER_GROUP,
            int_full: int_digits / DIGITS_PER_GROUP,
            frac_full: frac_digits / DIGITS_PER_GROUP,
            frac_tail: frac_digits % DIGITS_PER_GROUP,
        }
    }

    fn size(&self) -> usize {
        DIG2BYTES[self.int_lead]
            + 4 * self.int_full
            + 4 * self.frac_full
            + DIG2BYTES[self.frac_tail]
    }
}

/// One `DECIMAL` value, borrowing its row-image bytes.
///
/// Equality compares the encoded bytes and the metadata, which for values written by the
/// server is the same as numeric equality at a fixed `(precision, scale)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal<'a> {
    bytes: &'a [u8],
    precision: u8,
    scale: u8,
}

impl<'a> Decimal<'a> {
    /// Borrows a `DECIMAL(precision, scale)` value from the start of `buf`, returning it and
    /// the number of bytes it takes.
    ///
    /// Only the metadata and the length are checked here; call [`Decimal::validate`] to check
    /// the digit groups.
    pub fn from_binary(
        buf: &'a [u8],
        precision: u8,
        scale: u8,
    ) -> Result<(Decimal<'a>, usize), ValueError> {
        if precision == 0 || precision > MAX_PRECISION {
            return Err(ValueError::Invalid {
                kind: KIND,
                reason: "precision outside 1..=65",
            });
        }
        if scale > MAX_SCALE || scale > precision {
            return Err(ValueError::Invalid {
                kind: KIND,
                reason: "scale above 30 or above precision",
            });
        }
        let size = decimal_binary_size(precision, scale);
        let bytes = buf.get(..size).ok_or(ValueError::Truncated {
            needed: size,
            available: buf.len(),
        })?;
        Ok((
            Decimal {
                bytes,
                precision,
                scale,
            },
            size,
        ))
    }

    /// Total number of digits of the column type.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Number of digits after the decimal point.
    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// The encoded bytes, exactly as they appear in the row image.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the sign bit marks the value as negative (a negative zero counts).
    pub fn is_negative(&self) -> bool {
        self.bytes.first().is_some_and(|b| b & 0x80 == 0)
    }

    /// Checks that every digit group holds no more digits than its place allows.
    pub fn validate(&self) -> Result<(), ValueError> {
        let scan = self.scan();
        if scan.corrupt {
            return Err(ValueError::Invalid {
                kind: KIND,
                reason: "digit group out of range",
            });
        }
        Ok(())
    }

    /// Reads the group of `digits` digits that starts at byte `pos`, undoing the sign
    /// folding.
    fn group(&self, pos: usize, digits: usize) -> u32 {
        let negative = self.is_negative();
        let mut value = 0u32;
        for i in pos..pos + DIG2BYTES[digits] {
            // `from_binary` sliced exactly `Layout::size` bytes, so every position a group
            // reads exists; a missing byte would only read as zero.
            let mut b = self.bytes.get(i).copied().unwrap_or(0);
            if i == 0 {
                b ^= 0x80;
            }
            if negative {
                b = !b;
            }
            value = (value << 8) | u32::from(b);
        }
        value
    }

    /// Visits every group in storage order as `(value, digits, is_integer_part)`.
    fn for_each_group(
        &self,
        mut visit: impl FnMut(u32, usize, bool) -> fmt::Result,
    ) -> fmt::Result {
        let layout = Layout::new(self.precision, self.scale);
        let mut pos = 0;
        let parts = [
            (layout.int_lead, 1, true),
            (DIGITS_PER_GROUP, layout.int_full, true),
            (DIGITS_PER_GROUP, layout.frac_full, false),
            (layout.frac_tail, 1, false),
        ];
        for (digits, count, integer) in parts {
            if digits == 0 {
                continue;
            }
            for _ in 0..count {
                visit(self.group(pos, digits), digits, integer)?;
                pos += DIG2BYTES[digits];
            }
        }
        Ok(())
    }

    fn scan(&self) -> Scan {
        let mut scan = Scan {
            corrupt: false,
            zero: true,
        };
        // The closure never fails, so the result carries no information.
        let _ = self.for_each_group(|value, digits, _| {
            scan.corrupt |= value >= POW10[digits];
            scan.zero &= value == 0;
            Ok(())
        });
        scan
    }
}

/// What a pass over the groups found.
struct Scan {
    corrupt: bool,
    zero: bool,
}

impl fmt::Display for Decimal<'_> {
    /// Writes the value as SQL shows it: exactly `scale` fraction digits, no leading zeros in
    /// the integer part but at least one digit. A negative zero (never written by the server)
    /// prints without its sign.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scan = self.scan();
        if scan.corrupt {
            return f.write_str("NaN");
        }
        if self.is_negative() && !scan.zero {
            f.write_str("-")?;
        }
        let mut started = false;
        let mut in_fraction = false;
        self.for_each_group(|value, digits, integer| {
            if integer {
                if started {
                    write!(f, "{value:0digits$}")
                } else if value != 0 {
                    started = true;
                    write!(f, "{value}")
                } else {
                    Ok(())
                }
            } else {
                if !in_fraction {
                    in_fraction = true;
                    if !started {
                        started = true;
                        f.write_str("0")?;
                    }
                    f.write_str(".")?;
                }
                write!(f, "{value:0digits$}")
            }
        })?;
        if !started {
            f.write_str("0")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-only encoder following the documented layout: `int_digits` may be shorter than
    /// the integer part (it is left-padded), `frac_digits` must have exactly `scale` digits.
    fn encode(
        precision: u8,
        scale: u8,
        negative: bool,
        int_digits: &str,
        frac_digits: &str,
    ) -> Vec<u8> {
        let int_len = usize::from(precision - scale);
        assert!(int_digits.len() <= int_len);
        assert_eq!(frac_digits.len(), usize::from(scale));
        let padded = format!("{}{}", "0".repeat(int_len - int_digits.len()), int_digits);
        let mut out = Vec::new();
        let mut push_group = |digits: &str| {
            let value: u32 = digits.parse().unwrap();
            let n = DIG2BYTES[digits.len()];
            out.extend_from_slice(&value.to_be_bytes()[4 - n..]);
        };
        let lead = int_len % 9;
        if lead > 0 {
            push_group(&padded[..lead]);
        }
        for chunk in padded.as_bytes()[lead..].chunks(9) {
            push_group(std::str::from_utf8(chunk).unwrap());
        }
        for chunk in frac_digits.as_bytes().chunks(9) {
            push_group(std::str::from_utf8(chunk).unwrap());
        }
        if negative {
            for b in &mut out {
                *b = !*b;
            }
        }
        out[0] ^= 0x80;
        out
    }

    fn show(bytes: &[u8], precision: u8, scale: u8) -> String {
        let (d, used) = Decimal::from_binary(bytes, precision, scale).unwrap();
        assert_eq!(used, decimal_binary_size(precision, scale));
        d.validate().unwrap();
        d.to_string()
    }

    #[test]
    fn sizes_follow_the_group_table() {
        assert_eq!(decimal_binary_size(14, 4), 7);
        assert_eq!(decimal_binary_size(10, 2), 5);
        assert_eq!(decimal_binary_size(1, 0), 1);
        assert_eq!(decimal_binary_size(4, 4), 2);
        assert_eq!(decimal_binary_size(9, 0), 4);
        assert_eq!(decimal_binary_size(18, 9), 8);
        assert_eq!(decimal_binary_size(65, 30), 30);
        assert_eq!(decimal_binary_size(65, 0), 29);
    }

    #[test]
    fn documented_example_14_4() {
        // 1234567890.1234: lead group "1" in one byte, 234567890 = 0x0DFB38D2, 1234 = 0x04D2.
        let positive = [0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2];
        assert_eq!(show(&positive, 14, 4), "1234567890.1234");
        let negative = [0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D];
        assert_eq!(show(&negative, 14, 4), "-1234567890.1234");
        assert_eq!(encode(14, 4, false, "1234567890", "1234"), positive);
        assert_eq!(encode(14, 4, true, "1234567890", "1234"), negative);
    }

    #[test]
    fn keeps_scale_and_one_integer_zero() {
        // DECIMAL(10,2): 8 integer digits (4 bytes), 2 fraction digits (1 byte).
        assert_eq!(show(&[0x80, 0, 0, 1, 50], 10, 2), "1.50");
        assert_eq!(show(&[0x80, 0, 0, 0, 0], 10, 2), "0.00");
        assert_eq!(show(&[0x7F, 0xFF, 0xFF, 0xFF, !50], 10, 2), "-0.50");
        assert_eq!(show(&[0x7F, 0xFF, 0xFF, 0xFF, 0xFF], 10, 2), "0.00");
        assert_eq!(show(&[0x80, 0x98, 0x96, 0x7F, 99], 10, 2), "9999999.99");
    }

    #[test]
    fn small_and_fraction_only_types() {
        assert_eq!(show(&[0x87], 1, 0), "7");
        assert_eq!(show(&[0x80], 1, 0), "0");
        assert_eq!(show(&[!0x89], 1, 0), "-9");
        // DECIMAL(4,4) 0.1234: no integer bytes, 1234 = 0x04D2.
        assert_eq!(show(&[0x84, 0xD2], 4, 4), "0.1234");
        assert_eq!(show(&[!0x84, !0xD2], 4, 4), "-0.1234");
        // DECIMAL(9,0) and DECIMAL(9,9): one whole group.
        assert_eq!(show(&[0x80, 0, 0, 0x2A], 9, 0), "42");
        assert_eq!(show(&[0x80, 0, 0, 0x2A], 9, 9), "0.000000042");
    }

    #[test]
    fn max_65_30_is_exact() {
        let int = "9".repeat(35);
        let frac = "9".repeat(30);
        let bytes = encode(65, 30, false, &int, &frac);
        assert_eq!(bytes.len(), 30);
        assert_eq!(show(&bytes, 65, 30), format!("{int}.{frac}"));
        let bytes = encode(65, 30, true, &int, &frac);
        assert_eq!(show(&bytes, 65, 30), format!("-{int}.{frac}"));
        let int = "12345678901234567890123456789012345";
        let frac = "000000000000000000000000000001";
        let bytes = encode(65, 30, true, int, frac);
        assert_eq!(show(&bytes, 65, 30), format!("-{int}.{frac}"));
    }

    #[test]
    fn inner_zero_groups_keep_their_width() {
        let bytes = encode(30, 0, false, "1000000000000000000000000000", "");
        assert_eq!(show(&bytes, 30, 0), "1000000000000000000000000000");
        let bytes = encode(20, 10, false, "5", "0000000001");
        assert_eq!(show(&bytes, 20, 10), "5.0000000001");
    }

    #[test]
    fn rejects_bad_metadata_and_short_input() {
        let bytes = [0x80; 40];
        for (p, s) in [(0, 0), (66, 0), (10, 31), (4, 5)] {
            assert!(matches!(
                Decimal::from_binary(&bytes, p, s),
                Err(ValueError::Invalid { .. })
            ));
        }
        assert_eq!(
            Decimal::from_binary(&bytes[..6], 14, 4),
            Err(ValueError::Truncated {
                needed: 7,
                available: 6
            })
        );
    }

    #[test]
    fn corrupt_groups_fail_validation_and_print_nan() {
        // Lead group of one digit holding 10.
        let (d, _) = Decimal::from_binary(&[0x8A], 1, 0).unwrap();
        assert!(d.validate().is_err());
        assert_eq!(d.to_string(), "NaN");
        // Whole group holding 1_000_000_000 = 0x3B9ACA00.
        let (d, _) = Decimal::from_binary(&[0xBB, 0x9A, 0xCA, 0x00], 9, 0).unwrap();
        assert!(d.validate().is_err());
        assert_eq!(d.to_string(), "NaN");
        // Tail group of two digits (one byte) holding 100.
        let (d, _) = Decimal::from_binary(&[0x80, 0, 0, 0, 100], 10, 2).unwrap();
        assert!(d.validate().is_err());
    }

    /// xorshift64*: a fixed-seed generator, so property failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn round_trips_random_values() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let precision = 1 + rng.below(65) as u8;
            let scale = rng.below(u64::from(precision.min(30)) + 1) as u8;
            let int_len = usize::from(precision - scale);
            // Vary the number of significant integer digits so leading zeros get stripped.
            let used = rng.below(int_len as u64 + 1) as usize;
            let digit = |rng: &mut Rng| char::from(b'0' + rng.below(10) as u8);
            let int: String = (0..used).map(|_| digit(&mut rng)).collect();
            let frac: String = (0..scale).map(|_| digit(&mut rng)).collect();
            let negative = rng.below(2) == 1;
            let bytes = encode(precision, scale, negative, &int, &frac);

            let trimmed = int.trim_start_matches('0');
            let int_text = if trimmed.is_empty() { "0" } else { trimmed };
            let zero = trimmed.is_empty() && frac.bytes().all(|b| b == b'0');
            let sign = if negative && !zero { "-" } else { "" };
            let expected = if scale == 0 {
                format!("{sign}{int_text}")
            } else {
                format!("{sign}{int_text}.{frac}")
            };
            assert_eq!(
                show(&bytes, precision, scale),
                expected,
                "DECIMAL({precision},{scale})"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        let mut buf = [0u8; 30];
        for _ in 0..20_000 {
            for b in &mut buf {
                *b = rng.next() as u8;
            }
            let precision = rng.below(70) as u8;
            let scale = rng.below(35) as u8;
            let len = rng.below(31) as usize;
            if let Ok((d, _)) = Decimal::from_binary(&buf[..len], precision, scale) {
                let text = d.to_string();
                assert_eq!(d.validate().is_ok(), text != "NaN");
            }
        }
    }
}

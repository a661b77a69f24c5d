//! SQL literals and prepared-statement parameters for [`ValueRef`]s, written into a reused
//! byte buffer with no allocation per value.
//!
//! The fast path sends values as parameters ([`push_param`]; module `apply`, "Prepared
//! statements"); careful mode and single-row statements as literals in their text. A
//! parameter stands for exactly what the literal does: the same number, the literal's text
//! for dates and times, the bytes for strings (the statement's placeholder carries the
//! introducer's character set where it matters). Each literal reads back as exactly the
//! value the source stored, given the session the applier sets up (`SET NAMES binary`, `time_zone = '+00:00'`, an `sql_mode`
//! without `NO_BACKSLASH_ESCAPES`):
//!
//! | value | literal | why it is exact |
//! |---|---|---|
//! | integers, YEAR, ENUM index, SET bits, BIT | decimal digits | integer assignment; ENUM/SET take an index/bitmask, YEAR 0 stays 0000 |
//! | FLOAT, DOUBLE | shortest round-trip text of the value as a double (`1.5e0`) | a FLOAT widens to a double exactly, and the server parses the text back to the same double |
//! | DECIMAL | its text, unquoted, checked to be `-?digits[.digits]` | an exact-value literal (at most 65 digits) |
//! | DATE, DATETIME, TIME | `'2024-02-29 23:59:59.123456'` | zero dates and over-24-hour times included (the mode is not strict) |
//! | TIMESTAMP | its UTC date and time as text | the session time zone is UTC; 0 is the zero timestamp |
//! | text | `_charset'...'` | the introducer takes the bytes as they are, in the source column's charset |
//! | binary, GEOMETRY (SRID + WKB, the server's own form) | `'...'` | a binary string with `SET NAMES binary` |
//! | JSON | `_utf8mb4'...'` | JSON text is UTF-8 |
//!
//! Inside quotes only `\`, `'` and NUL are escaped, byte by byte, which is safe for any
//! bytes because the connection character set is `binary` (no multi-byte lexing).

use std::fmt::Write as _;

use outflow_core::{DateTime, Timestamp, ValueRef};
use outflow_replication::protocol::stmt::{push_tagged, push_tagged_bytes_with, Param};

/// A value that has no SQL literal (it cannot come from a real server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    /// NaN or an infinity.
    #[error("a {0} value that is not finite")]
    NotFinite(&'static str),
    /// DECIMAL text that is not `-?digits[.digits]`.
    #[error("a DECIMAL value that is not a decimal number")]
    BadDecimal,
}

/// Appends `bytes` quoted, escaping `\`, `'` and NUL.
pub fn push_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\'' => b"\\'",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

/// Appends `bytes` quoted like [`push_quoted`], followed by zero bytes up to `len`.
pub fn push_quoted_padded(out: &mut Vec<u8>, bytes: &[u8], len: usize) {
    push_quoted(out, bytes);
    out.pop();
    for _ in bytes.len()..len {
        out.extend_from_slice(b"\\0");
    }
    out.push(b'\'');
}

/// Adapts a byte buffer to `fmt::Write` for numbers and dates (always ASCII).
struct Ascii<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn finite(v: f64, what: &'static str) -> Result<f64, LiteralError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(LiteralError::NotFinite(what))
    }
}

fn push_double(out: &mut Vec<u8>, v: f64, what: &'static str) -> Result<(), LiteralError> {
    let v = finite(v, what)?;
    // `{:e}` prints the shortest digits that read back as the same double, in a form the
    // server parses as a DOUBLE (an exponent makes it approximate-value, not DECIMAL).
    let _ = write!(Ascii(out), "{v:e}");
    Ok(())
}

fn push_decimal(out: &mut Vec<u8>, text: &[u8]) -> Result<(), LiteralError> {
    out.extend_from_slice(checked_decimal(text)?);
    Ok(())
}

/// `text` if it is `-?digits[.digits]`.
fn checked_decimal(text: &[u8]) -> Result<&[u8], LiteralError> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(p) => (&digits[..p], Some(&digits[p + 1..])),
        None => (digits, None),
    };
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(LiteralError::BadDecimal);
    }
    Ok(text)
}

fn push_fraction(w: &mut impl std::fmt::Write, micros: u32) {
    if micros != 0 {
        let _ = write!(w, ".{micros:06}");
    }
}

/// The server's text of a DATE, TIME, DATETIME or TIMESTAMP (UTC), unquoted, into `w`;
/// false for other values.
fn write_temporal<W: std::fmt::Write>(w: &mut W, v: ValueRef<'_>) -> bool {
    let datetime = |w: &mut W, d: &DateTime| {
        let _ = write!(
            w,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year, d.month, d.day, d.hour, d.minute, d.second
        );
        push_fraction(w, d.micros);
    };
    match v {
        ValueRef::Date(d) => {
            let _ = write!(w, "{:04}-{:02}-{:02}", d.year, d.month, d.day);
        }
        ValueRef::Time(t) => {
            let sign = if t.negative { "-" } else { "" };
            let _ = write!(w, "{sign}{:02}:{:02}:{:02}", t.hours, t.minutes, t.seconds);
            push_fraction(w, t.micros);
        }
        ValueRef::DateTime(d) => datetime(w, &d),
        ValueRef::Timestamp(ts) => datetime(w, &timestamp_to_utc(ts)),
        _ => return false,
    }
    true
}

/// A fixed buffer for a temporal value's text (at most 26 bytes), so that it can be
/// measured before it is written.
struct Short {
    buf: [u8; 40],
    len: usize,
}

impl std::fmt::Write for Short {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The UTC calendar date and time of `ts` (0 is MySQL's zero timestamp, `0000-00-00`).
pub fn timestamp_to_utc(ts: Timestamp) -> DateTime {
    if ts.seconds == 0 && ts.micros == 0 {
        return DateTime::default();
    }
    let secs = i64::from(ts.seconds);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u8,
        minute: (rem / 60 % 60) as u8,
        second: (rem % 60) as u8,
        micros: ts.micros,
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (u16, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u16, month as u8, day as u8)
}

/// Appends `v` as a literal. `charset` is the introducer for text (`utf8mb4`, `latin1`, ...).
pub fn push_value(out: &mut Vec<u8>, v: ValueRef<'_>, charset: &str) -> Result<(), LiteralError> {
    match v {
        ValueRef::Null => out.extend_from_slice(b"NULL"),
        ValueRef::Int(x) => {
            let _ = write!(Ascii(out), "{x}");
        }
        ValueRef::UInt(x) | ValueRef::Set(x) | ValueRef::Bit(x) => {
            let _ = write!(Ascii(out), "{x}");
        }
        ValueRef::Year(x) | ValueRef::Enum(x) => {
            let _ = write!(Ascii(out), "{x}");
        }
        ValueRef::Float(x) => push_double(out, f64::from(x), "FLOAT")?,
        ValueRef::Double(x) => push_double(out, x, "DOUBLE")?,
        ValueRef::Decimal(text) => push_decimal(out, text)?,
        ValueRef::Date(_) | ValueRef::Time(_) | ValueRef::DateTime(_) | ValueRef::Timestamp(_) => {
            out.push(b'\'');
            write_temporal(&mut Ascii(out), v);
            out.push(b'\'');
        }
        ValueRef::Text(bytes) => {
            out.push(b'_');
            out.extend_from_slice(charset.as_bytes());
            push_quoted(out, bytes);
        }
        ValueRef::Json(bytes) => {
            out.extend_from_slice(b"_utf8mb4");
            push_quoted(out, bytes);
        }
        ValueRef::Bytes(bytes) | ValueRef::Geometry(bytes) => push_quoted(out, bytes),
    }
    Ok(())
}

/// Appends `v` as a prepared-statement parameter, in [`push_tagged`]'s form: the value
/// the literal of [`push_value`] stands for, with the same checks. Text goes as bytes; the
/// statement's placeholder says which character set they are in (`TablePlan`'s
/// placeholders), as the literal's introducer does.
pub fn push_param(out: &mut Vec<u8>, v: ValueRef<'_>) -> Result<(), LiteralError> {
    let p = match v {
        ValueRef::Null => Param::Null,
        ValueRef::Int(x) => Param::Int(x),
        ValueRef::UInt(x) | ValueRef::Set(x) | ValueRef::Bit(x) => Param::UInt(x),
        ValueRef::Year(x) | ValueRef::Enum(x) => Param::UInt(u64::from(x)),
        ValueRef::Float(x) => Param::Double(finite(f64::from(x), "FLOAT")?),
        ValueRef::Double(x) => Param::Double(finite(x, "DOUBLE")?),
        ValueRef::Decimal(text) => Param::Decimal(checked_decimal(text)?),
        ValueRef::Date(_) | ValueRef::Time(_) | ValueRef::DateTime(_) | ValueRef::Timestamp(_) => {
            let mut text = Short {
                buf: [0; 40],
                len: 0,
            };
            write_temporal(&mut text, v);
            push_tagged(out, Param::Bytes(&text.buf[..text.len]));
            return Ok(());
        }
        ValueRef::Text(b) | ValueRef::Json(b) | ValueRef::Bytes(b) | ValueRef::Geometry(b) => {
            Param::Bytes(b)
        }
    };
    push_tagged(out, p);
    Ok(())
}

/// Appends bytes padded with zeros to `len`, as a parameter (see [`push_quoted_padded`]).
pub fn push_param_padded(out: &mut Vec<u8>, bytes: &[u8], len: usize) {
    let len = len.max(bytes.len());
    push_tagged_bytes_with(out, len, |out| {
        out.extend_from_slice(bytes);
        out.resize(out.len() + len - bytes.len(), 0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::{Date, Time};
    use outflow_replication::protocol::stmt::read_tagged;

    fn param(v: ValueRef<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        push_param(&mut out, v).expect("parameter");
        out
    }

    #[test]
    fn parameters_stand_for_what_the_literals_do() {
        let read = |b: &[u8]| -> String {
            let (p, n) = read_tagged(b).expect("tagged");
            assert_eq!(n, b.len());
            format!("{p:?}")
        };
        assert_eq!(read(&param(ValueRef::Int(-5))), "Int(-5)");
        assert_eq!(read(&param(ValueRef::Enum(2))), "UInt(2)");
        assert_eq!(
            read(&param(ValueRef::Bit(u64::MAX))),
            format!("UInt({})", u64::MAX)
        );
        assert_eq!(
            read(&param(ValueRef::Float(0.1))),
            format!("Double({:?})", f64::from(0.1f32))
        );
        assert_eq!(
            read(&param(ValueRef::Decimal(b"-1.50"))),
            "Decimal([45, 49, 46, 53, 48])"
        );
        let text = |v| {
            let b = param(v);
            let (p, _) = read_tagged(&b).expect("tagged");
            match p {
                Param::Bytes(b) => String::from_utf8(b.to_vec()).expect("ascii"),
                other => panic!("{other:?}"),
            }
        };
        // The literal's text, without its quotes.
        for v in [
            ValueRef::Time(Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 59,
                micros: 5,
            }),
            ValueRef::Timestamp(Timestamp {
                seconds: 2_147_483_647,
                micros: 990_000,
            }),
            ValueRef::Date(Date {
                year: 0,
                month: 0,
                day: 0,
            }),
        ] {
            assert_eq!(format!("'{}'", text(v)), lit(v));
        }
        let mut out = Vec::new();
        assert_eq!(
            push_param(&mut out, ValueRef::Double(f64::INFINITY)),
            Err(LiteralError::NotFinite("DOUBLE"))
        );
        assert_eq!(
            push_param(&mut out, ValueRef::Decimal(b"1e5")),
            Err(LiteralError::BadDecimal)
        );
        assert!(out.is_empty(), "nothing written for a refused value");
        push_param_padded(&mut out, b"ab", 4);
        assert_eq!(read(&out), format!("Bytes({:?})", b"ab\0\0"));
    }

    fn lit(v: ValueRef<'_>) -> String {
        let mut out = Vec::new();
        push_value(&mut out, v, "latin1").expect("literal");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn quoting_escapes_only_what_the_lexer_needs() {
        let mut out = Vec::new();
        push_quoted(&mut out, b"a'b\\c\0d\n\xff");
        assert_eq!(out, b"'a\\'b\\\\c\\0d\n\xff'");
    }

    #[test]
    fn padding_restores_trailing_zeros() {
        let mut out = Vec::new();
        push_quoted_padded(&mut out, b"a'", 4);
        assert_eq!(out, b"'a\\'\\0\\0'");
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(lit(ValueRef::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(lit(ValueRef::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(lit(ValueRef::Double(0.1)), "1e-1");
        assert_eq!(
            lit(ValueRef::Double(f64::from_bits(0.1f64.to_bits() + 1))),
            "1.0000000000000002e-1"
        );
        // A FLOAT is written as the double it widens to, every digit of it.
        assert_eq!(lit(ValueRef::Float(0.1)), "1.0000000149011612e-1");
        assert_eq!(lit(ValueRef::Float(3.4e38)), "3.3999999521443642e38");
        assert_eq!(lit(ValueRef::Double(-0.0)), "-0e0");
        let mut out = Vec::new();
        assert_eq!(
            push_value(&mut out, ValueRef::Double(f64::NAN), ""),
            Err(LiteralError::NotFinite("DOUBLE"))
        );
        assert_eq!(lit(ValueRef::Decimal(b"-12.500")), "-12.500");
        for bad in [&b"1;DROP"[..], b"", b"-", b"1.", b".5", b"1e5", b"--1"] {
            assert_eq!(
                push_value(&mut out, ValueRef::Decimal(bad), ""),
                Err(LiteralError::BadDecimal),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn temporal_values_keep_zero_dates_and_fractions() {
        assert_eq!(
            lit(ValueRef::Date(Date {
                year: 0,
                month: 0,
                day: 0
            })),
            "'0000-00-00'"
        );
        assert_eq!(
            lit(ValueRef::Time(Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 59,
                micros: 5
            })),
            "'-838:59:59.000005'"
        );
        assert_eq!(
            lit(ValueRef::DateTime(DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 58,
                micros: 0
            })),
            "'2024-02-29 23:59:58'"
        );
        assert_eq!(
            lit(ValueRef::Timestamp(Timestamp {
                seconds: 0,
                micros: 0
            })),
            "'0000-00-00 00:00:00'"
        );
        assert_eq!(
            lit(ValueRef::Timestamp(Timestamp {
                seconds: 2_147_483_647,
                micros: 990_000
            })),
            "'2038-01-19 03:14:07.990000'"
        );
        assert_eq!(
            lit(ValueRef::Timestamp(Timestamp {
                seconds: 951_782_400,
                micros: 0
            })),
            "'2000-02-29 00:00:00'"
        );
    }

    #[test]
    fn strings_carry_their_charset() {
        assert_eq!(lit(ValueRef::Text(b"caf\xe9")), "_latin1'caf\u{fffd}'");
        assert_eq!(lit(ValueRef::Json(b"{\"a\":1}")), "_utf8mb4'{\"a\":1}'");
        assert_eq!(lit(ValueRef::Bytes(b"\0\x01")), "'\\0\u{1}'");
        assert_eq!(lit(ValueRef::Enum(2)), "2");
        assert_eq!(lit(ValueRef::Bit(u64::MAX)), "18446744073709551615");
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(24_855), (2038, 1, 19));
        assert_eq!(civil_from_days(49_710), (2106, 2, 7));
    }
}

//! Date and time values in their row-image forms.
//!
//! # Layouts
//! | type | code | bytes | layout |
//! | --- | --- | --- | --- |
//! | `DATE` | 10 | 3, little-endian | `year << 9 \| month << 5 \| day` |
//! | `TIME` (old) | 11 | 3, little-endian, signed | `HHMMSS` as a decimal number |
//! | `DATETIME` (old) | 12 | 8, little-endian | `YYYYMMDDhhmmss` as a decimal number |
//! | `TIMESTAMP` (old) | 7 | 4, little-endian | seconds since the epoch |
//! | `TIME2` | 19 | 3 + frac, big-endian | packed `hour << 12 \| minute << 6 \| second`, offset by `0x800000` |
//! | `DATETIME2` | 18 | 5 + frac, big-endian | sign bit, `year * 13 + month` (17 bits), day (5), hour (5), minute (6), second (6), offset by `0x80_0000_0000` |
//! | `TIMESTAMP2` | 17 | 4 + frac, big-endian | seconds since the epoch |
//!
//! The `*2` types append [`fsp_bytes`] bytes of fraction: one byte of hundredths for
//! precision 1–2, two bytes of ten-thousandths for 3–4, three bytes of microseconds for 5–6.
//! A negative `TIME2` stores its fraction in reverse order so that `memcmp` sorts values;
//! decoding rebuilds MySQL's in-memory "packed" integer (`intpart << 24 + microseconds`,
//! negated as a whole for negative times) and splits that, exactly as the server does.
//!
//! # Invariants and recovery
//! Zero dates and zero parts (`0000-00-00`, day 0) are valid MySQL values and decode as they
//! are. Fields that the server cannot write (month 13, minute 60, a fraction of a million
//! microseconds, a negative `DATETIME`) come only from a corrupt row image and are reported
//! as [`ValueError::Invalid`], so every decoded value prints as a well-formed string.

use core::fmt;

use super::ValueError;

/// Largest fractional-seconds precision a column can declare.
const MAX_FSP: u8 = 6;
/// Offset added to the integer part of a `TIME2` value so it sorts as unsigned.
const TIME2_INT_OFFSET: i64 = 0x80_0000;
/// Offset added to a whole `TIME2(5..6)` value, integer and fraction together.
const TIME2_OFFSET: i64 = 0x8000_0000_0000;
/// Offset added to the integer part of a `DATETIME2` value.
const DATETIME2_INT_OFFSET: i64 = 0x80_0000_0000;
/// Microseconds live in the low 24 bits of a packed time.
const FRAC_BITS: u32 = 24;

/// Bytes of fraction that follow a `TIME2`, `DATETIME2` or `TIMESTAMP2` of precision `fsp`.
///
/// A precision above 6 is not a valid column; it is sized as 6 here, and the constructors
/// reject it.
pub fn fsp_bytes(fsp: u8) -> usize {
    usize::from(fsp.min(MAX_FSP)).div_ceil(2)
}

fn check_fsp(fsp: u8, kind: &'static str) -> Result<usize, ValueError> {
    if fsp > MAX_FSP {
        return Err(ValueError::Invalid {
            kind,
            reason: "fractional precision above 6",
        });
    }
    Ok(fsp_bytes(fsp))
}

fn take<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], ValueError> {
    let truncated = ValueError::Truncated {
        needed: at + N,
        available: buf.len(),
    };
    buf.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(truncated)
}

fn need(buf: &[u8], n: usize) -> Result<(), ValueError> {
    if buf.len() < n {
        return Err(ValueError::Truncated {
            needed: n,
            available: buf.len(),
        });
    }
    Ok(())
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Reads the unsigned big-endian fraction of a `DATETIME2` or `TIMESTAMP2` and scales it to
/// microseconds.
fn read_fraction(bytes: &[u8], kind: &'static str) -> Result<u32, ValueError> {
    let raw = be(bytes);
    let (limit, scale) = match bytes.len() {
        0 => return Ok(0),
        1 => (100, 10_000),
        2 => (10_000, 100),
        _ => (1_000_000, 1),
    };
    if raw >= limit {
        return Err(ValueError::Invalid {
            kind,
            reason: "fraction out of range",
        });
    }
    // Below a million after scaling, so it fits.
    Ok((raw * scale) as u32)
}

/// Writes `.` and the first `fsp` digits of `micros`, or nothing when `fsp` is 0.
fn write_fraction(w: &mut impl fmt::Write, micros: u32, fsp: u8) -> fmt::Result {
    if fsp == 0 {
        return Ok(());
    }
    let fsp = fsp.min(MAX_FSP);
    let digits = usize::from(fsp);
    let shown = micros / 10u32.pow(u32::from(MAX_FSP - fsp));
    write!(w, ".{shown:0digits$}")
}

/// A `DATE` value; zero parts are allowed, as in MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12 (0 in a zero date).
    pub month: u8,
    /// Day of the month, 0..=31 (0 in a zero date).
    pub day: u8,
}

impl Date {
    /// Decodes a `DATE` (type 10) from the start of `buf`, returning it and its size (3).
    pub fn from_binary(buf: &[u8]) -> Result<(Date, usize), ValueError> {
        let v = le(&take::<3>(buf, 0)?);
        let date = Date {
            year: (v >> 9) as u16,
            month: ((v >> 5) & 15) as u8,
            day: (v & 31) as u8,
        };
        if date.year > 9999 || date.month > 12 {
            return Err(ValueError::Invalid {
                kind: "date",
                reason: "year or month out of range",
            });
        }
        Ok((date, 3))
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A `TIME` value: a signed duration of up to 838 hours (the type allows more bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// Whether the duration is negative.
    pub negative: bool,
    /// Whole hours, possibly above 24.
    pub hours: u32,
    /// Minutes, 0..=59.
    pub minutes: u8,
    /// Seconds, 0..=59.
    pub seconds: u8,
    /// Microseconds, 0..=999_999.
    pub micros: u32,
    /// Fraction digits the column declares, 0..=6; `Display` prints that many.
    pub fsp: u8,
}

impl Time {
    /// Decodes a `TIME2` (type 19) of precision `fsp` from the start of `buf`, returning it
    /// and its size (3 plus [`fsp_bytes`]).
    pub fn from_time2(buf: &[u8], fsp: u8) -> Result<(Time, usize), ValueError> {
        let frac_len = check_fsp(fsp, "time")?;
        let size = 3 + frac_len;
        need(buf, size)?;
        let int_part = be(&buf[..3]) as i64 - TIME2_INT_OFFSET;
        // Rebuild the server's packed integer. For a negative time with a fraction, the stored
        // integer part was rounded down and the fraction stored as its complement, so step
        // the integer part back up and make the fraction negative.
        let packed = match frac_len {
            0 => int_part << FRAC_BITS,
            1 | 2 => {
                let (mut int_part, mut frac) = (int_part, be(&buf[3..size]) as i64);
                if int_part < 0 && frac != 0 {
                    int_part += 1;
                    frac -= if frac_len == 1 { 0x100 } else { 0x1_0000 };
                }
                let scale = if frac_len == 1 { 10_000 } else { 100 };
                (int_part << FRAC_BITS) + frac * scale
            }
            _ => be(&buf[..6]) as i64 - TIME2_OFFSET,
        };
        Ok((Time::from_packed(packed, fsp)?, size))
    }

    /// Decodes an old-format `TIME` (type 11) from the start of `buf`, returning it and its
    /// size (3).
    pub fn from_time_v1(buf: &[u8]) -> Result<(Time, usize), ValueError> {
        let raw = le(&take::<3>(buf, 0)?) as u32;
        // Sign-extend the 24-bit value.
        let value = ((raw << 8) as i32) >> 8;
        let abs = value.unsigned_abs();
        let time = Time {
            negative: value < 0,
            hours: abs / 10_000,
            minutes: (abs / 100 % 100) as u8,
            seconds: (abs % 100) as u8,
            micros: 0,
            fsp: 0,
        };
        time.check()?;
        Ok((time, 3))
    }

    /// Splits MySQL's packed time integer (`hms << 24 + micros`, negated when negative).
    pub(crate) fn from_packed(packed: i64, fsp: u8) -> Result<Time, ValueError> {
        let abs = packed.unsigned_abs();
        let hms = abs >> FRAC_BITS;
        if hms >> 22 != 0 {
            return Err(ValueError::Invalid {
                kind: "time",
                reason: "hours out of range",
            });
        }
        let time = Time {
            negative: packed < 0,
            hours: (hms >> 12) as u32,
            minutes: ((hms >> 6) & 63) as u8,
            seconds: (hms & 63) as u8,
            micros: (abs & ((1 << FRAC_BITS) - 1)) as u32,
            fsp,
        };
        time.check()?;
        Ok(time)
    }

    fn check(&self) -> Result<(), ValueError> {
        if self.minutes > 59 || self.seconds > 59 || self.micros > 999_999 {
            return Err(ValueError::Invalid {
                kind: "time",
                reason: "minutes, seconds or fraction out of range",
            });
        }
        Ok(())
    }

    /// Writes `[-]HH:MM:SS` and `fsp` fraction digits.
    pub(crate) fn write_with_fsp(&self, w: &mut impl fmt::Write, fsp: u8) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(
            w,
            "{sign}{:02}:{:02}:{:02}",
            self.hours, self.minutes, self.seconds
        )?;
        write_fraction(w, self.micros, fsp)
    }
}

impl fmt::Display for Time {
    /// `[-]HH:MM:SS[.f…]` with `fsp` fraction digits; hours may have three digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_with_fsp(f, self.fsp)
    }
}

/// A `DATETIME` value, without a time zone; zero parts are allowed, as in MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12 (0 in a zero date).
    pub month: u8,
    /// Day of the month, 0..=31 (0 in a zero date).
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Microseconds, 0..=999_999.
    pub micros: u32,
    /// Fraction digits the column declares, 0..=6; `Display` prints that many.
    pub fsp: u8,
}

impl DateTime {
    /// Decodes a `DATETIME2` (type 18) of precision `fsp` from the start of `buf`, returning
    /// it and its size (5 plus [`fsp_bytes`]).
    pub fn from_datetime2(buf: &[u8], fsp: u8) -> Result<(DateTime, usize), ValueError> {
        let frac_len = check_fsp(fsp, "datetime")?;
        let size = 5 + frac_len;
        need(buf, size)?;
        let int_part = be(&buf[..5]) as i64 - DATETIME2_INT_OFFSET;
        if int_part < 0 {
            return Err(ValueError::Invalid {
                kind: "datetime",
                reason: "negative value",
            });
        }
        let micros = read_fraction(&buf[5..size], "datetime")?;
        let packed = (int_part << FRAC_BITS) | i64::from(micros);
        Ok((DateTime::from_packed(packed, fsp)?, size))
    }

    /// Decodes an old-format `DATETIME` (type 12) from the start of `buf`, returning it and
    /// its size (8).
    pub fn from_datetime_v1(buf: &[u8]) -> Result<(DateTime, usize), ValueError> {
        let v = le(&take::<8>(buf, 0)?);
        let (date, time) = (v / 1_000_000, v % 1_000_000);
        if date / 10_000 > 9999 {
            return Err(ValueError::Invalid {
                kind: "datetime",
                reason: "year out of range",
            });
        }
        let dt = DateTime {
            year: (date / 10_000) as u16,
            month: (date / 100 % 100) as u8,
            day: (date % 100) as u8,
            hour: (time / 10_000) as u8,
            minute: (time / 100 % 100) as u8,
            second: (time % 100) as u8,
            micros: 0,
            fsp: 0,
        };
        dt.check()?;
        Ok((dt, 8))
    }

    /// Splits MySQL's packed datetime integer (`ymdhms << 24 + micros`).
    pub(crate) fn from_packed(packed: i64, fsp: u8) -> Result<DateTime, ValueError> {
        if packed < 0 {
            return Err(ValueError::Invalid {
                kind: "datetime",
                reason: "negative value",
            });
        }
        let packed = packed as u64;
        let ymdhms = packed >> FRAC_BITS;
        let ymd = ymdhms >> 17;
        let ym = ymd >> 5;
        let hms = ymdhms & 0x1_FFFF;
        if ym / 13 > 9999 {
            return Err(ValueError::Invalid {
                kind: "datetime",
                reason: "year out of range",
            });
        }
        let dt = DateTime {
            year: (ym / 13) as u16,
            month: (ym % 13) as u8,
            day: (ymd & 31) as u8,
            hour: (hms >> 12) as u8,
            minute: ((hms >> 6) & 63) as u8,
            second: (hms & 63) as u8,
            micros: (packed & ((1 << FRAC_BITS) - 1)) as u32,
            fsp,
        };
        dt.check()?;
        Ok(dt)
    }

    fn check(&self) -> Result<(), ValueError> {
        if self.month > 12
            || self.day > 31
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
            || self.micros > 999_999
        {
            return Err(ValueError::Invalid {
                kind: "datetime",
                reason: "field out of range",
            });
        }
        Ok(())
    }

    /// Writes `YYYY-MM-DD`, `separator`, `HH:MM:SS` and `fsp` fraction digits.
    pub(crate) fn write_with(
        &self,
        w: &mut impl fmt::Write,
        separator: char,
        fsp: u8,
    ) -> fmt::Result {
        write!(
            w,
            "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        write_fraction(w, self.micros, fsp)
    }
}

impl fmt::Display for DateTime {
    /// `YYYY-MM-DDTHH:MM:SS[.f…]` with `fsp` fraction digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_with(f, 'T', self.fsp)
    }
}

/// A `TIMESTAMP` value: seconds since 1970-01-01 UTC, where 0 is MySQL's zero timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the epoch; 0 stands for `0000-00-00 00:00:00`.
    pub seconds: u32,
    /// Microseconds, 0..=999_999.
    pub micros: u32,
    /// Fraction digits the column declares, 0..=6; `Display` prints that many.
    pub fsp: u8,
}

impl Timestamp {
    /// Decodes a `TIMESTAMP2` (type 17) of precision `fsp` from the start of `buf`, returning
    /// it and its size (4 plus [`fsp_bytes`]).
    pub fn from_timestamp2(buf: &[u8], fsp: u8) -> Result<(Timestamp, usize), ValueError> {
        let frac_len = check_fsp(fsp, "timestamp")?;
        let size = 4 + frac_len;
        need(buf, size)?;
        let ts = Timestamp {
            seconds: be(&buf[..4]) as u32,
            micros: read_fraction(&buf[4..size], "timestamp")?,
            fsp,
        };
        Ok((ts, size))
    }

    /// Decodes an old-format `TIMESTAMP` (type 7) from the start of `buf`, returning it and
    /// its size (4).
    pub fn from_timestamp_v1(buf: &[u8]) -> Result<(Timestamp, usize), ValueError> {
        let seconds = le(&take::<4>(buf, 0)?) as u32;
        Ok((
            Timestamp {
                seconds,
                micros: 0,
                fsp: 0,
            },
            4,
        ))
    }

    /// The same instant as a UTC calendar date and time; the zero timestamp maps to the zero
    /// datetime.
    pub fn to_utc_datetime(&self) -> DateTime {
        let mut dt = DateTime {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            minute: 0,
            second: 0,
            micros: self.micros,
            fsp: self.fsp,
        };
        if self.seconds == 0 {
            return dt;
        }
        let days = self.seconds / 86_400;
        let secs = self.seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        dt.year = year;
        dt.month = month;
        dt.day = day;
        dt.hour = (secs / 3600) as u8;
        dt.minute = (secs / 60 % 60) as u8;
        dt.second = (secs % 60) as u8;
        dt
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month, day)`.
///
/// Counts from 0000-03-01 so that the leap day falls at the end of each year; then a
/// 400-year era has a fixed length and months from March follow a linear pattern.
fn civil_from_days(days: u32) -> (u16, u8, u8) {
    const DAYS_0000_03_01_TO_EPOCH: u32 = 719_468;
    const DAYS_PER_ERA: u32 = 146_097;
    let z = days + DAYS_0000_03_01_TO_EPOCH;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March … 11 = February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u32::from(month <= 2);
    (year as u16, month as u8, day as u8)
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS[.f…]Z` in UTC; the zero timestamp prints as
    /// `0000-00-00T00:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_utc_datetime().write_with(f, 'T', self.fsp)?;
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test-only encoders, following the server's write path for each layout.

    fn time_packed(t: &Time) -> i64 {
        let hms = (i64::from(t.hours) << 12) | (i64::from(t.minutes) << 6) | i64::from(t.seconds);
        let v = (hms << 24) + i64::from(t.micros);
        if t.negative {
            -v
        } else {
            v
        }
    }

    fn encode_time2(t: &Time) -> Vec<u8> {
        let packed = time_packed(t);
        let int_part = ((packed >> 24) + TIME2_INT_OFFSET) as u32;
        // C's `%` truncates toward zero, as Rust's does.
        let frac = packed % (1 << 24);
        let mut out = int_part.to_be_bytes()[1..].to_vec();
        match t.fsp {
            0 => {}
            1 | 2 => out.push((frac / 10_000) as i8 as u8),
            3 | 4 => out.extend_from_slice(&((frac / 100) as i16).to_be_bytes()),
            _ => {
                out = ((packed + TIME2_OFFSET) as u64).to_be_bytes()[2..].to_vec();
            }
        }
        out
    }

    fn encode_datetime2(d: &DateTime) -> Vec<u8> {
        let ym = u64::from(d.year) * 13 + u64::from(d.month);
        let ymd = (ym << 5) | u64::from(d.day);
        let hms = (u64::from(d.hour) << 12) | (u64::from(d.minute) << 6) | u64::from(d.second);
        let int_part = (ymd << 17) | hms;
        let mut out = (int_part + DATETIME2_INT_OFFSET as u64).to_be_bytes()[3..].to_vec();
        push_fraction(&mut out, d.micros, d.fsp);
        out
    }

    fn push_fraction(out: &mut Vec<u8>, micros: u32, fsp: u8) {
        match fsp {
            0 => {}
            1 | 2 => out.push((micros / 10_000) as u8),
            3 | 4 => out.extend_from_slice(&((micros / 100) as u16).to_be_bytes()),
            _ => out.extend_from_slice(&micros.to_be_bytes()[1..]),
        }
    }

    fn encode_timestamp2(t: &Timestamp) -> Vec<u8> {
        let mut out = t.seconds.to_be_bytes().to_vec();
        push_fraction(&mut out, t.micros, t.fsp);
        out
    }

    fn time(negative: bool, hours: u32, minutes: u8, seconds: u8, micros: u32, fsp: u8) -> Time {
        Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
            fsp,
        }
    }

    fn time2(bytes: &[u8], fsp: u8) -> Time {
        let (t, used) = Time::from_time2(bytes, fsp).unwrap();
        assert_eq!(used, bytes.len());
        t
    }

    #[test]
    fn fsp_sizes() {
        let sizes: Vec<usize> = (0..=6).map(fsp_bytes).collect();
        assert_eq!(sizes, [0, 1, 1, 2, 2, 3, 3]);
        assert!(matches!(
            Time::from_time2(&[0; 9], 7),
            Err(ValueError::Invalid { .. })
        ));
        assert!(matches!(
            DateTime::from_datetime2(&[0x80; 9], 7),
            Err(ValueError::Invalid { .. })
        ));
        assert!(matches!(
            Timestamp::from_timestamp2(&[0; 9], 7),
            Err(ValueError::Invalid { .. })
        ));
    }

    #[test]
    fn time2_hand_built() {
        // 00:00:00 is the offset itself.
        assert_eq!(time2(&[0x80, 0x00, 0x00], 0).to_string(), "00:00:00");
        // 12:34:56 → hms = 12 << 12 | 34 << 6 | 56 = 0xC8B8.
        assert_eq!(time2(&[0x80, 0xC8, 0xB8], 0).to_string(), "12:34:56");
        // -12:34:56 → 0x800000 - 0xC8B8.
        assert_eq!(time2(&[0x7F, 0x37, 0x48], 0).to_string(), "-12:34:56");
        // 838:59:59 → hms = 838 << 12 | 59 << 6 | 59 = 0x346EFB.
        assert_eq!(time2(&[0xB4, 0x6E, 0xFB], 0).to_string(), "838:59:59");
        assert_eq!(time2(&[0x4B, 0x91, 0x05], 0).to_string(), "-838:59:59");
        // Rows from the server's own table of negative fractions (precision 2).
        assert_eq!(
            time2(&[0x80, 0x00, 0x00, 0x00], 2).to_string(),
            "00:00:00.00"
        );
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFF, 0xFF], 2).to_string(),
            "-00:00:00.01"
        );
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFF, 0x9D], 2).to_string(),
            "-00:00:00.99"
        );
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFF, 0x00], 2).to_string(),
            "-00:00:01.00"
        );
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFE, 0xFF], 2).to_string(),
            "-00:00:01.01"
        );
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFE, 0xF6], 2).to_string(),
            "-00:00:01.10"
        );
    }

    #[test]
    fn time2_every_precision() {
        let cases = [
            (0, 0, "12:34:56"),
            (1, 500_000, "12:34:56.5"),
            (2, 120_000, "12:34:56.12"),
            (3, 123_000, "12:34:56.123"),
            (4, 123_400, "12:34:56.1234"),
            (5, 123_450, "12:34:56.12345"),
            (6, 123_456, "12:34:56.123456"),
        ];
        for (fsp, micros, text) in cases {
            for negative in [false, true] {
                let t = time(negative, 12, 34, 56, micros, fsp);
                let bytes = encode_time2(&t);
                assert_eq!(bytes.len(), 3 + fsp_bytes(fsp));
                let decoded = time2(&bytes, fsp);
                assert_eq!(decoded, t);
                let sign = if negative { "-" } else { "" };
                assert_eq!(decoded.to_string(), format!("{sign}{text}"));
            }
        }
    }

    #[test]
    fn time2_fraction_only_negatives() {
        for (fsp, micros, text) in [
            (1, 500_000, "-00:00:00.5"),
            (2, 10_000, "-00:00:00.01"),
            (3, 1_000, "-00:00:00.001"),
            (4, 100, "-00:00:00.0001"),
            (5, 10, "-00:00:00.00001"),
            (6, 1, "-00:00:00.000001"),
            (6, 999_999, "-00:00:00.999999"),
        ] {
            let t = time(true, 0, 0, 0, micros, fsp);
            let bytes = encode_time2(&t);
            assert_eq!(time2(&bytes, fsp), t);
            assert_eq!(t.to_string(), text);
        }
        // -00:00:00.5 at precision 1, by hand: integer part rounds down to -1 (0x7FFFFF) and
        // the fraction is stored as 256 - 50 = 206.
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFF, 206], 1).to_string(),
            "-00:00:00.5"
        );
    }

    #[test]
    fn time2_extremes() {
        let max = time(false, 838, 59, 59, 0, 6);
        assert_eq!(max.to_string(), "838:59:59.000000");
        assert_eq!(time2(&encode_time2(&max), 6), max);
        let min = time(true, 838, 59, 59, 0, 6);
        assert_eq!(min.to_string(), "-838:59:59.000000");
        assert_eq!(time2(&encode_time2(&min), 6), min);
        let min = time(true, 838, 59, 59, 999_999, 6);
        assert_eq!(time2(&encode_time2(&min), 6), min);
    }

    #[test]
    fn time2_rejects_corrupt_fields() {
        // Minute 60: hms = 60 << 6.
        assert!(Time::from_time2(&[0x80, 0x0F, 0x00], 0).is_err());
        // Precision 6 fraction of 0xFFFFFF microseconds.
        assert!(Time::from_time2(&[0x80, 0, 0, 0xFF, 0xFF, 0xFF], 6).is_err());
        assert_eq!(
            Time::from_time2(&[0x80, 0, 0, 0], 3),
            Err(ValueError::Truncated {
                needed: 5,
                available: 4
            })
        );
    }

    #[test]
    fn time_v1() {
        let (t, used) = Time::from_time_v1(&123_456u32.to_le_bytes()[..3]).unwrap();
        assert_eq!(used, 3);
        assert_eq!(t.to_string(), "12:34:56");
        let neg = (-8_385_959i32).to_le_bytes();
        assert_eq!(
            Time::from_time_v1(&neg[..3]).unwrap().0.to_string(),
            "-838:59:59"
        );
        assert!(Time::from_time_v1(&1_260u32.to_le_bytes()[..3]).is_err());
        assert!(Time::from_time_v1(&[0, 0]).is_err());
    }

    #[test]
    fn date() {
        // 2024-02-29: 2024 << 9 | 2 << 5 | 29.
        let v: u32 = (2024 << 9) | (2 << 5) | 29;
        let (d, used) = Date::from_binary(&v.to_le_bytes()[..3]).unwrap();
        assert_eq!(used, 3);
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!(
            Date::from_binary(&[0, 0, 0]).unwrap().0.to_string(),
            "0000-00-00"
        );
        let v: u32 = (9999 << 9) | (12 << 5) | 31;
        assert_eq!(
            Date::from_binary(&v.to_le_bytes()[..3])
                .unwrap()
                .0
                .to_string(),
            "9999-12-31"
        );
        let bad_month: u32 = (2024 << 9) | (13 << 5) | 1;
        assert!(Date::from_binary(&bad_month.to_le_bytes()[..3]).is_err());
        assert!(Date::from_binary(&[1, 2]).is_err());
    }

    fn datetime(date: (u16, u8, u8), time: (u8, u8, u8), micros: u32, fsp: u8) -> DateTime {
        DateTime {
            year: date.0,
            month: date.1,
            day: date.2,
            hour: time.0,
            minute: time.1,
            second: time.2,
            micros,
            fsp,
        }
    }

    #[test]
    fn datetime2_hand_built() {
        // 1000-01-01 00:00:00: ym = 13001, so int part = 13001 << 22 | 1 << 17.
        let bytes = [0x8C, 0xB2, 0x42, 0x00, 0x00];
        let (d, used) = DateTime::from_datetime2(&bytes, 0).unwrap();
        assert_eq!(used, 5);
        assert_eq!(d.to_string(), "1000-01-01T00:00:00");
        assert_eq!(encode_datetime2(&d), bytes);
        // The zero datetime is the bare offset.
        let (d, _) = DateTime::from_datetime2(&[0x80, 0, 0, 0, 0], 0).unwrap();
        assert_eq!(d.to_string(), "0000-00-00T00:00:00");
        let (d, _) = DateTime::from_datetime2(&[0x80, 0, 0, 0, 0, 0, 0, 0], 6).unwrap();
        assert_eq!(d.to_string(), "0000-00-00T00:00:00.000000");
    }

    #[test]
    fn datetime2_max_and_precisions() {
        let max = datetime((9999, 12, 31), (23, 59, 59), 999_999, 6);
        let bytes = encode_datetime2(&max);
        assert_eq!(bytes.len(), 8);
        let (d, used) = DateTime::from_datetime2(&bytes, 6).unwrap();
        assert_eq!(used, 8);
        assert_eq!(d, max);
        assert_eq!(d.to_string(), "9999-12-31T23:59:59.999999");
        for (fsp, micros, text) in [
            (1, 900_000, "2021-06-15T08:09:10.9"),
            (2, 990_000, "2021-06-15T08:09:10.99"),
            (3, 999_000, "2021-06-15T08:09:10.999"),
            (4, 999_900, "2021-06-15T08:09:10.9999"),
            (5, 999_990, "2021-06-15T08:09:10.99999"),
        ] {
            let v = datetime((2021, 6, 15), (8, 9, 10), micros, fsp);
            let (d, _) = DateTime::from_datetime2(&encode_datetime2(&v), fsp).unwrap();
            assert_eq!(d, v);
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn datetime2_rejects_corrupt_values() {
        // Sign bit clear: negative.
        assert!(DateTime::from_datetime2(&[0x7F, 0xFF, 0xFF, 0xFF, 0xFF], 0).is_err());
        // Hour 24.
        let bad = encode_datetime2(&datetime((2020, 1, 1), (24, 0, 0), 0, 0));
        assert!(DateTime::from_datetime2(&bad, 0).is_err());
        // Fraction byte of 100 hundredths.
        assert!(DateTime::from_datetime2(&[0x80, 0, 0, 0, 0, 100], 2).is_err());
        assert!(DateTime::from_datetime2(&[0x80, 0, 0, 0], 0).is_err());
    }

    #[test]
    fn datetime_v1() {
        let v: u64 = 20240229235958;
        let (d, used) = DateTime::from_datetime_v1(&v.to_le_bytes()).unwrap();
        assert_eq!(used, 8);
        assert_eq!(d.to_string(), "2024-02-29T23:59:58");
        let (d, _) = DateTime::from_datetime_v1(&[0; 8]).unwrap();
        assert_eq!(d.to_string(), "0000-00-00T00:00:00");
        assert!(DateTime::from_datetime_v1(&u64::MAX.to_le_bytes()).is_err());
        assert!(DateTime::from_datetime_v1(&20241301000000u64.to_le_bytes()).is_err());
        assert!(DateTime::from_datetime_v1(&[0; 7]).is_err());
    }

    #[test]
    fn timestamps() {
        // 2000-02-29 12:00:00 UTC = 951825600, with .123456.
        let bytes = [0x38, 0xBB, 0xB4, 0xC0, 0x01, 0xE2, 0x40];
        let (t, used) = Timestamp::from_timestamp2(&bytes, 6).unwrap();
        assert_eq!(used, 7);
        assert_eq!(t.seconds, 951_825_600);
        assert_eq!(t.micros, 123_456);
        assert_eq!(t.to_string(), "2000-02-29T12:00:00.123456Z");
        assert_eq!(encode_timestamp2(&t), bytes);

        let (t, _) = Timestamp::from_timestamp2(&[0, 0, 0, 0], 0).unwrap();
        assert_eq!(t.to_string(), "0000-00-00T00:00:00Z");
        let (t, _) = Timestamp::from_timestamp2(&[0, 0, 0, 1], 0).unwrap();
        assert_eq!(t.to_string(), "1970-01-01T00:00:01Z");
        let (t, _) = Timestamp::from_timestamp2(&[0x7F, 0xFF, 0xFF, 0xFF], 0).unwrap();
        assert_eq!(t.to_string(), "2038-01-19T03:14:07Z");
        let (t, _) = Timestamp::from_timestamp2(&[0xFF, 0xFF, 0xFF, 0xFF, 0x27, 0x06], 3).unwrap();
        assert_eq!(t.to_string(), "2106-02-07T06:28:15.999Z");

        let (t, used) = Timestamp::from_timestamp_v1(&951_825_600u32.to_le_bytes()).unwrap();
        assert_eq!(used, 4);
        assert_eq!(t.to_string(), "2000-02-29T12:00:00Z");
        assert_eq!(
            t.to_utc_datetime(),
            datetime((2000, 2, 29), (12, 0, 0), 0, 0)
        );
        assert!(Timestamp::from_timestamp2(&[0, 0, 0, 1, 0x0F, 0x42, 0x40], 6).is_err());
    }

    fn is_leap(year: u32) -> bool {
        matches!((year % 4, year % 100, year % 400), (0, 1.., _) | (_, _, 0))
    }

    #[test]
    fn civil_conversion_matches_a_naive_count() {
        // Walks every day a 32-bit timestamp can reach, counting days by hand.
        let mut day = 0u32;
        for year in 1970..=2106u32 {
            for month in 1..=12u32 {
                let length = match month {
                    2 if is_leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for dom in 1..=length {
                    if day > u32::MAX / 86_400 {
                        return;
                    }
                    let (y, m, d) = civil_from_days(day);
                    assert_eq!(
                        (u32::from(y), u32::from(m), u32::from(d)),
                        (year, month, dom)
                    );
                    day += 1;
                }
            }
        }
    }

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

    /// Keeps only the microsecond digits a column of precision `fsp` stores.
    fn round_to_fsp(micros: u32, fsp: u8) -> u32 {
        let step = 10u32.pow(u32::from(6 - fsp));
        micros / step * step
    }

    #[test]
    fn round_trips_random_values() {
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let fsp = rng.below(7) as u8;
            let micros = round_to_fsp(rng.below(1_000_000) as u32, fsp);
            let t = time(
                rng.below(2) == 1,
                rng.below(839) as u32,
                rng.below(60) as u8,
                rng.below(60) as u8,
                micros,
                fsp,
            );
            // A negative zero duration does not exist.
            let t = if time_packed(&t) == 0 {
                Time {
                    negative: false,
                    ..t
                }
            } else {
                t
            };
            assert_eq!(time2(&encode_time2(&t), fsp), t, "{t:?}");

            let date = (
                rng.below(10_000) as u16,
                rng.below(13) as u8,
                rng.below(32) as u8,
            );
            let clock = (
                rng.below(24) as u8,
                rng.below(60) as u8,
                rng.below(60) as u8,
            );
            let d = datetime(date, clock, micros, fsp);
            let (back, _) = DateTime::from_datetime2(&encode_datetime2(&d), fsp).unwrap();
            assert_eq!(back, d);

            let ts = Timestamp {
                seconds: rng.next() as u32,
                micros,
                fsp,
            };
            let (back, _) = Timestamp::from_timestamp2(&encode_timestamp2(&ts), fsp).unwrap();
            assert_eq!(back, ts);
            let text = back.to_string();
            assert_eq!(
                text.len(),
                20 + if fsp > 0 { 1 + usize::from(fsp) } else { 0 }
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(99);
        let mut buf = [0u8; 9];
        for _ in 0..50_000 {
            for b in &mut buf {
                *b = rng.next() as u8;
            }
            let len = rng.below(10) as usize;
            let fsp = rng.below(8) as u8;
            let bytes = &buf[..len];
            if let Ok((v, _)) = Time::from_time2(bytes, fsp) {
                let _ = v.to_string();
            }
            if let Ok((v, _)) = Time::from_time_v1(bytes) {
                let _ = v.to_string();
            }
            if let Ok((v, _)) = DateTime::from_datetime2(bytes, fsp) {
                let _ = v.to_string();
            }
            if let Ok((v, _)) = DateTime::from_datetime_v1(bytes) {
                let _ = v.to_string();
            }
            if let Ok((v, _)) = Timestamp::from_timestamp2(bytes, fsp) {
                let _ = v.to_string();
            }
            if let Ok((v, _)) = Date::from_binary(bytes) {
                let _ = v.to_string();
            }
        }
    }
}

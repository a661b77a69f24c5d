//! Column values, borrowed: [`ValueRef`] is what a [`crate::batch::ChangeBatch`] hands out
//! and takes in. It owns nothing, so reading or writing a value never allocates.
//!
//! Every MySQL/MariaDB type is represented exactly: integers as `i64` or `u64` (unsigned
//! BIGINT keeps its whole range), FLOAT/DOUBLE bit for bit, DECIMAL as its exact text,
//! temporal values field by field (zero dates, negative and over-24-hour TIMEs included),
//! strings and blobs as bytes in the column's charset, JSON as text, GEOMETRY as SRID+WKB.
//!
//! Temporal values are stored in the batch's `u64` column buffers in a packed form
//! ([`Date::pack`] and friends) that orders like the values and changes in the low bits
//! between nearby values, which is what delta encodings want.

use std::fmt;

/// One column value, borrowing any bytes from the batch (or the decoder's buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer column.
    Int(i64),
    /// An UNSIGNED integer column.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL as exact ASCII text: `-?digits[.digits]` with exactly the column's scale.
    Decimal(&'a [u8]),
    /// YEAR: 0 or 1901..=2155.
    Year(u16),
    /// DATE.
    Date(Date),
    /// TIME.
    Time(Time),
    /// DATETIME.
    DateTime(DateTime),
    /// TIMESTAMP: seconds since the epoch (UTC), 0 is the zero timestamp.
    Timestamp(Timestamp),
    /// Character data in the column's charset.
    Text(&'a [u8]),
    /// Binary data (BINARY, VARBINARY, BLOB, VECTOR, or strings of unknown charset).
    Bytes(&'a [u8]),
    /// ENUM: 1-based member index, 0 for the empty error value.
    Enum(u16),
    /// SET: one bit per member.
    Set(u64),
    /// BIT(n), right-aligned.
    Bit(u64),
    /// JSON as UTF-8 text.
    Json(&'a [u8]),
    /// GEOMETRY: 4-byte little-endian SRID, then WKB.
    Geometry(&'a [u8]),
}

impl ValueRef<'_> {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, ValueRef::Null)
    }

    /// The variant's name, for messages (never the value itself).
    pub fn kind_name(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::Int(_) => "Int",
            ValueRef::UInt(_) => "UInt",
            ValueRef::Float(_) => "Float",
            ValueRef::Double(_) => "Double",
            ValueRef::Decimal(_) => "Decimal",
            ValueRef::Year(_) => "Year",
            ValueRef::Date(_) => "Date",
            ValueRef::Time(_) => "Time",
            ValueRef::DateTime(_) => "DateTime",
            ValueRef::Timestamp(_) => "Timestamp",
            ValueRef::Text(_) => "Text",
            ValueRef::Bytes(_) => "Bytes",
            ValueRef::Enum(_) => "Enum",
            ValueRef::Set(_) => "Set",
            ValueRef::Bit(_) => "Bit",
            ValueRef::Json(_) => "Json",
            ValueRef::Geometry(_) => "Geometry",
        }
    }
}

/// A temporal value's field does not fit the packed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} field {field} out of range")]
pub struct PackError {
    /// `date`, `time`, `datetime` or `timestamp`.
    pub kind: &'static str,
    /// The field that does not fit.
    pub field: &'static str,
}

fn check(ok: bool, kind: &'static str, field: &'static str) -> Result<(), PackError> {
    if ok {
        Ok(())
    } else {
        Err(PackError { kind, field })
    }
}

/// Writes `.` and the first `fsp` of the six microsecond digits.
fn write_fraction(f: &mut impl fmt::Write, micros: u32, fsp: u8) -> fmt::Result {
    if fsp == 0 {
        return Ok(());
    }
    let fsp = fsp.min(6);
    let shown = micros / 10u32.pow(u32::from(6 - fsp));
    write!(f, ".{shown:0w$}", w = usize::from(fsp))
}

/// A DATE; zero parts (`0000-00-00`, day 0) are allowed, as in MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Date {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12.
    pub month: u8,
    /// Day, 0..=31.
    pub day: u8,
}

impl Date {
    /// `year << 16 | month << 8 | day`: every field value fits, so packing never fails.
    pub fn pack(&self) -> u64 {
        u64::from(self.year) << 16 | u64::from(self.month) << 8 | u64::from(self.day)
    }

    /// Inverse of [`Date::pack`] (extra high bits are ignored).
    pub fn unpack(p: u64) -> Date {
        Date {
            year: (p >> 16) as u16,
            month: (p >> 8) as u8,
            day: p as u8,
        }
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A TIME: a signed duration, possibly over 24 hours (the server allows ±838:59:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    /// Negative duration (`-00:00:00.5` is negative with zero hours).
    pub negative: bool,
    /// Whole hours, below 2^24.
    pub hours: u32,
    /// 0..=59.
    pub minutes: u8,
    /// 0..=59.
    pub seconds: u8,
    /// 0..=999_999.
    pub micros: u32,
}

impl Time {
    /// `negative << 62 | hours << 32 | minutes << 26 | seconds << 20 | micros`.
    pub fn pack(&self) -> Result<u64, PackError> {
        let k = "time";
        check(self.hours < 1 << 24, k, "hours")?;
        check(self.minutes < 64, k, "minutes")?;
        check(self.seconds < 64, k, "seconds")?;
        check(self.micros < 1 << 20, k, "microseconds")?;
        Ok(u64::from(self.negative) << 62
            | u64::from(self.hours) << 32
            | u64::from(self.minutes) << 26
            | u64::from(self.seconds) << 20
            | u64::from(self.micros))
    }

    /// Inverse of [`Time::pack`].
    pub fn unpack(p: u64) -> Time {
        Time {
            negative: p >> 62 & 1 == 1,
            hours: (p >> 32) as u32 & 0xff_ffff,
            minutes: (p >> 26) as u8 & 63,
            seconds: (p >> 20) as u8 & 63,
            micros: p as u32 & 0xf_ffff,
        }
    }

    /// Writes `[-]HH:MM:SS[.f…]` with `fsp` fraction digits.
    pub fn write_sql(&self, f: &mut impl fmt::Write, fsp: u8) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(
            f,
            "{sign}{:02}:{:02}:{:02}",
            self.hours, self.minutes, self.seconds
        )?;
        write_fraction(f, self.micros, fsp)
    }
}

/// A DATETIME; zero dates allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DateTime {
    /// 0..=9999.
    pub year: u16,
    /// 0..=12.
    pub month: u8,
    /// 0..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0..=999_999.
    pub micros: u32,
}

impl DateTime {
    /// `year:14 | month:4 | day:5 | hour:5 | minute:6 | second:6 | micros:20` (60 bits).
    pub fn pack(&self) -> Result<u64, PackError> {
        let k = "datetime";
        check(self.year < 1 << 14, k, "year")?;
        check(self.month < 16, k, "month")?;
        check(self.day < 32, k, "day")?;
        check(self.hour < 32, k, "hour")?;
        check(self.minute < 64, k, "minute")?;
        check(self.second < 64, k, "second")?;
        check(self.micros < 1 << 20, k, "microseconds")?;
        Ok(u64::from(self.year) << 46
            | u64::from(self.month) << 42
            | u64::from(self.day) << 37
            | u64::from(self.hour) << 32
            | u64::from(self.minute) << 26
            | u64::from(self.second) << 20
            | u64::from(self.micros))
    }

    /// Inverse of [`DateTime::pack`].
    pub fn unpack(p: u64) -> DateTime {
        DateTime {
            year: (p >> 46) as u16 & 0x3fff,
            month: (p >> 42) as u8 & 15,
            day: (p >> 37) as u8 & 31,
            hour: (p >> 32) as u8 & 31,
            minute: (p >> 26) as u8 & 63,
            second: (p >> 20) as u8 & 63,
            micros: p as u32 & 0xf_ffff,
        }
    }

    /// Writes `YYYY-MM-DD HH:MM:SS[.f…]` with `fsp` fraction digits.
    pub fn write_sql(&self, f: &mut impl fmt::Write, fsp: u8) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        write_fraction(f, self.micros, fsp)
    }
}

/// A TIMESTAMP: seconds since 1970-01-01 UTC; 0 is MySQL's zero timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub seconds: u32,
    /// 0..=999_999.
    pub micros: u32,
}

impl Timestamp {
    /// `seconds << 20 | micros`.
    pub fn pack(&self) -> Result<u64, PackError> {
        check(self.micros < 1 << 20, "timestamp", "microseconds")?;
        Ok(u64::from(self.seconds) << 20 | u64::from(self.micros))
    }

    /// Inverse of [`Timestamp::pack`].
    pub fn unpack(p: u64) -> Timestamp {
        Timestamp {
            seconds: (p >> 20) as u32,
            micros: p as u32 & 0xf_ffff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_packs_round_trip_and_order() {
        let t = Time {
            negative: true,
            hours: 838,
            minutes: 59,
            seconds: 58,
            micros: 999_999,
        };
        assert_eq!(Time::unpack(t.pack().unwrap()), t);
        let neg_zero = Time {
            negative: true,
            ..Time::default()
        };
        assert_eq!(Time::unpack(neg_zero.pack().unwrap()), neg_zero);
        assert!(Time {
            hours: 1 << 24,
            ..t
        }
        .pack()
        .is_err());
        let mut s = String::new();
        t.write_sql(&mut s, 3).unwrap();
        assert_eq!(s, "-838:59:58.999");

        let zero = DateTime::default();
        assert_eq!(DateTime::unpack(zero.pack().unwrap()), zero);
        let a = DateTime {
            year: 2024,
            month: 2,
            day: 29,
            hour: 23,
            minute: 59,
            second: 59,
            micros: 123_456,
        };
        let b = DateTime {
            year: 2024,
            month: 3,
            day: 1,
            ..DateTime::default()
        };
        assert_eq!(DateTime::unpack(a.pack().unwrap()), a);
        assert!(a.pack().unwrap() < b.pack().unwrap());
        s.clear();
        a.write_sql(&mut s, 6).unwrap();
        assert_eq!(s, "2024-02-29 23:59:59.123456");

        let d = Date {
            year: 0,
            month: 0,
            day: 0,
        };
        assert_eq!(Date::unpack(d.pack()), d);
        assert_eq!(d.to_string(), "0000-00-00");
        let ts = Timestamp {
            seconds: u32::MAX,
            micros: 999_999,
        };
        assert_eq!(Timestamp::unpack(ts.pack().unwrap()), ts);
    }
}

//! Column values as they appear in row events, borrowed from the event buffer.
//!
//! Decoding a value only slices the buffer and reads fixed-width integers; the digit work
//! for decimals, temporal values and JSON happens when a value is displayed or rendered, so
//! a caller that only forwards or filters values never pays for it.

pub mod decimal;
pub mod json;
pub mod json_diff;
pub mod temporal;

pub use decimal::Decimal;
pub use json::JsonBinary;
pub use temporal::{Date, DateTime, Time, Timestamp};

/// Why a value's bytes could not be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value needs more bytes than the row image holds.
    #[error("value truncated: needs {needed} bytes, {available} left")]
    Truncated { needed: usize, available: usize },
    /// The bytes are present but do not form a valid value of the type.
    #[error("invalid {kind} value: {reason}")]
    Invalid {
        kind: &'static str,
        reason: &'static str,
    },
}

/// One column value from a row image. Byte payloads borrow from the event (or from the
/// decompression buffer of a compressed event); nothing here owns heap memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer column (TINY..LONGLONG), or one whose signedness is unknown.
    Int(i64),
    /// An integer column known to be UNSIGNED: exact over the whole `u64` range.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// NEWDECIMAL, rendered exactly by its `Display`.
    Decimal(Decimal<'a>),
    /// YEAR: 0 or 1901..=2155.
    Year(u16),
    /// DATE.
    Date(Date),
    /// TIME or TIME2: may be negative and exceed 24 hours.
    Time(Time),
    /// DATETIME or DATETIME2, zero dates included.
    DateTime(DateTime),
    /// TIMESTAMP or TIMESTAMP2: seconds since the epoch, UTC.
    Timestamp(Timestamp),
    /// A character column (CHAR, VARCHAR, TEXT, and MariaDB JSON) in the column's charset.
    Text(&'a [u8]),
    /// A binary column (BINARY, VARBINARY, BLOB) or a string of unknown charset.
    Bytes(&'a [u8]),
    /// ENUM: the 1-based index of the member, 0 for the empty error value.
    Enum(u16),
    /// SET: one bit per member.
    Set(u64),
    /// BIT(n): the value and `n`.
    Bit { value: u64, bits: u8 },
    /// MySQL binary JSON.
    Json(JsonBinary<'a>),
    /// A MySQL partial JSON update (PARTIAL_UPDATE_ROWS): the raw diff list.
    JsonDiff(&'a [u8]),
    /// GEOMETRY: 4-byte little-endian SRID followed by WKB.
    Geometry(&'a [u8]),
}

impl Value<'_> {
    /// Renders the text form of the kinds whose text takes work (decimals, validated first;
    /// MySQL JSON; partial JSON diffs; temporal values) into `out`, which is cleared first.
    /// Returns `Ok(false)`, leaving `out` empty, for kinds that are already plain numbers or
    /// bytes. This is what "every value fully decoded" means in `inspect --stats`, the
    /// tests and the bench, so all of them do the same work.
    pub fn render_text(&self, out: &mut String) -> Result<bool, ValueError> {
        use std::fmt::Write;
        out.clear();
        // Writing into a String cannot fail; the results are ignored for that reason.
        match self {
            Value::Decimal(d) => {
                d.validate()?;
                let _ = write!(out, "{d}");
            }
            Value::Json(j) => j.write_json(out)?,
            Value::JsonDiff(b) => json_diff::write_json_diffs(b, out)?,
            Value::Date(d) => {
                let _ = write!(out, "{d}");
            }
            Value::Time(t) => {
                let _ = write!(out, "{t}");
            }
            Value::DateTime(t) => {
                let _ = write!(out, "{t}");
            }
            Value::Timestamp(t) => {
                let _ = write!(out, "{t}");
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

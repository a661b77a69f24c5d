//! MySQL's binary `JSON` (column type 245), rendered as JSON text.
//!
//! MariaDB stores `JSON` as plain text in a `LONGTEXT`, so this module only serves MySQL.
//!
//! # Layout
//! A document is one type byte followed by the value:
//!
//! | type | value |
//! | --- | --- |
//! | `0x00` / `0x01` | object, small (16-bit offsets) / large (32-bit offsets) |
//! | `0x02` / `0x03` | array, small / large |
//! | `0x04` | literal: `0x00` null, `0x01` true, `0x02` false |
//! | `0x05`–`0x0a` | int16, uint16, int32, uint32, int64, uint64, little-endian |
//! | `0x0b` | double, IEEE 754 little-endian |
//! | `0x0c` | string: length (7 bits a byte, low bits first, high bit = more), UTF-8 bytes |
//! | `0x0f` | opaque: MySQL field type byte, length as for strings, data |
//!
//! An object is `count, size, key entries, value entries, keys, values`; an array is
//! `count, size, value entries, values`. `count`, `size` and every offset are 2 bytes in the
//! small form and 4 in the large one, and offsets count from the start of `count`. A key
//! entry is `offset, length (2 bytes)`. A value entry is a type byte then either an offset or,
//! for literals and 16-bit integers (and 32-bit ones in the large form), the value itself.
//!
//! # Output
//! The text matches what MySQL prints for the same document (`SELECT`, `JSON_EXTRACT`,
//! `mysqlbinlog -v`): `", "` between elements and `": "` after keys; the escapes MySQL uses
//! (`\b \f \n \r \t`, other control characters as `\u00xx`); doubles laid out as MySQL's
//! `my_gcvt` lays them out (shortest round-trip digits, `e` notation outside 1e-15..1e15,
//! `.0` added to integral values); `DECIMAL` opaques as bare numbers; `DATE`, `TIME`,
//! `DATETIME` and `TIMESTAMP` opaques as quoted strings with six fraction digits; other
//! opaques as `"base64:type<N>:<base64>"` with MySQL's line break every 76 characters
//! (escaped as `\n`).
//!
//! # Invariants and recovery
//! Every read is bounds-checked against the enclosing container, so a forged offset or size
//! yields [`ValueError::Invalid`] or [`ValueError::Truncated`], never a panic or a read
//! outside the buffer. Nesting is capped at 100 levels, like the server's own limit, which
//! bounds recursion. The server never shares a value between two entries, but a forged
//! document could, and then a few kilobytes would expand into an exponential amount of text:
//! the rendered text is therefore capped at `8 × input + 64` bytes, well above what any real
//! document needs (the worst case, a string of control characters, grows 6×). On error the
//! caller's `String` is cut back to its length on entry.

use core::fmt::{self, Write as _};

use super::decimal::Decimal;
use super::temporal::{DateTime, Time};
use super::ValueError;

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

const LITERAL_NULL: u8 = 0x00;
const LITERAL_TRUE: u8 = 0x01;
const LITERAL_FALSE: u8 = 0x02;

/// MySQL field types that opaque values carry and that get a readable rendering.
const FIELD_TIMESTAMP: u8 = 7;
const FIELD_DATE: u8 = 10;
const FIELD_TIME: u8 = 11;
const FIELD_DATETIME: u8 = 12;
const FIELD_NEWDECIMAL: u8 = 246;
const FIELD_VAR_STRING: u8 = 253;

/// Deepest nesting of arrays and objects, the server's `JSON_DOCUMENT_MAX_DEPTH`.
const MAX_DEPTH: usize = 100;
/// Rendered text may be at most this many times the document's size, plus `OUTPUT_SLACK`.
const OUTPUT_FACTOR: usize = 8;
const OUTPUT_SLACK: usize = 64;
/// Base64 characters per line in MySQL's encoder.
const BASE64_LINE: usize = 76;
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const KIND: &str = "json";

fn invalid(reason: &'static str) -> ValueError {
    ValueError::Invalid { kind: KIND, reason }
}

/// A binary JSON document, borrowing the column's payload from the row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonBinary<'a>(pub &'a [u8]);

impl JsonBinary<'_> {
    /// Appends the document as JSON text to `out`; an empty payload is JSON `null`.
    ///
    /// On error `out` is left as it was on entry.
    pub fn write_json(&self, out: &mut String) -> Result<(), ValueError> {
        let start = out.len();
        let limit = self
            .0
            .len()
            .saturating_mul(OUTPUT_FACTOR)
            .saturating_add(OUTPUT_SLACK)
            .saturating_add(start);
        let mut writer = Writer { out, limit };
        let result = match self.0.split_first() {
            None => {
                writer.out.push_str("null");
                Ok(())
            }
            Some((&ty, value)) => writer
                .value(ty, value, 0)
                .and_then(|()| writer.check_size()),
        };
        if result.is_err() {
            writer.out.truncate(start);
        }
        result
    }
}

fn take<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], ValueError> {
    data.get(at..)
        .and_then(|rest| rest.get(..N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(ValueError::Truncated {
            needed: at.saturating_add(N),
            available: data.len(),
        })
}

fn byte_at(data: &[u8], at: usize) -> Result<u8, ValueError> {
    take::<1>(data, at).map(|[b]| b)
}

fn sub(data: &[u8], start: usize, len: usize) -> Result<&[u8], ValueError> {
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or(ValueError::Truncated {
            needed: start.saturating_add(len),
            available: data.len(),
        })
}

/// Reads an offset, size or count field of a small (2-byte) or large (4-byte) container.
fn read_offset(data: &[u8], at: usize, large: bool) -> Result<usize, ValueError> {
    if large {
        Ok(u32::from_le_bytes(take(data, at)?) as usize)
    } else {
        Ok(usize::from(u16::from_le_bytes(take(data, at)?)))
    }
}

/// Reads a string or opaque length prefix; returns the length and the prefix's size.
fn read_var_len(data: &[u8]) -> Result<(usize, usize), ValueError> {
    let mut len: u64 = 0;
    for i in 0..5 {
        let b = byte_at(data, i)?;
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = u32::try_from(len).map_err(|_| invalid("length above 4 GiB"))?;
            return Ok((len as usize, i + 1));
        }
    }
    Err(invalid("length prefix longer than 5 bytes"))
}

fn utf8(bytes: &[u8]) -> Result<&str, ValueError> {
    core::str::from_utf8(bytes).map_err(|_| invalid("string is not UTF-8"))
}

/// Whether a value of type `ty` lives in its value entry rather than behind an offset.
fn is_inlined(ty: u8, large: bool) -> bool {
    match ty {
        LITERAL | INT16 | UINT16 => true,
        INT32 | UINT32 => large,
        _ => false,
    }
}

/// Renders into the caller's string, keeping the output bound.
struct Writer<'o> {
    out: &'o mut String,
    limit: usize,
}

impl Writer<'_> {
    fn check_size(&self) -> Result<(), ValueError> {
        if self.out.len() > self.limit {
            return Err(invalid(
                "text far larger than the document (shared values?)",
            ));
        }
        Ok(())
    }

    /// Appends a number or other `Display` value.
    fn display(&mut self, value: impl fmt::Display) {
        // Writing into a `String` cannot fail.
        let _ = write!(self.out, "{value}");
    }

    /// Appends a number as the whole rendering of a value.
    fn number(&mut self, value: impl fmt::Display) -> Result<(), ValueError> {
        self.display(value);
        Ok(())
    }

    /// Renders the value of type `ty` that starts at `data[0]`; `data` ends where the
    /// enclosing container (or the document) ends.
    fn value(&mut self, ty: u8, data: &[u8], depth: usize) -> Result<(), ValueError> {
        self.check_size()?;
        match ty {
            SMALL_OBJECT => self.container(data, false, true, depth),
            LARGE_OBJECT => self.container(data, true, true, depth),
            SMALL_ARRAY => self.container(data, false, false, depth),
            LARGE_ARRAY => self.container(data, true, false, depth),
            LITERAL => self.literal(byte_at(data, 0)?),
            INT16 => self.number(i16::from_le_bytes(take(data, 0)?)),
            UINT16 => self.number(u16::from_le_bytes(take(data, 0)?)),
            INT32 => self.number(i32::from_le_bytes(take(data, 0)?)),
            UINT32 => self.number(u32::from_le_bytes(take(data, 0)?)),
            INT64 => self.number(i64::from_le_bytes(take(data, 0)?)),
            UINT64 => self.number(u64::from_le_bytes(take(data, 0)?)),
            DOUBLE => self.double(f64::from_le_bytes(take(data, 0)?)),
            STRING => {
                let (len, prefix) = read_var_len(data)?;
                self.string(utf8(sub(data, prefix, len)?)?);
                Ok(())
            }
            OPAQUE => {
                let field_type = byte_at(data, 0)?;
                let rest = data.get(1..).unwrap_or_default();
                let (len, prefix) = read_var_len(rest)?;
                self.opaque(field_type, sub(rest, prefix, len)?)
            }
            _ => Err(invalid("unknown value type")),
        }
    }

    fn container(
        &mut self,
        data: &[u8],
        large: bool,
        object: bool,
        depth: usize,
    ) -> Result<(), ValueError> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(invalid("nested deeper than 100 levels"));
        }
        let offset_size = if large { 4 } else { 2 };
        let count = read_offset(data, 0, large)?;
        let size = read_offset(data, offset_size, large)?;
        let data = sub(data, 0, size)?;
        let key_entry_size = if object { offset_size + 2 } else { 0 };
        let value_entry_size = 1 + offset_size;
        let values_at = count
            .checked_mul(key_entry_size)
            .and_then(|keys| keys.checked_add(2 * offset_size));
        let header_size = count
            .checked_mul(value_entry_size)
            .zip(values_at)
            .and_then(|(values, at)| values.checked_add(at));
        let (values_at, header_size) = match (values_at, header_size) {
            (Some(v), Some(h)) if h <= size => (v, h),
            _ => return Err(invalid("container header larger than the container")),
        };

        self.out.push(if object { '{' } else { '[' });
        for i in 0..count {
            if i > 0 {
                self.out.push_str(", ");
            }
            if object {
                let entry = 2 * offset_size + i * key_entry_size;
                let key_offset = read_offset(data, entry, large)?;
                let key_len = usize::from(u16::from_le_bytes(take(data, entry + offset_size)?));
                if key_offset < header_size {
                    return Err(invalid("key offset points into the header"));
                }
                let key = sub(data, key_offset, key_len)
                    .map_err(|_| invalid("key outside its object"))?;
                self.string(utf8(key)?);
                self.out.push_str(": ");
            }
            let entry = values_at + i * value_entry_size;
            let ty = byte_at(data, entry)?;
            if is_inlined(ty, large) {
                let field = sub(data, entry + 1, offset_size)?;
                self.value(ty, field, depth)?;
            } else {
                let offset = read_offset(data, entry + 1, large)?;
                if offset < header_size || offset >= size {
                    return Err(invalid("value offset outside its container"));
                }
                let value = data.get(offset..).unwrap_or_default();
                self.value(ty, value, depth)?;
            }
            self.check_size()?;
        }
        self.out.push(if object { '}' } else { ']' });
        Ok(())
    }

    fn literal(&mut self, literal: u8) -> Result<(), ValueError> {
        self.out.push_str(match literal {
            LITERAL_NULL => "null",
            LITERAL_TRUE => "true",
            LITERAL_FALSE => "false",
            _ => return Err(invalid("unknown literal")),
        });
        Ok(())
    }

    /// Appends `s` as a quoted JSON string, escaped the way MySQL escapes it.
    fn string(&mut self, s: &str) {
        self.out.push('"');
        let mut plain_from = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                0x0c => "\\f",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            // `i` is an ASCII byte, so both cuts fall on character boundaries.
            self.out.push_str(s.get(plain_from..i).unwrap_or_default());
            plain_from = i + 1;
            if escape.is_empty() {
                self.display(format_args!("\\u{:04x}", b));
            } else {
                self.out.push_str(escape);
            }
        }
        self.out.push_str(s.get(plain_from..).unwrap_or_default());
        self.out.push('"');
    }

    /// Appends a double laid out as MySQL's `my_gcvt` lays it out for JSON.
    fn double(&mut self, d: f64) -> Result<(), ValueError> {
        if !d.is_finite() {
            return Err(invalid("double is not finite"));
        }
        // Rust's `{:e}` gives the shortest digits that read back as the same double, which
        // are the digits MySQL's dtoa picks; only the layout needs redoing.
        let mut sci = StackText::default();
        write!(sci, "{:e}", d.abs()).map_err(|_| invalid("double text too long"))?;
        let text = sci.as_str();
        let (mantissa, exponent) = text
            .split_once('e')
            .ok_or(invalid("double text without exponent"))?;
        let exponent: i32 = exponent
            .parse()
            .map_err(|_| invalid("double text with a bad exponent"))?;
        let mut digits = [0u8; 24];
        let mut len = 0;
        for b in mantissa.bytes().filter(u8::is_ascii_digit) {
            *digits.get_mut(len).ok_or(invalid("double text too long"))? = b;
            len += 1;
        }
        let digits = utf8(digits.get(..len).unwrap_or_default())?;
        // Position of the decimal point relative to the digits, as dtoa reports it.
        let point = exponent + 1;
        let len = len as i32;

        if d.is_sign_negative() {
            self.out.push('-');
        }
        // `my_gcvt` at the width JSON uses: plain notation when |d| >= 1e-15 and either
        // |d| < 1e15 or digits follow the point; an exponent otherwise.
        if point >= -14 && (point <= 15 || len > point) {
            if point <= 0 {
                self.out.push_str("0.");
                for _ in 0..-point {
                    self.out.push('0');
                }
                self.out.push_str(digits);
            } else if let Some((int, frac)) = digits
                .split_at_checked(point as usize)
                .filter(|_| point < len)
            {
                self.out.push_str(int);
                self.out.push('.');
                self.out.push_str(frac);
            } else {
                self.out.push_str(digits);
                for _ in 0..point - len {
                    self.out.push('0');
                }
                // Marks the value as a double rather than an integer, as MySQL does.
                self.out.push_str(".0");
            }
        } else {
            let (first, rest) = digits.split_at_checked(1).unwrap_or((digits, ""));
            self.out.push_str(first);
            if !rest.is_empty() {
                self.out.push('.');
                self.out.push_str(rest);
            }
            self.out.push('e');
            self.display(exponent);
        }
        Ok(())
    }

    fn opaque(&mut self, field_type: u8, data: &[u8]) -> Result<(), ValueError> {
        match field_type {
            FIELD_NEWDECIMAL => {
                let [precision, scale] = take(data, 0)?;
                let bin = data.get(2..).unwrap_or_default();
                let (decimal, used) = Decimal::from_binary(bin, precision, scale)?;
                if used != bin.len() {
                    return Err(invalid("decimal size does not match its precision"));
                }
                decimal.validate()?;
                self.display(decimal);
            }
            FIELD_DATE | FIELD_TIME | FIELD_DATETIME | FIELD_TIMESTAMP => {
                let packed = match <[u8; 8]>::try_from(data) {
                    Ok(bytes) => i64::from_le_bytes(bytes),
                    Err(_) => return Err(invalid("temporal value is not 8 bytes")),
                };
                // MySQL prints these with `my_TIME_to_str(.., 6)`: a date alone, or a time
                // of day with six fraction digits, and a space before the time.
                self.out.push('"');
                let written = match field_type {
                    FIELD_TIME => Time::from_packed(packed, 6)?.write_with_fsp(self.out, 6),
                    FIELD_DATE => {
                        let d = DateTime::from_packed(packed, 0)?;
                        write!(self.out, "{:04}-{:02}-{:02}", d.year, d.month, d.day)
                    }
                    _ => DateTime::from_packed(packed, 6)?.write_with(self.out, ' ', 6),
                };
                written.map_err(|_| invalid("temporal value could not be written"))?;
                self.out.push('"');
            }
            // The server treats a string wrapped as VAR_STRING opaque as a plain string.
            FIELD_VAR_STRING => self.string(utf8(data)?),
            _ => {
                self.out.push_str("\"base64:type");
                self.display(field_type);
                self.out.push(':');
                self.base64(data);
                self.out.push('"');
            }
        }
        Ok(())
    }

    /// Appends standard padded base64 with MySQL's line break (escaped, as it is inside a
    /// JSON string) every 76 characters.
    fn base64(&mut self, data: &[u8]) {
        let mut line = 0;
        for chunk in data.chunks(3) {
            if line == BASE64_LINE {
                self.out.push_str("\\n");
                line = 0;
            }
            let (bits, chars) = match *chunk {
                [a, b, c] => (u32::from_be_bytes([0, a, b, c]), 4),
                [a, b] => (u32::from_be_bytes([0, a, b, 0]), 3),
                [a] => (u32::from_be_bytes([0, a, 0, 0]), 2),
                _ => continue,
            };
            for i in 0..4 {
                if i < chars {
                    let index = (bits >> (18 - 6 * i)) & 63;
                    self.out.push(char::from(BASE64_ALPHABET[index as usize]));
                } else {
                    self.out.push('=');
                }
            }
            line += 4;
        }
    }
}

/// A fixed-size text buffer for formatting one number without allocating.
#[derive(Default)]
struct StackText {
    buf: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(doc: &[u8]) -> Result<String, ValueError> {
        let mut out = String::new();
        JsonBinary(doc).write_json(&mut out).map(|()| out)
    }

    fn ok(doc: &[u8]) -> String {
        render(doc).unwrap()
    }

    /// A JSON tree for the test-only encoder.
    #[derive(Debug, Clone)]
    enum J {
        Null,
        Bool(bool),
        I16(i16),
        U16(u16),
        I32(i32),
        U32(u32),
        I64(i64),
        U64(u64),
        Str(String),
        Opaque(u8, Vec<u8>),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    fn var_len(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Encodes a value, returning its type byte and bytes; containers use the small form
    /// when everything fits in 16 bits, as the server does.
    fn encode(j: &J) -> (u8, Vec<u8>) {
        match j {
            J::Null => (LITERAL, vec![LITERAL_NULL]),
            J::Bool(true) => (LITERAL, vec![LITERAL_TRUE]),
            J::Bool(false) => (LITERAL, vec![LITERAL_FALSE]),
            J::I16(v) => (INT16, v.to_le_bytes().to_vec()),
            J::U16(v) => (UINT16, v.to_le_bytes().to_vec()),
            J::I32(v) => (INT32, v.to_le_bytes().to_vec()),
            J::U32(v) => (UINT32, v.to_le_bytes().to_vec()),
            J::I64(v) => (INT64, v.to_le_bytes().to_vec()),
            J::U64(v) => (UINT64, v.to_le_bytes().to_vec()),
            J::Str(s) => {
                let mut out = Vec::new();
                var_len(s.len(), &mut out);
                out.extend_from_slice(s.as_bytes());
                (STRING, out)
            }
            J::Opaque(ft, data) => {
                let mut out = vec![*ft];
                var_len(data.len(), &mut out);
                out.extend_from_slice(data);
                (OPAQUE, out)
            }
            J::Arr(items) => {
                let entries: Vec<(Option<&str>, &J)> = items.iter().map(|v| (None, v)).collect();
                encode_container(&entries, false)
            }
            J::Obj(members) => {
                let entries: Vec<(Option<&str>, &J)> =
                    members.iter().map(|(k, v)| (Some(k.as_str()), v)).collect();
                encode_container(&entries, true)
            }
        }
    }

    fn encode_container(entries: &[(Option<&str>, &J)], object: bool) -> (u8, Vec<u8>) {
        if let Some(small) = encode_container_as(entries, object, false) {
            return (if object { SMALL_OBJECT } else { SMALL_ARRAY }, small);
        }
        let large = encode_container_as(entries, object, true).unwrap();
        (if object { LARGE_OBJECT } else { LARGE_ARRAY }, large)
    }

    fn encode_container_as(
        entries: &[(Option<&str>, &J)],
        object: bool,
        large: bool,
    ) -> Option<Vec<u8>> {
        let off = if large { 4 } else { 2 };
        let max = if large {
            u32::MAX as usize
        } else {
            u16::MAX as usize
        };
        let put = |buf: &mut Vec<u8>, at: usize, v: usize| -> Option<()> {
            if v > max {
                return None;
            }
            buf[at..at + off].copy_from_slice(&(v as u32).to_le_bytes()[..off]);
            Some(())
        };
        let n = entries.len();
        let key_entry = if object { off + 2 } else { 0 };
        let values_at = 2 * off + n * key_entry;
        let header = values_at + n * (1 + off);
        let mut buf = vec![0u8; header];
        put(&mut buf, 0, n)?;
        for (i, (key, _)) in entries.iter().enumerate() {
            if let Some(key) = key {
                let at = 2 * off + i * key_entry;
                let key_offset = buf.len();
                put(&mut buf, at, key_offset)?;
                buf[at + off..at + off + 2].copy_from_slice(&(key.len() as u16).to_le_bytes());
                buf.extend_from_slice(key.as_bytes());
            }
        }
        for (i, (_, value)) in entries.iter().enumerate() {
            let at = values_at + i * (1 + off);
            let (ty, bytes) = encode(value);
            buf[at] = ty;
            if is_inlined(ty, large) {
                buf[at + 1..at + 1 + bytes.len()].copy_from_slice(&bytes);
            } else {
                let value_offset = buf.len();
                put(&mut buf, at + 1, value_offset)?;
                buf.extend_from_slice(&bytes);
            }
        }
        let size = buf.len();
        put(&mut buf, off, size)?;
        Some(buf)
    }

    fn doc(j: &J) -> Vec<u8> {
        let (ty, mut bytes) = encode(j);
        bytes.insert(0, ty);
        bytes
    }

    /// Expected MySQL text for a tree, written independently of the renderer.
    fn expect(j: &J, out: &mut String) {
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(&b.to_string()),
            J::I16(v) => out.push_str(&v.to_string()),
            J::U16(v) => out.push_str(&v.to_string()),
            J::I32(v) => out.push_str(&v.to_string()),
            J::U32(v) => out.push_str(&v.to_string()),
            J::I64(v) => out.push_str(&v.to_string()),
            J::U64(v) => out.push_str(&v.to_string()),
            J::Str(s) => quote(s, out),
            J::Opaque(..) => unreachable!("opaque values are tested separately"),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    expect(v, out);
                }
                out.push(']');
            }
            J::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    quote(k, out);
                    out.push_str(": ");
                    expect(v, out);
                }
                out.push('}');
            }
        }
    }

    fn quote(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }

    #[test]
    fn empty_payload_is_null() {
        assert_eq!(ok(&[]), "null");
    }

    #[test]
    fn hand_built_small_object() {
        // {"a": 1}: count 1, size 12, key entry (11, 1), value entry int16 inline 1, key "a".
        let bytes = [
            0x00, 0x01, 0x00, 0x0C, 0x00, 0x0B, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a',
        ];
        assert_eq!(ok(&bytes), r#"{"a": 1}"#);
        assert_eq!(doc(&J::Obj(vec![("a".into(), J::I16(1))])), bytes);
    }

    #[test]
    fn hand_built_small_array_of_inlined_values() {
        // [true, false, null, -1, 65535]: header 4 + 5 entries of 3 bytes.
        let bytes = [
            0x02, 0x05, 0x00, 0x13, 0x00, // count 5, size 19
            0x04, 0x01, 0x00, // true
            0x04, 0x02, 0x00, // false
            0x04, 0x00, 0x00, // null
            0x05, 0xFF, 0xFF, // int16 -1
            0x06, 0xFF, 0xFF, // uint16 65535
        ];
        assert_eq!(ok(&bytes), "[true, false, null, -1, 65535]");
    }

    #[test]
    fn hand_built_large_object_inlines_32_bit_values() {
        // {"k": 70000} in the large form: header 4 + 4 + key entry 6 + value entry 5 = 19.
        let bytes = [
            0x01, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, // count 1, size 20
            0x13, 0x00, 0x00, 0x00, 0x01, 0x00, // key at 19, length 1
            0x08, 0x70, 0x11, 0x01, 0x00, // uint32 70000 inline
            b'k',
        ];
        assert_eq!(ok(&bytes), r#"{"k": 70000}"#);
    }

    #[test]
    fn nested_containers_and_out_of_line_values() {
        let tree = J::Obj(vec![
            ("id".into(), J::I32(-100_000)),
            (
                "tags".into(),
                J::Arr(vec![J::Str("x".into()), J::Arr(vec![]), J::Obj(vec![])]),
            ),
            (
                "n".into(),
                J::Obj(vec![
                    ("big".into(), J::U64(u64::MAX)),
                    ("small".into(), J::I64(i64::MIN)),
                ]),
            ),
            ("u32".into(), J::U32(4_000_000_000)),
        ]);
        assert_eq!(
            ok(&doc(&tree)),
            r#"{"id": -100000, "tags": ["x", [], {}], "n": {"big": 18446744073709551615, "small": -9223372036854775808}, "u32": 4000000000}"#
        );
    }

    #[test]
    fn large_containers_are_chosen_and_read() {
        let long = "y".repeat(70_000);
        let tree = J::Arr(vec![J::Str(long.clone()), J::I32(7), J::Bool(true)]);
        let bytes = doc(&tree);
        assert_eq!(bytes[0], LARGE_ARRAY);
        assert_eq!(ok(&bytes), format!("[\"{long}\", 7, true]"));
        let tree = J::Obj(vec![("k".into(), J::Str(long.clone()))]);
        let bytes = doc(&tree);
        assert_eq!(bytes[0], LARGE_OBJECT);
        assert_eq!(ok(&bytes), format!("{{\"k\": \"{long}\"}}"));
    }

    #[test]
    fn top_level_scalars() {
        assert_eq!(ok(&[0x04, 0x00]), "null");
        assert_eq!(ok(&[0x05, 0x00, 0x80]), "-32768");
        assert_eq!(ok(&[0x06, 0xFF, 0xFF]), "65535");
        let mut int64_min = vec![0x09];
        int64_min.extend_from_slice(&i64::MIN.to_le_bytes());
        assert_eq!(ok(&int64_min), "-9223372036854775808");
        let mut uint64_max = vec![0x0a];
        uint64_max.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(ok(&uint64_max), "18446744073709551615");
        let mut double = vec![0x0b];
        double.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(ok(&double), "1.5");
    }

    #[test]
    fn unicode_and_escapes() {
        let s = "héllo ☃ 😀";
        assert_eq!(ok(&doc(&J::Str(s.into()))), format!("\"{s}\""));
        let s = "q\"b\\s\u{8}\u{c}\n\r\t\u{1}\u{1f} ok";
        assert_eq!(
            ok(&doc(&J::Str(s.into()))),
            r#""q\"b\\s\b\f\n\r\t\u0001\u001f ok""#
        );
        // A two-byte length prefix: 200 bytes.
        let s = "z".repeat(200);
        let bytes = doc(&J::Str(s.clone()));
        assert_eq!(&bytes[..3], &[0x0c, 0xC8, 0x01]);
        assert_eq!(ok(&bytes), format!("\"{s}\""));
        // Keys are escaped too.
        let tree = J::Obj(vec![("a\"\u{0}".into(), J::Null)]);
        assert_eq!(ok(&doc(&tree)), r#"{"a\"\u0000": null}"#);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert!(matches!(
            render(&[0x0c, 0x02, 0xC3, 0x28]),
            Err(ValueError::Invalid { .. })
        ));
    }

    fn double_text(d: f64) -> String {
        let mut out = String::new();
        let mut w = Writer {
            out: &mut out,
            limit: usize::MAX,
        };
        w.double(d).unwrap();
        out
    }

    #[test]
    fn doubles_follow_mysql_layout() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (12.375, "12.375"),
            (1.5e-7, "0.00000015"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (123_456_789_012_345.0, "123456789012345.0"),
            (1e15, "1e15"),
            (1_234_567_890_123_456.7, "1234567890123456.8"),
            (1e100, "1e100"),
            (-1.25e-300, "-1.25e-300"),
            (f64::MAX, "1.7976931348623157e308"),
            (5e-324, "5e-324"),
        ];
        for (d, text) in cases {
            assert_eq!(double_text(d), text, "{d:e}");
        }
        let mut nan = vec![0x0b];
        nan.extend_from_slice(&f64::NAN.to_le_bytes());
        assert!(render(&nan).is_err());
        let mut inf = vec![0x0b];
        inf.extend_from_slice(&f64::INFINITY.to_le_bytes());
        assert!(render(&inf).is_err());
    }

    fn datetime_packed(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, micros: i64) -> i64 {
        let ymd = ((y * 13 + mo) << 5) | d;
        let hms = (h << 12) | (mi << 6) | s;
        (((ymd << 17) | hms) << 24) + micros
    }

    fn opaque(ft: u8, data: &[u8]) -> Vec<u8> {
        doc(&J::Opaque(ft, data.to_vec()))
    }

    #[test]
    fn opaque_decimal_and_temporal_values() {
        // DECIMAL(10,2) 1.50 and -0.50.
        assert_eq!(ok(&opaque(246, &[10, 2, 0x80, 0, 0, 1, 50])), "1.50");
        assert_eq!(
            ok(&opaque(246, &[10, 2, 0x7F, 0xFF, 0xFF, 0xFF, !50])),
            "-0.50"
        );
        // Wrong length for DECIMAL(10,2), and a corrupt group.
        assert!(render(&opaque(246, &[10, 2, 0x80, 0, 0, 1])).is_err());
        assert!(render(&opaque(246, &[10, 2, 0x80, 0, 0, 1, 100])).is_err());

        let packed = datetime_packed(2015, 1, 15, 23, 24, 25, 0);
        let dt = packed.to_le_bytes();
        assert_eq!(ok(&opaque(12, &dt)), r#""2015-01-15 23:24:25.000000""#);
        assert_eq!(ok(&opaque(7, &dt)), r#""2015-01-15 23:24:25.000000""#);
        let date = datetime_packed(2015, 1, 15, 0, 0, 0, 0).to_le_bytes();
        assert_eq!(ok(&opaque(10, &date)), r#""2015-01-15""#);
        let with_micros = datetime_packed(9999, 12, 31, 23, 59, 59, 999_999).to_le_bytes();
        assert_eq!(
            ok(&opaque(12, &with_micros)),
            r#""9999-12-31 23:59:59.999999""#
        );
        let time = -((((12i64 << 12) | (34 << 6) | 56) << 24) + 500_000);
        assert_eq!(
            ok(&opaque(11, &time.to_le_bytes())),
            r#""-12:34:56.500000""#
        );
        let time = (((838i64 << 12) | (59 << 6) | 59) << 24).to_le_bytes();
        assert_eq!(ok(&opaque(11, &time)), r#""838:59:59.000000""#);
        assert!(render(&opaque(12, &dt[..7])).is_err());
        assert!(render(&opaque(12, &(-1i64).to_le_bytes())).is_err());

        let tree = J::Arr(vec![
            J::Opaque(12, dt.to_vec()),
            J::Opaque(246, vec![4, 4, 0x84, 0xD2]),
        ]);
        assert_eq!(ok(&doc(&tree)), r#"["2015-01-15 23:24:25.000000", 0.1234]"#);
    }

    #[test]
    fn other_opaque_values_are_base64() {
        assert_eq!(ok(&opaque(252, b"abc")), r#""base64:type252:YWJj""#);
        assert_eq!(ok(&opaque(15, b"ab")), r#""base64:type15:YWI=""#);
        assert_eq!(ok(&opaque(16, b"a")), r#""base64:type16:YQ==""#);
        assert_eq!(ok(&opaque(252, b"")), r#""base64:type252:""#);
        // 60 bytes make 80 characters: a break after the 76th.
        let data = [0u8; 60];
        let text = ok(&opaque(252, &data));
        assert_eq!(
            text,
            format!("\"base64:type252:{}\\n{}\"", "A".repeat(76), "A".repeat(4))
        );
        // VAR_STRING opaque is shown as the string it wraps.
        assert_eq!(ok(&opaque(253, b"hi\n")), r#""hi\n""#);
    }

    #[test]
    fn forged_offsets_and_sizes_fail() {
        let good = [
            0x00, 0x01, 0x00, 0x0C, 0x00, 0x0B, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a',
        ];
        let forge = |at: usize, value: u8| {
            let mut b = good;
            b[at] = value;
            render(&b)
        };
        // Key offset past the end, into the header, key length past the end.
        assert!(matches!(forge(5, 0xFF), Err(ValueError::Invalid { .. })));
        assert!(matches!(forge(5, 0x02), Err(ValueError::Invalid { .. })));
        assert!(matches!(forge(7, 0x09), Err(ValueError::Invalid { .. })));
        // Size larger than the buffer.
        assert!(matches!(forge(3, 0xFF), Err(ValueError::Truncated { .. })));
        // Count so large the header cannot fit.
        assert!(matches!(forge(1, 0xFF), Err(ValueError::Invalid { .. })));
        // Unknown value type, unknown literal.
        assert!(matches!(forge(9, 0x0d), Err(ValueError::Invalid { .. })));
        assert!(matches!(
            render(&[0x02, 0x01, 0x00, 0x07, 0x00, 0x04, 0x07, 0x00]),
            Err(ValueError::Invalid { .. })
        ));
        // An out-of-line value whose offset is past the container.
        let array = [0x02, 0x01, 0x00, 0x07, 0x00, 0x0c, 0x40, 0x00];
        assert!(matches!(render(&array), Err(ValueError::Invalid { .. })));
        // A string whose length runs past the container.
        let array = [0x02, 0x01, 0x00, 0x09, 0x00, 0x0c, 0x07, 0x00, 0x05, b'x'];
        assert!(matches!(render(&array), Err(ValueError::Truncated { .. })));
        // A length prefix that never ends.
        assert!(render(&[0x0c, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert!(render(&[0x0c, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
    }

    #[test]
    fn every_truncation_fails() {
        let tree = J::Obj(vec![
            (
                "a".into(),
                J::Arr(vec![J::I64(1), J::Str("two".into()), J::Null]),
            ),
            ("b".into(), J::Opaque(246, vec![10, 2, 0x80, 0, 0, 1, 50])),
        ]);
        let bytes = doc(&tree);
        assert_eq!(ok(&bytes), r#"{"a": [1, "two", null], "b": 1.50}"#);
        for len in 1..bytes.len() {
            assert!(render(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn errors_leave_the_callers_string_alone() {
        let mut out = String::from("keep");
        assert!(JsonBinary(&[0x0c, 0x05, b'x'])
            .write_json(&mut out)
            .is_err());
        assert_eq!(out, "keep");
        JsonBinary(&[0x04, 0x01]).write_json(&mut out).unwrap();
        assert_eq!(out, "keeptrue");
    }

    /// Wraps `inner` (a typed value) in a one-element small array.
    fn wrap(ty: u8, inner: &[u8]) -> Vec<u8> {
        let size = 7 + inner.len();
        let mut out = vec![0x01, 0x00];
        out.extend_from_slice(&(size as u16).to_le_bytes());
        out.extend_from_slice(&[ty, 0x07, 0x00]);
        out.extend_from_slice(inner);
        out
    }

    fn nested_arrays(levels: usize) -> Vec<u8> {
        let mut value = vec![0x00, 0x00, 0x04, 0x00];
        for _ in 1..levels {
            value = wrap(SMALL_ARRAY, &value);
        }
        value.insert(0, SMALL_ARRAY);
        value
    }

    #[test]
    fn nesting_is_limited_to_100() {
        let text = ok(&nested_arrays(100));
        assert_eq!(text, format!("{}{}", "[".repeat(100), "]".repeat(100)));
        assert!(matches!(
            render(&nested_arrays(101)),
            Err(ValueError::Invalid { .. })
        ));
        assert!(render(&nested_arrays(5000)).is_err());
    }

    #[test]
    fn shared_value_bomb_is_stopped() {
        // Each level is an array of 16 entries that all point at the same inner array, so 12
        // levels would print 16^12 empty arrays from well under a kilobyte.
        let mut value = vec![0x00, 0x00, 0x04, 0x00];
        for _ in 0..12 {
            let header = 4 + 16 * 3;
            let size = header + value.len();
            let mut next = vec![16, 0x00];
            next.extend_from_slice(&(size as u16).to_le_bytes());
            for _ in 0..16 {
                next.extend_from_slice(&[SMALL_ARRAY, header as u8, 0x00]);
            }
            next.extend_from_slice(&value);
            value = next;
        }
        value.insert(0, SMALL_ARRAY);
        assert!(value.len() < 1000);
        let mut out = String::new();
        let result = JsonBinary(&value).write_json(&mut out);
        assert!(matches!(result, Err(ValueError::Invalid { .. })));
        assert!(out.is_empty());
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

    fn random_string(rng: &mut Rng) -> String {
        const POOL: [char; 12] = [
            'a', 'Z', '0', ' ', '"', '\\', '\n', '\u{1}', 'é', '☃', '😀', '\u{1f}',
        ];
        (0..rng.below(8))
            .map(|_| POOL[rng.below(POOL.len() as u64) as usize])
            .collect()
    }

    fn random_tree(rng: &mut Rng, depth: u32) -> J {
        let pick = if depth == 0 {
            rng.below(9)
        } else {
            rng.below(11)
        };
        match pick {
            0 => J::Null,
            1 => J::Bool(rng.below(2) == 1),
            2 => J::I16(rng.next() as i16),
            3 => J::U16(rng.next() as u16),
            4 => J::I32(rng.next() as i32),
            5 => J::U32(rng.next() as u32),
            6 => J::I64(rng.next() as i64),
            7 => J::U64(rng.next()),
            8 => J::Str(random_string(rng)),
            9 => J::Arr(
                (0..rng.below(5))
                    .map(|_| random_tree(rng, depth - 1))
                    .collect(),
            ),
            _ => J::Obj(
                (0..rng.below(5))
                    .map(|_| (random_string(rng), random_tree(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn round_trips_random_trees() {
        let mut rng = Rng(0xDEAD_BEEF);
        for _ in 0..3000 {
            let tree = random_tree(&mut rng, 4);
            let mut expected = String::new();
            expect(&tree, &mut expected);
            assert_eq!(ok(&doc(&tree)), expected);
        }
    }

    #[test]
    fn mutated_documents_never_panic() {
        let mut rng = Rng(5);
        for _ in 0..3000 {
            let tree = random_tree(&mut rng, 3);
            let mut bytes = doc(&tree);
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            let cut = rng.below(bytes.len() as u64 + 1) as usize;
            let mut out = String::new();
            if JsonBinary(&bytes[..cut]).write_json(&mut out).is_ok() {
                assert!(out.len() <= cut * OUTPUT_FACTOR + OUTPUT_SLACK);
            } else {
                assert!(out.is_empty());
            }
        }
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            for b in &mut buf {
                *b = rng.next() as u8;
            }
            // Bias the first byte towards real type codes.
            buf[0] %= 0x10;
            let len = rng.below(65) as usize;
            let _ = render(&buf[..len]);
        }
    }
}

//! Rendering of decoded values as JSON text, in the `inspect` format that later commands
//! reuse: exact integers, decimals as strings, ISO-8601 temporal strings, UTF-8 text,
//! `{"base64": ...}` for bytes, and MySQL JSON embedded as JSON.

use std::fmt::Write;

use base64::Engine;
use outflow_binlog::table_map::ColumnInfo;
use outflow_binlog::Value;

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_base64(out: &mut String, b: &[u8]) {
    out.push_str("{\"base64\":\"");
    base64::engine::general_purpose::STANDARD.encode_string(b, out);
    out.push_str("\"}");
}

/// Collations whose bytes are MySQL `latin1` (Windows-1252).
fn is_latin1(collation: u16) -> bool {
    matches!(collation, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

/// Windows-1252 code points of 0x80..=0x9f (MySQL's latin1 is cp1252).
const CP1252_HIGH: [u16; 32] = [
    0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008d, 0x017d, 0x008f, 0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
];

fn push_text(out: &mut String, bytes: &[u8], col: &ColumnInfo, scratch: &mut String) {
    if col.collation.is_some_and(is_latin1) {
        scratch.clear();
        for &b in bytes {
            let cp = match b {
                0x80..=0x9f => u32::from(CP1252_HIGH[usize::from(b - 0x80)]),
                _ => u32::from(b),
            };
            scratch.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
        }
        push_str(out, scratch);
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => push_str(out, s),
        // Text that is not UTF-8 (an unknown charset, or a binary string whose charset the
        // binlog does not say) is shown losslessly rather than guessed at.
        Err(_) => push_base64(out, bytes),
    }
}

/// Shortest round-trip digits; exponent form outside 1e-5..1e16 so that large and tiny
/// values stay short (`-2.25e100`, not 101 digits).
fn push_float<F: std::fmt::Display + std::fmt::LowerExp>(out: &mut String, f: F, wide: f64) {
    let a = wide.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        let _ = write!(out, "{f}");
    } else {
        let _ = write!(out, "{f:e}");
    }
}

/// Appends the JSON rendering of `v`, a value of column `col`.
pub fn push_value(out: &mut String, v: &Value<'_>, col: &ColumnInfo, scratch: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) if f.is_finite() => push_float(out, *f, f64::from(*f)),
        Value::Double(f) if f.is_finite() => push_float(out, *f, *f),
        Value::Float(_) | Value::Double(_) => out.push_str("null"),
        Value::Decimal(d) => {
            let _ = write!(out, "\"{d}\"");
        }
        Value::Year(y) => {
            let _ = write!(out, "{y}");
        }
        Value::Date(d) => {
            let _ = write!(out, "\"{d}\"");
        }
        Value::Time(t) => {
            let _ = write!(out, "\"{t}\"");
        }
        Value::DateTime(t) => {
            let _ = write!(out, "\"{t}\"");
        }
        Value::Timestamp(t) => {
            let _ = write!(out, "\"{t}\"");
        }
        Value::Text(b) => push_text(out, b, col, scratch),
        Value::Bytes(b) | Value::Geometry(b) => push_base64(out, b),
        Value::Enum(i) => match col
            .members
            .as_ref()
            .and_then(|m| m.get(usize::from(*i).wrapping_sub(1)))
        {
            Some(name) => push_str(out, name),
            None if *i == 0 && col.members.is_some() => push_str(out, ""),
            None => {
                let _ = write!(out, "{i}");
            }
        },
        Value::Set(bits) => match &col.members {
            Some(m) => {
                scratch.clear();
                for (i, name) in m.iter().enumerate().take(64) {
                    if bits & (1 << i) != 0 {
                        if !scratch.is_empty() {
                            scratch.push(',');
                        }
                        scratch.push_str(name);
                    }
                }
                let s = std::mem::take(scratch);
                push_str(out, &s);
                *scratch = s;
            }
            None => {
                let _ = write!(out, "{bits}");
            }
        },
        Value::Bit { value, .. } => {
            let _ = write!(out, "{value}");
        }
        Value::Json(j) => {
            let mark = out.len();
            if j.write_json(out).is_err() {
                out.truncate(mark);
                out.push_str("{\"invalid_json_base64\":\"");
                base64::engine::general_purpose::STANDARD.encode_string(j.0, out);
                out.push_str("\"}");
            }
        }
        Value::JsonDiff(b) => {
            out.push_str("{\"json_diff\":");
            let mark = out.len();
            if outflow_binlog::value::json_diff::write_json_diffs(b, out).is_err() {
                out.truncate(mark);
                out.push_str("{\"invalid_base64\":\"");
                base64::engine::general_purpose::STANDARD.encode_string(b, out);
                out.push_str("\"}");
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}

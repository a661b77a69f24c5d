//! Small SQL text helpers shared by `verify` and the apply engine.

use std::fmt::Write as _;

use mysql_async::prelude::FromRow;
use mysql_async::{Row, Value};

/// Converts rows to `T`. The driver's own conversion panics on an unexpected row and its
/// error shows the row's values; this returns an error that names only the column count.
pub fn typed<T: FromRow>(rows: Vec<Row>) -> Result<Vec<T>, mysql_async::Error> {
    rows.into_iter().map(|r| typed_row(r)).collect()
}

/// [`typed`] for at most one row.
pub fn typed_first<T: FromRow>(row: Option<Row>) -> Result<Option<T>, mysql_async::Error> {
    row.map(typed_row).transpose()
}

fn typed_row<T: FromRow>(row: Row) -> Result<T, mysql_async::Error> {
    let n = row.len();
    T::from_row_opt(row).map_err(|_| {
        mysql_async::Error::Other(
            format!("a result row of {n} columns did not have the expected types").into(),
        )
    })
}

/// Appends `name` as a back-quoted identifier (a back quote inside is doubled).
pub fn push_ident(out: &mut String, name: &str) {
    out.push('`');
    for c in name.chars() {
        if c == '`' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('`');
}

/// `name` as a back-quoted identifier.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

/// `` `schema`.`table` ``.
pub fn qualified(schema: &str, table: &str) -> String {
    let mut out = String::with_capacity(schema.len() + table.len() + 5);
    push_ident(&mut out, schema);
    out.push('.');
    push_ident(&mut out, table);
    out
}

/// Appends `text` as a string literal that reads the same under every `sql_mode` (a hex
/// literal converted to utf8mb4; no quote or backslash to escape).
pub fn push_text_literal(out: &mut String, text: &str) {
    out.push_str("CONVERT(X'");
    for b in text.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out.push_str("' USING utf8mb4)");
}

/// A value as a person reads it in a report: numbers as numbers, text that is valid UTF-8
/// without control characters in single quotes, other bytes as `0x` hex, NULL as `NULL`.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::NULL => "NULL".to_string(),
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Double(v) => v.to_string(),
        Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => {
                let mut out = String::with_capacity(text.len() + 2);
                out.push('\'');
                for c in text.chars() {
                    if c == '\'' {
                        out.push('\'');
                    }
                    out.push(c);
                }
                out.push('\'');
                out
            }
            _ => {
                let mut out = String::with_capacity(bytes.len() * 2 + 2);
                out.push_str("0x");
                for b in bytes {
                    let _ = write!(out, "{b:02x}");
                }
                out
            }
        },
        Value::Date(y, mo, d, h, mi, s, us) => {
            if *us == 0 {
                format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}'")
            } else {
                format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let sign = if *neg { "-" } else { "" };
            let hours = u64::from(*days) * 24 + u64::from(*h);
            if *us == 0 {
                format!("'{sign}{hours:02}:{mi:02}:{s:02}'")
            } else {
                format!("'{sign}{hours:02}:{mi:02}:{s:02}.{us:06}'")
            }
        }
    }
}

/// A change model value as a person reads it (see [`render_value`]).
pub fn render_value_ref(value: outflow_core::ValueRef<'_>) -> String {
    use outflow_core::ValueRef as V;
    let bytes = |b: &[u8]| render_value(&Value::Bytes(b.to_vec()));
    match value {
        V::Null => "NULL".to_string(),
        V::Int(x) => x.to_string(),
        V::UInt(x) | V::Set(x) | V::Bit(x) => x.to_string(),
        V::Year(x) | V::Enum(x) => x.to_string(),
        V::Float(x) => x.to_string(),
        V::Double(x) => x.to_string(),
        V::Decimal(b) => String::from_utf8_lossy(b).into_owned(),
        V::Date(d) => format!("'{d}'"),
        V::Time(t) => {
            let mut s = String::from("'");
            let _ = t.write_sql(&mut s, 6);
            s.push('\'');
            s
        }
        V::DateTime(d) => {
            let mut s = String::from("'");
            let _ = d.write_sql(&mut s, 6);
            s.push('\'');
            s
        }
        V::Timestamp(t) => {
            let mut s = String::from("'");
            let _ = crate::literal::timestamp_to_utc(t).write_sql(&mut s, 6);
            s.push_str(" UTC'");
            s
        }
        V::Text(b) | V::Bytes(b) | V::Json(b) | V::Geometry(b) => bytes(b),
    }
}

/// Appends an encoding of `value` that is injective across values and types, for use as a
/// hash-map key (mysql_async's `Value` is not `Hash`).
pub fn push_key_bytes(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::NULL => out.push(0),
        Value::Bytes(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Value::Int(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::UInt(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Float(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::Double(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::Date(y, mo, d, h, mi, s, us) => {
            out.push(6);
            out.extend_from_slice(&y.to_le_bytes());
            out.extend_from_slice(&[*mo, *d, *h, *mi, *s]);
            out.extend_from_slice(&us.to_le_bytes());
        }
        Value::Time(neg, days, h, mi, s, us) => {
            out.push(7);
            out.push(u8::from(*neg));
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&[*h, *mi, *s]);
            out.extend_from_slice(&us.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a"), "`a`");
        assert_eq!(ident("we`ird"), "`we``ird`");
        assert_eq!(qualified("d b", "t"), "`d b`.`t`");
    }

    #[test]
    fn text_literals_are_hex() {
        let mut out = String::new();
        push_text_literal(&mut out, "a'\\");
        assert_eq!(out, "CONVERT(X'61275c' USING utf8mb4)");
    }

    #[test]
    fn values_render_readably() {
        assert_eq!(render_value(&Value::NULL), "NULL");
        assert_eq!(render_value(&Value::Int(-3)), "-3");
        assert_eq!(render_value(&Value::Bytes(b"it's".to_vec())), "'it''s'");
        assert_eq!(render_value(&Value::Bytes(vec![0, 0xff])), "0x00ff");
        assert_eq!(
            render_value(&Value::Date(2024, 1, 2, 3, 4, 5, 6)),
            "'2024-01-02 03:04:05.000006'"
        );
        assert_eq!(
            render_value(&Value::Time(true, 1, 2, 3, 4, 0)),
            "'-26:03:04'"
        );
    }

    #[test]
    fn key_bytes_distinguish_types_and_boundaries() {
        let enc = |values: &[Value]| {
            let mut out = Vec::new();
            for v in values {
                push_key_bytes(&mut out, v);
            }
            out
        };
        assert_ne!(enc(&[Value::Int(1)]), enc(&[Value::UInt(1)]));
        assert_ne!(
            enc(&[Value::Bytes(b"ab".to_vec()), Value::Bytes(b"c".to_vec())]),
            enc(&[Value::Bytes(b"a".to_vec()), Value::Bytes(b"bc".to_vec())])
        );
        assert_ne!(enc(&[Value::NULL]), enc(&[Value::Bytes(Vec::new())]));
    }
}

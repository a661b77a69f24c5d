//! MySQL partial JSON updates (PARTIAL_UPDATE_ROWS with `binlog_row_value_options=
//! PARTIAL_JSON`): instead of the whole document, the after image of a JSON column holds a
//! list of diffs against the before image.
//!
//! Layout of one diff, repeated to the end of the value: `operation u8` (0 = replace,
//! 1 = insert, 2 = remove), `path_len packed | path` (a JSON path such as `$.a[1]`), and
//! unless the operation is remove, `value_len packed | value` (MySQL binary JSON).

use crate::bytes::Reader;
use crate::value::{JsonBinary, ValueError};

/// What one diff does at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonDiffOp {
    /// Replace the value at the path.
    Replace,
    /// Insert a value at the path (into an array or object).
    Insert,
    /// Remove the value at the path.
    Remove,
}

impl JsonDiffOp {
    /// `replace`, `insert` or `remove`.
    pub fn name(self) -> &'static str {
        match self {
            JsonDiffOp::Replace => "replace",
            JsonDiffOp::Insert => "insert",
            JsonDiffOp::Remove => "remove",
        }
    }
}

/// One diff of a partial JSON update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonDiff<'a> {
    /// The operation.
    pub op: JsonDiffOp,
    /// The JSON path it applies to.
    pub path: &'a [u8],
    /// The new value (absent for remove).
    pub value: Option<JsonBinary<'a>>,
}

/// Iterates the diffs of a partial JSON update value.
pub fn json_diffs(buf: &[u8]) -> impl Iterator<Item = Result<JsonDiff<'_>, ValueError>> {
    let mut r = Reader::new(buf);
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || r.remaining() == 0 {
            return None;
        }
        let d = next_diff(&mut r);
        failed = d.is_err();
        Some(d)
    })
}

fn next_diff<'a>(r: &mut Reader<'a>) -> Result<JsonDiff<'a>, ValueError> {
    let bad = |reason| ValueError::Invalid {
        kind: "partial JSON diff",
        reason,
    };
    let op = match r.u8().map_err(|_| bad("missing operation"))? {
        0 => JsonDiffOp::Replace,
        1 => JsonDiffOp::Insert,
        2 => JsonDiffOp::Remove,
        _ => return Err(bad("unknown operation")),
    };
    let path = r.packed_bytes().map_err(|_| bad("truncated path"))?;
    let value = if op == JsonDiffOp::Remove {
        None
    } else {
        Some(JsonBinary(
            r.packed_bytes().map_err(|_| bad("truncated value"))?,
        ))
    };
    Ok(JsonDiff { op, path, value })
}

/// Renders the diffs as a JSON array of `{"op": ..., "path": ..., "value": ...}` objects
/// into `out`. On error `out` is left as it was.
pub fn write_json_diffs(buf: &[u8], out: &mut String) -> Result<(), ValueError> {
    let mark = out.len();
    let r = (|| {
        out.push('[');
        for (i, d) in json_diffs(buf).enumerate() {
            let d = d?;
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str("{\"op\": \"");
            out.push_str(d.op.name());
            out.push_str("\", \"path\": ");
            let path = std::str::from_utf8(d.path).map_err(|_| ValueError::Invalid {
                kind: "partial JSON diff",
                reason: "path is not UTF-8",
            })?;
            push_json_string(out, path);
            if let Some(v) = d.value {
                out.push_str(", \"value\": ");
                v.write_json(out)?;
            }
            out.push('}');
        }
        out.push(']');
        Ok(())
    })();
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_replace_and_remove() {
        // replace $.a with int16 7; remove $.b
        let mut b = vec![0, 3, b'$', b'.', b'a', 3, 0x05, 7, 0];
        b.extend_from_slice(&[2, 3, b'$', b'.', b'b']);
        let mut s = String::new();
        write_json_diffs(&b, &mut s).unwrap();
        assert_eq!(
            s,
            r#"[{"op": "replace", "path": "$.a", "value": 7}, {"op": "remove", "path": "$.b"}]"#
        );
    }

    #[test]
    fn truncated_diff_is_an_error_and_leaves_output() {
        let mut s = String::from("x");
        assert!(write_json_diffs(&[0, 9, b'$'], &mut s).is_err());
        assert!(write_json_diffs(&[7], &mut s).is_err());
        assert_eq!(s, "x");
    }
}

//! Column exclusion and masking on the egress path (sans-IO).
//!
//! The rules themselves (which columns of which tables) are the source side's
//! configuration (`outflow-source`'s filters); they reach the codec through
//! [`ColumnPolicy`], asked once per table definition. What leaves the source is then:
//!
//! - an excluded column: nothing. The shipped [`TableSchema`] omits it and so do the images,
//!   so the target keeps its own value (its default for new rows). A primary-key column
//!   cannot be excluded: the target could no longer find rows (an error naming the table).
//! - a masked column: the lower-case hex SHA-256 (64 ASCII characters) of the mask key
//!   followed by the value's text ([`mask_text`]), shipped as text: the shipped schema
//!   types it as a 64-byte non-binary string, and the target column must hold at least 64
//!   characters. NULL stays NULL.
//!
//! The binlog path (the builder) and the snapshot path both go through [`ColumnMap`] and
//! [`mask_text`], so a row hashes the same whichever path carried it.

use std::fmt::Write as _;

use outflow_core::{ColumnSchema, ColumnType, SchemaVersion, TableSchema, ValueRef};

/// What happens to one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnAction {
    /// Sent as is.
    Keep,
    /// Left out.
    Exclude,
    /// Replaced by a hash.
    Mask,
}

/// The column rules, as the codec needs them.
pub trait ColumnPolicy: Send + Sync {
    /// The action per column of `db`.`table`, whose columns are `names` in order; empty
    /// when every column is kept. Called once per table definition.
    fn actions(&self, db: &str, table: &str, names: &[&str]) -> Vec<ColumnAction>;

    /// Writes the mask of `text` (a value's text form, [`mask_text`]) into `out` as 64
    /// lower-case hex digits, replacing its contents.
    fn mask(&self, text: &[u8], out: &mut String);
}

/// Bytes of a masked value: 32 bytes of SHA-256 as hex.
pub const MASK_LEN: u32 = 64;

/// Where each source column goes in the shipped schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The table as the source has it (masked values take their text form from it).
    pub source: TableSchema,
    /// Per source column: its index in the shipped schema, `None` when excluded.
    pub out: Vec<Option<usize>>,
    /// Per source column: whether it is masked.
    pub mask: Vec<bool>,
}

impl ColumnMap {
    /// The shipped schema of `source` under `actions` (one per column, or empty for none),
    /// and the map from source columns to it. `None` when every column is kept. An excluded
    /// primary-key column is an error (the message names it).
    pub fn new(
        source: &TableSchema,
        actions: &[ColumnAction],
    ) -> Result<Option<(TableSchema, ColumnMap)>, String> {
        if actions.iter().all(|a| *a == ColumnAction::Keep) {
            return Ok(None);
        }
        let action = |i: usize| actions.get(i).copied().unwrap_or(ColumnAction::Keep);
        let mut shipped = TableSchema {
            version: SchemaVersion(0),
            db: source.db.clone(),
            table: source.table.clone(),
            columns: Vec::with_capacity(source.columns.len()),
            primary_key: Vec::with_capacity(source.primary_key.len()),
        };
        let mut out = Vec::with_capacity(source.columns.len());
        let mut mask = Vec::with_capacity(source.columns.len());
        for (i, c) in source.columns.iter().enumerate() {
            match action(i) {
                ColumnAction::Exclude => {
                    if source.primary_key.iter().any(|&k| usize::from(k) == i) {
                        return Err(format!(
                            "column `{}` of `{}` is part of the primary key and cannot be \
                             excluded (the target finds rows by it); mask it or drop the rule",
                            c.name,
                            source.qualified_name()
                        ));
                    }
                    out.push(None);
                    mask.push(false);
                }
                a => {
                    out.push(Some(shipped.columns.len()));
                    mask.push(a == ColumnAction::Mask);
                    shipped.columns.push(if a == ColumnAction::Mask {
                        ColumnSchema {
                            name: c.name.clone(),
                            ty: ColumnType::String {
                                max_bytes: MASK_LEN,
                                binary: false,
                            },
                            unsigned: false,
                            nullable: c.nullable,
                            // Hex digits are the same bytes in every charset: the target's
                            // column charset applies.
                            collation: None,
                            members: Vec::new(),
                        }
                    } else {
                        c.clone()
                    });
                }
            }
        }
        for &k in &source.primary_key {
            let Some(Some(o)) = out.get(usize::from(k)) else {
                continue;
            };
            shipped
                .primary_key
                .push(u16::try_from(*o).map_err(|_| "too many columns".to_string())?);
        }
        shipped.version = SchemaVersion(crate::builder::content_hash(&shipped));
        Ok(Some((
            shipped,
            ColumnMap {
                source: source.clone(),
                out,
                mask,
            },
        )))
    }
}

/// Writes into a `Vec<u8>` through `fmt::Write`.
pub(crate) struct ByteWriter<'v>(pub(crate) &'v mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends the text a masked value is hashed from, as the server's `CAST(v AS CHAR)`
/// shows it for the common types, so that `SHA2(CONCAT(key, v), 256)` on the source gives
/// the same hash: integers and YEAR in decimal; DECIMAL with the column's scale; strings,
/// blobs, JSON and geometry as their bytes (in the column's charset); DATE `YYYY-MM-DD`,
/// DATETIME `YYYY-MM-DD HH:MM:SS[.f]` and TIME `[-]HH:MM:SS[.f]` with the column's
/// fractional digits; ENUM and SET as their member names when known (else the number).
/// Not as the server shows them: TIMESTAMP as seconds since the epoch (`S[.f]`, the
/// server's text depends on its time zone), FLOAT/DOUBLE as the shortest text that reads
/// back the same, BIT as a decimal number. NULL is never masked.
pub fn mask_text(v: ValueRef<'_>, col: &ColumnSchema, out: &mut Vec<u8>) {
    let mut w = ByteWriter(out);
    let _ = match v {
        ValueRef::Null => Ok(()),
        ValueRef::Int(x) => write!(w, "{x}"),
        ValueRef::UInt(x) => write!(w, "{x}"),
        ValueRef::Float(x) => write!(w, "{x}"),
        ValueRef::Double(x) => write!(w, "{x}"),
        ValueRef::Year(x) => write!(w, "{x}"),
        ValueRef::Bit(x) => write!(w, "{x}"),
        ValueRef::Date(d) => write!(w, "{d}"),
        ValueRef::Time(t) => t.write_sql(&mut w, col.fsp()),
        ValueRef::DateTime(t) => t.write_sql(&mut w, col.fsp()),
        ValueRef::Timestamp(t) => {
            let r = write!(w, "{}", t.seconds);
            match col.fsp() {
                0 => r,
                fsp => {
                    let fsp = u32::from(fsp.min(6));
                    let width = fsp as usize;
                    write!(w, ".{:0width$}", t.micros / 10u32.pow(6 - fsp))
                }
            }
        }
        ValueRef::Decimal(b)
        | ValueRef::Text(b)
        | ValueRef::Bytes(b)
        | ValueRef::Json(b)
        | ValueRef::Geometry(b) => {
            w.0.extend_from_slice(b);
            Ok(())
        }
        ValueRef::Enum(i) => match col.members.get(usize::from(i).wrapping_sub(1)) {
            Some(name) => w.write_str(name),
            None if i == 0 && !col.members.is_empty() => Ok(()),
            None => write!(w, "{i}"),
        },
        ValueRef::Set(bits) if !col.members.is_empty() => {
            let mut first = true;
            for (i, name) in col.members.iter().enumerate().take(64) {
                if bits & (1 << i) != 0 {
                    if !first {
                        w.0.push(b',');
                    }
                    first = false;
                    w.0.extend_from_slice(name.as_bytes());
                }
            }
            Ok(())
        }
        ValueRef::Set(bits) => write!(w, "{bits}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::{Date, DateTime};

    fn table() -> TableSchema {
        let mut t = TableSchema {
            version: SchemaVersion(1),
            db: "d".into(),
            table: "t".into(),
            columns: vec![
                ColumnSchema::new("id", ColumnType::Int { bytes: 4 }),
                ColumnSchema::new("secret", ColumnType::Int { bytes: 4 }),
                ColumnSchema::new(
                    "email",
                    ColumnType::Blob {
                        len_bytes: 2,
                        binary: false,
                    },
                ),
                ColumnSchema::new("k", ColumnType::Int { bytes: 4 }),
            ],
            primary_key: vec![0, 3],
        };
        t.columns[2].nullable = false;
        t
    }

    #[test]
    fn the_shipped_schema_drops_and_retypes() {
        use ColumnAction::*;
        let t = table();
        assert_eq!(ColumnMap::new(&t, &[]).unwrap(), None);
        assert_eq!(ColumnMap::new(&t, &[Keep, Keep]).unwrap(), None);
        let (s, m) = ColumnMap::new(&t, &[Keep, Exclude, Mask]).unwrap().unwrap();
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "email", "k"]);
        assert_eq!(s.primary_key, [0, 2], "key indexes follow the shift");
        assert_eq!(
            s.columns[1].ty,
            ColumnType::String {
                max_bytes: 64,
                binary: false
            }
        );
        assert!(!s.columns[1].nullable);
        assert_eq!(m.out, [Some(0), None, Some(1), Some(2)]);
        assert_eq!(m.mask, [false, false, true, false]);
        assert_ne!(s.version, t.version);
        let e = ColumnMap::new(&t, &[Keep, Keep, Keep, Exclude]).unwrap_err();
        assert!(e.contains("`k` of `d.t` is part of the primary key"), "{e}");
    }

    #[test]
    fn mask_texts_follow_the_server() {
        let text = |v: ValueRef<'_>, c: &ColumnSchema| {
            let mut out = Vec::new();
            mask_text(v, c, &mut out);
            String::from_utf8(out).unwrap()
        };
        let int = ColumnSchema::new("i", ColumnType::Int { bytes: 4 });
        assert_eq!(text(ValueRef::Int(-42), &int), "-42");
        assert_eq!(text(ValueRef::Text(b"a@b"), &int), "a@b");
        let d = Date {
            year: 2024,
            month: 2,
            day: 9,
        };
        assert_eq!(text(ValueRef::Date(d), &int), "2024-02-09");
        let dt = ColumnSchema::new("t", ColumnType::DateTime { fsp: 3 });
        let v = DateTime {
            year: 2024,
            month: 2,
            day: 9,
            hour: 1,
            minute: 2,
            second: 3,
            micros: 456_000,
        };
        assert_eq!(text(ValueRef::DateTime(v), &dt), "2024-02-09 01:02:03.456");
        let mut e = ColumnSchema::new("e", ColumnType::Enum { bytes: 1 });
        e.members = vec!["x".into(), "y".into()];
        assert_eq!(text(ValueRef::Enum(2), &e), "y");
        let mut s = ColumnSchema::new("s", ColumnType::Set { bytes: 1 });
        s.members = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(text(ValueRef::Set(0b101), &s), "a,c");
    }
}

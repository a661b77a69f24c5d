//! A table plan: how the columns of one batch schema map onto the target table, which
//! columns identify a row, and the SQL fragments (value tuples, key predicates, full-row
//! matches) that the applier's statements are made of. Sans-IO: built from descriptions,
//! writes into byte buffers.

use std::collections::HashMap;

use outflow_core::schema::BINARY_COLLATION;
use outflow_core::{Image, TableSchema, ValueKind, ValueRef};

use crate::catalog::CatalogTable;
use crate::literal::{
    push_param, push_param_padded, push_quoted, push_quoted_padded, push_value, LiteralError,
};
use crate::sql::{ident, qualified};

/// How one batch column lands on the target.
#[derive(Debug, Clone)]
pub(crate) struct ColPlan {
    /// The target column, quoted.
    pub quoted: String,
    /// Introducer for text values: the source column's character set.
    pub charset: String,
    /// For text keys: the target column's charset when it differs from `charset` (the
    /// value is converted), and its collation, so comparisons use the column's index.
    pub convert_to: Option<String>,
    pub collate: Option<String>,
    /// Generated on the target: never written, never matched.
    pub skip: bool,
    /// Fixed-length binary column (BINARY(n), UUID, INET6, INET4): the server logs such
    /// values without their trailing zero bytes, and the target must get them back, both
    /// to store (a 15-byte UUID is not a UUID) and to compare (bytes compare with trailing
    /// zeros).
    pub pad_to: Option<usize>,
    /// Values equal under the column's comparison without being equal bytes (text under a
    /// collation, floats with signed zeros): key hashes normalise them.
    pub fuzzy: bool,
    /// The placeholder of a value to store: `?`, or for text in another character set
    /// than the column's (and JSON, which MySQL refuses as a binary string) the
    /// conversion the literal's introducer makes.
    pub store_placeholder: String,
    /// The placeholder of a value a key column is compared with, as `push_key_value`
    /// writes the literal (its charset, conversion and collation).
    pub key_placeholder: String,
}

/// Everything the applier needs to write one table's changes.
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    /// `db.table`, for messages.
    pub name: String,
    /// `` `db`.`table` ``.
    pub quoted: String,
    /// `` `db` ``.
    pub db_quoted: String,
    /// One per batch column.
    pub cols: Vec<ColPlan>,
    /// Batch columns that identify a row; empty for a keyless table (full-row match).
    pub key: Vec<usize>,
    /// Keep at most one pending group of updates, so updates stay in source order: the key
    /// has fuzzy columns, or the table has secondary UNIQUE keys.
    pub ordered_updates: bool,
    /// Apply updates as `UPDATE` statements rather than `INSERT ... ON DUPLICATE KEY
    /// UPDATE`: with secondary UNIQUE keys, the latter could update another row.
    pub plain_updates: bool,
    /// Target columns that take values (not generated), for the keyless ambiguity rule.
    pub writable_target_columns: usize,
    /// Those columns, quoted, comma-separated (to copy whole rows on the server).
    pub writable_list: String,
}

/// Why a batch schema does not fit the target table.
pub(crate) type PlanError = String;

impl TablePlan {
    /// Maps `schema` (from the batch) onto `target` (from the target's catalog).
    pub fn new(
        schema: &TableSchema,
        target: &CatalogTable,
        collations: &HashMap<u16, (String, String)>,
    ) -> Result<TablePlan, PlanError> {
        let named = schema.columns.iter().all(|c| !c.name.is_empty());
        if !named && schema.columns.len() != target.columns.len() {
            return Err(format!(
                "the change has {} unnamed columns, the target table {}; without column \
                 names (binlog_row_metadata=FULL) they are matched by position",
                schema.columns.len(),
                target.columns.len()
            ));
        }
        let mut cols = Vec::with_capacity(schema.columns.len());
        let mut target_index = Vec::with_capacity(schema.columns.len());
        for (i, c) in schema.columns.iter().enumerate() {
            let t = if named {
                target
                    .column_index(&c.name)
                    .ok_or_else(|| format!("column `{}` does not exist on the target", c.name))?
            } else {
                i
            };
            target_index.push(t);
            let tc = &target.columns[t];
            let source_charset = c
                .collation
                .filter(|&id| id != BINARY_COLLATION)
                .and_then(|id| collations.get(&id))
                .map(|(charset, _)| charset.clone());
            let target_charset = tc.charset.clone();
            let charset = source_charset
                .clone()
                .or_else(|| target_charset.clone())
                .unwrap_or_else(|| "utf8mb4".to_string());
            let convert_to = match (&source_charset, &target_charset) {
                (Some(s), Some(t)) if s != t => Some(t.clone()),
                _ => None,
            };
            let kind = c.value_kind();
            let text = kind == ValueKind::Text;
            let pad_to = fixed_binary_len(&tc.data_type, &tc.column_type);
            let collate = if text { tc.collation.clone() } else { None };
            let as_text = |charset: &str| format!("CONVERT(? USING {charset})");
            let store_placeholder = match kind {
                ValueKind::Json => as_text("utf8mb4"),
                ValueKind::Text if pad_to.is_none() && convert_to.is_some() => as_text(&charset),
                _ => "?".to_string(),
            };
            let key_placeholder = match (&collate, &convert_to) {
                (Some(coll), Some(to)) => {
                    format!("CONVERT({} USING {to}) COLLATE {coll}", as_text(&charset))
                }
                (Some(coll), None) => format!("{} COLLATE {coll}", as_text(&charset)),
                (None, _) => store_placeholder.clone(),
            };
            cols.push(ColPlan {
                store_placeholder,
                key_placeholder,
                quoted: ident(&tc.name),
                charset,
                convert_to: if text { convert_to } else { None },
                collate,
                skip: tc.generated,
                pad_to,
                fuzzy: (text && !tc.collation.as_deref().is_some_and(|c| c.ends_with("_bin")))
                    || matches!(kind, ValueKind::Float | ValueKind::Double),
            });
        }
        // The source's key if it is known, else the target's (the before images of a table
        // the source calls keyless carry every column, so they hold the target's key too).
        let key: Vec<usize> = if schema.has_primary_key() {
            schema.primary_key.iter().map(|&k| usize::from(k)).collect()
        } else if let Some((_, target_key)) = target.row_key() {
            let mapped: Option<Vec<usize>> = target_key
                .iter()
                .map(|t| target_index.iter().position(|x| x == t))
                .collect();
            mapped.unwrap_or_default()
        } else {
            Vec::new()
        };
        if key.iter().any(|&k| cols[k].skip) {
            return Err("a key column is generated on the target".to_string());
        }
        let fuzzy_key = key.iter().any(|&k| cols[k].fuzzy);
        let secondary_unique = !target.unique_keys.is_empty();
        Ok(TablePlan {
            name: schema.qualified_name(),
            quoted: qualified(&schema.db, &schema.table),
            db_quoted: ident(&schema.db),
            cols,
            ordered_updates: fuzzy_key || secondary_unique,
            plain_updates: secondary_unique,
            writable_target_columns: target.columns.iter().filter(|c| !c.generated).count(),
            writable_list: target
                .columns
                .iter()
                .filter(|c| !c.generated)
                .map(|c| ident(&c.name))
                .collect::<Vec<_>>()
                .join(","),
            key,
        })
    }

    /// Whether rows are matched by a key (else by all their values).
    pub fn keyed(&self) -> bool {
        !self.key.is_empty()
    }

    /// Appends `v` as a value to store in column `c`.
    pub fn push_value(
        &self,
        out: &mut Vec<u8>,
        c: usize,
        v: ValueRef<'_>,
    ) -> Result<(), LiteralError> {
        let col = &self.cols[c];
        match (v, col.pad_to) {
            // The binlog may type these as text; they are bytes all the same.
            (ValueRef::Bytes(bytes) | ValueRef::Text(bytes), Some(len)) => {
                push_quoted_padded(out, bytes, len.max(bytes.len()));
                Ok(())
            }
            _ => push_value(out, v, &col.charset),
        }
    }

    /// Appends `v` as a value to compare key column `c` with, so that the comparison uses
    /// the column's collation (and its index).
    pub fn push_key_value(
        &self,
        out: &mut Vec<u8>,
        c: usize,
        v: ValueRef<'_>,
    ) -> Result<(), LiteralError> {
        let col = &self.cols[c];
        match (v, &col.collate) {
            (ValueRef::Text(_), Some(collation)) => {
                if let Some(to) = &col.convert_to {
                    out.extend_from_slice(b"CONVERT(");
                    push_value(out, v, &col.charset)?;
                    out.extend_from_slice(b" USING ");
                    out.extend_from_slice(to.as_bytes());
                    out.push(b')');
                } else {
                    push_value(out, v, &col.charset)?;
                }
                out.extend_from_slice(b" COLLATE ");
                out.extend_from_slice(collation.as_bytes());
                Ok(())
            }
            _ => self.push_value(out, c, v),
        }
    }

    /// Appends `v` as a parameter to store in column `c` (placeholder
    /// `store_placeholder`): [`TablePlan::push_value`]'s value.
    pub fn push_param(
        &self,
        out: &mut Vec<u8>,
        c: usize,
        v: ValueRef<'_>,
    ) -> Result<(), LiteralError> {
        match (v, self.cols[c].pad_to) {
            (ValueRef::Bytes(bytes) | ValueRef::Text(bytes), Some(len)) => {
                push_param_padded(out, bytes, len);
                Ok(())
            }
            _ => push_param(out, v),
        }
    }

    /// Appends `v` as a parameter to compare key column `c` with (placeholder
    /// `key_placeholder`): [`TablePlan::push_key_value`]'s value.
    pub fn push_key_param(
        &self,
        out: &mut Vec<u8>,
        c: usize,
        v: ValueRef<'_>,
    ) -> Result<(), LiteralError> {
        match (v, &self.cols[c].collate) {
            (ValueRef::Text(_), Some(_)) => push_param(out, v),
            _ => self.push_param(out, c, v),
        }
    }

    /// Appends `v` to compare column `c` with byte for byte (full-row match): text as the
    /// target's bytes, so that a case- or accent-insensitive collation cannot match a row
    /// that differs.
    fn push_exact_value(
        &self,
        out: &mut Vec<u8>,
        c: usize,
        v: ValueRef<'_>,
    ) -> Result<(), LiteralError> {
        let col = &self.cols[c];
        match v {
            ValueRef::Text(_) if col.pad_to.is_some() => self.push_value(out, c, v),
            ValueRef::Text(bytes) => match &col.convert_to {
                Some(to) => {
                    out.extend_from_slice(b"CAST(CONVERT(");
                    push_value(out, v, &col.charset)?;
                    out.extend_from_slice(b" USING ");
                    out.extend_from_slice(to.as_bytes());
                    out.extend_from_slice(b") AS BINARY)");
                    Ok(())
                }
                // With `SET NAMES binary`, a plain quoted string is a binary string.
                None => {
                    push_quoted(out, bytes);
                    Ok(())
                }
            },
            _ => self.push_value(out, c, v),
        }
    }

    /// `(`a`, `b`, ...)` for the given batch columns.
    pub fn push_column_list(&self, out: &mut Vec<u8>, columns: impl Iterator<Item = usize>) {
        out.push(b'(');
        for (n, c) in columns.enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.cols[c].quoted.as_bytes());
        }
        out.push(b')');
    }

    /// `k1 = v1 AND k2 = v2` from `image`'s key columns. `None` when the image lacks one.
    pub fn push_key_match(
        &self,
        out: &mut Vec<u8>,
        image: &Image<'_>,
    ) -> Result<bool, LiteralError> {
        for (n, &k) in self.key.iter().enumerate() {
            let Some(v) = image.get(k) else {
                return Ok(false);
            };
            if n > 0 {
                out.extend_from_slice(b" AND ");
            }
            out.extend_from_slice(self.cols[k].quoted.as_bytes());
            out.extend_from_slice(if v.is_null() { b" IS " } else { b" = " });
            self.push_key_value(out, k, v)?;
        }
        Ok(true)
    }

    /// `v` (one key column) or `(v1,v2)` (several): one element of a `key IN (...)` list.
    pub fn push_key_tuple(
        &self,
        out: &mut Vec<u8>,
        image: &Image<'_>,
    ) -> Result<bool, LiteralError> {
        let several = self.key.len() > 1;
        if several {
            out.push(b'(');
        }
        for (n, &k) in self.key.iter().enumerate() {
            let Some(v) = image.get(k) else {
                return Ok(false);
            };
            if n > 0 {
                out.push(b',');
            }
            self.push_key_value(out, k, v)?;
        }
        if several {
            out.push(b')');
        }
        Ok(true)
    }

    /// `c1 <=> v1 AND c2 <=> v2 ...` over every column `image` carries (full-row match).
    /// Returns how many target columns the match covers.
    pub fn push_full_match(
        &self,
        out: &mut Vec<u8>,
        image: &Image<'_>,
    ) -> Result<usize, LiteralError> {
        let mut n = 0;
        for (c, v) in image.values() {
            if self.cols[c].skip {
                continue;
            }
            if n > 0 {
                out.extend_from_slice(b" AND ");
            }
            out.extend_from_slice(self.cols[c].quoted.as_bytes());
            out.extend_from_slice(b" <=> ");
            self.push_exact_value(out, c, v)?;
            n += 1;
        }
        if n == 0 {
            out.extend_from_slice(b"FALSE");
        }
        Ok(n)
    }

    /// `c1 = v1, c2 = v2` for the non-key, writable columns `image` carries. Returns how many.
    pub fn push_assignments(
        &self,
        out: &mut Vec<u8>,
        image: &Image<'_>,
        include_key: bool,
    ) -> Result<usize, LiteralError> {
        let mut n = 0;
        for (c, v) in image.values() {
            if self.cols[c].skip || (!include_key && self.key.contains(&c)) {
                continue;
            }
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.cols[c].quoted.as_bytes());
            out.push(b'=');
            self.push_value(out, c, v)?;
            n += 1;
        }
        Ok(n)
    }
}

impl TablePlan {
    /// `id=5, name='x'`: the key values of `image` as a person reads them, for conflict
    /// messages (key values identify the row; other values are never shown). For a keyless
    /// table, the number of values the image carries.
    pub fn describe_key(&self, image: &Image<'_>) -> String {
        let mut out = String::new();
        if !self.keyed() {
            let n = image.values().count();
            return format!("no key; matched by {n} column values");
        }
        for (n, &k) in self.key.iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            out.push_str(self.cols[k].quoted.trim_matches('`'));
            out.push('=');
            match image.get(k) {
                Some(v) => out.push_str(&crate::sql::render_value_ref(v)),
                None => out.push('?'),
            }
        }
        out
    }
}

/// The stored length of a fixed-length binary column type: `binary(n)` from its column
/// type, and MariaDB's UUID (16), INET6 (16) and INET4 (4).
fn fixed_binary_len(data_type: &str, column_type: &str) -> Option<usize> {
    match data_type {
        "uuid" | "inet6" => Some(16),
        "inet4" => Some(4),
        "binary" => column_type
            .strip_prefix("binary(")
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.parse().ok()),
        _ => None,
    }
}

/// Where a row sorts among the rows of one statement (module `stage`, "Row order"): its
/// first key column's value, in the target index's order, when that column is an integer;
/// `None` otherwise. Integers compare exactly, so rows with equal sort keys are the same
/// row or share that column, and a stable sort keeps their order.
pub(crate) fn key_order(plan: &TablePlan, image: &Image<'_>) -> Option<u64> {
    match image.get(*plan.key.first()?)? {
        // Flipping the sign bit maps i64 order onto u64 order.
        ValueRef::Int(x) => Some((x as u64) ^ (1 << 63)),
        ValueRef::UInt(x) => Some(x),
        _ => None,
    }
}

/// A 64-bit hash of a row's key values, for spotting a row touched twice. Fuzzy columns
/// are normalised (ASCII case folded, trailing spaces dropped, `-0.0` as `0.0`), so that
/// values a collation calls equal usually hash alike; a miss there is caught later by the
/// row counts (see the applier's fast path).
pub(crate) fn key_hash(plan: &TablePlan, image: &Image<'_>) -> Option<u64> {
    if !plan.keyed() {
        return None;
    }
    let mut h = Fnv::new();
    for &k in &plan.key {
        let v = image.get(k)?;
        let fuzzy = plan.cols[k].fuzzy;
        match v {
            ValueRef::Null => h.byte(0),
            ValueRef::Int(x) => h.bytes(&x.to_le_bytes()),
            ValueRef::UInt(x) | ValueRef::Set(x) | ValueRef::Bit(x) => h.bytes(&x.to_le_bytes()),
            ValueRef::Float(x) => {
                let x = f64::from(x);
                h.bytes(&(if x == 0.0 { 0.0 } else { x }).to_bits().to_le_bytes())
            }
            ValueRef::Double(x) => {
                h.bytes(&(if x == 0.0 { 0.0 } else { x }).to_bits().to_le_bytes())
            }
            ValueRef::Year(x) | ValueRef::Enum(x) => h.bytes(&x.to_le_bytes()),
            ValueRef::Date(d) => h.bytes(&d.pack().to_le_bytes()),
            ValueRef::Time(t) => h.bytes(&t.pack().unwrap_or(0).to_le_bytes()),
            ValueRef::DateTime(d) => h.bytes(&d.pack().unwrap_or(0).to_le_bytes()),
            ValueRef::Timestamp(t) => h.bytes(&t.pack().unwrap_or(0).to_le_bytes()),
            ValueRef::Text(b) if fuzzy => {
                let end = b.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
                for &c in &b[..end] {
                    h.byte(c.to_ascii_lowercase());
                }
            }
            ValueRef::Decimal(b)
            | ValueRef::Text(b)
            | ValueRef::Bytes(b)
            | ValueRef::Json(b)
            | ValueRef::Geometry(b) => h.bytes(b),
        }
        // A separator, so that ("ab","c") and ("a","bc") differ.
        h.byte(0xff);
    }
    Some(h.0)
}

/// FNV-1a: small, no allocation, good enough to make false repeats rare (a false repeat
/// only costs an early flush).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.byte(x);
        }
    }
}

//! From DDL column definitions and TABLE_MAPs to [`ColumnSchema`]s, and back: the checks
//! that a TABLE_MAP matches a tracked schema, and the completion of a TABLE_MAP (names,
//! signedness, charsets) from one.

use std::collections::HashMap;

use outflow_binlog::{ColumnKind, Flavor, TableInfo};
use outflow_core::schema::BINARY_COLLATION;
use outflow_core::{ColumnSchema, ColumnType, TableSchema};
use serde::{Deserialize, Serialize};

use crate::ddl::ColumnDef;

/// The server's collations and character sets, by name: DDL names collations, binlogs and
/// [`ColumnSchema`] carry ids. Loaded from `information_schema` once; kept with the schema
/// history so a restart does not need the server to read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Collation name → (id, charset name).
    pub collations: HashMap<String, (u16, String)>,
    /// Charset name → (default collation name, bytes per character at most).
    pub charsets: HashMap<String, (String, u8)>,
    /// The server's default collation (`@@collation_server`).
    pub server_collation: Option<String>,
}

impl Catalog {
    /// A few common collations with their fixed ids, for tests and for binlogs read
    /// without a server. A catalog loaded from the server replaces it.
    pub fn builtin() -> Catalog {
        let mut c = Catalog::default();
        for (name, id, cs, default) in [
            ("latin1_swedish_ci", 8u16, "latin1", true),
            ("latin1_bin", 47, "latin1", false),
            ("ascii_general_ci", 11, "ascii", true),
            ("ascii_bin", 65, "ascii", false),
            ("binary", BINARY_COLLATION, "binary", true),
            ("utf8mb3_general_ci", 33, "utf8mb3", true),
            ("utf8mb3_bin", 83, "utf8mb3", false),
            ("ucs2_general_ci", 35, "ucs2", true),
            ("utf8mb4_general_ci", 45, "utf8mb4", true),
            ("utf8mb4_bin", 46, "utf8mb4", false),
            ("utf8mb4_unicode_ci", 224, "utf8mb4", false),
        ] {
            c.collations.insert(name.into(), (id, cs.into()));
            if default {
                let max = match cs {
                    "utf8mb4" => 4,
                    "utf8mb3" => 3,
                    "ucs2" => 2,
                    _ => 1,
                };
                c.charsets.insert(cs.into(), (name.into(), max));
            }
        }
        c.server_collation = Some("utf8mb4_general_ci".into());
        c
    }

    fn charset_name(&self, cs: &str) -> String {
        let cs = cs.to_ascii_lowercase();
        // `utf8` means utf8mb3 unless the server says otherwise (old_mode UTF8_IS_UTF8MB3).
        if cs == "utf8" && !self.charsets.contains_key("utf8") {
            "utf8mb3".into()
        } else {
            cs
        }
    }

    fn collation_name(&self, c: &str) -> String {
        let c = c.to_ascii_lowercase();
        if let Some(rest) = c.strip_prefix("utf8_") {
            if !self.collations.contains_key(&c) {
                return format!("utf8mb3_{rest}");
            }
        }
        c
    }

    /// The collation to use given explicit column, table and database choices (each a
    /// charset and/or collation), most specific first. `binary_attr` asks for the `_bin`
    /// collation of the chosen charset.
    pub fn resolve(
        &self,
        levels: &[(Option<&str>, Option<&str>)],
        binary_attr: bool,
    ) -> Option<(String, u16)> {
        for &(cs, coll) in levels {
            if let Some(coll) = coll {
                let name = self.collation_name(coll);
                return self.collations.get(&name).map(|(id, _)| (name, *id));
            }
            if let Some(cs) = cs {
                let cs = self.charset_name(cs);
                let name = if binary_attr && cs != "binary" {
                    format!("{cs}_bin")
                } else {
                    self.charsets.get(&cs)?.0.clone()
                };
                return self.collations.get(&name).map(|(id, _)| (name, *id));
            }
        }
        let name = self.server_collation.clone()?;
        let id = self.collations.get(&name)?.0;
        Some((name, id))
    }

    /// Bytes per character at most in the charset of collation `id`.
    pub fn max_len(&self, id: u16) -> u32 {
        self.collations
            .values()
            .find(|(i, _)| *i == id)
            .and_then(|(_, cs)| self.charsets.get(cs))
            .map_or(4, |(_, m)| u32::from(*m))
    }

    /// The charset of a collation name.
    pub fn charset_of(&self, collation: &str) -> Option<&str> {
        self.collations
            .get(&self.collation_name(collation))
            .map(|(_, cs)| cs.as_str())
    }
}

fn num(args: &[String], i: usize) -> Option<u32> {
    args.get(i).and_then(|a| a.parse().ok())
}

/// The length-prefix width of the smallest BLOB/TEXT type holding `max_bytes`.
pub(crate) fn blob_len_bytes(max_bytes: u64) -> u8 {
    match max_bytes {
        0..=255 => 1,
        256..=65_535 => 2,
        65_536..=16_777_215 => 3,
        _ => 4,
    }
}

/// Builds a column from its DDL definition. `coll` is the collation resolved for it (for
/// character types) as (name, id).
pub fn column_from_def(
    def: &ColumnDef,
    coll: Option<(String, u16)>,
    catalog: &Catalog,
    flavor: Flavor,
) -> Result<ColumnSchema, String> {
    let t = def.data_type.as_str();
    let a = &def.args;
    let mut collation = None;
    let mut members = Vec::new();
    let text = |coll: &Option<(String, u16)>| coll.as_ref().map(|(_, id)| *id);
    let ty = match t {
        "tinyint" => ColumnType::Int { bytes: 1 },
        "smallint" => ColumnType::Int { bytes: 2 },
        "mediumint" => ColumnType::Int { bytes: 3 },
        "int" => ColumnType::Int { bytes: 4 },
        "bigint" => ColumnType::Int { bytes: 8 },
        "float" if a.len() == 1 && num(a, 0).unwrap_or(0) > 24 => ColumnType::Double,
        "float" => ColumnType::Float,
        "double" => ColumnType::Double,
        "decimal" => ColumnType::Decimal {
            precision: num(a, 0).unwrap_or(10) as u8,
            scale: num(a, 1).unwrap_or(0) as u8,
        },
        "year" => ColumnType::Year,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time {
            fsp: num(a, 0).unwrap_or(0) as u8,
        },
        "datetime" => ColumnType::DateTime {
            fsp: num(a, 0).unwrap_or(0) as u8,
        },
        "timestamp" => ColumnType::Timestamp {
            fsp: num(a, 0).unwrap_or(0) as u8,
        },
        "char" | "varchar" => {
            collation = text(&coll);
            let binary = collation == Some(BINARY_COLLATION);
            let chars = num(a, 0).unwrap_or(1);
            let per = collation.map_or(4, |id| catalog.max_len(id));
            ColumnType::String {
                max_bytes: chars.saturating_mul(per),
                binary,
            }
        }
        "binary" | "varbinary" => {
            collation = Some(BINARY_COLLATION);
            ColumnType::String {
                max_bytes: num(a, 0).unwrap_or(1),
                binary: true,
            }
        }
        "tinytext" | "text" | "mediumtext" | "longtext" => {
            collation = text(&coll);
            let binary = collation == Some(BINARY_COLLATION);
            let len_bytes = match t {
                "tinytext" => 1,
                "mediumtext" => 3,
                "longtext" => 4,
                _ => match num(a, 0) {
                    Some(n) => blob_len_bytes(
                        u64::from(n) * u64::from(collation.map_or(4, |id| catalog.max_len(id))),
                    ),
                    None => 2,
                },
            };
            ColumnType::Blob { len_bytes, binary }
        }
        "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            collation = Some(BINARY_COLLATION);
            let len_bytes = match t {
                "tinyblob" => 1,
                "mediumblob" => 3,
                "longblob" => 4,
                _ => num(a, 0).map_or(2, |n| blob_len_bytes(u64::from(n))),
            };
            ColumnType::Blob {
                len_bytes,
                binary: true,
            }
        }
        "json" => match flavor {
            // MariaDB's JSON is LONGTEXT with a validity check, stored with utf8mb4_bin.
            Flavor::MariaDb => {
                collation = catalog.collations.get("utf8mb4_bin").map(|(id, _)| *id);
                ColumnType::Blob {
                    len_bytes: 4,
                    binary: false,
                }
            }
            Flavor::MySql => ColumnType::Json,
        },
        "enum" | "set" => {
            collation = text(&coll);
            members = a.clone();
            let n = members.len();
            if t == "enum" {
                ColumnType::Enum {
                    bytes: if n > 255 { 2 } else { 1 },
                }
            } else {
                let b = n.div_ceil(8).max(1);
                ColumnType::Set {
                    bytes: if b > 4 { 8 } else { b as u8 },
                }
            }
        }
        "bit" => ColumnType::Bit {
            bits: num(a, 0).unwrap_or(1) as u8,
        },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => ColumnType::Geometry,
        // MariaDB's fixed-size binary types: stored as BINARY(n).
        "inet6" | "uuid" => {
            collation = Some(BINARY_COLLATION);
            ColumnType::String {
                max_bytes: 16,
                binary: true,
            }
        }
        "inet4" => {
            collation = Some(BINARY_COLLATION);
            ColumnType::String {
                max_bytes: 4,
                binary: true,
            }
        }
        "vector" => ColumnType::Vector,
        other => return Err(format!("unknown type `{other}`")),
    };
    let unsigned = def.unsigned
        && matches!(
            ty,
            ColumnType::Int { .. }
                | ColumnType::Decimal { .. }
                | ColumnType::Float
                | ColumnType::Double
        );
    Ok(ColumnSchema {
        name: def.name.clone(),
        ty,
        unsigned,
        nullable: def.nullable.unwrap_or(!def.primary_key),
        collation,
        members,
    })
}

/// Whether a TABLE_MAP column can hold the values of a tracked column.
pub fn compatible(kind: ColumnKind, ty: &ColumnType) -> bool {
    use ColumnKind as K;
    use ColumnType as T;
    match (kind, ty) {
        (K::Int { bytes: a, .. }, T::Int { bytes: b }) => a == *b,
        (K::Float, T::Float) | (K::Double, T::Double) => true,
        (
            K::Decimal { precision, scale },
            T::Decimal {
                precision: p,
                scale: s,
            },
        ) => precision == *p && scale == *s,
        (K::Year, T::Year) | (K::Date, T::Date) => true,
        (K::TimeV1, T::Time { .. }) => true,
        (K::Time2 { fsp }, T::Time { fsp: f }) => fsp == *f,
        (K::DateTimeV1, T::DateTime { .. }) => true,
        (K::DateTime2 { fsp }, T::DateTime { fsp: f }) => fsp == *f,
        (K::TimestampV1 | K::MariaTimestampHires { .. }, T::Timestamp { .. }) => true,
        (K::Timestamp2 { fsp }, T::Timestamp { fsp: f }) => fsp == *f,
        (K::String { .. }, T::String { .. }) => true,
        (K::Blob { len_bytes: a, .. }, T::Blob { len_bytes: b, .. }) => a == *b,
        (K::Json { .. }, T::Json)
        | (K::Geometry { .. }, T::Geometry)
        | (K::Vector { .. }, T::Vector)
        | (K::Null, T::Null) => true,
        (K::Bit { bits: a, .. }, T::Bit { bits: b }) => a == *b,
        (K::Enum { bytes: a }, T::Enum { bytes: b })
        | (K::Set { bytes: a }, T::Set { bytes: b }) => a == *b,
        _ => false,
    }
}

/// A short name of a decode plan, for mismatch messages.
pub fn kind_name(kind: ColumnKind) -> String {
    format!("{kind:?}")
}

/// Why a TABLE_MAP disagrees with the tracked schema (without position; the caller adds it).
pub fn cross_check(info: &TableInfo, schema: &TableSchema) -> Result<(), String> {
    if info.columns.len() != schema.columns.len() {
        return Err(format!(
            "the TABLE_MAP has {} columns, the tracked schema {} ({})",
            info.columns.len(),
            schema.columns.len(),
            names(schema)
        ));
    }
    for (i, (c, s)) in info.columns.iter().zip(&schema.columns).enumerate() {
        if !compatible(c.kind, &s.ty) {
            return Err(format!(
                "column {} `{}`: the TABLE_MAP says {}, the tracked schema {:?}",
                i + 1,
                s.name,
                kind_name(c.kind),
                s.ty
            ));
        }
        if let Some(n) = &c.name {
            if !crate::filter::eq_column(n, &s.name) {
                return Err(format!(
                    "column {} is `{n}` in the TABLE_MAP but `{}` in the tracked schema",
                    i + 1,
                    s.name
                ));
            }
        }
        if let (Some(u), ColumnType::Int { .. }) = (c.unsigned, &s.ty) {
            if u != s.unsigned {
                return Err(format!(
                    "column {} `{}`: the TABLE_MAP says {}signed, the tracked schema {}signed",
                    i + 1,
                    s.name,
                    if u { "un" } else { "" },
                    if s.unsigned { "un" } else { "" }
                ));
            }
        }
    }
    Ok(())
}

fn names(schema: &TableSchema) -> String {
    let v: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    v.join(", ")
}

/// Fills in what the TABLE_MAP lacks from a schema that passed [`cross_check`]: names,
/// signedness, collations (and with them the text/bytes choice), ENUM/SET members, the
/// precision of MariaDB's old fractional TIMESTAMP, and the primary key.
pub fn complete(info: &mut TableInfo, schema: &TableSchema) {
    for (i, s) in schema.columns.iter().enumerate() {
        if info.columns[i].name.as_deref() != Some(s.name.as_str()) {
            info.columns[i].name = Some(s.name.clone().into_boxed_str());
        }
        if matches!(s.ty, ColumnType::Int { .. }) {
            info.set_unsigned(i, s.unsigned);
        } else if info.columns[i].unsigned.is_none() && s.unsigned {
            info.columns[i].unsigned = Some(true);
        }
        if let ColumnType::Timestamp { fsp } = s.ty {
            if fsp > 0 && info.columns[i].kind == ColumnKind::TimestampV1 {
                info.set_fractional_precision(i, fsp);
            }
        }
        let c = &mut info.columns[i];
        if c.collation.is_none() {
            c.collation = s.collation;
        }
        let binary = match s.ty {
            ColumnType::String { binary, .. } | ColumnType::Blob { binary, .. } => {
                binary || c.collation == Some(BINARY_COLLATION)
            }
            _ => false,
        };
        match &mut c.kind {
            ColumnKind::String { binary: b, .. } | ColumnKind::Blob { binary: b, .. } => {
                *b = binary
            }
            _ => {}
        }
        if c.members.is_none() && !s.members.is_empty() {
            c.members = Some(
                s.members
                    .iter()
                    .map(|m| m.clone().into_boxed_str())
                    .collect(),
            );
        }
    }
    if info.primary_key.is_empty() {
        info.primary_key = schema.primary_key.iter().map(|&k| usize::from(k)).collect();
    }
    info.has_names = true;
}

/// A schema built from a TABLE_MAP that carries names (`binlog_row_metadata=FULL`), for a
/// table the tracker does not know (the tracker assigns its version).
pub fn schema_from_table_map(info: &TableInfo) -> Option<TableSchema> {
    info.has_names.then(|| outflow_codec::schema_of(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(t: &str, args: &[&str]) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            data_type: t.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn resolve_collations_most_specific_first() {
        let c = Catalog::builtin();
        assert_eq!(
            c.resolve(&[(Some("latin1"), None), (Some("utf8mb4"), None)], false),
            Some(("latin1_swedish_ci".into(), 8))
        );
        assert_eq!(
            c.resolve(&[(None, None), (Some("utf8mb4"), None)], true),
            Some(("utf8mb4_bin".into(), 46))
        );
        assert_eq!(
            c.resolve(&[(None, Some("utf8_bin"))], false),
            Some(("utf8mb3_bin".into(), 83))
        );
        assert_eq!(
            c.resolve(&[], false),
            Some(("utf8mb4_general_ci".into(), 45))
        );
    }

    #[test]
    fn types_from_definitions() {
        let cat = Catalog::builtin();
        let utf8 = Some(("utf8mb4_general_ci".to_string(), 45));
        let col = |d: ColumnDef| column_from_def(&d, utf8.clone(), &cat, Flavor::MariaDb).unwrap();
        assert_eq!(
            col(def("varchar", &["10"])).ty,
            ColumnType::String {
                max_bytes: 40,
                binary: false
            }
        );
        assert_eq!(
            col(def("varbinary", &["10"])).ty,
            ColumnType::String {
                max_bytes: 10,
                binary: true
            }
        );
        assert_eq!(
            col(def("text", &[])).ty,
            ColumnType::Blob {
                len_bytes: 2,
                binary: false
            }
        );
        assert_eq!(col(def("float", &["30"])).ty, ColumnType::Double);
        assert_eq!(
            col(def("decimal", &["12", "3"])).ty,
            ColumnType::Decimal {
                precision: 12,
                scale: 3
            }
        );
        assert_eq!(
            col(def("set", &["a", "b", "c"])).ty,
            ColumnType::Set { bytes: 1 }
        );
        assert_eq!(
            col(def("json", &[])).ty,
            ColumnType::Blob {
                len_bytes: 4,
                binary: false
            }
        );
        let mut d = def("int", &[]);
        d.unsigned = true;
        assert!(col(d).unsigned);
        assert!(column_from_def(&def("frob", &[]), None, &cat, Flavor::MariaDb).is_err());
    }
}

//! Table descriptions: what a row change's values mean.
//!
//! A [`TableSchema`] names a table and its columns, with each column's SQL type and the
//! parameters that decide how values are stored and shown (width, signedness, fractional
//! precision, charset). Every distinct definition of a table gets its own
//! [`SchemaVersion`]; a [`crate::batch::ChangeBatch`] section refers to exactly one.

use serde::{Deserialize, Serialize};

/// The collation id of the `binary` pseudo-charset: values are bytes, not text.
pub const BINARY_COLLATION: u16 = 63;

/// Identifies one definition of one table. Assigned by whoever builds the schema (the
/// source's schema tracker, or the binlog builder from a content hash); two different
/// definitions must never share a version.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct SchemaVersion(pub u64);

/// A column's SQL type with the parameters that matter for its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4), BIGINT (8): width in bytes.
    Int {
        /// 1, 2, 3, 4 or 8.
        bytes: u8,
    },
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL(precision, scale).
    Decimal {
        /// Digits in all, 1..=65.
        precision: u8,
        /// Digits after the point, 0..=30.
        scale: u8,
    },
    /// YEAR.
    Year,
    /// DATE.
    Date,
    /// TIME(fsp).
    Time {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// DATETIME(fsp).
    DateTime {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// TIMESTAMP(fsp).
    Timestamp {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// CHAR, VARCHAR, BINARY, VARBINARY.
    String {
        /// Longest value in bytes, if known (0 when not).
        max_bytes: u32,
        /// Binary collation (BINARY/VARBINARY): values are bytes, not text.
        binary: bool,
    },
    /// TEXT and BLOB families (and MariaDB's JSON, a LONGTEXT).
    Blob {
        /// Width of the length prefix: 1 TINY, 2 plain, 3 MEDIUM, 4 LONG.
        len_bytes: u8,
        /// BLOB rather than TEXT.
        binary: bool,
    },
    /// ENUM, stored in 1 or 2 bytes.
    Enum {
        /// Storage width.
        bytes: u8,
    },
    /// SET, stored in 1 to 8 bytes.
    Set {
        /// Storage width.
        bytes: u8,
    },
    /// BIT(bits).
    Bit {
        /// Declared width, 1..=64.
        bits: u8,
    },
    /// MySQL JSON (values are carried as JSON text).
    Json,
    /// GEOMETRY and its subtypes: 4-byte SRID then WKB.
    Geometry,
    /// MySQL 9 VECTOR: packed little-endian floats.
    Vector,
    /// The NULL type: every value is NULL.
    Null,
}

/// Which [`crate::value::ValueRef`] variant a column's values take. Derived from the type,
/// the signedness and the binary flag, and fixed for the column's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// [`crate::value::ValueRef::Int`].
    Int,
    /// [`crate::value::ValueRef::UInt`].
    UInt,
    /// [`crate::value::ValueRef::Float`].
    Float,
    /// [`crate::value::ValueRef::Double`].
    Double,
    /// [`crate::value::ValueRef::Decimal`].
    Decimal,
    /// [`crate::value::ValueRef::Year`].
    Year,
    /// [`crate::value::ValueRef::Date`].
    Date,
    /// [`crate::value::ValueRef::Time`].
    Time,
    /// [`crate::value::ValueRef::DateTime`].
    DateTime,
    /// [`crate::value::ValueRef::Timestamp`].
    Timestamp,
    /// [`crate::value::ValueRef::Text`].
    Text,
    /// [`crate::value::ValueRef::Bytes`].
    Bytes,
    /// [`crate::value::ValueRef::Enum`].
    Enum,
    /// [`crate::value::ValueRef::Set`].
    Set,
    /// [`crate::value::ValueRef::Bit`].
    Bit,
    /// [`crate::value::ValueRef::Json`].
    Json,
    /// [`crate::value::ValueRef::Geometry`].
    Geometry,
    /// Only [`crate::value::ValueRef::Null`].
    Null,
}

impl ValueKind {
    /// Whether values live in the variable-width byte buffer (else in the `u64` buffer).
    pub fn is_var(self) -> bool {
        matches!(
            self,
            ValueKind::Decimal
                | ValueKind::Text
                | ValueKind::Bytes
                | ValueKind::Json
                | ValueKind::Geometry
        )
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name; empty when unknown (binlogs without `binlog_row_metadata=FULL`).
    pub name: String,
    /// SQL type.
    pub ty: ColumnType,
    /// UNSIGNED (integer types only).
    pub unsigned: bool,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Collation id for character types, if known ([`BINARY_COLLATION`] = bytes).
    pub collation: Option<u16>,
    /// ENUM/SET member names, if known (1-based in values: member `i` is index `i + 1`).
    pub members: Vec<String>,
}

impl ColumnSchema {
    /// A nullable column of `ty` with the given name, signed, no collation or members.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        ColumnSchema {
            name: name.into(),
            ty,
            unsigned: false,
            nullable: true,
            collation: None,
            members: Vec::new(),
        }
    }

    /// The value variant this column's values take.
    pub fn value_kind(&self) -> ValueKind {
        match self.ty {
            ColumnType::Int { .. } if self.unsigned => ValueKind::UInt,
            ColumnType::Int { .. } => ValueKind::Int,
            ColumnType::Float => ValueKind::Float,
            ColumnType::Double => ValueKind::Double,
            ColumnType::Decimal { .. } => ValueKind::Decimal,
            ColumnType::Year => ValueKind::Year,
            ColumnType::Date => ValueKind::Date,
            ColumnType::Time { .. } => ValueKind::Time,
            ColumnType::DateTime { .. } => ValueKind::DateTime,
            ColumnType::Timestamp { .. } => ValueKind::Timestamp,
            ColumnType::String { binary, .. } | ColumnType::Blob { binary, .. } => {
                if binary || self.collation == Some(BINARY_COLLATION) {
                    ValueKind::Bytes
                } else {
                    ValueKind::Text
                }
            }
            ColumnType::Enum { .. } => ValueKind::Enum,
            ColumnType::Set { .. } => ValueKind::Set,
            ColumnType::Bit { .. } => ValueKind::Bit,
            ColumnType::Json => ValueKind::Json,
            ColumnType::Geometry => ValueKind::Geometry,
            ColumnType::Vector => ValueKind::Bytes,
            ColumnType::Null => ValueKind::Null,
        }
    }

    /// Fractional-second digits of a temporal column (0 for other types).
    pub fn fsp(&self) -> u8 {
        match self.ty {
            ColumnType::Time { fsp }
            | ColumnType::DateTime { fsp }
            | ColumnType::Timestamp { fsp } => fsp,
            _ => 0,
        }
    }
}

/// One definition of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableSchema {
    /// Identifies this definition.
    pub version: SchemaVersion,
    /// Database name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<ColumnSchema>,
    /// Primary-key columns as 0-based indexes into `columns`; empty when the table has no
    /// primary key (or it is unknown), in which case whole rows identify rows.
    pub primary_key: Vec<u16>,
}

impl TableSchema {
    /// `db.table`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }

    /// Whether the table has a (known) primary key.
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// Checks the description's own consistency: primary-key indexes in range and unique,
    /// at most 4096 columns, type parameters within what servers accept.
    pub fn validate(&self) -> Result<(), String> {
        if self.columns.len() > 4096 {
            return Err(format!("{} columns (at most 4096)", self.columns.len()));
        }
        for (i, &k) in self.primary_key.iter().enumerate() {
            if usize::from(k) >= self.columns.len() {
                return Err(format!("primary-key column {k} out of range"));
            }
            if self.primary_key[..i].contains(&k) {
                return Err(format!("primary-key column {k} listed twice"));
            }
        }
        for (i, c) in self.columns.iter().enumerate() {
            let ok = match c.ty {
                ColumnType::Int { bytes } => matches!(bytes, 1 | 2 | 3 | 4 | 8),
                ColumnType::Decimal { precision, scale } => {
                    (1..=65).contains(&precision) && scale <= 30 && scale <= precision
                }
                ColumnType::Time { fsp }
                | ColumnType::DateTime { fsp }
                | ColumnType::Timestamp { fsp } => fsp <= 6,
                ColumnType::Blob { len_bytes, .. } => (1..=4).contains(&len_bytes),
                ColumnType::Enum { bytes } => matches!(bytes, 1 | 2),
                ColumnType::Set { bytes } => (1..=8).contains(&bytes),
                ColumnType::Bit { bits } => (1..=64).contains(&bits),
                _ => true,
            };
            if !ok {
                return Err(format!("column {}: invalid type {:?}", i + 1, c.ty));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_kinds_follow_type_sign_and_charset() {
        let mut c = ColumnSchema::new("a", ColumnType::Int { bytes: 8 });
        assert_eq!(c.value_kind(), ValueKind::Int);
        c.unsigned = true;
        assert_eq!(c.value_kind(), ValueKind::UInt);
        let mut s = ColumnSchema::new(
            "s",
            ColumnType::String {
                max_bytes: 10,
                binary: false,
            },
        );
        assert_eq!(s.value_kind(), ValueKind::Text);
        s.collation = Some(BINARY_COLLATION);
        assert_eq!(s.value_kind(), ValueKind::Bytes);
        assert!(ValueKind::Decimal.is_var() && !ValueKind::Timestamp.is_var());
    }

    #[test]
    fn validate_catches_bad_keys_and_types() {
        let mut t = TableSchema {
            version: SchemaVersion(1),
            db: "d".into(),
            table: "t".into(),
            columns: vec![ColumnSchema::new("id", ColumnType::Int { bytes: 4 })],
            primary_key: vec![0],
        };
        assert!(t.validate().is_ok());
        t.primary_key = vec![0, 0];
        assert!(t.validate().is_err());
        t.primary_key = vec![1];
        assert!(t.validate().is_err());
        t.primary_key = vec![];
        t.columns[0].ty = ColumnType::Int { bytes: 5 };
        assert!(t.validate().is_err());
    }
}

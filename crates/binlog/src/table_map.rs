//! TABLE_MAP events: which table a row event's table id means, and how to read its columns.
//!
//! Layout: `table_id u48 | flags u16 | db_len u8, db, 0 | table_len u8, table, 0 |
//! column_count packed | types[column_count] | metadata_len packed, metadata |
//! null_bitmap[(column_count+7)/8] | optional metadata (TLV records, MySQL 8.0.1+/MariaDB 10.5+)`.
//!
//! Parsing one builds a [`TableInfo`] whose [`ColumnKind`]s are precomputed decode plans, so
//! row decoding does one `match` per value and never looks at metadata again, plus a private
//! layout (each column's width) that row images are delimited with. The decoder
//! caches `TableInfo`s and re-parses only when a TABLE_MAP's bytes change (servers repeat the
//! same TABLE_MAP before every row event of every transaction).

use crate::bytes::{bit_msb, bitmap_len, Reader};
use crate::error::ErrorKind;
use crate::header::Flavor;

/// Column type codes (`enum_field_types`).
pub mod col {
    #![allow(missing_docs)]
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const TYPED_ARRAY: u8 = 20;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// The collation id of the `binary` pseudo-charset: values are bytes, not text.
pub const BINARY_COLLATION: u16 = 63;

/// How to read one column's value from a row image. Computed once per TABLE_MAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Little-endian integer of `bytes` bytes.
    Int {
        /// Width: 1, 2, 3, 4 or 8.
        bytes: u8,
        /// From optional metadata or a caller's schema; unknown reads as signed.
        unsigned: bool,
    },
    /// 4-byte IEEE float.
    Float,
    /// 8-byte IEEE double.
    Double,
    /// NEWDECIMAL.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// 1-byte YEAR.
    Year,
    /// 3-byte DATE.
    Date,
    /// Old 3-byte TIME.
    TimeV1,
    /// TIME2 with fractional precision.
    Time2 {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// Old 8-byte DATETIME.
    DateTimeV1,
    /// DATETIME2 with fractional precision.
    DateTime2 {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// Old 4-byte TIMESTAMP.
    TimestampV1,
    /// TIMESTAMP2 with fractional precision.
    Timestamp2 {
        /// Fractional digits, 0..=6.
        fsp: u8,
    },
    /// MariaDB 5.3-10.0 fractional TIMESTAMP (`mysql56_temporal_format=OFF`): 4 bytes
    /// big-endian seconds, then the fraction in units of 10^-fsp. The TABLE_MAP says only
    /// TIMESTAMP, so this plan comes from a caller's schema
    /// ([`TableInfo::set_fractional_precision`]).
    MariaTimestampHires {
        /// Fractional digits, 1..=6.
        fsp: u8,
    },
    /// CHAR, VARCHAR, BINARY, VARBINARY: a 1- or 2-byte length, then bytes.
    String {
        /// Width of the length prefix.
        len_bytes: u8,
        /// Binary collation: the value is bytes, not text.
        binary: bool,
    },
    /// BLOB and TEXT (and MariaDB JSON): a 1- to 4-byte length, then bytes.
    Blob {
        /// Width of the length prefix.
        len_bytes: u8,
        /// Binary collation: the value is bytes, not text.
        binary: bool,
    },
    /// MySQL binary JSON.
    Json {
        /// Width of the length prefix.
        len_bytes: u8,
    },
    /// GEOMETRY: length prefix, SRID, WKB.
    Geometry {
        /// Width of the length prefix.
        len_bytes: u8,
    },
    /// MySQL 9 VECTOR: length prefix, then packed floats.
    Vector {
        /// Width of the length prefix.
        len_bytes: u8,
    },
    /// ENUM stored in 1 or 2 bytes.
    Enum {
        /// Width.
        bytes: u8,
    },
    /// SET stored in 1 to 8 bytes.
    Set {
        /// Width.
        bytes: u8,
    },
    /// BIT(bits) stored big-endian in `bytes` bytes.
    Bit {
        /// Declared width in bits.
        bits: u8,
        /// Stored width.
        bytes: u8,
    },
    /// The NULL type: no bytes.
    Null,
}

/// One column of a mapped table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Type code as written in the TABLE_MAP (STRING for CHAR, ENUM and SET).
    pub type_code: u8,
    /// Raw type metadata (0 when the type has none).
    pub meta: u16,
    /// How values are read. Changing it to a kind of another width takes a
    /// [`TableInfo::refresh_layout`] afterwards (the decoder's own paths do it).
    pub kind: ColumnKind,
    /// Whether the column may be NULL.
    pub nullable: bool,
    /// Name, from optional metadata or a caller's schema.
    pub name: Option<Box<str>>,
    /// Collation id, from optional metadata or a caller's schema.
    pub collation: Option<u16>,
    /// Signedness, if known (numeric columns only).
    pub unsigned: Option<bool>,
    /// Member names of an ENUM or SET column, if known.
    pub members: Option<Vec<Box<str>>>,
    /// Whether the column is visible (MySQL invisible columns are `false`).
    pub visible: bool,
    /// GEOMETRY subtype from optional metadata (0 GEOMETRY, 1 POINT, 2 LINESTRING,
    /// 3 POLYGON, 4 MULTIPOINT, 5 MULTILINESTRING, 6 MULTIPOLYGON, 7 GEOMETRYCOLLECTION).
    pub geometry_type: Option<u32>,
}

/// A mapped table: its identity and a decode plan for each column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The id row events refer to. Only valid until the next TABLE_MAP with the same id.
    pub table_id: u64,
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<ColumnInfo>,
    /// Primary-key column indexes (0-based), if the optional metadata carried them.
    pub primary_key: Vec<usize>,
    /// Whether every column has a name (names come only with `binlog_row_metadata=FULL`).
    pub has_names: bool,
    /// Where each value ends, derived from the column kinds (see [`TableInfo::refresh_layout`]).
    layout: Layout,
}

/// How many bytes a value takes in a row image, derived from its [`ColumnKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// Always this many bytes.
    Fixed(u32),
    /// A little-endian length of this many bytes (1 to 4), then that many bytes.
    Prefixed(u8),
    /// The kind cannot be delimited (a fractional precision over 6, a prefix width out of
    /// range): sizing such a value is an error, which [`crate::rows::value_len`] names.
    Invalid,
}

impl Width {
    /// The width of a value of `kind`.
    pub(crate) fn of(kind: ColumnKind) -> Width {
        let prefixed = |lb: u8| {
            if (1..=4).contains(&lb) {
                Width::Prefixed(lb)
            } else {
                Width::Invalid
            }
        };
        match kind {
            ColumnKind::String { len_bytes, .. }
            | ColumnKind::Blob { len_bytes, .. }
            | ColumnKind::Json { len_bytes }
            | ColumnKind::Geometry { len_bytes }
            | ColumnKind::Vector { len_bytes } => prefixed(len_bytes),
            // Every other kind has a fixed size, which `value_len` computes from the kind
            // without looking at the bytes (an empty buffer makes it report that size as
            // needed, or the kind as invalid).
            _ => match crate::rows::value_len(kind, &[]) {
                Ok(n) => Width::Fixed(n as u32),
                Err(crate::value::ValueError::Truncated { needed, .. }) => {
                    Width::Fixed(needed as u32)
                }
                Err(_) => Width::Invalid,
            },
        }
    }

    /// Bytes a value of this width takes at `buf[pos..]`, or `None` if it does not fit
    /// (or the width is invalid).
    #[inline(always)]
    pub(crate) fn len_at(self, buf: &[u8], pos: usize) -> Option<usize> {
        match self {
            Width::Fixed(n) => {
                let n = n as usize;
                (buf.len().checked_sub(pos)? >= n).then_some(n)
            }
            Width::Prefixed(lb) => {
                let lb = usize::from(lb);
                let len = crate::bytes::prefix_at(buf, pos, lb)?;
                let n = lb + len;
                (buf.len() - pos >= n).then_some(n)
            }
            Width::Invalid => None,
        }
    }
}

/// The widths of a table's columns, computed once per TABLE_MAP so that delimiting a row
/// image is a tight loop over a few bytes per column instead of a `match` over each
/// [`ColumnInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Layout {
    /// One per column.
    pub(crate) widths: Box<[Width]>,
    /// An image in which every column is present and none is NULL, delimited in one go:
    /// `(fixed bytes, prefix width)` runs (skip the fixed-width values, then read one
    /// length-prefixed value), then `tail` fixed bytes. Empty and unused unless `valid`.
    pub(crate) runs: Box<[(u32, u8)]>,
    /// Fixed bytes after the last length-prefixed value.
    pub(crate) tail: u32,
    /// No width is [`Width::Invalid`].
    pub(crate) valid: bool,
}

impl Layout {
    fn of(columns: &[ColumnInfo]) -> Layout {
        let widths: Box<[Width]> = columns.iter().map(|c| Width::of(c.kind)).collect();
        let valid = !widths.contains(&Width::Invalid);
        let mut runs = Vec::new();
        let mut fixed = 0u32;
        if valid {
            for w in widths.iter() {
                match *w {
                    // At most 4096 columns of at most a few hundred bytes each.
                    Width::Fixed(n) => fixed = fixed.saturating_add(n),
                    Width::Prefixed(lb) => {
                        runs.push((fixed, lb));
                        fixed = 0;
                    }
                    Width::Invalid => {}
                }
            }
        }
        Layout {
            widths,
            runs: runs.into_boxed_slice(),
            tail: fixed,
            valid,
        }
    }

    /// Whether this is still the layout of `columns` (for debug assertions).
    pub(crate) fn is_current(&self, columns: &[ColumnInfo]) -> bool {
        self.widths.len() == columns.len()
            && self
                .widths
                .iter()
                .zip(columns)
                .all(|(&w, c)| w == Width::of(c.kind))
    }

    /// Where a full image (every column present, none NULL) whose values start at
    /// `buf[pos..]` ends, or `None` if it runs past `buf` (or the layout is invalid).
    #[inline]
    pub(crate) fn full_end(&self, buf: &[u8], mut pos: usize) -> Option<usize> {
        if !self.valid {
            return None;
        }
        for &(fixed, lb) in self.runs.iter() {
            pos = pos.checked_add(fixed as usize)?;
            let lb = usize::from(lb);
            let len = crate::bytes::prefix_at(buf, pos, lb)?;
            pos = pos.checked_add(lb + len)?;
        }
        pos = pos.checked_add(self.tail as usize)?;
        (pos <= buf.len()).then_some(pos)
    }
}

impl TableInfo {
    /// `db.table`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Marks column `index` as unsigned or signed, as a caller's schema says, when the
    /// binlog carries no signedness. Returns false if the column is not an integer.
    pub fn set_unsigned(&mut self, index: usize, unsigned: bool) -> bool {
        // Signedness does not change a value's width: the layout stays valid.
        let Some(c) = self.columns.get_mut(index) else {
            return false;
        };
        c.unsigned = Some(unsigned);
        if let ColumnKind::Int { bytes, .. } = c.kind {
            c.kind = ColumnKind::Int { bytes, unsigned };
            true
        } else {
            false
        }
    }

    /// Declares the fractional precision of column `index` from a caller's schema. Only
    /// MariaDB's pre-10.1 fractional TIMESTAMP needs it: the binlog omits the precision, so
    /// without a schema such a row cannot be delimited. Returns false if not applicable.
    pub fn set_fractional_precision(&mut self, index: usize, fsp: u8) -> bool {
        let Some(c) = self.columns.get_mut(index) else {
            return false;
        };
        match c.kind {
            ColumnKind::TimestampV1 | ColumnKind::MariaTimestampHires { .. }
                if (1..=6).contains(&fsp) =>
            {
                c.kind = ColumnKind::MariaTimestampHires { fsp };
                self.refresh_layout();
                true
            }
            _ => false,
        }
    }

    /// Recomputes where values end from the column kinds. The methods here and the
    /// [`crate::Decoder`] (after its table hook, and when a [`crate::decoder::TableMut`]
    /// is dropped) do this themselves; code that assigns a different-width
    /// [`ColumnInfo::kind`] directly must call it before iterating rows.
    pub fn refresh_layout(&mut self) {
        self.layout = Layout::of(&self.columns);
    }

    /// The layout rows are delimited with.
    #[inline]
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Parses the body of a TABLE_MAP event (after the common header, without checksum).
    /// `post_header_len` is 6 for MySQL 5.1.0-5.1.15 (4-byte table ids), else 8.
    /// `flavor` matters for the charset metadata: MariaDB counts GEOMETRY (a BLOB to it)
    /// among the character columns, MySQL does not.
    pub fn parse(body: &[u8], post_header_len: usize, flavor: Flavor) -> Result<Self, ErrorKind> {
        let what = "TABLE_MAP";
        let sh = |s| ErrorKind::short(what, s);
        let pk = |p| ErrorKind::packed(what, p);
        let mut r = Reader::new(body);
        let table_id = if post_header_len == 6 {
            u64::from(r.u32().map_err(sh)?)
        } else {
            r.u48().map_err(sh)?
        };
        r.skip(post_header_len.saturating_sub(if post_header_len == 6 { 4 } else { 6 }))
            .map_err(sh)?;
        let db_len = r.u8().map_err(sh)?;
        let schema = utf8(r.take(usize::from(db_len)).map_err(sh)?);
        r.skip(1).map_err(sh)?;
        let t_len = r.u8().map_err(sh)?;
        let table = utf8(r.take(usize::from(t_len)).map_err(sh)?);
        r.skip(1).map_err(sh)?;
        let n = r.packed().map_err(pk)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= crate::rows::MAX_COLUMNS)
            .ok_or_else(|| ErrorKind::malformed(what, format!("{n} columns")))?;
        let types = r.take(n).map_err(sh)?;
        let meta_block = r.packed_bytes().map_err(pk)?;
        let nulls = r.take(bitmap_len(n)).map_err(sh)?;
        let optional = r.take_rest();

        let mut columns = Vec::with_capacity(n);
        let mut m = Reader::new(meta_block);
        for (i, &t) in types.iter().enumerate() {
            let meta = read_meta(&mut m, t).map_err(|_| {
                ErrorKind::malformed(
                    what,
                    format!("metadata block too short at column {}", i + 1),
                )
            })?;
            let kind = column_kind(t, meta).ok_or_else(|| ErrorKind::UnsupportedColumnType {
                table: format!("{schema}.{table}"),
                column: i + 1,
                type_code: t,
            })?;
            columns.push(ColumnInfo {
                type_code: t,
                meta,
                kind,
                nullable: crate::bytes::bit(nulls, i),
                name: None,
                collation: None,
                unsigned: None,
                members: None,
                visible: true,
                geometry_type: None,
            });
        }
        let mut info = TableInfo {
            table_id,
            schema,
            table,
            columns,
            primary_key: Vec::new(),
            has_names: false,
            layout: Layout::default(),
        };
        info.apply_optional_metadata(optional, flavor)?;
        info.refresh_layout();
        Ok(info)
    }

    fn apply_optional_metadata(
        &mut self,
        mut bytes: &[u8],
        flavor: Flavor,
    ) -> Result<(), ErrorKind> {
        let what = "TABLE_MAP optional metadata";
        while !bytes.is_empty() {
            let mut r = Reader::new(bytes);
            let kind = r.u8().map_err(|s| ErrorKind::short(what, s))?;
            let value = r.packed_bytes().map_err(|p| ErrorKind::packed(what, p))?;
            bytes = r.rest();
            self.apply_field(kind, value, flavor)
                .map_err(|p| ErrorKind::malformed(what, format!("field {kind}: {p:?}")))?;
        }
        let named = self.columns.iter().filter(|c| c.name.is_some()).count();
        self.has_names = named == self.columns.len() && named > 0;
        for c in &mut self.columns {
            if let Some(coll) = c.collation {
                let binary = coll == BINARY_COLLATION;
                match &mut c.kind {
                    ColumnKind::String { binary: b, .. } | ColumnKind::Blob { binary: b, .. } => {
                        *b = binary
                    }
                    _ => {}
                }
            }
            if let (Some(u), ColumnKind::Int { unsigned, .. }) = (c.unsigned, &mut c.kind) {
                *unsigned = u;
            }
        }
        Ok(())
    }

    fn apply_field(
        &mut self,
        kind: u8,
        value: &[u8],
        flavor: Flavor,
    ) -> Result<(), crate::bytes::Packed> {
        let is_character: fn(&ColumnInfo) -> bool = match flavor {
            Flavor::MySql => is_character,
            Flavor::MariaDb => is_character_mariadb,
        };
        let mut r = Reader::new(value);
        match kind {
            // SIGNEDNESS: one bit per numeric column, most significant first.
            1 => {
                let numeric = self.columns.iter_mut().filter(|c| is_numeric(c.type_code));
                for (i, c) in numeric.enumerate() {
                    c.unsigned = Some(bit_msb(value, i));
                }
            }
            // DEFAULT_CHARSET / ENUM_AND_SET_DEFAULT_CHARSET: a default, then exceptions.
            2 | 10 => {
                let pred: fn(&ColumnInfo) -> bool = if kind == 2 {
                    is_character
                } else {
                    is_enum_or_set
                };
                let default = r.packed()?;
                let idx: Vec<usize> = self.indexes(pred);
                for &i in &idx {
                    self.columns[i].collation = Some(default as u16);
                }
                while r.remaining() > 0 {
                    let which = r.packed()? as usize;
                    let coll = r.packed()?;
                    if let Some(&i) = idx.get(which) {
                        self.columns[i].collation = Some(coll as u16);
                    }
                }
            }
            // COLUMN_CHARSET / ENUM_AND_SET_COLUMN_CHARSET: one collation per column.
            3 | 11 => {
                let pred: fn(&ColumnInfo) -> bool = if kind == 3 {
                    is_character
                } else {
                    is_enum_or_set
                };
                for i in self.indexes(pred) {
                    self.columns[i].collation = Some(r.packed()? as u16);
                }
            }
            // COLUMN_NAME
            4 => {
                for c in &mut self.columns {
                    c.name = Some(utf8(r.packed_bytes()?).into_boxed_str());
                }
            }
            // SET_STR_VALUE / ENUM_STR_VALUE
            5 | 6 => {
                let want = if kind == 5 { col::SET } else { col::ENUM };
                for c in self.columns.iter_mut().filter(|c| real_type(c) == want) {
                    let count = r.packed()?;
                    let mut members = Vec::with_capacity((count as usize).min(64));
                    for _ in 0..count {
                        members.push(utf8(r.packed_bytes()?).into_boxed_str());
                    }
                    c.members = Some(members);
                }
            }
            // SIMPLE_PRIMARY_KEY
            8 => {
                while r.remaining() > 0 {
                    self.primary_key.push(r.packed()? as usize);
                }
            }
            // PRIMARY_KEY_WITH_PREFIX: (index, prefix length) pairs.
            9 => {
                while r.remaining() > 0 {
                    self.primary_key.push(r.packed()? as usize);
                    let _prefix = r.packed()?;
                }
            }
            // COLUMN_VISIBILITY
            12 => {
                for (i, c) in self.columns.iter_mut().enumerate() {
                    c.visible = bit_msb(value, i);
                }
            }
            // GEOMETRY_TYPE: one subtype per GEOMETRY column.
            7 => {
                for c in self
                    .columns
                    .iter_mut()
                    .filter(|c| c.type_code == col::GEOMETRY)
                {
                    c.geometry_type = Some(r.packed()? as u32);
                }
            }
            // VECTOR_DIMENSIONALITY (13) and types added later carry nothing row decoding
            // needs; the TLV length lets us step over them.
            _ => {}
        }
        Ok(())
    }

    fn indexes(&self, pred: fn(&ColumnInfo) -> bool) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| pred(&self.columns[i]))
            .collect()
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads the metadata bytes of one column of type `t`.
fn read_meta(m: &mut Reader<'_>, t: u8) -> Result<u16, crate::bytes::Short> {
    use col::*;
    Ok(match t {
        FLOAT | DOUBLE | TINY_BLOB | BLOB | MEDIUM_BLOB | LONG_BLOB | JSON | GEOMETRY
        | TIMESTAMP2 | DATETIME2 | TIME2 | VECTOR => u16::from(m.u8()?),
        VARCHAR => m.u16()?,
        // Two bytes in written order: (byte0 << 8) | byte1.
        BIT | NEWDECIMAL | STRING | VAR_STRING | ENUM | SET => {
            let b0 = m.u8()?;
            let b1 = m.u8()?;
            u16::from(b0) << 8 | u16::from(b1)
        }
        _ => 0,
    })
}

/// The real type of a STRING column: CHAR/BINARY, ENUM or SET.
fn string_real_type(meta: u16) -> (u8, u16) {
    let b0 = (meta >> 8) as u8;
    let b1 = meta & 0xff;
    if b0 == 0 {
        return (col::STRING, b1);
    }
    // Lengths over 255 borrow two bits of the type byte, inverted.
    if b0 & 0x30 != 0x30 {
        (b0 | 0x30, b1 | (u16::from((b0 & 0x30) ^ 0x30) << 4))
    } else {
        (b0, b1)
    }
}

fn real_type(c: &ColumnInfo) -> u8 {
    match c.type_code {
        col::STRING | col::VAR_STRING => string_real_type(c.meta).0,
        t => t,
    }
}

fn is_numeric(t: u8) -> bool {
    use col::*;
    matches!(
        t,
        DECIMAL | TINY | SHORT | LONG | FLOAT | DOUBLE | LONGLONG | INT24 | NEWDECIMAL
    )
}

fn is_character(c: &ColumnInfo) -> bool {
    use col::*;
    matches!(
        real_type(c),
        STRING | VAR_STRING | VARCHAR | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB
    )
}

fn is_character_mariadb(c: &ColumnInfo) -> bool {
    is_character(c) || c.type_code == col::GEOMETRY
}

fn is_enum_or_set(c: &ColumnInfo) -> bool {
    matches!(real_type(c), col::ENUM | col::SET)
}

/// The decode plan for a column, or `None` for a type that cannot appear in a row image.
pub fn column_kind(t: u8, meta: u16) -> Option<ColumnKind> {
    use col::*;
    let low = (meta & 0xff) as u8;
    Some(match t {
        TINY => ColumnKind::Int {
            bytes: 1,
            unsigned: false,
        },
        SHORT => ColumnKind::Int {
            bytes: 2,
            unsigned: false,
        },
        INT24 => ColumnKind::Int {
            bytes: 3,
            unsigned: false,
        },
        LONG => ColumnKind::Int {
            bytes: 4,
            unsigned: false,
        },
        LONGLONG => ColumnKind::Int {
            bytes: 8,
            unsigned: false,
        },
        FLOAT => ColumnKind::Float,
        DOUBLE => ColumnKind::Double,
        NEWDECIMAL => ColumnKind::Decimal {
            precision: (meta >> 8) as u8,
            scale: low,
        },
        YEAR => ColumnKind::Year,
        DATE | NEWDATE => ColumnKind::Date,
        TIME => ColumnKind::TimeV1,
        TIME2 => ColumnKind::Time2 { fsp: low },
        DATETIME => ColumnKind::DateTimeV1,
        DATETIME2 => ColumnKind::DateTime2 { fsp: low },
        TIMESTAMP => ColumnKind::TimestampV1,
        TIMESTAMP2 => ColumnKind::Timestamp2 { fsp: low },
        VARCHAR => ColumnKind::String {
            len_bytes: if meta > 255 { 2 } else { 1 },
            binary: false,
        },
        STRING | VAR_STRING | ENUM | SET => {
            let (real, len) = if t == ENUM || t == SET {
                (t, meta & 0xff)
            } else {
                string_real_type(meta)
            };
            match real {
                ENUM => ColumnKind::Enum { bytes: len as u8 },
                SET => ColumnKind::Set { bytes: len as u8 },
                _ => ColumnKind::String {
                    len_bytes: if len > 255 { 2 } else { 1 },
                    binary: false,
                },
            }
        }
        BIT => {
            // Written as (bits % 8, bits / 8). Forged metadata can claim 255 whole bytes and
            // leftover bits; saturate, and let the value decoder reject widths over 8 bytes.
            let bits = (meta >> 8) as u8;
            let bytes = (meta & 0xff) as u8;
            ColumnKind::Bit {
                bits: bytes.saturating_mul(8).saturating_add(bits),
                bytes: bytes.saturating_add(u8::from(bits > 0)),
            }
        }
        TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB => ColumnKind::Blob {
            len_bytes: low,
            binary: false,
        },
        JSON => ColumnKind::Json { len_bytes: low },
        GEOMETRY => ColumnKind::Geometry { len_bytes: low },
        VECTOR => ColumnKind::Vector { len_bytes: low },
        NULL => ColumnKind::Null,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_lengths_over_255_use_type_bits() {
        // CHAR(100) utf8mb4 = 400 bytes: 0xfe with bits 4-5 flipped carries the high bits.
        let meta = (u16::from(0xeeu8) << 8) | 0x90;
        assert_eq!(string_real_type(meta), (col::STRING, 400));
        assert_eq!(
            column_kind(col::STRING, meta),
            Some(ColumnKind::String {
                len_bytes: 2,
                binary: false
            })
        );
        assert_eq!(
            column_kind(col::STRING, (u16::from(col::ENUM) << 8) | 1),
            Some(ColumnKind::Enum { bytes: 1 })
        );
        assert_eq!(
            column_kind(col::STRING, (u16::from(col::SET) << 8) | 8),
            Some(ColumnKind::Set { bytes: 8 })
        );
    }

    #[test]
    fn bit_widths() {
        // Metadata is written as (bits % 8, bits / 8); here packed as byte0 << 8 | byte1.
        let meta = |rem: u16, whole: u16| rem << 8 | whole;
        // BIT(64): 8 whole bytes, no leftover bits.
        assert_eq!(
            column_kind(col::BIT, meta(0, 8)),
            Some(ColumnKind::Bit { bits: 64, bytes: 8 })
        );
        // BIT(1): no whole bytes, 1 leftover bit.
        assert_eq!(
            column_kind(col::BIT, meta(1, 0)),
            Some(ColumnKind::Bit { bits: 1, bytes: 1 })
        );
        // BIT(28): 3 whole bytes and 4 bits.
        assert_eq!(
            column_kind(col::BIT, meta(4, 3)),
            Some(ColumnKind::Bit { bits: 28, bytes: 4 })
        );
    }

    #[test]
    fn parses_a_minimal_table_map() {
        let mut b = vec![];
        b.extend_from_slice(&[42, 0, 0, 0, 0, 0, 1, 0]);
        b.extend_from_slice(&[2, b'd', b'b', 0, 1, b't', 0]);
        b.push(3); // columns
        b.extend_from_slice(&[col::LONG, col::VARCHAR, col::NEWDECIMAL]);
        b.extend_from_slice(&[4, 0x2c, 0x01, 10, 2]); // VARCHAR(300), DECIMAL(10,2)
        b.push(0b110);
        // optional: SIGNEDNESS (LONG unsigned, DECIMAL signed), COLUMN_NAME
        b.extend_from_slice(&[1, 1, 0b1000_0000]);
        b.extend_from_slice(&[4, 9, 2, b'i', b'd', 1, b'v', 3, b'd', b'e', b'c']);
        let t = TableInfo::parse(&b, 8, Flavor::MySql).expect("parse");
        assert_eq!(t.table_id, 42);
        assert_eq!(t.qualified_name(), "db.t");
        assert_eq!(
            t.columns[0].kind,
            ColumnKind::Int {
                bytes: 4,
                unsigned: true
            }
        );
        assert_eq!(
            t.columns[1].kind,
            ColumnKind::String {
                len_bytes: 2,
                binary: false
            }
        );
        assert_eq!(
            t.columns[2].kind,
            ColumnKind::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert!(!t.columns[0].nullable && t.columns[1].nullable);
        assert!(t.has_names);
        assert_eq!(t.columns[2].name.as_deref(), Some("dec"));
    }

    #[test]
    fn truncated_table_map_is_an_error() {
        let b = [42, 0, 0, 0, 0, 0, 1, 0, 2, b'd'];
        assert!(matches!(
            TableInfo::parse(&b, 8, Flavor::MySql),
            Err(ErrorKind::Truncated { .. })
        ));
    }
}

//! WRITE/UPDATE/DELETE row events (v1, v2, MySQL partial JSON, MariaDB compressed).
//!
//! Layout after the common header: `table_id u48 | flags u16 | [v2: extra_len u16, extra]`,
//! then `column_count packed | columns_present bitmap | [update: after-image bitmap] | rows`.
//! Each row image is `null bitmap over the present columns | values of present non-null
//! columns`; an update row is a before image followed by an after image. MariaDB's
//! compressed events zlib-compress only the rows part.
//!
//! Iteration borrows everything: [`RowIter`] walks images with a sizing pass (fixed widths
//! and length prefixes only) and hands out [`Row`]s whose [`Row::values`] decode lazily, so
//! nothing is allocated per row and a consumer that skips a table pays only the sizing.
//! The sizing pass follows the table's layout, computed once per TABLE_MAP: a FULL image
//! without NULLs (the common case) is delimited by skipping runs of fixed-width values and
//! reading only the length prefixes between them; other images go column by column; an
//! image that does not fit is sized again with [`value_len`] for an error naming the column.

use crate::bytes::{bit, bitmap_len, le_uint, prefix_at, Reader};
use crate::error::ErrorKind;
use crate::event_type::code;
use crate::table_map::{ColumnKind, TableInfo};
use crate::value::{
    decimal::decimal_binary_size, temporal::fsp_bytes, Date, DateTime, Decimal, JsonBinary, Time,
    Timestamp, Value, ValueError,
};

/// What a row event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowsKind {
    /// Insert: after images only.
    Write,
    /// Update: before and after images.
    Update,
    /// Delete: before images only.
    Delete,
}

impl RowsKind {
    /// `insert`, `update` or `delete`.
    pub fn op_name(self) -> &'static str {
        match self {
            RowsKind::Write => "insert",
            RowsKind::Update => "update",
            RowsKind::Delete => "delete",
        }
    }
}

/// The most columns a table can have (MySQL's and MariaDB's limit); larger counts in an
/// event are an error.
pub const MAX_COLUMNS: usize = 4096;

/// Row-event flag: the last row event of a statement.
pub const STMT_END_F: u16 = 1;

/// A row event, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RowsEvent<'a> {
    /// Insert, update or delete.
    pub kind: RowsKind,
    /// The table id of the TABLE_MAP this event refers to.
    pub table_id: u64,
    /// Event flags (`STMT_END_F`, ...).
    pub flags: u16,
    /// v2 extra data (NDB or partition info), not interpreted.
    pub extra: &'a [u8],
    /// MySQL PARTIAL_UPDATE_ROWS: after images may carry JSON diffs.
    pub partial: bool,
    /// MariaDB compressed event: [`RowsEvent::payload`] is zlib, inflate with [`inflate_rows`].
    pub compressed: bool,
    /// Column count and bitmaps.
    pub columns: usize,
    /// Present-column bitmap of the before image (or the only image).
    pub present_before: &'a [u8],
    /// Present-column bitmap of the after image (updates only; else same as before).
    pub present_after: &'a [u8],
    /// Row images, or for a compressed event the compressed rows.
    pub payload: &'a [u8],
}

impl<'a> RowsEvent<'a> {
    /// Parses a row event. `body` follows the common header, without checksum.
    pub fn parse(type_code: u8, body: &'a [u8], post_header_len: usize) -> Result<Self, ErrorKind> {
        use code::*;
        let (kind, v2, partial, compressed) = match type_code {
            PRE_GA_WRITE_ROWS | WRITE_ROWS_V1 => (RowsKind::Write, false, false, false),
            PRE_GA_UPDATE_ROWS | UPDATE_ROWS_V1 => (RowsKind::Update, false, false, false),
            PRE_GA_DELETE_ROWS | DELETE_ROWS_V1 => (RowsKind::Delete, false, false, false),
            WRITE_ROWS_V2 => (RowsKind::Write, true, false, false),
            UPDATE_ROWS_V2 => (RowsKind::Update, true, false, false),
            DELETE_ROWS_V2 => (RowsKind::Delete, true, false, false),
            PARTIAL_UPDATE_ROWS => (RowsKind::Update, true, true, false),
            MARIA_WRITE_ROWS_COMPRESSED_V1 => (RowsKind::Write, false, false, true),
            MARIA_UPDATE_ROWS_COMPRESSED_V1 => (RowsKind::Update, false, false, true),
            MARIA_DELETE_ROWS_COMPRESSED_V1 => (RowsKind::Delete, false, false, true),
            MARIA_WRITE_ROWS_COMPRESSED => (RowsKind::Write, true, false, true),
            MARIA_UPDATE_ROWS_COMPRESSED => (RowsKind::Update, true, false, true),
            MARIA_DELETE_ROWS_COMPRESSED => (RowsKind::Delete, true, false, true),
            _ => return Err(ErrorKind::malformed("rows event", "not a rows event type")),
        };
        let what = "rows event";
        let sh = |s| ErrorKind::short(what, s);
        let mut r = Reader::new(body);
        let (table_id, id_len) = if post_header_len == 6 {
            (u64::from(r.u32().map_err(sh)?), 4)
        } else {
            (r.u48().map_err(sh)?, 6)
        };
        let flags = r.u16().map_err(sh)?;
        // v2 post-headers announce 10 bytes, the extra-data length being part of them.
        let fixed = id_len + 2 + if v2 { 2 } else { 0 };
        let extra = if v2 {
            let len = usize::from(r.u16().map_err(sh)?);
            r.take(len.saturating_sub(2)).map_err(sh)?
        } else {
            &[]
        };
        r.skip(post_header_len.saturating_sub(fixed)).map_err(sh)?;
        let n = r.packed().map_err(|p| ErrorKind::packed(what, p))?;
        let columns = usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_COLUMNS)
            .ok_or_else(|| ErrorKind::malformed(what, format!("{n} columns")))?;
        let present_before = r.take(bitmap_len(columns)).map_err(sh)?;
        let present_after = if kind == RowsKind::Update {
            r.take(bitmap_len(columns)).map_err(sh)?
        } else {
            present_before
        };
        Ok(RowsEvent {
            kind,
            table_id,
            flags,
            extra,
            partial,
            compressed,
            columns,
            present_before,
            present_after,
            payload: r.take_rest(),
        })
    }

    /// Iterates the row changes of an uncompressed event (for a compressed one, pass the
    /// output of [`inflate_rows`] to [`RowsEvent::rows_in`]).
    pub fn rows(&self, table: &'a TableInfo) -> Result<RowIter<'a>, ErrorKind> {
        if self.compressed {
            return Err(ErrorKind::malformed(
                "rows event",
                "compressed rows must be inflated first",
            ));
        }
        self.rows_in(table, self.payload)
    }

    /// Iterates the row changes in `rows`, the (inflated) row images of this event.
    pub fn rows_in(&self, table: &'a TableInfo, rows: &'a [u8]) -> Result<RowIter<'a>, ErrorKind> {
        if self.columns != table.columns.len() {
            return Err(ErrorKind::malformed(
                "rows event",
                format!(
                    "{} columns, but the TABLE_MAP of `{}` has {}",
                    self.columns,
                    table.qualified_name(),
                    table.columns.len()
                ),
            ));
        }
        // Parsed events and TABLE_MAPs never exceed it; a hand-built `RowsEvent` and
        // `TableInfo` could, and `Row` keeps its offsets in 16 bits on that bound.
        if self.columns > MAX_COLUMNS {
            return Err(ErrorKind::malformed(
                "rows event",
                format!("{} columns", self.columns),
            ));
        }
        debug_assert!(
            table.layout().is_current(&table.columns),
            "the layout of `{}` is stale: call TableInfo::refresh_layout after changing kinds",
            table.qualified_name()
        );
        let columns = table.columns.len();
        let before = Image::new(self.present_before, columns);
        let after = if self.kind == RowsKind::Update {
            Image::new(self.present_after, columns)
        } else {
            before
        };
        Ok(RowIter {
            table,
            kind: self.kind,
            partial: self.partial,
            before,
            after,
            rest: rows,
        })
    }
}

/// Inflates the rows of a MariaDB compressed event into `out` (cleared first), and returns
/// the inflated bytes. The format is one byte `0x80 | n`, the uncompressed length in `n`
/// big-endian bytes, then a zlib stream.
pub fn inflate_rows<'o>(
    compressed: &[u8],
    out: &'o mut Vec<u8>,
    limit: usize,
) -> Result<&'o [u8], ErrorKind> {
    inflate_mariadb("compressed rows", compressed, out, limit)
}

/// The most bytes one byte of a deflate stream can inflate to.
const DEFLATE_MAX_RATIO: usize = 1032;

pub(crate) fn inflate_mariadb<'o>(
    what: &'static str,
    compressed: &[u8],
    out: &'o mut Vec<u8>,
    limit: usize,
) -> Result<&'o [u8], ErrorKind> {
    let bad = |reason: String| ErrorKind::Decompress { what, reason };
    let (&head, rest) = compressed
        .split_first()
        .ok_or_else(|| bad("empty".into()))?;
    let lenlen = usize::from(head & 0x07);
    if lenlen == 0 || lenlen > 4 || rest.len() < lenlen {
        return Err(bad(format!("bad header byte {head:#04x}")));
    }
    let len = rest[..lenlen]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len > limit {
        return Err(bad(format!(
            "declares {len} bytes, over the limit of {limit}"
        )));
    }
    let input = &rest[lenlen..];
    // Deflate expands at most 1032-fold (a 258-byte match in 2 bits), so a larger declared
    // length is a lie; refusing it keeps a few forged bytes from reserving up to `limit`.
    if len > input.len().saturating_mul(DEFLATE_MAX_RATIO) {
        return Err(bad(format!(
            "declares {len} bytes, more than {} compressed bytes can hold",
            input.len()
        )));
    }
    out.clear();
    out.reserve(len);
    let mut z = flate2::Decompress::new(true);
    // Inflate into the reserved capacity only: a stream that would exceed the declared
    // length is corrupt (or hostile) and must not grow the buffer.
    match z.decompress_vec(input, out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) if out.len() == len => Ok(&out[..]),
        Ok(_) => Err(bad(format!(
            "inflated {} of the {len} bytes declared",
            out.len()
        ))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The column-present bitmap of one image kind (before or after) of an event, with what
/// every image of that kind shares, counted once per event rather than once per image.
#[derive(Debug, Clone, Copy)]
struct Image<'a> {
    present: &'a [u8],
    /// Present columns: the bits of the NULL bitmap.
    count: usize,
    /// Every column is present (FULL images), so the bitmap need not be read per value.
    full: bool,
}

impl<'a> Image<'a> {
    fn new(present: &'a [u8], columns: usize) -> Self {
        let count = count_present(present, columns);
        Image {
            present,
            count,
            full: count == columns,
        }
    }
}

/// Iterator over the row changes of one event.
#[derive(Debug, Clone)]
pub struct RowIter<'a> {
    table: &'a TableInfo,
    kind: RowsKind,
    partial: bool,
    before: Image<'a>,
    after: Image<'a>,
    rest: &'a [u8],
}

/// One row change: the before image (update, delete) and the after image (insert, update).
#[derive(Debug, Clone, Copy)]
pub struct RowChange<'a> {
    /// Insert, update or delete.
    pub kind: RowsKind,
    /// The row before the change.
    pub before: Option<Row<'a>>,
    /// The row after the change.
    pub after: Option<Row<'a>>,
}

impl<'a> RowChange<'a> {
    /// The images present: before then after.
    #[inline]
    pub fn images(&self) -> impl Iterator<Item = Row<'a>> {
        [self.before, self.after].into_iter().flatten()
    }
}

impl<'a> Iterator for RowIter<'a> {
    type Item = Result<RowChange<'a>, ErrorKind>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.next_change();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl<'a> RowIter<'a> {
    /// Decodes every value of every row change, rendering the ones with a text form into
    /// `scratch` ([`Value::render_text`]): the definition of "fully decoded" that
    /// `inspect --stats`, the tests and the bench share. Returns (row changes, values).
    /// An invalid value is an error naming its table and column.
    pub fn decode_all(self, scratch: &mut String) -> Result<(u64, u64), ErrorKind> {
        let (mut changes, mut values) = (0, 0);
        for change in self {
            for row in change?.images() {
                for v in row.values() {
                    let (i, v) = v?;
                    v.render_text(scratch).map_err(|error| ErrorKind::Value {
                        table: row.table().qualified_name(),
                        column: i + 1,
                        error,
                    })?;
                    values += 1;
                }
            }
            changes += 1;
        }
        Ok((changes, values))
    }

    #[inline(always)]
    fn next_change(&mut self) -> Result<RowChange<'a>, ErrorKind> {
        let left = self.rest.len();
        let change = self.scan_change()?;
        // Images with no present columns take no bytes, so a forged event whose bitmaps are
        // empty but whose rows are not would otherwise yield the same empty row forever.
        if self.rest.len() == left {
            return Err(ErrorKind::malformed(
                "rows event",
                "row images take no bytes, yet bytes remain",
            ));
        }
        Ok(change)
    }

    #[inline(always)]
    fn scan_change(&mut self) -> Result<RowChange<'a>, ErrorKind> {
        let first = Row::scan(self.table, self.before, self.rest, false)?;
        self.rest = self.rest.get(first.image.len()..).unwrap_or_default();
        let (before, after) = match self.kind {
            RowsKind::Write => (None, Some(first)),
            RowsKind::Delete => (Some(first), None),
            RowsKind::Update => {
                let after = Row::scan(self.table, self.after, self.rest, self.partial)?;
                self.rest = self.rest.get(after.image.len()..).unwrap_or_default();
                (Some(first), Some(after))
            }
        };
        Ok(RowChange {
            kind: self.kind,
            before,
            after,
        })
    }
}

/// One row image. Values are decoded on demand by [`Row::values`].
///
/// Kept small, as row changes are handed out by value: the bitmaps and the values are one
/// slice with offsets rather than a slice each.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    table: &'a TableInfo,
    present: &'a [u8],
    /// The whole image: `[partial-update options, JSON diff bitmap] | null bitmap | values`.
    image: &'a [u8],
    /// Where the JSON diff bitmap of a partial after image starts (it ends at `nulls_at`).
    /// At most 9 bytes of options and two bitmaps over at most 4096 columns precede the
    /// values, so offsets fit in 16 bits.
    json_at: u16,
    /// Where the null bitmap starts.
    nulls_at: u16,
    /// Where the values start.
    data_at: u16,
    /// Every column is present: `present` need not be read.
    full: bool,
    /// Besides, no value is NULL: the null bitmap need not be read either.
    plain: bool,
}

/// Whether none of the first `bits` bits of `bitmap` is set (padding bits past them are
/// not looked at, as the per-column reads do not look at them either).
#[inline]
fn none_set(bitmap: &[u8], bits: usize) -> bool {
    let whole = bits / 8;
    let Some((head, tail)) = bitmap.split_at_checked(whole) else {
        return false;
    };
    let rem = bits % 8;
    head.iter().all(|&b| b == 0)
        && (rem == 0 || tail.first().is_some_and(|&b| b & ((1u8 << rem) - 1) == 0))
}

impl<'a> Row<'a> {
    /// Delimits one image at the start of `buf`; its bytes are `row.image`.
    #[inline]
    fn scan(
        table: &'a TableInfo,
        image: Image<'a>,
        buf: &'a [u8],
        partial_after: bool,
    ) -> Result<Row<'a>, ErrorKind> {
        let what = "row image";
        let mut r = Reader::new(buf);
        let mut json_at = 0;
        if partial_after {
            let options = r.packed().map_err(|p| ErrorKind::packed(what, p))?;
            json_at = r.position();
            if options & 1 != 0 {
                let json_cols = table
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| {
                        bit(image.present, *i) && matches!(c.kind, ColumnKind::Json { .. })
                    })
                    .count();
                r.skip(bitmap_len(json_cols))
                    .map_err(|s| ErrorKind::short(what, s))?;
            }
        }
        let nulls_at = r.position();
        let nulls = r
            .take(bitmap_len(image.count))
            .map_err(|s| ErrorKind::short(what, s))?;
        let start = r.position();
        // The common case, a FULL image without NULLs, in one pass over the layout; any
        // other image, or one that does not fit, column by column.
        let plain = image.full && none_set(nulls, image.count);
        let end = match plain {
            true => table.layout().full_end(buf, start),
            false => None,
        };
        let end = match end {
            Some(end) => end,
            None => Self::scan_columns(table, image, nulls, buf, start)?,
        };
        Ok(Row {
            table,
            present: image.present,
            image: buf.get(..end).unwrap_or_default(),
            // See the field docs: all three are at most 9 + 512 + 512.
            json_at: json_at as u16,
            nulls_at: nulls_at as u16,
            data_at: start as u16,
            full: image.full,
            plain,
        })
    }

    /// Delimits the values of an image column by column; returns where they end.
    fn scan_columns(
        table: &'a TableInfo,
        image: Image<'a>,
        nulls: &[u8],
        buf: &[u8],
        start: usize,
    ) -> Result<usize, ErrorKind> {
        let mut pos = start;
        let mut k = 0; // index among present columns
        for (i, &w) in table.layout().widths.iter().enumerate() {
            if !image.full && !bit(image.present, i) {
                continue;
            }
            let null = bit(nulls, k);
            k += 1;
            if null {
                continue;
            }
            match w.len_at(buf, pos) {
                Some(n) => pos += n,
                None => return Err(Self::size_error(table, i, &buf[pos..])),
            }
        }
        Ok(pos)
    }

    /// Why column `i` (0-based) could not be delimited in `rest`.
    #[cold]
    #[inline(never)]
    fn size_error(table: &TableInfo, i: usize, rest: &[u8]) -> ErrorKind {
        let error = match table.columns.get(i).map(|c| value_len(c.kind, rest)) {
            Some(Err(error)) => error,
            // The layout disagrees with the kind: only a kind changed without
            // `TableInfo::refresh_layout` gets here.
            _ => ValueError::Invalid {
                kind: "row image",
                reason: "column layout out of date",
            },
        };
        ErrorKind::Value {
            table: table.qualified_name(),
            column: i + 1,
            error,
        }
    }

    /// The table this row belongs to.
    pub fn table(&self) -> &'a TableInfo {
        self.table
    }

    /// Whether column `i` (0-based) is part of this image (MINIMAL/NOBLOB images omit some).
    #[inline]
    pub fn is_present(&self, i: usize) -> bool {
        if self.full {
            i < self.table.columns.len()
        } else {
            bit(self.present, i)
        }
    }

    /// The bytes of the image's values (after the null bitmap).
    pub fn data(&self) -> &'a [u8] {
        self.image
            .get(usize::from(self.data_at)..)
            .unwrap_or_default()
    }

    /// The present columns' values in column order, as `(0-based column, value)`.
    #[inline]
    pub fn values(&self) -> Values<'a> {
        let (j, n, d) = (
            usize::from(self.json_at),
            usize::from(self.nulls_at),
            usize::from(self.data_at),
        );
        Values {
            row: *self,
            nulls: self.image.get(n..d).unwrap_or_default(),
            partial_json: self.image.get(j..n).unwrap_or_default(),
            data: self.image.get(d..).unwrap_or_default(),
            col: 0,
            present_idx: 0,
            json_idx: 0,
        }
    }
}

fn count_present(present: &[u8], columns: usize) -> usize {
    let full = columns / 8;
    let mut n: usize = present[..full.min(present.len())]
        .iter()
        .map(|b| b.count_ones() as usize)
        .sum();
    if !columns.is_multiple_of(8) {
        if let Some(b) = present.get(full) {
            n += (b & ((1u8 << (columns % 8)) - 1)).count_ones() as usize;
        }
    }
    n
}

/// Iterator over a row image's present values.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    row: Row<'a>,
    nulls: &'a [u8],
    partial_json: &'a [u8],
    /// The values not yet decoded.
    data: &'a [u8],
    col: usize,
    present_idx: usize,
    json_idx: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = Result<(usize, Value<'a>), ErrorKind>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let row = &self.row;
        let cols = &row.table.columns;
        while let Some(c) = cols.get(self.col) {
            let i = self.col;
            self.col += 1;
            if !row.full && !bit(row.present, i) {
                continue;
            }
            let null = !row.plain && bit(self.nulls, self.present_idx);
            self.present_idx += 1;
            let kind = c.kind;
            // Only a partial-update after image marks JSON columns as diffs.
            let mut diff = false;
            if !self.partial_json.is_empty() && matches!(kind, ColumnKind::Json { .. }) {
                diff = bit(self.partial_json, self.json_idx);
                self.json_idx += 1;
            }
            if null {
                return Some(Ok((i, Value::Null)));
            }
            return Some(match decode_value(kind, self.data, diff) {
                Ok((v, used)) => {
                    self.data = self.data.get(used..).unwrap_or_default();
                    Ok((i, v))
                }
                Err(error) => {
                    self.col = cols.len();
                    Err(value_error(row.table, i, error))
                }
            });
        }
        None
    }
}

/// A value error naming its table and column (`i` 0-based).
#[cold]
#[inline(never)]
fn value_error(table: &TableInfo, i: usize, error: ValueError) -> ErrorKind {
    ErrorKind::Value {
        table: table.qualified_name(),
        column: i + 1,
        error,
    }
}

#[inline]
fn need(buf: &[u8], n: usize) -> Result<(), ValueError> {
    if buf.len() < n {
        Err(ValueError::Truncated {
            needed: n,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Length prefix + payload.
#[inline]
fn prefixed(buf: &[u8], len_bytes: u8) -> Result<(&[u8], usize), ValueError> {
    let lb = usize::from(len_bytes);
    if !(1..=4).contains(&lb) {
        return Err(ValueError::Invalid {
            kind: "length prefix",
            reason: "width must be 1 to 4 bytes",
        });
    }
    let Some(len) = prefix_at(buf, 0, lb) else {
        return Err(ValueError::Truncated {
            needed: lb,
            available: buf.len(),
        });
    };
    match buf.get(lb..lb + len) {
        Some(s) => Ok((s, lb + len)),
        None => Err(ValueError::Truncated {
            needed: lb + len,
            available: buf.len(),
        }),
    }
}

/// Bytes one value of `kind` occupies at the start of `buf`.
#[inline]
pub fn value_len(kind: ColumnKind, buf: &[u8]) -> Result<usize, ValueError> {
    let fixed = match kind {
        ColumnKind::Int { bytes, .. } => usize::from(bytes),
        ColumnKind::Float => 4,
        ColumnKind::Double => 8,
        ColumnKind::Decimal { precision, scale } => decimal_binary_size(precision, scale),
        ColumnKind::Year => 1,
        ColumnKind::Date | ColumnKind::TimeV1 => 3,
        ColumnKind::Time2 { fsp } => 3 + fsp_len(fsp)?,
        ColumnKind::DateTimeV1 => 8,
        ColumnKind::DateTime2 { fsp } => 5 + fsp_len(fsp)?,
        ColumnKind::TimestampV1 => 4,
        ColumnKind::Timestamp2 { fsp } | ColumnKind::MariaTimestampHires { fsp } => {
            4 + fsp_len(fsp)?
        }
        ColumnKind::Enum { bytes } | ColumnKind::Set { bytes } | ColumnKind::Bit { bytes, .. } => {
            usize::from(bytes)
        }
        ColumnKind::Null => 0,
        ColumnKind::String { len_bytes, .. }
        | ColumnKind::Blob { len_bytes, .. }
        | ColumnKind::Json { len_bytes }
        | ColumnKind::Geometry { len_bytes }
        | ColumnKind::Vector { len_bytes } => return prefixed(buf, len_bytes).map(|(_, n)| n),
    };
    need(buf, fixed)?;
    Ok(fixed)
}

#[inline]
fn fsp_len(fsp: u8) -> Result<usize, ValueError> {
    if fsp > 6 {
        return Err(ValueError::Invalid {
            kind: "temporal",
            reason: "fractional precision over 6",
        });
    }
    Ok(fsp_bytes(fsp))
}

/// Decodes one value of `kind` at the start of `buf`; returns it and the bytes it used.
/// `json_diff` marks a partial-update JSON column.
#[inline]
pub fn decode_value(
    kind: ColumnKind,
    buf: &[u8],
    json_diff: bool,
) -> Result<(Value<'_>, usize), ValueError> {
    Ok(match kind {
        ColumnKind::Int { bytes, unsigned } => {
            let n = usize::from(bytes);
            let raw = match (n, buf) {
                (1, [a, ..]) => u64::from(*a),
                (2, [a, b, ..]) => u64::from(u16::from_le_bytes([*a, *b])),
                (3, [a, b, c, ..]) => u64::from(u32::from_le_bytes([*a, *b, *c, 0])),
                (4, [a, b, c, d, ..]) => u64::from(u32::from_le_bytes([*a, *b, *c, *d])),
                (8, [a, b, c, d, e, f, g, h, ..]) => {
                    u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h])
                }
                _ => {
                    need(buf, n)?;
                    le_uint(&buf[..n])
                }
            };
            let v = if unsigned {
                Value::UInt(raw)
            } else {
                let shift = 64 - 8 * n as u32;
                Value::Int(((raw << shift) as i64) >> shift)
            };
            (v, n)
        }
        ColumnKind::Float => {
            need(buf, 4)?;
            (
                Value::Float(f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
                4,
            )
        }
        ColumnKind::Double => {
            need(buf, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[..8]);
            (Value::Double(f64::from_le_bytes(a)), 8)
        }
        ColumnKind::Decimal { precision, scale } => {
            let (d, n) = Decimal::from_binary(buf, precision, scale)?;
            (Value::Decimal(d), n)
        }
        ColumnKind::Year => {
            need(buf, 1)?;
            let y = buf[0];
            (Value::Year(if y == 0 { 0 } else { 1900 + u16::from(y) }), 1)
        }
        ColumnKind::Date => {
            let (d, n) = Date::from_binary(buf)?;
            (Value::Date(d), n)
        }
        ColumnKind::TimeV1 => {
            let (t, n) = Time::from_time_v1(buf)?;
            (Value::Time(t), n)
        }
        ColumnKind::Time2 { fsp } => {
            let (t, n) = Time::from_time2(buf, fsp)?;
            (Value::Time(t), n)
        }
        ColumnKind::DateTimeV1 => {
            let (t, n) = DateTime::from_datetime_v1(buf)?;
            (Value::DateTime(t), n)
        }
        ColumnKind::DateTime2 { fsp } => {
            let (t, n) = DateTime::from_datetime2(buf, fsp)?;
            (Value::DateTime(t), n)
        }
        ColumnKind::TimestampV1 => {
            let (t, n) = Timestamp::from_timestamp_v1(buf)?;
            (Value::Timestamp(t), n)
        }
        ColumnKind::Timestamp2 { fsp } => {
            let (t, n) = Timestamp::from_timestamp2(buf, fsp)?;
            (Value::Timestamp(t), n)
        }
        ColumnKind::MariaTimestampHires { fsp } => {
            let n = 4 + fsp_len(fsp)?;
            need(buf, n)?;
            let seconds = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let frac = buf[4..n].iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
            let micros = frac.saturating_mul(10u32.pow(6 - u32::from(fsp)));
            if micros >= 1_000_000 {
                return Err(ValueError::Invalid {
                    kind: "TIMESTAMP",
                    reason: "fraction of a second out of range",
                });
            }
            (
                Value::Timestamp(Timestamp {
                    seconds,
                    micros,
                    fsp,
                }),
                n,
            )
        }
        ColumnKind::String { len_bytes, binary } | ColumnKind::Blob { len_bytes, binary } => {
            let (s, n) = prefixed(buf, len_bytes)?;
            (
                if binary {
                    Value::Bytes(s)
                } else {
                    Value::Text(s)
                },
                n,
            )
        }
        ColumnKind::Json { len_bytes } => {
            let (s, n) = prefixed(buf, len_bytes)?;
            (
                if json_diff {
                    Value::JsonDiff(s)
                } else {
                    Value::Json(JsonBinary(s))
                },
                n,
            )
        }
        ColumnKind::Geometry { len_bytes } => {
            let (s, n) = prefixed(buf, len_bytes)?;
            (Value::Geometry(s), n)
        }
        ColumnKind::Vector { len_bytes } => {
            let (s, n) = prefixed(buf, len_bytes)?;
            (Value::Bytes(s), n)
        }
        ColumnKind::Enum { bytes } => {
            let n = usize::from(bytes);
            need(buf, n)?;
            (Value::Enum(le_uint(&buf[..n]) as u16), n)
        }
        ColumnKind::Set { bytes } => {
            let n = usize::from(bytes);
            need(buf, n)?;
            (Value::Set(le_uint(&buf[..n])), n)
        }
        ColumnKind::Bit { bits, bytes } => {
            let n = usize::from(bytes);
            need(buf, n)?;
            if n > 8 {
                return Err(ValueError::Invalid {
                    kind: "BIT",
                    reason: "wider than 64 bits",
                });
            }
            let v = buf[..n].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            (Value::Bit { value: v, bits }, n)
        }
        ColumnKind::Null => (Value::Null, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_integers_sign_extend() {
        let k = |bytes| ColumnKind::Int {
            bytes,
            unsigned: false,
        };
        assert_eq!(
            decode_value(k(1), &[0xff], false).unwrap().0,
            Value::Int(-1)
        );
        assert_eq!(
            decode_value(k(3), &[0x00, 0x00, 0x80], false).unwrap().0,
            Value::Int(-8_388_608)
        );
        assert_eq!(
            decode_value(k(8), &[0xff; 8], false).unwrap().0,
            Value::Int(-1)
        );
        let u = ColumnKind::Int {
            bytes: 8,
            unsigned: true,
        };
        assert_eq!(
            decode_value(u, &[0xff; 8], false).unwrap().0,
            Value::UInt(u64::MAX)
        );
    }

    #[test]
    fn truncated_values_error() {
        let s = ColumnKind::String {
            len_bytes: 1,
            binary: false,
        };
        assert_eq!(
            value_len(s, &[5, b'a']),
            Err(ValueError::Truncated {
                needed: 6,
                available: 2
            })
        );
        assert!(value_len(
            ColumnKind::Int {
                bytes: 4,
                unsigned: false
            },
            &[1, 2]
        )
        .is_err());
    }

    #[test]
    fn bit_is_big_endian() {
        let k = ColumnKind::Bit { bits: 16, bytes: 2 };
        assert_eq!(
            decode_value(k, &[0x01, 0x02], false).unwrap().0,
            Value::Bit {
                value: 0x0102,
                bits: 16
            }
        );
    }

    /// A table `d.t (a INT, b VARCHAR(300), c CHAR(10), d BIGINT)`.
    fn table() -> TableInfo {
        use crate::table_map::col;
        let mut b = 7u64.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&[0, 0, 1, b'd', 0, 1, b't', 0, 4]);
        b.extend_from_slice(&[col::LONG, col::VARCHAR, col::STRING, col::LONGLONG]);
        // Metadata: VARCHAR max length 300 (2-byte lengths), CHAR(10) as STRING.
        b.extend_from_slice(&[4, 0x2c, 0x01, col::STRING, 10]);
        b.push(0x0f); // all nullable
        TableInfo::parse(&b, 8, crate::header::Flavor::MariaDb).unwrap()
    }

    /// A WRITE_ROWS_V1 body over `present`, with `rows` as its row images.
    fn write_rows(present: u8, rows: &[u8]) -> Vec<u8> {
        let mut b = 7u64.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&[0, 0, 4, present]);
        b.extend_from_slice(rows);
        b
    }

    fn image(
        nulls: u8,
        a: Option<u32>,
        b: Option<&[u8]>,
        c: Option<&[u8]>,
        d: Option<i64>,
    ) -> Vec<u8> {
        let mut v = vec![nulls];
        if let Some(a) = a {
            v.extend_from_slice(&a.to_le_bytes());
        }
        if let Some(b) = b {
            v.extend_from_slice(&(b.len() as u16).to_le_bytes());
            v.extend_from_slice(b);
        }
        if let Some(c) = c {
            v.push(c.len() as u8);
            v.extend_from_slice(c);
        }
        if let Some(d) = d {
            v.extend_from_slice(&d.to_le_bytes());
        }
        v
    }

    fn values<'a>(row: &Row<'a>) -> Vec<(usize, Value<'a>)> {
        row.values().map(|v| v.unwrap()).collect()
    }

    #[test]
    fn full_images_with_and_without_nulls_delimit_alike() {
        let t = table();
        let mut rows = image(0, Some(1), Some(b"hello"), Some(b"ab"), Some(-5));
        rows.extend(image(0b0110, Some(2), None, None, Some(7)));
        rows.extend(image(0, Some(3), Some(b""), Some(b"z"), Some(0)));
        let body = write_rows(0x0f, &rows);
        let ev = RowsEvent::parse(code::WRITE_ROWS_V1, &body, 8).unwrap();
        let got: Vec<_> = ev
            .rows(&t)
            .unwrap()
            .map(|c| values(&c.unwrap().after.unwrap()))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            vec![
                (0, Value::Int(1)),
                (1, Value::Text(b"hello")),
                (2, Value::Text(b"ab")),
                (3, Value::Int(-5))
            ]
        );
        assert_eq!(
            got[1],
            vec![
                (0, Value::Int(2)),
                (1, Value::Null),
                (2, Value::Null),
                (3, Value::Int(7))
            ]
        );
        assert_eq!(got[2][1], (1, Value::Text(b"")));
    }

    #[test]
    fn minimal_images_skip_absent_columns() {
        let t = table();
        // Columns a and c only (present bitmap 0b0101): nulls over 2 present columns.
        let mut rows = vec![0];
        rows.extend_from_slice(&9u32.to_le_bytes());
        rows.extend_from_slice(&[3, b'x', b'y', b'z']);
        let body = write_rows(0b0101, &rows);
        let ev = RowsEvent::parse(code::WRITE_ROWS_V1, &body, 8).unwrap();
        let mut it = ev.rows(&t).unwrap();
        let row = it.next().unwrap().unwrap().after.unwrap();
        assert!(row.is_present(0) && !row.is_present(1) && row.is_present(2));
        assert_eq!(
            values(&row),
            vec![(0, Value::Int(9)), (2, Value::Text(b"xyz"))]
        );
        assert!(it.next().is_none());
    }

    #[test]
    fn a_truncated_image_names_the_column_that_does_not_fit() {
        let t = table();
        let whole = image(0, Some(1), Some(b"hello"), Some(b"ab"), Some(-5));
        // Cut inside a, inside b, before c's length prefix, and inside d.
        for (cut, column) in [(3, 1), (9, 2), (12, 3), (whole.len() - 1, 4)] {
            let body = write_rows(0x0f, &whole[..cut]);
            let ev = RowsEvent::parse(code::WRITE_ROWS_V1, &body, 8).unwrap();
            match ev.rows(&t).unwrap().next() {
                Some(Err(ErrorKind::Value {
                    column: c,
                    error: ValueError::Truncated { .. },
                    ..
                })) => assert_eq!(c, column, "cut at {cut}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn partial_json_after_images_mark_diffs() {
        use crate::table_map::col;
        // `d.t (a INT, j JSON)`, JSON with 4-byte lengths.
        let mut tm = 7u64.to_le_bytes()[..6].to_vec();
        tm.extend_from_slice(&[
            0,
            0,
            1,
            b'd',
            0,
            1,
            b't',
            0,
            2,
            col::LONG,
            col::JSON,
            1,
            4,
            3,
        ]);
        let t = TableInfo::parse(&tm, 8, crate::header::Flavor::MySql).unwrap();
        let json = [4u8, 0]; // the JSON literal null
        let diff = [9u8, 9, 9];
        let mut body = 7u64.to_le_bytes()[..6].to_vec();
        body.extend_from_slice(&[0, 0, 2, 0, 2, 0x03, 0x03]); // flags, extra, columns, bitmaps
        let image = |v: &mut Vec<u8>, a: u32, j: &[u8]| {
            v.push(0); // no NULLs
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&(j.len() as u32).to_le_bytes());
            v.extend_from_slice(j);
        };
        // A change whose after image carries a diff, then one that does not.
        image(&mut body, 1, &json);
        body.extend_from_slice(&[1, 0b1]); // PARTIAL_JSON_UPDATES, j is a diff
        image(&mut body, 2, &diff);
        image(&mut body, 3, &json);
        body.push(0); // no partial updates: no bitmap
        image(&mut body, 4, &json);
        let ev = RowsEvent::parse(code::PARTIAL_UPDATE_ROWS, &body, 10).unwrap();
        let changes: Vec<_> = ev.rows(&t).unwrap().map(|c| c.unwrap()).collect();
        assert_eq!(changes.len(), 2);
        let before = values(&changes[0].before.unwrap());
        assert_eq!(before[0], (0, Value::Int(1)));
        assert!(matches!(before[1], (1, Value::Json(_))));
        let after = values(&changes[0].after.unwrap());
        assert_eq!(after, vec![(0, Value::Int(2)), (1, Value::JsonDiff(&diff))]);
        let after = values(&changes[1].after.unwrap());
        assert_eq!(after[0], (0, Value::Int(4)));
        assert!(matches!(after[1], (1, Value::Json(_))));
    }

    #[test]
    fn count_present_ignores_padding_bits() {
        assert_eq!(count_present(&[0xff], 3), 3);
        assert_eq!(count_present(&[0xff, 0x01], 9), 9);
        assert_eq!(count_present(&[0b101], 3), 2);
    }

    #[test]
    fn inflate_rejects_lies_about_length() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"hello world").unwrap();
        let data = z.finish().unwrap();
        let mut ok = vec![0x81, 11];
        ok.extend_from_slice(&data);
        let mut out = Vec::new();
        assert_eq!(
            inflate_rows(&ok, &mut out, 1 << 20).unwrap(),
            b"hello world"
        );
        let mut lie = vec![0x81, 5];
        lie.extend_from_slice(&data);
        assert!(inflate_rows(&lie, &mut out, 1 << 20).is_err());
        let mut bomb = vec![0x84, 0x7f, 0xff, 0xff, 0xff];
        bomb.extend_from_slice(&data);
        assert!(inflate_rows(&bomb, &mut out, 1 << 20).is_err());
    }
}

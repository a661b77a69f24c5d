//! The change model: a [`ChangeBatch`] holds whole source transactions of row changes in
//! columnar form, one [`TableSection`] per table definition. It is the unit the codec
//! encodes and the sinks apply.
//!
//! # Layout
//! - A section holds its table's changes in source order: an [`Op`] per change and one or
//!   two row *images* per change (insert: after; delete: before; update: before, after).
//! - Each column keeps one slot per image: a `u64` for fixed-width kinds (integers, float
//!   bits, packed temporal values, enum/set/bit) or a byte range for variable-width kinds
//!   (text, bytes, decimal text, JSON, geometry), plus a *present* bit (the image carries
//!   this column; minimal images leave columns out) and a *null* bit. Absent and NULL slots
//!   hold 0 or an empty range, so two batches with the same content have the same buffers.
//! - [`Run`]s record the order of changes across sections (a run is consecutive changes of
//!   one section), and [`Transaction`]s group runs and carry each transaction's GTID and
//!   end position. Applying runs in order replays the source exactly.
//! - A *compacted* batch ([`ChangeBatch::is_compacted`]) holds the net effect of all its
//!   transactions: they keep their GTIDs and positions but own no runs, and the batch must
//!   be applied as one atomic unit (all runs, then the checkpoint of the last transaction).
//!
//! - A batch may end with a *DDL transaction* ([`ChangeBatch::ddl`]): its last transaction
//!   then owns no runs and stands for the [`Ddl`] statement, which a sink runs after the
//!   batch's rows and before any later batch. Nothing follows it in the batch, so rows
//!   before a DDL and rows after it never share a batch (their table definitions differ).
//!
//! - A transaction too large for one batch is carried in *parts* over consecutive batches
//!   ([`ChangeBatch::cut_transaction`]): a batch whose last transaction is a part that
//!   continues in the next batch [`ChangeBatch::continues`]; the next batch's first
//!   transaction, [`ChangeBatch::continued`], holds the changes that follow, and the batch
//!   where the transaction ends holds its commit (end position) as usual. A part is no
//!   commit: [`ChangeBatch::end_position`] and [`ChangeBatch::complete_transactions`] leave
//!   a continuing last transaction out, so a sink that checkpoints by them never claims a
//!   partial transaction.
//!
//! # Reuse
//! [`ChangeBatch::clear`] keeps every buffer; sections are kept per schema version and
//! reused when that table appears again, so a steady stream allocates nothing per row.
//! Values are written with [`TableSection::set`] and read back as borrowed
//! [`ValueRef`]s.
//!
//! # Invariants
//! Every constructor checks them: [`ChangeBatch::from_parts`] is how decoders build a batch
//! from untrusted bytes, and it rejects any inconsistency with a [`BatchError`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::position::{Gtid, GtidMismatch, SourcePosition};
use crate::schema::{SchemaVersion, TableSchema, ValueKind};
use crate::value::{Date, DateTime, PackError, Time, Timestamp, ValueRef};

/// What a row change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    /// A new row: one image, the row after.
    Insert = 0,
    /// A changed row: two images, before (identifies the row) then after.
    Update = 1,
    /// A removed row: one image, the row before (identifies the row).
    Delete = 2,
}

impl Op {
    /// Images a change of this kind carries.
    pub fn images(self) -> u32 {
        match self {
            Op::Update => 2,
            Op::Insert | Op::Delete => 1,
        }
    }

    /// From the wire code (the discriminant).
    pub fn from_code(code: u8) -> Option<Op> {
        match code {
            0 => Some(Op::Insert),
            1 => Some(Op::Update),
            2 => Some(Op::Delete),
            _ => None,
        }
    }

    /// `insert`, `update` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Which images a batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageMode {
    /// What an exact replica needs: inserts full, updates key + changed columns, deletes key.
    #[default]
    Replica,
    /// Before and after images as the source wrote them.
    Full,
}

/// Why a batch could not be built or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A change was added outside a transaction, or a transaction began inside another.
    #[error("transaction state: {0}")]
    Transaction(&'static str),
    /// A change got the wrong number of images, or a value was set with no image open.
    #[error("`{table}`: {reason}")]
    Images {
        /// `db.table`.
        table: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A value's variant does not match the column's kind.
    #[error("`{table}` column {column}: a {got} value in a {want:?} column")]
    TypeMismatch {
        /// `db.table`.
        table: String,
        /// 1-based column.
        column: usize,
        /// The value's variant.
        got: &'static str,
        /// The column's kind.
        want: ValueKind,
    },
    /// A column index beyond the table's columns.
    #[error("`{table}`: no column {column}")]
    NoColumn {
        /// `db.table`.
        table: String,
        /// 1-based column.
        column: usize,
    },
    /// The same column was set twice in one image.
    #[error("`{table}` column {column} set twice in one image")]
    SetTwice {
        /// `db.table`.
        table: String,
        /// 1-based column.
        column: usize,
    },
    /// A temporal value cannot be packed.
    #[error("`{table}` column {column}: {error}")]
    Pack {
        /// `db.table`.
        table: String,
        /// 1-based column.
        column: usize,
        /// Which field.
        error: PackError,
    },
    /// A column's bytes passed 4 GiB: the batch should have been cut earlier.
    #[error("`{table}` column {column}: more than 4 GiB of values in one batch")]
    TooLarge {
        /// `db.table`.
        table: String,
        /// 1-based column.
        column: usize,
    },
    /// GTIDs of both flavors in one stream.
    #[error(transparent)]
    Gtid(#[from] GtidMismatch),
    /// Parts handed to a `from_parts` constructor are inconsistent.
    #[error("inconsistent batch: {0}")]
    Inconsistent(String),
}

/// A growable bit vector (bit `i` is bit `i % 64` of word `i / 64`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    /// From words and a length; bits at `len` and beyond must be zero.
    pub fn from_words(words: Vec<u64>, len: usize) -> Result<Bitmap, BatchError> {
        if words.len() != len.div_ceil(64) {
            return Err(BatchError::Inconsistent(format!(
                "bitmap of {len} bits in {} words",
                words.len()
            )));
        }
        if !len.is_multiple_of(64) && words.last().is_some_and(|w| w >> (len % 64) != 0) {
            return Err(BatchError::Inconsistent(
                "bitmap bits set past its end".into(),
            ));
        }
        Ok(Bitmap { words, len })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The words; bits past `len` are zero.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bit `i` (false past the end).
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Appends a bit.
    #[inline]
    pub fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        if bit {
            self.words[self.len / 64] |= 1 << (self.len % 64);
        }
        self.len += 1;
    }

    /// Sets bit `i` (which must exist).
    #[inline]
    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Keeps the first `len` bits.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.words.truncate(len.div_ceil(64));
        if !len.is_multiple_of(64) {
            if let Some(w) = self.words.last_mut() {
                *w &= (1u64 << (len % 64)) - 1;
            }
        }
        self.len = len;
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        self.words.clear();
        self.len = 0;
    }

    /// Bits set.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Gives the words back for reuse.
    pub fn into_words(self) -> Vec<u64> {
        self.words
    }
}

/// One column's values over all images of a section.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    kind: ValueKind,
    /// Fixed-width kinds: one slot per image. Empty for variable-width kinds.
    fixed: Vec<u64>,
    /// Variable-width kinds: `images + 1` offsets into `bytes`. Empty for fixed kinds.
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    present: Bitmap,
    null: Bitmap,
}

/// The buffers of a [`Column`], to encode it or rebuild one with [`Column::from_parts`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnParts {
    /// Fixed-width slots (fixed kinds).
    pub fixed: Vec<u64>,
    /// Byte offsets, `images + 1` of them starting at 0 (variable kinds).
    pub offsets: Vec<u32>,
    /// Variable-width bytes.
    pub bytes: Vec<u8>,
    /// Present bits, one per image.
    pub present: Bitmap,
    /// Null bits, one per image; only present slots may be null.
    pub null: Bitmap,
}

impl Column {
    fn new(kind: ValueKind) -> Column {
        Column {
            kind,
            fixed: Vec::new(),
            offsets: if kind.is_var() { vec![0] } else { Vec::new() },
            bytes: Vec::new(),
            present: Bitmap::default(),
            null: Bitmap::default(),
        }
    }

    /// Rebuilds a column of `images` slots from its buffers, checking every invariant:
    /// buffer lengths, monotonic offsets, absent and NULL slots empty.
    pub fn from_parts(
        kind: ValueKind,
        images: usize,
        p: ColumnParts,
    ) -> Result<Column, BatchError> {
        let bad = |m: String| Err(BatchError::Inconsistent(m));
        if p.present.len() != images || p.null.len() != images {
            return bad(format!(
                "column bitmaps of {} bits for {images} images",
                p.present.len()
            ));
        }
        for (n, pr) in p.null.words().iter().zip(p.present.words()) {
            if n & !pr != 0 {
                return bad("a NULL slot that is not present".into());
            }
        }
        if kind.is_var() {
            if !p.fixed.is_empty() || p.offsets.len() != images + 1 || p.offsets[0] != 0 {
                return bad("variable-width column buffers of the wrong size".into());
            }
            if p.offsets.windows(2).any(|w| w[0] > w[1])
                || p.offsets[images] as usize != p.bytes.len()
            {
                return bad("column offsets out of order or off the end".into());
            }
            for i in 0..images {
                let empty = p.offsets[i] == p.offsets[i + 1];
                if !empty && (!p.present.get(i) || p.null.get(i)) {
                    return bad("bytes in an absent or NULL slot".into());
                }
            }
        } else {
            if p.fixed.len() != images || !p.offsets.is_empty() || !p.bytes.is_empty() {
                return bad("fixed-width column buffers of the wrong size".into());
            }
            for (i, &v) in p.fixed.iter().enumerate() {
                if v != 0 && (!p.present.get(i) || p.null.get(i)) {
                    return bad("a value in an absent or NULL slot".into());
                }
            }
        }
        Ok(Column {
            kind,
            fixed: p.fixed,
            offsets: p.offsets,
            bytes: p.bytes,
            present: p.present,
            null: p.null,
        })
    }

    /// Takes the buffers back (for reuse by a decoder).
    pub fn into_parts(self) -> ColumnParts {
        ColumnParts {
            fixed: self.fixed,
            offsets: self.offsets,
            bytes: self.bytes,
            present: self.present,
            null: self.null,
        }
    }

    /// The kind of value the column holds.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// Fixed-width slots, one per image (empty for variable-width kinds).
    pub fn fixed(&self) -> &[u64] {
        &self.fixed
    }

    /// Offsets into [`Column::bytes`], `images + 1` of them (empty for fixed kinds).
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// All variable-width values, concatenated.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Present bits.
    pub fn present(&self) -> &Bitmap {
        &self.present
    }

    /// Null bits.
    pub fn nulls(&self) -> &Bitmap {
        &self.null
    }

    /// The bytes of slot `i` (variable kinds; empty otherwise).
    #[inline]
    pub fn var(&self, i: usize) -> &[u8] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether slot `i` of this column holds the same thing (absent, NULL or value) as slot
    /// `j` of `other`, bit for bit.
    #[inline]
    pub fn same(&self, i: usize, other: &Column, j: usize) -> bool {
        let (p, q) = (self.present.get(i), other.present.get(j));
        if p != q {
            return false;
        }
        if !p {
            return true;
        }
        let (n, m) = (self.null.get(i), other.null.get(j));
        if n || m {
            return n == m;
        }
        if self.kind.is_var() {
            self.var(i) == other.var(j)
        } else {
            self.fixed[i] == other.fixed[j]
        }
    }

    /// The value of slot `i`: `None` when absent from its image.
    #[inline]
    pub fn get(&self, i: usize) -> Option<ValueRef<'_>> {
        if !self.present.get(i) {
            return None;
        }
        if self.null.get(i) {
            return Some(ValueRef::Null);
        }
        let f = || self.fixed.get(i).copied().unwrap_or(0);
        Some(match self.kind {
            ValueKind::Int => ValueRef::Int(f() as i64),
            ValueKind::UInt => ValueRef::UInt(f()),
            ValueKind::Float => ValueRef::Float(f32::from_bits(f() as u32)),
            ValueKind::Double => ValueRef::Double(f64::from_bits(f())),
            ValueKind::Decimal => ValueRef::Decimal(self.var(i)),
            ValueKind::Year => ValueRef::Year(f() as u16),
            ValueKind::Date => ValueRef::Date(Date::unpack(f())),
            ValueKind::Time => ValueRef::Time(Time::unpack(f())),
            ValueKind::DateTime => ValueRef::DateTime(DateTime::unpack(f())),
            ValueKind::Timestamp => ValueRef::Timestamp(Timestamp::unpack(f())),
            ValueKind::Text => ValueRef::Text(self.var(i)),
            ValueKind::Bytes => ValueRef::Bytes(self.var(i)),
            ValueKind::Enum => ValueRef::Enum(f() as u16),
            ValueKind::Set => ValueRef::Set(f()),
            ValueKind::Bit => ValueRef::Bit(f()),
            ValueKind::Json => ValueRef::Json(self.var(i)),
            ValueKind::Geometry => ValueRef::Geometry(self.var(i)),
            ValueKind::Null => ValueRef::Null,
        })
    }

    fn len(&self) -> usize {
        self.present.len()
    }

    fn push_absent(&mut self) {
        self.present.push(false);
        self.null.push(false);
        if self.kind.is_var() {
            self.offsets.push(self.bytes.len() as u32);
        } else {
            self.fixed.push(0);
        }
    }

    /// Copies slot `i` of `src` (same kind) as a new last slot.
    fn push_copy(&mut self, src: &Column, i: usize) -> Result<(), ()> {
        if self.kind.is_var() {
            let v = src.var(i);
            let end = u32::try_from(self.bytes.len() + v.len()).map_err(|_| ())?;
            self.bytes.extend_from_slice(v);
            self.offsets.push(end);
        } else {
            self.fixed.push(src.fixed.get(i).copied().unwrap_or(0));
        }
        self.present.push(src.present.get(i));
        self.null.push(src.null.get(i));
        Ok(())
    }

    fn truncate(&mut self, images: usize) {
        self.present.truncate(images);
        self.null.truncate(images);
        if self.kind.is_var() {
            self.offsets.truncate(images + 1);
            let end = self.offsets.last().copied().unwrap_or(0) as usize;
            self.bytes.truncate(end);
        } else {
            self.fixed.truncate(images);
        }
    }

    fn clear(&mut self) {
        self.truncate(0);
    }

    /// Sets the last slot, which must be absent so far.
    #[inline]
    fn set_last(&mut self, v: &ValueRef<'_>) -> Result<(), SetError> {
        let i = self.len().checked_sub(1).ok_or(SetError::NoImage)?;
        if self.present.get(i) {
            return Err(SetError::Twice);
        }
        let fixed = match (self.kind, v) {
            (_, ValueRef::Null) => {
                self.present.set(i);
                self.null.set(i);
                return Ok(());
            }
            (ValueKind::Int, ValueRef::Int(x)) => *x as u64,
            (ValueKind::UInt, ValueRef::UInt(x)) => *x,
            (ValueKind::Float, ValueRef::Float(x)) => u64::from(x.to_bits()),
            (ValueKind::Double, ValueRef::Double(x)) => x.to_bits(),
            (ValueKind::Year, ValueRef::Year(x)) => u64::from(*x),
            (ValueKind::Date, ValueRef::Date(x)) => x.pack(),
            (ValueKind::Time, ValueRef::Time(x)) => x.pack().map_err(SetError::Pack)?,
            (ValueKind::DateTime, ValueRef::DateTime(x)) => x.pack().map_err(SetError::Pack)?,
            (ValueKind::Timestamp, ValueRef::Timestamp(x)) => x.pack().map_err(SetError::Pack)?,
            (ValueKind::Enum, ValueRef::Enum(x)) => u64::from(*x),
            (ValueKind::Set, ValueRef::Set(x)) => *x,
            (ValueKind::Bit, ValueRef::Bit(x)) => *x,
            (ValueKind::Decimal, ValueRef::Decimal(b))
            | (ValueKind::Text, ValueRef::Text(b))
            | (ValueKind::Bytes, ValueRef::Bytes(b))
            | (ValueKind::Json, ValueRef::Json(b))
            | (ValueKind::Geometry, ValueRef::Geometry(b)) => {
                self.bytes.extend_from_slice(b);
                return self.end_var(i);
            }
            _ => return Err(SetError::Type(v.kind_name())),
        };
        self.present.set(i);
        self.fixed[i] = fixed;
        Ok(())
    }

    /// Appends bytes to the last (variable-width) slot through `write`, for values whose
    /// text is produced in place (decimals, JSON) without a temporary buffer.
    fn set_last_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), ()>,
    ) -> Result<(), SetError> {
        let i = self.len().checked_sub(1).ok_or(SetError::NoImage)?;
        if self.present.get(i) {
            return Err(SetError::Twice);
        }
        if !self.kind.is_var() {
            return Err(SetError::Type("text"));
        }
        let start = self.bytes.len();
        if write(&mut self.bytes).is_err() {
            self.bytes.truncate(start);
            return Err(SetError::Written);
        }
        self.end_var(i)
    }

    fn end_var(&mut self, i: usize) -> Result<(), SetError> {
        let Ok(end) = u32::try_from(self.bytes.len()) else {
            self.bytes.truncate(self.offsets[i] as usize);
            return Err(SetError::TooLarge);
        };
        self.present.set(i);
        self.offsets[i + 1] = end;
        Ok(())
    }
}

enum SetError {
    NoImage,
    Twice,
    Type(&'static str),
    Pack(PackError),
    TooLarge,
    Written,
}

/// The changes of one table definition within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSection {
    schema: Arc<TableSchema>,
    ops: Vec<Op>,
    /// First image of each change.
    image_start: Vec<u32>,
    columns: Vec<Column>,
}

/// One row change, read back from a section.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// What the change does.
    pub op: Op,
    /// Before image (update, delete).
    pub before: Option<Image<'a>>,
    /// After image (insert, update).
    pub after: Option<Image<'a>>,
}

/// One row image: a slot index into a section's columns.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    section: &'a TableSection,
    index: usize,
}

impl<'a> Image<'a> {
    /// Column `c` (0-based): `None` when this image does not carry it.
    #[inline]
    pub fn get(&self, c: usize) -> Option<ValueRef<'a>> {
        self.section.columns.get(c)?.get(self.index)
    }

    /// The carried columns in order, as `(0-based column, value)`.
    pub fn values(&self) -> impl Iterator<Item = (usize, ValueRef<'a>)> + 'a {
        let (section, index) = (self.section, self.index);
        section
            .columns
            .iter()
            .enumerate()
            .filter_map(move |(c, col)| col.get(index).map(|v| (c, v)))
    }

    /// Slot index within the section's columns.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl TableSection {
    fn new(schema: Arc<TableSchema>) -> TableSection {
        let columns = schema
            .columns
            .iter()
            .map(|c| Column::new(c.value_kind()))
            .collect();
        TableSection {
            schema,
            ops: Vec::new(),
            image_start: Vec::new(),
            columns,
        }
    }

    /// Rebuilds a section from its ops and columns, checking that the columns match the
    /// schema and hold exactly the images the ops call for.
    pub fn from_parts(
        schema: Arc<TableSchema>,
        ops: Vec<Op>,
        columns: Vec<Column>,
    ) -> Result<TableSection, BatchError> {
        let name = schema.qualified_name();
        if columns.len() != schema.columns.len() {
            return Err(BatchError::Inconsistent(format!(
                "`{name}`: {} columns, schema has {}",
                columns.len(),
                schema.columns.len()
            )));
        }
        let mut image_start = Vec::with_capacity(ops.len());
        let mut images = 0u32;
        for op in &ops {
            image_start.push(images);
            images += op.images();
        }
        for (i, (c, s)) in columns.iter().zip(&schema.columns).enumerate() {
            if c.kind != s.value_kind() || c.len() != images as usize {
                return Err(BatchError::Inconsistent(format!(
                    "`{name}` column {}: kind or image count differs from the ops",
                    i + 1
                )));
            }
        }
        Ok(TableSection {
            schema,
            ops,
            image_start,
            columns,
        })
    }

    /// Takes the buffers back (for reuse by a decoder).
    pub fn into_parts(self) -> (Arc<TableSchema>, Vec<Op>, Vec<Column>) {
        (self.schema, self.ops, self.columns)
    }

    /// The table definition.
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the section holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Ops of all changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of images over all changes.
    pub fn images(&self) -> usize {
        self.columns.first().map_or_else(
            || self.ops.iter().map(|o| o.images() as usize).sum(),
            Column::len,
        )
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Image `index` (0-based over the section).
    pub fn image(&self, index: usize) -> Image<'_> {
        Image {
            section: self,
            index,
        }
    }

    /// Change `i` with its images.
    pub fn change(&self, i: usize) -> Change<'_> {
        let op = self.ops[i];
        let first = self.image_start[i] as usize;
        let img = |k| Some(self.image(first + k));
        match op {
            Op::Insert => Change {
                op,
                before: None,
                after: img(0),
            },
            Op::Delete => Change {
                op,
                before: img(0),
                after: None,
            },
            Op::Update => Change {
                op,
                before: img(0),
                after: img(1),
            },
        }
    }

    /// All changes in order.
    pub fn changes(&self) -> impl Iterator<Item = Change<'_>> + '_ {
        (0..self.ops.len()).map(|i| self.change(i))
    }

    /// Starts a new image of the last change; every column starts absent.
    pub fn push_image(&mut self) -> Result<(), BatchError> {
        let Some(&op) = self.ops.last() else {
            return Err(self.images_error("image pushed before any change"));
        };
        let have = self.images() as u32 - self.image_start[self.ops.len() - 1];
        if have >= op.images() {
            return Err(self.images_error("more images than the change's op allows"));
        }
        for c in &mut self.columns {
            c.push_absent();
        }
        Ok(())
    }

    /// Sets column `c` (0-based) of the current image. Each column may be set once.
    #[inline]
    pub fn set(&mut self, c: usize, v: ValueRef<'_>) -> Result<(), BatchError> {
        let r = match self.columns.get_mut(c) {
            Some(col) => col.set_last(&v),
            None => return Err(self.no_column(c)),
        };
        r.map_err(|e| self.set_error(c, e))
    }

    /// Sets variable-width column `c` of the current image to the bytes `write` appends
    /// (decimal or JSON text produced in place). A failing `write` leaves it absent.
    pub fn set_with(
        &mut self,
        c: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), ()>,
    ) -> Result<(), BatchError> {
        let r = match self.columns.get_mut(c) {
            Some(col) => col.set_last_with(write),
            None => return Err(self.no_column(c)),
        };
        r.map_err(|e| self.set_error(c, e))
    }

    /// Appends an image of the last change assembled from images of `src` (a section of
    /// the same schema): column `c` is copied from image `pick(c)` of `src`, or left absent
    /// when `pick` returns `None` or that image does not carry it.
    pub fn push_image_from(
        &mut self,
        src: &TableSection,
        mut pick: impl FnMut(usize) -> Option<usize>,
    ) -> Result<(), BatchError> {
        if src.columns.len() != self.columns.len() {
            return Err(self.images_error("image copied from a section of another table"));
        }
        self.push_image()?;
        for (c, (dst, from)) in self.columns.iter_mut().zip(&src.columns).enumerate() {
            let Some(index) = pick(c) else { continue };
            if index >= from.len() || !from.present.get(index) {
                continue;
            }
            if dst.kind != from.kind {
                return Err(BatchError::TypeMismatch {
                    table: self.schema.qualified_name(),
                    column: c + 1,
                    got: "copied",
                    want: dst.kind,
                });
            }
            dst.truncate(dst.len() - 1);
            if dst.push_copy(from, index).is_err() {
                dst.push_absent();
                let table = self.schema.qualified_name();
                return Err(BatchError::TooLarge {
                    table,
                    column: c + 1,
                });
            }
        }
        Ok(())
    }

    fn no_column(&self, c: usize) -> BatchError {
        BatchError::NoColumn {
            table: self.schema.qualified_name(),
            column: c + 1,
        }
    }

    fn set_error(&self, c: usize, e: SetError) -> BatchError {
        let table = self.schema.qualified_name();
        let column = c + 1;
        match e {
            SetError::NoImage => self.images_error("value set before any image"),
            SetError::Twice => BatchError::SetTwice { table, column },
            SetError::Type(got) => BatchError::TypeMismatch {
                table,
                column,
                got,
                want: self.columns[c].kind,
            },
            SetError::Pack(error) => BatchError::Pack {
                table,
                column,
                error,
            },
            SetError::TooLarge => BatchError::TooLarge { table, column },
            SetError::Written => BatchError::Images {
                table,
                reason: "value writer failed",
            },
        }
    }

    fn images_error(&self, reason: &'static str) -> BatchError {
        BatchError::Images {
            table: self.schema.qualified_name(),
            reason,
        }
    }

    fn push_change(&mut self, op: Op) -> Result<(), BatchError> {
        self.check_complete()?;
        self.image_start.push(self.images() as u32);
        self.ops.push(op);
        Ok(())
    }

    /// Whether the last change has all its images.
    fn check_complete(&self) -> Result<(), BatchError> {
        if let Some(&op) = self.ops.last() {
            let have = self.images() as u32 - self.image_start[self.ops.len() - 1];
            if have != op.images() {
                return Err(self.images_error("a change is missing an image"));
            }
        }
        Ok(())
    }

    /// Drops the last change (and its images).
    pub fn pop_change(&mut self) {
        if let Some(start) = self.image_start.pop() {
            self.ops.pop();
            for c in &mut self.columns {
                c.truncate(start as usize);
            }
        }
    }

    fn truncate(&mut self, changes: usize) {
        if changes >= self.ops.len() {
            return;
        }
        let images = self.image_start[changes] as usize;
        self.ops.truncate(changes);
        self.image_start.truncate(changes);
        for c in &mut self.columns {
            c.truncate(images);
        }
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.image_start.clear();
        for c in &mut self.columns {
            c.clear();
        }
    }
}

/// Consecutive changes of one section, in source order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Section index.
    pub section: u32,
    /// First change within the section.
    pub first: u32,
    /// Number of changes.
    pub len: u32,
}

/// One source transaction in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Its GTID, if the source has GTIDs.
    pub gtid: Option<Gtid>,
    /// Commit timestamp from the binlog header, seconds since the epoch.
    pub timestamp: u32,
    /// Index into [`ChangeBatch::files`] of the binlog file it ends in.
    pub file: u32,
    /// Offset just past its commit event in that file: where a reader resumes after it.
    pub end_pos: u64,
    /// Its runs, `start..end` in [`ChangeBatch::runs`] (empty in a compacted batch).
    pub runs: (u32, u32),
}

/// A DDL statement as the source ran it, with the session context that decides what it
/// means (see [`ChangeBatch::ddl`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ddl {
    /// The default database of the source session (`USE`), if it had one.
    pub db: Option<String>,
    /// The statement text, in the source session's `character_set_client`.
    pub sql: Vec<u8>,
    /// `character_set_client`, `collation_connection` and `collation_server` of the source
    /// session, as collation ids, when the binlog said.
    pub charset: Option<(u16, u16, u16)>,
    /// The source session's `sql_mode` bits, when the binlog said.
    pub sql_mode: Option<u64>,
}

impl Ddl {
    /// Makes `self` a copy of `other`, reusing its buffers.
    pub fn copy_from(&mut self, other: &Ddl) {
        self.db.clone_from(&other.db);
        self.sql.clone_from(&other.sql);
        self.charset = other.charset;
        self.sql_mode = other.sql_mode;
    }
}

/// Identifies a section within its batch (returned by [`ChangeBatch::section_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionId(pub u32);

/// Whole transactions of row changes in columnar form; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    mode: ImageMode,
    compacted: bool,
    /// Rows of the initial snapshot (see [`ChangeBatch::is_snapshot`]).
    snapshot: bool,
    /// The first transaction began in an earlier batch (see [`ChangeBatch::continued`]).
    continued: bool,
    /// The last transaction continues in the next batch (see [`ChangeBatch::continues`]).
    continues: bool,
    start: SourcePosition,
    sections: Vec<TableSection>,
    runs: Vec<Run>,
    transactions: Vec<Transaction>,
    files: Vec<String>,
    ddl: Option<Ddl>,
    /// The last DDL's buffers, reused by the next (no allocation per DDL batch).
    spare_ddl: Option<Ddl>,
    by_version: HashMap<SchemaVersion, u32>,
    /// Begun but not committed: (gtid, timestamp, first run).
    open: Option<(Option<Gtid>, u32, u32)>,
    spare: Vec<TableSection>,
}

impl PartialEq for ChangeBatch {
    /// Content equality: reuse pools and lookup maps do not count.
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.compacted == other.compacted
            && self.snapshot == other.snapshot
            && self.continued == other.continued
            && self.continues == other.continues
            && self.start == other.start
            && self.sections == other.sections
            && self.runs == other.runs
            && self.transactions == other.transactions
            && self.files == other.files
            && self.ddl == other.ddl
            && self.open == other.open
    }
}

/// The parts of a [`ChangeBatch`], for decoders ([`ChangeBatch::from_parts`]).
#[derive(Debug, Clone, Default)]
pub struct BatchParts {
    /// Which images the batch carries.
    pub mode: ImageMode,
    /// Whether it holds net changes (see the module documentation).
    pub compacted: bool,
    /// Position before its first transaction.
    pub start: SourcePosition,
    /// Sections.
    pub sections: Vec<TableSection>,
    /// Runs in source order.
    pub runs: Vec<Run>,
    /// Transactions.
    pub transactions: Vec<Transaction>,
    /// Binlog file names the transactions refer to.
    pub files: Vec<String>,
    /// The DDL statement of the last transaction, if the batch ends with one.
    pub ddl: Option<Ddl>,
}

impl ChangeBatch {
    /// An empty batch carrying images per `mode`.
    pub fn new(mode: ImageMode) -> Self {
        ChangeBatch {
            mode,
            ..Default::default()
        }
    }

    /// Builds a batch from decoded parts, checking every cross-reference: runs within their
    /// sections, covering every change exactly once in order, transactions' runs
    /// contiguous and in order (empty when compacted), file indexes in range, no two
    /// sections for one schema version.
    pub fn from_parts(p: BatchParts) -> Result<ChangeBatch, BatchError> {
        let bad = |m: String| Err(BatchError::Inconsistent(m));
        let mut by_version = HashMap::with_capacity(p.sections.len());
        for (i, s) in p.sections.iter().enumerate() {
            if by_version.insert(s.schema.version, i as u32).is_some() {
                return bad(format!(
                    "two sections for schema version {}",
                    s.schema.version.0
                ));
            }
        }
        let mut next = vec![0u32; p.sections.len()];
        for r in &p.runs {
            let Some(n) = next.get_mut(r.section as usize) else {
                return bad(format!(
                    "run of section {}, which does not exist",
                    r.section
                ));
            };
            if r.first != *n || r.len == 0 {
                return bad("runs out of order or empty".into());
            }
            *n = r.first.saturating_add(r.len);
        }
        for (s, n) in p.sections.iter().zip(&next) {
            if *n as usize != s.len() {
                return bad(format!(
                    "runs cover {n} of the {} changes of `{}`",
                    s.len(),
                    s.schema.qualified_name()
                ));
            }
        }
        let mut run_at = 0u32;
        for t in &p.transactions {
            if t.file as usize >= p.files.len() {
                return bad(format!(
                    "transaction in file {}, which is not listed",
                    t.file
                ));
            }
            if p.compacted {
                if t.runs != (0, 0) {
                    return bad("a compacted batch's transactions own runs".into());
                }
            } else {
                if t.runs.0 != run_at || t.runs.1 < t.runs.0 {
                    return bad("transaction runs out of order".into());
                }
                run_at = t.runs.1;
            }
        }
        if !p.compacted && run_at as usize != p.runs.len() {
            return bad("runs outside any transaction".into());
        }
        if p.ddl.is_some() {
            match p.transactions.last() {
                None => return bad("a DDL statement without its transaction".into()),
                Some(t) if t.runs.0 != t.runs.1 => {
                    return bad("the DDL transaction owns row changes".into())
                }
                Some(_) => {}
            }
        }
        Ok(ChangeBatch {
            mode: p.mode,
            compacted: p.compacted,
            snapshot: false,
            continued: false,
            continues: false,
            start: p.start,
            sections: p.sections,
            runs: p.runs,
            transactions: p.transactions,
            files: p.files,
            ddl: p.ddl,
            spare_ddl: None,
            by_version,
            open: None,
            spare: Vec::new(),
        })
    }

    /// Takes the parts back (for reuse by a decoder or to move sections).
    pub fn into_parts(self) -> BatchParts {
        BatchParts {
            mode: self.mode,
            compacted: self.compacted,
            start: self.start,
            sections: self.sections,
            runs: self.runs,
            transactions: self.transactions,
            files: self.files,
            ddl: self.ddl,
        }
    }

    /// Empties the batch, keeping every buffer for the next one. The start position becomes
    /// the old end position.
    pub fn clear(&mut self) {
        let end = self.end_position().unwrap_or_else(|_| self.start.clone());
        self.start = end;
        for mut s in self.sections.drain(..) {
            s.clear();
            self.spare.push(s);
        }
        // A table not seen for a while is dropped from the pool, so the pool stays bounded.
        if self.spare.len() > 256 {
            self.spare.drain(..self.spare.len() - 256);
        }
        self.runs.clear();
        self.transactions.clear();
        self.files.clear();
        if let Some(d) = self.ddl.take() {
            self.spare_ddl = Some(d);
        }
        self.by_version.clear();
        self.open = None;
        self.compacted = false;
        self.snapshot = false;
        self.continued = false;
        self.continues = false;
    }

    /// Which images the batch carries.
    pub fn mode(&self) -> ImageMode {
        self.mode
    }

    /// Changes the image mode (for a fresh or cleared batch).
    pub fn set_mode(&mut self, mode: ImageMode) {
        self.mode = mode;
    }

    /// Whether the batch holds net changes, to apply as one atomic unit.
    pub fn is_compacted(&self) -> bool {
        self.compacted
    }

    /// Marks the batch compacted: transactions own no runs and the whole batch is one
    /// atomic unit. Only for an empty batch.
    pub fn set_compacted(&mut self, on: bool) -> Result<(), BatchError> {
        if !self.runs.is_empty() || !self.transactions.is_empty() || self.open.is_some() {
            return Err(BatchError::Transaction(
                "compaction set on a non-empty batch",
            ));
        }
        self.compacted = on;
        Ok(())
    }

    /// Whether the batch holds rows of the initial snapshot: inserts only, each of which
    /// may already be on the target (a crash re-sends the chunk in flight), so a sink
    /// applies them as upserts (`REPLACE`) rather than as conflicts.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Marks the batch as snapshot rows (see [`ChangeBatch::is_snapshot`]). Set it on an
    /// empty batch; [`ChangeBatch::clear`] resets it.
    pub fn set_snapshot(&mut self, on: bool) {
        self.snapshot = on;
    }

    /// Whether the first transaction began in an earlier batch: its changes here follow
    /// that batch's part (see the module documentation).
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// Whether the last transaction continues in the next batch: it is a part, not a
    /// commit (see the module documentation).
    pub fn continues(&self) -> bool {
        self.continues
    }

    /// Marks the batch's transaction parts (decoders; see [`ChangeBatch::continued`] and
    /// [`ChangeBatch::continues`]). A continuing batch must end with a transaction and
    /// hold no DDL; neither kind of part is a snapshot batch or compacted.
    pub fn set_parts(&mut self, continued: bool, continues: bool) -> Result<(), BatchError> {
        if (continued || continues)
            && (self.transactions.is_empty() || self.snapshot || self.compacted)
        {
            return Err(BatchError::Inconsistent(
                "a transaction part in an empty, snapshot or compacted batch".into(),
            ));
        }
        if continues && self.ddl.is_some() {
            return Err(BatchError::Inconsistent(
                "a DDL batch whose last transaction continues".into(),
            ));
        }
        self.continued = continued;
        self.continues = continues;
        Ok(())
    }

    /// The transactions that end in this batch: all but a continuing last one.
    pub fn complete_transactions(&self) -> &[Transaction] {
        let n = self.transactions.len() - usize::from(self.continues);
        &self.transactions[..n]
    }

    /// Ends the batch inside the open transaction: its changes so far become the batch's
    /// last transaction, a part marked [`ChangeBatch::continues`] (`file` and `pos` say
    /// how far it got, for messages only). After [`ChangeBatch::clear`], call
    /// [`ChangeBatch::continue_transaction`] with the part's GTID and timestamp to carry on.
    pub fn cut_transaction(&mut self, file: &str, pos: u64) -> Result<(), BatchError> {
        if self.compacted || self.snapshot {
            return Err(BatchError::Transaction(
                "a transaction cut in a compacted or snapshot batch",
            ));
        }
        self.commit_transaction(file, pos)?;
        self.continues = true;
        Ok(())
    }

    /// Opens, in an empty batch, the rest of a transaction cut at the end of the last batch
    /// ([`ChangeBatch::cut_transaction`]).
    pub fn continue_transaction(
        &mut self,
        gtid: Option<Gtid>,
        timestamp: u32,
    ) -> Result<(), BatchError> {
        if !self.transactions.is_empty() || self.open.is_some() {
            return Err(BatchError::Transaction(
                "a transaction continued in a batch that is not empty",
            ));
        }
        self.begin_transaction(gtid, timestamp)?;
        self.continued = true;
        Ok(())
    }

    /// Position before the first transaction.
    pub fn start(&self) -> &SourcePosition {
        &self.start
    }

    /// Sets the position before the first transaction.
    pub fn set_start(&mut self, start: SourcePosition) {
        self.start = start;
    }

    /// Position after the last committed transaction (a continuing part is no commit).
    pub fn end_position(&self) -> Result<SourcePosition, BatchError> {
        let mut p = self.start.clone();
        for t in self.complete_transactions() {
            self.commit_position(&mut p, t)?;
        }
        Ok(p)
    }

    /// Advances `p` past transaction `t` of this batch.
    pub fn commit_position(
        &self,
        p: &mut SourcePosition,
        t: &Transaction,
    ) -> Result<(), BatchError> {
        let file = self.files.get(t.file as usize).map_or("", String::as_str);
        p.commit(file, t.end_pos, t.gtid.as_ref())?;
        Ok(())
    }

    /// Sections, including any left empty.
    pub fn sections(&self) -> &[TableSection] {
        &self.sections
    }

    /// Section `id`.
    pub fn section(&self, id: SectionId) -> &TableSection {
        &self.sections[id.0 as usize]
    }

    /// Section `id`, to push images and values of its last change.
    pub fn section_mut(&mut self, id: SectionId) -> &mut TableSection {
        &mut self.sections[id.0 as usize]
    }

    /// Runs in source order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Committed transactions in order.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    /// Binlog file names that transactions refer to.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Total changes over all sections.
    pub fn change_count(&self) -> usize {
        self.sections.iter().map(TableSection::len).sum()
    }

    /// Whether no transaction is open or committed.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty() && self.open.is_none()
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// The section for `schema` (by version), added if new.
    pub fn section_for(&mut self, schema: &Arc<TableSchema>) -> SectionId {
        if let Some(&i) = self.by_version.get(&schema.version) {
            return SectionId(i);
        }
        let i = self.sections.len() as u32;
        let reuse = self
            .spare
            .iter()
            .position(|s| s.schema.version == schema.version && *s.schema == **schema);
        let section = match reuse {
            Some(k) => self.spare.swap_remove(k),
            None => TableSection::new(schema.clone()),
        };
        self.sections.push(section);
        self.by_version.insert(schema.version, i);
        SectionId(i)
    }

    /// Opens a transaction.
    pub fn begin_transaction(
        &mut self,
        gtid: Option<Gtid>,
        timestamp: u32,
    ) -> Result<(), BatchError> {
        if self.open.is_some() {
            return Err(BatchError::Transaction("begin inside an open transaction"));
        }
        if self.continues {
            return Err(BatchError::Transaction(
                "a transaction after a part that continues in the next batch",
            ));
        }
        if self.ddl.is_some() {
            return Err(BatchError::Transaction(
                "a transaction after the DDL that ends the batch",
            ));
        }
        self.open = Some((gtid, timestamp, self.runs.len() as u32));
        Ok(())
    }

    /// Appends a change of `op` to section `id` and returns the section, to push its
    /// images ([`TableSection::push_image`]) and values ([`TableSection::set`]). Needs an
    /// open transaction, except in a compacted batch.
    pub fn push_change(&mut self, id: SectionId, op: Op) -> Result<&mut TableSection, BatchError> {
        if self.open.is_none() && !self.compacted {
            return Err(BatchError::Transaction("change outside a transaction"));
        }
        if self.ddl.is_some() {
            return Err(BatchError::Transaction(
                "a change after the DDL that ends the batch",
            ));
        }
        let section = self
            .sections
            .get_mut(id.0 as usize)
            .ok_or(BatchError::Transaction("unknown section"))?;
        section.push_change(op)?;
        let first = section.len() as u32 - 1;
        let run_floor = self.open.map_or(0, |o| o.2) as usize;
        let in_txn = self.runs.len() > run_floor;
        match self.runs.last_mut() {
            Some(r) if in_txn && r.section == id.0 && r.first + r.len == first => r.len += 1,
            _ => self.runs.push(Run {
                section: id.0,
                first,
                len: 1,
            }),
        }
        Ok(section)
    }

    /// Drops the last change pushed (of section `id`), e.g. an update that turned out to
    /// change nothing. It must be the most recent change of the batch.
    pub fn pop_change(&mut self, id: SectionId) -> Result<(), BatchError> {
        let floor = self.open.map_or(0, |o| o.2) as usize;
        let owned = self.runs.len() > floor || self.compacted;
        let Some(r) = self.runs.last_mut() else {
            return Err(BatchError::Transaction("no change to drop"));
        };
        if r.section != id.0 || !owned {
            return Err(BatchError::Transaction(
                "dropped change is not the last one",
            ));
        }
        r.len -= 1;
        if r.len == 0 {
            self.runs.pop();
        }
        self.sections[id.0 as usize].pop_change();
        Ok(())
    }

    /// Commits the open transaction, which ends at `end_pos` of binlog `file`.
    pub fn commit_transaction(&mut self, file: &str, end_pos: u64) -> Result<(), BatchError> {
        let (gtid, timestamp, first_run) = self
            .open
            .ok_or(BatchError::Transaction("commit without a transaction"))?;
        for r in &self.runs[first_run as usize..] {
            self.sections[r.section as usize].check_complete()?;
        }
        let file = match self.files.last() {
            Some(f) if f == file => self.files.len() - 1,
            _ => {
                self.files.push(file.to_string());
                self.files.len() - 1
            }
        } as u32;
        let runs = if self.compacted {
            (0, 0)
        } else {
            (first_run, self.runs.len() as u32)
        };
        self.transactions.push(Transaction {
            gtid,
            timestamp,
            file,
            end_pos,
            runs,
        });
        self.open = None;
        Ok(())
    }

    /// Discards the open transaction's changes (a rollback, or a transaction a caller gave
    /// up on).
    pub fn abort_transaction(&mut self) {
        let Some((_, _, first_run)) = self.open.take() else {
            return;
        };
        for r in self.runs.drain(first_run as usize..).rev() {
            self.sections[r.section as usize].truncate(r.first as usize);
        }
    }

    /// The DDL statement that the batch's last transaction stands for, if any: a sink
    /// applies the other transactions, then this statement.
    pub fn ddl(&self) -> Option<&Ddl> {
        self.ddl.as_ref()
    }

    /// Ends the batch with a DDL transaction: a copy of `ddl` (into buffers kept from the
    /// last one), with its GTID and commit timestamp, ending at `end_pos` of binlog
    /// `file`. Nothing can be added after it.
    pub fn push_ddl(
        &mut self,
        gtid: Option<Gtid>,
        timestamp: u32,
        ddl: &Ddl,
        file: &str,
        end_pos: u64,
    ) -> Result<(), BatchError> {
        self.begin_transaction(gtid, timestamp)?;
        self.commit_transaction(file, end_pos)?;
        let mut d = self.spare_ddl.take().unwrap_or_default();
        d.copy_from(ddl);
        self.ddl = Some(d);
        Ok(())
    }

    /// The runs of transaction `t`.
    pub fn transaction_runs(&self, t: &Transaction) -> &[Run] {
        self.runs
            .get(t.runs.0 as usize..t.runs.1 as usize)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType};

    fn schema(version: u64) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            version: SchemaVersion(version),
            db: "d".into(),
            table: format!("t{version}"),
            columns: vec![
                ColumnSchema::new("id", ColumnType::Int { bytes: 8 }),
                ColumnSchema::new(
                    "s",
                    ColumnType::String {
                        max_bytes: 40,
                        binary: false,
                    },
                ),
                ColumnSchema::new("ts", ColumnType::Timestamp { fsp: 6 }),
            ],
            primary_key: vec![0],
        })
    }

    #[test]
    fn builds_reads_back_and_reuses() {
        let t1 = schema(1);
        let t2 = schema(2);
        let mut b = ChangeBatch::new(ImageMode::Full);
        for round in 0..2 {
            b.begin_transaction(Some("0-1-5".parse().unwrap()), 100)
                .unwrap();
            let s1 = b.section_for(&t1);
            let s2 = b.section_for(&t2);
            let sec = b.push_change(s1, Op::Insert).unwrap();
            sec.push_image().unwrap();
            sec.set(0, ValueRef::Int(-7)).unwrap();
            sec.set(1, ValueRef::Text(b"hello")).unwrap();
            sec.set(2, ValueRef::Null).unwrap();
            let sec = b.push_change(s2, Op::Update).unwrap();
            sec.push_image().unwrap();
            sec.set(0, ValueRef::Int(1)).unwrap();
            sec.push_image().unwrap();
            sec.set(1, ValueRef::Text(b"x")).unwrap();
            let ts = Timestamp {
                seconds: 1_700_000_000,
                micros: 5,
            };
            sec.set(2, ValueRef::Timestamp(ts)).unwrap();
            let sec = b.push_change(s1, Op::Delete).unwrap();
            sec.push_image().unwrap();
            sec.set(0, ValueRef::Int(-7)).unwrap();
            b.commit_transaction("binlog.000001", 500).unwrap();

            assert_eq!(b.runs().len(), 3, "round {round}");
            let s = &b.sections()[0];
            let c = s.change(0);
            assert_eq!(c.op, Op::Insert);
            let after = c.after.unwrap();
            assert_eq!(after.get(0), Some(ValueRef::Int(-7)));
            assert_eq!(after.get(1), Some(ValueRef::Text(b"hello")));
            assert_eq!(after.get(2), Some(ValueRef::Null));
            let u = b.sections()[1].change(0);
            assert_eq!(u.before.unwrap().get(1), None);
            assert_eq!(u.after.unwrap().get(0), None);
            assert_eq!(u.after.unwrap().get(2), Some(ValueRef::Timestamp(ts)));
            assert_eq!(u.after.unwrap().values().count(), 2);
            assert_eq!(
                b.end_position().unwrap().to_string(),
                "binlog.000001:500 gtid 0-1-5"
            );
            // Rebuilding from parts gives an equal batch.
            let again = ChangeBatch::from_parts(b.clone().into_parts()).unwrap();
            assert_eq!(again, b);
            b.clear();
            assert_eq!(b.start().to_string(), "binlog.000001:500 gtid 0-1-5");
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let t = schema(1);
        let mut b = ChangeBatch::new(ImageMode::Replica);
        let s = b.section_for(&t);
        assert!(b.push_change(s, Op::Insert).is_err());
        b.begin_transaction(None, 0).unwrap();
        let sec = b.push_change(s, Op::Update).unwrap();
        assert!(sec.set(0, ValueRef::Int(1)).is_err(), "no image yet");
        sec.push_image().unwrap();
        sec.set(0, ValueRef::Int(1)).unwrap();
        assert!(matches!(
            sec.set(0, ValueRef::Int(1)),
            Err(BatchError::SetTwice { .. })
        ));
        assert!(matches!(
            sec.set(1, ValueRef::Int(1)),
            Err(BatchError::TypeMismatch { .. })
        ));
        assert!(matches!(
            sec.set(9, ValueRef::Null),
            Err(BatchError::NoColumn { .. })
        ));
        assert!(
            b.commit_transaction("f", 1).is_err(),
            "update missing its after image"
        );
        b.abort_transaction();
        assert_eq!(b.change_count(), 0);
        assert!(b.runs().is_empty());
    }

    #[test]
    fn from_parts_rejects_inconsistent_parts() {
        let t = schema(1);
        let mut b = ChangeBatch::new(ImageMode::Replica);
        b.begin_transaction(None, 0).unwrap();
        let s = b.section_for(&t);
        let sec = b.push_change(s, Op::Insert).unwrap();
        sec.push_image().unwrap();
        b.commit_transaction("f", 9).unwrap();
        let good = b.into_parts();
        let mut p = good.clone();
        p.runs[0].len = 2;
        assert!(ChangeBatch::from_parts(p).is_err());
        let mut p = good.clone();
        p.transactions[0].file = 3;
        assert!(ChangeBatch::from_parts(p).is_err());
        let mut p = good.clone();
        p.runs.clear();
        p.transactions[0].runs = (0, 0);
        assert!(ChangeBatch::from_parts(p).is_err());
        let mut p = good.clone();
        let extra = p.sections[0].clone();
        p.sections.push(extra);
        assert!(ChangeBatch::from_parts(p).is_err());
        assert!(ChangeBatch::from_parts(good).is_ok());

        let mut parts = ColumnParts::default();
        parts.present.push(false);
        parts.null.push(true);
        parts.fixed.push(0);
        assert!(Column::from_parts(ValueKind::Int, 1, parts).is_err());
        let mut parts = ColumnParts::default();
        parts.present.push(false);
        parts.null.push(false);
        parts.offsets = vec![0, 2];
        parts.bytes = b"ab".to_vec();
        assert!(Column::from_parts(ValueKind::Text, 1, parts).is_err());
    }

    #[test]
    fn a_ddl_ends_its_batch() {
        let t = schema(1);
        let mut b = ChangeBatch::new(ImageMode::Replica);
        b.begin_transaction(None, 0).unwrap();
        let s = b.section_for(&t);
        b.push_change(s, Op::Insert).unwrap().push_image().unwrap();
        b.commit_transaction("f", 9).unwrap();
        let ddl = Ddl {
            db: Some("d".into()),
            sql: b"ALTER TABLE t1 ADD c INT".to_vec(),
            charset: Some((33, 33, 8)),
            sql_mode: Some(0),
        };
        b.push_ddl(Some("0-1-7".parse().unwrap()), 3, &ddl, "f", 20)
            .unwrap();
        assert_eq!(b.ddl(), Some(&ddl));
        assert_eq!(b.transactions().len(), 2);
        assert!(b.transaction_runs(&b.transactions()[1]).is_empty());
        assert!(b.begin_transaction(None, 0).is_err());
        assert!(b.push_change(s, Op::Insert).is_err());
        let parts = b.clone().into_parts();
        assert_eq!(ChangeBatch::from_parts(parts.clone()).unwrap(), b);
        // The DDL transaction may not own rows, and needs a transaction at all.
        let mut p = parts.clone();
        p.transactions[0].runs = (0, 0);
        p.transactions[1].runs = (0, 1);
        assert!(ChangeBatch::from_parts(p).is_err());
        let mut p = parts;
        p.transactions.clear();
        p.runs.clear();
        p.sections.clear();
        assert!(ChangeBatch::from_parts(p).is_err());
        b.clear();
        assert!(b.ddl().is_none());
        b.begin_transaction(None, 0).unwrap();
    }

    #[test]
    fn a_cut_transaction_is_no_commit_and_continues_in_the_next_batch() {
        let t = schema(1);
        let g1: Gtid = "0-1-7".parse().unwrap();
        let g2: Gtid = "0-1-8".parse().unwrap();
        let mut b = ChangeBatch::new(ImageMode::Replica);
        b.set_start(SourcePosition {
            binlog: None,
            gtid: crate::position::GtidState::Maria("0-1-6".parse().unwrap()),
        });
        b.begin_transaction(Some(g1), 1).unwrap();
        let s = b.section_for(&t);
        b.push_change(s, Op::Insert).unwrap().push_image().unwrap();
        b.commit_transaction("f", 100).unwrap();
        b.begin_transaction(Some(g2), 2).unwrap();
        b.push_change(s, Op::Insert).unwrap().push_image().unwrap();
        b.cut_transaction("f", 150).unwrap();
        assert!(b.continues() && !b.continued());
        assert!(!b.in_transaction(), "a cut batch can be encoded");
        assert_eq!(b.transactions().len(), 2);
        assert_eq!(b.complete_transactions().len(), 1);
        let end = b.end_position().unwrap();
        assert_eq!(
            end.binlog.as_ref().map(|p| p.pos),
            Some(100),
            "the part is no commit"
        );
        assert!(
            b.begin_transaction(None, 0).is_err(),
            "nothing follows a part"
        );
        // The next batch carries on with the same transaction and ends it.
        let (gtid, ts) = (b.transactions()[1].gtid, b.transactions()[1].timestamp);
        b.clear();
        assert_eq!(b.start(), &end);
        b.continue_transaction(gtid, ts).unwrap();
        assert!(b.continued() && !b.continues());
        let s = b.section_for(&t);
        b.push_change(s, Op::Insert).unwrap().push_image().unwrap();
        b.commit_transaction("f", 200).unwrap();
        assert_eq!(b.end_position().unwrap().binlog.map(|p| p.pos), Some(200));
        assert!(
            b.continue_transaction(None, 0).is_err(),
            "only in an empty batch"
        );
        // Decoders mark parts; an empty, snapshot or compacted batch has none.
        let mut d = ChangeBatch::from_parts(b.clone().into_parts()).unwrap();
        d.set_parts(true, false).unwrap();
        assert_eq!(d, b);
        let mut e = ChangeBatch::new(ImageMode::Replica);
        assert!(e.set_parts(false, true).is_err());
        d.set_snapshot(true);
        assert!(d.set_parts(true, true).is_err());
    }

    #[test]
    fn bitmap_truncates_and_checks_tail() {
        let mut m = Bitmap::default();
        for i in 0..130 {
            m.push(i % 3 == 0);
        }
        m.truncate(65);
        assert_eq!(m.len(), 65);
        assert_eq!(m.count_ones(), 22);
        assert!(Bitmap::from_words(vec![0, 2], 65).is_err());
        assert!(Bitmap::from_words(vec![0, 1], 65).is_ok());
    }
}

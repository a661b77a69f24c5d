//! From decoded binlog events to a [`ChangeBatch`]: the first step of the egress path.
//!
//! [`BatchBuilder`] is a [`Visitor`] for `outflow_binlog::walk::Walker`. It follows
//! transaction boundaries (GTID, BEGIN, XID/COMMIT, standalone DDL), derives a versioned
//! [`TableSchema`] from each TABLE_MAP, and appends each row change in the batch's
//! [`ImageMode`]:
//!
//! - `Replica`: an insert carries the row as logged. A delete carries the primary key. An
//!   update carries the primary key (before image) and only the columns whose value differs
//!   between before and after, computed here even when the binlog image is FULL; an update
//!   that changes nothing is dropped. A table without a (known) primary key falls back to
//!   whole images: the before image keeps every column it carries, so the row is found by
//!   all its values, and an update's after image still carries only the changed columns.
//! - `Full`: before and after images as the source wrote them.
//!
//! Primary keys come from the TABLE_MAP (`binlog_row_metadata=FULL`) or from a caller's
//! schema through `Decoder::set_table_hook`; without either, every table is keyless.
//!
//! Why the builder lives here rather than in `outflow-core`: it needs `outflow-binlog`, and
//! core must stay light for crates that never read a binlog (the sinks).
//!
//! Allocation: schemas are derived once per table definition; row values are written
//! straight into the batch's reusable buffers, and the per-image scratch vectors are
//! recycled between events, so a steady stream allocates nothing per row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use outflow_binlog::gtid::MariaGtid as BinMariaGtid;
use outflow_binlog::table_map::{col, ColumnKind};
use outflow_binlog::walk::{RowsContext, Visitor};
use outflow_binlog::{
    DecodeError, Decoded, Event, Row, RowIter, RowsEvent, RowsKind, TableInfo, Value,
};
use outflow_core::{
    BatchError, ChangeBatch, ColumnSchema, ColumnType, Date, DateTime, Gtid, GtidSet, GtidState,
    ImageMode, MariaGtid, MariaGtidPos, MySqlGtid, Op, SchemaVersion, SectionId, SourcePosition,
    TableSchema, Tag, Time, Timestamp, Uuid, ValueRef,
};

/// Why events could not be turned into changes. Every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The binlog itself did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A row or value could not be represented.
    #[error("{file}:{pos} (GTID {gtid}): {what}")]
    Row {
        /// Binlog file.
        file: String,
        /// Offset of the event.
        pos: u64,
        /// The transaction's GTID, or `-`.
        gtid: String,
        /// What went wrong (names `db.table` and column, never values).
        what: String,
    },
    /// The log has something this builder cannot carry faithfully.
    #[error("{file}:{pos}: unsupported: {what}")]
    Unsupported {
        /// Binlog file.
        file: String,
        /// Offset of the event.
        pos: u64,
        /// What.
        what: String,
    },
}

/// Schema derived from one TABLE_MAP, kept while the same definition keeps coming.
struct CachedSchema {
    info: TableInfo,
    schema: Arc<TableSchema>,
    section: Option<SectionId>,
}

/// Builds [`ChangeBatch`]es from binlog events; see the module documentation.
pub struct BatchBuilder {
    batch: ChangeBatch,
    file: String,
    /// Offset just past the event being handled (the TRANSACTION_PAYLOAD for nested ones).
    event_end: u64,
    /// Offset and end of the TRANSACTION_PAYLOAD whose nested events are being visited.
    payload: Option<(u64, u64)>,
    pending_gtid: Option<Gtid>,
    /// Position reached so far: updated on every commit, so it is where the next batch starts.
    started: bool,
    schemas: HashMap<u64, CachedSchema>,
    /// Scratch rows, recycled between events (see [`recycle`]).
    before: Vec<Option<Value<'static>>>,
    after: Vec<Option<Value<'static>>>,
    text: String,
    /// Binlog bytes covered by the committed transactions of the current batch.
    batch_bytes: u64,
    batch_first_pos: Option<u64>,
    rows_seen: u64,
}

/// Reuses a vector's allocation for values of another lifetime. The vector is emptied
/// first; collecting an empty `IntoIter` into a vector of a type with the same size and
/// alignment reuses the buffer in place (std's in-place collect), so nothing is allocated.
fn recycle<'b>(mut v: Vec<Option<Value<'_>>>) -> Vec<Option<Value<'b>>> {
    v.clear();
    v.into_iter().map(|_| None).collect()
}

impl BatchBuilder {
    /// A builder whose batches carry `mode` images.
    pub fn new(mode: ImageMode) -> Self {
        BatchBuilder {
            batch: ChangeBatch::new(mode),
            file: String::new(),
            event_end: 0,
            payload: None,
            pending_gtid: None,
            started: false,
            schemas: HashMap::new(),
            before: Vec::new(),
            after: Vec::new(),
            text: String::new(),
            batch_bytes: 0,
            batch_first_pos: None,
            rows_seen: 0,
        }
    }

    /// Names the binlog file the next events come from (on open and on ROTATE).
    pub fn set_file(&mut self, file: &str) {
        if self.file != file {
            self.file.clear();
            self.file.push_str(file);
        }
    }

    /// Sets where the stream starts (a checkpoint being resumed); only before any event.
    pub fn set_start(&mut self, start: SourcePosition) {
        self.batch.set_start(start);
        self.started = true;
    }

    /// The batch being built.
    pub fn batch(&self) -> &ChangeBatch {
        &self.batch
    }

    /// Whether a transaction is open (a batch can be cut only between transactions).
    pub fn in_transaction(&self) -> bool {
        self.batch.in_transaction()
    }

    /// Binlog bytes covered by the committed transactions of the current batch.
    pub fn batch_binlog_bytes(&self) -> u64 {
        self.batch_bytes
    }

    /// Row changes read from the binlog so far (before minimisation dropped any).
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// Empties the batch after it has been encoded, keeping its buffers. The next batch
    /// starts where this one ended.
    pub fn clear_batch(&mut self) {
        self.batch.clear();
        for s in self.schemas.values_mut() {
            s.section = None;
        }
        self.batch_bytes = 0;
        self.batch_first_pos = None;
    }

    fn gtid_text(&self) -> String {
        self.pending_gtid
            .map_or_else(|| "-".to_string(), |g| g.to_string())
    }

    fn row_error(&self, pos: u64, what: impl Into<String>) -> BuildError {
        BuildError::Row {
            file: self.file.clone(),
            pos,
            gtid: self.gtid_text(),
            what: what.into(),
        }
    }

    fn unsupported(&self, pos: u64, what: impl Into<String>) -> BuildError {
        BuildError::Unsupported {
            file: self.file.clone(),
            pos,
            what: what.into(),
        }
    }

    fn batch_error(&self, pos: u64, e: BatchError) -> BuildError {
        self.row_error(pos, e.to_string())
    }

    fn begin(&mut self, pos: u64, timestamp: u32) -> Result<(), BuildError> {
        if self.batch_first_pos.is_none() {
            self.batch_first_pos = Some(pos);
        }
        self.batch
            .begin_transaction(self.pending_gtid, timestamp)
            .map_err(|e| self.batch_error(pos, e))
    }

    fn commit(&mut self, pos: u64) -> Result<(), BuildError> {
        let end = self.event_end;
        self.batch
            .commit_transaction(&self.file, end)
            .map_err(|e| self.batch_error(pos, e))?;
        self.pending_gtid = None;
        let first = self.batch_first_pos.unwrap_or(pos);
        self.batch_bytes = end.saturating_sub(first);
        Ok(())
    }

    /// The section for `table`, deriving (once per definition) its schema.
    fn section(&mut self, table: &TableInfo) -> SectionId {
        let cached = match self.schemas.get_mut(&table.table_id) {
            Some(c) if c.info == *table => c,
            _ => {
                let schema = Arc::new(schema_of(table));
                self.schemas.insert(
                    table.table_id,
                    CachedSchema {
                        info: table.clone(),
                        schema,
                        section: None,
                    },
                );
                // Just inserted.
                let Some(c) = self.schemas.get_mut(&table.table_id) else {
                    unreachable!("entry inserted above")
                };
                c
            }
        };
        match cached.section {
            Some(s) => s,
            None => {
                let s = self.batch.section_for(&cached.schema);
                cached.section = Some(s);
                s
            }
        }
    }

    fn handle_rows(
        &mut self,
        ctx: RowsContext<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), BuildError> {
        if !self.batch.in_transaction() {
            // Row events without BEGIN (some non-transactional writes): their own group.
            self.begin(ctx.pos, ctx.timestamp)?;
        }
        let sec = self.section(table);
        let mode = self.batch.mode();
        let ncols = table.columns.len();
        let mut before = recycle(std::mem::take(&mut self.before));
        let mut after = recycle(std::mem::take(&mut self.after));
        before.resize(ncols, None);
        after.resize(ncols, None);
        let r = self.append_rows(ctx.pos, sec, mode, table, rows, &mut before, &mut after);
        self.before = recycle(before);
        self.after = recycle(after);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn append_rows<'a>(
        &mut self,
        pos: u64,
        sec: SectionId,
        mode: ImageMode,
        table: &TableInfo,
        rows: RowIter<'a>,
        before: &mut [Option<Value<'a>>],
        after: &mut [Option<Value<'a>>],
    ) -> Result<(), BuildError> {
        let derr = |kind| DecodeError {
            pos,
            event_type: None,
            kind,
        };
        let pk = &table.primary_key;
        for change in rows {
            let change = change.map_err(derr)?;
            self.rows_seen += 1;
            let op = match change.kind {
                RowsKind::Write => Op::Insert,
                RowsKind::Update => Op::Update,
                RowsKind::Delete => Op::Delete,
            };
            if let Some(row) = change.before {
                fill(before, row).map_err(derr)?;
            }
            if let Some(row) = change.after {
                fill(after, row).map_err(derr)?;
            }
            let key_ok = !pk.is_empty()
                && pk
                    .iter()
                    .all(|&k| before.get(k).is_some_and(Option::is_some));
            if mode == ImageMode::Replica && op == Op::Update {
                let changed = before
                    .iter()
                    .zip(after.iter())
                    .any(|(b, a)| a.is_some() && (b.is_none() || b != a));
                if !changed {
                    continue;
                }
            }
            if let Err(e) = self.batch.push_change(sec, op) {
                return Err(self.batch_error(pos, e));
            }
            if op != Op::Insert {
                self.push_image(pos, sec, table, before, |c| {
                    mode == ImageMode::Full || !key_ok || pk.contains(&c)
                })?;
            }
            if op != Op::Delete {
                let (b, a): (&[Option<Value<'a>>], &[Option<Value<'a>>]) = (before, after);
                let whole = mode == ImageMode::Full || op == Op::Insert;
                self.push_image(pos, sec, table, a, |c| whole || b[c] != a[c])?;
            }
        }
        Ok(())
    }

    fn push_image(
        &mut self,
        pos: u64,
        sec: SectionId,
        table: &TableInfo,
        values: &[Option<Value<'_>>],
        keep: impl Fn(usize) -> bool,
    ) -> Result<(), BuildError> {
        let section = self.batch.section_mut(sec);
        let r = section.push_image();
        if let Err(e) = r {
            return Err(self.batch_error(pos, e));
        }
        for (c, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            if !keep(c) {
                continue;
            }
            if let Err(what) = set_value(self.batch.section_mut(sec), c, v, &mut self.text) {
                return Err(self.row_error(
                    pos,
                    format!("`{}` column {}: {what}", table.qualified_name(), c + 1),
                ));
            }
        }
        Ok(())
    }
}

/// Reads an image's present values into `out` (absent columns become `None`).
fn fill<'a>(out: &mut [Option<Value<'a>>], row: Row<'a>) -> Result<(), outflow_binlog::ErrorKind> {
    out.iter_mut().for_each(|v| *v = None);
    for item in row.values() {
        let (i, v) = item?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v);
        }
    }
    Ok(())
}

/// Writes into a `Vec<u8>` through `fmt::Write`.
struct ByteWriter<'v>(&'v mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Stores one binlog value in column `c` of the section's current image.
fn set_value(
    section: &mut outflow_core::TableSection,
    c: usize,
    v: &Value<'_>,
    text: &mut String,
) -> Result<(), String> {
    let kind = section.columns()[c].kind();
    let r = match *v {
        Value::Null => section.set(c, ValueRef::Null),
        Value::Int(x) => section.set(c, ValueRef::Int(x)),
        Value::UInt(x) => section.set(c, ValueRef::UInt(x)),
        Value::Float(x) => section.set(c, ValueRef::Float(x)),
        Value::Double(x) => section.set(c, ValueRef::Double(x)),
        Value::Decimal(d) => {
            d.validate().map_err(|e| e.to_string())?;
            section.set_with(c, |out| write!(ByteWriter(out), "{d}").map_err(|_| ()))
        }
        Value::Year(y) => section.set(c, ValueRef::Year(y)),
        Value::Date(d) => section.set(
            c,
            ValueRef::Date(Date {
                year: d.year,
                month: d.month,
                day: d.day,
            }),
        ),
        Value::Time(t) => section.set(
            c,
            ValueRef::Time(Time {
                negative: t.negative,
                hours: t.hours,
                minutes: t.minutes,
                seconds: t.seconds,
                micros: t.micros,
            }),
        ),
        Value::DateTime(t) => section.set(
            c,
            ValueRef::DateTime(DateTime {
                year: t.year,
                month: t.month,
                day: t.day,
                hour: t.hour,
                minute: t.minute,
                second: t.second,
                micros: t.micros,
            }),
        ),
        Value::Timestamp(t) => section.set(
            c,
            ValueRef::Timestamp(Timestamp {
                seconds: t.seconds,
                micros: t.micros,
            }),
        ),
        // Text and bytes are the same bytes; the schema decides which the column holds.
        Value::Text(b) | Value::Bytes(b) => match kind {
            outflow_core::ValueKind::Text => section.set(c, ValueRef::Text(b)),
            _ => section.set(c, ValueRef::Bytes(b)),
        },
        Value::Enum(x) => section.set(c, ValueRef::Enum(x)),
        Value::Set(x) => section.set(c, ValueRef::Set(x)),
        Value::Bit { value, .. } => section.set(c, ValueRef::Bit(value)),
        Value::Json(j) => {
            j.write_json(text).map_err(|e| e.to_string())?;
            section.set(c, ValueRef::Json(text.as_bytes()))
        }
        Value::JsonDiff(_) => {
            return Err(
                "partial JSON update (binlog_row_value_options=PARTIAL_JSON) cannot \
                        be carried: set binlog_row_value_options to ''"
                    .to_string(),
            )
        }
        Value::Geometry(b) => section.set(c, ValueRef::Geometry(b)),
    };
    r.map_err(|e| e.to_string())
}

/// The [`TableSchema`] a TABLE_MAP describes. The version is a hash of the content, so the
/// same definition gets the same version in every process and every run.
pub fn schema_of(table: &TableInfo) -> TableSchema {
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let ty = match c.kind {
                ColumnKind::Int { bytes, .. } => ColumnType::Int { bytes },
                ColumnKind::Float => ColumnType::Float,
                ColumnKind::Double => ColumnType::Double,
                ColumnKind::Decimal { precision, scale } => {
                    ColumnType::Decimal { precision, scale }
                }
                ColumnKind::Year => ColumnType::Year,
                ColumnKind::Date => ColumnType::Date,
                ColumnKind::TimeV1 => ColumnType::Time { fsp: 0 },
                ColumnKind::Time2 { fsp } => ColumnType::Time { fsp },
                ColumnKind::DateTimeV1 => ColumnType::DateTime { fsp: 0 },
                ColumnKind::DateTime2 { fsp } => ColumnType::DateTime { fsp },
                ColumnKind::TimestampV1 => ColumnType::Timestamp { fsp: 0 },
                ColumnKind::Timestamp2 { fsp } | ColumnKind::MariaTimestampHires { fsp } => {
                    ColumnType::Timestamp { fsp }
                }
                ColumnKind::String { binary, .. } => ColumnType::String {
                    max_bytes: if c.type_code == col::VARCHAR {
                        u32::from(c.meta)
                    } else {
                        0
                    },
                    binary,
                },
                ColumnKind::Blob { len_bytes, binary } => ColumnType::Blob { len_bytes, binary },
                ColumnKind::Json { .. } => ColumnType::Json,
                ColumnKind::Geometry { .. } => ColumnType::Geometry,
                ColumnKind::Vector { .. } => ColumnType::Vector,
                ColumnKind::Enum { bytes } => ColumnType::Enum { bytes },
                ColumnKind::Set { bytes } => ColumnType::Set { bytes },
                ColumnKind::Bit { bits, .. } => ColumnType::Bit { bits },
                ColumnKind::Null => ColumnType::Null,
            };
            ColumnSchema {
                name: c.name.as_deref().unwrap_or("").to_string(),
                ty,
                unsigned: matches!(c.kind, ColumnKind::Int { unsigned: true, .. }),
                nullable: c.nullable,
                collation: c.collation,
                members: c.members.iter().flatten().map(|m| m.to_string()).collect(),
            }
        })
        .collect();
    let mut schema = TableSchema {
        version: SchemaVersion(0),
        db: table.schema.clone(),
        table: table.table.clone(),
        columns,
        primary_key: table
            .primary_key
            .iter()
            .filter_map(|&k| u16::try_from(k).ok())
            .collect(),
    };
    schema.version = SchemaVersion(content_hash(&schema));
    schema
}

/// FNV-1a over the schema's bincode form: stable across processes, platforms and runs.
fn content_hash(schema: &TableSchema) -> u64 {
    let bytes = bincode::serialize(schema).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Version 0 is reserved for "not assigned".
    h.max(1)
}

fn maria(g: BinMariaGtid) -> MariaGtid {
    MariaGtid {
        domain: g.domain,
        server_id: g.server_id,
        sequence: g.sequence,
    }
}

impl Visitor for BatchBuilder {
    type Error = BuildError;

    fn event(&mut self, pos: u64, d: &Decoded<'_>) -> Result<(), BuildError> {
        if let Event::TransactionPayload(_) = d.event {
            self.payload = Some((pos, pos + u64::from(d.header.event_size)));
            return Ok(());
        }
        self.event_end = match self.payload {
            Some((p, end)) if p == pos => end,
            _ => {
                self.payload = None;
                pos + u64::from(d.header.event_size)
            }
        };
        match &d.event {
            Event::GtidList(list) if !self.started => {
                let mut p = MariaGtidPos::new();
                for g in list.gtids() {
                    p.advance(maria(g));
                }
                self.batch.set_start(SourcePosition {
                    binlog: None,
                    gtid: if p.is_empty() {
                        GtidState::None
                    } else {
                        GtidState::Maria(p)
                    },
                });
                self.started = true;
            }
            Event::PreviousGtids(prev) if !self.started => {
                let text = prev.to_gtid_set_string().map_err(|kind| DecodeError {
                    pos,
                    event_type: Some(d.header.type_code),
                    kind,
                })?;
                let set: GtidSet = text
                    .parse()
                    .map_err(|e| self.row_error(pos, format!("PREVIOUS_GTIDS: {e}")))?;
                self.batch.set_start(SourcePosition {
                    binlog: None,
                    gtid: if set.is_empty() {
                        GtidState::None
                    } else {
                        GtidState::MySql(set)
                    },
                });
                self.started = true;
            }
            Event::MariaGtid(g) => {
                if self.batch.in_transaction() {
                    return Err(self.row_error(pos, "GTID event inside an open transaction"));
                }
                if g.xa.is_some() {
                    return Err(self.unsupported(pos, format!("XA transaction {}", g.gtid)));
                }
                self.pending_gtid = Some(Gtid::Maria(maria(g.gtid)));
            }
            Event::MySqlGtid(g) => {
                if self.batch.in_transaction() {
                    return Err(self.row_error(pos, "GTID event inside an open transaction"));
                }
                self.pending_gtid = if g.anonymous {
                    None
                } else {
                    let tag = Tag::new(&String::from_utf8_lossy(g.tag))
                        .map_err(|e| self.row_error(pos, e.to_string()))?;
                    let gno = u64::try_from(g.gno)
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| self.row_error(pos, "GTID number below 1"))?;
                    Some(Gtid::MySql(MySqlGtid {
                        uuid: Uuid(g.uuid.0),
                        tag,
                        gno,
                    }))
                };
            }
            Event::Query(q) => {
                if q.is_begin() {
                    if q.query.len() > 5 {
                        return Err(self.unsupported(pos, "XA transaction"));
                    }
                    self.begin(pos, d.header.timestamp)?;
                } else if q.is_commit() || q.is_rollback() {
                    // Row events before a ROLLBACK are the non-transactional changes that
                    // stayed (rolled-back transactional rows are never logged): keep them.
                    if !self.batch.in_transaction() {
                        self.begin(pos, d.header.timestamp)?;
                    }
                    self.commit(pos)?;
                } else if self.batch.in_transaction() {
                    let head = q.query.get(..9).unwrap_or(q.query);
                    if !head.eq_ignore_ascii_case(b"SAVEPOINT") {
                        return Err(self.unsupported(
                            pos,
                            "a statement inside a transaction (statement-based change?): \
                             outflow needs binlog_format=ROW",
                        ));
                    }
                } else {
                    // DDL (or any standalone statement): no rows, but its GTID and position
                    // must advance like any transaction's.
                    self.begin(pos, d.header.timestamp)?;
                    self.commit(pos)?;
                }
            }
            Event::Xid { .. } => {
                if !self.batch.in_transaction() {
                    self.begin(pos, d.header.timestamp)?;
                }
                self.commit(pos)?;
            }
            Event::XaPrepare { .. } => return Err(self.unsupported(pos, "XA PREPARE")),
            Event::Incident { code, .. } => {
                return Err(self.row_error(
                    pos,
                    format!("INCIDENT {code}: the source lost changes here"),
                ))
            }
            Event::Rotate { next_file, .. } => {
                // Live streams name their files only here (the first, artificial ROTATE
                // names the current one); readers of files set the same name on open.
                if let Ok(name) = std::str::from_utf8(next_file) {
                    self.set_file(name);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), BuildError> {
        self.handle_rows(ctx, table, rows)
    }
}

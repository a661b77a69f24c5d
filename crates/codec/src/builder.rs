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
//! Standalone statements (QUERY events outside BEGIN ... COMMIT) are classified by
//! `outflow_core::StatementKind`: DDL ends the batch as a DDL transaction
//! (`ChangeBatch::push_ddl`, with the session's default database, character set and
//! `sql_mode`), so the caller must encode the batch before the next event (the
//! [`crate::Pipeline`] does); transaction control only advances the position; a data
//! change logged as a statement (`binlog_format=STATEMENT`/`MIXED`) is an error naming the
//! statement, unless [`StatementPolicy::Skip`] is chosen, which counts and drops it. A
//! caller that filters tables marks a DDL on excluded tables with
//! [`BatchBuilder::exclude_next_statement`]: it then only advances the position.
//!
//! Primary keys come from the TABLE_MAP (`binlog_row_metadata=FULL`) or from a caller's
//! schema through `Decoder::set_table_hook`; without either, every table is keyless.
//!
//! Why the builder lives here rather than in `outflow-core`: it needs `outflow-binlog`, and
//! core must stay light for crates that never read a binlog (the sinks).
//!
//! Column rules ([`crate::columns`], set with [`BatchBuilder::set_columns`]) are applied
//! here: excluded columns never enter the batch, masked ones enter as their hash, and the
//! batch's schema is the shipped one. An update that changes only excluded columns is
//! dropped in `Replica` mode like one that changes nothing.
//!
//! Initial-snapshot rows enter through [`BatchBuilder::begin_snapshot_chunk`],
//! [`BatchBuilder::snapshot_row`] and [`BatchBuilder::end_snapshot_chunk`], as inserts in
//! a batch marked [`ChangeBatch::is_snapshot`], with the same column rules. The snapshot's
//! own statements (a `TRUNCATE TABLE` before a table is read again) enter through
//! [`BatchBuilder::snapshot_ddl`], as a DDL ending a snapshot batch.
//!
//! Allocation: schemas are derived once per table definition; row values are written
//! straight into the batch's reusable buffers, and the per-image scratch vectors are
//! recycled between events, so a steady stream allocates nothing per row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use outflow_binlog::table_map::{col, ColumnKind};
use outflow_binlog::walk::{RowsContext, Visitor};
use outflow_binlog::{
    DecodeError, Decoded, Event, Query, Row, RowIter, RowsEvent, RowsKind, TableInfo, Value,
};
use outflow_core::{
    BatchError, BinlogPosition, ChangeBatch, ColumnSchema, ColumnType, Date, DateTime, Ddl, Gtid,
    GtidSet, GtidState, ImageMode, MariaGtidPos, MySqlGtid, Op, SchemaVersion, SectionId,
    SourcePosition, StatementKind, TableSchema, Tag, Time, Timestamp, ValueRef,
};

use crate::columns::{mask_text, ByteWriter, ColumnMap, ColumnPolicy};

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
    /// A column rule cannot be applied to a table (a configuration error).
    #[error("column rules: {0}")]
    Columns(String),
}

/// Decides per row change whether it is taken ([`BatchBuilder::rows_gated`]).
pub type RowGate<'g> = dyn for<'v> FnMut(&[Option<Value<'v>>]) -> Option<bool> + 'g;

/// What to do with a data change logged as a statement, which a row-based relay cannot
/// carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementPolicy {
    /// Stop with an error naming the statement, its position and GTID (default).
    #[default]
    Stop,
    /// Drop it and count it ([`BatchBuilder::statements_skipped`]): the target misses
    /// that change.
    Skip,
}

/// Schema derived from one TABLE_MAP, kept while the same definition keeps coming.
struct CachedSchema {
    info: TableInfo,
    schema: Arc<TableSchema>,
    section: Option<SectionId>,
    /// Column rules in force, when they change anything.
    columns: Option<Arc<ColumnMap>>,
}

/// A snapshot table's shipped schema, kept per source schema version.
struct SnapshotTable {
    schema: Arc<TableSchema>,
    columns: Option<Arc<ColumnMap>>,
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
    policy: Option<Arc<dyn ColumnPolicy>>,
    /// Scratch for masking: a value's text, then its hash.
    mask_in: Vec<u8>,
    mask_out: String,
    snapshot_tables: HashMap<SchemaVersion, SnapshotTable>,
    /// The snapshot table whose chunk is open.
    snapshot_open: Option<SchemaVersion>,
    on_statement: StatementPolicy,
    exclude_next: bool,
    ship_ddl: bool,
    statements_skipped: u64,
    ddl_scratch: Ddl,
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
            policy: None,
            mask_in: Vec::new(),
            mask_out: String::new(),
            snapshot_tables: HashMap::new(),
            snapshot_open: None,
            on_statement: StatementPolicy::Stop,
            exclude_next: false,
            ship_ddl: true,
            statements_skipped: 0,
            ddl_scratch: Ddl::default(),
        }
    }

    /// Applies `policy`'s column rules from now on (table definitions seen before are
    /// derived again).
    pub fn set_columns(&mut self, policy: Arc<dyn ColumnPolicy>) {
        self.policy = Some(policy);
        self.schemas.clear();
        self.snapshot_tables.clear();
    }

    /// The shipped schema and column map of `source` under the column rules.
    fn shipped(
        &self,
        source: TableSchema,
    ) -> Result<(Arc<TableSchema>, Option<Arc<ColumnMap>>), BuildError> {
        let Some(policy) = &self.policy else {
            return Ok((Arc::new(source), None));
        };
        let names: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
        let actions = policy.actions(&source.db, &source.table, &names);
        match ColumnMap::new(&source, &actions).map_err(BuildError::Columns)? {
            None => Ok((Arc::new(source), None)),
            Some((shipped, map)) => Ok((Arc::new(shipped), Some(Arc::new(map)))),
        }
    }

    /// Sets what happens to data changes logged as statements (default: stop).
    pub fn set_on_statement(&mut self, policy: StatementPolicy) {
        self.on_statement = policy;
    }

    /// Whether DDL is shipped (default) or only advances the position, for a target whose
    /// schema is managed elsewhere.
    pub fn set_ship_ddl(&mut self, on: bool) {
        self.ship_ddl = on;
    }

    /// Data changes logged as statements that were skipped by [`StatementPolicy::Skip`].
    pub fn statements_skipped(&self) -> u64 {
        self.statements_skipped
    }

    /// The next standalone statement concerns only tables the caller filters out: if it is
    /// DDL, it only advances the position instead of being shipped. Applies to the next
    /// QUERY event that is no BEGIN/COMMIT/ROLLBACK.
    pub fn exclude_next_statement(&mut self) {
        self.exclude_next = true;
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

    /// Ends the batch inside the open transaction (see
    /// `outflow_core::ChangeBatch::cut_transaction`): the changes so far become a part that
    /// continues in the next batch, and the batch can be encoded. [`BatchBuilder::clear_batch`]
    /// then opens the transaction's next part.
    pub fn cut_transaction(&mut self) -> Result<(), BuildError> {
        let end = self.event_end;
        self.batch
            .cut_transaction(&self.file, end)
            .map_err(|e| self.batch_error(end, e))
    }

    /// Empties the batch after it has been encoded, keeping its buffers. The next batch
    /// starts where this one ended; after [`BatchBuilder::cut_transaction`], with the next
    /// part of the cut transaction open.
    pub fn clear_batch(&mut self) -> Result<(), BuildError> {
        let part = self
            .batch
            .continues()
            .then(|| {
                self.batch
                    .transactions()
                    .last()
                    .map(|t| (t.gtid, t.timestamp))
            })
            .flatten();
        self.batch.clear();
        for s in self.schemas.values_mut() {
            s.section = None;
        }
        for s in self.snapshot_tables.values_mut() {
            s.section = None;
        }
        self.batch_bytes = 0;
        self.batch_first_pos = None;
        if let Some((gtid, timestamp)) = part {
            let at = self.event_end;
            self.batch
                .continue_transaction(gtid, timestamp)
                .map_err(|e| self.batch_error(at, e))?;
            self.batch_first_pos = Some(at);
        }
        Ok(())
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

    /// The error for a data change logged as a statement at `pos`.
    fn statement_error(&self, pos: u64, sql: &[u8]) -> BuildError {
        self.row_error(
            pos,
            format!(
                "a data change logged as a statement (binlog_format=STATEMENT or MIXED?), \
                 which a row-based relay cannot carry: `{}`; set binlog_format=ROW on the \
                 source, or on_statement = \"skip\" to drop such statements",
                outflow_core::statement::shorten(sql, 120)
            ),
        )
    }

    /// Handles a QUERY event that is no BEGIN, COMMIT or ROLLBACK.
    fn statement(&mut self, pos: u64, d: &Decoded<'_>, q: &Query<'_>) -> Result<(), BuildError> {
        let exclude = std::mem::take(&mut self.exclude_next);
        let mut inflated = Vec::new();
        let sql = q.inflate(&mut inflated).map_err(|kind| DecodeError {
            pos,
            event_type: Some(d.header.type_code),
            kind,
        })?;
        let kind = StatementKind::of(sql);
        if self.batch.in_transaction() {
            let head = sql.get(..9).unwrap_or(sql);
            if head.eq_ignore_ascii_case(b"SAVEPOINT") {
                return Ok(());
            }
            return match (kind, self.on_statement) {
                (StatementKind::Dml, StatementPolicy::Skip) => {
                    self.statements_skipped += 1;
                    Ok(())
                }
                (StatementKind::Dml, StatementPolicy::Stop) => Err(self.statement_error(pos, sql)),
                _ => Err(self.unsupported(
                    pos,
                    format!(
                        "a statement inside a transaction: `{}`",
                        outflow_core::statement::shorten(sql, 120)
                    ),
                )),
            };
        }
        let ts = d.header.timestamp;
        match kind {
            StatementKind::Dml if self.on_statement == StatementPolicy::Stop => {
                return Err(self.statement_error(pos, sql));
            }
            StatementKind::Dml => self.statements_skipped += 1,
            StatementKind::Ddl(_) if !exclude && self.ship_ddl => {
                let status = q.status();
                let name = std::str::from_utf8(q.schema)
                    .map_err(|_| self.row_error(pos, "default database name is not UTF-8"))?;
                // Filled in a scratch kept between statements: nothing allocated per DDL.
                let mut ddl = std::mem::take(&mut self.ddl_scratch);
                if name.is_empty() {
                    ddl.db = None;
                } else {
                    let db = ddl.db.get_or_insert_with(String::new);
                    db.clear();
                    db.push_str(name);
                }
                ddl.sql.clear();
                ddl.sql.extend_from_slice(sql);
                ddl.charset = status.charset;
                ddl.sql_mode = status.sql_mode;
                if self.batch_first_pos.is_none() {
                    self.batch_first_pos = Some(pos);
                }
                let end = self.event_end;
                let pushed = self
                    .batch
                    .push_ddl(self.pending_gtid, ts, &ddl, &self.file, end);
                self.ddl_scratch = ddl;
                pushed.map_err(|e| self.batch_error(pos, e))?;
                self.pending_gtid = None;
                self.batch_bytes = end.saturating_sub(self.batch_first_pos.unwrap_or(pos));
                return Ok(());
            }
            StatementKind::Ddl(_) | StatementKind::Control => {}
        }
        // No change to carry, but its GTID and position advance like any transaction's.
        self.begin(pos, ts)?;
        self.commit(pos)
    }

    /// The section for `table` and its column rules, deriving (once per definition) its
    /// schema.
    fn section(
        &mut self,
        table: &TableInfo,
    ) -> Result<(SectionId, Option<Arc<ColumnMap>>), BuildError> {
        let cached = match self.schemas.get_mut(&table.table_id) {
            Some(c) if c.info == *table => c,
            _ => {
                let (schema, columns) = self.shipped(schema_of(table))?;
                self.schemas.insert(
                    table.table_id,
                    CachedSchema {
                        info: table.clone(),
                        schema,
                        section: None,
                        columns,
                    },
                );
                // Just inserted.
                let Some(c) = self.schemas.get_mut(&table.table_id) else {
                    unreachable!("entry inserted above")
                };
                c
            }
        };
        let s = match cached.section {
            Some(s) => s,
            None => {
                let s = self.batch.section_for(&cached.schema);
                cached.section = Some(s);
                s
            }
        };
        Ok((s, cached.columns.clone()))
    }

    /// Like `Visitor::rows`, but only the changes `gate` admits are taken. The gate sees
    /// the row's key image (the after image of an insert, else the before image) and
    /// answers whether to take the change; `None` (it cannot tell) is an error naming the
    /// row's position. The live source uses it to skip what the initial snapshot holds.
    pub fn rows_gated(
        &mut self,
        ctx: RowsContext<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
        gate: &mut RowGate<'_>,
    ) -> Result<(), BuildError> {
        self.handle_rows(ctx, table, rows, Some(gate))
    }

    fn handle_rows(
        &mut self,
        ctx: RowsContext<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
        gate: Option<&mut RowGate<'_>>,
    ) -> Result<(), BuildError> {
        if !self.batch.in_transaction() {
            // Row events without BEGIN (some non-transactional writes): their own group.
            self.begin(ctx.pos, ctx.timestamp)?;
        }
        let (sec, columns) = self.section(table)?;
        let mode = self.batch.mode();
        let ncols = table.columns.len();
        let mut before = recycle(std::mem::take(&mut self.before));
        let mut after = recycle(std::mem::take(&mut self.after));
        before.resize(ncols, None);
        after.resize(ncols, None);
        let cols = columns.as_deref();
        let r = self.append_rows(
            ctx.pos,
            sec,
            mode,
            table,
            cols,
            rows,
            gate,
            &mut before,
            &mut after,
        );
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
        cols: Option<&ColumnMap>,
        rows: RowIter<'a>,
        mut gate: Option<&mut RowGate<'_>>,
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
            if let Some(g) = gate.as_mut() {
                let image: &[Option<Value<'_>>] = if op == Op::Insert { after } else { before };
                match g(image) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        return Err(self.row_error(
                            pos,
                            format!(
                                "`{}`: the snapshot handoff needs the row's integer primary key",
                                table.qualified_name()
                            ),
                        ))
                    }
                }
            }
            let key_ok = !pk.is_empty()
                && pk
                    .iter()
                    .all(|&k| before.get(k).is_some_and(Option::is_some));
            if mode == ImageMode::Replica && op == Op::Update {
                let shipped = |c: usize| cols.is_none_or(|m| m.out[c].is_some());
                let changed = before
                    .iter()
                    .zip(after.iter())
                    .enumerate()
                    .any(|(c, (b, a))| a.is_some() && (b.is_none() || b != a) && shipped(c));
                if !changed {
                    continue;
                }
            }
            if let Err(e) = self.batch.push_change(sec, op) {
                return Err(self.batch_error(pos, e));
            }
            if op != Op::Insert {
                self.push_image(pos, sec, table, cols, before, |c| {
                    mode == ImageMode::Full || !key_ok || pk.contains(&c)
                })?;
            }
            if op != Op::Delete {
                let (b, a): (&[Option<Value<'a>>], &[Option<Value<'a>>]) = (before, after);
                let whole = mode == ImageMode::Full || op == Op::Insert;
                self.push_image(pos, sec, table, cols, a, |c| whole || b[c] != a[c])?;
            }
        }
        Ok(())
    }

    fn push_image(
        &mut self,
        pos: u64,
        sec: SectionId,
        table: &TableInfo,
        cols: Option<&ColumnMap>,
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
            let (out, masked) = match cols {
                None => (c, false),
                Some(m) => match m.out[c] {
                    None => continue,
                    Some(o) => (o, m.mask[c] && *v != Value::Null),
                },
            };
            let r = if masked {
                self.mask_binlog(sec, out, c, cols, v)
            } else {
                set_value(self.batch.section_mut(sec), out, v, &mut self.text)
            };
            if let Err(what) = r {
                return Err(self.row_error(
                    pos,
                    format!("`{}` column {}: {what}", table.qualified_name(), c + 1),
                ));
            }
        }
        Ok(())
    }

    /// Stores the mask of binlog value `v` of source column `c` in shipped column `out`.
    fn mask_binlog(
        &mut self,
        sec: SectionId,
        out: usize,
        c: usize,
        cols: Option<&ColumnMap>,
        v: &Value<'_>,
    ) -> Result<(), String> {
        let (Some(m), Some(policy)) = (cols, &self.policy) else {
            return Err("masked column without column rules".to_string());
        };
        binlog_mask_text(v, &m.source.columns[c], &mut self.text, &mut self.mask_in)?;
        policy.mask(&self.mask_in, &mut self.mask_out);
        self.batch
            .section_mut(sec)
            .set(out, ValueRef::Text(self.mask_out.as_bytes()))
            .map_err(|e| e.to_string())
    }

    /// Opens a transaction for a chunk of `table`'s initial-snapshot rows, which reflect
    /// the binlog up to `at`. The batch becomes a snapshot batch
    /// ([`ChangeBatch::is_snapshot`]): it must hold no binlog transactions.
    pub fn begin_snapshot_chunk(&mut self, table: &TableSchema) -> Result<(), BuildError> {
        let row_err = |what: String| BuildError::Row {
            file: String::new(),
            pos: 0,
            gtid: "-".to_string(),
            what: format!("snapshot of `{}`: {what}", table.qualified_name()),
        };
        if !self.batch.is_snapshot() && !self.batch.transactions().is_empty() {
            return Err(row_err("the batch holds binlog transactions".into()));
        }
        if !self.snapshot_tables.contains_key(&table.version) {
            let (schema, columns) = self.shipped(table.clone())?;
            self.snapshot_tables.insert(
                table.version,
                SnapshotTable {
                    schema,
                    columns,
                    section: None,
                },
            );
        }
        self.batch.set_snapshot(true);
        self.batch
            .begin_transaction(None, 0)
            .map_err(|e| row_err(e.to_string()))?;
        self.snapshot_open = Some(table.version);
        Ok(())
    }

    /// Appends one snapshot row (values in the source table's column order) as an insert.
    pub fn snapshot_row(&mut self, values: &[ValueRef<'_>]) -> Result<(), BuildError> {
        let Some(t) = self
            .snapshot_open
            .and_then(|v| self.snapshot_tables.get_mut(&v))
        else {
            return Err(BuildError::Columns(
                "a snapshot row outside a chunk".to_string(),
            ));
        };
        let sec = match t.section {
            Some(s) => s,
            None => {
                let s = self.batch.section_for(&t.schema);
                t.section = Some(s);
                s
            }
        };
        let columns = t.columns.clone();
        let name = || t.schema.qualified_name();
        let err = |what: String| BuildError::Row {
            file: String::new(),
            pos: 0,
            gtid: "-".to_string(),
            what,
        };
        let r = self
            .batch
            .push_change(sec, Op::Insert)
            .and_then(|section| section.push_image());
        if let Err(e) = r {
            return Err(err(format!("snapshot of `{}`: {e}", name())));
        }
        self.rows_seen += 1;
        for (c, v) in values.iter().enumerate() {
            let r = match columns.as_deref() {
                None => self.batch.section_mut(sec).set(c, *v),
                Some(m) => match m.out.get(c).copied().flatten() {
                    None => continue,
                    Some(o) if m.mask[c] && !v.is_null() => {
                        let Some(policy) = &self.policy else {
                            return Err(BuildError::Columns("masked without rules".into()));
                        };
                        self.mask_in.clear();
                        mask_text(*v, &m.source.columns[c], &mut self.mask_in);
                        policy.mask(&self.mask_in, &mut self.mask_out);
                        self.batch
                            .section_mut(sec)
                            .set(o, ValueRef::Text(self.mask_out.as_bytes()))
                    }
                    Some(o) => self.batch.section_mut(sec).set(o, *v),
                },
            };
            if let Err(e) = r {
                return Err(err(format!(
                    "snapshot of `{}` column {}: {e}",
                    name(),
                    c + 1
                )));
            }
        }
        Ok(())
    }

    /// Ends the snapshot batch with `ddl`, the snapshot's own statement (a `TRUNCATE TABLE`
    /// before a table is read again from its start): it carries no GTID and `at`, the
    /// snapshot position of the rows that follow, as its end. The batch stays marked
    /// [`ChangeBatch::is_snapshot`], which tells a sink that the statement is not the
    /// user's DDL. Call it between chunks, on a batch that holds no binlog transactions.
    pub fn snapshot_ddl(&mut self, ddl: &Ddl, at: &BinlogPosition) -> Result<(), BuildError> {
        let err = |what: String| BuildError::Row {
            file: at.file.clone(),
            pos: at.pos,
            gtid: "-".to_string(),
            what: format!("snapshot statement: {what}"),
        };
        if self.snapshot_open.is_some() {
            return Err(err("a snapshot chunk is open".into()));
        }
        if !self.batch.is_snapshot() && !self.batch.transactions().is_empty() {
            return Err(err("the batch holds binlog transactions".into()));
        }
        self.batch.set_snapshot(true);
        self.batch
            .push_ddl(None, 0, ddl, &at.file, at.pos)
            .map_err(|e| err(e.to_string()))
    }

    /// Commits the open snapshot chunk; `at` is the table's snapshot position, recorded as
    /// the transaction's end.
    pub fn end_snapshot_chunk(&mut self, at: &BinlogPosition) -> Result<(), BuildError> {
        self.snapshot_open = None;
        self.batch
            .commit_transaction(&at.file, at.pos)
            .map_err(|e| BuildError::Row {
                file: at.file.clone(),
                pos: at.pos,
                gtid: "-".to_string(),
                what: format!("snapshot chunk: {e}"),
            })
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

/// Stores one binlog value in column `c` of the section's current image.
fn set_value(
    section: &mut outflow_core::TableSection,
    c: usize,
    v: &Value<'_>,
    text: &mut String,
) -> Result<(), String> {
    let r = match *v {
        Value::Decimal(d) => {
            d.validate().map_err(|e| e.to_string())?;
            section.set_with(c, |out| write!(ByteWriter(out), "{d}").map_err(|_| ()))
        }
        _ => {
            let kind = section.columns()[c].kind();
            section.set(c, value_ref(v, kind, text)?)
        }
    };
    r.map_err(|e| e.to_string())
}

/// Writes the text a masked binlog value of column `col` is hashed from ([`mask_text`])
/// into `out` (replacing its contents); `text` is scratch for JSON.
pub fn binlog_mask_text(
    v: &Value<'_>,
    col: &ColumnSchema,
    text: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    match *v {
        Value::Decimal(d) => {
            d.validate().map_err(|e| e.to_string())?;
            write!(ByteWriter(out), "{d}").map_err(|e| e.to_string())
        }
        _ => {
            mask_text(value_ref(v, col.value_kind(), text)?, col, out);
            Ok(())
        }
    }
}

/// The core value of a binlog value (any but DECIMAL, which is written as text in place)
/// for a column of `kind`; JSON is rendered into `text`.
fn value_ref<'v>(
    v: &Value<'v>,
    kind: outflow_core::ValueKind,
    text: &'v mut String,
) -> Result<ValueRef<'v>, String> {
    Ok(match *v {
        Value::Null => ValueRef::Null,
        Value::Int(x) => ValueRef::Int(x),
        Value::UInt(x) => ValueRef::UInt(x),
        Value::Float(x) => ValueRef::Float(x),
        Value::Double(x) => ValueRef::Double(x),
        Value::Decimal(_) => return Err("DECIMAL is stored as text".to_string()),
        Value::Year(y) => ValueRef::Year(y),
        Value::Date(d) => ValueRef::Date(Date {
            year: d.year,
            month: d.month,
            day: d.day,
        }),
        Value::Time(t) => ValueRef::Time(Time {
            negative: t.negative,
            hours: t.hours,
            minutes: t.minutes,
            seconds: t.seconds,
            micros: t.micros,
        }),
        Value::DateTime(t) => ValueRef::DateTime(DateTime {
            year: t.year,
            month: t.month,
            day: t.day,
            hour: t.hour,
            minute: t.minute,
            second: t.second,
            micros: t.micros,
        }),
        Value::Timestamp(t) => ValueRef::Timestamp(Timestamp {
            seconds: t.seconds,
            micros: t.micros,
        }),
        // Text and bytes are the same bytes; the schema decides which the column holds.
        Value::Text(b) | Value::Bytes(b) => match kind {
            outflow_core::ValueKind::Text => ValueRef::Text(b),
            _ => ValueRef::Bytes(b),
        },
        Value::Enum(x) => ValueRef::Enum(x),
        Value::Set(x) => ValueRef::Set(x),
        Value::Bit { value, .. } => ValueRef::Bit(value),
        Value::Json(j) => {
            // The scratch is reused: each value starts it afresh.
            text.clear();
            j.write_json(text).map_err(|e| e.to_string())?;
            ValueRef::Json(text.as_bytes())
        }
        Value::JsonDiff(_) => {
            return Err(
                "partial JSON update (binlog_row_value_options=PARTIAL_JSON) cannot \
                        be carried: set binlog_row_value_options to ''"
                    .to_string(),
            )
        }
        Value::Geometry(b) => ValueRef::Geometry(b),
    })
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
pub(crate) fn content_hash(schema: &TableSchema) -> u64 {
    let bytes = bincode::serialize(schema).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Version 0 is reserved for "not assigned".
    h.max(1)
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
                    p.advance(g);
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
                self.pending_gtid = Some(Gtid::Maria(g.gtid));
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
                        uuid: g.uuid,
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
                } else {
                    self.statement(pos, d, q)?;
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
        self.handle_rows(ctx, table, rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::ColumnAction;
    use crate::frame::{Decoder, Encoder, EncoderConfig, Limits};

    /// Excludes `secret`, masks `email` with a toy "hash" (the text reversed) that shows
    /// what was hashed.
    struct Rules;

    impl ColumnPolicy for Rules {
        fn actions(&self, _db: &str, _table: &str, names: &[&str]) -> Vec<ColumnAction> {
            names
                .iter()
                .map(|n| match *n {
                    "secret" => ColumnAction::Exclude,
                    "email" => ColumnAction::Mask,
                    _ => ColumnAction::Keep,
                })
                .collect()
        }

        fn mask(&self, text: &[u8], out: &mut String) {
            out.clear();
            out.extend(text.iter().rev().map(|&b| char::from(b)));
        }
    }

    fn table() -> TableSchema {
        TableSchema {
            version: SchemaVersion(7),
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
            ],
            primary_key: vec![0],
        }
    }

    #[test]
    fn snapshot_chunks_apply_column_rules_and_survive_a_frame() {
        let mut b = BatchBuilder::new(ImageMode::Replica);
        b.set_columns(Arc::new(Rules));
        let t = table();
        b.begin_snapshot_chunk(&t).unwrap();
        b.snapshot_row(&[ValueRef::Int(1), ValueRef::Int(99), ValueRef::Text(b"a@b")])
            .unwrap();
        b.snapshot_row(&[ValueRef::Int(2), ValueRef::Int(98), ValueRef::Null])
            .unwrap();
        let at = BinlogPosition {
            file: "binlog.000001".into(),
            pos: 1234,
        };
        b.end_snapshot_chunk(&at).unwrap();
        assert!(b.batch().is_snapshot());

        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut frame = Vec::new();
        enc.encode(b.batch(), &mut frame).unwrap();
        let mut dec = Decoder::new(Limits::default()).unwrap();
        let mut got = ChangeBatch::new(ImageMode::Replica);
        dec.decode(&frame, &mut got).unwrap();
        assert!(got.is_snapshot(), "the flag travels in the frame");
        let section = &got.sections()[0];
        let names: Vec<&str> = section
            .schema()
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["id", "email"], "the excluded column is not shipped");
        let rows: Vec<_> = section
            .changes()
            .map(|c| {
                let a = c.after.unwrap();
                (c.op, a.get(0).unwrap(), a.get(1).unwrap())
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Op::Insert, ValueRef::Int(1), ValueRef::Text(b"b@a")),
                (Op::Insert, ValueRef::Int(2), ValueRef::Null),
            ]
        );

        // Clearing ends the snapshot batch: the next one starts unmarked.
        b.clear_batch().unwrap();
        assert!(!b.batch().is_snapshot());
    }

    #[test]
    fn a_snapshot_statement_is_a_snapshot_frame_of_its_own() {
        let mut b = BatchBuilder::new(ImageMode::Replica);
        let t = table();
        let at = BinlogPosition {
            file: "binlog.000002".into(),
            pos: 99,
        };
        let ddl = Ddl {
            sql: b"TRUNCATE TABLE `d`.`t`".to_vec(),
            ..Ddl::default()
        };
        b.begin_snapshot_chunk(&t).unwrap();
        let e = b.snapshot_ddl(&ddl, &at).unwrap_err();
        assert!(e.to_string().contains("a snapshot chunk is open"), "{e}");
        b.end_snapshot_chunk(&at).unwrap();
        b.clear_batch().unwrap();

        b.snapshot_ddl(&ddl, &at).unwrap();
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut frame = Vec::new();
        enc.encode(b.batch(), &mut frame).unwrap();
        let mut dec = Decoder::new(Limits::default()).unwrap();
        let mut got = ChangeBatch::new(ImageMode::Replica);
        let h = dec.decode(&frame, &mut got).unwrap();
        assert_eq!(h.version, crate::frame::VERSION_DDL);
        assert!(got.is_snapshot(), "marked as the snapshot's own statement");
        assert_eq!(got.ddl(), Some(&ddl));
        assert_eq!(got.change_count(), 0);
        let txn = &got.transactions()[0];
        assert_eq!((txn.gtid, txn.end_pos), (None, 99));
        assert_eq!(got.files()[txn.file as usize], "binlog.000002");
    }

    #[test]
    fn excluding_a_key_column_is_a_clear_error() {
        struct NoKey;
        impl ColumnPolicy for NoKey {
            fn actions(&self, _: &str, _: &str, names: &[&str]) -> Vec<ColumnAction> {
                names
                    .iter()
                    .map(|n| {
                        if *n == "id" {
                            ColumnAction::Exclude
                        } else {
                            ColumnAction::Keep
                        }
                    })
                    .collect()
            }
            fn mask(&self, _: &[u8], _: &mut String) {}
        }
        let mut b = BatchBuilder::new(ImageMode::Replica);
        b.set_columns(Arc::new(NoKey));
        let e = b.begin_snapshot_chunk(&table()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`id` of `d.t` is part of the primary key"),
            "{e}"
        );
    }

    #[test]
    fn json_scratch_starts_afresh_for_every_value() {
        // Two JSON values in a row must not run together in the reused scratch.
        let mut text = String::new();
        let doc = [0x0c_u8, 0x01, b'a']; // JSON string "a"
        let j = outflow_binlog::value::json::JsonBinary(&doc);
        let first = value_ref(&Value::Json(j), outflow_core::ValueKind::Json, &mut text)
            .map(|v| format!("{v:?}"))
            .unwrap();
        let second = value_ref(&Value::Json(j), outflow_core::ValueKind::Json, &mut text)
            .map(|v| format!("{v:?}"))
            .unwrap();
        assert_eq!(first, second);
    }
}

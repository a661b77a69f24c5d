//! The whole egress codec path in one sans-IO object: binlog events in, frames out.
//!
//! `binlog decode -> BatchBuilder -> (Compactor) -> Encoder`. [`Pipeline`] is the
//! [`Visitor`] a `Walker` feeds; the live source and `outflow estimate` both drive it, so
//! the estimate measures exactly what the wire will carry. A batch is cut at the first transaction boundary after it covers
//! [`PipelineConfig::batch_bytes`] of binlog, or when the caller calls
//! [`Pipeline::flush`] (the live source does on a timer, passing no clock in here). A DDL
//! statement ends its batch: the batch (rows before it, then the DDL) is encoded at once,
//! so rows after it go to the next frame and every frame's rows fit one schema per table.
//!
//! A transaction larger than [`PipelineConfig::split_bytes`] of binlog is cut into parts
//! (see `crate::frame`, "Transactions in parts"): once the open transaction's events in the
//! batch reach that size, the batch is encoded with the transaction's part so far, and the
//! next batch carries on with it. So a batch, and the memory for it here and at the sink,
//! stays near `split_bytes` (plus one event) whatever the transaction's size. The cut falls
//! after an event, never inside the events nested in a TRANSACTION_PAYLOAD (those arrive
//! together, already in memory), so one event yields at most one frame. Frames with parts
//! are never compacted: a sink may have to drop a part (the source side restarted inside
//! the transaction), and a compacted frame's transactions cannot be told apart.

use std::collections::HashMap;
use std::sync::Arc;

use outflow_binlog::walk::{RowsContext, Visitor};
use outflow_binlog::{Decoded, RowIter, RowsEvent, TableInfo};
use outflow_core::{BinlogPosition, ChangeBatch, Ddl, ImageMode, TableSchema, ValueRef};

use crate::builder::{BatchBuilder, BuildError, RowGate, StatementPolicy};
use crate::columns::ColumnPolicy;
use crate::compact::{CompactError, Compactor};
use crate::frame::{EncodeError, Encoder, EncoderConfig};

/// Settings of the whole path.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Which images to ship (default replica).
    pub mode: ImageMode,
    /// Net-change compaction per batch (default off: streaming).
    pub compaction: bool,
    /// Binlog bytes a batch covers before it is cut at the next commit (default 1 MiB for
    /// streaming; batch shipping wants tens of MiB).
    pub batch_bytes: u64,
    /// Binlog bytes of one transaction a batch carries before the batch is cut inside it
    /// and the transaction continues in the next (default 16 MiB; see the module docs).
    pub split_bytes: u64,
    /// Frame encoder settings.
    pub encoder: EncoderConfig,
    /// Keep frames for [`Pipeline::drain_frames`] (default); off, they are only counted
    /// (estimates, benches).
    pub keep_frames: bool,
    /// Data changes logged as statements: stop (default) or skip.
    pub on_statement: StatementPolicy,
    /// Ship DDL statements (default); off, they only advance the position, for a target
    /// whose schema is managed elsewhere.
    pub ship_ddl: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            mode: ImageMode::Replica,
            compaction: false,
            batch_bytes: 1 << 20,
            split_bytes: 16 << 20,
            encoder: EncoderConfig::default(),
            keep_frames: true,
            on_statement: StatementPolicy::Stop,
            ship_ddl: true,
        }
    }
}

/// Why the path stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Turning events into changes failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Compaction found an inconsistent change sequence.
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl From<outflow_binlog::DecodeError> for PipelineError {
    fn from(e: outflow_binlog::DecodeError) -> Self {
        PipelineError::Build(BuildError::Decode(e))
    }
}

/// Per-table counters, for reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStats {
    /// Row changes read from the binlog.
    pub rows_in: u64,
    /// Bytes of the table's row events in the binlog.
    pub binlog_bytes: u64,
    /// Row changes shipped (after minimisation and compaction).
    pub changes_out: u64,
    /// Bytes of the table's sections in the payloads, before zstd.
    pub payload_bytes: u64,
    /// Its share of the wire bytes: payload bytes times each frame's compression ratio.
    pub wire_bytes: f64,
    /// Whether the table's primary key was known.
    pub primary_key: bool,
}

/// Totals since the pipeline started.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Frames produced.
    pub frames: u64,
    /// Bytes of all frames.
    pub wire_bytes: u64,
    /// Payload bytes before zstd.
    pub payload_bytes: u64,
    /// Transactions shipped.
    pub transactions: u64,
    /// DDL statements shipped.
    pub ddl: u64,
    /// Data changes logged as statements, skipped by [`StatementPolicy::Skip`].
    pub statements_skipped: u64,
    /// Row changes read.
    pub rows_in: u64,
    /// Row changes shipped.
    pub changes_out: u64,
    /// Per `db.table`.
    pub tables: HashMap<String, TableStats>,
    /// First and last event timestamps seen (seconds since the epoch).
    pub time_span: Option<(u32, u32)>,
}

fn is_name(name: &str, (db, table): (&str, &str)) -> bool {
    name.len() == db.len() + 1 + table.len()
        && name.starts_with(db)
        && name.ends_with(table)
        && name.as_bytes()[db.len()] == b'.'
}

/// Binlog events in, frames out; see the module documentation.
pub struct Pipeline {
    cfg: PipelineConfig,
    last_event_size: u64,
    /// Binlog bytes of the open transaction's events in the batch (0 outside one).
    txn_bytes: u64,
    /// Offset of the last TRANSACTION_PAYLOAD: its nested events share it.
    payload_at: Option<u64>,
    builder: BatchBuilder,
    compactor: Compactor,
    compacted: ChangeBatch,
    encoder: Encoder,
    out: Vec<u8>,
    frame_ends: Vec<usize>,
    stats: Stats,
}

impl Pipeline {
    /// A pipeline; feed it with a `Walker` (`walker.process(pos, event, &mut pipeline)`).
    pub fn new(cfg: PipelineConfig) -> Result<Pipeline, PipelineError> {
        let mut builder = BatchBuilder::new(cfg.mode);
        builder.set_on_statement(cfg.on_statement);
        builder.set_ship_ddl(cfg.ship_ddl);
        Ok(Pipeline {
            last_event_size: 0,
            txn_bytes: 0,
            payload_at: None,
            builder,
            compactor: Compactor::default(),
            compacted: ChangeBatch::new(cfg.mode),
            encoder: Encoder::new(cfg.encoder.clone())?,
            out: Vec::new(),
            frame_ends: Vec::new(),
            stats: Stats::default(),
            cfg,
        })
    }

    /// Names the binlog file the next events come from.
    pub fn set_file(&mut self, name: &str) {
        self.builder.set_file(name);
    }

    /// Applies column exclusion and masking ([`crate::columns`]) from now on.
    pub fn set_columns(&mut self, policy: Arc<dyn ColumnPolicy>) {
        self.builder.set_columns(policy);
    }

    /// Opens a chunk of initial-snapshot rows of `table` (see
    /// [`BatchBuilder::begin_snapshot_chunk`]); a pipeline carries either snapshot chunks
    /// or binlog events, never both in one batch.
    pub fn begin_snapshot_chunk(&mut self, table: &TableSchema) -> Result<(), PipelineError> {
        Ok(self.builder.begin_snapshot_chunk(table)?)
    }

    /// One snapshot row, values in the source table's column order.
    pub fn snapshot_row(&mut self, values: &[ValueRef<'_>]) -> Result<(), PipelineError> {
        self.builder.snapshot_row(values)?;
        self.stats.rows_in += 1;
        Ok(())
    }

    /// Closes the chunk and encodes it as one frame (for [`Pipeline::drain_frames`]).
    /// `at` is the table's snapshot position.
    pub fn end_snapshot_chunk(&mut self, at: &BinlogPosition) -> Result<(), PipelineError> {
        self.builder.end_snapshot_chunk(at)?;
        self.encode_batch()
    }

    /// Encodes the snapshot's own statement `ddl` as a frame of its own, marked as
    /// snapshot (see [`BatchBuilder::snapshot_ddl`]); `at` is the table's snapshot position.
    pub fn snapshot_ddl(&mut self, ddl: &Ddl, at: &BinlogPosition) -> Result<(), PipelineError> {
        self.builder.snapshot_ddl(ddl, at)?;
        self.encode_batch()
    }

    /// [`Visitor::rows`] taking only the changes `gate` admits
    /// ([`BatchBuilder::rows_gated`]).
    pub fn rows_gated(
        &mut self,
        ctx: RowsContext<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
        gate: &mut RowGate<'_>,
    ) -> Result<(), PipelineError> {
        let before = self.builder.rows_seen();
        self.builder.rows_gated(ctx, table, rows, gate)?;
        self.stats.rows_in += self.builder.rows_seen() - before;
        Ok(())
    }

    /// The frame encoder, for what it says about the last frame (dictionary samples).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The next standalone statement concerns only tables the caller filters out: a DDL is
    /// then not shipped (see [`BatchBuilder::exclude_next_statement`]).
    pub fn exclude_next_statement(&mut self) {
        self.builder.exclude_next_statement();
    }

    /// Totals so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether [`Pipeline::flush`] would produce a frame now: committed transactions are
    /// gathered and none is open.
    pub fn can_flush(&self) -> bool {
        !self.builder.in_transaction() && !self.builder.batch().transactions().is_empty()
    }

    /// Encodes the committed transactions gathered so far, if any (an open transaction
    /// stays for the next batch). Returns whether a frame was produced.
    pub fn flush(&mut self) -> Result<bool, PipelineError> {
        if !self.can_flush() {
            return Ok(false);
        }
        self.encode_batch()?;
        Ok(true)
    }

    /// Hands every complete frame to `f`, in order, and forgets them.
    pub fn drain_frames(&mut self, mut f: impl FnMut(&[u8])) {
        let mut start = 0;
        for &end in &self.frame_ends {
            f(&self.out[start..end]);
            start = end;
        }
        self.out.clear();
        self.frame_ends.clear();
    }

    fn encode_batch(&mut self) -> Result<(), PipelineError> {
        // Snapshot rows are inserts of distinct keys: nothing to compact. Parts of a
        // transaction stay as they are (see the module documentation).
        let b = self.builder.batch();
        let batch = if self.cfg.compaction && !b.is_snapshot() && !b.continued() && !b.continues() {
            self.compactor
                .compact(self.builder.batch(), &mut self.compacted)?;
            &self.compacted
        } else {
            self.builder.batch()
        };
        let before = self.out.len();
        self.encoder.encode(batch, &mut self.out)?;
        let wire = (self.out.len() - before) as u64;
        let raw = self.encoder.last_raw_len() as u64;
        if self.cfg.keep_frames {
            self.frame_ends.push(self.out.len());
        } else {
            self.out.truncate(before);
        }
        let s = &mut self.stats;
        s.frames += 1;
        s.wire_bytes += wire;
        s.payload_bytes += raw;
        s.transactions += batch.complete_transactions().len() as u64;
        s.ddl += u64::from(batch.ddl().is_some());
        s.changes_out += batch.change_count() as u64;
        let ratio = if raw == 0 {
            0.0
        } else {
            wire as f64 / raw as f64
        };
        for (section, &bytes) in batch
            .sections()
            .iter()
            .zip(self.encoder.last_section_sizes())
        {
            let schema = section.schema();
            let key = (schema.db.as_str(), schema.table.as_str());
            let t = match s.tables.iter_mut().find(|(k, _)| is_name(k, key)) {
                Some((_, t)) => t,
                None => s.tables.entry(schema.qualified_name()).or_default(),
            };
            t.changes_out += section.len() as u64;
            t.payload_bytes += bytes as u64;
            t.wire_bytes += bytes as f64 * ratio;
        }
        self.builder.clear_batch()?;
        Ok(())
    }
}

impl Visitor for Pipeline {
    type Error = PipelineError;

    fn event(&mut self, pos: u64, d: &Decoded<'_>) -> Result<(), PipelineError> {
        self.last_event_size = u64::from(d.header.event_size);
        let ts = d.header.timestamp;
        if ts != 0 {
            let span = self.stats.time_span.get_or_insert((ts, ts));
            span.0 = span.0.min(ts);
            span.1 = span.1.max(ts);
        }
        if let outflow_binlog::Event::TransactionPayload(_) = d.event {
            self.payload_at = Some(pos);
        }
        self.builder.event(pos, d)?;
        self.stats.statements_skipped = self.builder.statements_skipped();
        if self.builder.in_transaction() {
            self.txn_bytes += self.last_event_size;
        } else {
            self.txn_bytes = 0;
        }
        if self.builder.batch().ddl().is_some()
            || (!self.builder.in_transaction()
                && self.builder.batch_binlog_bytes() >= self.cfg.batch_bytes)
        {
            self.encode_batch()?;
        } else if self.builder.in_transaction()
            && self.txn_bytes >= self.cfg.split_bytes
            && self.payload_at != Some(pos)
        {
            self.builder.cut_transaction()?;
            self.encode_batch()?;
            self.txn_bytes = 0;
        }
        Ok(())
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), PipelineError> {
        let before = self.builder.rows_seen();
        self.builder.rows(ctx, event, table, rows)?;
        let n = self.builder.rows_seen() - before;
        // Linear in the number of tables: reports cover few tables, and this keeps a
        // string hash off the per-event path.
        let key = (table.schema.as_str(), table.table.as_str());
        let t = match self.stats.tables.iter_mut().find(|(k, _)| is_name(k, key)) {
            Some((_, t)) => t,
            None => self
                .stats
                .tables
                .entry(format!("{}.{}", key.0, key.1))
                .or_default(),
        };
        t.rows_in += n;
        t.binlog_bytes += self.last_event_size;
        t.primary_key = !table.primary_key.is_empty();
        self.stats.rows_in += n;
        Ok(())
    }
}

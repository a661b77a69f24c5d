//! The initial snapshot on the source side (`--from start`): every table in scope read by
//! `outflow_source::snapshot`, its rows turned into frames by the same codec (column rules
//! included) and appended to the same spool as the binlog stream that follows.
//!
//! # Durability and resume
//!
//! Each chunk of rows becomes one frame, marked as snapshot rows so that the sink applies
//! them as upserts. The chunk is made durable with the discipline of the stream
//! ([`super::source`]): the [`SourceState`] naming the frame's sequence number is saved
//! (with `snapshot` set), then the frame is appended to the spool, and only once the
//! append returned does `chunk_done` return and the snapshot library save its progress
//! file. A crash between any two steps re-reads at most that chunk: the sink upserts its
//! rows again, after dropping the copy it may hold already (see below). On start, a state with `snapshot` set means "continue the snapshot":
//! finished tables are skipped and a table cut short continues after its last key (or is
//! read again, see below).
//!
//! When the snapshot is done, streaming starts at its earliest table position and the
//! [`Handoff`] (kept in the progress file, so it survives restarts) skips, per table and
//! key range, the changes the rows already hold.
//!
//! # A table read again
//!
//! A table cut short is read again, wholly or in part, in a new consistent snapshot whose
//! position makes the stream skip the table's earlier changes, so the target must first
//! forget the rows of the earlier read that the source may have changed or deleted since
//! ([`SnapshotSink::begin_table`] with a [`TableStart`] other than `Fresh`; the library's
//! docs give the argument):
//!
//! - a table whose key is not all integers (or that has none, or whose first chunk never
//!   made it into the progress file) is read again from its start, after
//!   ``TRUNCATE TABLE `db`.`t` ``;
//! - a table with an integer key continues after its last recorded key `K`, after
//!   ``DELETE FROM `db`.`t` WHERE (key columns) > (K)``, which drops the target's copy of
//!   a chunk that reached the spool before a crash but never reached the progress file.
//!
//! `begin_table` (asynchronous, like `chunk_done`, so it can wait for the spool) ships the
//! statement ([`TableStart::forget_statement`]) as a DDL frame of its own, with the same
//! discipline as a chunk (state saved, then the spool append), before the table's progress
//! is saved and before any of its new rows; an empty table gets it too. The frame is
//! marked as snapshot, like the chunks, carries no GTID and the table's new snapshot
//! position as its end (as its chunks do), and the sink always runs it whatever its DDL
//! policy says: it is the snapshot's own statement, not the user's, and the sink accepts
//! exactly these two shapes in a snapshot frame. A crash before the progress is saved
//! ships it again on the next run, and a sink that crashed between running it and moving
//! its checkpoint runs it again: twice is harmless, since the rows it drops are all read
//! again after it.
//!
//! Crash tests reach the window between a chunk's spool append and its progress save
//! through [`EXIT_AFTER_CHUNK_ENV`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use outflow_codec::{Pipeline, PipelineConfig};
use outflow_core::{BinlogPosition, Ddl, TableSchema, ValueRef};
use outflow_replication::{ConnectOptions, StartPosition};
use outflow_source::filter::Filter;
use outflow_source::schema::history::HistoryStore;
use outflow_source::snapshot::{
    self, Handoff, SnapshotConfig, SnapshotProgress, SnapshotSink, TableStart,
};
use outflow_spool::Spool;

use super::source::{SourceProgress, SourceState};

/// Databases never snapshotted: the server's own.
const SYSTEM_DBS: [&str; 4] = ["mysql", "sys", "information_schema", "performance_schema"];

/// Test hook, for crash tests only: with `N` here, the process exits (code
/// [`EXIT_AFTER_CHUNK_CODE`], no cleanup) right after the `N`th snapshot chunk of this run
/// is appended to the spool, before the snapshot library saves that chunk's progress: the
/// one window where the spool holds a chunk the progress does not name. The name says
/// `DANGER`: it kills the relay on purpose.
pub const EXIT_AFTER_CHUNK_ENV: &str = "OUTFLOW_DANGER_TEST_EXIT_AFTER_SNAPSHOT_CHUNK";

/// The exit code of the [`EXIT_AFTER_CHUNK_ENV`] hook.
pub const EXIT_AFTER_CHUNK_CODE: i32 = 86;

fn exit_after_chunk() -> Result<Option<u64>> {
    match std::env::var(EXIT_AFTER_CHUNK_ENV) {
        Ok(v) => v
            .parse()
            .map(Some)
            .with_context(|| format!("{EXIT_AFTER_CHUNK_ENV}={v:?}: not a chunk count")),
        Err(_) => Ok(None),
    }
}

/// Where the snapshot's progress (and so the handoff) is kept, beside the source state.
pub fn progress_path(state_dir: &Path) -> PathBuf {
    state_dir.join("snapshot-progress.json")
}

/// The handoff of a finished or interrupted snapshot saved in `state_dir`, if any.
pub fn saved_handoff(state_dir: &Path) -> Result<Option<Handoff>> {
    let path = progress_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    let p = SnapshotProgress::load(&path).context("reading the snapshot progress")?;
    Ok(Some(p.handoff()))
}

/// Feeds snapshot chunks through the codec into the spool (see the module docs).
struct SpoolSink {
    pipeline: Pipeline,
    spool: Spool,
    state_dir: PathBuf,
    schema_seq: u64,
    /// Snapshot position of each table begun.
    positions: HashMap<String, BinlogPosition>,
    open: bool,
    progress: Arc<Mutex<SourceProgress>>,
    /// Snapshot chunks appended to the spool by this process.
    chunks_shipped: u64,
    /// From [`EXIT_AFTER_CHUNK_ENV`] (tests only).
    exit_after_chunk: Option<u64>,
}

impl SpoolSink {
    /// Appends the frames the pipeline holds as one spool record, with the stream's
    /// discipline: the state naming the record's sequence number is saved first.
    async fn ship(&mut self) -> Result<()> {
        let mut record = Vec::new();
        self.pipeline.drain_frames(|f| record.extend_from_slice(f));
        if record.is_empty() {
            return Ok(());
        }
        let state = SourceState {
            seq: self.spool.next_seq(),
            before: "start".to_string(),
            after: "start".to_string(),
            schema_seq: self.schema_seq,
            snapshot: true,
        };
        state.save(&self.state_dir)?;
        let len = record.len() as u64;
        self.spool
            .append(Bytes::from(record))
            .await
            .context("spool append")?;
        if let Ok(mut p) = self.progress.lock() {
            p.frames += 1;
            p.wire_bytes += len;
        }
        Ok(())
    }

    async fn begin_table_inner(
        &mut self,
        table: &TableSchema,
        at: &BinlogPosition,
        start: &TableStart,
    ) -> Result<()> {
        self.positions.insert(table.qualified_name(), at.clone());
        if let Some(statement) = start.forget_statement(table) {
            tracing::info!(
                table = %table.qualified_name(),
                %statement,
                "snapshot: the table is read again (from its start, or after its last \
                 recorded key); the target forgets the rows of the earlier read first"
            );
            let ddl = Ddl {
                db: None,
                sql: statement.to_string().into_bytes(),
                charset: None,
                sql_mode: None,
            };
            self.pipeline.snapshot_ddl(&ddl, at)?;
            self.ship().await?;
        }
        Ok(())
    }

    async fn chunk_done_inner(&mut self, table: &TableSchema) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let at = self
            .positions
            .get(&table.qualified_name())
            .with_context(|| format!("no snapshot position for {}", table.qualified_name()))?;
        self.pipeline.end_snapshot_chunk(at)?;
        self.ship().await?;
        self.chunks_shipped += 1;
        if self.exit_after_chunk == Some(self.chunks_shipped) {
            // Test hook (see `EXIT_AFTER_CHUNK_ENV`): the chunk is durable in the spool and
            // its progress not saved, the window a crash can hit.
            tracing::warn!(
                chunks = self.chunks_shipped,
                "{EXIT_AFTER_CHUNK_ENV}: exiting before the snapshot progress is saved"
            );
            std::process::exit(EXIT_AFTER_CHUNK_CODE);
        }
        Ok(())
    }
}

impl SnapshotSink for SpoolSink {
    type Error = String;

    async fn begin_table(
        &mut self,
        table: &TableSchema,
        at: &BinlogPosition,
        start: &TableStart,
    ) -> Result<(), String> {
        self.begin_table_inner(table, at, start)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    fn row(&mut self, table: &TableSchema, values: &[ValueRef<'_>]) -> Result<(), String> {
        if !self.open {
            self.pipeline
                .begin_snapshot_chunk(table)
                .map_err(|e| e.to_string())?;
            self.open = true;
        }
        self.pipeline
            .snapshot_row(values)
            .map_err(|e| e.to_string())
    }

    async fn chunk_done(&mut self, table: &TableSchema) -> Result<(), String> {
        self.chunk_done_inner(table)
            .await
            .map_err(|e| format!("{e:#}"))
    }
}

/// Runs (or continues) the snapshot of every table in scope into `spool`; returns where
/// the stream starts and the handoff it must respect.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: PipelineConfig,
    chunk_rows: u32,
    filter: &Filter,
    opts: &ConnectOptions,
    state_dir: &Path,
    history_dir: &Path,
    spool: &Spool,
    progress: Arc<Mutex<SourceProgress>>,
) -> Result<(StartPosition, Handoff)> {
    let mut conn = super::source::sql_conn(opts).await?;
    let (tracker, schema_seq) = if HistoryStore::exists(history_dir) {
        let (_, tracker) = HistoryStore::open(history_dir, filter.clone())
            .context("opening the schema history")?;
        let seq = tracker.seq();
        (tracker, seq)
    } else {
        let mut tracker =
            outflow_source::schema::load::tracker_from_server(&mut conn, filter.clone())
                .await
                .context("loading the schema")?;
        HistoryStore::create(history_dir, &mut tracker).context("creating the schema history")?;
        let seq = tracker.seq();
        (tracker, seq)
    };
    let _ = conn.disconnect().await;
    let tables: Vec<TableSchema> = tracker
        .state()
        .tables
        .iter()
        .filter(|(db, _)| !SYSTEM_DBS.contains(&db.as_str()))
        .flat_map(|(db, t)| {
            t.values()
                .filter(|t| filter.wants_table(db, &t.schema.table))
                .map(|t| t.schema.clone())
        })
        .collect();
    let mut pipeline = Pipeline::new(cfg)?;
    pipeline.set_columns(Arc::new(filter.clone()));
    let sink = SpoolSink {
        pipeline,
        spool: spool.clone(),
        state_dir: state_dir.to_path_buf(),
        schema_seq,
        positions: HashMap::new(),
        open: false,
        progress: progress.clone(),
        chunks_shipped: 0,
        exit_after_chunk: exit_after_chunk()?,
    };
    let pool = mysql_async::Pool::new(super::source::sql_opts(opts));
    tracing::info!(tables = tables.len(), "initial snapshot");
    let on_progress = {
        let progress = progress.clone();
        move |p: &snapshot::Progress| {
            if let Ok(mut s) = progress.lock() {
                s.rows = p.rows;
                s.snapshot = Some(p.clone());
            }
        }
    };
    let result = snapshot::run(
        &pool,
        tables,
        &SnapshotConfig {
            chunk_rows,
            ..SnapshotConfig::default()
        },
        Some(&progress_path(state_dir)),
        sink,
        on_progress,
    )
    .await;
    let _ = pool.disconnect().await;
    let (outcome, _) = result.context("initial snapshot")?;
    let start = match (&outcome.start.gtid, &outcome.start.binlog) {
        (outflow_core::GtidState::Maria(p), _) => format!("gtid:{p}")
            .parse()
            .map_err(|e: String| anyhow::anyhow!("snapshot GTID position {p}: {e}"))?,
        (_, Some(b)) => StartPosition::File {
            file: b.file.clone(),
            pos: b.pos,
        },
        // Nothing in scope: nothing to hand over.
        (_, None) => StartPosition::Now,
    };
    tracing::info!(rows = outcome.rows, from = %start, "initial snapshot done");
    Ok((start, outcome.handoff))
}

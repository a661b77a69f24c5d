//! The source side: binlog -> schema tracking and filters -> codec -> spool -> QUIC sender.
//!
//! The loop is thin glue over the crates that own the logic: `outflow-replication` (the
//! session, reconnects that replay nothing twice), `outflow-source` (schema tracking,
//! filters), `outflow-codec` (batches and frames), `outflow-spool` and `outflow-transport`.
//!
//! # Where a restart resumes
//!
//! A frame leaves this loop only through the spool, and the position after the frame's last
//! transaction is what a restart must resume from. Both are made durable in this order:
//! 1. [`SourceState`] is written (atomically) naming the sequence number the frame will get
//!    and the positions before and after it;
//! 2. the frame is appended to the spool (fsynced per its policy).
//!
//! On start, if the spool's last sequence number is the one the state names, the frame made
//! it and streaming resumes after it; if it is one less, the append did not happen and
//! streaming resumes from the position before it. Anything else is an error: the state and
//! the spool do not belong together. The schema history is saved before the state that
//! refers to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use outflow_binlog::walk::{RowsContext, Visitor};
use outflow_binlog::{Decoded, RowIter, RowsEvent, TableInfo, Value};
use outflow_codec::{Pipeline, PipelineConfig, PipelineError};
use outflow_core::{BinlogPosition, ImageMode};
use outflow_replication::{Backoff, ConnectOptions, Replica, ReplicaError, StartPosition};
use outflow_source::filter::Filter;
use outflow_source::schema::history::HistoryStore;
use outflow_source::schema::{EventPosition, SchemaError};
use outflow_source::snapshot::{cmp_binlog, Handoff};
use outflow_source::tables::SourceTables;
use outflow_spool::Spool;

use crate::config::{Mode, Settings, SourceSettings};

/// What a restart needs, written before every spool append (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceState {
    /// Sequence number of the frame being appended.
    pub seq: u64,
    /// Where to resume if that frame is not in the spool.
    pub before: String,
    /// Where to resume if it is.
    pub after: String,
    /// Schema history entry in force after the frame.
    pub schema_seq: u64,
    /// The frame holds initial-snapshot rows and the snapshot is not finished: a restart
    /// continues it ([`super::snapshot`]) rather than streaming from `after`.
    #[serde(default)]
    pub snapshot: bool,
}

impl SourceState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("source-state.json")
    }

    /// The saved state, if any.
    pub fn load(dir: &Path) -> Result<Option<SourceState>> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces the saved state durably: write a temporary file, fsync, rename, fsync the
    /// directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join("source-state.json.tmp");
        let bytes = serde_json::to_vec(self)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Where to resume given the spool's last sequence number, per the module docs.
    pub fn resume(&self, spool_last: u64) -> Result<(&str, u64)> {
        if spool_last == self.seq {
            Ok((&self.after, self.seq))
        } else if spool_last + 1 == self.seq {
            Ok((&self.before, spool_last))
        } else {
            bail!(
                "the source state names frame {} but the spool ends at {}: the spool \
                 directory and the state do not belong together",
                self.seq,
                spool_last
            )
        }
    }
}

/// The visitor the replica session drives: tracker and filters first, then the snapshot
/// handoff, then the codec.
struct SourceVisitor {
    tables: SourceTables,
    pipeline: Pipeline,
    file: String,
    at: EventPosition,
    binlog_bytes: u64,
    /// What the initial snapshot already holds, until the stream passes its last position.
    handoff: Option<Handoff>,
    /// Start of the event being visited (for the handoff).
    event_at: BinlogPosition,
    /// Scratch for `db.table`.
    name: String,
}

impl SourceVisitor {
    /// Whether the rows of `table` in the current event apply on top of the snapshot:
    /// `Some(true)` all, `Some(false)` none, `None` decided row by row (by key).
    fn handoff_applies(&mut self, table: &TableInfo) -> Option<bool> {
        let Some(h) = &self.handoff else {
            return Some(true);
        };
        self.name.clear();
        self.name.push_str(&table.schema);
        self.name.push('.');
        self.name.push_str(&table.table);
        h.applies(&self.name, &self.event_at, || None)
    }
}

/// The integer primary key of a row image, for the handoff (`None` if not all integers).
fn int_key(table: &TableInfo, image: &[Option<Value<'_>>]) -> Option<Vec<i128>> {
    table
        .primary_key
        .iter()
        .map(|&k| match image.get(k)? {
            Some(Value::Int(i)) => Some(i128::from(*i)),
            Some(Value::UInt(u)) => Some(i128::from(*u)),
            _ => None,
        })
        .collect()
}

/// Why the visitor stopped.
#[derive(Debug, thiserror::Error)]
enum VisitError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Codec(#[from] PipelineError),
}

impl From<outflow_binlog::DecodeError> for VisitError {
    fn from(e: outflow_binlog::DecodeError) -> Self {
        VisitError::Codec(e.into())
    }
}

impl Visitor for SourceVisitor {
    type Error = VisitError;

    fn event(&mut self, pos: u64, d: &Decoded<'_>) -> Result<(), VisitError> {
        if let outflow_binlog::Event::Rotate { next_file, .. } = &d.event {
            self.file = String::from_utf8_lossy(next_file).into_owned();
        }
        self.binlog_bytes += u64::from(d.header.event_size);
        if let Some(h) = &self.handoff {
            if self.event_at.file != self.file {
                self.event_at.file.clone_from(&self.file);
            }
            self.event_at.pos = pos;
            // Past the last snapshot position every change applies: stop checking.
            if h.end()
                .is_none_or(|e| cmp_binlog(&self.event_at, e).is_ge())
            {
                tracing::info!(at = %self.event_at, "stream past the snapshot handoff");
                self.handoff = None;
            }
        }
        self.at.binlog = Some(outflow_core::BinlogPosition {
            file: self.file.clone(),
            pos: pos + u64::from(d.header.event_size),
        });
        self.tables.on_event(&self.at, d)?;
        if let outflow_binlog::Event::Query(q) = &d.event {
            // DDL on tables the filters leave out only advances the position.
            if !q.is_begin()
                && !q.is_commit()
                && !q.is_rollback()
                && !self.tables.ships_statement(q)
            {
                self.pipeline.exclude_next_statement();
            }
        }
        self.pipeline.event(pos, d)?;
        Ok(())
    }

    fn wants(&mut self, table: &TableInfo) -> bool {
        self.tables.wants(table)
            && self.handoff_applies(table) != Some(false)
            && self.pipeline.wants(table)
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), VisitError> {
        match self.handoff_applies(table) {
            Some(true) => Ok(self.pipeline.rows(ctx, event, table, rows)?),
            Some(false) => Ok(()),
            None => {
                let SourceVisitor {
                    pipeline,
                    handoff,
                    event_at,
                    name,
                    ..
                } = self;
                let Some(h) = handoff.as_ref() else {
                    return Ok(self.pipeline.rows(ctx, event, table, rows)?);
                };
                let mut gate = |image: &[Option<Value<'_>>]| {
                    h.applies(name, event_at, || int_key(table, image))
                };
                Ok(pipeline.rows_gated(ctx, table, rows, &mut gate)?)
            }
        }
    }
}

/// The replication options for `url`, with the configured password, TLS and server_id.
pub fn connect_options(
    db: &crate::config::Database,
    s: &SourceSettings,
    non_blocking: bool,
) -> Result<ConnectOptions> {
    let mut o = ConnectOptions::from_url(&db.url)
        .map_err(|e| anyhow::anyhow!("{} ({})", e, db.redacted()))?;
    if let Some(p) = &db.password {
        o.password = outflow_replication::Password(p.expose().to_string());
    }
    o.server_id = s.server_id;
    o.heartbeat = s.heartbeat;
    o.non_blocking = non_blocking;
    o.tls = outflow_replication::TlsOptions {
        mode: s.tls_mode,
        ca: s.tls_ca.clone(),
        cert: s.tls_identity.as_ref().map(|(c, _)| c.clone()),
        key: s.tls_identity.as_ref().map(|(_, k)| k.clone()),
        require_tls13: s.tls13_only,
    };
    Ok(o)
}

/// An SQL connection to the same server, for schema loading.
pub(crate) async fn sql_conn(o: &ConnectOptions) -> Result<mysql_async::Conn> {
    mysql_async::Conn::new(sql_opts(o))
        .await
        .with_context(|| format!("SQL connection to {} for the schema", o.addr()))
}

/// SQL connection options for the server of `o` (same user, password and TLS).
pub(crate) fn sql_opts(o: &ConnectOptions) -> mysql_async::OptsBuilder {
    let mut b = mysql_async::OptsBuilder::default()
        .ip_or_hostname(o.host.clone())
        .tcp_port(o.port)
        .user(Some(o.user.clone()))
        .pass(Some(o.password.0.clone()));
    if o.tls.mode != outflow_replication::TlsMode::Disabled {
        let mut ssl = mysql_async::SslOpts::default();
        if let Some(ca) = &o.tls.ca {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        let verify = matches!(
            o.tls.mode,
            outflow_replication::TlsMode::VerifyCa | outflow_replication::TlsMode::VerifyIdentity
        );
        ssl = ssl
            .with_danger_accept_invalid_certs(!verify)
            .with_danger_skip_domain_validation(
                o.tls.mode != outflow_replication::TlsMode::VerifyIdentity,
            );
        b = b.ssl_opts(Some(ssl));
    }
    b
}

/// The source side's progress, for the progress line and tests.
#[derive(Debug, Default, Clone)]
pub struct SourceProgress {
    /// Frames appended to the spool.
    pub frames: u64,
    /// Binlog bytes read.
    pub binlog_bytes: u64,
    /// Frame bytes appended.
    pub wire_bytes: u64,
    /// Row changes read (snapshot rows included).
    pub rows: u64,
    /// The initial snapshot's progress, while one runs.
    pub snapshot: Option<outflow_source::snapshot::Progress>,
}

/// Streams the source into `spool` until `stop_at_end` finds the end of the binlog (tests,
/// demo) or forever. Resumes from the state in `state_dir`.
pub async fn stream_to_spool(
    settings: &Settings,
    state_dir: &Path,
    spool: &Spool,
    stop_at_end: bool,
    progress: Arc<std::sync::Mutex<SourceProgress>>,
) -> Result<()> {
    let s = settings
        .source
        .as_ref()
        .context("the source side needs --source")?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let filter = Filter::new(&settings.filters).context("filters")?;
    let history_dir = state_dir.join("schema-history");

    let saved = SourceState::load(state_dir)?;
    let spool_last = spool.next_seq() - 1;
    // Kept until the stream passes the snapshot's last position, across restarts.
    let mut handoff = super::snapshot::saved_handoff(state_dir)?;
    let snapshot_now = match &saved {
        Some(state) if state.snapshot => {
            state.resume(spool_last)?;
            true
        }
        Some(_) => false,
        None => {
            if s.snapshot && spool_last != 0 {
                bail!(
                    "the spool in {} holds frames but no source state was saved beside it",
                    state_dir.display()
                );
            }
            s.snapshot
        }
    };
    let (start, schema_seq): (StartPosition, Option<u64>) = match &saved {
        _ if snapshot_now => {
            let opts = connect_options(&s.servers[0], s, stop_at_end)?;
            let (start, h) = super::snapshot::run(
                pipeline_config(settings),
                s.snapshot_chunk_rows,
                &filter,
                &opts,
                state_dir,
                &history_dir,
                spool,
                progress.clone(),
            )
            .await?;
            handoff = Some(h);
            if let Ok(mut p) = progress.lock() {
                p.snapshot = None;
            }
            (start, None)
        }
        Some(state) => {
            let (text, _) = state.resume(spool_last)?;
            let start = text
                .parse()
                .map_err(|e: String| anyhow::anyhow!("saved position {text:?}: {e}"))?;
            (start, Some(state.schema_seq))
        }
        None => {
            if spool_last != 0 {
                bail!(
                    "the spool in {} holds frames but no source state was saved beside it",
                    state_dir.display()
                );
            }
            (s.from.clone(), None)
        }
    };

    let mut server_index = 0;
    let mut failures_here = 0u32;
    let mut last_resume: Option<StartPosition> = None;
    loop {
        let db = &s.servers[server_index];
        let mut opts = connect_options(db, s, stop_at_end)?;
        // The loop flushes a partial batch only when an event arrives, so an idle source
        // must send heartbeats at least every batch_delay, or the last batch of a burst
        // waits a whole heartbeat period (5 s by default). Dead-link detection keeps the
        // configured period.
        if !settings.batch_delay.is_zero() {
            opts.read_timeout = opts.effective_read_timeout();
            opts.heartbeat = opts.heartbeat.min(settings.batch_delay);
        }
        let from = last_resume.clone().unwrap_or_else(|| start.clone());
        let outcome = stream_from(
            settings,
            state_dir,
            &history_dir,
            spool,
            &opts,
            &from,
            schema_seq,
            filter.clone(),
            progress.clone(),
            &mut last_resume,
            &mut handoff,
        )
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::ServerLost(e)) => {
                failures_here += 1;
                if s.servers.len() < 2 {
                    return Err(e);
                }
                let resume = last_resume.clone().unwrap_or_else(|| start.clone());
                if !matches!(
                    resume,
                    StartPosition::MariaGtid(_) | StartPosition::MySqlGtid(_)
                ) {
                    return Err(e.context(
                        "cannot fail over: the stream is not positioned by GTID (start with \
                         --from gtid:... on a server with GTIDs)",
                    ));
                }
                server_index = (server_index + 1) % s.servers.len();
                tracing::warn!(
                    error = %e,
                    next = %s.servers[server_index].redacted(),
                    from = %resume,
                    "source lost; failing over"
                );
                if failures_here as usize > 3 * s.servers.len() {
                    return Err(e.context("every source server failed"));
                }
            }
        }
    }
}

/// The codec settings of `settings`.
fn pipeline_config(settings: &Settings) -> PipelineConfig {
    let mut cfg = PipelineConfig {
        mode: match settings.mode {
            Mode::Replica => ImageMode::Replica,
            Mode::Full => ImageMode::Full,
        },
        compaction: settings.compaction,
        batch_bytes: settings.batch_bytes,
        split_bytes: settings.split_bytes,
        on_statement: settings.on_statement,
        ..PipelineConfig::default()
    };
    cfg.encoder.level = settings.zstd_level;
    cfg
}

enum Failure {
    /// Give up: configuration, data or position problems.
    Fatal(anyhow::Error),
    /// The server stayed unreachable past the reconnect budget: try the next one.
    ServerLost(anyhow::Error),
}

#[allow(clippy::too_many_arguments)]
async fn stream_from(
    settings: &Settings,
    state_dir: &Path,
    history_dir: &Path,
    spool: &Spool,
    opts: &ConnectOptions,
    from: &StartPosition,
    schema_seq: Option<u64>,
    filter: Filter,
    progress: Arc<std::sync::Mutex<SourceProgress>>,
    last_resume: &mut Option<StartPosition>,
    handoff: &mut Option<Handoff>,
) -> Result<(), Failure> {
    let fatal = Failure::Fatal;
    let failover_after = settings
        .source
        .as_ref()
        .context("the source side needs --source")
        .map_err(fatal)?
        .failover_after;
    let (mut history, tracker) = if HistoryStore::exists(history_dir) {
        match schema_seq {
            Some(seq) => HistoryStore::open_at(history_dir, filter.clone(), seq),
            None => HistoryStore::open(history_dir, filter.clone()),
        }
        .map_err(|e| fatal(anyhow::Error::new(e).context("opening the schema history")))?
    } else {
        let mut conn = sql_conn(opts).await.map_err(Failure::ServerLost)?;
        let mut tracker =
            outflow_source::schema::load::tracker_from_server(&mut conn, filter.clone())
                .await
                .map_err(|e| fatal(anyhow::Error::new(e).context("loading the schema")))?;
        let _ = conn.disconnect().await;
        let history = HistoryStore::create(history_dir, &mut tracker)
            .map_err(|e| fatal(anyhow::Error::new(e).context("creating the schema history")))?;
        (history, tracker)
    };

    let mut replica = match Replica::connect(opts.clone(), from).await {
        Ok(r) => r,
        Err(e) if e.is_retryable() => return Err(Failure::ServerLost(e.into())),
        Err(e) => return Err(fatal(e.into())),
    };
    let tables = SourceTables::new(tracker, filter.clone());
    replica.walker().decoder().set_table_hook(tables.hook());
    let mut pipeline = Pipeline::new(pipeline_config(settings)).map_err(|e| fatal(e.into()))?;
    pipeline.set_columns(Arc::new(filter.clone()));
    let mut visitor = SourceVisitor {
        tables,
        pipeline,
        file: String::new(),
        at: EventPosition::default(),
        binlog_bytes: 0,
        handoff: handoff.clone(),
        event_at: BinlogPosition {
            file: String::new(),
            pos: 0,
        },
        name: String::new(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut before = from.to_string();
    let mut batch_started: Option<Instant> = None;
    // All frames of one drain go into one spool record, so that a record always ends at
    // a position the tracker knows (see the module docs); the sink splits them again.
    let mut record: Vec<u8> = Vec::new();
    let mut record_capacity = 0usize;
    let mut skipped_logged = 0u64;
    // Spooled bytes of the transaction still open at the end of the last record: none of
    // it can be acknowledged before its last part is spooled.
    let mut open_parts = 0u64;
    loop {
        let more = match replica.next(&mut visitor).await {
            Ok(more) => more,
            Err(ReplicaError::Replication(e)) if e.is_retryable() => {
                tracing::warn!(error = %e, "source connection lost; reconnecting");
                if let Err(e) = replica
                    .reconnect_with_backoff(&mut backoff, failover_after)
                    .await
                {
                    *last_resume = Some(replica.tracker().resume_from());
                    handoff.clone_from(&visitor.handoff);
                    return Err(if e.is_retryable() {
                        Failure::ServerLost(e.into())
                    } else {
                        fatal(e.into())
                    });
                }
                continue;
            }
            Err(ReplicaError::Replication(e)) => return Err(fatal(e.into())),
            Err(ReplicaError::Consumer(e)) => return Err(fatal(e.into())),
        };
        // The clock is read only where a flush could cut (after a transaction, or a
        // heartbeat between transactions), not for every event: at about ten events per
        // transaction, reading it per event was 7% of the source half's CPU. So a batch
        // waits `batch_delay` from its first complete transaction.
        let due = visitor.pipeline.can_flush() && {
            let now = Instant::now();
            now.duration_since(*batch_started.get_or_insert(now)) >= settings.batch_delay
        };
        if !more || due {
            visitor.pipeline.flush().map_err(|e| fatal(e.into()))?;
        }
        // Sized like the record before it: growing it by doubling copied each record
        // several times into freshly faulted pages.
        if record.capacity() == 0 {
            record.reserve(record_capacity);
        }
        visitor
            .pipeline
            .drain_frames(|f| record.extend_from_slice(f));
        if !record.is_empty() {
            batch_started = None;
            let tracker = visitor.tables.tracker().clone();
            let schema_seq = {
                let mut t = tracker.lock().map_err(|_| {
                    fatal(anyhow::anyhow!(
                        "schema tracker poisoned by an earlier panic"
                    ))
                })?;
                if t.has_unsaved() {
                    history
                        .save(&mut t)
                        .map_err(|e| fatal(anyhow::Error::new(e).context("saving schema")))?;
                }
                t.seq()
            };
            let after = replica.tracker().resume_from().to_string();
            let state = SourceState {
                seq: spool.next_seq(),
                before: before.clone(),
                after: after.clone(),
                schema_seq,
                snapshot: false,
            };
            state.save(state_dir).map_err(fatal)?;
            let len = record.len() as u64;
            record_capacity = record.len();
            let limits = outflow_codec::Limits::default();
            let last = super::split_frames(&record, &limits)
                .ok()
                .and_then(|frames| frames.last().copied())
                .and_then(|f| outflow_codec::FrameHeader::parse(f, &limits).ok());
            let part = last.as_ref().is_some_and(|h| h.continues());
            let unit = if last.as_ref().is_some_and(|h| h.continued()) {
                open_parts + len
            } else {
                len
            };
            if (part || unit > len) && !spool.can_hold_unacked(unit) {
                // Waiting for room would never end: the sink acknowledges none of it before
                // the transaction's last part.
                return Err(fatal(anyhow::anyhow!(
                    "the source transaction after {before} needs more than {unit} bytes of \
                     spool, which the spool bound cannot hold at once ([spool] max_bytes \
                     less one segment): raise --spool-max"
                )));
            }
            open_parts = if part { unit } else { 0 };
            spool
                .append(Bytes::from(std::mem::take(&mut record)))
                .await
                .map_err(|e| fatal(anyhow::Error::new(e).context("spool append")))?;
            if part {
                test_hook_exit_after_part();
            }
            before = after;
            let stats = visitor.pipeline.stats();
            if stats.statements_skipped > skipped_logged {
                tracing::warn!(
                    skipped = stats.statements_skipped,
                    "data changes logged as statements were skipped (on_statement = skip): \
                     the target misses them"
                );
                skipped_logged = stats.statements_skipped;
            }
            if let Ok(mut p) = progress.lock() {
                p.frames = stats.frames;
                p.wire_bytes += len;
                p.rows = stats.rows_in;
                p.binlog_bytes = visitor.binlog_bytes;
            }
        }
        if !more {
            *last_resume = Some(replica.tracker().resume_from());
            handoff.clone_from(&visitor.handoff);
            return Ok(());
        }
    }
}

/// Test hook: `OUTFLOW_DANGER_TEST_EXIT_AFTER_PART=N` ends the process right after the
/// `N`th frame ending in a part of an unfinished source transaction is appended to the
/// spool, so tests can kill the source side inside a transaction in parts.
fn test_hook_exit_after_part() {
    static PARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    super::crash_test_hook(
        "OUTFLOW_DANGER_TEST_EXIT_AFTER_PART",
        &PARTS,
        "source: test hook: exiting after a part of a transaction",
    );
}

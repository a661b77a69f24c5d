//! The initial snapshot: every row of every table in scope, read consistently, chunked by
//! primary key, several tables at once, resumable after a crash, handing over to the binlog
//! stream with no gap and no duplicate.
//!
//! # What is consistent, and why no global lock
//!
//! MariaDB's `START TRANSACTION WITH CONSISTENT SNAPSHOT` starts an InnoDB read view and,
//! in the same step, records the binlog position of that view in the status variables
//! `binlog_snapshot_file` / `binlog_snapshot_position` (kept consistent by group commit,
//! since MariaDB 5.3). Rows read in that transaction reflect exactly the transactions
//! before that position. No lock is taken. Reading that position back is racy on the
//! server's side (a concurrent `SHOW STATUS` can overwrite it), so it is read as
//! [`open_consistent_snapshot`] explains.
//!
//! Each table is read in a snapshot transaction of its own, on one of `parallel`
//! connections, so tables have different positions. That is still exact: table `T` read at
//! `P_T` needs the binlog changes to `T` at or after `P_T` and no others. The stream starts
//! at the smallest `P_T`, and [`Handoff::applies`] skips, per table, the events the table's
//! rows already hold. Once the stream passes the largest `P_T`, everything applies. (During
//! that catch-up, a transaction that spans tables read at different points is seen in parts
//! on the target; at the largest `P_T` the target is whole again.)
//!
//! A single common point for all tables would need every worker's read view opened while
//! no transaction commits: `FLUSH TABLES WITH READ LOCK` around the `START TRANSACTION`s.
//! FTWRL waits for every running statement and blocks all writes while it waits, so it is
//! used only on servers without `binlog_snapshot_*` (MySQL), only when the configuration
//! says `danger_allow_global_read_lock`, and only for the instant the views are opened.
//!
//! # Resuming
//!
//! Progress is saved when a table is begun (before the sink gets any of its rows) and
//! after every chunk the sink accepted: per table, the snapshot positions of its key
//! ranges ([`Segment`]s), the last key read and the row count. After a crash, finished
//! tables are skipped. A table cut short whose key is all integers is continued after its
//! last key in a new snapshot, which adds a range with its own position; the handoff then
//! decides per key. Any other table begun before (no key, a key not all integers, or no
//! key saved yet) is read again from the start in a new snapshot, and the sink is first
//! told to forget its earlier rows ([`TableStart::Restart`]; the relay ships
//! `TRUNCATE TABLE`), since rows it holds may have been changed or deleted on the source
//! since, and the new range's position makes the stream skip those changes.
//!
//! A continued table has the same hazard on a smaller scale. A chunk reaches the sink
//! (durably, for a durable sink) before the progress naming its last key is saved, so a
//! crash in between leaves the sink holding rows above the recorded last key `K`, read at
//! the old position `P1`. The new range after `K` is read at `P2`, and the stream skips its
//! changes before `P2`: a row of that chunk deleted on the source between `P1` and `P2` is
//! neither read again nor deleted by the stream. So the sink is first told to drop every
//! row above `K` ([`TableStart::After`]; the relay ships
//! ``DELETE FROM `db`.`t` WHERE (key columns) > (K)``), before the new range is saved and
//! before any of its rows. That drops nothing it should keep: the stream starts only once
//! every table's snapshot is done, so no binlog change of this table has reached the sink
//! yet, and every chunk of the table that was recorded lies at or below `K` (chunks follow
//! key order), so a row above `K` can only come from a chunk that was never recorded,
//! whose range the new read covers. Dropping them twice (a crash before the new range is
//! saved, or a sink re-running the statement) is harmless for the same reason. Updated
//! rows of that chunk would be harmless anyway (the new read upserts them). The chunk in
//! flight may otherwise reach the sink twice: sinks apply snapshot rows as upserts by
//! primary key, which makes that harmless.
//!
//! # Prerequisites
//!
//! `SELECT` on the tables, `binlog_format=ROW`, InnoDB tables (other engines have no
//! consistent read), and for GTID mapping MariaDB's `BINLOG_GTID_POS()`.

pub mod handoff;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row, Value};
use outflow_core::{
    BinlogPosition, ColumnType, Date, DateTime, GtidState, SnapshotStatement, SourcePosition,
    TableSchema, Time, Timestamp, ValueKind, ValueRef,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use handoff::{cmp_binlog, Handoff, Segment};

/// Why the snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A query failed (retryable: resume from the saved progress).
    #[error("snapshot of {table}: {what}: {source}")]
    Sql {
        /// `db.table`, or `-` for server-wide steps.
        table: String,
        /// The step.
        what: &'static str,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// The server reports no snapshot binlog position and the global lock is not allowed.
    #[error("the server has no binlog_snapshot_file/position (not MariaDB, or binary log off); set danger_allow_global_read_lock to take the position under a brief FLUSH TABLES WITH READ LOCK")]
    NoSnapshotPosition,
    /// Reads of the snapshot's binlog position kept disagreeing: other sessions ran
    /// `SHOW STATUS` throughout (see [`open_consistent_snapshot`]).
    #[error("snapshot of {table}: the server's binlog_snapshot_file/position read back differently each time the snapshot was opened ({} reads: {}); a concurrent SHOW STATUS overwrites it, so no position could be trusted", seen.len(), seen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    UnstablePosition {
        /// `db.table`.
        table: String,
        /// The positions read.
        seen: Vec<BinlogPosition>,
    },
    /// A value the server returned does not fit the column's tracked type.
    #[error("snapshot of {table}: column `{column}`: {reason}")]
    Value {
        /// `db.table`.
        table: String,
        /// Column.
        column: String,
        /// Why (never the value itself).
        reason: String,
    },
    /// The sink refused rows.
    #[error("snapshot of {table}: the sink failed: {reason}")]
    Sink {
        /// `db.table`.
        table: String,
        /// The sink's error.
        reason: String,
    },
    /// The progress file could not be read or written.
    #[error("snapshot progress: {0}")]
    Progress(String),
}

/// Snapshot settings (config section `[source.snapshot]`; every key has a CLI flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Rows per chunk (one keyset-paginated SELECT). Default 10000.
    #[serde(default = "default_chunk")]
    pub chunk_rows: u32,
    /// Tables read at the same time, each on its own connection. Default 2.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// On servers without `binlog_snapshot_*` (MySQL), take the position under a brief
    /// `FLUSH TABLES WITH READ LOCK`, which blocks writes while it waits for running
    /// statements. Default false.
    #[serde(default)]
    pub danger_allow_global_read_lock: bool,
}

fn default_chunk() -> u32 {
    10_000
}

fn default_parallel() -> usize {
    2
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            chunk_rows: default_chunk(),
            parallel: default_parallel(),
            danger_allow_global_read_lock: false,
        }
    }
}

/// Receives the snapshot's rows. Called from several workers, one call at a time.
pub trait SnapshotSink: Send + 'static {
    /// The sink's error.
    type Error: std::fmt::Display;

    /// A table's rows start; they reflect the binlog up to `at`. `start` says which rows
    /// delivered for this table before (an interrupted run) must be dropped
    /// ([`TableStart::forget_statement`] says it in SQL), and a durable sink makes that
    /// durable before the returned future completes: the table's progress saved after it
    /// lets rows of the new read reach the sink. Called before the table is read, so an
    /// empty table is begun too. Asynchronous for the same reason as
    /// [`SnapshotSink::chunk_done`].
    fn begin_table(
        &mut self,
        table: &TableSchema,
        at: &BinlogPosition,
        start: &TableStart,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;

    /// One row, values in column order, borrowed for the call.
    fn row(&mut self, table: &TableSchema, values: &[ValueRef<'_>]) -> Result<(), Self::Error>;

    /// A chunk ends; a durable sink makes the rows so far durable before the returned
    /// future completes (the progress saved after it says they need not be read again).
    /// Asynchronous, so that a sink can wait for its own storage (the relay's spool).
    fn chunk_done(
        &mut self,
        _table: &TableSchema,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// The table is complete.
    fn end_table(&mut self, _table: &TableSchema, _rows: u64) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Progress for a display: rows, rate and ETA.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Tables in the snapshot.
    pub tables_total: usize,
    /// Tables finished.
    pub tables_done: usize,
    /// Rows read so far (in this run and earlier interrupted ones).
    pub rows: u64,
    /// Rows expected, from the server's table statistics (an estimate).
    pub rows_estimate: u64,
    /// Rows read in this run.
    pub rows_this_run: u64,
    /// Time since this run started.
    pub elapsed: Duration,
}

impl Progress {
    /// Rows per second in this run.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.rows_this_run as f64 / s
        } else {
            0.0
        }
    }

    /// Time left at the current rate, if there is a rate and an estimate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        if rate <= 0.0 {
            return None;
        }
        let left = self.rows_estimate.saturating_sub(self.rows) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }
}

/// A primary-key value as saved in the progress file, fed back as a query parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    /// NULL (not in a primary key, but kept total).
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// Bytes, hex-encoded.
    Bytes(String),
    /// Date and time parts: year, month, day, hour, minute, second, microsecond.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// Negative, days, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u8, u32),
}

impl KeyValue {
    fn from_value(v: &Value) -> KeyValue {
        match v {
            Value::NULL => KeyValue::Null,
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::UInt(*u),
            Value::Float(f) => KeyValue::Float(*f),
            Value::Double(d) => KeyValue::Double(*d),
            Value::Bytes(b) => KeyValue::Bytes(b.iter().map(|b| format!("{b:02x}")).collect()),
            Value::Date(a, b, c, d, e, f, g) => KeyValue::Date(*a, *b, *c, *d, *e, *f, *g),
            Value::Time(a, b, c, d, e, f) => KeyValue::Time(*a, *b, *c, *d, *e, *f),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            KeyValue::Null => Value::NULL,
            KeyValue::Int(i) => Value::Int(*i),
            KeyValue::UInt(u) => Value::UInt(*u),
            KeyValue::Float(f) => Value::Float(*f),
            KeyValue::Double(d) => Value::Double(*d),
            KeyValue::Bytes(h) => Value::Bytes(
                (0..h.len() / 2)
                    .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect(),
            ),
            KeyValue::Date(a, b, c, d, e, f, g) => Value::Date(*a, *b, *c, *d, *e, *f, *g),
            KeyValue::Time(a, b, c, d, e, f) => Value::Time(*a, *b, *c, *d, *e, *f),
        }
    }

    fn as_int(&self) -> Option<i128> {
        match self {
            KeyValue::Int(i) => Some(i128::from(*i)),
            KeyValue::UInt(u) => Some(i128::from(*u)),
            _ => None,
        }
    }
}

/// One table's saved progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    /// Finished.
    pub done: bool,
    /// Key ranges read and their snapshot positions.
    pub segments: Vec<Segment>,
    /// The last key read (keyset pagination resumes after it).
    pub last_key: Option<Vec<KeyValue>>,
    /// Rows read.
    pub rows: u64,
}

/// The progress file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// `db.table` → progress.
    pub tables: BTreeMap<String, TableProgress>,
}

impl SnapshotProgress {
    /// Reads a progress file; a missing file is a fresh start.
    pub fn load(path: &Path) -> Result<SnapshotProgress, SnapshotError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| SnapshotError::Progress(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(SnapshotError::Progress(format!("{}: {e}", path.display()))),
        }
    }

    fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot-progress.json");
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        crate::fsutil::replace_file(dir, name, &bytes)
            .map_err(|e| SnapshotError::Progress(e.to_string()))
    }

    /// The handoff the saved segments describe.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            tables: self
                .tables
                .iter()
                .map(|(k, t)| (k.clone(), t.segments.clone()))
                .collect(),
        }
    }
}

/// What a finished snapshot hands to the stream.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    /// Per table (and key range) positions: what the stream must skip.
    pub handoff: Handoff,
    /// Where streaming starts: the earliest snapshot position, with its GTID position
    /// (MariaDB `BINLOG_GTID_POS`) when the server has GTIDs.
    pub start: SourcePosition,
    /// Rows read in all.
    pub rows: u64,
}

struct Shared<S> {
    sink: Mutex<S>,
    progress: Mutex<SnapshotProgress>,
    path: Option<PathBuf>,
    queue: std::sync::Mutex<VecDeque<(Arc<TableSchema>, u64)>>,
    cfg: SnapshotConfig,
    counters: std::sync::Mutex<(usize, u64)>,
    totals: (usize, u64, u64),
    started: Instant,
    on_progress: Box<dyn Fn(&Progress) + Send + Sync>,
}

impl<S> Shared<S> {
    fn report(&self, rows: u64, table_done: bool) {
        let (done, this_run) = {
            let Ok(mut c) = self.counters.lock() else {
                return;
            };
            c.0 += usize::from(table_done);
            c.1 += rows;
            *c
        };
        (self.on_progress)(&Progress {
            tables_total: self.totals.0,
            tables_done: done,
            rows: self.totals.2 + this_run,
            rows_estimate: self.totals.1,
            rows_this_run: this_run,
            elapsed: self.started.elapsed(),
        });
    }
}

fn sql(table: &str, what: &'static str) -> impl FnOnce(mysql_async::Error) -> SnapshotError {
    let table = table.to_string();
    move |source| SnapshotError::Sql {
        table,
        what,
        source,
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// How a table's read starts ([`SnapshotSink::begin_table`]), and so which rows an earlier,
/// interrupted read delivered that the sink must drop first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableStart {
    /// Nothing of the table was delivered before.
    Fresh,
    /// Read again from its start (a key not all integers, no key, or no key recorded yet):
    /// drop every row delivered before.
    Restart,
    /// Continued after its last recorded key (the integer key columns' values, in key
    /// order): drop the rows delivered before whose key lies above it. Those can only be a
    /// chunk shipped before the crash whose progress was never saved; the new read at a
    /// later position brings back the ones that still exist, and the stream skips the
    /// range's changes before that position, deletes included.
    After(Vec<i128>),
}

impl TableStart {
    /// The statement that makes a SQL target drop what `self` says, if anything:
    /// `TRUNCATE TABLE` to restart, `DELETE ... WHERE (key) > (last key)` to continue.
    pub fn forget_statement(&self, table: &TableSchema) -> Option<SnapshotStatement> {
        let (db, name) = (table.db.clone(), table.table.clone());
        match self {
            TableStart::Fresh => None,
            TableStart::Restart => Some(SnapshotStatement::Truncate { db, table: name }),
            TableStart::After(after) => Some(SnapshotStatement::DeleteAfter {
                db,
                table: name,
                columns: table
                    .primary_key
                    .iter()
                    .map(|&k| table.columns[usize::from(k)].name.clone())
                    .collect(),
                after: after.clone(),
            }),
        }
    }
}

/// Reads of `binlog_snapshot_file/position` that must agree before a position is trusted.
const SNAPSHOT_POSITION_READS: usize = 3;

/// Snapshots opened afresh when the reads disagree, before giving up.
const SNAPSHOT_POSITION_ATTEMPTS: usize = 10;

/// Serialises this process's reads of the snapshot position (see
/// [`open_consistent_snapshot`]).
static SNAPSHOT_STATUS: Mutex<()> = Mutex::const_new(());

/// Opens a consistent snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT`, repeatable
/// read, UTC, no result charset conversion) on `conn` and returns the binlog position its
/// rows reflect. `table` names the snapshot in errors.
///
/// MariaDB (seen on 10.11) answers `SHOW STATUS LIKE 'binlog_snapshot_%'` through
/// server-wide variables: each `SHOW STATUS` of any session first writes its own value
/// there (the snapshot's position, or the current one), then reads them back. So a
/// concurrent `SHOW STATUS` elsewhere (another snapshot worker, a monitoring agent) can
/// make a session read another session's position: measured against a server with a
/// second session looping `UPDATE` + `SHOW STATUS`, about 1 read in 100 of a snapshot's
/// position came back wrong, through `information_schema.SESSION_STATUS` too. A wrong
/// position makes the stream re-apply or skip changes the snapshot holds or lacks, so it
/// is never taken on one read: this process's workers read one at a time, and a position
/// counts only when [`SNAPSHOT_POSITION_READS`] reads in a row agree; otherwise the
/// snapshot is opened again. What remains is an outside session writing the same wrong
/// value inside each of those reads' windows (microseconds each).
pub async fn open_consistent_snapshot(
    conn: &mut Conn,
    cfg: &SnapshotConfig,
    table: &str,
) -> Result<BinlogPosition, SnapshotError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(sql(table, "SET TRANSACTION ISOLATION LEVEL"))?;
    // UTC, so TIMESTAMPs come back as they are stored; no result charset conversion, so
    // strings come back in the column's charset, as in the binlog.
    conn.query_drop("SET time_zone = '+00:00', character_set_results = NULL")
        .await
        .map_err(sql(table, "session settings"))?;
    let mut seen = Vec::new();
    for _ in 0..SNAPSHOT_POSITION_ATTEMPTS {
        let _one_at_a_time = SNAPSHOT_STATUS.lock().await;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(sql(table, "START TRANSACTION WITH CONSISTENT SNAPSHOT"))?;
        let mut reads = Vec::with_capacity(SNAPSHOT_POSITION_READS);
        for _ in 0..SNAPSHOT_POSITION_READS {
            match snapshot_status(conn, table).await? {
                Some(p) => reads.push(p),
                None => break,
            }
        }
        if reads.is_empty() {
            break;
        }
        if reads.len() == SNAPSHOT_POSITION_READS && reads.iter().all(|p| *p == reads[0]) {
            return Ok(reads.swap_remove(0));
        }
        tracing::warn!(%table, reads = ?reads, "the snapshot position read back differently (a concurrent SHOW STATUS); opening the snapshot again");
        seen.extend(reads);
        conn.query_drop("ROLLBACK")
            .await
            .map_err(sql(table, "ROLLBACK"))?;
    }
    if !seen.is_empty() {
        return Err(SnapshotError::UnstablePosition {
            table: table.to_string(),
            seen,
        });
    }
    if !cfg.danger_allow_global_read_lock {
        return Err(SnapshotError::NoSnapshotPosition);
    }
    conn.query_drop("ROLLBACK")
        .await
        .map_err(sql(table, "ROLLBACK"))?;
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(sql(table, "FLUSH TABLES WITH READ LOCK"))?;
    let r = async {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(sql(table, "START TRANSACTION under the read lock"))?;
        let row: Option<Row> = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(sql(table, "SHOW MASTER STATUS"))?;
        let row = row.ok_or(SnapshotError::NoSnapshotPosition)?;
        match (
            row.get_opt::<String, usize>(0),
            row.get_opt::<u64, usize>(1),
        ) {
            (Some(Ok(file)), Some(Ok(pos))) => Ok(BinlogPosition { file, pos }),
            _ => Err(SnapshotError::NoSnapshotPosition),
        }
    }
    .await;
    // Release the lock whatever happened; a failure here surfaces as the first error.
    let unlock = conn
        .query_drop("UNLOCK TABLES")
        .await
        .map_err(sql(table, "UNLOCK TABLES"));
    let pos = r?;
    unlock?;
    Ok(pos)
}

/// One read of the open snapshot's `binlog_snapshot_file/position`; `None` when the
/// server has none (not MariaDB, or binary log off).
async fn snapshot_status(
    conn: &mut Conn,
    table: &str,
) -> Result<Option<BinlogPosition>, SnapshotError> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(sql(table, "SHOW STATUS LIKE 'binlog_snapshot_%'"))?;
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    Ok(
        match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
            (Some(file), Some(pos)) if !file.is_empty() => {
                pos.parse::<u64>().ok().map(|pos| BinlogPosition {
                    file: file.to_string(),
                    pos,
                })
            }
            _ => None,
        },
    )
}

/// The SELECT list: ENUM, SET and BIT come back as numbers (`col+0`), so values map onto
/// [`ValueRef`] without knowing member names.
fn select_list(t: &TableSchema) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::Enum { .. } | ColumnType::Set { .. } | ColumnType::Bit { .. } => {
                format!("{}+0", quote(&c.name))
            }
            _ => quote(&c.name),
        })
        .collect();
    cols.join(", ")
}

/// `k1 > ? OR (k1 = ? AND k2 > ?) ...`: the expanded row comparison, which every server
/// version turns into an index range (row constructors are not always).
fn after_key_clause(t: &TableSchema) -> (String, usize) {
    let keys: Vec<String> = t
        .primary_key
        .iter()
        .map(|&k| quote(&t.columns[usize::from(k)].name))
        .collect();
    let mut ors = Vec::new();
    let mut params = 0;
    for i in 0..keys.len() {
        let mut ands: Vec<String> = keys[..i].iter().map(|k| format!("{k} = ?")).collect();
        ands.push(format!("{} > ?", keys[i]));
        params += i + 1;
        ors.push(format!("({})", ands.join(" AND ")));
    }
    (ors.join(" OR "), params)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Maps a value from the binary protocol onto the column's [`ValueRef`] variant.
fn value_ref<'a>(v: &'a Value, kind: ValueKind) -> Result<ValueRef<'a>, String> {
    let int = |v: &Value| -> Option<i128> {
        match v {
            Value::Int(i) => Some(i128::from(*i)),
            Value::UInt(u) => Some(i128::from(*u)),
            Value::Double(d) => Some(*d as i128),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    };
    let bad = || format!("a {kind:?} column returned {}", value_kind_name(v));
    Ok(match (v, kind) {
        (Value::NULL, _) => ValueRef::Null,
        (_, ValueKind::Int) => {
            ValueRef::Int(int(v).and_then(|i| i64::try_from(i).ok()).ok_or_else(bad)?)
        }
        (_, ValueKind::UInt) => {
            ValueRef::UInt(int(v).and_then(|i| u64::try_from(i).ok()).ok_or_else(bad)?)
        }
        (Value::Float(f), ValueKind::Float) => ValueRef::Float(*f),
        (Value::Double(d), ValueKind::Float) => ValueRef::Float(*d as f32),
        (Value::Double(d), ValueKind::Double) => ValueRef::Double(*d),
        (Value::Float(f), ValueKind::Double) => ValueRef::Double(f64::from(*f)),
        (Value::Bytes(b), ValueKind::Decimal) => ValueRef::Decimal(b),
        (_, ValueKind::Year) => {
            ValueRef::Year(int(v).and_then(|i| u16::try_from(i).ok()).ok_or_else(bad)?)
        }
        (Value::Date(y, m, d, ..), ValueKind::Date) => ValueRef::Date(Date {
            year: *y,
            month: *m,
            day: *d,
        }),
        (Value::Date(y, mo, d, h, mi, s, us), ValueKind::DateTime) => {
            ValueRef::DateTime(DateTime {
                year: *y,
                month: *mo,
                day: *d,
                hour: *h,
                minute: *mi,
                second: *s,
                micros: *us,
            })
        }
        (Value::Date(y, mo, d, h, mi, s, us), ValueKind::Timestamp) => {
            // The session time zone is UTC, so the parts are UTC; 0000-00-00 is the zero
            // timestamp.
            let secs = if *y == 0 {
                0
            } else {
                days_from_civil(i64::from(*y), i64::from(*mo), i64::from(*d)) * 86_400
                    + i64::from(*h) * 3600
                    + i64::from(*mi) * 60
                    + i64::from(*s)
            };
            ValueRef::Timestamp(Timestamp {
                seconds: u32::try_from(secs).map_err(|_| bad())?,
                micros: *us,
            })
        }
        (Value::Time(neg, days, h, m, s, us), ValueKind::Time) => ValueRef::Time(Time {
            negative: *neg,
            hours: days * 24 + u32::from(*h),
            minutes: *m,
            seconds: *s,
            micros: *us,
        }),
        (Value::Bytes(b), ValueKind::Text) => ValueRef::Text(b),
        (Value::Bytes(b), ValueKind::Bytes) => ValueRef::Bytes(b),
        (Value::Bytes(b), ValueKind::Json) => ValueRef::Json(b),
        (Value::Bytes(b), ValueKind::Geometry) => ValueRef::Geometry(b),
        (_, ValueKind::Enum) => {
            ValueRef::Enum(int(v).and_then(|i| u16::try_from(i).ok()).ok_or_else(bad)?)
        }
        (_, ValueKind::Set) => {
            ValueRef::Set(int(v).and_then(|i| u64::try_from(i).ok()).ok_or_else(bad)?)
        }
        (_, ValueKind::Bit) => {
            ValueRef::Bit(int(v).and_then(|i| u64::try_from(i).ok()).ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    })
}

fn value_kind_name(v: &Value) -> &'static str {
    match v {
        Value::NULL => "NULL",
        Value::Bytes(_) => "bytes",
        Value::Int(_) => "an integer",
        Value::UInt(_) => "an unsigned integer",
        Value::Float(_) => "a float",
        Value::Double(_) => "a double",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    }
}

/// Reads one table into the sink.
async fn snapshot_table<S: SnapshotSink>(
    pool: &Pool,
    shared: &Shared<S>,
    t: &TableSchema,
) -> Result<(), SnapshotError> {
    let qn = t.qualified_name();
    let saved = shared
        .progress
        .lock()
        .await
        .tables
        .get(&qn)
        .cloned()
        .unwrap_or_default();
    if saved.done {
        return Ok(());
    }
    let int_key = !t.primary_key.is_empty()
        && t.primary_key
            .iter()
            .all(|&k| matches!(t.columns[usize::from(k)].ty, ColumnType::Int { .. }));
    // The last recorded key, when the table can continue after it: every key column an
    // integer, and the saved values integers too (anything else is read again).
    let after: Option<Vec<i128>> = saved
        .last_key
        .as_ref()
        .map(|k| k.iter().filter_map(KeyValue::as_int).collect::<Vec<_>>())
        .filter(|k| int_key && k.len() == t.primary_key.len());
    let resume = after.is_some();
    let mut progress = if resume {
        saved
    } else {
        TableProgress::default()
    };
    let mut conn = pool.get_conn().await.map_err(sql(&qn, "connecting"))?;
    let at = open_consistent_snapshot(&mut conn, &shared.cfg, &qn).await?;
    let mut start = TableStart::Fresh;
    if let Some(key) = &after {
        // Rows above the last key that reached the sink were shipped in a chunk whose
        // progress was never saved; the sink drops them (see `TableStart::After`).
        start = TableStart::After(key.clone());
        // A run that died before reading past the last key left a range that holds no
        // rows: the new one replaces it.
        if progress
            .segments
            .last()
            .is_some_and(|s| s.after_key == after)
        {
            progress.segments.pop();
        }
        progress.segments.push(Segment {
            after_key: after,
            position: at.clone(),
        });
    } else {
        progress.segments = vec![Segment {
            after_key: None,
            position: at.clone(),
        }];
    }
    {
        if !resume && saved_rows_or_segments(&shared.progress, &qn).await {
            start = TableStart::Restart;
        }
        let mut sink = shared.sink.lock().await;
        sink.begin_table(t, &at, &start)
            .await
            .map_err(|e| SnapshotError::Sink {
                table: qn.clone(),
                reason: e.to_string(),
            })?;
    }
    // Recorded before any row reaches the sink: a crash from here on finds the table
    // begun, so a new run that cannot continue it restarts it (the sink forgets its rows)
    // rather than reading it again over rows that may be stale by then.
    save_progress(shared, &qn, &progress).await?;
    let from = format!("{}.{}", quote(&t.db), quote(&t.table));
    let list = select_list(t);
    let order: Vec<String> = t
        .primary_key
        .iter()
        .map(|&k| quote(&t.columns[usize::from(k)].name))
        .collect();
    let kinds: Vec<ValueKind> = t.columns.iter().map(|c| c.value_kind()).collect();
    let chunk = shared.cfg.chunk_rows.max(1) as usize;

    if t.primary_key.is_empty() {
        // No key to paginate by: one streaming SELECT, delivered in chunks.
        let q = format!("SELECT {list} FROM {from}");
        let mut result = conn.query_iter(q).await.map_err(sql(&qn, "SELECT"))?;
        loop {
            let mut rows = Vec::with_capacity(chunk.min(4096));
            while rows.len() < chunk {
                match result.next().await.map_err(sql(&qn, "reading rows"))? {
                    Some(r) => rows.push(r),
                    None => break,
                }
            }
            let n = rows.len();
            deliver(shared, t, &kinds, &rows).await?;
            progress.rows += n as u64;
            shared.report(n as u64, false);
            if n < chunk {
                break;
            }
        }
        drop(result);
    } else {
        let (clause, nparams) = after_key_clause(t);
        let first = format!(
            "SELECT {list} FROM {from} ORDER BY {} LIMIT {chunk}",
            order.join(", ")
        );
        let next = format!(
            "SELECT {list} FROM {from} WHERE {clause} ORDER BY {} LIMIT {chunk}",
            order.join(", ")
        );
        let stmt_next = conn.prep(&next).await.map_err(sql(&qn, "PREPARE"))?;
        loop {
            let rows: Vec<Row> = match &progress.last_key {
                None => conn.exec(&first, ()).await.map_err(sql(&qn, "SELECT"))?,
                Some(k) => {
                    let mut params = Vec::with_capacity(nparams);
                    for i in 0..k.len() {
                        for kv in &k[..=i] {
                            params.push(kv.to_value());
                        }
                    }
                    conn.exec(&stmt_next, params)
                        .await
                        .map_err(sql(&qn, "SELECT next chunk"))?
                }
            };
            let n = rows.len();
            if let Some(last) = rows.last() {
                progress.last_key = Some(
                    t.primary_key
                        .iter()
                        .map(|&k| {
                            last.as_ref(usize::from(k))
                                .map_or(KeyValue::Null, KeyValue::from_value)
                        })
                        .collect(),
                );
            }
            deliver(shared, t, &kinds, &rows).await?;
            progress.rows += n as u64;
            if n == chunk {
                save_progress(shared, &qn, &progress).await?;
            }
            shared.report(n as u64, false);
            if n < chunk {
                break;
            }
        }
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(sql(&qn, "COMMIT"))?;
    drop(conn);
    {
        let mut sink = shared.sink.lock().await;
        sink.end_table(t, progress.rows)
            .map_err(|e| SnapshotError::Sink {
                table: qn.clone(),
                reason: e.to_string(),
            })?;
    }
    progress.done = true;
    save_progress(shared, &qn, &progress).await?;
    shared.report(0, true);
    Ok(())
}

async fn saved_rows_or_segments(p: &Mutex<SnapshotProgress>, qn: &str) -> bool {
    p.lock()
        .await
        .tables
        .get(qn)
        .is_some_and(|t| t.rows > 0 || !t.segments.is_empty())
}

async fn save_progress<S>(
    shared: &Shared<S>,
    qn: &str,
    t: &TableProgress,
) -> Result<(), SnapshotError> {
    let mut p = shared.progress.lock().await;
    p.tables.insert(qn.to_string(), t.clone());
    if let Some(path) = &shared.path {
        p.save(path)?;
    }
    Ok(())
}

async fn deliver<S: SnapshotSink>(
    shared: &Shared<S>,
    t: &TableSchema,
    kinds: &[ValueKind],
    rows: &[Row],
) -> Result<(), SnapshotError> {
    let qn = || t.qualified_name();
    let mut vals: Vec<ValueRef<'_>> = Vec::with_capacity(kinds.len());
    let mut sink = shared.sink.lock().await;
    for r in rows {
        vals.clear();
        for (i, kind) in kinds.iter().enumerate() {
            let v = r.as_ref(i).ok_or_else(|| SnapshotError::Value {
                table: qn(),
                column: t.columns[i].name.clone(),
                reason: "missing from the result".into(),
            })?;
            vals.push(value_ref(v, *kind).map_err(|reason| SnapshotError::Value {
                table: qn(),
                column: t.columns[i].name.clone(),
                reason,
            })?);
        }
        sink.row(t, &vals).map_err(|e| SnapshotError::Sink {
            table: qn(),
            reason: e.to_string(),
        })?;
    }
    sink.chunk_done(t).await.map_err(|e| SnapshotError::Sink {
        table: qn(),
        reason: e.to_string(),
    })
}

/// Reads `tables` into `sink`. `progress_path`, when given, makes the run resumable: an
/// interrupted run called again with the same path continues where it stopped.
/// `on_progress` is called after every chunk. Returns the handoff for the stream and the
/// sink.
pub async fn run<S: SnapshotSink>(
    pool: &Pool,
    tables: Vec<TableSchema>,
    cfg: &SnapshotConfig,
    progress_path: Option<&Path>,
    sink: S,
    on_progress: impl Fn(&Progress) + Send + Sync + 'static,
) -> Result<(SnapshotOutcome, S), SnapshotError> {
    let saved = match progress_path {
        Some(p) => SnapshotProgress::load(p)?,
        None => SnapshotProgress::default(),
    };
    let mut conn = pool.get_conn().await.map_err(sql("-", "connecting"))?;
    // Largest tables first, so the last one to finish is a small one.
    let sizes: Vec<(String, String, Option<u64>)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')",
        )
        .await
        .map_err(sql("-", "table sizes"))?;
    let size = |t: &TableSchema| {
        sizes
            .iter()
            .find(|(d, n, _)| d == &t.db && n == &t.table)
            .and_then(|s| s.2)
            .unwrap_or(0)
    };
    let mut queue: Vec<(Arc<TableSchema>, u64)> = tables
        .into_iter()
        .map(|t| {
            let s = size(&t);
            (Arc::new(t), s)
        })
        .collect();
    queue.sort_by_key(|q| std::cmp::Reverse(q.1));
    let estimate: u64 = queue.iter().map(|q| q.1).sum();
    let rows_before: u64 = saved
        .tables
        .values()
        .map(|t| if t.done { t.rows } else { 0 })
        .sum();
    let shared = Arc::new(Shared {
        sink: Mutex::new(sink),
        progress: Mutex::new(saved),
        path: progress_path.map(Path::to_path_buf),
        totals: (queue.len(), estimate, rows_before),
        queue: std::sync::Mutex::new(queue.into_iter().collect()),
        cfg: cfg.clone(),
        counters: std::sync::Mutex::new((0, 0)),
        started: Instant::now(),
        on_progress: Box::new(on_progress),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.parallel.max(1) {
        let shared = shared.clone();
        let pool = pool.clone();
        workers.spawn(async move {
            loop {
                let next = shared.queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((t, _)) = next else { return Ok(()) };
                snapshot_table(&pool, &shared, &t).await?;
            }
        });
    }
    let mut first_err = None;
    while let Some(r) = workers.join_next().await {
        let r = r.unwrap_or_else(|e| Err(SnapshotError::Progress(format!("worker died: {e}"))));
        if let Err(e) = r {
            // Stop the others: the saved progress lets a new run continue.
            workers.abort_all();
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| SnapshotError::Progress("workers still hold the sink".into()))?;
    let progress = shared.progress.into_inner();
    let handoff = progress.handoff();
    let rows = progress.tables.values().map(|t| t.rows).sum();
    let mut start = SourcePosition {
        binlog: handoff.start().cloned(),
        gtid: GtidState::None,
    };
    if let Some(b) = &start.binlog {
        let gtid: Option<Option<String>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (b.file.as_str(), b.pos))
            .await
            .ok();
        if let Some(Some(g)) = gtid {
            if !g.is_empty() {
                let p = g.parse().map_err(|e| {
                    SnapshotError::Progress(format!("BINLOG_GTID_POS returned {g:?}: {e}"))
                })?;
                start.gtid = GtidState::Maria(p);
            }
        }
    }
    let _ = conn.disconnect().await;
    Ok((
        SnapshotOutcome {
            handoff,
            start,
            rows,
        },
        shared.sink.into_inner(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::{ColumnSchema, SchemaVersion};

    #[test]
    fn keyset_clause_expands_the_row_comparison() {
        let t = TableSchema {
            version: SchemaVersion(1),
            db: "d".into(),
            table: "t".into(),
            columns: vec![
                ColumnSchema::new("a", ColumnType::Int { bytes: 4 }),
                ColumnSchema::new("b`x", ColumnType::Int { bytes: 4 }),
                ColumnSchema::new("e", ColumnType::Enum { bytes: 1 }),
            ],
            primary_key: vec![0, 1],
        };
        let (c, n) = after_key_clause(&t);
        assert_eq!(c, "(`a` > ?) OR (`a` = ? AND `b``x` > ?)");
        assert_eq!(n, 3);
        assert_eq!(select_list(&t), "`a`, `b``x`, `e`+0");
    }

    #[test]
    fn a_table_start_names_what_the_target_forgets() {
        let t = TableSchema {
            version: SchemaVersion(1),
            db: "d".into(),
            table: "t".into(),
            columns: vec![
                ColumnSchema::new("v", ColumnType::Int { bytes: 4 }),
                ColumnSchema::new("b", ColumnType::Int { bytes: 8 }),
                ColumnSchema::new("a", ColumnType::Int { bytes: 4 }),
            ],
            primary_key: vec![2, 1],
        };
        assert_eq!(TableStart::Fresh.forget_statement(&t), None);
        assert_eq!(
            TableStart::Restart
                .forget_statement(&t)
                .unwrap()
                .to_string(),
            "TRUNCATE TABLE `d`.`t`"
        );
        let after = TableStart::After(vec![-3, i128::from(u64::MAX)]);
        assert_eq!(
            after.forget_statement(&t).unwrap().to_string(),
            "DELETE FROM `d`.`t` WHERE (`a`, `b`) > (-3, 18446744073709551615)"
        );
    }

    #[test]
    fn timestamps_and_values() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let v = Value::Date(2001, 9, 9, 1, 46, 40, 5);
        assert_eq!(
            value_ref(&v, ValueKind::Timestamp).unwrap(),
            ValueRef::Timestamp(Timestamp {
                seconds: 1_000_000_000,
                micros: 5
            })
        );
        assert_eq!(
            value_ref(&Value::Int(-3), ValueKind::Int).unwrap(),
            ValueRef::Int(-3)
        );
        assert!(value_ref(&Value::Int(-3), ValueKind::UInt).is_err());
        assert_eq!(
            value_ref(&Value::Bytes(b"2".to_vec()), ValueKind::Enum).unwrap(),
            ValueRef::Enum(2)
        );
        let k = KeyValue::from_value(&Value::Bytes(vec![0, 255]));
        assert_eq!(k.to_value(), Value::Bytes(vec![0, 255]));
    }

    #[test]
    fn progress_rate_and_eta() {
        let p = Progress {
            tables_total: 2,
            tables_done: 1,
            rows: 500,
            rows_estimate: 1500,
            rows_this_run: 500,
            elapsed: Duration::from_secs(5),
        };
        assert_eq!(p.rate(), 100.0);
        assert_eq!(p.eta(), Some(Duration::from_secs(10)));
    }
}

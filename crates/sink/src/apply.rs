//! The applier: change batches in, target transactions out, exactly once.
//!
//! # Exactly once
//! The target holds a checkpoint row per stream (`outflow.checkpoint` by default):
//! the frame sequence number, how many of that frame's source transactions are applied and
//! how many it has, the last applied GTID and the source position. It is written by the
//! same target transaction as the rows it covers, so after any crash the row and the data
//! agree. [`Applier::apply`] compares each delivered frame with it: a frame already applied
//! is skipped as a duplicate, a frame applied in part resumes after its last applied
//! transaction, and a frame beyond the next one is refused (frames went missing). Each
//! target transaction also locks the checkpoint row and checks that it has not moved, so
//! two appliers on one stream cannot both apply a frame.
//!
//! # Transactions
//! A frame's source transactions are applied in order, grouped into target transactions of
//! up to `max_txn_changes` row changes (always whole source transactions, at least one); a
//! compacted frame is one target transaction whatever its size, because only its end state
//! is consistent. A target transaction is either committed with its checkpoint or not at
//! all, so source atomicity holds, at source-transaction granularity (batch granularity
//! for compacted frames).
//!
//! # Transactions in parts
//! A source transaction too large for one frame arrives in parts over consecutive frames
//! (`outflow_codec::frame`, "Transactions in parts"). The frame with its first part applies
//! the frame's whole transactions as above, then opens a target transaction for the part
//! and returns [`Applied::Held`]: nothing of it is committed, and the caller must not
//! acknowledge the frame. Each following part is applied into the same open target
//! transaction; the frame where the transaction ends commits it together with the
//! checkpoint (as if that frame's first transaction were the whole transaction), then goes
//! on with its other transactions as usual. So the checkpoint never claims a part, and a
//! reader never sees one. Such a transaction runs on the coordinator connection alone (no
//! lanes), whatever `apply_threads` says. Its frames cannot be replayed from memory: if the
//! target transaction must be rolled back (deadlock, or careful mode needed) after its first
//! frame, the applier returns [`ApplyError::Rewind`] and the caller re-delivers from the
//! checkpoint (the transaction's first frame), which is then applied in the mode that
//! failure called for. A frame delivered again over an open transaction (a new connection),
//! or a frame that starts afresh where the next part was due (the source side restarted
//! inside the transaction and sends it again from its start; the parts it had sent are
//! dropped and never committed), rolls the open transaction back first.
//!
//! # Fast path and careful mode
//! Changes become few large statements (module `stage` explains the batching rule and
//! why it keeps each row's order). Each statement must affect exactly the rows the batch
//! expects; when one does not (a conflict, or a case the batching could not foresee), or a
//! duplicate-key error occurs, the target transaction is rolled back and replayed in
//! careful mode: one statement per change, in source order, where each conflict is named
//! and handled by the [`ConflictPolicy`]. Deadlocks and lock-wait timeouts roll back and
//! retry. A lost connection is returned as a retryable error: reconnect, and re-deliver
//! from [`Applier::last_applied`]. A lane's statements go to the target several at a time
//! (pipelined executes, or text statements several in one query, up to 1 MiB); each one's
//! count and error are still its own. A target transaction's start and the locking read of its checkpoint row take one
//! round trip; with several lanes, committing takes three: the checkpoint with every
//! branch's end and prepare (the lanes at once), the coordinator's commit, the other
//! branches' commits.
//!
//! # Several connections
//! With `apply_threads` > 1 the fast path spreads a target transaction over that many
//! connections ("lanes"). Dependency rule: a row's changes all go to one lane, chosen by a
//! hash of its key, and run there in order; rows of different lanes are independent
//! (different keys, no foreign keys checked). Tables whose rows do not commute freely (no
//! usable key, secondary UNIQUE keys, keys compared under a collation) stay whole on one
//! lane; a change that must run alone (a key change, a keyless match) waits for every lane
//! and runs before any later statement of any lane. The lanes' branches form one XA
//! transaction, committed by two-phase commit: every branch is prepared, then the
//! coordinator's branch, which holds the checkpoint, commits (the decision), then the
//! others. A crash in between leaves prepared branches; the next applier of the stream
//! settles them from the checkpoint (`XA RECOVER`: commit the branches of a target
//! transaction the checkpoint covers, roll back the others), so durable atomicity and
//! exactly-once hold. What is weaker than with one connection: between the coordinator's
//! commit and the others' (a few round trips), a reader may see some lanes' part of the
//! transaction and not the rest. Careful mode and DDL run on the coordinator alone.
//!
//! # Prepared statements
//! The fast path's values travel as parameters of prepared statements
//! ([`ApplyConfig::prepared_statements`], on by default): a statement of the batcher names
//! its rows' values in the binary protocol's form ([`crate::literal::push_param`]), and a
//! lane cuts it into statements of 256 rows and the remainder's binary digits
//! ([`crate::stage::chunks`]), each an execute of the statement prepared on that connection
//! for its table, column set and row count (the first time; at most 17 per table and
//! column set, 512 per connection). A statement's text keeps what a literal's introducer
//! said: text in another character set than its column's is `CONVERT(? USING cs)`, a text
//! key compared in a `WHERE` carries its conversion and `COLLATE`, JSON is converted to
//! utf8mb4, a DECIMAL is sent typed as one (a string would be compared as a double).
//! Careful mode, probes and the rare single-row statements stay text.
//!
//! Measured before it was built (`cargo bench --bench statements`: sysbench-shaped upserts
//! on two connections, 300,000 rows per run, 8 rounds with the forms in rotating order):
//! - text: 1.79 s, 3.22 s of target CPU, 0.14 s of ours, 0.03 allocations a row;
//! - prepared through mysql_async: 1.82 s (0.98x), 3.04 s, 0.22 s, 1.19 allocations a
//!   row. The driver executes one statement per round trip, where text sends a
//!   transaction's statements in one query (`MULTI_STATEMENT_BYTES`), so the target's
//!   connection waits between executes; and it binds each text value as an owned `Vec`;
//! - prepared through our own client, a transaction's executes pipelined, parameters
//!   borrowed: 1.66 s (1.095x, won 5 of 8 rounds), 2.97 s, 0.15 s, no allocation; a second
//!   run 1.119x (7 of 8) and 1.068x (7 of 8), target CPU 2.86 s against 3.25 s.
//!
//! Hence the applier's own client ([`crate::target`]) and pipelining: a lane sends up to
//! 64 executes ahead of their replies. A failed execute does not stop those behind it (a
//! multi-statement query does stop), and after a deadlock, which rolls the whole
//! transaction back, they would run on their own and commit. So executes are pipelined
//! only inside an XA branch: a branch a deadlock rolled back refuses every later statement
//! (`XAER_RMFAIL`, "ROLLBACK ONLY"; tested against mariadbd in
//! `outflow-replication/tests/statements.rs`). The fast path therefore runs as an XA
//! transaction even on one connection (committed in one phase, in as many round trips as
//! `COMMIT`); a transaction in parts, which stays a plain transaction, reads each execute's
//! reply before it sends the next.
//!
//! A text key in a `WHERE` keeps its column's collation as a parameter too: on this
//! machine's MariaDB 10.11 under `SET NAMES binary`, `'ABC'` and `'abc '` found `'abc'`,
//! `'É'` found `'é'`, with or without `CONVERT(? USING charset)`. MySQL is not tried (none
//! here).
//!
//! Not `BINLOG '...'` statements of row events either, though the issue allowed them where
//! faster: the apply bench replays the backlog's own row events grouped as this applier
//! groups, and the target spent 8.56 s of CPU (8.19 s) where one connection of upserts
//! spent 5.14 s (4.80 s). The server applies row events one row at a time, and a delete
//! and re-insert of one key stay two row operations. Nor single-row `UPDATE`s, however many
//! to a query: 2.2-3.2x the target's CPU of one multi-row upsert for the same rows.
//!
//! # Session
//! `SET NAMES binary` (values are parameters of binary strings, or literals with explicit
//! character sets, see [`crate::literal`]), `time_zone = '+00:00'` (TIMESTAMPs are UTC), `sql_mode =
//! 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'` (a 0 in an AUTO_INCREMENT column stays 0;
//! zero dates and over-long values behave as on a replica), `foreign_key_checks = 0` (rows
//! of different tables may be applied in another order within a transaction), and
//! `CLIENT_FOUND_ROWS` (an update counts the rows it found, not only those it changed).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Opts;
use outflow_core::{
    ChangeBatch, Ddl, Op, SchemaVersion, SnapshotStatement, SourcePosition, TableSection,
};
use outflow_replication::protocol::stmt::{read_tagged, OkPacket, Param};
use outflow_replication::ConnectOptions;

mod ahead;
mod parts;

pub use ahead::{Staged, Stager};

use crate::catalog::{load_collations, load_table, CatalogTable};
use crate::ddl::{
    DdlKind, DdlOutcome, DdlPolicies, DdlPolicy, ALREADY_APPLIED, ALREADY_APPLIED_IF_REDELIVERED,
};
use crate::literal::push_quoted;
use crate::plan::TablePlan;
use crate::sql::qualified;
use crate::stage::{
    careful, chunks, push_insert_tail, shape_sql, Batcher, Check, Cx, Limits, RowOp, ShapeKind,
    StageError, Stmt,
};
use crate::target::{options_of, value, Reply, Session, TargetError};

/// What to do when the target does not hold what a change expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Stop with an error naming the table, the row's key and the source position.
    Stop,
    /// Make the target row match the source: an insert over an existing row replaces it
    /// (`REPLACE`); an update of a missing row inserts the row as far as the change
    /// carries it (in replica mode, the key and the changed columns, the rest taking their
    /// defaults; in full mode, the whole after image); a delete of a missing row is done.
    Overwrite,
}

/// The kinds of conflict, as counted in [`ApplyStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// An insert found its key taken.
    DuplicateInsert,
    /// An update found no row.
    MissingUpdate,
    /// A delete found no row.
    MissingDelete,
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictKind::DuplicateInsert => "insert of a row that already exists",
            ConflictKind::MissingUpdate => "update of a row that does not exist",
            ConflictKind::MissingDelete => "delete of a row that does not exist",
        })
    }
}

/// How the applier works; every field has a default.
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    /// Names the stream in the checkpoint table (default `default`): one row per stream.
    pub stream: String,
    /// Database of the checkpoint table (default `outflow`, created if missing).
    pub checkpoint_db: String,
    /// Checkpoint table (default `checkpoint`, created if missing).
    pub checkpoint_table: String,
    /// Conflict policy (default [`ConflictPolicy::Stop`]).
    pub on_conflict: ConflictPolicy,
    /// DDL policies (default: apply every kind).
    pub ddl: DdlPolicies,
    /// Row changes per target transaction, in whole source transactions (default 20,000).
    pub max_txn_changes: NonZeroUsize,
    /// Largest statement, in bytes (default 4 MiB; capped below the target's
    /// `max_allowed_packet`).
    pub max_statement_bytes: usize,
    /// Statement text held for all tables together before it is sent, in bytes
    /// (default 32 MiB): with the decoded frame, what bounds the applier's memory (and a
    /// [`Stager`]'s, building the next frame meanwhile: a frame whose statements exceed
    /// it is not built ahead). Spread
    /// over several connections, ready statements also wait for this much (or the end of
    /// the target transaction) before the lanes run them side by side.
    pub max_pending_bytes: usize,
    /// Retries of a target transaction after a deadlock or lock-wait timeout (default 5).
    pub retries: u32,
    /// Connections that apply at the same time (default 2: on the 2-core development
    /// machine, 2 measured 1.5x faster than 1, and 4 slower than 2). With more than one,
    /// the rows of a table go to a connection by a hash of their key (so each row's changes
    /// stay in order on one connection), and a target transaction becomes an XA
    /// transaction with a branch per connection, committed by two-phase commit: see the
    /// module documentation. The target user then needs the XA privileges (`XA RECOVER`).
    pub apply_threads: NonZeroUsize,
    /// InnoDB lock wait timeout, in seconds, of target transactions spread over several
    /// connections (default 5): a lock one connection waits for that another holds ends
    /// the attempt this soon, and the transaction is retried on one connection.
    pub lane_lock_wait_secs: u32,
    /// Send the fast path's values as parameters of prepared statements (default), not
    /// as literals in the statement text. Not a setting of the command line: it is here
    /// so that the benches and tests can compare the two forms.
    pub prepared_statements: bool,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            stream: "default".to_string(),
            checkpoint_db: "outflow".to_string(),
            checkpoint_table: "checkpoint".to_string(),
            on_conflict: ConflictPolicy::Stop,
            ddl: DdlPolicies::default(),
            max_txn_changes: NonZeroUsize::new(20_000).unwrap_or(NonZeroUsize::MIN),
            max_statement_bytes: 4 << 20,
            max_pending_bytes: 32 << 20,
            retries: 5,
            apply_threads: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            lane_lock_wait_secs: 5,
            prepared_statements: true,
        }
    }
}

/// The checkpoint of a stream: what the target holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last frame (partly) applied.
    pub seq: u64,
    /// Its source transactions applied so far.
    pub txns_applied: u32,
    /// Its source transactions in all.
    pub txns_in_frame: u32,
    /// GTID of the last applied source transaction, if it had one.
    pub gtid: Option<String>,
    /// The source position after it (JSON of `outflow_core::SourcePosition`).
    pub position: String,
}

impl Checkpoint {
    /// Whether frame `seq` is applied whole.
    pub fn frame_complete(&self) -> bool {
        self.txns_applied >= self.txns_in_frame
    }

    /// The first frame the target still needs.
    pub fn next_seq(&self) -> u64 {
        if self.frame_complete() {
            self.seq + 1
        } else {
            self.seq
        }
    }

    /// The source position, parsed.
    pub fn source_position(&self) -> Result<SourcePosition, serde_json::Error> {
        serde_json::from_str(&self.position)
    }
}

/// What [`Applier::apply`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The checkpoint already covered the whole frame: nothing was done.
    Duplicate,
    /// These source transactions and row changes were applied (a resumed frame counts only
    /// the part applied now; the frame that commits a transaction in parts counts all of
    /// it, its earlier frames none).
    Frame {
        /// Source transactions.
        transactions: u32,
        /// Row changes.
        changes: u64,
    },
    /// The frame ends with part of a source transaction that continues in the next frame:
    /// applied into a target transaction left open, not durable (do not acknowledge it).
    Held,
}

/// Conflicts counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConflictCounts {
    /// Inserts that found their key taken.
    pub duplicate_insert: u64,
    /// Updates that found no row.
    pub missing_update: u64,
    /// Deletes that found no row.
    pub missing_delete: u64,
}

impl ConflictCounts {
    /// All conflicts.
    pub fn total(&self) -> u64 {
        self.duplicate_insert + self.missing_update + self.missing_delete
    }

    fn count(&mut self, kind: ConflictKind) {
        match kind {
            ConflictKind::DuplicateInsert => self.duplicate_insert += 1,
            ConflictKind::MissingUpdate => self.missing_update += 1,
            ConflictKind::MissingDelete => self.missing_delete += 1,
        }
    }

    fn add(&mut self, o: &ConflictCounts) {
        self.duplicate_insert += o.duplicate_insert;
        self.missing_update += o.missing_update;
        self.missing_delete += o.missing_delete;
    }
}

/// Counters of committed work (updated per target transaction, never per row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Frames applied (whole or the rest of a partly applied one).
    pub frames: u64,
    /// Frames skipped as already applied.
    pub duplicate_frames: u64,
    /// Source transactions applied.
    pub transactions: u64,
    /// Target transactions committed.
    pub commits: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Statements run (committed transactions only).
    pub statements: u64,
    /// Bytes of statement text sent, or of parameters for prepared statements (committed
    /// transactions only).
    pub sql_bytes: u64,
    /// Of the statements, those whose values went as parameters; each ran as one or more
    /// executes of prepared statements (committed transactions only).
    pub prepared: u64,
    /// Executes of prepared statements (committed transactions only).
    pub executes: u64,
    /// Target transactions replayed in careful mode.
    pub careful_replays: u64,
    /// Target transactions retried after a deadlock or lock-wait timeout.
    pub retries: u64,
    /// Conflicts, by kind (each also counted when the policy stopped on it).
    pub conflicts: ConflictCounts,
    /// DDL statements applied.
    pub ddl_applied: u64,
    /// DDL statements skipped by policy.
    pub ddl_skipped: u64,
    /// Target transactions whose statements were built ahead, while the one before ran
    /// ([`Applier::stager`]).
    pub staged: u64,
    /// Where the committed target transactions' time went.
    pub times: ApplyTimes,
}

/// Wall time of committed target transactions, by what the applier was doing: it says
/// whether the target (executing) or the applier itself (building) is the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyTimes {
    /// Everything but the two below: starting the transaction, reading the checkpoint,
    /// building statements unless a [`Stager`] built them ahead (the connections wait
    /// meanwhile), and the rare statements that run one at a time (a key change).
    pub build: Duration,
    /// Waiting for the target to run the batched statements, on every connection.
    pub execute: Duration,
    /// Writing the checkpoint and committing (every connection's branch).
    pub commit: Duration,
}

impl ApplyTimes {
    fn add(&mut self, o: &ApplyTimes) {
        self.build += o.build;
        self.execute += o.execute;
        self.commit += o.commit;
    }
}

impl ApplyStats {
    fn add(&mut self, o: &ApplyStats) {
        self.frames += o.frames;
        self.duplicate_frames += o.duplicate_frames;
        self.transactions += o.transactions;
        self.commits += o.commits;
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.statements += o.statements;
        self.sql_bytes += o.sql_bytes;
        self.prepared += o.prepared;
        self.executes += o.executes;
        self.careful_replays += o.careful_replays;
        self.retries += o.retries;
        self.conflicts.add(&o.conflicts);
        self.ddl_applied += o.ddl_applied;
        self.ddl_skipped += o.ddl_skipped;
        self.staged += o.staged;
        self.times.add(&o.times);
    }

    /// Counts a batched statement that ran as expected: its rows (a merged upsert is a
    /// delete and an insert) and its bytes.
    fn count_statement(&mut self, stmt: &Stmt) {
        self.count_rows(stmt.op, stmt.changes - stmt.merged);
        self.count_rows(Op::Delete, stmt.merged);
        self.count_rows(Op::Insert, stmt.merged);
        self.statements += 1;
        self.sql_bytes += stmt.sql.len() as u64;
    }

    fn count_rows(&mut self, op: Op, n: u64) {
        match op {
            Op::Insert => self.inserted += n,
            Op::Update => self.updated += n,
            Op::Delete => self.deleted += n,
        }
    }
}

/// Why a frame could not be applied. [`ApplyError::is_retryable`] says whether
/// reconnecting and re-delivering can help.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The connection failed or was lost: reconnect, then re-deliver from
    /// [`Applier::last_applied`] (retry).
    #[error("target connection: {what}")]
    Connection {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: TargetError,
    },
    /// A conflict under [`ConflictPolicy::Stop`] (table-scoped).
    #[error("conflict on {table}: {kind} (key {key}) at {position}")]
    Conflict {
        /// `db.table`.
        table: String,
        /// What happened.
        kind: ConflictKind,
        /// The row's key values.
        key: String,
        /// Source GTID and binlog position of the transaction.
        position: String,
    },
    /// A change without a key matched more than one row that is not identical to it
    /// (table-scoped).
    #[error("{table}: a change matches more than one row ({key}) at {position}; rows of a table without a key can be told apart only by all their columns")]
    Ambiguous {
        /// `db.table`.
        table: String,
        /// What the change matched by.
        key: String,
        /// Source position.
        position: String,
    },
    /// Net changes of a compacted frame that no order of single-row updates can apply and
    /// that could not be applied by moving the rows out and back either (table-scoped).
    #[error("{table}: the net updates of a compacted frame collide on a UNIQUE key at {position}; ship this table without compaction")]
    UniqueCycle {
        /// `db.table`.
        table: String,
        /// Source position.
        position: String,
        /// The server's error.
        #[source]
        source: TargetError,
    },
    /// The target table does not fit the change (table-scoped).
    #[error("{table}: {detail}")]
    Schema {
        /// `db.table`.
        table: String,
        /// What does not fit.
        detail: String,
    },
    /// A statement failed on the target (fatal).
    #[error("{table}: {what} failed at {position}")]
    Statement {
        /// `db.table`, or the checkpoint table.
        table: String,
        /// What the statement was for.
        what: &'static str,
        /// Source position.
        position: String,
        /// The server's error.
        #[source]
        source: TargetError,
    },
    /// The target's connection options cannot be used (fatal).
    #[error("target options: {detail}")]
    Options {
        /// What is wrong.
        detail: String,
    },
    /// The frame does not follow the checkpoint (fatal).
    #[error("stream {stream}: frame {seq} delivered, but the target needs frame {expected} next")]
    Gap {
        /// The stream.
        stream: String,
        /// The frame delivered.
        seq: u64,
        /// The frame the checkpoint calls for.
        expected: u64,
    },
    /// The frame's content is not what the checkpoint says it was (fatal).
    #[error("stream {stream}: frame {seq} has {got} transactions, the checkpoint recorded {want}")]
    FrameMismatch {
        /// The stream.
        stream: String,
        /// The frame.
        seq: u64,
        /// Transactions in the frame now.
        got: u32,
        /// Transactions recorded.
        want: u32,
    },
    /// Another writer moved the checkpoint (fatal: two appliers on one stream).
    #[error("stream {stream}: the checkpoint moved under this applier (expected {expected}, found {found}); is another sink applying the same stream?")]
    CheckpointMoved {
        /// The stream.
        stream: String,
        /// What this applier last wrote.
        expected: String,
        /// What the table holds.
        found: String,
    },
    /// A DDL statement whose kind the policy says to stop on (fatal until the policy or
    /// the target changes: the stream resumes at this statement).
    #[error("DDL stopped by policy: {kind} `{statement}` at {position}")]
    DdlStopped {
        /// Its kind.
        kind: DdlKind,
        /// The statement, shortened.
        statement: String,
        /// Source position.
        position: String,
    },
    /// A DDL statement failed on the target (fatal).
    #[error("DDL ({kind}) `{statement}` failed at {position}")]
    Ddl {
        /// Its kind.
        kind: DdlKind,
        /// The statement, shortened.
        statement: String,
        /// Source position.
        position: String,
        /// The server's error.
        #[source]
        source: TargetError,
    },
    /// A source transaction in parts had to be rolled back after its first frame (see the
    /// module documentation): re-deliver from the checkpoint.
    #[error("stream {stream}: the source transaction in parts from frame {first_seq} was rolled back ({why}); deliver again from frame {first_seq}")]
    Rewind {
        /// The stream.
        stream: String,
        /// The frame holding its first part.
        first_seq: u64,
        /// Why.
        why: &'static str,
    },
    /// A value in the batch cannot be written (the frame is corrupt; fatal).
    #[error("{table}: {detail}")]
    BadChange {
        /// `db.table`.
        table: String,
        /// What is wrong.
        detail: String,
    },
}

impl ApplyError {
    /// Whether reconnecting and re-delivering from the checkpoint can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApplyError::Connection { .. })
    }

    /// Whether the error concerns one table (conflict, schema, ambiguity), as opposed to the
    /// whole stream.
    pub fn table(&self) -> Option<&str> {
        match self {
            ApplyError::Conflict { table, .. }
            | ApplyError::Ambiguous { table, .. }
            | ApplyError::Schema { table, .. }
            | ApplyError::UniqueCycle { table, .. }
            | ApplyError::BadChange { table, .. } => Some(table),
            _ => None,
        }
    }
}

/// How a target transaction is attempted.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// One statement per change, in source order, on the coordinator.
    careful: bool,
    /// Batched, but on the coordinator alone.
    single: bool,
}

/// How a target transaction attempt ended, short of success.
enum Failure {
    /// The fast path met an unexpected row count or duplicate: replay carefully.
    Anomaly,
    /// Deadlock or lock-wait timeout: roll back and retry.
    Retry,
    /// Give up with this error.
    Fatal(ApplyError),
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        Failure::Fatal(e)
    }
}

fn server_code(e: &TargetError) -> Option<u16> {
    e.code()
}

const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_BAD_DB: u16 = 1049;
const ER_BAD_FIELD: u16 = 1054;

/// Applies change batches to one target, exactly once; see the module documentation.
pub struct Applier {
    /// The coordinator connection: lane 0, the checkpoint, careful mode, DDL.
    conn: Session,
    /// Lanes 1.. (taken while a lane's statements run on a task of their own).
    others: Vec<Option<Session>>,
    /// Which lanes have joined the open XA transaction.
    lanes_used: Vec<bool>,
    /// Each lane's buffer for several statements in one query, kept so that its pages are
    /// not faulted in afresh for every query.
    multi: Vec<Vec<u8>>,
    /// A target transaction is open: set when one starts, cleared when it commits or rolls
    /// back. Still set at the next call, it means the last call's future was dropped
    /// midway, leaving the sessions in a state this applier cannot know.
    in_doubt: bool,
    /// The global id of the open XA transaction, if one is open.
    xa: Option<String>,
    /// A hash of the stream name, part of every XA id.
    stream_hash: u64,
    /// The current target transaction uses the other lanes.
    spread: bool,
    /// The coordinator session has the short lock-wait timeout of spread transactions.
    short_wait: bool,
    cfg: ApplyConfig,
    checkpoint_table: String,
    stream_literal: Vec<u8>,
    checkpoint: Option<Checkpoint>,
    collations: HashMap<u16, (String, String)>,
    catalog: HashMap<(String, String), CatalogTable>,
    /// Shared with a [`Stager`] building the next frame's statements meanwhile: a plan is
    /// only ever added (copy on write) or all are dropped, so a stager's plan indices stay
    /// valid while its `Arc` is this one.
    plans: Arc<Vec<TablePlan>>,
    by_version: Arc<HashMap<SchemaVersion, usize>>,
    /// Plan index of each section of the batch being applied.
    section_plans: Vec<usize>,
    batcher: Batcher,
    /// The next frame's statements, built ahead ([`Applier::stage_next`]).
    staged: Option<Staged>,
    /// A batcher for the next [`Stager`] (two take turns).
    spare_batcher: Option<Batcher>,
    stmts: Vec<Stmt>,
    scratch: Vec<u8>,
    /// Careful-mode updates of a compacted frame that met a duplicate key: (section,
    /// change), applied together at the end of the frame.
    deferred: Vec<(u32, usize)>,
    stats: ApplyStats,
    /// What the chunk being applied is of a transaction in parts (module `parts`).
    part: parts::Span,
    /// The open target transaction of a source transaction in parts.
    open_parts: Option<parts::OpenParts>,
    /// What that open transaction has applied so far: counted into `stats` when it
    /// commits, so that the counters only ever hold committed rows.
    held: ApplyStats,
    /// How to apply a transaction in parts delivered again after [`ApplyError::Rewind`].
    replay_parts: Option<parts::Replay>,
}

impl Applier {
    /// Connects to the target, sets the session up, creates the checkpoint table if needed
    /// and reads the stream's checkpoint.
    pub async fn connect(opts: Opts, cfg: ApplyConfig) -> Result<Applier, ApplyError> {
        let opts = options_of(&opts).map_err(|detail| ApplyError::Options { detail })?;
        let mut conn = open_session(&opts).await?;
        let mut others = Vec::new();
        for _ in 1..cfg.apply_threads.get() {
            let mut lane = open_session(&opts).await?;
            // These sessions only ever run spread transactions (see `lane_lock_wait_secs`).
            lane.run(format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                cfg.lane_lock_wait_secs.max(1)
            ))
            .await
            .map_err(|source| ApplyError::Connection {
                what: "setting the lock wait timeout".to_string(),
                source,
            })?;
            others.push(Some(lane));
        }
        let conn_err = |what: &str| {
            let what = what.to_string();
            move |source| ApplyError::Connection { what, source }
        };
        let max_packet: Option<u64> = match conn
            .rows("SELECT @@max_allowed_packet")
            .await
            .map_err(conn_err("reading max_allowed_packet"))?
            .first()
        {
            Some(row) => value(row, 0, "max_allowed_packet")
                .map_err(conn_err("reading max_allowed_packet"))?,
            None => None,
        };
        let collations = load_collations(&mut conn)
            .await
            .map_err(conn_err("reading the collations"))?;
        let checkpoint_table = qualified(&cfg.checkpoint_db, &cfg.checkpoint_table);
        let create = [
            format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                crate::sql::ident(&cfg.checkpoint_db)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {checkpoint_table} (\
                 stream VARCHAR(255) NOT NULL PRIMARY KEY, \
                 seq BIGINT UNSIGNED NOT NULL, \
                 txns_applied INT UNSIGNED NOT NULL, \
                 txns_in_frame INT UNSIGNED NOT NULL, \
                 gtid TEXT NULL, \
                 position TEXT NOT NULL, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
        ];
        let mut stream_literal = b"_utf8mb4".to_vec();
        push_quoted(&mut stream_literal, cfg.stream.as_bytes());
        // Leave room under max_allowed_packet for the packet header and a last row.
        let packet_cap = max_packet
            .map(|m| (m as usize).saturating_sub(1 << 20).max(64 << 10))
            .unwrap_or(usize::MAX);
        let limits = Limits {
            max_statement_bytes: cfg.max_statement_bytes.min(packet_cap).max(1),
            max_pending_bytes: cfg.max_pending_bytes.max(1),
            params: cfg.prepared_statements,
        };
        let lanes = cfg.apply_threads.get();
        let mut applier = Applier {
            conn,
            others,
            lanes_used: vec![false; lanes],
            multi: vec![Vec::new(); lanes],
            in_doubt: false,
            spread: false,
            short_wait: false,
            xa: None,
            stream_hash: fnv64(cfg.stream.as_bytes()),
            checkpoint_table,
            stream_literal,
            checkpoint: None,
            collations,
            catalog: HashMap::new(),
            plans: Arc::default(),
            by_version: Arc::default(),
            section_plans: Vec::new(),
            batcher: Batcher::new(limits, lanes),
            staged: None,
            spare_batcher: None,
            stmts: Vec::new(),
            scratch: Vec::new(),
            deferred: Vec::new(),
            stats: ApplyStats::default(),
            part: parts::Span::Whole,
            open_parts: None,
            held: ApplyStats::default(),
            replay_parts: None,
            cfg,
        };
        // First settle what a crashed applier left prepared (a prepared XA branch keeps its
        // locks until it is committed or rolled back), before this session takes any lock
        // of its own.
        match applier.read_checkpoint(false).await {
            Ok(checkpoint) => {
                applier.checkpoint = checkpoint;
                applier.recover_xa().await?;
            }
            Err(ApplyError::Connection { source, .. })
                if matches!(server_code(&source), Some(ER_NO_SUCH_TABLE | ER_BAD_DB)) => {}
            Err(e) => return Err(e),
        }
        for sql in create {
            applier
                .conn
                .run(sql)
                .await
                .map_err(conn_err("creating the checkpoint table"))?;
        }
        applier.checkpoint = applier.read_checkpoint(false).await?;
        Ok(applier)
    }

    /// The stream's checkpoint as of the last commit (or connect): resume delivery from
    /// its [`Checkpoint::next_seq`]. `None` before the first frame.
    pub fn last_applied(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Counters of committed work since connect.
    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    /// The target's id for this applier's connection (`KILL` takes it).
    pub fn connection_id(&self) -> u32 {
        self.conn.id()
    }

    /// The configuration.
    pub fn config(&self) -> &ApplyConfig {
        &self.cfg
    }

    /// Closes the connections.
    pub async fn close(self) {
        // Nothing is pending between frames; a failed goodbye loses nothing.
        self.conn.close().await;
        for c in self.others.into_iter().flatten() {
            c.close().await;
        }
    }

    /// The XA global id of the target transaction that starts at transaction `first` of
    /// frame `seq` of this stream.
    ///
    /// The id also names this applier's session, so that a new attempt never meets the id
    /// of a branch an earlier session left behind (XA ids are limited to 64 bytes:
    /// `outflow-` + 12 + 16 + 8 + 8 hex digits at most).
    fn xa_id(&self, seq: u64, first: u32) -> String {
        xa_gtrid(&self.cfg.stream, seq, first, self.conn.id())
    }

    /// Settles the XA branches a previous applier of this stream left prepared: a branch
    /// whose target transaction the checkpoint covers was decided committed (the
    /// coordinator's branch, which holds the checkpoint, commits first), so it is
    /// committed; any other is rolled back.
    async fn recover_xa(&mut self) -> Result<(), ApplyError> {
        let conn_err = |source| ApplyError::Connection {
            what: "recovering XA transactions".to_string(),
            source,
        };
        let rows = match self.conn.rows("XA RECOVER").await {
            Ok(rows) => rows,
            // Without the privilege there is nothing this applier could have left behind
            // while it applies on one connection.
            Err(e) if self.others.is_empty() && server_code(&e).is_some() => return Ok(()),
            Err(e) => return Err(conn_err(e)),
        };
        let ours = format!("{XA_PREFIX}{:012x}-", self.stream_hash & 0xffff_ffff_ffff);
        for row in rows {
            // formatID, gtrid_length, bqual_length, data. Ids of others need not be text;
            // ours are ASCII, so a lossy conversion keeps them byte for byte.
            const WHAT: &str = "XA RECOVER";
            let gtrid_len: i64 = value(&row, 1, WHAT).map_err(conn_err)?.unwrap_or(0);
            let bqual_len: i64 = value(&row, 2, WHAT).map_err(conn_err)?.unwrap_or(0);
            let Some(Some(data)) = row.get(3) else {
                continue;
            };
            let data = data.as_bytes();
            let (g, b) = (gtrid_len.max(0) as usize, bqual_len.max(0) as usize);
            let (Some(gtrid), Some(bqual)) = (data.get(..g), data.get(g..g + b)) else {
                continue;
            };
            let gtrid = String::from_utf8_lossy(gtrid).into_owned();
            let Some(rest) = gtrid.strip_prefix(&ours) else {
                continue;
            };
            let mut parts = rest.split('-').map(|x| u64::from_str_radix(x, 16));
            let (Some(Ok(seq)), Some(Ok(first))) = (parts.next(), parts.next()) else {
                continue;
            };
            let committed = self.checkpoint.as_ref().is_some_and(|cp| {
                cp.seq > seq || (cp.seq == seq && u64::from(cp.txns_applied) > first)
            });
            let verb = if committed { "COMMIT" } else { "ROLLBACK" };
            let mut sql = format!("XA {verb} ").into_bytes();
            push_quoted(&mut sql, gtrid.as_bytes());
            sql.push(b',');
            push_quoted(&mut sql, bqual);
            self.conn.run(&sql).await.map_err(conn_err)?;
            tracing::info!(xid = %gtrid, action = verb, "settled a prepared XA branch");
        }
        Ok(())
    }

    /// Runs `XA <verb> 'gtrid','lane'` on lane `lane`.
    async fn xa_on(&mut self, lane: usize, verb: &str, gtrid: &str) -> Result<(), TargetError> {
        let sql = format!("XA {verb} '{gtrid}','{lane}'");
        let conn = if lane == 0 {
            &mut self.conn
        } else {
            match self.others.get_mut(lane - 1).and_then(Option::as_mut) {
                Some(c) => c,
                None => return Err(TargetError::State("lane without a connection")),
            }
        };
        conn.run(sql).await.map(drop)
    }

    /// Ends and rolls back every branch of the open XA transaction (after a failure).
    async fn xa_abort(&mut self) {
        if let Some(gtrid) = self.xa.take() {
            for lane in 0..self.lanes_used.len() {
                if std::mem::take(&mut self.lanes_used[lane]) {
                    let _ = self.xa_on(lane, "END", &gtrid).await;
                    let _ = self.xa_on(lane, "ROLLBACK", &gtrid).await;
                }
            }
        }
    }

    async fn read_checkpoint(&mut self, lock: bool) -> Result<Option<Checkpoint>, ApplyError> {
        let sql = self.checkpoint_query(lock);
        let rows = self.conn.rows(&sql).await.map_err(checkpoint_unread)?;
        rows.first()
            .map(|r| Checkpoint::from_row(r))
            .transpose()
            .map_err(checkpoint_unread)
    }

    /// The query that reads this stream's checkpoint row (locking it with `lock`).
    fn checkpoint_query(&self, lock: bool) -> Vec<u8> {
        let mut sql = format!(
            "SELECT seq, txns_applied, txns_in_frame, gtid, position FROM {} WHERE stream = ",
            self.checkpoint_table
        )
        .into_bytes();
        sql.extend_from_slice(&self.stream_literal);
        if lock {
            sql.extend_from_slice(b" FOR UPDATE");
        }
        sql
    }

    /// Starts a target transaction with `start` and reads (locking) the checkpoint row in
    /// it, both in one round trip: on a busy machine each round trip waits for the
    /// target's thread to get a CPU.
    async fn start_reading_checkpoint(
        &mut self,
        start: &str,
        batch: &ChangeBatch,
        first: u32,
    ) -> Result<Option<Checkpoint>, Failure> {
        let mut sql = start.as_bytes().to_vec();
        sql.push(b';');
        sql.extend_from_slice(&self.checkpoint_query(true));
        let started = async {
            self.conn.send(&sql).await?;
            self.conn.next().await
        };
        if let Err(source) = started.await {
            return Err(self.classify(source, "-", "starting a transaction", batch, first));
        }
        let read = async {
            let found = match self.conn.next().await? {
                Some(Reply::Rows(set)) => set.rows.first().map(|r| Checkpoint::from_row(r)),
                _ => None,
            };
            self.conn.skip_rest().await?;
            found.transpose()
        };
        Ok(read.await.map_err(checkpoint_unread)?)
    }

    /// Applies frame `seq`, whose decoded content is `batch`; returns once it is committed
    /// (durable on the target, so the frame can be acknowledged) or was a duplicate.
    ///
    /// Not cancellation-safe: if the returned future is dropped before it completes, the
    /// target transaction it had open stays open, and every later call returns a retryable
    /// error: drop this applier and connect a new one (the target rolls the open work back
    /// when the connections close; the checkpoint says where to resume).
    pub async fn apply(&mut self, seq: u64, batch: &ChangeBatch) -> Result<Applied, ApplyError> {
        if self.in_doubt {
            return Err(ApplyError::Connection {
                what: "an earlier apply was interrupted; reconnect".to_string(),
                source: TargetError::State("applier in doubt"),
            });
        }
        let n = u32::try_from(batch.transactions().len()).map_err(|_| ApplyError::BadChange {
            table: "-".to_string(),
            detail: "more than 2^32 transactions in one frame".to_string(),
        })?;
        // Parts of a source transaction: the next part, or the open one dropped.
        let (superseded, closed) = match self.parts_first(seq, batch).await? {
            parts::Step::Done(applied) => return Ok(applied),
            parts::Step::Go { superseded, closed } => (superseded, closed),
        };
        let first = match &self.checkpoint {
            None => 0,
            Some(cp) if seq < cp.seq || (seq == cp.seq && cp.frame_complete()) => {
                self.stats.duplicate_frames += 1;
                return Ok(Applied::Duplicate);
            }
            Some(cp) if seq == cp.seq => {
                if cp.txns_in_frame != n {
                    return Err(ApplyError::FrameMismatch {
                        stream: self.cfg.stream.clone(),
                        seq,
                        got: n,
                        want: cp.txns_in_frame,
                    });
                }
                cp.txns_applied
            }
            Some(cp) if seq == cp.seq + 1 || superseded => 0,
            Some(cp) => {
                return Err(ApplyError::Gap {
                    stream: self.cfg.stream.clone(),
                    seq,
                    expected: cp.next_seq(),
                })
            }
        };
        if batch.continued() && first == 0 {
            return Err(ApplyError::BadChange {
                table: "-".to_string(),
                detail: format!(
                    "frame {seq} continues a source transaction whose earlier parts were not \
                     delivered"
                ),
            });
        }
        // The checkpoint already points at the batch's DDL: it may have run (see crate::ddl).
        let redelivered = batch.ddl().is_some()
            && first + 1 == n
            && self.checkpoint.as_ref().is_some_and(|cp| cp.seq == seq);
        // A batch that ends with a DDL: its rows first (in the schema before the DDL).
        // ... and a last transaction that continues is applied apart (below).
        let rows_end = if batch.ddl().is_some() || batch.continues() {
            n - 1
        } else {
            n
        };
        self.prepare_plans(batch).await?;
        let mut changes = 0u64;
        if batch.is_compacted() || n == 0 {
            if first < rows_end || n == 0 {
                changes += self.apply_chunk(seq, batch, first, rows_end).await?;
            }
        } else {
            let mut t = first;
            while t < rows_end {
                let end = chunk_end(batch, t, rows_end, self.cfg.max_txn_changes.get());
                changes += self.apply_chunk(seq, batch, t, end).await?;
                t = end;
            }
        }
        if let Some(ddl) = batch.ddl() {
            let at = rows_end;
            let marked = self
                .checkpoint
                .as_ref()
                .is_some_and(|cp| cp.seq == seq && cp.txns_applied == at);
            if !marked {
                // Records "this DDL is next" before it runs (a DDL-only batch).
                self.apply_chunk(seq, batch, at, at).await?;
            }
            if batch.is_snapshot() {
                self.apply_snapshot_statement(ddl, position_text(batch, at))
                    .await?;
            } else {
                self.apply_ddl(ddl, position_text(batch, at), redelivered)
                    .await?;
            }
            self.apply_chunk(seq, batch, at, n).await?;
        }
        if batch.continues() {
            self.open_part(seq, batch, first, rows_end).await?;
            return Ok(Applied::Held);
        }
        self.stats.frames += 1;
        Ok(Applied::Frame {
            transactions: n - first + u32::from(closed.is_some()),
            changes: changes + closed.unwrap_or(0),
        })
    }

    /// Makes sure every section of `batch` has a plan, reading the target's catalog for
    /// tables not seen yet.
    async fn prepare_plans(&mut self, batch: &ChangeBatch) -> Result<(), ApplyError> {
        self.section_plans.clear();
        for section in batch.sections() {
            let schema = section.schema();
            if let Some(&p) = self.by_version.get(&schema.version) {
                self.section_plans.push(p);
                continue;
            }
            let key = (schema.db.clone(), schema.table.clone());
            if !self.catalog.contains_key(&key) {
                let table = load_table(&mut self.conn, &schema.db, &schema.table)
                    .await
                    .map_err(|source| ApplyError::Connection {
                        what: format!(
                            "reading the target's description of {}",
                            schema.qualified_name()
                        ),
                        source,
                    })?
                    .ok_or_else(|| ApplyError::Schema {
                        table: schema.qualified_name(),
                        detail: "no such table on the target".to_string(),
                    })?;
                self.catalog.insert(key.clone(), table);
            }
            let plan = TablePlan::new(schema, &self.catalog[&key], &self.collations).map_err(
                |detail| ApplyError::Schema {
                    table: schema.qualified_name(),
                    detail,
                },
            )?;
            let plans = Arc::make_mut(&mut self.plans);
            plans.push(plan);
            let p = plans.len() - 1;
            Arc::make_mut(&mut self.by_version).insert(schema.version, p);
            self.section_plans.push(p);
        }
        Ok(())
    }

    /// Forgets what it knows of the target's tables (after DDL, or when a statement says
    /// a table changed).
    fn forget_catalog(&mut self) {
        self.catalog.clear();
        self.plans = Arc::default();
        self.by_version = Arc::default();
        self.batcher = Batcher::new(self.batcher_limits(), self.batcher.lanes());
        self.staged = None;
        self.spare_batcher = None;
        // Prepared statements are named by plan index, which now means another table.
        self.conn.forget_statements();
        for conn in self.others.iter_mut().flatten() {
            conn.forget_statements();
        }
    }

    fn batcher_limits(&self) -> Limits {
        self.batcher.limits()
    }

    /// Applies source transactions `first..end` of the frame (all of a compacted frame) as
    /// one target transaction, with retries and careful replay.
    async fn apply_chunk(
        &mut self,
        seq: u64,
        batch: &ChangeBatch,
        first: u32,
        end: u32,
    ) -> Result<u64, ApplyError> {
        let mut careful_mode = self.part != parts::Span::Whole && self.careful_parts();
        // After a lock wait while spread over lanes, the chunk runs on one connection.
        let mut single = false;
        let mut retries = 0;
        let mut extra = ApplyStats::default();
        loop {
            let mut stats = ApplyStats::default();
            self.in_doubt = true;
            let started = Instant::now();
            let result = self
                .try_chunk(
                    seq,
                    batch,
                    (first, end),
                    Attempt {
                        careful: careful_mode,
                        single,
                    },
                    &mut stats,
                )
                .await;
            match result {
                Ok(()) => {
                    self.in_doubt = false;
                    let t = &mut stats.times;
                    t.build = started.elapsed().saturating_sub(t.execute + t.commit);
                    stats.add(&extra);
                    // A transaction in parts counts when it commits, all of it at once.
                    match self.part {
                        parts::Span::Opens | parts::Span::Continues => {
                            self.held.add(&stats);
                            return Ok(0);
                        }
                        parts::Span::Closes => stats.add(&std::mem::take(&mut self.held)),
                        parts::Span::Whole => {}
                    }
                    self.stats.add(&stats);
                    return Ok(stats.inserted + stats.updated + stats.deleted);
                }
                Err(failure) => {
                    self.deferred.clear();
                    self.batcher.reset();
                    self.recycle_stmts();
                    let rollback = if self.xa.is_some() {
                        self.xa_abort().await;
                        Ok(())
                    } else {
                        self.conn.run("ROLLBACK").await.map(drop)
                    };
                    // Rolled back (or the connection is gone, which rolls back too).
                    self.in_doubt = false;
                    if let Some(rewind) = self.parts_failed(&failure, careful_mode, retries) {
                        return Err(rewind);
                    }
                    match failure {
                        Failure::Anomaly if !careful_mode => {
                            rollback.map_err(|source| ApplyError::Connection {
                                what: "rolling back".to_string(),
                                source,
                            })?;
                            careful_mode = true;
                            extra.careful_replays += 1;
                        }
                        Failure::Retry if retries < self.cfg.retries => {
                            // Spread over lanes, one lane can wait for a lock another lane
                            // holds until the transaction commits, which it cannot before
                            // every lane is done (InnoDB sees no cycle): the short lock wait
                            // ends that, and the transaction runs again on one connection.
                            single |= self.spread;
                            rollback.map_err(|source| ApplyError::Connection {
                                what: "rolling back".to_string(),
                                source,
                            })?;
                            if !self.others.is_empty() {
                                // A lock held by a branch an earlier session left prepared
                                // (it shows in XA RECOVER once that session is gone).
                                self.recover_xa().await?;
                            }
                            retries += 1;
                            extra.retries += 1;
                            tokio::time::sleep(Duration::from_millis(20 << retries.min(6))).await;
                        }
                        Failure::Anomaly => {
                            return Err(ApplyError::BadChange {
                                table: "-".to_string(),
                                detail: "careful mode met an unexpected row count".to_string(),
                            })
                        }
                        Failure::Retry => {
                            return Err(ApplyError::Statement {
                                table: "-".to_string(),
                                what: "a target transaction (deadlocks persisted)",
                                position: position_text(batch, end.saturating_sub(1)),
                                source: TargetError::State(
                                    "deadlock or lock wait timeout after all retries",
                                ),
                            })
                        }
                        Failure::Fatal(e) => {
                            if let ApplyError::Conflict { kind, .. } = &e {
                                // Counted even though the policy stopped on it.
                                self.stats.conflicts.count(*kind);
                            }
                            if matches!(e, ApplyError::Schema { .. }) {
                                self.forget_catalog();
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    fn recycle_stmts(&mut self) {
        self.batcher.recycle_all(self.stmts.drain(..));
    }

    async fn try_chunk(
        &mut self,
        seq: u64,
        batch: &ChangeBatch,
        (first, end): (u32, u32),
        attempt: Attempt,
        stats: &mut ApplyStats,
    ) -> Result<(), Failure> {
        let Attempt {
            careful: careful_mode,
            single,
        } = attempt;
        self.spread =
            !self.others.is_empty() && !careful_mode && !single && self.part == parts::Span::Whole;
        self.batcher.spread(self.spread);
        if self.short_wait != self.spread {
            let sql = if self.spread {
                format!(
                    "SET SESSION innodb_lock_wait_timeout = {}",
                    self.cfg.lane_lock_wait_secs.max(1)
                )
            } else {
                "SET SESSION innodb_lock_wait_timeout = @@GLOBAL.innodb_lock_wait_timeout"
                    .to_string()
            };
            if let Err(source) = self.conn.run(sql).await {
                return Err(self.classify(
                    source,
                    "-",
                    "setting the lock wait timeout",
                    batch,
                    first,
                ));
            }
            self.short_wait = self.spread;
        }
        // Several lanes: an XA transaction, lane 0's branch now, the others' when they
        // first get a statement.
        // A later part runs in the target transaction its first part opened.
        // Executes are pipelined only inside an XA branch, which a deadlock leaves refusing
        // further statements (see "Prepared statements"): so the fast path with parameters
        // opens one even on one connection.
        let xa = self.spread
            || (self.batcher.limits().params && !careful_mode && self.part == parts::Span::Whole);
        let start = if !self.part.starts() {
            String::new()
        } else if !xa {
            "START TRANSACTION".to_string()
        } else {
            let gtrid = self.xa_id(seq, first);
            let sql = format!("XA START '{gtrid}','0'");
            self.xa = Some(gtrid);
            self.lanes_used.iter_mut().for_each(|u| *u = false);
            self.lanes_used[0] = true;
            sql
        };
        let found = if self.part.starts() {
            self.start_reading_checkpoint(&start, batch, first).await?
        } else {
            self.checkpoint.clone()
        };
        if found != self.checkpoint {
            let show = |c: &Option<Checkpoint>| {
                c.as_ref().map_or("none".to_string(), |c| {
                    format!("frame {} txn {}", c.seq, c.txns_applied)
                })
            };
            return Err(Failure::Fatal(ApplyError::CheckpointMoved {
                stream: self.cfg.stream.clone(),
                expected: show(&self.checkpoint),
                found: show(&found),
            }));
        }
        let compacted = batch.is_compacted();
        let txns = batch.transactions();
        let staged = if careful_mode {
            None
        } else {
            self.take_staged(seq, first, end)
        };
        if let Some(stmts) = staged {
            self.stmts = stmts;
            stats.staged += 1;
        } else {
            for (t, s, i) in chunk_rows(batch, first, end) {
                let section = &batch.sections()[s as usize];
                let p = self.section_plans[s as usize];
                if careful_mode {
                    let buf = std::mem::take(&mut self.scratch);
                    let stmt = careful(&self.plans, p, section, i, buf)
                        .map_err(|e| self.stage_error(p, e))?;
                    let started = Instant::now();
                    self.run_careful(stmt, s, section, batch, t, stats).await?;
                    stats.times.execute += started.elapsed();
                } else {
                    let cx = Cx {
                        plans: &self.plans,
                        sections: batch.sections(),
                    };
                    self.batcher
                        .admit(cx, p, s, i, &mut self.stmts)
                        .map_err(|e| self.stage_error(p, e))?;
                    self.run_pending(batch, t, stats, false).await?;
                }
            }
        }
        if !self.deferred.is_empty() {
            self.apply_deferred(batch, first, stats).await?;
        }
        if !careful_mode {
            let cx = Cx {
                plans: &self.plans,
                sections: batch.sections(),
            };
            self.batcher.flush_all(cx, &mut self.stmts).map_err(|e| {
                Failure::Fatal(ApplyError::BadChange {
                    table: "-".to_string(),
                    detail: e.to_string(),
                })
            })?;
            self.run_pending(batch, end.saturating_sub(1), stats, true)
                .await?;
        }
        if !self.part.commits() {
            // A part that continues: the target transaction stays open, with no checkpoint.
            return Ok(());
        }
        // The checkpoint, in the same transaction.
        let applied = if compacted { end } else { end.max(first) };
        let mut position = batch.start().clone();
        // A compacted chunk covers its batch to `end`: all of it, or all but its DDL.
        let last = applied as usize;
        for txn in &txns[..last.min(txns.len())] {
            batch
                .commit_position(&mut position, txn)
                .map_err(|e| ApplyError::BadChange {
                    table: "-".to_string(),
                    detail: format!("positions: {e}"),
                })?;
        }
        let gtid = txns[..last.min(txns.len())]
            .iter()
            .rev()
            .find_map(|t| t.gtid.as_ref())
            .map(|g| g.to_string());
        let position_json =
            serde_json::to_string(&position).map_err(|e| ApplyError::BadChange {
                table: "-".to_string(),
                detail: format!("position: {e}"),
            })?;
        let checkpoint = Checkpoint {
            seq,
            txns_applied: applied,
            txns_in_frame: txns.len() as u32,
            gtid,
            position: position_json,
        };
        // The first checkpoint of a stream is an INSERT, every later one an UPDATE of the
        // row locked above: two appliers on one stream collide (duplicate key, or a lost
        // row) instead of both applying a frame.
        let mut sql = Vec::with_capacity(256 + checkpoint.position.len());
        let gtid_literal = |sql: &mut Vec<u8>| match &checkpoint.gtid {
            Some(g) => push_quoted(sql, g.as_bytes()),
            None => sql.extend_from_slice(b"NULL"),
        };
        let first_checkpoint = self.checkpoint.is_none();
        if first_checkpoint {
            sql.extend_from_slice(
                format!(
                    "INSERT INTO {} (stream, seq, txns_applied, txns_in_frame, gtid, position) \
                     VALUES (",
                    self.checkpoint_table
                )
                .as_bytes(),
            );
            sql.extend_from_slice(&self.stream_literal);
            sql.extend_from_slice(
                format!(
                    ",{},{},{},",
                    checkpoint.seq, checkpoint.txns_applied, checkpoint.txns_in_frame
                )
                .as_bytes(),
            );
            gtid_literal(&mut sql);
            sql.push(b',');
            push_quoted(&mut sql, checkpoint.position.as_bytes());
            sql.push(b')');
        } else {
            sql.extend_from_slice(
                format!(
                    "UPDATE {} SET seq = {}, txns_applied = {}, txns_in_frame = {}, gtid = ",
                    self.checkpoint_table,
                    checkpoint.seq,
                    checkpoint.txns_applied,
                    checkpoint.txns_in_frame
                )
                .as_bytes(),
            );
            gtid_literal(&mut sql);
            sql.extend_from_slice(b", position = ");
            push_quoted(&mut sql, checkpoint.position.as_bytes());
            sql.extend_from_slice(b", updated_at = CURRENT_TIMESTAMP(6) WHERE stream = ");
            sql.extend_from_slice(&self.stream_literal);
        }
        let committing = Instant::now();
        let ck_affected = self.commit(&sql, batch, first).await?;
        if !first_checkpoint && ck_affected != 1 {
            // Nothing is committed yet (the branches are at most prepared): the failure's
            // rollback undoes it all.
            return Err(Failure::Fatal(ApplyError::CheckpointMoved {
                stream: self.cfg.stream.clone(),
                expected: "the row this applier read".to_string(),
                found: "no row".to_string(),
            }));
        }
        self.commit_decided(batch, first).await?;
        self.checkpoint = Some(checkpoint);
        // Lanes other than the coordinator commit after it (see `commit_decided`); from
        // here on a failure leaves prepared branches that a new applier commits.
        self.commit_others(batch, first).await?;
        stats.times.commit += committing.elapsed();
        stats.commits += 1;
        stats.transactions += u64::from(applied - first.min(applied));
        Ok(())
    }

    /// Writes the checkpoint (`checkpoint_sql`) and readies the target transaction to
    /// commit, returning the rows the checkpoint statement affected; the caller checks
    /// them, then calls [`Applier::commit_decided`]. For an XA transaction every branch is
    /// ended (and, with several, prepared) here, each lane's statements in one round trip,
    /// the lanes at once, the checkpoint going with the coordinator's: one statement to a
    /// round trip, these were most of the commit's time, and over a dozen milliseconds a
    /// frame while the machine was busy (each round trip waits for the target's thread to
    /// get a CPU). All of them finish (none is cancelled mid-statement) before any failure
    /// is reported. Committing stays a round trip of its own: the checkpoint's count must
    /// be seen before anything commits.
    async fn commit(
        &mut self,
        checkpoint_sql: &[u8],
        batch: &ChangeBatch,
        first: u32,
    ) -> Result<u64, Failure> {
        let checkpoint_failed = |this: &Self, source: TargetError| {
            if server_code(&source) == Some(ER_DUP_ENTRY) {
                // The first checkpoint of a stream is an INSERT.
                return Failure::Fatal(ApplyError::CheckpointMoved {
                    stream: this.cfg.stream.clone(),
                    expected: "the row this applier read".to_string(),
                    found: "a row written by another applier".to_string(),
                });
            }
            this.classify(source, "-", "writing the checkpoint", batch, first)
        };
        let Some(gtrid) = self.xa.clone() else {
            return match self.conn.run(checkpoint_sql).await {
                Ok(ok) => Ok(ok.affected_rows),
                Err(source) => Err(checkpoint_failed(self, source)),
            };
        };
        let branches_used = self.lanes_used.iter().filter(|&&u| u).count();
        let two_phase = branches_used > 1;
        let branch_sql = |lane: usize| {
            let mut sql = format!("XA END '{gtrid}','{lane}'");
            if two_phase {
                sql.push_str(&format!(";XA PREPARE '{gtrid}','{lane}'"));
            }
            sql.into_bytes()
        };
        let mut coordinator = checkpoint_sql.to_vec();
        coordinator.push(b';');
        coordinator.extend_from_slice(&branch_sql(0));
        let mut branches: Vec<(usize, &mut Session, Vec<u8>)> = Vec::with_capacity(branches_used);
        branches.push((0, &mut self.conn, coordinator));
        for (i, conn) in self.others.iter_mut().enumerate() {
            if self.lanes_used[i + 1] {
                match conn.as_mut() {
                    Some(c) => branches.push((i + 1, c, branch_sql(i + 1))),
                    None => {
                        return Err(Failure::Fatal(ApplyError::Connection {
                            what: format!("lane {} lost its connection", i + 1),
                            source: TargetError::State("no connection"),
                        }))
                    }
                }
            }
        }
        let outcomes = futures_util::future::join_all(
            branches
                .into_iter()
                .map(|(lane, conn, sql)| async move { (lane, run_multi(conn, &sql).await) }),
        )
        .await;
        let mut affected = 0;
        for (lane, outcome) in outcomes {
            match outcome {
                Ok(rows) if lane == 0 => affected = rows,
                Ok(_) => {}
                // The checkpoint is the first statement of lane 0's query.
                Err((true, source)) if lane == 0 => return Err(checkpoint_failed(self, source)),
                Err((_, source)) => {
                    let what = if two_phase {
                        "ending and preparing an XA branch"
                    } else {
                        "ending an XA branch"
                    };
                    return Err(self.classify(source, "-", what, batch, first));
                }
            }
        }
        Ok(affected)
    }

    /// Commits the target transaction readied by [`Applier::commit`]: a plain COMMIT; or
    /// the coordinator's XA branch, which holds the checkpoint (in one phase when it is the
    /// only branch). Two-phase commit: once every branch is prepared, the coordinator's
    /// commit decides, and [`Applier::commit_others`] (or a later applier's recovery)
    /// follows it.
    async fn commit_decided(&mut self, batch: &ChangeBatch, first: u32) -> Result<(), Failure> {
        let Some(gtrid) = self.xa.clone() else {
            return match self.conn.run("COMMIT").await {
                Ok(_) => Ok(()),
                Err(source) => Err(self.classify(source, "-", "committing", batch, first)),
            };
        };
        if self.lanes_used.iter().filter(|&&u| u).count() == 1 {
            if let Err(source) = self
                .conn
                .run(format!("XA COMMIT '{gtrid}','0' ONE PHASE"))
                .await
            {
                return Err(self.classify(source, "-", "committing", batch, first));
            }
            self.lanes_used[0] = false;
            self.xa = None;
            return Ok(());
        }
        if let Err(source) = self.xa_on(0, "COMMIT", &gtrid).await {
            return Err(self.classify(source, "-", "committing", batch, first));
        }
        self.lanes_used[0] = false;
        Ok(())
    }

    /// Commits the prepared branches of the lanes after the coordinator's commit.
    async fn commit_others(&mut self, batch: &ChangeBatch, first: u32) -> Result<(), Failure> {
        let Some(gtrid) = self.xa.take() else {
            return Ok(());
        };
        for lane in 1..self.lanes_used.len() {
            if std::mem::take(&mut self.lanes_used[lane]) {
                self.xa_on(lane, "COMMIT", &gtrid).await.map_err(|source| {
                    // The transaction is decided; a new applier commits this branch.
                    Failure::Fatal(ApplyError::Connection {
                        what: format!(
                            "committing a prepared XA branch after {}",
                            position_text(batch, first)
                        ),
                        source,
                    })
                })?;
            }
        }
        Ok(())
    }

    fn stage_error(&self, p: usize, e: StageError) -> Failure {
        Failure::Fatal(ApplyError::BadChange {
            table: self.plans[p].name.clone(),
            detail: e.to_string(),
        })
    }

    /// Sorts a driver error: connection trouble (retry by reconnecting), deadlock (retry
    /// here), or a failed statement.
    fn classify(
        &self,
        source: TargetError,
        table: &str,
        what: &'static str,
        batch: &ChangeBatch,
        t: u32,
    ) -> Failure {
        match server_code(&source) {
            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => Failure::Retry,
            Some(ER_NO_SUCH_TABLE | ER_BAD_FIELD) => Failure::Fatal(ApplyError::Schema {
                table: table.to_string(),
                detail: format!("{what} failed at {}: {source}", position_text(batch, t)),
            }),
            Some(_) => Failure::Fatal(ApplyError::Statement {
                table: table.to_string(),
                what,
                position: position_text(batch, t),
                source,
            }),
            None => Failure::Fatal(ApplyError::Connection {
                what: what.to_string(),
                source,
            }),
        }
    }

    /// Runs the fast path's ready statements, phase by phase, each phase's lanes at the
    /// same time on their connections; any unexpected count is an anomaly. With one lane
    /// this runs whatever is ready; with several, it waits until the end of the target
    /// transaction (`last`) or until `max_pending_bytes` of statements are ready.
    async fn run_pending(
        &mut self,
        batch: &ChangeBatch,
        t: u32,
        stats: &mut ApplyStats,
        last: bool,
    ) -> Result<(), Failure> {
        if self.stmts.is_empty() {
            return Ok(());
        }
        if !self.spread {
            let started = Instant::now();
            let result = self.run_lane_zero(batch, t, stats).await;
            stats.times.execute += started.elapsed();
            return result;
        }
        let queued: usize = self.stmts.iter().map(|s| s.sql.len()).sum();
        if !last && queued < self.batcher.limits().max_pending_bytes {
            return Ok(());
        }
        let started = Instant::now();
        let packet = self.batcher.limits().max_statement_bytes;
        let mut stmts = std::mem::take(&mut self.stmts);
        let mut result = Ok(());
        while !stmts.is_empty() && result.is_ok() {
            let phase = stmts[0].phase;
            let end = stmts.iter().take_while(|s| s.phase == phase).count();
            let mut lanes: Vec<Vec<Stmt>> = (0..=self.others.len()).map(|_| Vec::new()).collect();
            for stmt in stmts.drain(..end) {
                let lane = stmt.lane.min(lanes.len() - 1);
                lanes[lane].push(stmt);
            }
            let mut handles = Vec::new();
            for (n, lane) in lanes.iter_mut().enumerate().skip(1) {
                if lane.is_empty() {
                    continue;
                }
                let Some(mut conn) = self.others[n - 1].take() else {
                    result = Err(Failure::Fatal(ApplyError::Connection {
                        what: format!("lane {n} lost its connection"),
                        source: TargetError::State("no connection"),
                    }));
                    break;
                };
                let work = std::mem::take(lane);
                let join = match &self.xa {
                    Some(gtrid) if !self.lanes_used[n] => Some(format!("XA START '{gtrid}','{n}'")),
                    _ => None,
                };
                self.lanes_used[n] = true;
                let mut multi = std::mem::take(&mut self.multi[n]);
                let plans = self.plans.clone();
                handles.push((
                    n,
                    tokio::spawn(async move {
                        let lane = Lane {
                            plans: &plans,
                            max_statement_bytes: packet,
                            pipelined: true,
                        };
                        let outcome =
                            exec_statements(&mut conn, join, &work, lane, &mut multi).await;
                        (conn, work, outcome, multi)
                    }),
                ));
            }
            let lane0 = std::mem::take(&mut lanes[0]);
            let lane = Lane {
                plans: &self.plans,
                max_statement_bytes: packet,
                pipelined: true,
            };
            let outcome0 =
                exec_statements(&mut self.conn, None, &lane0, lane, &mut self.multi[0]).await;
            let mut outcomes = vec![(lane0, outcome0)];
            for (n, handle) in handles {
                match handle.await {
                    Ok((conn, work, outcome, multi)) => {
                        self.others[n - 1] = Some(conn);
                        self.multi[n] = multi;
                        outcomes.push((work, outcome));
                    }
                    Err(e) => {
                        result = Err(Failure::Fatal(ApplyError::Connection {
                            what: format!("lane {n} failed: {e}"),
                            source: TargetError::State("lane task failed"),
                        }));
                    }
                }
            }
            for (work, (lane_stats, err)) in outcomes {
                stats.add(&lane_stats);
                if let (Some(e), true) = (err, result.is_ok()) {
                    result = Err(self.lane_failure(e, batch, t));
                }
                self.batcher.recycle_all(work);
            }
        }
        self.batcher.recycle_all(stmts.drain(..));
        self.stmts = stmts;
        stats.times.execute += started.elapsed();
        result
    }

    /// [`Applier::run_pending`] with one lane: everything on the coordinator connection.
    async fn run_lane_zero(
        &mut self,
        batch: &ChangeBatch,
        t: u32,
        stats: &mut ApplyStats,
    ) -> Result<(), Failure> {
        let mut stmts = std::mem::take(&mut self.stmts);
        let lane = Lane {
            plans: &self.plans,
            max_statement_bytes: self.batcher.limits().max_statement_bytes,
            pipelined: self.xa.is_some(),
        };
        let (lane_stats, err) =
            exec_statements(&mut self.conn, None, &stmts, lane, &mut self.multi[0]).await;
        stats.add(&lane_stats);
        let result = match err {
            Some(e) => Err(self.lane_failure(e, batch, t)),
            None => Ok(()),
        };
        self.batcher.recycle_all(stmts.drain(..));
        self.stmts = stmts;
        result
    }

    fn lane_failure(&self, e: LaneError, batch: &ChangeBatch, t: u32) -> Failure {
        match e {
            LaneError::Anomaly => Failure::Anomaly,
            LaneError::Driver { plan, what, source } => {
                let table = self.plans.get(plan).map_or("-", |p| p.name.as_str());
                self.classify(source, table, what, batch, t)
            }
        }
    }

    /// Runs one careful-mode statement for change `stmt.row` of `section` (in source
    /// transaction `t`), handling a conflict by policy.
    async fn run_careful(
        &mut self,
        stmt: Stmt,
        section_index: u32,
        section: &TableSection,
        batch: &ChangeBatch,
        t: u32,
        stats: &mut ApplyStats,
    ) -> Result<(), Failure> {
        let plan = &self.plans[stmt.plan];
        let table = plan.name.clone();
        let Some((op, i)) = stmt.row else {
            return Err(Failure::Anomaly);
        };
        let change = section.change(i);
        if let Some(probe) = &stmt.probe {
            let n = match count_rows(&mut self.conn, probe).await {
                Ok(n) => n,
                Err(e) => return Err(self.classify(e, &table, "probing for ambiguity", batch, t)),
            };
            if n > 1 {
                let before = change
                    .before
                    .map(|b| plan.describe_key(&b))
                    .unwrap_or_default();
                return Err(Failure::Fatal(ApplyError::Ambiguous {
                    table,
                    key: before,
                    position: position_text(batch, t),
                }));
            }
        }
        let conflict = match self.conn.run(&stmt.sql).await {
            Ok(ok) => match (op, ok.affected_rows) {
                (_, 1) => None,
                (RowOp::Update, 0) => Some(ConflictKind::MissingUpdate),
                (RowOp::Delete, 0) => Some(ConflictKind::MissingDelete),
                _ => return Err(Failure::Anomaly),
            },
            Err(e) if op == RowOp::Insert && server_code(&e) == Some(ER_DUP_ENTRY) => {
                Some(ConflictKind::DuplicateInsert)
            }
            Err(e)
                if op == RowOp::Update
                    && batch.is_compacted()
                    && server_code(&e) == Some(ER_DUP_ENTRY) =>
            {
                // Net updates need not come in an order that keeps UNIQUE keys unique at
                // every step (a swap of two values): apply it with the others at the end.
                self.deferred.push((section_index, i));
                self.scratch = stmt.sql;
                return Ok(());
            }
            Err(e) => return Err(self.classify(e, &table, "a row statement", batch, t)),
        };
        stats.statements += 1;
        stats.sql_bytes += stmt.sql.len() as u64;
        let mut buf = stmt.sql;
        if let Some(kind) = conflict {
            let plan = &self.plans[stmt.plan];
            let image = match kind {
                ConflictKind::DuplicateInsert => change.after,
                _ => change.before,
            };
            let key = image.map(|im| plan.describe_key(&im)).unwrap_or_default();
            // Initial-snapshot rows are upserts: a crash re-sends the chunk in flight, so
            // finding the row already there is expected, not a conflict.
            let snapshot_dup = batch.is_snapshot() && kind == ConflictKind::DuplicateInsert;
            if self.cfg.on_conflict == ConflictPolicy::Stop && !snapshot_dup {
                return Err(Failure::Fatal(ApplyError::Conflict {
                    table,
                    kind,
                    key,
                    position: position_text(batch, t),
                }));
            }
            if !snapshot_dup {
                stats.conflicts.count(kind);
                tracing::warn!(table = %table, %kind, key = %key, "conflict overwritten");
            }
            if kind != ConflictKind::MissingDelete {
                buf.clear();
                buf.extend_from_slice(b"REPLACE INTO ");
                let (after, before) = (change.after, change.before);
                let image = after.ok_or(Failure::Anomaly)?;
                let base = if kind == ConflictKind::MissingUpdate {
                    before
                } else {
                    None
                };
                push_insert_tail(plan, &image, base.as_ref(), &mut buf).map_err(|e| {
                    Failure::Fatal(ApplyError::BadChange {
                        table: table.clone(),
                        detail: e.to_string(),
                    })
                })?;
                if let Err(e) = self.conn.run(&buf).await {
                    return Err(self.classify(
                        e,
                        &table,
                        "overwriting a conflicting row",
                        batch,
                        t,
                    ));
                }
                stats.statements += 1;
            }
        } else {
            stats.count_rows(stmt.op, 1);
        }
        buf.clear();
        self.scratch = buf;
        if let Some(p) = stmt.probe {
            self.batcher.recycle(p);
        }
        Ok(())
    }

    /// Applies the deferred updates of a compacted frame: first again one by one, as long
    /// as that makes progress (a chain: one update frees the value the next needs), then,
    /// for what is left (a cycle), per table by moving the rows out to a temporary table,
    /// updating them there, and moving them back in one statement.
    async fn apply_deferred(
        &mut self,
        batch: &ChangeBatch,
        t: u32,
        stats: &mut ApplyStats,
    ) -> Result<(), Failure> {
        loop {
            let pending = std::mem::take(&mut self.deferred);
            let before = pending.len();
            for &(s, i) in &pending {
                let section = &batch.sections()[s as usize];
                let p = self.section_plans[s as usize];
                let buf = std::mem::take(&mut self.scratch);
                let stmt =
                    careful(&self.plans, p, section, i, buf).map_err(|e| self.stage_error(p, e))?;
                self.run_careful(stmt, s, section, batch, t, stats).await?;
            }
            if self.deferred.is_empty() {
                return Ok(());
            }
            if self.deferred.len() == before {
                break;
            }
        }
        let mut cycle = std::mem::take(&mut self.deferred);
        cycle.sort_by_key(|&(s, _)| self.section_plans[s as usize]);
        let mut start = 0;
        while start < cycle.len() {
            let p = self.section_plans[cycle[start].0 as usize];
            let end = start
                + cycle[start..]
                    .iter()
                    .take_while(|&&(s, _)| self.section_plans[s as usize] == p)
                    .count();
            self.move_and_update(batch, &cycle[start..end], p, t, stats)
                .await?;
            start = end;
        }
        Ok(())
    }

    async fn move_and_update(
        &mut self,
        batch: &ChangeBatch,
        rows: &[(u32, usize)],
        p: usize,
        t: u32,
        stats: &mut ApplyStats,
    ) -> Result<(), Failure> {
        let plan = &self.plans[p];
        let table = plan.name.clone();
        let tmp = format!("{}.`outflow_net_update`", plan.db_quoted);
        let bad = |e: crate::literal::LiteralError| {
            Failure::Fatal(ApplyError::BadChange {
                table: table.clone(),
                detail: e.to_string(),
            })
        };
        let mut keys = Vec::new();
        for (n, &(s, i)) in rows.iter().enumerate() {
            let before = batch.sections()[s as usize]
                .change(i)
                .before
                .ok_or(Failure::Anomaly)?;
            if n > 0 {
                keys.push(b',');
            }
            plan.push_key_tuple(&mut keys, &before).map_err(bad)?;
        }
        let key_cols = if plan.key.len() == 1 {
            plan.cols[plan.key[0]].quoted.clone()
        } else {
            let mut k = Vec::new();
            plan.push_column_list(&mut k, plan.key.iter().copied());
            String::from_utf8_lossy(&k).into_owned()
        };
        let mut statements: Vec<Vec<u8>> = Vec::new();
        let mut sql = format!(
            "CREATE TEMPORARY TABLE {tmp} AS SELECT {} FROM {} WHERE {key_cols} IN (",
            plan.writable_list, plan.quoted
        )
        .into_bytes();
        sql.extend_from_slice(&keys);
        sql.push(b')');
        statements.push(sql);
        let mut sql = format!("DELETE FROM {} WHERE {key_cols} IN (", plan.quoted).into_bytes();
        sql.extend_from_slice(&keys);
        sql.push(b')');
        statements.push(sql);
        for &(s, i) in rows {
            let ch = batch.sections()[s as usize].change(i);
            let (Some(before), Some(after)) = (ch.before, ch.after) else {
                return Err(Failure::Anomaly);
            };
            let mut sql = format!("UPDATE {tmp} SET ").into_bytes();
            plan.push_assignments(&mut sql, &after, true).map_err(bad)?;
            sql.extend_from_slice(b" WHERE ");
            plan.push_key_match(&mut sql, &before).map_err(bad)?;
            statements.push(sql);
        }
        statements.push(
            format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {tmp}",
                plan.quoted,
                cols = plan.writable_list
            )
            .into_bytes(),
        );
        statements.push(format!("DROP TEMPORARY TABLE {tmp}").into_bytes());
        for sql in &statements {
            if let Err(source) = self.conn.run(sql).await {
                let _ = self
                    .conn
                    .run(format!("DROP TEMPORARY TABLE IF EXISTS {tmp}"))
                    .await;
                return Err(
                    match self.classify(source, &table, "moving rows", batch, t) {
                        Failure::Fatal(ApplyError::Statement { source, .. }) => {
                            Failure::Fatal(ApplyError::UniqueCycle {
                                table,
                                position: position_text(batch, t),
                                source,
                            })
                        }
                        other => other,
                    },
                );
            }
            stats.statements += 1;
            stats.sql_bytes += sql.len() as u64;
        }
        stats.updated += rows.len() as u64;
        Ok(())
    }

    /// Runs the initial snapshot's own statement (its frame is marked as snapshot), which
    /// makes the target forget rows of an interrupted earlier read: exactly one of the
    /// shapes of [`SnapshotStatement`], anything else refused. Not the user's DDL, so no
    /// DDL policy applies (skipping it would leave rows the source no longer has); see
    /// [`crate::ddl`]. Running it twice (a crash before the checkpoint moved past it) is
    /// harmless: no row after it was applied yet, and the rows it drops all come again.
    async fn apply_snapshot_statement(
        &mut self,
        ddl: &Ddl,
        position: String,
    ) -> Result<(), ApplyError> {
        let statement = SnapshotStatement::parse(&ddl.sql).map_err(|e| ApplyError::BadChange {
            table: "-".to_string(),
            detail: format!(
                "a snapshot frame at {position} carries `{}`: {e}",
                outflow_core::statement::shorten(&ddl.sql, 200)
            ),
        })?;
        let what = match statement {
            SnapshotStatement::Truncate { .. } => "the snapshot's TRUNCATE TABLE",
            SnapshotStatement::DeleteAfter { .. } => "the snapshot's DELETE after its last key",
        };
        self.in_doubt = true;
        let result = self.conn.run(statement.target_sql()).await;
        self.in_doubt = false;
        let done = match result {
            Ok(ok) => ok,
            Err(source) if server_code(&source).is_none() => {
                return Err(ApplyError::Connection {
                    what: format!("running {what} at {position}"),
                    source,
                })
            }
            Err(source) => {
                return Err(ApplyError::Statement {
                    table: statement.qualified_name(),
                    what,
                    position,
                    source,
                })
            }
        };
        tracing::info!(%statement, %position, rows = done.affected_rows,
            "snapshot: a table is read again; the target forgot the rows of the earlier read");
        Ok(())
    }

    /// Applies, skips or stops on a DDL statement, by the policy for its kind; see
    /// [`crate::ddl`]. `redelivered`: the checkpoint says it may have run already.
    async fn apply_ddl(
        &mut self,
        ddl: &Ddl,
        position: String,
        redelivered: bool,
    ) -> Result<DdlOutcome, ApplyError> {
        let kind = DdlKind::of(&ddl.sql);
        let statement = || outflow_core::statement::shorten(&ddl.sql, 200);
        let policy = self.cfg.ddl.policy(kind);
        match policy {
            DdlPolicy::Stop => {
                return Err(ApplyError::DdlStopped {
                    kind,
                    statement: statement(),
                    position,
                })
            }
            DdlPolicy::Skip => {
                tracing::warn!(%kind, statement = %statement(), %position, "DDL skipped by policy");
                self.stats.ddl_skipped += 1;
                return Ok(DdlOutcome::Skipped);
            }
            DdlPolicy::Apply => {}
        }
        let fail = |source| ApplyError::Ddl {
            kind,
            statement: statement(),
            position: position.clone(),
            source,
        };
        // The source session's context: the statement's text is in its client character
        // set, and sql_mode changes what DDL means (ANSI_QUOTES, PIPES_AS_CONCAT, defaults of
        // zero dates, ...). Collation ids are what the binlog carries; the server takes them
        // as they are (as mysqlbinlog's output does).
        let mut setup = match ddl.charset {
            Some((client, connection, server)) => format!(
                "SET @@session.character_set_client = {client}, \
                 @@session.collation_connection = {connection}, \
                 @@session.collation_server = {server}"
            ),
            None => "SET NAMES utf8mb4".to_string(),
        };
        if let Some(mode) = ddl.sql_mode {
            setup.push_str(&format!(", @@session.sql_mode = {mode}"));
        }
        self.in_doubt = true;
        let mut result = self.conn.run(setup).await.map(drop);
        if let (Ok(()), Some(db)) = (&result, &ddl.db) {
            result = match self
                .conn
                .run(format!("USE {}", crate::sql::ident(db)))
                .await
                .map(drop)
            {
                // A database statement does not need its default database (DROP DATABASE
                // run from inside it, delivered again); any other statement does, and must
                // not run in whatever database an earlier statement left selected.
                Err(e)
                    if server_code(&e) == Some(ER_BAD_DB)
                        && matches!(
                            kind,
                            DdlKind::CreateDatabase
                                | DdlKind::DropDatabase
                                | DdlKind::AlterDatabase
                        ) =>
                {
                    Ok(())
                }
                r => r,
            };
        }
        if result.is_ok() {
            result = self.conn.run(&ddl.sql).await.map(drop);
        }
        let restore = self
            .conn
            .run(
                "SET NAMES binary, \
                 SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
            )
            .await;
        self.in_doubt = false;
        self.forget_catalog();
        let outcome = match result {
            Ok(()) => DdlOutcome::Applied,
            Err(e)
                if server_code(&e).is_some_and(|c| {
                    ALREADY_APPLIED.contains(&c)
                        || (redelivered && ALREADY_APPLIED_IF_REDELIVERED.contains(&c))
                }) =>
            {
                tracing::info!(%kind, statement = %statement(), %position, error = %e,
                    "DDL already applied on the target");
                DdlOutcome::AlreadyApplied
            }
            Err(e) if server_code(&e).is_none() => {
                return Err(ApplyError::Connection {
                    what: format!("running DDL at {position}"),
                    source: e,
                })
            }
            Err(e) => return Err(fail(e)),
        };
        restore.map_err(|source| ApplyError::Connection {
            what: "restoring the session after DDL".to_string(),
            source,
        })?;
        self.stats.ddl_applied += 1;
        Ok(outcome)
    }
}

/// Every XA id this crate writes starts so.
const XA_PREFIX: &str = "outflow-";

/// The end of the target transaction that starts at source transaction `t` of `batch`:
/// whole source transactions up to `max_changes` row changes (at least one), before
/// `rows_end`.
fn chunk_end(batch: &ChangeBatch, t: u32, rows_end: u32, max_changes: usize) -> u32 {
    let mut end = t;
    let mut size = 0usize;
    while end < rows_end {
        let txn = &batch.transactions()[end as usize];
        let len: usize = batch
            .transaction_runs(txn)
            .iter()
            .map(|r| r.len as usize)
            .sum();
        if end > t && size + len > max_changes {
            break;
        }
        size += len;
        end += 1;
    }
    end
}

/// The row changes of source transactions `first..end` of `batch` in the order they are
/// applied, as (transaction, section, change). The DDL transaction has no rows, and a
/// compacted batch's rows are not any one transaction's: its chunk is all of them.
fn chunk_rows(
    batch: &ChangeBatch,
    first: u32,
    end: u32,
) -> impl Iterator<Item = (u32, u32, usize)> + '_ {
    let compacted = batch.is_compacted();
    let txns = batch.transactions();
    let ddl_at = batch.ddl().map(|_| txns.len() as u32 - 1);
    let ts = if compacted {
        first..end.min(first.saturating_add(1))
    } else {
        first..end.max(first)
    };
    ts.filter(move |&t| Some(t) != ddl_at).flat_map(move |t| {
        let runs = if compacted {
            batch.runs()
        } else {
            batch.transaction_runs(&txns[t as usize])
        };
        runs.iter().flat_map(move |run| {
            (run.first..run.first + run.len).map(move |i| (t, run.section, i as usize))
        })
    })
}

/// The XA global id of the target transaction of stream `stream` that starts at source
/// transaction `first` of frame `seq`, opened by session `session` (for tools and tests
/// that look at `XA RECOVER`).
pub fn xa_gtrid(stream: &str, seq: u64, first: u32, session: u32) -> String {
    format!(
        "{XA_PREFIX}{:012x}-{seq:x}-{first:x}-{session:x}",
        fnv64(stream.as_bytes()) & 0xffff_ffff_ffff
    )
}

/// FNV-1a of `bytes`: names the stream inside XA ids, which are limited to 64 bytes.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Connects and sets the session up; see the module documentation.
async fn open_session(opts: &ConnectOptions) -> Result<Session, ApplyError> {
    let mut conn = Session::open(opts)
        .await
        .map_err(|source| ApplyError::Connection {
            what: "connecting".to_string(),
            source,
        })?;
    conn.run(
        "SET NAMES binary, SESSION time_zone = '+00:00', \
         SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
         SESSION foreign_key_checks = 0, SESSION autocommit = 1, \
         SESSION lock_wait_timeout = 120",
    )
    .await
    .map_err(|source| ApplyError::Connection {
        what: "setting up the session".to_string(),
        source,
    })?;
    Ok(conn)
}

/// How a lane's statements went wrong.
enum LaneError {
    /// An unexpected row count or a duplicate key: replay carefully.
    Anomaly,
    /// The driver failed (connection, server error).
    Driver {
        plan: usize,
        what: &'static str,
        source: TargetError,
    },
}

impl LaneError {
    /// A batched statement that failed: a duplicate key is an anomaly (careful mode
    /// names it), anything else the statement's error.
    fn statement(plan: usize, source: TargetError) -> LaneError {
        if server_code(&source) == Some(ER_DUP_ENTRY) {
            return LaneError::Anomaly;
        }
        LaneError::Driver {
            plan,
            what: "a batched statement",
            source,
        }
    }
}

impl Checkpoint {
    /// The checkpoint row as read: seq, txns_applied, txns_in_frame, gtid, position.
    fn from_row(row: &[Option<String>]) -> Result<Self, TargetError> {
        const WHAT: &str = "the checkpoint row";
        let number = |i| {
            value::<u64>(row, i, WHAT)?
                .ok_or_else(|| TargetError::Unexpected(format!("{WHAT}: column {} is NULL", i + 1)))
        };
        let count = |i| {
            u32::try_from(number(i)?)
                .map_err(|_| TargetError::Unexpected(format!("{WHAT}: column {} > 2^32", i + 1)))
        };
        Ok(Checkpoint {
            seq: number(0)?,
            txns_applied: count(1)?,
            txns_in_frame: count(2)?,
            gtid: row.get(3).cloned().flatten(),
            position: row.get(4).cloned().flatten().unwrap_or_default(),
        })
    }
}

/// The count a `SELECT COUNT(*)` probe returns.
async fn count_rows(conn: &mut Session, probe: &[u8]) -> Result<u64, TargetError> {
    match conn.rows(probe).await?.first() {
        Some(row) => Ok(value(row, 0, "a probe's count")?.unwrap_or(0)),
        None => Ok(0),
    }
}

/// The error for a checkpoint row that could not be read.
fn checkpoint_unread(source: TargetError) -> ApplyError {
    ApplyError::Connection {
        what: "reading the checkpoint".to_string(),
        source,
    }
}

/// Runs `sql`, statements separated by `;`, in one round trip, and reads every result:
/// the rows the first statement affected, or the error of the one that failed (the server
/// runs none after it), with whether it was the first.
async fn run_multi(conn: &mut Session, sql: &[u8]) -> Result<u64, (bool, TargetError)> {
    conn.send(sql).await.map_err(|e| (true, e))?;
    let affected = match conn.next().await.map_err(|e| (true, e))? {
        Some(Reply::Done(ok)) => ok.affected_rows,
        _ => 0,
    };
    while conn.next().await.map_err(|e| (false, e))?.is_some() {}
    Ok(affected)
}

/// The most statement text sent in one query (and never more than one statement may have,
/// which stays below the target's `max_allowed_packet`). A lane's statements go to the
/// target several in one `COM_QUERY` (`;`-separated, which `CLIENT_MULTI_STATEMENTS`
/// allows), up to this much: one round trip each left the
/// target's connection idle between them, waiting for this process and then for a CPU,
/// which on a busy machine took milliseconds each.
const MULTI_STATEMENT_BYTES: usize = 1 << 20;

/// Runs a lane's statements in order, checking each one's row count; stops at the first
/// failure. Consecutive statements go in one query (see [`MULTI_STATEMENT_BYTES`]),
/// built in `multi`, which is kept from call to call; the server runs them in order and
/// stops at the first error, and each one's count is checked from its own result. `join`
/// (the lane's `XA START`) goes first in the first query.
async fn exec_statements(
    conn: &mut Session,
    mut join: Option<String>,
    stmts: &[Stmt],
    lane: Lane<'_>,
    multi: &mut Vec<u8>,
) -> (ApplyStats, Option<LaneError>) {
    if stmts.iter().any(|s| s.shape.is_some()) {
        return exec_prepared(conn, join, stmts, lane, multi).await;
    }
    let packet = MULTI_STATEMENT_BYTES.min(lane.max_statement_bytes);
    let mut stats = ApplyStats::default();
    let joining = |source| LaneError::Driver {
        plan: usize::MAX,
        what: "joining the XA transaction",
        source,
    };
    if let (Some(sql), Some(Stmt { probe: Some(_), .. })) = (&join, stmts.first()) {
        // The probe must run inside the branch.
        if let Err(source) = conn.run(sql.as_str()).await {
            return (stats, Some(joining(source)));
        }
        join = None;
    }
    let failed = |stmt: &Stmt, e| LaneError::statement(stmt.plan, e);
    let mut i = 0;
    while i < stmts.len() {
        let stmt = &stmts[i];
        if let Some(probe) = &stmt.probe {
            match count_rows(conn, probe).await {
                // Careful mode names it.
                Ok(n) if n > 1 => return (stats, Some(LaneError::Anomaly)),
                Ok(_) => {}
                Err(source) => {
                    let (plan, what) = (stmt.plan, "probing for ambiguity");
                    return (stats, Some(LaneError::Driver { plan, what, source }));
                }
            }
        }
        // The statements that go with this one: i..end.
        let prefix = join.take();
        let mut size = prefix.as_ref().map_or(0, |j| j.len() + 1) + stmt.sql.len();
        let mut end = i + 1;
        while let Some(next) = stmts.get(end) {
            if next.probe.is_some() || size + 1 + next.sql.len() > packet {
                break;
            }
            size += 1 + next.sql.len();
            end += 1;
        }
        let sql: &[u8] = if end == i + 1 && prefix.is_none() {
            &stmt.sql
        } else {
            multi.clear();
            if let Some(j) = &prefix {
                multi.extend_from_slice(j.as_bytes());
                multi.push(b';');
            }
            for (n, s) in stmts[i..end].iter().enumerate() {
                if n > 0 {
                    multi.push(b';');
                }
                multi.extend_from_slice(&s.sql);
            }
            multi
        };
        if let Err(e) = conn.send(sql).await {
            return (stats, Some(failed(stmt, e)));
        }
        if prefix.is_some() {
            // The XA START's result comes first.
            if let Err(source) = conn.next().await {
                return (stats, Some(joining(source)));
            }
        }
        // The server runs the statements in order and none after one that fails.
        for stmt in &stmts[i..end] {
            let ok = match conn.next().await {
                Ok(Some(Reply::Done(ok))) => ok,
                Ok(_) => {
                    let _ = conn.skip_rest().await;
                    return (stats, Some(LaneError::Anomaly));
                }
                Err(e) => return (stats, Some(failed(stmt, e))),
            };
            if !as_expected(stmt.check, &ok) {
                // What follows is rolled back; read it off the connection.
                let _ = conn.skip_rest().await;
                return (stats, Some(LaneError::Anomaly));
            }
            stats.count_statement(stmt);
        }
        if let Err(e) = conn.skip_rest().await {
            return (stats, Some(failed(&stmts[end - 1], e)));
        }
        i = end;
    }
    (stats, None)
}

/// Whether a statement's result is what `check` expects.
fn as_expected(check: Check, ok: &OkPacket) -> bool {
    let affected = ok.affected_rows;
    match check {
        Check::Rows(n) => affected == n,
        // One row: 2 when it was found and changed (1 would also mean found unchanged,
        // which only careful mode can tell apart).
        Check::Upserts(1) => affected == 2,
        // Several rows: the server's "Records: n  Duplicates: d" says how many found
        // their row (with CLIENT_FOUND_ROWS, changed or not).
        Check::Upserts(n) => duplicates(&ok.info) == Some(n) && affected >= n,
    }
}

/// What a lane runs its statements with.
#[derive(Clone, Copy)]
struct Lane<'a> {
    /// The plans the statements were built from (for the text of prepared statements).
    plans: &'a [TablePlan],
    max_statement_bytes: usize,
    /// Several executes may be sent before their replies are read: the lane is in an XA
    /// branch (see "Prepared statements").
    pipelined: bool,
}

/// Commands a pipelined lane sends before it reads replies: enough to keep the target
/// busy while this process reads and writes, few enough that the replies (tens of bytes
/// each) never fill the socket's buffers while the target still reads commands.
const PIPELINE_WINDOW: usize = 64;

/// Queued command bytes sent at once, so that the target starts on them while the rest
/// is encoded.
const PIPELINE_FLUSH_BYTES: usize = 256 << 10;

/// The reply a queued command is due.
struct Due {
    /// Index of its statement; `None` for the lane's `XA START`.
    stmt: Option<usize>,
    check: Check,
    /// The statement's last command: its changes count once this reply is as expected.
    last: bool,
}

/// Replies a lane waits for, and the first thing that went wrong.
struct Replies {
    due: std::collections::VecDeque<Due>,
    failure: Option<LaneError>,
    /// The connection failed: nothing more can be read from it.
    broken: bool,
}

impl Replies {
    /// Reads replies until at most `keep` are due, checking each: the first failure is
    /// kept, and the replies after it are read and dropped (the target transaction is
    /// rolled back).
    async fn settle(
        &mut self,
        conn: &mut Session,
        stmts: &[Stmt],
        stats: &mut ApplyStats,
        keep: usize,
    ) {
        while self.due.len() > keep && !self.broken {
            let Some(due) = self.due.pop_front() else {
                return;
            };
            let plan = due.stmt.map_or(usize::MAX, |i| stmts[i].plan);
            let reply = match conn.read_reply().await {
                Ok(r) => r,
                Err(source) => {
                    self.broken = true;
                    self.failure.get_or_insert(LaneError::Driver {
                        plan,
                        what: "a batched statement",
                        source,
                    });
                    return;
                }
            };
            if self.failure.is_some() {
                continue;
            }
            let Some(i) = due.stmt else {
                if let Err(e) = reply {
                    self.failure = Some(LaneError::Driver {
                        plan,
                        what: "joining the XA transaction",
                        source: TargetError::Server(Box::new(e)),
                    });
                }
                continue;
            };
            let stmt = &stmts[i];
            match reply {
                Err(e) => {
                    self.failure =
                        Some(LaneError::statement(plan, TargetError::Server(Box::new(e))))
                }
                Ok(ok) if !as_expected(due.check, &ok) => self.failure = Some(LaneError::Anomaly),
                Ok(_) if due.last => {
                    if stmt.shape.is_some() {
                        stats.prepared += 1;
                        stats.executes += 1;
                    }
                    stats.count_statement(stmt);
                }
                Ok(_) => stats.executes += 1,
            }
        }
    }
}

/// [`exec_statements`] for statements whose values are parameters: each is cut into
/// [`chunks`] of rows, each chunk an execute of the statement prepared for its shape and
/// row count (prepared on this connection the first time, its text built in `scratch`).
/// Pipelined, a lane's executes go several to a write and their replies are read behind
/// them ([`PIPELINE_WINDOW`]); otherwise each reply is read before the next execute is
/// sent. Statements with text (single-row ones) are queued as queries; a probe runs with
/// nothing outstanding.
async fn exec_prepared(
    conn: &mut Session,
    join: Option<String>,
    stmts: &[Stmt],
    lane: Lane<'_>,
    scratch: &mut Vec<u8>,
) -> (ApplyStats, Option<LaneError>) {
    let mut stats = ApplyStats::default();
    let mut replies = Replies {
        due: std::collections::VecDeque::new(),
        failure: None,
        broken: false,
    };
    let window = if lane.pipelined { PIPELINE_WINDOW } else { 1 };
    if let Some(sql) = join {
        // Its reply is read before any execute is sent: executes behind a refused
        // `XA START` would run outside the transaction, each committing on its own.
        conn.queue_query(sql.as_bytes());
        replies.due.push_back(Due {
            stmt: None,
            check: Check::Rows(0),
            last: false,
        });
        replies.settle(conn, stmts, &mut stats, 0).await;
        if replies.failure.is_some() {
            return (stats, replies.failure);
        }
    }
    let mut ident: Vec<u64> = Vec::new();
    'stmts: for (i, stmt) in stmts.iter().enumerate() {
        if let Some(probe) = &stmt.probe {
            replies.settle(conn, stmts, &mut stats, 0).await;
            if replies.failure.is_some() {
                break;
            }
            match count_rows(conn, probe).await {
                // Careful mode names it.
                Ok(n) if n > 1 => {
                    replies.failure = Some(LaneError::Anomaly);
                    break;
                }
                Ok(_) => {}
                Err(source) => {
                    let (plan, what) = (stmt.plan, "probing for ambiguity");
                    replies.failure = Some(LaneError::Driver { plan, what, source });
                    break;
                }
            }
        }
        let Some(shape) = &stmt.shape else {
            conn.queue_query(&stmt.sql);
            replies.due.push_back(Due {
                stmt: Some(i),
                check: stmt.check,
                last: true,
            });
            replies.settle(conn, stmts, &mut stats, window - 1).await;
            if replies.failure.is_some() {
                break;
            }
            continue;
        };
        let mut rest = &stmt.sql[..];
        let mut left = stmt.changes;
        for rows in chunks(stmt.changes, shape.per_row) {
            left -= rows as u64;
            ident.clear();
            ident.extend([stmt.plan as u64, shape.kind as u64, rows as u64]);
            ident.extend_from_slice(&shape.sig);
            let st = match conn.prepared(&ident) {
                Some(st) => st,
                None => {
                    // Preparing waits for every reply due.
                    replies.settle(conn, stmts, &mut stats, 0).await;
                    if replies.failure.is_some() {
                        break 'stmts;
                    }
                    shape_sql(&lane.plans[stmt.plan], shape, rows, scratch);
                    match conn.prepare(&ident, scratch).await {
                        Ok(st) => st,
                        Err(source) => {
                            replies.failure = Some(LaneError::Driver {
                                plan: stmt.plan,
                                what: "preparing a batched statement",
                                source,
                            });
                            break 'stmts;
                        }
                    }
                }
            };
            let Some(len) = params_len(rest, rows * shape.per_row) else {
                replies.failure = Some(LaneError::Driver {
                    plan: stmt.plan,
                    what: "a batched statement",
                    source: TargetError::Unexpected(
                        "a statement's parameters are cut short".to_string(),
                    ),
                });
                break 'stmts;
            };
            let (now, later) = rest.split_at(len);
            rest = later;
            if let Err(source) = conn.queue_execute(&st, TaggedParams(now)) {
                let (plan, what) = (stmt.plan, "a batched statement");
                replies.failure = Some(LaneError::Driver { plan, what, source });
                break 'stmts;
            }
            replies.due.push_back(Due {
                stmt: Some(i),
                check: match shape.kind {
                    ShapeKind::Upsert => Check::Upserts(rows as u64),
                    ShapeKind::Insert | ShapeKind::Delete => Check::Rows(rows as u64),
                },
                last: left == 0,
            });
            if conn.queued_bytes() >= PIPELINE_FLUSH_BYTES {
                if let Err(source) = conn.flush().await {
                    let (plan, what) = (stmt.plan, "a batched statement");
                    replies.failure = Some(LaneError::Driver { plan, what, source });
                    replies.broken = true;
                    break 'stmts;
                }
            }
            replies.settle(conn, stmts, &mut stats, window - 1).await;
            if replies.failure.is_some() {
                break 'stmts;
            }
        }
    }
    // Whatever was sent is answered, failure or not: the connection must be left with
    // nothing due.
    replies.settle(conn, stmts, &mut stats, 0).await;
    (stats, replies.failure)
}

/// Bytes of the first `n` parameters of `buf` (in `push_tagged`'s form); `None` if it
/// holds fewer.
fn params_len(buf: &[u8], n: usize) -> Option<usize> {
    let mut at = 0;
    for _ in 0..n {
        at += read_tagged(buf.get(at..)?)?.1;
    }
    Some(at)
}

/// The parameters in a buffer of `push_tagged`'s form, in order.
struct TaggedParams<'a>(&'a [u8]);

impl<'a> Iterator for TaggedParams<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let (p, n) = read_tagged(self.0)?;
        self.0 = &self.0[n..];
        Some(p)
    }
}

/// The `Duplicates: d` of a multi-row INSERT's info message ("Records: 3  Duplicates: 2
/// Warnings: 0"): with `CLIENT_FOUND_ROWS`, the rows of an `ON DUPLICATE KEY UPDATE` that
/// found their row.
fn duplicates(info: &str) -> Option<u64> {
    let rest = &info[info.find("Duplicates:")? + "Duplicates:".len()..];
    let digits = rest.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// `GTID 0-1-5, binlog.000002:1234` for transaction `t` of `batch` (or the batch's range
/// for a compacted one).
pub(crate) fn position_text(batch: &ChangeBatch, t: u32) -> String {
    let txns = batch.transactions();
    let ddl_txn = batch.ddl().is_some() && t as usize + 1 == txns.len();
    if batch.is_compacted() && !ddl_txn {
        let first = txns.iter().find_map(|t| t.gtid.as_ref());
        let last = txns.iter().rev().find_map(|t| t.gtid.as_ref());
        return match (first, last) {
            (Some(a), Some(b)) => format!("compacted batch of GTIDs {a}..{b}"),
            _ => format!("compacted batch after {}", batch.start()),
        };
    }
    match txns.get(t as usize) {
        Some(txn) => {
            let file = batch
                .files()
                .get(txn.file as usize)
                .map_or("?", String::as_str);
            match &txn.gtid {
                Some(g) => format!("GTID {g}, {file}:{}", txn.end_pos),
                None => format!("{file}:{}", txn.end_pos),
            }
        }
        None => format!("after {}", batch.start()),
    }
}

#[cfg(test)]
mod tests {
    use super::duplicates;

    #[test]
    fn duplicates_come_from_the_insert_info() {
        assert_eq!(
            duplicates("Records: 3  Duplicates: 2  Warnings: 0"),
            Some(2)
        );
        assert_eq!(
            duplicates("Records: 3  Duplicates: 0  Warnings: 1"),
            Some(0)
        );
        assert_eq!(duplicates(""), None);
        assert_eq!(duplicates("Duplicates: x"), None);
    }
}

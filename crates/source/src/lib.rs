//! outflow's source side, minus the wire: schema tracking with history, replication
//! filters, and the consistent initial snapshot. The replication connection itself is
//! `outflow-replication`; the loop that joins the two (reconnect, failover, checkpoints)
//! drives the pieces here, which are built for it:
//!
//! - [`schema::SchemaTracker`] (sans-IO) takes QUERY events' text and TABLE_MAPs and
//!   answers "the definition of `db.table` at this point"; [`schema::table_hook`] plugs it
//!   into the decoder so TABLE_MAPs get names, signedness and charsets before rows are
//!   read. [`schema::history::HistoryStore`] keeps every change on disk so that a restart
//!   from a checkpoint decodes with the schema of that checkpoint.
//! - [`filter`]: `replicate_do_db` / `replicate_wild_ignore_table` style filters with the
//!   server's evaluation order, decided once per TABLE_MAP so an ignored table's rows are
//!   never decoded; per-table column exclusion and masking.
//! - [`snapshot`]: consistent, chunked, parallel, resumable table copy, and the
//!   [`snapshot::Handoff`] that tells the stream which changes the copy already holds.
//!
//! # Schema tracking: approach and limits
//!
//! The tracker starts from `information_schema` (or from its saved history) and replays the
//! DDL of the stream with its own reader of the DDL grammar ([`ddl`], which explains why
//! not a general SQL parser). Every TABLE_MAP is checked against the tracked definition:
//! column count and storage type of every column, and names and signedness when the binlog
//! carries them (`binlog_row_metadata=FULL`); a difference is an error naming `db.table`
//! and the position, never a silently wrong decode. What the binlog lacks is filled in from
//! the tracked definition. Each change is a numbered [`schema::HistoryEntry`] stored with
//! the statement's position; checkpoints store that number next to the stream position.
//!
//! Limits, each an error rather than a wrong schema unless said otherwise:
//! - DDL the reader does not understand on a table in scope stops the stream with an error
//!   naming statement, position and table; [`schema::load::resync_tables`] reloads the
//!   table from the server, whose definition is the current one, which is right only if no
//!   later DDL on that table is still ahead in the stream (the TABLE_MAP check catches a
//!   wrong one). DDL on tables outside the scope that cannot be followed makes the tracker
//!   forget them.
//! - `CREATE TABLE ... SELECT` is only understood in the form row-based binlogs write
//!   (explicit columns); `CREATE TABLE ... LIKE` needs the source table tracked.
//! - Statements that change rows without row events (`ALTER TABLE ... EXCHANGE PARTITION`,
//!   `TRUNCATE`) are reported ([`schema::QueryOutcome::truncated`]) or, for partition
//!   exchange, not at all.
//! - Generated columns, invisible columns and MariaDB's implicit system-versioning columns
//!   are tracked by the declared column list; a server that logs columns differently
//!   fails the TABLE_MAP check.
//! - Charsets are resolved column > table > database > server default with the server's
//!   collation catalogue; a collation unknown to the catalogue leaves the column's charset
//!   unknown (values pass as bytes).
//! - Names follow `lower_case_table_names` as read at start.
//!
//! # Filters
//!
//! See [`filter`]: `do_db`, `ignore_db`, `do_table`, `ignore_table`, `wild_do_table`,
//! `wild_ignore_table`, evaluated like a replica's `replicate_*` options, and per-table
//! `columns` rules that exclude columns or mask them (SHA-256, optionally keyed).
//!
//! # Snapshot consistency
//!
//! See [`snapshot`]: one `START TRANSACTION WITH CONSISTENT SNAPSHOT` per table with its
//! `binlog_snapshot_file/position`, no global lock on MariaDB, and a per-table handoff.

pub mod ddl;
pub mod filter;
mod fsutil;
pub mod schema;
pub mod snapshot;
pub mod tables;

pub use filter::{Filter, FilterConfig, TableFilterCache};
pub use schema::{EventPosition, SchemaError, SchemaTracker};
pub use snapshot::{Handoff, SnapshotConfig, SnapshotSink};
pub use tables::SourceTables;

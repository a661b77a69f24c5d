//! outflow's shared vocabulary, which every other crate depends on and which depends on
//! nothing heavy (serde and thiserror only):
//!
//! - [`position`]: binlog file and offset, MariaDB GTID positions (`0-1-100,1-2-5`), MySQL
//!   GTID sets (`uuid[:tag]:1-5`), and [`SourcePosition`], which combines them, advances only
//!   at transaction boundaries, and is what checkpoints store (serde, as text).
//! - [`schema`]: [`TableSchema`], one versioned definition of a table: names, SQL types with
//!   their parameters, signedness, charset, primary key.
//! - [`value`]: [`ValueRef`], a borrowed column value that represents every MySQL/MariaDB
//!   type exactly.
//! - [`statement`]: what a statement of a QUERY event is (DDL of which kind, a
//!   statement-based data change, transaction control), read from its first words; and
//!   [`SnapshotStatement`], the only statements the initial snapshot ships itself.
//! - [`batch`]: [`ChangeBatch`], whole transactions of row changes in columnar form, one
//!   section per table definition: the unit the codec encodes and the sinks apply. Its
//!   buffers are reused between batches, so the hot path allocates nothing per row.
//!
//! Left to others: building batches from binlog rows (`outflow-codec`'s builder, which
//! needs `outflow-binlog`; core stays free of it so that crates which never read a binlog,
//! such as the sinks, do not build the decoder), encoding them (`outflow-codec`), applying
//! them (the sinks), and tracking schemas over time (`outflow-source`).

pub mod batch;
pub mod position;
pub mod schema;
pub mod statement;
pub mod value;

pub use batch::{
    BatchError, BatchParts, Bitmap, Change, ChangeBatch, Column, ColumnParts, Ddl, Image,
    ImageMode, Op, Run, SectionId, TableSection, Transaction,
};
pub use position::{
    BinlogPosition, Gtid, GtidMismatch, GtidSet, GtidState, MariaGtid, MariaGtidPos, MySqlGtid,
    ParsePositionError, SourcePosition, Tag, Uuid,
};
pub use schema::{ColumnSchema, ColumnType, SchemaVersion, TableSchema, ValueKind};
pub use statement::{DdlKind, SnapshotStatement, SnapshotStatementError, StatementKind};
pub use value::{Date, DateTime, PackError, Time, Timestamp, ValueRef};

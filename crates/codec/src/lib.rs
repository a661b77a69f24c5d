//! outflow's egress codec, sans-IO: from binlog events to compact, checksummed frames and
//! back.
//!
//! The path, in the order the live pipeline and `outflow estimate` run it:
//! 1. [`builder::BatchBuilder`] turns decoded binlog events (or initial-snapshot rows) into
//!    an [`outflow_core::ChangeBatch`], minimising images in `replica` mode and leaving out
//!    or masking columns per [`columns`].
//! 2. [`compact::Compactor`] optionally collapses the batch into net changes per key.
//! 3. [`frame::Encoder`] lays the batch out column by column ([`columnar`]), compresses it
//!    with zstd and wraps it in a versioned, checksummed frame; [`frame::Decoder`] checks and
//!    reverses that, within [`frame::Limits`].
//!
//! A transaction larger than [`PipelineConfig::split_bytes`] is cut into parts, a frame
//! each, so memory stays bounded whatever the transaction's size ([`frame`], "Transactions
//! in parts"); the sink joins them into one target transaction.
//!
//! Left to others: reading the binlog (`outflow-binlog`, the replication client), storing
//! and sending frames (`outflow-spool`, `outflow-transport`, which treat them as opaque
//! bytes), and applying batches (the sinks).

pub mod builder;
pub mod columnar;
pub mod columns;
pub mod compact;
pub mod frame;
pub mod pipeline;
pub mod wire;

pub use builder::{
    binlog_mask_text, schema_of, BatchBuilder, BuildError, RowGate, StatementPolicy,
};
pub use columns::{mask_text, ColumnAction, ColumnMap, ColumnPolicy};
pub use compact::{CompactError, Compactor};
pub use frame::{
    train_dictionary, Decoder, EncodeError, Encoder, EncoderConfig, FrameError, FrameHeader,
    FrameMeta, Limits, SchemaShipping, TableDictionary, VERSION, VERSION_DDL,
};
pub use pipeline::{Pipeline, PipelineConfig, PipelineError, Stats, TableStats};

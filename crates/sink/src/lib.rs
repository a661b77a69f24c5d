//! The far side of outflow: applies change batches ([`outflow_core::ChangeBatch`]) to a
//! MariaDB/MySQL target exactly once ([`Applier`]), and compares a target with its source
//! ([`verify`]).
//!
//! The path of a batch: [`Applier::apply`] takes a frame's sequence number and its decoded
//! batch, maps each table onto the target (module `plan`), turns the changes into few large
//! statements that keep every row's order (module `stage`), writes values as exact SQL
//! literals ([`literal`]), and commits them with the stream's checkpoint ([`apply`]). A
//! batch that ends with a DDL statement gets it applied after its rows, by the policy for
//! its kind ([`ddl`]).
//!
//! What it leaves to others: decoding frames (`outflow-codec`), the link and its
//! acknowledgements (`outflow-transport`), and the process wiring and configuration (the
//! `outflow` binary).

pub mod apply;
pub mod catalog;
pub mod ddl;
pub mod literal;
pub(crate) mod plan;
pub mod sql;
pub(crate) mod stage;
pub mod target;
pub mod verify;

pub use apply::{
    Applied, Applier, ApplyConfig, ApplyError, ApplyStats, Checkpoint, ConflictCounts,
    ConflictKind, ConflictPolicy,
};
pub use ddl::{DdlKind, DdlOutcome, DdlPolicies, DdlPolicy};

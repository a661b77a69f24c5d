//! The far side of outflow: applies change batches to a MariaDB/MySQL target exactly once,
//! and compares a target with its source ([`verify`]).
//!
//! What it leaves to others: decoding frames (`outflow-codec`), the link and its
//! acknowledgements (`outflow-transport`), and the process wiring and configuration (the
//! `outflow` binary).

pub mod sql;
pub mod verify;

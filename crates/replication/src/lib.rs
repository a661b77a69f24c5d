//! A replication client for MySQL and MariaDB: connects like a replica, authenticates
//! (optionally over TLS), registers, and streams raw binlog events for
//! [`outflow_binlog`] to decode.
//!
//! Layers: [`protocol`] is the sans-IO core (framing, handshake, auth plugins, commands,
//! GTID encodings); [`conn`] and [`stream`] are the tokio + rustls edge; [`position`]
//! follows the stream's position so that a reconnect resumes at the last transaction
//! boundary; [`replica`] puts them together with the decoder.
//!
//! Left to others: schema tracking, filters, snapshots and failover between servers
//! (`outflow-source`), and typed positions shared by the whole pipeline (`outflow-core`).

pub mod conn;
pub mod error;
pub mod options;
pub mod position;
pub mod protocol;
pub mod replica;
pub mod stream;
mod tls;

pub use conn::Connection;
pub use error::{Error, ErrorClass};
pub use options::{ConnectOptions, Password, TlsMode, TlsOptions};
pub use position::{PositionTracker, StartPosition, Tracked};
pub use replica::{Backoff, Replica, ReplicaError};
pub use stream::{BinlogStream, ServerInfo};

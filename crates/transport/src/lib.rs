//! outflow's relay link: carries the spool's batches to the far side over QUIC with mutual TLS,
//! acknowledged, resumable, exactly once.
//!
//! - [`frame`]: the wire format (length-prefixed frames) and its decoder, sans-IO.
//! - [`protocol`]: the sender's and receiver's session state machines, sans-IO: windows,
//!   cumulative acknowledgements, resume points, deduplication by sequence number, and
//!   batches a sink holds without making them durable yet ([`Delivered`]).
//! - [`pace`] and [`schedule`]: the bandwidth cap and shipping windows, sans-IO.
//! - [`link`]: the quinn glue, [`Sender`] and [`Receiver`], thin loops around the sessions.
//! - [`tls`] and [`certs`]: TLS 1.3 mutual authentication with a common CA, and a generator for
//!   quick set-ups.
//!
//! Payloads are opaque bytes numbered by the spool; what they mean is the codec's business, and
//! applying them is the sink's.

#[cfg(feature = "quic")]
pub mod certs;
pub mod frame;
#[cfg(feature = "quic")]
pub mod link;
#[cfg(feature = "quic")]
pub mod metrics;
pub mod pace;
pub mod protocol;
pub mod schedule;
pub mod testing;
#[cfg(feature = "quic")]
pub mod tls;

#[cfg(feature = "quic")]
pub use link::{
    Bandwidth, BatchSink, LinkConfig, Receiver, Sender, SinkError, SpoolSink, TransportError,
};
#[cfg(feature = "quic")]
pub use metrics::{Metrics, MetricsSnapshot};
pub use protocol::{Delivered, SenderWindow};
pub use schedule::Schedule;
#[cfg(feature = "quic")]
pub use tls::TlsConfig;

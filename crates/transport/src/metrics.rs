//! Link metrics, updated per batch and per acknowledgement, never per row.

use std::sync::Mutex;
use std::time::Duration;

/// Counters and gauges of one sender or receiver. Counters span reconnections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Batch payload bytes handed to QUIC (the codec's compressed frames).
    pub payload_bytes: u64,
    /// UDP payload bytes sent: relay frames plus QUIC headers, acknowledgements, keep-alives and
    /// retransmissions.
    pub wire_bytes_sent: u64,
    /// UDP payload bytes received.
    pub wire_bytes_received: u64,
    /// Batches sent (sender) or received, duplicates included (receiver).
    pub batches: u64,
    /// Batches sent again after a reconnection (sender).
    pub batches_resent: u64,
    /// Acknowledgement frames received (sender) or sent (receiver).
    pub acks: u64,
    /// Batches acknowledged (sender) or made durable (receiver).
    pub batches_acked: u64,
    /// Duplicate batches dropped (receiver).
    pub duplicates: u64,
    /// Smoothed round-trip time of the current connection, as QUIC measures it.
    pub rtt: Duration,
    /// Time from sending a batch to its acknowledgement, latest sample (sender).
    pub ack_latency: Duration,
    /// Largest UDP payload in use on the current path, in bytes, as MTU discovery found it.
    pub udp_payload: u16,
    /// QUIC packets declared lost (each is retransmitted, as frames, by QUIC).
    pub lost_packets: u64,
    /// Congestion events (loss or ECN reactions).
    pub congestion_events: u64,
    /// Connections established.
    pub connections: u64,
    /// Spool size in bytes (sender).
    pub spool_bytes: u64,
    /// Spool bound in bytes (sender).
    pub spool_max_bytes: u64,
    /// Batches in the spool not yet acknowledged (sender).
    pub spool_unacked: u64,
    /// Age of the oldest unacknowledged batch: the current RPO (sender).
    pub spool_oldest_age: Option<Duration>,
    /// Whether a shipping window is open now (sender).
    pub window_open: bool,
}

/// Shared, updatable metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsSnapshot>,
    /// Totals of closed connections, so per-connection QUIC counters add up across them.
    closed: Mutex<ConnTotals>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ConnTotals {
    sent: u64,
    received: u64,
    lost: u64,
    congestion: u64,
}

impl Metrics {
    /// A copy of the current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `f` to the values.
    pub fn update(&self, f: impl FnOnce(&mut MetricsSnapshot)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Refreshes the QUIC-level figures from `conn`'s statistics.
    pub fn observe(&self, conn: &quinn::Connection) {
        let stats = conn.stats();
        let closed = *self.closed.lock().unwrap_or_else(|e| e.into_inner());
        self.update(|m| {
            m.rtt = stats.path.rtt;
            m.udp_payload = stats.path.current_mtu;
            m.wire_bytes_sent = closed.sent + stats.udp_tx.bytes;
            m.wire_bytes_received = closed.received + stats.udp_rx.bytes;
            m.lost_packets = closed.lost + stats.path.lost_packets;
            m.congestion_events = closed.congestion + stats.path.congestion_events;
        });
    }

    /// Folds a finished connection's statistics into the totals.
    pub fn connection_closed(&self, conn: &quinn::Connection) {
        let stats = conn.stats();
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        closed.sent += stats.udp_tx.bytes;
        closed.received += stats.udp_rx.bytes;
        closed.lost += stats.path.lost_packets;
        closed.congestion += stats.path.congestion_events;
    }
}

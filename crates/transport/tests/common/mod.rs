//! Shared by the link tests: certificates, deterministic payloads, a recording sink.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outflow_spool::{FsyncPolicy, Spool, SpoolConfig};
use outflow_transport::certs::{self, CertFiles};
use outflow_transport::{BatchSink, Delivered, LinkConfig, SinkError, TlsConfig};

/// A fresh CA, server and client certificate in `dir`.
pub fn certs_in(dir: &Path) -> CertFiles {
    certs::generate(dir, &[]).expect("generate certificates")
}

#[allow(unused_imports)]
pub use outflow_transport::testing::payload;

pub fn spool(dir: &Path) -> Spool {
    Spool::open(SpoolConfig {
        fsync: FsyncPolicy::DangerNever,
        max_bytes: 256 << 20,
        segment_bytes: 8 << 20,
        ..SpoolConfig::new(dir)
    })
    .expect("open spool")
}

/// A link tuned for tests on loopback: quick keep-alives, timeouts and reconnection.
pub fn fast_link() -> LinkConfig {
    LinkConfig {
        keep_alive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        initial_rtt: Duration::from_millis(10),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..LinkConfig::default()
    }
}

/// Records what it is given and when; in-memory, so durable as long as the test runs.
#[derive(Clone, Default)]
pub struct RecordingSink {
    pub got: Arc<Mutex<Vec<(u64, Bytes, Instant)>>>,
}

impl RecordingSink {
    pub fn seqs(&self) -> Vec<u64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _, _)| *s)
            .collect()
    }
    pub fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

impl BatchSink for RecordingSink {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        Ok(self.got.lock().unwrap().last().map_or(0, |(s, _, _)| *s))
    }

    async fn deliver(&mut self, seq: u64, payload: Bytes) -> Result<Delivered, SinkError> {
        self.got
            .lock()
            .unwrap()
            .push((seq, payload, Instant::now()));
        Ok(Delivered::Durable)
    }
}

pub fn server_tls(files: &CertFiles) -> TlsConfig {
    TlsConfig::server_from(files)
}

pub fn client_tls(files: &CertFiles) -> TlsConfig {
    TlsConfig::client_from(files)
}

/// Waits until `done` holds, failing after `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Relay link throughput over loopback, in payload bytes per second.
//!
//! - `spool_to_ack`: the real path. Batches are appended to a spool (fsync policy `DangerNever`,
//!   so the disk is not what is measured), the sender reads them back, ships them over QUIC with
//!   mutual TLS on several streams, the receiver reorders, hands them to a sink that keeps
//!   nothing, and acknowledges; an iteration ends when the spool has every batch acknowledged.
//! - `raw_quinn`: the same volume over the same QUIC and TLS settings, written straight to
//!   streams and discarded by the reader: no spool, no framing, no acknowledgements. The
//!   ceiling the relay can approach on this machine.
//!
//! Both ends run in this process on one tokio runtime, so on a small machine they compete for
//! the same cores, as a sender and receiver on one host would.
//!
//! Run: `cargo bench --bench transport`. Set `OUTFLOW_BENCH_STREAMS`, `OUTFLOW_BENCH_BATCH`
//! (bytes) and `OUTFLOW_BENCH_MTU` (largest UDP payload; loopback allows 65527) to try other
//! stream counts, batch sizes and packet sizes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use outflow_spool::{FsyncPolicy, Spool, SpoolConfig};
use outflow_transport::certs::{self, CertFiles};
use outflow_transport::{tls, BatchSink, LinkConfig, Receiver, Sender, SinkError, TlsConfig};

/// Payload bytes per iteration.
const VOLUME: usize = 256 << 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn link() -> LinkConfig {
    LinkConfig {
        streams: env_or("OUTFLOW_BENCH_STREAMS", 4) as u32,
        max_udp_payload: env_or("OUTFLOW_BENCH_MTU", 1452) as u16,
        ..LinkConfig::default()
    }
}

/// Counts what it is given; durable only in the sense the bench needs.
struct Discard(Arc<AtomicU64>);

impl BatchSink for Discard {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        Ok(0)
    }

    async fn deliver(&mut self, _seq: u64, payload: Bytes) -> Result<(), SinkError> {
        self.0.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn spool_to_ack(c: &mut Criterion, runtime: &tokio::runtime::Runtime, certs: &CertFiles) {
    let batch = env_or("OUTFLOW_BENCH_BATCH", 1 << 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, received) = runtime.block_on(async {
        let receiver =
            Receiver::bind(localhost(), &TlsConfig::server_from(certs), link()).expect("bind");
        let addr = receiver.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let sink = Discard(received.clone());
        tokio::spawn(async move { receiver.run(sink).await });
        let spool = Spool::open(SpoolConfig {
            fsync: FsyncPolicy::DangerNever,
            max_bytes: 4 << 30,
            segment_bytes: 64 << 20,
            ..SpoolConfig::new(dir.path())
        })
        .expect("spool");
        let sender = Sender::new(
            spool.clone(),
            &TlsConfig::client_from(certs),
            addr,
            "localhost",
            link(),
        )
        .expect("sender");
        tokio::spawn(async move { sender.run().await });
        (spool, received)
    });
    // One buffer, shared by every batch: the bench measures the link, not payload generation.
    let payload = Bytes::from(vec![0x5a; batch]);
    let batches = VOLUME / batch;
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes((batches * batch) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(
        format!(
            "spool_to_ack/batch_{}k/streams_{}",
            batch >> 10,
            link().streams
        ),
        |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut last = 0;
                        for _ in 0..batches {
                            last = spool.append(payload.clone()).await.expect("append");
                        }
                        let mut acked = spool.subscribe_appended();
                        while spool.acked() < last {
                            let _ = tokio::time::timeout(Duration::from_millis(1), acked.changed())
                                .await;
                        }
                    }
                    start.elapsed()
                })
            })
        },
    );
    group.finish();
    let sent = received.load(Ordering::Relaxed);
    println!("spool_to_ack: {sent} payload bytes delivered in total");
}

fn raw_quinn(c: &mut Criterion, runtime: &tokio::runtime::Runtime, certs: &CertFiles) {
    let chunk = env_or("OUTFLOW_BENCH_BATCH", 1 << 20);
    let streams = link().streams as usize;
    let (conn, received) = runtime.block_on(async {
        let mut server = quinn::ServerConfig::with_crypto(
            tls::server_crypto(&TlsConfig::server_from(certs)).expect("crypto"),
        );
        server.transport_config(Arc::new(link().transport().expect("transport")));
        let endpoint = quinn::Endpoint::server(server, localhost()).expect("server");
        let addr = endpoint.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            let conn = endpoint
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            while let Ok(mut stream) = conn.accept_uni().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = stream.read_chunk(usize::MAX, false).await {
                        counter.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        let mut client = quinn::ClientConfig::new(
            tls::client_crypto(&TlsConfig::client_from(certs)).expect("crypto"),
        );
        client.transport_config(Arc::new(link().transport().expect("transport")));
        let mut endpoint = quinn::Endpoint::client(localhost()).expect("client");
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        (conn, received)
    });
    let payload = Bytes::from(vec![0x5a; chunk]);
    let per_stream = VOLUME / chunk / streams;
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes((per_stream * streams * chunk) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(
        format!("raw_quinn/chunk_{}k/streams_{streams}", chunk >> 10),
        |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let target = received.load(Ordering::Relaxed)
                            + (per_stream * streams * chunk) as u64;
                        let mut writers = Vec::new();
                        for _ in 0..streams {
                            let mut stream = conn.open_uni().await.expect("open");
                            let payload = payload.clone();
                            writers.push(tokio::spawn(async move {
                                for _ in 0..per_stream {
                                    stream.write_chunk(payload.clone()).await.expect("write");
                                }
                                stream.finish().expect("finish");
                            }));
                        }
                        for w in writers {
                            w.await.expect("writer");
                        }
                        while received.load(Ordering::Relaxed) < target {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                    start.elapsed()
                })
            })
        },
    );
    group.finish();
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs::generate(dir.path(), &[]).expect("certificates");
    spool_to_ack(c, &runtime, &certs);
    raw_quinn(c, &runtime, &certs);
}

criterion_group!(transport, benches);
criterion_main!(transport);

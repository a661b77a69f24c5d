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
//! After criterion's figures each function prints the CPU time both ends spent per payload
//! byte (user + system, from getrusage, over every iteration including warm-up), which moves
//! less than wall-clock throughput when other work shares the machine, and the UDP payload
//! size MTU discovery reached.
//!
//! Run: `cargo bench --bench transport`. Set `OUTFLOW_BENCH_STREAMS`, `OUTFLOW_BENCH_BATCH`
//! (bytes) and `OUTFLOW_BENCH_MTU` (largest UDP payload MTU discovery may reach; default 16384,
//! which did best over loopback; loopback carries up to 65508 over IPv4, and the link's
//! Internet default is 1452) to try other stream counts, batch sizes and packet sizes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use outflow_spool::{FsyncPolicy, Spool, SpoolConfig};
use outflow_transport::certs::{self, CertFiles};
use outflow_transport::{
    tls, BatchSink, Delivered, LinkConfig, Receiver, Sender, SinkError, TlsConfig,
};

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
        max_udp_payload: env_or("OUTFLOW_BENCH_MTU", 16384) as u16,
        ..LinkConfig::default()
    }
}

/// User plus system CPU time of this process so far (every thread).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given, which is plain integers and
    // valid zeroed.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time and payload bytes over a bench function's iterations.
#[derive(Default)]
struct CpuTally {
    cpu: Duration,
    bytes: u64,
}

impl CpuTally {
    fn report(&self, what: &str) {
        if self.bytes == 0 {
            return; // filtered out
        }
        let secs = self.cpu.as_secs_f64();
        println!(
            "{what}: {:.2} ns CPU per payload byte (both ends), {:.0} MiB of payload per CPU-second, over {} MiB",
            secs * 1e9 / self.bytes as f64,
            self.bytes as f64 / secs / f64::from(1 << 20),
            self.bytes >> 20,
        );
    }
}

/// Counts what it is given; durable only in the sense the bench needs.
struct Discard(Arc<AtomicU64>);

impl BatchSink for Discard {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        Ok(0)
    }

    async fn deliver(&mut self, _seq: u64, payload: Bytes) -> Result<Delivered, SinkError> {
        self.0.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(Delivered::Durable)
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn spool_to_ack(c: &mut Criterion, runtime: &tokio::runtime::Runtime, certs: &CertFiles) {
    let batch = env_or("OUTFLOW_BENCH_BATCH", 1 << 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, received, metrics) = runtime.block_on(async {
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
        let metrics = sender.metrics();
        tokio::spawn(async move { sender.run().await });
        (spool, received, metrics)
    });
    // One buffer, shared by every batch: the bench measures the link, not payload generation.
    let payload = Bytes::from(vec![0x5a; batch]);
    let batches = VOLUME / batch;
    let mut tally = CpuTally::default();
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
                let cpu = cpu_time();
                let elapsed = runtime.block_on(async {
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
                });
                tally.cpu += cpu_time() - cpu;
                tally.bytes += iters * (batches * batch) as u64;
                elapsed
            })
        },
    );
    group.finish();
    let sent = received.load(Ordering::Relaxed);
    println!("spool_to_ack: {sent} payload bytes delivered in total");
    tally.report("spool_to_ack");
    let metrics = metrics.snapshot();
    println!(
        "spool_to_ack: UDP payload {} bytes, {} packets lost, {} congestion events",
        metrics.udp_payload, metrics.lost_packets, metrics.congestion_events
    );
}

fn raw_quinn(c: &mut Criterion, runtime: &tokio::runtime::Runtime, certs: &CertFiles) {
    let chunk = env_or("OUTFLOW_BENCH_BATCH", 1 << 20);
    let streams = link().streams as usize;
    let (conn, received) = runtime.block_on(async {
        let mut server = quinn::ServerConfig::with_crypto(
            tls::server_crypto(&TlsConfig::server_from(certs)).expect("crypto"),
        );
        server.transport_config(Arc::new(link().transport().expect("transport")));
        let endpoint = quinn::Endpoint::new(
            link()
                .endpoint(quinn::EndpointConfig::default())
                .expect("endpoint"),
            Some(server),
            std::net::UdpSocket::bind(localhost()).expect("bind"),
            quinn::default_runtime().expect("runtime"),
        )
        .expect("server");
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
        let mut endpoint = quinn::Endpoint::new(
            link()
                .endpoint(quinn::EndpointConfig::default())
                .expect("endpoint"),
            None,
            std::net::UdpSocket::bind(localhost()).expect("bind"),
            quinn::default_runtime().expect("runtime"),
        )
        .expect("client");
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
    let mut tally = CpuTally::default();
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes((per_stream * streams * chunk) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(
        format!("raw_quinn/chunk_{}k/streams_{streams}", chunk >> 10),
        |b| {
            b.iter_custom(|iters| {
                let cpu = cpu_time();
                let elapsed = runtime.block_on(async {
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
                });
                tally.cpu += cpu_time() - cpu;
                tally.bytes += iters * (per_stream * streams * chunk) as u64;
                elapsed
            })
        },
    );
    group.finish();
    tally.report("raw_quinn");
    let stats = conn.stats();
    println!(
        "raw_quinn: UDP payload {} bytes, {} packets lost, {} congestion events",
        stats.path.current_mtu, stats.path.lost_packets, stats.path.congestion_events
    );
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

//! The link over real loopback sockets, both ends in this process: delivery, mutual TLS,
//! hostile frames, shipping windows and the bandwidth cap.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use outflow_transport::frame::{FrameDecoder, Message, VERSION};
use outflow_transport::{tls, Bandwidth, LinkConfig, Receiver, Schedule, Sender, TlsConfig};
use quinn::VarInt;

use common::*;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts a receiver with a recording sink; returns its address and the sink.
fn start_receiver(
    tls: &TlsConfig,
    link: LinkConfig,
) -> (SocketAddr, RecordingSink, tokio::task::JoinHandle<()>) {
    let receiver = Receiver::bind(localhost(), tls, link).expect("bind receiver");
    let addr = receiver.local_addr().expect("addr");
    let sink = RecordingSink::default();
    let task_sink = sink.clone();
    let task = tokio::spawn(async move {
        receiver.run(task_sink).await.expect("receiver run");
    });
    (addr, sink, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_batch_once_in_order() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), fast_link());
    let spool = spool(&temp.path().join("spool"));
    for seq in 1..=300 {
        assert_eq!(spool.append(payload(seq, 64 << 10)).await.unwrap(), seq);
    }
    let link = LinkConfig {
        window: outflow_transport::SenderWindow {
            max_bytes: 1 << 20,
            max_batches: 16,
        },
        ..fast_link()
    };
    let sender =
        Arc::new(Sender::new(spool.clone(), &client_tls(&files), addr, "localhost", link).unwrap());
    let running = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run().await })
    };
    // Appends while shipping are picked up too.
    for seq in 301..=400 {
        spool.append(payload(seq, 64 << 10)).await.unwrap();
    }
    wait_for(Duration::from_secs(30), "all acknowledged", || {
        spool.acked() == 400
    })
    .await;
    sender.refresh_metrics();
    running.abort();
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 400, "each batch exactly once");
    for (i, (seq, bytes, _)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "in order");
        assert_eq!(bytes, &payload(*seq, 64 << 10), "payload of {seq}");
    }
    let m = sender.metrics().snapshot();
    assert_eq!(m.batches, 400);
    assert_eq!(m.batches_acked, 400);
    assert!(m.acks > 0 && m.acks <= 400, "{m:?}");
    assert!(m.wire_bytes_sent > m.payload_bytes, "{m:?}");
    assert!(m.rtt > Duration::ZERO);
    assert_eq!(m.spool_unacked, 0);
    assert_eq!(m.spool_oldest_age, None);
}

/// Takes batches in units of `UNIT` consecutive batches, durable only at a unit's last
/// batch (as a sink applying a source transaction in parts); drops its unit once, midway.
#[derive(Clone, Default)]
struct UnitSink {
    state: Arc<std::sync::Mutex<UnitState>>,
}

#[derive(Default)]
struct UnitState {
    durable: Vec<u64>,
    pending: Vec<u64>,
    rewinds: u32,
    deliveries: u64,
}

const UNIT: u64 = 40;

impl outflow_transport::BatchSink for UnitSink {
    async fn last_durable(&mut self) -> Result<u64, outflow_transport::SinkError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .durable
            .last()
            .copied()
            .unwrap_or(0))
    }

    async fn deliver(
        &mut self,
        seq: u64,
        _payload: bytes::Bytes,
    ) -> Result<outflow_transport::Delivered, outflow_transport::SinkError> {
        use outflow_transport::Delivered;
        let mut s = self.state.lock().unwrap();
        s.deliveries += 1;
        let last = s.pending.last().or(s.durable.last()).copied().unwrap_or(0);
        if seq != last + 1 {
            // A new connection starts again after the last durable batch.
            s.pending.clear();
            assert_eq!(seq, s.durable.last().copied().unwrap_or(0) + 1);
        }
        if seq == UNIT + UNIT / 2 && s.rewinds == 0 {
            s.rewinds += 1;
            s.pending.clear();
            return Ok(Delivered::Rewind);
        }
        s.pending.push(seq);
        if seq.is_multiple_of(UNIT) {
            let unit = std::mem::take(&mut s.pending);
            s.durable.extend(unit);
            return Ok(Delivered::Durable);
        }
        Ok(Delivered::Held)
    }
}

/// A unit of work several times the sender's window flows (Received frees the window, not
/// the spool), and a sink that drops its unit midway gets it again from its first batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_larger_than_the_window_flow_and_a_rewind_sends_them_again() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let link = LinkConfig {
        window: outflow_transport::SenderWindow {
            max_bytes: 1 << 20,
            max_batches: 8,
        },
        ..fast_link()
    };
    let receiver = Receiver::bind(localhost(), &server_tls(&files), link.clone()).unwrap();
    let addr = receiver.local_addr().unwrap();
    let sink = UnitSink::default();
    let task_sink = sink.clone();
    let _receiver = tokio::spawn(async move { receiver.run(task_sink).await });
    let spool = spool(&temp.path().join("spool"));
    let n = 5 * UNIT;
    for seq in 1..=n {
        spool.append(payload(seq, 4 << 10)).await.unwrap();
    }
    let sender =
        Arc::new(Sender::new(spool.clone(), &client_tls(&files), addr, "localhost", link).unwrap());
    let running = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run().await })
    };
    let mut acked_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool.acked() < n {
        assert!(Instant::now() < deadline, "stalled at {}", spool.acked());
        acked_seen.push(spool.acked());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.abort();
    let s = sink.state.lock().unwrap();
    assert_eq!(
        s.durable,
        (1..=n).collect::<Vec<_>>(),
        "each batch once, in order"
    );
    assert_eq!(s.rewinds, 1);
    assert!(s.deliveries >= n + UNIT / 2, "the dropped part came again");
    assert!(
        acked_seen.iter().all(|a| a.is_multiple_of(UNIT)),
        "the spool released only whole units: {acked_seen:?}"
    );
}

/// With a large `max_udp_payload`, discovery over loopback reaches packets far above
/// Ethernet's, and every batch still arrives once, in order. Before segmentation offload was
/// turned off for such sizes, batches of 10 datagrams over 64 KiB were dropped by the kernel
/// and quinn alike, and the link crawled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_udp_payloads_over_loopback() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let link = LinkConfig {
        max_udp_payload: 65527,
        ..fast_link()
    };
    assert!(!link.gso());
    let receiver = Receiver::bind(localhost(), &server_tls(&files), link.clone()).unwrap();
    let addr = receiver.local_addr().unwrap();
    let receiver_metrics = receiver.metrics();
    let sink = RecordingSink::default();
    let task_sink = sink.clone();
    let _receiver = tokio::spawn(async move { receiver.run(task_sink).await });
    let spool = spool(&temp.path().join("spool"));
    for seq in 1..=64 {
        spool.append(payload(seq, 1 << 20)).await.unwrap();
    }
    let sender =
        Arc::new(Sender::new(spool.clone(), &client_tls(&files), addr, "localhost", link).unwrap());
    let running = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run().await })
    };
    wait_for(Duration::from_secs(30), "all acknowledged", || {
        spool.acked() == 64
    })
    .await;
    sender.refresh_metrics();
    running.abort();
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 64, "each batch exactly once");
    for (i, (seq, bytes, _)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "in order");
        assert_eq!(bytes, &payload(*seq, 1 << 20), "payload of {seq}");
    }
    // Loopback carries 65508 over IPv4. The acknowledgement direction sees no congestion, so
    // its discovery ends near that; the data direction's can fall back to 1200 for a while
    // when congestion losses of full-size packets look like a black hole.
    let received = receiver_metrics.snapshot();
    let sent = sender.metrics().snapshot();
    assert!(
        received.udp_payload.max(sent.udp_payload) > 8972,
        "MTU discovery stayed small: receiver {received:?}, sender {sent:?}"
    );
}

/// Connects once with `client` material to a receiver with `server` material; returns the
/// sender's error (`None` if the session got as far as shipping) and what the sink got.
async fn one_session(
    server: &TlsConfig,
    client: &TlsConfig,
    name: &str,
) -> (Option<String>, usize) {
    let temp = tempfile::tempdir().unwrap();
    let (addr, sink, receiver) = start_receiver(server, fast_link());
    let spool = spool(&temp.path().join("spool"));
    spool.append(Bytes::from_static(b"secret")).await.unwrap();
    let sender = Sender::new(spool.clone(), client, addr, name, fast_link()).unwrap();
    // Stop at the first of: the session fails, or the batch arrives.
    let arrived = {
        let sink = sink.clone();
        async move {
            while sink.len() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let error = tokio::select! {
        result = sender.session() => result.err().map(|e| e.to_string()),
        () = arrived => None,
        () = tokio::time::sleep(Duration::from_secs(5)) => Some("neither failed nor delivered".into()),
    };
    receiver.abort();
    (error, sink.len())
}

#[tokio::test]
async fn mutual_tls_rejects_strangers() {
    let temp = tempfile::tempdir().unwrap();
    let ours = certs_in(&temp.path().join("ours"));
    let theirs = certs_in(&temp.path().join("theirs"));

    // Baseline: the right material gets through.
    let (error, got) = one_session(&server_tls(&ours), &client_tls(&ours), "localhost").await;
    assert_eq!((error, got), (None, 1));

    // A client certificate from another CA.
    let wrong_client = TlsConfig {
        ca: ours.ca.clone(),
        ..client_tls(&theirs)
    };
    let (error, got) = one_session(&server_tls(&ours), &wrong_client, "localhost").await;
    let error = error.expect("wrong client certificate must fail");
    assert!(
        error.contains("aborted by peer") && error.contains("invalid peer certificate"),
        "{error}"
    );
    assert_eq!(got, 0);

    // A server certificate from another CA.
    let wrong_server = TlsConfig {
        ca: theirs.ca.clone(),
        ..server_tls(&theirs)
    };
    let (error, got) = one_session(&wrong_server, &client_tls(&ours), "localhost").await;
    let error = error.expect("server from another CA must fail");
    // Both CAs carry the same name, so webpki finds "its" issuer and the signature fails.
    assert!(error.contains("invalid peer certificate"), "{error}");
    assert_eq!(got, 0);

    // The right CA, but a name the server certificate does not cover.
    let (error, got) = one_session(&server_tls(&ours), &client_tls(&ours), "relay.example").await;
    let error = error.expect("wrong server name must fail");
    assert!(
        error.contains("invalid peer certificate: certificate not valid for name"),
        "{error}"
    );
    assert_eq!(got, 0);
}

#[tokio::test]
async fn missing_client_certificate_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), fast_link());
    // A client that trusts the CA but presents no certificate.
    let mut roots = quinn::rustls::RootCertStore::empty();
    use quinn::rustls::pki_types::pem::PemObject;
    for cert in quinn::rustls::pki_types::CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = quinn::rustls::ClientConfig::builder_with_provider(Arc::new(
        quinn::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&quinn::rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let outcome = async {
        let conn = endpoint.connect(addr, "localhost")?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&Message::Hello { version: VERSION }.to_bytes())
            .await?;
        let mut buf = [0u8; 64];
        recv.read(&mut buf).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let error = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("rejection is prompt")
        .expect_err("a client without a certificate must be refused");
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text += &format!(": {inner}");
        source = inner.source();
    }
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(sink.len(), 0);
}

/// A raw QUIC connection with valid certificates, for sending hand-made frames.
async fn raw_connection(
    files: &outflow_transport::certs::CertFiles,
    addr: SocketAddr,
) -> quinn::Connection {
    let crypto = tls::client_crypto(&client_tls(files)).unwrap();
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(crypto));
    endpoint.connect(addr, "localhost").unwrap().await.unwrap()
}

/// Sends Hello and reads Resume on a raw connection; returns the control stream.
async fn raw_hello(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream, u64) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&Message::Hello { version: VERSION }.to_bytes())
        .await
        .unwrap();
    let mut decoder = FrameDecoder::new(1024);
    loop {
        let chunk = recv.read_chunk(1024, true).await.unwrap().expect("Resume");
        decoder.push(&chunk.bytes);
        if let Some(Message::Resume { last_durable }) = decoder.decode().unwrap() {
            return (send, recv, last_durable);
        }
    }
}

/// Sends `bytes` on a new data stream and returns the reason the receiver closed with, or
/// `None` if the close itself was lost: on a loaded machine the client can miss the
/// CONNECTION_CLOSE (UDP drops it, or the receiver's draining period ends first) and then
/// only sees a stateless reset, which carries no reason.
async fn close_reason_after(
    conn: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> Option<String> {
    let mut stream = conn.open_uni().await.ok()?;
    // The receiver may close while this is still being written.
    if stream.write_all(bytes).await.is_ok() && finish {
        let _ = stream.finish();
    }
    let error = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("receiver closes the connection");
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(format!(
            "code {}: {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        )),
        quinn::ConnectionError::Reset => None,
        other => panic!("unexpected close: {other}"),
    }
}

#[tokio::test]
async fn hostile_frames_are_refused_clearly_and_the_receiver_survives() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), fast_link());

    let mut oversized = u32::MAX.to_le_bytes().to_vec();
    oversized.push(3);
    let mut unknown = 1u32.to_le_bytes().to_vec();
    unknown.push(42);
    let truncated = {
        let frame = Message::Batch {
            seq: 1,
            payload: Bytes::from_static(b"half a batch"),
        }
        .to_bytes();
        frame[..frame.len() - 4].to_vec()
    };
    let ack_on_data = Message::Ack { seq: 1 }.to_bytes().to_vec();
    let far_ahead = {
        // A window's worth of bytes ahead of what the receiver waits for: refused, not buffered.
        let mut bytes = Message::Batch {
            seq: 5,
            payload: Bytes::from(vec![0u8; 40 << 20]),
        }
        .to_bytes()
        .to_vec();
        bytes.extend_from_slice(
            &Message::Batch {
                seq: 6,
                payload: Bytes::from(vec![0u8; 40 << 20]),
            }
            .to_bytes(),
        );
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "oversized",
            oversized,
            false,
            "announces 4294967295 bytes, over the maximum",
        ),
        ("unknown type", unknown, false, "unknown type 42"),
        (
            "truncated",
            truncated,
            true,
            "stream ended inside a frame at offset 0",
        ),
        (
            "ack on a data stream",
            ack_on_data,
            false,
            "unexpected Ack on a data stream",
        ),
        ("beyond the window", far_ahead, false, "over the window"),
    ];
    for (what, bytes, finish, want) in cases {
        // Each attempt is a new connection; one whose close was lost is tried again.
        let mut reason = None;
        for _ in 0..5 {
            let conn = raw_connection(&files, addr).await;
            let (_send, _recv, last) = raw_hello(&conn).await;
            assert_eq!(last, 0);
            reason = close_reason_after(&conn, &bytes, finish).await;
            if reason.is_some() {
                break;
            }
        }
        let reason = reason.unwrap_or_else(|| panic!("{what}: the close reason never arrived"));
        assert!(reason.contains(want), "{what}: {reason}");
    }

    // A forged Hello on the control stream.
    let conn = raw_connection(&files, addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut forged = Message::Hello { version: VERSION }.to_bytes().to_vec();
    forged[5] = b'X';
    send.write_all(&forged).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(
        error.to_string().contains("lacks the OFLW magic"),
        "{error}"
    );

    // The receiver is still there for an honest sender.
    assert_eq!(sink.len(), 0, "nothing from a bad connection was delivered");
    let spool = spool(&temp.path().join("spool"));
    for seq in 1..=10 {
        spool.append(payload(seq, 1000)).await.unwrap();
    }
    let sender = Sender::new(
        spool.clone(),
        &client_tls(&files),
        addr,
        "localhost",
        fast_link(),
    )
    .unwrap();
    let running = tokio::spawn(async move { sender.run().await });
    wait_for(
        Duration::from_secs(10),
        "honest sender acknowledged",
        || spool.acked() == 10,
    )
    .await;
    running.abort();
    assert_eq!(sink.seqs(), (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn forged_acknowledgement_ends_the_senders_session() {
    // A "receiver" that acknowledges a batch never sent: the sender must not believe it.
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let mut server =
        quinn::ServerConfig::with_crypto(tls::server_crypto(&server_tls(&files)).unwrap());
    server.transport_config(Arc::new(fast_link().transport().unwrap()));
    let endpoint = quinn::Endpoint::server(server, localhost()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, _recv) = conn.accept_bi().await.unwrap();
        send.write_all(&Message::Resume { last_durable: 0 }.to_bytes())
            .await
            .unwrap();
        send.write_all(&Message::Ack { seq: 1000 }.to_bytes())
            .await
            .unwrap();
        conn.closed().await;
    });
    let spool = spool(&temp.path().join("spool"));
    spool.append(Bytes::from_static(b"one")).await.unwrap();
    let sender = Sender::new(
        spool.clone(),
        &client_tls(&files),
        addr,
        "localhost",
        fast_link(),
    )
    .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), sender.session())
        .await
        .unwrap()
        .expect_err("forged ack");
    assert!(
        error
            .to_string()
            .contains("acknowledgement of 1000 but only up to"),
        "{error}"
    );
    assert_eq!(spool.acked(), 0, "the forged ack reached the spool");
}

/// A window of `secs` seconds starting `from_now` seconds from now, in UTC.
fn window_from_now(from_now: u64, secs: u64) -> String {
    let clock = |at: jiff::Timestamp| {
        at.to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%H:%M:%S")
            .to_string()
    };
    let now = jiff::Timestamp::now();
    let start = now + jiff::SignedDuration::from_secs(from_now as i64);
    let end = start + jiff::SignedDuration::from_secs(secs as i64);
    format!("{}-{} UTC", clock(start), clock(end))
}

#[tokio::test]
async fn outside_the_window_batches_wait_then_ship() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), fast_link());
    let spool = spool(&temp.path().join("spool"));
    for seq in 1..=50 {
        spool.append(payload(seq, 4000)).await.unwrap();
    }
    // Windows have one-second resolution; starting 4 s ahead leaves at least 3 s closed,
    // a second more than the check below needs, so a test thread woken late under load
    // does not find the window already open.
    let window = window_from_now(4, 600);
    let schedule = Schedule::parse(&[window.as_str()]).unwrap();
    let opens = Instant::now() + Duration::from_secs(2);
    let sender = Arc::new(
        Sender::new(
            spool.clone(),
            &client_tls(&files),
            addr,
            "localhost",
            fast_link(),
        )
        .unwrap()
        .with_schedule(schedule),
    );
    let running = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run().await })
    };
    tokio::time::sleep_until(opens.into()).await;
    assert_eq!(sink.len(), 0, "shipped outside the window {window}");
    sender.refresh_metrics();
    let closed = sender.metrics().snapshot();
    assert!(!closed.window_open);
    assert_eq!(closed.spool_unacked, 50);
    assert!(closed
        .spool_oldest_age
        .is_some_and(|age| age >= Duration::from_secs(1)));
    wait_for(
        Duration::from_secs(10),
        "shipping once the window opens",
        || spool.acked() == 50,
    )
    .await;
    running.abort();
    assert_eq!(sink.seqs(), (1..=50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_holds_within_ten_percent() {
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), fast_link());
    let spool = spool(&temp.path().join("spool"));
    const RATE: u64 = 2_000_000;
    const BATCH: usize = 16_000;
    // Ten seconds' worth, plus the burst.
    let batches = (RATE * 10 / BATCH as u64) + 4;
    for seq in 1..=batches {
        spool
            .append(Bytes::from(vec![seq as u8; BATCH]))
            .await
            .unwrap();
    }
    let cap = Bandwidth {
        bytes_per_sec: RATE,
        burst: 64_000,
    };
    let sender = Sender::new(
        spool.clone(),
        &client_tls(&files),
        addr,
        "localhost",
        fast_link(),
    )
    .unwrap()
    .with_bandwidth(cap);
    let running = tokio::spawn(async move { sender.run().await });
    wait_for(Duration::from_secs(20), "capped transfer", || {
        spool.acked() == batches
    })
    .await;
    running.abort();
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, batches);
    // The rate between the first and the last arrival; the first burst is excluded by
    // starting the clock after the batches it covers.
    let skip = (cap.burst as usize).div_ceil(BATCH);
    let start = got[skip].2;
    let end = got.last().unwrap().2;
    let bytes: u64 = got[skip + 1..]
        .iter()
        .map(|(_, p, _)| (p.len() + 13) as u64)
        .sum();
    let secs = (end - start).as_secs_f64();
    let rate = bytes as f64 / secs;
    println!("capped transfer: {bytes} bytes in {secs:.2} s = {rate:.0} B/s (cap {RATE})");
    assert!(secs > 8.0, "transfer too short to judge: {secs} s");
    assert!(
        (rate - RATE as f64).abs() / (RATE as f64) < 0.10,
        "rate {rate:.0} B/s vs cap {RATE}"
    );
}

#[tokio::test]
async fn new_connection_replaces_a_stale_one() {
    // A sender restarted while its old connection is still open on the receiver: the new one
    // takes over at once instead of waiting for the old one to time out.
    let temp = tempfile::tempdir().unwrap();
    let files = certs_in(&temp.path().join("certs"));
    let link = LinkConfig {
        idle_timeout: Duration::from_secs(30),
        ..fast_link()
    };
    let (addr, sink, _receiver) = start_receiver(&server_tls(&files), link);
    let stale = raw_connection(&files, addr).await;
    let (_send, _recv, _) = raw_hello(&stale).await;
    let spool = spool(&temp.path().join("spool"));
    spool.append(payload(1, 100)).await.unwrap();
    let sender = Sender::new(
        spool.clone(),
        &client_tls(&files),
        addr,
        "localhost",
        fast_link(),
    )
    .unwrap();
    let running = tokio::spawn(async move { sender.run().await });
    wait_for(
        Duration::from_secs(5),
        "delivery past the stale connection",
        || spool.acked() == 1,
    )
    .await;
    running.abort();
    assert_eq!(sink.seqs(), [1]);
    let closed = tokio::time::timeout(Duration::from_secs(2), stale.closed())
        .await
        .unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == VarInt::from_u32(5)),
        "{closed}"
    );
}

#[tokio::test]
async fn certificates_cover_loopback_and_extra_names() {
    let temp = tempfile::tempdir().unwrap();
    let files = outflow_transport::certs::generate(
        temp.path(),
        &["relay.example".into(), "10.1.2.3".into()],
    )
    .unwrap();
    for name in ["127.0.0.1", "localhost", "relay.example"] {
        let (error, got) = one_session(&server_tls(&files), &client_tls(&files), name).await;
        assert_eq!((error, got), (None, 1), "server name {name}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files.server_key)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private key readable by others");
}

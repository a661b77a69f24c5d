//! QUIC glue: the sender and receiver loops around the sans-IO sessions of
//! [`crate::protocol`]. They read, hand bytes to the sessions, write what the sessions say, and
//! sleep until the next deadline; every decision lives in the sessions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::sync::mpsc;

use outflow_spool::{Spool, SpoolError, SpoolIo};

use crate::frame::{batch_header, ErrorCode, FrameDecoder, FrameError, Message, BATCH_HEADER_LEN};
use crate::metrics::Metrics;
use crate::pace::TokenBucket;
use crate::protocol::{Delivered, ProtocolError, ReceiverSession, SenderSession, SenderWindow};
use crate::schedule::Schedule;
use crate::tls::{self, TlsConfig, TlsError};

/// Settings shared by both ends of the link. Both sides should use the same values.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Data streams the sender spreads batches over, so one lost packet stalls one stream and
    /// the others keep the link busy. Default: 4.
    pub streams: u32,
    /// Sender window: payload bytes and batches in flight without acknowledgement. Must exceed
    /// bandwidth × RTT to fill a link (100 ms at 1 Gbit/s: 12.5 MB). Default: 64 MiB, 4096.
    pub window: SenderWindow,
    /// QUIC per-stream receive window in bytes: what one stream may have in flight. Should be
    /// at least `window.max_bytes / streams`. Default: 32 MiB.
    pub stream_receive_window: u64,
    /// QUIC connection receive window in bytes: all streams together. Should be at least
    /// `window.max_bytes`. Default: 128 MiB.
    pub receive_window: u64,
    /// QUIC send buffer in bytes: data the sender keeps for retransmission. Default: 128 MiB.
    pub send_window: u64,
    /// Keep-alive ping interval; keeps NAT bindings and detects a dead peer. Default: 5 s.
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is closed and re-established. Default: 30 s.
    pub idle_timeout: Duration,
    /// Initial RTT estimate before the first sample; set near the real RTT on long links so
    /// the first window is not too timid. Default: 100 ms.
    pub initial_rtt: Duration,
    /// Largest relay frame accepted, in bytes (batch payload plus 13 bytes). Default: 64 MiB +
    /// 13.
    pub max_frame: u32,
    /// First delay before reconnecting; doubles up to `reconnect_max`. Default: 100 ms.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts. Default: 10 s.
    pub reconnect_max: Duration,
    /// Let the kernel segment UDP sends (GSO) where it can; it can only up to a
    /// `max_udp_payload` of 6550 (see [`LinkConfig::gso`]). Default: true.
    pub segmentation_offload: bool,
    /// UDP socket send and receive buffer sizes in bytes. Bursts beyond the receive buffer
    /// are dropped by the kernel and cost a retransmission, even on loopback. Linux caps the
    /// value at `net.core.rmem_max` / `wmem_max`; raise those for fast links. Default: 4 MiB.
    pub udp_buffer_bytes: usize,
    /// Largest UDP payload, in bytes (1200..=65527): what this end accepts and the upper bound
    /// MTU discovery probes toward, from QUIC's safe 1200. Bigger packets cost less CPU per
    /// byte; discovery finds what the path carries (Ethernet: 1472 after IPv4 and UDP headers,
    /// jumbo frames: 8972, loopback: 65508) and black-hole detection falls back to 1200 if the
    /// path shrinks. Above 6550 segmentation offload is turned off (see [`LinkConfig::gso`]).
    /// Over loopback 16384 did best in `cargo bench --bench transport`: with 65527 a receiver
    /// short of CPU overflowed its UDP buffer, and the lost full-size packets looked like a
    /// black hole, sending the link back to 1200 for a minute. Default: 1452, for Internet
    /// paths.
    pub max_udp_payload: u16,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            streams: 4,
            window: SenderWindow::default(),
            stream_receive_window: 32 << 20,
            receive_window: 128 << 20,
            send_window: 128 << 20,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            initial_rtt: Duration::from_millis(100),
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            segmentation_offload: true,
            udp_buffer_bytes: 4 << 20,
            max_udp_payload: 1452,
        }
    }
}

impl LinkConfig {
    /// The QUIC transport settings these values imply.
    pub fn transport(&self) -> Result<TransportConfig, TransportError> {
        let varint = |what: &'static str, v: u64| {
            VarInt::from_u64(v)
                .map_err(|_| TransportError::Config(format!("{what} {v} is too large")))
        };
        if !(1200..=65527).contains(&self.max_udp_payload) {
            return Err(TransportError::Config(format!(
                "max_udp_payload {} is outside 1200..=65527",
                self.max_udp_payload
            )));
        }
        let mut t = TransportConfig::default();
        t.stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint("receive_window", self.receive_window)?)
            .send_window(self.send_window)
            .max_concurrent_uni_streams(varint("streams", u64::from(self.streams))?)
            .max_concurrent_bidi_streams(VarInt::from_u32(1))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                self.idle_timeout
                    .try_into()
                    .map_err(|_| TransportError::Config("idle_timeout too long".into()))?,
            ))
            .initial_rtt(self.initial_rtt)
            .mtu_discovery_config(Some({
                let mut mtu = quinn::MtuDiscoveryConfig::default();
                mtu.upper_bound(self.max_udp_payload);
                mtu
            }))
            .enable_segmentation_offload(self.gso());
        Ok(t)
    }

    /// Whether segmentation offload is used: when asked for, and only while quinn's batches of
    /// up to 10 datagrams of `max_udp_payload` bytes fit the kernel's 64 KiB bound on one GSO
    /// send. A bigger send fails with EMSGSIZE, which quinn-udp drops silently (it expects
    /// that only of MTU probes), so every such batch would be lost; above that size a
    /// datagram alone amortises the per-packet work anyway.
    pub fn gso(&self) -> bool {
        const QUINN_MAX_SEGMENTS: usize = 10;
        const GSO_MAX_BYTES: usize = 65_507;
        self.segmentation_offload
            && usize::from(self.max_udp_payload) * QUINN_MAX_SEGMENTS <= GSO_MAX_BYTES
    }

    /// `base` with the largest UDP payload this end accepts, which the peer's MTU discovery
    /// never probes beyond.
    pub fn endpoint(
        &self,
        mut base: quinn::EndpointConfig,
    ) -> Result<quinn::EndpointConfig, TransportError> {
        base.max_udp_payload_size(self.max_udp_payload)
            .map_err(|_| {
                TransportError::Config(format!(
                    "max_udp_payload {} is outside 1200..=65527",
                    self.max_udp_payload
                ))
            })?;
        Ok(base)
    }
}

/// A cap on shipping bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Average relay frame bytes per second (QUIC and UDP headers add about 3%).
    pub bytes_per_sec: u64,
    /// Largest burst in bytes. A batch larger than this still goes, alone, and the cap
    /// catches up afterwards.
    pub burst: u64,
}

/// Errors of the link.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Settings that cannot work.
    #[error("link configuration: {0}")]
    Config(String),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A connection could not be started.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The receiver's address.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The connection failed or was closed (handshake failures and TLS rejections included).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed (other than by losing the connection).
    #[error("stream write: {0}")]
    Write(quinn::WriteError),
    /// Reading from a stream failed (other than by losing the connection).
    #[error("stream read: {0}")]
    Read(quinn::ReadError),
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The receiver's sink failed to make a batch durable.
    #[error("sink: {0}")]
    Sink(#[source] SinkError),
    /// The peer did not answer in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The spool no longer has a batch the receiver needs: it was acknowledged earlier, then
    /// the receiver lost it. Recover the receiver from its own backup or re-seed it.
    #[error("receiver needs batch {0}, which the spool no longer holds")]
    Gone(u64),
    /// The sink dropped the batches it held without making them durable
    /// ([`Delivered::Rewind`]): the connection ends and the next one resumes after the last
    /// durable batch.
    #[error("the sink dropped batches after {0}, the last durable one: resuming from there")]
    Rewind(u64),
}

// A lost connection says why only in its inner error, so surface that one.
impl From<quinn::WriteError> for TransportError {
    fn from(error: quinn::WriteError) -> Self {
        match error {
            quinn::WriteError::ConnectionLost(e) => TransportError::Connection(e),
            other => TransportError::Write(other),
        }
    }
}

impl From<quinn::ReadError> for TransportError {
    fn from(error: quinn::ReadError) -> Self {
        match error {
            quinn::ReadError::ConnectionLost(e) => TransportError::Connection(e),
            other => TransportError::Read(other),
        }
    }
}

impl TransportError {
    /// Whether reconnecting cannot help: the set-up or the data is wrong.
    pub fn is_fatal(&self) -> bool {
        match self {
            TransportError::Config(_)
            | TransportError::Tls(_)
            | TransportError::Spool(_)
            | TransportError::Sink(_)
            | TransportError::Gone(_) => true,
            TransportError::Protocol(e) => matches!(
                e,
                ProtocolError::ReceiverAhead { .. } | ProtocolError::Version { .. }
            ),
            _ => false,
        }
    }
}

/// An error from a [`BatchSink`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where the receiver puts batches. Exactly once rests on its two promises.
pub trait BatchSink: Send {
    /// The highest sequence number already durable (0 if none). Called when the receiver
    /// starts; the sender resumes after it.
    fn last_durable(&mut self) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Makes batch `seq` durable (applied, or spooled) and returns [`Delivered::Durable`]
    /// only then; or takes it into work that becomes durable with a later batch
    /// ([`Delivered::Held`]), or later on its own ([`Delivered::Trailing`], and
    /// [`BatchSink::settle`]); or drops all such work ([`Delivered::Rewind`]). Called once
    /// per batch, in sequence order, `seq` one more than the last, except that after a
    /// rewind or a new connection delivery starts again after the last durable batch: a
    /// sink that held batches must then drop them. The call is never cancelled.
    fn deliver(
        &mut self,
        seq: u64,
        payload: Bytes,
    ) -> impl Future<Output = Result<Delivered, SinkError>> + Send;

    /// Finishes the batch a sink holds back for the next one (see
    /// [`Delivered::Trailing`]), called when no further batch is waiting: returns that
    /// batch's number and what became of it, or `None` if nothing was held back. Never
    /// cancelled.
    fn settle(
        &mut self,
    ) -> impl Future<Output = Result<Option<(u64, Delivered)>, SinkError>> + Send {
        std::future::ready(Ok(None))
    }
}

/// A sink that spools received batches durably (under the sender's numbers) for a later
/// stage to apply.
#[derive(Debug, Clone)]
pub struct SpoolSink<I: SpoolIo> {
    spool: Spool<I>,
}

impl<I: SpoolIo> SpoolSink<I> {
    /// A sink writing to `spool`. Its fsync policy decides what "durable" means.
    pub fn new(spool: Spool<I>) -> Self {
        SpoolSink { spool }
    }
}

impl<I: SpoolIo> BatchSink for SpoolSink<I> {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        Ok(self.spool.next_seq() - 1)
    }

    async fn deliver(&mut self, seq: u64, payload: Bytes) -> Result<Delivered, SinkError> {
        self.spool.append_at(seq, payload).await?;
        Ok(Delivered::Durable)
    }
}

fn bind(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, TransportError> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| TransportError::Io {
        what: format!("binding UDP {addr}"),
        source,
    })?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: the kernel clamps to its maximum, and a smaller buffer only costs speed.
    if let Err(error) = sock
        .set_recv_buffer_size(buffer)
        .and_then(|()| sock.set_send_buffer_size(buffer))
    {
        tracing::warn!(%error, buffer, "could not size the UDP socket buffers");
    }
    Ok(socket)
}

fn endpoint(
    socket: std::net::UdpSocket,
    endpoint_config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<Endpoint, TransportError> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TransportError::Config("no async runtime".into()))?;
    Endpoint::new(endpoint_config, server, socket, runtime).map_err(|source| TransportError::Io {
        what: "starting the QUIC endpoint".into(),
        source,
    })
}

async fn write_message(stream: &mut SendStream, message: &Message) -> Result<(), TransportError> {
    stream.write_all(&message.to_bytes()).await?;
    Ok(())
}

/// Reads frames from `stream` into `out` until the stream ends or fails; the last item is the
/// error, if any.
async fn read_frames(
    mut stream: RecvStream,
    max_frame: u32,
    out: mpsc::Sender<Result<Message, TransportError>>,
) {
    let mut decoder = FrameDecoder::new(max_frame);
    loop {
        match stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                decoder.push(&chunk.bytes);
                loop {
                    match decoder.decode() {
                        Ok(Some(message)) => {
                            if out.send(Ok(message)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = out.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
            }
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    let _ = out.send(Err(e.into())).await;
                }
                return;
            }
            Err(e) => {
                let _ = out.send(Err(e.into())).await;
                return;
            }
        }
    }
}

fn close_code(error: &TransportError) -> ErrorCode {
    match error {
        TransportError::Frame(_) => ErrorCode::Frame,
        TransportError::Protocol(
            ProtocolError::Version { .. } | ProtocolError::ReceiverAhead { .. },
        ) => ErrorCode::Incompatible,
        TransportError::Protocol(_) => ErrorCode::Protocol,
        TransportError::Sink(_) => ErrorCode::Sink,
        TransportError::Rewind(_) => ErrorCode::Rewind,
        _ => ErrorCode::Protocol,
    }
}

/// Tells the peer why, then closes. The reason travels in the CONNECTION_CLOSE frame too, so
/// the peer sees it even if the Error frame is lost with the connection.
async fn close_with(conn: &Connection, control: Option<&mut SendStream>, error: &TransportError) {
    let code = close_code(error);
    let reason = error.to_string();
    if let Some(control) = control {
        let message = Message::Error {
            code: code as u16,
            message: reason.clone(),
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), write_message(control, &message))
            .await;
    }
    // QUIC caps the reason at what fits in a packet.
    let reason: String = reason.chars().take(1000).collect();
    conn.close(VarInt::from_u32(code as u32), reason.as_bytes());
}

/// Ships batches from a spool to a receiver, forever, reconnecting as needed.
pub struct Sender<I: SpoolIo> {
    spool: Spool<I>,
    config: LinkConfig,
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    server: SocketAddr,
    server_name: String,
    schedule: Schedule,
    bucket: Mutex<Option<TokenBucket>>,
    metrics: Arc<Metrics>,
    /// Highest sequence number ever sent, to count re-sent batches.
    highest_sent: Mutex<u64>,
    /// The live connection, for metrics.
    current: Mutex<Option<Connection>>,
}

impl<I: SpoolIo> Sender<I> {
    /// A sender for `spool` to the receiver at `server`, whose certificate must name
    /// `server_name`. Opens its UDP socket now; connects in [`Sender::run`].
    pub fn new(
        spool: Spool<I>,
        tls: &TlsConfig,
        server: SocketAddr,
        server_name: &str,
        config: LinkConfig,
    ) -> Result<Self, TransportError> {
        let local: SocketAddr = if server.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| TransportError::Config("bad local address".into()))?;
        let endpoint = endpoint(
            bind(local, config.udp_buffer_bytes)?,
            config.endpoint(quinn::EndpointConfig::default())?,
            None,
        )?;
        let mut client = quinn::ClientConfig::new(tls::client_crypto(tls)?);
        let mut transport = config.transport()?;
        // The receiver opens no streams.
        transport.max_concurrent_uni_streams(VarInt::from_u32(0));
        client.transport_config(Arc::new(transport));
        Ok(Sender {
            spool,
            config,
            endpoint,
            client,
            server,
            server_name: server_name.to_owned(),
            schedule: Schedule::always(),
            bucket: Mutex::new(None),
            metrics: Arc::new(Metrics::default()),
            highest_sent: Mutex::new(0),
            current: Mutex::new(None),
        })
    }

    /// Ships only inside these windows.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Caps the shipping rate.
    pub fn with_bandwidth(self, cap: Bandwidth) -> Self {
        *self.bucket.lock().unwrap_or_else(|e| e.into_inner()) = Some(TokenBucket::new(
            cap.bytes_per_sec,
            cap.burst,
            Instant::now(),
        ));
        self
    }

    /// The sender's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Connects, ships and reconnects with exponential backoff after any failure, until a
    /// fatal error (see [`TransportError::is_fatal`]).
    pub async fn run(&self) -> Result<(), TransportError> {
        let mut delay = self.config.reconnect_min;
        loop {
            let started = Instant::now();
            let error = match self.session().await {
                Ok(()) => continue,
                Err(e) => e,
            };
            if error.is_fatal() {
                tracing::error!(%error, "relay sender stopping");
                return Err(error);
            }
            // A session that ran a while resets the backoff: the link works.
            if started.elapsed() > self.config.reconnect_max {
                delay = self.config.reconnect_min;
            }
            tracing::warn!(%error, retry_in = ?delay, "relay connection lost");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.reconnect_max);
        }
    }

    /// One connection: handshake, resume, ship until it fails.
    pub async fn session(&self) -> Result<(), TransportError> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), self.server, &self.server_name)
            .map_err(|source| TransportError::Connect {
                addr: self.server,
                source,
            })?;
        let conn = connecting.await?;
        self.metrics.update(|m| m.connections += 1);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        let result = self.ship(&conn).await;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(error) = &result {
            let control = None;
            if !matches!(error, TransportError::Connection(_)) {
                close_with(&conn, control, error).await;
            }
        }
        self.metrics.observe(&conn);
        self.metrics.connection_closed(&conn);
        result
    }

    async fn ship(&self, conn: &Connection) -> Result<(), TransportError> {
        let mut session = SenderSession::new(self.config.window);
        let (mut control, control_recv) = conn.open_bi().await?;
        write_message(&mut control, &session.hello()).await?;
        let (ctrl_tx, mut ctrl_rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_frames(control_recv, self.config.max_frame, ctrl_tx));
        let _reader_guard = AbortOnDrop(reader);

        let resume = tokio::time::timeout(self.config.idle_timeout, ctrl_rx.recv())
            .await
            .map_err(|_| TransportError::Timeout("waiting for Resume"))?;
        let last_durable = match resume {
            Some(Ok(Message::Resume { last_durable })) => last_durable,
            Some(Ok(Message::Error { code, message })) => {
                return Err(ProtocolError::Peer { code, message }.into());
            }
            Some(Ok(_)) => {
                return Err(ProtocolError::Unexpected {
                    what: "message",
                    when: "instead of Resume",
                }
                .into())
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(TransportError::Timeout(
                    "control stream closed before Resume",
                ))
            }
        };
        let mut next = session.on_resume(last_durable, self.spool.next_seq())?;
        if last_durable > self.spool.acked() {
            self.spool.ack(last_durable).await?;
        }
        tracing::info!(resume_after = last_durable, remote = %conn.remote_address(), "relay connected");

        // Writers share one queue: whichever stream has room takes the next batch.
        let (work_tx, work_rx) = mpsc::channel::<(u64, Bytes)>(self.config.streams as usize * 2);
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        let (fail_tx, mut fail_rx) = mpsc::channel::<TransportError>(self.config.streams as usize);
        let mut writers = Vec::new();
        for _ in 0..self.config.streams {
            let stream = conn.open_uni().await?;
            writers.push(AbortOnDrop(tokio::spawn(write_batches(
                stream,
                work_rx.clone(),
                fail_tx.clone(),
            ))));
        }
        drop(fail_tx);

        let mut appended = self.spool.subscribe_appended();
        let mut pending: Option<Bytes> = None;
        let mut last_observe = Instant::now();
        loop {
            // Ship as much as the window, the schedule and the cap allow.
            let mut wake: Option<Duration> = None;
            let mut wait_data = false;
            let open = self.schedule.is_open(jiff::Timestamp::now());
            self.metrics.update(|m| m.window_open = open);
            if !open {
                // Look again at the next window boundary, and at least every minute in case
                // the wall clock jumps.
                let now = jiff::Timestamp::now();
                let until = self
                    .schedule
                    .next_change(now)
                    .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
                    .unwrap_or(Duration::from_secs(60));
                wake = Some(until.clamp(Duration::from_millis(10), Duration::from_secs(60)));
            }
            // The window is judged once per pass; a pass ends within one window of batches.
            loop {
                if !open {
                    break;
                }
                appended.borrow_and_update();
                if pending.is_none() {
                    match self.spool.read(next).await? {
                        Some(payload) => pending = Some(payload),
                        // Acknowledged batches may be removed; unacknowledged ones never are.
                        None if next <= self.spool.acked() => {
                            return Err(TransportError::Gone(next))
                        }
                        None => {
                            wait_data = true;
                            break;
                        }
                    }
                }
                let Some(payload) = pending.as_ref() else {
                    break;
                };
                let len = payload.len() as u64;
                if !session.can_send(len) {
                    break;
                }
                let now = Instant::now();
                if let Some(bucket) = self
                    .bucket
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    if let Err(wait) = bucket.try_take(len + BATCH_HEADER_LEN as u64, now) {
                        wake = Some(wait);
                        break;
                    }
                }
                let Some(payload) = pending.take() else { break };
                if work_tx.send((next, payload)).await.is_err() {
                    break;
                }
                session.on_sent(len, now);
                let resent = {
                    let mut highest = self.highest_sent.lock().unwrap_or_else(|e| e.into_inner());
                    let resent = next <= *highest;
                    *highest = (*highest).max(next);
                    resent
                };
                self.metrics.update(|m| {
                    m.payload_bytes += len;
                    m.batches += 1;
                    m.batches_resent += u64::from(resent);
                });
                next += 1;
            }
            if last_observe.elapsed() > Duration::from_millis(250) {
                self.observe(conn);
                last_observe = Instant::now();
            }

            let sleep = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
            tokio::select! {
                message = ctrl_rx.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return Err(e),
                        None => return Err(conn.closed().await.into()),
                    };
                    if let Some(acked) = session.on_message(message, Instant::now())? {
                        if acked.up_to > self.spool.acked() {
                            self.spool.ack(acked.up_to).await?;
                        }
                        self.metrics.update(|m| {
                            m.acks += 1;
                            m.batches_acked += acked.batches;
                            if let Some(latency) = acked.latency {
                                m.ack_latency = latency;
                            }
                        });
                    }
                }
                changed = appended.changed(), if wait_data => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = sleep, if wake.is_some() => {}
                Some(error) = fail_rx.recv() => return Err(error),
                error = conn.closed() => return Err(error.into()),
            }
        }
    }

    fn observe(&self, conn: &Connection) {
        self.metrics.observe(conn);
        let stats = self.spool.stats();
        if stats.near_bound() {
            tracing::warn!(
                bytes = stats.bytes,
                bound = stats.max_bytes,
                rpo = ?stats.oldest_unacked_age,
                "spool near its bound"
            );
        }
        self.metrics.update(|m| {
            m.spool_bytes = stats.bytes;
            m.spool_max_bytes = stats.max_bytes;
            m.spool_unacked = stats.unacked;
            m.spool_oldest_age = stats.oldest_unacked_age;
        });
    }

    /// Refreshes the spool and QUIC figures in the metrics now.
    pub fn refresh_metrics(&self) {
        if let Some(conn) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            self.metrics.observe(conn);
        }
        let stats = self.spool.stats();
        self.metrics.update(|m| {
            m.spool_bytes = stats.bytes;
            m.spool_max_bytes = stats.max_bytes;
            m.spool_unacked = stats.unacked;
            m.spool_oldest_age = stats.oldest_unacked_age;
            m.window_open = self.schedule.is_open(jiff::Timestamp::now());
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_batches(
    mut stream: SendStream,
    work: Arc<tokio::sync::Mutex<mpsc::Receiver<(u64, Bytes)>>>,
    fail: mpsc::Sender<TransportError>,
) {
    loop {
        let item = work.lock().await.recv().await;
        let Some((seq, payload)) = item else {
            let _ = stream.finish();
            return;
        };
        let header = Bytes::copy_from_slice(&batch_header(seq, payload.len()));
        // Two chunks: the payload goes to QUIC without a copy.
        if let Err(e) = stream.write_all_chunks(&mut [header, payload]).await {
            let _ = fail.send(e.into()).await;
            return;
        }
    }
}

/// An endpoint configuration whose stateless-reset key and connection-id key are derived from
/// the receiver's private key, so both are the same after a restart. A restarted receiver
/// then recognises the ids its predecessor issued (quinn drops packets whose id its own
/// generator did not sign, without a reset) and resets the sender's stale connection at its
/// first packet, so the sender reconnects at once instead of waiting for the idle timeout.
fn stable_reset_key(key_file: &std::path::Path) -> Result<quinn::EndpointConfig, TransportError> {
    use ring::hmac;
    let secret = std::fs::read(key_file).map_err(|source| TransportError::Io {
        what: format!("reading {}", key_file.display()),
        source,
    })?;
    let derive = hmac::Key::new(hmac::HMAC_SHA256, &secret);
    let tag = hmac::sign(&derive, b"outflow relay stateless reset key");
    let key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    let cid_tag = hmac::sign(&derive, b"outflow relay connection id key");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid_tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(config)
}

/// Accepts senders and hands their batches, in order and once each, to a [`BatchSink`].
pub struct Receiver {
    endpoint: Endpoint,
    config: LinkConfig,
    metrics: Arc<Metrics>,
}

enum Ended {
    /// The connection failed; wait for the next.
    Failed(TransportError),
    /// A newer connection arrived and replaces this one.
    Replaced(Connection),
}

impl Receiver {
    /// Listens on `addr` (UDP) with mutual TLS.
    pub fn bind(
        addr: SocketAddr,
        tls: &TlsConfig,
        config: LinkConfig,
    ) -> Result<Receiver, TransportError> {
        let mut server = quinn::ServerConfig::with_crypto(tls::server_crypto(tls)?);
        server.transport_config(Arc::new(config.transport()?));
        let endpoint = endpoint(
            bind(addr, config.udp_buffer_bytes)?,
            config.endpoint(stable_reset_key(&tls.key)?)?,
            Some(server),
        )?;
        Ok(Receiver {
            endpoint,
            config,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|source| TransportError::Io {
                what: "reading the local address".into(),
                source,
            })
    }

    /// The receiver's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves senders until the sink fails. One sender at a time: a new connection (a sender
    /// that restarted, or reconnected before the old connection timed out) replaces the
    /// current one.
    pub async fn run<S: BatchSink>(&self, mut sink: S) -> Result<(), TransportError> {
        let durable = sink.last_durable().await.map_err(TransportError::Sink)?;
        let max_held = self.config.window.max_bytes;
        let mut session = ReceiverSession::new(durable, max_held);
        let (conn_tx, mut conn_rx) = mpsc::channel::<Connection>(4);
        let endpoint = self.endpoint.clone();
        let _acceptor = AbortOnDrop(tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => {
                            let _ = conn_tx.send(conn).await;
                        }
                        // Failed handshakes (a wrong or missing certificate) end here.
                        Err(error) => tracing::warn!(%remote, %error, "relay handshake refused"),
                    }
                });
            }
        }));
        let mut next = conn_rx.recv().await;
        while let Some(conn) = next.take() {
            self.metrics.update(|m| m.connections += 1);
            session.reset_connection();
            let ended = self
                .serve(&conn, &mut session, &mut sink, &mut conn_rx)
                .await;
            self.metrics.observe(&conn);
            self.metrics.connection_closed(&conn);
            match ended {
                Ended::Replaced(newer) => {
                    conn.close(
                        VarInt::from_u32(ErrorCode::Replaced as u32),
                        b"replaced by a newer connection",
                    );
                    next = Some(newer);
                }
                Ended::Failed(TransportError::Sink(e)) => return Err(TransportError::Sink(e)),
                Ended::Failed(error) => {
                    tracing::warn!(%error, remote = %conn.remote_address(), "relay sender connection ended");
                    next = conn_rx.recv().await;
                }
            }
        }
        Ok(())
    }

    async fn serve<S: BatchSink>(
        &self,
        conn: &Connection,
        session: &mut ReceiverSession,
        sink: &mut S,
        conn_rx: &mut mpsc::Receiver<Connection>,
    ) -> Ended {
        let mut control = None;
        let result = self
            .serve_inner(conn, session, sink, conn_rx, &mut control)
            .await;
        match result {
            Ok(newer) => Ended::Replaced(newer),
            Err(error) => {
                if !matches!(error, TransportError::Connection(_)) {
                    close_with(conn, control.as_mut(), &error).await;
                }
                Ended::Failed(error)
            }
        }
    }

    async fn serve_inner<S: BatchSink>(
        &self,
        conn: &Connection,
        session: &mut ReceiverSession,
        sink: &mut S,
        conn_rx: &mut mpsc::Receiver<Connection>,
        control_out: &mut Option<SendStream>,
    ) -> Result<Connection, TransportError> {
        let max_frame = self.config.max_frame;
        let (control, control_recv) =
            tokio::time::timeout(self.config.idle_timeout, conn.accept_bi())
                .await
                .map_err(|_| TransportError::Timeout("waiting for the control stream"))??;
        let control = control_out.insert(control);
        let (ctrl_tx, mut ctrl_rx) = mpsc::channel(16);
        let _ctrl_reader = AbortOnDrop(tokio::spawn(read_frames(control_recv, max_frame, ctrl_tx)));
        let hello = tokio::time::timeout(self.config.idle_timeout, ctrl_rx.recv())
            .await
            .map_err(|_| TransportError::Timeout("waiting for Hello"))?;
        let hello = match hello {
            Some(result) => result?,
            None => {
                return Err(TransportError::Timeout(
                    "control stream closed before Hello",
                ))
            }
        };
        let resume = session.on_control(hello)?;
        write_message(control, &resume).await?;

        // Data streams feed one queue; its bound, with QUIC flow control behind it, is the
        // back pressure from a slow sink to the sender.
        let (data_tx, mut data_rx) = mpsc::channel::<Result<Message, TransportError>>(256);
        let accept_conn = conn.clone();
        let _streams = AbortOnDrop(tokio::spawn(async move {
            let mut readers = Vec::new();
            while let Ok(stream) = accept_conn.accept_uni().await {
                readers.push(AbortOnDrop(tokio::spawn(read_frames(
                    stream,
                    max_frame,
                    data_tx.clone(),
                ))));
            }
        }));
        let mut last_observe = Instant::now();
        loop {
            tokio::select! {
                biased;
                newer = conn_rx.recv() => {
                    if let Some(newer) = newer {
                        return Ok(newer);
                    }
                }
                message = data_rx.recv() => {
                    let Some(message) = message else {
                        return Err(conn.closed().await.into());
                    };
                    self.on_data(session, message?)?;
                    // Take whatever else has arrived, then deliver and acknowledge once.
                    while let Ok(message) = data_rx.try_recv() {
                        self.on_data(session, message?)?;
                    }
                }
                message = ctrl_rx.recv() => {
                    match message {
                        Some(Ok(message)) => { session.on_control(message)?; }
                        Some(Err(e)) => return Err(e),
                        None => return Err(conn.closed().await.into()),
                    }
                }
                error = conn.closed() => return Err(error.into()),
            }
            while let Some((seq, payload)) = session.next_deliverable() {
                let how = sink
                    .deliver(seq, payload)
                    .await
                    .map_err(TransportError::Sink)?;
                self.on_delivered(session, seq, how)?;
            }
            // A sink that holds a batch back until the next one arrives finishes it once
            // no further batch is waiting.
            if data_rx.is_empty() {
                if let Some((seq, how)) = sink.settle().await.map_err(TransportError::Sink)? {
                    self.on_delivered(session, seq, how)?;
                }
            }
            while let Some(ack) = session.poll_ack() {
                write_message(control, &ack).await?;
                self.metrics.update(|m| m.acks += 1);
            }
            if last_observe.elapsed() > Duration::from_millis(250) {
                self.metrics.observe(conn);
                last_observe = Instant::now();
            }
        }
    }

    fn on_delivered(
        &self,
        session: &mut ReceiverSession,
        seq: u64,
        how: Delivered,
    ) -> Result<(), TransportError> {
        let before = session.durable();
        if !session.on_delivered(seq, how) {
            return Err(TransportError::Rewind(session.durable()));
        }
        self.metrics
            .update(|m| m.batches_acked += session.durable() - before);
        Ok(())
    }

    fn on_data(
        &self,
        session: &mut ReceiverSession,
        message: Message,
    ) -> Result<(), TransportError> {
        let len = match &message {
            Message::Batch { payload, .. } => payload.len() as u64,
            _ => 0,
        };
        let outcome = session.on_data(message)?;
        self.metrics.update(|m| {
            m.batches += 1;
            m.payload_bytes += len;
            m.duplicates += u64::from(outcome == crate::protocol::BatchOutcome::Duplicate);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmentation_offload_only_while_a_batch_fits_one_gso_send() {
        let with = |max_udp_payload| LinkConfig {
            max_udp_payload,
            ..LinkConfig::default()
        };
        assert!(with(1452).gso());
        assert!(with(6550).gso());
        assert!(!with(6551).gso());
        assert!(!with(65527).gso());
        let off = LinkConfig {
            segmentation_offload: false,
            ..with(1452)
        };
        assert!(!off.gso());
    }

    #[test]
    fn udp_payload_out_of_range_is_a_config_error() {
        for bad in [1199, 65528] {
            let config = LinkConfig {
                max_udp_payload: bad,
                ..LinkConfig::default()
            };
            assert!(matches!(config.transport(), Err(TransportError::Config(_))));
            assert!(matches!(
                config.endpoint(quinn::EndpointConfig::default()),
                Err(TransportError::Config(_))
            ));
        }
    }
}

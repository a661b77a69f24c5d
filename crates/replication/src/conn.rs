//! The I/O edge: one TCP (optionally TLS) connection driven through the protocol core.
//!
//! Reads go straight into one large `BytesMut`; a payload that fits one packet is split off
//! it as `Bytes` without copying (see [`crate::protocol::packet`]). Once the consumer has
//! dropped the payloads it was given, the next `reserve` reuses the same allocation, so a
//! steady stream reads into one buffer and allocates nothing per event.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::{codes, privilege_in_message};
use crate::options::{ConnectOptions, TlsMode};
use crate::protocol::auth::{AuthError, AuthExchange, AuthStep};
use crate::protocol::handshake::{
    caps as cap, handshake_response, parse_greeting, ssl_request, FirstPacket, Greeting,
    CLIENT_CAPS, REQUIRED_CAPS,
};
use crate::protocol::packet::{Framer, Take};
use crate::protocol::response::{ReadStep, ResultSet, ResultSetReader, ServerError};
use crate::protocol::stmt::{self, OkPacket, Param, PrepareReader, PrepareStep, Prepared};
use crate::protocol::{command, ProtocolError};
use crate::{tls, Error};

/// Bytes reserved per read when the buffer runs out of room: large, so that a read system
/// call returns many events and the buffer is recycled rarely.
const READ_CHUNK: usize = 4 << 20;

/// Largest query result payload accepted (replication payloads use `max_event`).
const MAX_QUERY_PAYLOAD: usize = 64 << 20;

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the TCP stream moves into the TLS stream.
    Upgrading,
}

fn upgrading() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "TLS upgrade in progress")
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// An authenticated connection in the command phase.
pub struct Connection {
    io: Transport,
    rbuf: BytesMut,
    wbuf: BytesMut,
    framer: Framer,
    opts: ConnectOptions,
    addr: String,
    greeting: Greeting,
    tls: bool,
    plugin: &'static str,
    read_timeout: Option<Duration>,
    /// Commands queued by `queue_*`, framed, not yet sent.
    queue: BytesMut,
    /// A queued command's payload while it is written (reused).
    scratch: Vec<u8>,
    /// The sequence id each sent or queued command's reply starts with, oldest first.
    replies: VecDeque<u8>,
    /// A query sent by [`Connection::send_query`] has results not yet read.
    results_pending: bool,
}

/// One result of a query, as read by [`Connection::next_result`].
#[derive(Debug)]
pub enum QueryResult {
    /// A statement without rows: its counts.
    Done(OkPacket),
    /// A statement's rows.
    Rows(ResultSet),
    /// The server's error; a multi-statement query runs nothing after it.
    Failed(ServerError),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("server_version", &self.greeting.server_version)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Connection {
    /// Connects, upgrades to TLS as the mode says, and authenticates.
    pub async fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
        let addr = opts.addr();
        match tokio::time::timeout(opts.connect_timeout, Self::connect_inner(opts)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                addr,
                during: "connecting and logging in",
                after: opts.connect_timeout,
            }),
        }
    }

    async fn connect_inner(opts: &ConnectOptions) -> Result<Connection, Error> {
        let addr = opts.addr();
        // Checked before any I/O, so a bad CA path is reported as such.
        let tls_config = match opts.tls.mode {
            TlsMode::Disabled => None,
            _ => Some(tls::client_config(&opts.tls)?),
        };
        let tcp = TcpStream::connect((opts.host.as_str(), opts.port))
            .await
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Commands are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: Transport::Plain(tcp),
            rbuf: BytesMut::with_capacity(64 << 10),
            wbuf: BytesMut::with_capacity(4 << 10),
            framer: Framer::new(MAX_QUERY_PAYLOAD),
            opts: opts.clone(),
            addr,
            greeting: Greeting {
                server_version: String::new(),
                connection_id: 0,
                capabilities: 0,
                charset: 0,
                scramble: Vec::new(),
                auth_plugin: String::new(),
            },
            tls: false,
            plugin: "",
            read_timeout: Some(opts.connect_timeout),
            queue: BytesMut::new(),
            scratch: Vec::new(),
            replies: VecDeque::new(),
            results_pending: false,
        };
        let first = conn.read_payload("reading the server's greeting").await?;
        let greeting = match parse_greeting(&first)
            .map_err(|e| conn.protocol("reading the server's greeting", e))?
        {
            FirstPacket::Greeting(g) => g,
            FirstPacket::Refused(error) => {
                return Err(Error::Refused {
                    addr: conn.addr.clone(),
                    error: Box::new(error),
                })
            }
        };
        if greeting.capabilities & REQUIRED_CAPS != REQUIRED_CAPS {
            return Err(Error::Unsupported {
                addr: conn.addr.clone(),
                detail: format!(
                    "server {} lacks protocol 4.1 or pluggable authentication",
                    greeting.server_version
                ),
            });
        }
        let use_tls = match (opts.tls.mode, greeting.supports_tls()) {
            (TlsMode::Disabled, _) | (TlsMode::Preferred, false) => false,
            (_, true) => true,
            (mode, false) => {
                return Err(Error::TlsUnavailable {
                    addr: conn.addr.clone(),
                    mode: mode.name(),
                })
            }
        };
        let wanted = CLIENT_CAPS
            | if opts.found_rows { cap::FOUND_ROWS } else { 0 }
            | if opts.multi_statements {
                cap::MULTI_STATEMENTS
            } else {
                0
            };
        let caps = wanted & greeting.capabilities | if use_tls { cap::SSL } else { 0 };
        conn.greeting = greeting;
        if let (true, Some(config)) = (use_tls, tls_config) {
            conn.send(&ssl_request(caps), "requesting TLS").await?;
            let name = tls::server_name(&opts.host)?;
            let Transport::Plain(tcp) = std::mem::replace(&mut conn.io, Transport::Upgrading)
            else {
                return Err(Error::Options("internal: TLS set up twice".to_string()));
            };
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Tls {
                    addr: conn.addr.clone(),
                    problem: tls::describe(&e, &opts.tls, &opts.host),
                })?;
            conn.io = Transport::Tls(Box::new(stream));
            conn.tls = true;
        }
        conn.authenticate(caps).await?;
        conn.read_timeout = opts.effective_read_timeout();
        Ok(conn)
    }

    async fn authenticate(&mut self, caps: u32) -> Result<(), Error> {
        const DURING: &str = "authenticating";
        let (mut ex, plugin, response) = AuthExchange::start(
            &self.opts.password.0,
            self.tls,
            &self.greeting.auth_plugin,
            &self.greeting.scramble,
        );
        let hello = handshake_response(caps, &self.opts.user, &response, plugin);
        self.send(&hello, DURING).await?;
        loop {
            let p = self.read_payload(DURING).await?;
            match ex.on_packet(&p) {
                Ok(AuthStep::Done) => {
                    self.plugin = ex.plugin().name();
                    return Ok(());
                }
                Ok(AuthStep::Wait) => {}
                Ok(AuthStep::Send(data)) => self.send(&data, DURING).await?,
                Err(AuthError::Server(error)) => {
                    return Err(Error::AccessDenied {
                        addr: self.addr.clone(),
                        user: self.opts.user.clone(),
                        plugin: ex.plugin().name(),
                        error: Box::new(error),
                    })
                }
                Err(source) => {
                    return Err(Error::Auth {
                        addr: self.addr.clone(),
                        user: self.opts.user.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The options this connection was made with.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// The server's greeting (version, connection id, capabilities).
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The auth plugin that logged in.
    pub fn auth_plugin(&self) -> &'static str {
        self.plugin
    }

    /// Sets the largest payload accepted from now on.
    pub(crate) fn set_max_payload(&mut self, max: usize) {
        let seq = self.framer.next_seq();
        self.framer = Framer::new(max);
        self.framer.set_next_seq(seq);
    }

    pub(crate) fn protocol(&self, during: &'static str, source: ProtocolError) -> Error {
        Error::Protocol {
            addr: self.addr.clone(),
            during,
            source,
        }
    }

    /// Sends one command (sequence ids restart at 0).
    pub(crate) async fn send_command(
        &mut self,
        payload: &[u8],
        during: &'static str,
    ) -> Result<(), Error> {
        self.framer.reset();
        self.send(payload, during).await
    }

    async fn send(&mut self, payload: &[u8], during: &'static str) -> Result<(), Error> {
        self.wbuf.clear();
        self.framer.write(payload, &mut self.wbuf);
        self.flush_wbuf(during).await
    }

    async fn flush_wbuf(&mut self, during: &'static str) -> Result<(), Error> {
        let r = async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        }
        .await;
        r.map_err(|source| Error::Io {
            addr: self.addr.clone(),
            during,
            source,
        })
    }

    /// Reads one whole payload.
    pub(crate) async fn read_payload(&mut self, during: &'static str) -> Result<Bytes, Error> {
        loop {
            match self.framer.take(&mut self.rbuf) {
                Ok(Take::Payload(p)) => return Ok(p),
                Ok(Take::Need(n)) => {
                    let missing = n.saturating_sub(self.rbuf.len());
                    if self.rbuf.capacity() - self.rbuf.len() < missing.max(64 << 10) {
                        self.rbuf.reserve(missing.max(READ_CHUNK));
                    }
                    let read = self.io.read_buf(&mut self.rbuf);
                    let n = match self.read_timeout {
                        Some(t) => {
                            tokio::time::timeout(t, read)
                                .await
                                .map_err(|_| Error::Timeout {
                                    addr: self.addr.clone(),
                                    during,
                                    after: t,
                                })?
                        }
                        None => read.await,
                    }
                    .map_err(|source| Error::Io {
                        addr: self.addr.clone(),
                        during,
                        source,
                    })?;
                    if n == 0 {
                        return Err(Error::Closed {
                            addr: self.addr.clone(),
                            during,
                        });
                    }
                }
                Err(e) => return Err(self.protocol(during, e)),
            }
        }
    }

    /// Runs a statement and reads its text result set (empty for statements without
    /// rows). A missing privilege becomes [`Error::MissingPrivilege`] naming `needed_for`.
    /// Nothing may be queued or awaiting a reply.
    pub async fn query(&mut self, sql: &str, needed_for: &'static str) -> Result<ResultSet, Error> {
        self.idle(needed_for)?;
        self.send_command(&command::query(sql), needed_for).await?;
        let mut reader = ResultSetReader::new();
        loop {
            let p = self.read_payload(needed_for).await?;
            match reader.feed(&p).map_err(|e| self.protocol(needed_for, e))? {
                ReadStep::More => {}
                ReadStep::Done(set) => return Ok(set),
                ReadStep::Err(error) => return Err(self.server_error(needed_for, error)),
            }
        }
    }

    /// Prepares `sql` (`COM_STMT_PREPARE`). Nothing may be queued or awaiting a reply.
    pub async fn prepare(&mut self, sql: &[u8], during: &'static str) -> Result<Prepared, Error> {
        self.idle(during)?;
        self.send_command(&stmt::prepare(sql), during).await?;
        let mut reader = PrepareReader::new();
        loop {
            let p = self.read_payload(during).await?;
            match reader.feed(&p).map_err(|e| self.protocol(during, e))? {
                PrepareStep::More => {}
                PrepareStep::Done(ok) => return Ok(ok),
                PrepareStep::Err(error) => return Err(self.server_error(during, error)),
            }
        }
    }

    /// Frees a prepared statement (`COM_STMT_CLOSE`, which has no reply).
    pub async fn close_statement(&mut self, id: u32) -> Result<(), Error> {
        const DURING: &str = "closing a prepared statement";
        self.idle(DURING)?;
        self.send_command(&stmt::close(id), DURING).await
    }

    /// Sends `sql` (several `;`-separated statements with
    /// [`ConnectOptions::multi_statements`]) without waiting: read each statement's result
    /// with [`Connection::next_result`], in order, until it returns `None`. Nothing may be
    /// queued or awaiting a reply.
    pub async fn send_query(&mut self, sql: &[u8], during: &'static str) -> Result<(), Error> {
        self.idle(during)?;
        // Framed straight from `sql`: a lane's query can be a megabyte.
        self.framer.reset();
        self.wbuf.clear();
        self.framer
            .write_parts(&[command::COM_QUERY], sql, &mut self.wbuf);
        self.flush_wbuf(during).await?;
        self.results_pending = true;
        Ok(())
    }

    /// The next result of the query sent by [`Connection::send_query`]: `None` once all
    /// are read. After a [`QueryResult::Failed`] there are no more.
    pub async fn next_result(
        &mut self,
        during: &'static str,
    ) -> Result<Option<QueryResult>, Error> {
        if !self.results_pending {
            return Ok(None);
        }
        let p = self.read_payload(during).await?;
        if p.first() == Some(&0x00) {
            let ok = match stmt::parse_ok_or_err(&p).map_err(|e| self.protocol(during, e))? {
                Ok(ok) => ok,
                Err(e) => return Err(self.server_error(during, e)),
            };
            self.results_pending = ok.more_results();
            return Ok(Some(QueryResult::Done(ok)));
        }
        let mut reader = ResultSetReader::new();
        let mut step = reader.feed(&p).map_err(|e| self.protocol(during, e))?;
        loop {
            match step {
                ReadStep::More => {}
                ReadStep::Done(set) => {
                    self.results_pending = set.status & stmt::SERVER_MORE_RESULTS_EXISTS != 0;
                    return Ok(Some(QueryResult::Rows(set)));
                }
                ReadStep::Err(error) => {
                    self.results_pending = false;
                    return Ok(Some(QueryResult::Failed(error)));
                }
            }
            let p = self.read_payload(during).await?;
            step = reader.feed(&p).map_err(|e| self.protocol(during, e))?;
        }
    }

    fn idle(&self, during: &'static str) -> Result<(), Error> {
        if self.results_pending {
            return Err(self.protocol(
                during,
                ProtocolError::new("pipeline", "an earlier query's results are not all read"),
            ));
        }
        if self.queue.is_empty() && self.replies.is_empty() {
            return Ok(());
        }
        Err(self.protocol(
            during,
            ProtocolError::new(
                "pipeline",
                format!(
                    "{} commands still queued or awaiting replies",
                    self.replies.len()
                ),
            ),
        ))
    }

    /// Queues an execute of `statement` with `params` (borrowed; written straight into
    /// the send buffer). Nothing is sent until [`Connection::flush_queue`]; each queued
    /// command's reply is read, in order, with [`Connection::read_reply`].
    ///
    /// Commands are pipelined: the server runs each one whatever the replies before it
    /// said, so a caller in a transaction must account for a failed command's followers
    /// (with `autocommit` off they stay inside a transaction it can roll back).
    pub fn queue_execute<'a>(
        &mut self,
        statement: &Prepared,
        params: impl IntoIterator<Item = Param<'a>>,
    ) -> Result<(), Error> {
        self.scratch.clear();
        stmt::execute(
            &mut self.scratch,
            statement.id,
            usize::from(statement.params),
            params,
        )
        .map_err(|source| Error::Execute {
            addr: self.addr.clone(),
            source,
        })?;
        self.queue_scratch();
        Ok(())
    }

    /// Queues a statement that returns no rows (`COM_QUERY`), as [`Self::queue_execute`].
    pub fn queue_query(&mut self, sql: &[u8]) {
        self.scratch.clear();
        self.scratch.push(command::COM_QUERY);
        self.scratch.extend_from_slice(sql);
        self.queue_scratch();
    }

    fn queue_scratch(&mut self) {
        self.framer.reset();
        self.framer.write(&self.scratch, &mut self.queue);
        self.replies.push_back(self.framer.next_seq());
    }

    /// Bytes queued and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.queue.len()
    }

    /// Commands sent or queued whose replies have not been read.
    pub fn awaiting_replies(&self) -> usize {
        self.replies.len()
    }

    /// Sends every queued command, in one write.
    pub async fn flush_queue(&mut self, during: &'static str) -> Result<(), Error> {
        let r = async {
            self.io.write_all(&self.queue).await?;
            self.io.flush().await
        }
        .await;
        self.queue.clear();
        r.map_err(|source| Error::Io {
            addr: self.addr.clone(),
            during,
            source,
        })
    }

    /// Reads the reply to the oldest command (sending the queue first if it is not yet
    /// sent): its OK counts, or the server's error (the connection stays usable after one).
    /// A reply with rows is a protocol error: only statements without rows may be queued.
    pub async fn read_reply(
        &mut self,
        during: &'static str,
    ) -> Result<Result<OkPacket, ServerError>, Error> {
        if !self.queue.is_empty() {
            self.flush_queue(during).await?;
        }
        let Some(seq) = self.replies.pop_front() else {
            return Err(self.protocol(
                during,
                ProtocolError::new("pipeline", "no command is awaiting a reply"),
            ));
        };
        self.framer.set_next_seq(seq);
        let p = self.read_payload(during).await?;
        stmt::parse_ok_or_err(&p).map_err(|e| self.protocol(during, e))
    }

    /// Maps a server error to the most specific [`Error`].
    pub(crate) fn server_error(&self, during: &'static str, error: ServerError) -> Error {
        if error.code == codes::SPECIFIC_ACCESS_DENIED {
            return Error::MissingPrivilege {
                addr: self.addr.clone(),
                user: self.opts.user.clone(),
                privilege: privilege_in_message(&error.message)
                    .unwrap_or_else(|| "required".to_string()),
                needed_for: during,
                error: Box::new(error),
            };
        }
        Error::Server {
            addr: self.addr.clone(),
            during,
            error: Box::new(error),
        }
    }

    /// Says goodbye (`COM_QUIT`) and closes; errors only mean the server was gone already.
    pub async fn close(mut self) {
        let _ = self.send_command(&command::quit(), "closing").await;
        let _ = self.io.shutdown().await;
    }
}

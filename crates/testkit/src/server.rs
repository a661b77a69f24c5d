//! One throwaway `mariadbd` process and its files.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::{FromRow, FromValue, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Pool, Row};

use crate::config::{Layout, Runtime, BINLOG_BASENAME};
use crate::template::{self, SUPERUSER, SUPERUSER_PASSWORD};
use crate::util::{
    copy_tree, describe, file_tail, find_program, output_tail, remove_tree, user_args,
};
use crate::{KitError, ServerConfig};

/// How many fresh ports [`Server::start`] tries when another process grabs the one it picked.
const PORT_ATTEMPTS: u32 = 8;

/// Set to keep the files of every server after it is dropped, for post-mortem debugging.
const KEEP_ENV: &str = "OUTFLOW_TESTKIT_KEEP";

/// A position in the binary log, as `SHOW MASTER STATUS` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPosition {
    /// File name, e.g. `binlog.000001`.
    pub file: String,
    /// Byte offset of the next event in that file.
    pub position: u64,
}

/// A running (or stopped, or killed) throwaway `mariadbd`.
///
/// Files live under one temporary directory: `data/` (the data directory, with the binlog as
/// `data/binlog.*`), `mysqld.sock`, `my.cnf` and `error.log` (the server's stderr). Dropping
/// the value kills the process and removes the directory, also when a test panics; set
/// `OUTFLOW_TESTKIT_KEEP=1` to keep the files.
///
/// Two ways in: the kit's own helpers connect as `root` over the unix socket (allowed even
/// with `require_secure_transport`); code under test should use [`Server::url`],
/// [`Server::opts`] or [`Server::conn`], which connect over TCP as the superuser
/// [`SUPERUSER`] (password [`SUPERUSER_PASSWORD`]).
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    layout: Layout,
    /// `None` once the files were handed over to `OUTFLOW_TESTKIT_KEEP`.
    base: Option<tempfile::TempDir>,
    port: u16,
    server_id: u32,
    child: Option<Child>,
}

enum SpawnError {
    PortTaken { log_tail: String },
    Other(KitError),
}

impl From<KitError> for SpawnError {
    fn from(e: KitError) -> Self {
        SpawnError::Other(e)
    }
}

fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    // Unique within this process, which is where replication topologies are built; the pid
    // part makes clashes between concurrently running test processes unlikely as well.
    (std::process::id() % 1_000_000) * 1000 + n + 1
}

fn free_port() -> Result<u16, KitError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| KitError::io("binding a probe socket on", "127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| KitError::io("reading the address of", "127.0.0.1:0", e))?
        .port();
    // The listener closes here; mariadbd binds the port a moment later. Another process can
    // take it in between, which start() detects and retries.
    Ok(port)
}

/// True once the server accepts a connection on its socket and answers a login.
///
/// The probe logs in as `root` with the empty password the template gives it over the socket
/// and then says goodbye with COM_QUIT, so the server does not log an "Aborted connection"
/// warning for every start. Any answer to the login, even a refusal, means the server is up.
fn socket_ready(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let Some(greeting_seq) = read_packet_seq(&mut stream) else {
        return false;
    };
    // Handshake response 41: capabilities LONG_PASSWORD | PROTOCOL_41 | SECURE_CONNECTION,
    // max packet 16 MiB, charset utf8mb4 (45), 23 filler bytes, user "root", empty auth data.
    let mut payload = Vec::with_capacity(40);
    payload.extend_from_slice(&(0x0001u32 | 0x0200 | 0x8000).to_le_bytes());
    payload.extend_from_slice(&(16u32 << 20).to_le_bytes());
    payload.push(45);
    payload.extend_from_slice(&[0u8; 23]);
    payload.extend_from_slice(b"root\0");
    payload.push(0);
    if write_packet(&mut stream, greeting_seq.wrapping_add(1), &payload).is_err() {
        return false;
    }
    if read_packet_seq(&mut stream).is_none() {
        return false;
    }
    // COM_QUIT; the server closes without complaint. Errors here do not matter any more.
    let _ = write_packet(&mut stream, 0, &[0x01]);
    true
}

/// Reads one protocol packet and returns its sequence number.
fn read_packet_seq(stream: &mut UnixStream) -> Option<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(header[3])
}

fn write_packet(stream: &mut UnixStream, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Probe payloads are tiny, far below the 16 MiB packet limit, so three bytes hold the length.
    let len = payload.len().to_le_bytes();
    stream.write_all(&[len[0], len[1], len[2], seq])?;
    stream.write_all(payload)
}

impl Server {
    /// Starts a server from a copy of the shared template data directory.
    ///
    /// Blocks until the unix socket accepts connections (see
    /// [`ServerConfig::startup_timeout`]). Usable from sync code and from inside a tokio
    /// runtime (it blocks the calling thread for a fraction of a second).
    pub fn start(cfg: ServerConfig) -> Result<Server, KitError> {
        let template = template::template_data_dir()?;
        let root = template::temp_root();
        // Short prefix: the socket path inside must stay under the ~107-byte limit.
        let base = tempfile::Builder::new()
            .prefix("ofk-")
            .tempdir_in(&root)
            .map_err(|e| KitError::io("creating server directory in", &root, e))?;
        let layout = Layout::new(base.path());
        copy_tree(&template, &layout.data_dir)?;
        let server_id = cfg.get_server_id().unwrap_or_else(next_server_id);
        let mut server = Server {
            cfg,
            layout,
            base: Some(base),
            port: 0,
            server_id,
            child: None,
        };
        let mut last_tail = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(SpawnError::PortTaken { log_tail }) => last_tail = log_tail,
                Err(SpawnError::Other(e)) => return Err(e),
            }
        }
        Err(KitError::PortRace {
            data_dir: server.layout.data_dir.clone(),
            attempts: PORT_ATTEMPTS,
            log_tail: last_tail,
        })
    }

    fn spawn_and_wait(&mut self) -> Result<(), SpawnError> {
        let rt = Runtime {
            data_dir: &self.layout.data_dir,
            socket: &self.layout.socket,
            pid_file: &self.layout.pid_file,
            port: self.port,
            server_id: self.server_id,
        };
        let cnf = self.cfg.render(&rt)?;
        std::fs::write(&self.layout.cnf, cnf)
            .map_err(|e| KitError::io("writing", &self.layout.cnf, e))?;
        // A socket file left by a killed server would only refuse connections, but removing it
        // keeps the readiness probe's meaning simple.
        let _ = std::fs::remove_file(&self.layout.socket);

        let log_path = &self.layout.error_log;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| KitError::io("opening", log_path, e))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| KitError::io("duplicating handle of", log_path, e))?;

        // Without --log-error mariadbd logs to stderr, which goes to error.log; that also
        // captures option errors printed before any log file would be opened.
        let mut cmd = Command::new(find_program("mariadbd"));
        cmd.arg(format!("--defaults-file={}", self.layout.cnf.display()))
            .args(user_args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd.spawn().map_err(|source| KitError::Spawn {
            program: describe(&cmd),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready(log_start)
    }

    fn wait_ready(&mut self, log_start: u64) -> Result<(), SpawnError> {
        let timeout = self.cfg.get_startup_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(SpawnError::Other(self.not_running()));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    let log_tail = file_tail(&self.layout.error_log, log_start);
                    if log_tail.contains("Address already in use") {
                        return Err(SpawnError::PortTaken { log_tail });
                    }
                    return Err(SpawnError::Other(KitError::ServerExited {
                        data_dir: self.layout.data_dir.clone(),
                        status: status.to_string(),
                        log_tail,
                    }));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(
                        KitError::io("waiting for mariadbd of", &self.layout.data_dir, e).into(),
                    )
                }
            }
            if socket_ready(&self.layout.socket) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(SpawnError::Other(KitError::StartTimeout {
                    data_dir: self.layout.data_dir.clone(),
                    timeout,
                    log_tail: file_tail(&self.layout.error_log, log_start),
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful shutdown (SIGTERM, then wait up to [`ServerConfig::shutdown_timeout`]).
    /// Keeps the files, so [`Server::restart`] can start the server again. No-op when stopped.
    pub fn stop(&mut self) -> Result<(), KitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        if let Ok(raw) = i32::try_from(pid) {
            // SAFETY: `pid` is our child and has not been reaped (we hold the Child and have not
            // waited on it), so it cannot name another process. kill has no memory effects.
            unsafe {
                libc::kill(raw, libc::SIGTERM);
            }
        }
        let timeout = self.cfg.get_shutdown_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(KitError::io(
                        "waiting for mariadbd of",
                        &self.layout.data_dir,
                        e,
                    ))
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(KitError::StopTimeout {
            pid,
            data_dir: self.layout.data_dir.clone(),
            timeout,
            log_tail: file_tail(&self.layout.error_log, 0),
        })
    }

    /// Kills the server with SIGKILL, as a crash would, and keeps its files. No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory, port and configuration, after a
    /// graceful stop if it is still running. Use after [`Server::kill`] for crash recovery tests.
    pub fn restart(&mut self) -> Result<(), KitError> {
        self.stop()?;
        match self.spawn_and_wait() {
            Ok(()) => Ok(()),
            Err(SpawnError::Other(e)) => Err(e),
            // The port must stay the same (replicas and clients point at it), so no retry.
            Err(SpawnError::PortTaken { log_tail }) => Err(KitError::ServerExited {
                data_dir: self.layout.data_dir.clone(),
                status: format!("port {} was taken while the server was down", self.port),
                log_tail,
            }),
        }
    }

    /// Stops the server, keeps a copy of its data directory beside it (replacing any copy
    /// kept before), and starts it again: [`Server::restore_data`] returns to this state.
    /// A bench that measures several rounds starts each from the same files this way.
    pub fn save_data(&mut self) -> Result<(), KitError> {
        self.stop()?;
        let saved = self.saved_data_dir();
        remove_tree(&saved)?;
        copy_tree(&self.layout.data_dir, &saved)?;
        self.restart()
    }

    /// Stops the server, replaces its data directory with the copy [`Server::save_data`]
    /// kept, and starts it again. The buffer pool starts empty, as after any restart. The
    /// copy is written out (`sync`) before the server starts, so that the kernel's writeback
    /// of a gigabyte of fresh files does not run under whatever is measured next.
    pub fn restore_data(&mut self) -> Result<(), KitError> {
        let saved = self.saved_data_dir();
        if !saved.is_dir() {
            return Err(KitError::io(
                "restoring (save_data was not called) from",
                &saved,
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        self.stop()?;
        remove_tree(&self.layout.data_dir)?;
        copy_tree(&saved, &self.layout.data_dir)?;
        // SAFETY: sync(2) takes no arguments, touches no memory of ours and cannot fail.
        unsafe { libc::sync() };
        self.restart()
    }

    fn saved_data_dir(&self) -> PathBuf {
        self.layout.base.join("saved-data")
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) => {
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `server_id`.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.layout.socket
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.layout.data_dir
    }

    /// The server's error log (its stderr).
    pub fn error_log_path(&self) -> &Path {
        &self.layout.error_log
    }

    /// The last few kilobytes of the error log.
    pub fn error_log_tail(&self) -> String {
        file_tail(&self.layout.error_log, 0)
    }

    /// The generated option file.
    pub fn cnf_path(&self) -> &Path {
        &self.layout.cnf
    }

    /// `mysql://outflow:outflow@127.0.0.1:PORT`.
    ///
    /// Note that mysql_async, given this URL, switches to the unix socket on its own
    /// (`prefer_socket` defaults to true); append `?prefer_socket=false` or use
    /// [`Server::opts`] to stay on TCP.
    pub fn url(&self) -> String {
        format!(
            "mysql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// Builder for TCP connections as the superuser, without TLS and without mysql_async's
    /// switch to the unix socket, so tests see real TCP behaviour.
    pub fn opts_builder(&self) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(SUPERUSER))
            .pass(Some(SUPERUSER_PASSWORD))
            .prefer_socket(false)
    }

    /// [`Server::opts_builder`] as `Opts`: plain TCP as the superuser.
    pub fn opts(&self) -> Opts {
        self.opts_builder().into()
    }

    /// TCP as the superuser over TLS, trusting the CA given to [`ServerConfig::tls`];
    /// `None` when the server was configured without TLS.
    pub fn tls_opts(&self) -> Option<Opts> {
        let tls = self.cfg.tls_files()?;
        Some(self.opts_builder().ssl_opts(tls.ssl_opts()).into())
    }

    /// Unix socket as `root`: the kit's own way in.
    pub fn socket_opts(&self) -> Opts {
        OptsBuilder::default()
            .socket(Some(self.layout.socket.to_string_lossy()))
            .user(Some("root"))
            .prefer_socket(false)
            .into()
    }

    fn client_opts(&self) -> Opts {
        self.tls_opts().unwrap_or_else(|| self.opts())
    }

    /// A pool of TCP connections as the superuser (TLS when the server has it). Call
    /// `pool.disconnect().await` when done.
    pub fn pool(&self) -> Pool {
        Pool::new(self.client_opts())
    }

    /// One TCP connection as the superuser (TLS when the server has it).
    pub async fn conn(&self) -> Result<Conn, KitError> {
        self.ensure_running()?;
        Conn::new(self.client_opts())
            .await
            .map_err(|source| self.sql_error("(connect over TCP)", source))
    }

    /// One unix socket connection as `root`.
    pub async fn admin_conn(&self) -> Result<Conn, KitError> {
        self.ensure_running()?;
        Conn::new(self.socket_opts())
            .await
            .map_err(|source| self.sql_error("(connect over unix socket)", source))
    }

    /// Runs SQL (several statements separated by `;` allowed), discarding results.
    pub async fn exec(&self, sql: &str) -> Result<(), KitError> {
        let mut conn = self.admin_conn().await?;
        conn.query_drop(sql)
            .await
            .map_err(|e| self.sql_error(sql, e))?;
        close(conn).await;
        Ok(())
    }

    /// Runs each statement in order on one connection.
    pub async fn exec_all<S: AsRef<str>>(&self, statements: &[S]) -> Result<(), KitError> {
        let mut conn = self.admin_conn().await?;
        for sql in statements {
            let sql = sql.as_ref();
            conn.query_drop(sql)
                .await
                .map_err(|e| self.sql_error(sql, e))?;
        }
        close(conn).await;
        Ok(())
    }

    /// The first column of the first row; an error if there is no row. Use `Option<T>` for
    /// a value that may be NULL.
    pub async fn query_scalar<T: FromValue>(&self, sql: &str) -> Result<T, KitError> {
        let mut conn = self.admin_conn().await?;
        let row: Option<Row> = conn
            .query_first(sql)
            .await
            .map_err(|e| self.sql_error(sql, e))?;
        close(conn).await;
        let row = row.ok_or_else(|| self.unexpected(sql, "no rows".to_string()))?;
        match row.get_opt::<T, usize>(0) {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(self.unexpected(sql, format!("cannot convert first column: {e}"))),
            None => Err(self.unexpected(sql, "no columns".to_string())),
        }
    }

    /// All rows, converted with `FromRow` (tuples, `Row`, ...).
    pub async fn query_rows<T: FromRow>(&self, sql: &str) -> Result<Vec<T>, KitError> {
        let mut conn = self.admin_conn().await?;
        let rows: Vec<Row> = conn.query(sql).await.map_err(|e| self.sql_error(sql, e))?;
        close(conn).await;
        rows.into_iter()
            .map(|row| T::from_row_opt(row).map_err(|e| self.unexpected(sql, e.to_string())))
            .collect()
    }

    /// `CHECKSUM TABLE`, e.g. to compare a table between a source and a replica.
    pub async fn checksum_table(&self, table: &str) -> Result<u64, KitError> {
        let sql = format!("CHECKSUM TABLE {table}");
        let rows: Vec<Row> = self.query_rows(&sql).await?;
        let value = rows
            .first()
            .and_then(|row| row.get_opt::<Option<u64>, usize>(1));
        match value {
            Some(Ok(Some(sum))) => Ok(sum),
            _ => Err(self.unexpected(&sql, "no checksum (does the table exist?)".to_string())),
        }
    }

    /// Pipes a multi-statement script through the `mariadb` command-line client over the unix
    /// socket as `root` (batch mode, no column names) and returns its standard output.
    /// Synchronous, for benches and other non-async code.
    pub fn run_sql_script(&self, script: &str) -> Result<String, KitError> {
        self.ensure_running()?;
        let mut cmd = Command::new(find_program("mariadb"));
        cmd.arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.layout.socket.display()))
            .arg("--user=root")
            .arg("--batch")
            .arg("--skip-column-names")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| KitError::Spawn {
            program: what.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take();
        // Write from a thread: a large script could fill the pipe while the client's own
        // output pipes fill up too, and then both sides would wait forever.
        let script_owned = script.to_string();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            if let Some(stdin) = stdin.as_mut() {
                // A write error means the client exited early; its stderr explains why.
                let _ = stdin.write_all(script_owned.as_bytes());
            }
        });
        let output = child.wait_with_output().map_err(|e| {
            KitError::io("waiting for the mariadb client on", &self.layout.socket, e)
        })?;
        let _ = writer.join();
        if !output.status.success() {
            return Err(KitError::Command {
                command: format!("{what} < script on port {}", self.port),
                status: output.status.to_string(),
                output: output_tail(&output),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `data/binlog.index`.
    pub fn binlog_index_path(&self) -> PathBuf {
        self.layout
            .data_dir
            .join(format!("{BINLOG_BASENAME}.index"))
    }

    /// The binary log files, oldest first, as listed in the index file.
    pub fn binlog_files(&self) -> Result<Vec<PathBuf>, KitError> {
        let index = self.binlog_index_path();
        let text = std::fs::read_to_string(&index)
            .map_err(|e| KitError::io("reading binlog index", &index, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| {
                let name = line.strip_prefix("./").unwrap_or(line);
                let path = Path::new(name);
                if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    self.layout.data_dir.join(path)
                }
            })
            .collect())
    }

    /// The current binlog file and position (`SHOW MASTER STATUS`).
    pub async fn binlog_position(&self) -> Result<BinlogPosition, KitError> {
        const SQL: &str = "SHOW MASTER STATUS";
        let rows: Vec<Row> = self.query_rows(SQL).await?;
        let row = rows
            .first()
            .ok_or_else(|| self.unexpected(SQL, "no rows: is log_bin off?".to_string()))?;
        match (
            row.get_opt::<String, usize>(0),
            row.get_opt::<u64, usize>(1),
        ) {
            (Some(Ok(file)), Some(Ok(position))) => Ok(BinlogPosition { file, position }),
            _ => Err(self.unexpected(SQL, format!("cannot read File and Position from {row:?}"))),
        }
    }

    /// `@@GLOBAL.gtid_binlog_pos`: the last GTID written to the binlog, per domain.
    pub async fn gtid_binlog_pos(&self) -> Result<String, KitError> {
        self.query_scalar("SELECT @@GLOBAL.gtid_binlog_pos").await
    }

    /// `@@GLOBAL.gtid_current_pos`.
    pub async fn gtid_current_pos(&self) -> Result<String, KitError> {
        self.query_scalar("SELECT @@GLOBAL.gtid_current_pos").await
    }

    /// `FLUSH BINARY LOGS`: close the current binlog file and start the next one.
    pub async fn flush_binary_logs(&self) -> Result<(), KitError> {
        self.exec("FLUSH BINARY LOGS").await
    }

    fn ensure_running(&self) -> Result<(), KitError> {
        if self.child.is_some() {
            Ok(())
        } else {
            Err(self.not_running())
        }
    }

    fn not_running(&self) -> KitError {
        KitError::NotRunning {
            data_dir: self.layout.data_dir.clone(),
        }
    }

    pub(crate) fn sql_error(&self, sql: &str, source: mysql_async::Error) -> KitError {
        KitError::Sql {
            port: self.port,
            sql: crate::util::tail_text(sql, 2000),
            source,
        }
    }

    pub(crate) fn unexpected(&self, sql: &str, detail: String) -> KitError {
        KitError::UnexpectedResult {
            port: self.port,
            sql: sql.to_string(),
            detail,
        }
    }
}

/// Closes a connection politely; errors only mean the server already dropped it.
pub(crate) async fn close(conn: Conn) {
    let _ = conn.disconnect().await;
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "outflow-testkit: server on port {} (data dir {}) at the time of the panic; error log tail:\n{}",
                self.port,
                self.layout.data_dir.display(),
                self.error_log_tail()
            );
        }
        self.kill();
        if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            if let Some(base) = self.base.take() {
                let kept = base.keep();
                eprintln!("outflow-testkit: kept server files in {}", kept.display());
            }
        }
        // Closing explicitly (rather than letting the TempDir drop) lets us report a failure.
        if let Some(base) = self.base.take() {
            if let Err(e) = base.close() {
                if e.kind() != ErrorKind::NotFound {
                    eprintln!(
                        "outflow-testkit: could not remove {}: {e}",
                        self.layout.base.display()
                    );
                }
            }
        }
    }
}

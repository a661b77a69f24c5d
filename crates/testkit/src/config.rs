//! Server configuration and its rendering into a `my.cnf` option file.
//!
//! Every setting, typed or generic, ends up as one `key=value` line in the `[mariadbd]` group
//! of a private option file passed with `--defaults-file`, so the system's `/etc/mysql` files
//! never leak into a test. Keys are compared with `-` and `_` treated alike, so a later
//! setter or `.option()` replaces an earlier value, including the kit's defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tls::TlsFiles;
use crate::KitError;

/// Size of the InnoDB redo log, both in the template data directory and in the default server
/// configuration. They match so that a server does not spend its start-up resizing the log.
pub(crate) const INNODB_LOG_FILE_SIZE: &str = "16M";

/// Basename of the binary log files inside the data directory (`binlog.000001`, `binlog.index`).
pub const BINLOG_BASENAME: &str = "binlog";

/// `binlog_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinlogFormat {
    /// Row-based logging, which change data capture needs.
    Row,
    /// Statement-based logging.
    Statement,
    /// Statement-based with row-based fallback for unsafe statements.
    Mixed,
}

impl BinlogFormat {
    fn as_str(self) -> &'static str {
        match self {
            BinlogFormat::Row => "ROW",
            BinlogFormat::Statement => "STATEMENT",
            BinlogFormat::Mixed => "MIXED",
        }
    }
}

/// `binlog_row_image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowImage {
    /// All columns in both the before and after image.
    Full,
    /// Only the primary key in the before image and only changed columns in the after image.
    Minimal,
    /// Like `Full` but BLOB/TEXT columns only when needed.
    Noblob,
}

impl RowImage {
    fn as_str(self) -> &'static str {
        match self {
            RowImage::Full => "FULL",
            RowImage::Minimal => "MINIMAL",
            RowImage::Noblob => "NOBLOB",
        }
    }
}

/// `binlog_row_metadata`: how much column metadata goes into table map events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMetadata {
    /// No optional metadata.
    NoLog,
    /// Signedness, charsets, primary key, enum/set strings for the columns that need them.
    Minimal,
    /// Everything, including column names.
    Full,
}

impl RowMetadata {
    fn as_str(self) -> &'static str {
        match self {
            RowMetadata::NoLog => "NO_LOG",
            RowMetadata::Minimal => "MINIMAL",
            RowMetadata::Full => "FULL",
        }
    }
}

/// `binlog_checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinlogChecksum {
    /// No checksum trailer on events.
    None,
    /// A CRC32 trailer on every event (the server default).
    Crc32,
}

impl BinlogChecksum {
    fn as_str(self) -> &'static str {
        match self {
            BinlogChecksum::None => "NONE",
            BinlogChecksum::Crc32 => "CRC32",
        }
    }
}

/// `slave_parallel_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelMode {
    /// No parallel apply.
    None,
    /// Only commit-id groups.
    Minimal,
    /// Group-commit based (the server default).
    Conservative,
    /// Optimistic, with rollback and retry on conflicts.
    Optimistic,
    /// Like optimistic but also for transactions that had to wait on the source.
    Aggressive,
}

impl ParallelMode {
    fn as_str(self) -> &'static str {
        match self {
            ParallelMode::None => "none",
            ParallelMode::Minimal => "minimal",
            ParallelMode::Conservative => "conservative",
            ParallelMode::Optimistic => "optimistic",
            ParallelMode::Aggressive => "aggressive",
        }
    }
}

fn on_off(value: bool) -> &'static str {
    if value {
        "ON"
    } else {
        "OFF"
    }
}

/// Paths and port chosen by [`crate::Server`] at start-up; not user settable because the kit
/// relies on them (socket for readiness, data dir for binlog files).
#[derive(Debug, Clone)]
pub(crate) struct Runtime<'a> {
    pub data_dir: &'a Path,
    pub socket: &'a Path,
    pub pid_file: &'a Path,
    pub port: u16,
    pub server_id: u32,
}

/// Options for a throwaway `mariadbd`, built with chained setters.
///
/// Defaults favour start-up and test speed over durability: ROW binlog in
/// `<datadir>/binlog.*`, a small redo log, `innodb_flush_log_at_trx_commit=2`,
/// `sync_binlog=0`, no doublewrite buffer, `skip-name-resolve`, no performance schema and a
/// private `tmpdir` (the data directory).
/// Every default can be overridden with a typed setter or [`ServerConfig::option`], or dropped
/// with [`ServerConfig::remove_option`].
///
/// ```
/// use outflow_testkit::{BinlogFormat, RowImage, ServerConfig};
/// let cfg = ServerConfig::new()
///     .binlog_format(BinlogFormat::Row)
///     .binlog_row_image(RowImage::Minimal)
///     .gtid_domain_id(3)
///     .option("max_connections", "50");
/// assert_eq!(cfg.get("binlog_row_image"), Some("MINIMAL"));
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `(key, value)` in insertion order; `None` is a bare flag such as `skip-name-resolve`.
    options: Vec<(String, Option<String>)>,
    /// `None` means: pick a value unique to this server at start.
    server_id: Option<u32>,
    startup_timeout: Duration,
    shutdown_timeout: Duration,
    tls: Option<TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new()
    }
}

fn normalize(key: &str) -> String {
    key.trim().replace('-', "_").to_ascii_lowercase()
}

impl ServerConfig {
    /// The kit's defaults (see the type's documentation).
    pub fn new() -> Self {
        let mut cfg = ServerConfig {
            options: Vec::new(),
            server_id: None,
            // Generous: on a loaded 2-core CI machine a start normally takes well under a
            // second, but we would rather wait than report a false failure.
            startup_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(60),
            tls: None,
        };
        cfg = cfg
            .flag("skip-name-resolve")
            .option("performance_schema", "OFF")
            .option("innodb_log_file_size", INNODB_LOG_FILE_SIZE)
            .option("innodb_buffer_pool_size", "64M")
            .option("innodb_flush_log_at_trx_commit", "2")
            .option("innodb_doublewrite", "0")
            // Native AIO contexts are a machine-wide budget (aio-max-nr); many parallel test
            // servers can exhaust it, and tests do not need the speed.
            .option("innodb_use_native_aio", "0")
            .option("innodb_buffer_pool_load_at_startup", "OFF")
            .option("innodb_buffer_pool_dump_at_shutdown", "OFF")
            .option("sync_binlog", "0")
            // Temporary files in the server's own data directory (the server runs there):
            // with the shared system temp dir, MariaDB 10.11.19 crashed now and then (SIGSEGV
            // in `ha_maria::drop_table` freeing an information_schema temporary table) while
            // other kit servers ran; information_schema spills have names not unique between
            // servers sharing a directory.
            .option("tmpdir", ".")
            .log_bin(true)
            .binlog_format(BinlogFormat::Row);
        cfg
    }

    /// Sets `key=value`, replacing any earlier value for the same key (`-` and `_` alike).
    pub fn option(mut self, key: impl AsRef<str>, value: impl ToString) -> Self {
        self.set(key.as_ref(), Some(value.to_string()));
        self
    }

    /// Sets a bare flag such as `skip-slave-start`, replacing any earlier value for that key.
    pub fn flag(mut self, key: impl AsRef<str>) -> Self {
        self.set(key.as_ref(), None);
        self
    }

    /// Removes a key, including one of the kit's defaults, so the server default applies.
    pub fn remove_option(mut self, key: impl AsRef<str>) -> Self {
        let wanted = normalize(key.as_ref());
        self.options.retain(|(k, _)| normalize(k) != wanted);
        self
    }

    /// The value currently set for `key` (`Some("")` for a bare flag), if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        let wanted = normalize(key);
        self.options
            .iter()
            .find(|(k, _)| normalize(k) == wanted)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    fn set(&mut self, key: &str, value: Option<String>) {
        let wanted = normalize(key);
        if let Some(slot) = self
            .options
            .iter_mut()
            .find(|(k, _)| normalize(k) == wanted)
        {
            slot.1 = value;
        } else {
            self.options.push((key.trim().to_string(), value));
        }
    }

    /// Turns the binary log on (the default, basename [`BINLOG_BASENAME`] in the data dir) or off.
    pub fn log_bin(self, on: bool) -> Self {
        if on {
            self.remove_option("skip_log_bin")
                .option("log_bin", BINLOG_BASENAME)
        } else {
            self.remove_option("log_bin").flag("skip-log-bin")
        }
    }

    /// `binlog_format` (default ROW).
    pub fn binlog_format(self, format: BinlogFormat) -> Self {
        self.option("binlog_format", format.as_str())
    }

    /// `binlog_row_image` (server default FULL).
    pub fn binlog_row_image(self, image: RowImage) -> Self {
        self.option("binlog_row_image", image.as_str())
    }

    /// `binlog_row_metadata` (server default NO_LOG).
    pub fn binlog_row_metadata(self, metadata: RowMetadata) -> Self {
        self.option("binlog_row_metadata", metadata.as_str())
    }

    /// `log_bin_compress`: zlib-compressed query and row events (server default OFF).
    pub fn log_bin_compress(self, on: bool) -> Self {
        self.option("log_bin_compress", on_off(on))
    }

    /// `log_bin_compress_min_len` in bytes: smaller events stay uncompressed (server default 256).
    pub fn log_bin_compress_min_len(self, bytes: u32) -> Self {
        self.option("log_bin_compress_min_len", bytes)
    }

    /// `binlog_annotate_row_events`: log the statement text before its row events.
    pub fn binlog_annotate_row_events(self, on: bool) -> Self {
        self.option("binlog_annotate_row_events", on_off(on))
    }

    /// `binlog_checksum` (server default CRC32).
    pub fn binlog_checksum(self, checksum: BinlogChecksum) -> Self {
        self.option("binlog_checksum", checksum.as_str())
    }

    /// `max_binlog_size` in bytes, to force rotation in tests (minimum 4096).
    pub fn max_binlog_size(self, bytes: u64) -> Self {
        self.option("max_binlog_size", bytes)
    }

    /// `gtid_domain_id` (server default 0).
    pub fn gtid_domain_id(self, domain: u32) -> Self {
        self.option("gtid_domain_id", domain)
    }

    /// `server_id`. By default every server gets one unique within this process.
    pub fn server_id(mut self, id: u32) -> Self {
        self.server_id = Some(id);
        self
    }

    /// The explicitly chosen `server_id`, if any.
    pub fn get_server_id(&self) -> Option<u32> {
        self.server_id
    }

    /// `gtid_strict_mode` (server default OFF).
    pub fn gtid_strict_mode(self, on: bool) -> Self {
        self.option("gtid_strict_mode", on_off(on))
    }

    /// `expire_logs_days`; 0 keeps binlogs forever (the server default).
    pub fn expire_logs_days(self, days: u32) -> Self {
        self.option("expire_logs_days", days)
    }

    /// `log_slave_updates`: a replica also writes what it applies to its own binlog.
    pub fn log_slave_updates(self, on: bool) -> Self {
        self.option("log_slave_updates", on_off(on))
    }

    /// `slave_parallel_threads` (server default 0: apply in the SQL thread).
    pub fn slave_parallel_threads(self, threads: u32) -> Self {
        self.option("slave_parallel_threads", threads)
    }

    /// `slave_parallel_mode` (server default conservative).
    pub fn slave_parallel_mode(self, mode: ParallelMode) -> Self {
        self.option("slave_parallel_mode", mode.as_str())
    }

    /// `slave_compressed_protocol`: a replica asks its source for a compressed stream.
    pub fn slave_compressed_protocol(self, on: bool) -> Self {
        self.option("slave_compressed_protocol", on_off(on))
    }

    /// `max_allowed_packet` in bytes (server default 16 MiB).
    pub fn max_allowed_packet(self, bytes: u64) -> Self {
        self.option("max_allowed_packet", bytes)
    }

    /// Serves TLS with the given certificates (`ssl_ca`, `ssl_cert`, `ssl_key`).
    ///
    /// The [`TlsFiles`] value is kept with the configuration, so a temporary certificate
    /// directory lives at least as long as the server.
    pub fn tls(mut self, files: &TlsFiles) -> Self {
        self.tls = Some(files.clone());
        self.option("ssl_ca", files.ca_cert().display())
            .option("ssl_cert", files.server_cert().display())
            .option("ssl_key", files.server_key().display())
    }

    /// The certificates set with [`ServerConfig::tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// `require_secure_transport`: refuse TCP connections without TLS (the unix socket stays
    /// allowed, which the kit's own helpers use).
    pub fn require_secure_transport(self, on: bool) -> Self {
        self.option("require_secure_transport", on_off(on))
    }

    /// How long [`crate::Server::start`] waits for the socket to accept connections (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The start-up timeout.
    pub fn get_startup_timeout(&self) -> Duration {
        self.startup_timeout
    }

    /// How long [`crate::Server::stop`] waits for a graceful shutdown (default 60 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The shutdown timeout.
    pub fn get_shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Renders the option file. Keys the kit owns (paths, port) are written first and cannot be
    /// overridden, because readiness checks and binlog helpers depend on them.
    pub(crate) fn render(&self, rt: &Runtime<'_>) -> Result<String, KitError> {
        const RESERVED: [&str; 6] = [
            "datadir",
            "socket",
            "port",
            "pid_file",
            "bind_address",
            "server_id",
        ];
        let mut out =
            String::from("# Written by outflow-testkit; regenerated at every start.\n[mariadbd]\n");
        let fixed: [(&str, String); 6] = [
            ("datadir", path_value(rt.data_dir)?),
            ("socket", path_value(rt.socket)?),
            ("pid-file", path_value(rt.pid_file)?),
            ("port", rt.port.to_string()),
            ("bind-address", "127.0.0.1".to_string()),
            ("server_id", rt.server_id.to_string()),
        ];
        for (key, value) in &fixed {
            out.push_str(&format!("{key}={value}\n"));
        }
        for (key, value) in &self.options {
            validate_key(key)?;
            if RESERVED.contains(&normalize(key).as_str()) {
                return Err(KitError::Config(format!(
                    "`{key}` is managed by the kit and cannot be set"
                )));
            }
            match value {
                None => {
                    out.push_str(key);
                    out.push('\n');
                }
                Some(value) => {
                    out.push_str(&format!("{key}={}\n", quote_value(key, value)?));
                }
            }
        }
        Ok(out)
    }
}

fn validate_key(key: &str) -> Result<(), KitError> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(KitError::Config(format!(
            "option name {key:?} is not a valid option name"
        )))
    }
}

fn path_value(path: &Path) -> Result<String, KitError> {
    let text = path
        .to_str()
        .ok_or_else(|| KitError::Config(format!("path {} is not UTF-8", path.display())))?;
    quote_value("path", text)
}

/// Quotes a value when the option-file parser would otherwise cut or reinterpret it.
fn quote_value(key: &str, value: &str) -> Result<String, KitError> {
    if value.contains(['\n', '\r']) {
        return Err(KitError::Config(format!(
            "value for `{key}` contains a line break"
        )));
    }
    let needs_quotes = value.is_empty()
        || value.contains(|c: char| {
            c.is_whitespace() || c == '#' || c == '"' || c == '\'' || c == '\\'
        });
    if !needs_quotes {
        return Ok(value.to_string());
    }
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!("\"{escaped}\""))
}

/// Where a server keeps its files, all under one temporary directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub base: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub cnf: PathBuf,
    pub error_log: PathBuf,
}

impl Layout {
    pub fn new(base: &Path) -> Self {
        Layout {
            base: base.to_path_buf(),
            data_dir: base.join("data"),
            socket: base.join("mysqld.sock"),
            pid_file: base.join("mysqld.pid"),
            cnf: base.join("my.cnf"),
            error_log: base.join("error.log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(cfg: &ServerConfig) -> String {
        let rt = Runtime {
            data_dir: Path::new("/tmp/x/data"),
            socket: Path::new("/tmp/x/mysqld.sock"),
            pid_file: Path::new("/tmp/x/mysqld.pid"),
            port: 4242,
            server_id: 17,
        };
        cfg.render(&rt).expect("render")
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn defaults_render_fast_row_binlog() {
        let text = render(&ServerConfig::new());
        let l = lines(&text);
        assert_eq!(l[1], "[mariadbd]");
        for want in [
            "datadir=/tmp/x/data",
            "socket=/tmp/x/mysqld.sock",
            "port=4242",
            "bind-address=127.0.0.1",
            "server_id=17",
            "log_bin=binlog",
            "binlog_format=ROW",
            "skip-name-resolve",
            "performance_schema=OFF",
            "innodb_flush_log_at_trx_commit=2",
            "sync_binlog=0",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn later_values_replace_defaults_with_dash_underscore_alike() {
        let cfg = ServerConfig::new()
            .option("sync-binlog", 1)
            .binlog_format(BinlogFormat::Mixed)
            .binlog_format(BinlogFormat::Statement);
        let text = render(&cfg);
        assert!(
            text.contains("sync-binlog=1\n") || text.contains("sync_binlog=1\n"),
            "{text}"
        );
        assert!(!text.contains("sync_binlog=0"), "{text}");
        assert_eq!(text.matches("binlog_format=").count(), 1, "{text}");
        assert!(text.contains("binlog_format=STATEMENT\n"), "{text}");
    }

    #[test]
    fn typed_setters_render_server_spelling() {
        let cfg = ServerConfig::new()
            .binlog_row_image(RowImage::Noblob)
            .binlog_row_metadata(RowMetadata::Full)
            .log_bin_compress(true)
            .binlog_annotate_row_events(false)
            .gtid_domain_id(7)
            .gtid_strict_mode(true)
            .expire_logs_days(2)
            .log_slave_updates(true)
            .slave_parallel_threads(4)
            .slave_parallel_mode(ParallelMode::Optimistic)
            .slave_compressed_protocol(true)
            .max_allowed_packet(64 << 20)
            .binlog_checksum(BinlogChecksum::None)
            .require_secure_transport(true);
        let text = render(&cfg);
        for want in [
            "binlog_row_image=NOBLOB",
            "binlog_row_metadata=FULL",
            "log_bin_compress=ON",
            "binlog_annotate_row_events=OFF",
            "gtid_domain_id=7",
            "gtid_strict_mode=ON",
            "expire_logs_days=2",
            "log_slave_updates=ON",
            "slave_parallel_threads=4",
            "slave_parallel_mode=optimistic",
            "slave_compressed_protocol=ON",
            "max_allowed_packet=67108864",
            "binlog_checksum=NONE",
            "require_secure_transport=ON",
        ] {
            assert!(lines(&text).contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn log_bin_off_and_on_again() {
        let off = render(&ServerConfig::new().log_bin(false));
        assert!(!off.contains("log_bin=binlog"), "{off}");
        assert!(lines(&off).contains(&"skip-log-bin"), "{off}");
        let on = render(&ServerConfig::new().log_bin(false).log_bin(true));
        assert!(lines(&on).contains(&"log_bin=binlog"), "{on}");
        assert!(!on.contains("skip-log-bin"), "{on}");
    }

    #[test]
    fn remove_option_drops_a_default() {
        let text = render(&ServerConfig::new().remove_option("innodb-doublewrite"));
        assert!(!text.contains("innodb_doublewrite"), "{text}");
    }

    #[test]
    fn reserved_and_malformed_keys_are_rejected() {
        let rt = Runtime {
            data_dir: Path::new("/d"),
            socket: Path::new("/s"),
            pid_file: Path::new("/p"),
            port: 1,
            server_id: 1,
        };
        for cfg in [
            ServerConfig::new().option("port", 1),
            ServerConfig::new()
                .option("data-dir", "/x")
                .option("datadir", "/x"),
            ServerConfig::new().option("bad key", 1),
            ServerConfig::new().option("init_connect", "a\nb"),
        ] {
            assert!(cfg.render(&rt).is_err(), "{cfg:?} rendered");
        }
    }

    #[test]
    fn awkward_values_are_quoted() {
        let text = render(&ServerConfig::new().option("init_connect", "SET @a = 'x' # y"));
        assert!(
            text.contains("init_connect=\"SET @a = 'x' # y\"\n"),
            "{text}"
        );
    }

    #[test]
    fn server_id_is_not_rendered_from_options() {
        let cfg = ServerConfig::new().server_id(99);
        assert_eq!(cfg.get_server_id(), Some(99));
        // The runtime decides; Server::start passes the configured id through.
        let text = render(&cfg);
        assert!(text.contains("server_id=17\n"), "{text}");
    }
}

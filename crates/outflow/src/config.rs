//! One configuration for both halves: a TOML file whose every key is also a command-line flag.
//!
//! Each section is one struct that derives both `serde::Deserialize` (the file) and
//! `clap::Args` (the flags), so a key and its flag cannot drift apart: the field's doc comment
//! is at once the `--help` text and the reference documentation. Every field is optional at
//! this layer; [`Config::merge`] lays the flags over the file, and [`Config::resolve`] turns
//! the result into typed [`Settings`] (durations, sizes, enums), failing on load rather than
//! in the middle of a run. Defaults are applied there and only there.
//!
//! Secrets: passwords belong in an environment variable or a file (`*_password_env`,
//! `*_password_file`), not in the config file. A password inside a URL is accepted, for the
//! minimal command forms, but is never printed: messages show [`redact_url`]'s form, and
//! [`Secret`] keeps passwords out of `Debug` output and so out of logs.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use outflow_replication::{StartPosition, TlsMode};
use serde::Deserialize;

/// The whole configuration file; each table is optional.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[source]`: the database outflow reads the binlog from.
    #[serde(default)]
    #[command(flatten)]
    pub source: SourceConfig,
    /// `[filters]`: which databases, tables and columns leave the source side.
    #[serde(default)]
    #[command(flatten)]
    pub filters: FilterConfig,
    /// `[codec]`: what goes on the wire, and how it is packed.
    #[serde(default)]
    #[command(flatten)]
    pub codec: CodecConfig,
    /// `[spool]`: the durable on-disk queue on each side.
    #[serde(default)]
    #[command(flatten)]
    pub spool: SpoolConfig,
    /// `[schedule]`: when batches ship, and how fast.
    #[serde(default)]
    #[command(flatten)]
    pub schedule: ScheduleConfig,
    /// `[link]`: the QUIC connection between the two halves.
    #[serde(default)]
    #[command(flatten)]
    pub link: LinkConfig,
    /// `[sink]`: the replica the far side applies to.
    #[serde(default)]
    #[command(flatten)]
    pub sink: SinkConfig,
}

/// `[source]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source database, `mysql://USER@HOST:PORT`. The user needs REPLICATION SLAVE,
    /// REPLICATION CLIENT and SELECT. No default.
    #[arg(long = "source", value_name = "URL")]
    pub url: Option<String>,
    /// Servers to fail over to, in order, by GTID (Galera nodes, or replicas of the source).
    /// Default: none.
    #[arg(long = "source-failover", value_name = "URL", value_delimiter = ',')]
    pub failover: Option<Vec<String>>,
    /// Environment variable that holds the source password. Default: OUTFLOW_SOURCE_PASSWORD.
    #[arg(
        id = "source_password_env",
        long = "source-password-env",
        value_name = "VAR"
    )]
    pub password_env: Option<String>,
    /// File whose first line is the source password; wins over the environment variable.
    #[arg(
        id = "source_password_file",
        long = "source-password-file",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// server_id outflow registers with; must differ from every server's and replica's.
    /// Default: 4_242_001.
    #[arg(long = "server-id", value_name = "N")]
    pub server_id: Option<u32>,
    /// Where to start when no position is saved yet: `start` (initial snapshot, then the
    /// binlog from the snapshot's position), `oldest` (the oldest binlog the server still
    /// has, no snapshot), `now`, `gtid:D-S-N,...`, `gtid:UUID:1-5,...` or `file:NAME:POS`.
    /// Ignored once a position is saved. `outflow tail` takes no snapshot: there `start`
    /// means `oldest`. Default: `start`.
    #[arg(long = "from", value_name = "WHERE")]
    pub from: Option<String>,
    /// TLS to the database, as the mysql clients spell it: `disabled`, `preferred`,
    /// `required`, `verify_ca` or `verify_identity`. Default: `verify_identity`.
    #[arg(long = "tls-mode", value_name = "MODE")]
    pub tls_mode: Option<String>,
    /// CA certificate (PEM) that signs the database's certificate. Default: the system roots.
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for the database, for users created `REQUIRE X509`.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Key (PEM) of `tls_cert`.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Refuse TLS versions below 1.3 to the database. Default: false.
    #[arg(long = "tls13-only", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls13_only: Option<bool>,
    /// Heartbeat period the server is asked for, e.g. `5s`; a silent link is declared dead
    /// after two periods. The source side asks for `batch_delay` instead when that is
    /// shorter, so that a partial batch ships on time while the source is idle. Default: 5s.
    #[arg(long = "heartbeat", value_name = "DURATION")]
    pub heartbeat: Option<String>,
    /// How long reconnecting to a lost source server is retried (with backoff) before the
    /// next server of `--source-failover` is tried, e.g. `30s`; without failover servers the
    /// source side then stops with the connection error. Default: 30s.
    #[arg(long = "failover-after", value_name = "DURATION")]
    pub failover_after: Option<String>,
    /// Rows per initial-snapshot chunk: one keyset SELECT, one frame, one progress save.
    /// Default: 10000.
    #[arg(long = "snapshot-chunk-rows", value_name = "N")]
    pub snapshot_chunk_rows: Option<u32>,
    /// A data change logged as a statement (`binlog_format=STATEMENT` or `MIXED`), which a
    /// row-based relay cannot carry: `stop` naming the statement, position and GTID, or
    /// `skip` it (counted and logged; the target misses that change). Default: `stop`.
    #[arg(long = "on-statement", value_name = "stop|skip")]
    pub on_statement: Option<String>,
}

/// `[filters]`, in the vocabulary of MariaDB's replication filters.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Databases to replicate (`replicate_do_db`); empty means all. Default: empty.
    #[arg(long = "do-db", value_name = "DB", value_delimiter = ',')]
    pub do_db: Option<Vec<String>>,
    /// Databases to leave out (`replicate_ignore_db`). Default: empty.
    #[arg(long = "ignore-db", value_name = "DB", value_delimiter = ',')]
    pub ignore_db: Option<Vec<String>>,
    /// Tables to replicate, `db.table` (`replicate_do_table`). Default: empty.
    #[arg(long = "do-table", value_name = "DB.TABLE", value_delimiter = ',')]
    pub do_table: Option<Vec<String>>,
    /// Tables to leave out, `db.table` (`replicate_ignore_table`). Default: empty.
    #[arg(long = "ignore-table", value_name = "DB.TABLE", value_delimiter = ',')]
    pub ignore_table: Option<Vec<String>>,
    /// `db.table` patterns with `%` and `_` to replicate (`replicate_wild_do_table`).
    #[arg(long = "wild-do-table", value_name = "PATTERN", value_delimiter = ',')]
    pub wild_do_table: Option<Vec<String>>,
    /// `db.table` patterns with `%` and `_` to leave out (`replicate_wild_ignore_table`).
    #[arg(
        long = "wild-ignore-table",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub wild_ignore_table: Option<Vec<String>>,
    /// Columns never shipped, `db.table.column`. Default: none.
    #[arg(
        long = "exclude-column",
        value_name = "DB.TABLE.COLUMN",
        value_delimiter = ','
    )]
    pub exclude_columns: Option<Vec<String>>,
    /// Columns shipped as a hash of their value, `db.table.column`. Default: none.
    #[arg(
        long = "mask-column",
        value_name = "DB.TABLE.COLUMN",
        value_delimiter = ','
    )]
    pub mask_columns: Option<Vec<String>>,
}

/// `[codec]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CodecConfig {
    /// `replica` ships what an exact replica needs (keys and changed columns); `full` ships
    /// before and after images for event consumers. Default: `replica`.
    #[arg(long = "mode", value_name = "replica|full")]
    pub mode: Option<String>,
    /// Collapse all changes to one primary key within a batch into their net effect.
    /// Default: on when `[schedule] windows` is set, off otherwise.
    #[arg(long = "compaction", value_name = "on|off")]
    pub compaction: Option<String>,
    /// zstd level, 1-19. Default: 1 (on sysbench's binlogs, level 1 made smaller frames
    /// than level 3 at half the CPU: 7.34% against 7.67% of `oltp_write_only`, 21.18%
    /// against 23.72% of `prepare`).
    #[arg(long = "zstd-level", value_name = "N")]
    pub zstd_level: Option<i32>,
    /// A batch is closed at the first transaction boundary past this size, e.g. `4MiB`.
    /// Default: 4MiB.
    #[arg(long = "batch-bytes", value_name = "SIZE")]
    pub batch_bytes: Option<String>,
    /// ... or once its first transaction has waited this long since its commit was read,
    /// e.g. `200ms`. Default: 200ms.
    #[arg(long = "batch-delay", value_name = "DURATION")]
    pub batch_delay: Option<String>,
    /// A transaction larger than this (binlog bytes) is cut into parts of about this size,
    /// one frame each, applied into one target transaction; bounds the memory a big
    /// transaction takes on both sides. Its frames stay in the spool until it commits on
    /// the target, so the spool must hold a whole transaction's frames. Default: 16MiB.
    #[arg(long = "split-bytes", value_name = "SIZE")]
    pub split_bytes: Option<String>,
}

/// `[spool]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool and of the saved state (positions, schema history). No default.
    #[arg(long = "spool", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Spool size bound, e.g. `10GiB`; at the bound, reading the binlog pauses.
    /// Default: 10GiB.
    #[arg(long = "spool-max", value_name = "SIZE")]
    pub max_bytes: Option<String>,
    /// When appended batches reach the disk: `batch` (fsync each), or an interval such as
    /// `100ms`. Default: `batch`.
    #[arg(long = "spool-fsync", value_name = "POLICY")]
    pub fsync: Option<String>,
}

/// `[schedule]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Shipping windows, e.g. `01:00-06:00 Europe/Paris`; outside every window batches wait
    /// in the spool. Default: always ship.
    #[arg(long = "window", value_name = "WINDOW")]
    pub windows: Option<Vec<String>>,
    /// Bandwidth cap on the link, in bytes per second, e.g. `20MB`. Default: none.
    #[arg(long = "bandwidth-cap", value_name = "SIZE")]
    pub bandwidth_cap: Option<String>,
}

/// `[link]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Address the sink listens on, e.g. `0.0.0.0:4433`.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the sink that the source connects to, e.g. `sink.example:4433`.
    #[arg(long = "connect", value_name = "ADDR")]
    pub connect: Option<String>,
    /// CA certificate (PEM) that signs both peers' certificates.
    #[arg(long = "quic-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This side's certificate (PEM): the server certificate on the sink, the client
    /// certificate on the source.
    #[arg(long = "quic-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Key (PEM) of `cert`.
    #[arg(long = "quic-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Name the source expects in the sink's certificate. Default: the host of `connect`.
    #[arg(long = "quic-server-name", value_name = "NAME")]
    pub server_name: Option<String>,
    /// Idle timeout of the connection, e.g. `30s`. Default: 30s.
    #[arg(long = "idle-timeout", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Largest UDP payload in bytes (1200-65527) that MTU discovery may reach from QUIC's safe
    /// 1200; set the same on both sides. Bigger packets cost less CPU per byte: raise it to
    /// 8972 on a LAN with jumbo frames, or 16384 over loopback. Default: 1452 (Internet paths);
    /// 16384 for `outflow run`, whose link is loopback.
    #[arg(long = "max-udp-payload", value_name = "BYTES")]
    pub max_udp_payload: Option<u16>,
}

/// `[sink]`
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Target database, `mysql://USER@HOST:PORT`. No default.
    #[arg(long = "target", value_name = "URL")]
    pub target: Option<String>,
    /// Environment variable that holds the target password. Default: OUTFLOW_TARGET_PASSWORD.
    #[arg(
        id = "target_password_env",
        long = "target-password-env",
        value_name = "VAR"
    )]
    pub password_env: Option<String>,
    /// File whose first line is the target password; wins over the environment variable.
    #[arg(
        id = "target_password_file",
        long = "target-password-file",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// On a conflict (a row missing for an update or delete, a duplicate on insert): `stop`
    /// naming the row and position, or `overwrite`. Default: `stop`.
    #[arg(long = "on-conflict", value_name = "stop|overwrite")]
    pub on_conflict: Option<String>,
    /// What to do with DDL from the source, per kind: `KIND=POLICY,...` where KIND is
    /// `create_table`, `alter_table`, `drop_table`, `rename_table`, `truncate_table`,
    /// `create_index`, `drop_index`, `create_database`, `alter_database`,
    /// `drop_database`, `other` (views, routines, triggers, accounts, ...) or `default`
    /// (every kind not named), and POLICY is `apply` (run it verbatim, in stream order),
    /// `skip` (logged and counted) or `stop` (the sink stops, naming the statement and its
    /// position; it resumes there). Default: apply every kind, as a native replica does.
    /// The initial snapshot's own `TRUNCATE TABLE` (a table read again from its start
    /// after a crash) always runs.
    #[arg(long = "ddl", value_name = "KIND=POLICY,...")]
    pub ddl: Option<String>,
    /// Connections that apply at the same time. With more than one, the rows of a target
    /// transaction are spread over them by key and committed as one XA transaction: durable
    /// and exactly once, but between the branch commits (a round trip) a reader of the
    /// target may see part of a source transaction. 1 never shows a partial transaction.
    /// Default: 2.
    #[arg(long = "apply-threads", value_name = "N")]
    pub apply_threads: Option<u16>,
    /// Row changes per target transaction, in whole source transactions (a bigger source
    /// transaction is one target transaction of its own). Default: 20000.
    #[arg(long = "txn-changes", value_name = "N")]
    pub txn_changes: Option<u32>,
    /// Largest statement the sink sends (capped below the target's `max_allowed_packet`).
    /// Default: 4MiB.
    #[arg(long = "statement-bytes", value_name = "SIZE")]
    pub statement_bytes: Option<String>,
    /// Statement text held for all tables together before it is sent: with the decoded
    /// batch, what bounds the sink's memory. Default: 32MiB.
    #[arg(long = "pending-bytes", value_name = "SIZE")]
    pub pending_bytes: Option<String>,
    /// Name of this stream's row in the checkpoint table: several sources can feed one
    /// target, each under its own name. Default: `default`.
    #[arg(long = "stream", value_name = "NAME")]
    pub stream: Option<String>,
    /// The checkpoint table, `db.table` (created if missing). Default: `outflow.checkpoint`.
    #[arg(long = "checkpoint-table", value_name = "DB.TABLE")]
    pub checkpoint_table: Option<String>,
}

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the codec ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys and changed columns: what an exact replica needs.
    Replica,
    /// Before and after images as the source wrote them.
    Full,
}

/// What the sink does on a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Stop, naming the row and the source position.
    Stop,
    /// Make the target row match the source and count the conflict.
    Overwrite,
}

/// A database endpoint with its password resolved. `Debug` shows the URL redacted.
#[derive(Clone)]
pub struct Database {
    /// `mysql://USER@HOST:PORT[/DB]`, without password.
    pub url: String,
    /// The password, if one was configured.
    pub password: Option<Secret>,
}

/// The source side's typed settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The source and the servers to fail over to, in order.
    pub servers: Vec<Database>,
    /// server_id to register with.
    pub server_id: u32,
    /// Where to start when no position is saved.
    pub from: StartPosition,
    /// `from` is `start`: take the initial snapshot first.
    pub snapshot: bool,
    /// Rows per snapshot chunk.
    pub snapshot_chunk_rows: u32,
    /// TLS to the database.
    pub tls_mode: TlsMode,
    /// CA for the database's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for the database.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Refuse TLS below 1.3.
    pub tls13_only: bool,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Reconnect budget per server before failing over.
    pub failover_after: Duration,
}

/// Typed settings of the whole configuration, defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Set when a source URL was given.
    pub source: Option<SourceSettings>,
    /// Replication filters.
    pub filters: outflow_source::filter::FilterConfig,
    /// Codec mode.
    pub mode: Mode,
    /// Net-change compaction within a batch.
    pub compaction: bool,
    /// zstd level.
    pub zstd_level: i32,
    /// Batch size bound in bytes of encoded changes.
    pub batch_bytes: u64,
    /// Batch age bound.
    pub batch_delay: Duration,
    /// Binlog bytes of one transaction per frame before it is cut into parts.
    pub split_bytes: u64,
    /// Spool and state directory.
    pub spool_dir: Option<PathBuf>,
    /// Spool size bound in bytes.
    pub spool_max_bytes: u64,
    /// fsync interval; `None` syncs every batch.
    pub spool_fsync_interval: Option<Duration>,
    /// Shipping windows, as given (parsed by the transport).
    pub windows: Vec<String>,
    /// Bandwidth cap in bytes per second.
    pub bandwidth_cap: Option<u64>,
    /// Where the sink listens.
    pub listen: Option<String>,
    /// Where the source connects.
    pub connect: Option<String>,
    /// QUIC CA, certificate and key.
    pub quic_ca: Option<PathBuf>,
    /// This side's QUIC certificate.
    pub quic_cert: Option<PathBuf>,
    /// This side's QUIC key.
    pub quic_key: Option<PathBuf>,
    /// Name expected in the sink's certificate.
    pub quic_server_name: Option<String>,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Largest UDP payload MTU discovery may reach, in bytes, when given (see
    /// [`crate::relay::link_config`] for the defaults).
    pub max_udp_payload: Option<u16>,
    /// The target database, when given.
    pub target: Option<Database>,
    /// Conflict policy.
    pub on_conflict: ConflictPolicy,
    /// DDL policy per kind.
    pub ddl: outflow_sink::DdlPolicies,
    /// How the sink applies: connections, transaction and statement sizes, memory bound,
    /// stream name and checkpoint table.
    pub apply: ApplySettings,
    /// Data changes logged as statements.
    pub on_statement: outflow_codec::StatementPolicy,
}

/// The `[sink]` keys that shape how changes are applied, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySettings {
    /// Connections that apply at the same time.
    pub threads: NonZeroUsize,
    /// Row changes per target transaction.
    pub txn_changes: NonZeroUsize,
    /// Largest statement, in bytes.
    pub statement_bytes: usize,
    /// Statement text held before it is sent, in bytes.
    pub pending_bytes: usize,
    /// The stream's name in the checkpoint table.
    pub stream: String,
    /// Database of the checkpoint table.
    pub checkpoint_db: String,
    /// The checkpoint table.
    pub checkpoint_table: String,
}

/// Fills every `None` field of `$dst` from `$src`: the flags (`$dst`) win over the file.
macro_rules! lay_over {
    ($dst:expr, $src:expr, $($field:ident),+ $(,)?) => {
        $( if $dst.$field.is_none() { $dst.$field = $src.$field.clone(); } )+
    };
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// The flags in `self` win; every key they leave unset comes from `file`.
    pub fn merge(mut self, file: &Config) -> Config {
        let (s, f) = (&mut self.source, &file.source);
        lay_over!(
            s,
            f,
            url,
            failover,
            password_env,
            password_file,
            server_id,
            from,
            tls_mode,
            tls_ca,
            tls_cert,
            tls_key,
            tls13_only,
            heartbeat,
            failover_after,
            snapshot_chunk_rows,
            on_statement
        );
        let (s, f) = (&mut self.filters, &file.filters);
        lay_over!(
            s,
            f,
            do_db,
            ignore_db,
            do_table,
            ignore_table,
            wild_do_table,
            wild_ignore_table,
            exclude_columns,
            mask_columns
        );
        let (s, f) = (&mut self.codec, &file.codec);
        lay_over!(
            s,
            f,
            mode,
            compaction,
            zstd_level,
            batch_bytes,
            batch_delay,
            split_bytes
        );
        let (s, f) = (&mut self.spool, &file.spool);
        lay_over!(s, f, dir, max_bytes, fsync);
        let (s, f) = (&mut self.schedule, &file.schedule);
        lay_over!(s, f, windows, bandwidth_cap);
        let (s, f) = (&mut self.link, &file.link);
        lay_over!(
            s,
            f,
            listen,
            connect,
            ca,
            cert,
            key,
            server_name,
            idle_timeout,
            max_udp_payload
        );
        let (s, f) = (&mut self.sink, &file.sink);
        lay_over!(
            s,
            f,
            target,
            password_env,
            password_file,
            on_conflict,
            ddl,
            apply_threads,
            txn_changes,
            statement_bytes,
            pending_bytes,
            stream,
            checkpoint_table
        );
        self
    }

    /// Typed settings with defaults applied; every malformed value is an error here.
    pub fn resolve(&self) -> Result<Settings> {
        let src = &self.source;
        let source = match &src.url {
            None => None,
            Some(url) => {
                let password = password(
                    src.password_env.as_deref(),
                    "OUTFLOW_SOURCE_PASSWORD",
                    src.password_file.as_deref(),
                )?;
                let mut servers = vec![database(url, password.clone(), "source")?];
                for u in src.failover.iter().flatten() {
                    servers.push(database(u, password.clone(), "source failover")?);
                }
                let tls_identity = match (&src.tls_cert, &src.tls_key) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => bail!("tls_cert and tls_key go together"),
                };
                Some(SourceSettings {
                    servers,
                    server_id: src.server_id.unwrap_or(4_242_001),
                    from: start_position(src.from.as_deref().unwrap_or("start"))?,
                    snapshot: src.from.as_deref().unwrap_or("start") == "start",
                    snapshot_chunk_rows: match src.snapshot_chunk_rows {
                        Some(0) => bail!("snapshot_chunk_rows must be at least 1"),
                        Some(n) => n,
                        None => 10_000,
                    },
                    tls_mode: tls_mode(src.tls_mode.as_deref().unwrap_or("verify_identity"))?,
                    tls_ca: src.tls_ca.clone(),
                    tls_identity,
                    tls13_only: src.tls13_only.unwrap_or(false),
                    heartbeat: duration(src.heartbeat.as_deref(), "heartbeat", "5s")?,
                    failover_after: duration(
                        src.failover_after.as_deref(),
                        "failover_after",
                        "30s",
                    )?,
                })
            }
        };
        let windows = self.schedule.windows.clone().unwrap_or_default();
        let mode = match self.codec.mode.as_deref().unwrap_or("replica") {
            "replica" => Mode::Replica,
            "full" => Mode::Full,
            m => bail!("mode {m:?}: expected replica or full"),
        };
        let compaction = match self.codec.compaction.as_deref() {
            None => !windows.is_empty(),
            Some("on") => true,
            Some("off") => false,
            Some(c) => bail!("compaction {c:?}: expected on or off"),
        };
        let zstd_level = self.codec.zstd_level.unwrap_or(1);
        if !(1..=19).contains(&zstd_level) {
            bail!("zstd_level {zstd_level}: expected 1 to 19");
        }
        let spool_fsync_interval = match self.spool.fsync.as_deref().unwrap_or("batch") {
            "batch" => None,
            d => Some(duration(Some(d), "spool fsync", "")?),
        };
        let target = match &self.sink.target {
            None => None,
            Some(url) => {
                let password = password(
                    self.sink.password_env.as_deref(),
                    "OUTFLOW_TARGET_PASSWORD",
                    self.sink.password_file.as_deref(),
                )?;
                Some(database(url, password, "target")?)
            }
        };
        let on_conflict = match self.sink.on_conflict.as_deref().unwrap_or("stop") {
            "stop" => ConflictPolicy::Stop,
            "overwrite" => ConflictPolicy::Overwrite,
            c => bail!("on_conflict {c:?}: expected stop or overwrite"),
        };
        let ddl = self
            .sink
            .ddl
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e: String| anyhow::anyhow!("ddl: {e}"))?;
        let apply = self.sink.resolve_apply()?;
        let on_statement = match self.source.on_statement.as_deref().unwrap_or("stop") {
            "stop" => outflow_codec::StatementPolicy::Stop,
            "skip" => outflow_codec::StatementPolicy::Skip,
            c => bail!("on_statement {c:?}: expected stop or skip"),
        };
        Ok(Settings {
            source,
            filters: self.filters.resolve()?,
            mode,
            compaction,
            zstd_level,
            batch_bytes: size(self.codec.batch_bytes.as_deref(), "batch_bytes", "4MiB")?,
            batch_delay: duration(self.codec.batch_delay.as_deref(), "batch_delay", "200ms")?,
            split_bytes: size(self.codec.split_bytes.as_deref(), "split_bytes", "16MiB")?.max(1),
            spool_dir: self.spool.dir.clone(),
            spool_max_bytes: size(self.spool.max_bytes.as_deref(), "spool max_bytes", "10GiB")?,
            spool_fsync_interval,
            windows,
            bandwidth_cap: match self.schedule.bandwidth_cap.as_deref() {
                None => None,
                Some(c) => Some(size(Some(c), "bandwidth_cap", "")?),
            },
            listen: self.link.listen.clone(),
            connect: self.link.connect.clone(),
            quic_ca: self.link.ca.clone(),
            quic_cert: self.link.cert.clone(),
            quic_key: self.link.key.clone(),
            quic_server_name: self.link.server_name.clone(),
            idle_timeout: duration(self.link.idle_timeout.as_deref(), "idle_timeout", "30s")?,
            max_udp_payload: match self.link.max_udp_payload {
                None => None,
                Some(n @ 1200..=65527) => Some(n),
                Some(n) => bail!("max_udp_payload {n} is outside 1200-65527"),
            },
            target,
            on_conflict,
            ddl,
            apply,
            on_statement,
        })
    }
}

impl SinkConfig {
    /// The apply keys, typed, with their defaults.
    fn resolve_apply(&self) -> Result<ApplySettings> {
        let threads = match self.apply_threads.unwrap_or(2) {
            n @ 1..=64 => NonZeroUsize::new(usize::from(n)),
            n => bail!("apply_threads {n}: expected 1 to 64"),
        };
        let txn_changes = match self.txn_changes {
            Some(0) => bail!("txn_changes must be at least 1"),
            n => NonZeroUsize::new(n.unwrap_or(20_000) as usize),
        };
        let statement_bytes = size(self.statement_bytes.as_deref(), "statement_bytes", "4MiB")?;
        if !(4096..=1 << 30).contains(&statement_bytes) {
            bail!("statement_bytes {statement_bytes}: expected 4KiB to 1GiB");
        }
        let pending_bytes = size(self.pending_bytes.as_deref(), "pending_bytes", "32MiB")?;
        if pending_bytes < statement_bytes {
            bail!("pending_bytes ({pending_bytes}) must be at least statement_bytes ({statement_bytes})");
        }
        let stream = self.stream.clone().unwrap_or_else(|| "default".to_string());
        if stream.is_empty() || stream.len() > 64 {
            bail!("stream {stream:?}: expected 1 to 64 characters");
        }
        let table = self
            .checkpoint_table
            .as_deref()
            .unwrap_or("outflow.checkpoint");
        let (checkpoint_db, checkpoint_table) = match table.split_once('.') {
            Some((db, t)) if !db.is_empty() && !t.is_empty() && !t.contains('.') => {
                (db.to_string(), t.to_string())
            }
            _ => bail!("checkpoint_table {table:?}: expected DB.TABLE"),
        };
        Ok(ApplySettings {
            threads: threads.unwrap_or(NonZeroUsize::MIN),
            txn_changes: txn_changes.unwrap_or(NonZeroUsize::MIN),
            statement_bytes: statement_bytes as usize,
            pending_bytes: pending_bytes as usize,
            stream,
            checkpoint_db,
            checkpoint_table,
        })
    }
}

fn tls_mode(s: &str) -> Result<TlsMode> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "disabled" => TlsMode::Disabled,
        "preferred" => TlsMode::Preferred,
        "required" => TlsMode::Required,
        "verify_ca" => TlsMode::VerifyCa,
        "verify_identity" => TlsMode::VerifyIdentity,
        _ => bail!(
            "tls_mode {s:?}: expected disabled, preferred, required, verify_ca or verify_identity"
        ),
    })
}

/// `--from`, parsed by the replication client's own grammar.
fn start_position(s: &str) -> Result<StartPosition> {
    s.parse().map_err(|e: String| anyhow::anyhow!("--from {e}"))
}

impl FilterConfig {
    /// The source crate's filter settings: `db.table.column` entries become per-table
    /// column rules.
    pub fn resolve(&self) -> Result<outflow_source::filter::FilterConfig> {
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        let mut columns: Vec<outflow_source::filter::ColumnRule> = Vec::new();
        let mut rule = |entry: &str, mask: bool| -> Result<()> {
            let (table, column) = entry
                .rsplit_once('.')
                .filter(|(t, _)| t.contains('.'))
                .with_context(|| format!("column filter {entry:?}: expected db.table.column"))?;
            let i = match columns.iter().position(|r| r.table == table) {
                Some(i) => i,
                None => {
                    columns.push(outflow_source::filter::ColumnRule {
                        table: table.to_string(),
                        ..Default::default()
                    });
                    columns.len() - 1
                }
            };
            let r = &mut columns[i];
            if mask {
                r.mask.push(column.to_string());
            } else {
                r.exclude.push(column.to_string());
            }
            Ok(())
        };
        for e in self.exclude_columns.iter().flatten() {
            rule(e, false)?;
        }
        for e in self.mask_columns.iter().flatten() {
            rule(e, true)?;
        }
        let cfg = outflow_source::filter::FilterConfig {
            do_db: list(&self.do_db),
            ignore_db: list(&self.ignore_db),
            do_table: list(&self.do_table),
            ignore_table: list(&self.ignore_table),
            wild_do_table: list(&self.wild_do_table),
            wild_ignore_table: list(&self.wild_ignore_table),
            columns,
            mask_key: None,
        };
        // Validate the patterns now rather than when the stream starts.
        outflow_source::filter::Filter::new(&cfg).context("filters")?;
        Ok(cfg)
    }
}

fn duration(value: Option<&str>, what: &str, default: &str) -> Result<Duration> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).with_context(|| format!("{what} {v:?}: not a duration"))
}

fn size(value: Option<&str>, what: &str, default: &str) -> Result<u64> {
    let v = value.unwrap_or(default);
    v.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| anyhow::anyhow!("{what} {v:?}: not a size ({e})"))
}

/// A database URL with the password from the environment or a file, when one was given
/// there. A password inside the URL is accepted (the minimal command forms use it) but never
/// printed: [`Database::redacted`] is what messages show.
fn database(url: &str, password: Option<Secret>, what: &str) -> Result<Database> {
    if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
        bail!("{what} URL must start with mysql://");
    }
    Ok(Database {
        url: url.to_string(),
        password,
    })
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.redacted())
            .field("password", &self.password)
            .finish()
    }
}

impl Database {
    /// The URL with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// `mysql://user:secret@host` -> `mysql://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn password(env: Option<&str>, default_env: &str, file: Option<&Path>) -> Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?;
        let line = text.lines().next().unwrap_or_default();
        return Ok(Some(Secret(line.to_string())));
    }
    let var = env.unwrap_or(default_env);
    match std::env::var(var) {
        Ok(p) => Ok(Some(Secret(p))),
        Err(std::env::VarError::NotPresent) if env.is_none() => Ok(None),
        Err(std::env::VarError::NotPresent) => bail!("password variable {var} is not set"),
        Err(std::env::VarError::NotUnicode(_)) => bail!("password variable {var} is not UTF-8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/outflow.example.toml");
        let config = Config::load(&path).expect("example parses");
        let s = config.resolve().expect("example resolves");
        let source = s.source.expect("example has a source");
        assert_eq!(source.servers.len(), 2);
        assert_eq!(source.tls_mode, TlsMode::VerifyIdentity);
        assert_eq!(s.mode, Mode::Replica);
        assert!(s.compaction, "windows set, so compaction defaults on");
        assert_eq!(s.bandwidth_cap, Some(20_000_000));
        assert_eq!(s.spool_max_bytes, 10 * 1024 * 1024 * 1024);
        assert_eq!(s.on_conflict, ConflictPolicy::Stop);
        assert_eq!(
            s.ddl.policy(outflow_sink::DdlKind::DropDatabase),
            outflow_sink::DdlPolicy::Stop
        );
        assert_eq!(
            s.ddl.policy(outflow_sink::DdlKind::AlterTable),
            outflow_sink::DdlPolicy::Apply
        );
        assert_eq!(s.on_statement, outflow_codec::StatementPolicy::Stop);
        assert_eq!(s.max_udp_payload, Some(1452));
        assert_eq!(s.apply.threads.get(), 1);
        assert_eq!(s.apply.txn_changes.get(), 20_000);
        assert_eq!(s.apply.pending_bytes, 64 << 20);
        assert_eq!(s.apply.statement_bytes, 4 << 20);
        assert_eq!(s.apply.stream, "warehouse-feed");
        assert_eq!(
            (
                s.apply.checkpoint_db.as_str(),
                s.apply.checkpoint_table.as_str()
            ),
            ("outflow", "checkpoint")
        );
    }

    #[test]
    fn apply_keys_have_defaults_and_reach_the_applier() {
        let s = Config::default().resolve().unwrap();
        let a = crate::relay::apply_config(&s);
        let d = outflow_sink::apply::ApplyConfig::default();
        assert_eq!(
            (a.apply_threads, a.max_txn_changes, a.max_statement_bytes),
            (d.apply_threads, d.max_txn_changes, d.max_statement_bytes)
        );
        assert_eq!(a.max_pending_bytes, d.max_pending_bytes);
        assert_eq!(
            (a.stream, a.checkpoint_db, a.checkpoint_table),
            (d.stream, d.checkpoint_db, d.checkpoint_table)
        );
        let mut flags = Config::default();
        flags.sink.apply_threads = Some(3);
        flags.sink.pending_bytes = Some("8MiB".into());
        flags.sink.checkpoint_table = Some("ops.outflow_pos".into());
        let a = crate::relay::apply_config(&flags.resolve().unwrap());
        assert_eq!(a.apply_threads.get(), 3);
        assert_eq!(a.max_pending_bytes, 8 << 20);
        assert_eq!(
            (a.checkpoint_db.as_str(), a.checkpoint_table.as_str()),
            ("ops", "outflow_pos")
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: Config = toml::from_str(
            "[codec]\nmode = \"full\"\nzstd_level = 5\n[sink]\ntarget = \"mysql://a@h:1\"\n",
        )
        .unwrap();
        let mut flags = Config::default();
        flags.codec.mode = Some("replica".into());
        let s = flags.merge(&file).resolve().unwrap();
        assert_eq!(s.mode, Mode::Replica);
        assert_eq!(s.zstd_level, 5);
        assert_eq!(s.target.unwrap().url, "mysql://a@h:1");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Config>("[codec]\nmodee = \"full\"\n").is_err());
        for bad in [
            "[codec]\nmode = \"fast\"\n",
            "[codec]\nzstd_level = 40\n",
            "[codec]\nbatch_delay = \"soon\"\n",
            "[spool]\nmax_bytes = \"lots\"\n",
            "[source]\nurl = \"postgres://u@h:3306\"\n",
            "[source]\nurl = \"mysql://u@h\"\nfrom = \"yesterday\"\n",
            "[sink]\non_conflict = \"ignore\"\n",
            "[sink]\nddl = \"drop_table=maybe\"\n",
            "[sink]\nddl = \"drop_tables=stop\"\n",
            "[source]\non_statement = \"ignore\"\n",
            "[sink]\napply_threads = 0\n",
            "[sink]\ntxn_changes = 0\n",
            "[sink]\nstatement_bytes = \"1KiB\"\n",
            "[sink]\nstatement_bytes = \"8MiB\"\npending_bytes = \"4MiB\"\n",
            "[sink]\ncheckpoint_table = \"checkpoint\"\n",
            "[sink]\nstream = \"\"\n",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.resolve().is_err(), "{bad:?} should not resolve");
        }
    }

    #[test]
    fn column_filters_become_rules() {
        let f = FilterConfig {
            exclude_columns: Some(vec!["shop.customers.notes".into()]),
            mask_columns: Some(vec!["shop.customers.email".into()]),
            ..Default::default()
        };
        let r = f.resolve().unwrap();
        assert_eq!(r.columns.len(), 1);
        assert_eq!(r.columns[0].table, "shop.customers");
        assert_eq!(r.columns[0].exclude, vec!["notes"]);
        assert_eq!(r.columns[0].mask, vec!["email"]);
        let bad = FilterConfig {
            exclude_columns: Some(vec!["notes".into()]),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("mysql://u:hunter2@h:3306"),
            "mysql://u:***@h:3306"
        );
        assert_eq!(redact_url("mysql://u@h:3306"), "mysql://u@h:3306");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

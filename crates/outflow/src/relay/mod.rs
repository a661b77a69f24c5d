//! `outflow source`, `outflow sink` and `outflow run`: the two halves of the relay and the
//! wiring between the crates that do the work. Logic lives in those crates; this module
//! only opens things, connects them and reports progress.

pub mod sink;
pub mod snapshot;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use outflow_spool::{FsyncPolicy, Spool, SpoolConfig};
use outflow_transport::{Bandwidth, LinkConfig, Receiver, Schedule, Sender, TlsConfig};

use crate::config::{Config, Settings};

/// Flags shared by `outflow source`, `outflow sink` and `outflow run`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// TOML configuration file; flags win over its keys (see deploy/outflow.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Every configuration key, as a flag.
    #[command(flatten)]
    pub flags: Config,
}

impl RelayArgs {
    /// The configuration file under the flags, typed.
    pub fn settings(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.flags.clone().merge(&file).resolve()
    }
}

/// The spool settings of `settings`, in `dir`.
pub fn spool_config(settings: &Settings, dir: PathBuf) -> SpoolConfig {
    let mut c = SpoolConfig::new(dir);
    c.max_bytes = settings.spool_max_bytes;
    c.segment_bytes = c.segment_bytes.min(settings.spool_max_bytes / 2);
    c.fsync = match settings.spool_fsync_interval {
        None => FsyncPolicy::Always,
        Some(d) => FsyncPolicy::Interval(d),
    };
    c
}

/// Largest UDP payload by default: safe on Internet paths (QUIC starts at 1200 and discovers
/// up to this).
const DEFAULT_UDP_PAYLOAD: u16 = 1452;
/// `outflow run`'s default: its link is loopback, where 16384-byte packets cost half the CPU
/// per byte and bigger ones overflow a busy receiver's socket buffer (`cargo bench --bench
/// transport`, README).
const LOOPBACK_UDP_PAYLOAD: u16 = 16384;

/// The link settings of `settings`.
pub fn link_config(settings: &Settings) -> LinkConfig {
    LinkConfig {
        idle_timeout: settings.idle_timeout,
        max_udp_payload: settings.max_udp_payload.unwrap_or(DEFAULT_UDP_PAYLOAD),
        ..LinkConfig::default()
    }
}

/// This side's QUIC TLS files.
pub fn quic_tls(settings: &Settings) -> Result<TlsConfig> {
    let need = |v: &Option<PathBuf>, flag: &str| {
        v.clone()
            .with_context(|| format!("the link needs {flag} (see `outflow certs`)"))
    };
    Ok(TlsConfig {
        ca: need(&settings.quic_ca, "--quic-ca")?,
        cert: need(&settings.quic_cert, "--quic-cert")?,
        key: need(&settings.quic_key, "--quic-key")?,
        cipher_suites: Vec::new(),
    })
}

/// Resolves `host:port` (names allowed) to one socket address.
pub fn resolve_addr(addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// A sender from `spool` to the sink at `connect`, with the schedule and cap applied.
pub fn sender(
    settings: &Settings,
    spool: &Spool,
    tls: &TlsConfig,
) -> Result<Sender<outflow_spool::FsIo>> {
    let connect = settings
        .connect
        .as_deref()
        .context("the source side needs --connect HOST:PORT (the sink's address)")?;
    let addr = resolve_addr(connect)?;
    let server_name = match &settings.quic_server_name {
        Some(n) => n.clone(),
        None => connect
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(connect)
            .to_string(),
    };
    let schedule = Schedule::parse(&settings.windows).context("shipping windows")?;
    let mut sender = Sender::new(
        spool.clone(),
        tls,
        addr,
        &server_name,
        link_config(settings),
    )
    .context("starting the link")?
    .with_schedule(schedule);
    if let Some(cap) = settings.bandwidth_cap {
        sender = sender.with_bandwidth(Bandwidth {
            bytes_per_sec: cap,
            burst: cap.max(1 << 20),
        });
    }
    Ok(sender)
}

/// `outflow source`: stream the source into the spool and ship it to the sink, forever.
pub async fn run_source(settings: Settings) -> Result<()> {
    let dir = settings
        .spool_dir
        .clone()
        .context("the source side needs --spool DIR")?;
    let spool = Spool::open(spool_config(&settings, dir.join("spool")))
        .with_context(|| format!("opening the spool in {}", dir.display()))?;
    let tls = quic_tls(&settings)?;
    let sender = Arc::new(sender(&settings, &spool, &tls)?);
    let progress = Arc::new(std::sync::Mutex::new(source::SourceProgress::default()));
    let reporter = {
        let progress = progress.clone();
        let spool = spool.clone();
        let sender = Arc::clone(&sender);
        tokio::spawn(async move {
            let mut last = (0u64, std::time::Instant::now());
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
                let s = spool.stats();
                // The link's spool figures are otherwise as of its last event.
                sender.refresh_metrics();
                let m = sender.metrics().snapshot();
                let secs = last.1.elapsed().as_secs_f64().max(1e-3);
                let rate = p.rows.saturating_sub(last.0) as f64 / secs;
                last = (p.rows, std::time::Instant::now());
                let snapshot = p.snapshot.as_ref().map_or_else(String::new, snapshot_line);
                eprintln!(
                    "source: {snapshot}{} rows ({rate:.0}/s), binlog {} -> wire {} bytes, spool {} \
                     bytes, {} unacked, oldest {:?}, link {m:?}",
                    p.rows, p.binlog_bytes, p.wire_bytes, s.bytes, s.unacked, s.oldest_unacked_age
                );
            }
        })
    };
    let retention = tokio::spawn(watch_retention(settings.clone()));
    let result = tokio::select! {
        r = source::stream_to_spool(&settings, &dir, &spool, false, progress) => r,
        r = sender.run() => r.context("the link failed"),
    };
    reporter.abort();
    retention.abort();
    result
}

/// A warning when the source's binlog retention (`binlog_expire_logs_seconds`, else
/// `expire_logs_days`) is shorter than the wait for the next shipping window at `now`:
/// outside a window the spool fills, reading the binlog stops at the spool's bound, and the
/// events not yet read must still be on the source when shipping resumes. `None` when the
/// schedule is always open, retention is off, or the window is near enough.
pub async fn retention_risk(settings: &Settings, now: jiff::Timestamp) -> Result<Option<String>> {
    if settings.windows.is_empty() {
        return Ok(None);
    }
    let schedule = Schedule::parse(&settings.windows).context("shipping windows")?;
    let s = settings
        .source
        .as_ref()
        .context("the source side needs --source")?;
    let opts = source::connect_options(&s.servers[0], s, true)?;
    let mut conn = source::sql_conn(&opts).await?;
    use mysql_async::prelude::Queryable;
    // MariaDB 10.6+ and MySQL 8 have the seconds; older servers only the days.
    let seconds: Option<u64> = conn
        .query_first("SELECT @@binlog_expire_logs_seconds")
        .await
        .ok()
        .flatten();
    let seconds = match seconds {
        Some(s) if s > 0 => s,
        _ => {
            let days: Option<f64> = conn
                .query_first("SELECT @@expire_logs_days")
                .await
                .context("reading the source's expire_logs_days")?;
            (days.unwrap_or(0.0) * 86_400.0) as u64
        }
    };
    let _ = conn.disconnect().await;
    if seconds == 0 {
        return Ok(None);
    }
    let retention = Duration::from_secs(seconds);
    Ok(schedule.retention_at_risk(now, retention).then(|| {
        let next = schedule
            .next_open(now)
            .map_or_else(|| "never".to_string(), |t| t.to_string());
        format!(
            "the source keeps binlogs for {} but the next shipping window opens at {next}:              binlogs written now may expire before they are read (raise the spool's bound,              the source's retention, or open a window sooner)",
            humantime::format_duration(retention)
        )
    }))
}

/// Logs [`retention_risk`] at start and hourly (retention and windows can change).
async fn watch_retention(settings: Settings) {
    loop {
        match retention_risk(&settings, jiff::Timestamp::now()).await {
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not check the source's binlog retention")
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// The initial snapshot's part of the progress line: tables, rows, rate and ETA.
fn snapshot_line(p: &outflow_source::snapshot::Progress) -> String {
    let eta = p.eta().map_or_else(
        || "unknown".to_string(),
        |d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
    );
    format!(
        "snapshot {}/{} tables, {} of ~{} rows ({:.0} rows/s, ETA {eta}); ",
        p.tables_done,
        p.tables_total,
        p.rows,
        p.rows_estimate,
        p.rate()
    )
}

/// The target's connection options, with the configured password.
fn target_opts(settings: &Settings) -> Result<mysql_async::Opts> {
    let db = settings
        .target
        .as_ref()
        .context("the sink side needs --target URL")?;
    let url = db.url.replacen("mariadb://", "mysql://", 1);
    let opts = mysql_async::Opts::from_url(&url)
        .map_err(|e| anyhow::anyhow!("target URL {}: {e}", db.redacted()))?;
    let mut b = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(p) = &db.password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(b.into())
}

/// The applier settings of `settings`.
pub(crate) fn apply_config(settings: &Settings) -> outflow_sink::apply::ApplyConfig {
    outflow_sink::apply::ApplyConfig {
        on_conflict: match settings.on_conflict {
            crate::config::ConflictPolicy::Stop => outflow_sink::apply::ConflictPolicy::Stop,
            crate::config::ConflictPolicy::Overwrite => {
                outflow_sink::apply::ConflictPolicy::Overwrite
            }
        },
        ddl: settings.ddl.clone(),
        apply_threads: settings.apply.threads,
        max_txn_changes: settings.apply.txn_changes,
        max_statement_bytes: settings.apply.statement_bytes,
        max_pending_bytes: settings.apply.pending_bytes,
        stream: settings.apply.stream.clone(),
        checkpoint_db: settings.apply.checkpoint_db.clone(),
        checkpoint_table: settings.apply.checkpoint_table.clone(),
        ..Default::default()
    }
}

/// Prints the sink's progress every 5 s until aborted.
fn sink_reporter(
    stats: Arc<std::sync::Mutex<outflow_sink::apply::ApplyStats>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (0u64, std::time::Instant::now());
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let s = stats.lock().map(|s| *s).unwrap_or_default();
            let rows = s.inserted + s.updated + s.deleted;
            let rate = (rows - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
            last = (rows, std::time::Instant::now());
            eprintln!(
                "sink: {} batches ({} duplicates), {} transactions, {rows} rows ({rate:.0}/s), \
                 {} conflicts, {} DDL applied, {} DDL skipped, {} retries, {} careful replays, \
                 {} target transactions built ahead, seconds building {:.2}, executing {:.2}, \
                 committing {:.2}",
                s.frames,
                s.duplicate_frames,
                s.transactions,
                s.conflicts.total(),
                s.ddl_applied,
                s.ddl_skipped,
                s.retries,
                s.careful_replays,
                s.staged,
                s.times.build.as_secs_f64(),
                s.times.execute.as_secs_f64(),
                s.times.commit.as_secs_f64()
            );
        }
    })
}

/// `outflow sink`: receive batches over QUIC and apply them to the target, forever.
pub async fn run_sink(settings: Settings) -> Result<()> {
    let listen = settings
        .listen
        .as_deref()
        .context("the sink side needs --listen HOST:PORT")?;
    let receiver = Receiver::bind(
        resolve_addr(listen)?,
        &quic_tls(&settings)?,
        link_config(&settings),
    )
    .context("starting the link")?;
    let stats = Arc::default();
    let sink = sink::ApplySink::connect(
        target_opts(&settings)?,
        apply_config(&settings),
        Arc::clone(&stats),
    )
    .await
    .map_err(|e| anyhow::anyhow!("connecting to the target: {e}"))?;
    eprintln!("sink: listening on {}", receiver.local_addr()?);
    let reporter = sink_reporter(stats);
    let result = receiver.run(sink).await.context("the sink stopped");
    reporter.abort();
    result
}

/// `outflow run`: both halves in one process, joined by a loopback QUIC connection with
/// certificates generated into the spool directory on first use.
pub async fn run_both(mut settings: Settings) -> Result<()> {
    let dir = settings
        .spool_dir
        .clone()
        .context("outflow run needs --spool DIR")?;
    settings.max_udp_payload.get_or_insert(LOOPBACK_UDP_PAYLOAD);
    let cert_dir = dir.join("certs");
    let files = outflow_transport::certs::CertFiles::in_dir(&cert_dir);
    if !files.ca.exists() {
        std::fs::create_dir_all(&cert_dir)?;
        outflow_transport::certs::generate(&cert_dir, &[]).context("generating certificates")?;
    }
    let receiver = Receiver::bind(
        "127.0.0.1:0".parse()?,
        &TlsConfig::server_from(&files),
        link_config(&settings),
    )
    .context("starting the link's receiver")?;
    let stats = Arc::default();
    let sink = sink::ApplySink::connect(
        target_opts(&settings)?,
        apply_config(&settings),
        Arc::clone(&stats),
    )
    .await
    .map_err(|e| anyhow::anyhow!("connecting to the target: {e}"))?;
    settings.connect = Some(receiver.local_addr()?.to_string());
    settings.quic_server_name = Some("localhost".to_string());
    let client = TlsConfig::client_from(&files);
    settings.quic_ca = Some(client.ca.clone());
    settings.quic_cert = Some(client.cert.clone());
    settings.quic_key = Some(client.key.clone());
    let reporter = sink_reporter(stats);
    let result = tokio::select! {
        r = receiver.run(sink) => r.context("the sink stopped"),
        r = run_source(settings) => r,
    };
    reporter.abort();
    result
}

/// The codec frames in one spool record (the source side appends every frame of a drain as
/// one record, see [`source`]). A record that does not split cleanly is an error naming the
/// offset: it was damaged or forged.
pub fn split_frames<'a>(
    record: &'a [u8],
    limits: &outflow_codec::Limits,
) -> Result<Vec<&'a [u8]>, outflow_codec::FrameError> {
    let mut frames = Vec::new();
    let mut rest = record;
    while !rest.is_empty() {
        let h = outflow_codec::FrameHeader::parse(rest, limits)?;
        let len = usize::try_from(h.frame_len()).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err(outflow_codec::FrameError::Truncated {
                needed: len,
                available: rest.len(),
            });
        }
        let (frame, tail) = rest.split_at(len);
        frames.push(frame);
        rest = tail;
    }
    Ok(frames)
}

/// Crash tests only: when the environment sets `var` to `N`, the `N`th call (counted in
/// `calls`) prints `what` and ends the process with code 86, with no cleanup, as a crash
/// would. The variables' names say `DANGER`: they kill the relay on purpose.
pub(crate) fn crash_test_hook(var: &str, calls: &std::sync::atomic::AtomicU64, what: &str) {
    let Some(at) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == at {
        eprintln!("{what}");
        std::process::exit(86);
    }
}

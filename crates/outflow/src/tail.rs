//! `outflow tail`: stream live row changes from a source server and print them as the same
//! JSON lines as `outflow inspect`.
//!
//! The connection options are the `[source]` section of the configuration (same names as
//! flags); the password comes from `OUTFLOW_SOURCE_PASSWORD` (or `--source-password-env` /
//! `--source-password-file`), never from the URL. After a retryable error (the server
//! restarted, the network broke) it reconnects with backoff from the end of the last
//! committed transaction and prints nothing twice.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use outflow_replication::{
    Backoff, ConnectOptions, Replica, ReplicaError, StartPosition, TlsMode, TlsOptions,
};

use crate::config::{Config, FilterConfig, SourceConfig};
use crate::inspect::JsonLines;

/// How long `tail` keeps trying to reconnect before giving up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// Arguments of `outflow tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Source connection, as in the `[source]` section of the configuration.
    #[command(flatten)]
    pub source: SourceConfig,
    /// Table and column filters, as in the `[filters]` section: only wanted tables are
    /// printed, excluded columns are left out and masked ones printed as their hash.
    #[command(flatten)]
    pub filters: FilterConfig,
    /// Configuration file whose `[source]` section fills what the flags leave unset.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Stop after this many row changes.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop at the current end of the binlog instead of waiting for more.
    #[arg(long)]
    pub stop_at_end: bool,
}

/// What a tail run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSummary {
    /// Row changes printed.
    pub rows: u64,
    /// Reconnects after retryable errors.
    pub reconnects: u32,
    /// Where a later run should resume (after the last committed transaction).
    pub resume_from: String,
}

/// Connection options and start position from the `[source]` settings.
pub fn connect_options(source: &SourceConfig) -> Result<(ConnectOptions, StartPosition)> {
    let cfg = Config {
        source: source.clone(),
        ..Config::default()
    };
    let settings = cfg.resolve()?;
    let Some(s) = settings.source else {
        bail!("--source is required (mysql://USER@HOST:PORT)");
    };
    let db = s.servers.first().context("no source server")?;
    let mut opts = ConnectOptions::from_url(&db.url)?;
    if let Some(p) = &db.password {
        opts.password.0 = p.expose().to_string();
    }
    opts.server_id = s.server_id;
    opts.heartbeat = s.heartbeat;
    // Mode and start position are read from the raw settings with the replication crate's
    // own parsers (the same spelling `resolve` accepts).
    let mode: TlsMode = source
        .tls_mode
        .as_deref()
        .unwrap_or("verify_identity")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--tls-mode: {e}"))?;
    opts.tls = TlsOptions {
        mode,
        ca: s.tls_ca.clone(),
        cert: s.tls_identity.as_ref().map(|(c, _)| c.clone()),
        key: s.tls_identity.as_ref().map(|(_, k)| k.clone()),
        require_tls13: s.tls13_only,
    };
    let from: StartPosition = source
        .from
        .as_deref()
        .unwrap_or("start")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--from {e}"))?;
    Ok((opts, from))
}

/// Streams from `from` and prints JSON lines to `out` until `limit` row changes were
/// printed, or the end of the binlog with `stop_at_end`.
pub async fn tail(
    opts: ConnectOptions,
    from: &StartPosition,
    limit: Option<u64>,
    stop_at_end: bool,
    out: impl Write,
) -> Result<TailSummary> {
    tail_filtered(opts, from, None, limit, stop_at_end, out).await
}

/// The printer behind the schema tracker: column names for the column rules come from the
/// tracked schema (the binlog carries them only with `binlog_row_metadata=FULL`), and DDL
/// in the stream keeps it current, as on the relay's source side.
struct Tracked<W: Write> {
    tables: Option<outflow_source::SourceTables>,
    lines: JsonLines<W>,
    file: String,
    at: outflow_source::EventPosition,
}

impl<W: Write> outflow_binlog::walk::Visitor for Tracked<W> {
    type Error = anyhow::Error;

    fn event(&mut self, pos: u64, d: &outflow_binlog::Decoded<'_>) -> Result<()> {
        if let outflow_binlog::Event::Rotate { next_file, .. } = &d.event {
            self.file = String::from_utf8_lossy(next_file).into_owned();
        }
        if let Some(t) = self.tables.as_mut() {
            self.at.binlog = Some(outflow_core::BinlogPosition {
                file: self.file.clone(),
                pos: pos + u64::from(d.header.event_size),
            });
            t.on_event(&self.at, d)?;
        }
        outflow_binlog::walk::Visitor::event(&mut self.lines, pos, d)
    }

    fn wants(&mut self, table: &outflow_binlog::TableInfo) -> bool {
        self.tables.as_mut().is_none_or(|t| t.wants(table)) && self.lines.wants(table)
    }

    fn rows(
        &mut self,
        ctx: outflow_binlog::walk::RowsContext<'_>,
        event: &outflow_binlog::RowsEvent<'_>,
        table: &outflow_binlog::TableInfo,
        rows: outflow_binlog::RowIter<'_>,
    ) -> Result<()> {
        outflow_binlog::walk::Visitor::rows(&mut self.lines, ctx, event, table, rows)
    }
}

/// [`tail`] printing only what `filter` lets through (tables, excluded and masked
/// columns), as the relay would ship it. With column rules, the table definitions are read
/// from the server first (the user needs SELECT) and followed through the stream's DDL.
pub async fn tail_filtered(
    mut opts: ConnectOptions,
    from: &StartPosition,
    filter: Option<outflow_source::Filter>,
    limit: Option<u64>,
    stop_at_end: bool,
    out: impl Write,
) -> Result<TailSummary> {
    opts.non_blocking = stop_at_end;
    let addr = opts.addr();
    let tables = match &filter {
        Some(f) => {
            let mut conn = mysql_async::Conn::new(crate::relay::source::sql_opts(&opts))
                .await
                .with_context(|| format!("SQL connection to {addr} for the schema"))?;
            let tracker = outflow_source::schema::load::tracker_from_server(&mut conn, f.clone())
                .await
                .context("loading the schema")?;
            let _ = conn.disconnect().await;
            Some(outflow_source::SourceTables::new(tracker, f.clone()))
        }
        None => None,
    };
    let mut replica = Replica::connect(opts, from)
        .await
        .with_context(|| format!("starting the binlog dump from {addr} at {from}"))?;
    let mut lines = Tracked {
        tables,
        lines: JsonLines::new(out, ""),
        file: String::new(),
        at: outflow_source::EventPosition::default(),
    };
    if let Some(t) = &lines.tables {
        replica.walker().decoder().set_table_hook(t.hook());
    }
    if let Some(f) = filter {
        lines.lines.set_filter(f);
    }
    let limit = limit.unwrap_or(u64::MAX);
    lines.lines.set_limit(limit);
    let mut backoff = Backoff::default();
    let mut reconnects = 0;
    while lines.lines.rows() < limit {
        lines.lines.set_file(replica.tracker().file());
        match replica.next(&mut lines).await {
            Ok(true) => {
                // Whole transactions reach the reader together, without a write per event.
                if !replica.walker().decoder().in_transaction() {
                    lines.lines.flush()?;
                }
            }
            Ok(false) => break,
            Err(ReplicaError::Replication(e)) if e.is_retryable() => {
                lines.lines.flush()?;
                eprintln!("outflow tail: {e}; reconnecting");
                replica
                    .reconnect_with_backoff(&mut backoff, GIVE_UP_AFTER)
                    .await
                    .with_context(|| format!("reconnecting to {addr} after: {e}"))?;
                reconnects += 1;
            }
            Err(ReplicaError::Replication(e)) => return Err(e.into()),
            Err(ReplicaError::Consumer(e)) => {
                return Err(e.context(format!("binlog {} from {addr}", replica.tracker().file())))
            }
        }
    }
    lines.lines.flush()?;
    let summary = TailSummary {
        rows: lines.lines.rows(),
        reconnects,
        resume_from: replica.tracker().resume_from().to_string(),
    };
    replica.close().await;
    Ok(summary)
}

/// Runs `outflow tail` with the CLI arguments, printing to stdout.
pub fn run(args: &TailArgs) -> Result<()> {
    let mut source = args.source.clone();
    let mut filters = args.filters.clone();
    if let Some(path) = &args.config {
        let file = Config::load(path)?;
        let merged = Config {
            source,
            filters,
            ..Config::default()
        }
        .merge(&file);
        source = merged.source;
        filters = merged.filters;
    }
    let (opts, from) = connect_options(&source)?;
    let filter = outflow_source::Filter::new(&filters.resolve()?).context("filters")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let summary = rt.block_on(tail_filtered(
        opts,
        &from,
        Some(filter),
        args.limit,
        args.stop_at_end,
        out,
    ))?;
    eprintln!(
        "outflow tail: {} row changes; resume with --from {}",
        summary.rows, summary.resume_from
    );
    Ok(())
}

//! Live streaming throughput from a local server's backlog: outflow's replication client
//! next to mysql_async's binlog stream, `mariadb-binlog --read-from-remote-server` and a
//! native replica's IO thread, in the same run, on the same server and bytes.
//!
//! Run with `cargo bench --bench stream`. The backlog is the decode bench's sysbench
//! `oltp_write_only` binlog (see `support`; generated on first use and cached), copied into
//! a fresh test-kit server's data directory as its second binlog file, so every client
//! dumps the same ~128 MB from `binlog.000002:4` to the end of that file (a non-blocking
//! dump; the IO thread is watched until it has read the whole file).
//!
//! What each one does per pass:
//! - `outflow raw`: connect, register, dump; every event handed out as `Bytes` (no decode);
//! - `outflow decode`: the same, with every value of every row decoded (what `tail` and the
//!   source do);
//! - `mysql_async`: `Conn::get_binlog_stream` with the same request; each event is parsed
//!   into mysql_common's owned `Event` (its only API);
//! - `mariadb-binlog`: `--read-from-remote-server` of the file, text output to /dev/null;
//! - `replica IO thread`: a second mariadbd runs `START SLAVE IO_THREAD` from the same
//!   position and writes its relay log (outside criterion: one timed pass per run).
//!
//! After criterion, one more timed pass each prints a table with MB/s, rows/s and heap
//! allocations per event (counted in a separate pass on a single-threaded runtime).
//!
//! `OUTFLOW_BENCH_TXN_MB=1024 cargo bench --bench stream` measures something else instead
//! (issue 4's bound): peak RSS while one transaction of that many MB streams. A fresh server
//! commits one `INSERT ... SELECT` of 8000-byte rows (MariaDB cuts it into row events of
//! `binlog_row_event_max_size`), then the live reader streams it with every value decoded,
//! twice: in this process (a `Replica` session; VmHWM from /proc/self/status, reset just
//! before), and as an `outflow tail --stop-at-end` child (JSON lines) writing to
//! /dev/null (its VmHWM, polled; needs `cargo build --release -p outflow` first). The bound is
//! 256 MB.

mod alloc_count;
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use criterion::{Criterion, SamplingMode, Throughput};
use mysql_async::prelude::Queryable;
use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{DecodeError, RowIter, RowsEvent, TableInfo};
use outflow_replication::{BinlogStream, ConnectOptions, StartPosition, TlsMode};
use outflow_testkit::{Server, ServerConfig, SUPERUSER, SUPERUSER_PASSWORD};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// The server with the backlog and where it is.
struct Backlog {
    server: Server,
    file: String,
    bytes: u64,
}

/// What one pass saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    events: u64,
    bytes: u64,
    rows: u64,
}

/// Decodes every value of every row (the decode bench's definition, `decode_all`) and
/// counts; allocates nothing per row, so the allocation column shows the client's own.
#[derive(Default)]
struct Decode {
    rows: u64,
    values: u64,
    scratch: String,
}

impl Visitor for Decode {
    type Error = DecodeError;
    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        _table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        let (n, v) = rows
            .decode_all(&mut self.scratch)
            .map_err(|kind| DecodeError {
                pos: ctx.pos,
                event_type: None,
                kind,
            })?;
        self.rows += n;
        self.values += v;
        Ok(())
    }
}

/// Starts a server whose second binlog file is `binlog`.
fn backlog_server(binlog: &Path) -> Result<Backlog> {
    let mut server = Server::start(ServerConfig::new().max_binlog_size(1 << 30))?;
    server.stop()?;
    let n = server.binlog_files()?.len();
    let file = format!("binlog.{:06}", n + 1);
    let dest = server.data_dir().join(&file);
    let bytes = std::fs::copy(binlog, &dest)
        .with_context(|| format!("copying {} to {}", binlog.display(), dest.display()))?;
    let index = server.binlog_index_path();
    let mut text = std::fs::read_to_string(&index)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("./{file}\n"));
    std::fs::write(&index, text)?;
    server.restart()?;
    Ok(Backlog {
        server,
        file,
        bytes,
    })
}

fn outflow_opts(b: &Backlog) -> (ConnectOptions, StartPosition) {
    let mut o = ConnectOptions::new("127.0.0.1", b.server.port(), SUPERUSER, SUPERUSER_PASSWORD);
    o.tls.mode = TlsMode::Disabled;
    o.non_blocking = true;
    // The same events as the other clients get (and as the file holds).
    o.annotate_rows = true;
    o.server_id = 7_000_001;
    let from = StartPosition::File {
        file: b.file.clone(),
        pos: 4,
    };
    (o, from)
}

/// Dumps the backlog file with outflow's client; with `decode`, decodes every value too.
async fn outflow_pass(b: &Backlog, decode: bool) -> Result<Seen> {
    let (o, from) = outflow_opts(b);
    let mut stream = BinlogStream::connect(&o, &from).await?;
    let mut walker = Walker::new();
    walker
        .decoder()
        .set_pre_format_checksum(stream.server().checksum);
    let mut tracker = outflow_replication::PositionTracker::new(stream.start());
    let mut decoded = Decode::default();
    let mut seen = Seen::default();
    // To the end of the binlog: the backlog file, then the few events of the server's own
    // current file (the same for every client).
    while let Some(ev) = stream.next_event().await? {
        seen.events += 1;
        seen.bytes += ev.len() as u64;
        if decode {
            let pos = tracker.event_pos(&ev);
            let mut v = outflow_replication::Tracked {
                tracker: &mut tracker,
                inner: &mut decoded,
                deliver: true,
            };
            walker.process(pos, &ev, &mut v)?;
            tracker.finish_event(&ev, walker.decoder().in_transaction());
        }
    }
    stream.close().await;
    seen.rows = decoded.rows;
    Ok(seen)
}

/// The same dump through mysql_async's `BinlogStream`.
async fn mysql_async_pass(b: &Backlog) -> Result<Seen> {
    use futures_core::Stream;
    let conn = mysql_async::Conn::new(b.server.opts()).await?;
    let request = mysql_async::BinlogStreamRequest::new(7_000_002)
        .with_filename(b.file.as_bytes())
        .with_pos(4)
        .with_non_blocking();
    let mut stream = conn.get_binlog_stream(request).await?;
    let mut seen = Seen::default();
    while let Some(ev) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
    {
        let ev = ev?;
        seen.events += 1;
        seen.bytes += u64::from(ev.header().event_size());
    }
    let _ = stream.close().await;
    Ok(seen)
}

/// `mariadb-binlog --read-from-remote-server` of the backlog file, output to /dev/null.
fn mariadb_binlog_pass(b: &Backlog) -> Result<Seen> {
    let status = Command::new("mariadb-binlog")
        .arg("--read-from-remote-server")
        .arg("--host=127.0.0.1")
        .arg(format!("--port={}", b.server.port()))
        .arg(format!("--user={SUPERUSER}"))
        .arg(format!("--password={SUPERUSER_PASSWORD}"))
        .arg(&b.file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .context("running mariadb-binlog")?;
    ensure!(status.success(), "mariadb-binlog failed: {status}");
    Ok(Seen {
        bytes: b.bytes,
        ..Seen::default()
    })
}

/// A second server's replica IO thread reading the backlog file into its relay log.
async fn io_thread_pass(b: &Backlog, replica: &Server) -> Result<Duration> {
    let mut conn = replica.admin_conn().await?;
    conn.query_drop("STOP SLAVE; RESET SLAVE ALL").await?;
    conn.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='{SUPERUSER}', \
         MASTER_PASSWORD='{SUPERUSER_PASSWORD}', MASTER_LOG_FILE='{}', MASTER_LOG_POS=4, \
         MASTER_USE_GTID=no",
        b.server.port(),
        b.file
    ))
    .await?;
    let start = Instant::now();
    conn.query_drop("START SLAVE IO_THREAD").await?;
    loop {
        let row: Option<mysql_async::Row> = conn.query_first("SHOW SLAVE STATUS").await?;
        let row = row.context("no slave status")?;
        let file: String = row.get("Master_Log_File").unwrap_or_default();
        let pos: u64 = row.get("Read_Master_Log_Pos").unwrap_or_default();
        let err: String = row.get("Last_IO_Error").unwrap_or_default();
        ensure!(err.is_empty(), "replica IO thread: {err}");
        if file > b.file || (file == b.file && pos >= b.bytes) {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the IO thread did not finish in 5 minutes ({file}:{pos})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    conn.query_drop("STOP SLAVE IO_THREAD").await?;
    let _ = conn.disconnect().await;
    Ok(took)
}

fn main() -> Result<()> {
    if let Ok(mb) = std::env::var("OUTFLOW_BENCH_TXN_MB") {
        let mb = mb.parse().context("OUTFLOW_BENCH_TXN_MB: megabytes")?;
        return big_transaction(mb);
    }
    let input = support::binlog()?;
    let backlog = backlog_server(&input.path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Untimed check that every client streams the whole file.
    let decoded = rt.block_on(outflow_pass(&backlog, true))?;
    let raw = rt.block_on(outflow_pass(&backlog, false))?;
    let peer = rt.block_on(mysql_async_pass(&backlog))?;
    ensure!(
        raw.events == decoded.events && raw.bytes == decoded.bytes,
        "raw {raw:?} vs decoded {decoded:?}"
    );
    ensure!(
        peer.events == raw.events,
        "mysql_async saw {} events, outflow {}",
        peer.events,
        raw.events
    );
    ensure!(decoded.rows > 0, "no rows decoded");
    println!(
        "backlog: {} as {} on 127.0.0.1:{} ({}): {:.1} MB, {} events, {} row changes",
        input.path.display(),
        backlog.file,
        backlog.server.port(),
        input.origin,
        backlog.bytes as f64 / 1e6,
        raw.events,
        decoded.rows
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    {
        let mut group = c.benchmark_group("stream");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(backlog.bytes));
        group.bench_function("outflow raw", |bch| {
            bch.iter(|| {
                rt.block_on(outflow_pass(&backlog, false))
                    .expect("streamed once already")
            })
        });
        group.bench_function("outflow decode", |bch| {
            bch.iter(|| {
                rt.block_on(outflow_pass(&backlog, true))
                    .expect("streamed once already")
            })
        });
        group.bench_function("mysql_async", |bch| {
            bch.iter(|| {
                rt.block_on(mysql_async_pass(&backlog))
                    .expect("streamed once already")
            })
        });
        group.bench_function("mariadb-binlog", |bch| {
            bch.iter(|| mariadb_binlog_pass(&backlog).expect("mariadb-binlog runs"))
        });
        group.finish();
    }
    c.final_summary();

    summary(&rt, &backlog, decoded.rows, raw.events)
}

/// One more timed pass each, allocations per event, and the IO thread; a plain table.
fn summary(rt: &tokio::runtime::Runtime, b: &Backlog, rows: u64, events: u64) -> Result<()> {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<20} {:>9} {:>12} {:>11} {:>13}",
        "client", "MB/s", "rows/s", "vs outflow", "allocs/event"
    );
    let mut base = None;
    let mut line = |name: &str, secs: f64, allocs: Option<u64>| {
        let b0 = *base.get_or_insert(secs);
        let _ = writeln!(
            table,
            "{name:<20} {:>9.1} {:>12.0} {:>10.2}x {:>13}",
            b.bytes as f64 / 1e6 / secs,
            rows as f64 / secs,
            b0 / secs,
            allocs.map_or("-".to_string(), |a| format!(
                "{:.3}",
                a as f64 / events as f64
            ))
        );
    };
    let count = |f: &dyn Fn() -> Result<Seen>| -> Result<u64> {
        alloc_count::start();
        let r = f();
        alloc_count::stop();
        r?;
        Ok(alloc_count::count())
    };
    let timed = |f: &dyn Fn() -> Result<Seen>| -> Result<f64> {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed().as_secs_f64())
    };
    let raw = || rt.block_on(outflow_pass(b, false));
    let dec = || rt.block_on(outflow_pass(b, true));
    let peer = || rt.block_on(mysql_async_pass(b));
    let tool = || mariadb_binlog_pass(b);
    line("outflow raw", timed(&raw)?, Some(count(&raw)?));
    line("outflow decode", timed(&dec)?, Some(count(&dec)?));
    line("mysql_async", timed(&peer)?, Some(count(&peer)?));
    line("mariadb-binlog", timed(&tool)?, None);
    let replica = Server::start(ServerConfig::new())?;
    let io = rt.block_on(io_thread_pass(b, &replica))?;
    line("replica IO thread", io.as_secs_f64(), None);
    print!("{table}");
    println!(
        "rows/s counts the backlog's {rows} row changes over each client's time (only \
         'outflow decode' decodes them)."
    );
    Ok(())
}

/// Bytes of each row's value in the big transaction.
const BIG_ROW: u64 = 8000;
/// Issue 4's bound on the reader's memory ("256 MB", taken as MiB).
const RSS_BOUND: u64 = 256 << 20;

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`), for `pid` or this process.
fn proc_status_bytes(pid: Option<u32>, field: &str) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{field} in {path}"))?;
    let kb: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in {path}: {line:?}"))?;
    Ok(kb << 10)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Peak RSS of the live reader while one transaction of `mb` megabytes streams.
fn big_transaction(total_mb: u64) -> Result<()> {
    let rows = total_mb * 1_000_000 / BIG_ROW;
    let server = Server::start(
        ServerConfig::new()
            .max_binlog_size(1 << 30)
            .option("max_binlog_cache_size", 16u64 << 30)
            .option("max_binlog_stmt_cache_size", 16u64 << 30),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (file, pos, commit_took) = rt.block_on(async {
        let mut conn = server.admin_conn().await?;
        conn.query_drop(
            "CREATE DATABASE big; \
             CREATE TABLE big.t (id INT PRIMARY KEY, v BLOB) ENGINE=InnoDB",
        )
        .await?;
        let status: mysql_async::Row = conn
            .query_first("SHOW MASTER STATUS")
            .await?
            .context("no master status")?;
        let file: String = status.get("File").context("File")?;
        let pos: u64 = status.get("Position").context("Position")?;
        let start = Instant::now();
        // One statement under autocommit: one transaction.
        conn.query_drop(format!(
            "INSERT INTO big.t SELECT seq, REPEAT(CHAR(65 + seq % 26), {BIG_ROW}) \
             FROM big.seq_1_to_{rows}"
        ))
        .await?;
        let took = start.elapsed();
        let _ = conn.disconnect().await;
        anyhow::Ok((file, pos, took))
    })?;
    let binlog_bytes: u64 = server
        .binlog_files()?
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "big transaction: {rows} rows of {BIG_ROW} bytes in one INSERT ... SELECT, committed in \
         {:.1} s; binlog now {:.1} MiB, the transaction from {file}:{pos}",
        commit_took.as_secs_f64(),
        mib(binlog_bytes)
    );

    // In this process: a Replica session decoding every value.
    let mut o = ConnectOptions::new("127.0.0.1", server.port(), SUPERUSER, SUPERUSER_PASSWORD);
    o.tls.mode = TlsMode::Disabled;
    o.non_blocking = true;
    o.server_id = 7_000_003;
    let from = StartPosition::File {
        file: file.clone(),
        pos,
    };
    let before = proc_status_bytes(None, "VmRSS")?;
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")?;
    let start = Instant::now();
    let (decoded, events) = rt.block_on(async {
        let mut replica = outflow_replication::Replica::connect(o, &from).await?;
        let mut decoded = Decode::default();
        let mut events = 0u64;
        while replica
            .next(&mut decoded)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            events += 1;
        }
        replica.close().await;
        anyhow::Ok((decoded, events))
    })?;
    let took = start.elapsed();
    let peak = proc_status_bytes(None, "VmHWM")?;
    ensure!(
        decoded.rows == rows,
        "decoded {} rows of {rows}",
        decoded.rows
    );
    println!(
        "in process (Replica, every value decoded): {events} events, {} rows in {:.1} s \
         ({:.0} MiB/s); RSS before {:.1} MiB, peak {:.1} MiB (bound {:.0} MiB): {}",
        decoded.rows,
        took.as_secs_f64(),
        mib(binlog_bytes) / took.as_secs_f64(),
        mib(before),
        mib(peak),
        mib(RSS_BOUND),
        if peak < RSS_BOUND { "within" } else { "OVER" }
    );

    // `outflow tail` as its own process.
    let exe = std::env::current_exe()?;
    let outflow = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("outflow"))
        .filter(|p| p.exists());
    let Some(outflow) = outflow else {
        println!("outflow tail: skipped, no outflow binary next to the bench's target directory (cargo build --release -p outflow)");
        return Ok(());
    };
    let start = Instant::now();
    let mut child = Command::new(&outflow)
        .arg("tail")
        .arg("--source")
        .arg(format!(
            "mysql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}",
            server.port()
        ))
        .args(["--tls-mode", "disabled", "--server-id", "7000004"])
        .arg("--from")
        .arg(format!("file:{file}:{pos}"))
        .arg("--stop-at-end")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", outflow.display()))?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows; the last reading before exit is the peak up to ~20 ms before.
        if let Ok(hwm) = proc_status_bytes(Some(pid), "VmHWM") {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(status.success(), "outflow tail failed: {status}");
    println!(
        "outflow tail (JSON lines) > /dev/null: done in {:.1} s; peak RSS {:.1} MiB (bound {:.0} MiB): {}",
        start.elapsed().as_secs_f64(),
        mib(peak),
        mib(RSS_BOUND),
        if peak < RSS_BOUND { "within" } else { "OVER" }
    );
    Ok(())
}

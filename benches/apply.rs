//! Catch-up of a sysbench `oltp_write_only` backlog into a target: outflow's applier next
//! to native MariaDB replication (one SQL thread, and 4 optimistic parallel threads) and
//! to `mariadb-binlog | mariadb` (BINLOG-statement replay), in the same run, on the same
//! backlog, each target starting from the same state. Prints a table with ratios.
//!
//! Run with `cargo bench --bench apply`. Environment:
//! - `OUTFLOW_BENCH_APPLY_EVENTS`: sysbench transactions in the backlog (default 100,000;
//!   the reference figure, 177,950 transactions, is 180000);
//! - `OUTFLOW_BENCH_APPLY_FRAME_MB`: binlog MiB per frame (default 16, catch-up batches;
//!   1 is the streaming default);
//! - `OUTFLOW_BENCH_APPLY_THREADS`: the applier's connection counts to measure, each on a
//!   target of its own (default `1,2,4`).
//! - `OUTFLOW_BENCH_APPLY_REPLAY=0`: skip the BINLOG-statement replay (the slowest row by
//!   far, about a minute per 100,000 transactions), to compare settings of outflow sooner.
//!
//! The backlog and the targets' starting state come from `catchup` (shared with the `e2e`
//! bench): every target follows the sysbench `prepare` as a native replica, then the
//! source runs the workload into fresh binlog files.
//!
//! What is timed:
//! - outflow: decoding each frame and applying it (the sink's whole work); making the
//!   frames from the binlog (the source side's work) is timed apart and not included;
//! - native: `START SLAVE` until the replica's `gtid_slave_pos` covers the source's
//!   binlog position (the kit's `wait_caught_up`, polling every 20 ms);
//! - replay: `mariadb-binlog FILES | mariadb` from start to exit.
//!
//! Every server has the kit's defaults (`innodb_flush_log_at_trx_commit=2`, `sync_binlog=0`)
//! and a 512 MB buffer pool. The outflow and replay targets run without a binlog, as the
//! replicas do not log what they apply (`log_slave_updates` off). Afterwards each target's
//! tables are checksum-compared with the source's. The applier's heap allocations are
//! counted during its timed pass and printed per row change.

mod alloc_count;
mod catchup;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use outflow_binlog::walk::Walker;
use outflow_codec::{Decoder, Limits, Pipeline, PipelineConfig};
use outflow_core::ChangeBatch;
use outflow_sink::{Applier, ApplyConfig};
use outflow_testkit::{gtid_pos_covers, wait_caught_up, ParallelMode, Server};

use catchup::{config, cpu_secs, env_u64, TABLES};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

struct Row {
    name: String,
    secs: f64,
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let events = env_u64("OUTFLOW_BENCH_APPLY_EVENTS", 100_000)?;
    let frame_mb = env_u64("OUTFLOW_BENCH_APPLY_FRAME_MB", 16)?;
    let threads: Vec<usize> = std::env::var("OUTFLOW_BENCH_APPLY_THREADS")
        .unwrap_or_else(|_| "1,2,4".to_string())
        .split(',')
        .map(|t| t.trim().parse().context("OUTFLOW_BENCH_APPLY_THREADS"))
        .collect::<Result<_>>()?;

    let source = Server::start(config().binlog_row_metadata(outflow_testkit::RowMetadata::Full))?;
    let native1 = Server::start(config().slave_parallel_threads(0))?;
    let native4 = Server::start(
        config()
            .slave_parallel_threads(4)
            .slave_parallel_mode(ParallelMode::Optimistic),
    )?;
    let mut outflows = Vec::new();
    for _ in &threads {
        outflows.push(Server::start(config().log_bin(false))?);
    }
    let replay = Server::start(config().log_bin(false))?;
    let mut all = vec![&native1, &native4, &replay];
    all.extend(outflows.iter());

    catchup::prepare(&source, &all).await?;
    for r in outflows.iter().chain([&replay]) {
        r.exec("RESET SLAVE ALL").await?;
    }
    let backlog = catchup::backlog(&source, events).await?;

    // The source side's work, not timed with the apply.
    let t = Instant::now();
    let mut pipeline = Pipeline::new(PipelineConfig {
        batch_bytes: frame_mb << 20,
        ..PipelineConfig::default()
    })?;
    let mut walker = Walker::new();
    for f in &backlog.files {
        pipeline.set_file(&f.file_name().context("name")?.to_string_lossy());
        outflow::inspect::walk_file(f, &mut walker, &mut pipeline)?;
    }
    pipeline.flush()?;
    let mut frames = Vec::new();
    pipeline.drain_frames(|f| frames.push(f.to_vec()));
    let stats = pipeline.stats().clone();
    let (txns, rows) = (stats.transactions, stats.rows_in);
    println!(
        "frames: {} of {frame_mb} MiB binlog each, {:.1} MB on the wire ({:.2}% of the \
         binlog), {txns} transactions, {rows} row changes; made in {:.1} s (source side, not \
         in the figures below)",
        frames.len(),
        stats.wire_bytes as f64 / 1e6,
        100.0 * stats.wire_bytes as f64 / backlog.binlog_bytes as f64,
        t.elapsed().as_secs_f64()
    );

    let mut results = Vec::new();

    for (&n, outflow) in threads.iter().zip(&outflows) {
        let cfg = ApplyConfig {
            apply_threads: std::num::NonZeroUsize::new(n).context("threads must be > 0")?,
            ..ApplyConfig::default()
        };
        let mut applier = Applier::connect(outflow.opts(), cfg).await?;
        let mut decoder = Decoder::new(Limits::default())?;
        let mut batch = ChangeBatch::default();
        let target_pid = outflow.pid().map(|p| p.to_string()).unwrap_or_default();
        let (cpu_self, cpu_target) = (cpu_secs("self"), cpu_secs(&target_pid));
        alloc_count::start();
        let t = Instant::now();
        for f in &frames {
            let header = decoder.decode(f, &mut batch)?;
            applier.apply(header.sequence, &batch).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        alloc_count::stop();
        let (cpu_self, cpu_target) = (
            cpu_secs("self") - cpu_self,
            cpu_secs(&target_pid) - cpu_target,
        );
        let allocs = alloc_count::count();
        let s = *applier.stats();
        let reached = applier
            .last_applied()
            .and_then(|c| c.gtid.clone())
            .unwrap_or_default();
        ensure!(
            gtid_pos_covers(&reached, &backlog.gtid_after).unwrap_or(false),
            "outflow, {n} connection(s): the checkpoint names {reached:?}, short of the \
             source's {}",
            backlog.gtid_after
        );
        applier.close().await;
        results.push(Row {
            name: format!("outflow, {n} connection(s), {frame_mb} MiB frames"),
            secs,
        });
        println!(
            "outflow, {n} connection(s): {} target commits, {} statements ({:.1} changes \
             each), {} careful replays, {:.1} MB of SQL, {:.2} heap allocations per row \
             change; CPU: {cpu_self:.2} s in this process (decode, SQL), {cpu_target:.2} s \
             in the target mariadbd, over {secs:.2} s; of which building {:.2} s, executing \
             {:.2} s, committing {:.2} s",
            s.commits,
            s.statements,
            (s.inserted + s.updated + s.deleted) as f64 / s.statements.max(1) as f64,
            s.careful_replays,
            s.sql_bytes as f64 / 1e6,
            allocs as f64 / rows.max(1) as f64,
            s.times.build.as_secs_f64(),
            s.times.execute.as_secs_f64(),
            s.times.commit.as_secs_f64()
        );
    }

    // Native replication, one replica at a time.
    for (name, r) in [
        ("native replica, 1 SQL thread", &native1),
        ("native replica, 4 parallel threads", &native4),
    ] {
        let t = Instant::now();
        r.exec("START SLAVE").await?;
        wait_caught_up(&source, r, Duration::from_secs(3600)).await?;
        results.push(Row {
            name: name.to_string(),
            secs: t.elapsed().as_secs_f64(),
        });
    }

    // BINLOG-statement replay.
    let replay_on = env_u64("OUTFLOW_BENCH_APPLY_REPLAY", 1)? != 0;
    if replay_on {
        let t = Instant::now();
        let mut dump = Command::new("mariadb-binlog")
            .arg("--no-defaults")
            .args(&backlog.files)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting mariadb-binlog")?;
        let status = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", replay.socket_path().display()))
            .arg("--user=root")
            .stdin(dump.stdout.take().context("mariadb-binlog stdout")?)
            .status()
            .context("running mariadb")?;
        ensure!(
            dump.wait()?.success() && status.success(),
            "binlog replay failed"
        );
        results.push(Row {
            name: "mariadb-binlog | mariadb (BINLOG replay)".to_string(),
            secs: t.elapsed().as_secs_f64(),
        });
    }

    let mut targets = vec![
        ("native 1".to_string(), &native1),
        ("native 4".to_string(), &native4),
    ];
    if replay_on {
        targets.push(("replay".to_string(), &replay));
    }
    for (n, server) in threads.iter().zip(&outflows) {
        targets.push((format!("outflow {n}"), server));
    }
    for (name, server) in targets {
        for table in TABLES {
            let (a, b) = (
                source.checksum_table(table).await?,
                server.checksum_table(table).await?,
            );
            ensure!(
                a == b,
                "{name}: {table} differs from the source ({a} != {b})"
            );
        }
    }
    println!("every target's tables are CHECKSUM TABLE-equal to the source's\n");

    let reference = |name: &str| {
        results
            .iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| r.secs)
    };
    let (one, four) = (
        reference("native replica, 1").unwrap_or(f64::NAN),
        reference("native replica, 4").unwrap_or(f64::NAN),
    );
    println!(
        "{:<42} {:>8} {:>10} {:>11} {:>9} {:>9}",
        "catch-up", "seconds", "txn/s", "rows/s", "vs 1 thr", "vs 4 thr"
    );
    for r in &results {
        println!(
            "{:<42} {:>8.2} {:>10.0} {:>11.0} {:>8.2}x {:>8.2}x",
            r.name,
            r.secs,
            txns as f64 / r.secs,
            rows as f64 / r.secs,
            one / r.secs,
            four / r.secs
        );
    }
    Ok(())
}

//! Catch-up of a sysbench `oltp_write_only` backlog into a target: outflow's applier next
//! to native MariaDB replication (one SQL thread, and 4 optimistic parallel threads) and
//! to BINLOG-statement replay of the same row events grouped as outflow groups them, in
//! the same run, on the same backlog, each target starting from the same state. Prints a
//! table with ratios.
//!
//! Run with `cargo bench --bench apply`. Environment:
//! - `OUTFLOW_BENCH_APPLY_EVENTS`: sysbench transactions in the backlog (default 100,000;
//!   the reference figure, 177,950 transactions, is 180000);
//! - `OUTFLOW_BENCH_APPLY_FRAME_MB`: binlog MiB per frame (default 16, catch-up batches;
//!   1 is the streaming default);
//! - `OUTFLOW_BENCH_APPLY_THREADS`: the applier's connection counts to measure, each on a
//!   target of its own (default `1,2,4`).
//! - `OUTFLOW_BENCH_APPLY_FORMS`: how values travel, each form with each connection count
//!   on a target of its own, in the order given: `params` (prepared statements, the
//!   default) and `literals` (values in the statement text); default `params`.
//! - `OUTFLOW_BENCH_APPLY_REPLAY=0`: skip the BINLOG-statement replay;
//! - `OUTFLOW_BENCH_APPLY_REPLAY_TXNS`: source transactions per replayed target transaction
//!   (default 5,000: on this workload, the 20,000 row changes of outflow's default
//!   `max_txn_changes`).
//!
//! The backlog and the targets' starting state come from `catchup` (shared with the `e2e`
//! bench): every target follows the sysbench `prepare` as a native replica, then the
//! source runs the workload into fresh binlog files.
//!
//! What is timed, each run started on an idle machine (`catchup::settle`):
//! - outflow: decoding each frame and applying it (the sink's whole work); making the
//!   frames from the binlog (the source side's work) is timed apart and not included;
//! - native: `START SLAVE` until the replica's `gtid_slave_pos` covers the source's
//!   binlog position (the kit's `wait_caught_up`, polling every 20 ms);
//! - replay: reading the binlog files, base64 and the `BINLOG` statements (`binlog_replay`).
//!   `mariadb-binlog | mariadb`, which commits each source transaction and sends each
//!   statement on its own, took 119.6 s for the 180,000-transaction backlog, against the
//!   native single-threaded replica's 10.42 s: a measure of round trips, not of replay.
//!
//! Every server has the kit's defaults (`innodb_flush_log_at_trx_commit=2`, `sync_binlog=0`)
//! and a 512 MB buffer pool. The outflow and replay targets run without a binlog, as the
//! replicas do not log what they apply (`log_slave_updates` off). Afterwards each target's
//! tables are checksum-compared with the source's. The applier's heap allocations are
//! counted during its timed pass and printed per row change.

mod alloc_count;
mod catchup;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use outflow_binlog::walk::Walker;
use outflow_codec::{Decoder, Limits, Pipeline, PipelineConfig};
use outflow_core::ChangeBatch;
use outflow_sink::{Applier, ApplyConfig};
use outflow_testkit::{gtid_pos_covers, wait_caught_up, ParallelMode, Server};

use catchup::{config, cpu_secs, env_u64, settle, TABLES};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

struct Row {
    name: String,
    secs: f64,
}

fn main() -> Result<()> {
    catchup::block_on(run())
}

async fn run() -> Result<()> {
    let events = env_u64("OUTFLOW_BENCH_APPLY_EVENTS", 100_000)?;
    let frame_mb = env_u64("OUTFLOW_BENCH_APPLY_FRAME_MB", 16)?;
    let threads: Vec<usize> = std::env::var("OUTFLOW_BENCH_APPLY_THREADS")
        .unwrap_or_else(|_| "1,2,4".to_string())
        .split(',')
        .map(|t| t.trim().parse().context("OUTFLOW_BENCH_APPLY_THREADS"))
        .collect::<Result<_>>()?;
    let forms: Vec<bool> = std::env::var("OUTFLOW_BENCH_APPLY_FORMS")
        .unwrap_or_else(|_| "params".to_string())
        .split(',')
        .map(|f| match f.trim() {
            "params" => Ok(true),
            "literals" => Ok(false),
            other => {
                anyhow::bail!("OUTFLOW_BENCH_APPLY_FORMS: {other:?} is not params or literals")
            }
        })
        .collect::<Result<_>>()?;
    let runs: Vec<(usize, bool)> = threads
        .iter()
        .flat_map(|&n| forms.iter().map(move |&f| (n, f)))
        .collect();

    let source = Server::start(config().binlog_row_metadata(outflow_testkit::RowMetadata::Full))?;
    let native1 = Server::start(config().slave_parallel_threads(0))?;
    let native4 = Server::start(
        config()
            .slave_parallel_threads(4)
            .slave_parallel_mode(ParallelMode::Optimistic),
    )?;
    let mut outflows = Vec::new();
    for _ in &runs {
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

    for (&(n, prepared_statements), outflow) in runs.iter().zip(&outflows) {
        let form = if prepared_statements {
            "params"
        } else {
            "literals"
        };
        let cfg = ApplyConfig {
            apply_threads: std::num::NonZeroUsize::new(n).context("threads must be > 0")?,
            prepared_statements,
            ..ApplyConfig::default()
        };
        let mut applier = Applier::connect(outflow.opts(), cfg).await?;
        let mut decoder = Decoder::new(Limits::default())?;
        let mut batch = ChangeBatch::default();
        let target_pid = outflow.pid().map(|p| p.to_string()).unwrap_or_default();
        settle().await;
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
            name: format!("outflow, {n} conn, {form}, {frame_mb} MiB frames"),
            secs,
        });
        println!(
            "outflow, {n} connection(s), {form}: {} target commits, {} statements ({:.1} changes \
             each; {} executes), {} careful replays, {:.1} MB of SQL or parameters, {:.2} heap allocations per row \
             change; CPU: {cpu_self:.2} s in this process (decode, SQL), {cpu_target:.2} s \
             in the target mariadbd, over {secs:.2} s; of which building {:.2} s, executing \
             {:.2} s, committing {:.2} s",
            s.commits,
            s.statements,
            (s.inserted + s.updated + s.deleted) as f64 / s.statements.max(1) as f64,
            s.executes,
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
        settle().await;
        let t = Instant::now();
        r.exec("START SLAVE").await?;
        wait_caught_up(&source, r, Duration::from_secs(3600)).await?;
        results.push(Row {
            name: name.to_string(),
            secs: t.elapsed().as_secs_f64(),
        });
    }

    // BINLOG-statement replay, grouped as outflow groups.
    let replay_on = env_u64("OUTFLOW_BENCH_APPLY_REPLAY", 1)? != 0;
    if replay_on {
        let group = env_u64("OUTFLOW_BENCH_APPLY_REPLAY_TXNS", 5_000)?.max(1);
        let mut conn = replay.conn().await?;
        let target_pid = replay.pid().map(|p| p.to_string()).unwrap_or_default();
        settle().await;
        let cpu_target = cpu_secs(&target_pid);
        let t = Instant::now();
        let commits = binlog_replay(&mut conn, &backlog.files, group).await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "BINLOG-statement replay: {commits} target commits of up to {group} source \
             transactions; CPU: {:.2} s in the target mariadbd, over {secs:.2} s",
            cpu_secs(&target_pid) - cpu_target
        );
        results.push(Row {
            name: format!("BINLOG replay, {group} txns per commit"),
            secs,
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

/// Replays the backlog's row events through `BINLOG '...'` statements, `group` source
/// transactions per target transaction, and returns the number of target commits. The
/// server applies them as a replica's SQL thread would (row lookups by primary key, no SQL
/// parsing of values), so this is what BINLOG-statement replay costs the target; it keeps no
/// checkpoint, so it is a lower bound. A BINLOG statement is cut after the end of a source
/// statement once it holds 1 MiB of events (the table map must come with its rows). Each
/// statement is a query of its own: mariadbd answers a BINLOG statement inside a
/// multi-statement query in a way mysql_async reports as `PacketsOutOfSync`.
async fn binlog_replay(
    conn: &mut mysql_async::Conn,
    files: &[std::path::PathBuf],
    group: u64,
) -> Result<u64> {
    use mysql_async::prelude::Queryable;
    use outflow_binlog::event_type::code;
    use outflow_binlog::header::{EventHeader, MAGIC};
    use outflow_binlog::rows::STMT_END_F;
    use outflow_binlog::stream::split_events;

    let (mut events, mut sql) = (Vec::new(), String::new());
    let (mut in_group, mut commits, mut fde_sent) = (0u64, 0u64, false);
    for f in files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let body = data.strip_prefix(&MAGIC[..]).context("not a binlog file")?;
        for ev in split_events(body) {
            let (_, ev) = ev.map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            let h = EventHeader::parse(ev).map_err(|e| anyhow::anyhow!("{e}"))?;
            let rows = matches!(
                h.type_code,
                code::WRITE_ROWS_V1
                    | code::UPDATE_ROWS_V1
                    | code::DELETE_ROWS_V1
                    | code::WRITE_ROWS_V2
                    | code::UPDATE_ROWS_V2
                    | code::DELETE_ROWS_V2
            );
            match h.type_code {
                code::FORMAT_DESCRIPTION if !fde_sent => {
                    // The server must know the event format before any row event; the
                    // first target transaction opens after it.
                    events.extend_from_slice(ev);
                    binlog_statement(conn, &mut sql, &mut events).await?;
                    conn.query_drop("BEGIN").await?;
                    fde_sent = true;
                }
                code::TABLE_MAP => events.extend_from_slice(ev),
                _ if rows => {
                    events.extend_from_slice(ev);
                    // Flags follow the 6-byte table id in the post-header.
                    let flags = ev
                        .get(25..27)
                        .map_or(0, |f| u16::from_le_bytes([f[0], f[1]]));
                    if flags & STMT_END_F != 0 && events.len() >= 1 << 20 {
                        binlog_statement(conn, &mut sql, &mut events).await?;
                    }
                }
                code::XID => {
                    in_group += 1;
                    if in_group == group {
                        binlog_statement(conn, &mut sql, &mut events).await?;
                        conn.query_drop("COMMIT; BEGIN").await?;
                        in_group = 0;
                        commits += 1;
                    }
                }
                _ => {}
            }
        }
    }
    binlog_statement(conn, &mut sql, &mut events).await?;
    conn.query_drop("COMMIT").await?;
    commits += u64::from(in_group > 0);
    Ok(commits)
}

/// Sends `events` as one `BINLOG` statement (nothing when empty) and empties it.
async fn binlog_statement(
    conn: &mut mysql_async::Conn,
    sql: &mut String,
    events: &mut Vec<u8>,
) -> Result<()> {
    use base64::Engine;
    use mysql_async::prelude::Queryable;
    if events.is_empty() {
        return Ok(());
    }
    sql.clear();
    sql.push_str("BINLOG '");
    base64::engine::general_purpose::STANDARD.encode_string(&events[..], sql);
    sql.push('\'');
    conn.query_drop(sql.as_str()).await?;
    events.clear();
    Ok(())
}

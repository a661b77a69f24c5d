//! What the catch-up benches (`apply`, `e2e`) share: a sysbench `oltp_write_only` source
//! whose targets start from the state after `prepare`, then a backlog of transactions in
//! fresh binlog files that every target catches up from; server settings; CPU time.
//!
//! Why not the decode bench's cached binlog: it holds the workload only, and a replica
//! needs the state the workload started from. So a run builds both: the source gets the
//! sysbench `prepare` (4 tables of 100,000 rows, as in `support`), every target follows it
//! as a native replica, then the replicas stop, and the source runs the workload into fresh
//! binlog files: the backlog.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outflow_testkit::{replicate, wait_caught_up, ReplicationOpts, Server, ServerConfig};
use outflow_testkit::{Sysbench, Workload};

/// The sysbench tables.
pub const TABLES: [&str; 4] = [
    "sbtest.sbtest1",
    "sbtest.sbtest2",
    "sbtest.sbtest3",
    "sbtest.sbtest4",
];

/// Transactions per sysbench run (fresh seed each), as in `support`.
const BATCH_EVENTS: u64 = 20_000;

/// Runs a bench's `run` on a runtime of two workers, one per core of the machine the
/// figures come from.
pub fn block_on(run: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run)
}

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
#[allow(dead_code)] // the apply bench runs each setting once
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `name` parsed, or `default` when it is not set.
pub fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

/// Every server of a catch-up bench: the kit's defaults (`innodb_flush_log_at_trx_commit=2`,
/// `sync_binlog=0`), one binlog file up to 1 GiB, and a buffer pool that holds the tables,
/// so that no run is bound by page reads. Replication starts only when a bench says so,
/// also after a server is restarted from saved files.
pub fn config() -> ServerConfig {
    ServerConfig::new()
        .flag("skip-slave-start")
        .max_binlog_size(1 << 30)
        .option("innodb_buffer_pool_size", "512M")
        .option("innodb_log_file_size", "256M")
}

/// CPU seconds used so far by process `pid` (`self` for this one), user and system, from
/// `/proc/PID/stat` in clock ticks of 1/100 s. That count includes threads that have
/// exited (a per-thread sum would lose them: a server's connection threads come and go).
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // After the command name in brackets: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) as f64 / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds the whole machine has been busy so far (every core, every process), from the
/// first line of `/proc/stat`: user, nice, system, irq, softirq and steal, in clock ticks
/// of 1/100 s (`USER_HZ`, fixed at 100 on Linux).
pub fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy as f64 / 100.0
}

/// Waits until the machine is idle (under a fifth of a core busy for a whole second), at
/// most a minute, and returns the seconds waited. A server keeps working after it has
/// applied a backlog (InnoDB purges the old row versions, flushes pages), and a run timed
/// while it does so shares the CPU with it: each timed run starts on a quiet machine.
pub async fn settle() -> f64 {
    let t = Instant::now();
    let (mut last, mut quiet) = (machine_busy_secs(), 0);
    while quiet < 5 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = machine_busy_secs();
        quiet = if now - last < 0.04 { quiet + 1 } else { 0 };
        last = now;
    }
    t.elapsed().as_secs_f64()
}

/// The workload: 4 tables of 100,000 rows, 4 client threads.
pub fn sysbench() -> Sysbench {
    Sysbench::new(Workload::OltpWriteOnly)
        .tables(4)
        .table_size(100_000)
        .threads(4)
}

/// Runs the sysbench `prepare` on `source` with every one of `targets` following it as a
/// native replica, then stops their replication (configured still, so `START SLAVE`
/// resumes it from there).
pub async fn prepare(source: &Server, targets: &[&Server]) -> Result<()> {
    println!("preparing: sysbench prepare, 4 tables x 100,000 rows, followed by every target");
    let t = Instant::now();
    for r in targets {
        replicate(source, r, ReplicationOpts::default()).await?;
    }
    sysbench().prepare(source)?;
    for r in targets {
        wait_caught_up(source, r, Duration::from_secs(600)).await?;
        r.exec("STOP SLAVE").await?;
    }
    println!("  {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// The binlog a bench catches up from.
pub struct Backlog {
    /// Its files, in order, each closed (the source has moved on to the next).
    pub files: Vec<PathBuf>,
    /// Their bytes together.
    pub binlog_bytes: u64,
    /// The source's `gtid_binlog_pos` after the last of them.
    pub gtid_after: String,
}

/// Runs `events` sysbench transactions on `source` into fresh binlog files.
pub async fn backlog(source: &Server, events: u64) -> Result<Backlog> {
    source.flush_binary_logs().await?;
    let first = source
        .binlog_files()?
        .pop()
        .context("no binlog after FLUSH")?;
    println!("backlog: sysbench oltp_write_only, {events} transactions, 4 threads");
    let t = Instant::now();
    let (mut done, mut seed) = (0, 0);
    while done < events {
        seed += 1;
        let n = BATCH_EVENTS.min(events - done);
        Sysbench {
            rand_seed: seed,
            events: Some(n),
            ..sysbench()
        }
        .run(source)?;
        done += n;
    }
    source.flush_binary_logs().await?;
    let files = source.binlog_files()?;
    let start = files
        .iter()
        .position(|f| *f == first)
        .context("workload binlog gone")?;
    let files: Vec<PathBuf> = files[start..files.len() - 1].to_vec();
    let binlog_bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    println!(
        "  {:.1} s, {:.1} MB of binlog in {} files",
        t.elapsed().as_secs_f64(),
        binlog_bytes as f64 / 1e6,
        files.len()
    );
    Ok(Backlog {
        files,
        binlog_bytes,
        gtid_after: source.gtid_binlog_pos().await?,
    })
}

//! The README's demo: the most complete real path outflow has today, end to end on this
//! machine, on throwaway servers.
//!
//! 1. Start a MariaDB source (ROW binlog, GTID) and drive a sysbench `oltp_write_only` load.
//! 2. Replicate it natively into a second server (the baseline outflow will be measured
//!    against) and wait until it has caught up.
//! 3. Decode the source's binlog with outflow's decoder: print a few changes in the
//!    `outflow inspect` JSON-lines format, then decode every value and print throughput.
//!
//! Not built yet (see the README's status): the live replication client, the egress codec,
//! the QUIC transport and the sink. When they land, this demo relays source → QUIC → sink.

use std::time::{Duration, Instant};

use anyhow::Context;
use outflow::inspect::{walk_file, JsonLines, Stats};
use outflow_binlog::walk::Walker;
use outflow_testkit::{
    replicate, wait_caught_up, ReplicationOpts, Server, ServerConfig, Sysbench, Workload,
};

const TABLES: u32 = 4;
const TABLE_SIZE: u64 = 20_000;
const LOAD_SECONDS: u64 = 10;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    println!("== starting a throwaway MariaDB source and a native replica");
    let source = Server::start(
        ServerConfig::new()
            .gtid_domain_id(1)
            .log_slave_updates(true),
    )
    .context("starting the source")?;
    let replica =
        Server::start(ServerConfig::new().gtid_domain_id(2)).context("starting the replica")?;
    println!(
        "   source  {} (data in {})",
        source.url(),
        source.data_dir().display()
    );
    println!("   replica {}", replica.url());

    println!("== sysbench oltp_write_only: prepare {TABLES} x {TABLE_SIZE} rows, then {LOAD_SECONDS} s of load");
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(TABLES)
        .table_size(TABLE_SIZE)
        .threads(2)
        .time(Duration::from_secs(LOAD_SECONDS))
        .events(0);
    bench.prepare(&source).context("sysbench prepare")?;
    replicate(&source, &replica, ReplicationOpts::default())
        .await
        .context("starting native replication")?;
    let out = bench.run(&source).context("sysbench run")?;
    if let Some(line) = out.lines().find(|l| l.contains("transactions:")) {
        println!("   {}", line.trim());
    }

    let caught = Instant::now();
    wait_caught_up(&source, &replica, Duration::from_secs(300))
        .await
        .context("waiting for the native replica")?;
    let mut verified = 0;
    for i in 1..=TABLES {
        let t = format!("sbtest.sbtest{i}");
        let (a, b) = (
            source.checksum_table(&t).await?,
            replica.checksum_table(&t).await?,
        );
        anyhow::ensure!(a == b, "native replica differs on {t}");
        verified += 1;
    }
    println!(
        "== native replica caught up ({:.1} s after the load); {verified} tables checksum-equal",
        caught.elapsed().as_secs_f64()
    );

    source.flush_binary_logs().await?;
    let files = source.binlog_files()?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "== outflow decodes the source's binlog: {} files, {:.1} MB",
        files.len(),
        bytes as f64 / 1e6
    );

    println!("-- the last three row changes, as `outflow inspect` prints them:");
    let mut lines = Vec::new();
    for f in &files {
        let mut v = JsonLines::new(
            &mut lines,
            &f.file_name().unwrap_or_default().to_string_lossy(),
        );
        walk_file(f, &mut Walker::new(), &mut v)?;
    }
    let text = String::from_utf8(lines)?;
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(3)..] {
        let shown: String = l.chars().take(300).collect();
        println!("{shown}{}", if l.len() > 300 { " ..." } else { "" });
    }

    println!("-- every value of every row decoded (`outflow inspect --stats`):");
    let mut stats = Stats::default();
    let start = Instant::now();
    let mut read = 0;
    for f in &files {
        read += walk_file(f, &mut Walker::new(), &mut stats)?;
    }
    stats.print(
        &mut std::io::stdout().lock(),
        files.len(),
        read,
        start.elapsed().as_secs_f64(),
    )?;
    anyhow::ensure!(
        stats.total_rows as usize == all.len(),
        "stats and JSON lines disagree"
    );

    println!(
        "== done in {:.1} s; the servers and their files are removed on exit",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "   not built yet: live source, egress codec, QUIC transport, replica sink (see README)"
    );
    Ok(())
}

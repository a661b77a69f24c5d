//! The README's demo: outflow end to end on this machine, on throwaway servers.
//!
//! 1. Start a MariaDB source (ROW binlog, GTID), a native replica (the baseline) and an
//!    empty target for outflow, which gets the schema only (DDL is not relayed yet).
//! 2. Drive a sysbench `oltp_write_only` load on the source while native replication and
//!    `outflow run` (source -> codec -> spool -> QUIC with mutual TLS -> exactly-once
//!    apply) both follow it.
//! 3. Wait for both to catch up, compare checksums, run `outflow verify`, and show what the
//!    codec puts on the wire (`outflow estimate` over the same binlog) and a few changes as
//!    `outflow inspect` prints them.
//!
//! `scripts/demo.sh` builds the `outflow` binary first and passes its path in `OUTFLOW_BIN`.

use std::process::{Command, Stdio};
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
    let target =
        Server::start(ServerConfig::new().gtid_domain_id(3)).context("starting the target")?;
    let outflow_bin =
        std::env::var("OUTFLOW_BIN").unwrap_or_else(|_| "target/release/outflow".into());
    println!(
        "   source  {} (data in {})",
        source.url(),
        source.data_dir().display()
    );
    println!("   replica {}", replica.url());
    println!("   target  {} (outflow applies here)", target.url());

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
    target.exec("CREATE DATABASE sbtest").await?;
    for i in 1..=TABLES {
        let rows: Vec<(String, String)> = source
            .query_rows(&format!("SHOW CREATE TABLE sbtest.sbtest{i}"))
            .await?;
        target.exec(&format!("USE sbtest; {}", rows[0].1)).await?;
    }
    let work = tempfile::tempdir()?;
    let log_path = work.path().join("outflow-run.log");
    println!(
        "== outflow run --source {} --target {} --spool <tmp> (log: {})",
        outflow::config::redact_url(&source.url()),
        outflow::config::redact_url(&target.url()),
        log_path.display()
    );
    let mut relay = Command::new(&outflow_bin)
        .args(["run", "--source", &source.url(), "--target", &target.url()])
        .args(["--tls-mode", "disabled", "--spool"])
        .arg(work.path().join("spool"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| {
            format!("starting {outflow_bin} (build it with cargo build --release -p outflow)")
        })?;
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
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut equal = true;
        for i in 1..=TABLES {
            let t = format!("sbtest.sbtest{i}");
            equal &= source.checksum_table(&t).await? == target.checksum_table(&t).await?;
        }
        if equal {
            break;
        }
        if let Some(status) = relay.try_wait()? {
            anyhow::bail!(
                "outflow run exited ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "outflow's target did not catch up in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "== outflow's target caught up ({:.1} s after the load); {TABLES} tables checksum-equal",
        caught.elapsed().as_secs_f64()
    );
    relay.kill()?;
    relay.wait()?;
    let tables: Vec<String> = (1..=TABLES).map(|i| format!("sbtest.sbtest{i}")).collect();
    let verify = Command::new(&outflow_bin)
        .args([
            "verify",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
            "--tables",
        ])
        .arg(tables.join(","))
        .output()?;
    print!(
        "-- outflow verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    anyhow::ensure!(verify.status.success(), "outflow verify found differences");

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

    println!("-- what the codec ships for this binlog (`outflow estimate`, replica mode):");
    let estimate = Command::new(&outflow_bin)
        .arg("estimate")
        .args(&files)
        .output()?;
    print!("{}", String::from_utf8_lossy(&estimate.stdout));
    anyhow::ensure!(
        estimate.status.success(),
        "outflow estimate failed: {}",
        String::from_utf8_lossy(&estimate.stderr)
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
    Ok(())
}

//! End to end: a sysbench `oltp_write_only` backlog caught up into a fresh target by the
//! real `outflow run` process (binlog dump, decode, codec, spool, loopback QUIC with mutual
//! TLS, exactly-once apply), once with the defaults and once with `--apply-threads 1` (the
//! setting under which no reader ever sees part of a source transaction), next to native MariaDB replication with one SQL thread and
//! with 4 optimistic parallel threads, in the same run, from the same backlog, each target
//! starting from the same state. Then wire bytes (outflow's UDP bytes against what a native
//! replica fetches, with and without `slave_compressed_protocol`), `outflow verify` of
//! every target against the source, and a table.
//!
//! Run with `cargo bench --bench e2e`. Environment:
//! - `OUTFLOW_BENCH_E2E_EVENTS`: sysbench transactions in the backlog (default 180,000,
//!   about 400 MB of binlog: the reference backlog is 177,950 transactions);
//! - `OUTFLOW_BENCH_E2E_ROUNDS`: rounds (default 4: each contender once in each place of
//!   the order); the table gives each contender's median and lists every round;
//! - `OUTFLOW_BENCH_E2E_ARGS`: extra flags for `outflow run`, split at spaces (e.g.
//!   `--batch-bytes 16MiB`), to measure a setting against the defaults;
//! - `OUTFLOW_BENCH_E2E_WRAP`: a command that runs `outflow run`, split at spaces, for
//!   profiling (e.g. `strace -f -tt -o FILE`); its CPU time is then counted as outflow's;
//! - `OUTFLOW_BENCH_E2E_LOG`: keep each `outflow run`'s log (its standard error) in this
//!   file with `.1`, `.2`, ... appended, one per run in the order of the table;
//! - `OUTFLOW_BIN`: the `outflow` binary; by default the bench builds it first with
//!   `cargo build --release -p outflow` and runs what cargo reports.
//!
//! Rounds: one sample per contender is at the mercy of this machine's moods (the same
//! replica has taken 11 s and 15 s for the same backlog in one session), so each contender
//! catches up the backlog once per round, in an order turned by one place each round, and
//! the table gives medians. Every round starts
//! each target from the same files, saved after the `prepare` (`Server::save_data`,
//! `restore_data`), with its tables then read whole into the buffer pool (`warm`),
//! as on a replica that has been running. A restart leaves InnoDB's redo checkpoint at
//! zero, so every catch-up starts with the whole redo log free.
//!
//! What is timed, each alone on the machine and started once it is idle (`catchup::settle`:
//! a server goes on purging and flushing after it has applied a backlog):
//! - native: `START SLAVE` until the replica's `gtid_slave_pos` covers the source's last
//!   GTID (the kit's `wait_caught_up`, polling every 20 ms); the IO thread fetches while
//!   the SQL thread(s) apply, as in production;
//! - outflow: from spawning `outflow run --from gtid:<before the backlog>` until the
//!   target's checkpoint row names the source's last GTID (polled every 20 ms): process
//!   start, schema load and QUIC handshake included.
//!
//! Wire bytes: for native replication, the source's `Bytes_sent` growth over a run (so the
//! source must be otherwise idle; the polling adds a few hundred KB at most); with
//! `slave_compressed_protocol`, an extra replica's IO thread only fetches the backlog
//! (`outflow_testkit::io_thread_bytes`). For outflow, the UDP payload bytes its link sent
//! and received (QUIC headers, acknowledgements and retransmissions included), read from
//! the progress line `outflow run` prints every 5 s, the first one after the catch-up.
//!
//! CPU seconds of the outflow process, of the source and of the target `mariadbd` are
//! printed for each run: on a 2-core machine they say where the time goes.

mod catchup;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use outflow_binlog::walk::Walker;
use outflow_testkit::{
    bytes_sent, global_status, gtid_pos_covers, io_thread_bytes, parse_gtid_pos, wait_caught_up,
    ParallelMode, Server,
};

use catchup::{config, cpu_secs, env_u64, machine_busy_secs, median, settle, TABLES};

/// One target's line in the table.
struct Line {
    name: String,
    /// Seconds to catch up, one per round; empty for the fetch-only row.
    secs: Vec<f64>,
    wire_bytes: u64,
    verify: String,
}

fn main() -> Result<()> {
    catchup::block_on(run())
}

/// The `outflow` binary: `OUTFLOW_BIN`, or what `cargo build --release -p outflow` built.
fn outflow_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("OUTFLOW_BIN") {
        return Ok(bin.into());
    }
    println!("building the outflow binary: cargo build --release -p outflow");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // Cargo gives a bench the variables of its own package; build scripts that watch one
    // of them (ring's watches CARGO_MANIFEST_DIR) would see a change and rebuild the tree.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            build.env_remove(key.as_ref());
        }
    }
    let out = build
        .args(["build", "--release", "-p", "outflow", "--bin", "outflow"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    ensure!(
        out.status.success(),
        "cargo build --release -p outflow failed"
    );
    // The compiler-artifact message of the binary names the executable.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "outflow" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    bail!("cargo build reported no outflow executable")
}

/// `outflow verify` of every sysbench table of `target` against `source`: `clean` and its
/// summary, or an error with the whole report if it found differences.
fn verify(bin: &Path, source: &Server, target: &Server) -> Result<String> {
    let out = Command::new(bin)
        .args([
            "verify",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
        ])
        .args(["--tables", &TABLES.join(",")])
        .output()
        .context("running outflow verify")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "outflow verify failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let tables = summary
        .trim_start_matches("verify: ")
        .split(',')
        .next()
        .unwrap_or_default();
    Ok(format!("clean ({tables})"))
}

/// The last GTID the target's checkpoint row names, if there is one yet.
async fn checkpoint_gtid(target: &Server) -> Option<String> {
    target
        .query_scalar::<Option<String>>(
            "SELECT gtid FROM outflow.checkpoint WHERE stream = 'default' \
             AND txns_applied = txns_in_frame",
        )
        .await
        .ok()
        .flatten()
}

/// The number after `key: ` in `line` (the link metrics' `Debug` form).
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}: "))? + key.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn source_lines(log: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(log) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(std::io::Result::ok)
        .filter(|l| l.starts_with("source: "))
        .collect()
}

/// Stops a child process we started and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

async fn run() -> Result<()> {
    let events = env_u64("OUTFLOW_BENCH_E2E_EVENTS", 180_000)?;
    let rounds = env_u64("OUTFLOW_BENCH_E2E_ROUNDS", 4)?.max(1);
    let extra: Vec<String> = std::env::var("OUTFLOW_BENCH_E2E_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let bin = outflow_bin()?;
    println!("outflow: {}", bin.display());

    let source = Server::start(config())?;
    let mut native1 = Server::start(config().slave_parallel_threads(0))?;
    let mut native4 = Server::start(
        config()
            .slave_parallel_threads(4)
            .slave_parallel_mode(ParallelMode::Optimistic),
    )?;
    let compressed = Server::start(config().slave_compressed_protocol(true))?;
    // Like the replicas, which do not log what they apply (`log_slave_updates` off).
    let mut target = Server::start(config().log_bin(false))?;
    let mut target1 = Server::start(config().log_bin(false))?;

    catchup::prepare(
        &source,
        &[&native1, &native4, &compressed, &target, &target1],
    )
    .await?;
    for t in [&target, &target1] {
        t.exec("RESET SLAVE ALL").await?;
    }
    // The state every round starts from.
    for t in [&mut native1, &mut native4, &mut target, &mut target1] {
        t.save_data()?;
    }
    let before = source.gtid_binlog_pos().await?;
    let backlog = catchup::backlog(&source, events).await?;

    // What the backlog holds, from the files (not timed).
    let mut stats = outflow::inspect::Stats::default();
    let mut walker = Walker::new();
    for f in &backlog.files {
        outflow::inspect::walk_file(f, &mut walker, &mut stats)?;
    }
    let rows = stats.total_rows;
    let (b, a) = (
        parse_gtid_pos(&before).map_err(anyhow::Error::msg)?,
        parse_gtid_pos(&backlog.gtid_after).map_err(anyhow::Error::msg)?,
    );
    let txns: u64 = a
        .iter()
        .map(|(d, s)| s - b.get(d).copied().unwrap_or(0))
        .sum();
    println!(
        "  {txns} transactions, {rows} row changes, GTIDs {before} .. {}",
        backlog.gtid_after
    );

    let (wire, relay) = io_thread_bytes(&source, &compressed, Duration::from_secs(600)).await?;
    println!(
        "native replica with slave_compressed_protocol, IO thread only: source Bytes_sent \
         {wire}, relay logs {relay}"
    );
    let mut lines = vec![Line {
        name: "native, slave_compressed_protocol (fetch)".to_string(),
        secs: Vec::new(),
        wire_bytes: wire,
        verify: "-".to_string(),
    }];
    for name in [
        NATIVE_1,
        NATIVE_4,
        "outflow run (source -> QUIC -> sink)",
        "outflow run, --apply-threads 1",
    ] {
        lines.push(Line {
            name: name.to_string(),
            secs: Vec::new(),
            wire_bytes: 0,
            verify: String::new(),
        });
    }

    let source_pid = source.pid().map(|p| p.to_string()).unwrap_or_default();
    for round in 1..=rounds {
        println!(
            "\nround {round} of {rounds}: every target back to its saved state, then read whole"
        );
        for t in [&mut native1, &mut native4, &mut target, &mut target1] {
            t.restore_data()?;
            warm(t).await?;
        }

        // One contender at a time, in an order turned by one place each round: a run's
        // place in the round must not decide its time (the first paired trials, 4 against
        // 8 MiB frames, favoured whichever ran later).
        let targets = [&native1, &native4, &target, &target1];
        for k in 0..targets.len() {
            let i = (k + round as usize - 1) % targets.len();
            let (line, r) = (&mut lines[1 + i], targets[i]);
            if i >= 2 {
                // outflow run, from the GTID before the backlog: with the defaults (plus
                // the extra flags), or on one connection, where no reader ever sees a
                // partial transaction.
                let mut flags = extra.clone();
                if i == 3 {
                    flags.extend(["--apply-threads".to_string(), "1".to_string()]);
                }
                let run = Run {
                    bin: &bin,
                    source: &source,
                    target: r,
                    before: &before,
                    gtid_after: &backlog.gtid_after,
                    extra: &flags,
                    nth: (round as usize - 1) * 2 + i - 1,
                };
                let (secs, wire) = run.measure(&line.name).await?;
                line.secs.push(secs);
                line.wire_bytes = wire;
                continue;
            }
            // Native replication.
            let pid = r.pid().map(|p| p.to_string()).unwrap_or_default();
            let settled = settle().await;
            let (cpu_src, cpu_rep) = (cpu_secs(&source_pid), cpu_secs(&pid));
            let sent = bytes_sent(&source).await?;
            let redo = Redo::read(r).await?;
            let busy = machine_busy_secs();
            let t = Instant::now();
            r.exec("START SLAVE").await?;
            wait_caught_up(&source, r, Duration::from_secs(3600)).await?;
            let secs = t.elapsed().as_secs_f64();
            let busy = machine_busy_secs() - busy;
            line.wire_bytes = bytes_sent(&source).await? - sent;
            println!(
                "{}: {secs:.2} s; CPU: {:.2} s in the replica, {:.2} s in the source, \
                 {busy:.2} s on the whole machine (started after {settled:.1} s of waiting \
                 for an idle machine); {}",
                line.name,
                cpu_secs(&pid) - cpu_rep,
                cpu_secs(&source_pid) - cpu_src,
                redo.since(r).await?
            );
            line.secs.push(secs);
        }

        // Every target against the source.
        for (line, server) in lines[1..].iter_mut().zip(targets) {
            line.verify = verify(&bin, &source, server)?;
        }
    }

    let reference = |name: &str| {
        lines
            .iter()
            .find(|l| l.name == name)
            .map(|l| median(&l.secs))
            .unwrap_or(f64::NAN)
    };
    let (one, four) = (reference(NATIVE_1), reference(NATIVE_4));
    println!(
        "\nbacklog: {txns} transactions, {rows} row changes, {:.1} MB of binlog; load \
         average at the end {}",
        backlog.binlog_bytes as f64 / 1e6,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "catch-up times are medians of {rounds} rounds (each round: every target restored \
         to the same saved state, its tables read into the buffer pool, then each timed \
         alone on an idle machine); ratios are of medians"
    );
    println!(
        "{:<42} {:>8} {:>9} {:>9} {:>8} {:>8} {:>12} {:>8}  verify",
        "catch-up", "seconds", "txn/s", "rows/s", "vs 1 thr", "vs 4 thr", "wire bytes", "% binlog"
    );
    for l in &lines {
        let timing = if l.secs.is_empty() {
            format!("{:>8} {:>9} {:>9} {:>8} {:>8}", "-", "-", "-", "-", "-")
        } else {
            let s = median(&l.secs);
            format!(
                "{s:>8.2} {:>9.0} {:>9.0} {:>7.2}x {:>7.2}x",
                txns as f64 / s,
                rows as f64 / s,
                one / s,
                four / s
            )
        };
        let every = if rounds > 1 && !l.secs.is_empty() {
            " every round"
        } else {
            ""
        };
        println!(
            "{:<42} {timing} {:>12} {:>7.2}%  {}{every}",
            l.name,
            l.wire_bytes,
            100.0 * l.wire_bytes as f64 / backlog.binlog_bytes as f64,
            l.verify
        );
    }
    println!("\nevery round, in order:");
    let natives = &lines[1].secs;
    for l in lines.iter().filter(|l| !l.secs.is_empty()) {
        let each: Vec<String> = l
            .secs
            .iter()
            .zip(natives)
            .map(|(s, n)| format!("{s:.2} s ({:.2}x)", n / s))
            .collect();
        println!("  {:<42} {}", l.name, each.join(" / "));
    }
    println!("  (in brackets: native 1 SQL thread's time in the same round, divided by it)");
    Ok(())
}

/// Reads every page of the sysbench tables (clustered index and `k_N`) into `server`'s
/// buffer pool, as a replica that has been running holds them: a target restored from saved
/// files starts with an empty one.
pub async fn warm(server: &Server) -> Result<()> {
    for t in TABLES {
        // sysbench names table N's secondary index k_N.
        let n = t.trim_start_matches("sbtest.sbtest");
        server.exec(&format!("CHECKSUM TABLE {t}")).await?;
        server
            .exec(&format!(
                "SELECT SUM(k) FROM {t} FORCE INDEX (k_{n}) WHERE k >= 0"
            ))
            .await?;
    }
    Ok(())
}

/// The table's reference rows.
const NATIVE_1: &str = "native replica, 1 SQL thread";
const NATIVE_4: &str = "native replica, 4 parallel threads";

/// A target's InnoDB redo log before a catch-up. The log is a ring: once the checkpoint
/// age (redo not yet covered by flushed pages) nears its limit, InnoDB flushes dirty pages
/// before it lets writers go on, so a catch-up that starts with an old checkpoint and writes
/// more than the room left runs partly at the speed of page flushing.
struct Redo {
    written: u64,
    age: u64,
}

impl Redo {
    async fn read(server: &Server) -> Result<Redo> {
        Ok(Redo {
            written: global_status(server, "Innodb_os_log_written").await?,
            age: global_status(server, "Innodb_checkpoint_age").await?,
        })
    }

    /// What the catch-up wrote, against the room the log had when it started.
    async fn since(&self, server: &Server) -> Result<String> {
        let now = Redo::read(server).await?;
        let max = global_status(server, "Innodb_checkpoint_max_age").await?;
        let mb = |b: u64| b as f64 / 1e6;
        Ok(format!(
            "redo: {:.0} MB written, checkpoint age {:.0} MB at the start and {:.0} MB at the \
             end, of at most {:.0} MB",
            mb(now.written - self.written),
            mb(self.age),
            mb(now.age),
            mb(max)
        ))
    }
}

/// One `outflow run` catch-up of the backlog into a target.
struct Run<'a> {
    bin: &'a Path,
    source: &'a Server,
    target: &'a Server,
    /// The GTID position before the backlog (`--from`).
    before: &'a str,
    /// The source's GTID position after the backlog: caught up when the checkpoint covers it.
    gtid_after: &'a str,
    /// Flags after the bench's own.
    extra: &'a [String],
    /// Which `outflow run` of the bench this is, from 1 (names its kept log).
    nth: usize,
}

impl Run<'_> {
    /// Runs `outflow run` until the target's checkpoint covers the backlog; prints its CPU
    /// and progress lines, and returns its seconds and its link's UDP bytes both ways.
    async fn measure(&self, name: &str) -> Result<(f64, u64)> {
        let source_pid = self.source.pid().map(|p| p.to_string()).unwrap_or_default();
        let work = tempfile::tempdir()?;
        let log = work.path().join("outflow-run.log");
        let wrap: Vec<String> = std::env::var("OUTFLOW_BENCH_E2E_WRAP")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut cmd = match wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(self.bin);
                c
            }
            None => Command::new(self.bin),
        };
        cmd.args([
            "run",
            "--source",
            &self.source.url(),
            "--target",
            &self.target.url(),
        ])
        .args([
            "--tls-mode",
            "disabled",
            "--from",
            &format!("gtid:{}", self.before),
        ])
        .arg("--spool")
        .arg(work.path().join("spool"))
        .args(self.extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
        println!(
            "outflow run --from gtid:{} --spool <tmp> {}",
            self.before,
            self.extra.join(" ")
        );
        let target_pid = self.target.pid().map(|p| p.to_string()).unwrap_or_default();
        let settled = settle().await;
        let (cpu_src, cpu_tgt) = (cpu_secs(&source_pid), cpu_secs(&target_pid));
        let redo = Redo::read(self.target).await?;
        let busy = machine_busy_secs();
        let t = Instant::now();
        let mut relay_proc = cmd.spawn().context("starting outflow run")?;
        let relay_pid = relay_proc.id().to_string();
        let deadline = t + Duration::from_secs(3600);
        let (secs, cpu_relay) = loop {
            if let Some(gtid) = checkpoint_gtid(self.target).await {
                if gtid_pos_covers(&gtid, self.gtid_after).map_err(anyhow::Error::msg)? {
                    break (t.elapsed().as_secs_f64(), cpu_secs(&relay_pid));
                }
            }
            if let Some(status) = relay_proc.try_wait()? {
                bail!(
                    "outflow run exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                stop(&mut relay_proc);
                bail!("outflow did not catch up within an hour");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let busy = machine_busy_secs() - busy;
        println!(
            "{name}: {secs:.2} s; CPU: {cpu_relay:.2} s in outflow, {:.2} s in the target, \
             {:.2} s in the source, {busy:.2} s on the whole machine (started after \
             {settled:.1} s of waiting for an idle machine); {}",
            cpu_secs(&target_pid) - cpu_tgt,
            cpu_secs(&source_pid) - cpu_src,
            redo.since(self.target).await?
        );
        // The link's totals: the first progress line printed after the catch-up.
        let seen = source_lines(&log).len();
        let wait = Instant::now();
        let last = loop {
            let now = source_lines(&log);
            if now.len() > seen {
                break now.last().cloned().unwrap_or_default();
            }
            if wait.elapsed() > Duration::from_secs(15) {
                stop(&mut relay_proc);
                bail!(
                    "no progress line from outflow run after the catch-up:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        stop(&mut relay_proc);
        if let Some(keep) = std::env::var_os("OUTFLOW_BENCH_E2E_LOG") {
            let mut keep = keep;
            keep.push(format!(".{}", self.nth));
            std::fs::copy(&log, &keep).context("copying the outflow run log")?;
        }
        println!("  progress, as outflow run printed it every 5 s:");
        for l in std::fs::read_to_string(&log)?.lines() {
            if l.starts_with("source: ") || l.starts_with("sink: ") {
                // The link's full metrics make the line long; the counts are enough here.
                let short = l.split(", link ").next().unwrap_or(l);
                println!("    {short}");
            }
        }
        let (Some(payload), Some(sent), Some(received)) = (
            field(&last, "payload_bytes"),
            field(&last, "wire_bytes_sent"),
            field(&last, "wire_bytes_received"),
        ) else {
            bail!("cannot read the link metrics in {last:?}");
        };
        println!(
            "outflow link: {payload} batch payload bytes, {sent} UDP bytes sent, {received} \
             received (acknowledgements)"
        );
        Ok((secs, sent + received))
    }
}

//! The decode bench's input: a sysbench `oltp_write_only` binlog from a throwaway MariaDB,
//! generated once and cached under `<target>/bench-data/`.
//!
//! Generation takes minutes (a 400k-row prepare, then load until the binlog passes
//! [`TARGET_BYTES`]), so the file is kept between runs; bump [`DATA_VERSION`] when the
//! recipe changes, so that a stale file is not measured as if it were the new one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use outflow_testkit::{Server, ServerConfig, Sysbench, Workload};

/// Part of the cached file's name: a new recipe gets a new file.
const DATA_VERSION: u32 = 1;

/// The workload's binlog must reach this size. Large enough that per-file setup (the first
/// TABLE_MAPs, the FORMAT_DESCRIPTION) is noise, and that a pass lasts long enough to time
/// on its own.
const TARGET_BYTES: u64 = 110_000_000;

/// Transactions per sysbench run; the loop checks the binlog size between runs.
const BATCH_EVENTS: u64 = 20_000;

/// Where the input comes from, for the report.
pub struct Input {
    pub path: PathBuf,
    pub origin: String,
}

/// The binlog to decode: `OUTFLOW_BENCH_BINLOG` if set, else the cached sysbench binlog,
/// generated first if missing.
pub fn binlog() -> Result<Input> {
    if let Some(path) = std::env::var_os("OUTFLOW_BENCH_BINLOG") {
        return Ok(Input {
            path: path.into(),
            origin: "OUTFLOW_BENCH_BINLOG".to_string(),
        });
    }
    let dir = target_dir().join("bench-data");
    let path = dir.join(format!("sysbench-oltp-write-only-v{DATA_VERSION}.binlog"));
    if path.is_file() {
        return Ok(Input {
            path,
            origin: "cached".to_string(),
        });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("generating the sysbench binlog (once; cached afterwards)...");
    let started = Instant::now();
    generate(&path)?;
    let secs = started.elapsed().as_secs_f64();
    println!("generated in {secs:.1} s");
    Ok(Input {
        path,
        origin: format!("generated in {secs:.1} s"),
    })
}

/// `CARGO_TARGET_DIR` if set (relative to the workspace root, where `cargo bench` runs
/// benches), else the workspace's `target`.
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn generate(dest: &Path) -> Result<()> {
    let server = Server::start(
        ServerConfig::new()
            // One file for the whole workload; 1 GiB is the server's ceiling.
            .max_binlog_size(1 << 30)
            // The kit's small defaults suit quick tests; 400k rows with their indexes do not
            // fit 64 MB, and a run bound by page reads would take many times longer.
            .option("innodb_buffer_pool_size", "512M")
            .option("innodb_log_file_size", "256M"),
    )?;
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(4)
        .table_size(100_000)
        .threads(4);
    let t = Instant::now();
    bench.prepare(&server)?;
    println!("  prepare: {:.1} s", t.elapsed().as_secs_f64());
    // The prepare's bulk inserts stay in the old file: the bench measures the workload only.
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    let workload = server
        .binlog_files()?
        .pop()
        .context("no binlog file after FLUSH BINARY LOGS")?;
    let t = Instant::now();
    let mut batch = 0;
    while file_len(&workload)? < TARGET_BYTES {
        batch += 1;
        Sysbench {
            // A fresh seed per batch, so batches do not replay the same keys.
            rand_seed: batch,
            events: Some(BATCH_EVENTS),
            ..bench.clone()
        }
        .run(&server)?;
        println!(
            "  run {batch}: binlog at {:.1} MB after {:.1} s",
            file_len(&workload)? as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    // Closing the file writes its ROTATE and clears the in-use flag: the copy is a finished
    // binlog, like any a relay would read after the fact.
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    let files = server.binlog_files()?;
    ensure!(
        files.iter().rev().nth(1) == Some(&workload),
        "the workload did not stay in one binlog file: {files:?}"
    );
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&workload, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
    // Rename last, so that an interrupted generation never leaves a truncated cache entry.
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

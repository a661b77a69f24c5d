//! Wire bytes and speed of the egress codec, side by side with what else could carry the
//! same binlog: `gzip -6` and `zstd -3` of the whole file, and native MariaDB replication
//! with and without `slave_compressed_protocol`, measured on real servers.
//!
//! Run with `cargo bench --bench codec`. Inputs, generated on first use and cached under
//! `<target>/bench-data/`:
//! - the sysbench `oltp_write_only` binlog of the decode bench (`support::binlog`);
//! - a sysbench `prepare` binlog (bulk inserts of 4 tables × 100,000 rows), made here.
//!
//! Both come from servers with the kit's defaults (ROW, FULL images, annotate_rows on, no
//! optional TABLE_MAP metadata), so the binlog does not name primary keys; the bench gives
//! the codec sysbench's key (`id`, column 1), as the live source's schema tracker would.
//!
//! Codec rows use default streaming settings (no compaction, 1 MB batches, zstd level 1)
//! unless the row says otherwise; throughput is the whole path from binlog bytes in memory
//! (decode, build, encode, compress) on one thread, per second of wall time and per second
//! of CPU time (the machines are shared; CPU time is what one core does).
//!
//! Allocations per binlog row (and bytes allocated per row) are counted on a pass of their
//! own over the whole run, warm-up included (the zstd context, buffers growing to their
//! working size); `crates/codec/tests/zero_alloc.rs` holds the steady state to a few
//! allocations per frame.
//!
//! Dictionaries: on `oltp_write_only`, the same path cut to a frame per transaction (the
//! finest streaming), with no zstd dictionary (and, for scale, schemas shipped once per
//! stream instead of in every frame), one for whole payloads, and one per table, trained
//! on the first frames; their bytes are counted over the frames after those, as a share
//! of the binlog after them.
//!
//! Native replication bytes are the source's `Bytes_sent` growth while a replica's IO thread
//! fetches the file; the replica's relay-log bytes are printed beside them as a cross-check. `OUTFLOW_BENCH_NATIVE=0` skips the
//! native replication rows (they start three servers).

mod alloc_count;
mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use criterion::{Criterion, SamplingMode, Throughput};
use outflow_binlog::walk::Walker;
use outflow_binlog::{EventBuffer, TableInfo};
use outflow_codec::{
    train_dictionary, EncoderConfig, Pipeline, PipelineConfig, SchemaShipping, Stats,
    TableDictionary,
};
use outflow_core::ImageMode;
use outflow_testkit::{
    io_thread_bytes, replicate, ReplicationOpts, Server, ServerConfig, Sysbench, UseGtid, Workload,
};

/// Bytes handed to the event buffer at a time (what `outflow estimate` reads at a time).
const READ_CHUNK: usize = 8 << 20;

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// Part of the cached prepare binlog's name: a new recipe gets a new file.
const PREPARE_VERSION: u32 = 1;

fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The cached `prepare` binlog, generated first if missing.
fn prepare_binlog() -> Result<PathBuf> {
    let dir = target_dir().join("bench-data");
    let path = dir.join(format!("sysbench-prepare-v{PREPARE_VERSION}.binlog"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    println!("generating the sysbench prepare binlog (once; cached afterwards)...");
    let server = Server::start(
        ServerConfig::new()
            .max_binlog_size(1 << 30)
            .option("innodb_buffer_pool_size", "512M")
            .option("innodb_log_file_size", "256M"),
    )?;
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    let file = server.binlog_files()?.pop().context("no binlog")?;
    Sysbench::new(Workload::OltpWriteOnly)
        .tables(4)
        .table_size(100_000)
        .prepare(&server)?;
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    let tmp = path.with_extension("tmp");
    std::fs::copy(&file, &tmp)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Sysbench's primary key (`id`, the first column) for its tables.
fn sysbench_keys(t: &mut TableInfo) {
    if t.table.starts_with("sbtest") && t.primary_key.is_empty() && !t.columns.is_empty() {
        t.primary_key = vec![0];
    }
}

/// The whole codec path over `data`; returns its totals.
fn run(data: &[u8], cfg: &PipelineConfig) -> Result<Stats> {
    run_observed(data, cfg, |_, _| {})
}

/// [`run`], calling `observe` with each event's offset and the pipeline after it.
fn run_observed(
    data: &[u8],
    cfg: &PipelineConfig,
    mut observe: impl FnMut(u64, &Pipeline),
) -> Result<Stats> {
    let mut pipeline = Pipeline::new(cfg.clone())?;
    let mut walker = Walker::new();
    walker.decoder().set_table_hook(Box::new(sysbench_keys));
    pipeline.set_file("binlog.000001");
    // Fed in pieces the size of `outflow estimate`'s file reads, as the live path is: one
    // buffer for the whole file would also time zeroing and faulting in 128 MB of memory.
    let mut buf = EventBuffer::new(0);
    let mut magic = false;
    for piece in data.chunks(READ_CHUNK) {
        buf.extend(piece);
        if !magic {
            magic = buf.take_magic()?;
        }
        while let Some((pos, ev)) = buf.next_event()? {
            walker.process(pos, ev, &mut pipeline)?;
            observe(pos, &pipeline);
        }
    }
    ensure!(magic, "not a binlog");
    buf.finish()?;
    pipeline.flush()?;
    Ok(pipeline.stats().clone())
}

/// Frames the dictionaries are trained on; their bytes are left out of the comparison.
const TRAIN_FRAMES: u64 = 2_000;
/// Largest dictionary trained.
const DICT_BYTES: usize = 32 << 10;

/// Streaming at its finest (a frame per transaction, replica mode), where zstd has little
/// history of its own: no dictionary (schemas in every frame, the default, or once per
/// stream), one dictionary for whole payloads, one per table. Dictionaries are trained on
/// the first [`TRAIN_FRAMES`] frames; bytes are counted over the frames after those.
fn dictionaries(data: &[u8]) -> Result<Vec<Line>> {
    let small = PipelineConfig {
        batch_bytes: 0,
        ..config(ImageMode::Replica, false, 1)
    };
    let mut payloads = Vec::new();
    let mut tables: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut seen = 0;
    run_observed(data, &small, |_, p| {
        let frames = p.stats().frames;
        if frames == seen || frames > TRAIN_FRAMES {
            return;
        }
        seen = frames;
        let enc = p.encoder();
        payloads.push(enc.last_payload().to_vec());
        for (t, bytes) in enc.last_table_samples() {
            tables
                .entry(t.qualified_name())
                .or_default()
                .push(bytes.to_vec());
        }
    })?;
    let whole = train_dictionary(&payloads, DICT_BYTES)?;
    let mut per_table = Vec::new();
    for (i, (name, samples)) in tables.iter().enumerate() {
        per_table.push(TableDictionary {
            id: 100 + i as u32,
            dict: train_dictionary(samples, DICT_BYTES)?,
            tables: vec![name.clone()],
        });
    }
    let variants = [
        ("no dictionary", None, vec![], SchemaShipping::EveryFrame),
        (
            "no dictionary, schemas once per stream",
            None,
            vec![],
            SchemaShipping::OncePerStream,
        ),
        (
            "one dictionary",
            Some((1, whole)),
            vec![],
            SchemaShipping::EveryFrame,
        ),
        (
            "a dictionary per table",
            None,
            per_table,
            SchemaShipping::EveryFrame,
        ),
    ];
    let mut lines = Vec::new();
    for (what, dictionary, table_dictionaries, schemas) in variants {
        let cfg = PipelineConfig {
            encoder: EncoderConfig {
                dictionary,
                table_dictionaries,
                schemas,
                ..EncoderConfig::default()
            },
            ..small.clone()
        };
        let mut at_train = None;
        let (stats, speed) = timed(data.len(), || {
            run_observed(data, &cfg, |pos, p| {
                if at_train.is_none() && p.stats().frames == TRAIN_FRAMES {
                    at_train = Some((pos, p.stats().wire_bytes));
                }
            })
        })?;
        let (pos, wire) = at_train.context("fewer frames than the training set")?;
        lines.push(Line {
            what: format!("outflow replica, frame per transaction, {what}"),
            bytes: stats.wire_bytes - wire,
            speed: Some(speed),
            allocs: None,
            of: Some(data.len() as u64 - pos),
        });
    }
    Ok(lines)
}

fn config(mode: ImageMode, compaction: bool, batch_mb: u64) -> PipelineConfig {
    PipelineConfig {
        mode,
        compaction,
        batch_bytes: batch_mb * 1_000_000,
        keep_frames: false,
        ..PipelineConfig::default()
    }
}

/// One line of the comparison.
struct Line {
    what: String,
    bytes: u64,
    /// Binlog MB per second of wall time, and per second of CPU time of this process.
    speed: Option<(f64, f64)>,
    /// Allocations and bytes allocated per binlog row, over a whole run.
    allocs: Option<(f64, f64)>,
    /// Binlog bytes the line's bytes stand for, when not the whole file.
    of: Option<u64>,
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`. The bench
/// runs on shared 2-core machines where wall time also measures the neighbours; CPU time
/// says what one core does.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f`, returning its result and (wall MB/s, CPU MB/s) over `bytes` of input.
fn timed<T>(bytes: usize, f: impl FnOnce() -> Result<T>) -> Result<(T, (f64, f64))> {
    let (t, c) = (Instant::now(), cpu_seconds());
    let r = f()?;
    let mb = bytes as f64 / 1e6;
    let cpu = (cpu_seconds() - c).max(0.01);
    Ok((r, (mb / t.elapsed().as_secs_f64(), mb / cpu)))
}

fn compare(name: &str, path: &Path, data: &[u8]) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    let rows = [
        ("outflow replica", ImageMode::Replica, false, 1),
        ("outflow full", ImageMode::Full, false, 1),
        (
            "outflow replica, compaction, 64 MB batches",
            ImageMode::Replica,
            true,
            64,
        ),
    ];
    for (what, mode, compaction, mb) in rows {
        let cfg = config(mode, compaction, mb);
        let (stats, speed) = timed(data.len(), || run(data, &cfg))?;
        // Counted on a pass of its own, so that the timed one pays nothing for counting.
        alloc_count::start();
        let counted = run(data, &cfg);
        alloc_count::stop();
        let rows = counted?.rows_in.max(1) as f64;
        let allocs = (
            alloc_count::count() as f64 / rows,
            alloc_count::bytes() as f64 / rows,
        );
        lines.push(Line {
            what: what.to_string(),
            bytes: stats.wire_bytes,
            speed: Some(speed),
            allocs: Some(allocs),
            of: None,
        });
    }
    let (gz, speed) = timed(data.len(), || {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data)?;
        Ok(e.finish()?.len() as u64)
    })?;
    lines.push(Line {
        what: "gzip -6 of the file".into(),
        bytes: gz,
        speed: Some(speed),
        allocs: None,
        of: None,
    });
    let (zs, speed) = timed(data.len(), || {
        Ok(zstd::bulk::compress(data, 3)?.len() as u64)
    })?;
    lines.push(Line {
        what: "zstd -3 of the file".into(),
        bytes: zs,
        speed: Some(speed),
        allocs: None,
        of: None,
    });
    if std::env::var("OUTFLOW_BENCH_NATIVE").as_deref() != Ok("0") {
        for compressed in [false, true] {
            let (bytes, relay) = native_bytes(path, compressed)
                .with_context(|| format!("native replication of {name}"))?;
            println!(
                "native replication{}: source Bytes_sent {bytes}, replica relay logs {relay}",
                if compressed { " (compressed)" } else { "" }
            );
            lines.push(Line {
                what: format!(
                    "native replication{}",
                    if compressed {
                        ", slave_compressed_protocol"
                    } else {
                        ""
                    }
                ),
                bytes,
                speed: None,
                allocs: None,
                of: None,
            });
        }
    }
    Ok(lines)
}

/// Bytes a MariaDB source sends a native replica's IO thread for the whole file: the file
/// becomes the source's first binlog, the replica fetches from its start (file/position
/// replication, IO thread only: fetching is what crosses the link), and the source's
/// `Bytes_sent` grows by what it sent (our few status queries included, a few KB).
/// Returns that and, as a cross-check, the bytes of the replica's relay logs.
fn native_bytes(file: &Path, compressed: bool) -> Result<(u64, u64)> {
    let mut source = Server::start(ServerConfig::new())?;
    source.run_sql_script("FLUSH BINARY LOGS;")?;
    let first = source
        .binlog_files()?
        .first()
        .cloned()
        .context("no binlog")?;
    source.stop()?;
    std::fs::copy(file, &first)?;
    source.restart()?;
    let mut cfg = ServerConfig::new();
    if compressed {
        cfg = cfg.slave_compressed_protocol(true);
    }
    let replica = Server::start(cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opts = ReplicationOpts {
            use_gtid: UseGtid::No,
            start: false,
            ..ReplicationOpts::default()
        };
        replicate(&source, &replica, opts).await?;
        Ok(io_thread_bytes(&source, &replica, Duration::from_secs(600)).await?)
    })
}

fn main() -> Result<()> {
    let workload = support::binlog()?;
    println!("oltp_write_only binlog: {}", workload.origin);
    let workload = workload.path;
    let prepare = prepare_binlog()?;
    let inputs = [("oltp_write_only", workload), ("prepare", prepare)];
    let mut loaded = Vec::new();
    for (name, path) in &inputs {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        loaded.push((*name, path.clone(), data));
    }

    // The comparison table first: one pass each, single thread.
    for (name, path, data) in &loaded {
        let mut lines = compare(name, path, data)?;
        if *name == "oltp_write_only" {
            lines.extend(dictionaries(data)?);
        }
        println!(
            "\n{name}: {} ({:.1} MB)",
            path.display(),
            data.len() as f64 / 1e6
        );
        println!(
            "{:<46} {:>12} {:>9} {:>10} {:>12} {:>11} {:>9}",
            "", "bytes", "% binlog", "MB/s wall", "MB/s CPU", "allocs/row", "B/row"
        );
        for l in lines {
            let (wall, cpu) = l
                .speed
                .map_or(("-".to_string(), "-".to_string()), |(w, c)| {
                    (format!("{w:.0}"), format!("{c:.0}"))
                });
            let (allocs, alloc_bytes) = l
                .allocs
                .map_or(("-".to_string(), "-".to_string()), |(a, b)| {
                    (format!("{a:.4}"), format!("{b:.1}"))
                });
            println!(
                "{:<46} {:>12} {:>8.2}% {:>10} {:>12} {:>11} {:>9}",
                l.what,
                l.bytes,
                100.0 * l.bytes as f64 / l.of.unwrap_or(data.len() as u64) as f64,
                wall,
                cpu,
                allocs,
                alloc_bytes
            );
        }
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    for (name, _, data) in &loaded {
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Bytes(data.len() as u64));
        for (label, mode) in [("replica", ImageMode::Replica), ("full", ImageMode::Full)] {
            let cfg = config(mode, false, 1);
            g.bench_function(label, |b| {
                b.iter(|| run(data, &cfg).expect("codec run"));
            });
        }
        g.finish();
    }
    c.final_summary();
    Ok(())
}

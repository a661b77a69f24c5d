//! Shared by the sink's end-to-end tests (`tests/sink_*.rs`, `tests/verify.rs`): servers,
//! the every-type table, the path from a source's binlog to frames, and "is the target the
//! same as the source".

#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use outflow::verify::{run, VerifyArgs};
use outflow_binlog::walk::Walker;
use outflow_codec::{Decoder, Limits, Pipeline, PipelineConfig};
use outflow_core::ChangeBatch;
use outflow_sink::apply::Staged;
use outflow_sink::verify::TableName;
use outflow_sink::{Applied, Applier, ApplyConfig};
use outflow_testkit::{RowMetadata, Server, ServerConfig};

/// A kit server (whose temporary files stay in its own data directory: the kit's default).
pub fn server() -> Result<Server> {
    Ok(Server::start(ServerConfig::new())?)
}

/// A source: like [`server`], with full row metadata (column names and primary keys in
/// the binlog, which the sink maps by).
pub fn source() -> Result<Server> {
    Ok(Server::start(
        ServerConfig::new().binlog_row_metadata(RowMetadata::Full),
    )?)
}

/// Every column type the decoder knows, with rows that stress NULLs, extremes, zero dates,
/// 4-byte UTF-8 and binary data with zero bytes.
pub const ALL_TYPES: &str = r#"
SET NAMES utf8mb4;
CREATE DATABASE IF NOT EXISTS vt;
CREATE TABLE vt.types (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, i INT,
  bi BIGINT, bu BIGINT UNSIGNED,
  d65 DECIMAL(65,30), d52 DECIMAL(5,2),
  f FLOAT, d DOUBLE,
  b1 BIT(1), b64 BIT(64),
  dt DATE, dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
  ch CHAR(10), vc VARCHAR(100) CHARACTER SET utf8mb4, tx TEXT CHARACTER SET utf8mb4,
  l1 VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(8), vb VARBINARY(64), bl BLOB, lt LONGTEXT,
  en ENUM('a','b','c'), st SET('x','y','z'), js JSON, pt POINT, ip INET6, uu UUID
);
INSERT INTO vt.types (id) VALUES (1);
INSERT INTO vt.types VALUES (2,
  -128, 255, -32768, 16777215, -2147483648, -9223372036854775808, 18446744073709551615,
  '-12345678901234567890123456789012345.123456789012345678901234567891', -999.99,
  3.4e38, 0.1,
  b'1', b'1000000000000000000000000000000000000000000000000000000000000001',
  '0000-00-00', '0000-00-00 00:00:00', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999',
  '-838:59:59.000000', 1901,
  'x', '😀 naïve ü', REPEAT('ü', 1000), 'café',
  X'0000000000000001', X'00ff00', X'0000', REPEAT('z', 70000),
  'b', 'x,z', '{"a": [1, null, "😀"]}', POINT(1.5, -2.25), '::1', '123e4567-e89b-12d3-a456-426614174000'
);
INSERT INTO vt.types VALUES (3,
  0, 0, 0, 0, 0, 0, 0,
  0, 0,
  -0.0, 2.2250738585072014e-308,
  b'0', b'0',
  '2024-02-29', '2024-02-29 12:00:00', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01',
  '00:00:00.000001', 2155,
  '', '', '', '',
  X'', X'', X'', '',
  'a', '', '[]', POINT(0, 0), 'ffff::1', '00000000-0000-0000-0000-000000000000'
);
"#;

/// Starts a fresh binlog and returns it: the changes that follow are logged from there.
pub fn start_changes(server: &Server) -> Result<PathBuf> {
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    server.binlog_files()?.pop().context("no binlog")
}

/// The binlogs from `first` on, closed (by a `FLUSH BINARY LOGS`) so that each is complete;
/// the file the flush opens holds nothing yet and is left out.
pub fn changed_binlogs(server: &Server, first: &std::path::Path) -> Result<Vec<PathBuf>> {
    server.run_sql_script("FLUSH BINARY LOGS;")?;
    let files = server.binlog_files()?;
    let start = files
        .iter()
        .position(|f| f == first)
        .context("starting binlog no longer listed")?;
    Ok(files[start..files.len() - 1].to_vec())
}

/// The frames the live source would send for `files`, through the codec's pipeline.
pub fn frames(files: &[PathBuf], cfg: PipelineConfig) -> Result<Vec<Vec<u8>>> {
    Ok(frames_in_parts(&[files], cfg)?
        .into_iter()
        .flatten()
        .collect())
}

/// [`frames`] for consecutive parts of one stream (sequence numbers run on), each part
/// ending with a flush: for a test that acts between parts (a DDL).
pub fn frames_in_parts(parts: &[&[PathBuf]], cfg: PipelineConfig) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut pipeline = Pipeline::new(cfg)?;
    let mut walker = Walker::new();
    let mut out = Vec::new();
    for files in parts {
        for f in files.iter() {
            pipeline.set_file(&f.file_name().context("file name")?.to_string_lossy());
            outflow::inspect::walk_file(f, &mut walker, &mut pipeline)?;
        }
        pipeline.flush()?;
        let mut frames = Vec::new();
        pipeline.drain_frames(|f| frames.push(f.to_vec()));
        out.push(frames);
    }
    Ok(out)
}

/// Decodes frames in order and hands each to the applier with its sequence number.
pub struct Feed {
    decoder: Decoder,
    batch: ChangeBatch,
}

impl Feed {
    /// A decoder with default limits.
    pub fn new() -> Result<Feed> {
        Ok(Feed {
            decoder: Decoder::new(Limits::default())?,
            batch: ChangeBatch::default(),
        })
    }

    /// Decodes `frame` and applies it.
    pub async fn apply(&mut self, applier: &mut Applier, frame: &[u8]) -> Result<Applied> {
        let header = self.decoder.decode(frame, &mut self.batch)?;
        Ok(applier.apply(header.sequence, &self.batch).await?)
    }

    /// The last decoded batch.
    pub fn batch(&self) -> &ChangeBatch {
        &self.batch
    }
}

/// An applier on `target` with `cfg`.
pub async fn applier(target: &Server, cfg: ApplyConfig) -> Result<Applier> {
    Ok(Applier::connect(target.opts(), cfg).await?)
}

/// Applies every frame in order with a fresh applier, as the relay's sink does: each
/// frame's statements are built ahead ([`Applier::stager`]) before the frame before it is
/// applied. Returns the applier for its counters.
pub async fn apply_all(target: &Server, frames: &[Vec<u8>], cfg: ApplyConfig) -> Result<Applier> {
    let mut a = applier(target, cfg).await?;
    let mut decoder = Decoder::new(Limits::default())?;
    let mut held: Option<(u64, ChangeBatch, Staged)> = None;
    for f in frames {
        let mut batch = ChangeBatch::default();
        let seq = decoder.decode(f, &mut batch)?.sequence;
        let staged = a.stager().stage(seq, &batch);
        if let Some((before, b, st)) = held.replace((seq, batch, staged)) {
            a.stage_next(st);
            a.apply(before, &b).await?;
        }
    }
    if let Some((before, b, st)) = held {
        a.stage_next(st);
        a.apply(before, &b).await?;
    }
    Ok(a)
}

/// `outflow verify` over `tables` (all when empty): every table the same. On a difference
/// the error holds verify's report, without values.
pub async fn assert_same(source: &Server, target: &Server, tables: &[&str]) -> Result<()> {
    let args = VerifyArgs {
        source: source.url(),
        target: target.url(),
        tables: tables
            .iter()
            .map(|t| t.parse::<TableName>().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
        chunk_rows: std::num::NonZeroU64::new(1000).context("non-zero")?,
        max_diffs: 10,
        show_values: false,
    };
    // `run` has its own runtime: give it a thread of its own.
    let (clean, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        run(&args, &mut out).map(|clean| (clean, out))
    })
    .await??;
    ensure!(
        clean,
        "target differs from source:\n{}",
        String::from_utf8_lossy(&out)
    );
    Ok(())
}

/// `CHECKSUM TABLE` of each table on both servers: equal.
pub async fn assert_checksums(source: &Server, target: &Server, tables: &[&str]) -> Result<()> {
    for t in tables {
        let (a, b) = (
            source.checksum_table(t).await?,
            target.checksum_table(t).await?,
        );
        ensure!(
            a == b,
            "{t}: CHECKSUM TABLE {a} on the source, {b} on the target"
        );
    }
    Ok(())
}

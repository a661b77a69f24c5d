//! The egress codec against real servers from the test kit:
//! - replica-mode batches, built from a real binlog, encoded to frames and decoded again,
//!   applied to a copy of the starting state reproduce the source (CHECKSUM TABLE equal),
//!   streaming and compacted, for a table with every column type, a primary-key update, a
//!   delete and re-insert, and a keyless table with duplicate rows;
//! - `outflow estimate` over that binlog reports the figures it promises.
//!
//! The applier here is a test-only stand-in for the sink: plain SQL, one statement per
//! change, values as parameters (temporal values as text in UTC).

use std::fmt::Write as _;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use outflow::estimate::{estimate, EstimateArgs};
use outflow_binlog::walk::Walker;
use outflow_codec::{Compactor, Decoder, Encoder, EncoderConfig, Limits, Pipeline, PipelineConfig};
use outflow_core::{ChangeBatch, ImageMode, Op, TableSection, ValueRef};
use outflow_testkit::mysql_async::prelude::Queryable;
use outflow_testkit::mysql_async::{Conn, Value};
use outflow_testkit::{RowMetadata, Server, ServerConfig};

const SETUP: &str = "
SET SESSION sql_mode = '';
CREATE DATABASE app;
CREATE TABLE app.t (
  id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, dc DECIMAL(30,6), y YEAR, dt DATE, tm TIME(3), dtt DATETIME(6),
  ts TIMESTAMP(2) NULL DEFAULT NULL, ch CHAR(10), vc VARCHAR(100), bn BINARY(4),
  vb VARBINARY(20), tx TEXT, bl BLOB, e ENUM('a','b','c'), st SET('x','y','z'), b BIT(10),
  j JSON, g GEOMETRY
) CHARSET utf8mb4;
CREATE TABLE app.nokey (a INT, b VARCHAR(10));
INSERT INTO app.t (id, ti, vc, dc) VALUES (1, 1, 'one', 1.5), (2, 2, 'two', -2.25), (3, 3, NULL, 0);
INSERT INTO app.nokey VALUES (1, 'x'), (1, 'x'), (2, 'y');
";

const CHANGES: &str = "
SET SESSION sql_mode = '';
SET SESSION time_zone = '+00:00';
INSERT INTO app.t VALUES (10, -128, 65535, -8388608, 18446744073709551615, 1.5, -2.5e300,
  '-123456789012345678901234.123456', 2155, '0000-00-00', '-838:59:59.999', '2024-02-29 23:59:59.123456',
  '2038-01-19 03:14:07.99', 'ch', 'vc ü', 0x00ff0001, 0x0001, REPEAT('text', 100), 0xdeadbeef,
  'b', 'x,z', b'1010101010', '{\"k\": [1, 2.5, \"s\"]}', ST_GeomFromText('POINT(1 2)'));
INSERT INTO app.t (id, tm, dt, dtt, ts) VALUES (11, '100:00:00', '2024-00-00', '0000-00-00 00:00:00', '1970-01-01 00:00:01');
BEGIN;
UPDATE app.t SET vc = 'ONE', f = 2.25 WHERE id = 1;
UPDATE app.t SET id = 20 WHERE id = 2;
UPDATE app.t SET ti = ti WHERE id = 3;
COMMIT;
DELETE FROM app.t WHERE id = 3;
INSERT INTO app.t (id, vc) VALUES (3, 'three again');
UPDATE app.t SET bi = 0, e = 'c', st = '', b = b'1', j = '[]', tm = '-00:00:00.5' WHERE id = 10;
UPDATE app.nokey SET b = 'z' WHERE a = 1 LIMIT 1;
DELETE FROM app.nokey WHERE a = 2;
INSERT INTO app.nokey VALUES (3, NULL);
UPDATE app.t SET dc = dc * 2, vc = CONCAT(vc, '!') WHERE id IN (1, 20);
DELETE FROM app.t WHERE id = 11;
";

fn source_config() -> ServerConfig {
    ServerConfig::new().binlog_row_metadata(RowMetadata::Full)
}

/// Binds one value as a statement parameter, and the SQL expression that receives it.
fn param(v: ValueRef<'_>, fsp: u8, text: &mut String) -> (Value, &'static str) {
    text.clear();
    let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
    match v {
        ValueRef::Null => (Value::NULL, "?"),
        ValueRef::Int(x) => (Value::Int(x), "?"),
        ValueRef::UInt(x) => (Value::UInt(x), "?"),
        ValueRef::Float(x) => (Value::Float(x), "?"),
        ValueRef::Double(x) => (Value::Double(x), "?"),
        ValueRef::Decimal(b) | ValueRef::Text(b) | ValueRef::Bytes(b) | ValueRef::Json(b) => {
            (bytes(b), "?")
        }
        ValueRef::Geometry(b) => (bytes(b), "?"),
        ValueRef::Year(y) => (Value::UInt(u64::from(y)), "?"),
        ValueRef::Date(d) => {
            let _ = write!(text, "{d}");
            (bytes(text.as_bytes()), "?")
        }
        ValueRef::Time(t) => {
            let _ = t.write_sql(text, fsp);
            (bytes(text.as_bytes()), "?")
        }
        ValueRef::DateTime(t) => {
            let _ = t.write_sql(text, fsp);
            (bytes(text.as_bytes()), "?")
        }
        ValueRef::Timestamp(t) if t.seconds == 0 => (bytes(b"0000-00-00 00:00:00"), "?"),
        ValueRef::Timestamp(t) => {
            let _ = write!(text, "{}.{:06}", t.seconds, t.micros);
            (bytes(text.as_bytes()), "FROM_UNIXTIME(?)")
        }
        ValueRef::Enum(x) => (Value::UInt(u64::from(x)), "?"),
        ValueRef::Set(x) | ValueRef::Bit(x) => (Value::UInt(x), "?"),
    }
}

/// Applies one change as a sink would in replica mode: insert the after image; update or
/// delete the row whose before-image columns match (NULL-safe).
async fn apply_change(conn: &mut Conn, s: &TableSection, i: usize) -> Result<()> {
    let schema = s.schema();
    let change = s.change(i);
    let table = format!("`{}`.`{}`", schema.db, schema.table);
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut text = String::new();
    let name = |c: usize| format!("`{}`", schema.columns[c].name);
    let fsp = |c: usize| schema.columns[c].fsp();
    match change.op {
        Op::Insert => {
            let after = change.after.context("insert without after image")?;
            let (mut cols, mut marks) = (Vec::new(), Vec::new());
            for (c, v) in after.values() {
                let (p, mark) = param(v, fsp(c), &mut text);
                cols.push(name(c));
                marks.push(mark);
                params.push(p);
            }
            let _ = write!(
                sql,
                "INSERT INTO {table} ({}) VALUES ({})",
                cols.join(","),
                marks.join(",")
            );
        }
        Op::Update | Op::Delete => {
            if change.op == Op::Update {
                let after = change.after.context("update without after image")?;
                let sets: Vec<String> = after
                    .values()
                    .map(|(c, v)| {
                        let (p, mark) = param(v, fsp(c), &mut text);
                        params.push(p);
                        format!("{} = {mark}", name(c))
                    })
                    .collect();
                let _ = write!(sql, "UPDATE {table} SET {}", sets.join(","));
            } else {
                let _ = write!(sql, "DELETE FROM {table}");
            }
            let before = change.before.context("change without before image")?;
            let conds: Vec<String> = before
                .values()
                .map(|(c, v)| {
                    let (p, mark) = param(v, fsp(c), &mut text);
                    params.push(p);
                    format!("{} <=> {mark}", name(c))
                })
                .collect();
            let _ = write!(sql, " WHERE {} LIMIT 1", conds.join(" AND "));
        }
    }
    conn.exec_drop(&sql, params)
        .await
        .with_context(|| format!("applying {sql}"))?;
    ensure!(
        conn.affected_rows() == 1,
        "{sql}: {} rows affected",
        conn.affected_rows()
    );
    Ok(())
}

/// Applies a decoded batch in run order, in one transaction.
async fn apply(conn: &mut Conn, b: &ChangeBatch) -> Result<()> {
    conn.query_drop("BEGIN").await?;
    for run in b.runs() {
        let s = &b.sections()[run.section as usize];
        for i in run.first..run.first + run.len {
            apply_change(conn, s, i as usize).await?;
        }
    }
    conn.query_drop("COMMIT").await?;
    Ok(())
}

async fn checksums(server: &Server) -> Result<Vec<(String, Option<i64>)>> {
    let mut conn = server.pool().get_conn().await?;
    let rows: Vec<(String, Option<i64>)> = conn.query("CHECKSUM TABLE app.t, app.nokey").await?;
    Ok(rows)
}

/// A target holding the starting state: the setup script, nothing else.
async fn target() -> Result<Server> {
    let t = Server::start(ServerConfig::new())?;
    t.run_sql_script(SETUP)?;
    Ok(t)
}

async fn session(t: &Server) -> Result<Conn> {
    let mut conn = t.pool().get_conn().await?;
    conn.query_drop("SET SESSION sql_mode = '', time_zone = '+00:00', foreign_key_checks = 0")
        .await?;
    Ok(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_mode_frames_reproduce_the_source() -> Result<()> {
    let source = Server::start(source_config())?;
    source.run_sql_script(SETUP)?;
    source.run_sql_script("FLUSH BINARY LOGS;")?;
    let first = source.binlog_files()?.pop().context("no binlog")?;
    source.run_sql_script(CHANGES)?;
    source.run_sql_script("FLUSH BINARY LOGS;")?;
    let (streaming, compacted) = (target().await?, target().await?);
    ensure!(
        checksums(&streaming).await? != checksums(&source).await?,
        "changes did nothing"
    );

    // Small batches (many frames), through the same pipeline the live source runs.
    let mut pipeline = Pipeline::new(PipelineConfig {
        batch_bytes: 600,
        ..PipelineConfig::default()
    })?;
    let mut walker = Walker::new();
    pipeline.set_file(&first.file_name().unwrap().to_string_lossy());
    outflow::inspect::walk_file(&first, &mut walker, &mut pipeline)?;
    pipeline.flush()?;
    let mut frames = Vec::new();
    pipeline.drain_frames(|f| frames.push(f.to_vec()));
    ensure!(
        frames.len() > 3,
        "expected several frames, got {}",
        frames.len()
    );

    let mut decoder = Decoder::new(Limits::default())?;
    decoder.expect_sequence(Some(0));
    let mut conn = session(&streaming).await?;
    let mut batch = ChangeBatch::default();
    let mut all = ChangeBatch::new(ImageMode::Replica);
    for f in &frames {
        decoder.decode(f, &mut batch)?;
        ensure!(batch.mode() == ImageMode::Replica && !batch.is_compacted());
        apply(&mut conn, &batch).await?;
        // Gather everything into one batch for the compacted run.
        append(&mut all, &batch)?;
    }
    ensure!(
        checksums(&streaming).await? == checksums(&source).await?,
        "streaming apply differs from the source"
    );

    // The same changes as one compacted frame.
    let mut c = ChangeBatch::default();
    Compactor::default().compact(&all, &mut c)?;
    ensure!(
        c.change_count() < all.change_count(),
        "compaction merged nothing"
    );
    let mut frame = Vec::new();
    Encoder::new(EncoderConfig::default())?.encode(&c, &mut frame)?;
    let mut back = ChangeBatch::default();
    Decoder::new(Limits::default())?.decode(&frame, &mut back)?;
    ensure!(back == c);
    let mut conn = session(&compacted).await?;
    apply(&mut conn, &back).await?;
    ensure!(
        checksums(&compacted).await? == checksums(&source).await?,
        "compacted apply differs from the source"
    );
    Ok(())
}

/// Copies every transaction of `b` to the end of `all` (to compact several frames at once).
fn append(all: &mut ChangeBatch, b: &ChangeBatch) -> Result<()> {
    if all.transactions().is_empty() {
        all.set_start(b.start().clone());
    }
    for t in b.transactions() {
        all.begin_transaction(t.gtid, t.timestamp)?;
        for run in b.transaction_runs(t) {
            let s = &b.sections()[run.section as usize];
            let id = all.section_for(s.schema());
            for i in run.first..run.first + run.len {
                let ch = s.change(i as usize);
                let dst = all.push_change(id, ch.op)?;
                for im in [ch.before, ch.after].into_iter().flatten() {
                    let k = im.index();
                    dst.push_image_from(s, |_| Some(k))?;
                }
            }
        }
        all.commit_transaction(&b.files()[t.file as usize], t.end_pos)?;
    }
    Ok(())
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: EstimateArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_reports_wire_bytes_of_a_real_binlog() -> Result<()> {
    let source = Server::start(source_config())?;
    source.run_sql_script(SETUP)?;
    source.run_sql_script(CHANGES)?;
    source.run_sql_script("FLUSH BINARY LOGS;")?;
    let files = source.binlog_files()?;
    let closed = &files[..files.len() - 1];
    let mut argv = vec!["estimate".to_string()];
    argv.extend(closed.iter().map(|f| f.display().to_string()));
    argv.extend(
        [
            "--json",
            "--price-per-gb",
            "0.05",
            "--binlog-gb-per-day",
            "10",
        ]
        .map(String::from),
    );
    let cli = Cli::try_parse_from(&argv)?;
    let report = estimate(&cli.args)?;
    let json = report.to_json(&cli.args);
    let raw: u64 = closed
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    ensure!(
        json["raw_bytes"] == raw,
        "raw_bytes {} != {raw}",
        json["raw_bytes"]
    );
    let wire = json["wire_bytes"].as_u64().context("wire_bytes")?;
    ensure!(wire > 0 && wire < raw, "wire bytes {wire} of {raw}");
    let ratio = json["ratio"].as_f64().context("ratio")?;
    ensure!((ratio - wire as f64 / raw as f64).abs() < 1e-9);
    ensure!(json["mb_per_s"].as_f64().context("mb_per_s")? > 0.0);
    let tables = json["tables"].as_array().context("tables")?;
    let t = tables
        .iter()
        .find(|t| t["name"] == "app.t")
        .context("app.t missing")?;
    ensure!(t["primary_key"] == true && t["rows_in"].as_u64() > Some(5));
    let nokey = tables
        .iter()
        .find(|t| t["name"] == "app.nokey")
        .context("app.nokey missing")?;
    ensure!(nokey["primary_key"] == false);
    // 10 GB/day for 30 days at $0.05/GB, times the ratio.
    let custom = json["monthly_usd"]["custom"]
        .as_f64()
        .context("custom price")?;
    ensure!((custom - 10.0 * 30.0 * 0.05 * ratio).abs() < 1e-6);
    ensure!(json["monthly_usd"]["aws"].as_f64().is_some());
    let text = report.to_text(&cli.args);
    ensure!(
        text.contains("app.nokey") && text.contains("azure"),
        "{text}"
    );

    // A truncated binlog is an error, not a shorter estimate.
    let dir = tempfile::tempdir()?;
    let cut = dir.path().join("cut.000001");
    let bytes = std::fs::read(&closed[0])?;
    std::fs::write(&cut, &bytes[..bytes.len() - 7])?;
    let cli = Cli::try_parse_from(["estimate", cut.to_str().context("path")?])?;
    ensure!(
        estimate(&cli.args).is_err(),
        "a truncated file was estimated"
    );
    Ok(())
}

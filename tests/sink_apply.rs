//! The sink's applier against real servers: a source's binlog goes through the codec
//! (pipeline, frames, decoder) and the applier onto a target that started from the same
//! state; afterwards `verify` finds no difference and `CHECKSUM TABLE` agrees.
//!
//! - every column type, keyless tables with duplicate rows, a key compared by a
//!   case-insensitive collation, secondary UNIQUE keys (values swapped and reused),
//!   generated columns, key changes; in replica mode (this is also the codec's "applying
//!   the decoded changes reproduces the source" test), full mode, and compacted;
//! - a sysbench `oltp_write_only` workload, `prepare` included.

use std::num::NonZeroUsize;

use anyhow::{ensure, Result};
use outflow_codec::PipelineConfig;
use outflow_core::ImageMode;
use outflow_sink::ApplyConfig;
use outflow_testkit::{Server, Sysbench, Workload};

mod sink_common;
use sink_common::{
    apply_all, assert_checksums, assert_same, changed_binlogs, frames, server, source,
    start_changes, ALL_TYPES,
};

/// Tables beside `vt.types` that stress the ordering and matching rules.
const MORE_TABLES: &str = "
SET NAMES utf8mb4;
CREATE TABLE vt.nokey (a INT, b VARCHAR(10), c DOUBLE, t TEXT);
INSERT INTO vt.nokey VALUES (1, 'x', 0.5, 'dup'), (1, 'x', 0.5, 'dup'), (2, 'y', NULL, NULL),
  (3, 'Z', 1e300, ''), (4, 'q', -0.0, 'q');
CREATE TABLE vt.ci (a VARCHAR(10) COLLATE utf8mb4_general_ci, b INT, v INT, PRIMARY KEY (a, b));
INSERT INTO vt.ci VALUES ('a', 1, 1), ('B', 2, 2), ('c ', 3, 3);
CREATE TABLE vt.uq (id INT PRIMARY KEY, email VARCHAR(20) NOT NULL, n INT, UNIQUE KEY (email));
INSERT INTO vt.uq VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0);
CREATE TABLE vt.gen (id INT PRIMARY KEY, a INT, g INT AS (a * 2) VIRTUAL, s INT AS (a + 1) STORED);
INSERT INTO vt.gen (id, a) VALUES (1, 5), (2, 6);
CREATE TABLE vt.big (id BIGINT UNSIGNED PRIMARY KEY, pad CHAR(200));
";

const TYPE_COLUMNS: &str = "ti, tu, si, mi, i, bi, bu, d65, d52, f, d, b1, b64, dt, dtm, dtm6, \
    ts, tm, yr, ch, vc, tx, l1, bn, vb, bl, lt, en, st, js, pt, ip, uu";

fn changes() -> String {
    format!(
        "
SET NAMES utf8mb4;
SET SESSION time_zone = '+05:00';
INSERT INTO vt.types (id, {TYPE_COLUMNS}) SELECT id + 10, {TYPE_COLUMNS} FROM vt.types;
UPDATE vt.types SET ti = ti + 1, d65 = d65 / 3, f = f / 3, d = d * 3, b64 = b64 >> 1,
  dt = '2024-00-00', tm = '-00:00:00.5', vc = CONCAT(vc, '✓'), bn = X'00', js = '{{\"b\": 2}}',
  pt = POINT(3, 4), en = 'c', st = 'y', ts = '2000-01-01 00:00:00', yr = 0, l1 = 'naïf'
  WHERE id = 2;
UPDATE vt.types SET ti = NULL, tx = NULL, bl = X'00000000', ip = '::ffff:1.2.3.4',
  uu = '00000000-0000-0000-0000-000000000001' WHERE id = 3;
UPDATE vt.types SET id = 100 WHERE id = 1;
DELETE FROM vt.types WHERE id = 13;
INSERT INTO vt.types (id, vc) VALUES (13, 'again');
BEGIN;
UPDATE vt.types SET i = 1 WHERE id = 12;
UPDATE vt.types SET i = 2, si = 2 WHERE id = 12;
DELETE FROM vt.types WHERE id = 11;
INSERT INTO vt.types (id) VALUES (11);
UPDATE vt.types SET i = 3 WHERE id = 11;
UPDATE vt.types SET ti = 7 WHERE id = 12;
COMMIT;
UPDATE vt.nokey SET b = 'w' WHERE a = 1 LIMIT 1;
DELETE FROM vt.nokey WHERE a = 2;
INSERT INTO vt.nokey VALUES (1, 'x', 0.5, 'dup');
UPDATE vt.nokey SET b = 'z' WHERE b = 'Z';
DELETE FROM vt.nokey WHERE a = 4;
UPDATE vt.ci SET v = 10 WHERE a = 'A' AND b = 1;
DELETE FROM vt.ci WHERE a = 'b' AND b = 2;
INSERT INTO vt.ci VALUES ('b', 2, 5);
UPDATE vt.ci SET v = 6 WHERE a = 'B' AND b = 2;
UPDATE vt.ci SET a = 'C' WHERE a = 'c' AND b = 3;
BEGIN;
UPDATE vt.uq SET email = 'tmp' WHERE id = 1;
UPDATE vt.uq SET email = 'a' WHERE id = 2;
UPDATE vt.uq SET email = 'b', n = 1 WHERE id = 1;
COMMIT;
DELETE FROM vt.uq WHERE id = 3;
INSERT INTO vt.uq VALUES (4, 'c', 1);
UPDATE vt.uq SET n = n + 1;
INSERT INTO vt.gen (id, a) VALUES (3, 1);
UPDATE vt.gen SET a = 7 WHERE id = 1;
DELETE FROM vt.gen WHERE id = 2;
INSERT INTO vt.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM vt.seq_1_to_3000;
UPDATE vt.big SET pad = 'x' WHERE id % 7 = 0;
DELETE FROM vt.big WHERE id % 5 = 0;
"
    )
}

const TABLES: [&str; 6] = ["vt.types", "vt.nokey", "vt.ci", "vt.uq", "vt.gen", "vt.big"];

/// Small statements and target transactions, so that the flush and split paths run.
fn tight() -> ApplyConfig {
    ApplyConfig {
        max_txn_changes: NonZeroUsize::new(50).expect("non-zero"),
        max_statement_bytes: 16 << 10,
        max_pending_bytes: 64 << 10,
        ..ApplyConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_table_shape_round_trips() -> Result<()> {
    let src = source()?;
    let setup = format!("{ALL_TYPES}{MORE_TABLES}");
    src.run_sql_script(&setup)?;
    let first = start_changes(&src)?;
    src.run_sql_script(&changes())?;
    let files = changed_binlogs(&src, &first)?;

    // Values as parameters of prepared statements (the default), and as literals.
    let cases = [
        ("replica, streaming", ImageMode::Replica, false, 1, true),
        (
            "replica, streaming, literals",
            ImageMode::Replica,
            false,
            1,
            false,
        ),
        (
            "replica, streaming, 3 connections",
            ImageMode::Replica,
            false,
            3,
            true,
        ),
        ("full images", ImageMode::Full, false, 1, true),
        ("full images, literals", ImageMode::Full, false, 2, false),
        ("replica, compacted", ImageMode::Replica, true, 2, true),
    ];
    for (name, mode, compaction, threads, prepared_statements) in cases {
        let target = server()?;
        target.run_sql_script(&setup)?;
        let frames = frames(
            &files,
            PipelineConfig {
                mode,
                compaction,
                batch_bytes: 4 << 10,
                ..PipelineConfig::default()
            },
        )?;
        ensure!(frames.len() > 3, "{name}: only {} frames", frames.len());
        let cfg = ApplyConfig {
            apply_threads: NonZeroUsize::new(threads).expect("non-zero"),
            prepared_statements,
            ..tight()
        };
        let started = std::time::Instant::now();
        let applier = apply_all(&target, &frames, cfg).await?;
        let elapsed = started.elapsed();
        let stats = *applier.stats();
        applier.close().await;
        // Where the time went: each part measured, together no more than the wall time.
        let t = stats.times;
        ensure!(
            !t.build.is_zero() && !t.execute.is_zero() && !t.commit.is_zero(),
            "{name}: a part of the apply time is not measured: {t:?}"
        );
        ensure!(
            t.build + t.execute + t.commit <= elapsed,
            "{name}: apply times {t:?} add up to more than the {elapsed:?} it took"
        );
        assert_same(&src, &target, &TABLES)
            .await
            .map_err(|e| e.context(name))?;
        assert_checksums(&src, &target, &TABLES).await?;
        ensure!(
            stats.conflicts.total() == 0,
            "{name}: conflicts on a faithful target: {stats:?}"
        );
        // Only the compacted frames need careful mode (a UNIQUE swap netted out).
        ensure!(
            (stats.careful_replays == 0) != compaction,
            "{name}: careful replays: {stats:?}"
        );
        ensure!(
            stats.frames == frames.len() as u64,
            "{name}: {} frames applied of {}",
            stats.frames,
            frames.len()
        );
        // Some frames built ahead (a frame with a table not planned yet is not, nor one
        // whose statements exceed `max_pending_bytes`).
        ensure!(stats.staged > 0, "{name}: no frame built ahead: {stats:?}");
        ensure!(
            (stats.prepared > 0 && stats.executes >= stats.prepared) == prepared_statements,
            "{name}: prepared statements {} ({} executes) of {}",
            stats.prepared,
            stats.executes,
            stats.statements
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_write_only_reproduces_the_source() -> Result<()> {
    let src = source()?;
    let target = server()?;
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(2)
        .table_size(10_000)
        .threads(2)
        .events(2000);
    let first = start_changes(&src)?;
    bench.prepare(&src)?;
    bench.run(&src)?;
    let files = changed_binlogs(&src, &first)?;
    create_like(&src, &target, "sbtest", &["sbtest1", "sbtest2"]).await?;

    let frames = frames(&files, PipelineConfig::default())?;
    let cfg = ApplyConfig {
        apply_threads: NonZeroUsize::new(2).expect("non-zero"),
        ..ApplyConfig::default()
    };
    let applier = apply_all(&target, &frames, cfg).await?;
    let stats = *applier.stats();
    applier.close().await;
    assert_same(&src, &target, &["sbtest.sbtest1", "sbtest.sbtest2"]).await?;
    assert_checksums(&src, &target, &["sbtest.sbtest1", "sbtest.sbtest2"]).await?;
    let changes = stats.inserted + stats.updated + stats.deleted;
    ensure!(
        stats.careful_replays == 0,
        "the fast path fell back on a faithful target: {stats:?}"
    );
    ensure!(
        stats.statements * 20 < changes,
        "{} statements for {changes} changes: batching did not happen ({stats:?})",
        stats.statements
    );
    ensure!(
        stats.prepared == stats.statements && stats.executes < changes / 10,
        "every statement prepared, several rows an execute: {stats:?}"
    );
    Ok(())
}

/// Each frame's statements are built ahead while the frame before it is applied (the
/// relay's sink does the same), and the result is the same as building them in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_built_ahead_reproduce_the_source() -> Result<()> {
    let src = source()?;
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(2)
        .table_size(5_000)
        .threads(2)
        .events(3000);
    bench.prepare(&src)?;
    let tables = ["sbtest.sbtest1", "sbtest.sbtest2"];
    // Every target starts from the rows the source had before the run.
    let before = read_rows(&src, &tables).await?;
    let first = start_changes(&src)?;
    bench.run(&src)?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(
        &files,
        PipelineConfig {
            batch_bytes: 64 << 10,
            ..PipelineConfig::default()
        },
    )?;
    ensure!(frames.len() > 10, "only {} frames", frames.len());
    for threads in [1, 2] {
        let target = server()?;
        create_like(&src, &target, "sbtest", &["sbtest1", "sbtest2"]).await?;
        insert_rows(&target, &before).await?;
        let cfg = ApplyConfig {
            apply_threads: NonZeroUsize::new(threads).expect("non-zero"),
            ..ApplyConfig::default()
        };
        let applier = apply_all(&target, &frames, cfg).await?;
        let stats = *applier.stats();
        applier.close().await;
        assert_same(&src, &target, &tables).await?;
        // Every frame is one target transaction; all but the first two are built ahead
        // (their stagers start before the first frame has planned the tables). The target
        // is faithful, so nothing needs careful mode.
        ensure!(
            stats.commits == frames.len() as u64
                && stats.careful_replays == 0
                && stats.staged + 2 >= stats.commits,
            "{threads} connections: {} of {} frames built ahead: {stats:?}",
            stats.staged,
            frames.len()
        );
    }
    Ok(())
}

/// Sysbench rows, table by table: (table, [(id, k, c, pad)]).
type Rows = Vec<(String, Vec<(i64, i64, String, String)>)>;

/// The rows of sysbench `tables` on `server`.
async fn read_rows(server: &Server, tables: &[&str]) -> Result<Rows> {
    let mut out = Vec::new();
    for t in tables {
        let rows = server
            .query_rows(&format!("SELECT id, k, c, pad FROM {t}"))
            .await?;
        out.push((t.to_string(), rows));
    }
    Ok(out)
}

/// Inserts rows read by [`read_rows`] into the same tables on `target`.
async fn insert_rows(target: &Server, rows: &Rows) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let mut conn = target.conn().await?;
    for (t, rows) in rows {
        for chunk in rows.chunks(1000) {
            conn.exec_batch(
                format!("INSERT INTO {t} (id, k, c, pad) VALUES (?, ?, ?, ?)"),
                chunk.iter().cloned(),
            )
            .await?;
        }
    }
    Ok(())
}

/// Creates `db` and its `tables` on `target` as they are on `source` (the sink leaves
/// DDL to the schema hook; these tests start from the same definitions).
async fn create_like(source: &Server, target: &Server, db: &str, tables: &[&str]) -> Result<()> {
    let mut script = format!("CREATE DATABASE IF NOT EXISTS `{db}`;\n");
    for t in tables {
        let rows: Vec<(String, String)> = source
            .query_rows(&format!("SHOW CREATE TABLE `{db}`.`{t}`"))
            .await?;
        let (_, ddl) = rows
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no {t}"))?;
        script.push_str(&format!("USE `{db}`;\n{ddl};\n"));
    }
    target.run_sql_script(&script)?;
    Ok(())
}

/// Small statements share a query, but a query never exceeds what one statement may be,
/// which stays under the target's `max_allowed_packet`: here 512 KiB, with 32 KiB
/// statements spread over 2 connections, about a megabyte of them per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_queries_fit_a_small_max_allowed_packet() -> Result<()> {
    let setup = "CREATE DATABASE app;
        CREATE TABLE app.t (id INT PRIMARY KEY, pad CHAR(200));";
    let src = source()?;
    let target = Server::start(outflow_testkit::ServerConfig::new().max_allowed_packet(512 << 10))?;
    src.run_sql_script(setup)?;
    target.run_sql_script(setup)?;
    let first = start_changes(&src)?;
    src.run_sql_script(
        "INSERT INTO app.t SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM app.seq_1_to_10000;",
    )?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(&files, PipelineConfig::default())?;
    let cfg = ApplyConfig {
        max_statement_bytes: 32 << 10,
        apply_threads: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        ..ApplyConfig::default()
    };
    let a = apply_all(&target, &frames, cfg).await?;
    ensure!(a.stats().statements > 40, "{:?}", a.stats());
    assert_same(&src, &target, &["app.t"]).await
}

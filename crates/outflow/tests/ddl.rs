//! DDL through the real relay (`outflow run` as a process, real servers): a DDL-heavy script
//! (create, add/drop/reorder/rename columns, rename, truncate, drop, index, ANSI_QUOTES and
//! non-ASCII defaults) while rows are written, into an empty target; then the per-kind
//! policy (`skip`, and `stop` naming the statement, then a restart with `apply` that
//! resumes at the statement); and the re-delivery of a DDL whose checkpoint did not follow.

mod common;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use outflow_testkit::{Server, ServerConfig};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// `outflow run` from the source's current GTID position, shipping database `app` only.
fn start_relay(source: &Server, target: &Server, dir: &std::path::Path, extra: &[&str]) -> Child {
    let from: String = rt()
        .block_on(source.query_scalar("SELECT @@GLOBAL.gtid_binlog_pos"))
        .unwrap();
    let from = format!("gtid:{from}");
    let mut args = vec!["--do-db", "app", "--from", &from];
    args.extend_from_slice(extra);
    common::spawn_run(
        Command::new(common::OUTFLOW),
        source,
        target,
        &dir.join("spool"),
        &dir.join("outflow.log"),
        &args,
    )
}

fn log(dir: &std::path::Path) -> String {
    common::log_text(&dir.join("outflow.log"))
}

/// Columns of every table of `app`: (table, position, name, type, default).
type Columns = Vec<(String, u32, String, String, Option<String>)>;

async fn columns(server: &Server) -> Columns {
    server
        .query_rows(
            "SELECT table_name, ordinal_position, column_name, column_type, column_default \
             FROM information_schema.columns WHERE table_schema = 'app' \
             ORDER BY table_name, ordinal_position",
        )
        .await
        .unwrap()
}

async fn tables(server: &Server) -> Vec<String> {
    server
        .query_rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' ORDER BY 1")
        .await
        .unwrap()
}

async fn checksums(server: &Server, tables: &[String]) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for t in tables {
        out.push(server.checksum_table(&format!("app.`{t}`")).await.ok());
    }
    out
}

/// Waits until the target has the source's tables, columns and rows in `app`.
fn wait_caught_up(source: &Server, target: &Server, relay: &mut Child, dir: &std::path::Path) {
    let rt = rt();
    let want_tables = rt.block_on(tables(source));
    let want = (
        rt.block_on(columns(source)),
        rt.block_on(checksums(source, &want_tables)),
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got_tables = rt.block_on(tables(target));
        let got = (
            rt.block_on(columns(target)),
            rt.block_on(checksums(target, &got_tables)),
        );
        if got_tables == want_tables && got == want {
            return;
        }
        if let Ok(Some(status)) = relay.try_wait() {
            panic!("outflow run exited with {status}; log:\n{}", log(dir));
        }
        assert!(
            Instant::now() < deadline,
            "target never caught up:\n{got_tables:?} {got:?}\nvs\n{want_tables:?} {want:?}\nlog:\n{}",
            log(dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_ddl_heavy_script_during_writes_reaches_an_empty_target() {
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut relay = start_relay(&source, &target, dir.path(), &[]);

    let script: &[&str] = &[
        "CREATE DATABASE app",
        "CREATE DATABASE other",
        "CREATE TABLE other.x (id INT PRIMARY KEY)",
        "INSERT INTO other.x VALUES (1)",
        "CREATE TABLE app.steady (id INT PRIMARY KEY, n INT NOT NULL)",
        "CREATE TABLE app.t1 (id INT PRIMARY KEY, a INT, b VARCHAR(20))",
        "INSERT INTO app.t1 VALUES (1, 10, 'one'), (2, 20, 'two'), (3, 30, 'three')",
        "ALTER TABLE app.t1 ADD COLUMN c INT NOT NULL DEFAULT 7",
        "UPDATE app.t1 SET c = id * 100 WHERE id < 3",
        "INSERT INTO app.t1 VALUES (4, 40, 'four', 400)",
        "ALTER TABLE app.t1 DROP COLUMN a",
        "INSERT INTO app.t1 (id, b, c) VALUES (5, 'five', 500)",
        "ALTER TABLE app.t1 MODIFY c INT NOT NULL DEFAULT 7 FIRST",
        "UPDATE app.t1 SET b = CONCAT(b, '!') WHERE id % 2 = 1",
        "ALTER TABLE app.t1 MODIFY b VARCHAR(40) AFTER id, ADD d DATE NULL",
        "INSERT INTO app.t1 (c, id, b, d) VALUES (6, 9, 'six', '2024-02-29')",
        "CREATE TABLE app.t2 LIKE app.t1",
        "INSERT INTO app.t2 SELECT * FROM app.t1",
        "RENAME TABLE app.t1 TO app.t3",
        "DELETE FROM app.t3 WHERE id = 2",
        "INSERT INTO app.t3 (id, b, c, d) VALUES (7, 'seven', 70, NULL)",
        "TRUNCATE TABLE app.t2",
        "INSERT INTO app.t2 (id, b, c) VALUES (8, 'eight', 80)",
        "CREATE INDEX b_idx ON app.t3 (b)",
        "ALTER TABLE app.t3 CHANGE b bb VARCHAR(40) NOT NULL DEFAULT ''",
        "ALTER TABLE app.t3 RENAME COLUMN c TO cc",
        "UPDATE app.t3 SET cc = cc + 1",
        "CREATE TABLE app.gone (id INT PRIMARY KEY)",
        "INSERT INTO app.gone VALUES (1), (2)",
        "DROP TABLE app.gone",
        // The session's sql_mode and character set travel with the statement.
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES'); \
         CREATE TABLE app.\"quoted\" (\"id\" INT PRIMARY KEY, \"v\" VARCHAR(10) DEFAULT 'x')",
        "SET NAMES utf8mb4; ALTER TABLE app.t3 ADD e VARCHAR(10) NOT NULL DEFAULT 'été'",
        "INSERT INTO app.quoted VALUES (1, 'ü'), (2, DEFAULT)",
        "INSERT INTO app.t3 (id, bb, cc) VALUES (10, 'ten', 1000)",
        "ALTER TABLE app.steady ADD x INT NOT NULL DEFAULT 3 AFTER id",
    ];
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Writes into a table that also gets DDL, all the time the script runs.
        let writer = s.spawn(|| {
            let rt = self::rt();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sql = format!(
                    "INSERT INTO app.steady (id, n) VALUES ({}, {i}) \
                     ON DUPLICATE KEY UPDATE n = n + 1",
                    i % 50
                );
                if rt.block_on(source.exec(&sql)).is_err() {
                    // Before the script created the table.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            i
        });
        let result: Result<(), String> = script.iter().try_for_each(|sql| {
            std::thread::sleep(Duration::from_millis(20));
            rt.block_on(source.exec(sql)).map_err(|e| e.to_string())
        });
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        result.unwrap();
        assert!(writer.join().unwrap() > 20, "the writer barely ran");
    });

    wait_caught_up(&source, &target, &mut relay, dir.path());
    // Filtered out: neither the other database nor its table shipped.
    let other: Vec<String> = rt
        .block_on(target.query_rows("SHOW DATABASES LIKE 'other'"))
        .unwrap();
    assert!(other.is_empty(), "DDL of a filtered database shipped");
    relay.kill().unwrap();
    relay.wait().unwrap();

    common::verify_clean(&source, &target, "app.steady,app.t2,app.t3,app.quoted");
    let log = log(dir.path());
    assert!(!log.contains("already applied"), "{log}");
}

#[test]
fn ddl_policies_skip_and_stop_then_resume_at_the_statement() {
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let policy = ["--ddl", "drop_table=stop,truncate_table=skip"];
    let mut relay = start_relay(&source, &target, dir.path(), &policy);
    rt.block_on(source.exec_all(&[
        "CREATE DATABASE app",
        "CREATE TABLE app.t (id INT PRIMARY KEY)",
        "INSERT INTO app.t VALUES (1), (2)",
        "TRUNCATE app.t",
        "INSERT INTO app.t VALUES (3)",
    ]))
    .unwrap();
    let before: String = rt
        .block_on(source.query_scalar("SELECT @@GLOBAL.gtid_binlog_pos"))
        .unwrap();
    let (prefix, n) = before.rsplit_once('-').unwrap();
    let drop_gtid = format!("{prefix}-{}", n.parse::<u64>().unwrap() + 1);
    rt.block_on(source.exec_all(&[
        "DROP TABLE app.t",
        "CREATE TABLE app.after (id INT PRIMARY KEY)",
    ]))
    .unwrap();
    let gtid: String = rt
        .block_on(source.query_scalar("SELECT @@GLOBAL.gtid_binlog_pos"))
        .unwrap();

    // The sink stops at the DROP, naming it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = relay.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no stop; log:\n{}",
            log(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let text = log(dir.path());
    assert!(
        text.contains("DDL stopped by policy: drop_table `DROP TABLE"),
        "{text}"
    );
    assert!(text.contains(&format!("GTID {drop_gtid},")), "{text}");
    // TRUNCATE was skipped: the target keeps the rows it removed on the source.
    let ids: Vec<i32> = rt
        .block_on(target.query_rows("SELECT id FROM app.t ORDER BY id"))
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);

    // Restarted with the statement allowed, the relay resumes at it, and the checkpoint
    // follows the last DDL (in a transaction of its own, just after the statement).
    let mut relay = start_relay(&source, &target, dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t: Vec<String> = rt.block_on(tables(&target));
        let cp: Option<Option<String>> = rt
            .block_on(target.query_scalar("SELECT gtid FROM outflow.checkpoint"))
            .ok();
        if t == ["after"] && cp.flatten().as_deref() == Some(gtid.as_str()) {
            break;
        }
        if let Ok(Some(status)) = relay.try_wait() {
            panic!("exited with {status}; log:\n{}", log(dir.path()));
        }
        assert!(
            Instant::now() < deadline,
            "{t:?}; log:\n{}",
            log(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
}

/// A batch of one DDL transaction, as the codec makes it.
fn ddl_batch(gtid: u64, db: Option<&str>, sql: &str) -> outflow_core::ChangeBatch {
    let mut b = outflow_core::ChangeBatch::new(outflow_core::ImageMode::Replica);
    let ddl = outflow_core::Ddl {
        db: db.map(str::to_string),
        sql: sql.as_bytes().to_vec(),
        charset: None,
        sql_mode: None,
    };
    let end = 1000 + gtid * 100;
    let gtid = format!("0-1-{gtid}").parse().unwrap();
    b.push_ddl(Some(gtid), 0, &ddl, "binlog.000001", end)
        .unwrap();
    b
}

#[test]
fn a_ddl_redelivered_after_a_crash_before_its_checkpoint_counts_as_applied() {
    use outflow_sink::{Applied, Applier, ApplyConfig};
    let target = Server::start(ServerConfig::new()).unwrap();
    let rt = rt();
    rt.block_on(async {
        let opts = target.opts();
        let batches = [
            ddl_batch(1, None, "CREATE DATABASE app"),
            ddl_batch(2, Some("app"), "CREATE TABLE t (id INT PRIMARY KEY)"),
            ddl_batch(3, Some("app"), "RENAME TABLE t TO u"),
        ];
        let mut a = Applier::connect(opts.clone(), ApplyConfig::default())
            .await
            .unwrap();
        for (seq, b) in batches.iter().enumerate() {
            let got = a.apply(seq as u64 + 1, b).await.unwrap();
            assert!(matches!(
                got,
                Applied::Frame {
                    transactions: 1,
                    ..
                }
            ));
        }
        assert_eq!(a.stats().ddl_applied, 3);
        a.close().await;

        // The same RENAME delivered as new (the checkpoint past frame 2 only) is an error:
        // outside a re-delivery, a missing table is no sign that it ran.
        target
            .exec("UPDATE outflow.checkpoint SET seq = 2, txns_applied = 1, txns_in_frame = 1")
            .await
            .unwrap();
        let mut a = Applier::connect(opts.clone(), ApplyConfig::default())
            .await
            .unwrap();
        let e = a.apply(3, &batches[2]).await.unwrap_err();
        assert!(e.to_string().contains("rename_table"), "{e}");
        a.close().await;

        // A crash between the RENAME and its checkpoint: the checkpoint points at it.
        target
            .exec("UPDATE outflow.checkpoint SET seq = 3, txns_applied = 0, txns_in_frame = 1")
            .await
            .unwrap();
        let mut a = Applier::connect(opts, ApplyConfig::default())
            .await
            .unwrap();
        a.apply(3, &batches[2]).await.unwrap();
        let cp = a.last_applied().unwrap();
        assert_eq!((cp.seq, cp.txns_applied, cp.txns_in_frame), (3, 1, 1));
        assert_eq!(cp.gtid.as_deref(), Some("0-1-3"));
        assert_eq!(a.stats().ddl_applied, 1);
        assert_eq!(a.apply(3, &batches[2]).await.unwrap(), Applied::Duplicate);
        a.close().await;
        let tables: Vec<String> = target
            .query_rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app'",
            )
            .await
            .unwrap();
        assert_eq!(tables, ["u"]);
    });
}

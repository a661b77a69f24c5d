//! `outflow run --from start` end to end, as a real process: the initial snapshot taken
//! while sysbench writes, then the binlog from the snapshot's handoff, into a fresh target
//! that has only the schema. At the end every table is checksum-equal and `outflow verify`
//! is clean. Column rules ride along: an excluded column stays untouched (NULL) on the
//! target, a masked one holds SHA-256 of the source value, computed by the source server.
//! The second test SIGKILLs the relay in the middle of the snapshot and restarts it. The
//! third kills it in the middle of a table with a VARCHAR key and one with no key, which
//! must then be read again from their start after a TRUNCATE on the target.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{log_text, verify_clean, OUTFLOW};
use outflow_testkit::{Server, ServerConfig, Sysbench, Workload};

const TABLES: u32 = 2;

fn start_relay(
    source: &Server,
    target: &Server,
    spool: &std::path::Path,
    log: &std::path::Path,
    chunk_rows: u32,
    extra: &[&str],
) -> Child {
    start_relay_with(
        Command::new(OUTFLOW),
        source,
        target,
        spool,
        log,
        chunk_rows,
        extra,
    )
}

/// [`start_relay`] on a command the caller prepared (environment).
fn start_relay_with(
    cmd: Command,
    source: &Server,
    target: &Server,
    spool: &std::path::Path,
    log: &std::path::Path,
    chunk_rows: u32,
    extra: &[&str],
) -> Child {
    let chunk_rows = chunk_rows.to_string();
    let mut args = vec![
        "--from",
        "start",
        "--snapshot-chunk-rows",
        &chunk_rows,
        "--do-db",
        "sbtest,app",
        "--exclude-column",
        "app.people.secret",
        "--mask-column",
        "app.people.email",
    ];
    args.extend_from_slice(extra);
    common::spawn_run(cmd, source, target, spool, log, &args)
}

const PEOPLE: &str = "CREATE TABLE app.people (id INT PRIMARY KEY, email VARCHAR(100), \
                      secret VARCHAR(50), note VARCHAR(20))";
/// The target's copy: the masked column holds 64 hex digits, the excluded one keeps NULL.
const PEOPLE_TARGET: &str = "CREATE TABLE app.people (id INT PRIMARY KEY, email CHAR(64), \
                             secret VARCHAR(50) DEFAULT NULL, note VARCHAR(20))";

/// Source and target with the sysbench tables prepared (rows only on the source) and
/// `app.people` holding rows that only the snapshot can carry.
fn setup(rt: &tokio::runtime::Runtime, table_size: u64) -> (Server, Server, Sysbench) {
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(TABLES)
        .table_size(table_size)
        .threads(2);
    bench.prepare(&source).unwrap();
    rt.block_on(async {
        source
            .exec(&format!(
                "CREATE DATABASE app; {PEOPLE}; \
                 INSERT INTO app.people VALUES (1,'ann@example.com','pw1','a'), \
                 (2,'bob@example.com','pw2','b'), (3,NULL,'pw3','c')"
            ))
            .await
            .unwrap();
        target
            .exec(&format!("CREATE DATABASE app; {PEOPLE_TARGET}"))
            .await
            .unwrap();
        common::copy_schema(&source, &target, "sbtest").await;
    });
    (source, target, bench)
}

/// Changes to `app.people` that reach the target through the binlog.
async fn people_stream_changes(source: &Server) {
    source
        .exec(
            "INSERT INTO app.people VALUES (4,'cy@example.com','pw4','d'); \
             UPDATE app.people SET email='ann@example.org', secret='new' WHERE id=1; \
             UPDATE app.people SET secret='only-secret' WHERE id=2; \
             UPDATE app.people SET note='bb' WHERE id=2; \
             DELETE FROM app.people WHERE id=3",
        )
        .await
        .unwrap();
}

async fn checksums(server: &Server) -> Vec<u64> {
    common::sysbench_checksums(server, TABLES).await
}

type Person = (i32, Option<String>, Option<String>, Option<String>);

/// What the target must hold for `app.people`: emails hashed by the source server itself
/// (`SHA2(value, 256)`, no mask key), secrets absent.
async fn people_expected(source: &Server) -> Vec<Person> {
    source
        .query_rows("SELECT id, SHA2(email, 256), NULL, note FROM app.people ORDER BY id")
        .await
        .unwrap()
}

async fn people(target: &Server) -> Vec<Person> {
    target
        .query_rows("SELECT id, email, secret, note FROM app.people ORDER BY id")
        .await
        .unwrap()
}

/// Waits until every table of `tables` is checksum-equal on both sides, failing if the
/// relay exits or `secs` pass.
fn wait_tables_equal(
    rt: &tokio::runtime::Runtime,
    source: &Server,
    target: &Server,
    tables: &[&str],
    relay: &mut Child,
    log: &std::path::Path,
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (want, got) = rt.block_on(async {
            let mut want = Vec::new();
            let mut got = Vec::new();
            for t in tables {
                want.push(source.checksum_table(t).await.unwrap());
                got.push(target.checksum_table(t).await.unwrap());
            }
            (want, got)
        });
        if want == got {
            return;
        }
        if let Ok(Some(status)) = relay.try_wait() {
            panic!("outflow run exited with {status}; log:\n{}", log_text(log));
        }
        assert!(
            Instant::now() < deadline,
            "target never caught up: {got:?} vs {want:?}; log:\n{}",
            log_text(log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the target equals the source, then stops the relay and runs `verify`.
fn converge(
    rt: &tokio::runtime::Runtime,
    source: &Server,
    target: &Server,
    relay: &mut Child,
    log: &std::path::Path,
) {
    let want = rt.block_on(checksums(source));
    let want_people = rt.block_on(people_expected(source));
    assert_eq!(want_people.len(), 3, "{want_people:?}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = rt.block_on(checksums(target));
        let got_people = rt.block_on(people(target));
        if got == want && got_people == want_people {
            break;
        }
        if let Ok(Some(status)) = relay.try_wait() {
            panic!("outflow run exited with {status}; log:\n{}", log_text(log));
        }
        assert!(
            Instant::now() < deadline,
            "target never caught up: {got:?} vs {want:?}, people {got_people:?} vs \
             {want_people:?}; log:\n{}",
            log_text(log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    verify_clean(source, target, "sbtest.sbtest1,sbtest.sbtest2");
}

#[test]
fn snapshot_under_load_then_stream_equals_source_with_column_rules() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (source, target, bench) = setup(&rt, 3000);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("outflow.log");

    let mut relay = None;
    let workload = {
        let bench = bench.clone().time(Duration::from_secs(4)).events(0);
        std::thread::scope(|s| {
            let load = s.spawn(|| bench.run(&source));
            std::thread::sleep(Duration::from_millis(500));
            // The snapshot starts while sysbench writes.
            relay = Some(start_relay(&source, &target, &spool, &log, 1000, &[]));
            std::thread::sleep(Duration::from_millis(1500));
            rt.block_on(people_stream_changes(&source));
            load.join().unwrap()
        })
    };
    workload.expect("sysbench run");
    let mut relay = relay.unwrap();
    converge(&rt, &source, &target, &mut relay, &log);
    let text = log_text(&log);
    assert!(
        !text.contains("conflict overwritten"),
        "snapshot rows are upserts, not conflicts:\n{text}"
    );
    // `outflow tail` prints what the relay ships: no excluded column, masked values hashed.
    let tail = Command::new(OUTFLOW)
        .args(["tail", "--source", &source.url(), "--tls-mode", "disabled"])
        .args(["--from", "start", "--stop-at-end", "--do-db", "app"])
        .args(["--exclude-column", "app.people.secret"])
        .args(["--mask-column", "app.people.email"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&tail.stdout);
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.contains("\"db\":\"app\"")), "{out}");
    assert!(
        !out.contains("secret") && !out.contains("@example"),
        "{out}"
    );
    let want: Vec<(String,)> = rt
        .block_on(source.query_rows("SELECT SHA2('cy@example.com', 256)"))
        .unwrap();
    assert!(
        out.contains(&format!("\"email\":\"{}\"", want[0].0)),
        "{out}"
    );
}

#[test]
fn relay_killed_mid_snapshot_resumes_and_equals_source() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (source, target, bench) = setup(&rt, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("outflow.log");
    let state = dir.path().join("spool").join("source-state.json");

    let workload = {
        let bench = bench.clone().time(Duration::from_secs(6)).events(0);
        std::thread::scope(|s| {
            let load = s.spawn(|| bench.run(&source));
            std::thread::sleep(Duration::from_millis(300));
            let mut relay = start_relay(&source, &target, &spool, &log, 500, &[]);
            // Kill once some snapshot chunks are in the spool, before the snapshot is done.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&state).unwrap_or_default();
                if text.contains("\"snapshot\":true") {
                    let seq: u64 = text
                        .split("\"seq\":")
                        .nth(1)
                        .and_then(|r| r.split(',').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if seq >= 6 {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no snapshot frames: {text}; log:\n{}",
                    log_text(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            relay.kill().unwrap();
            relay.wait().unwrap();
            let text = std::fs::read_to_string(&state).unwrap();
            assert!(
                text.contains("\"snapshot\":true"),
                "killed before the snapshot ended: {text}"
            );
            std::thread::sleep(Duration::from_millis(300));
            let relay = start_relay(&source, &target, &spool, &log, 500, &[]);
            rt.block_on(people_stream_changes(&source));
            (load.join().unwrap(), relay)
        })
    };
    let (report, mut relay) = workload;
    report.expect("sysbench run");
    converge(&rt, &source, &target, &mut relay, &log);
}

/// A VARCHAR primary key (the snapshot cannot continue after its last key) and no key.
const RESTART_TABLES: &str = "CREATE TABLE app.vk (k VARCHAR(20) PRIMARY KEY, v INT, \
                              pad VARCHAR(60)); CREATE TABLE app.nokey (a INT, b VARCHAR(60))";

/// `db.table` → (rows, done) from the snapshot progress file.
fn snapshot_progress(path: &std::path::Path) -> Vec<(String, u64, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v["tables"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(k, p)| {
                    let rows = p["rows"].as_u64().unwrap_or(0);
                    (k.clone(), rows, p["done"].as_bool().unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn count(server: &Server, sql: &str) -> u64 {
    let rows: Vec<(u64,)> = server.query_rows(sql).await.unwrap();
    rows[0].0
}

#[test]
fn tables_cut_short_without_an_integer_key_are_truncated_and_read_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    const ROWS: u32 = 40_000;
    rt.block_on(async {
        source
            .exec(&format!(
                "CREATE DATABASE app; USE app; {RESTART_TABLES}; \
                 INSERT INTO app.vk SELECT CONCAT('k', LPAD(seq, 6, '0')), seq, \
                 REPEAT('x', 50) FROM seq_1_to_{ROWS}; \
                 INSERT INTO app.nokey SELECT seq, REPEAT('y', 50) FROM seq_1_to_{ROWS}"
            ))
            .await
            .unwrap();
        target
            .exec(&format!("CREATE DATABASE app; {RESTART_TABLES}"))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("outflow.log");
    let progress = spool.join("snapshot-progress.json");
    // The user's policy stops on TRUNCATE: the snapshot's own must run regardless.
    let policy = ["--ddl", "truncate_table=stop"];

    let mut relay = start_relay(&source, &target, &spool, &log, 100, &policy);
    // Kill while both tables are cut short, once the target holds the rows deleted below.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = snapshot_progress(&progress);
        let begun = |t: &str| p.iter().find(|(n, _, _)| n == t).cloned();
        let (vk, nokey) = (begun("app.vk"), begun("app.nokey"));
        if let (Some(vk), Some(nokey)) = (&vk, &nokey) {
            assert!(
                !vk.2 && !nokey.2,
                "a table finished before the kill (make it larger): {p:?}"
            );
            let on_target = rt.block_on(async {
                (
                    count(&target, "SELECT COUNT(*) FROM app.vk WHERE k <= 'k000200'").await,
                    count(&target, "SELECT COUNT(*) FROM app.nokey WHERE a <= 200").await,
                )
            });
            if vk.1 >= 300 && on_target == (200, 200) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never got far enough: {p:?}; log:\n{}",
            log_text(&log)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    let p = snapshot_progress(&progress);
    assert!(
        p.iter().all(|(_, _, done)| !done),
        "killed before the tables were done: {p:?}"
    );
    // Rows the target already holds change or go on the source while the relay is down:
    // the stream resumes after these changes, so only the re-read can carry them.
    rt.block_on(async {
        source
            .exec(
                "DELETE FROM app.vk WHERE k <= 'k000100'; \
                 UPDATE app.vk SET v = -v WHERE k > 'k000100' AND k <= 'k000150'; \
                 DELETE FROM app.nokey WHERE a <= 100; \
                 UPDATE app.nokey SET b = 'changed' WHERE a > 100 AND a <= 150",
            )
            .await
            .unwrap();
    });
    let after_changes: (String, u64) = rt.block_on(async {
        let rows: Vec<(String, u64, String, String)> =
            source.query_rows("SHOW MASTER STATUS").await.unwrap();
        (rows[0].0.clone(), rows[0].1)
    });

    let mut relay = start_relay(&source, &target, &spool, &log, 100, &policy);
    // A change after the restart reaches the target through the stream.
    rt.block_on(async {
        source
            .exec("INSERT INTO app.vk VALUES ('zz', 1, 'new'); DELETE FROM app.nokey WHERE a = 500")
            .await
            .unwrap();
    });
    let tables = ["app.vk", "app.nokey"];
    wait_tables_equal(&rt, &source, &target, &tables, &mut relay, &log, 60);
    relay.kill().unwrap();
    relay.wait().unwrap();
    // The restart took the re-read path for both tables: each is one range read in a
    // snapshot taken after the changes above, and the target ran one TRUNCATE per table.
    let text = std::fs::read_to_string(&progress).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for t in tables {
        let p = &v["tables"][t];
        assert_eq!(p["done"], true, "{text}");
        let segs = p["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 1, "{t}: {text}");
        assert!(segs[0]["after_key"].is_null(), "{t}: {text}");
        let at = &segs[0]["position"];
        let at = (
            at["file"].as_str().unwrap().to_string(),
            at["pos"].as_u64().unwrap(),
        );
        assert!(
            at >= after_changes,
            "{t} read at {at:?}, before {after_changes:?}"
        );
    }
    let truncates: Vec<(String, u64)> = rt
        .block_on(target.query_rows("SHOW GLOBAL STATUS LIKE 'Com_truncate'"))
        .unwrap();
    assert_eq!(truncates[0].1, 2, "TRUNCATEs run on the target");
    let rows = rt.block_on(count(&target, "SELECT COUNT(*) FROM app.vk"));
    assert_eq!(rows, u64::from(ROWS) - 100 + 1);
    verify_clean(&source, &target, "app.vk,app.nokey");
}

/// A composite integer key: signed and unsigned columns, negative and past `i64::MAX`
/// values, so the statement that drops rows after the last key quotes every kind.
const INT_KEY_TABLE: &str = "CREATE TABLE app.ik (a INT NOT NULL, b BIGINT UNSIGNED NOT NULL, \
                             v INT, pad VARCHAR(60), PRIMARY KEY (a, b))";

/// `(a, b)` of the rows at positions `from..from + n` in key order (0-based).
async fn keys_at(server: &Server, from: u32, n: u32) -> Vec<(i32, u64)> {
    server
        .query_rows(&format!(
            "SELECT a, b FROM app.ik ORDER BY a, b LIMIT {from}, {n}"
        ))
        .await
        .unwrap()
}

fn key_list(keys: &[(i32, u64)]) -> String {
    keys.iter()
        .map(|(a, b)| format!("({a},{b})"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The window between a chunk's spool append and its progress save: the relay exits right
/// there (test hook), so the spool holds chunk 3 while the progress names chunk 2's last
/// key `K`. Rows of chunk 3 are then deleted on the source; the restart continues after `K`
/// at a later position, whose handoff skips those deletes. The target must still lose
/// them: the snapshot drops the rows above `K` before reading them again.
#[test]
fn a_chunk_shipped_but_not_recorded_is_dropped_before_the_table_continues() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    const ROWS: u32 = 1000;
    const CHUNK: u32 = 100;
    rt.block_on(async {
        source
            .exec(&format!(
                "CREATE DATABASE app; USE app; {INT_KEY_TABLE}; \
                 INSERT INTO app.ik SELECT CAST(seq DIV 10 AS SIGNED) - 50, \
                 18446744073709551615 - seq MOD 10, \
                 seq, REPEAT('x', 50) FROM seq_1_to_{ROWS}"
            ))
            .await
            .unwrap();
        target
            .exec(&format!("CREATE DATABASE app; {INT_KEY_TABLE}"))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("outflow.log");
    let progress = spool.join("snapshot-progress.json");
    // The user's policies stop on every DDL: the snapshot's own statement runs regardless.
    let policy = ["--ddl", "default=stop"];

    let mut relay = Command::new(OUTFLOW);
    relay.env("OUTFLOW_DANGER_TEST_EXIT_AFTER_SNAPSHOT_CHUNK", "3");
    let status = {
        let mut child = start_relay_with(relay, &source, &target, &spool, &log, CHUNK, &policy);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the exit hook never fired; log:\n{}",
                log_text(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(status.code(), Some(86), "log:\n{}", log_text(&log));
    let p = snapshot_progress(&progress);
    assert_eq!(
        p,
        vec![("app.ik".to_string(), u64::from(2 * CHUNK), false)],
        "the progress names chunk 2's last key; log:\n{}",
        log_text(&log)
    );
    // Chunk 3 (key order 200..300) is in the spool only: some of its rows go, some change;
    // rows of chunk 1 (below the last key) change too, which the stream carries.
    // Chunk 2's last key, where the restart continues.
    let k = rt.block_on(keys_at(&source, 2 * CHUNK - 1, 1))[0];
    rt.block_on(async {
        let chunk3 = keys_at(&source, 2 * CHUNK, CHUNK).await;
        let gone: Vec<_> = chunk3.iter().step_by(9).copied().collect();
        let changed: Vec<_> = chunk3.iter().skip(4).step_by(20).copied().collect();
        let early = keys_at(&source, 10, 3).await;
        source
            .exec(&format!(
                "DELETE FROM app.ik WHERE (a, b) IN ({}); \
                 UPDATE app.ik SET v = -v WHERE (a, b) IN ({}); \
                 DELETE FROM app.ik WHERE (a, b) IN ({})",
                key_list(&gone),
                key_list(&changed),
                key_list(&early)
            ))
            .await
            .unwrap();
    });

    let mut relay = start_relay(&source, &target, &spool, &log, CHUNK, &policy);
    rt.block_on(async {
        source
            .exec("INSERT INTO app.ik VALUES (-2147483648, 0, 1, 'min'), (7, 5, 2, 'new')")
            .await
            .unwrap();
    });
    wait_tables_equal(&rt, &source, &target, &["app.ik"], &mut relay, &log, 60);
    relay.kill().unwrap();
    relay.wait().unwrap();
    // The restart continued after chunk 2's last key (a second range), after dropping the
    // rows above it on the target.
    let text = std::fs::read_to_string(&progress).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let segs = v["tables"]["app.ik"]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{text}");
    assert_eq!(
        segs[1]["after_key"],
        serde_json::json!([k.0, k.1]),
        "{text}"
    );
    let logged = log_text(&log);
    assert!(
        logged.contains(&format!(
            "DELETE FROM `app`.`ik` WHERE (`a`, `b`) > ({}, {})",
            k.0, k.1
        )),
        "{logged}"
    );
    verify_clean(&source, &target, "app.ik");
}

/// A frame marked as snapshot holding `sql` as its statement, as the relay ships it.
fn snapshot_statement_batch(sql: &str) -> outflow_core::ChangeBatch {
    let mut b = outflow_core::ChangeBatch::new(outflow_core::ImageMode::Replica);
    b.set_snapshot(true);
    let ddl = outflow_core::Ddl {
        sql: sql.as_bytes().to_vec(),
        ..outflow_core::Ddl::default()
    };
    b.push_ddl(None, 0, &ddl, "binlog.000001", 4).unwrap();
    b
}

/// The sink side of the snapshot's own statements: run whatever the DDL policy says,
/// harmless when delivered again, and nothing but their exact shapes accepted.
#[test]
fn the_sink_runs_only_the_snapshots_own_statements_and_twice_is_harmless() {
    use outflow_sink::{Applied, Applier, ApplyConfig, DdlPolicies, DdlPolicy};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    rt.block_on(async {
        target
            .exec(&format!(
                "CREATE DATABASE app; {INT_KEY_TABLE}; CREATE TABLE app.other (id INT); \
                 INSERT INTO app.other VALUES (1); \
                 INSERT INTO app.ik (a, b) VALUES (-2, 18446744073709551615), (-1, 5), \
                 (-1, 18446744073709551614), (-1, 18446744073709551615), (0, 0), (3, 1)"
            ))
            .await
            .unwrap();
        let keys = || async {
            let k: Vec<(i32, u64)> = target
                .query_rows("SELECT a, b FROM app.ik ORDER BY a, b")
                .await
                .unwrap();
            k
        };
        let kept = vec![(-2, u64::MAX), (-1, 5), (-1, u64::MAX - 1)];
        let cfg = ApplyConfig {
            ddl: DdlPolicies::all(DdlPolicy::Stop),
            ..ApplyConfig::default()
        };
        let delete = snapshot_statement_batch(
            "DELETE FROM `app`.`ik` WHERE (`a`, `b`) > (-1, 18446744073709551614)",
        );
        let mut a = Applier::connect(target.opts(), cfg.clone()).await.unwrap();
        a.apply(1, &delete).await.unwrap();
        assert_eq!(keys().await, kept);
        a.close().await;

        // A crash between the statement and its checkpoint: it runs again, harmlessly.
        target
            .exec("UPDATE outflow.checkpoint SET seq = 1, txns_applied = 0, txns_in_frame = 1")
            .await
            .unwrap();
        let mut a = Applier::connect(target.opts(), cfg.clone()).await.unwrap();
        assert!(matches!(
            a.apply(1, &delete).await.unwrap(),
            Applied::Frame { .. }
        ));
        assert_eq!(keys().await, kept);
        assert_eq!(a.apply(1, &delete).await.unwrap(), Applied::Duplicate);
        // The snapshot's TRUNCATE runs under a policy that stops on every DDL.
        a.apply(2, &snapshot_statement_batch("TRUNCATE TABLE `app`.`other`"))
            .await
            .unwrap();
        assert_eq!(count(&target, "SELECT COUNT(*) FROM app.other").await, 0);
        assert_eq!(a.stats().ddl_applied, 0, "not the user's DDL");
        a.close().await;

        for bad in [
            "DELETE FROM `app`.`ik`",
            "DELETE FROM `app`.`ik` WHERE (`a`) > (-1) OR 1 = 1",
            "DELETE FROM `app`.`ik` WHERE (`a`, `b`) > ('x', 1)",
            "TRUNCATE TABLE `app`.`ik`; DROP TABLE `app`.`ik`",
            "DROP TABLE `app`.`ik`",
            "TRUNCATE app.ik",
        ] {
            let mut a = Applier::connect(target.opts(), cfg.clone()).await.unwrap();
            let e = a
                .apply(3, &snapshot_statement_batch(bad))
                .await
                .unwrap_err();
            assert!(
                e.to_string().contains("not a snapshot statement"),
                "{bad}: {e}"
            );
            assert!(!e.is_retryable(), "{bad}: {e}");
            a.close().await;
        }
        assert_eq!(keys().await, kept);
    });
}

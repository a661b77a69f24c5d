//! `outflow run --from start` end to end, as a real process: the initial snapshot taken
//! while sysbench writes, then the binlog from the snapshot's handoff, into a fresh target
//! that has only the schema. At the end every table is checksum-equal and `outflow verify`
//! is clean. Column rules ride along: an excluded column stays untouched (NULL) on the
//! target, a masked one holds SHA-256 of the source value, computed by the source server.
//! The second test SIGKILLs the relay in the middle of the snapshot and restarts it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outflow_testkit::{Server, ServerConfig, Sysbench, Workload};

const OUTFLOW: &str = env!("CARGO_BIN_EXE_outflow");
const TABLES: u32 = 2;

fn start_relay(
    source: &Server,
    target: &Server,
    spool: &std::path::Path,
    log: &std::path::Path,
    chunk_rows: u32,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(OUTFLOW)
        .args(["run", "--source", &source.url(), "--target", &target.url()])
        .args(["--tls-mode", "disabled", "--from", "start", "--spool"])
        .arg(spool)
        .args(["--batch-delay", "50ms"])
        .args(["--snapshot-chunk-rows", &chunk_rows.to_string()])
        .args(["--do-db", "sbtest,app"])
        .args(["--exclude-column", "app.people.secret"])
        .args(["--mask-column", "app.people.email"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start outflow run")
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
            .exec(&format!(
                "CREATE DATABASE sbtest; CREATE DATABASE app; {PEOPLE_TARGET}"
            ))
            .await
            .unwrap();
        for t in 1..=TABLES {
            let rows: Vec<(String, String)> = source
                .query_rows(&format!("SHOW CREATE TABLE sbtest.sbtest{t}"))
                .await
                .unwrap();
            target
                .exec(&format!("USE sbtest; {}", rows[0].1))
                .await
                .unwrap();
        }
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
    let mut sums = Vec::new();
    for t in 1..=TABLES {
        sums.push(
            server
                .checksum_table(&format!("sbtest.sbtest{t}"))
                .await
                .unwrap(),
        );
    }
    sums
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

fn log_text(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
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
    let verify = Command::new(OUTFLOW)
        .args([
            "verify",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
        ])
        .args(["--tables", "sbtest.sbtest1,sbtest.sbtest2"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify: {}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
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
            relay = Some(start_relay(&source, &target, &spool, &log, 1000));
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
            let mut relay = start_relay(&source, &target, &spool, &log, 500);
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
            let relay = start_relay(&source, &target, &spool, &log, 500);
            rt.block_on(people_stream_changes(&source));
            (load.join().unwrap(), relay)
        })
    };
    let (report, mut relay) = workload;
    report.expect("sysbench run");
    converge(&rt, &source, &target, &mut relay, &log);
}

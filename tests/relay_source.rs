//! The source side of the relay against a real server: binlog -> tracker/filters -> codec
//! -> spool, stopped and restarted, with every change in the spool exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use outflow::config::Config;
use outflow::relay::source::{stream_to_spool, SourceProgress, SourceState};
use outflow::relay::{split_frames, spool_config};
use outflow_codec::{Decoder, Limits};
use outflow_core::{ChangeBatch, ImageMode, Op, ValueRef};
use outflow_spool::Spool;
use outflow_testkit::{Server, ServerConfig};

fn settings(server: &Server, dir: &std::path::Path) -> outflow::config::Settings {
    let mut c = Config::default();
    c.source.url = Some(server.url());
    c.source.tls_mode = Some("disabled".into());
    c.source.from = Some("oldest".into());
    c.filters.ignore_table = Some(vec!["app.noise".into()]);
    c.spool.dir = Some(dir.to_path_buf());
    c.spool.max_bytes = Some("64MiB".into());
    c.resolve().expect("settings")
}

/// (table, op, id) of every change in the spool, in order.
fn spooled_changes(
    spool_dir: &std::path::Path,
    s: &outflow::config::Settings,
) -> Vec<(String, Op, i64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spool = Spool::open(spool_config(s, spool_dir.to_path_buf())).unwrap();
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    let mut batch = ChangeBatch::new(ImageMode::Replica);
    let mut out = Vec::new();
    for seq in 1..spool.next_seq() {
        let record = rt
            .block_on(spool.read(seq))
            .unwrap()
            .expect("record present");
        for frame in split_frames(&record, &Limits::default()).unwrap() {
            decoder.decode(frame, &mut batch).unwrap();
            for section in batch.sections() {
                let name = format!("{}.{}", section.schema().db, section.schema().table);
                for change in section.changes() {
                    // Replica images: the key sits in the before image of an update or
                    // delete, in the after image of an insert.
                    let key = change.before.or(change.after).and_then(|i| i.get(0));
                    let id = match key {
                        Some(ValueRef::Int(v)) => v,
                        other => panic!("id column: {other:?}"),
                    };
                    out.push((name.clone(), change.op, id));
                }
            }
        }
    }
    out
}

#[test]
fn source_side_spools_every_change_once_across_restarts() {
    let server = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&server, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        server
            .exec(
                "CREATE DATABASE app; \
                 CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)); \
                 CREATE TABLE app.noise (id INT PRIMARY KEY); \
                 INSERT INTO app.t VALUES (1,'a'),(2,'b'),(3,'c'); \
                 INSERT INTO app.noise VALUES (1),(2); \
                 UPDATE app.t SET v='bb' WHERE id=2; \
                 DELETE FROM app.t WHERE id=3",
            )
            .await
            .unwrap();
    });
    let spool_dir = dir.path().join("spool");
    let run = || {
        let spool = Spool::open(spool_config(&s, spool_dir.clone())).unwrap();
        let progress = Arc::new(Mutex::new(SourceProgress::default()));
        rt.block_on(stream_to_spool(&s, dir.path(), &spool, true, progress))
            .expect("stream to the end of the binlog");
    };
    run();
    let first = spooled_changes(&spool_dir, &s);
    let t = |op, id| ("app.t".to_string(), op, id);
    assert_eq!(
        first,
        vec![
            t(Op::Insert, 1),
            t(Op::Insert, 2),
            t(Op::Insert, 3),
            t(Op::Update, 2),
            t(Op::Delete, 3)
        ],
        "the ignored table's rows stay behind; the rest arrive in order"
    );

    // More changes, then a restart from the saved state: only the new ones are added.
    rt.block_on(async {
        server
            .exec("INSERT INTO app.t VALUES (4,'d'); DELETE FROM app.t WHERE id=1")
            .await
            .unwrap();
    });
    run();
    let second = spooled_changes(&spool_dir, &s);
    assert_eq!(second.len(), 7, "{second:?}");
    assert_eq!(&second[..5], &first[..]);
    assert_eq!(&second[5..], &[t(Op::Insert, 4), t(Op::Delete, 1)]);

    // A restart with nothing new adds nothing.
    run();
    assert_eq!(spooled_changes(&spool_dir, &s), second);
    assert!(SourceState::load(dir.path()).unwrap().is_some());
}

/// The last batch of a burst ships within about `batch_delay` once the source goes quiet,
/// not when the next heartbeat happens to arrive (the streaming loop only looks at the
/// clock when an event comes in, so the source side asks for heartbeats that often).
#[test]
fn a_partial_batch_ships_while_the_source_is_idle() {
    let server = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&server, dir.path());
    // Far longer than the wait below: the batch must not wait for a configured heartbeat.
    s.source.as_mut().expect("source settings").heartbeat = Duration::from_secs(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        server
            .exec(
                "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)); \
                 INSERT INTO app.t VALUES (1,'a')",
            )
            .await
            .unwrap();
        let spool = Spool::open(spool_config(&s, dir.path().join("spool"))).unwrap();
        let progress = Arc::new(Mutex::new(SourceProgress::default()));
        let shipped = async {
            while spool.next_seq() == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            r = stream_to_spool(&s, dir.path(), &spool, false, progress) => {
                panic!("the source side stopped: {r:?}")
            }
            r = tokio::time::timeout(Duration::from_secs(10), shipped) => {
                r.expect("no batch in the spool 10 s after the source went quiet");
            }
        }
    });
}

/// The retention warning: a source keeping binlogs for one day and a shipping window that
/// next opens days from now is at risk; seven days of retention is not; neither is a
/// schedule that is always open.
#[tokio::test]
async fn binlog_retention_shorter_than_the_wait_for_a_window_is_warned() {
    let server = Server::start(ServerConfig::new().expire_logs_days(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    // A window that opens for one minute, three days from today (UTC).
    let day = now.to_zoned(jiff::tz::TimeZone::UTC).date() + jiff::ToSpan::days(3);
    let name = match day.weekday() {
        jiff::civil::Weekday::Monday => "Mon",
        jiff::civil::Weekday::Tuesday => "Tue",
        jiff::civil::Weekday::Wednesday => "Wed",
        jiff::civil::Weekday::Thursday => "Thu",
        jiff::civil::Weekday::Friday => "Fri",
        jiff::civil::Weekday::Saturday => "Sat",
        jiff::civil::Weekday::Sunday => "Sun",
    };
    let mut s = settings(&server, dir.path());
    assert_eq!(outflow::relay::retention_risk(&s, now).await.unwrap(), None);
    s.windows = vec![format!("{name} 12:00-12:01 UTC")];
    let warning = outflow::relay::retention_risk(&s, now)
        .await
        .unwrap()
        .expect("one day of retention, days until the window");
    assert!(warning.contains("1day"), "{warning}");

    let week = Server::start(ServerConfig::new().expire_logs_days(7)).unwrap();
    let mut s7 = settings(&week, dir.path());
    s7.windows = s.windows.clone();
    assert_eq!(
        outflow::relay::retention_risk(&s7, now).await.unwrap(),
        None
    );
}

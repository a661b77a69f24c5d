//! Failover of the source side, with `outflow run` as a real process: a primary and its
//! native replica share GTIDs; the primary is killed, the replica promoted and written to,
//! and outflow continues from the replica by GTID with nothing lost or repeated. A server
//! that lacks the stream's GTID is refused with an error naming it.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use outflow_testkit::{replicate, ReplicationOpts, Server, ServerConfig};

fn relay(
    source: &Server,
    failover: &Server,
    target: &Server,
    dir: &std::path::Path,
    server_id: u32,
    extra: &[&str],
) -> Child {
    let server_id = server_id.to_string();
    let failover = failover.url();
    let mut args = vec![
        "--source-failover",
        &failover,
        "--server-id",
        &server_id,
        "--failover-after",
        "5s",
    ];
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

fn log_of(dir: &std::path::Path) -> String {
    common::log_text(&dir.join("outflow.log"))
}

/// Waits until `target` holds `n` rows in `app.t`.
async fn wait_rows(target: &Server, n: i64, dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have: i64 = target
            .query_scalar("SELECT COUNT(*) FROM app.t")
            .await
            .unwrap_or(-1);
        if have == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "target has {have} of {n} rows; outflow log:\n{}",
            log_of(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn insert(server: &Server, from: i64, to: i64) {
    for i in from..=to {
        server
            .exec(&format!(
                "INSERT INTO app.t VALUES ({i}, 'row {i}', {})",
                i * 7
            ))
            .await
            .unwrap();
    }
}

#[test]
fn fails_over_to_a_replica_by_gtid_and_refuses_a_server_without_the_position() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = ServerConfig::new().option("log_slave_updates", "ON");
        let mut primary = Server::start(cfg.clone()).unwrap();
        let replica = Server::start(cfg.clone()).unwrap();
        // Unrelated to the primary: its own history in the same GTID domain.
        let stranger = Server::start(cfg).unwrap();
        let target = Server::start(ServerConfig::new()).unwrap();
        let target2 = Server::start(ServerConfig::new()).unwrap();
        replicate(&primary, &replica, ReplicationOpts::default())
            .await
            .unwrap();
        for s in [&primary, &stranger, &target, &target2] {
            s.exec(
                "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, \
                 note VARCHAR(40), n BIGINT)",
            )
            .await
            .unwrap();
        }
        // These rows reach the targets through the initial snapshot, the rest by the binlog.
        insert(&primary, 1, 50).await;

        let dir = tempfile::tempdir().unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        // One relay fails over to the replica, the other to the stranger (two replicas of
        // one server need two server ids).
        // The first also applies on one connection, under its own stream name and
        // checkpoint table.
        let mut good = relay(
            &primary,
            &replica,
            &target,
            dir.path(),
            4_300_001,
            &[
                "--apply-threads",
                "1",
                "--stream",
                "feed-a",
                "--checkpoint-table",
                "ops.positions",
            ],
        );
        let mut bad = relay(&primary, &stranger, &target2, dir2.path(), 4_300_002, &[]);
        insert(&primary, 51, 100).await;
        wait_rows(&target, 100, dir.path()).await;
        wait_rows(&target2, 100, dir2.path()).await;

        // The replica has everything the primary wrote, then the primary dies.
        let want = primary.gtid_binlog_pos().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while replica.gtid_current_pos().await.unwrap() != want {
            assert!(Instant::now() < deadline, "replica never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        primary.kill();

        // Promote the replica; its own writes continue the same GTID domain.
        replica.exec("STOP SLAVE; RESET SLAVE ALL").await.unwrap();
        insert(&replica, 101, 150).await;
        replica
            .exec("UPDATE app.t SET n = n + 1 WHERE id <= 10; DELETE FROM app.t WHERE id = 42")
            .await
            .unwrap();
        wait_rows(&target, 149, dir.path()).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = replica.checksum_table("app.t").await.unwrap();
            let b = target.checksum_table("app.t").await.unwrap();
            if a == b {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "target differs from the promoted replica; outflow log:\n{}",
                log_of(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = log_of(dir.path());
        assert!(log.contains("failing over"), "{log}");
        common::verify_clean(&replica, &target, "app.t");
        let streams: i64 = target
            .query_scalar("SELECT COUNT(*) FROM ops.positions WHERE stream = 'feed-a'")
            .await
            .unwrap();
        assert_eq!(streams, 1, "the checkpoint row is where the flags put it");
        let default_table: i64 = target
            .query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'outflow'",
            )
            .await
            .unwrap();
        assert_eq!(default_table, 0, "no checkpoint table in the default place");
        let _ = good.kill();
        let _ = good.wait();

        // The relay whose only other server never had the primary's transactions stops
        // with an error naming the position it could not find, and ships nothing more.
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = bad.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = bad.kill();
                panic!(
                    "relay kept running without the position:\n{}",
                    log_of(dir2.path())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(!status.success());
        let log = log_of(dir2.path());
        assert!(
            log.contains(&want),
            "the error names the GTID {want}:\n{log}"
        );
        let rows: i64 = target2
            .query_scalar("SELECT COUNT(*) FROM app.t")
            .await
            .unwrap();
        assert_eq!(rows, 100, "nothing from the stranger reached the target");
    });
}

//! `outflow run` end to end, as a real process: a sysbench workload on a throwaway source,
//! the relay killed with SIGKILL and restarted with the same command several times, the
//! target server killed and restarted once, and at the end every table checksum-equal and
//! `outflow verify` clean. Exactly once is what makes that possible: a lost change leaves
//! a row behind, a repeated one trips the applier's conflict policy (stop, the default).

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use outflow_testkit::{Server, ServerConfig, Sysbench, Workload};

const TABLES: u32 = 2;

fn start_relay(
    source: &Server,
    target: &Server,
    spool: &std::path::Path,
    log: &std::path::Path,
) -> Child {
    common::spawn_run(
        Command::new(common::OUTFLOW),
        source,
        target,
        spool,
        log,
        &[],
    )
}

async fn checksums(server: &Server) -> Vec<u64> {
    common::sysbench_checksums(server, TABLES).await
}

#[test]
fn relay_survives_sigkill_of_either_side_and_of_the_target() {
    let source = Server::start(ServerConfig::new()).unwrap();
    let mut target = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("outflow.log");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(TABLES)
        .table_size(2000)
        .threads(2);
    bench.prepare(&source).unwrap();
    // The target gets the schema up front (the stream's CREATE statements then count as
    // already applied); the rows come through the relay (the prepare's inserts are in the
    // binlog). DDL into an empty target is tests/ddl.rs.
    rt.block_on(common::copy_schema(&source, &target, "sbtest"));

    let mut relay = start_relay(&source, &target, &spool, &log);
    let workload = {
        let bench = bench.clone().time(Duration::from_secs(8)).events(0);
        std::thread::scope(|s| {
            let load = s.spawn(|| bench.run(&source));
            // Kill the relay at uneven points while the workload runs.
            for (i, pause) in [900u64, 1300, 700, 1600].iter().enumerate() {
                std::thread::sleep(Duration::from_millis(*pause));
                relay.kill().unwrap();
                relay.wait().unwrap();
                if i == 1 {
                    // And the target server, mid-apply.
                    target.kill();
                    target.restart().unwrap();
                }
                relay = start_relay(&source, &target, &spool, &log);
            }
            load.join().unwrap()
        })
    };
    workload.expect("sysbench run");

    let want = rt.block_on(checksums(&source));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = rt.block_on(checksums(&target));
        if got == want {
            break;
        }
        if let Ok(Some(status)) = relay.try_wait() {
            panic!(
                "outflow run exited with {status}; log:\n{}",
                common::log_text(&log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "target never caught up: {got:?} vs {want:?}; log:\n{}",
            common::log_text(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    relay.kill().unwrap();
    relay.wait().unwrap();

    common::verify_clean(&source, &target, "sbtest.sbtest1,sbtest.sbtest2");
}

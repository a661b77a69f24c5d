//! What the tests of the `outflow` process share: starting `outflow run` with its log in a
//! file, reading that log, and `outflow verify`.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use outflow_testkit::Server;

/// The binary under test.
pub const OUTFLOW: &str = env!("CARGO_BIN_EXE_outflow");

/// Starts `outflow run` (on `cmd`, which may carry environment) from `source` to `target`
/// with the tests' defaults (no TLS to the databases, 50 ms batches, the spool in `spool`),
/// then `args`. Log and progress lines are appended to `log`.
pub fn spawn_run(
    mut cmd: Command,
    source: &Server,
    target: &Server,
    spool: &Path,
    log: &Path,
    args: &[&str],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.args(["run", "--source", &source.url(), "--target", &target.url()])
        .args(["--tls-mode", "disabled", "--batch-delay", "50ms", "--spool"])
        .arg(spool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start outflow run")
}

/// `CHECKSUM TABLE` of `sbtest.sbtest1` to `sbtest.sbtest{tables}`, in order.
pub async fn sysbench_checksums(server: &Server, tables: u32) -> Vec<u64> {
    let mut sums = Vec::new();
    for t in 1..=tables {
        sums.push(
            server
                .checksum_table(&format!("sbtest.sbtest{t}"))
                .await
                .unwrap(),
        );
    }
    sums
}

/// The log so far (empty if there is none yet).
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// `outflow verify` over `tables` (comma-separated) finds the target equal to the source.
pub fn verify_clean(source: &Server, target: &Server, tables: &str) {
    let verify = Command::new(OUTFLOW)
        .args([
            "verify",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
        ])
        .args(["--tables", tables])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify: {}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Creates database `db` on `target` with every table of it on `source`, empty (from
/// `SHOW CREATE TABLE`): the rows then come through the relay.
pub async fn copy_schema(source: &Server, target: &Server, db: &str) {
    target.exec(&format!("CREATE DATABASE {db}")).await.unwrap();
    let tables: Vec<String> = source
        .query_rows(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}'"
        ))
        .await
        .unwrap();
    for t in tables {
        let rows: Vec<(String, String)> = source
            .query_rows(&format!("SHOW CREATE TABLE {db}.{t}"))
            .await
            .unwrap();
        target
            .exec(&format!("USE {db}; {}", rows[0].1))
            .await
            .unwrap();
    }
}

//! The link over an emulated long, lossy path: 25 ms each way (50 ms RTT) and 1% loss on the
//! loopback of a network namespace made for the test, both probes inside it. Needs
//! `ip netns` and the `netem` queueing discipline; where the machine lacks either, the test says
//! so and passes without running.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROBE: &str = env!("CARGO_BIN_EXE_outflow-transport-probe");

/// Runs `ip` or `tc` with `args`; the error is their stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Namespace(String);

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let name = format!("outflow-netem-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Namespace(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "netns", "exec", &ns.0, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                "delay", "25ms", "loss", "1%",
            ],
        )?;
        Ok(ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

#[test]
fn ships_over_a_50ms_lossy_path() {
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIPPED netem test: network namespaces with tc netem are not available here ({why})");
            return;
        }
    };
    let temp = tempfile::tempdir().unwrap();
    let certs = temp.path().join("certs");
    common::certs_in(&certs);
    let log = temp.path().join("applied.log");
    let spool = temp.path().join("spool");
    let (batches, max_len) = (400u64, 64usize << 10);
    let in_ns = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, PROBE])
            .args(args)
            .stdout(Stdio::piped());
        cmd
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let mut receiver = in_ns(&[
        "recv",
        "--listen",
        "127.0.0.1:47000",
        "--certs",
        &path(&certs),
        "--log",
        &path(&log),
        "--max-len",
        &max_len.to_string(),
    ])
    .spawn()
    .expect("receiver in namespace");
    let started = Instant::now();
    let sent = in_ns(&[
        "send",
        "--spool",
        &path(&spool),
        "--connect",
        "127.0.0.1:47000",
        "--certs",
        &path(&certs),
        "--batches",
        &batches.to_string(),
        "--max-len",
        &max_len.to_string(),
    ])
    .output()
    .expect("sender in namespace");
    let elapsed = started.elapsed();
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(
        sent.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let applied: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(applied, (1..=batches).collect::<Vec<_>>());
    let bytes: u64 = (1..=batches)
        .map(|s| common::payload(s, max_len).len() as u64)
        .sum();
    println!(
        "netem 50 ms RTT, 1% loss: {bytes} bytes in {:.2} s = {:.1} MB/s",
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert!(elapsed < Duration::from_secs(60));
}

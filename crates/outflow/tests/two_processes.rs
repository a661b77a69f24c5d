//! The relay as two processes, in the minimal command forms the README documents:
//! `outflow sink --listen ... --target ... --quic-* ... --spool DIR` and `outflow source
//! --source ... --connect ... --quic-* ... --spool DIR`, with certificates from `outflow
//! certs`. Each half is SIGKILLed and restarted with the same command while the other keeps
//! running, under a sysbench workload; then a transaction many times larger than a frame
//! travels in parts while first the sink and then the source side dies inside it (each by
//! its crash-test hook) and restarts alone. The target ends checksum-equal and `outflow
//! verify` clean.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outflow_testkit::{Server, ServerConfig, Sysbench, Workload};

const TABLES: u32 = 2;
const BIG_ROWS: u64 = 40_000;

struct Relay {
    certs: PathBuf,
    dir: PathBuf,
    listen: String,
}

impl Relay {
    fn log(&self, side: &str) -> PathBuf {
        self.dir.join(format!("{side}.log"))
    }

    fn logs(&self) -> String {
        format!(
            "sink log:\n{}\nsource log:\n{}",
            common::log_text(&self.log("sink")),
            common::log_text(&self.log("source"))
        )
    }

    fn spawn(&self, side: &str, args: &[&str], hook: Option<(&str, &str)>) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(side))
            .unwrap();
        let pem = |name: &str| self.certs.join(name);
        let mut cmd = Command::new(common::OUTFLOW);
        if let Some((k, v)) = hook {
            cmd.env(k, v);
        }
        let (cert, key) = match side {
            "sink" => ("server.pem", "server-key.pem"),
            _ => ("client.pem", "client-key.pem"),
        };
        cmd.arg(side)
            .args(args)
            .arg("--quic-ca")
            .arg(pem("ca.pem"))
            .arg("--quic-cert")
            .arg(pem(cert))
            .arg("--quic-key")
            .arg(pem(key))
            .arg("--spool")
            .arg(self.dir.join(format!("{side}-spool")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start outflow")
    }

    fn sink(&self, target: &Server, hook: Option<(&str, &str)>) -> Child {
        self.spawn(
            "sink",
            &["--listen", &self.listen, "--target", &target.url()],
            hook,
        )
    }

    fn source(&self, source: &Server, hook: Option<(&str, &str)>) -> Child {
        self.spawn(
            "source",
            &[
                "--source",
                &source.url(),
                "--tls-mode",
                "disabled",
                "--connect",
                &self.listen,
                "--batch-delay",
                "50ms",
                "--split-bytes",
                "256KiB",
            ],
            hook,
        )
    }

    /// Waits until `child` exits by its crash-test hook (code 86).
    fn wait_hook(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(86), "{}", self.logs());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the hook never fired; {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback UDP port free right now.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until every table in `tables` is checksum-equal on both servers.
fn wait_equal(
    rt: &tokio::runtime::Runtime,
    source: &Server,
    target: &Server,
    tables: &[&str],
    relay: &Relay,
    children: &mut [&mut Child],
) {
    let sums = |s: &Server| {
        rt.block_on(async {
            let mut v = Vec::new();
            for t in tables {
                v.push(s.checksum_table(t).await.ok());
            }
            v
        })
    };
    let want = sums(source);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if sums(target) == want {
            return;
        }
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("an outflow process exited with {status}; {}", relay.logs());
            }
        }
        assert!(
            Instant::now() < deadline,
            "target never caught up; {}",
            relay.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_half_restarts_alone_with_the_same_command() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = Server::start(ServerConfig::new()).unwrap();
    let target = Server::start(ServerConfig::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new(common::OUTFLOW)
        .args(["certs", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let relay = Relay {
        certs,
        dir: dir.path().to_path_buf(),
        listen: format!("127.0.0.1:{}", free_port()),
    };

    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(TABLES)
        .table_size(2000)
        .threads(2);
    bench.prepare(&source).unwrap();
    rt.block_on(source.exec(
        "CREATE DATABASE big; CREATE TABLE big.t (id INT PRIMARY KEY, pad VARCHAR(200) NOT \
         NULL, n INT NOT NULL)",
    ))
    .unwrap();
    rt.block_on(common::copy_schema(&source, &target, "sbtest"));
    rt.block_on(common::copy_schema(&source, &target, "big"));

    let mut sink = relay.sink(&target, None);
    let mut src = relay.source(&source, None);
    let load = bench.clone().time(Duration::from_secs(6)).events(0);
    std::thread::scope(|s| {
        let run = s.spawn(|| load.run(&source));
        // The sink dies and comes back while the source side keeps running, then the
        // other way round, twice.
        for pause in [900u64, 1200, 800, 1100] {
            std::thread::sleep(Duration::from_millis(pause));
            kill(&mut sink);
            sink = relay.sink(&target, None);
            std::thread::sleep(Duration::from_millis(pause / 2));
            kill(&mut src);
            src = relay.source(&source, None);
        }
        run.join().unwrap().expect("sysbench run");
    });
    let sb: Vec<String> = (1..=TABLES).map(|t| format!("sbtest.sbtest{t}")).collect();
    let sb: Vec<&str> = sb.iter().map(String::as_str).collect();
    wait_equal(
        &rt,
        &source,
        &target,
        &sb,
        &relay,
        &mut [&mut sink, &mut src],
    );

    // A transaction in parts (about 10 MB of binlog, 256 KiB per part). The sink dies with
    // its target transaction open and is restarted alone: the running source side resends
    // the transaction from its first part.
    kill(&mut sink);
    let mut sink = relay.sink(&target, Some(("OUTFLOW_DANGER_TEST_EXIT_AT_PART", "3")));
    rt.block_on(source.exec(&format!(
        "INSERT INTO big.t SELECT seq, REPEAT(CHAR(65 + seq % 26), 200), seq FROM \
         big.seq_1_to_{BIG_ROWS}"
    )))
    .unwrap();
    relay.wait_hook(&mut sink);
    let rows: u64 = rt
        .block_on(target.query_scalar("SELECT COUNT(*) FROM big.t"))
        .unwrap();
    assert_eq!(
        rows,
        0,
        "a part of the transaction is visible; {}",
        relay.logs()
    );
    let mut sink = relay.sink(&target, None);
    wait_equal(
        &rt,
        &source,
        &target,
        &["big.t"],
        &relay,
        &mut [&mut sink, &mut src],
    );

    // The source side dies right after spooling a part of the next one and is restarted
    // alone: it reads the transaction again from its start, and the running sink drops the
    // parts it holds open.
    kill(&mut src);
    let mut src = relay.source(&source, Some(("OUTFLOW_DANGER_TEST_EXIT_AFTER_PART", "4")));
    rt.block_on(source.exec("UPDATE big.t SET n = n + 1, pad = REVERSE(pad)"))
        .unwrap();
    relay.wait_hook(&mut src);
    let mut src = relay.source(&source, None);
    wait_equal(
        &rt,
        &source,
        &target,
        &["big.t"],
        &relay,
        &mut [&mut sink, &mut src],
    );

    kill(&mut sink);
    kill(&mut src);
    for l in relay
        .logs()
        .lines()
        .filter(|l| !l.starts_with("source: ") && !l.starts_with("sink: "))
    {
        eprintln!("L {l}");
    }
    // Each restarted sink reset the source side's stale connection at its first packet
    // (its reset and connection-id keys come from its private key), so the source side
    // never waited out the 30 s idle timeout.
    let source_log = common::log_text(&relay.log("source"));
    assert!(source_log.contains("reset by peer"), "{source_log}");
    assert!(
        !source_log.contains("timed out"),
        "a restarted sink left the source side waiting for the idle timeout:\n{source_log}"
    );
    // The running sink noticed the source side sending the transaction again.
    let log = common::log_text(&relay.log("sink"));
    assert!(
        log.contains("rolling back an unfinished source transaction in parts"),
        "{log}"
    );
    common::verify_clean(&source, &target, &format!("{},big.t", sb.join(",")));
}

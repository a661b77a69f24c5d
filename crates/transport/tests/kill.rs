//! Both ends of the link as real processes over loopback, each SIGKILLed many times at random
//! points: every batch must still reach the receiver's log exactly once, in order.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const PROBE: &str = env!("CARGO_BIN_EXE_outflow-transport-probe");
const BATCHES: u64 = 3000;
const MAX_LEN: usize = 24 << 10;

struct Side {
    name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Side {
    fn start(&mut self) {
        let child = Command::new(PROBE)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {} probe: {e}", self.name));
        self.child = Some(child);
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: no chance to flush, close or say goodbye.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it exited, and how.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn applied(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("log line"))
        .collect()
}

#[test]
fn sigkill_either_side_many_times_delivers_every_batch_exactly_once() {
    let temp = tempfile::tempdir().unwrap();
    let certs = temp.path().join("certs");
    common::certs_in(&certs);
    let addr = format!("127.0.0.1:{}", free_udp_port());
    let log: PathBuf = temp.path().join("applied.log");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let mut receiver = Side {
        name: "receiver",
        args: vec![
            "recv".into(),
            "--listen".into(),
            addr.clone(),
            "--certs".into(),
            path(&certs),
            "--log".into(),
            path(&log),
            "--max-len".into(),
            MAX_LEN.to_string(),
        ],
        child: None,
        starts: 0,
    };
    let mut sender = Side {
        name: "sender",
        args: vec![
            "send".into(),
            "--spool".into(),
            path(&temp.path().join("spool")),
            "--connect".into(),
            addr,
            "--certs".into(),
            path(&certs),
            "--batches".into(),
            BATCHES.to_string(),
            "--max-len".into(),
            MAX_LEN.to_string(),
            // Capped so the transfer outlasts the kills: about 6 s of shipping plus restarts.
            "--cap".into(),
            "6000000".into(),
        ],
        child: None,
        starts: 0,
    };

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("kill schedule seed {seed}");
    let mut x = seed;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };

    receiver.start();
    sender.start();
    let mut kills = 0;
    // Kill while batches are still moving, at random moments, alternating at random.
    while kills < 24 {
        std::thread::sleep(Duration::from_millis(40 + rand(300)));
        if sender.exited().is_some() {
            break;
        }
        let progress = applied(&log).len() as u64;
        if progress >= BATCHES {
            break;
        }
        if rand(2) == 0 {
            sender.kill();
            sender.start();
        } else {
            receiver.kill();
            receiver.start();
        }
        kills += 1;
    }
    println!(
        "{kills} kills: sender started {} times, receiver {} times; {} batches applied when the killing stopped",
        sender.starts,
        receiver.starts,
        applied(&log).len()
    );
    assert!(
        kills >= 10,
        "the transfer finished before enough kills: make it longer"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = sender.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sender did not finish after the kills stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sender failed: {status}");
    assert!(receiver.exited().is_none(), "receiver died on its own");
    receiver.kill();

    let seqs = applied(&log);
    let expected: Vec<u64> = (1..=BATCHES).collect();
    if seqs != expected {
        let mut seen = std::collections::BTreeMap::new();
        for s in &seqs {
            *seen.entry(*s).or_insert(0) += 1;
        }
        let dups: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        let missing: Vec<_> = expected.iter().filter(|s| !seen.contains_key(s)).collect();
        panic!(
            "seed {seed}: {} applied, duplicates {:?}, missing {:?}",
            seqs.len(),
            &dups[..dups.len().min(20)],
            &missing[..missing.len().min(20)]
        );
    }
}

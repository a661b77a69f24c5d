//! Unit tests, and the model test: the spool against an in-memory model, with the power cut at
//! every I/O operation of a scenario.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// xorshift64*: deterministic randomness for scenarios without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(seq: u64, len: usize) -> Bytes {
    let mut rng = Rng::new(seq);
    (0..len)
        .map(|_| rng.next() as u8)
        .collect::<Vec<_>>()
        .into()
}

fn small_config(dir: &Path, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig {
        fsync,
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        max_record_bytes: 8192,
        cache_bytes: 2048,
        ..SpoolConfig::new(dir)
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Append(usize),
    Ack(u64),
    Sync,
}

fn scenario(seed: u64, steps: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut appended = 0u64;
    (0..steps)
        .map(|_| match rng.below(10) {
            0..=6 => {
                appended += 1;
                Op::Append(rng.below(1500) as usize)
            }
            7 | 8 => Op::Ack(rng.below(appended + 1)),
            _ => Op::Sync,
        })
        .collect()
}

/// What the model knows when the power is cut.
#[derive(Default, Debug)]
struct Model {
    /// Payloads by sequence number, including one whose append was under way.
    payloads: Vec<(u64, Bytes)>,
    /// Last sequence number whose append returned.
    last_ok: u64,
    /// Highest acknowledgement made or under way.
    acked_ok: u64,
    /// Highest sequence number reported durable.
    synced: u64,
}

fn run_until_failure(log: &mut SpoolLog<MemIo>, ops: &[Op], model: &mut Model) {
    for op in ops {
        let ok = match *op {
            Op::Append(len) => {
                let seq = log.next_seq();
                let p = payload(seq, len);
                model.payloads.push((seq, p.clone()));
                match log.append(p, 1000 + seq) {
                    Ok(got) => {
                        assert_eq!(got, seq);
                        model.last_ok = seq;
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::Ack(up_to) => {
                let up_to = up_to.min(log.next_seq() - 1);
                // An acknowledgement cut short may have removed segments already.
                model.acked_ok = model.acked_ok.max(up_to);
                match log.ack(up_to) {
                    Ok(()) => true,
                    Err(_) => false,
                }
            }
            Op::Sync => log.sync().is_ok(),
        };
        model.synced = model.synced.max(log.synced());
        if !ok {
            return;
        }
    }
}

fn check_recovered(log: &SpoolLog<MemIo>, model: &Model, durable: u64, context: &str) {
    let last = log.next_seq() - 1;
    assert!(
        last >= durable,
        "{context}: durable batch lost: recovered up to {last}, durable up to {durable}"
    );
    let attempted = model.payloads.last().map_or(0, |(s, _)| *s);
    assert!(
        last <= attempted,
        "{context}: recovered {last} > attempted {attempted}"
    );
    let first = log.acked() + 1;
    assert!(
        first <= model.acked_ok + 1 || first > last,
        "{context}: unacknowledged batch lost: first recovered {first}, acked {}",
        model.acked_ok
    );
    for seq in first..=last {
        let got = log
            .read(seq)
            .unwrap_or_else(|e| panic!("{context}: read {seq}: {e}"))
            .unwrap_or_else(|| panic!("{context}: {seq} missing"));
        let want = &model
            .payloads
            .iter()
            .find(|(s, _)| *s == seq)
            .unwrap_or_else(|| panic!("{context}: recovered unknown seq {seq}"))
            .1;
        assert_eq!(&got, want, "{context}: payload of {seq} differs");
    }
    assert_eq!(log.stats(0).unacked, log.next_seq() - first);
}

fn crash_everywhere(fsync: FsyncPolicy, seed: u64) {
    let dir = Path::new("/spool");
    let ops = scenario(seed, 80);
    // A dry run counts the operations, so each one can be the last before the cut.
    let total = {
        let io = MemIo::new();
        let mut log = SpoolLog::open(io.clone(), small_config(dir, fsync)).expect("open");
        let mut model = Model::default();
        run_until_failure(&mut log, &ops, &mut model);
        assert_eq!(model.payloads.len() as u64, model.last_ok);
        io.ops()
    };
    assert!(total > 150, "scenario too small: {total} operations");
    for cut in 0..=total {
        let io = MemIo::new();
        io.fail_after(Some(cut));
        let mut model = Model::default();
        if let Ok(mut log) = SpoolLog::open(io.clone(), small_config(dir, fsync)) {
            run_until_failure(&mut log, &ops, &mut model);
        }
        let mut rng = Rng::new(seed ^ cut);
        io.crash(&mut || rng.next());
        let context = format!("{fsync:?} seed {seed} cut after {cut} of {total} ops");
        let mut log = SpoolLog::open(io.clone(), small_config(dir, fsync))
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        let durable = match fsync {
            FsyncPolicy::Always => model.last_ok,
            _ => model.synced,
        };
        check_recovered(&log, &model, durable, &context);

        // The spool goes on: new numbers follow every number ever handed out, and acknowledging
        // everything leaves only the head segment.
        let before = log.next_seq();
        assert!(
            before > model.last_ok.min(durable),
            "{context}: sequence reused"
        );
        let seq = log
            .append(payload(before, 100), 1)
            .expect("append after recovery");
        assert_eq!(seq, before);
        log.ack(seq).expect("ack after recovery");
        assert_eq!(log.stats(0).segments, 1, "{context}");
        drop(log);
        let log = SpoolLog::open(io, small_config(dir, fsync)).expect("reopen after recovery");
        assert_eq!(
            log.next_seq(),
            seq + 1,
            "{context}: next sequence after clean reopen"
        );
    }
}

#[test]
fn model_crash_at_every_step_fsync_always() {
    for seed in [1, 2] {
        crash_everywhere(FsyncPolicy::Always, seed);
    }
}

#[test]
fn model_crash_at_every_step_fsync_interval() {
    crash_everywhere(FsyncPolicy::Interval(Duration::from_secs(3600)), 3);
}

fn fill(log: &mut SpoolLog<MemIo>, n: u64) {
    for _ in 0..n {
        let seq = log.next_seq();
        log.append(payload(seq, 700), 5).expect("append");
    }
}

#[test]
fn segments_roll_and_go_only_when_acknowledged() {
    let io = MemIo::new();
    let mut log = SpoolLog::open(
        io.clone(),
        small_config(Path::new("/s"), FsyncPolicy::Always),
    )
    .expect("open");
    fill(&mut log, 20);
    let segments = log.stats(0).segments;
    assert!(segments >= 4, "{segments} segments");
    log.ack(3).expect("ack");
    assert_eq!(
        log.stats(0).segments,
        segments,
        "segment removed before fully acked"
    );
    log.ack(12).expect("ack");
    assert!(log.stats(0).segments < segments);
    for seq in 13..=20 {
        assert_eq!(log.read(seq).expect("read"), Some(payload(seq, 700)));
    }
    assert!(matches!(
        log.ack(21),
        Err(SpoolError::AckBeyond { ack: 21, last: 20 })
    ));
    log.ack(20).expect("ack all");
    assert_eq!(log.stats(0).segments, 1);
    assert_eq!(log.stats(0).unacked, 0);
}

#[test]
fn corrupt_sealed_segment_is_an_error_naming_segment_and_offset() {
    let io = MemIo::new();
    let dir = Path::new("/s");
    let mut log = SpoolLog::open(io.clone(), small_config(dir, FsyncPolicy::Always)).expect("open");
    fill(&mut log, 12);
    drop(log);
    let first = dir.join(format::segment_name(1));
    // A flipped payload bit: open walks only headers, the read names the damage.
    io.flip_bit(
        &first,
        8 + format::HEADER_LEN + 724 + format::HEADER_LEN + 5,
    );
    let log = SpoolLog::open(io.clone(), small_config(dir, FsyncPolicy::Always)).expect("open");
    let err = log.read(2).expect_err("corrupt payload read");
    let text = err.to_string();
    assert!(
        text.contains("00000000000000000001.seg")
            && text.contains("at byte 732")
            && text.contains("CRC"),
        "{text}"
    );
    drop(log);
    // A flipped sequence number in a sealed header: open refuses, naming where.
    io.flip_bit(&first, 8 + 8);
    let err =
        SpoolLog::open(io.clone(), small_config(dir, FsyncPolicy::Always)).expect_err("corrupt");
    let text = err.to_string();
    assert!(
        text.contains("00000000000000000001.seg is corrupt at byte 8"),
        "{text}"
    );
}

#[test]
fn gap_between_segments_is_an_error() {
    let io = MemIo::new();
    let dir = Path::new("/s");
    let mut log = SpoolLog::open(io.clone(), small_config(dir, FsyncPolicy::Always)).expect("open");
    fill(&mut log, 20);
    drop(log);
    let second = io
        .list(dir)
        .expect("list")
        .into_iter()
        .filter_map(|n| format::parse_segment_name(&n))
        .nth(1)
        .expect("second segment");
    io.remove(&dir.join(format::segment_name(second)))
        .expect("remove");
    let err = SpoolLog::open(io, small_config(dir, FsyncPolicy::Always)).expect_err("gap");
    assert!(err.to_string().contains("gap between segments"), "{err}");
}

#[test]
fn torn_tail_on_a_real_file_is_truncated() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        segment_bytes: 1 << 20,
        max_bytes: 4 << 20,
        ..SpoolConfig::new(temp.path())
    };
    let mut log = SpoolLog::open(FsIo, config.clone()).expect("open");
    for seq in 1..=5 {
        log.append(payload(seq, 1000), 7).expect("append");
    }
    drop(log);
    let head = temp.path().join(format::segment_name(1));
    let good_len = std::fs::metadata(&head).expect("meta").len();
    let mut torn = format::Header::for_payload(6, 7, &[1; 1000])
        .encode()
        .to_vec();
    torn.extend_from_slice(&[1; 300]);
    let mut bytes = std::fs::read(&head).expect("read");
    bytes.extend_from_slice(&torn);
    std::fs::write(&head, bytes).expect("write");

    let mut log = SpoolLog::open(FsIo, config.clone()).expect("reopen");
    assert_eq!(log.recovery().truncated_at, Some(good_len));
    assert_eq!(log.recovery().truncated_bytes, torn.len() as u64);
    assert_eq!(log.next_seq(), 6);
    assert_eq!(std::fs::metadata(&head).expect("meta").len(), good_len);
    log.append(payload(6, 10), 8)
        .expect("append after truncation");
    drop(log);
    let log = SpoolLog::open(FsIo, config).expect("reopen");
    assert_eq!(log.read(6).expect("read"), Some(payload(6, 10)));
    assert_eq!(log.read(1).expect("read"), Some(payload(1, 1000)));
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig::new(temp.path());
    let first = Spool::open(config.clone()).expect("open");
    let err = Spool::open(config.clone()).expect_err("second open while the first is alive");
    match &err {
        SpoolError::Locked { dir, holder } => {
            assert_eq!(dir, temp.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&temp.path().display().to_string())
            && message.contains(&format!("process {}", std::process::id())),
        "{message}"
    );
    // The refused open changed nothing: the first spool still works.
    drop(first);
    let reopened = Spool::open(config).expect("reopen after the first is dropped");
    assert_eq!(reopened.next_seq(), 1);
}

/// The kernel drops a flock when its holder dies, SIGKILL included, so a killed relay never
/// leaves the directory locked. flock(1) holds the same kind of lock as the spool.
#[test]
fn a_killed_holder_releases_the_directory() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig::new(temp.path());
    // `-o`: the command does not inherit the lock, so killing flock(1) itself must free it.
    let mut holder = match std::process::Command::new("flock")
        .arg("-o")
        .arg(temp.path().join(io::LOCK_FILE))
        .args(["sleep", "30"])
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: flock(1) is not available ({e})");
            return;
        }
    };
    // Wait until flock(1) holds the lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Spool::open(config.clone()) {
            Err(SpoolError::Locked { .. }) => break,
            Ok(spool) => drop(spool),
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flock(1) never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    // flock(1)'s child shares the lock from fork until it closes its copy (`-o`), so a kill
    // in between frees the lock only at that close, a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Spool::open(config.clone()) {
            Ok(_) => break,
            Err(SpoolError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open after the holder was killed: {e}"),
        }
    }
}

#[test]
fn stats_report_age_of_oldest_unacked() {
    let io = MemIo::new();
    let mut log =
        SpoolLog::open(io, small_config(Path::new("/s"), FsyncPolicy::Always)).expect("open");
    assert_eq!(log.stats(10_000).oldest_unacked_age, None);
    log.append(payload(1, 10), 1_000).expect("append");
    log.append(payload(2, 10), 4_000).expect("append");
    assert_eq!(
        log.stats(10_000).oldest_unacked_age,
        Some(Duration::from_secs(9))
    );
    log.ack(1).expect("ack");
    assert_eq!(
        log.stats(10_000).oldest_unacked_age,
        Some(Duration::from_secs(6))
    );
    assert_eq!(log.stats(10_000).unacked, 1);
}

#[test]
fn too_large_and_bad_config_are_refused() {
    let io = MemIo::new();
    let mut log = SpoolLog::open(
        io.clone(),
        small_config(Path::new("/s"), FsyncPolicy::Always),
    )
    .expect("open");
    assert!(matches!(
        log.make_room(9000),
        Err(SpoolError::TooLarge {
            len: 9000,
            max: 8192
        })
    ));
    let bad = SpoolConfig {
        segment_bytes: 1 << 20,
        max_bytes: 1 << 20,
        ..SpoolConfig::new("/t")
    };
    assert!(matches!(
        SpoolLog::open(io, bad),
        Err(SpoolError::Config(_))
    ));
}

#[tokio::test]
async fn append_waits_at_the_bound_and_resumes_on_ack() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = SpoolConfig {
        max_bytes: 16 << 10,
        segment_bytes: 4 << 10,
        ..SpoolConfig::new(temp.path())
    };
    let spool = Spool::open(config).expect("open");
    let mut last = 0;
    // Fill until an append blocks.
    loop {
        let append = spool.append(payload(last + 1, 1000));
        match tokio::time::timeout(Duration::from_millis(200), append).await {
            Ok(seq) => last = seq.expect("append"),
            Err(_) => break,
        }
        assert!(last < 100, "the bound never pushed back");
    }
    assert!(spool.stats().near_bound());
    assert!(spool.stats().bytes <= 16 << 10);
    let waiting = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.append(payload(0, 1000)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "append did not wait for room");
    spool.ack(last).await.expect("ack");
    let seq = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("append resumed")
        .expect("join")
        .expect("append");
    assert_eq!(seq, last + 1, "a batch was dropped or renumbered");
    assert_eq!(spool.read(seq).await.expect("read"), Some(payload(0, 1000)));
}

#[tokio::test]
async fn far_side_appends_under_the_senders_numbers() {
    let temp = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(SpoolConfig::new(temp.path())).expect("open");
    spool
        .append_at(1000, payload(1000, 10))
        .await
        .expect("first at 1000");
    spool
        .append_at(1001, payload(1001, 10))
        .await
        .expect("next");
    let err = spool
        .append_at(1003, payload(1003, 10))
        .await
        .expect_err("gap");
    assert!(matches!(
        err,
        SpoolError::OutOfOrder {
            seq: 1003,
            expected: 1002
        }
    ));
    drop(spool);
    let spool = Spool::open(SpoolConfig::new(temp.path())).expect("reopen");
    assert_eq!(spool.next_seq(), 1002);
    assert_eq!(
        spool.read(1000).await.expect("read"),
        Some(payload(1000, 10))
    );
}

#[tokio::test]
async fn interval_policy_syncs_in_the_background() {
    let io = MemIo::new();
    let config = SpoolConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
        ..small_config(Path::new("/s"), FsyncPolicy::Always)
    };
    let spool = Spool::open_with(io, config).expect("open");
    spool.append(payload(1, 10)).await.expect("append");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while spool.stats().synced < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

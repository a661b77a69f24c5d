//! Exactly once across restarts, against real servers: frames re-delivered after a
//! restart are skipped, a frame that failed half-way resumes after its last committed
//! target transaction, and neither a killed connection nor a killed target server (SIGKILL)
//! mid-frame loses or doubles a change. Each run ends with `verify` finding no difference.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use outflow_codec::{Decoder, Encoder, EncoderConfig, Limits, PipelineConfig};
use outflow_core::ChangeBatch;
use outflow_sink::{Applied, ApplyConfig, ApplyError};
use outflow_testkit::mysql_async::prelude::Queryable;
use outflow_testkit::{Server, Sysbench, Workload};

mod sink_common;
use sink_common::{
    applier, assert_checksums, assert_same, changed_binlogs, frames, server, source, start_changes,
    Feed,
};

const TABLES: [&str; 2] = ["sbtest.sbtest1", "sbtest.sbtest2"];

/// A source that ran sysbench `prepare` and `run`, the frames of both (the target gets
/// the empty tables), and a target holding those empty tables.
async fn workload(events: u64, batch_bytes: u64) -> Result<(Server, Server, Vec<Vec<u8>>)> {
    let src = source()?;
    let target = server()?;
    let bench = Sysbench::new(Workload::OltpWriteOnly)
        .tables(2)
        .table_size(3000)
        .events(events);
    src.run_sql_script("CREATE DATABASE sbtest;")?;
    let first = start_changes(&src)?;
    bench.prepare(&src)?;
    // The target gets the table definitions up front, and the frames carry no DDL (so that
    // the prepare and the run can share one frame).
    let mut script = String::from("CREATE DATABASE sbtest;\n");
    for t in ["sbtest1", "sbtest2"] {
        let rows: Vec<(String, String)> = src
            .query_rows(&format!("SHOW CREATE TABLE sbtest.{t}"))
            .await?;
        let ddl = &rows.first().context("SHOW CREATE TABLE")?.1;
        script.push_str(&format!("USE sbtest;\n{ddl};\n"));
    }
    target.run_sql_script(&script)?;
    bench.run(&src)?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(
        &files,
        PipelineConfig {
            batch_bytes,
            ship_ddl: false,
            ..PipelineConfig::default()
        },
    )?;
    Ok((src, target, frames))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_frames_are_skipped() -> Result<()> {
    let (src, target, frames) = workload(600, 64 << 10).await?;
    ensure!(frames.len() > 6, "only {} frames", frames.len());
    let mut feed = Feed::new()?;
    let mut a = applier(&target, ApplyConfig::default()).await?;
    for f in &frames[..3] {
        feed.apply(&mut a, f).await?;
    }
    a.close().await;

    // A new applier (a restarted sink) learns where the target stands ...
    let mut a = applier(&target, ApplyConfig::default()).await?;
    let next = a.last_applied().context("no checkpoint")?.next_seq();
    ensure!(next == 3, "resume at frame {next}, expected 3");
    // ... and a sender that re-sends everything loses nothing and doubles nothing.
    let mut feed = Feed::new()?;
    for (n, f) in frames.iter().enumerate() {
        let outcome = feed.apply(&mut a, f).await?;
        ensure!(
            (outcome == Applied::Duplicate) == (n < 3),
            "frame {n}: {outcome:?}"
        );
    }
    ensure!(a.stats().duplicate_frames == 3, "{:?}", a.stats());
    // A frame from the future is refused: frames went missing.
    let mut batch = ChangeBatch::default();
    Decoder::new(Limits::default())?.decode(&frames[1], &mut batch)?;
    let mut encoder = Encoder::new(EncoderConfig::default())?;
    encoder.set_sequence(frames.len() as u64 + 1);
    let mut future = Vec::new();
    encoder.encode(&batch, &mut future)?;
    let err = match Feed::new()?.apply(&mut a, &future).await {
        Err(e) => e,
        Ok(outcome) => bail!("a frame beyond the next was taken: {outcome:?}"),
    };
    ensure!(
        matches!(
            err.downcast_ref::<ApplyError>(),
            Some(ApplyError::Gap { .. })
        ),
        "{err:#}"
    );
    a.close().await;
    assert_same(&src, &target, &TABLES).await?;
    assert_checksums(&src, &target, &TABLES).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_failed_half_way_resumes_after_its_last_commit() -> Result<()> {
    // One frame for everything, applied in target transactions of at most 200 changes.
    let (src, target, frames) = workload(400, 1 << 30).await?;
    ensure!(frames.len() == 1, "{} frames", frames.len());
    let cfg = ApplyConfig {
        max_txn_changes: NonZeroUsize::new(200).context("non-zero")?,
        ..ApplyConfig::default()
    };
    // A trigger on the target fails the first update, which comes from the workload's
    // `run`, after the `prepare`'s inserts have been committed in target transactions of
    // their own.
    target.run_sql_script(
        "CREATE TRIGGER sbtest.trap BEFORE UPDATE ON sbtest.sbtest1 FOR EACH ROW \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'trap';",
    )?;
    let mut a = applier(&target, cfg.clone()).await?;
    let mut feed = Feed::new()?;
    let err = match feed.apply(&mut a, &frames[0]).await {
        Err(e) => e,
        Ok(outcome) => bail!("the trap did not fire: {outcome:?}"),
    };
    ensure!(
        matches!(
            err.downcast_ref::<ApplyError>(),
            Some(ApplyError::Statement { .. })
        ),
        "{err:#}"
    );
    let cp = a.last_applied().context("no checkpoint")?.clone();
    ensure!(
        cp.seq == 0 && cp.txns_applied > 0 && !cp.frame_complete(),
        "checkpoint {cp:?}: expected a part of frame 0"
    );
    a.close().await;

    target.run_sql_script("DROP TRIGGER sbtest.trap;")?;
    let mut a = applier(&target, cfg).await?;
    ensure!(
        a.last_applied() == Some(&cp),
        "checkpoint read back differs"
    );
    let outcome = Feed::new()?.apply(&mut a, &frames[0]).await?;
    match outcome {
        Applied::Frame { transactions, .. } => ensure!(
            transactions == cp.txns_in_frame - cp.txns_applied,
            "{transactions} transactions applied on resume; {cp:?}"
        ),
        Applied::Duplicate => bail!("resumed frame taken as a duplicate"),
        Applied::Held => bail!("a frame without parts was held"),
    }
    a.close().await;
    assert_same(&src, &target, &TABLES).await?;
    assert_checksums(&src, &target, &TABLES).await?;
    Ok(())
}

/// Two connections, so that a kill can land between the branches of a two-phase commit.
fn two_lanes() -> ApplyConfig {
    ApplyConfig {
        apply_threads: NonZeroUsize::new(2).expect("non-zero"),
        ..ApplyConfig::default()
    }
}

/// Applies `frames` from the checkpoint on, reconnecting after retryable errors; returns
/// how many errors it met.
async fn apply_with_restarts(
    target: &Server,
    frames: &[Vec<u8>],
    cfg: &ApplyConfig,
) -> Result<usize> {
    let mut errors = 0;
    'reconnect: loop {
        let mut a = match applier(target, cfg.clone()).await {
            Ok(a) => a,
            Err(e) if errors < 50 => {
                errors += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let next = a.last_applied().map_or(0, |c| c.next_seq()) as usize;
        let mut feed = Feed::new()?;
        for f in frames.iter().skip(next) {
            if let Err(e) = feed.apply(&mut a, f).await {
                let retryable = e
                    .downcast_ref::<ApplyError>()
                    .is_some_and(ApplyError::is_retryable);
                ensure!(retryable, "not retryable: {e:#}");
                errors += 1;
                continue 'reconnect;
            }
        }
        a.close().await;
        return Ok(errors);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_and_double_nothing() -> Result<()> {
    let (src, target, frames) = workload(1500, 32 << 10).await?;
    let killer = tokio::spawn({
        let opts = target.opts();
        async move {
            let mut conn = outflow_testkit::mysql_async::Conn::new(opts).await?;
            let mut kills = 0;
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(120)).await;
                // The applier's connection is the one in the checkpoint table's database
                // or running statements as the kit's superuser, other than this one.
                let ids: Vec<u64> = conn
                    .query(
                        "SELECT ID FROM information_schema.PROCESSLIST \
                         WHERE USER = 'outflow' AND ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'",
                    )
                    .await?;
                for id in ids {
                    if conn
                        .query_drop(format!("KILL CONNECTION {id}"))
                        .await
                        .is_ok()
                    {
                        kills += 1;
                    }
                }
            }
            anyhow::Ok(kills)
        }
    });
    let errors = apply_with_restarts(&target, &frames, &two_lanes()).await?;
    let kills = killer.await??;
    ensure!(kills > 0, "nothing was killed");
    let _ = errors;
    assert_same(&src, &target, &TABLES).await?;
    assert_checksums(&src, &target, &TABLES).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_target_server_loses_and_doubles_nothing() -> Result<()> {
    let (src, mut target, frames) = workload(1500, 32 << 10).await?;
    for round in 0..2 {
        // Apply in the background, SIGKILL the target, restart it, resume.
        let opts = target.opts();
        let frames_bg = frames.clone();
        let task = tokio::spawn(async move {
            let mut a = outflow_sink::Applier::connect(opts, two_lanes()).await?;
            let next = a.last_applied().map_or(0, |c| c.next_seq()) as usize;
            let mut feed = Feed::new()?;
            for f in frames_bg.iter().skip(next) {
                feed.apply(&mut a, f).await?;
            }
            anyhow::Ok(())
        });
        tokio::time::sleep(Duration::from_millis(150 + 100 * round)).await;
        target.kill();
        let result = task.await?;
        if let Err(e) = &result {
            let retryable = e
                .downcast_ref::<ApplyError>()
                .is_some_and(ApplyError::is_retryable);
            ensure!(retryable, "round {round}: not retryable: {e:#}");
        }
        target.restart()?;
    }
    apply_with_restarts(&target, &frames, &two_lanes()).await?;
    assert_same(&src, &target, &TABLES).await?;
    assert_checksums(&src, &target, &TABLES).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appliers_on_one_stream_cannot_both_apply() -> Result<()> {
    let (src, target, frames) = workload(100, 64 << 10).await?;
    let mut first = applier(&target, ApplyConfig::default()).await?;
    let mut second = applier(&target, ApplyConfig::default()).await?;
    Feed::new()?.apply(&mut first, &frames[0]).await?;
    let err = match Feed::new()?.apply(&mut second, &frames[0]).await {
        Err(e) => e,
        Ok(outcome) => bail!("the second applier applied frame 0 again: {outcome:?}"),
    };
    ensure!(
        matches!(
            err.downcast_ref::<ApplyError>(),
            Some(ApplyError::CheckpointMoved { .. })
        ),
        "{err:#}"
    );
    second.close().await;
    let mut feed = Feed::new()?;
    for f in &frames[1..] {
        feed.apply(&mut first, f).await?;
    }
    first.close().await;
    assert_same(&src, &target, &TABLES).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_branches_left_behind_follow_the_checkpoint() -> Result<()> {
    let (_src, target, frames) = workload(200, 64 << 10).await?;
    ensure!(frames.len() > 2, "only {} frames", frames.len());
    let mut a = applier(&target, two_lanes()).await?;
    let mut feed = Feed::new()?;
    for f in &frames[..2] {
        feed.apply(&mut a, f).await?;
    }
    a.close().await;
    // Two branches a crashed applier could have left prepared: one of a target
    // transaction the checkpoint covers (its coordinator committed), one beyond it.
    let stream = ApplyConfig::default().stream;
    // The second is a coordinator's branch: it holds the checkpoint row, which the new
    // applier locks before it applies anything.
    for (gtrid, bqual, id) in [
        (
            outflow_sink::apply::xa_gtrid(&stream, 1, 0, 999),
            1,
            9_999_999,
        ),
        (
            outflow_sink::apply::xa_gtrid(&stream, 7, 0, 999),
            0,
            9_999_998,
        ),
    ] {
        let mut conn = outflow_testkit::mysql_async::Conn::new(target.opts()).await?;
        let mut statements = vec![
            format!("XA START '{gtrid}','{bqual}'"),
            format!("INSERT INTO sbtest.sbtest1 (id, k, c, pad) VALUES ({id}, 0, 'x', 'y')"),
        ];
        if bqual == 0 {
            statements.push(format!(
                "UPDATE outflow.checkpoint SET seq = 7 WHERE stream = '{stream}'"
            ));
        }
        statements.push(format!("XA END '{gtrid}','{bqual}'"));
        statements.push(format!("XA PREPARE '{gtrid}','{bqual}'"));
        for sql in statements {
            conn.query_drop(sql).await?;
        }
        conn.disconnect().await?;
    }
    let a = tokio::time::timeout(Duration::from_secs(30), applier(&target, two_lanes()))
        .await
        .context("connecting waited on the prepared branches")??;
    ensure!(
        a.last_applied().map(|c| c.seq) == Some(1),
        "{:?}",
        a.last_applied()
    );
    a.close().await;
    let ids: Vec<i64> = target
        .query_rows("SELECT id FROM sbtest.sbtest1 WHERE id > 9000000")
        .await?;
    ensure!(ids == vec![9_999_999], "{ids:?}");
    let left: Vec<outflow_testkit::mysql_async::Row> = target.query_rows("XA RECOVER").await?;
    ensure!(left.is_empty(), "{} branches left prepared", left.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_while_spread_over_lanes_retries_on_one_connection() -> Result<()> {
    let (src, target, frames) = workload(200, 1 << 30).await?;
    // A first applier takes the prepare's inserts and the rest in one frame; another
    // session holds a row the frame changes for longer than the spread lock wait.
    let mut a = applier(&target, two_lanes()).await?;
    let mut blocker = outflow_testkit::mysql_async::Conn::new(target.opts()).await?;
    let ids: Vec<u64> = src
        .query_rows("SELECT id FROM sbtest.sbtest1 ORDER BY id LIMIT 1")
        .await?;
    let id = *ids.first().context("no rows")?;
    // The prepare's row with this id is inserted by the frame; lock its key's place.
    blocker.query_drop("START TRANSACTION").await?;
    blocker
        .query_drop(format!(
            "INSERT INTO sbtest.sbtest1 (id, k, c, pad) VALUES ({id}, 0, '', '')"
        ))
        .await?;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(7)).await;
        blocker.query_drop("ROLLBACK").await?;
        blocker.disconnect().await?;
        anyhow::Ok(())
    });
    Feed::new()?.apply(&mut a, &frames[0]).await?;
    release.await??;
    ensure!(a.stats().retries >= 1, "no retry: {:?}", a.stats());
    a.close().await;
    assert_same(&src, &target, &TABLES).await?;
    assert_checksums(&src, &target, &TABLES).await?;
    Ok(())
}

/// A source transaction in parts counts in the applier's statistics when it commits, all
/// of it at once: while its target transaction is open nothing of it is counted, and when
/// it is rolled back (its frames delivered again) what it had counted is dropped, so the
/// rows are counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_parts_counts_its_rows_when_it_commits() -> Result<()> {
    let setup = "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(300));";
    let src = source()?;
    let target = server()?;
    src.run_sql_script(setup)?;
    target.run_sql_script(setup)?;
    let first = start_changes(&src)?;
    src.run_sql_script(
        "USE app;
         INSERT INTO app.t SELECT seq, REPEAT('x', 250) FROM seq_1_to_2000;
         INSERT INTO app.t VALUES (5000, 'after');",
    )?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(
        &files,
        PipelineConfig {
            split_bytes: 64 << 10,
            ..PipelineConfig::default()
        },
    )?;
    ensure!(frames.len() >= 4, "only {} frames", frames.len());

    let mut a = applier(&target, ApplyConfig::default()).await?;
    let mut feed = Feed::new()?;
    // The first two parts, then the first again: the open transaction is rolled back.
    for f in [&frames[0], &frames[1], &frames[0]] {
        let outcome = feed.apply(&mut a, f).await?;
        ensure!(outcome == Applied::Held, "{outcome:?}");
        ensure!(
            a.stats().inserted == 0,
            "counted while open: {:?}",
            a.stats()
        );
    }
    let mut committed = 0;
    for f in &frames[1..] {
        match feed.apply(&mut a, f).await? {
            Applied::Held => ensure!(a.stats().inserted == 0, "{:?}", a.stats()),
            Applied::Frame { changes, .. } => committed += changes,
            Applied::Duplicate => bail!("a duplicate frame"),
        }
    }
    ensure!(
        committed == 2001 && a.stats().inserted == 2001,
        "{committed} changes reported, {:?}",
        a.stats()
    );
    a.close().await;
    assert_same(&src, &target, &["app.t"]).await?;
    Ok(())
}

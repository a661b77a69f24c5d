//! Conflicts, ambiguity and DDL on a real target: a target that lost a row or holds an
//! extra one stops the stream with the table, key and position named (policy `stop`), or
//! is made to match and the conflicts counted (`overwrite`); a keyless change that
//! matches rows it cannot tell apart is an error; DDL follows its per-kind policy, runs
//! at most once, and later changes use the new definition.

use anyhow::{bail, ensure, Context, Result};
use outflow_codec::PipelineConfig;
use outflow_core::ImageMode;
use outflow_sink::{
    ApplyConfig, ApplyError, ConflictKind, ConflictPolicy, DdlKind, DdlPolicies, DdlPolicy,
};
use outflow_testkit::Server;

mod sink_common;
use sink_common::{
    applier, apply_all, assert_same, changed_binlogs, frames, frames_in_parts, server, source,
    start_changes, Feed,
};

const SETUP: &str = "CREATE DATABASE app;
CREATE TABLE app.t (id INT PRIMARY KEY, k INT, c VARCHAR(20));
INSERT INTO app.t SELECT seq, seq, CONCAT('c', seq) FROM app.seq_1_to_20;";

/// A source that updated row 5, inserted row 100 and deleted row 7 (one transaction
/// each, in that order), and a target that already lacks rows 5 and 7 and has row 100.
async fn diverged(mode: ImageMode) -> Result<(Server, Server, Vec<Vec<u8>>)> {
    let src = source()?;
    let target = server()?;
    src.run_sql_script(SETUP)?;
    target.run_sql_script(SETUP)?;
    let first = start_changes(&src)?;
    src.run_sql_script(
        "UPDATE app.t SET c = 'changed' WHERE id = 5;
         INSERT INTO app.t VALUES (100, 100, 'source');
         DELETE FROM app.t WHERE id = 7;",
    )?;
    target.run_sql_script(
        "DELETE FROM app.t WHERE id IN (5, 7); INSERT INTO app.t VALUES (100, 0, 'target');",
    )?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(
        &files,
        PipelineConfig {
            mode,
            ..PipelineConfig::default()
        },
    )?;
    Ok((src, target, frames))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_names_the_table_key_and_position() -> Result<()> {
    let (_src, target, frames) = diverged(ImageMode::Replica).await?;
    let err = match apply_all(&target, &frames, ApplyConfig::default()).await {
        Err(e) => e,
        Ok(_) => bail!("a diverged target applied without complaint"),
    };
    match err.downcast_ref::<ApplyError>() {
        Some(ApplyError::Conflict {
            table,
            kind,
            key,
            position,
        }) => {
            ensure!(table == "app.t", "{table}");
            ensure!(*kind == ConflictKind::MissingUpdate, "{kind:?}");
            ensure!(key == "id=5", "{key}");
            ensure!(
                position.starts_with("GTID 0-") && position.contains("binlog."),
                "{position}"
            );
            let text = err.to_string();
            ensure!(
                text.contains("app.t") && text.contains("id=5") && text.contains("GTID"),
                "{text}"
            );
        }
        _ => bail!("not a conflict: {err:#}"),
    }
    // Nothing of the failed target transaction stayed, and the checkpoint did not move.
    let a = applier(&target, ApplyConfig::default()).await?;
    ensure!(a.last_applied().is_none(), "{:?}", a.last_applied());
    let c: String = target
        .query_scalar("SELECT c FROM app.t WHERE id = 100")
        .await?;
    ensure!(c == "target", "{c}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_makes_the_rows_match_and_counts_conflicts() -> Result<()> {
    let overwrite = ApplyConfig {
        on_conflict: ConflictPolicy::Overwrite,
        ..ApplyConfig::default()
    };
    // Full images carry whole rows: the target ends up equal to the source.
    let (src, target, frames) = diverged(ImageMode::Full).await?;
    let a = apply_all(&target, &frames, overwrite.clone()).await?;
    let c = a.stats().conflicts;
    ensure!(
        (c.missing_update, c.duplicate_insert, c.missing_delete) == (1, 1, 1),
        "{c:?}"
    );
    ensure!(a.stats().careful_replays >= 1, "{:?}", a.stats());
    assert_same(&src, &target, &["app.t"]).await?;

    // Replica images carry the key and the changed columns only: the lost row comes back
    // with those, and its other columns take their defaults (documented).
    let (src, target, frames) = diverged(ImageMode::Replica).await?;
    let a = apply_all(&target, &frames, overwrite).await?;
    ensure!(a.stats().conflicts.total() == 3, "{:?}", a.stats());
    let row: Vec<(i64, Option<i64>, String)> = target
        .query_rows("SELECT id, k, c FROM app.t WHERE id IN (5, 100) ORDER BY id")
        .await?;
    ensure!(
        row == vec![
            (5, None, "changed".to_string()),
            (100, Some(100), "source".to_string())
        ],
        "{row:?}"
    );
    let err = assert_same(&src, &target, &["app.t"])
        .await
        .err()
        .context("k of row 5")?;
    ensure!(err.to_string().contains("changed (id=5): k"), "{err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_rows_that_cannot_be_told_apart_are_an_error() -> Result<()> {
    let src = source()?;
    let target = server()?;
    src.run_sql_script(
        "CREATE DATABASE app; CREATE TABLE app.h (a INT, b INT);
        INSERT INTO app.h VALUES (1, 1), (1, 1), (2, 2);",
    )?;
    // The target has a column the source does not: two rows that the source's full-row
    // match cannot tell apart differ there.
    target.run_sql_script(
        "CREATE DATABASE app; CREATE TABLE app.h (a INT, b INT, note TEXT);
        INSERT INTO app.h VALUES (1, 1, 'x'), (1, 1, 'y'), (2, 2, 'z');",
    )?;
    let first = start_changes(&src)?;
    src.run_sql_script("DELETE FROM app.h WHERE a = 2; DELETE FROM app.h WHERE a = 1 LIMIT 1;")?;
    let frames = frames(&changed_binlogs(&src, &first)?, PipelineConfig::default())?;
    let err = match apply_all(&target, &frames, ApplyConfig::default()).await {
        Err(e) => e,
        Ok(_) => bail!("an ambiguous delete was applied"),
    };
    match err.downcast_ref::<ApplyError>() {
        Some(ApplyError::Ambiguous { table, .. }) => ensure!(table == "app.h", "{table}"),
        _ => bail!("not an ambiguity error: {err:#}"),
    }
    let n: i64 = target.query_scalar("SELECT COUNT(*) FROM app.h").await?;
    ensure!(
        n == 3,
        "{n} rows left: the failed transaction was not rolled back"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_follows_its_policy_and_runs_once() -> Result<()> {
    let src = source()?;
    let target = server()?;
    src.run_sql_script(SETUP)?;
    target.run_sql_script(SETUP)?;
    let before = start_changes(&src)?;
    src.run_sql_script("UPDATE app.t SET k = -k WHERE id <= 10;")?;
    let after = start_changes(&src)?;
    let alter = "ALTER TABLE t ADD COLUMN z VARCHAR(10) DEFAULT 'new', DROP COLUMN c";
    src.run_sql_script(&format!(
        "USE app; {alter}; UPDATE app.t SET z = CONCAT('z', id) WHERE id > 15; \
         CREATE TABLE scratch (id INT PRIMARY KEY); INSERT INTO scratch VALUES (1); \
         TRUNCATE TABLE scratch; DROP TABLE scratch;"
    ))?;
    let files = changed_binlogs(&src, &before)?;
    let split = files.iter().position(|f| *f == after).context("split")?;
    let parts = frames_in_parts(
        &[&files[..split], &files[split..]],
        PipelineConfig::default(),
    )?;

    let policies = |drop: DdlPolicy| ApplyConfig {
        ddl: DdlPolicies {
            default: DdlPolicy::Apply,
            overrides: vec![
                (DdlKind::DropTable, drop),
                (DdlKind::TruncateTable, DdlPolicy::Skip),
            ],
        },
        ..ApplyConfig::default()
    };
    let mut a = applier(&target, policies(DdlPolicy::Stop)).await?;
    let mut feed = Feed::new()?;
    for f in &parts[0] {
        feed.apply(&mut a, f).await?;
    }
    // The DDL comes with the stream, in order: ALTER and CREATE run, TRUNCATE is skipped,
    // DROP stops the stream, naming it.
    let mut stopped = None;
    for f in &parts[1] {
        if let Err(e) = feed.apply(&mut a, f).await {
            stopped = Some(e);
            break;
        }
    }
    match stopped
        .as_ref()
        .and_then(|e| e.downcast_ref::<ApplyError>())
    {
        Some(ApplyError::DdlStopped {
            kind, statement, ..
        }) => ensure!(
            *kind == DdlKind::DropTable && statement.starts_with("DROP TABLE"),
            "{statement}"
        ),
        other => bail!("DROP TABLE under policy stop: {other:?} ({stopped:?})"),
    }
    ensure!(
        a.stats().ddl_applied == 2 && a.stats().ddl_skipped == 1,
        "{:?}",
        a.stats()
    );
    a.close().await;
    assert_same(&src, &target, &["app.t"]).await?;
    let rows: Vec<i32> = target.query_rows("SELECT id FROM app.scratch").await?;
    ensure!(rows == [1], "TRUNCATE was not skipped: {rows:?}");

    // The checkpoint points at the DROP: with the policy changed, it runs, once.
    let mut a = applier(&target, policies(DdlPolicy::Apply)).await?;
    let mut feed = Feed::new()?;
    for f in parts.iter().flatten() {
        feed.apply(&mut a, f).await?;
    }
    ensure!(
        a.stats().ddl_applied == 1 && a.stats().ddl_skipped == 0,
        "{:?}",
        a.stats()
    );
    a.close().await;
    let tables: Vec<String> = target
        .query_rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'app'")
        .await?;
    ensure!(tables == ["t"], "{tables:?}");
    assert_same(&src, &target, &["app.t"]).await?;
    Ok(())
}

/// A lane's statements go to the target several in one query. An error in a later one is
/// that statement's: here a target trigger refuses the insert into `app.b`, the second
/// statement of the query after the insert into `app.a`. The error names `app.b`, and
/// nothing of the transaction stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_later_statement_of_one_query_names_its_table() -> Result<()> {
    let setup = "CREATE DATABASE app;
        CREATE TABLE app.a (id INT PRIMARY KEY, v INT);
        CREATE TABLE app.b (id INT PRIMARY KEY, v INT);";
    let src = source()?;
    let target = server()?;
    src.run_sql_script(setup)?;
    target.run_sql_script(setup)?;
    target.run_sql_script(
        "CREATE TRIGGER app.refuse BEFORE INSERT ON app.b FOR EACH ROW \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the target';",
    )?;
    let first = start_changes(&src)?;
    src.run_sql_script(
        "BEGIN; INSERT INTO app.a VALUES (1, 1); INSERT INTO app.b VALUES (1, 1); COMMIT;",
    )?;
    let files = changed_binlogs(&src, &first)?;
    let frames = frames(&files, PipelineConfig::default())?;
    let err = match apply_all(&target, &frames, ApplyConfig::default()).await {
        Err(e) => e,
        Ok(_) => bail!("the refused insert went unnoticed"),
    };
    match err.downcast_ref::<ApplyError>() {
        Some(ApplyError::Statement {
            table, position, ..
        }) => {
            ensure!(table == "app.b", "{table}: {err:#}");
            ensure!(position.starts_with("GTID 0-"), "{position}");
            ensure!(
                format!("{err:#}").contains("refused by the target"),
                "{err:#}"
            );
        }
        _ => bail!("not a statement error: {err:#}"),
    }
    let rows: i64 = target.query_scalar("SELECT COUNT(*) FROM app.a").await?;
    ensure!(rows == 0, "the insert into app.a stayed: {rows} rows");
    Ok(())
}

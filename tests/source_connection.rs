//! `outflow tail` end to end against a real server: what it prints for a live dump (by file
//! and position, and by MariaDB GTID) is exactly what `outflow inspect` prints for the same
//! binlog files.

use anyhow::{Context, Result};
use outflow::config::SourceConfig;
use outflow::inspect::{walk_file, JsonLines};
use outflow::tail::{connect_options, tail};
use outflow_binlog::walk::Walker;
use outflow_replication::{ConnectOptions, StartPosition, TlsMode};
use outflow_testkit::{Server, ServerConfig};

/// A mixed workload over two binlog files: inserts, updates and deletes of several column
/// types, a DDL in the middle, a multi-statement transaction and a rotation.
async fn workload(server: &Server) -> Result<()> {
    server
        .exec_all(&[
            "CREATE DATABASE app",
            "CREATE TABLE app.a (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), at DATETIME(3), j JSON)",
            "CREATE TABLE app.b (k BIGINT UNSIGNED PRIMARY KEY, blob_col BLOB, f DOUBLE)",
            "INSERT INTO app.a VALUES (1, 'one', 1.50, '2024-01-02 03:04:05.678', '{\"x\": 1}'), (2, 'two', NULL, NULL, NULL)",
            "INSERT INTO app.b VALUES (18446744073709551615, x'00ff10', -2.5)",
            "BEGIN",
            "UPDATE app.a SET name = 'uno' WHERE id = 1",
            "DELETE FROM app.a WHERE id = 2",
            "INSERT INTO app.b VALUES (7, NULL, 0)",
            "COMMIT",
            "ALTER TABLE app.a ADD COLUMN extra INT DEFAULT 5",
            "FLUSH BINARY LOGS",
            "INSERT INTO app.a (id, name) VALUES (3, 'three')",
            "UPDATE app.b SET f = f + 1",
        ])
        .await?;
    Ok(())
}

/// `inspect`'s JSON lines for the server's binlog files, labelled with bare file names as a
/// live stream labels them.
fn inspect_lines(server: &Server) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in server.binlog_files()? {
        let name = f
            .file_name()
            .context("file name")?
            .to_string_lossy()
            .to_string();
        let mut walker = Walker::new();
        let mut v = JsonLines::new(&mut out, &name);
        walk_file(&f, &mut walker, &mut v)?;
    }
    Ok(String::from_utf8(out)?
        .lines()
        .map(str::to_string)
        .collect())
}

async fn tail_lines(opts: &ConnectOptions, from: &str, limit: Option<u64>) -> Result<Vec<String>> {
    let from: StartPosition = from.parse().map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    let summary = tail(opts.clone(), &from, limit, true, &mut out).await?;
    let lines: Vec<String> = String::from_utf8(out)?
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(summary.rows as usize, lines.len());
    Ok(lines)
}

fn plain_opts(server: &Server) -> ConnectOptions {
    let mut o = ConnectOptions::new(
        "127.0.0.1",
        server.port(),
        outflow_testkit::SUPERUSER,
        outflow_testkit::SUPERUSER_PASSWORD,
    );
    o.tls.mode = TlsMode::Disabled;
    o.server_id = 5_000_000 + u32::from(server.port());
    o
}

#[tokio::test]
async fn tail_by_file_and_by_gtid_prints_what_inspect_prints() -> Result<()> {
    let server = Server::start(ServerConfig::new())?;
    let gtid_before = server.gtid_binlog_pos().await?;
    let first = server.binlog_position().await?;
    workload(&server).await?;
    let expected = inspect_lines(&server)?;
    assert_eq!(expected.len(), 9, "{expected:#?}");

    let opts = plain_opts(&server);
    let by_file = tail_lines(&opts, "file:binlog.000001:4", None).await?;
    assert_eq!(by_file, expected);

    // From a position inside the file: only the workload's rows, at the same offsets.
    let mid = tail_lines(
        &opts,
        &format!("file:{}:{}", first.file, first.position),
        None,
    )
    .await?;
    assert_eq!(mid, expected);

    let by_gtid = tail_lines(&opts, &format!("gtid:{gtid_before}"), None).await?;
    assert_eq!(by_gtid, expected);

    let limited = tail_lines(&opts, "start", Some(4)).await?;
    assert_eq!(limited, expected[..4]);
    Ok(())
}

#[tokio::test]
async fn tail_options_come_from_the_source_settings() -> Result<()> {
    let server = Server::start(ServerConfig::new())?;
    workload(&server).await?;
    // The password comes from the environment, never from the URL.
    let var = format!("OUTFLOW_TEST_TAIL_PW_{}", server.port());
    std::env::set_var(&var, outflow_testkit::SUPERUSER_PASSWORD);
    let source = SourceConfig {
        url: Some(format!(
            "mysql://{}@127.0.0.1:{}",
            outflow_testkit::SUPERUSER,
            server.port()
        )),
        password_env: Some(var),
        server_id: Some(777_001),
        from: Some("start".to_string()),
        tls_mode: Some("disabled".to_string()),
        heartbeat: Some("2s".to_string()),
        ..SourceConfig::default()
    };
    let (opts, from) = connect_options(&source)?;
    assert_eq!(opts.server_id, 777_001);
    assert_eq!(opts.tls.mode, TlsMode::Disabled);
    assert_eq!(opts.heartbeat, std::time::Duration::from_secs(2));
    assert_eq!(from, StartPosition::Oldest);
    let mut out = Vec::new();
    let summary = tail(opts, &from, Some(2), false, &mut out).await?;
    assert_eq!(summary.rows, 2);
    assert_eq!(String::from_utf8(out)?.lines().count(), 2);
    Ok(())
}

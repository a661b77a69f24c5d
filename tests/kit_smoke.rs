//! Smoke tests of the test kit against real `mariadbd` servers: the ROW binlog grows with
//! writes, native GTID replication delivers rows, and a TLS-only server refuses plain TCP.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use outflow_testkit::{replicate, wait_caught_up, ReplicationOpts, Server, ServerConfig, TlsFiles};

#[tokio::test]
async fn row_binlog_grows_with_writes() -> Result<()> {
    let server = Server::start(ServerConfig::new())?;
    let files = server.binlog_files()?;
    ensure!(files.len() == 1, "expected one binlog file, got {files:?}");
    let before = server.binlog_position().await?;
    let size_before = std::fs::metadata(&files[0])?.len();

    server
        .exec_all(&[
            "CREATE DATABASE app",
            "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "UPDATE app.t SET v = 'bb' WHERE id = 2",
            "DELETE FROM app.t WHERE id = 3",
        ])
        .await?;

    let after = server.binlog_position().await?;
    assert_eq!(after.file, before.file);
    assert!(
        after.position > before.position,
        "binlog position did not advance: {before:?} -> {after:?}"
    );
    // The server writes (without fsync) at commit, so the file on disk is as long as the
    // position it reports: what a reader of the files needs.
    let size_after = std::fs::metadata(&files[0])?.len();
    assert!(size_after > size_before, "binlog file did not grow");
    assert_eq!(
        size_after, after.position,
        "file size and SHOW MASTER STATUS disagree"
    );

    let sql = format!("SHOW BINLOG EVENTS IN '{}'", after.file);
    let events: Vec<mysql_async::Row> = server.query_rows(&sql).await?;
    let types: Vec<String> = events
        .iter()
        .map(|row| row.get_opt::<String, &str>("Event_type"))
        .map(|value| match value {
            Some(Ok(text)) => Ok(text),
            other => Err(anyhow::anyhow!("no Event_type: {other:?}")),
        })
        .collect::<Result<_>>()?;
    // One Table_map before each of the three row-changing statements' row events.
    for (wanted, expected) in [
        ("Table_map", 3),
        ("Write_rows", 1),
        ("Update_rows", 1),
        ("Delete_rows", 1),
    ] {
        let count = types.iter().filter(|t| t.starts_with(wanted)).count();
        assert_eq!(
            count, expected,
            "expected {expected} {wanted} events in {types:?}"
        );
    }

    server.flush_binary_logs().await?;
    let files = server.binlog_files()?;
    assert_eq!(
        files.len(),
        2,
        "FLUSH BINARY LOGS should start a second file: {files:?}"
    );
    assert!(files[1].ends_with("binlog.000002"), "{files:?}");
    assert!(files.iter().all(|f| f.is_file()), "{files:?}");
    Ok(())
}

#[tokio::test]
async fn gtid_replica_receives_rows() -> Result<()> {
    let source = Server::start(ServerConfig::new())?;
    let replica = Server::start(ServerConfig::new().log_slave_updates(true))?;
    assert_ne!(source.server_id(), replica.server_id());

    source
        .exec_all(&[
            "CREATE DATABASE app",
            "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40), n BIGINT)",
        ])
        .await?;
    replicate(&source, &replica, ReplicationOpts::default()).await?;
    source
        .exec_all(&[
            "INSERT INTO app.t SELECT seq, CONCAT('row ', seq), seq * seq FROM app.seq_1_to_500",
            "UPDATE app.t SET v = 'changed' WHERE id % 7 = 0",
            "DELETE FROM app.t WHERE id % 10 = 0",
        ])
        .await?;
    wait_caught_up(&source, &replica, Duration::from_secs(60)).await?;

    let on_source: i64 = source.query_scalar("SELECT COUNT(*) FROM app.t").await?;
    let on_replica: i64 = replica.query_scalar("SELECT COUNT(*) FROM app.t").await?;
    assert_eq!(on_source, 450);
    assert_eq!(on_replica, on_source);
    let sum_source = source.checksum_table("app.t").await?;
    let sum_replica = replica.checksum_table("app.t").await?;
    assert_eq!(sum_replica, sum_source, "table contents differ");

    // With log_slave_updates the replica's binlog carries the source's GTIDs, so it can
    // itself serve as a source for outflow.
    let gtid_source = source.gtid_binlog_pos().await?;
    let gtid_replica = replica.gtid_binlog_pos().await?;
    assert_eq!(gtid_replica, gtid_source);
    Ok(())
}

#[tokio::test]
async fn tls_only_server_refuses_plain_tcp() -> Result<()> {
    let tls = TlsFiles::generate_temp()?;
    let server = Server::start(ServerConfig::new().tls(&tls).require_secure_transport(true))?;
    let required: i64 = server
        .query_scalar("SELECT @@require_secure_transport")
        .await?;
    assert_eq!(required, 1);

    // MariaDB 10.11 refuses plain TCP under require_secure_transport with a plain
    // ER_ACCESS_DENIED_ERROR (1045), not MySQL's ER_SECURE_TRANSPORT_REQUIRED (3159) text, so
    // the error itself cannot say why. The checks below prove the transport is the reason:
    // the same credentials work over TLS, and over plain TCP once the requirement is lifted.
    assert_plain_tcp_refused(&server).await?;

    let opts = server.tls_opts().context("server has TLS files")?;
    let mut conn = Conn::new(opts)
        .await
        .context("TLS connection trusting the CA")?;
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await?;
    let cipher = cipher.map(|(_, value)| value).unwrap_or_default();
    assert!(!cipher.is_empty(), "connection is not encrypted");
    conn.disconnect().await?;

    server
        .exec("SET GLOBAL require_secure_transport = OFF")
        .await?;
    Conn::new(server.opts())
        .await
        .context("plain TCP once require_secure_transport is OFF")?
        .disconnect()
        .await?;
    server
        .exec("SET GLOBAL require_secure_transport = ON")
        .await?;
    assert_plain_tcp_refused(&server).await?;

    // The client certificate is accepted as well.
    let opts = OptsBuilder::from_opts(server.opts()).ssl_opts(tls.ssl_opts_with_client_cert());
    Conn::new(opts)
        .await
        .context("TLS with client certificate")?
        .disconnect()
        .await?;

    // A client that trusts some other CA must not connect: the certificate check is real.
    let stranger = TlsFiles::generate_temp()?;
    let opts = OptsBuilder::from_opts(server.opts()).ssl_opts(stranger.ssl_opts());
    if let Ok(conn) = Conn::new(opts).await {
        let _ = conn.disconnect().await;
        anyhow::bail!("connection trusting an unrelated CA succeeded");
    }
    Ok(())
}

async fn assert_plain_tcp_refused(server: &Server) -> Result<()> {
    match Conn::new(server.opts()).await {
        Ok(conn) => {
            let _ = conn.disconnect().await;
            anyhow::bail!("plain TCP connection was accepted by a TLS-only server");
        }
        Err(mysql_async::Error::Server(e)) => {
            // 1045 on MariaDB; 3159 ("insecure transport") should the kit ever run MySQL.
            ensure!(
                e.code == 1045 || e.code == 3159 || e.message.contains("secure transport"),
                "unexpected refusal: {e}"
            );
        }
        Err(other) => anyhow::bail!("plain TCP failed for another reason: {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn restore_data_returns_to_the_saved_state() -> Result<()> {
    let mut server = Server::start(ServerConfig::new())?;
    let err = server.restore_data().expect_err("nothing saved yet");
    assert!(err.to_string().contains("save_data"), "{err}");
    server
        .exec_all(&[
            "CREATE DATABASE app",
            "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))",
            "INSERT INTO app.t SELECT seq, CONCAT('row ', seq) FROM app.seq_1_to_300",
        ])
        .await?;
    let saved = server.checksum_table("app.t").await?;
    let gtid = server.gtid_binlog_pos().await?;
    server.save_data()?;
    assert_eq!(server.checksum_table("app.t").await?, saved);

    for _ in 0..2 {
        server
            .exec_all(&[
                "DELETE FROM app.t WHERE id % 3 = 0",
                "CREATE TABLE app.extra (id INT PRIMARY KEY)",
            ])
            .await?;
        assert_ne!(server.checksum_table("app.t").await?, saved);
        server.restore_data()?;
        assert_eq!(server.checksum_table("app.t").await?, saved);
        assert_eq!(server.gtid_binlog_pos().await?, gtid);
        let extra: i64 = server
            .query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = 'app' AND table_name = 'extra'",
            )
            .await?;
        assert_eq!(
            extra, 0,
            "a table created after save_data survived the restore"
        );
    }
    Ok(())
}

//! The kit against real `mariadbd` servers: lifecycle, configuration, helpers, users,
//! replication failures and sysbench.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use outflow_testkit::{
    replicate, wait_caught_up, AuthPlugin, KitError, ParallelMode, ReplicationOpts, RowImage,
    RowMetadata, Server, ServerConfig, Sysbench, SysbenchConnection, TlsFiles, UserSpec, Workload,
};

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            // A zombie ("Z") is dead for our purposes.
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn start_time_is_well_under_three_seconds() {
    // Warm the template first so it does not count against one server.
    drop(Server::start(ServerConfig::new()).expect("first start"));
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let server = Server::start(ServerConfig::new()).expect("start");
        times.push(started.elapsed());
        drop(server);
    }
    eprintln!("server start times: {times:?}");
    // Generous bound so a loaded CI machine does not flake; the docs state the typical figure.
    for t in &times {
        assert!(*t < Duration::from_secs(10), "start took {t:?}");
    }
}

#[test]
fn drop_kills_and_removes_even_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let server = Server::start(ServerConfig::new()).expect("start");
        tx.send((server.pid().expect("pid"), server.data_dir().to_path_buf()))
            .expect("send");
        panic!("deliberate panic with a live server");
    })
    .join();
    assert!(outcome.is_err(), "thread should have panicked");
    let (pid, data_dir) = rx.recv().expect("server info");
    assert!(!process_alive(pid), "mariadbd {pid} survived the panic");
    assert!(
        !data_dir.exists(),
        "{} survived the panic",
        data_dir.display()
    );
}

#[tokio::test]
async fn typed_options_reach_the_server() {
    let server = Server::start(
        ServerConfig::new()
            .binlog_row_image(RowImage::Minimal)
            .binlog_row_metadata(RowMetadata::Full)
            .gtid_domain_id(5)
            .server_id(4242)
            .gtid_strict_mode(true)
            .log_bin_compress(true)
            .slave_parallel_threads(2)
            .slave_parallel_mode(ParallelMode::Optimistic)
            .max_allowed_packet(32 << 20)
            .option("max_connections", 42),
    )
    .expect("start");
    let row: (String, String, u32, u32, i64, i64, String, u64, i64) = server
        .query_rows(
            "SELECT @@binlog_row_image, @@binlog_row_metadata, @@gtid_domain_id, @@server_id, \
             @@gtid_strict_mode, @@log_bin_compress, @@slave_parallel_mode, \
             @@max_allowed_packet, @@max_connections",
        )
        .await
        .expect("query")
        .pop()
        .expect("one row");
    assert_eq!(
        row,
        (
            "MINIMAL".to_string(),
            "FULL".to_string(),
            5,
            4242,
            1,
            1,
            "optimistic".to_string(),
            32 << 20,
            42
        )
    );
    assert_eq!(server.server_id(), 4242);
    let format: String = server
        .query_scalar("SELECT @@binlog_format")
        .await
        .expect("format");
    assert_eq!(format, "ROW");
}

#[tokio::test]
async fn kill_restart_and_stop_keep_the_data() {
    let mut server = Server::start(ServerConfig::new()).expect("start");
    let port = server.port();
    server
        .exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)")
        .await
        .expect("write");

    server.kill();
    assert!(!server.is_running());
    match server.exec("SELECT 1").await {
        Err(KitError::NotRunning { .. }) => {}
        other => panic!("expected NotRunning, got {other:?}"),
    }
    server.restart().expect("restart after kill");
    assert_eq!(server.port(), port);
    server
        .exec("INSERT INTO app.t VALUES (2)")
        .await
        .expect("write after crash");

    server.stop().expect("graceful stop");
    assert!(!server.is_running());
    assert!(
        server.data_dir().join("ibdata1").exists(),
        "stop must keep files"
    );
    server.restart().expect("restart after stop");
    let count: i64 = server
        .query_scalar("SELECT COUNT(*) FROM app.t")
        .await
        .expect("count");
    assert_eq!(count, 2);
    let log = server.error_log_tail();
    assert!(log.contains("ready for connections"), "{log}");
}

#[test]
fn servers_start_concurrently() {
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(|| Server::start(ServerConfig::new()).expect("start")))
        .collect();
    let servers: Vec<Server> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(Server::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    let mut ids: Vec<u32> = servers.iter().map(Server::server_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[test]
fn sql_script_reports_errors_with_stderr() {
    let server = Server::start(ServerConfig::new()).expect("start");
    let out = server
        .run_sql_script("CREATE DATABASE s;\nCREATE TABLE s.t (a INT);\nINSERT INTO s.t VALUES (1), (2);\nSELECT SUM(a) FROM s.t;\n")
        .expect("script");
    assert_eq!(out.trim(), "3");
    let err = server
        .run_sql_script("SELEC 1;")
        .expect_err("syntax error must fail");
    let text = err.to_string();
    assert!(text.contains("ERROR 1064"), "{text}");
}

#[tokio::test]
async fn binlog_disabled_has_no_position() {
    let server = Server::start(ServerConfig::new().log_bin(false)).expect("start");
    let on: i64 = server
        .query_scalar("SELECT @@log_bin")
        .await
        .expect("log_bin");
    assert_eq!(on, 0);
    assert!(server.binlog_position().await.is_err());
    assert!(server.binlog_files().is_err());
}

#[tokio::test]
async fn users_with_native_and_ed25519_passwords() {
    let tls = TlsFiles::generate_temp().expect("tls");
    let server = Server::start(ServerConfig::new().tls(&tls)).expect("start");
    server
        .create_user(
            "reader",
            "pw1",
            AuthPlugin::MysqlNativePassword,
            &["SELECT ON *.*"],
        )
        .await
        .expect("native user");
    server
        .create_user(
            "edd",
            "pw2",
            AuthPlugin::Ed25519,
            &["REPLICATION SLAVE ON *.*"],
        )
        .await
        .expect("ed25519 user");
    server
        .create_user_spec(&UserSpec::new("secure", "pw3").require_ssl(true))
        .await
        .expect("ssl user");

    let plugins: Vec<(String, String)> = server
        .query_rows(
            "SELECT user, plugin FROM mysql.user WHERE user IN ('reader', 'edd') ORDER BY user",
        )
        .await
        .expect("plugins");
    assert_eq!(
        plugins,
        vec![
            ("edd".to_string(), "ed25519".to_string()),
            ("reader".to_string(), "mysql_native_password".to_string())
        ]
    );

    let as_user = |user: &str, pass: &str| {
        OptsBuilder::from_opts(server.opts())
            .user(Some(user.to_string()))
            .pass(Some(pass.to_string()))
    };
    let mut conn = Conn::new(as_user("reader", "pw1"))
        .await
        .expect("reader connects");
    let me: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .expect("whoami");
    assert_eq!(me.as_deref(), Some("reader@%"));
    conn.disconnect().await.expect("disconnect");
    assert!(
        Conn::new(as_user("reader", "wrong")).await.is_err(),
        "wrong password accepted"
    );

    // The ed25519 user through the mariadb client, which ships the client-side plugin.
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "-h127.0.0.1",
            "--batch",
            "--skip-column-names",
        ])
        .arg(format!("-P{}", server.port()))
        .args(["-uedd", "-ppw2", "-e", "SELECT CURRENT_USER()"])
        .output()
        .expect("run mariadb client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "edd@%");

    assert!(
        Conn::new(as_user("secure", "pw3")).await.is_err(),
        "REQUIRE SSL user got in without TLS"
    );
    let tls_opts = as_user("secure", "pw3").ssl_opts(tls.ssl_opts());
    Conn::new(tls_opts)
        .await
        .expect("REQUIRE SSL user over TLS")
        .disconnect()
        .await
        .expect("disconnect");
}

#[tokio::test]
async fn wait_caught_up_reports_a_broken_replica() {
    let source = Server::start(ServerConfig::new()).expect("source");
    let replica = Server::start(ServerConfig::new()).expect("replica");
    source
        .exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .expect("schema");
    replicate(&source, &replica, ReplicationOpts::default())
        .await
        .expect("replicate");
    wait_caught_up(&source, &replica, Duration::from_secs(60))
        .await
        .expect("caught up");

    // A row that exists only on the replica makes the next insert fail there.
    replica
        .exec("INSERT INTO app.t VALUES (7)")
        .await
        .expect("replica-only row");
    source
        .exec("INSERT INTO app.t VALUES (7)")
        .await
        .expect("source row");
    let err = wait_caught_up(&source, &replica, Duration::from_secs(60))
        .await
        .expect_err("duplicate key must break replication");
    let text = err.to_string();
    assert!(matches!(err, KitError::ReplicationBroken { .. }), "{text}");
    assert!(text.contains("Duplicate entry"), "{text}");
}

#[tokio::test]
async fn wait_caught_up_times_out_without_replication_progress() {
    let source = Server::start(ServerConfig::new()).expect("source");
    let replica = Server::start(ServerConfig::new()).expect("replica");
    let opts = ReplicationOpts {
        start: false,
        ..ReplicationOpts::default()
    };
    replicate(&source, &replica, opts)
        .await
        .expect("configure only");
    source.exec("CREATE DATABASE app").await.expect("write");
    let err = wait_caught_up(&source, &replica, Duration::from_millis(300))
        .await
        .expect_err("stopped replica cannot catch up");
    assert!(
        matches!(
            err,
            KitError::CatchUpTimeout { .. } | KitError::ReplicationBroken { .. }
        ),
        "{err}"
    );
}

#[test]
fn sysbench_prepare_run_cleanup() {
    let server = Server::start(ServerConfig::new()).expect("start");
    for (workload, connection) in [
        (Workload::OltpWriteOnly, SysbenchConnection::Socket),
        (Workload::BulkInsert, SysbenchConnection::Tcp),
    ] {
        let bench = Sysbench::new(workload.clone())
            .table_size(100)
            .events(50)
            .threads(2)
            .connection(connection);
        let prepared = bench.prepare(&server).expect("prepare");
        assert!(prepared.contains("Creating table"), "{prepared}");
        let report = bench.run(&server).expect("run");
        assert!(report.contains("transactions:"), "{workload:?}: {report}");
        bench.cleanup(&server).expect("cleanup");
    }
    let files = server.binlog_files().expect("binlog files");
    let size = std::fs::metadata(&files[0]).expect("binlog size").len();
    assert!(
        size > 10_000,
        "sysbench writes should reach the binlog, size {size}"
    );

    // A run against tables that do not exist must fail with sysbench's own words.
    let err = Sysbench::new(Workload::OltpWriteOnly)
        .db("nosuchdb")
        .run(&server)
        .expect_err("run without prepare must fail");
    let text = err.to_string();
    assert!(
        text.contains("nosuchdb") || text.contains("FATAL"),
        "{text}"
    );
}

#[tokio::test]
async fn replication_over_tls_to_a_tls_only_source() {
    let tls = TlsFiles::generate_temp().expect("tls");
    let source = Server::start(ServerConfig::new().tls(&tls).require_secure_transport(true))
        .expect("source");
    let replica = Server::start(ServerConfig::new()).expect("replica");
    source
        .exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2)")
        .await
        .expect("write");
    let opts = ReplicationOpts {
        ssl_ca: Some(tls.ca_cert()),
        ..ReplicationOpts::default()
    };
    replicate(&source, &replica, opts).await.expect("replicate");
    wait_caught_up(&source, &replica, Duration::from_secs(60))
        .await
        .expect("caught up over TLS");
    let count: i64 = replica
        .query_scalar("SELECT COUNT(*) FROM app.t")
        .await
        .expect("count");
    assert_eq!(count, 2);
}

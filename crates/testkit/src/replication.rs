//! Native MariaDB replication between two kit servers, for topologies such as
//! source → replica → outflow.
//!
//! Server prerequisites: distinct `server_id`s (the kit's default), `log_bin` on the source,
//! and `log_slave_updates` on a replica that is itself read as a source (otherwise the
//! replicated changes never reach its binlog).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::Row;

use crate::util::sql_literal;
use crate::{KitError, Server};

/// `MASTER_USE_GTID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseGtid {
    /// Start from `@@gtid_slave_pos` (what this replica applied from any source).
    SlavePos,
    /// Start from `@@gtid_current_pos` (also counts the replica's own writes).
    CurrentPos,
    /// Classic file/position replication from the start of the source's first binlog.
    No,
}

impl UseGtid {
    fn as_sql(self) -> &'static str {
        match self {
            UseGtid::SlavePos => "slave_pos",
            UseGtid::CurrentPos => "current_pos",
            UseGtid::No => "no",
        }
    }
}

/// How [`replicate`] sets up the replica.
#[derive(Debug, Clone)]
pub struct ReplicationOpts {
    /// Replication user created on the source (default `repl`).
    pub user: String,
    /// Its password (default `repl`).
    pub password: String,
    /// `MASTER_USE_GTID` (default `slave_pos`).
    pub use_gtid: UseGtid,
    /// `MASTER_CONNECT_RETRY` (default 1 s, so crash tests reconnect quickly; server default 60 s).
    pub connect_retry: Duration,
    /// `MASTER_HEARTBEAT_PERIOD`, if set.
    pub heartbeat_period: Option<Duration>,
    /// Connect with TLS, verifying the source's certificate against this CA file.
    pub ssl_ca: Option<PathBuf>,
    /// Run `START SLAVE` (default true).
    pub start: bool,
}

impl Default for ReplicationOpts {
    fn default() -> Self {
        ReplicationOpts {
            user: "repl".to_string(),
            password: "repl".to_string(),
            use_gtid: UseGtid::SlavePos,
            connect_retry: Duration::from_secs(1),
            heartbeat_period: None,
            ssl_ca: None,
            start: true,
        }
    }
}

/// Makes `replica` a native replica of `source`: creates the replication user on the source
/// (REPLICATION SLAVE), points the replica at the source's TCP port with `CHANGE MASTER TO`,
/// and starts the replica threads.
pub async fn replicate(
    source: &Server,
    replica: &Server,
    opts: ReplicationOpts,
) -> Result<(), KitError> {
    let user = sql_literal(&opts.user);
    source
        .exec_all(&[
            format!(
                "CREATE USER IF NOT EXISTS {user}@'%' IDENTIFIED BY {}",
                sql_literal(&opts.password)
            ),
            format!("GRANT REPLICATION SLAVE ON *.* TO {user}@'%'"),
        ])
        .await
        .map_err(|e| redact(e, &opts.password))?;

    let mut change = format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER={user}, \
         MASTER_PASSWORD={}, MASTER_USE_GTID={}, MASTER_CONNECT_RETRY={}",
        source.port(),
        sql_literal(&opts.password),
        opts.use_gtid.as_sql(),
        opts.connect_retry.as_secs().max(1),
    );
    if let Some(period) = opts.heartbeat_period {
        change.push_str(&format!(
            ", MASTER_HEARTBEAT_PERIOD={:.3}",
            period.as_secs_f64()
        ));
    }
    if let Some(ca) = &opts.ssl_ca {
        change.push_str(&format!(
            ", MASTER_SSL=1, MASTER_SSL_CA={}, MASTER_SSL_VERIFY_SERVER_CERT=1",
            sql_literal(&ca.to_string_lossy())
        ));
    }
    replica
        .exec(&change)
        .await
        .map_err(|e| redact(e, &opts.password))?;
    if opts.start {
        replica.exec("START SLAVE").await?;
    }
    Ok(())
}

fn redact(error: KitError, password: &str) -> KitError {
    match error {
        KitError::Sql { port, sql, source } if !password.is_empty() => KitError::Sql {
            port,
            sql: sql.replace(&sql_literal(password), "'***'"),
            source,
        },
        other => other,
    }
}

/// The replica threads' state from `SHOW SLAVE STATUS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaveStatus {
    /// `Slave_IO_Running`: Yes, No or Connecting.
    pub io_running: String,
    /// `Slave_SQL_Running`: Yes or No.
    pub sql_running: String,
    /// `Last_IO_Errno`.
    pub last_io_errno: u64,
    /// `Last_IO_Error`.
    pub last_io_error: String,
    /// `Last_SQL_Errno`.
    pub last_sql_errno: u64,
    /// `Last_SQL_Error`.
    pub last_sql_error: String,
    /// `Gtid_IO_Pos`: the last GTID received from the source.
    pub gtid_io_pos: String,
    /// `Master_Log_File`: the source binlog the IO thread reads.
    pub master_log_file: String,
    /// `Read_Master_Log_Pos`: how far the IO thread has read in it.
    pub read_master_log_pos: u64,
}

impl Server {
    /// `SHOW SLAVE STATUS`; `None` when no replication is configured.
    pub async fn slave_status(&self) -> Result<Option<SlaveStatus>, KitError> {
        const SQL: &str = "SHOW SLAVE STATUS";
        let rows: Vec<Row> = self.query_rows(SQL).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let text = |name: &str| -> String {
            match row.get_opt::<Option<String>, &str>(name) {
                Some(Ok(Some(value))) => value,
                _ => String::new(),
            }
        };
        let number = |name: &str| -> u64 {
            match row.get_opt::<Option<u64>, &str>(name) {
                Some(Ok(Some(value))) => value,
                _ => 0,
            }
        };
        Ok(Some(SlaveStatus {
            io_running: text("Slave_IO_Running"),
            sql_running: text("Slave_SQL_Running"),
            last_io_errno: number("Last_IO_Errno"),
            last_io_error: text("Last_IO_Error"),
            last_sql_errno: number("Last_SQL_Errno"),
            last_sql_error: text("Last_SQL_Error"),
            gtid_io_pos: text("Gtid_IO_Pos"),
            master_log_file: text("Master_Log_File"),
            read_master_log_pos: number("Read_Master_Log_Pos"),
        }))
    }
}

/// Waits until `replica` has applied everything in `source`'s binlog: for every GTID domain
/// in the source's `@@gtid_binlog_pos`, the replica's `@@gtid_slave_pos` has reached the same
/// sequence number.
///
/// Fails at once when a replica thread has stopped (with `Last_IO_Error`/`Last_SQL_Error`),
/// and after `timeout` otherwise. A replica thread that is still retrying its connection
/// (`Connecting`) counts as alive.
pub async fn wait_caught_up(
    source: &Server,
    replica: &Server,
    timeout: Duration,
) -> Result<(), KitError> {
    let deadline = Instant::now() + timeout;
    // A thread reported as stopped without an error may just be between START SLAVE and its
    // first status update; only a lasting stop counts as broken.
    let mut stopped_since: Option<Instant> = None;
    loop {
        let source_pos = source.gtid_binlog_pos().await?;
        let status = replica.slave_status().await?.ok_or_else(|| {
            replica.unexpected(
                "SHOW SLAVE STATUS",
                "no replication configured on this server".to_string(),
            )
        })?;
        let stopped = status.sql_running == "No" || status.io_running == "No";
        let failed = (status.sql_running == "No" && status.last_sql_errno != 0)
            || (status.io_running == "No" && status.last_io_errno != 0);
        let since = match (stopped, stopped_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, Some(t)) => Some(t),
        };
        stopped_since = since;
        let stopped_long = since.is_some_and(|t| t.elapsed() > Duration::from_secs(1));
        if failed || stopped_long {
            return Err(KitError::ReplicationBroken {
                source_port: source.port(),
                replica_port: replica.port(),
                io_running: status.io_running,
                io_error: none_if_empty(status.last_io_error),
                sql_running: status.sql_running,
                sql_error: none_if_empty(status.last_sql_error),
            });
        }
        let replica_pos: String = replica
            .query_scalar("SELECT @@GLOBAL.gtid_slave_pos")
            .await?;
        let covered = gtid_pos_covers(&replica_pos, &source_pos)
            .map_err(|detail| replica.unexpected("SELECT @@GLOBAL.gtid_slave_pos", detail))?;
        if covered {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KitError::CatchUpTimeout {
                source_port: source.port(),
                replica_port: replica.port(),
                timeout,
                source_pos,
                replica_pos,
                io_error: format!(
                    "Slave_IO_Running={}, {}",
                    status.io_running,
                    none_if_empty(status.last_io_error)
                ),
                sql_error: format!(
                    "Slave_SQL_Running={}, {}",
                    status.sql_running,
                    none_if_empty(status.last_sql_error)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a native replica's IO thread costs on the wire: starts the IO thread of `replica`
/// (replication set up by [`replicate`] with `start: false`, or stopped) and waits until it
/// has read `source`'s binlog up to the current end (`SHOW MASTER STATUS`), then returns
/// the growth of the source's `Bytes_sent` meanwhile, and, as a cross-check from the other
/// end, the size of the replica's relay logs.
///
/// `Bytes_sent` counts every client of the source, so the source should be otherwise idle;
/// this function's own status queries add a few KB. The SQL thread is left alone, so the
/// replica only fetches: with `slave_compressed_protocol` on either side the bytes are the
/// compressed protocol's.
pub async fn io_thread_bytes(
    source: &Server,
    replica: &Server,
    timeout: Duration,
) -> Result<(u64, u64), KitError> {
    let end = source.binlog_position().await?;
    let before = bytes_sent(source).await?;
    replica.exec("START SLAVE IO_THREAD").await?;
    let deadline = Instant::now() + timeout;
    loop {
        let status = replica.slave_status().await?.ok_or_else(|| {
            replica.unexpected(
                "SHOW SLAVE STATUS",
                "no replication configured on this server".to_string(),
            )
        })?;
        if status.last_io_errno != 0 {
            return Err(KitError::ReplicationBroken {
                source_port: source.port(),
                replica_port: replica.port(),
                io_running: status.io_running,
                io_error: status.last_io_error,
                sql_running: status.sql_running,
                sql_error: none_if_empty(status.last_sql_error),
            });
        }
        // Binlog names sort in order (`binlog.000012` after `binlog.000011`).
        let read = (status.master_log_file.as_str(), status.read_master_log_pos);
        if read >= (end.file.as_str(), end.position) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(replica.unexpected(
                "SHOW SLAVE STATUS",
                format!(
                    "the IO thread read {}:{} after {timeout:?}, short of {}:{}",
                    read.0, read.1, end.file, end.position
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = bytes_sent(source).await? - before;
    let mut relay = 0;
    let dir = replica.data_dir();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        replica.unexpected(
            "reading the data directory",
            format!("{}: {e}", dir.display()),
        )
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("relay-bin.") && !name.ends_with(".index") {
            relay += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok((sent, relay))
}

/// The source's `Bytes_sent` status counter: bytes sent to all clients since start.
pub async fn bytes_sent(server: &Server) -> Result<u64, KitError> {
    global_status(server, "Bytes_sent").await
}

/// A numeric global status variable, such as `Innodb_os_log_written`.
pub async fn global_status(server: &Server, name: &str) -> Result<u64, KitError> {
    let sql = format!("SHOW GLOBAL STATUS LIKE '{name}'");
    let rows: Vec<(String, String)> = server.query_rows(&sql).await?;
    rows.first()
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| server.unexpected(&sql, format!("no number in {rows:?}")))
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "none".to_string()
    } else {
        text
    }
}

/// Parses a MariaDB GTID position list (`domain-server-seq,...`) into domain → seq_no.
pub fn parse_gtid_pos(text: &str) -> Result<BTreeMap<u32, u64>, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split('-');
        let (Some(domain), Some(server), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed GTID {item:?} in {text:?}"));
        };
        let domain: u32 = domain
            .parse()
            .map_err(|_| format!("bad domain in GTID {item:?}"))?;
        server
            .parse::<u32>()
            .map_err(|_| format!("bad server id in GTID {item:?}"))?;
        let seq: u64 = seq
            .parse()
            .map_err(|_| format!("bad sequence number in GTID {item:?}"))?;
        out.insert(domain, seq);
    }
    Ok(out)
}

/// True when position `have` has reached `want` in every domain that `want` mentions.
pub fn gtid_pos_covers(have: &str, want: &str) -> Result<bool, String> {
    let have = parse_gtid_pos(have)?;
    let want = parse_gtid_pos(want)?;
    Ok(want
        .iter()
        .all(|(domain, seq)| have.get(domain).is_some_and(|got| got >= seq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_domain_positions() {
        let pos = parse_gtid_pos("0-1-17, 5-2-3").expect("parse");
        assert_eq!(pos.get(&0), Some(&17));
        assert_eq!(pos.get(&5), Some(&3));
        assert!(parse_gtid_pos("").expect("empty").is_empty());
        assert!(parse_gtid_pos("0-1").is_err());
        assert!(parse_gtid_pos("0-1-2-3").is_err());
        assert!(parse_gtid_pos("x-1-2").is_err());
    }

    #[test]
    fn coverage_is_per_domain() {
        assert!(gtid_pos_covers("0-1-10", "0-1-10").expect("ok"));
        assert!(gtid_pos_covers("0-2-11", "0-1-10").expect("ok"));
        assert!(!gtid_pos_covers("0-1-9", "0-1-10").expect("ok"));
        assert!(!gtid_pos_covers("0-1-10", "0-1-10,1-1-1").expect("ok"));
        assert!(gtid_pos_covers("", "").expect("ok"));
        assert!(gtid_pos_covers("0-1-3", "").expect("ok"));
        assert!(!gtid_pos_covers("", "0-1-1").expect("ok"));
    }
}

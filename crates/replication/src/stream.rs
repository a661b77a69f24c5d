//! The binlog dump: checks the server can serve a row-based stream, sets the session
//! variables a replica sets, registers, asks for the dump and hands out raw events.

use bytes::{Buf, Bytes};
use outflow_binlog::Checksum;

use crate::conn::Connection;
use crate::error::codes;
use crate::options::ConnectOptions;
use crate::position::StartPosition;
use crate::protocol::command::{self, BINLOG_DUMP_NON_BLOCK, BINLOG_SEND_ANNOTATE_ROWS_EVENT};
use crate::protocol::gtid::encode_gtid_set;
use crate::protocol::response::{classify, is_eof, parse_err, Reply, ServerError};
use crate::protocol::ProtocolError;
use crate::Error;

/// MariaDB: the replica understands GTID events (`MARIA_SLAVE_CAPABILITY_GTID`), and with
/// them annotate-rows, binlog checkpoints and compressed events.
const MARIADB_SLAVE_CAPABILITY: u32 = 4;

/// What the server told us about itself before the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `host:port`.
    pub addr: String,
    /// Version string from the greeting.
    pub version: String,
    /// Whether it is MariaDB.
    pub mariadb: bool,
    /// The server's own `server_id`.
    pub server_id: u32,
    /// `@@global.binlog_format`.
    pub binlog_format: String,
    /// `@@global.binlog_checksum`: the checksum of the artificial events that precede the
    /// first FORMAT_DESCRIPTION of the stream.
    pub checksum: Checksum,
    /// Whether the connection is encrypted.
    pub tls: bool,
    /// The auth plugin that logged in.
    pub auth_plugin: &'static str,
}

/// A binlog dump in progress: raw events, one at a time.
///
/// Each event is handed out as `Bytes` that share the connection's read buffer: no copy
/// and no allocation per event (a payload of 16 MiB or more is the exception: its packets
/// are joined by one copy). Dropping an event before asking for the next lets the read
/// buffer be reused; holding events keeps their part of the buffer alive, and the next
/// read then goes to a fresh buffer.
#[derive(Debug)]
pub struct BinlogStream {
    conn: Connection,
    info: ServerInfo,
    start: StartPosition,
    ended: bool,
}

impl BinlogStream {
    /// Connects, checks the server (binary log on, `binlog_format=ROW`, a `server_id` other
    /// than ours), resolves `from` (`start` and `now` become a file and offset), registers
    /// as a replica and starts the dump.
    pub async fn connect(
        opts: &ConnectOptions,
        from: &StartPosition,
    ) -> Result<BinlogStream, Error> {
        let mut conn = Connection::connect(opts).await?;
        let info = check_server(&mut conn).await?;
        if info.server_id == opts.server_id {
            return Err(Error::ServerIdInUse {
                addr: info.addr.clone(),
                server_id: opts.server_id,
                detail: "it is the source's own server_id".to_string(),
            });
        }
        let start = resolve(&mut conn, from).await?;
        set_session(&mut conn, opts, &info, &start).await?;
        let register = command::register_slave(opts.server_id, &opts.report_host, 0);
        conn.send_command(&register, "registering as a replica")
            .await?;
        let reply = conn.read_payload("registering as a replica").await?;
        match classify(&reply).map_err(|e| conn.protocol("registering as a replica", e))? {
            Reply::Ok => {}
            // MariaDB answers a missing REPLICATION SLAVE here with a plain 1045.
            Reply::Err(e) if e.code == codes::ACCESS_DENIED => {
                return Err(Error::MissingPrivilege {
                    addr: info.addr.clone(),
                    user: opts.user.clone(),
                    privilege: "REPLICATION SLAVE".to_string(),
                    needed_for: "register as a replica (COM_REGISTER_SLAVE)",
                    error: Box::new(e),
                })
            }
            Reply::Err(e) => {
                return Err(conn.server_error("register as a replica (COM_REGISTER_SLAVE)", e))
            }
            Reply::Other => {
                return Err(conn.protocol(
                    "registering as a replica",
                    ProtocolError::new("COM_REGISTER_SLAVE reply", "neither OK nor ERR"),
                ))
            }
        }
        let mut flags = 0;
        if opts.non_blocking {
            flags |= BINLOG_DUMP_NON_BLOCK;
        }
        if opts.annotate_rows && info.mariadb {
            flags |= BINLOG_SEND_ANNOTATE_ROWS_EVENT;
        }
        let dump = match &start {
            StartPosition::File { file, pos } => {
                let pos = u32::try_from(*pos).map_err(|_| {
                    Error::Options(format!(
                        "binlog offset {pos} does not fit COM_BINLOG_DUMP (4 bytes)"
                    ))
                })?;
                command::binlog_dump(opts.server_id, file, pos, flags)
            }
            StartPosition::MariaGtid(_) => command::binlog_dump(opts.server_id, "", 4, flags),
            StartPosition::MySqlGtid(set) => {
                let set = encode_gtid_set(set).map_err(|e| Error::Options(e.to_string()))?;
                command::binlog_dump_gtid(opts.server_id, "", 4, flags, &set)
            }
            StartPosition::Oldest | StartPosition::Now => {
                return Err(Error::Options(
                    "internal: unresolved start position".to_string(),
                ))
            }
        };
        conn.send_command(&dump, "requesting the binlog dump")
            .await?;
        // The header, the OK byte and some slack on top of the largest event.
        conn.set_max_payload(opts.max_event.saturating_add(64));
        tracing::debug!(addr = %info.addr, %start, "binlog dump started");
        Ok(BinlogStream {
            conn,
            info,
            start,
            ended: false,
        })
    }

    /// What the server said about itself.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// The start position, resolved (never `Oldest` or `Now`).
    pub fn start(&self) -> &StartPosition {
        &self.start
    }

    /// The next event (header, body and checksum, without the packet's OK byte), or `None`
    /// when a non-blocking dump reached the end of the binlog.
    pub async fn next_event(&mut self) -> Result<Option<Bytes>, Error> {
        const DURING: &str = "streaming binlog events";
        if self.ended {
            return Ok(None);
        }
        let mut p = self.conn.read_payload(DURING).await?;
        match p.first() {
            Some(0x00) => {
                p.advance(1);
                Ok(Some(p))
            }
            Some(0xFF) => {
                let e = parse_err(&p).map_err(|e| self.conn.protocol(DURING, e))?;
                self.ended = true;
                Err(self.dump_error(e).await)
            }
            _ if is_eof(&p) => {
                self.ended = true;
                if self.conn.options().non_blocking {
                    Ok(None)
                } else {
                    // A blocking dump never ends by itself: the server is shutting down.
                    Err(Error::Closed {
                        addr: self.info.addr.clone(),
                        during: "streaming binlog events (the server ended the dump)",
                    })
                }
            }
            _ => Err(self.conn.protocol(
                DURING,
                ProtocolError::new(
                    "binlog event packet",
                    format!("unexpected first byte {:#04x}", p[0]),
                ),
            )),
        }
    }

    /// Ends the dump politely.
    pub async fn close(self) {
        self.conn.close().await
    }

    async fn dump_error(&self, error: ServerError) -> Error {
        let addr = self.info.addr.clone();
        let server_id = self.conn.options().server_id;
        let lower = error.message.to_ascii_lowercase();
        if error.code == codes::SLAVE_SAME_ID
            || lower.contains("same server_uuid/server_id")
            || lower.contains("same server_id")
        {
            return Error::ServerIdInUse {
                addr,
                server_id,
                detail: format!(
                    "another replica connected with it and the server ended this dump ({error})"
                ),
            };
        }
        if error.code == codes::FATAL_READING_BINLOG {
            let oldest = match oldest_position(self.conn.options(), self.info.mariadb).await {
                Ok(o) => format!("The oldest position the server still has is {o}."),
                Err(e) => {
                    format!("The oldest position the server still has could not be read: {e}")
                }
            };
            return Error::PositionUnavailable {
                addr,
                requested: self.start.to_string(),
                oldest,
                error: Box::new(error),
            };
        }
        if error.code == codes::CONNECTION_KILLED {
            // MariaDB ends the older of two dumps with the same server_id this way (an
            // administrator's KILL looks the same, and is as final).
            return Error::ServerIdInUse {
                addr,
                server_id,
                detail: format!(
                    "the server killed this dump, as it does when another replica registers with the same server_id ({error})"
                ),
            };
        }
        self.conn
            .server_error("stream the binlog (COM_BINLOG_DUMP)", error)
    }
}

async fn check_server(conn: &mut Connection) -> Result<ServerInfo, Error> {
    const SQL: &str = "SELECT @@global.log_bin AS log_bin, @@global.binlog_format AS format, \
                       @@server_id AS server_id, @@global.binlog_checksum AS checksum";
    let set = conn
        .query(SQL, "checking the server's binlog settings")
        .await?;
    let addr = conn.addr().to_string();
    let log_bin = set.first("log_bin").unwrap_or("0");
    if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("ON")) {
        return Err(Error::BinlogDisabled { addr });
    }
    let format = set.first("format").unwrap_or("").to_string();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(Error::BinlogFormat { addr, format });
    }
    let server_id = set
        .first("server_id")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            conn.protocol(
                "checking the server's binlog settings",
                ProtocolError::new("server_id", "not a number"),
            )
        })?;
    let checksum = match set.first("checksum") {
        Some(c) if c.eq_ignore_ascii_case("CRC32") => Checksum::Crc32,
        _ => Checksum::Off,
    };
    let g = conn.greeting();
    Ok(ServerInfo {
        addr,
        version: g.server_version.clone(),
        mariadb: g.is_mariadb(),
        server_id,
        binlog_format: format,
        checksum,
        tls: conn.is_tls(),
        auth_plugin: conn.auth_plugin(),
    })
}

async fn resolve(conn: &mut Connection, from: &StartPosition) -> Result<StartPosition, Error> {
    match from {
        StartPosition::Oldest => {
            let file = first_binlog(conn).await?;
            Ok(StartPosition::File { file, pos: 4 })
        }
        StartPosition::Now => {
            let set = conn
                .query(
                    "SHOW MASTER STATUS",
                    "read the current binlog position (SHOW MASTER STATUS) for --from now",
                )
                .await?;
            let (Some(file), Some(pos)) = (
                set.first("File"),
                set.first("Position").and_then(|p| p.parse().ok()),
            ) else {
                return Err(Error::BinlogDisabled {
                    addr: conn.addr().to_string(),
                });
            };
            Ok(StartPosition::File {
                file: file.to_string(),
                pos,
            })
        }
        other => Ok(other.clone()),
    }
}

async fn first_binlog(conn: &mut Connection) -> Result<String, Error> {
    let set = conn
        .query(
            "SHOW BINARY LOGS",
            "list the binary logs (SHOW BINARY LOGS)",
        )
        .await?;
    let file = set
        .first("Log_name")
        .ok_or_else(|| Error::BinlogDisabled {
            addr: conn.addr().to_string(),
        })?
        .to_string();
    Ok(file)
}

/// The oldest position a server still has, in words, read on a fresh connection.
async fn oldest_position(opts: &ConnectOptions, mariadb: bool) -> Result<String, Error> {
    let mut conn = Connection::connect(opts).await?;
    let file = first_binlog(&mut conn).await?;
    let mut text = format!("file:{file}:4");
    if mariadb {
        // The GTID_LIST at the start of the oldest file is the GTID state a replica must
        // have reached to start there.
        let sql = format!(
            "SHOW BINLOG EVENTS IN '{}' FROM 4 LIMIT 4",
            file.replace('\'', "''")
        );
        let set = conn
            .query(
                &sql,
                "read the oldest binlog's GTID list (SHOW BINLOG EVENTS)",
            )
            .await?;
        let ty = set
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case("Event_type"));
        let info = set
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case("Info"));
        if let (Some(ty), Some(info)) = (ty, info) {
            for row in &set.rows {
                if row.get(ty).and_then(|v| v.as_deref()) == Some("Gtid_list") {
                    let list = row.get(info).and_then(|v| v.as_deref()).unwrap_or("");
                    let list = list.trim_start_matches('[').trim_end_matches(']');
                    text = format!("{text} (GTID position there: gtid:{list})");
                }
            }
        }
    }
    conn.close().await;
    Ok(text)
}

async fn set_session(
    conn: &mut Connection,
    opts: &ConnectOptions,
    info: &ServerInfo,
    start: &StartPosition,
) -> Result<(), Error> {
    const WHY: &str = "set the replica's session variables";
    let mut sql = vec![
        // The server sends checksums only to replicas that say they can check them.
        "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
    ];
    if !opts.heartbeat.is_zero() {
        sql.push(format!(
            "SET @master_heartbeat_period = {}",
            opts.heartbeat.as_nanos()
        ));
    }
    if info.mariadb {
        sql.push(format!(
            "SET @mariadb_slave_capability = {MARIADB_SLAVE_CAPABILITY}"
        ));
    }
    match start {
        StartPosition::MariaGtid(pos) => {
            if !info.mariadb {
                return Err(Error::Unsupported {
                    addr: info.addr.clone(),
                    detail: format!(
                        "a MariaDB GTID position ({pos}) was given, but the server is {}",
                        info.version
                    ),
                });
            }
            // The text was parsed into numbers and re-printed, so it is safe to inline.
            sql.push(format!("SET @slave_connect_state = '{pos}'"));
            sql.push("SET @slave_gtid_strict_mode = 1".to_string());
            sql.push("SET @slave_gtid_ignore_duplicates = 0".to_string());
        }
        StartPosition::MySqlGtid(set) if info.mariadb => {
            return Err(Error::Unsupported {
                addr: info.addr.clone(),
                detail: format!(
                    "a MySQL GTID set ({set}) was given, but the server is MariaDB {}",
                    info.version
                ),
            });
        }
        _ => {}
    }
    for s in &sql {
        conn.query(s, WHY).await?;
    }
    Ok(())
}

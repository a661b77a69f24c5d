//! The replication client's errors, classified: retry (reconnect and resume) or fatal
//! (configuration, credentials, certificates, server settings, or a position the server
//! no longer has).
//!
//! Server errors are boxed so that `Result<_, Error>` stays small on the event path.

use std::time::Duration;

use crate::protocol::response::ServerError;
use crate::protocol::ProtocolError;

/// Whether reconnecting could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection broke or the server went away: reconnect (with backoff) and resume
    /// from the last committed position.
    Retry,
    /// Reconnecting will fail the same way until someone changes a setting, a grant, a
    /// certificate or the requested position.
    Fatal,
}

/// An error of the replication connection. Messages name the server, the user, the
/// position or the setting involved; never a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid options (URL, TLS files, position text).
    #[error("invalid replication options: {0}")]
    Options(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection failed while doing something.
    #[error("connection to {addr} failed while {during}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// What the client was doing.
        during: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("{addr} closed the connection while {during}")]
    Closed {
        /// `host:port`.
        addr: String,
        /// What the client was doing.
        during: &'static str,
    },
    /// Nothing arrived for longer than allowed (heartbeats included).
    #[error("{addr} sent nothing for {after:?} while {during} (heartbeats included)")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What the client was waiting for.
        during: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The server refused a connection attempt outright (too many connections, host
    /// blocked).
    #[error("{addr} refused the connection: {error}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The server's error.
        error: Box<ServerError>,
    },
    /// The server does not offer TLS but the TLS mode requires it.
    #[error("{addr} does not offer TLS, but tls-mode is {mode}: enable TLS on the server (ssl_cert, ssl_key) or choose tls-mode 'preferred' or 'disabled'")]
    TlsUnavailable {
        /// `host:port`.
        addr: String,
        /// The configured mode.
        mode: &'static str,
    },
    /// The TLS handshake failed (certificate not trusted, wrong host name, version...).
    #[error("TLS with {addr} failed: {problem}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What went wrong, in words (names the certificate problem).
        problem: String,
    },
    /// Wrong user or password (1045), or another login refusal.
    #[error("{addr} refused login of user '{user}' with auth plugin {plugin}: {error}")]
    AccessDenied {
        /// `host:port`.
        addr: String,
        /// The user name.
        user: String,
        /// The auth plugin in use when the server refused.
        plugin: &'static str,
        /// The server's error.
        error: Box<ServerError>,
    },
    /// Authentication could not proceed on the client side.
    #[error("authenticating user '{user}' at {addr}: {source}")]
    Auth {
        /// `host:port`.
        addr: String,
        /// The user name.
        user: String,
        /// What stopped it.
        source: crate::protocol::auth::AuthError,
    },
    /// A privilege is missing (1227 and friends).
    #[error("user '{user}' lacks the {privilege} privilege on {addr} (needed to {needed_for}): GRANT {privilege} ON *.* TO the user. Server said: {error}")]
    MissingPrivilege {
        /// `host:port`.
        addr: String,
        /// The user name.
        user: String,
        /// `REPLICATION SLAVE`, `REPLICATION CLIENT`/`BINLOG MONITOR`, ...
        privilege: String,
        /// What the client tried.
        needed_for: &'static str,
        /// The server's error.
        error: Box<ServerError>,
    },
    /// The binary log is off.
    #[error(
        "{addr} has no binary log (log_bin is OFF): start it with log_bin and binlog_format=ROW"
    )]
    BinlogDisabled {
        /// `host:port`.
        addr: String,
    },
    /// `binlog_format` is not ROW.
    #[error("{addr} has binlog_format={format}; outflow needs ROW (SET GLOBAL binlog_format=ROW and binlog_format=ROW in the server's option file; sessions that are already open keep their old format)")]
    BinlogFormat {
        /// `host:port`.
        addr: String,
        /// The server's `@@global.binlog_format`.
        format: String,
    },
    /// The server_id is the source's own or belongs to another connected replica.
    #[error("server_id {server_id} cannot be used with {addr}: {detail}; choose another with --server-id")]
    ServerIdInUse {
        /// `host:port`.
        addr: String,
        /// The server id this client asked for.
        server_id: u32,
        /// Who has it.
        detail: String,
    },
    /// The server cannot serve the requested position (ERR 1236): usually purged binlogs.
    #[error("{addr} cannot stream from {requested}: {error}. {oldest}")]
    PositionUnavailable {
        /// `host:port`.
        addr: String,
        /// The position asked for.
        requested: String,
        /// What the server still has, in words (the oldest file and GTID state, or why
        /// that could not be read).
        oldest: String,
        /// The server's error.
        error: Box<ServerError>,
    },
    /// The server reported an error not classified above.
    #[error("{addr} returned an error while {during}: {error}")]
    Server {
        /// `host:port`.
        addr: String,
        /// What the client was doing.
        during: &'static str,
        /// The server's error.
        error: Box<ServerError>,
    },
    /// The server broke the protocol.
    #[error("{addr} while {during}: {source}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What the client was doing.
        during: &'static str,
        /// What was malformed.
        source: ProtocolError,
    },
    /// An execute did not match its prepared statement (a caller's mistake; nothing was
    /// sent).
    #[error("{addr}: {source}")]
    Execute {
        /// `host:port`.
        addr: String,
        /// What did not match.
        source: crate::protocol::stmt::ExecuteError,
    },
    /// Something the server said is not what a replica can work with.
    #[error("{addr}: {detail}")]
    Unsupported {
        /// `host:port`.
        addr: String,
        /// What.
        detail: String,
    },
}

/// Server error codes a replica reacts to.
pub mod codes {
    /// `ER_CON_COUNT_ERROR`: too many connections.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// `ER_ACCESS_DENIED_ERROR`.
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_SERVER_SHUTDOWN`.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// `ER_SPECIFIC_ACCESS_DENIED_ERROR`: a privilege is missing.
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    /// `ER_MASTER_FATAL_ERROR_READING_BINLOG`.
    pub const FATAL_READING_BINLOG: u16 = 1236;
    /// `ER_CONNECTION_KILLED` (MariaDB).
    pub const CONNECTION_KILLED: u16 = 1927;
    /// `ER_QUERY_INTERRUPTED`.
    pub const QUERY_INTERRUPTED: u16 = 1317;
    /// `ER_SLAVE_SAME_ID` (MariaDB): another replica registered with this server_id.
    pub const SLAVE_SAME_ID: u16 = 4052;
}

impl Error {
    /// Whether reconnecting could help.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::Timeout { .. } => ErrorClass::Retry,
            Error::Refused { error, .. } if error.code == codes::TOO_MANY_CONNECTIONS => {
                ErrorClass::Retry
            }
            Error::Server { error, .. }
                if matches!(
                    error.code,
                    codes::SERVER_SHUTDOWN | codes::CONNECTION_KILLED | codes::QUERY_INTERRUPTED
                ) =>
            {
                ErrorClass::Retry
            }
            _ => ErrorClass::Fatal,
        }
    }

    /// Shorthand for `class() == ErrorClass::Retry`.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retry
    }
}

/// The privilege a 1227 message asks for ("you need (at least one of) the X privilege(s)").
pub(crate) fn privilege_in_message(message: &str) -> Option<String> {
    let start = message.find("the ")? + 4;
    let rest = &message[start..];
    let end = rest.find(" privilege")?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_names_are_found() {
        assert_eq!(
            privilege_in_message("Access denied; you need (at least one of) the REPLICATION SLAVE privilege(s) for this operation").as_deref(),
            Some("REPLICATION SLAVE")
        );
        assert_eq!(
            privilege_in_message("Access denied; you need (at least one of) the SUPER, BINLOG MONITOR privilege(s) for this operation").as_deref(),
            Some("SUPER, BINLOG MONITOR")
        );
        assert_eq!(privilege_in_message("nothing"), None);
    }

    #[test]
    fn classes() {
        let e = Error::Closed {
            addr: "h:1".into(),
            during: "streaming",
        };
        assert!(e.is_retryable());
        let e = Error::BinlogFormat {
            addr: "h:1".into(),
            format: "STATEMENT".into(),
        };
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert!(e.to_string().contains("binlog_format=STATEMENT"));
    }
}

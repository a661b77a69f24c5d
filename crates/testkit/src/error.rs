//! The one error type of the kit.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, driving or stopping a throwaway server.
///
/// Every variant says where: which command, which data directory or port, and for server
/// start-up failures the tail of the server's error log, because that is almost always where
/// the real reason is.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A program (mariadbd, mariadb, sysbench, ...) could not be started at all.
    #[error("could not run `{program}`: {source}")]
    Spawn {
        /// The program that was being run.
        program: String,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },

    /// A program ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line, without secrets.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its standard output and standard error.
        output: String,
    },

    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "copying template data directory to".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The configuration cannot be rendered into a valid option file.
    #[error("invalid server configuration: {0}")]
    Config(String),

    /// The shared template data directory is unusable.
    #[error("template data directory {}: {reason}", dir.display())]
    Template {
        /// The template directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// mariadbd exited before it accepted connections.
    #[error(
        "mariadbd exited during start-up ({status}); data dir {}; error log tail:\n{log_tail}",
        data_dir.display()
    )]
    ServerExited {
        /// The server's data directory.
        data_dir: PathBuf,
        /// Its exit status.
        status: String,
        /// The last lines of its error log.
        log_tail: String,
    },

    /// mariadbd did not accept connections in time.
    #[error(
        "mariadbd was not ready within {timeout:?}; data dir {}; error log tail:\n{log_tail}",
        data_dir.display()
    )]
    StartTimeout {
        /// The server's data directory.
        data_dir: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The last lines of its error log.
        log_tail: String,
    },

    /// Every TCP port we picked was taken by someone else before mariadbd could bind it.
    #[error(
        "no free TCP port after {attempts} attempts; data dir {}; error log tail:\n{log_tail}",
        data_dir.display()
    )]
    PortRace {
        /// The server's data directory.
        data_dir: PathBuf,
        /// How many ports were tried.
        attempts: u32,
        /// The last lines of its error log.
        log_tail: String,
    },

    /// A graceful shutdown did not finish in time; the server was killed instead.
    #[error(
        "mariadbd (pid {pid}) did not shut down within {timeout:?} and was killed; data dir {}; error log tail:\n{log_tail}",
        data_dir.display()
    )]
    StopTimeout {
        /// The process id.
        pid: u32,
        /// The server's data directory.
        data_dir: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The last lines of its error log.
        log_tail: String,
    },

    /// An operation needs a running server but this one is stopped or killed.
    #[error("mariadbd for data dir {} is not running", data_dir.display())]
    NotRunning {
        /// The server's data directory.
        data_dir: PathBuf,
    },

    /// A SQL statement failed.
    #[error("SQL on port {port} failed: `{sql}`: {source}")]
    Sql {
        /// The server's TCP port, to tell servers apart in multi-server tests.
        port: u16,
        /// The statement, with passwords replaced by `***`.
        sql: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },

    /// A query answered something the kit did not expect.
    #[error("unexpected result on port {port} for `{sql}`: {detail}")]
    UnexpectedResult {
        /// The server's TCP port.
        port: u16,
        /// The statement.
        sql: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// Native replication stopped with an error.
    #[error(
        "replication from port {source_port} to port {replica_port} is broken: \
         IO thread {io_running} (error: {io_error}); SQL thread {sql_running} (error: {sql_error})"
    )]
    ReplicationBroken {
        /// The source server's port.
        source_port: u16,
        /// The replica server's port.
        replica_port: u16,
        /// `Slave_IO_Running`.
        io_running: String,
        /// `Last_IO_Error`.
        io_error: String,
        /// `Slave_SQL_Running`.
        sql_running: String,
        /// `Last_SQL_Error`.
        sql_error: String,
    },

    /// A replica did not catch up with its source in time.
    #[error(
        "replica on port {replica_port} did not catch up with source on port {source_port} \
         within {timeout:?}: source gtid_binlog_pos '{source_pos}', replica gtid_slave_pos \
         '{replica_pos}'; last IO error: {io_error}; last SQL error: {sql_error}"
    )]
    CatchUpTimeout {
        /// The source server's port.
        source_port: u16,
        /// The replica server's port.
        replica_port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The source's `@@gtid_binlog_pos` at the last check.
        source_pos: String,
        /// The replica's `@@gtid_slave_pos` at the last check.
        replica_pos: String,
        /// `Last_IO_Error` at the last check.
        io_error: String,
        /// `Last_SQL_Error` at the last check.
        sql_error: String,
    },

    /// Generating a TLS certificate or key failed.
    #[error("generating the TLS {what} failed: {source}")]
    Tls {
        /// Which certificate or key.
        what: &'static str,
        /// The generator's error.
        #[source]
        source: rcgen::Error,
    },
}

impl KitError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        KitError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

//! Load generation with the system's `sysbench` (1.0.x, MySQL driver).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::template::{SUPERUSER, SUPERUSER_PASSWORD};
use crate::util::{describe, find_program, output_tail, tail_text};
use crate::{KitError, Server};

/// Which bundled sysbench script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `oltp_write_only`: updates, deletes and inserts in transactions.
    OltpWriteOnly,
    /// `oltp_insert`: single-row inserts.
    OltpInsert,
    /// `oltp_read_write`: the classic mix.
    OltpReadWrite,
    /// `bulk_insert`: multi-row inserts, one table per thread (`tables` is ignored).
    BulkInsert,
    /// Any other script name or path accepted by sysbench.
    Script(String),
}

impl Workload {
    fn script(&self) -> &str {
        match self {
            Workload::OltpWriteOnly => "oltp_write_only",
            Workload::OltpInsert => "oltp_insert",
            Workload::OltpReadWrite => "oltp_read_write",
            Workload::BulkInsert => "bulk_insert",
            Workload::Script(name) => name,
        }
    }
}

/// How sysbench reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysbenchConnection {
    /// Unix socket as `root` (default; works with `require_secure_transport`).
    Socket,
    /// TCP on 127.0.0.1 as the kit's superuser, without TLS.
    Tcp,
}

/// A sysbench invocation: `prepare` creates and fills the tables, `run` generates load,
/// `cleanup` drops the tables. Each returns sysbench's standard output.
///
/// ```no_run
/// # fn demo(server: &outflow_testkit::Server) -> Result<(), outflow_testkit::KitError> {
/// use outflow_testkit::{Sysbench, Workload};
/// let bench = Sysbench::new(Workload::OltpWriteOnly).tables(2).table_size(1000).events(500);
/// bench.prepare(server)?;
/// let report = bench.run(server)?;
/// assert!(report.contains("transactions:"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sysbench {
    /// The script.
    pub workload: Workload,
    /// `--tables` (default 1).
    pub tables: u32,
    /// `--table-size` in rows (default 1000).
    pub table_size: u64,
    /// `--threads` (default 1).
    pub threads: u32,
    /// `--time`; `None` means no time limit when `events` is set (default `None`).
    pub time: Option<Duration>,
    /// `--events`; the run stops after this many transactions (default 1000).
    pub events: Option<u64>,
    /// `--mysql-db`, created if missing (default `sbtest`).
    pub db: String,
    /// Socket or TCP (default socket).
    pub connection: SysbenchConnection,
    /// `--rand-seed` for reproducible runs (default 1).
    pub rand_seed: u64,
    /// Passed through verbatim, e.g. `--auto_inc=off`.
    pub extra_args: Vec<String>,
}

impl Default for Sysbench {
    fn default() -> Self {
        Sysbench::new(Workload::OltpWriteOnly)
    }
}

impl Sysbench {
    /// Small, quick defaults for the given workload.
    pub fn new(workload: Workload) -> Self {
        Sysbench {
            workload,
            tables: 1,
            table_size: 1000,
            threads: 1,
            time: None,
            events: Some(1000),
            db: "sbtest".to_string(),
            connection: SysbenchConnection::Socket,
            rand_seed: 1,
            extra_args: Vec::new(),
        }
    }

    /// Sets `--tables`.
    pub fn tables(mut self, tables: u32) -> Self {
        self.tables = tables;
        self
    }

    /// Sets `--table-size`.
    pub fn table_size(mut self, rows: u64) -> Self {
        self.table_size = rows;
        self
    }

    /// Sets `--threads`.
    pub fn threads(mut self, threads: u32) -> Self {
        self.threads = threads;
        self
    }

    /// Limits the run by time (whole seconds, at least 1).
    pub fn time(mut self, time: Duration) -> Self {
        self.time = Some(time);
        self
    }

    /// Limits the run by number of events.
    pub fn events(mut self, events: u64) -> Self {
        self.events = Some(events);
        self
    }

    /// Sets the database.
    pub fn db(mut self, db: impl Into<String>) -> Self {
        self.db = db.into();
        self
    }

    /// Chooses socket or TCP.
    pub fn connection(mut self, connection: SysbenchConnection) -> Self {
        self.connection = connection;
        self
    }

    /// Adds a verbatim argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Creates the database if needed, then runs `sysbench ... prepare`.
    pub fn prepare(&self, server: &Server) -> Result<String, KitError> {
        let db = self.db.replace('`', "``");
        server.run_sql_script(&format!("CREATE DATABASE IF NOT EXISTS `{db}`;"))?;
        self.command(server, "prepare")
    }

    /// Runs `sysbench ... run`.
    pub fn run(&self, server: &Server) -> Result<String, KitError> {
        self.command(server, "run")
    }

    /// Runs `sysbench ... cleanup`.
    pub fn cleanup(&self, server: &Server) -> Result<String, KitError> {
        self.command(server, "cleanup")
    }

    /// The arguments for one sysbench command, without the program name.
    pub fn args(&self, server: &Server, command: &str) -> Vec<String> {
        let mut args = vec![
            self.workload.script().to_string(),
            "--db-driver=mysql".to_string(),
            format!("--mysql-db={}", self.db),
            format!("--tables={}", self.tables),
            format!("--table-size={}", self.table_size),
            format!("--threads={}", self.threads),
            format!("--rand-seed={}", self.rand_seed),
        ];
        match self.connection {
            SysbenchConnection::Socket => {
                args.push(format!("--mysql-socket={}", server.socket_path().display()));
                args.push("--mysql-user=root".to_string());
            }
            SysbenchConnection::Tcp => {
                args.push("--mysql-host=127.0.0.1".to_string());
                args.push(format!("--mysql-port={}", server.port()));
                args.push(format!("--mysql-user={SUPERUSER}"));
                args.push(format!("--mysql-password={SUPERUSER_PASSWORD}"));
            }
        }
        if let Some(events) = self.events {
            args.push(format!("--events={events}"));
        }
        match (self.time, self.events) {
            (Some(time), _) => args.push(format!("--time={}", time.as_secs().max(1))),
            // sysbench's default is 10 s; with an event limit, let the events decide.
            (None, Some(_)) => args.push("--time=0".to_string()),
            (None, None) => {}
        }
        args.extend(self.extra_args.iter().cloned());
        args.push(command.to_string());
        args
    }

    fn command(&self, server: &Server, command: &str) -> Result<String, KitError> {
        let mut cmd = Command::new(find_program("sysbench"));
        cmd.args(self.args(server, command)).stdin(Stdio::null());
        let output = cmd.output().map_err(|source| KitError::Spawn {
            program: describe(&cmd),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // sysbench 1.0 exits 0 on some SQL errors in `run` but prints FATAL; treat that as failure.
        let fatal =
            stdout.contains("FATAL:") || String::from_utf8_lossy(&output.stderr).contains("FATAL:");
        if output.status.success() && !fatal {
            return Ok(stdout);
        }
        let shown = describe(&cmd).replace(
            &format!("--mysql-password={SUPERUSER_PASSWORD}"),
            "--mysql-password=***",
        );
        Err(KitError::Command {
            command: tail_text(&shown, 2000),
            status: output.status.to_string(),
            output: output_tail(&output),
        })
    }
}

//! Throwaway `mariadbd` servers for outflow's integration tests, benches and demo.
//!
//! What it does:
//! - [`Server::start`] runs the system's `mariadbd` (Debian package `mariadb-server`) on a copy
//!   of a template data directory, on a free port of 127.0.0.1 and a private unix socket, with
//!   a ROW binlog in `<datadir>/binlog.*` by default. Dropping the [`Server`] kills the process
//!   and removes its files, also when the test panics.
//! - [`ServerConfig`] has typed setters for the settings that matter to change data capture
//!   (binlog format, row image and metadata, compression, GTID domain, server id, replication
//!   threads, ...) and `.option(key, value)` for anything else.
//! - Helpers: SQL over mysql_async ([`Server::exec`], [`Server::query_scalar`]), scripts
//!   through the `mariadb` client ([`Server::run_sql_script`]), binlog files and positions,
//!   users with `mysql_native_password` or `ed25519` ([`Server::create_user`]), native GTID
//!   replication ([`replicate`], [`wait_caught_up`]), TLS certificates ([`TlsFiles`]) and
//!   sysbench workloads ([`Sysbench`]).
//!
//! What it leaves to others: it knows nothing about outflow itself and never starts MySQL
//! (only MariaDB); installing the packages is `scripts/setup.sh`'s job.
//!
//! Speed: the template (`mariadb-install-db` plus the kit's superuser, about 1 s) is built
//! once per machine, MariaDB build and [`TEMPLATE_VERSION`], in the system temp dir, and
//! shared by all test processes. After that, measured on the 2-core development machine with
//! MariaDB 10.11.19 (test `start_time_is_well_under_three_seconds`): `Server::start` returns a
//! server that accepts connections in 0.17–0.22 s, including the copy of the 34 MB template
//! data directory.
//!
//! Credentials: TCP clients use [`SUPERUSER`]/[`SUPERUSER_PASSWORD`] (`outflow`/`outflow`,
//! all privileges with grant option); the kit itself uses `root` over the unix socket.
//!
//! Environment: `OUTFLOW_TESTKIT_KEEP=1` keeps server files after drop;
//! `OUTFLOW_TESTKIT_MARIADBD`, `OUTFLOW_TESTKIT_MARIADB`, `OUTFLOW_TESTKIT_MARIADB_INSTALL_DB`
//! and `OUTFLOW_TESTKIT_SYSBENCH` override the programs' paths.
//!
//! ```no_run
//! # async fn demo() -> Result<(), outflow_testkit::KitError> {
//! use outflow_testkit::{Server, ServerConfig};
//! let server = Server::start(ServerConfig::new().gtid_domain_id(1))?;
//! server.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)").await?;
//! server.exec("INSERT INTO app.t VALUES (1), (2)").await?;
//! let rows: i64 = server.query_scalar("SELECT COUNT(*) FROM app.t").await?;
//! assert_eq!(rows, 2);
//! println!("binlogs: {:?}", server.binlog_files()?);
//! # Ok(()) }
//! ```

mod config;
mod error;
mod replication;
mod server;
mod sysbench;
mod template;
mod tls;
mod users;
mod util;

pub use config::{
    BinlogChecksum, BinlogFormat, ParallelMode, RowImage, RowMetadata, ServerConfig,
    BINLOG_BASENAME,
};
pub use error::KitError;
pub use replication::{
    bytes_sent, global_status, gtid_pos_covers, io_thread_bytes, parse_gtid_pos, replicate,
    wait_caught_up, ReplicationOpts, SlaveStatus, UseGtid,
};
pub use server::{BinlogPosition, Server};
pub use sysbench::{Sysbench, SysbenchConnection, Workload};
pub use template::{SUPERUSER, SUPERUSER_PASSWORD, TEMPLATE_VERSION};
pub use tls::TlsFiles;
pub use users::{AuthPlugin, UserSpec};

/// The driver version whose `Opts`, `Conn` and `Pool` the kit hands out, so tests can name
/// those types without depending on a matching version themselves.
pub use mysql_async;

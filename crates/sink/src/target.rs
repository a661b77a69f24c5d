//! The applier's sessions on the target, over `outflow-replication`'s client rather than
//! mysql_async.
//!
//! Why our own client: prepared statements pay in the applier's shape only when a
//! transaction's executes go to the target several to a write, which mysql_async cannot do
//! (`cargo bench --bench statements`; module `apply`, "Statements as text"). The applier
//! needs little of a driver besides: statements without rows, several `;`-separated
//! statements in one query read result by result, and a few small text result sets
//! (checkpoint, catalog, `XA RECOVER`, probes).
//!
//! The connection options keep mysql_async's type, which parses the target URL (with its
//! TLS parameters), so that callers and the configuration are unchanged.

use std::collections::HashMap;
use std::time::Duration;

use outflow_replication::protocol::response::{ResultSet, ServerError};
use outflow_replication::protocol::stmt::{OkPacket, Param, Prepared};
use outflow_replication::{ConnectOptions, Connection, QueryResult, TlsMode, TlsOptions};

/// An error of a target session.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The connection failed or could not be made (login, TLS, I/O, protocol).
    #[error(transparent)]
    Client(#[from] outflow_replication::Error),
    /// The server refused a statement.
    #[error("{0}")]
    Server(Box<ServerError>),
    /// A result did not have the shape its statement gives.
    #[error("unexpected result: {0}")]
    Unexpected(String),
    /// The applier's own connection state (a lane without its connection, an apply that
    /// was interrupted).
    #[error("{0}")]
    State(&'static str),
}

impl TargetError {
    /// The server's error number, if the server refused something.
    pub fn code(&self) -> Option<u16> {
        match self {
            TargetError::Server(e) => Some(e.code),
            TargetError::Client(
                outflow_replication::Error::Server { error, .. }
                | outflow_replication::Error::MissingPrivilege { error, .. },
            ) => Some(error.code),
            _ => None,
        }
    }
}

/// Rows of a text result set; `None` is SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// One result of a query, read with [`Session::next`].
#[derive(Debug)]
pub enum Reply {
    /// A statement without rows: its counts.
    Done(OkPacket),
    /// A statement's rows.
    Rows(ResultSet),
}

/// One connection to the target.
pub struct Session {
    conn: Connection,
    /// Statements prepared on this connection, by what the caller says they are.
    statements: HashMap<Vec<u64>, Prepared>,
    /// Prepared statements no longer wanted, closed before the next prepare.
    stale: Vec<u32>,
}

/// Statements kept prepared on one connection before all are closed: the server's
/// `max_prepared_stmt_count` (16,382 by default) counts every connection's.
const MAX_STATEMENTS: usize = 512;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.fmt(f)
    }
}

const DURING: &str = "applying";

impl Session {
    /// Connects with `CLIENT_FOUND_ROWS` (an update counts the rows it found) and
    /// multi-statement queries.
    pub async fn open(opts: &ConnectOptions) -> Result<Session, TargetError> {
        let mut opts = opts.clone();
        opts.found_rows = true;
        opts.multi_statements = true;
        // A statement may run for long (DDL, lock waits): no read timeout, as with a driver.
        opts.heartbeat = Duration::ZERO;
        opts.read_timeout = None;
        Ok(Session {
            conn: Connection::connect(&opts).await?,
            statements: HashMap::new(),
            stale: Vec::new(),
        })
    }

    /// The server's id of this connection (`CONNECTION_ID()`, what `KILL` takes).
    pub fn id(&self) -> u32 {
        self.conn.greeting().connection_id
    }

    /// Sends `sql` (one or several `;`-separated statements); read the results with
    /// [`Session::next`] until it returns `None`.
    pub async fn send(&mut self, sql: &[u8]) -> Result<(), TargetError> {
        Ok(self.conn.send_query(sql, DURING).await?)
    }

    /// The next result of the query sent: a refused statement is
    /// [`TargetError::Server`], after which the query has no more results.
    pub async fn next(&mut self) -> Result<Option<Reply>, TargetError> {
        match self.conn.next_result(DURING).await? {
            None => Ok(None),
            Some(QueryResult::Done(ok)) => Ok(Some(Reply::Done(ok))),
            Some(QueryResult::Rows(set)) => Ok(Some(Reply::Rows(set))),
            Some(QueryResult::Failed(e)) => Err(TargetError::Server(Box::new(e))),
        }
    }

    /// Reads the results left of the query sent, whatever they are (after a failure, to
    /// make the connection usable again); stops at a connection failure.
    pub async fn skip_rest(&mut self) -> Result<(), TargetError> {
        loop {
            match self.next().await {
                Ok(Some(_)) | Err(TargetError::Server(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `sql` (one statement or several) and returns the counts of the first
    /// statement; a later statement's error is returned as well.
    pub async fn run(&mut self, sql: impl AsRef<[u8]>) -> Result<OkPacket, TargetError> {
        self.send(sql.as_ref()).await?;
        let first = match self.next().await? {
            Some(Reply::Done(ok)) => ok,
            Some(Reply::Rows(_)) | None => OkPacket {
                affected_rows: 0,
                last_insert_id: 0,
                status: 0,
                warnings: 0,
                info: String::new(),
            },
        };
        while self.next().await?.is_some() {}
        Ok(first)
    }

    /// Runs a query and returns the rows of its (first) result set.
    pub async fn rows(&mut self, sql: impl AsRef<[u8]>) -> Result<Rows, TargetError> {
        self.send(sql.as_ref()).await?;
        let rows = match self.next().await? {
            Some(Reply::Rows(set)) => set.rows,
            Some(Reply::Done(_)) | None => Vec::new(),
        };
        while self.next().await?.is_some() {}
        Ok(rows)
    }

    /// The statement prepared as `ident`, if there is one.
    pub fn prepared(&self, ident: &[u64]) -> Option<Prepared> {
        self.statements.get(ident).copied()
    }

    /// Prepares `sql` and keeps it as `ident` (which names what the text says). Nothing
    /// may be queued or awaiting a reply.
    pub async fn prepare(&mut self, ident: &[u64], sql: &[u8]) -> Result<Prepared, TargetError> {
        const DURING: &str = "preparing a statement";
        if self.statements.len() >= MAX_STATEMENTS {
            self.forget_statements();
        }
        for id in std::mem::take(&mut self.stale) {
            self.conn.close_statement(id).await?;
        }
        let st = self.conn.prepare(sql, DURING).await?;
        if let Some(old) = self.statements.insert(ident.to_vec(), st) {
            self.stale.push(old.id);
        }
        Ok(st)
    }

    /// Drops every prepared statement (the table plans they were made from changed).
    pub fn forget_statements(&mut self) {
        self.stale
            .extend(self.statements.drain().map(|(_, st)| st.id));
    }

    /// Queues an execute of `st` (see [`Connection::queue_execute`]); read its reply with
    /// [`Session::read_reply`].
    pub fn queue_execute<'a>(
        &mut self,
        st: &Prepared,
        params: impl IntoIterator<Item = Param<'a>>,
    ) -> Result<(), TargetError> {
        Ok(self.conn.queue_execute(st, params)?)
    }

    /// Queues a statement without rows; read its reply with [`Session::read_reply`].
    pub fn queue_query(&mut self, sql: &[u8]) {
        self.conn.queue_query(sql);
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> Result<(), TargetError> {
        Ok(self.conn.flush_queue(DURING).await?)
    }

    /// Bytes queued and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.conn.queued_bytes()
    }

    /// Commands queued or sent whose replies are not read.
    pub fn awaiting(&self) -> usize {
        self.conn.awaiting_replies()
    }

    /// The reply to the oldest queued command: its counts, or the server's refusal (the
    /// connection stays usable).
    pub async fn read_reply(&mut self) -> Result<Result<OkPacket, ServerError>, TargetError> {
        Ok(self.conn.read_reply(DURING).await?)
    }

    /// Says goodbye and closes.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// The value at `i` of `row`, parsed (`None` for NULL); an error names what was read.
pub fn value<T: std::str::FromStr>(
    row: &[Option<String>],
    i: usize,
    what: &str,
) -> Result<Option<T>, TargetError> {
    let Some(v) = row.get(i) else {
        return Err(TargetError::Unexpected(format!(
            "{what}: a row of {} columns, column {} needed",
            row.len(),
            i + 1
        )));
    };
    v.as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                TargetError::Unexpected(format!("{what}: column {} is not a number", i + 1))
            })
        })
        .transpose()
}

/// The connection options for the target described by mysql_async's `opts` (host, port,
/// user, password and TLS; no TLS when it has none, as mysql_async).
pub fn options_of(opts: &mysql_async::Opts) -> Result<ConnectOptions, String> {
    let mut o = ConnectOptions::new(
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.user().unwrap_or_default(),
        opts.pass().unwrap_or_default(),
    );
    o.tls = match opts.ssl_opts() {
        None => TlsOptions {
            mode: TlsMode::Disabled,
            ..TlsOptions::default()
        },
        Some(ssl) => {
            // What the target URL's parameters can say (`require_ssl`, `verify_ca`,
            // `verify_identity`); certificate files given in code are not carried over.
            if !ssl.root_certs().is_empty() || ssl.client_identity().is_some() {
                return Err("TLS to the target takes its settings from the URL only \
                            (require_ssl, verify_ca, verify_identity; the system's roots)"
                    .to_string());
            }
            let mode = if ssl.accept_invalid_certs() {
                TlsMode::Required
            } else if ssl.skip_domain_validation() {
                TlsMode::VerifyCa
            } else {
                TlsMode::VerifyIdentity
            };
            TlsOptions {
                mode,
                ..TlsOptions::default()
            }
        }
    };
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(url: &str) -> Result<ConnectOptions, String> {
        options_of(&mysql_async::Opts::from_url(url).expect("URL"))
    }

    #[test]
    fn url_options_carry_over() {
        let o = of("mysql://app:s%40cret@db.example:3307/x").expect("options");
        assert_eq!(
            (
                o.host.as_str(),
                o.port,
                o.user.as_str(),
                o.password.0.as_str()
            ),
            ("db.example", 3307, "app", "s@cret")
        );
        assert_eq!(o.tls.mode, TlsMode::Disabled);
        let mode = |url| of(url).expect("options").tls.mode;
        assert_eq!(
            mode("mysql://u@h/?require_ssl=true"),
            TlsMode::VerifyIdentity
        );
        assert_eq!(
            mode("mysql://u@h/?require_ssl=true&verify_identity=false"),
            TlsMode::VerifyCa
        );
        assert_eq!(
            mode("mysql://u@h/?require_ssl=true&verify_ca=false"),
            TlsMode::Required
        );
    }

    #[test]
    fn certificates_given_in_code_are_refused_by_name() {
        let ssl = mysql_async::SslOpts::default()
            .with_root_certs(vec![std::path::PathBuf::from("ca.pem").into()]);
        let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
            .ssl_opts(Some(ssl))
            .into();
        let e = options_of(&opts).expect_err("refused");
        assert!(e.contains("from the URL only"), "{e}");
    }

    #[test]
    fn values_parse_or_name_the_column() {
        let row = vec![Some("42".to_string()), None, Some("x".to_string())];
        assert_eq!(value::<u64>(&row, 0, "t").unwrap(), Some(42));
        assert_eq!(value::<u64>(&row, 1, "t").unwrap(), None);
        let e = value::<u64>(&row, 2, "t").unwrap_err().to_string();
        assert!(e.contains("column 3"), "{e}");
        let e = value::<u64>(&row, 5, "t").unwrap_err().to_string();
        assert!(e.contains("3 columns"), "{e}");
    }
}

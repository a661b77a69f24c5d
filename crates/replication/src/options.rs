//! Connection options: the source URL, the replica's identity, TLS and timeouts.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// TLS modes, named and behaving like the mysql clients' `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS.
    Disabled,
    /// TLS when the server offers it, without certificate verification; plain otherwise.
    Preferred,
    /// TLS or fail, without certificate verification.
    Required,
    /// TLS, and the certificate must chain to a trusted CA (any host name).
    VerifyCa,
    /// TLS, a trusted certificate, and one valid for the host name (the default).
    #[default]
    VerifyIdentity,
}

impl TlsMode {
    /// The mode's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        }
    }

    /// Whether a connection without TLS is acceptable.
    pub fn allows_plain(self) -> bool {
        matches!(self, TlsMode::Disabled | TlsMode::Preferred)
    }
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "disabled" => TlsMode::Disabled,
            "preferred" => TlsMode::Preferred,
            "required" => TlsMode::Required,
            "verify_ca" => TlsMode::VerifyCa,
            "verify_identity" => TlsMode::VerifyIdentity,
            _ => {
                return Err(format!(
                "unknown TLS mode '{s}' (disabled, preferred, required, verify_ca, verify_identity)"
            ))
            }
        })
    }
}

/// TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The mode (default `verify_identity`).
    pub mode: TlsMode,
    /// PEM file of CA certificates to trust; default: the webpki root store.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require X509.
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
    /// Refuse TLS versions before 1.3.
    pub require_tls13: bool,
}

/// A password that never appears in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Everything needed to connect as a replica.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (default 3306).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Password,
    /// The replica's `server_id`: unique among the source's replicas and different from the
    /// source's own (default 1001).
    pub server_id: u32,
    /// TLS settings.
    pub tls: TlsOptions,
    /// Heartbeat period the server should keep while idle (default 5 s; zero: none).
    pub heartbeat: Duration,
    /// How long a read may wait for a byte; default: two heartbeat periods (what the
    /// `heartbeat` setting of the configuration documents), or none without heartbeats.
    pub read_timeout: Option<Duration>,
    /// TCP connect and login timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Largest event accepted (default: the binlog decoder's limit, about 1 GiB).
    pub max_event: usize,
    /// End the stream at the current end of the binlog instead of waiting for more.
    pub non_blocking: bool,
    /// MariaDB: also stream ANNOTATE_ROWS events (the statement text before its row
    /// events). Off by default: change capture does not need them, and a workload of small
    /// transactions has one per row event.
    pub annotate_rows: bool,
    /// Host name shown by `SHOW SLAVE HOSTS` (default: `outflow`).
    pub report_host: String,
    /// `CLIENT_FOUND_ROWS`: an UPDATE reports the rows it found, not only those it changed
    /// (default off; an applier checks counts with it).
    pub found_rows: bool,
    /// `CLIENT_MULTI_STATEMENTS`: one query may hold several `;`-separated statements,
    /// read with [`crate::Connection::next_result`] (default off).
    pub multi_statements: bool,
}

impl ConnectOptions {
    /// Options for `host:port` as `user` with defaults for the rest.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            user: user.into(),
            password: Password(password.into()),
            server_id: 1001,
            tls: TlsOptions::default(),
            heartbeat: Duration::from_secs(5),
            read_timeout: None,
            connect_timeout: Duration::from_secs(10),
            max_event: outflow_binlog::stream::DEFAULT_MAX_EVENT,
            non_blocking: false,
            annotate_rows: false,
            report_host: "outflow".to_string(),
            found_rows: false,
            multi_statements: false,
        }
    }

    /// Parses `mysql://user:password@host:port` (password and port optional; `%XX` escapes
    /// allowed in user and password; brackets around IPv6 addresses).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Options(format!(
                "source URL: {why} (expected mysql://user:password@host:port)"
            ))
        };
        let rest = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
            .ok_or_else(|| bad("it does not start with mysql://"))?;
        let (auth, hostport) = rest.rsplit_once('@').ok_or_else(|| bad("no user@"))?;
        // A database path (`/db`) means nothing to a replica.
        let hostport = hostport.split('/').next().unwrap_or_default();
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (u, p),
            None => (auth, ""),
        };
        let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
        let password =
            percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
        if user.is_empty() {
            return Err(bad("empty user"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| bad(&format!("port '{p}' is not a number")))?,
            None => 3306,
        };
        Ok(ConnectOptions::new(host, port, user, password))
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The read timeout in force.
    pub fn effective_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
            .or_else(|| (!self.heartbeat.is_zero()).then(|| self.heartbeat * 2))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = ConnectOptions::from_url("mysql://repl:p%40ss:w@db.example:3307").unwrap();
        assert_eq!((o.user.as_str(), o.password.0.as_str()), ("repl", "p@ss:w"));
        assert_eq!((o.host.as_str(), o.port), ("db.example", 3307));
        let o = ConnectOptions::from_url("mysql://u@[::1]/app").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.addr().as_str()),
            ("::1", 3306, "[::1]:3306")
        );
        for bad in [
            "http://u@h",
            "mysql://h:1",
            "mysql://u@h:x",
            "mysql://:p@h",
            "mysql://u@",
        ] {
            assert!(ConnectOptions::from_url(bad).is_err(), "{bad}");
        }
        let o = ConnectOptions::from_url("mysql://u:secret@h").unwrap();
        assert!(!format!("{o:?}").contains("secret"));
    }

    #[test]
    fn tls_modes() {
        assert_eq!("VERIFY-CA".parse::<TlsMode>().unwrap(), TlsMode::VerifyCa);
        assert_eq!(TlsMode::default(), TlsMode::VerifyIdentity);
        assert!("verify".parse::<TlsMode>().is_err());
    }
}

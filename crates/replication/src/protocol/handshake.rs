//! The connection phase: the server's v10 greeting, the client's SSL request and
//! handshake response.

use outflow_binlog::bytes::Reader;

use super::response::{parse_err, ServerError};
use super::{put_lenenc, take_nul_str, ProtocolError};

/// Capability flags (the subset a replication client uses or must recognise).
pub mod caps {
    /// New, longer password hashing.
    pub const LONG_PASSWORD: u32 = 1;
    /// Affected rows of an UPDATE count the rows found, changed or not.
    pub const FOUND_ROWS: u32 = 2;
    /// Longer column flags.
    pub const LONG_FLAG: u32 = 4;
    /// The 4.1 protocol.
    pub const PROTOCOL_41: u32 = 0x200;
    /// TLS after an SSL request.
    pub const SSL: u32 = 0x800;
    /// Transaction status in OK packets.
    pub const TRANSACTIONS: u32 = 0x2000;
    /// Length-prefixed auth data in the handshake response.
    pub const SECURE_CONNECTION: u32 = 0x8000;
    /// Several `;`-separated statements in one query.
    pub const MULTI_STATEMENTS: u32 = 0x1_0000;
    /// Multiple result sets.
    pub const MULTI_RESULTS: u32 = 0x2_0000;
    /// Pluggable authentication.
    pub const PLUGIN_AUTH: u32 = 0x8_0000;
    /// Auth data longer than 255 bytes (length-encoded).
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
}

/// The capabilities this client asks for (TLS is added when used).
pub const CLIENT_CAPS: u32 = caps::LONG_PASSWORD
    | caps::LONG_FLAG
    | caps::PROTOCOL_41
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::MULTI_RESULTS
    | caps::PLUGIN_AUTH
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The capabilities without which this client cannot talk to a server.
pub const REQUIRED_CAPS: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;

/// `utf8mb4_general_ci`: a collation every supported server has.
pub const CHARSET_UTF8MB4: u8 = 45;

/// The largest packet this client says it accepts. Replication ignores it (the dump thread
/// sends events of any size), so it only bounds query results.
pub const CLIENT_MAX_PACKET: u32 = 1 << 30;

/// The server's initial handshake (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Server version, e.g. `10.11.6-MariaDB-log` or `8.0.36`.
    pub server_version: String,
    /// The connection id (`CONNECTION_ID()`).
    pub connection_id: u32,
    /// Capability flags (lower and upper 16 bits).
    pub capabilities: u32,
    /// The server's default collation id.
    pub charset: u8,
    /// The auth nonce (20 bytes for every current server).
    pub scramble: Vec<u8>,
    /// The default auth plugin's name, e.g. `mysql_native_password`.
    pub auth_plugin: String,
}

impl Greeting {
    /// Whether the server is MariaDB (its version string says so).
    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }

    /// Whether the server offers TLS.
    pub fn supports_tls(&self) -> bool {
        self.capabilities & caps::SSL != 0
    }
}

/// What the server's first packet was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    /// A v10 handshake.
    Greeting(Greeting),
    /// The server refused the connection (too many connections, host blocked...).
    Refused(ServerError),
}

/// Parses the server's first packet.
pub fn parse_greeting(payload: &[u8]) -> Result<FirstPacket, ProtocolError> {
    const WHAT: &str = "initial handshake";
    let sh = ProtocolError::short(WHAT);
    let mut r = Reader::new(payload);
    let version = r.u8().map_err(&sh)?;
    if version == 0xFF {
        return Ok(FirstPacket::Refused(parse_err(payload)?));
    }
    if version != 10 {
        return Err(ProtocolError::new(
            WHAT,
            format!("protocol version {version}, only 10 is supported"),
        ));
    }
    let server_version = String::from_utf8_lossy(take_nul_str(&mut r)).into_owned();
    let connection_id = r.u32().map_err(&sh)?;
    let mut scramble = r.take(8).map_err(&sh)?.to_vec();
    r.skip(1).map_err(&sh)?;
    let mut capabilities = u32::from(r.u16().map_err(&sh)?);
    let mut charset = CHARSET_UTF8MB4;
    let mut auth_plugin = String::new();
    if r.remaining() > 0 {
        charset = r.u8().map_err(&sh)?;
        let _status = r.u16().map_err(&sh)?;
        capabilities |= u32::from(r.u16().map_err(&sh)?) << 16;
        let data_len = usize::from(r.u8().map_err(&sh)?);
        // Six reserved bytes and four of MariaDB's extended capabilities.
        r.skip(10).map_err(&sh)?;
        if capabilities & caps::SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13);
            let part2 = r.take(n.min(r.remaining())).map_err(&sh)?;
            // The second part ends with a NUL that is not part of the nonce.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
        }
        if capabilities & caps::PLUGIN_AUTH != 0 {
            auth_plugin = String::from_utf8_lossy(take_nul_str(&mut r)).into_owned();
        }
    }
    Ok(FirstPacket::Greeting(Greeting {
        server_version,
        connection_id,
        capabilities,
        charset,
        scramble,
        auth_plugin,
    }))
}

/// The SSL request: the first 32 bytes of a handshake response, sent before TLS starts.
pub fn ssl_request(capabilities: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&(capabilities | caps::SSL).to_le_bytes());
    out.extend_from_slice(&CLIENT_MAX_PACKET.to_le_bytes());
    out.push(CHARSET_UTF8MB4);
    out.extend_from_slice(&[0; 23]);
    out
}

/// The handshake response (protocol 4.1).
pub fn handshake_response(
    capabilities: u32,
    user: &str,
    auth_response: &[u8],
    auth_plugin: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + user.len() + auth_response.len());
    out.extend_from_slice(&capabilities.to_le_bytes());
    out.extend_from_slice(&CLIENT_MAX_PACKET.to_le_bytes());
    out.push(CHARSET_UTF8MB4);
    out.extend_from_slice(&[0; 23]);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    put_lenenc(&mut out, auth_response.len() as u64);
    out.extend_from_slice(auth_response);
    out.extend_from_slice(auth_plugin.as_bytes());
    out.push(0);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting as captured from a test kit server (nonce replaced).
    pub(crate) fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1-log\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&0xF7FEu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81BFu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[0x1D, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn parses_mariadb_greeting() {
        let FirstPacket::Greeting(g) = parse_greeting(&mariadb_greeting()).unwrap() else {
            panic!("not a greeting")
        };
        assert!(g.is_mariadb());
        assert_eq!(g.connection_id, 42);
        assert_eq!(g.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(g.auth_plugin, "mysql_native_password");
        // 0xF7FE: a server without ssl_cert, so no SSL capability (0x800).
        assert!(!g.supports_tls());
        assert_eq!(g.capabilities & REQUIRED_CAPS, REQUIRED_CAPS);
    }

    #[test]
    fn refused_connection_is_a_server_error() {
        let mut p = vec![0xFF];
        p.extend_from_slice(&1040u16.to_le_bytes());
        p.extend_from_slice(b"Too many connections");
        let FirstPacket::Refused(e) = parse_greeting(&p).unwrap() else {
            panic!("not refused")
        };
        assert_eq!(e.code, 1040);
        assert_eq!(e.message, "Too many connections");
    }

    #[test]
    fn truncated_greetings_are_errors_not_panics() {
        let full = mariadb_greeting();
        for n in 0..full.len() {
            let _ = parse_greeting(&full[..n]);
        }
        assert!(parse_greeting(&[9, 0]).is_err());
    }

    #[test]
    fn response_layout() {
        let r = handshake_response(CLIENT_CAPS, "repl", &[1, 2, 3], "mysql_native_password");
        assert_eq!(&r[..4], &CLIENT_CAPS.to_le_bytes());
        assert_eq!(r[8], CHARSET_UTF8MB4);
        assert_eq!(&r[32..37], b"repl\0");
        assert_eq!(&r[37..41], &[3, 1, 2, 3]);
        assert_eq!(&r[41..], b"mysql_native_password\0");
        assert_eq!(ssl_request(CLIENT_CAPS).len(), 32);
    }
}

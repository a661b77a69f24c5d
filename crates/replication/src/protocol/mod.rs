//! The client/server protocol as pure functions over bytes: no sockets, no clock.
//!
//! # Design note
//!
//! Wire layout (MySQL client/server protocol, shared by MariaDB):
//! - Every message travels in packets of `length u24 | sequence u8 | payload` ([`packet`]).
//!   A command starts a new sequence at 0; replies count on from the request. A payload of
//!   `0xFF_FFFF` bytes or more continues in the next packet, so binlog events of 16 MiB and
//!   more arrive in several packets and are reassembled here.
//! - Connection phase ([`handshake`], [`auth`]): the server greets with a v10 handshake
//!   (version, capabilities, a 20-byte nonce, its default auth plugin); the client answers,
//!   first with an SSL request if it wants TLS (the TLS handshake then runs on the same
//!   socket and the packet sequence continues inside it), then with a handshake response
//!   naming the user and the plugin's first answer. The server may switch plugins
//!   (`0xFE`), send plugin data (`0x01`), and ends with OK (`0x00`) or ERR (`0xFF`).
//! - Command phase ([`command`], [`response`]): `COM_QUERY` for the session variables a
//!   replica sets, `COM_REGISTER_SLAVE`, then `COM_BINLOG_DUMP` or `COM_BINLOG_DUMP_GTID`.
//!   After a dump command every payload is `0x00` + one binlog event, `0xFF` + an error, or
//!   an EOF (`0xFE`, shorter than 9 bytes) when a non-blocking dump reaches the end.
//!
//! Invariants: parsers take `&[u8]` from the peer and never panic on it (there is a fuzz
//! target for them); every length is checked through [`outflow_binlog::bytes::Reader`].
//! Recovery: the protocol has no resynchronisation point, so any framing or sequence
//! error ends the connection; the caller reconnects from its last committed position.

pub mod auth;
pub mod command;
pub mod gtid;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod stmt;

use outflow_binlog::bytes::{Packed, Reader, Short};

/// Bytes from the server that do not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} from the server: {detail}")]
pub struct ProtocolError {
    /// What was being read.
    pub what: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl ProtocolError {
    /// A protocol error while reading `what`.
    pub fn new(what: &'static str, detail: impl Into<String>) -> Self {
        ProtocolError {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn short(what: &'static str) -> impl Fn(Short) -> ProtocolError {
        move |s| {
            ProtocolError::new(
                what,
                format!("needed {} more bytes, {} left", s.needed, s.available),
            )
        }
    }

    pub(crate) fn packed(what: &'static str) -> impl Fn(Packed) -> ProtocolError {
        move |p| match p {
            Packed::Short(s) => ProtocolError::short(what)(s),
            Packed::Invalid(b) => ProtocolError::new(
                what,
                format!("invalid length-encoded integer prefix {b:#04x}"),
            ),
        }
    }
}

/// Reads a NUL-terminated string; without a NUL, the rest of the bytes.
pub(crate) fn take_nul_str<'a>(r: &mut Reader<'a>) -> &'a [u8] {
    let rest = r.rest();
    match rest.iter().position(|&b| b == 0) {
        Some(i) => {
            // i + 1 <= rest.len(), so the take cannot fail.
            let s = r.take(i + 1).unwrap_or(rest);
            &s[..i]
        }
        None => r.take_rest(),
    }
}

/// Appends a length-encoded integer.
pub(crate) fn put_lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_through_the_binlog_reader() {
        for n in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut v = vec![];
            put_lenenc(&mut v, n);
            assert_eq!(Reader::new(&v).packed().unwrap(), n);
        }
    }

    #[test]
    fn nul_strings() {
        let mut r = Reader::new(b"abc\0de");
        assert_eq!(take_nul_str(&mut r), b"abc");
        assert_eq!(take_nul_str(&mut r), b"de");
        assert_eq!(take_nul_str(&mut r), b"");
    }
}

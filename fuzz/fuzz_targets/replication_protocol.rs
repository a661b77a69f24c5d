//! Bytes from a server, as the replication client sees them, through every parser of its
//! sans-IO protocol core: packet framing and reassembly, the greeting, OK/ERR/EOF, text
//! result sets, prepared-statement replies (`COM_STMT_PREPARE`, OK after an execute), the authentication exchange (every plugin), the binary GTID set, and the
//! text forms of positions.
//!
//! Input: 2 control bytes, then the stream.
//! - byte 0: bits 0..2 pick the auth plugin the exchange starts with; bit 3: the connection
//!   counts as TLS (the clear-text paths open up);
//! - byte 1: seed for the sizes of the pieces the stream is cut into.
//!
//! Checked: nothing panics; framing a payload written by `Framer::write` gives it back.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use outflow_replication::protocol::auth::AuthExchange;
use outflow_core::{GtidSet, MariaGtidPos};
use outflow_replication::protocol::gtid::{decode_gtid_set, encode_gtid_set};
use outflow_replication::protocol::handshake::parse_greeting;
use outflow_replication::protocol::packet::{Framer, Take};
use outflow_replication::protocol::response::{classify, is_eof, parse_err, ResultSetReader};
use outflow_replication::protocol::stmt::{parse_ok_or_err, PrepareReader};
use outflow_replication::StartPosition;

const PLUGINS: [&str; 6] = [
    "mysql_native_password",
    "caching_sha2_password",
    "client_ed25519",
    "sha256_password",
    "mysql_clear_password",
    "dialog",
];

fuzz_target!(|data: &[u8]| {
    let Some((&[ctl, seed], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let plugin = PLUGINS[usize::from(ctl & 7) % PLUGINS.len()];
    let secure = ctl & 8 != 0;

    // Framing, in pieces of varying size.
    let mut framer = Framer::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut payloads = Vec::new();
    let mut rest = stream;
    let mut step = usize::from(seed) + 1;
    'feed: while !rest.is_empty() {
        let n = step.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        step = step * 7 % 251 + 1;
        loop {
            match framer.take(&mut buf) {
                Ok(Take::Payload(p)) => payloads.push(p),
                Ok(Take::Need(_)) => break,
                Err(_) => break 'feed,
            }
        }
    }

    // Each payload through every parser that could meet it.
    let (mut auth, _, _) = AuthExchange::start("pw", secure, plugin, b"01234567890123456789");
    let mut results = ResultSetReader::new();
    let mut prepared = PrepareReader::new();
    for p in &payloads {
        let _ = parse_greeting(p);
        let _ = parse_err(p);
        let _ = classify(p);
        let _ = is_eof(p);
        let _ = auth.on_packet(p);
        let _ = results.feed(p);
        let _ = prepared.feed(p);
        let _ = parse_ok_or_err(p);
        let _ = decode_gtid_set(p);
    }

    // The text forms (`--from`, GTID positions).
    let text = String::from_utf8_lossy(stream);
    let _ = text.parse::<MariaGtidPos>();
    if let Ok(set) = text.parse::<GtidSet>() {
        if let Ok(bytes) = encode_gtid_set(&set) {
            assert_eq!(decode_gtid_set(&bytes).ok(), Some(set));
        }
    }
    let _ = text.parse::<StartPosition>();

    // Writing then framing gives the payload back.
    let mut w = Framer::new(usize::MAX);
    let mut wire = BytesMut::new();
    w.write(stream, &mut wire);
    let mut r = Framer::new(usize::MAX);
    match r.take(&mut wire) {
        Ok(Take::Payload(p)) => assert_eq!(&p[..], stream),
        other => panic!("round trip failed: {other:?}"),
    }
});

//! Inputs the fuzz targets (`fuzz/`) found, kept so the bugs stay fixed. Each goes through
//! the code path the target drove: the `framing` ones through the same harness (control
//! bytes, uneven pieces, `EventBuffer`, `Walker`, every value rendered).
//!
//! The contract under test is the style guide's: bytes from a file or a peer never panic,
//! never loop, never make the decoder reserve memory out of proportion to them, and a
//! damaged event yields an error that says what is wrong.

use std::fmt::Write as _;

use outflow_binlog::event::Event;
use outflow_binlog::gtid::PreviousGtids;
use outflow_binlog::rows::{decode_value, inflate_rows};
use outflow_binlog::table_map::{col, column_kind};
use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{
    Checksum, ColumnKind, DecodeError, Decoded, EventBuffer, RowIter, RowsEvent, TableInfo,
    TransactionPayload, Value,
};

/// The `framing` target's event size cap.
const MAX_EVENT: usize = 1 << 20;

/// The `framing` target's decompressed size cap.
const MAX_INFLATE: usize = 4 << 20;

/// More row changes than any input here can hold: reaching it means the iterator loops.
const RUNAWAY: usize = 100_000;

/// What the harness saw: every error from decoding, from rows and from renderers.
#[derive(Default)]
struct Seen {
    errors: Vec<String>,
    changes: usize,
    scratch: Vec<u8>,
    text: String,
}

impl Seen {
    fn has(&self, needle: &str) -> bool {
        self.errors.iter().any(|e| e.contains(needle))
    }
}

impl Visitor for Seen {
    type Error = DecodeError;

    fn event(&mut self, _pos: u64, d: &Decoded<'_>) -> Result<(), DecodeError> {
        match d.event {
            Event::PreviousGtids(p) => {
                if let Err(e) = p.to_gtid_set_string() {
                    self.errors.push(e.to_string());
                }
            }
            Event::Query(q) if q.compressed => {
                if let Err(e) = q.inflate(&mut self.scratch) {
                    self.errors.push(e.to_string());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn rows(
        &mut self,
        _ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        _table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        for change in rows {
            self.changes += 1;
            assert!(
                self.changes < RUNAWAY,
                "the row iterator does not terminate"
            );
            let change = match change {
                Ok(c) => c,
                Err(e) => {
                    self.errors.push(e.to_string());
                    return Ok(());
                }
            };
            for row in [change.before, change.after].into_iter().flatten() {
                for v in row.values() {
                    let (_, v) = match v {
                        Ok(v) => v,
                        Err(e) => {
                            self.errors.push(e.to_string());
                            return Ok(());
                        }
                    };
                    self.text.clear();
                    match v {
                        Value::Json(j) => {
                            let _ = j.write_json(&mut self.text);
                        }
                        other => {
                            let _ = write!(self.text, "{other:?}");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `framing` target's piece sizes (xorshift32 seeded from control bytes 1..4).
struct Rng(u32);

impl Rng {
    fn piece_len(&mut self) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        let r = x as usize;
        let max = [8, 64, 4096, 65536][r & 3];
        1 + (r >> 2) % max
    }
}

/// Runs one input of the `framing` target: 4 control bytes, then the stream.
fn framing(data: &[u8]) -> Seen {
    let (ctrl, stream) = data.split_at(4);
    let file = ctrl[0] & 1 != 0;
    let mut rng = Rng(u32::from_le_bytes([ctrl[1], ctrl[2], ctrl[3], 0]) | 1);
    let mut buf = EventBuffer::new(if file { 0 } else { 4 });
    buf.set_max_event(MAX_EVENT);
    let mut walker = Walker::new();
    walker.set_max_inflate(MAX_INFLATE);
    walker.decoder().set_verify_checksums(ctrl[0] & 2 != 0);
    if ctrl[0] & 4 != 0 {
        walker.decoder().set_pre_format_checksum(Checksum::Crc32);
    }
    let mut seen = Seen::default();
    let mut magic = !file;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = rng.piece_len().min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        if ctrl[0] & 8 != 0 {
            buf.spare(n)[..n].copy_from_slice(piece);
            buf.commit(n);
        } else {
            buf.extend(piece);
        }
        if !magic {
            match buf.take_magic() {
                Ok(true) => magic = true,
                Ok(false) => continue,
                Err(e) => {
                    seen.errors.push(e.to_string());
                    return seen;
                }
            }
        }
        loop {
            match buf.next_event() {
                Ok(Some((pos, ev))) => {
                    if let Err(e) = walker.process(pos, ev, &mut seen) {
                        seen.errors.push(e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    seen.errors.push(e.to_string());
                    return seen;
                }
            }
        }
    }
    if let Err(e) = buf.finish() {
        seen.errors.push(e.to_string());
    }
    seen
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A FORMAT_DESCRIPTION of a MySQL 8.0 server without checksums, for hand-built streams.
fn format_description() -> Vec<u8> {
    let mut body = vec![4, 0];
    let mut version = b"8.0.40".to_vec();
    version.resize(50, 0);
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0; 4]); // created
    body.push(19); // common header length
    let mut lens = [0u8; 42];
    lens[2 - 1] = 13; // QUERY
    lens[19 - 1] = 8; // TABLE_MAP
    lens[30 - 1..32].fill(10); // rows v2
    body.extend_from_slice(&lens);
    body.push(0); // checksum algorithm: off
    body.extend_from_slice(&[0; 4]); // its (unused) checksum field
    event(15, &body)
}

/// One event with a v4 common header around `body`.
fn event(type_code: u8, body: &[u8]) -> Vec<u8> {
    let len = (19 + body.len()) as u32;
    let mut e = vec![0; 4]; // timestamp
    e.push(type_code);
    e.extend_from_slice(&1u32.to_le_bytes()); // server id
    e.extend_from_slice(&len.to_le_bytes());
    e.extend_from_slice(&[0; 4]); // log_pos
    e.extend_from_slice(&[0; 2]); // flags
    e.extend_from_slice(body);
    e
}

/// A `framing` input for a file holding `events` after a FORMAT_DESCRIPTION.
fn file_input(events: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0x01, 0, 0, 0, 0xfe, b'b', b'i', b'n'];
    v.extend(format_description());
    for e in events {
        v.extend_from_slice(e);
    }
    v
}

/// A WRITE_ROWS_V2 whose column bitmap is empty, followed by bytes: every row image took
/// no bytes, so the iterator handed out the same empty row forever (found as a timeout).
#[test]
fn rows_with_empty_images_and_leftover_bytes_end_in_an_error() {
    let seen = framing(&hex(
        "0816698d25bdfb660f010000007b0000007f00000001000400392e302e3100000001000000000000
         080000000000000000000000000000000000000000000000000000000000000000000025bdfb6613
         000d0008000000000400040000006300041a08000000000000020000000a0a0a2a2a001234000a28
         000001fc7d338d25bdfb6623010000001f0000009e00000b0001000f0c00610f01559f27cf361ebe
         fb661301000000360000004e0300ffff005a0000000000010003666f6f0004746573740001f50104
         01040201610c0180e9756c731ebefb661e010000003f0000008d03000000005a0000000000010002
         000100000000000d00000000000000ca410005000005010004010004ca4110010005000005010004
         010004ca411001",
    ));
    assert!(
        seen.has("row images take no bytes, yet bytes remain"),
        "{:?}",
        seen.errors
    );
    assert!(seen.changes < 10, "{} changes", seen.changes);
}

/// BIT metadata of 255 whole bytes plus leftover bits overflowed the stored width (an
/// arithmetic-overflow panic in debug builds, a wrapped width of 0 in release builds).
#[test]
fn bit_metadata_of_255_bytes_does_not_overflow() {
    let seen = framing(&hex(
        "08efc4a764363e610f01000000770000007b00000001000400352e372e32332d6c6f670000000000
         000000000000010000000000000000000000000000000000000000000000000000000064363e6113
         380d0008001200040404041200005f00041a08000000080808020000000a0a0a2a2a00123400017b
         ace9e38cff1261220100000041000000db0000000000010000000000000000000000000000000000
         00000000130000000000000000000000010000000047494e7d1fa9aed4363e6113010000005f0000
         00e609000000006d00000000000100047465737400086d7973716c63646300160301020903080405
         f6fe0f0ff5fc10fefefbf512131115ffffffffffffffffffffffffffff32520c6d00000000000465
         730000000000000c",
    ));
    // The stream ends inside an event; what matters is that nothing panicked on the way.
    assert!(seen.has("truncated"), "{:?}", seen.errors);

    // BIT(2047) as the metadata claims it: too wide to decode, and said so.
    let kind = column_kind(col::BIT, 0x07ff).unwrap();
    assert_eq!(
        kind,
        ColumnKind::Bit {
            bits: 255,
            bytes: 255
        }
    );
    assert!(decode_value(kind, &[0; 255], false).is_err());
}

/// A PREVIOUS_GTIDS interval ending at i64::MIN: `end - 1` overflowed when rendered.
/// Reduced by hand from the fuzz input (895 bytes, most of them irrelevant).
#[test]
fn previous_gtids_interval_end_at_i64_min_is_an_error() {
    let mut raw = 1u64.to_le_bytes().to_vec(); // one source
    raw.extend_from_slice(&[0x11; 16]); // its UUID
    raw.extend_from_slice(&1u64.to_le_bytes()); // one interval
    raw.extend_from_slice(&1u64.to_le_bytes()); // start
    raw.extend_from_slice(&i64::MIN.to_le_bytes()); // end (exclusive)
    let err = PreviousGtids { raw: &raw }
        .to_gtid_set_string()
        .unwrap_err();
    assert!(
        err.to_string().contains("interval end out of range"),
        "{err}"
    );

    let seen = framing(&file_input(&[event(35, &raw)]));
    assert!(seen.has("interval end out of range"), "{:?}", seen.errors);
}

/// A MariaDB QUERY_COMPRESSED whose 5-byte header declares ~1 GiB made `Query::inflate`
/// reserve that much before reading a byte (found as a malloc-limit crash). Reduced by
/// hand from the fuzz input.
#[test]
fn compressed_query_cannot_reserve_its_declared_length() {
    let mut body = vec![0; 8]; // thread id, exec time
    body.push(0); // schema length
    body.extend_from_slice(&[0; 2]); // error code
    body.extend_from_slice(&[0; 2]); // status variables length
    body.push(0); // schema terminator
    body.extend_from_slice(&[0x84, 0x3f, 0xff, 0xff, 0xff, 0x78, 0x9c]); // 1 GiB, zlib
    let seen = framing(&file_input(&[event(165, &body)]));
    assert!(
        seen.has("more than 2 compressed bytes can hold"),
        "{:?}",
        seen.errors
    );
    assert!(
        seen.scratch.capacity() < 1 << 20,
        "{}",
        seen.scratch.capacity()
    );

    // The same header on compressed rows.
    let mut out = Vec::new();
    assert!(inflate_rows(
        &[0x84, 0x3f, 0xff, 0xff, 0xff, 0x78, 0x9c],
        &mut out,
        1 << 30
    )
    .is_err());
    assert!(out.capacity() < 1 << 20, "{}", out.capacity());
}

/// The zstd TRANSACTION_PAYLOAD counterpart: a declared size is a hint, not a reservation.
#[test]
fn transaction_payload_cannot_reserve_its_declared_size() {
    let p = TransactionPayload {
        compression: 0,
        uncompressed_size: 1 << 30,
        payload: &[0x28, 0xb5, 0x2f, 0xfd, 0, 0],
    };
    let mut out = Vec::new();
    assert!(p.decompress(&mut out, 1 << 30).is_err());
    assert!(out.capacity() <= 16 << 20, "{}", out.capacity());
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros: 4 bytes each, so 33 KB of payload
/// make 1 GiB. Built by hand, since compressing that much in a test would be slow.
fn zstd_zeros(blocks: usize) -> Vec<u8> {
    // Magic; frame header: no content size, window descriptor 2^17 (128 KiB).
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = (128 * 1024) << 3 | 1 << 1 | last; // size, type RLE, last flag
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// A TRANSACTION_PAYLOAD body: (type, length, value) header fields, then the payload.
fn transaction_payload(uncompressed_size: u32, payload: &[u8]) -> Vec<u8> {
    let packed3 = |v: u32| [0xfd, v as u8, (v >> 8) as u8, (v >> 16) as u8];
    let mut b = vec![2, 1, 0]; // compression: zstd
    b.extend_from_slice(&[3, 4]);
    b.extend_from_slice(&packed3(uncompressed_size));
    b.extend_from_slice(&[1, 4]);
    b.extend_from_slice(&packed3(payload.len() as u32));
    b.push(0);
    b.extend_from_slice(payload);
    b
}

/// A zstd bomb in a TRANSACTION_PAYLOAD is cut off at the walker's limit, whatever its
/// header declares; before `Walker::set_max_inflate` the limit was fixed at about 1 GiB.
#[test]
fn zstd_bomb_stops_at_the_walker_limit() {
    let bomb = zstd_zeros(64); // 8 MiB from 262 bytes
                               // The header tells the truth: refused before decompressing.
    let seen = framing(&file_input(&[event(
        40,
        &transaction_payload(8 << 20, &bomb),
    )]));
    assert!(seen.has("over the limit of 4194304"), "{:?}", seen.errors);
    // The header lies: decompression stops one byte past the limit.
    let seen = framing(&file_input(&[event(40, &transaction_payload(1000, &bomb))]));
    assert!(
        seen.has("decompressed 4194305 bytes, header says 1000"),
        "{:?}",
        seen.errors
    );
}

//! One TABLE_MAP body and one row-event body, parsed and iterated directly, without the
//! framing, checksums and header checks that the `framing` target must get past first; and
//! the two decompressors (MariaDB zlib rows, MySQL zstd TRANSACTION_PAYLOAD), both on raw
//! fuzz bytes and on valid streams built from them.
//!
//! Input: 9 control bytes, the TABLE_MAP body, then the row-event body.
//! - byte 0, bit 0: TABLE_MAP post-header length 6 (MySQL 5.1.0-5.1.15), else 8;
//!   bit 1: declare the fractional precision of old TIMESTAMP columns (MariaDB 10.0's
//!   format) as 1 + byte 8 % 6, as a caller's schema would;
//!   bit 2: mark every integer column unsigned, as a caller's schema would;
//!   bit 3: zlib-compress the rows of an uncompressed event and read them back through
//!   `inflate_rows` (MariaDB `log_bin_compress`);
//!   bit 4: zstd-compress the row-event body as a TRANSACTION_PAYLOAD and split what
//!   comes back into events;
//!   bit 5: the TABLE_MAP was written by MariaDB (else MySQL).
//! - byte 1: row-event type code (mapped onto a row-event type if it is not one).
//! - byte 2: row-event post-header length (FORMAT_DESCRIPTION says 8 or 10; anything goes).
//! - bytes 3..5: TABLE_MAP body length, little-endian.
//! - bytes 5..8: declared uncompressed size for the raw TRANSACTION_PAYLOAD, little-endian.
//! - byte 8: see bit 1 of byte 0.
//!
//! `fuzz/seeds.py` extracts TABLE_MAP and row-event pairs from real binlogs in this form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow_binlog::event_type::code::*;
use outflow_binlog::rows::inflate_rows;
use outflow_binlog::stream::split_events;
use outflow_binlog::{ColumnKind, Flavor, RowsEvent, TableInfo, TransactionPayload};
use outflow_fuzz::{drain_rows, MAX_INFLATE};

const ROWS_TYPES: [u8; 13] = [
    PRE_GA_WRITE_ROWS,
    PRE_GA_UPDATE_ROWS,
    PRE_GA_DELETE_ROWS,
    WRITE_ROWS_V1,
    UPDATE_ROWS_V1,
    DELETE_ROWS_V1,
    WRITE_ROWS_V2,
    UPDATE_ROWS_V2,
    DELETE_ROWS_V2,
    PARTIAL_UPDATE_ROWS,
    MARIA_WRITE_ROWS_COMPRESSED_V1,
    MARIA_UPDATE_ROWS_COMPRESSED_V1,
    MARIA_DELETE_ROWS_COMPRESSED,
];

fuzz_target!(|data: &[u8]| {
    let Some((ctrl, rest)) = data.split_first_chunk::<9>() else {
        return;
    };
    let flags = ctrl[0];
    let type_code = if ROWS_TYPES.contains(&ctrl[1]) {
        ctrl[1]
    } else {
        ROWS_TYPES[usize::from(ctrl[1]) % ROWS_TYPES.len()]
    };
    let rows_phl = usize::from(ctrl[2]);
    let tm_len = usize::from(u16::from_le_bytes([ctrl[3], ctrl[4]])).min(rest.len());
    let declared = u64::from(u32::from_le_bytes([ctrl[5], ctrl[6], ctrl[7], 0]));
    let (tm_body, rows_body) = rest.split_at(tm_len);

    let mut out = String::new();
    let mut scratch = Vec::new();

    // The decompressors on bytes nobody vouched for.
    let _ = inflate_rows(rows_body, &mut scratch, MAX_INFLATE);
    let raw = TransactionPayload {
        compression: 0,
        uncompressed_size: declared,
        payload: rows_body,
    };
    if let Ok(events) = raw.decompress(&mut scratch, MAX_INFLATE) {
        for item in split_events(events) {
            if item.is_err() {
                break;
            }
        }
    }
    if flags & 16 != 0 {
        if let Ok(z) = zstd::bulk::compress(rows_body, 1) {
            let p = TransactionPayload {
                compression: 0,
                uncompressed_size: rows_body.len() as u64,
                payload: &z,
            };
            if let Ok(events) = p.decompress(&mut scratch, MAX_INFLATE) {
                assert_eq!(events, rows_body, "zstd round trip");
                for item in split_events(events) {
                    if item.is_err() {
                        break;
                    }
                }
            }
        }
    }

    let tm_phl = if flags & 1 != 0 { 6 } else { 8 };
    let flavor = if flags & 32 != 0 {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    };
    let Ok(mut table) = TableInfo::parse(tm_body, tm_phl, flavor) else {
        return;
    };
    for i in 0..table.columns.len() {
        if flags & 2 != 0 && table.columns[i].kind == ColumnKind::TimestampV1 {
            table.set_fractional_precision(i, 1 + ctrl[8] % 6);
        }
        if flags & 4 != 0 {
            table.set_unsigned(i, true);
        }
    }
    let _ = table.qualified_name();

    let Ok(ev) = RowsEvent::parse(type_code, rows_body, rows_phl) else {
        return;
    };
    if ev.compressed {
        if let Ok(rows) = inflate_rows(ev.payload, &mut scratch, MAX_INFLATE) {
            if let Ok(iter) = ev.rows_in(&table, rows) {
                drain_rows(iter, &mut out);
            }
        }
        return;
    }
    if let Ok(iter) = ev.rows(&table) {
        drain_rows(iter, &mut out);
    }
    if flags & 8 != 0 {
        let z = mariadb_compress(ev.payload);
        if let Ok(rows) = inflate_rows(&z, &mut scratch, MAX_INFLATE) {
            assert_eq!(rows, ev.payload, "zlib round trip");
            if let Ok(iter) = ev.rows_in(&table, rows) {
                drain_rows(iter, &mut out);
            }
        }
    }
});

/// MariaDB's compressed-rows layout: `0x80 | n`, the length in `n` big-endian bytes, zlib.
fn mariadb_compress(rows: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let len = (rows.len() as u32).to_be_bytes();
    let mut out = vec![0x84];
    out.extend_from_slice(&len);
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(rows);
    z.finish().unwrap_or_default()
}

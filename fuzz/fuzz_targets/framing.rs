//! A byte stream, as a file or a replication connection would deliver it, through the whole
//! decoder: `EventBuffer` framing, `Walker` (decoder, transaction payloads, compressed
//! rows), every row and every value rendered.
//!
//! Input: 4 control bytes, then the stream.
//! - byte 0, bit 0: the stream is a file and starts with the binlog magic (else it is a
//!   replication stream, which has none);
//!   bit 1: verify CRC32 checksums (off by default: the fuzzer cannot forge them, and a
//!   failed check would hide everything behind it);
//!   bit 2: the artificial ROTATE before the FORMAT_DESCRIPTION carries a CRC32;
//!   bit 3: feed pieces through `spare`/`commit` instead of `extend`.
//! - bytes 1..4: seed for the sizes of the pieces the stream is cut into.
//!
//! `fuzz/seeds.py` turns real binlog files into inputs of this form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{
    Checksum, DecodeError, Decoded, Event, EventBuffer, RowIter, RowsEvent, TableInfo,
};
use outflow_fuzz::{drain_rows, Rng, MAX_EVENT, MAX_INFLATE};
use std::fmt::Write as _;

struct Sink {
    out: String,
    inflated: Vec<u8>,
}

impl Visitor for Sink {
    type Error = DecodeError;

    fn event(&mut self, _pos: u64, d: &Decoded<'_>) -> Result<(), DecodeError> {
        // The renderers a consumer calls on non-row events.
        self.out.clear();
        match d.event {
            Event::PreviousGtids(p) => {
                let _ = p.to_gtid_set_string();
            }
            Event::GtidList(l) => {
                for g in l.gtids() {
                    let _ = write!(self.out, "{g},");
                }
            }
            Event::MySqlGtid(g) => {
                let _ = write!(self.out, "{g}");
            }
            Event::MariaGtid(g) => {
                let _ = write!(self.out, "{} {}", g.gtid, g.standalone());
            }
            Event::Query(q) => {
                let _ = q.status();
                if q.compressed {
                    let _ = q.inflate(&mut self.inflated);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        let _ = write!(self.out, "{} {}", ctx.gtid, table.qualified_name());
        drain_rows(rows, &mut self.out);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ctrl, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let file = ctrl[0] & 1 != 0;
    let mut rng = Rng::new(u32::from_le_bytes([ctrl[1], ctrl[2], ctrl[3], 0]));

    let mut buf = EventBuffer::new(if file { 0 } else { 4 });
    buf.set_max_event(MAX_EVENT);
    let mut walker = Walker::new();
    walker.set_max_inflate(MAX_INFLATE);
    walker.decoder().set_verify_checksums(ctrl[0] & 2 != 0);
    if ctrl[0] & 4 != 0 {
        walker.decoder().set_pre_format_checksum(Checksum::Crc32);
    }
    let mut sink = Sink {
        out: String::new(),
        inflated: Vec::new(),
    };

    let mut magic = !file;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = rng.piece_len().min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        if ctrl[0] & 8 != 0 {
            let spare = buf.spare(n);
            spare[..n].copy_from_slice(piece);
            buf.commit(n);
        } else {
            buf.extend(piece);
        }
        if !magic {
            match buf.take_magic() {
                Ok(true) => magic = true,
                Ok(false) => continue,
                Err(_) => return,
            }
        }
        loop {
            match buf.next_event() {
                // A decode error leaves the decoder usable; keep going, for coverage of
                // what a lenient consumer would do next.
                Ok(Some((pos, ev))) => {
                    let _ = walker.process(pos, ev, &mut sink);
                }
                Ok(None) => break,
                // A framing error does not advance the buffer: the stream is over.
                Err(_) => return,
            }
        }
    }
    let _ = buf.finish();
});

//! Frames from a peer or the spool through `outflow_codec::Decoder`, the decoder of the
//! egress codec's bytes. Whatever decodes is encoded again and must decode to the same
//! batch, so an asymmetry between encoder and decoder is a crash too.
//!
//! Input: 1 control byte, then bytes.
//! - control bit 0 clear: the bytes are a whole frame. Bit 1 set: its CRC-32 is recomputed
//!   first (the fuzzer cannot forge it, and a failed check would hide everything behind it).
//! - control bit 0 set: the bytes are a payload, wrapped here in a valid header and meta
//!   block (bit 1: zstd-compressed first; bit 2: marked compacted; bit 3: stored as one
//!   part of a payload in parts, format 2; bit 4: format 3, so the payload opens with a
//!   DDL section), so the fuzzer works on the columnar decoder and the DDL section reader
//!   directly.
//!
//! Limits are small (1 MiB frames, 4 MiB decompressed), so an input cannot make the decoder
//! allocate much.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow_codec::frame::{FrameMeta, HEADER_LEN, MAGIC, VERSION, VERSION_DDL};
use outflow_codec::{Decoder, Encoder, EncoderConfig, Limits};
use outflow_core::{ChangeBatch, SourcePosition};

const LIMITS: Limits = Limits {
    max_frame: 1 << 20,
    max_decompressed: 4 << 20,
    max_schemas: 64,
    max_slots: 1 << 20,
};

fn crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[..32]);
    h.update(&frame[HEADER_LEN..]);
    h.finalize()
}

/// A valid frame around `payload`.
fn wrap(payload: &[u8], compress: bool, compacted: bool, parts: bool, ddl: bool) -> Vec<u8> {
    let meta = FrameMeta {
        full_images: false,
        compacted,
        start: SourcePosition::default(),
        files: vec!["binlog.000001".into()],
        first_gtid: None,
        last_gtid: None,
        end: None,
        transactions: 0,
        changes: 0,
    };
    let meta = bincode::serialize(&meta).unwrap_or_default();
    let mut stored = if compress || parts {
        zstd::bulk::compress(payload, 1).unwrap_or_default()
    } else {
        payload.to_vec()
    };
    if parts {
        // One part without a dictionary: count, id, stored and decompressed lengths.
        let mut table = vec![1u8];
        table.extend_from_slice(&0u32.to_le_bytes());
        for n in [stored.len(), payload.len()] {
            let mut v = n as u64;
            while v >= 0x80 {
                table.push(v as u8 | 0x80);
                v >>= 7;
            }
            table.push(v as u8);
        }
        table.extend_from_slice(&stored);
        stored = table;
    }
    let mut f = vec![0u8; HEADER_LEN];
    f[..4].copy_from_slice(&MAGIC);
    f[4] = if ddl { VERSION_DDL } else { VERSION };
    f[5] = if parts { 1 | 8 } else { u8::from(compress) };
    f[16..20].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    f[20..24].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    f[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&meta);
    f.extend_from_slice(&stored);
    let c = crc(&f);
    f[32..36].copy_from_slice(&c.to_le_bytes());
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let frame = if control & 1 == 1 {
        wrap(
            rest,
            control & 2 != 0,
            control & 4 != 0,
            control & 8 != 0,
            control & 16 != 0,
        )
    } else {
        let mut f = rest.to_vec();
        if control & 2 != 0 && f.len() >= HEADER_LEN {
            let c = crc(&f);
            f[32..36].copy_from_slice(&c.to_le_bytes());
        }
        f
    };
    let Ok(mut decoder) = Decoder::new(LIMITS) else {
        return;
    };
    let mut batch = ChangeBatch::default();
    if decoder.decode(&frame, &mut batch).is_err() {
        return;
    }
    // Everything that decodes is a valid batch: it must survive a round trip unchanged.
    let mut again = Vec::new();
    let mut enc = Encoder::new(EncoderConfig::default()).expect("encoder");
    enc.encode(&batch, &mut again)
        .expect("a decoded batch encodes");
    let mut back = ChangeBatch::default();
    Decoder::new(Limits::default())
        .expect("decoder")
        .decode(&again, &mut back)
        .expect("a re-encoded batch decodes");
    assert_eq!(back, batch, "round trip changed the batch");
});

//! Inputs the `codec_frame` fuzz target once crashed on (fuzz/fuzz_targets/codec_frame.rs),
//! replayed with the target's own rules: control byte, then a frame or a bare payload;
//! whatever decodes must survive encode + decode unchanged.

use outflow_codec::frame::{FrameMeta, HEADER_LEN, MAGIC, VERSION};
use outflow_codec::{Decoder, Encoder, EncoderConfig, Limits};
use outflow_core::{ChangeBatch, SourcePosition};

fn crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[..32]);
    h.update(&frame[HEADER_LEN..]);
    h.finalize()
}

fn wrap(payload: &[u8], compress: bool, compacted: bool) -> Vec<u8> {
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
    let meta = bincode::serialize(&meta).unwrap();
    let stored = if compress {
        zstd::bulk::compress(payload, 1).unwrap()
    } else {
        payload.to_vec()
    };
    let mut f = vec![0u8; HEADER_LEN];
    f[..4].copy_from_slice(&MAGIC);
    f[4] = VERSION;
    f[5] = u8::from(compress);
    f[16..20].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    f[20..24].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    f[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&meta);
    f.extend_from_slice(&stored);
    let c = crc(&f);
    f[32..36].copy_from_slice(&c.to_le_bytes());
    f
}

#[test]
fn fuzz_regressions_decode_or_fail_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Some((&control, rest)) = data.split_first() else {
            continue;
        };
        let frame = if control & 1 == 1 {
            wrap(rest, control & 2 != 0, control & 4 != 0)
        } else {
            let mut f = rest.to_vec();
            if control & 2 != 0 && f.len() >= HEADER_LEN {
                let c = crc(&f);
                f[32..36].copy_from_slice(&c.to_le_bytes());
            }
            f
        };
        n += 1;
        let mut batch = ChangeBatch::default();
        let limits = Limits {
            max_frame: 1 << 20,
            max_decompressed: 4 << 20,
            max_schemas: 64,
            max_slots: 1 << 20,
        };
        if Decoder::new(limits)
            .unwrap()
            .decode(&frame, &mut batch)
            .is_err()
        {
            continue;
        }
        let mut again = Vec::new();
        Encoder::new(EncoderConfig::default())
            .unwrap()
            .encode(&batch, &mut again)
            .unwrap();
        let mut back = ChangeBatch::default();
        Decoder::new(Limits::default())
            .unwrap()
            .decode(&again, &mut back)
            .unwrap();
        assert_eq!(back, batch);
    }
    assert!(n > 0);
}

//! Deterministic batches for tests, the probe and the bench: a payload is a function of its
//! sequence number, so the receiving side can check every byte without being told.

use bytes::Bytes;

/// Payload of batch `seq`: 1..=`max_len` bytes of xorshift output seeded by `seq`.
pub fn payload(seq: u64, max_len: usize) -> Bytes {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let len = 1 + (next() % max_len.max(1) as u64) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

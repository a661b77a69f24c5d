//! What the codec's integration tests share.

use outflow_binlog::EventBuffer;

/// Whole events of a binlog file, with their offsets.
pub fn events(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut buf = EventBuffer::new(0);
    buf.extend(bytes);
    assert!(buf.take_magic().unwrap());
    let mut out = vec![];
    while let Some((pos, ev)) = buf.next_event().unwrap() {
        out.push((pos, ev.to_vec()));
    }
    out
}

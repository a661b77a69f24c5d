//! Bytes found on disk through spool recovery: one or two segment files whose contents come
//! from the input are opened (sealed-segment walk, head-segment scan and torn-tail
//! truncation), then every record is read back (CRC checks) and the spool is appended to and
//! acknowledged.
//!
//! Input: 1 control byte, then the bytes. Byte 0 below 128: one segment, the head. Otherwise
//! the bytes are split at a point taken from byte 0 into a sealed segment and a head; the
//! head's first sequence number follows the records the sealed one claims, so the fuzzer can
//! reach the head scan behind a valid sealed segment.

#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use outflow_spool::format::{self, RecordReader, MAGIC};
use outflow_spool::{FsyncPolicy, MemIo, SpoolConfig, SpoolLog};

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let dir = Path::new("/spool");
    let io = MemIo::new();
    let with_magic = |b: &[u8]| [MAGIC.as_slice(), b].concat();
    if control < 128 {
        io.put(&dir.join(format::segment_name(1)), &with_magic(bytes));
    } else {
        let split = (usize::from(control - 128) * bytes.len()) / 128;
        let (sealed, head) = bytes.split_at(split);
        let records = RecordReader::new(sealed, 8, Some(1), 1 << 16)
            .take_while(Result::is_ok)
            .count() as u64;
        io.put(&dir.join(format::segment_name(1)), &with_magic(sealed));
        io.put(
            &dir.join(format::segment_name(1 + records)),
            &with_magic(head),
        );
    }
    let config = SpoolConfig {
        fsync: FsyncPolicy::Always,
        max_bytes: 1 << 20,
        segment_bytes: 1 << 16,
        max_record_bytes: 1 << 16,
        cache_bytes: 1 << 16,
        ..SpoolConfig::new(dir)
    };
    let Ok(mut log) = SpoolLog::open(io, config) else {
        return;
    };
    let first = log.acked() + 1;
    for seq in first..log.next_seq() {
        let _ = log.read(seq);
    }
    let seq = log.next_seq();
    if log.append(Bytes::from_static(b"after recovery"), 1).is_ok() {
        assert_eq!(
            log.read(seq).ok().flatten().as_deref(),
            Some(&b"after recovery"[..])
        );
        let _ = log.ack(seq);
    }
});

//! The on-disk format of a spool segment, and a sans-IO reader for it.
//!
//! # Design note
//!
//! **Layout.** A spool is a directory of segment files named `{first_seq:020}.seg`, where
//! `first_seq` is the sequence number of the first record the segment holds (or will hold, while
//! it is empty). Zero-padding makes lexical order equal numeric order. A segment file is:
//!
//! ```text
//! magic "OFSPOOL1" (8 bytes)
//! record*
//!
//! record = len:u32le crc:u32le seq:u64le appended_ms:u64le payload[len]
//! ```
//!
//! `crc` is CRC-32 (IEEE) over `seq`, `appended_ms` and `payload`, so a record whose header
//! survived but whose payload did not (or the reverse) fails the check. `appended_ms` is the
//! wall-clock time of the append in Unix milliseconds: it survives a restart, so the age of the
//! oldest unacknowledged batch (the RPO the spool reports) stays right after a crash. The payload
//! is opaque: the codec's frames carry their own format.
//!
//! **Invariants.**
//! - Within a segment, sequence numbers increase by exactly one per record, starting at the
//!   number in the file name; the first record of segment *n+1* follows the last record of
//!   segment *n*.
//! - Only the newest segment (the head) is ever written to. Before a new head is created, the
//!   old one is fsynced (unless the fsync policy is `Never`), so every sealed segment is whole
//!   on disk; the directory is fsynced after each segment is created or removed.
//! - The head segment is never removed, even when fully acknowledged: its name carries the next
//!   sequence number across a restart, so a number once handed out is never reused (the far side
//!   deduplicates by sequence, and a reused number would be dropped there as a duplicate).
//! - Segments are removed oldest first, and only once every record in them is acknowledged.
//!
//! **Recovery.** On open, sealed segments are walked header by header (lengths and sequence
//! continuity; their CRCs are checked when a record is read back, so opening a large spool does
//! not read it all). The head segment is read whole and every CRC checked: the first record that
//! is incomplete, fails its CRC, or breaks the sequence is the start of a torn tail, and the file
//! is truncated there. Under the `Always` and `Interval` fsync policies that tail was never
//! reported durable, so nothing promised is lost. Any defect in a sealed segment, a gap between
//! segments or a file that is not a segment is a [`crate::SpoolError::Corrupt`] naming the
//! segment and the byte offset: that is damage the spool did not cause, and guessing would risk
//! losing or duplicating changes.

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"OFSPOOL1";

/// Bytes in a record header: `len`, `crc`, `seq`, `appended_ms`.
pub const HEADER_LEN: usize = 24;

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32 over `seq`, `appended_ms` and the payload.
    pub crc: u32,
    /// Sequence number of the batch.
    pub seq: u64,
    /// Wall-clock time of the append, Unix milliseconds.
    pub appended_ms: u64,
}

impl Header {
    /// Reads a header from its 24 bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Header {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64_at(8),
            appended_ms: u64_at(16),
        }
    }

    /// The header for `payload`, with its CRC.
    pub fn for_payload(seq: u64, appended_ms: u64, payload: &[u8]) -> Header {
        Header {
            len: payload.len() as u32,
            crc: checksum(seq, appended_ms, payload),
            seq,
            appended_ms,
        }
    }

    /// The 24 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.appended_ms.to_le_bytes());
        out
    }

    /// Whether `payload` matches this header's CRC.
    pub fn verifies(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && checksum(self.seq, self.appended_ms, payload) == self.crc
    }
}

/// CRC-32 over the fields a record protects.
pub fn checksum(seq: u64, appended_ms: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&appended_ms.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The file name of the segment whose first sequence number is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence number encoded in a segment file name, or `None` when the name is not a
/// segment's.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside a header or payload.
    #[error("record truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes the record needs from its start.
        need: u64,
        /// Bytes present from its start.
        have: u64,
    },
    /// The header announces more payload than the spool allows.
    #[error("record length {len} exceeds the maximum of {max} bytes")]
    TooLong {
        /// Announced payload length.
        len: u32,
        /// Configured maximum payload length.
        max: u32,
    },
    /// The CRC does not match the bytes.
    #[error("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes present.
        computed: u32,
    },
    /// The sequence number is not the one that must come next.
    #[error("sequence {found} where {expected} was expected")]
    Sequence {
        /// Sequence number that must come next.
        expected: u64,
        /// Sequence number in the header.
        found: u64,
    },
}

/// One record borrowed from a segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset of the record's header within the segment.
    pub offset: u64,
    /// The decoded header.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Reads the records of a segment's bytes (after the magic), checking length bounds, CRCs and
/// sequence continuity. Stops at the first defect, which it returns with the defect's offset;
/// the caller decides whether that is a torn tail or corruption.
#[derive(Debug, Clone)]
pub struct RecordReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
    expected_seq: Option<u64>,
    max_len: u32,
    failed: bool,
}

impl<'a> RecordReader<'a> {
    /// A reader over `bytes`, which start at byte `base` of the segment file. If
    /// `expected_seq` is given, the first record must carry it. `max_len` bounds payloads.
    pub fn new(bytes: &'a [u8], base: u64, expected_seq: Option<u64>, max_len: u32) -> Self {
        RecordReader {
            bytes,
            pos: 0,
            base,
            expected_seq,
            max_len,
            failed: false,
        }
    }

    /// Segment offset just past the last record returned so far.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Sequence number the next record must carry, once one record has been read or a first
    /// one was required.
    pub fn expected_seq(&self) -> Option<u64> {
        self.expected_seq
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Result<Record<'a>, (u64, RecordError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.bytes.len() {
            return None;
        }
        let offset = self.offset();
        let rest = &self.bytes[self.pos..];
        let result = (|| {
            let Some(head) = rest.first_chunk::<HEADER_LEN>() else {
                return Err(RecordError::Truncated {
                    need: HEADER_LEN as u64,
                    have: rest.len() as u64,
                });
            };
            let header = Header::parse(head);
            if header.len > self.max_len {
                return Err(RecordError::TooLong {
                    len: header.len,
                    max: self.max_len,
                });
            }
            let end = HEADER_LEN + header.len as usize;
            let Some(payload) = rest.get(HEADER_LEN..end) else {
                return Err(RecordError::Truncated {
                    need: end as u64,
                    have: rest.len() as u64,
                });
            };
            let computed = checksum(header.seq, header.appended_ms, payload);
            if computed != header.crc {
                return Err(RecordError::Checksum {
                    stored: header.crc,
                    computed,
                });
            }
            if let Some(expected) = self.expected_seq {
                if header.seq != expected {
                    return Err(RecordError::Sequence {
                        expected,
                        found: header.seq,
                    });
                }
            }
            Ok((header, payload, end))
        })();
        match result {
            Ok((header, payload, end)) => {
                self.pos += end;
                self.expected_seq = header.seq.checked_add(1);
                Some(Ok(Record {
                    offset,
                    header,
                    payload,
                }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err((offset, e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Header::for_payload(seq, 1_700_000_000_000, payload)
            .encode()
            .to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn header_round_trips() {
        let h = Header::for_payload(42, 7, b"abc");
        assert_eq!(Header::parse(&h.encode()), h);
        assert!(h.verifies(b"abc"));
        assert!(!h.verifies(b"abd"));
    }

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(parse_segment_name(&segment_name(12345)), Some(12345));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("12.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000001x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.tmp"), None);
    }

    #[test]
    fn reads_records_and_stops_at_a_torn_one() {
        let mut bytes = record(5, b"hello");
        bytes.extend(record(6, b""));
        bytes.extend(record(7, b"world"));
        let whole = bytes.len();
        bytes.extend(&record(8, b"torn")[..10]);
        let mut reader = RecordReader::new(&bytes, 8, Some(5), 1024);
        let seqs: Vec<u64> = reader
            .by_ref()
            .map_while(Result::ok)
            .map(|r| r.header.seq)
            .collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(reader.offset(), 8 + whole as u64);

        let errors: Vec<_> = RecordReader::new(&bytes, 8, Some(5), 1024)
            .filter_map(Result::err)
            .collect();
        assert_eq!(
            errors,
            [(
                8 + whole as u64,
                RecordError::Truncated { need: 24, have: 10 }
            )]
        );
    }

    #[test]
    fn detects_crc_sequence_and_length_defects() {
        let mut bytes = record(1, b"abc");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = RecordReader::new(&bytes, 0, None, 1024).next();
        assert!(matches!(err, Some(Err((0, RecordError::Checksum { .. })))));

        let mut bytes = record(1, b"abc");
        bytes.extend(record(3, b"def"));
        let err = RecordReader::new(&bytes, 0, None, 1024)
            .nth(1)
            .expect("second item");
        assert!(matches!(
            err,
            Err((
                27,
                RecordError::Sequence {
                    expected: 2,
                    found: 3
                }
            ))
        ));

        let bytes = record(1, &[0u8; 100]);
        let err = RecordReader::new(&bytes, 0, None, 99).next();
        assert!(matches!(
            err,
            Some(Err((0, RecordError::TooLong { len: 100, max: 99 })))
        ));
    }
}

//! Framing: splitting a byte stream into whole events.
//!
//! [`EventBuffer`] accepts bytes in arbitrary pieces (file reads, network packets) and hands
//! out whole events as borrowed slices. Bytes are written straight into its spare capacity,
//! so each byte is copied once, from the kernel; only the tail of a partial event is moved
//! when the buffer compacts. An event longer than the buffer grows it, up to a limit.

use crate::error::{DecodeError, ErrorKind};
use crate::header::{HEADER_LEN, MAGIC};

/// Largest event accepted by default: MySQL's and MariaDB's `max_allowed_packet` ceiling
/// is 1 GiB, and an event can exceed it by its header and a little metadata.
pub const DEFAULT_MAX_EVENT: usize = (1 << 30) + (1 << 20);

/// A buffer that reassembles events from a byte stream.
pub struct EventBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max_event: usize,
    /// Length of the partial event at `start`, once its header has been seen.
    pending: usize,
}

impl EventBuffer {
    /// An empty buffer whose next byte is at stream offset `offset`.
    pub fn new(offset: u64) -> Self {
        EventBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset,
            max_event: DEFAULT_MAX_EVENT,
            pending: 0,
        }
    }

    /// Sets the largest event accepted; larger ones are an error, not an allocation.
    pub fn set_max_event(&mut self, max: usize) {
        self.max_event = max;
    }

    /// Stream offset of the next unconsumed byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes buffered and not yet returned as events.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Writable space of at least `min` bytes (more if a pending event needs it). Write
    /// into it, then call [`EventBuffer::commit`] with the count written.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        let want = min.max(self.pending.saturating_sub(self.buffered()));
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the spare space as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies `data` in (for callers that already hold bytes).
    pub fn extend(&mut self, data: &[u8]) {
        let s = self.spare(data.len());
        s[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// Consumes and checks the 4-byte magic at the start of a binlog file. Returns
    /// `Ok(false)` if fewer than 4 bytes are buffered yet.
    pub fn take_magic(&mut self) -> Result<bool, DecodeError> {
        if self.buffered() < MAGIC.len() {
            return Ok(false);
        }
        if self.buf[self.start..self.start + 4] != MAGIC {
            return Err(DecodeError {
                pos: self.offset,
                event_type: None,
                kind: ErrorKind::BadMagic,
            });
        }
        self.start += 4;
        self.offset += 4;
        Ok(true)
    }

    /// The next whole event and its stream offset, or `None` until more bytes arrive.
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<(u64, &[u8])>, DecodeError> {
        let avail = self.buffered();
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let Some(h) = self.buf[self.start..self.end].first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
        if len < HEADER_LEN || len > self.max_event {
            return Err(DecodeError {
                pos: self.offset,
                event_type: Some(h[4]),
                kind: ErrorKind::BadEventLength { length: len as u32 },
            });
        }
        if avail < len {
            self.pending = len;
            return Ok(None);
        }
        self.pending = 0;
        let pos = self.offset;
        let ev = &self.buf[self.start..self.start + len];
        self.start += len;
        self.offset += len as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some((pos, ev)))
    }

    /// Call at end of input: an error if a partial event remains.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buffered() == 0 {
            return Ok(());
        }
        let needed = if self.pending > 0 {
            self.pending
        } else {
            HEADER_LEN
        };
        Err(DecodeError {
            pos: self.offset,
            event_type: (self.buffered() > 4).then(|| self.buf[self.start + 4]),
            kind: ErrorKind::Truncated {
                what: "event at end of input",
                needed,
                available: self.buffered(),
            },
        })
    }
}

/// Splits a buffer that holds whole events (for example a decompressed
/// TRANSACTION_PAYLOAD) into `(offset within buf, event)` pairs.
pub fn split_events(buf: &[u8]) -> impl Iterator<Item = Result<(usize, &[u8]), ErrorKind>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            pos = buf.len();
            return Some(Err(ErrorKind::Truncated {
                what: "nested event header",
                needed: HEADER_LEN,
                available: rest.len(),
            }));
        }
        let len = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            pos = buf.len();
            return Some(Err(ErrorKind::BadEventLength { length: len as u32 }));
        }
        let at = pos;
        pos += len;
        Some(Ok((at, &rest[..len])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(len: usize, t: u8) -> Vec<u8> {
        let mut e = vec![0u8; len];
        e[4] = t;
        e[9..13].copy_from_slice(&(len as u32).to_le_bytes());
        e
    }

    #[test]
    fn reassembles_events_split_across_reads() {
        let mut stream = MAGIC.to_vec();
        stream.extend(event(30, 2));
        stream.extend(event(100_000, 30));
        stream.extend(event(19, 3));
        for chunk in [1, 7, 19, 4096, 1 << 20] {
            let mut b = EventBuffer::new(0);
            let mut got = vec![];
            let mut magic = false;
            for piece in stream.chunks(chunk) {
                b.extend(piece);
                if !magic {
                    magic = b.take_magic().unwrap();
                    if !magic {
                        continue;
                    }
                }
                while let Some((pos, ev)) = b.next_event().unwrap() {
                    got.push((pos, ev.len(), ev[4]));
                }
            }
            b.finish().unwrap();
            assert_eq!(
                got,
                vec![(4, 30, 2), (34, 100_000, 30), (100_034, 19, 3)],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn truncated_tail_is_reported_with_position() {
        let mut b = EventBuffer::new(4);
        let e = event(50, 2);
        b.extend(&e[..30]);
        assert!(b.next_event().unwrap().is_none());
        let err = b.finish().unwrap_err();
        assert_eq!(err.pos, 4);
        assert!(matches!(
            err.kind,
            ErrorKind::Truncated {
                needed: 50,
                available: 30,
                ..
            }
        ));
    }

    #[test]
    fn oversized_length_is_an_error_not_an_allocation() {
        let mut b = EventBuffer::new(0);
        b.set_max_event(1000);
        b.extend(&event(19, 2)[..19]);
        let mut big = event(19, 2);
        big[9..13].copy_from_slice(&5000u32.to_le_bytes());
        let mut b2 = EventBuffer::new(0);
        b2.set_max_event(1000);
        b2.extend(&big);
        assert!(matches!(
            b2.next_event(),
            Err(DecodeError {
                kind: ErrorKind::BadEventLength { length: 5000 },
                ..
            })
        ));
        assert!(b.next_event().unwrap().is_some());
    }
}

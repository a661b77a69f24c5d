//! Packet framing: `length u24 | sequence u8 | payload`.
//!
//! A payload of `0xFF_FFFF` bytes or more is split into packets of exactly `0xFF_FFFF` bytes
//! followed by one shorter packet (possibly empty); every packet carries the next sequence
//! id. [`Framer::take`] reassembles them. A payload that fits one packet is split off the
//! read buffer without copying; only payloads of 16 MiB and more are copied, once, to join
//! their pieces.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Largest payload of one packet; a packet this long is continued by the next.
pub const MAX_PACKET: usize = 0xFF_FFFF;
/// Length of a packet header.
pub const HEADER_LEN: usize = 4;

/// What [`Framer::take`] found at the front of the buffer.
#[derive(Debug)]
pub enum Take {
    /// A whole payload.
    Payload(Bytes),
    /// Not enough bytes yet; the buffer must hold at least this many before a payload can be
    /// taken (a hint for how much to read).
    Need(usize),
}

/// Reassembles payloads from a byte stream and checks sequence ids.
#[derive(Debug, Clone)]
pub struct Framer {
    next_seq: u8,
    max_payload: usize,
}

impl Framer {
    /// A framer that accepts payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Framer {
            next_seq: 0,
            max_payload,
        }
    }

    /// The sequence id the next packet (received or sent) must carry.
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// Starts a new command: sequence ids restart at 0.
    pub fn reset(&mut self) {
        self.next_seq = 0;
    }

    /// Sets the next sequence id (after a TLS upgrade, the handshake continues its count).
    pub fn set_next_seq(&mut self, seq: u8) {
        self.next_seq = seq;
    }

    /// Takes one whole payload from the front of `buf`, or says how many bytes it needs.
    ///
    /// Sequence ids are checked against the expected count. Nothing is consumed until the
    /// whole payload is there, so a call after more bytes arrive starts over cleanly.
    pub fn take(&mut self, buf: &mut BytesMut) -> Result<Take, ProtocolError> {
        let mut offset = 0usize;
        let mut total = 0usize;
        let mut seq = self.next_seq;
        let mut packets = 0usize;
        loop {
            let Some(h) = buf.get(offset..offset + HEADER_LEN) else {
                return Ok(Take::Need(offset + HEADER_LEN));
            };
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            if h[3] != seq {
                return Err(ProtocolError::new(
                    "packet",
                    format!("sequence id {} where {} was expected", h[3], seq),
                ));
            }
            total += len;
            if total > self.max_payload {
                return Err(ProtocolError::new(
                    "packet",
                    format!(
                        "payload of at least {total} bytes exceeds the limit of {} bytes",
                        self.max_payload
                    ),
                ));
            }
            seq = seq.wrapping_add(1);
            packets += 1;
            let end = offset + HEADER_LEN + len;
            if buf.len() < end {
                return Ok(Take::Need(end));
            }
            offset = end;
            if len < MAX_PACKET {
                break;
            }
        }
        self.next_seq = seq;
        if packets == 1 {
            buf.advance(HEADER_LEN);
            return Ok(Take::Payload(buf.split_to(total).freeze()));
        }
        // A payload of 16 MiB or more: join the pieces (one copy, only for such payloads).
        let mut joined = BytesMut::with_capacity(total);
        let mut rest = &buf[..offset];
        while !rest.is_empty() {
            let len = usize::from(rest[0]) | usize::from(rest[1]) << 8 | usize::from(rest[2]) << 16;
            joined.extend_from_slice(&rest[HEADER_LEN..HEADER_LEN + len]);
            rest = &rest[HEADER_LEN + len..];
        }
        buf.advance(offset);
        Ok(Take::Payload(joined.freeze()))
    }

    /// Appends `payload` to `out` as one or more packets with the next sequence ids.
    pub fn write(&mut self, payload: &[u8], out: &mut BytesMut) {
        self.write_parts(&[], payload, out);
    }

    /// Frames the payload `head` followed by `body` (a command byte and its argument)
    /// without joining them first.
    pub fn write_parts(&mut self, head: &[u8], body: &[u8], out: &mut BytesMut) {
        let len = head.len() + body.len();
        out.reserve(len + HEADER_LEN * (len / MAX_PACKET + 1));
        let (mut head, mut body) = (head, body);
        loop {
            let n = (head.len() + body.len()).min(MAX_PACKET);
            out.put_uint_le(n as u64, 3);
            out.put_u8(self.next_seq);
            self.next_seq = self.next_seq.wrapping_add(1);
            let from_head = n.min(head.len());
            out.put_slice(&head[..from_head]);
            head = &head[from_head..];
            out.put_slice(&body[..n - from_head]);
            body = &body[n - from_head..];
            // A piece of exactly MAX_PACKET bytes says "more follows", so a payload whose
            // length is a multiple of it ends with an empty packet.
            if n < MAX_PACKET {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(framer: &mut Framer, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = vec![];
        while let Take::Payload(p) = framer.take(buf).unwrap() {
            out.push(p);
        }
        out
    }

    #[test]
    fn round_trips_small_and_huge_payloads_in_any_chunking() {
        let sizes = [
            0usize,
            1,
            300,
            MAX_PACKET - 1,
            MAX_PACKET,
            MAX_PACKET + 5,
            2 * MAX_PACKET,
        ];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut writer = Framer::new(usize::MAX);
        let mut wire = BytesMut::new();
        for p in &payloads {
            writer.write(p, &mut wire);
        }
        for chunk in [wire.len(), 7 << 20, 1 << 16] {
            let mut reader = Framer::new(usize::MAX);
            let mut buf = BytesMut::new();
            let mut got = vec![];
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                got.extend(frame_all(&mut reader, &mut buf));
            }
            assert!(buf.is_empty());
            assert_eq!(got.len(), payloads.len(), "chunk {chunk}");
            for (g, p) in got.iter().zip(&payloads) {
                assert!(g[..] == p[..], "payload of {} bytes differs", p.len());
            }
        }
    }

    #[test]
    fn parts_frame_as_their_concatenation() {
        for (head, body) in [
            (1usize, 0usize),
            (1, 300),
            (1, MAX_PACKET - 1),
            (1, MAX_PACKET),
            (3, 2 * MAX_PACKET - 2),
        ] {
            let head: Vec<u8> = (0..head).map(|i| i as u8 ^ 0x5A).collect();
            let body: Vec<u8> = (0..body).map(|i| (i * 7) as u8).collect();
            let joined = [head.clone(), body.clone()].concat();
            let (mut a, mut b) = (Framer::new(usize::MAX), Framer::new(usize::MAX));
            let (mut wa, mut wb) = (BytesMut::new(), BytesMut::new());
            a.write(&joined, &mut wa);
            b.write_parts(&head, &body, &mut wb);
            assert!(wa == wb, "{} + {} bytes", head.len(), body.len());
        }
    }

    #[test]
    fn multiple_of_max_ends_with_empty_packet() {
        let mut w = Framer::new(usize::MAX);
        let mut wire = BytesMut::new();
        w.write(&vec![1u8; MAX_PACKET], &mut wire);
        assert_eq!(wire.len(), MAX_PACKET + 2 * HEADER_LEN);
        assert_eq!(&wire[MAX_PACKET + HEADER_LEN..], &[0, 0, 0, 1]);
        assert_eq!(w.next_seq(), 2);
    }

    #[test]
    fn single_packet_payload_is_not_copied() {
        let mut w = Framer::new(1000);
        let mut buf = BytesMut::with_capacity(64);
        w.write(b"hello", &mut buf);
        let base = buf.as_ptr() as usize;
        let mut r = Framer::new(1000);
        let Take::Payload(p) = r.take(&mut buf).unwrap() else {
            panic!("no payload")
        };
        assert_eq!(&p[..], b"hello");
        assert_eq!(p.as_ptr() as usize, base + HEADER_LEN, "payload was copied");
    }

    #[test]
    fn wrong_sequence_and_oversize_are_errors() {
        let mut buf = BytesMut::from(&[1u8, 0, 0, 3, 0][..]);
        let err = Framer::new(100).take(&mut buf).unwrap_err();
        assert!(err.to_string().contains("sequence id 3"), "{err}");
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0][..]);
        let err = Framer::new(100).take(&mut buf).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn need_reports_bytes_required() {
        let mut buf = BytesMut::from(&[10u8, 0, 0, 0, 1, 2][..]);
        assert!(matches!(
            Framer::new(100).take(&mut buf).unwrap(),
            Take::Need(14)
        ));
        let mut empty = BytesMut::new();
        assert!(matches!(
            Framer::new(100).take(&mut empty).unwrap(),
            Take::Need(4)
        ));
    }
}

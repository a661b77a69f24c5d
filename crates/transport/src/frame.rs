//! The relay protocol's messages and their framing (sans-IO).
//!
//! # Design note
//!
//! **Layout.** Every message travels as one frame on a QUIC stream:
//!
//! ```text
//! frame = len:u32le type:u8 body[len - 1]
//!
//! type 1 Hello   magic "OFLW" version:u16le           sender -> receiver, first on the control stream
//! type 2 Resume  last_durable:u64le                   receiver -> sender, answer to Hello
//! type 3 Batch   seq:u64le payload[..]                sender -> receiver, on data streams
//! type 4 Ack     seq:u64le                            receiver -> sender, cumulative
//! type 5 Error   code:u16le message[..] (UTF-8)       either way, before closing
//! type 6 Received seq:u64le                           receiver -> sender, cumulative
//! ```
//!
//! Ack and Received are both cumulative. Ack: every batch up to `seq` is durable at the
//! receiver, so the sender's spool may drop them. Received (version 2): every batch up to
//! `seq` was taken by the receiver's sink, which holds it in work it has not made durable
//! yet (a source transaction in parts, applied into one open target transaction): the
//! sender counts it out of its window, so a unit larger than the window still flows, but
//! keeps it in its spool until the Ack. If the receiver drops such work (a retry, a
//! restart), it closes the connection with [`ErrorCode::Rewind`] or just goes away, and
//! the next connection resumes after the last durable batch as always.
//!
//! `len` counts the type byte and the body. The sender opens one bidirectional control stream
//! (Hello, then Acks and Errors come back on it) and several unidirectional data streams that
//! carry only Batch frames, so one lost packet stalls one stream, not the link.
//!
//! **Invariants.** A frame never exceeds the configured maximum (checked from the length
//! prefix, before any body is buffered, so a forged length cannot make the peer allocate);
//! bodies have exactly the size their type implies; the batch payload is opaque bytes.
//!
//! **Errors.** Any defect is a [`FrameError`] that says what was wrong and where in the stream;
//! the glue answers with an Error frame and closes the connection, and the session resumes from
//! the last acknowledged batch on the next connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Identifies outflow's relay protocol in Hello.
pub const MAGIC: [u8; 4] = *b"OFLW";
/// Protocol version this build speaks.
pub const VERSION: u16 = 2;
/// Bytes before a frame's body: length and type.
pub const FRAME_HEADER_LEN: usize = 5;
/// Bytes of a Batch frame before its payload: length, type, sequence number.
pub const BATCH_HEADER_LEN: usize = FRAME_HEADER_LEN + 8;
/// Default bound on a frame, in bytes: a batch payload of 64 MiB plus headers.
pub const DEFAULT_MAX_FRAME: u32 = (64 << 20) + BATCH_HEADER_LEN as u32;

const TYPE_HELLO: u8 = 1;
const TYPE_RESUME: u8 = 2;
const TYPE_BATCH: u8 = 3;
const TYPE_ACK: u8 = 4;
const TYPE_ERROR: u8 = 5;
const TYPE_RECEIVED: u8 = 6;

/// A relay protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender introduces itself.
    Hello {
        /// Protocol version.
        version: u16,
    },
    /// The receiver's answer: where the sender must resume.
    Resume {
        /// Highest sequence number the receiver holds durably (0 for none).
        last_durable: u64,
    },
    /// One batch.
    Batch {
        /// Sequence number assigned by the sender's spool.
        seq: u64,
        /// Opaque payload (a codec frame).
        payload: Bytes,
    },
    /// Every batch up to `seq` is durable on the receiver.
    Ack {
        /// Highest durable sequence number.
        seq: u64,
    },
    /// Every batch up to `seq` was taken by the receiver's sink but is not durable yet:
    /// out of the sender's window, still in its spool (see the module documentation).
    Received {
        /// Highest sequence number taken.
        seq: u64,
    },
    /// The peer gives up on the connection, and why.
    Error {
        /// One of [`ErrorCode`]'s values.
        code: u16,
        /// Human-readable reason.
        message: String,
    },
}

/// Codes carried by Error frames and QUIC application close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Orderly shutdown.
    Shutdown = 0,
    /// A frame could not be decoded.
    Frame = 1,
    /// A well-formed message broke the protocol (wrong order, sequence out of window...).
    Protocol = 2,
    /// The receiver could not make a batch durable.
    Sink = 3,
    /// The peers cannot agree (version, resume point).
    Incompatible = 4,
    /// A newer connection from the same sender replaced this one.
    Replaced = 5,
    /// The receiver dropped the batches it had taken but not made durable (to apply them
    /// again): reconnect and resume after the last durable one.
    Rewind = 6,
}

impl ErrorCode {
    /// The code for a number from the wire.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        Some(match code {
            0 => ErrorCode::Shutdown,
            1 => ErrorCode::Frame,
            2 => ErrorCode::Protocol,
            3 => ErrorCode::Sink,
            4 => ErrorCode::Incompatible,
            5 => ErrorCode::Replaced,
            6 => ErrorCode::Rewind,
            _ => return None,
        })
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the maximum frame size.
    #[error("frame at stream offset {offset} announces {len} bytes, over the maximum of {max}")]
    Oversized {
        /// Stream offset of the frame.
        offset: u64,
        /// Announced length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// A zero length prefix: not even a type byte.
    #[error("frame at stream offset {offset} has length 0")]
    Empty {
        /// Stream offset of the frame.
        offset: u64,
    },
    /// An unknown message type.
    #[error("frame at stream offset {offset} has unknown type {kind}")]
    UnknownType {
        /// Stream offset of the frame.
        offset: u64,
        /// The type byte.
        kind: u8,
    },
    /// The body does not have the size its type needs.
    #[error("{what} frame at stream offset {offset} has a {len}-byte body, expected {expected}")]
    BadBody {
        /// Message type name.
        what: &'static str,
        /// Stream offset of the frame.
        offset: u64,
        /// Body length found.
        len: usize,
        /// What the type needs.
        expected: &'static str,
    },
    /// A Hello that is not outflow's.
    #[error("Hello at stream offset {offset} lacks the OFLW magic: not an outflow peer")]
    BadMagic {
        /// Stream offset of the frame.
        offset: u64,
    },
    /// An Error frame whose message is not UTF-8.
    #[error("Error frame at stream offset {offset} has a message that is not UTF-8")]
    BadText {
        /// Stream offset of the frame.
        offset: u64,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame at offset {offset}: {have} of {need} bytes")]
    Truncated {
        /// Stream offset of the incomplete frame.
        offset: u64,
        /// Bytes the frame needs (header only, when the header is incomplete).
        need: u64,
        /// Bytes received.
        have: u64,
    },
}

impl Message {
    /// Bytes this message takes on the wire.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN
            + match self {
                Message::Hello { .. } => 6,
                Message::Resume { .. } | Message::Ack { .. } | Message::Received { .. } => 8,
                Message::Batch { payload, .. } => 8 + payload.len(),
                Message::Error { message, .. } => 2 + message.len(),
            }
    }

    /// Appends the frame to `out`. A Batch's payload is copied; use [`batch_header`] to send
    /// it without the copy.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = (self.encoded_len() - 4) as u32;
        out.reserve(self.encoded_len());
        out.put_u32_le(len);
        match self {
            Message::Hello { version } => {
                out.put_u8(TYPE_HELLO);
                out.put_slice(&MAGIC);
                out.put_u16_le(*version);
            }
            Message::Resume { last_durable } => {
                out.put_u8(TYPE_RESUME);
                out.put_u64_le(*last_durable);
            }
            Message::Batch { seq, payload } => {
                out.put_u8(TYPE_BATCH);
                out.put_u64_le(*seq);
                out.put_slice(payload);
            }
            Message::Ack { seq } => {
                out.put_u8(TYPE_ACK);
                out.put_u64_le(*seq);
            }
            Message::Received { seq } => {
                out.put_u8(TYPE_RECEIVED);
                out.put_u64_le(*seq);
            }
            Message::Error { code, message } => {
                out.put_u8(TYPE_ERROR);
                out.put_u16_le(*code);
                out.put_slice(message.as_bytes());
            }
        }
    }

    /// The frame as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }
}

/// The header of a Batch frame whose `payload_len`-byte payload follows separately, so the
/// glue can hand the payload to QUIC without copying it.
pub fn batch_header(seq: u64, payload_len: usize) -> [u8; BATCH_HEADER_LEN] {
    let mut out = [0u8; BATCH_HEADER_LEN];
    out[..4].copy_from_slice(&((1 + 8 + payload_len) as u32).to_le_bytes());
    out[4] = TYPE_BATCH;
    out[5..].copy_from_slice(&seq.to_le_bytes());
    out
}

/// Splits a byte stream into messages. Feed it chunks as they arrive; it buffers at most one
/// frame (bounded by `max_frame`).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: u32,
    /// Stream offset of `buf[0]`.
    offset: u64,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame` bytes (length prefix included).
    pub fn new(max_frame: u32) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame,
            offset: 0,
        }
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Message>, FrameError> {
        let offset = self.offset;
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix);
        if len == 0 {
            return Err(FrameError::Empty { offset });
        }
        if len > self.max_frame.saturating_sub(4) {
            return Err(FrameError::Oversized {
                offset,
                len,
                max: self.max_frame,
            });
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            // Reserve once for the whole frame rather than growing chunk by chunk.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        self.offset += total as u64;
        frame.advance(4);
        let kind = frame.get_u8();
        let body = frame.freeze();
        parse_body(kind, body, offset).map(Some)
    }

    /// Call at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = match self.buf.first_chunk::<4>() {
            Some(prefix) => 4 + u64::from(u32::from_le_bytes(*prefix)),
            None => 4,
        };
        Err(FrameError::Truncated {
            offset: self.offset,
            need,
            have: self.buf.len() as u64,
        })
    }
}

fn parse_body(kind: u8, mut body: Bytes, offset: u64) -> Result<Message, FrameError> {
    let bad = |what, expected| FrameError::BadBody {
        what,
        offset,
        len: body.len(),
        expected,
    };
    Ok(match kind {
        TYPE_HELLO => {
            if body.len() != 6 {
                return Err(bad("Hello", "6"));
            }
            if body[..4] != MAGIC {
                return Err(FrameError::BadMagic { offset });
            }
            body.advance(4);
            Message::Hello {
                version: body.get_u16_le(),
            }
        }
        TYPE_RESUME => {
            if body.len() != 8 {
                return Err(bad("Resume", "8"));
            }
            Message::Resume {
                last_durable: body.get_u64_le(),
            }
        }
        TYPE_BATCH => {
            if body.len() < 8 {
                return Err(bad("Batch", "at least 8"));
            }
            let seq = body.get_u64_le();
            Message::Batch { seq, payload: body }
        }
        TYPE_ACK => {
            if body.len() != 8 {
                return Err(bad("Ack", "8"));
            }
            Message::Ack {
                seq: body.get_u64_le(),
            }
        }
        TYPE_RECEIVED => {
            if body.len() != 8 {
                return Err(bad("Received", "8"));
            }
            Message::Received {
                seq: body.get_u64_le(),
            }
        }
        TYPE_ERROR => {
            if body.len() < 2 {
                return Err(bad("Error", "at least 2"));
            }
            let code = body.get_u16_le();
            let message = std::str::from_utf8(&body)
                .map_err(|_| FrameError::BadText { offset })?
                .to_owned();
            Message::Error { code, message }
        }
        kind => return Err(FrameError::UnknownType { offset, kind }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello { version: VERSION },
            Message::Resume { last_durable: 77 },
            Message::Batch {
                seq: 5,
                payload: Bytes::from_static(b"payload"),
            },
            Message::Batch {
                seq: u64::MAX,
                payload: Bytes::new(),
            },
            Message::Ack { seq: 9 },
            Message::Received { seq: 11 },
            Message::Error {
                code: ErrorCode::Protocol as u16,
                message: "nope".into(),
            },
        ]
    }

    #[test]
    fn round_trips_byte_by_byte() {
        let mut wire = BytesMut::new();
        for m in all_messages() {
            m.encode(&mut wire);
        }
        let mut decoder = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for byte in wire.iter() {
            decoder.push(&[*byte]);
            while let Some(m) = decoder.decode().expect("decode") {
                got.push(m);
            }
        }
        decoder.finish().expect("ends on a frame boundary");
        assert_eq!(got, all_messages());
    }

    #[test]
    fn batch_header_matches_encode() {
        let payload = Bytes::from_static(b"abcdef");
        let whole = Message::Batch {
            seq: 42,
            payload: payload.clone(),
        }
        .to_bytes();
        let mut split = batch_header(42, payload.len()).to_vec();
        split.extend_from_slice(&payload);
        assert_eq!(whole.as_ref(), split.as_slice());
    }

    #[test]
    fn oversized_frame_is_refused_from_its_prefix() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&Message::Ack { seq: 1 }.to_bytes());
        assert_eq!(decoder.decode(), Ok(Some(Message::Ack { seq: 1 })));
        decoder.push(&u32::MAX.to_le_bytes());
        let err = decoder.decode().expect_err("oversized");
        assert_eq!(
            err,
            FrameError::Oversized {
                offset: 13,
                len: u32::MAX,
                max: 100
            }
        );
        assert_eq!(
            err.to_string(),
            "frame at stream offset 13 announces 4294967295 bytes, over the maximum of 100"
        );
    }

    #[test]
    fn forged_bodies_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0, 0, 0], "has length 0"),
            (vec![1, 0, 0, 0, 9], "unknown type 9"),
            (
                vec![3, 0, 0, 0, 4, 1, 2],
                "Ack frame at stream offset 0 has a 2-byte body",
            ),
            (
                vec![7, 0, 0, 0, 1, b'X', b'X', b'X', b'X', 1, 0],
                "lacks the OFLW magic",
            ),
            (
                vec![4, 0, 0, 0, 3, 1, 2, 3],
                "Batch frame at stream offset 0 has a 3-byte body",
            ),
            (vec![4, 0, 0, 0, 5, 1, 0, 0xff], "not UTF-8"),
        ];
        for (bytes, want) in cases {
            let mut decoder = FrameDecoder::new(100);
            decoder.push(&bytes);
            let err = decoder.decode().expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut decoder = FrameDecoder::new(100);
        let frame = Message::Ack { seq: 3 }.to_bytes();
        decoder.push(&frame[..7]);
        assert_eq!(decoder.decode(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated {
                offset: 0,
                need: 13,
                have: 7
            })
        );
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&frame[..2]);
        assert_eq!(decoder.decode(), Ok(None));
        assert!(decoder.finish().is_err());
    }
}

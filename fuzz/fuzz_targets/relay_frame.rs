//! Bytes from a relay peer through the frame decoder and both protocol sessions.
//!
//! Input: 2 control bytes, then the stream.
//! - byte 0: seed for the sizes of the pieces the stream is cut into;
//! - byte 1: bit 0 selects the receiver's data-stream session (else the sender's control
//!   stream after a Resume).
//!
//! Checks: no panic, a decoded frame re-encodes to the bytes it came from, a refused frame is
//! never followed by another decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow_transport::frame::{FrameDecoder, Message};
use outflow_transport::protocol::{ReceiverSession, SenderSession, SenderWindow};

/// Largest frame the target accepts: enough for real batches, small enough for the fuzzer.
const MAX_FRAME: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&[seed, mode], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut receiver = ReceiverSession::new(3, 1 << 16);
    let mut sender = SenderSession::new(SenderWindow::default());
    let now = std::time::Instant::now();
    if sender.on_resume(3, 100).is_err() {
        return;
    }
    for _ in 0..20 {
        sender.on_sent(10, now);
    }
    let mut rest = stream;
    let mut piece = usize::from(seed % 31) + 1;
    let mut consumed = Vec::new();
    'feed: while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(piece.min(rest.len()));
        rest = tail;
        piece = (piece * 7 + 3) % 61 + 1;
        decoder.push(chunk);
        consumed.extend_from_slice(chunk);
        loop {
            match decoder.decode() {
                Ok(Some(message)) => {
                    let bytes = message.to_bytes();
                    assert_eq!(bytes.len(), message.encoded_len());
                    assert!(
                        consumed.starts_with(&bytes),
                        "re-encoding differs from the input"
                    );
                    consumed.drain(..bytes.len());
                    let outcome = if mode & 1 == 1 {
                        receiver.on_data(message).map(drop)
                    } else {
                        sender.on_message(message, now).map(drop)
                    };
                    if outcome.is_err() {
                        break 'feed;
                    }
                    while receiver.next_deliverable().is_some() {}
                    let _ = receiver.poll_ack();
                }
                Ok(None) => break,
                Err(e) => {
                    // Refusals name an offset and say what is wrong.
                    assert!(!e.to_string().is_empty());
                    break 'feed;
                }
            }
        }
    }
    let _ = decoder.finish();
    let _ = Message::Ack { seq: 0 }.to_bytes();
});

//! The relay protocol's two state machines (sans-IO): what the sender may send next and what an
//! acknowledgement means; what the receiver must deliver, drop as a duplicate, or acknowledge.
//!
//! Exactly-once rests on three rules kept here. The receiver delivers batches to its sink in
//! sequence order, each once, and acknowledges cumulatively only what the sink has made durable.
//! On every connection the receiver first tells the sender the last sequence number it holds
//! durably, and the sender resumes right after it. Anything at or below that number that still
//! arrives (a retransmission from an older connection, a batch re-sent after a lost ack) is
//! recognised by its number and dropped.
//!
//! A sink may take a batch without making it durable yet (a unit of work spanning batches,
//! see [`Delivered`]): the receiver then tells the sender with Received, which frees the
//! sender's window but not its spool, so a unit larger than the window cannot stall the
//! link while nothing of it is lost before the Ack.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::frame::{Message, VERSION};

/// A well-formed message that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A message that this side never expects, or not now.
    #[error("unexpected {what} {when}")]
    Unexpected {
        /// The message type.
        what: &'static str,
        /// In which state.
        when: &'static str,
    },
    /// A Hello with another protocol version.
    #[error("peer speaks relay protocol version {theirs}, this side speaks {ours}")]
    Version {
        /// The peer's version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// The receiver claims to hold batches the sender's spool never produced: the spool was
    /// reset or belongs to another source, and sending would have them dropped as duplicates.
    #[error(
        "receiver holds batches up to {last_durable} but the spool has only produced up to {spool_last}: \
         spool reset or pointed at the wrong receiver"
    )]
    ReceiverAhead {
        /// The receiver's resume point.
        last_durable: u64,
        /// Last sequence number the spool produced.
        spool_last: u64,
    },
    /// An acknowledgement for a batch never sent on this connection.
    #[error("acknowledgement of {ack} but only up to {sent} was sent")]
    AckBeyondSent {
        /// Acknowledged sequence number.
        ack: u64,
        /// Highest sent.
        sent: u64,
    },
    /// An acknowledgement lower than one already received.
    #[error("acknowledgement went backwards from {before} to {ack}")]
    AckBackwards {
        /// Earlier acknowledgement.
        before: u64,
        /// This one.
        ack: u64,
    },
    /// The sender sent more than the receiver's reorder window holds.
    #[error(
        "batch {seq} would hold {held} bytes waiting for batch {waiting_for}, over the window of {max}"
    )]
    WindowExceeded {
        /// The batch.
        seq: u64,
        /// Bytes that would be held.
        held: u64,
        /// The batch everything waits for.
        waiting_for: u64,
        /// The receiver's window.
        max: u64,
    },
    /// The peer sent an Error frame.
    #[error("peer reported error {code}: {message}")]
    Peer {
        /// Its code.
        code: u16,
        /// Its message.
        message: String,
    },
}

/// What a sink did with a batch it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The batch, and every one before it, is durable: acknowledge it.
    Durable,
    /// Taken into work that becomes durable only with a later batch: the sender may send
    /// on (Received), but keeps the batch until an Ack covers it.
    Held,
    /// Held, as above, and every batch up to this earlier one is now durable: a sink that
    /// finishes batch N while it takes batch N + 1 (to prepare it meanwhile).
    Trailing(u64),
    /// The sink dropped every batch after the last durable one (to apply them again):
    /// delivery must start over after [`ReceiverSession::durable`], on a new connection.
    Rewind,
}

fn unexpected(message: &Message, when: &'static str) -> ProtocolError {
    let what = match message {
        Message::Hello { .. } => "Hello",
        Message::Resume { .. } => "Resume",
        Message::Batch { .. } => "Batch",
        Message::Ack { .. } => "Ack",
        Message::Received { .. } => "Received",
        Message::Error { .. } => "Error",
    };
    ProtocolError::Unexpected { what, when }
}

/// Sender window limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderWindow {
    /// Payload bytes sent but neither acknowledged nor received (see Received). To keep a link full this must exceed
    /// bandwidth × RTT (for 1 Gbit/s at 100 ms: 12.5 MB). A single batch larger than the window
    /// is still sent when nothing else is in flight.
    pub max_bytes: u64,
    /// Batches sent but neither acknowledged nor received.
    pub max_batches: u64,
}

impl Default for SenderWindow {
    fn default() -> Self {
        SenderWindow {
            max_bytes: 64 << 20,
            max_batches: 4096,
        }
    }
}

/// What an acknowledgement (or a Received) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Every batch up to this one is durable on the far side (the spool may drop them).
    pub up_to: u64,
    /// Batches newly out of the window (acknowledged or received).
    pub batches: u64,
    /// Payload bytes newly out of the window.
    pub bytes: u64,
    /// Time from sending the newest newly acknowledged batch to its acknowledgement, an
    /// end-to-end latency including the far side's fsync or apply.
    pub latency: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderState {
    AwaitResume,
    Running,
}

/// The sender's side of one connection.
#[derive(Debug)]
pub struct SenderSession {
    state: SenderState,
    window: SenderWindow,
    acked: u64,
    /// Highest batch the receiver took (durable or not).
    received: u64,
    next: u64,
    in_flight: VecDeque<(u64, u64, Instant)>,
    in_flight_bytes: u64,
}

impl SenderSession {
    /// A new connection's session; send [`SenderSession::hello`] first.
    pub fn new(window: SenderWindow) -> SenderSession {
        SenderSession {
            state: SenderState::AwaitResume,
            window,
            acked: 0,
            received: 0,
            next: 1,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    /// The first message on the control stream.
    pub fn hello(&self) -> Message {
        Message::Hello { version: VERSION }
    }

    /// Handles the receiver's Resume. `spool_next` is the spool's next sequence number.
    /// Returns the first sequence number to send; the caller acknowledges everything before it
    /// in the spool.
    pub fn on_resume(&mut self, last_durable: u64, spool_next: u64) -> Result<u64, ProtocolError> {
        if self.state != SenderState::AwaitResume {
            return Err(ProtocolError::Unexpected {
                what: "Resume",
                when: "after the session started",
            });
        }
        if last_durable >= spool_next {
            return Err(ProtocolError::ReceiverAhead {
                last_durable,
                spool_last: spool_next - 1,
            });
        }
        self.state = SenderState::Running;
        self.acked = last_durable;
        self.received = last_durable;
        self.next = last_durable + 1;
        Ok(self.next)
    }

    /// Handles a message from the control stream (after Resume): acknowledgements and errors.
    pub fn on_message(
        &mut self,
        message: Message,
        now: Instant,
    ) -> Result<Option<Acked>, ProtocolError> {
        match message {
            Message::Ack { seq } if self.state == SenderState::Running => {
                self.on_ack(seq, now).map(Some)
            }
            Message::Received { seq } if self.state == SenderState::Running => {
                self.on_received(seq, now).map(Some)
            }
            Message::Error { code, message } => Err(ProtocolError::Peer { code, message }),
            other => Err(unexpected(
                &other,
                if self.state == SenderState::Running {
                    "on the sender's control stream"
                } else {
                    "before Resume"
                },
            )),
        }
    }

    fn on_ack(&mut self, seq: u64, now: Instant) -> Result<Acked, ProtocolError> {
        if seq < self.acked {
            return Err(ProtocolError::AckBackwards {
                before: self.acked,
                ack: seq,
            });
        }
        let acked = self.take_in_flight(seq, now)?;
        self.acked = seq;
        self.received = self.received.max(seq);
        Ok(acked)
    }

    /// Received: out of the window, not out of the spool.
    fn on_received(&mut self, seq: u64, now: Instant) -> Result<Acked, ProtocolError> {
        if seq < self.received {
            return Err(ProtocolError::AckBackwards {
                before: self.received,
                ack: seq,
            });
        }
        let mut acked = self.take_in_flight(seq, now)?;
        acked.up_to = self.acked;
        self.received = seq;
        Ok(acked)
    }

    /// Removes the batches up to `seq` from the window.
    fn take_in_flight(&mut self, seq: u64, now: Instant) -> Result<Acked, ProtocolError> {
        if seq >= self.next {
            return Err(ProtocolError::AckBeyondSent {
                ack: seq,
                sent: self.next - 1,
            });
        }
        let mut acked = Acked {
            up_to: seq,
            batches: 0,
            bytes: 0,
            latency: None,
        };
        while let Some(&(s, len, sent_at)) = self.in_flight.front() {
            if s > seq {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_bytes -= len;
            acked.batches += 1;
            acked.bytes += len;
            acked.latency = Some(now.saturating_duration_since(sent_at));
        }
        Ok(acked)
    }

    /// Whether the window has room for a batch of `len` payload bytes.
    pub fn can_send(&self, len: u64) -> bool {
        self.state == SenderState::Running
            && (self.in_flight.is_empty()
                || (self.in_flight_bytes + len <= self.window.max_bytes
                    && (self.in_flight.len() as u64) < self.window.max_batches))
    }

    /// Sequence number of the next batch to send.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Batches and payload bytes in flight.
    pub fn in_flight(&self) -> (u64, u64) {
        (self.in_flight.len() as u64, self.in_flight_bytes)
    }

    /// Records that batch [`SenderSession::next_seq`] of `len` payload bytes was handed to a
    /// stream.
    pub fn on_sent(&mut self, len: u64, now: Instant) {
        self.in_flight.push_back((self.next, len, now));
        self.in_flight_bytes += len;
        self.next += 1;
    }
}

/// What the receiver did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Already durable or already held: dropped.
    Duplicate,
    /// Held until it can be delivered in order.
    Accepted,
}

/// The receiver's protocol state. It outlives connections: the sequence numbers it has made
/// durable are the resume point of the next connection.
#[derive(Debug)]
pub struct ReceiverSession {
    /// Highest sequence number the sink holds durably.
    durable: u64,
    /// Highest sequence number handed to the sink.
    dispatched: u64,
    /// Highest sequence number the sink took (durable or held, see [`Delivered`]).
    received: u64,
    received_sent: u64,
    held: BTreeMap<u64, Bytes>,
    held_bytes: u64,
    max_held_bytes: u64,
    acked_sent: u64,
    ack_forced: bool,
    hello_seen: bool,
    duplicates: u64,
}

impl ReceiverSession {
    /// A receiver whose sink holds everything up to `durable`. It holds at most
    /// `max_held_bytes` of batches waiting for an earlier one; this must be at least the
    /// sender's window.
    pub fn new(durable: u64, max_held_bytes: u64) -> ReceiverSession {
        ReceiverSession {
            durable,
            dispatched: durable,
            received: durable,
            received_sent: durable,
            held: BTreeMap::new(),
            held_bytes: 0,
            max_held_bytes,
            acked_sent: durable,
            ack_forced: false,
            hello_seen: false,
            duplicates: 0,
        }
    }

    /// Starts a new connection: batches held for the old one are dropped (the sender resumes
    /// after [`ReceiverSession::durable`] and sends them again).
    pub fn reset_connection(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
        // Deliveries finish before a connection is dropped, so nothing is between the two.
        self.dispatched = self.durable;
        self.received = self.durable;
        self.received_sent = self.durable;
        self.hello_seen = false;
        self.acked_sent = self.durable;
    }

    /// Handles a message from the control stream: Hello, answered with Resume.
    pub fn on_control(&mut self, message: Message) -> Result<Message, ProtocolError> {
        match message {
            Message::Hello { version } if !self.hello_seen => {
                if version != VERSION {
                    return Err(ProtocolError::Version {
                        theirs: version,
                        ours: VERSION,
                    });
                }
                self.hello_seen = true;
                Ok(Message::Resume {
                    last_durable: self.durable,
                })
            }
            Message::Error { code, message } => Err(ProtocolError::Peer { code, message }),
            other => Err(unexpected(&other, "on the receiver's control stream")),
        }
    }

    /// Handles a message from a data stream.
    pub fn on_data(&mut self, message: Message) -> Result<BatchOutcome, ProtocolError> {
        let Message::Batch { seq, payload } = message else {
            return Err(unexpected(&message, "on a data stream"));
        };
        if seq <= self.dispatched || self.held.contains_key(&seq) {
            self.duplicates += 1;
            // The sender may have lost our ack; tell it again.
            self.ack_forced = true;
            return Ok(BatchOutcome::Duplicate);
        }
        let held = self.held_bytes + payload.len() as u64;
        if held > self.max_held_bytes && !self.held.is_empty() {
            return Err(ProtocolError::WindowExceeded {
                seq,
                held,
                waiting_for: self.dispatched + 1,
                max: self.max_held_bytes,
            });
        }
        self.held_bytes = held;
        self.held.insert(seq, payload);
        Ok(BatchOutcome::Accepted)
    }

    /// The next batch to hand to the sink, in sequence order, once.
    pub fn next_deliverable(&mut self) -> Option<(u64, Bytes)> {
        let entry = self.held.first_entry()?;
        if *entry.key() != self.dispatched + 1 {
            return None;
        }
        let seq = *entry.key();
        let payload = entry.remove();
        self.held_bytes -= payload.len() as u64;
        self.dispatched = seq;
        Some((seq, payload))
    }

    /// The sink made `seq` durable.
    pub fn on_durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
        self.received = self.received.max(seq);
    }

    /// What the sink said about batch `seq` ([`Delivered`]). Returns `false` for
    /// [`Delivered::Rewind`]: the connection must end, and the next one resumes after
    /// [`ReceiverSession::durable`].
    pub fn on_delivered(&mut self, seq: u64, how: Delivered) -> bool {
        match how {
            Delivered::Durable => self.on_durable(seq),
            Delivered::Held => self.received = self.received.max(seq),
            Delivered::Trailing(durable) => {
                self.on_durable(durable.min(seq));
                self.received = self.received.max(seq);
            }
            Delivered::Rewind => return false,
        }
        true
    }

    /// The acknowledgement to send now, if any: an Ack when something became durable (or
    /// a duplicate arrived), else a Received when the sink took more.
    pub fn poll_ack(&mut self) -> Option<Message> {
        if self.durable > self.acked_sent || (self.ack_forced && self.durable > 0) {
            self.acked_sent = self.durable;
            self.ack_forced = false;
            self.received_sent = self.received_sent.max(self.durable);
            return Some(Message::Ack { seq: self.durable });
        }
        self.ack_forced = false;
        if self.received > self.received_sent {
            self.received_sent = self.received;
            return Some(Message::Received { seq: self.received });
        }
        None
    }

    /// Highest sequence number the sink holds durably.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Duplicates dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> Message {
        Message::Batch {
            seq,
            payload: Bytes::from(vec![seq as u8; 10]),
        }
    }

    #[test]
    fn sender_resumes_after_the_receivers_durable_point() {
        let now = Instant::now();
        let mut s = SenderSession::new(SenderWindow::default());
        assert!(!s.can_send(1));
        assert_eq!(s.on_resume(7, 20), Ok(8));
        assert!(s.can_send(10));
        s.on_sent(10, now);
        s.on_sent(10, now);
        assert_eq!(s.in_flight(), (2, 20));
        let acked = s
            .on_message(Message::Ack { seq: 8 }, now)
            .expect("ack")
            .expect("acked");
        assert_eq!((acked.up_to, acked.batches, acked.bytes), (8, 1, 10));
        assert_eq!(
            s.on_message(Message::Ack { seq: 10 }, now),
            Err(ProtocolError::AckBeyondSent { ack: 10, sent: 9 })
        );
        assert_eq!(
            s.on_message(Message::Ack { seq: 7 }, now),
            Err(ProtocolError::AckBackwards { before: 8, ack: 7 })
        );
        // A repeated ack is harmless.
        assert!(s.on_message(Message::Ack { seq: 8 }, now).is_ok());
    }

    #[test]
    fn sender_refuses_a_receiver_ahead_of_the_spool() {
        let mut s = SenderSession::new(SenderWindow::default());
        let err = s.on_resume(100, 50).expect_err("ahead");
        assert!(err.to_string().contains("spool reset"), "{err}");
    }

    #[test]
    fn sender_window_limits_bytes_and_batches() {
        let now = Instant::now();
        let mut s = SenderSession::new(SenderWindow {
            max_bytes: 100,
            max_batches: 3,
        });
        s.on_resume(0, 1).expect("resume");
        assert!(s.can_send(1000), "an oversized batch goes alone");
        s.on_sent(60, now);
        assert!(!s.can_send(41));
        assert!(s.can_send(40));
        s.on_sent(20, now);
        s.on_sent(10, now);
        assert!(!s.can_send(1), "batch limit");
    }

    #[test]
    fn receiver_delivers_in_order_once_and_acks_only_durable() {
        let mut r = ReceiverSession::new(4, 1000);
        assert_eq!(
            r.on_control(Message::Hello { version: VERSION }),
            Ok(Message::Resume { last_durable: 4 })
        );
        assert_eq!(r.on_data(batch(6)), Ok(BatchOutcome::Accepted));
        assert_eq!(r.next_deliverable(), None, "5 is missing");
        assert_eq!(r.on_data(batch(4)), Ok(BatchOutcome::Duplicate));
        assert_eq!(r.on_data(batch(5)), Ok(BatchOutcome::Accepted));
        assert_eq!(r.next_deliverable().map(|(s, _)| s), Some(5));
        assert_eq!(
            r.on_data(batch(5)),
            Ok(BatchOutcome::Duplicate),
            "dispatched, not yet durable"
        );
        assert_eq!(r.next_deliverable().map(|(s, _)| s), Some(6));
        assert_eq!(r.next_deliverable(), None);
        // Duplicates force a re-ack, but nothing beyond what is durable.
        assert_eq!(r.poll_ack(), Some(Message::Ack { seq: 4 }));
        r.on_durable(5);
        assert_eq!(r.poll_ack(), Some(Message::Ack { seq: 5 }));
        assert_eq!(r.poll_ack(), None);
        r.on_durable(6);
        assert_eq!(r.poll_ack(), Some(Message::Ack { seq: 6 }));
        assert_eq!(r.duplicates(), 2);
    }

    #[test]
    fn a_trailing_sink_acknowledges_the_batch_before_the_one_it_takes() {
        let mut r = ReceiverSession::new(0, 1000);
        for seq in 1..=3 {
            r.on_data(batch(seq)).expect("batch");
        }
        assert_eq!(r.next_deliverable().map(|(q, _)| q), Some(1));
        assert!(r.on_delivered(1, Delivered::Held));
        assert_eq!(r.poll_ack(), Some(Message::Received { seq: 1 }));
        for seq in 2..=3 {
            assert_eq!(r.next_deliverable().map(|(q, _)| q), Some(seq));
            assert!(r.on_delivered(seq, Delivered::Trailing(seq - 1)));
        }
        assert_eq!(r.durable(), 2);
        assert_eq!(r.poll_ack(), Some(Message::Ack { seq: 2 }));
        assert_eq!(r.poll_ack(), Some(Message::Received { seq: 3 }));
        // The last one, finished on its own (`BatchSink::settle`).
        assert!(r.on_delivered(3, Delivered::Durable));
        assert_eq!(r.poll_ack(), Some(Message::Ack { seq: 3 }));
        assert_eq!(r.poll_ack(), None);
    }

    #[test]
    fn held_batches_free_the_window_but_are_acknowledged_only_when_durable() {
        let now = Instant::now();
        let mut r = ReceiverSession::new(0, 1000);
        let mut s = SenderSession::new(SenderWindow {
            max_bytes: 1000,
            max_batches: 2,
        });
        s.on_resume(0, 100).expect("resume");
        for seq in 1..=2 {
            s.on_sent(10, now);
            r.on_data(batch(seq)).expect("batch");
        }
        assert!(!s.can_send(10), "window full");
        for seq in 1..=2 {
            assert_eq!(r.next_deliverable().map(|(q, _)| q), Some(seq));
            assert!(r.on_delivered(seq, Delivered::Held));
        }
        let m = r.poll_ack().expect("received");
        assert_eq!(m, Message::Received { seq: 2 });
        assert_eq!(r.poll_ack(), None);
        let got = s.on_message(m, now).expect("ok").expect("acked");
        assert_eq!(
            (got.up_to, got.batches),
            (0, 2),
            "out of the window, not the spool"
        );
        assert!(s.can_send(10));
        assert_eq!(s.acked(), 0);
        s.on_sent(10, now);
        r.on_data(batch(3)).expect("batch");
        r.next_deliverable();
        assert!(r.on_delivered(3, Delivered::Durable));
        let m = r.poll_ack().expect("ack");
        assert_eq!(m, Message::Ack { seq: 3 });
        assert_eq!(r.poll_ack(), None);
        assert_eq!(s.on_message(m, now).expect("ok").map(|a| a.up_to), Some(3));
        assert_eq!(s.in_flight(), (0, 0));
        // Received may not go back or beyond what was sent.
        assert!(s.on_message(Message::Received { seq: 2 }, now).is_err());
        assert!(s.on_message(Message::Received { seq: 4 }, now).is_err());
        // A rewind: nothing is acknowledged, and the next connection resumes after 3.
        s.on_sent(10, now);
        r.on_data(batch(4)).expect("batch");
        r.next_deliverable();
        assert!(!r.on_delivered(4, Delivered::Rewind));
        assert_eq!(r.poll_ack(), None);
        r.reset_connection();
        assert_eq!(
            r.on_control(Message::Hello { version: VERSION }),
            Ok(Message::Resume { last_durable: 3 })
        );
    }

    #[test]
    fn receiver_bounds_what_it_holds() {
        let mut r = ReceiverSession::new(0, 25);
        assert_eq!(r.on_data(batch(2)), Ok(BatchOutcome::Accepted));
        assert_eq!(r.on_data(batch(3)), Ok(BatchOutcome::Accepted));
        let err = r.on_data(batch(4)).expect_err("over the window");
        assert!(matches!(
            err,
            ProtocolError::WindowExceeded {
                seq: 4,
                waiting_for: 1,
                ..
            }
        ));
    }

    #[test]
    fn receiver_rejects_wrong_messages() {
        let mut r = ReceiverSession::new(0, 100);
        assert!(r.on_control(Message::Hello { version: 99 }).is_err());
        assert!(r.on_control(Message::Ack { seq: 1 }).is_err());
        assert!(r.on_data(Message::Ack { seq: 1 }).is_err());
        r.on_control(Message::Hello { version: VERSION })
            .expect("hello");
        assert!(
            r.on_control(Message::Hello { version: VERSION }).is_err(),
            "second Hello"
        );
    }

    /// Both sessions in one process: batches reordered across streams, acknowledgements
    /// delayed, connections cut at random with everything in flight lost, the receiver's sink
    /// lagging. Every batch must reach the sink once, in order.
    #[test]
    fn simulation_with_reordering_and_disconnects_delivers_exactly_once() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        const N: u64 = 2000;
        let now = Instant::now();
        let window = SenderWindow {
            max_bytes: 200,
            max_batches: 8,
        };
        let mut spool_acked = 0u64;
        let mut receiver = ReceiverSession::new(0, 400);
        let mut sink: Vec<u64> = Vec::new();
        // Batches in flight when a connection dropped, replayed later as a hostile or confused
        // peer might: each must be recognised by its number.
        let mut stale: Vec<Message> = Vec::new();
        let mut replays = 0;
        let mut pending_durable: Vec<u64> = Vec::new();
        let mut disconnects = 0;
        let mut steps = 0;
        while spool_acked < N {
            steps += 1;
            assert!(steps < 1_000_000, "no progress: acked {spool_acked}");
            // A new connection.
            receiver.reset_connection();
            let mut sender = SenderSession::new(window);
            let Message::Resume { last_durable } =
                receiver.on_control(sender.hello()).expect("hello")
            else {
                panic!("no Resume");
            };
            assert!(last_durable >= spool_acked, "receiver went backwards");
            sender.on_resume(last_durable, N + 1).expect("resume");
            spool_acked = spool_acked.max(last_durable);
            let mut to_receiver: Vec<Message> = Vec::new();
            let mut to_sender: Vec<Message> = Vec::new();
            loop {
                steps += 1;
                match rand(100) {
                    // Send.
                    0..=29 => {
                        let seq = sender.next_seq();
                        if seq <= N && sender.can_send(10) {
                            sender.on_sent(10, now);
                            to_receiver.push(batch(seq));
                        }
                    }
                    // Deliver a batch from any stream: reordering.
                    30..=54 if !to_receiver.is_empty() => {
                        let i = rand(to_receiver.len() as u64) as usize;
                        let message = to_receiver.swap_remove(i);
                        receiver.on_data(message).expect("batch");
                        while let Some((seq, _)) = receiver.next_deliverable() {
                            pending_durable.push(seq);
                        }
                    }
                    // The sink finishes its oldest batch.
                    55..=69 if !pending_durable.is_empty() => {
                        let seq = pending_durable.remove(0);
                        sink.push(seq);
                        receiver.on_durable(seq);
                        if let Some(ack) = receiver.poll_ack() {
                            to_sender.push(ack);
                        }
                    }
                    // An acknowledgement arrives (in order: one control stream).
                    70..=89 if !to_sender.is_empty() => {
                        let ack = to_sender.remove(0);
                        match sender.on_message(ack, now) {
                            Ok(Some(acked)) => spool_acked = spool_acked.max(acked.up_to),
                            Ok(None) => {}
                            // A replayed batch the sender never sent on this connection was
                            // made durable and acknowledged: the sender refuses an ack it
                            // cannot account for and the glue reconnects.
                            Err(ProtocolError::AckBeyondSent { .. }) => {
                                to_receiver.clear();
                                for seq in pending_durable.drain(..) {
                                    sink.push(seq);
                                    receiver.on_durable(seq);
                                }
                                break;
                            }
                            Err(e) => panic!("ack: {e}"),
                        }
                    }
                    // A batch from an old connection turns up.
                    91..=93 if !stale.is_empty() => {
                        let i = rand(stale.len() as u64) as usize;
                        receiver.on_data(stale.swap_remove(i)).expect("replay");
                        replays += 1;
                        while let Some((seq, _)) = receiver.next_deliverable() {
                            pending_durable.push(seq);
                        }
                    }
                    // The connection drops; the sink finishes what it was given first.
                    90 => {
                        stale.append(&mut to_receiver);
                        stale.truncate(32);
                        for seq in pending_durable.drain(..) {
                            sink.push(seq);
                            receiver.on_durable(seq);
                        }
                        disconnects += 1;
                        break;
                    }
                    _ => {}
                }
                if spool_acked == N {
                    break;
                }
            }
        }
        assert!(disconnects > 20, "only {disconnects} disconnects");
        assert!(replays > 20, "only {replays} replays");
        assert!(receiver.duplicates() > 0);
        assert_eq!(sink, (1..=N).collect::<Vec<_>>(), "exactly once, in order");
    }
}

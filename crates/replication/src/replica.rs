//! A replica session: the binlog stream, the decoder and the position tracker together,
//! with reconnection that resumes at the last transaction boundary and delivers nothing
//! twice.
//!
//! After a break, the server replays the open transaction from its start. The events of it
//! that were delivered before the break are decoded again (so TABLE_MAPs are known) but
//! their rows are held back; delivery resumes with the first event not seen before.

use std::time::Duration;

use outflow_binlog::walk::{Visitor, Walker};

use crate::position::{PositionTracker, StartPosition, Tracked};
use crate::stream::{BinlogStream, ServerInfo};
use crate::{ConnectOptions, Error};

/// An error of a [`Replica`]: the connection's, or the consumer's (decoding included).
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError<E> {
    /// The replication connection failed; see [`Error::class`].
    #[error(transparent)]
    Replication(#[from] Error),
    /// The visitor (or the decoder feeding it) failed.
    #[error(transparent)]
    Consumer(E),
}

/// A replica session that can reconnect.
pub struct Replica {
    opts: ConnectOptions,
    stream: Option<BinlogStream>,
    walker: Walker,
    tracker: PositionTracker,
    info: ServerInfo,
}

impl Replica {
    /// Connects and starts the dump at `from`.
    pub async fn connect(opts: ConnectOptions, from: &StartPosition) -> Result<Replica, Error> {
        let stream = BinlogStream::connect(&opts, from).await?;
        let mut walker = Walker::new();
        walker
            .decoder()
            .set_pre_format_checksum(stream.server().checksum);
        Ok(Replica {
            tracker: PositionTracker::new(stream.start()),
            info: stream.server().clone(),
            stream: Some(stream),
            walker,
            opts,
        })
    }

    /// Reads the next event and hands what it carries to `visitor`. `Ok(false)` when a
    /// non-blocking dump reached the end of the binlog. After a retryable error, call
    /// [`Replica::reconnect`].
    pub async fn next<V: Visitor>(
        &mut self,
        visitor: &mut V,
    ) -> Result<bool, ReplicaError<V::Error>> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::Closed {
                addr: self.opts.addr(),
                during: "streaming binlog events (call reconnect after an error)",
            }
            .into());
        };
        let event = match stream.next_event().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.stream = None;
                return Ok(false);
            }
            Err(e) => {
                self.stream = None;
                return Err(e.into());
            }
        };
        let pos = self.tracker.event_pos(&event);
        let deliver = !self.tracker.is_replay(&event);
        let mut v = Tracked {
            tracker: &mut self.tracker,
            inner: visitor,
            deliver,
        };
        self.walker
            .process(pos, &event, &mut v)
            .map_err(ReplicaError::Consumer)?;
        let open = self.walker.decoder().in_transaction();
        self.tracker.finish_event(&event, open);
        Ok(true)
    }

    /// Reconnects (one attempt) from the end of the last committed transaction.
    pub async fn reconnect(&mut self) -> Result<(), Error> {
        self.stream = None;
        self.tracker.start_replay();
        let from = self.tracker.resume_from();
        tracing::info!(addr = %self.opts.addr(), %from, "reconnecting");
        let stream = BinlogStream::connect(&self.opts, &from).await?;
        self.walker
            .decoder()
            .set_pre_format_checksum(stream.server().checksum);
        self.info = stream.server().clone();
        self.stream = Some(stream);
        Ok(())
    }

    /// Reconnects with [`Backoff`] until it works, a fatal error occurs, or `give_up_after`
    /// has passed since the first attempt.
    pub async fn reconnect_with_backoff(
        &mut self,
        backoff: &mut Backoff,
        give_up_after: Duration,
    ) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match self.reconnect().await {
                Ok(()) => {
                    backoff.reset();
                    return Ok(());
                }
                Err(e) if e.is_retryable() && started.elapsed() < give_up_after => {
                    tracing::warn!(error = %e, "reconnect failed; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The position tracker (file, offset, last commit, resume position).
    pub fn tracker(&self) -> &PositionTracker {
        &self.tracker
    }

    /// The walker, to adjust its decoder (table hook, limits).
    pub fn walker(&mut self) -> &mut Walker {
        &mut self.walker
    }

    /// What the server said about itself at the last connect.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// Ends the session politely.
    pub async fn close(self) {
        if let Some(s) = self.stream {
            s.close().await;
        }
    }
}

/// Exponential backoff between reconnect attempts (sans-IO: returns delays).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}

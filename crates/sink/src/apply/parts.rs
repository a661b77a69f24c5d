//! Source transactions in parts: the bookkeeping of the open target transaction that
//! spans frames (see "Transactions in parts" in the parent module).

use outflow_core::ChangeBatch;

use super::{Applied, Applier, ApplyError, Failure};

/// What the chunk being applied is, with respect to a transaction in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// Whole source transactions: a target transaction of its own.
    Whole,
    /// A first part: starts the target transaction and leaves it open.
    Opens,
    /// A middle part: runs in the open target transaction and leaves it open.
    Continues,
    /// A last part: runs in the open target transaction and commits it, with the
    /// checkpoint.
    Closes,
}

impl Span {
    /// Whether the chunk starts its target transaction (and checks the checkpoint).
    pub(super) fn starts(self) -> bool {
        matches!(self, Span::Whole | Span::Opens)
    }

    /// Whether the chunk ends its target transaction with the checkpoint and a commit.
    pub(super) fn commits(self) -> bool {
        matches!(self, Span::Whole | Span::Closes)
    }
}

/// The open target transaction of a source transaction in parts.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenParts {
    /// Frame of the first part.
    first_seq: u64,
    /// Frame of the last part applied.
    last_seq: u64,
    /// Parts are applied in careful mode (a replay after an anomaly).
    careful: bool,
}

/// How to apply the transaction in parts from frame `first_seq` when it is delivered
/// again after [`ApplyError::Rewind`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Replay {
    first_seq: u64,
    careful: bool,
    /// Rewinds after deadlocks or lock-wait timeouts so far.
    retries: u32,
}

/// What [`Applier::apply`] does after [`Applier::parts_first`].
pub(super) enum Step {
    /// The frame is done.
    Done(Applied),
    /// Go on with the frame from the checkpoint; `superseded`: the frames of the open
    /// transaction, between the checkpoint and this one, were dropped (the source side
    /// sends the transaction again from its start in this frame); `closed`: the row
    /// changes of the transaction in parts this frame has just committed (its first), if any.
    Go {
        superseded: bool,
        closed: Option<u64>,
    },
}

impl Applier {
    /// Whether the parts of the open transaction run in careful mode.
    pub(super) fn careful_parts(&self) -> bool {
        self.open_parts.is_some_and(|o| o.careful)
    }

    /// Whether a target transaction holding parts of a source transaction is open: its
    /// frames are not durable, and a lost connection loses them.
    pub fn has_open_parts(&self) -> bool {
        self.open_parts.is_some()
    }

    /// Handles frame `seq` while a transaction in parts is open: applies the next part
    /// (and commits, if the transaction ends here), or rolls the open transaction back
    /// when the frame does not continue it.
    pub(super) async fn parts_first(
        &mut self,
        seq: u64,
        batch: &ChangeBatch,
    ) -> Result<Step, ApplyError> {
        let Some(open) = self.open_parts else {
            return Ok(Step::Go {
                superseded: false,
                closed: None,
            });
        };
        if !(batch.continued() && seq == open.last_seq + 1) {
            self.rollback_parts().await?;
            return Ok(Step::Go {
                superseded: !batch.continued() && seq == open.last_seq + 1,
                closed: None,
            });
        }
        self.prepare_plans(batch).await?;
        let n = batch.transactions().len();
        let closes = n > 1 || !batch.continues();
        self.part = if closes {
            Span::Closes
        } else {
            Span::Continues
        };
        let applied = self.apply_chunk(seq, batch, 0, 1).await;
        self.part = Span::Whole;
        let changes = match applied {
            Ok(changes) => changes,
            Err(e) => {
                self.open_parts = None;
                self.drop_held();
                return Err(e);
            }
        };
        if !closes {
            self.open_parts = Some(OpenParts {
                last_seq: seq,
                ..open
            });
            return Ok(Step::Done(Applied::Held));
        }
        self.open_parts = None;
        self.replay_parts = None;
        if n == 1 {
            self.stats.frames += 1;
            return Ok(Step::Done(Applied::Frame {
                transactions: 1,
                changes,
            }));
        }
        // The checkpoint now covers the frame's first transaction: the rest as usual.
        Ok(Step::Go {
            superseded: false,
            closed: Some(changes),
        })
    }

    /// Applies the first part of a source transaction, transaction `part` of frame `seq`
    /// (its last), into a target transaction left open; `first` is the frame's first
    /// transaction still to apply (parts are never checkpointed, so it is at most `part`).
    pub(super) async fn open_part(
        &mut self,
        seq: u64,
        batch: &ChangeBatch,
        first: u32,
        part: u32,
    ) -> Result<u64, ApplyError> {
        debug_assert!(first <= part, "a part is never checkpointed");
        let careful = self
            .replay_parts
            .is_some_and(|r| r.first_seq == seq && r.careful);
        self.open_parts = Some(OpenParts {
            first_seq: seq,
            last_seq: seq,
            careful,
        });
        self.part = Span::Opens;
        let applied = self.apply_chunk(seq, batch, part, part + 1).await;
        self.part = Span::Whole;
        if applied.is_err() {
            self.open_parts = None;
            self.drop_held();
        }
        applied
    }

    /// After a failed attempt of a later part (rolled back already): the open transaction
    /// is gone, and only delivering its frames again can replay it. Returns the error that
    /// asks for that, or `None` where the usual handling applies (a first part retries
    /// within its frame; a fatal error stays fatal).
    pub(super) fn parts_failed(
        &mut self,
        failure: &Failure,
        careful_mode: bool,
        retries: u32,
    ) -> Option<ApplyError> {
        if matches!(self.part, Span::Whole | Span::Opens) {
            return None;
        }
        let open = self.open_parts.take()?;
        self.drop_held();
        let earlier = self.replay_parts.filter(|r| r.first_seq == open.first_seq);
        let (careful, retries, why) = match failure {
            Failure::Fatal(_) => return None,
            Failure::Anomaly => (
                true,
                earlier.map_or(retries, |r| r.retries),
                "a statement met an unexpected row count: replay in careful mode",
            ),
            Failure::Retry => (
                careful_mode || open.careful,
                earlier.map_or(0, |r| r.retries) + 1,
                "deadlock or lock wait timeout",
            ),
        };
        if retries > self.cfg.retries {
            return Some(ApplyError::Statement {
                table: "-".to_string(),
                what: "a source transaction in parts (deadlocks persisted)",
                position: format!("frame {}", open.first_seq),
                source: crate::target::TargetError::State(
                    "deadlock or lock wait timeout after all retries",
                ),
            });
        }
        self.replay_parts = Some(Replay {
            first_seq: open.first_seq,
            careful,
            retries,
        });
        Some(ApplyError::Rewind {
            stream: self.cfg.stream.clone(),
            first_seq: open.first_seq,
            why,
        })
    }

    /// Forgets what a rolled-back transaction in parts had applied, but for its retries
    /// and careful replays, which did happen.
    fn drop_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.stats.retries += held.retries;
        self.stats.careful_replays += held.careful_replays;
    }

    /// Rolls back the open transaction of parts (they are delivered again, or superseded).
    async fn rollback_parts(&mut self) -> Result<(), ApplyError> {
        if let Some(open) = self.open_parts.take() {
            self.drop_held();
            tracing::info!(
                first_seq = open.first_seq,
                last_seq = open.last_seq,
                "rolling back an unfinished source transaction in parts (delivered again, or sent again from its start)"
            );
            self.conn
                .run("ROLLBACK")
                .await
                .map_err(|source| ApplyError::Connection {
                    what: "rolling back a source transaction in parts".to_string(),
                    source,
                })?;
        }
        Ok(())
    }
}

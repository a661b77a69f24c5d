//! The far side: QUIC receiver -> frame decoder -> applier, acknowledging a batch only once
//! the target has committed it together with its checkpoint (`outflow-sink`).
//!
//! The receiver asks [`ApplySink::last_durable`] where the target stands (the checkpoint
//! row) and the sender resumes after it; a batch delivered again is recognised by its
//! sequence number against the checkpoint and skipped. A lost target connection is
//! reconnected with backoff and the batch re-applied from the checkpoint, so neither a
//! restart of this process nor of the target loses or repeats a change. A frame that ends
//! with a DDL statement goes through the same call: the applier runs the statement after
//! the frame's rows, by the configured policy, and a `stop` policy ends the sink with an
//! error naming the statement.
//!
//! A frame is applied when the next one arrives (or when no further frame is waiting,
//! [`BatchSink::settle`]): meanwhile the next one is decoded and its statements built on
//! another thread, so the target's connections do not wait for that between frames. Its
//! acknowledgement trails by a frame ([`Delivered::Trailing`]).
//!
//! A source transaction in parts (several frames) is applied into one open target
//! transaction: its frames are answered [`Delivered::Held`] (the sender may send on but
//! keeps them in its spool) until the frame that commits it. If that open transaction is
//! lost (the target connection fails, or the applier must replay it), the answer is
//! [`Delivered::Rewind`]: the link starts over after the last durable frame, which
//! re-delivers the transaction from its first part.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use outflow_codec::{Decoder, Limits};
use outflow_core::{ChangeBatch, ImageMode};
use outflow_sink::apply::{Applied, Applier, ApplyConfig, ApplyError, ApplyStats, Staged, Stager};
use outflow_transport::{BatchSink, Delivered, SinkError};

use super::split_frames;

/// A [`BatchSink`] that applies each batch to the target database.
pub struct ApplySink {
    opts: mysql_async::Opts,
    cfg: ApplyConfig,
    applier: Option<Applier>,
    /// With the batch buffer, moved to the task that decodes the next frame and back.
    decoder: Option<Decoder>,
    spare: Option<ChangeBatch>,
    /// The frame held back until the next one arrives (or [`BatchSink::settle`]).
    ahead: Option<Ahead>,
    limits: Limits,
    stats: Arc<Mutex<ApplyStats>>,
}

/// A decoded frame not applied yet, with its statements if they could be built ahead.
struct Ahead {
    seq: u64,
    batch: ChangeBatch,
    staged: Option<Staged>,
}

/// What the decoding task gives back.
struct Prepared {
    decoder: Decoder,
    batch: ChangeBatch,
    staged: Option<Staged>,
    result: Result<(), SinkError>,
}

impl ApplySink {
    /// Connects to the target (creating the checkpoint table if needed).
    pub async fn connect(
        opts: mysql_async::Opts,
        cfg: ApplyConfig,
        stats: Arc<Mutex<ApplyStats>>,
    ) -> Result<ApplySink, SinkError> {
        let applier = Applier::connect(opts.clone(), cfg.clone()).await?;
        Ok(ApplySink {
            opts,
            cfg,
            applier: Some(applier),
            decoder: Some(Decoder::new(Limits::default())?),
            spare: None,
            ahead: None,
            limits: Limits::default(),
            stats,
        })
    }

    /// The applier, reconnected with backoff if the last connection was lost.
    async fn applier(&mut self) -> Result<&mut Applier, SinkError> {
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        while self.applier.is_none() {
            match Applier::connect(self.opts.clone(), self.cfg.clone()).await {
                Ok(a) => self.applier = Some(a),
                Err(e) if e.is_retryable() && tries < 60 => {
                    tracing::warn!(error = %e, "target unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.applier
            .as_mut()
            .ok_or_else(|| "target connection missing".into())
    }

    /// Applies a held-back frame: [`Delivered::Durable`] once it is committed (or was
    /// already), [`Delivered::Held`] for part of a transaction that continues, or
    /// [`Delivered::Rewind`].
    async fn apply(&mut self, ahead: Ahead) -> Result<Delivered, SinkError> {
        let Ahead {
            seq,
            batch,
            mut staged,
        } = ahead;
        test_hook_exit(seq, &batch);
        let outcome = loop {
            self.applier().await?;
            let Some(applier) = self.applier.as_mut() else {
                continue;
            };
            if let Some(st) = staged.take() {
                applier.stage_next(st);
            }
            // Parts of a transaction live only in the open target transaction.
            let parts = applier.has_open_parts() || batch.continued() || batch.continues();
            match applier.apply(seq, &batch).await {
                Ok(applied) => {
                    if let Ok(mut s) = self.stats.lock() {
                        s.clone_from(applier.stats());
                    }
                    break Ok(match applied {
                        Applied::Held => Delivered::Held,
                        Applied::Duplicate | Applied::Frame { .. } => Delivered::Durable,
                    });
                }
                Err(e @ ApplyError::Rewind { .. }) => {
                    tracing::warn!(error = %e, seq, "rolled back; delivering again");
                    break Ok(Delivered::Rewind);
                }
                Err(e) if e.is_retryable() => {
                    self.applier = None;
                    if parts {
                        tracing::warn!(error = %e, seq, "target connection lost inside a source transaction in parts; delivering it again");
                        break Ok(Delivered::Rewind);
                    }
                    tracing::warn!(error = %e, seq, "target connection lost; re-applying");
                }
                Err(e) => break Err(e.into()),
            }
        };
        self.spare = Some(batch);
        outcome
    }
}

/// Decodes frame `seq` and builds its statements (on a task of its own, while the frame
/// before it is applied).
fn prepare(
    mut decoder: Decoder,
    mut batch: ChangeBatch,
    payload: Bytes,
    limits: Limits,
    seq: u64,
    stager: Option<Stager>,
) -> Prepared {
    let result = split_frames(&payload, &limits)
        .map_err(SinkError::from)
        .and_then(|frames| {
            // The source side appends each drain of the codec as one record, and the codec
            // cuts batches at transaction boundaries, so a record holds one frame; the
            // applier's checkpoint counts frames by the link's sequence number, which
            // needs exactly that.
            if frames.len() != 1 {
                return Err(format!(
                    "batch {seq} holds {} frames where the source side writes one",
                    frames.len()
                )
                .into());
            }
            decoder.decode(frames[0], &mut batch)?;
            Ok(())
        });
    let staged = match (&result, stager) {
        (Ok(()), Some(stager)) => Some(stager.stage(seq, &batch)),
        _ => None,
    };
    Prepared {
        decoder,
        batch,
        staged,
        result,
    }
}

impl BatchSink for ApplySink {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        let applier = self.applier().await?;
        Ok(applier
            .last_applied()
            .map_or(0, |cp| cp.next_seq().saturating_sub(1)))
    }

    /// Takes frame `seq` and applies the one before it: the new frame is decoded and its
    /// statements built on another task meanwhile (see `outflow_sink::apply::Stager`), so
    /// the target's connections do not wait for that.
    async fn deliver(&mut self, seq: u64, payload: Bytes) -> Result<Delivered, SinkError> {
        // Delivery starting over (a new connection, or after a rewind) drops what was held
        // back: it was not applied, and comes again.
        let before = self.ahead.take().filter(|a| a.seq + 1 == seq);
        let stager = self.applier.as_mut().map(Applier::stager);
        let decoder = match self.decoder.take() {
            Some(d) => d,
            None => Decoder::new(self.limits)?,
        };
        let batch = self
            .spare
            .take()
            .unwrap_or_else(|| ChangeBatch::new(ImageMode::Replica));
        // Some milliseconds of CPU: a blocking task, not one of the runtime's workers.
        let limits = self.limits;
        let job = tokio::task::spawn_blocking(move || {
            prepare(decoder, batch, payload, limits, seq, stager)
        });
        let applied = match before {
            Some(b) => Some(self.apply(b).await),
            None => None,
        };
        let prepared = job
            .await
            .map_err(|e| format!("decoding batch {seq}: {e}"))?;
        self.decoder = Some(prepared.decoder);
        let how = match applied {
            Some(Err(e)) => return Err(e),
            Some(Ok(Delivered::Rewind)) => {
                self.spare = Some(prepared.batch);
                return Ok(Delivered::Rewind);
            }
            Some(Ok(Delivered::Durable)) => Delivered::Trailing(seq - 1),
            _ => Delivered::Held,
        };
        prepared.result?;
        self.ahead = Some(Ahead {
            seq,
            batch: prepared.batch,
            staged: prepared.staged,
        });
        Ok(how)
    }

    async fn settle(&mut self) -> Result<Option<(u64, Delivered)>, SinkError> {
        let Some(ahead) = self.ahead.take() else {
            return Ok(None);
        };
        let seq = ahead.seq;
        Ok(Some((seq, self.apply(ahead).await?)))
    }
}

/// Test hook: `OUTFLOW_DANGER_TEST_EXIT_AT_PART=N` ends the process when the sink is handed
/// the `N`th frame holding a later part of a source transaction (one that continues an
/// earlier frame), before applying it, so tests can kill the sink while a transaction in
/// parts is open on the target.
fn test_hook_exit(seq: u64, batch: &ChangeBatch) {
    static PARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if batch.continued() {
        super::crash_test_hook(
            "OUTFLOW_DANGER_TEST_EXIT_AT_PART",
            &PARTS,
            &format!("sink: test hook: exiting at frame {seq}, a later part of a transaction"),
        );
    }
}

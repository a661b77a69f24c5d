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
use outflow_sink::apply::{Applied, Applier, ApplyConfig, ApplyError, ApplyStats};
use outflow_transport::{BatchSink, Delivered, SinkError};

use super::split_frames;

/// A [`BatchSink`] that applies each batch to the target database.
pub struct ApplySink {
    opts: mysql_async::Opts,
    cfg: ApplyConfig,
    applier: Option<Applier>,
    decoder: Decoder,
    batch: ChangeBatch,
    limits: Limits,
    stats: Arc<Mutex<ApplyStats>>,
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
            decoder: Decoder::new(Limits::default())?,
            batch: ChangeBatch::new(ImageMode::Replica),
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
}

impl BatchSink for ApplySink {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        let applier = self.applier().await?;
        Ok(applier
            .last_applied()
            .map_or(0, |cp| cp.next_seq().saturating_sub(1)))
    }

    async fn deliver(&mut self, seq: u64, payload: Bytes) -> Result<Delivered, SinkError> {
        let frames = split_frames(&payload, &self.limits)?;
        // The source side appends each drain of the codec as one record, and the codec cuts
        // batches at transaction boundaries, so a record holds one frame; the applier's
        // checkpoint counts frames by the link's sequence number, which needs exactly that.
        if frames.len() != 1 {
            return Err(format!(
                "batch {seq} holds {} frames where the source side writes one",
                frames.len()
            )
            .into());
        }
        self.decoder.decode(frames[0], &mut self.batch)?;
        test_hook_exit(seq, &self.batch);
        loop {
            self.applier().await?;
            let Some(applier) = self.applier.as_mut() else {
                continue;
            };
            // Parts of a transaction live only in the open target transaction.
            let parts =
                applier.has_open_parts() || self.batch.continued() || self.batch.continues();
            match applier.apply(seq, &self.batch).await {
                Ok(applied) => {
                    if let Ok(mut s) = self.stats.lock() {
                        s.clone_from(applier.stats());
                    }
                    return Ok(match applied {
                        Applied::Held => Delivered::Held,
                        Applied::Duplicate | Applied::Frame { .. } => Delivered::Durable,
                    });
                }
                Err(e @ ApplyError::Rewind { .. }) => {
                    tracing::warn!(error = %e, seq, "rolled back; delivering again");
                    return Ok(Delivered::Rewind);
                }
                Err(e) if e.is_retryable() => {
                    self.applier = None;
                    if parts {
                        tracing::warn!(error = %e, seq, "target connection lost inside a source transaction in parts; delivering it again");
                        return Ok(Delivered::Rewind);
                    }
                    tracing::warn!(error = %e, seq, "target connection lost; re-applying");
                }
                Err(e) => return Err(e.into()),
            }
        }
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

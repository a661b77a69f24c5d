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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use outflow_codec::{Decoder, Limits};
use outflow_core::{ChangeBatch, ImageMode};
use outflow_sink::apply::{Applier, ApplyConfig, ApplyStats};
use outflow_transport::{BatchSink, SinkError};

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

    async fn deliver(&mut self, seq: u64, payload: Bytes) -> Result<(), SinkError> {
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
        loop {
            self.applier().await?;
            let Some(applier) = self.applier.as_mut() else {
                continue;
            };
            match applier.apply(seq, &self.batch).await {
                Ok(_) => {
                    if let Ok(mut s) = self.stats.lock() {
                        s.clone_from(applier.stats());
                    }
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, seq, "target connection lost; re-applying");
                    self.applier = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

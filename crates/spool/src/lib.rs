//! outflow's durable spool: an on-disk log of encoded batches, each under a sequence number the
//! spool assigns, kept until the far side acknowledges it.
//!
//! The source side appends every batch here before it is shipped; the transport reads unacked
//! batches back and calls [`Spool::ack`] as acknowledgements arrive. The spool has a size bound:
//! at the bound [`Spool::append`] waits (back pressure up to the binlog reader) and nothing is
//! dropped. It survives a crash at any instant; the format, its invariants and the recovery are
//! described in [`format`]. The far side can use the same spool to hold received batches
//! durably before acknowledging them ([`Spool::append_at`]).
//!
//! Payloads are opaque bytes: framing, compression and meaning belong to the codec. Disk I/O
//! goes through [`io::SpoolIo`], so tests can run the spool on a simulated disk and cut the
//! power between a write and its fsync.

pub mod format;
pub mod io;
mod log;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

pub use crate::io::{DirLock, FsIo, LockError, MemIo, SpoolIo};
pub use crate::log::{Recovery, SpoolLog};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync after every batch: nothing acknowledged to the appender is ever lost.
    Always,
    /// fdatasync when this much time has passed since the last one (checked on append and by a
    /// background task): a crash loses at most that window of batches, which the source then
    /// re-reads from the binlog if it tracks [`SpoolStats::synced`].
    Interval(Duration),
    /// Never fsync (segments are still written in order). A power cut can lose or tear
    /// anything; for tests and benches only.
    DangerNever,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the segment files (created if missing). One spool per directory:
    /// opening takes an exclusive lock on `spool.lock` in it (see [`SpoolIo::lock_dir`]).
    pub dir: PathBuf,
    /// When appends are made durable. Default: [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Bound on the spool's size on disk, in bytes; appends wait above it. Default: 1 GiB.
    pub max_bytes: u64,
    /// Size at which a segment is sealed and a new one started, in bytes. Smaller segments
    /// free disk sooner after acknowledgements; larger ones mean fewer files. At most half of
    /// `max_bytes`. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Largest payload accepted, in bytes; also bounds what recovery believes a header. Default:
    /// 64 MiB.
    pub max_record_bytes: u32,
    /// Recent payloads kept in memory so the sender rarely reads them back from disk, in bytes.
    /// Default: 64 MiB.
    pub cache_bytes: u64,
    /// Sequence number of the first batch of a new, empty spool. Default: 1.
    pub first_seq: u64,
}

impl SpoolConfig {
    /// Defaults for a spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            cache_bytes: 64 << 20,
            first_seq: 1,
        }
    }

    fn validate(&self) -> Result<(), SpoolError> {
        let bad = |why: String| Err(SpoolError::Config(why));
        if self.segment_bytes < 4096 {
            return bad(format!(
                "segment_bytes {} is below 4096",
                self.segment_bytes
            ));
        }
        if self.segment_bytes.saturating_mul(2) > self.max_bytes {
            return bad(format!(
                "segment_bytes {} is more than half of max_bytes {}",
                self.segment_bytes, self.max_bytes
            ));
        }
        if self.first_seq == 0 {
            return bad("first_seq must be at least 1".into());
        }
        Ok(())
    }

    /// The largest payload an append accepts: bounded by `max_record_bytes` and by what fits
    /// in the bound beside a fresh segment's magic.
    pub fn max_payload(&self) -> u64 {
        let room = self
            .max_bytes
            .saturating_sub((format::MAGIC.len() + format::HEADER_LEN) as u64);
        room.min(u64::from(self.max_record_bytes))
    }
}

/// Errors from the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("spool I/O: {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A segment holds bytes the spool did not write: damage to investigate, never skipped.
    #[error("spool segment {} is corrupt at byte {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the defect.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A payload larger than the spool can ever hold.
    #[error("batch of {len} bytes exceeds the spool's largest record of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest accepted.
        max: u64,
    },
    /// An acknowledgement for a batch never appended.
    #[error("acknowledgement of sequence {ack}, but the last appended is {last}")]
    AckBeyond {
        /// Acknowledged sequence number.
        ack: u64,
        /// Last appended sequence number.
        last: u64,
    },
    /// [`Spool::append_at`] with a sequence number that does not follow the last one.
    #[error("append of sequence {seq}, but {expected} must come next")]
    OutOfOrder {
        /// Sequence number given.
        seq: u64,
        /// Sequence number expected.
        expected: u64,
    },
    /// Another process (or another open spool in this one) uses the directory. Two writers
    /// would interleave records and truncate each other's tails.
    #[error("spool directory {} is in use by {}", dir.display(), match holder {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_string(),
    })]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// The holder's process id, if its lock file could be read.
        holder: Option<u32>,
    },
    /// Settings that cannot work.
    #[error("spool configuration: {0}")]
    Config(String),
    /// The blocking task doing the I/O died.
    #[error("spool I/O task failed: {0}")]
    Task(String),
}

/// A snapshot of the spool's size and progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes on disk (including acknowledged records in segments not yet removed).
    pub bytes: u64,
    /// The configured bound.
    pub max_bytes: u64,
    /// Batches appended but not acknowledged.
    pub unacked: u64,
    /// Sequence number of the next append.
    pub next_seq: u64,
    /// Highest acknowledged sequence number.
    pub acked: u64,
    /// Highest sequence number known durable.
    pub synced: u64,
    /// Segment files.
    pub segments: usize,
    /// Age of the oldest unacknowledged batch: the current recovery point objective.
    pub oldest_unacked_age: Option<Duration>,
}

impl SpoolStats {
    /// Whether the spool is at or above 80% of its bound.
    pub fn near_bound(&self) -> bool {
        self.bytes.saturating_mul(5) >= self.max_bytes.saturating_mul(4)
    }
}

/// Wall-clock time in Unix milliseconds.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Inner<I: SpoolIo> {
    log: Mutex<SpoolLog<I>>,
    /// Last appended sequence number.
    appended: watch::Sender<u64>,
    /// Bumped after every acknowledgement, to wake appends waiting for room.
    acked: watch::Sender<u64>,
}

/// The spool, shared between the appender and the sender. Cheap to clone.
pub struct Spool<I: SpoolIo = FsIo> {
    inner: Arc<Inner<I>>,
}

impl<I: SpoolIo> Clone for Spool<I> {
    fn clone(&self) -> Self {
        Spool {
            inner: self.inner.clone(),
        }
    }
}

impl<I: SpoolIo> std::fmt::Debug for Spool<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Spool").field(&*self.lock()).finish()
    }
}

impl Spool<FsIo> {
    /// Opens or creates the spool on the real file system.
    pub fn open(config: SpoolConfig) -> Result<Spool<FsIo>, SpoolError> {
        Spool::open_with(FsIo, config)
    }
}

impl<I: SpoolIo> Spool<I> {
    /// Opens or creates the spool on `io`, recovering from any crash. Under the `Interval`
    /// fsync policy and inside a tokio runtime, starts a task that syncs on time even when
    /// appends stop; it ends with the last clone of the spool.
    pub fn open_with(io: I, config: SpoolConfig) -> Result<Spool<I>, SpoolError> {
        let log = SpoolLog::open(io, config)?;
        let last = log.next_seq() - 1;
        let acked = log.acked();
        let interval = match log.config().fsync {
            FsyncPolicy::Interval(every) => Some(every),
            _ => None,
        };
        let spool = Spool {
            inner: Arc::new(Inner {
                log: Mutex::new(log),
                appended: watch::Sender::new(last),
                acked: watch::Sender::new(acked),
            }),
        };
        if let (Some(every), Ok(runtime)) = (interval, tokio::runtime::Handle::try_current()) {
            runtime.spawn(flusher(Arc::downgrade(&spool.inner), every));
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, SpoolLog<I>> {
        // A panic while holding the lock leaves the bookkeeping possibly half-updated; carrying
        // on could hand out a wrong sequence number, so propagate it.
        self.inner
            .log
            .lock()
            .expect("spool lock poisoned by an earlier panic")
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut SpoolLog<I>) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = inner
                .log
                .lock()
                .expect("spool lock poisoned by an earlier panic");
            work(&mut log)
        })
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))?
    }

    /// Appends a batch, waiting while the spool is at its bound; returns its sequence number.
    /// Returns once the batch is written (and synced, under `FsyncPolicy::Always`).
    pub async fn append(&self, payload: Bytes) -> Result<u64, SpoolError> {
        self.append_inner(None, payload).await
    }

    /// Appends a batch under the caller's sequence number, waiting for room like
    /// [`Spool::append`]. For the far side, which spools batches under the sender's numbers:
    /// `seq` must follow the last one (any number will do on an empty spool).
    pub async fn append_at(&self, seq: u64, payload: Bytes) -> Result<(), SpoolError> {
        self.append_inner(Some(seq), payload).await.map(drop)
    }

    async fn append_inner(&self, seq: Option<u64>, payload: Bytes) -> Result<u64, SpoolError> {
        let mut acked = self.inner.acked.subscribe();
        loop {
            acked.borrow_and_update();
            let len = payload.len();
            let room = self.blocking(move |log| log.make_room(len)).await?;
            if room {
                break;
            }
            // Woken by the next acknowledgement; `borrow_and_update` above ran before the
            // check, so one arriving in between is not missed.
            if acked.changed().await.is_err() {
                return Err(SpoolError::Task("spool closed".into()));
            }
        }
        let now = unix_ms(SystemTime::now());
        let seq = self
            .blocking(move |log| match seq {
                Some(seq) => log.append_at(seq, payload, now).map(|()| seq),
                None => log.append(payload, now),
            })
            .await?;
        self.inner.appended.send_replace(seq);
        Ok(seq)
    }

    /// Records that the far side holds every batch up to `up_to`; removes segments holding
    /// only acknowledged batches and wakes appends waiting for room.
    pub async fn ack(&self, up_to: u64) -> Result<(), SpoolError> {
        self.blocking(move |log| log.ack(up_to)).await?;
        self.inner.acked.send_replace(up_to);
        Ok(())
    }

    /// The payload of batch `seq`, from memory if recent, else from disk (CRC checked).
    pub async fn read(&self, seq: u64) -> Result<Option<Bytes>, SpoolError> {
        if let Some(payload) = self.lock().cached(seq) {
            return Ok(Some(payload));
        }
        self.blocking(move |log| log.read(seq)).await
    }

    /// Makes every appended batch durable now.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        self.blocking(SpoolLog::sync).await
    }

    /// Watches the last appended sequence number.
    pub fn subscribe_appended(&self) -> watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// Sequence number of the next append.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq()
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.lock().acked()
    }

    /// Sizes, progress and the age of the oldest unacknowledged batch.
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats(unix_ms(SystemTime::now()))
    }

    /// Whether `bytes` of payload that cannot be acknowledged until the last of it is
    /// appended (the parts of one source transaction) can ever be held at once: the bound
    /// less one segment, since a segment that also holds acknowledged records before them
    /// is not freed.
    pub fn can_hold_unacked(&self, bytes: u64) -> bool {
        let log = self.lock();
        let c = log.config();
        bytes <= c.max_bytes.saturating_sub(c.segment_bytes)
    }

    /// What recovery found when the spool was opened.
    pub fn recovery(&self) -> Recovery {
        self.lock().recovery().clone()
    }
}

async fn flusher<I: SpoolIo>(inner: Weak<Inner<I>>, every: Duration) {
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let result = tokio::task::spawn_blocking(move || {
            inner
                .log
                .lock()
                .map_err(|_| SpoolError::Task("spool lock poisoned".into()))?
                .sync_if_due()
        })
        .await;
        match result {
            Ok(Ok(next)) => wait = next.unwrap_or(every).max(Duration::from_millis(1)),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "spool: periodic fsync failed");
                wait = every;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;

//! The schema history on disk: a snapshot plus an append-only log.
//!
//! Layout, in a directory of its own:
//! - `schema-snapshot.json`: `{"format": 1, "seq": S, "traits": ..., "state": ...}`, the
//!   tracked state after history entry `S` (0 for the initial load). Replaced atomically
//!   (write a temporary file, fsync, rename, fsync the directory).
//! - `schema-log.jsonl`: one [`HistoryEntry`] per line, sequence numbers `S+1, S+2, ...`
//!   without gaps. Appended and fsynced before the stream position that follows the DDL is
//!   checkpointed, so a checkpoint never refers to a schema the log lacks.
//!
//! Invariants: the log's first entry is `S+1`; entries are contiguous; every line ends in
//! `\n`. Recovery on open: a last line without `\n` is a write torn by a crash (its DDL
//! will be seen again, since no checkpoint can be past it) and is cut off; any other
//! unreadable line, or a gap in the sequence, is corruption and an error.
//!
//! Checkpoints store the stream position together with [`SchemaTracker::seq`]. Opening at
//! a checkpoint's `seq` ([`HistoryStore::open_at`]) replays the log up to it and durably
//! drops later entries: their statements come again from the stream, which restarts at the
//! checkpoint, and are recorded again then. [`HistoryStore::compact`] folds entries up to
//! a given `seq` (the oldest checkpoint still needed) into a new snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HistoryEntry, SchemaState, SchemaTracker, ServerTraits};
use crate::filter::Filter;
use crate::fsutil::replace_file;

const SNAPSHOT: &str = "schema-snapshot.json";
const LOG: &str = "schema-log.jsonl";
const FORMAT: u32 = 1;

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file operation failed.
    #[error("schema history: {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's contents are not what this version writes.
    #[error("schema history: {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Replacing a file failed.
    #[error("schema history: {0}")]
    File(#[from] crate::fsutil::FileError),
    /// The requested point is older than the snapshot (it was compacted away).
    #[error("schema history: entry {seq} was compacted into the snapshot at {snapshot}; cannot rewind before it")]
    Compacted {
        /// The requested entry.
        seq: u64,
        /// The snapshot's entry.
        snapshot: u64,
    },
    /// The requested point is newer than anything recorded.
    #[error("schema history: entry {seq} was never recorded (the log ends at {last})")]
    Missing {
        /// The requested entry.
        seq: u64,
        /// The last entry on disk.
        last: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    seq: u64,
    traits: ServerTraits,
    state: SchemaState,
}

/// The history files of one source.
#[derive(Debug)]
pub struct HistoryStore {
    dir: PathBuf,
    log: File,
    snapshot_seq: u64,
    last_seq: u64,
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> HistoryError + 'p {
    move |source| HistoryError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn entry_line(e: &HistoryEntry) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    let mut line = serde_json::to_vec(e).unwrap_or_default();
    line.push(b'\n');
    line
}

impl HistoryStore {
    /// Whether `dir` holds a history.
    pub fn exists(dir: &Path) -> bool {
        dir.join(SNAPSHOT).exists()
    }

    /// Starts a new history in `dir` (created if missing) from the tracker's current state,
    /// replacing any history there.
    pub fn create(dir: &Path, tracker: &mut SchemaTracker) -> Result<HistoryStore, HistoryError> {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        tracker.take_unsaved();
        let snap = Snapshot {
            format: FORMAT,
            seq: tracker.seq(),
            traits: tracker.traits().clone(),
            state: tracker.state().clone(),
        };
        let bytes = serde_json::to_vec(&snap).unwrap_or_default();
        replace_file(dir, LOG, b"")?;
        replace_file(dir, SNAPSHOT, &bytes)?;
        let log_path = dir.join(LOG);
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(io("opening", &log_path))?;
        Ok(HistoryStore {
            dir: dir.to_path_buf(),
            log,
            snapshot_seq: snap.seq,
            last_seq: snap.seq,
        })
    }

    fn read(dir: &Path) -> Result<(Snapshot, Vec<HistoryEntry>), HistoryError> {
        let sp = dir.join(SNAPSHOT);
        let bytes = fs::read(&sp).map_err(io("reading", &sp))?;
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| HistoryError::Corrupt {
            path: sp.clone(),
            reason: e.to_string(),
        })?;
        if snap.format != FORMAT {
            return Err(HistoryError::Corrupt {
                path: sp,
                reason: format!("format {} (this version reads {FORMAT})", snap.format),
            });
        }
        let lp = dir.join(LOG);
        let f = File::open(&lp).map_err(io("opening", &lp))?;
        let mut r = BufReader::new(f);
        let mut entries = Vec::new();
        let mut line = Vec::new();
        let mut good_len = 0u64;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).map_err(io("reading", &lp))?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // Torn append: cut it off so the next append starts a clean line.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&lp)
                    .map_err(io("opening", &lp))?;
                f.set_len(good_len)
                    .map_err(io("truncating a torn line of", &lp))?;
                f.sync_all().map_err(io("syncing", &lp))?;
                break;
            }
            let e: HistoryEntry =
                serde_json::from_slice(&line).map_err(|e| HistoryError::Corrupt {
                    path: lp.clone(),
                    reason: format!("entry after {good_len} bytes: {e}"),
                })?;
            good_len += n as u64;
            if e.seq <= snap.seq {
                // Left by a crash between the two steps of compact(): already in the snapshot.
                continue;
            }
            let want = snap.seq + entries.len() as u64 + 1;
            if e.seq != want {
                return Err(HistoryError::Corrupt {
                    path: lp.clone(),
                    reason: format!("entry {} where {want} was expected", e.seq),
                });
            }
            entries.push(e);
        }
        Ok((snap, entries))
    }

    /// Opens the history in `dir` with the tracker at its newest entry.
    pub fn open(dir: &Path, scope: Filter) -> Result<(HistoryStore, SchemaTracker), HistoryError> {
        Self::open_inner(dir, scope, None)
    }

    /// Opens the history in `dir` with the tracker at entry `seq` (a checkpoint's), durably
    /// dropping later entries.
    pub fn open_at(
        dir: &Path,
        scope: Filter,
        seq: u64,
    ) -> Result<(HistoryStore, SchemaTracker), HistoryError> {
        Self::open_inner(dir, scope, Some(seq))
    }

    fn open_inner(
        dir: &Path,
        scope: Filter,
        at: Option<u64>,
    ) -> Result<(HistoryStore, SchemaTracker), HistoryError> {
        let (snap, entries) = Self::read(dir)?;
        let last = snap.seq + entries.len() as u64;
        let upto = at.unwrap_or(last);
        if upto < snap.seq {
            return Err(HistoryError::Compacted {
                seq: upto,
                snapshot: snap.seq,
            });
        }
        if upto > last {
            return Err(HistoryError::Missing { seq: upto, last });
        }
        let mut tracker = SchemaTracker::new(snap.state, snap.traits, scope, snap.seq);
        let keep = (upto - snap.seq) as usize;
        for e in &entries[..keep] {
            tracker.replay(e);
        }
        if keep < entries.len() {
            let bytes: Vec<u8> = entries[..keep].iter().flat_map(entry_line).collect();
            replace_file(dir, LOG, &bytes)?;
        }
        let lp = dir.join(LOG);
        let log = OpenOptions::new()
            .append(true)
            .open(&lp)
            .map_err(io("opening", &lp))?;
        Ok((
            HistoryStore {
                dir: dir.to_path_buf(),
                log,
                snapshot_seq: snap.seq,
                last_seq: upto,
            },
            tracker,
        ))
    }

    /// Appends the tracker's unsaved entries and syncs them to disk. Call before
    /// checkpointing a position past the DDL that produced them.
    pub fn save(&mut self, tracker: &mut SchemaTracker) -> Result<(), HistoryError> {
        let entries = tracker.take_unsaved();
        if entries.is_empty() {
            return Ok(());
        }
        let lp = self.dir.join(LOG);
        let mut bytes = Vec::new();
        for e in &entries {
            if e.seq != self.last_seq + 1 {
                return Err(HistoryError::Corrupt {
                    path: lp,
                    reason: format!("entry {} appended after {}", e.seq, self.last_seq),
                });
            }
            self.last_seq = e.seq;
            bytes.extend(entry_line(e));
        }
        self.log
            .write_all(&bytes)
            .map_err(io("appending to", &lp))?;
        self.log.sync_data().map_err(io("syncing", &lp))?;
        Ok(())
    }

    /// The newest entry on disk.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The entry the snapshot stands at.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// Folds entries up to `upto` (no checkpoint older than it will be resumed) into the
    /// snapshot and drops them from the log.
    pub fn compact(&mut self, upto: u64) -> Result<(), HistoryError> {
        let (snap, entries) = Self::read(&self.dir)?;
        let last = snap.seq + entries.len() as u64;
        if upto <= snap.seq {
            return Ok(());
        }
        if upto > last {
            return Err(HistoryError::Missing { seq: upto, last });
        }
        let mut t = SchemaTracker::new(snap.state, snap.traits, Filter::default(), snap.seq);
        let split = (upto - snap.seq) as usize;
        for e in &entries[..split] {
            t.replay(e);
        }
        let new = Snapshot {
            format: FORMAT,
            seq: upto,
            traits: t.traits().clone(),
            state: t.state().clone(),
        };
        // Snapshot first: a crash before the log is rewritten leaves log entries the new
        // snapshot already holds, which read() skips.
        let tail: Vec<u8> = entries[split..].iter().flat_map(entry_line).collect();
        replace_file(
            &self.dir,
            SNAPSHOT,
            &serde_json::to_vec(&new).unwrap_or_default(),
        )?;
        replace_file(&self.dir, LOG, &tail)?;
        let lp = self.dir.join(LOG);
        self.log = OpenOptions::new()
            .append(true)
            .open(&lp)
            .map_err(io("opening", &lp))?;
        self.snapshot_seq = upto;
        Ok(())
    }
}

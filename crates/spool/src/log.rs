//! The spool's synchronous core: segment bookkeeping, append, acknowledge, read back and
//! recovery. The on-disk format and its invariants are described in [`crate::format`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::format::{self, Header, RecordReader, HEADER_LEN, MAGIC};
use crate::io::{DirLock, LockError, SegmentWriter, SpoolIo, LOCK_FILE};
use crate::{FsyncPolicy, SpoolConfig, SpoolError, SpoolStats};

/// Share of the bound above which the spool warns that it is nearly full.
const WARN_RATIO: f64 = 0.8;
/// Share below which a past warning is cleared, so a spool hovering at the threshold does not
/// warn on every append.
const CLEAR_RATIO: f64 = 0.7;

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    records: Vec<Loc>,
    /// File length in bytes.
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    offset: u64,
    len: u32,
    appended_ms: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }
}

/// What recovery found when the spool was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the head segment's torn tail.
    pub truncated_bytes: u64,
    /// Segment offset where the torn tail began, if there was one.
    pub truncated_at: Option<u64>,
    /// Records found.
    pub records: u64,
}

/// The synchronous spool: one owner, blocking I/O. [`crate::Spool`] wraps it for async use.
pub struct SpoolLog<I: SpoolIo> {
    io: I,
    config: SpoolConfig,
    segments: VecDeque<Segment>,
    head: I::Writer,
    next_seq: u64,
    /// Highest acknowledged sequence number (records up to it may still be on disk).
    acked: u64,
    /// Highest sequence number known to be on disk.
    synced: u64,
    last_sync: Instant,
    bytes: u64,
    cache: VecDeque<(u64, Bytes)>,
    cache_bytes: u64,
    warned: bool,
    recovery: Recovery,
    /// Held for the spool's lifetime: no other process opens the directory meanwhile.
    _lock: DirLock,
}

impl<I: SpoolIo> std::fmt::Debug for SpoolLog<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolLog")
            .field("dir", &self.config.dir)
            .field("next_seq", &self.next_seq)
            .field("acked", &self.acked)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { what, path, source }
}

fn corrupt(segment: &Path, offset: u64, reason: impl Into<String>) -> SpoolError {
    SpoolError::Corrupt {
        segment: segment.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

impl<I: SpoolIo> SpoolLog<I> {
    /// Opens (or creates) the spool in `config.dir`, recovering from a crash: see the design
    /// note in [`crate::format`].
    pub fn open(io: I, config: SpoolConfig) -> Result<SpoolLog<I>, SpoolError> {
        config.validate()?;
        let dir = config.dir.clone();
        io.create_dir_all(&dir)
            .map_err(io_err("creating spool directory", &dir))?;
        // Before recovery, which truncates a torn tail that might be another writer's.
        let lock = io.lock_dir(&dir).map_err(|e| match e {
            LockError::Busy { holder } => SpoolError::Locked {
                dir: dir.clone(),
                holder,
            },
            LockError::Io(source) => SpoolError::Io {
                what: "locking",
                path: dir.join(LOCK_FILE),
                source,
            },
        })?;
        let mut firsts = Vec::new();
        for name in io.list(&dir).map_err(io_err("listing", &dir))? {
            if let Some(first) = format::parse_segment_name(&name) {
                firsts.push(first);
            } else if name.ends_with(".seg") {
                return Err(corrupt(&dir.join(&name), 0, "not a segment name"));
            }
        }
        firsts.sort_unstable();

        let mut segments = VecDeque::new();
        let mut bytes = 0;
        let mut expected: Option<u64> = None;
        let last_index = firsts.len().checked_sub(1);
        let mut recovery = Recovery::default();
        let mut head = None;
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(format::segment_name(first));
            if let Some(expected) = expected {
                if first != expected {
                    return Err(corrupt(
                        &path,
                        0,
                        format!("gap between segments: sequence {expected} expected, file starts at {first}"),
                    ));
                }
            }
            let segment = if Some(i) == last_index {
                let (segment, writer) =
                    Self::recover_head(&io, &config, path, first, &mut recovery)?;
                head = Some(writer);
                segment
            } else {
                Self::walk_sealed(&io, &config, path, first)?
            };
            expected = Some(segment.end_seq());
            bytes += segment.len;
            recovery.records += segment.records.len() as u64;
            segments.push_back(segment);
        }
        let head = match head {
            Some(head) => head,
            None => {
                let (segment, writer) = Self::create_segment(&io, &config, config.first_seq)?;
                bytes += segment.len;
                segments.push_back(segment);
                writer
            }
        };
        let next_seq = segments.back().map_or(config.first_seq, Segment::end_seq);
        let first_seq = segments.front().map_or(next_seq, |s| s.first_seq);
        let acked = first_seq - 1;
        Ok(SpoolLog {
            io,
            config,
            segments,
            head,
            next_seq,
            acked,
            synced: next_seq - 1,
            last_sync: Instant::now(),
            bytes,
            cache: VecDeque::new(),
            cache_bytes: 0,
            warned: false,
            recovery,
            _lock: lock,
        })
    }

    fn walk_sealed(
        io: &I,
        config: &SpoolConfig,
        path: PathBuf,
        first: u64,
    ) -> Result<Segment, SpoolError> {
        let len = io.len(&path).map_err(io_err("reading length of", &path))?;
        let mut magic = [0u8; MAGIC.len()];
        if len < MAGIC.len() as u64 {
            return Err(corrupt(&path, 0, "segment shorter than its magic"));
        }
        io.read_at(&path, 0, &mut magic)
            .map_err(io_err("reading", &path))?;
        if &magic != MAGIC {
            return Err(corrupt(&path, 0, "bad magic: not a spool segment"));
        }
        let mut records = Vec::new();
        let mut pos = MAGIC.len() as u64;
        let mut seq = first;
        while pos < len {
            if pos + HEADER_LEN as u64 > len {
                return Err(corrupt(
                    &path,
                    pos,
                    "sealed segment ends inside a record header",
                ));
            }
            let mut head = [0u8; HEADER_LEN];
            io.read_at(&path, pos, &mut head)
                .map_err(io_err("reading", &path))?;
            let header = Header::parse(&head);
            if header.seq != seq {
                return Err(corrupt(
                    &path,
                    pos,
                    format!("sequence {} where {seq} was expected", header.seq),
                ));
            }
            if header.len > config.max_record_bytes {
                return Err(corrupt(
                    &path,
                    pos,
                    format!(
                        "record length {} exceeds the maximum {}",
                        header.len, config.max_record_bytes
                    ),
                ));
            }
            let end = pos + HEADER_LEN as u64 + u64::from(header.len);
            if end > len {
                return Err(corrupt(
                    &path,
                    pos,
                    "sealed segment ends inside a record payload",
                ));
            }
            records.push(Loc {
                offset: pos,
                len: header.len,
                appended_ms: header.appended_ms,
            });
            pos = end;
            seq += 1;
        }
        Ok(Segment {
            first_seq: first,
            path,
            records,
            len,
        })
    }

    fn recover_head(
        io: &I,
        config: &SpoolConfig,
        path: PathBuf,
        first: u64,
        recovery: &mut Recovery,
    ) -> Result<(Segment, I::Writer), SpoolError> {
        let data = io.read_all(&path).map_err(io_err("reading", &path))?;
        if data.len() <= MAGIC.len() && data.as_slice() != MAGIC.as_slice() {
            // Created but its magic never reached the disk: the crash came before any record
            // could have been written to it, so start it afresh.
            tracing::warn!(segment = %path.display(), "spool: rewriting a head segment whose creation was cut short");
            let (segment, writer) = Self::create_segment(io, config, first)?;
            return Ok((segment, writer));
        }
        if !data.starts_with(MAGIC) {
            return Err(corrupt(&path, 0, "bad magic: not a spool segment"));
        }
        let mut reader = RecordReader::new(
            &data[MAGIC.len()..],
            MAGIC.len() as u64,
            Some(first),
            config.max_record_bytes,
        );
        let mut records = Vec::new();
        for item in reader.by_ref() {
            match item {
                Ok(record) => records.push(Loc {
                    offset: record.offset,
                    len: record.header.len,
                    appended_ms: record.header.appended_ms,
                }),
                Err((offset, error)) => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        cut = data.len() as u64 - offset,
                        %error,
                        "spool: truncating a torn tail"
                    );
                    break;
                }
            }
        }
        let valid = reader.offset();
        let mut writer = io.open_append(&path).map_err(io_err("opening", &path))?;
        if valid < data.len() as u64 {
            recovery.truncated_at = Some(valid);
            recovery.truncated_bytes = data.len() as u64 - valid;
            writer
                .truncate(valid)
                .map_err(io_err("truncating", &path))?;
            writer.sync().map_err(io_err("syncing", &path))?;
        }
        Ok((
            Segment {
                first_seq: first,
                path,
                records,
                len: valid,
            },
            writer,
        ))
    }

    fn create_segment(
        io: &I,
        config: &SpoolConfig,
        first: u64,
    ) -> Result<(Segment, I::Writer), SpoolError> {
        let path = config.dir.join(format::segment_name(first));
        let mut writer = io.create(&path).map_err(io_err("creating", &path))?;
        writer.append(MAGIC).map_err(io_err("writing", &path))?;
        if config.fsync != FsyncPolicy::DangerNever {
            // The magic must be durable before any record can be, so that a head with a bad
            // magic can only be an empty one.
            writer.sync().map_err(io_err("syncing", &path))?;
            io.sync_dir(&config.dir)
                .map_err(io_err("syncing directory", &config.dir))?;
        }
        Ok((
            Segment {
                first_seq: first,
                path,
                records: Vec::new(),
                len: MAGIC.len() as u64,
            },
            writer,
        ))
    }

    /// What recovery found at open.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest acknowledged sequence number (0 before any).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number known to be durable.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Bytes the spool occupies on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The spool's configuration.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    fn head_segment(&self) -> &Segment {
        // Invariant: `open` always leaves at least the head segment in the deque and nothing
        // ever removes the last one.
        self.segments
            .back()
            .expect("the head segment always exists")
    }

    /// Whether a record of `payload_len` bytes fits under the bound now. When it does not and
    /// the head segment holds only acknowledged records, seals it so that it can be removed.
    pub fn make_room(&mut self, payload_len: usize) -> Result<bool, SpoolError> {
        let need = (HEADER_LEN + payload_len) as u64;
        let max = self.config.max_payload();
        if payload_len as u64 > max {
            return Err(SpoolError::TooLarge {
                len: payload_len,
                max,
            });
        }
        if self.bytes + need <= self.config.max_bytes {
            return Ok(true);
        }
        let head = self.head_segment();
        if !head.records.is_empty() && self.acked + 1 >= self.next_seq {
            self.roll(self.next_seq)?;
            self.remove_acked_segments()?;
        }
        Ok(self.bytes + need <= self.config.max_bytes)
    }

    /// Appends `payload` with the next sequence number, which it returns. The caller checks
    /// [`SpoolLog::make_room`] first; this does not enforce the bound.
    pub fn append(&mut self, payload: Bytes, appended_ms: u64) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        self.write_record(seq, payload, appended_ms)?;
        Ok(seq)
    }

    /// Appends `payload` under a sequence number chosen by the caller (the far side spools
    /// batches under the sender's numbers). `seq` must be the next one, or any number at least
    /// that when the spool holds no record at all.
    pub fn append_at(
        &mut self,
        seq: u64,
        payload: Bytes,
        appended_ms: u64,
    ) -> Result<(), SpoolError> {
        if seq != self.next_seq {
            let empty = self.segments.len() == 1 && self.head_segment().records.is_empty();
            if !empty || seq < self.next_seq {
                return Err(SpoolError::OutOfOrder {
                    seq,
                    expected: self.next_seq,
                });
            }
            let old = self.head_segment().path.clone();
            self.roll(seq)?;
            self.segments.pop_front();
            self.bytes -= MAGIC.len() as u64;
            self.io.remove(&old).map_err(io_err("removing", &old))?;
            self.sync_dir()?;
            self.next_seq = seq;
            self.acked = seq - 1;
            self.synced = seq - 1;
        }
        self.write_record(seq, payload, appended_ms)
    }

    fn write_record(
        &mut self,
        seq: u64,
        payload: Bytes,
        appended_ms: u64,
    ) -> Result<(), SpoolError> {
        let record_len = (HEADER_LEN + payload.len()) as u64;
        let head = self.head_segment();
        if !head.records.is_empty() && head.len + record_len > self.config.segment_bytes {
            self.roll(seq)?;
            self.remove_acked_segments()?;
        }
        let header = Header::for_payload(seq, appended_ms, &payload);
        let segment = self
            .segments
            .back_mut()
            .expect("the head segment always exists");
        let path = &segment.path;
        // Two writes rather than one copy into a buffer: payloads can be megabytes.
        self.head
            .append(&header.encode())
            .map_err(io_err("writing", path))?;
        self.head
            .append(&payload)
            .map_err(io_err("writing", path))?;
        segment.records.push(Loc {
            offset: segment.len,
            len: header.len,
            appended_ms,
        });
        segment.len += record_len;
        self.bytes += record_len;
        self.next_seq = seq + 1;
        match self.config.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(every) => {
                if self.last_sync.elapsed() >= every {
                    self.sync()?;
                }
            }
            FsyncPolicy::DangerNever => {}
        }
        self.cache_bytes += payload.len() as u64;
        self.cache.push_back((seq, payload));
        self.trim_cache();
        self.check_bound();
        Ok(())
    }

    /// Seals the head segment and starts a new one whose first record will be `first`.
    fn roll(&mut self, first: u64) -> Result<(), SpoolError> {
        if self.config.fsync != FsyncPolicy::DangerNever {
            self.sync()?;
        }
        let (segment, writer) = Self::create_segment(&self.io, &self.config, first)?;
        self.bytes += segment.len;
        self.segments.push_back(segment);
        self.head = writer;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        if self.config.fsync == FsyncPolicy::DangerNever {
            return Ok(());
        }
        self.io
            .sync_dir(&self.config.dir)
            .map_err(io_err("syncing directory", &self.config.dir))
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.synced + 1 < self.next_seq {
            let path = &self
                .segments
                .back()
                .expect("the head segment always exists")
                .path;
            self.head.sync().map_err(io_err("syncing", path))?;
            self.synced = self.next_seq - 1;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if the `Interval` policy's period has passed since the last sync; returns how
    /// long until the next one is due.
    pub fn sync_if_due(&mut self) -> Result<Option<Duration>, SpoolError> {
        let FsyncPolicy::Interval(every) = self.config.fsync else {
            return Ok(None);
        };
        let since = self.last_sync.elapsed();
        if since >= every {
            self.sync()?;
            return Ok(Some(every));
        }
        Ok(Some(every - since))
    }

    /// Records that the far side holds every batch up to `up_to`, removing segments that hold
    /// nothing else. Acknowledging less than before is a no-op.
    pub fn ack(&mut self, up_to: u64) -> Result<(), SpoolError> {
        if up_to >= self.next_seq {
            return Err(SpoolError::AckBeyond {
                ack: up_to,
                last: self.next_seq - 1,
            });
        }
        if up_to <= self.acked {
            return Ok(());
        }
        self.acked = up_to;
        while self.cache.front().is_some_and(|(seq, _)| *seq <= up_to) {
            if let Some((_, payload)) = self.cache.pop_front() {
                self.cache_bytes -= payload.len() as u64;
            }
        }
        self.remove_acked_segments()?;
        self.check_bound();
        Ok(())
    }

    fn remove_acked_segments(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 && self.segments[0].end_seq() <= self.acked + 1 {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            self.io
                .remove(&segment.path)
                .map_err(io_err("removing", &segment.path))?;
            self.bytes -= segment.len;
            // One directory sync per removal keeps removals durable in order, so a gap
            // between segments after a crash is always damage, never a half-done cleanup.
            self.sync_dir()?;
        }
        Ok(())
    }

    fn trim_cache(&mut self) {
        while self.cache_bytes > self.config.cache_bytes {
            let Some((_, payload)) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= payload.len() as u64;
        }
    }

    fn check_bound(&mut self) {
        let ratio = self.bytes as f64 / self.config.max_bytes as f64;
        if !self.warned && ratio >= WARN_RATIO {
            self.warned = true;
            tracing::warn!(
                dir = %self.config.dir.display(),
                bytes = self.bytes,
                bound = self.config.max_bytes,
                "spool is above {:.0}% of its bound: the far side is not keeping up or shipping is paused; appends will wait at the bound",
                WARN_RATIO * 100.0
            );
        } else if self.warned && ratio < CLEAR_RATIO {
            self.warned = false;
        }
    }

    /// The payload of batch `seq`, or `None` if it has not been appended or was removed.
    pub fn read(&self, seq: u64) -> Result<Option<Bytes>, SpoolError> {
        if let Some(payload) = self.cached(seq) {
            return Ok(Some(payload));
        }
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        let Some(segment) = index.checked_sub(1).and_then(|i| self.segments.get(i)) else {
            return Ok(None);
        };
        let Some(loc) = segment.records.get((seq - segment.first_seq) as usize) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; HEADER_LEN + loc.len as usize];
        self.io
            .read_at(&segment.path, loc.offset, &mut buf)
            .map_err(io_err("reading", &segment.path))?;
        let mut reader =
            RecordReader::new(&buf, loc.offset, Some(seq), self.config.max_record_bytes);
        match reader.next() {
            Some(Ok(_)) => {}
            Some(Err((offset, error))) => {
                return Err(corrupt(&segment.path, offset, error.to_string()))
            }
            None => return Err(corrupt(&segment.path, loc.offset, "record vanished")),
        }
        let mut payload = Bytes::from(buf);
        Ok(Some(payload.split_off(HEADER_LEN)))
    }

    /// The payload of `seq` if it is still in the in-memory cache of recent appends.
    pub fn cached(&self, seq: u64) -> Option<Bytes> {
        let (front, _) = self.cache.front()?;
        let index = seq.checked_sub(*front)?;
        self.cache.get(index as usize).map(|(_, p)| p.clone())
    }

    /// Sizes and ages. `now_ms` is the wall clock in Unix milliseconds.
    pub fn stats(&self, now_ms: u64) -> SpoolStats {
        let first_unacked = self.acked + 1;
        let oldest = self.loc(first_unacked).map(|loc| loc.appended_ms);
        SpoolStats {
            bytes: self.bytes,
            max_bytes: self.config.max_bytes,
            unacked: self.next_seq - first_unacked,
            next_seq: self.next_seq,
            acked: self.acked,
            synced: self.synced,
            segments: self.segments.len(),
            oldest_unacked_age: oldest.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms))),
        }
    }

    fn loc(&self, seq: u64) -> Option<Loc> {
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        let segment = self.segments.get(index.checked_sub(1)?)?;
        segment
            .records
            .get((seq - segment.first_seq) as usize)
            .copied()
    }
}

//! Where a dump starts, and where it can resume: the end of the last committed
//! transaction, as binlog file and offset and, when the dump started by GTID, as a GTID
//! position.
//!
//! The tracker is sans-IO and is fed by the decoder: it sees every decoded event (for
//! ROTATE and GTIDs) and, after each event, whether a transaction is still open. A
//! position therefore only advances at transaction boundaries.

use std::fmt;
use std::str::FromStr;

use outflow_binlog::walk::{RowsContext, Visitor};
use outflow_binlog::{Decoded, Event, RowIter, RowsEvent, TableInfo};

use outflow_core::{GtidSet, MariaGtid, MariaGtidPos, MySqlGtid, Tag};

/// Where to start streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest position the server still has (its first binlog file, offset 4).
    Oldest,
    /// The current end of the binlog.
    Now,
    /// A binlog file and offset.
    File {
        /// File name, e.g. `binlog.000003`.
        file: String,
        /// Offset of an event boundary (4 = the start).
        pos: u64,
    },
    /// A MariaDB GTID position (the last transaction applied, per domain).
    MariaGtid(MariaGtidPos),
    /// A MySQL GTID set (the transactions already applied).
    MySqlGtid(GtidSet),
}

impl FromStr for StartPosition {
    type Err = String;

    /// `start`, `now`, `file:NAME:POS`, `gtid:0-1-100,1-2-5` (MariaDB) or
    /// `gtid:UUID:1-5,...` (MySQL).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "start" | "oldest" => return Ok(StartPosition::Oldest),
            "now" => return Ok(StartPosition::Now),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("file:") {
            let (file, pos) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("'{s}': expected file:NAME:POS"))?;
            let pos: u64 = pos
                .parse()
                .map_err(|_| format!("'{s}': position '{pos}' is not a number"))?;
            if file.is_empty() || pos < 4 || pos > u64::from(u32::MAX) {
                return Err(format!(
                    "'{s}': expected a file name and a position from 4 to {}",
                    u32::MAX
                ));
            }
            return Ok(StartPosition::File {
                file: file.to_string(),
                pos,
            });
        }
        if let Some(rest) = s.strip_prefix("gtid:") {
            return if rest.contains(':') {
                let set: GtidSet = rest.parse().map_err(|e| format!("{e}"))?;
                if let Some((uuid, tag, _, _)) = set.intervals().find(|i| !i.1.is_empty()) {
                    return Err(format!(
                        "'{s}': tagged GTIDs ({uuid}:{}) are not supported",
                        tag.as_str()
                    ));
                }
                Ok(StartPosition::MySqlGtid(set))
            } else {
                rest.parse()
                    .map(StartPosition::MariaGtid)
                    .map_err(|e| format!("{e}"))
            };
        }
        Err(format!(
            "'{s}': expected start, now, file:NAME:POS or gtid:..."
        ))
    }
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartPosition::Oldest => f.write_str("start"),
            StartPosition::Now => f.write_str("now"),
            StartPosition::File { file, pos } => write!(f, "file:{file}:{pos}"),
            StartPosition::MariaGtid(g) => write!(f, "gtid:{g}"),
            StartPosition::MySqlGtid(g) => write!(f, "gtid:{g}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GtidState {
    None,
    Maria(MariaGtidPos),
    MySql(GtidSet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Maria(MariaGtid),
    MySql(MySqlGtid),
}

/// Follows a stream's position and its last transaction boundary.
#[derive(Debug, Clone)]
pub struct PositionTracker {
    file: String,
    next_pos: u64,
    committed_file: String,
    committed_pos: u64,
    gtids: GtidState,
    pending: Pending,
    events: u64,
    /// Set after a reconnect: events that end at or before this point were delivered
    /// before the connection broke.
    replay_until: Option<(String, u64)>,
}

impl PositionTracker {
    /// A tracker for a dump that starts at `start` (already resolved: not `Oldest`/`Now`;
    /// those are resolved by [`crate::BinlogStream::connect`]).
    pub fn new(start: &StartPosition) -> Self {
        let (file, pos) = match start {
            StartPosition::File { file, pos } => (file.clone(), *pos),
            _ => (String::new(), 4),
        };
        PositionTracker {
            committed_file: file.clone(),
            committed_pos: pos,
            file,
            next_pos: pos,
            gtids: match start {
                StartPosition::MariaGtid(g) => GtidState::Maria(g.clone()),
                StartPosition::MySqlGtid(g) => GtidState::MySql(g.clone()),
                _ => GtidState::None,
            },
            pending: Pending::None,
            events: 0,
            replay_until: None,
        }
    }

    /// The binlog file being read (empty until the server names it).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The offset of the event `event` within [`PositionTracker::file`], from its header
    /// (`log_pos - event_size`), or the current offset for artificial events.
    pub fn event_pos(&self, event: &[u8]) -> u64 {
        match header_positions(event) {
            Some((log_pos, size)) if log_pos >= size && log_pos != 0 => log_pos - size,
            _ => self.next_pos,
        }
    }

    /// Takes note of one decoded event (call from [`Visitor::event`]; [`Tracked`] does).
    pub fn observe(&mut self, ev: &Decoded<'_>) {
        match &ev.event {
            Event::Rotate {
                position,
                next_file,
            } => {
                self.file = String::from_utf8_lossy(next_file).into_owned();
                self.next_pos = *position;
            }
            Event::MariaGtid(g) => self.pending = Pending::Maria(g.gtid),
            Event::MySqlGtid(g) if !g.anonymous => {
                let tag = std::str::from_utf8(g.tag).ok().map(Tag::new);
                self.pending = match (u64::try_from(g.gno), tag) {
                    (Ok(gno), Some(Ok(tag))) => Pending::MySql(MySqlGtid {
                        uuid: g.uuid,
                        tag,
                        gno,
                    }),
                    // Not a GTID a set can hold: the position stays at the last one.
                    _ => Pending::None,
                }
            }
            _ => {}
        }
    }

    /// Call after the decoder processed `event`, with the decoder's `in_transaction()`.
    pub fn finish_event(&mut self, event: &[u8], in_transaction: bool) {
        self.events += 1;
        if let Some((log_pos, _)) = header_positions(event) {
            let type_code = event[4];
            // A ROTATE's own log_pos is in the old file; heartbeats only report.
            let moves = !matches!(
                type_code,
                outflow_binlog::event_type::code::ROTATE
                    | outflow_binlog::event_type::code::HEARTBEAT
                    | outflow_binlog::event_type::code::HEARTBEAT_V2
            );
            if moves && log_pos != 0 {
                self.next_pos = log_pos;
            }
        }
        if let Some((file, pos)) = &self.replay_until {
            if *file != self.file || self.next_pos >= *pos {
                self.replay_until = None;
            }
        }
        if in_transaction {
            return;
        }
        self.committed_file.clone_from(&self.file);
        self.committed_pos = self.next_pos;
        match (
            std::mem::replace(&mut self.pending, Pending::None),
            &mut self.gtids,
        ) {
            (Pending::Maria(gtid), GtidState::Maria(pos)) => pos.advance(gtid),
            (Pending::MySql(gtid), GtidState::MySql(set)) => set.add(&gtid),
            _ => {}
        }
    }

    /// Events finished so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The end of the last committed transaction as file and offset.
    pub fn committed(&self) -> (&str, u64) {
        (&self.committed_file, self.committed_pos)
    }

    /// Where to resume so that nothing committed is lost or repeated: by GTID when the dump
    /// started by GTID, else by file and offset.
    pub fn resume_from(&self) -> StartPosition {
        match &self.gtids {
            GtidState::Maria(g) => StartPosition::MariaGtid(g.clone()),
            GtidState::MySql(g) => StartPosition::MySqlGtid(g.clone()),
            GtidState::None => StartPosition::File {
                file: self.committed_file.clone(),
                pos: self.committed_pos,
            },
        }
    }

    /// Prepares for a reconnect from [`PositionTracker::resume_from`]: events up to the
    /// current position were delivered already and will be replayed by the server.
    pub fn start_replay(&mut self) {
        if (self.file.as_str(), self.next_pos) != (self.committed_file.as_str(), self.committed_pos)
        {
            self.replay_until = Some((self.file.clone(), self.next_pos));
        }
        self.file.clone_from(&self.committed_file);
        self.next_pos = self.committed_pos;
        self.pending = Pending::None;
    }

    /// Whether the event about to be processed was delivered before a reconnect (its rows
    /// must not be delivered again). Call before processing, with the event's bytes.
    pub fn is_replay(&self, event: &[u8]) -> bool {
        let Some((file, until)) = &self.replay_until else {
            return false;
        };
        match header_positions(event) {
            Some((log_pos, _)) if log_pos != 0 => *file == self.file && log_pos <= *until,
            _ => false,
        }
    }
}

/// `(log_pos, event_size)` from an event header.
fn header_positions(event: &[u8]) -> Option<(u64, u64)> {
    let h = event.get(..19)?;
    let size = u32::from_le_bytes([h[9], h[10], h[11], h[12]]);
    let log_pos = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
    Some((u64::from(log_pos), u64::from(size)))
}

/// A [`Visitor`] wrapper that feeds a [`PositionTracker`] and can hold back rows (of
/// events replayed after a reconnect).
pub struct Tracked<'a, V> {
    /// The tracker to feed.
    pub tracker: &'a mut PositionTracker,
    /// The consumer's visitor.
    pub inner: &'a mut V,
    /// Whether rows go to `inner` (false for replayed events).
    pub deliver: bool,
}

impl<V: Visitor> Visitor for Tracked<'_, V> {
    type Error = V::Error;

    fn event(&mut self, pos: u64, event: &Decoded<'_>) -> Result<(), V::Error> {
        self.tracker.observe(event);
        if self.deliver {
            self.inner.event(pos, event)
        } else {
            Ok(())
        }
    }

    fn wants(&mut self, table: &TableInfo) -> bool {
        self.deliver && self.inner.wants(table)
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), V::Error> {
        self.inner.rows(ctx, event, table, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_positions() {
        for (text, want) in [
            ("start", StartPosition::Oldest),
            ("now", StartPosition::Now),
            (
                "file:binlog.000002:1234",
                StartPosition::File {
                    file: "binlog.000002".into(),
                    pos: 1234,
                },
            ),
        ] {
            let p: StartPosition = text.parse().unwrap();
            assert_eq!(p, want);
            assert_eq!(p.to_string(), if text == "start" { "start" } else { text });
        }
        let p: StartPosition = "gtid:0-1-100,1-2-5".parse().unwrap();
        assert!(matches!(p, StartPosition::MariaGtid(_)));
        assert_eq!(p.to_string(), "gtid:0-1-100,1-2-5");
        let p: StartPosition = "gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"
            .parse()
            .unwrap();
        assert!(matches!(p, StartPosition::MySqlGtid(_)));
        for bad in [
            "file:x",
            "file:x:2",
            "file::4",
            "gtid:0-1",
            "later",
            "file:x:99999999999",
        ] {
            assert!(bad.parse::<StartPosition>().is_err(), "{bad}");
        }
    }

    fn header(type_code: u8, size: u32, log_pos: u32) -> Vec<u8> {
        let mut e = vec![0u8; size as usize];
        e[4] = type_code;
        e[9..13].copy_from_slice(&size.to_le_bytes());
        e[13..17].copy_from_slice(&log_pos.to_le_bytes());
        e
    }

    #[test]
    fn commits_only_at_transaction_boundaries() {
        let mut t = PositionTracker::new(&StartPosition::File {
            file: "b.1".into(),
            pos: 4,
        });
        let ev = header(2, 50, 100);
        assert_eq!(t.event_pos(&ev), 50);
        t.finish_event(&ev, true);
        assert_eq!(t.committed(), ("b.1", 4));
        let ev = header(16, 31, 131);
        t.finish_event(&ev, false);
        assert_eq!(t.committed(), ("b.1", 131));
        // An artificial event (log_pos 0) sits at the current position and moves nothing.
        let ev = header(15, 40, 0);
        assert_eq!(t.event_pos(&ev), 131);
        t.finish_event(&ev, false);
        assert_eq!(t.resume_from().to_string(), "file:b.1:131");
    }

    #[test]
    fn replayed_events_are_recognised() {
        let mut t = PositionTracker::new(&StartPosition::File {
            file: "b.1".into(),
            pos: 4,
        });
        t.finish_event(&header(2, 50, 100), true);
        t.finish_event(&header(19, 50, 150), true);
        t.start_replay();
        assert_eq!(t.resume_from().to_string(), "file:b.1:4");
        assert!(t.is_replay(&header(2, 50, 100)));
        t.finish_event(&header(2, 50, 100), true);
        assert!(t.is_replay(&header(19, 50, 150)));
        t.finish_event(&header(19, 50, 150), true);
        assert!(!t.is_replay(&header(23, 50, 200)));
    }
}

//! Where a change came from: binlog file and offset, MariaDB GTID positions, MySQL GTID sets,
//! and [`SourcePosition`], which combines them and is what checkpoints store.
//!
//! Text forms follow the servers, so a position can be pasted into `SET GLOBAL
//! gtid_slave_pos = '...'` or `CHANGE REPLICATION SOURCE ... SOURCE_AUTO_POSITION`:
//! - MariaDB GTID: `domain-server-sequence`; a position (like `gtid_slave_pos`) is a comma
//!   separated list with at most one GTID per domain: `0-1-100,1-2-5`.
//! - MySQL GTID: `uuid:gno` or `uuid:tag:gno` (8.3+); a set is `uuid:1-5:7:tag:1-3,uuid2:1-9`.
//!
//! Serde writes every GTID type as its text form, so checkpoints and schema history stay
//! readable and survive a change of field layout.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a position's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: {reason}")]
pub struct ParsePositionError {
    /// What was being parsed (`MariaDB GTID`, `GTID set`, ...).
    pub what: &'static str,
    /// The offending text (shortened to 100 bytes).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ParsePositionError {
    fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        let mut end = input.len().min(100);
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        ParsePositionError {
            what,
            input: input[..end].to_string(),
            reason: reason.into(),
        }
    }
}

/// A byte offset in a named binlog file: the classic replication coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// File name without directory, e.g. `binlog.000042`.
    pub file: String,
    /// Byte offset within the file: the start of the next event to read.
    pub pos: u64,
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// A MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaGtid {
    /// Replication domain.
    pub domain: u32,
    /// Server that committed the transaction.
    pub server_id: u32,
    /// Sequence number within the domain.
    pub sequence: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.sequence)
    }
}

impl FromStr for MariaGtid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let what = "MariaDB GTID";
        let t = s.trim();
        let mut parts = t.split('-');
        let mut next = |name: &str| {
            parts
                .next()
                .ok_or_else(|| ParsePositionError::new(what, s, format!("missing {name}")))
        };
        let domain = next("domain")?;
        let server = next("server id")?;
        let seq = next("sequence")?;
        if parts.next().is_some() {
            return Err(ParsePositionError::new(what, s, "more than three parts"));
        }
        let num = |p: &str, name: &str| {
            p.parse::<u64>()
                .map_err(|_| ParsePositionError::new(what, s, format!("{name} is not a number")))
        };
        let small = |p: &str, name: &str| {
            u32::try_from(num(p, name)?)
                .map_err(|_| ParsePositionError::new(what, s, format!("{name} above 2^32")))
        };
        Ok(MariaGtid {
            domain: small(domain, "domain")?,
            server_id: small(server, "server id")?,
            sequence: num(seq, "sequence")?,
        })
    }
}

/// A MariaDB GTID position: the last GTID applied in each domain, like `gtid_slave_pos`.
///
/// A GTID is *contained* when its domain's entry has a sequence at or above it: MariaDB
/// sequence numbers grow within a domain, whichever server wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariaGtidPos {
    /// Last GTID per domain.
    domains: BTreeMap<u32, MariaGtid>,
}

impl MariaGtidPos {
    /// An empty position (nothing applied).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `gtid` as the last one applied in its domain.
    pub fn advance(&mut self, gtid: MariaGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    /// The last GTID of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<MariaGtid> {
        self.domains.get(&domain).copied()
    }

    /// The last GTID of every domain, in domain order.
    pub fn iter(&self) -> impl Iterator<Item = MariaGtid> + '_ {
        self.domains.values().copied()
    }

    /// Whether no domain has a GTID.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Whether `gtid` is at or before this position in its domain.
    pub fn contains(&self, gtid: &MariaGtid) -> bool {
        self.domains
            .get(&gtid.domain)
            .is_some_and(|have| have.sequence >= gtid.sequence)
    }

    /// Whether every domain of `other` is at or before this position.
    pub fn covers(&self, other: &MariaGtidPos) -> bool {
        other.domains.values().all(|g| self.contains(g))
    }

    /// Orders two positions domain by domain: `Less` when `self` is behind or equal in every
    /// domain and behind in one, `None` when each is ahead somewhere.
    pub fn compare(&self, other: &MariaGtidPos) -> Option<Ordering> {
        match (other.covers(self), self.covers(other)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl fmt::Display for MariaGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            g.fmt(f)?;
        }
        Ok(())
    }
}

impl FromStr for MariaGtidPos {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pos = MariaGtidPos::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: MariaGtid = part.parse()?;
            if pos.domains.insert(g.domain, g).is_some() {
                return Err(ParsePositionError::new(
                    "MariaDB GTID position",
                    s,
                    format!("domain {} appears twice", g.domain),
                ));
            }
        }
        Ok(pos)
    }
}

/// A MySQL server UUID, the source id of its GTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |r: &str| ParsePositionError::new("UUID", s, r);
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut hi: Option<u8> = None;
        for c in s.trim().bytes() {
            if c == b'-' {
                continue;
            }
            let d = (c as char).to_digit(16).ok_or_else(|| bad("not hex"))? as u8;
            match hi.take() {
                None => hi = Some(d),
                Some(h) => {
                    *out.get_mut(n)
                        .ok_or_else(|| bad("more than 32 hex digits"))? = h << 4 | d;
                    n += 1;
                }
            }
        }
        if n != 16 || hi.is_some() {
            return Err(bad("not 32 hex digits"));
        }
        Ok(Uuid(out))
    }
}

/// A MySQL GTID tag (8.3+): `[a-z_][a-z0-9_]{0,31}`, stored inline so that a [`Gtid`] is
/// `Copy` and costs no allocation per transaction. The empty tag means untagged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tag {
    len: u8,
    bytes: [u8; Tag::MAX_LEN],
}

impl Tag {
    /// Longest tag MySQL accepts.
    pub const MAX_LEN: usize = 32;

    /// The tag of untagged GTIDs.
    pub const EMPTY: Tag = Tag {
        len: 0,
        bytes: [0; Tag::MAX_LEN],
    };

    /// Validates and normalises (MySQL lowercases tags) a tag.
    pub fn new(s: &str) -> Result<Tag, ParsePositionError> {
        let bad = |r: &str| ParsePositionError::new("GTID tag", s, r);
        if s.len() > Self::MAX_LEN {
            return Err(bad("longer than 32 characters"));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        for (i, c) in s.bytes().enumerate() {
            let c = c.to_ascii_lowercase();
            let ok = c == b'_' || c.is_ascii_lowercase() || (i > 0 && c.is_ascii_digit());
            if !ok {
                return Err(bad("not of the form [a-z_][a-z0-9_]*"));
            }
            bytes[i] = c;
        }
        Ok(Tag {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The tag's text (empty when untagged).
    pub fn as_str(&self) -> &str {
        // `new` admits only ASCII, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether this is the empty tag.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.as_str())
    }
}

/// A MySQL GTID: `uuid[:tag]:gno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MySqlGtid {
    /// Source server UUID.
    pub uuid: Uuid,
    /// Tag, empty when untagged.
    pub tag: Tag,
    /// Transaction number, 1 or more.
    pub gno: u64,
}

impl fmt::Display for MySqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tag.is_empty() {
            write!(f, "{}:{}", self.uuid, self.gno)
        } else {
            write!(f, "{}:{}:{}", self.uuid, self.tag.as_str(), self.gno)
        }
    }
}

impl FromStr for MySqlGtid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let what = "MySQL GTID";
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (uuid, tag, gno) = match parts.as_slice() {
            [u, g] => (u, "", g),
            [u, t, g] => (u, *t, g),
            _ => return Err(ParsePositionError::new(what, s, "not uuid[:tag]:gno")),
        };
        let gno: u64 = gno
            .parse()
            .ok()
            .filter(|&g| g >= 1)
            .ok_or_else(|| ParsePositionError::new(what, s, "gno is not a number >= 1"))?;
        Ok(MySqlGtid {
            uuid: uuid.parse()?,
            tag: Tag::new(tag)?,
            gno,
        })
    }
}

/// A MySQL GTID set such as `gtid_executed`: for each source UUID and tag, a list of
/// inclusive transaction-number intervals, kept sorted, disjoint and non-adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GtidSet {
    sets: BTreeMap<(Uuid, Tag), Vec<(u64, u64)>>,
}

impl GtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no GTID.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Adds one GTID.
    pub fn add(&mut self, gtid: &MySqlGtid) {
        self.add_interval(gtid.uuid, gtid.tag, gtid.gno, gtid.gno);
    }

    /// Adds the inclusive interval `start..=end` of `uuid:tag` (ignored if empty).
    pub fn add_interval(&mut self, uuid: Uuid, tag: Tag, start: u64, end: u64) {
        if start > end {
            return;
        }
        let list = self.sets.entry((uuid, tag)).or_default();
        // The common case: the next transaction of the newest interval.
        if let Some(last) = list.last_mut() {
            if start >= last.0 && start <= last.1.saturating_add(1) {
                last.1 = last.1.max(end);
                return;
            }
        }
        // First interval that ends at or after start - 1 (could merge).
        let i = list.partition_point(|iv| iv.1.saturating_add(1) < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < list.len() && list[j].0 <= e.saturating_add(1) {
            s = s.min(list[j].0);
            e = e.max(list[j].1);
            j += 1;
        }
        list.splice(i..j, [(s, e)]);
    }

    /// Whether the set holds `gtid`.
    pub fn contains(&self, gtid: &MySqlGtid) -> bool {
        self.sets.get(&(gtid.uuid, gtid.tag)).is_some_and(|list| {
            let i = list.partition_point(|iv| iv.1 < gtid.gno);
            list.get(i).is_some_and(|iv| iv.0 <= gtid.gno)
        })
    }

    /// Adds every GTID of `other`.
    pub fn union(&mut self, other: &GtidSet) {
        for (&(uuid, tag), list) in &other.sets {
            for &(s, e) in list {
                self.add_interval(uuid, tag, s, e);
            }
        }
    }

    /// Whether every GTID of `other` is in this set.
    pub fn covers(&self, other: &GtidSet) -> bool {
        other.sets.iter().all(|(key, list)| {
            let Some(mine) = self.sets.get(key) else {
                return list.is_empty();
            };
            list.iter().all(|&(s, e)| {
                let i = mine.partition_point(|iv| iv.1 < s);
                mine.get(i).is_some_and(|iv| iv.0 <= s && iv.1 >= e)
            })
        })
    }

    /// Subset order: `Less` when `self` is a strict subset of `other`, `None` when neither
    /// contains the other.
    pub fn compare(&self, other: &GtidSet) -> Option<Ordering> {
        match (other.covers(self), self.covers(other)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }

    /// Every `(uuid, tag, start, end)` interval, in order.
    pub fn intervals(&self) -> impl Iterator<Item = (Uuid, Tag, u64, u64)> + '_ {
        self.sets
            .iter()
            .flat_map(|(&(u, t), list)| list.iter().map(move |&(s, e)| (u, t, s, e)))
    }
}

impl fmt::Display for GtidSet {
    /// MySQL's form: one entry per UUID, the untagged intervals first, then each tag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_uuid: Option<Uuid> = None;
        for (&(uuid, tag), list) in &self.sets {
            if list.is_empty() {
                continue;
            }
            if last_uuid != Some(uuid) {
                if last_uuid.is_some() {
                    f.write_str(",")?;
                }
                write!(f, "{uuid}")?;
                last_uuid = Some(uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{}", tag.as_str())?;
            }
            for &(s, e) in list {
                if s == e {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{e}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for GtidSet {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let what = "GTID set";
        let mut set = GtidSet::new();
        for entry in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut parts = entry.split(':');
            let uuid: Uuid = parts.next().unwrap_or("").parse()?;
            let mut tag = Tag::EMPTY;
            let mut any = false;
            for p in parts {
                let p = p.trim();
                if !p.starts_with(|c: char| c.is_ascii_digit()) {
                    tag = Tag::new(p)?;
                    continue;
                }
                let (a, b) = p.split_once('-').unwrap_or((p, p));
                let num = |x: &str| {
                    x.parse::<u64>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| ParsePositionError::new(what, s, "bad interval"))
                };
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(ParsePositionError::new(
                        what,
                        s,
                        "interval ends before start",
                    ));
                }
                set.add_interval(uuid, tag, a, b);
                any = true;
            }
            if !any {
                return Err(ParsePositionError::new(what, s, "UUID without intervals"));
            }
        }
        Ok(set)
    }
}

/// One transaction's GTID, MariaDB or MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gtid {
    /// `domain-server-sequence`.
    Maria(MariaGtid),
    /// `uuid[:tag]:gno`.
    MySql(MySqlGtid),
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Maria(g) => g.fmt(f),
            Gtid::MySql(g) => g.fmt(f),
        }
    }
}

impl FromStr for Gtid {
    type Err = ParsePositionError;

    /// A text with `:` is a MySQL GTID, else a MariaDB one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Gtid::MySql)
        } else {
            s.parse().map(Gtid::Maria)
        }
    }
}

/// The GTID state reached: none (GTIDs off), a MariaDB position, or a MySQL set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum GtidState {
    /// No GTIDs seen; positions are file and offset only.
    #[default]
    None,
    /// MariaDB `gtid_slave_pos`-style position.
    Maria(MariaGtidPos),
    /// MySQL `gtid_executed`-style set.
    MySql(GtidSet),
}

/// Why a [`GtidState`] could not take a GTID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GTID {gtid} does not fit a {state} GTID state (mixed MariaDB and MySQL GTIDs)")]
pub struct GtidMismatch {
    /// The GTID offered.
    pub gtid: Gtid,
    /// `MariaDB` or `MySQL`.
    pub state: &'static str,
}

impl GtidState {
    /// Records that the transaction `gtid` committed.
    pub fn advance(&mut self, gtid: &Gtid) -> Result<(), GtidMismatch> {
        match (&mut *self, gtid) {
            (GtidState::None, Gtid::Maria(g)) => {
                let mut p = MariaGtidPos::new();
                p.advance(*g);
                *self = GtidState::Maria(p);
            }
            (GtidState::None, Gtid::MySql(g)) => {
                let mut s = GtidSet::new();
                s.add(g);
                *self = GtidState::MySql(s);
            }
            (GtidState::Maria(p), Gtid::Maria(g)) => p.advance(*g),
            (GtidState::MySql(s), Gtid::MySql(g)) => s.add(g),
            (GtidState::Maria(_), g) => {
                return Err(GtidMismatch {
                    gtid: *g,
                    state: "MariaDB",
                })
            }
            (GtidState::MySql(_), g) => {
                return Err(GtidMismatch {
                    gtid: *g,
                    state: "MySQL",
                })
            }
        }
        Ok(())
    }

    /// Whether the state already includes `gtid` (a transaction to skip on resume).
    pub fn contains(&self, gtid: &Gtid) -> bool {
        match (self, gtid) {
            (GtidState::Maria(p), Gtid::Maria(g)) => p.contains(g),
            (GtidState::MySql(s), Gtid::MySql(g)) => s.contains(g),
            _ => false,
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::None => Ok(()),
            GtidState::Maria(p) => p.fmt(f),
            GtidState::MySql(s) => s.fmt(f),
        }
    }
}

/// Where a reader of the source stands: after the last whole transaction it has taken.
///
/// Advanced only at transaction boundaries ([`SourcePosition::commit`]), so it is always a
/// place a reader can resume from without splitting a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    /// File and offset after the last transaction, when known.
    pub binlog: Option<BinlogPosition>,
    /// GTIDs of every transaction taken so far (with the starting state).
    pub gtid: GtidState,
}

impl SourcePosition {
    /// Records a committed transaction: the reader now stands at `end` (the offset after its
    /// COMMIT/XID event, in `file`) and the transaction's GTID, if any, is executed.
    pub fn commit(
        &mut self,
        file: &str,
        end: u64,
        gtid: Option<&Gtid>,
    ) -> Result<(), GtidMismatch> {
        if let Some(g) = gtid {
            self.gtid.advance(g)?;
        }
        match &mut self.binlog {
            Some(b) if b.file == file => b.pos = end,
            slot => {
                *slot = Some(BinlogPosition {
                    file: file.to_string(),
                    pos: end,
                })
            }
        }
        Ok(())
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.binlog {
            Some(b) => write!(f, "{b}")?,
            None => f.write_str("-")?,
        }
        if self.gtid != GtidState::None {
            write!(f, " gtid {}", self.gtid)?;
        }
        Ok(())
    }
}

macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_text!(MariaGtid, MariaGtidPos, Uuid, MySqlGtid, GtidSet, Gtid);

/// Serialised as `{"maria": "0-1-5"}`, `{"mysql": "uuid:1-5"}` or `"none"`.
impl Serialize for GtidState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "lowercase")]
        enum Repr<'a> {
            None,
            Maria(&'a MariaGtidPos),
            Mysql(&'a GtidSet),
        }
        match self {
            GtidState::None => Repr::None,
            GtidState::Maria(p) => Repr::Maria(p),
            GtidState::MySql(g) => Repr::Mysql(g),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GtidState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Repr {
            None,
            Maria(MariaGtidPos),
            Mysql(GtidSet),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::None => GtidState::None,
            Repr::Maria(p) => GtidState::Maria(p),
            Repr::Mysql(g) => GtidState::MySql(g),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4f22ab58-82db-22f2-af44-d91bba53a673";

    #[test]
    fn maria_position_parses_formats_and_advances() {
        let mut p: MariaGtidPos = " 1-2-5, 0-1-100 ".parse().unwrap();
        assert_eq!(p.to_string(), "0-1-100,1-2-5");
        assert!(p.contains(&"0-9-100".parse().unwrap()));
        assert!(!p.contains(&"0-1-101".parse().unwrap()));
        assert!(!p.contains(&"2-1-1".parse().unwrap()));
        let before = p.clone();
        p.advance("0-3-101".parse().unwrap());
        assert_eq!(p.to_string(), "0-3-101,1-2-5");
        assert_eq!(before.compare(&p), Some(Ordering::Less));
        assert_eq!(p.compare(&before), Some(Ordering::Greater));
        let other: MariaGtidPos = "0-1-1,1-2-6".parse().unwrap();
        assert_eq!(p.compare(&other), None);
        assert_eq!("".parse::<MariaGtidPos>().unwrap(), MariaGtidPos::new());
    }

    #[test]
    fn maria_position_rejects_bad_text() {
        for bad in ["0-1", "0-1-2-3", "a-1-2", "0-1-2,0-1-3", "0-99999999999-1"] {
            let e = bad.parse::<MariaGtidPos>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn gtid_set_merges_and_contains() {
        let mut s: GtidSet = format!("{U1}:1-5:7,{U2}:tag_a:3").parse().unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-5:7,{U2}:tag_a:3"));
        let g = |t: &str| t.parse::<MySqlGtid>().unwrap();
        assert!(s.contains(&g(&format!("{U1}:5"))));
        assert!(!s.contains(&g(&format!("{U1}:6"))));
        assert!(!s.contains(&g(&format!("{U2}:3"))));
        assert!(s.contains(&g(&format!("{U2}:TAG_A:3"))));
        s.add(&g(&format!("{U1}:6")));
        assert_eq!(s.to_string(), format!("{U1}:1-7,{U2}:tag_a:3"));
        let u1: Uuid = U1.parse().unwrap();
        s.add_interval(u1, Tag::EMPTY, 20, 30);
        s.add_interval(u1, Tag::EMPTY, 9, 19);
        assert_eq!(s.to_string(), format!("{U1}:1-7:9-30,{U2}:tag_a:3"));
        s.add_interval(u1, Tag::EMPTY, 8, 8);
        assert_eq!(s.to_string(), format!("{U1}:1-30,{U2}:tag_a:3"));
    }

    #[test]
    fn gtid_set_union_and_order() {
        let a: GtidSet = format!("{U1}:1-3").parse().unwrap();
        let b: GtidSet = format!("{U1}:5-6:t:1,{U2}:1").parse().unwrap();
        let mut u = a.clone();
        u.union(&b);
        assert_eq!(u.to_string(), format!("{U1}:1-3:5-6:t:1,{U2}:1"));
        assert_eq!(a.compare(&u), Some(Ordering::Less));
        assert_eq!(u.compare(&b), Some(Ordering::Greater));
        assert_eq!(a.compare(&b), None);
        assert_eq!(u.compare(&u.clone()), Some(Ordering::Equal));
        // MySQL prints sets over several lines.
        let multi: GtidSet = format!("{U1}:1-3:5-6:t:1,\n{U2}:1").parse().unwrap();
        assert_eq!(multi, u);
    }

    #[test]
    fn gtid_set_rejects_bad_text() {
        for bad in [
            "nothex:1".to_string(),
            U1.to_string(),
            format!("{U1}:0"),
            format!("{U1}:5-3"),
            format!("{U1}:1x"),
            format!("{U1}:Bad-Tag:1"),
        ] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn source_position_commits_and_serialises() {
        let mut p = SourcePosition::default();
        p.commit("binlog.000001", 400, Some(&"0-1-7".parse().unwrap()))
            .unwrap();
        p.commit("binlog.000001", 900, None).unwrap();
        assert_eq!(p.to_string(), "binlog.000001:900 gtid 0-1-7");
        let mysql: Gtid = format!("{U1}:3").parse().unwrap();
        assert!(p.commit("binlog.000001", 1000, Some(&mysql)).is_err());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"binlog":{"file":"binlog.000001","pos":900},"gtid":{"maria":"0-1-7"}}"#
        );
        let back: SourcePosition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let mut m = SourcePosition::default();
        m.commit("b.1", 4, Some(&mysql)).unwrap();
        let back: SourcePosition =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(back.gtid.contains(&mysql));
    }
}

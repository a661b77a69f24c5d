//! Net-change compaction: all changes to one primary key within a batch collapse into their
//! net effect.
//!
//! # Guarantee
//! Applying a compacted batch as one transaction moves the target from the source state at
//! the batch's start position to the source state at its end position. The states in
//! between are never visible: atomicity is kept at batch granularity, not per source
//! transaction, and the batch's transactions keep only their GTIDs and positions (for the
//! checkpoint). Off for streaming (every transaction applies on its own), on by default for
//! off-peak/batch shipping.
//!
//! # Rules, per primary key (first change wins the key's place in the output order)
//! | net so far | then       | net                                   |
//! |------------|------------|---------------------------------------|
//! | —          | any        | that change                           |
//! | insert     | update     | insert of the updated row             |
//! | insert     | delete     | nothing                               |
//! | update     | update     | update from the first before image with the columns of both (later wins) |
//! | update     | delete     | delete of the original key            |
//! | delete     | insert     | update of every column (a replace: the row is there before and after) |
//! | nothing    | insert     | insert                                |
//!
//! Anything else (an insert over a live key, a change to a deleted key) cannot come from a
//! consistent source and is an error naming the table. An update that changes the primary
//! key puts the row's net change at the end of the output so far and seals every key:
//! later changes to any row start new net changes (key moves are rare, and this keeps
//! chains and swaps of keys exact). Tables without a primary key are not compacted: their
//! changes pass through in order.
//!
//! Allocation: the state (entries, chains, one map from key hash to latest entry) lives in
//! the [`Compactor`] and keeps its buffers from batch to batch, so compacting a steady stream
//! allocates nothing per change (`tests/zero_alloc.rs` holds it to that).
//!
//! Limitation: the output applies each key's net change in order of the key's first
//! change. A set of updates that swaps values of a *secondary* unique key between rows can
//! then collide on the target; such tables should ship uncompacted.

use std::collections::HashMap;

use outflow_core::{BatchError, ChangeBatch, Column, Op, SectionId, TableSection};

/// Why a batch could not be compacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The batch is already compacted or has an open transaction.
    #[error("batch cannot be compacted: {0}")]
    State(&'static str),
    /// A change sequence a consistent source cannot produce.
    #[error("`{table}`: {what} (the batch is not a consistent change sequence)")]
    Inconsistent {
        /// `db.table`.
        table: String,
        /// What.
        what: &'static str,
    },
    /// Building the output failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    Insert,
    Update,
    Delete,
    Nothing,
    /// A change of a keyless table (or one whose key is not in its image): kept as is.
    Verbatim(Op),
}

/// One net change under construction.
#[derive(Debug, Clone, Copy)]
struct Entry {
    section: u32,
    net: Net,
    /// Image giving the before image (update, delete).
    before: u32,
    /// First and last link of the chain of after images, oldest first (u32::MAX = none).
    head: u32,
    tail: u32,
    /// Its place in `Compactor::order` (earlier places are stale).
    slot: u32,
    /// The entry filed before it under the same (section, key hash), or NONE.
    next_same_hash: u32,
}

const NONE: u32 = u32::MAX;

/// Reusable compaction state; see the module documentation.
#[derive(Default)]
pub struct Compactor {
    entries: Vec<Entry>,
    /// Output order: entry ids; an entry appears again when a key change moves it later.
    order: Vec<u32>,
    /// (image, next link) of every after-image chain.
    links: Vec<(u32, u32)>,
    /// Latest entry per (section, key hash); earlier ones with that hash chain through
    /// `Entry::next_same_hash`, and collisions are resolved by comparing keys. One map of
    /// plain values keeps its allocation from batch to batch: no allocation per key.
    by_key: HashMap<(u32, u64), u32>,
    key: Vec<u8>,
    other: Vec<u8>,
    /// Output section per input section, for [`Compactor::emit`].
    sections: Vec<Option<SectionId>>,
}

impl Compactor {
    /// Writes the net effect of `input` into `out` (cleared first; its buffers reused).
    pub fn compact(
        &mut self,
        input: &ChangeBatch,
        out: &mut ChangeBatch,
    ) -> Result<(), CompactError> {
        if input.is_compacted() {
            return Err(CompactError::State("already compacted"));
        }
        if input.in_transaction() {
            return Err(CompactError::State("a transaction is open"));
        }
        self.entries.clear();
        self.order.clear();
        self.links.clear();
        self.by_key.clear();
        for run in input.runs() {
            let section = &input.sections()[run.section as usize];
            for i in run.first..run.first + run.len {
                self.add(run.section, section, i as usize)?;
            }
        }
        self.emit(input, out)
    }

    fn add(&mut self, sec: u32, s: &TableSection, i: usize) -> Result<(), CompactError> {
        let change = s.change(i);
        let pk = &s.schema().primary_key;
        let key_image = match change.op {
            Op::Insert => change.after,
            Op::Update | Op::Delete => change.before,
        }
        .map_or(0, |im| im.index());
        let keyed = !pk.is_empty()
            && pk
                .iter()
                .all(|&k| s.columns()[k as usize].present().get(key_image));
        if !keyed {
            self.entries.push(Entry {
                section: sec,
                net: Net::Verbatim(change.op),
                before: change.before.map_or(NONE, |im| im.index() as u32),
                head: NONE,
                tail: NONE,
                slot: self.order.len() as u32,
                next_same_hash: NONE,
            });
            self.order.push(self.entries.len() as u32 - 1);
            if let Some(a) = change.after {
                let e = self.entries.len() - 1;
                self.link(e, a.index() as u32);
            }
            return Ok(());
        }
        let h = key_bytes(&mut self.key, s, pk, key_image);
        let found = self.find(sec, h, s, pk);
        let inconsistent = |what| CompactError::Inconsistent {
            table: s.schema().qualified_name(),
            what,
        };
        match (found, change.op) {
            (None, op) => {
                let e = self.entries.len();
                self.entries.push(Entry {
                    section: sec,
                    net: match op {
                        Op::Insert => Net::Insert,
                        Op::Update => Net::Update,
                        Op::Delete => Net::Delete,
                    },
                    before: change.before.map_or(NONE, |im| im.index() as u32),
                    head: NONE,
                    tail: NONE,
                    slot: self.order.len() as u32,
                    next_same_hash: NONE,
                });
                self.order.push(e as u32);
                if let Some(a) = change.after {
                    self.link(e, a.index() as u32);
                }
                if let Some(prev) = self.by_key.insert((sec, h), e as u32) {
                    self.entries[e].next_same_hash = prev;
                }
                if op == Op::Update {
                    self.rekey(sec, s, pk, e, h)?;
                }
            }
            (Some(e), op) => {
                let entry = self.entries[e];
                match (entry.net, op) {
                    (Net::Insert | Net::Update, Op::Update) => {
                        self.link(e, change.after.map_or(NONE, |im| im.index() as u32));
                        self.rekey(sec, s, pk, e, h)?;
                    }
                    // The after chain stays: it still says which key the entry is under.
                    (Net::Insert, Op::Delete) => self.entries[e].net = Net::Nothing,
                    (Net::Update, Op::Delete) => self.entries[e].net = Net::Delete,
                    (Net::Delete, Op::Insert) => {
                        self.entries[e].net = Net::Update;
                        self.entries[e].head = NONE;
                        self.entries[e].tail = NONE;
                        self.link(e, change.after.map_or(NONE, |im| im.index() as u32));
                    }
                    (Net::Nothing, Op::Insert) => {
                        self.entries[e].net = Net::Insert;
                        self.entries[e].head = NONE;
                        self.entries[e].tail = NONE;
                        self.link(e, change.after.map_or(NONE, |im| im.index() as u32));
                    }
                    (Net::Insert | Net::Update, Op::Insert) => {
                        return Err(inconsistent("insert of a key that exists"))
                    }
                    _ => {
                        return Err(inconsistent(
                            "update or delete of a key that does not exist",
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn link(&mut self, e: usize, image: u32) {
        if image == NONE {
            return;
        }
        let l = self.links.len() as u32;
        self.links.push((image, NONE));
        let entry = &mut self.entries[e];
        if entry.tail == NONE {
            entry.head = l;
        } else {
            self.links[entry.tail as usize].1 = l;
        }
        entry.tail = l;
    }

    /// The entry holding the row currently at the key in `self.key` (live, or deleted and
    /// so revivable by an insert).
    fn find(&mut self, sec: u32, h: u64, s: &TableSection, pk: &[u16]) -> Option<usize> {
        // Latest first: a key filed again (re-inserted after a move) shadows older entries.
        let mut e = *self.by_key.get(&(sec, h))?;
        while e != NONE {
            let entry = &self.entries[e as usize];
            key_bytes_chain(&mut self.other, s, pk, &self.links, entry);
            if self.other == self.key {
                return Some(e as usize);
            }
            e = entry.next_same_hash;
        }
        None
    }

    /// After an update, checks whether it changed the row's key. If so, the row's net
    /// change moves to the end of the output so far and every key is sealed: later changes
    /// start new entries. Without that, moves could chain or cycle (a swap of two keys has
    /// no order in which two updates apply), while within a stretch without moves every
    /// key's net change is independent of the others', so any order applies.
    fn rekey(
        &mut self,
        sec: u32,
        s: &TableSection,
        pk: &[u16],
        e: usize,
        _old_hash: u64,
    ) -> Result<(), CompactError> {
        let entry = self.entries[e];
        key_bytes_chain(&mut self.other, s, pk, &self.links, &entry);
        if self.other == self.key {
            return Ok(());
        }
        let new_hash = hash(&self.other);
        std::mem::swap(&mut self.key, &mut self.other);
        if let Some(prev) = self.find(sec, new_hash, s, pk) {
            if !matches!(self.entries[prev].net, Net::Delete | Net::Nothing) {
                return Err(CompactError::Inconsistent {
                    table: s.schema().qualified_name(),
                    what: "update moves a row onto a key that exists",
                });
            }
        }
        self.entries[e].slot = self.order.len() as u32;
        self.order.push(e as u32);
        self.by_key.clear();
        Ok(())
    }

    fn emit(&mut self, input: &ChangeBatch, out: &mut ChangeBatch) -> Result<(), CompactError> {
        out.clear();
        out.set_mode(input.mode());
        out.set_start(input.start().clone());
        out.set_compacted(true)?;
        let ids = &mut self.sections;
        ids.clear();
        ids.resize(input.sections().len(), None);
        for (slot, &id) in self.order.iter().enumerate() {
            let entry = &self.entries[id as usize];
            if entry.slot as usize != slot {
                continue;
            }
            let op = match entry.net {
                Net::Nothing => continue,
                Net::Insert => Op::Insert,
                Net::Update => Op::Update,
                Net::Delete => Op::Delete,
                Net::Verbatim(op) => op,
            };
            let src = &input.sections()[entry.section as usize];
            let id =
                *ids[entry.section as usize].get_or_insert_with(|| out.section_for(src.schema()));
            let dst = out.push_change(id, op)?;
            if op != Op::Insert {
                let b = entry.before as usize;
                dst.push_image_from(src, |_| Some(b))?;
            }
            if op != Op::Delete {
                let links = &self.links;
                let head = entry.head;
                dst.push_image_from(src, |c| latest(links, head, &src.columns()[c]))?;
            }
        }
        let n = input.transactions().len();
        for (i, t) in input.transactions().iter().enumerate() {
            let file = input
                .files()
                .get(t.file as usize)
                .map_or("", String::as_str);
            // A DDL ends the batch: the net rows go before it, as they did at the source.
            match input.ddl() {
                Some(ddl) if i + 1 == n => {
                    out.push_ddl(t.gtid, t.timestamp, ddl, file, t.end_pos)?
                }
                _ => {
                    out.begin_transaction(t.gtid, t.timestamp)?;
                    out.commit_transaction(file, t.end_pos)?;
                }
            }
        }
        Ok(())
    }
}

/// The last image in the chain from `head` that carries column `col`.
fn latest(links: &[(u32, u32)], head: u32, col: &Column) -> Option<usize> {
    let mut found = None;
    let mut l = head;
    while l != NONE {
        let (img, next) = links[l as usize];
        if col.present().get(img as usize) {
            found = Some(img as usize);
        }
        l = next;
    }
    found
}

/// Appends the key columns of image `img` to `out` (cleared), unambiguously; returns its
/// hash.
fn key_bytes(out: &mut Vec<u8>, s: &TableSection, pk: &[u16], img: usize) -> u64 {
    out.clear();
    for &k in pk {
        push_slot(out, &s.columns()[k as usize], img);
    }
    hash(out)
}

/// The entry's current key: each key column from the latest after image carrying it, else
/// from its before image.
fn key_bytes_chain(
    out: &mut Vec<u8>,
    s: &TableSection,
    pk: &[u16],
    links: &[(u32, u32)],
    e: &Entry,
) {
    out.clear();
    for &k in pk {
        let col = &s.columns()[k as usize];
        let img = latest(links, e.head, col).unwrap_or(e.before as usize);
        push_slot(out, col, img);
    }
}

fn push_slot(out: &mut Vec<u8>, col: &Column, i: usize) {
    if col.nulls().get(i) {
        out.push(0);
    } else if col.kind().is_var() {
        let v = col.var(i);
        out.push(1);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    } else {
        out.push(2);
        out.extend_from_slice(&col.fixed().get(i).copied().unwrap_or(0).to_le_bytes());
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

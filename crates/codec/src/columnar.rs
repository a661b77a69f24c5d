//! The payload of a frame: a [`ChangeBatch`] laid out column by column, before zstd.
//!
//! # Layout (all integers are LEB128 varints unless noted)
//! ```text
//! schemas:      n, then n × (len, bincode TableSchema)       full schemas shipped here
//! sections:     n, then n × schema version                    each must be known
//! transactions: n, then one stream per field, each over all transactions:
//!               gtid kinds (u8 each: 0 none, 1 MariaDB, 2 MySQL)
//!               MariaDB gtids (domain, server id, zigzag sequence delta)
//!               MySQL gtids (uuid 16 raw bytes, tag len + bytes, zigzag gno delta)
//!               timestamps (zigzag delta), files, end positions (zigzag delta),
//!               run counts (absent when compacted)
//! runs:         n, then n × (section, len)                    `first` is implied
//! per section:  changes, ops (u8 each),
//!               patterns: n, n × (one slot state byte per column),
//!               one pattern index per image,
//!               per column: an encoding tag and the values of its value slots
//! ```
//! Column encodings are chosen per column and per frame by the smallest estimated size:
//! fixed-width kinds as zig-zag varints, zig-zag deltas from the previous value, or
//! fixed-width little-endian of the fewest bytes that hold the largest value (floats
//! always raw); variable-width kinds as lengths then bytes, or a dictionary of distinct
//! values plus indexes when few values repeat often. Everything is then compressed as
//! one zstd stream by [`crate::frame`], which finds what is left (repeated text, runs).
//!
//! A slot state is 0 absent, 1 a value, 3 NULL, or (format 2) 5 a copy: the same
//! non-NULL value as the image before in that column, not repeated in the values. The
//! encoder writes copies for the columns a full-image update's after image shares with
//! its before image. Measured on the codec bench's sysbench workload in full mode: what
//! goes through zstd shrinks 22% (67.6 to 53.0 MB), and zstd's time with it, for 1.3% more
//! wire bytes (zstd level 1 coded the repeats as cheap matches; at levels 2 and 3 copies
//! came out smaller). A copy of an image without a value there is an error, and
//! the bytes copies add are bounded by the decoder's limits.
//!
//! Patterns exist because images of one table repeat the same shape (a replica-mode
//! update of `k` always carries `id` before and `k` after): one small index per image
//! replaces a present and a null bit per column.
//!
//! # Decoding untrusted bytes
//! Every count is checked against what the remaining bytes could hold before anything is
//! sized from it, and the result goes through `ChangeBatch::from_parts`, which checks every
//! cross-reference. Decoding never panics on any input (see the `frame` fuzz target).

use std::collections::HashMap;

use bincode::Options as _;
use std::sync::Arc;

use outflow_core::{
    Bitmap, ChangeBatch, Column, ColumnParts, Gtid, MariaGtid, MySqlGtid, Op, Run, SchemaVersion,
    TableSchema, TableSection, Tag, Transaction, Uuid, ValueKind,
};

use crate::wire::{err, put_varint, unzigzag, varint_len, zigzag, Reader, WireError};

const ENC_VARINT: u8 = 0;
const ENC_DELTA: u8 = 1;
const ENC_FIXED: u8 = 2;
const ENC_PLAIN: u8 = 3;
const ENC_DICT: u8 = 4;

/// Pattern byte of a copy slot: present, not NULL, the same value as the image before.
const SLOT_COPY: u8 = 5;

/// Patterns looked up by a linear scan up to this many; a hash map beyond (tables whose
/// images take many shapes, e.g. keyless tables in replica mode).
const PATTERN_SCAN: usize = 16;

/// Reusable state of the payload encoder (scratch buffers and per-column choices).
#[derive(Default)]
pub struct PayloadEncoder {
    values: Vec<u64>,
    lens: Vec<u8>,
    section_sizes: Vec<usize>,
    section_tables: Vec<Arc<TableSchema>>,
    /// Per section of the batch being written: whether its schema ships in full.
    ship: Vec<bool>,
    /// Pattern keys, `words` u64s each, in pattern order.
    pattern_keys: Vec<u64>,
    pattern_map: HashMap<Vec<u64>, u32>,
    pattern_key: Vec<u64>,
    image_pattern: Vec<u32>,
    /// Per column, `images.div_ceil(64)` words: slots written as copies of the slot before.
    copies: Vec<u64>,
    /// The value slots (present, not NULL, not a copy) of the column being written.
    slots: Vec<u64>,
    dict: ValueDict,
}

/// Indexes of the set bits of `words`, in order.
fn ones(words: &[u64]) -> impl Iterator<Item = usize> + Clone + '_ {
    words.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(w * 64 + bit)
        })
    })
}

/// Which schemas a payload carries in full; the others are referenced by version.
pub trait SchemaSink {
    /// Whether `schema` must be written in full (true the first time in a stream).
    fn ship(&mut self, schema: &TableSchema) -> bool;
}

impl PayloadEncoder {
    /// Appends the payload of `batch` to `out`.
    pub fn encode(
        &mut self,
        batch: &ChangeBatch,
        ship: &mut dyn SchemaSink,
        out: &mut Vec<u8>,
    ) -> Result<(), bincode::Error> {
        // Schemas first, so that the decoder knows every section's columns.
        let sections = batch.sections();
        self.ship.clear();
        self.ship
            .extend(sections.iter().map(|s| ship.ship(s.schema())));
        put_varint(out, self.ship.iter().filter(|&&f| f).count() as u64);
        for (s, _) in sections.iter().zip(&self.ship).filter(|(_, &f)| f) {
            let schema: &TableSchema = s.schema();
            put_varint(out, bincode::serialized_size(schema)?);
            bincode::serialize_into(&mut *out, schema)?;
        }
        put_varint(out, sections.len() as u64);
        for s in sections {
            put_varint(out, s.schema().version.0);
        }
        encode_transactions(batch, out);
        let runs = batch.runs();
        put_varint(out, runs.len() as u64);
        for r in runs {
            put_varint(out, u64::from(r.section));
            put_varint(out, u64::from(r.len));
        }
        self.section_sizes.clear();
        self.section_tables.clear();
        for s in sections {
            let before = out.len();
            self.encode_section(s, out);
            self.section_sizes.push(out.len() - before);
            // An `Arc` clone: a reference count, no allocation.
            self.section_tables.push(s.schema().clone());
        }
        Ok(())
    }

    /// Bytes each section took in the last payload, in section order. The sections are
    /// the payload's last bytes, one after the other; everything before them is its head.
    pub fn section_sizes(&self) -> &[usize] {
        &self.section_sizes
    }

    /// The table of each section of the last payload, in section order.
    pub fn section_tables(&self) -> &[Arc<TableSchema>] {
        &self.section_tables
    }

    fn encode_section(&mut self, s: &TableSection, out: &mut Vec<u8>) {
        put_varint(out, s.len() as u64);
        out.extend(s.ops().iter().map(|&o| o as u8));
        let images = s.images();
        let cols = s.columns();
        let iw = images.div_ceil(64);
        // Copies: a column of an update's after image holding the same non-NULL value as
        // its before image (full images repeat every column the statement left alone).
        // Replica-mode after images carry only changed columns, so they never have any.
        self.copies.clear();
        self.copies.resize(iw * cols.len(), 0);
        let mut image = 0usize;
        for &op in s.ops() {
            if op == Op::Update {
                let (b, a) = (image, image + 1);
                for (c, col) in cols.iter().enumerate() {
                    if col.present().get(a) && !col.nulls().get(a) && col.same(a, col, b) {
                        self.copies[c * iw + a / 64] |= 1 << (a % 64);
                    }
                }
            }
            image += op.images() as usize;
        }
        // Patterns: the (present, null, copy) bits of each image over all columns, four
        // bits a column.
        self.pattern_keys.clear();
        self.pattern_map.clear();
        self.image_pattern.clear();
        let words = cols.len().div_ceil(16);
        for i in 0..images {
            self.pattern_key.clear();
            self.pattern_key.resize(words, 0);
            for (c, col) in cols.iter().enumerate() {
                let copy = self.copies[c * iw + i / 64] >> (i % 64) & 1;
                let bits = u64::from(col.present().get(i))
                    | u64::from(col.nulls().get(i)) << 1
                    | copy << 2;
                self.pattern_key[c / 16] |= bits << (4 * (c % 16));
            }
            let npat = self.pattern_keys.len() / words.max(1);
            let found = if npat <= PATTERN_SCAN {
                self.pattern_keys
                    .chunks_exact(words.max(1))
                    .position(|k| words == 0 || k == self.pattern_key.as_slice())
                    .map(|p| p as u32)
            } else {
                self.pattern_map.get(&self.pattern_key).copied()
            };
            let id = match found {
                Some(id) => id,
                None => {
                    if npat == PATTERN_SCAN {
                        // Past the scan: index every pattern so far, then this one.
                        for (p, k) in self.pattern_keys.chunks_exact(words.max(1)).enumerate() {
                            self.pattern_map.insert(k.to_vec(), p as u32);
                        }
                    }
                    if npat >= PATTERN_SCAN {
                        self.pattern_map
                            .insert(self.pattern_key.clone(), npat as u32);
                    }
                    self.pattern_keys.extend_from_slice(&self.pattern_key);
                    if words == 0 {
                        // Zero-column tables: one empty pattern (a placeholder word).
                        self.pattern_keys.push(0);
                    }
                    npat as u32
                }
            };
            self.image_pattern.push(id);
        }
        let npat = self.pattern_keys.len() / words.max(1);
        put_varint(out, npat as u64);
        for p in self.pattern_keys.chunks_exact(words.max(1)) {
            for c in 0..cols.len() {
                let bits = p[c / 16] >> (4 * (c % 16)) & 0xf;
                out.push(bits as u8);
            }
        }
        for &id in &self.image_pattern {
            put_varint(out, u64::from(id));
        }
        for (c, col) in cols.iter().enumerate() {
            self.slots.clear();
            let (present, nulls) = (col.present().words(), col.nulls().words());
            let copies = &self.copies[c * iw..(c + 1) * iw];
            self.slots.extend(
                present
                    .iter()
                    .zip(nulls)
                    .zip(copies)
                    .map(|((p, n), k)| p & !n & !k),
            );
            if col.kind().is_var() {
                self.encode_var(col, out);
            } else {
                self.encode_fixed(col, out);
            }
        }
    }

    fn encode_fixed(&mut self, col: &Column, out: &mut Vec<u8>) {
        self.values.clear();
        let fixed = col.fixed();
        self.values.extend(ones(&self.slots).map(|i| fixed[i]));
        let v = &self.values;
        if v.is_empty() {
            return;
        }
        let signed = matches!(col.kind(), ValueKind::Int);
        match col.kind() {
            ValueKind::Float | ValueKind::Double => {
                let w = if col.kind() == ValueKind::Float { 4 } else { 8 };
                out.push(ENC_FIXED);
                out.push(w as u8);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes()[..w]);
                }
                return;
            }
            ValueKind::Null => return,
            _ => {}
        }
        let as_varint = |x: u64| if signed { zigzag(x as i64) } else { x };
        let mut plain = 0usize;
        let mut delta = 0usize;
        let mut max = 0u64;
        let mut prev = 0u64;
        for &x in v {
            plain += varint_len(as_varint(x));
            delta += varint_len(zigzag(x.wrapping_sub(prev) as i64));
            prev = x;
            max = max.max(x);
        }
        let width = (8 - max.leading_zeros() as usize / 8).max(1);
        let fixed_size = width * v.len();
        if fixed_size <= plain && fixed_size <= delta {
            out.push(ENC_FIXED);
            out.push(width as u8);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes()[..width]);
            }
        } else if delta < plain {
            out.push(ENC_DELTA);
            let mut prev = 0u64;
            for &x in v {
                put_varint(out, zigzag(x.wrapping_sub(prev) as i64));
                prev = x;
            }
        } else {
            out.push(ENC_VARINT);
            for &x in v {
                put_varint(out, as_varint(x));
            }
        }
    }

    fn encode_var(&mut self, col: &Column, out: &mut Vec<u8>) {
        let count = self.slots.iter().map(|w| w.count_ones() as usize).sum();
        if count == 0 {
            return;
        }
        if count >= 16 && self.try_dict(col, count, out) {
            return;
        }
        out.push(ENC_PLAIN);
        self.lens.clear();
        let mut total = 0usize;
        for i in ones(&self.slots) {
            let n = col.var(i).len();
            total += n;
            put_varint(&mut self.lens, n as u64);
        }
        out.extend_from_slice(&self.lens);
        out.reserve(total);
        for i in ones(&self.slots) {
            out.extend_from_slice(col.var(i));
        }
    }

    /// Writes a dictionary encoding if it is clearly smaller than plain; returns whether it
    /// did. Checks a prefix first so that high-cardinality columns cost little.
    fn try_dict(&mut self, col: &Column, count: usize, out: &mut Vec<u8>) -> bool {
        let slots = ones(&self.slots);
        // A prefix whose values are mostly distinct says the column is not a dictionary one.
        let probe = count.min(64);
        self.dict.clear();
        for i in slots.clone().take(probe) {
            self.dict.index_of(col, i);
        }
        if self.dict.len() * 2 > probe {
            return false;
        }
        let mut plain = 0usize;
        let mut dict_bytes = 0usize;
        self.dict.clear();
        for i in slots.clone() {
            let n = col.var(i).len();
            plain += n + varint_len(n as u64);
            let before = self.dict.len();
            self.dict.index_of(col, i);
            if self.dict.len() > before {
                dict_bytes += n + varint_len(n as u64);
            }
        }
        let index_bytes = count * varint_len(self.dict.len() as u64);
        if (dict_bytes + index_bytes) * 5 > plain * 4 {
            return false;
        }
        out.push(ENC_DICT);
        put_varint(out, self.dict.len() as u64);
        for &i in &self.dict.values {
            put_varint(out, col.var(i).len() as u64);
        }
        for &i in &self.dict.values {
            out.extend_from_slice(col.var(i));
        }
        for i in slots {
            let index = self.dict.index_of(col, i);
            put_varint(out, u64::from(index));
        }
        true
    }
}

/// The distinct values of one column, by the slot that first held each. Keys are hashes
/// of the bytes (collisions chained and resolved by comparing), so the map owns nothing
/// borrowed and keeps its allocation from column to column and batch to batch.
#[derive(Default)]
struct ValueDict {
    hasher: std::collections::hash_map::RandomState,
    first: HashMap<u64, u32>,
    /// Per dictionary index: the slot holding its value, and the next index with the same
    /// hash (`u32::MAX`: none).
    values: Vec<usize>,
    chain: Vec<u32>,
}

impl ValueDict {
    fn clear(&mut self) {
        self.first.clear();
        self.values.clear();
        self.chain.clear();
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// The index of slot `i`'s value, added if new.
    fn index_of(&mut self, col: &Column, i: usize) -> u32 {
        use std::hash::BuildHasher as _;
        let v = col.var(i);
        let h = self.hasher.hash_one(v);
        let next = self.values.len() as u32;
        let head = *self.first.entry(h).or_insert(next);
        let mut at = head;
        while at != next && at != u32::MAX {
            if col.var(self.values[at as usize]) == v {
                return at;
            }
            at = self.chain[at as usize];
        }
        // New value; it heads its hash's chain.
        self.chain.push(if head == next { u32::MAX } else { head });
        self.first.insert(h, next);
        self.values.push(i);
        next
    }
}

fn encode_transactions(batch: &ChangeBatch, out: &mut Vec<u8>) {
    let txns = batch.transactions();
    put_varint(out, txns.len() as u64);
    for t in txns {
        out.push(match t.gtid {
            None => 0,
            Some(Gtid::Maria(_)) => 1,
            Some(Gtid::MySql(_)) => 2,
        });
    }
    let mut prev = 0u64;
    for t in txns {
        if let Some(Gtid::Maria(g)) = t.gtid {
            put_varint(out, u64::from(g.domain));
            put_varint(out, u64::from(g.server_id));
            put_varint(out, zigzag(g.sequence.wrapping_sub(prev) as i64));
            prev = g.sequence;
        }
    }
    let mut prev = 0u64;
    for t in txns {
        if let Some(Gtid::MySql(g)) = t.gtid {
            out.extend_from_slice(&g.uuid.0);
            let tag = g.tag.as_str().as_bytes();
            put_varint(out, tag.len() as u64);
            out.extend_from_slice(tag);
            put_varint(out, zigzag(g.gno.wrapping_sub(prev) as i64));
            prev = g.gno;
        }
    }
    let mut prev = 0u32;
    for t in txns {
        put_varint(out, zigzag(i64::from(t.timestamp) - i64::from(prev)));
        prev = t.timestamp;
    }
    for t in txns {
        put_varint(out, u64::from(t.file));
    }
    let mut prev = 0u64;
    for t in txns {
        put_varint(out, zigzag(t.end_pos.wrapping_sub(prev) as i64));
        prev = t.end_pos;
    }
    if !batch.is_compacted() {
        for t in txns {
            put_varint(out, u64::from(t.runs.1 - t.runs.0));
        }
    }
}

/// Schemas known to a decoder: shipped in earlier frames of the stream or in this one.
pub type SchemaCache = HashMap<SchemaVersion, Arc<TableSchema>>;

/// Limits on what one payload may ask the decoder to build.
#[derive(Debug, Clone, Copy)]
pub struct PayloadLimits {
    /// Most schemas kept by the decoder (a stream that ships more is rejected).
    pub max_schemas: usize,
    /// Most column slots (images × columns, over all sections) one payload may build. A
    /// slot costs a few bytes of payload but 8+ bytes of memory per column, so without
    /// this a wide forged table would turn a small payload into gigabytes.
    pub max_slots: usize,
    /// Most bytes copy slots may add over the payload (a copy repeats the value before it,
    /// so without this a long value copied into every slot would be a memory bomb).
    pub max_copied_bytes: usize,
}

/// The header-level facts a payload decoder needs (from the frame's header and meta block).
pub struct PayloadContext {
    /// Whether the batch is compacted.
    pub compacted: bool,
    /// Whether copy slots may appear (frame format 2 and later).
    pub copies: bool,
}

/// Decodes a payload into `parts` (whose buffers are reused where possible).
pub fn decode_payload(
    payload: &[u8],
    ctx: &PayloadContext,
    schemas: &mut SchemaCache,
    limits: &PayloadLimits,
    parts: &mut outflow_core::BatchParts,
) -> Result<(), PayloadError> {
    let mut r = Reader::new(payload);
    let n = r.count(r.remaining(), "schema count")?;
    for _ in 0..n {
        let bytes = r.bytes("schema")?;
        let schema: TableSchema = bincode_options()
            .deserialize(bytes)
            .map_err(|e| PayloadError::Schema(e.to_string()))?;
        schema.validate().map_err(PayloadError::Schema)?;
        if !schemas.contains_key(&schema.version) && schemas.len() >= limits.max_schemas {
            return Err(PayloadError::Schema(format!(
                "more than {} table definitions in one stream",
                limits.max_schemas
            )));
        }
        schemas.insert(schema.version, Arc::new(schema));
    }
    let nsec = r.count(r.remaining(), "section count")?;
    let mut section_schemas = Vec::with_capacity(nsec);
    for _ in 0..nsec {
        let v = SchemaVersion(r.varint("section schema")?);
        let s = schemas.get(&v).ok_or(PayloadError::UnknownSchema(v.0))?;
        section_schemas.push(s.clone());
    }
    decode_transactions(&mut r, ctx.compacted, &mut parts.transactions)?;
    let nruns = r.count(r.remaining() / 2, "run count")?;
    parts.runs.clear();
    let mut next_first = vec![0u32; nsec];
    for _ in 0..nruns {
        let section = r.varint_u32("run section")?;
        let len = r.varint_u32("run length")?;
        let Some(first) = next_first.get_mut(section as usize) else {
            return Err(wire("run section", "no such section"));
        };
        parts.runs.push(Run {
            section,
            first: *first,
            len,
        });
        *first = first.saturating_add(len);
    }
    parts.sections.clear();
    let mut scratch = SectionScratch {
        lens: Vec::new(),
        bytes: Vec::new(),
        slots_left: limits.max_slots,
        copied_left: limits.max_copied_bytes,
        copies: ctx.copies,
    };
    for schema in section_schemas {
        parts
            .sections
            .push(decode_section(&mut r, schema, &mut scratch)?);
    }
    r.finish("payload")?;
    Ok(())
}

fn decode_transactions(
    r: &mut Reader<'_>,
    compacted: bool,
    out: &mut Vec<Transaction>,
) -> Result<(), PayloadError> {
    // Each transaction takes at least 4 bytes (kind, timestamp, file, end position).
    let n = r.count(r.remaining() / 4, "transaction count")?;
    out.clear();
    let kinds = r.take(n, "gtid kinds")?;
    for &k in kinds {
        if k > 2 {
            return Err(wire("gtid kind", "unknown"));
        }
        out.push(Transaction {
            gtid: None,
            timestamp: 0,
            file: 0,
            end_pos: 0,
            runs: (0, 0),
        });
    }
    let mut prev = 0u64;
    for (t, &k) in out.iter_mut().zip(kinds) {
        if k == 1 {
            let domain = r.varint_u32("gtid domain")?;
            let server_id = r.varint_u32("gtid server id")?;
            let sequence = prev.wrapping_add(unzigzag(r.varint("gtid sequence")?) as u64);
            prev = sequence;
            t.gtid = Some(Gtid::Maria(MariaGtid {
                domain,
                server_id,
                sequence,
            }));
        }
    }
    let mut prev = 0u64;
    for (t, &k) in out.iter_mut().zip(kinds) {
        if k == 2 {
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(r.take(16, "gtid uuid")?);
            let tag = r.bytes("gtid tag")?;
            let tag = std::str::from_utf8(tag)
                .ok()
                .and_then(|s| Tag::new(s).ok())
                .ok_or(wire("gtid tag", "not a valid tag"))?;
            let gno = prev.wrapping_add(unzigzag(r.varint("gtid number")?) as u64);
            prev = gno;
            if gno == 0 {
                return Err(wire("gtid number", "0 is not a transaction number"));
            }
            t.gtid = Some(Gtid::MySql(MySqlGtid {
                uuid: Uuid(uuid),
                tag,
                gno,
            }));
        }
    }
    let mut prev = 0i64;
    for t in out.iter_mut() {
        let ts = prev.wrapping_add(unzigzag(r.varint("timestamp")?));
        t.timestamp = u32::try_from(ts).or_else(|_| err("timestamp", "out of range"))?;
        prev = ts;
    }
    for t in out.iter_mut() {
        t.file = r.varint_u32("transaction file")?;
    }
    let mut prev = 0u64;
    for t in out.iter_mut() {
        t.end_pos = prev.wrapping_add(unzigzag(r.varint("end position")?) as u64);
        prev = t.end_pos;
    }
    if !compacted {
        let mut at = 0u32;
        for t in out.iter_mut() {
            let n = r.varint_u32("transaction runs")?;
            let end = at
                .checked_add(n)
                .ok_or(wire("transaction runs", "overflow"))?;
            t.runs = (at, end);
            at = end;
        }
    }
    Ok(())
}

/// Buffers and budgets shared by the sections of one payload.
struct SectionScratch {
    lens: Vec<u32>,
    bytes: Vec<u8>,
    slots_left: usize,
    copied_left: usize,
    copies: bool,
}

fn decode_section(
    r: &mut Reader<'_>,
    schema: Arc<TableSchema>,
    scratch: &mut SectionScratch,
) -> Result<TableSection, PayloadError> {
    let SectionScratch {
        lens,
        bytes: copy_src,
        slots_left,
        copied_left,
        copies,
    } = scratch;
    let n = r.count(r.remaining(), "change count")?;
    let ops: Vec<Op> = r
        .take(n, "ops")?
        .iter()
        .map(|&b| Op::from_code(b))
        .collect::<Option<_>>()
        .ok_or(wire("op", "unknown op code"))?;
    let images: usize = ops.iter().map(|o| o.images() as usize).sum();
    let ncols = schema.columns.len();
    let slots = images.saturating_mul(ncols);
    if slots > *slots_left {
        return Err(wire(
            "section",
            "more column slots than the decoder's limit",
        ));
    }
    *slots_left -= slots;
    // A pattern takes one byte per column; zero-column tables have one empty pattern.
    let npat = r.count(r.remaining() / ncols.max(1) + 1, "pattern count")?;
    let pat_bytes = r.take(npat * ncols, "patterns")?;
    if pat_bytes.contains(&2) {
        return Err(wire("pattern", "a NULL that is not present"));
    }
    if pat_bytes
        .iter()
        .any(|&b| !(matches!(b, 0 | 1 | 3) || *copies && b == SLOT_COPY))
    {
        return Err(wire("pattern", "unknown slot state"));
    }
    if images > 0 && npat == 0 {
        return Err(wire("patterns", "images but no pattern"));
    }
    let mut image_pattern = Vec::with_capacity(images.min(r.remaining()));
    for _ in 0..images {
        let p = r.count(npat.saturating_sub(1), "image pattern")?;
        image_pattern.push(p);
    }
    let mut columns = Vec::with_capacity(ncols);
    for (c, cs) in schema.columns.iter().enumerate() {
        let kind = cs.value_kind();
        let mut parts = ColumnParts::default();
        let mut present = Bitmap::default();
        let mut null = Bitmap::default();
        let mut copy = Bitmap::default();
        let mut count = 0usize;
        let mut ncopies = 0usize;
        for &p in &image_pattern {
            let bits = pat_bytes[p * ncols + c];
            present.push(bits & 1 == 1);
            null.push(bits & 2 == 2);
            copy.push(bits == SLOT_COPY);
            count += usize::from(bits == 1);
            ncopies += usize::from(bits == SLOT_COPY);
        }
        if ncopies > 0 {
            // A copy repeats the slot before it, which must hold a value (itself or by copy).
            for i in 0..images {
                if copy.get(i) && (i == 0 || !present.get(i - 1) || null.get(i - 1)) {
                    return Err(wire("pattern", "a copy of no value"));
                }
            }
        }
        let slots = || (0..images).filter(|&i| present.get(i) && !null.get(i) && !copy.get(i));
        if count > 0 && kind != ValueKind::Null {
            if kind.is_var() {
                lens.clear();
                parts.offsets.reserve(images + 1);
                parts.offsets.push(0);
                if ncopies == 0 {
                    decode_var(r, count, &mut parts.bytes, lens)?;
                    check_var(kind, &parts.bytes, lens)?;
                    let mut li = lens.iter();
                    let mut end = 0u32;
                    for i in 0..images {
                        if present.get(i) && !null.get(i) {
                            end += li.next().copied().unwrap_or(0);
                        }
                        parts.offsets.push(end);
                    }
                } else {
                    // Values first, then laid out slot by slot with the copies in between.
                    copy_src.clear();
                    decode_var(r, count, copy_src, lens)?;
                    check_var(kind, copy_src, lens)?;
                    let (mut li, mut at) = (lens.iter(), 0usize);
                    for i in 0..images {
                        if copy.get(i) {
                            let (a, b) = (parts.offsets[i - 1], parts.offsets[i]);
                            let n = (b - a) as usize;
                            *copied_left = copied_left.checked_sub(n).ok_or(wire(
                                "column values",
                                "copies expand beyond the decoder's limit",
                            ))?;
                            parts.bytes.extend_from_within(a as usize..b as usize);
                        } else if present.get(i) && !null.get(i) {
                            let n = li.next().copied().unwrap_or(0) as usize;
                            parts.bytes.extend_from_slice(&copy_src[at..at + n]);
                            at += n;
                        }
                        let end = u32::try_from(parts.bytes.len())
                            .map_err(|_| wire("column values", "over 4 GiB"))?;
                        parts.offsets.push(end);
                    }
                }
            } else {
                parts.fixed.resize(images, 0);
                let enc = r.u8("column encoding")?;
                let signed = kind == ValueKind::Int;
                let mut prev = 0u64;
                let width = if enc == ENC_FIXED {
                    let w = r.u8("column width")? as usize;
                    if !(1..=8).contains(&w) {
                        return Err(wire("column width", "not 1..=8"));
                    }
                    w
                } else {
                    0
                };
                for i in slots() {
                    let v = match enc {
                        ENC_VARINT => {
                            let x = r.varint("column value")?;
                            if signed {
                                unzigzag(x) as u64
                            } else {
                                x
                            }
                        }
                        ENC_DELTA => {
                            let x = prev.wrapping_add(unzigzag(r.varint("column value")?) as u64);
                            prev = x;
                            x
                        }
                        ENC_FIXED => {
                            let b = r.take(width, "column value")?;
                            let mut a = [0u8; 8];
                            a[..width].copy_from_slice(b);
                            u64::from_le_bytes(a)
                        }
                        _ => return Err(wire("column encoding", "unknown")),
                    };
                    if !fixed_fits(kind, v) {
                        return Err(wire("column value", "out of range for its type"));
                    }
                    parts.fixed[i] = v;
                }
                for i in 1..images {
                    if copy.get(i) {
                        parts.fixed[i] = parts.fixed[i - 1];
                    }
                }
            }
        } else if kind.is_var() {
            parts.offsets.resize(images + 1, 0);
        } else {
            parts.fixed.resize(images, 0);
        }
        if kind == ValueKind::Null && count > 0 {
            return Err(PayloadError::Inconsistent(format!(
                "`{}` column {}: a value in a NULL-type column",
                schema.qualified_name(),
                c + 1
            )));
        }
        parts.present = present;
        parts.null = null;
        let col = Column::from_parts(kind, images, parts)
            .map_err(|e| PayloadError::Inconsistent(e.to_string()))?;
        columns.push(col);
    }
    TableSection::from_parts(schema, ops, columns)
        .map_err(|e| PayloadError::Inconsistent(e.to_string()))
}

/// Whether `v` is a slot value the column kind can hold, so that reading it back loses
/// nothing (the encoder writes FLOAT as 4 bytes; packed temporal values have fixed widths).
fn fixed_fits(kind: ValueKind, v: u64) -> bool {
    match kind {
        ValueKind::Float => v <= u64::from(u32::MAX),
        ValueKind::Year | ValueKind::Enum => v <= u64::from(u16::MAX),
        ValueKind::Date => v <= u64::from(u32::MAX),
        ValueKind::Time => v & !(1 << 62 | ((1 << 56) - 1)) == 0,
        ValueKind::DateTime => v < 1 << 60,
        ValueKind::Timestamp => v < 1 << 52,
        ValueKind::Null => v == 0,
        _ => true,
    }
}

/// Reads `count` variable-width values, appending their bytes to `bytes` and their
/// lengths to `lens`.
fn decode_var(
    r: &mut Reader<'_>,
    count: usize,
    bytes: &mut Vec<u8>,
    lens: &mut Vec<u32>,
) -> Result<(), PayloadError> {
    let enc = r.u8("column encoding")?;
    match enc {
        ENC_PLAIN => {
            let mut total = 0usize;
            for _ in 0..count {
                let n = r.count(r.remaining(), "value length")?;
                total = total.saturating_add(n);
                lens.push(n as u32);
            }
            if total > u32::MAX as usize {
                return Err(wire("column values", "over 4 GiB"));
            }
            bytes.extend_from_slice(r.take(total, "column values")?);
        }
        ENC_DICT => {
            let n = r.count(r.remaining(), "dictionary size")?;
            if n == 0 {
                return Err(wire("dictionary", "empty"));
            }
            let mut starts = Vec::with_capacity(n + 1);
            let mut total = 0usize;
            for _ in 0..n {
                starts.push(total);
                total = total.saturating_add(r.count(r.remaining(), "dictionary value length")?);
            }
            starts.push(total);
            let data = r.take(total, "dictionary values")?;
            for _ in 0..count {
                let i = r.count(n - 1, "dictionary index")?;
                let v = &data[starts[i]..starts[i + 1]];
                if bytes.len() + v.len() > u32::MAX as usize {
                    return Err(wire("column values", "over 4 GiB"));
                }
                bytes.extend_from_slice(v);
                lens.push(v.len() as u32);
            }
        }
        _ => return Err(wire("column encoding", "unknown")),
    }
    Ok(())
}

/// Values whose form the model defines must have it: decimal text, JSON as UTF-8.
fn check_var(kind: ValueKind, bytes: &[u8], lens: &[u32]) -> Result<(), PayloadError> {
    let mut at = 0usize;
    for &l in lens {
        let v = &bytes[at..at + l as usize];
        at += l as usize;
        let ok = match kind {
            ValueKind::Decimal => {
                !v.is_empty()
                    && v.iter()
                        .all(|b| b.is_ascii_digit() || *b == b'-' || *b == b'.')
            }
            ValueKind::Json => std::str::from_utf8(v).is_ok(),
            _ => true,
        };
        if !ok {
            return Err(wire("column value", "not valid for its type"));
        }
    }
    Ok(())
}

fn wire(what: &'static str, reason: &'static str) -> PayloadError {
    PayloadError::Wire(WireError { what, reason })
}

/// bincode with a size limit, so a forged length cannot reserve memory.
pub(crate) fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(1 << 20)
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Bytes missing or malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A section refers to a schema this stream never shipped.
    #[error("section refers to schema version {0:#x}, which this stream has not shipped (frames decoded out of order, or a decoder that missed the stream's first frame)")]
    UnknownSchema(u64),
    /// A shipped schema did not decode or is invalid.
    #[error("schema: {0}")]
    Schema(String),
    /// The parts do not fit together.
    #[error("{0}")]
    Inconsistent(String),
}

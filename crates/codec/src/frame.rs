//! Frames: the self-describing, checksummed unit the spool stores and the transport sends.
//!
//! # Layout (little-endian)
//! ```text
//! offset size
//!  0     4   magic `OFLW`
//!  4     1   format version (2; version 1 is read too; 3 for a frame whose batch ends
//!            with a DDL statement)
//!  5     1   flags: bit 0 payload is zstd, bit 1 compressed with a dictionary, bit 2
//!            the batch holds initial-snapshot rows (apply as upserts), bit 3 (format 2)
//!            stored in parts, each with its own dictionary, bit 4 the first transaction
//!            began in the frame before (a continued part), bit 5 the last transaction
//!            continues in the next frame (a part, not a commit)
//!  6     2   reserved, 0
//!  8     8   sequence number (the encoder's, +1 per frame)
//! 16     4   meta length M
//! 20     4   payload length P (as stored)
//! 24     4   payload length once decompressed
//! 28     4   dictionary id (0 = none)
//! 32     4   CRC-32 (IEEE) of bytes 0..32, the meta and the payload
//! 36     M   meta: bincode [`FrameMeta`]: mode, compaction, start position, binlog files,
//!            first and last GTID, end position, counts. Readable without decompressing.
//! 36+M   P   payload: the columnar batch ([`crate::columnar`]), usually zstd; in a
//!            version 3 frame, the DDL section comes first (see below)
//! ```
//!
//! A payload in parts (flag bit 3; dictionary id 0 in the header) is the same columnar
//! bytes cut into consecutive pieces, each compressed on its own with the dictionary it
//! names, so that each table's section can use its table's dictionary:
//! ```text
//! n (varint, at least 1), then n × (dictionary id u32, 0 = none; stored length varint;
//! length once decompressed varint), then the n stored pieces one after the other
//! ```
//! The pieces decompress, in order, to exactly the header's decompressed length. The
//! encoder cuts the head (schemas, transactions, runs) and each section, and joins
//! neighbours that use the same dictionary; the head goes with the first section.
//!
//! # DDL section (version 3 only)
//! A batch that ends with a DDL transaction (`ChangeBatch::ddl`) is written as version 3
//! (version 2 plus this section), so that a decoder that predates DDL rejects it by its
//! version instead of applying the rows and silently dropping the statement; every other
//! frame stays version 2. The
//! section opens the decompressed payload (statements are text and compress well):
//! ```text
//! flags     u8: bit 0 default database, bit 1 charset ids, bit 2 sql_mode (others 0)
//! database  varint length + UTF-8 bytes               (bit 0)
//! charset   3 varints: client, connection, server collation ids, each < 2^16 (bit 1)
//! sql_mode  varint                                    (bit 2)
//! statement varint length + bytes, not empty
//! ```
//! The columnar payload follows; its last transaction is the DDL's (it owns no rows).
//!
//! # Transactions in parts (flag bits 4 and 5)
//! A source transaction larger than a batch travels in parts, each frame at most a batch
//! (`crate::builder` cuts it; `outflow_core::ChangeBatch::cut_transaction`). In a frame with
//! bit 5, the last transaction of the columnar payload is such a part: its GTID and timestamp
//! are the transaction's, its end position only says how far the part got, and the meta
//! block's `end` and `last_gtid` leave it out (they name the last *committed* transaction). The
//! frames after it carry bit 4 and begin with the transaction's next part; the frame where it
//! ends holds its commit as usual. A sink applies every part into one target transaction and
//! commits (with its checkpoint) only at the end, so no partial transaction is ever visible
//! or checkpointed. Frames with either bit are never compacted or snapshot frames, and a
//! frame whose last transaction continues holds no DDL (the decoder refuses those
//! combinations). A decoder that predates parts refuses both bits as unknown flags, so
//! it never applies a part as if it were a whole transaction. A frame without bit 4 whose
//! predecessor had bit 5 means the source side restarted inside the transaction and sends it
//! again from its start: the receiver drops the parts it had.
//!
//! # Invariants and recovery
//! - A frame is accepted only whole: the checksum covers every byte, sizes are checked
//!   against [`Limits`] before anything is allocated, and the payload must decompress to
//!   exactly the announced size, which may not exceed `max_decompressed` (zstd writes into
//!   a buffer of that capacity and fails rather than grow it, so a decompression bomb costs
//!   at most that much memory).
//! - A frame refers to table schemas by version. With [`SchemaShipping::EveryFrame`] (the
//!   default) each frame carries every schema it uses and decodes on its own; with
//!   [`SchemaShipping::OncePerStream`] a schema is shipped the first time a stream uses it,
//!   so frames must be decoded in order from the stream's first frame, and the encoder's
//!   [`Encoder::reset_stream`] must be called whenever the receiver starts afresh (new
//!   connection). A dictionary is never shipped in-band: both ends register it by id,
//!   and a frame naming an id the decoder lacks fails with that id
//!   ([`FrameError::UnknownDictionary`]).
//! - Unknown versions, flags or dictionary ids are errors, never guesses.
//!
//! # Versions
//! - 1: the first format.
//! - 2: adds payloads in parts (per-table dictionaries), and copy slots to the payload's
//!   patterns ([`crate::columnar`]): a full-image
//!   update's after image names the columns it shares with its before image instead of
//!   repeating their values. A version 1 frame is a version 2 frame without copies, so
//!   the decoder reads both (and refuses copies and parts in a version 1 frame).
//! - 3: a version 2 frame whose payload opens with a DDL section (see above); written
//!   only for a batch that ends with a DDL statement.

use std::collections::HashSet;

use outflow_core::{
    BatchParts, BinlogPosition, ChangeBatch, Ddl, Gtid, ImageMode, SchemaVersion, SourcePosition,
    TableSchema,
};
use serde::{Deserialize, Serialize};

use crate::columnar::{
    bincode_options, decode_payload, PayloadContext, PayloadEncoder, PayloadError, PayloadLimits,
    SchemaCache, SchemaSink,
};
use crate::wire::{put_varint, Reader};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"OFLW";
/// The format version this code writes. It reads this one and the ones before (see the
/// module documentation).
pub const VERSION: u8 = 2;
/// The oldest format version this code reads.
pub const MIN_VERSION: u8 = 1;
/// The format version of frames whose batch ends with a DDL statement: version 2 with a
/// DDL section opening the payload (see the module documentation).
pub const VERSION_DDL: u8 = 3;
/// Bytes before the meta block.
pub const HEADER_LEN: usize = 36;

const FLAG_ZSTD: u8 = 1;
const FLAG_DICT: u8 = 2;
/// The batch holds initial-snapshot rows ([`ChangeBatch::is_snapshot`]).
const FLAG_SNAPSHOT: u8 = 4;
/// The payload is stored in parts (format 2), see the module documentation.
const FLAG_PARTS: u8 = 8;
/// The first transaction continues one cut at the end of the previous frame.
const FLAG_CONTINUED: u8 = 16;
/// The last transaction is a part that continues in the next frame.
const FLAG_CONTINUES: u8 = 32;
/// Every flag this build knows.
const KNOWN_FLAGS: u8 =
    FLAG_ZSTD | FLAG_DICT | FLAG_SNAPSHOT | FLAG_PARTS | FLAG_CONTINUED | FLAG_CONTINUES;

/// What a frame's meta block says, readable without decompressing the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// `true` for full images, `false` for replica images.
    pub full_images: bool,
    /// Whether the batch holds net changes (apply atomically).
    pub compacted: bool,
    /// Position before the frame's first transaction.
    pub start: SourcePosition,
    /// Binlog files the transactions refer to.
    pub files: Vec<String>,
    /// GTID of the first transaction that has one.
    pub first_gtid: Option<Gtid>,
    /// GTID of the last committed transaction that has one (a continuing part is left out).
    pub last_gtid: Option<Gtid>,
    /// File and offset after the last committed transaction (a continuing part is left out).
    pub end: Option<BinlogPosition>,
    /// Transactions in the frame.
    pub transactions: u32,
    /// Row changes in the frame.
    pub changes: u64,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Format version.
    pub version: u8,
    /// Flags.
    pub flags: u8,
    /// Sequence number.
    pub sequence: u64,
    /// Meta length.
    pub meta_len: u32,
    /// Stored payload length.
    pub payload_len: u32,
    /// Decompressed payload length.
    pub raw_len: u32,
    /// Dictionary id, 0 for none.
    pub dict_id: u32,
    /// CRC-32 of the frame.
    pub crc: u32,
}

impl FrameHeader {
    /// Whether the frame's last transaction is a part that continues in the next frame.
    pub fn continues(&self) -> bool {
        self.flags & FLAG_CONTINUES != 0
    }

    /// Whether the frame's first transaction continues one from the frame before.
    pub fn continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }

    /// Total frame length: header, meta and payload.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.meta_len) + u64::from(self.payload_len)
    }

    /// Parses the fixed header from the start of `buf` and checks it against `limits`
    /// (without the checksum, which needs the whole frame). Use it to frame a byte stream:
    /// once `buf` holds [`HEADER_LEN`] bytes, this says how long the frame is.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<FrameHeader, FrameError> {
        let b = buf.get(..HEADER_LEN).ok_or(FrameError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        })?;
        if b[..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        let h = FrameHeader {
            version: b[4],
            flags: b[5],
            sequence: u64::from_le_bytes(seq),
            meta_len: u32_at(16),
            payload_len: u32_at(20),
            raw_len: u32_at(24),
            dict_id: u32_at(28),
            crc: u32_at(32),
        };
        if !(MIN_VERSION..=VERSION_DDL).contains(&h.version) {
            return Err(FrameError::Version(h.version));
        }
        if h.flags & !KNOWN_FLAGS != 0 || b[6] != 0 || b[7] != 0 {
            return Err(FrameError::Malformed("unknown flags or reserved bits set"));
        }
        if h.flags & FLAG_PARTS != 0
            && (h.version < 2 || h.flags & FLAG_ZSTD == 0 || h.flags & FLAG_DICT != 0)
        {
            return Err(FrameError::Malformed(
                "parts flag in a version 1, uncompressed or single-dictionary frame",
            ));
        }
        if h.flags & (FLAG_CONTINUED | FLAG_CONTINUES) != 0
            && (h.flags & FLAG_SNAPSHOT != 0
                || h.version == VERSION_DDL && h.flags & FLAG_CONTINUES != 0)
        {
            return Err(FrameError::Malformed(
                "a transaction part in a snapshot frame, or a DDL frame that continues",
            ));
        }
        if (h.flags & FLAG_DICT != 0) != (h.dict_id != 0)
            || (h.flags & FLAG_DICT != 0 && h.flags & FLAG_ZSTD == 0)
        {
            return Err(FrameError::Malformed("dictionary flag and id disagree"));
        }
        if h.frame_len() > limits.max_frame as u64 {
            return Err(FrameError::TooLarge {
                what: "frame",
                size: h.frame_len(),
                limit: limits.max_frame as u64,
            });
        }
        if u64::from(h.raw_len) > limits.max_decompressed as u64 {
            return Err(FrameError::TooLarge {
                what: "decompressed payload",
                size: u64::from(h.raw_len),
                limit: limits.max_decompressed as u64,
            });
        }
        if h.flags & FLAG_ZSTD == 0 && h.raw_len != h.payload_len {
            return Err(FrameError::Malformed(
                "uncompressed payload of the wrong length",
            ));
        }
        if h.meta_len > 1 << 20 {
            return Err(FrameError::TooLarge {
                what: "meta block",
                size: u64::from(h.meta_len),
                limit: 1 << 20,
            });
        }
        Ok(h)
    }
}

/// Size limits a decoder enforces before allocating anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame accepted, in bytes (default 64 MiB).
    pub max_frame: usize,
    /// Largest decompressed payload, in bytes (default 256 MiB).
    pub max_decompressed: usize,
    /// Most table definitions a stream may ship (default 65,536).
    pub max_schemas: usize,
    /// Most column slots (row images × columns) one frame may decode to (default 64 Mi,
    /// about 1 GiB of memory at worst).
    pub max_slots: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 64 << 20,
            max_decompressed: 256 << 20,
            max_schemas: 65_536,
            max_slots: 64 << 20,
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs.
    #[error("frame truncated: needs {needed} bytes, {available} given")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Not an outflow frame.
    #[error("not an outflow frame (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("frame format version {0}, this build reads versions 1 to 3")]
    Version(u8),
    /// A size over a limit.
    #[error("{what} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Bytes after the frame.
    #[error("{0} bytes after the frame")]
    Trailing(usize),
    /// The checksum does not match: corrupted or forged.
    #[error(
        "frame {sequence}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        /// The frame's sequence number.
        sequence: u64,
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A header field is inconsistent.
    #[error("malformed frame header: {0}")]
    Malformed(&'static str),
    /// The payload is compressed with a dictionary this decoder does not have.
    #[error("frame {sequence}: dictionary {dict_id:#x} is not registered")]
    UnknownDictionary {
        /// The frame's sequence number.
        sequence: u64,
        /// The id.
        dict_id: u32,
    },
    /// zstd failed, or produced another size than announced.
    #[error("frame {sequence}: decompression failed: {reason}")]
    Decompress {
        /// The frame's sequence number.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// The meta block did not decode.
    #[error("frame {sequence}: meta block: {reason}")]
    Meta {
        /// The frame's sequence number.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// The payload did not decode.
    #[error("frame {sequence}: {error}")]
    Payload {
        /// The frame's sequence number.
        sequence: u64,
        /// Why.
        error: PayloadError,
    },
    /// The DDL section of a version 3 frame is malformed.
    #[error("frame {sequence}: DDL section: {reason}")]
    Ddl {
        /// The frame's sequence number.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// A sequence number other than the expected one.
    #[error("frame {got}: expected frame {expected}")]
    Sequence {
        /// Expected.
        expected: u64,
        /// Received.
        got: u64,
    },
}

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The batch has a transaction open; only whole transactions are encoded.
    #[error("batch has an open transaction")]
    OpenTransaction,
    /// The encoded frame would be over the limit: cut batches smaller.
    #[error("encoded frame of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Serialising a schema or the meta block failed.
    #[error("serialising: {0}")]
    Serialize(#[from] bincode::Error),
    /// zstd failed.
    #[error("zstd: {0}")]
    Compress(#[from] std::io::Error),
    /// The settings contradict themselves.
    #[error("encoder settings: {0}")]
    Config(&'static str),
}

/// How schemas travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaShipping {
    /// Every frame carries the schemas it uses: frames decode on their own (default).
    #[default]
    EveryFrame,
    /// A schema is shipped once per stream (see the module documentation).
    OncePerStream,
}

/// Encoder settings.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    /// zstd level (default 1; 0 stores the payload uncompressed). Level 1 is the default
    /// because it measured both faster and smaller than 2-5 on sysbench binlogs, whose
    /// payloads are mostly high-entropy text that only the literal coder shrinks.
    pub level: i32,
    /// How schemas travel.
    pub schemas: SchemaShipping,
    /// Largest frame to produce (default 64 MiB, the decoder's default limit).
    pub max_frame: usize,
    /// A zstd dictionary and its id (non-zero), registered with the decoder too. Alone, it
    /// compresses whole payloads; beside [`EncoderConfig::table_dictionaries`], the
    /// sections of tables without a dictionary of their own.
    pub dictionary: Option<(u32, Vec<u8>)>,
    /// Dictionaries for particular tables: each such table's section is compressed on its
    /// own with its dictionary (the payload goes in parts, see the module documentation).
    pub table_dictionaries: Vec<TableDictionary>,
}

/// A zstd dictionary for some tables' sections ([`train_dictionary`] makes one from
/// [`Encoder::last_table_samples`]). The decoder must register it under the same id.
#[derive(Debug, Clone)]
pub struct TableDictionary {
    /// Its id: non-zero, and unique among the encoder's dictionaries.
    pub id: u32,
    /// The dictionary.
    pub dict: Vec<u8>,
    /// The tables it compresses, as `db.table`.
    pub tables: Vec<String>,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            level: 1,
            schemas: SchemaShipping::EveryFrame,
            max_frame: Limits::default().max_frame,
            dictionary: None,
            table_dictionaries: Vec::new(),
        }
    }
}

struct Shipper<'a> {
    mode: SchemaShipping,
    shipped: &'a mut HashSet<(SchemaVersion, u64)>,
}

impl SchemaSink for Shipper<'_> {
    fn ship(&mut self, schema: &TableSchema) -> bool {
        match self.mode {
            SchemaShipping::EveryFrame => true,
            SchemaShipping::OncePerStream => self.shipped.insert((schema.version, 0)),
        }
    }
}

/// Turns batches into frames. Sans-IO: bytes out, nothing else.
pub struct Encoder {
    cfg: EncoderConfig,
    sequence: u64,
    payload: PayloadEncoder,
    raw: Vec<u8>,
    shipped: HashSet<(SchemaVersion, u64)>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// One compressor per table dictionary, by id.
    table_zstd: Vec<(u32, zstd::bulk::Compressor<'static>)>,
    /// `(db, table, index into table_zstd)`: few entries, scanned per section.
    table_dict: Vec<(String, String, usize)>,
    /// Pieces of the payload being written in parts: (dictionary id, start, end).
    parts: Vec<(u32, usize, usize)>,
    compressed: Vec<u8>,
}

impl Encoder {
    /// An encoder whose first frame gets sequence 0.
    pub fn new(cfg: EncoderConfig) -> Result<Encoder, EncodeError> {
        let zstd = if cfg.level == 0 {
            None
        } else {
            Some(match &cfg.dictionary {
                Some((_, dict)) => zstd::bulk::Compressor::with_dictionary(cfg.level, dict)?,
                None => zstd::bulk::Compressor::new(cfg.level)?,
            })
        };
        let mut table_zstd = Vec::new();
        let mut table_dict = Vec::new();
        let default_id = cfg.dictionary.as_ref().map(|d| d.0);
        if default_id == Some(0) {
            return Err(EncodeError::Config("dictionary id 0"));
        }
        for (i, d) in cfg.table_dictionaries.iter().enumerate() {
            if d.id == 0
                || Some(d.id) == default_id
                || cfg.table_dictionaries[..i].iter().any(|e| e.id == d.id)
            {
                return Err(EncodeError::Config(
                    "table dictionary ids must be non-zero and unique",
                ));
            }
            if cfg.level == 0 {
                continue;
            }
            let mut z = zstd::bulk::Compressor::with_dictionary(cfg.level, &d.dict)?;
            // The part table names the dictionary and the length: zstd need not.
            z.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))?;
            z.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))?;
            for t in &d.tables {
                let (db, table) = t.split_once('.').ok_or(EncodeError::Config(
                    "a table dictionary's table is not db.table",
                ))?;
                table_dict.push((db.to_string(), table.to_string(), table_zstd.len()));
            }
            table_zstd.push((d.id, z));
        }
        Ok(Encoder {
            cfg,
            sequence: 0,
            payload: PayloadEncoder::default(),
            raw: Vec::new(),
            shipped: HashSet::new(),
            zstd,
            table_zstd,
            table_dict,
            parts: Vec::new(),
            compressed: Vec::new(),
        })
    }

    /// The sequence number of the next frame.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
    }

    /// Sets the sequence number of the next frame (when resuming a stream).
    pub fn set_sequence(&mut self, next: u64) {
        self.sequence = next;
    }

    /// Forgets which schemas were shipped: the next frames ship them again. Call it when
    /// the receiver starts afresh (only matters with [`SchemaShipping::OncePerStream`]).
    pub fn reset_stream(&mut self) {
        self.shipped.clear();
    }

    /// Bytes of the last payload before compression.
    pub fn last_raw_len(&self) -> usize {
        self.raw.len()
    }

    /// The last payload before compression: a sample for [`train_dictionary`].
    pub fn last_payload(&self) -> &[u8] {
        &self.raw
    }

    /// Bytes each section of the last batch took in its payload, before compression.
    pub fn last_section_sizes(&self) -> &[usize] {
        self.payload.section_sizes()
    }

    /// Bytes of the last payload's head (schemas, transactions, runs), before its sections.
    fn head_len(&self) -> usize {
        let sections: usize = self.payload.section_sizes().iter().sum();
        self.raw.len() - sections
    }

    /// The last payload cut as table dictionaries cut it, each piece with its table:
    /// samples for [`TableDictionary`]s. A piece is a section, and the first one comes with
    /// the payload's head, as the frame compresses them.
    pub fn last_table_samples(&self) -> impl Iterator<Item = (&TableSchema, &[u8])> + '_ {
        let mut at = 0;
        let head = self.head_len();
        self.payload
            .section_tables()
            .iter()
            .zip(self.payload.section_sizes())
            .enumerate()
            .map(move |(i, (t, &n))| {
                let start = at;
                at = if i == 0 { head + n } else { at + n };
                (&**t, &self.raw[start..at])
            })
    }

    /// Cuts the payload into pieces by dictionary; returns whether it takes more than
    /// one piece or any table dictionary (otherwise it is compressed whole).
    fn plan_parts(&mut self) -> bool {
        self.parts.clear();
        if self.table_zstd.is_empty() {
            return false;
        }
        let default_id = self.cfg.dictionary.as_ref().map_or(0, |d| d.0);
        let head = self.head_len();
        let piece =
            |id: u32, len: usize, parts: &mut Vec<(u32, usize, usize)>| match parts.last_mut() {
                Some(last) if last.0 == id => last.2 += len,
                last => {
                    let at = last.map_or(0, |l| l.2);
                    parts.push((id, at, at + len));
                }
            };
        let id_of = |t: &TableSchema| {
            self.table_dict
                .iter()
                .find(|(db, table, _)| *db == t.db && *table == t.table)
                .map_or(default_id, |&(_, _, i)| self.table_zstd[i].0)
        };
        let tables = self.payload.section_tables();
        // The head joins the first section's part: one zstd frame fewer (about 15 bytes,
        // which count in a frame of one transaction), and the head holds that table's
        // schema, which its dictionary knows (see `last_table_samples`).
        let head_id = tables.first().map_or(default_id, |t| id_of(t));
        piece(head_id, head, &mut self.parts);
        for (t, &n) in tables.iter().zip(self.payload.section_sizes()) {
            piece(id_of(t), n, &mut self.parts);
        }
        self.parts.len() > 1 || self.parts[0].0 != default_id
    }

    /// Writes the payload in parts (see the module documentation) to `out`.
    fn compress_parts(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.compressed.clear();
        put_varint(out, self.parts.len() as u64);
        let default_id = self.cfg.dictionary.as_ref().map_or(0, |d| d.0);
        for &(id, a, b) in &self.parts {
            let z = if id == default_id {
                self.zstd.as_mut()
            } else {
                self.table_zstd
                    .iter_mut()
                    .find(|(i, _)| *i == id)
                    .map(|(_, z)| z)
            }
            .ok_or(EncodeError::Config("a payload part without a compressor"))?;
            let at = self.compressed.len();
            self.compressed
                .reserve(zstd::zstd_safe::compress_bound(b - a));
            let mut tail = std::io::Cursor::new(&mut self.compressed);
            tail.set_position(at as u64);
            z.compress_to_buffer(&self.raw[a..b], &mut tail)?;
            out.extend_from_slice(&id.to_le_bytes());
            put_varint(out, (self.compressed.len() - at) as u64);
            put_varint(out, (b - a) as u64);
        }
        out.extend_from_slice(&self.compressed);
        Ok(())
    }

    /// Encodes `batch` as one frame appended to `out`; returns its header.
    pub fn encode(
        &mut self,
        batch: &ChangeBatch,
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, EncodeError> {
        if batch.in_transaction() {
            return Err(EncodeError::OpenTransaction);
        }
        self.raw.clear();
        if let Some(ddl) = batch.ddl() {
            put_ddl(&mut self.raw, ddl);
        }
        let mut ship = Shipper {
            mode: self.cfg.schemas,
            shipped: &mut self.shipped,
        };
        self.payload.encode(batch, &mut ship, &mut self.raw)?;
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        bincode::serialize_into(&mut *out, &meta_of(batch))?;
        let meta_len = out.len() - start - HEADER_LEN;
        let payload_at = out.len();
        let in_parts = self.zstd.is_some() && self.plan_parts();
        let (flags, dict_id) = match (&mut self.zstd, &self.cfg.dictionary) {
            (Some(_), _) if in_parts => {
                self.compress_parts(out)?;
                (FLAG_ZSTD | FLAG_PARTS, 0)
            }
            (Some(z), dict) => {
                // Straight into `out`, after what it holds: no second copy of the payload.
                out.reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
                let mut tail = std::io::Cursor::new(&mut *out);
                tail.set_position(payload_at as u64);
                z.compress_to_buffer(&self.raw[..], &mut tail)?;
                match dict {
                    Some((id, _)) => (FLAG_ZSTD | FLAG_DICT, *id),
                    None => (FLAG_ZSTD, 0),
                }
            }
            (None, _) => {
                out.extend_from_slice(&self.raw);
                (0, 0)
            }
        };
        let payload_len = out.len() - payload_at;
        let total = out.len() - start;
        if total > self.cfg.max_frame || self.raw.len() > u32::MAX as usize {
            out.truncate(start);
            return Err(EncodeError::TooLarge {
                size: total as u64,
                limit: self.cfg.max_frame as u64,
            });
        }
        let h = &mut out[start..start + HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = if batch.ddl().is_some() {
            VERSION_DDL
        } else {
            VERSION
        };
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        h[5] = flags
            | flag(batch.is_snapshot(), FLAG_SNAPSHOT)
            | flag(batch.continued(), FLAG_CONTINUED)
            | flag(batch.continues(), FLAG_CONTINUES);
        h[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        h[16..20].copy_from_slice(&(meta_len as u32).to_le_bytes());
        h[20..24].copy_from_slice(&(payload_len as u32).to_le_bytes());
        h[24..28].copy_from_slice(&(self.raw.len() as u32).to_le_bytes());
        h[28..32].copy_from_slice(&dict_id.to_le_bytes());
        let crc = frame_crc(&out[start..]);
        out[start + 32..start + 36].copy_from_slice(&crc.to_le_bytes());
        let header = FrameHeader::parse(
            &out[start..],
            &Limits {
                max_frame: usize::MAX,
                max_decompressed: usize::MAX,
                max_schemas: usize::MAX,
                max_slots: usize::MAX,
            },
        )
        .map_err(|e| EncodeError::Compress(std::io::Error::other(e.to_string())))?;
        self.sequence += 1;
        Ok(header)
    }
}

/// Trains a zstd dictionary of at most `max_size` bytes from samples taken from earlier
/// batches of the same stream: whole payloads ([`Encoder::last_payload`]) for
/// [`EncoderConfig::dictionary`], one table's pieces ([`Encoder::last_table_samples`]) for
/// a [`TableDictionary`]. Dictionaries pay on small frames (a transaction or two), where zstd
/// has little history of its own; give it to both ends ([`Decoder::add_dictionary`]) under
/// one id.
pub fn train_dictionary(samples: &[Vec<u8>], max_size: usize) -> Result<Vec<u8>, std::io::Error> {
    zstd::dict::from_samples(samples, max_size)
}

const DDL_DB: u8 = 1;
const DDL_CHARSET: u8 = 2;
const DDL_SQL_MODE: u8 = 4;

/// Writes the DDL section (see the module documentation).
fn put_ddl(out: &mut Vec<u8>, ddl: &Ddl) {
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    let flags = flag(ddl.db.is_some(), DDL_DB)
        | flag(ddl.charset.is_some(), DDL_CHARSET)
        | flag(ddl.sql_mode.is_some(), DDL_SQL_MODE);
    out.push(flags);
    if let Some(db) = &ddl.db {
        put_varint(out, db.len() as u64);
        out.extend_from_slice(db.as_bytes());
    }
    if let Some((a, b, c)) = ddl.charset {
        for id in [a, b, c] {
            put_varint(out, u64::from(id));
        }
    }
    if let Some(mode) = ddl.sql_mode {
        put_varint(out, mode);
    }
    put_varint(out, ddl.sql.len() as u64);
    out.extend_from_slice(&ddl.sql);
}

/// Reads the DDL section from the start of `r`.
fn read_ddl(r: &mut Reader<'_>) -> Result<Ddl, String> {
    let flags = r.u8("DDL flags").map_err(|e| e.to_string())?;
    if flags & !(DDL_DB | DDL_CHARSET | DDL_SQL_MODE) != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let db = if flags & DDL_DB != 0 {
        let bytes = r.bytes("DDL database").map_err(|e| e.to_string())?;
        let db = std::str::from_utf8(bytes).map_err(|_| "database name is not UTF-8")?;
        if db.is_empty() {
            return Err("empty database name".into());
        }
        Some(db.to_string())
    } else {
        None
    };
    let charset = if flags & DDL_CHARSET != 0 {
        let mut id = || -> Result<u16, String> {
            let v = r.varint("DDL charset").map_err(|e| e.to_string())?;
            u16::try_from(v).map_err(|_| format!("collation id {v} out of range"))
        };
        Some((id()?, id()?, id()?))
    } else {
        None
    };
    let sql_mode = if flags & DDL_SQL_MODE != 0 {
        Some(r.varint("DDL sql_mode").map_err(|e| e.to_string())?)
    } else {
        None
    };
    let sql = r.bytes("DDL statement").map_err(|e| e.to_string())?;
    if sql.is_empty() {
        return Err("empty statement".into());
    }
    Ok(Ddl {
        db,
        sql: sql.to_vec(),
        charset,
        sql_mode,
    })
}

fn frame_crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[..32]);
    h.update(&frame[HEADER_LEN..]);
    h.finalize()
}

/// [`FrameMeta`] borrowing from the batch, so that writing it copies nothing: the same
/// fields in the same order, so its bincode bytes are [`FrameMeta`]'s (a test checks).
#[derive(Serialize)]
struct MetaRef<'a> {
    full_images: bool,
    compacted: bool,
    start: &'a SourcePosition,
    files: &'a [String],
    first_gtid: Option<Gtid>,
    last_gtid: Option<Gtid>,
    end: Option<PositionRef<'a>>,
    transactions: u32,
    changes: u64,
}

/// [`BinlogPosition`], borrowed.
#[derive(Serialize)]
struct PositionRef<'a> {
    file: &'a str,
    pos: u64,
}

fn meta_of(batch: &ChangeBatch) -> MetaRef<'_> {
    let txns = batch.transactions();
    // A continuing part is no commit: `end` and `last_gtid` name the last committed one.
    let complete = batch.complete_transactions();
    let end = complete.last().and_then(|t| {
        batch.files().get(t.file as usize).map(|f| PositionRef {
            file: f,
            pos: t.end_pos,
        })
    });
    MetaRef {
        full_images: batch.mode() == ImageMode::Full,
        compacted: batch.is_compacted(),
        start: batch.start(),
        files: batch.files(),
        first_gtid: txns.iter().find_map(|t| t.gtid),
        last_gtid: complete.iter().rev().find_map(|t| t.gtid),
        end,
        transactions: txns.len() as u32,
        changes: batch.change_count() as u64,
    }
}

/// Turns frames back into batches, enforcing [`Limits`]. Sans-IO.
pub struct Decoder {
    limits: Limits,
    schemas: SchemaCache,
    dictionaries: std::collections::HashMap<u32, zstd::bulk::Decompressor<'static>>,
    plain: zstd::bulk::Decompressor<'static>,
    raw: Vec<u8>,
    /// Part table of the frame being decoded: (dictionary id, stored, decompressed length).
    parts: Vec<(u32, usize, usize)>,
    expect: Option<u64>,
}

impl Decoder {
    /// A decoder with the given limits and no schemas yet.
    pub fn new(limits: Limits) -> Result<Decoder, std::io::Error> {
        Ok(Decoder {
            limits,
            schemas: SchemaCache::new(),
            dictionaries: Default::default(),
            plain: zstd::bulk::Decompressor::new()?,
            raw: Vec::new(),
            parts: Vec::new(),
            expect: None,
        })
    }

    /// Registers a zstd dictionary under `id` (non-zero).
    pub fn add_dictionary(&mut self, id: u32, dict: &[u8]) -> Result<(), std::io::Error> {
        self.dictionaries
            .insert(id, zstd::bulk::Decompressor::with_dictionary(dict)?);
        Ok(())
    }

    /// Requires the next frame to have sequence `next` (and each later one the next
    /// number); `None` accepts any.
    pub fn expect_sequence(&mut self, next: Option<u64>) {
        self.expect = next;
    }

    /// Forgets the schemas of the stream (a new stream begins).
    pub fn reset_stream(&mut self) {
        self.schemas.clear();
    }

    /// Reads the header and meta block of a whole frame, checking its checksum, without
    /// decompressing the payload.
    pub fn peek(&self, frame: &[u8]) -> Result<(FrameHeader, FrameMeta), FrameError> {
        let h = self.check(frame)?;
        let meta = read_meta(frame, &h)?;
        Ok((h, meta))
    }

    fn check(&self, frame: &[u8]) -> Result<FrameHeader, FrameError> {
        let h = FrameHeader::parse(frame, &self.limits)?;
        let len = h.frame_len() as usize;
        if frame.len() < len {
            return Err(FrameError::Truncated {
                needed: len,
                available: frame.len(),
            });
        }
        if frame.len() > len {
            return Err(FrameError::Trailing(frame.len() - len));
        }
        let computed = frame_crc(frame);
        if computed != h.crc {
            return Err(FrameError::Checksum {
                sequence: h.sequence,
                stored: h.crc,
                computed,
            });
        }
        Ok(h)
    }

    /// Decodes one whole frame (exactly its bytes) into `batch`, whose buffers are reused.
    pub fn decode(
        &mut self,
        frame: &[u8],
        batch: &mut ChangeBatch,
    ) -> Result<FrameHeader, FrameError> {
        let h = self.check(frame)?;
        if let Some(expected) = self.expect {
            if h.sequence != expected {
                return Err(FrameError::Sequence {
                    expected,
                    got: h.sequence,
                });
            }
        }
        let meta = read_meta(frame, &h)?;
        let payload = &frame[HEADER_LEN + h.meta_len as usize..];
        let seq = h.sequence;
        let raw: &[u8] = if h.flags & FLAG_PARTS != 0 {
            self.decompress_parts(payload, &h)?;
            &self.raw
        } else if h.flags & FLAG_ZSTD != 0 {
            let z = if h.dict_id != 0 {
                self.dictionaries
                    .get_mut(&h.dict_id)
                    .ok_or(FrameError::UnknownDictionary {
                        sequence: seq,
                        dict_id: h.dict_id,
                    })?
            } else {
                &mut self.plain
            };
            self.raw.clear();
            self.raw.reserve(h.raw_len as usize);
            // Capacity is at least raw_len and zstd never writes past it, so a payload that
            // inflates beyond the announced size fails here instead of growing the buffer.
            let n = z
                .decompress_to_buffer(payload, &mut self.raw)
                .map_err(|e| FrameError::Decompress {
                    sequence: seq,
                    reason: e.to_string(),
                })?;
            if n != h.raw_len as usize {
                return Err(FrameError::Decompress {
                    sequence: seq,
                    reason: format!("{n} bytes, {} announced", h.raw_len),
                });
            }
            &self.raw
        } else {
            payload
        };
        let mode = if meta.full_images {
            ImageMode::Full
        } else {
            ImageMode::Replica
        };
        let (ddl, raw) = if h.version == VERSION_DDL {
            let mut r = Reader::new(raw);
            let ddl = read_ddl(&mut r).map_err(|reason| FrameError::Ddl {
                sequence: seq,
                reason,
            })?;
            (Some(ddl), &raw[r.position()..])
        } else {
            (None, raw)
        };
        let old = std::mem::take(batch);
        let mut parts = old.into_parts();
        parts.ddl = ddl;
        parts.mode = mode;
        parts.compacted = meta.compacted;
        parts.start = meta.start;
        parts.files = meta.files;
        let ctx = PayloadContext {
            compacted: meta.compacted,
            copies: h.version >= 2,
        };
        let limits = PayloadLimits {
            max_schemas: self.limits.max_schemas,
            max_slots: self.limits.max_slots,
            max_copied_bytes: self.limits.max_decompressed,
        };
        decode_payload(raw, &ctx, &mut self.schemas, &limits, &mut parts).map_err(|error| {
            FrameError::Payload {
                sequence: seq,
                error,
            }
        })?;
        *batch =
            ChangeBatch::from_parts(BatchParts { ..parts }).map_err(|e| FrameError::Payload {
                sequence: seq,
                error: PayloadError::Inconsistent(e.to_string()),
            })?;
        batch.set_snapshot(h.flags & FLAG_SNAPSHOT != 0);
        batch
            .set_parts(h.flags & FLAG_CONTINUED != 0, h.flags & FLAG_CONTINUES != 0)
            .map_err(|e| FrameError::Payload {
                sequence: seq,
                error: PayloadError::Inconsistent(e.to_string()),
            })?;
        if let Some(e) = self.expect.as_mut() {
            *e += 1;
        }
        Ok(h)
    }
}

impl Decoder {
    /// Decompresses a payload stored in parts into `self.raw`; each part fills exactly its
    /// announced length, and the lengths add up to the header's.
    fn decompress_parts(&mut self, payload: &[u8], h: &FrameHeader) -> Result<(), FrameError> {
        let seq = h.sequence;
        let bad = |reason: String| FrameError::Decompress {
            sequence: seq,
            reason,
        };
        let mut r = Reader::new(payload);
        // A part's entry takes at least 6 bytes.
        let n = r
            .count(r.remaining() / 6, "payload part count")
            .map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(bad("a payload in no parts".into()));
        }
        let raw_len = h.raw_len as usize;
        self.parts.clear();
        let (mut stored_total, mut raw_total) = (0usize, 0usize);
        for _ in 0..n {
            let entry = (|| {
                let id = r.u32("part dictionary")?;
                let stored = r.count(r.remaining(), "part length")?;
                let raw = r.count(raw_len, "part decompressed length")?;
                Ok::<_, crate::wire::WireError>((id, stored, raw))
            })()
            .map_err(|e| bad(e.to_string()))?;
            stored_total += entry.1;
            raw_total += entry.2;
            self.parts.push(entry);
        }
        if stored_total != r.remaining() || raw_total != raw_len {
            return Err(bad(format!(
                "parts of {stored_total} stored and {raw_total} decompressed bytes in a payload \
                 of {} and {raw_len}",
                r.remaining()
            )));
        }
        let mut stored = &payload[r.position()..];
        self.raw.clear();
        self.raw.resize(raw_len, 0);
        let mut at = 0;
        for &(id, n, len) in &self.parts {
            let z = if id == 0 {
                &mut self.plain
            } else {
                self.dictionaries
                    .get_mut(&id)
                    .ok_or(FrameError::UnknownDictionary {
                        sequence: seq,
                        dict_id: id,
                    })?
            };
            let (piece, rest) = stored.split_at(n);
            stored = rest;
            // The slice is exactly the part's length: zstd fails rather than write past it.
            let got = z
                .decompress_to_buffer(piece, &mut self.raw[at..at + len])
                .map_err(|e| bad(e.to_string()))?;
            if got != len {
                return Err(bad(format!("a part of {got} bytes, {len} announced")));
            }
            at += len;
        }
        Ok(())
    }
}

fn read_meta(frame: &[u8], h: &FrameHeader) -> Result<FrameMeta, FrameError> {
    use bincode::Options;
    let bytes = &frame[HEADER_LEN..HEADER_LEN + h.meta_len as usize];
    bincode_options()
        .deserialize(bytes)
        .map_err(|e| FrameError::Meta {
            sequence: h.sequence,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::{ColumnSchema, ColumnType, Op, TableSchema, ValueRef};
    use std::sync::Arc;

    fn batch(rows: u32) -> ChangeBatch {
        let schema = Arc::new(TableSchema {
            version: SchemaVersion(7),
            db: "d".into(),
            table: "t".into(),
            columns: vec![
                ColumnSchema::new("id", ColumnType::Int { bytes: 8 }),
                ColumnSchema::new(
                    "s",
                    ColumnType::String {
                        max_bytes: 64,
                        binary: false,
                    },
                ),
            ],
            primary_key: vec![0],
        });
        let mut b = ChangeBatch::new(ImageMode::Replica);
        b.begin_transaction(Some("0-1-9".parse().unwrap()), 5)
            .unwrap();
        let sec = b.section_for(&schema);
        for i in 0..rows {
            let s = b.push_change(sec, Op::Insert).unwrap();
            s.push_image().unwrap();
            s.set(0, ValueRef::Int(i64::from(i))).unwrap();
            s.set(
                1,
                ValueRef::Text(format!("row {i} of the table").as_bytes()),
            )
            .unwrap();
        }
        b.commit_transaction("binlog.000001", 1000).unwrap();
        b
    }

    fn encode(b: &ChangeBatch, cfg: EncoderConfig) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(cfg).unwrap().encode(b, &mut out).unwrap();
        out
    }

    fn decode(frame: &[u8], limits: Limits) -> Result<ChangeBatch, FrameError> {
        let mut b = ChangeBatch::default();
        Decoder::new(limits).unwrap().decode(frame, &mut b)?;
        Ok(b)
    }

    #[test]
    fn transaction_parts_are_flagged_and_impossible_combinations_refused() {
        // A batch whose last transaction is cut: flag bit 5, and the next one bit 4.
        let mut b = batch(3);
        let schema = b.sections()[0].schema().clone();
        b.begin_transaction(Some("0-1-10".parse().unwrap()), 6)
            .unwrap();
        let sec = b.section_for(&schema);
        let s = b.push_change(sec, Op::Insert).unwrap();
        s.push_image().unwrap();
        s.set(0, ValueRef::Int(100)).unwrap();
        s.set(1, ValueRef::Null).unwrap();
        b.cut_transaction("binlog.000001", 1500).unwrap();
        let f = encode(&b, EncoderConfig::default());
        assert_eq!(f[5] & (FLAG_CONTINUED | FLAG_CONTINUES), FLAG_CONTINUES);
        let back = decode(&f, Limits::default()).unwrap();
        assert_eq!(back, b);
        assert!(back.continues() && !back.continued());
        let (_, meta) = Decoder::new(Limits::default()).unwrap().peek(&f).unwrap();
        assert_eq!(meta.end.map(|e| e.pos), Some(1000), "the part is no commit");
        assert_eq!(meta.last_gtid, Some("0-1-9".parse().unwrap()));
        let mut next = b.clone();
        next.clear();
        next.continue_transaction(Some("0-1-10".parse().unwrap()), 6)
            .unwrap();
        let sec = next.section_for(&schema);
        let s = next.push_change(sec, Op::Insert).unwrap();
        s.push_image().unwrap();
        s.set(0, ValueRef::Int(101)).unwrap();
        s.set(1, ValueRef::Null).unwrap();
        next.commit_transaction("binlog.000001", 2000).unwrap();
        let g = encode(&next, EncoderConfig::default());
        assert_eq!(g[5] & (FLAG_CONTINUED | FLAG_CONTINUES), FLAG_CONTINUED);
        assert_eq!(decode(&g, Limits::default()).unwrap(), next);
        // A decoder that predates parts refuses both bits (as this one refuses bit 6).
        let mut h = f.clone();
        h[5] |= 64;
        refix_crc(&mut h);
        assert_eq!(
            decode(&h, Limits::default()).unwrap_err(),
            FrameError::Malformed("unknown flags or reserved bits set")
        );
        // A snapshot frame with parts, a part in a frame without transactions, a DDL frame
        // that continues, a compacted frame with parts: all refused.
        let mut h = f.clone();
        h[5] |= FLAG_SNAPSHOT;
        refix_crc(&mut h);
        assert!(matches!(
            decode(&h, Limits::default()),
            Err(FrameError::Malformed(_))
        ));
        let mut empty = ChangeBatch::new(ImageMode::Replica);
        empty.set_start(b.start().clone());
        let mut h = encode(&empty, EncoderConfig::default());
        h[5] |= FLAG_CONTINUED;
        refix_crc(&mut h);
        assert!(matches!(
            decode(&h, Limits::default()),
            Err(FrameError::Payload { .. })
        ));
        let mut h = encode(
            &ddl_batch(
                1,
                Ddl {
                    sql: b"DROP TABLE t".to_vec(),
                    ..Ddl::default()
                },
            ),
            EncoderConfig::default(),
        );
        h[5] |= FLAG_CONTINUES;
        refix_crc(&mut h);
        assert!(matches!(
            decode(&h, Limits::default()),
            Err(FrameError::Malformed(_))
        ));
        let mut compacted = ChangeBatch::new(ImageMode::Replica);
        crate::Compactor::default()
            .compact(&batch(3), &mut compacted)
            .unwrap();
        let mut h = encode(&compacted, EncoderConfig::default());
        h[5] |= FLAG_CONTINUED;
        refix_crc(&mut h);
        assert!(matches!(
            decode(&h, Limits::default()),
            Err(FrameError::Payload { .. })
        ));
    }

    #[test]
    fn corrupt_truncated_and_trailing_frames_are_rejected() {
        let b = batch(50);
        let f = encode(&b, EncoderConfig::default());
        assert_eq!(decode(&f, Limits::default()).unwrap(), b);
        for i in [0, 4, 5, 10, 20, 33, HEADER_LEN + 1, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(
                decode(&g, Limits::default()).is_err(),
                "flip at {i} accepted"
            );
        }
        assert!(matches!(
            decode(&f[..f.len() - 1], Limits::default()),
            Err(FrameError::Truncated { .. })
        ));
        let mut g = f.clone();
        g.push(0);
        assert!(matches!(
            decode(&g, Limits::default()),
            Err(FrameError::Trailing(1))
        ));
        let (h, meta) = Decoder::new(Limits::default()).unwrap().peek(&f).unwrap();
        assert_eq!(h.sequence, 0);
        assert_eq!(meta.last_gtid.unwrap().to_string(), "0-1-9");
        assert_eq!(meta.end.unwrap().pos, 1000);
    }

    #[test]
    fn size_limits_hold_before_and_during_decompression() {
        let b = batch(2000);
        let f = encode(&b, EncoderConfig::default());
        let h = FrameHeader::parse(&f, &Limits::default()).unwrap();
        let small = Limits {
            max_decompressed: h.raw_len as usize - 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&f, small),
            Err(FrameError::TooLarge { .. })
        ));
        let tiny = Limits {
            max_frame: f.len() - 1,
            ..Limits::default()
        };
        assert!(matches!(decode(&f, tiny), Err(FrameError::TooLarge { .. })));
        // 2000 inserts of 2 columns: 4000 slots.
        let narrow = Limits {
            max_slots: 3999,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&f, narrow),
            Err(FrameError::Payload { .. })
        ));
        let enough = Limits {
            max_slots: 4000,
            ..Limits::default()
        };
        assert_eq!(decode(&f, enough).unwrap(), b);
        // A bomb: 64 MiB of zeros announced as 1 KiB, checksum fixed up. Decompression must
        // stop at the announced size instead of inflating it all.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let mut g = f[..HEADER_LEN + h.meta_len as usize].to_vec();
        g.extend_from_slice(&bomb);
        g[20..24].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
        g[24..28].copy_from_slice(&1024u32.to_le_bytes());
        let crc = frame_crc(&g);
        g[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&g, Limits::default()),
            Err(FrameError::Decompress { .. })
        ));
    }

    #[test]
    fn dictionaries_round_trip_and_must_be_registered() {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut samples = Vec::new();
        for i in 0..200 {
            let mut out = Vec::new();
            enc.encode(&batch(1 + i % 5), &mut out).unwrap();
            samples.push(enc.last_payload().to_vec());
        }
        let dict = train_dictionary(&samples, 4096).unwrap();
        let b = batch(3);
        let plain = encode(&b, EncoderConfig::default());
        let with = encode(
            &b,
            EncoderConfig {
                dictionary: Some((42, dict.clone())),
                ..EncoderConfig::default()
            },
        );
        assert!(
            with.len() < plain.len(),
            "{} vs {}",
            with.len(),
            plain.len()
        );
        assert!(matches!(
            decode(&with, Limits::default()),
            Err(FrameError::UnknownDictionary { dict_id: 42, .. })
        ));
        let mut d = Decoder::new(Limits::default()).unwrap();
        d.add_dictionary(42, &dict).unwrap();
        let mut out = ChangeBatch::default();
        d.decode(&with, &mut out).unwrap();
        assert_eq!(out, b);
    }

    /// Full-image updates that leave `s` alone: the after image's `id` and `s` are copies.
    fn full_updates(rows: u32) -> ChangeBatch {
        let b = batch(1);
        let schema = b.sections()[0].schema().clone();
        let mut b = ChangeBatch::new(ImageMode::Full);
        b.begin_transaction(None, 5).unwrap();
        let sec = b.section_for(&schema);
        for i in 0..rows {
            let text = format!("{i:0>200}");
            let s = b.push_change(sec, Op::Update).unwrap();
            for _ in 0..2 {
                s.push_image().unwrap();
                s.set(0, ValueRef::Int(i64::from(i))).unwrap();
                s.set(1, ValueRef::Text(text.as_bytes())).unwrap();
            }
        }
        b.commit_transaction("binlog.000001", 1000).unwrap();
        b
    }

    #[test]
    fn borrowed_meta_writes_the_bytes_of_frame_meta() {
        let b = batch(3);
        let r = meta_of(&b);
        let owned = FrameMeta {
            full_images: r.full_images,
            compacted: r.compacted,
            start: r.start.clone(),
            files: r.files.to_vec(),
            first_gtid: r.first_gtid,
            last_gtid: r.last_gtid,
            end: r.end.as_ref().map(|e| BinlogPosition {
                file: e.file.to_string(),
                pos: e.pos,
            }),
            transactions: r.transactions,
            changes: r.changes,
        };
        assert_eq!(
            bincode::serialize(&r).unwrap(),
            bincode::serialize(&owned).unwrap()
        );
        let f = encode(&b, EncoderConfig::default());
        let (_, meta) = Decoder::new(Limits::default()).unwrap().peek(&f).unwrap();
        assert_eq!(meta, owned);
    }

    #[test]
    fn copies_round_trip_are_refused_in_version_1_and_are_bounded() {
        let b = full_updates(20);
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut f = Vec::new();
        enc.encode(&b, &mut f).unwrap();
        // 20 values of 200 bytes, once each: the after images copy them.
        let raw = enc.last_payload().to_vec();
        assert!(raw.len() < 20 * 200 + 400, "{} payload bytes", raw.len());
        assert_eq!(decode(&f, Limits::default()).unwrap(), b);
        // The same bytes as a version 1 frame: copies are not part of that format.
        let mut g = f.clone();
        g[4] = 1;
        let crc = frame_crc(&g);
        g[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&g, Limits::default()),
            Err(FrameError::Payload {
                error: PayloadError::Wire(_),
                ..
            })
        ));
        // Copies may add at most the limit's bytes.
        let run = |max_copied_bytes| {
            let mut parts = ChangeBatch::default().into_parts();
            crate::columnar::decode_payload(
                &raw,
                &PayloadContext {
                    compacted: false,
                    copies: true,
                },
                &mut Default::default(),
                &PayloadLimits {
                    max_schemas: 8,
                    max_slots: 1 << 20,
                    max_copied_bytes,
                },
                &mut parts,
            )
        };
        run(20 * 200).unwrap();
        assert!(run(20 * 200 - 1).is_err());
    }

    /// `rows` inserts into `d.t` (as [`batch`]) and as many into `d.u`.
    fn two_tables(rows: u32, seed: u32) -> ChangeBatch {
        let t = batch(1).sections()[0].schema().clone();
        let mut u = (*t).clone();
        u.table = "u".into();
        u.version = SchemaVersion(8);
        let u = Arc::new(u);
        let mut b = ChangeBatch::new(ImageMode::Replica);
        b.begin_transaction(None, 5).unwrap();
        for (schema, text) in [(&t, "order shipped to"), (&u, "{\"sku\": \"A-")] {
            let sec = b.section_for(schema);
            for i in 0..rows {
                let s = b.push_change(sec, Op::Insert).unwrap();
                s.push_image().unwrap();
                s.set(0, ValueRef::Int(i64::from(seed * 100 + i))).unwrap();
                let v = format!("{text} {} #{}", seed * 7919 % 1000, i);
                s.set(1, ValueRef::Text(v.as_bytes())).unwrap();
            }
        }
        b.commit_transaction("binlog.000001", 1000).unwrap();
        b
    }

    /// The batch with only its section `keep` (of a single-transaction batch).
    fn one_table(b: ChangeBatch, keep: usize) -> ChangeBatch {
        let mut p = b.into_parts();
        let section = p.sections.remove(keep);
        let mut run = p.runs[keep];
        run.section = 0;
        p.sections = vec![section];
        p.runs = vec![run];
        p.transactions[0].runs = (0, 1);
        ChangeBatch::from_parts(p).unwrap()
    }

    fn decode_with(frame: &[u8], dicts: &[(u32, &[u8])]) -> Result<ChangeBatch, FrameError> {
        let mut d = Decoder::new(Limits::default()).unwrap();
        for (id, dict) in dicts {
            d.add_dictionary(*id, dict).unwrap();
        }
        let mut b = ChangeBatch::default();
        d.decode(frame, &mut b)?;
        Ok(b)
    }

    #[test]
    fn table_dictionaries_compress_their_sections_and_must_be_registered() {
        // Samples: the sections of `d.t` from earlier frames.
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let (mut samples, mut payloads) = (Vec::new(), Vec::new());
        for i in 0..300 {
            enc.encode(&two_tables(2, i), &mut Vec::new()).unwrap();
            payloads.push(enc.last_payload().to_vec());
            let pieces: Vec<_> = enc.last_table_samples().collect();
            assert_eq!(pieces.len(), 2);
            assert_eq!(pieces[0].1.len() + pieces[1].1.len(), enc.last_raw_len());
            for (table, bytes) in pieces {
                if table.table == "t" {
                    samples.push(bytes.to_vec());
                }
            }
        }
        let dict = train_dictionary(&samples, 4096).unwrap();
        let head_dict = train_dictionary(&payloads, 4096).unwrap();
        let per_table = EncoderConfig {
            table_dictionaries: vec![TableDictionary {
                id: 42,
                dict: dict.clone(),
                tables: vec!["d.t".into()],
            }],
            ..EncoderConfig::default()
        };
        // A frame of one table with a dictionary: one part, smaller than without.
        let only_t = one_table(two_tables(2, 1000), 0);
        let plain = encode(&only_t, EncoderConfig::default());
        let with = encode(&only_t, per_table.clone());
        assert_eq!(with[5], FLAG_ZSTD | FLAG_PARTS);
        assert!(
            with.len() < plain.len(),
            "{} vs {}",
            with.len(),
            plain.len()
        );
        assert_eq!(decode_with(&with, &[(42, &dict)]).unwrap(), only_t);
        // Both tables: the head and `d.t` in one part, `d.u` in another.
        let b = two_tables(2, 1000);
        let with = encode(&b, per_table.clone());
        assert_eq!(with[5], FLAG_ZSTD | FLAG_PARTS);
        assert!(matches!(
            decode(&with, Limits::default()),
            Err(FrameError::UnknownDictionary { dict_id: 42, .. })
        ));
        let mut d = Decoder::new(Limits::default()).unwrap();
        d.add_dictionary(42, &dict).unwrap();
        let mut out = ChangeBatch::default();
        d.decode(&with, &mut out).unwrap();
        assert_eq!(out, b);
        // A frame of tables without a dictionary is compressed whole, as without any.
        let only_u = one_table(two_tables(2, 1000), 1);
        let f = encode(&only_u, per_table.clone());
        assert_eq!(f[5], FLAG_ZSTD);
        assert_eq!(decode(&f, Limits::default()).unwrap(), only_u);
        // With a default dictionary too: `d.u` uses it, the head and `d.t` theirs.
        let both = EncoderConfig {
            dictionary: Some((7, head_dict.clone())),
            ..per_table
        };
        let f = encode(&b, both.clone());
        let mut d = Decoder::new(Limits::default()).unwrap();
        d.add_dictionary(42, &dict).unwrap();
        assert!(matches!(
            d.decode(&f, &mut out),
            Err(FrameError::UnknownDictionary { dict_id: 7, .. })
        ));
        d.add_dictionary(7, &head_dict).unwrap();
        d.decode(&f, &mut out).unwrap();
        assert_eq!(out, b);
        // Ids are unique and non-zero.
        let mut dup = both;
        dup.table_dictionaries[0].id = 7;
        assert!(matches!(Encoder::new(dup), Err(EncodeError::Config(_))));
    }

    fn ddl_batch(rows: u32, ddl: Ddl) -> ChangeBatch {
        let mut b = batch(rows);
        b.push_ddl(
            Some("0-1-10".parse().unwrap()),
            6,
            &ddl,
            "binlog.000001",
            1200,
        )
        .unwrap();
        b
    }

    fn refix_crc(g: &mut [u8]) {
        let crc = frame_crc(g);
        g[32..36].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn ddl_sections_round_trip_as_version_3() {
        let full = Ddl {
            db: Some("shop".into()),
            sql: b"ALTER TABLE t ADD c VARCHAR(5) DEFAULT '\xe9'".to_vec(),
            charset: Some((8, 8, 45)),
            sql_mode: Some(1 << 31 | 0x2000_0000),
        };
        for (rows, ddl) in [
            (0, full.clone()),
            (3, full),
            (
                1,
                Ddl {
                    sql: b"DROP DATABASE x".to_vec(),
                    ..Ddl::default()
                },
            ),
        ] {
            let b = ddl_batch(rows, ddl);
            for level in [0, 1] {
                let f = encode(
                    &b,
                    EncoderConfig {
                        level,
                        ..EncoderConfig::default()
                    },
                );
                assert_eq!(f[4], VERSION_DDL);
                let back = decode(&f, Limits::default()).unwrap();
                assert_eq!(back, b);
                assert_eq!(back.ddl(), b.ddl());
            }
        }
        // Frames without DDL keep version 1.
        assert_eq!(encode(&batch(2), EncoderConfig::default())[4], VERSION);
    }

    #[test]
    fn forged_ddl_sections_are_rejected() {
        let cfg = || EncoderConfig {
            level: 0,
            ..EncoderConfig::default()
        };
        let ddl = Ddl {
            db: Some("d".into()),
            sql: b"CREATE TABLE t (a INT)".to_vec(),
            charset: None,
            sql_mode: None,
        };
        let f = encode(&ddl_batch(1, ddl.clone()), cfg());
        let h = FrameHeader::parse(&f, &Limits::default()).unwrap();
        let payload = HEADER_LEN + h.meta_len as usize;
        // A version this build does not know.
        let mut g = f.clone();
        g[4] = 9;
        refix_crc(&mut g);
        assert_eq!(
            decode(&g, Limits::default()).unwrap_err(),
            FrameError::Version(9)
        );
        // Read as a row frame, the DDL section is no columnar payload.
        let mut g = f.clone();
        g[4] = VERSION;
        refix_crc(&mut g);
        assert!(decode(&g, Limits::default()).is_err());
        // A row frame relabelled as a DDL frame: its payload is no DDL section.
        let mut g = encode(&batch(1), cfg());
        g[4] = VERSION_DDL;
        refix_crc(&mut g);
        assert!(decode(&g, Limits::default()).is_err());
        // Unknown flags, a non-UTF-8 database, an empty statement.
        for (at, byte) in [(0, 0x08), (2, 0xff)] {
            let mut g = f.clone();
            g[payload + at] = byte;
            refix_crc(&mut g);
            assert!(
                matches!(decode(&g, Limits::default()), Err(FrameError::Ddl { .. })),
                "byte {at}"
            );
        }
        let empty = Ddl {
            sql: Vec::new(),
            ..ddl.clone()
        };
        let g = encode(&ddl_batch(1, empty), cfg());
        assert!(matches!(
            decode(&g, Limits::default()),
            Err(FrameError::Ddl { .. })
        ));
        // A DDL with no transaction of its own.
        let mut b = batch(1).into_parts();
        b.ddl = Some(ddl);
        let mut out = Vec::new();
        let bad = ChangeBatch::from_parts(b.clone());
        assert!(bad.is_err());
        b.ddl = None;
        Encoder::new(cfg())
            .unwrap()
            .encode(&ChangeBatch::from_parts(b).unwrap(), &mut out)
            .unwrap();
        // Splice a DDL section in front of a row frame's payload, as a DDL frame.
        let h = FrameHeader::parse(&out, &Limits::default()).unwrap();
        let payload = HEADER_LEN + h.meta_len as usize;
        let mut section = Vec::new();
        put_ddl(
            &mut section,
            &Ddl {
                sql: b"DROP TABLE t".to_vec(),
                ..Ddl::default()
            },
        );
        let mut g = out[..payload].to_vec();
        g.extend_from_slice(&section);
        g.extend_from_slice(&out[payload..]);
        g[4] = VERSION_DDL;
        let len = (g.len() - payload) as u32;
        g[20..24].copy_from_slice(&len.to_le_bytes());
        g[24..28].copy_from_slice(&len.to_le_bytes());
        refix_crc(&mut g);
        // Its last transaction owns rows: not a DDL transaction.
        assert!(matches!(
            decode(&g, Limits::default()),
            Err(FrameError::Payload { .. })
        ));
    }

    #[test]
    fn once_per_stream_schemas_need_the_stream_from_its_start() {
        let cfg = EncoderConfig {
            schemas: SchemaShipping::OncePerStream,
            ..EncoderConfig::default()
        };
        let mut enc = Encoder::new(cfg).unwrap();
        let (mut f1, mut f2) = (Vec::new(), Vec::new());
        enc.encode(&batch(2), &mut f1).unwrap();
        enc.encode(&batch(3), &mut f2).unwrap();
        assert!(f2.len() < f1.len());
        assert!(matches!(
            decode(&f2, Limits::default()),
            Err(FrameError::Payload {
                error: PayloadError::UnknownSchema(7),
                ..
            })
        ));
        let mut d = Decoder::new(Limits::default()).unwrap();
        d.expect_sequence(Some(0));
        let mut out = ChangeBatch::default();
        d.decode(&f1, &mut out).unwrap();
        d.decode(&f2, &mut out).unwrap();
        assert_eq!(out, batch(3));
        assert!(matches!(
            d.decode(&f2, &mut out),
            Err(FrameError::Sequence {
                expected: 2,
                got: 1
            })
        ));
        enc.reset_stream();
        let mut f3 = Vec::new();
        enc.encode(&batch(2), &mut f3).unwrap();
        assert_eq!(decode(&f3, Limits::default()).unwrap(), batch(2));
    }
}

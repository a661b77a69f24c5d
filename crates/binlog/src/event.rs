//! Decoded events, borrowing from the event bytes.

use crate::bytes::Reader;
use crate::error::ErrorKind;
use crate::gtid::{GtidList, MariaGtidEvent, MySqlGtidEvent, PreviousGtids};
use crate::rows::RowsEvent;

/// One decoded event.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A FORMAT_DESCRIPTION event; the decoder has adopted it.
    FormatDescription,
    /// The log continues in `next_file` at `position`.
    Rotate {
        /// Offset in the next file.
        position: u64,
        /// Name of the next file.
        next_file: &'a [u8],
    },
    /// The server stopped; the file ends here.
    Stop,
    /// A replication heartbeat (MySQL v1/v2 and MariaDB), carrying the current file name.
    Heartbeat,
    /// A statement: BEGIN, COMMIT, ROLLBACK, DDL, or statement-based DML.
    Query(Query<'a>),
    /// The commit of a transaction (InnoDB XID).
    Xid {
        /// The storage engine's transaction id.
        xid: u64,
    },
    /// MySQL XA PREPARE (or one-phase XA COMMIT).
    XaPrepare {
        /// Whether this is `XA COMMIT ... ONE PHASE`.
        one_phase: bool,
        /// `formatID`.
        format_id: u32,
        /// `gtrid` followed by `bqual`.
        data: &'a [u8],
        /// Length of `gtrid` within `data`.
        gtrid_len: usize,
    },
    /// An auto-increment or LAST_INSERT_ID value for the next statement.
    Intvar {
        /// 1 = LAST_INSERT_ID, 2 = INSERT_ID.
        kind: u8,
        /// The value.
        value: u64,
    },
    /// RAND() seeds for the next statement.
    Rand {
        /// First seed.
        seed1: u64,
        /// Second seed.
        seed2: u64,
    },
    /// A user variable used by the next statement.
    UserVar {
        /// Variable name.
        name: &'a [u8],
        /// Whether the value is NULL.
        is_null: bool,
        /// Raw value bytes (type, charset and value), when not NULL.
        value: &'a [u8],
    },
    /// A TABLE_MAP; the decoder has cached the table under this id.
    TableMap {
        /// The table id.
        table_id: u64,
    },
    /// A row event.
    Rows(RowsEvent<'a>),
    /// MariaDB ANNOTATE_ROWS: the statement that produced the following row events.
    AnnotateRows {
        /// Statement text.
        query: &'a [u8],
    },
    /// MySQL ROWS_QUERY: the statement that produced the following row events.
    RowsQuery {
        /// Statement text.
        query: &'a [u8],
    },
    /// MariaDB BINLOG_CHECKPOINT: files before this one are no longer needed for recovery.
    BinlogCheckpoint {
        /// Binlog file name.
        file: &'a [u8],
    },
    /// MariaDB GTID: an event group starts.
    MariaGtid(MariaGtidEvent<'a>),
    /// MariaDB GTID_LIST: the binlog state at the start of the file.
    GtidList(GtidList<'a>),
    /// MySQL GTID, GTID_TAGGED or ANONYMOUS_GTID: a transaction starts.
    MySqlGtid(MySqlGtidEvent<'a>),
    /// MySQL PREVIOUS_GTIDS.
    PreviousGtids(PreviousGtids<'a>),
    /// MySQL TRANSACTION_PAYLOAD: a compressed transaction's events.
    TransactionPayload(TransactionPayload<'a>),
    /// The server recorded an incident: changes may be missing from the log here (for
    /// example `LOST_EVENTS` after a failed binlog write). A replicator must stop on it.
    Incident {
        /// Incident code (1 = LOST_EVENTS).
        code: u16,
        /// The server's message.
        message: &'a [u8],
    },
    /// A known event that carries nothing for row-based change capture: LOAD DATA file
    /// blocks, TRANSACTION_CONTEXT, VIEW_CHANGE, Aurora padding, ignorable events.
    Other {
        /// The type code.
        type_code: u8,
    },
}

/// A QUERY event (or MariaDB QUERY_COMPRESSED, whose text must be inflated).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Connection id that ran the statement.
    pub thread_id: u32,
    /// Seconds the statement took.
    pub exec_time: u32,
    /// Error code the statement ended with on the source.
    pub error_code: u16,
    /// Default database.
    pub schema: &'a [u8],
    /// Raw status variables.
    pub status_vars: &'a [u8],
    /// Statement text (zlib-compressed when `compressed`).
    pub query: &'a [u8],
    /// MariaDB QUERY_COMPRESSED: inflate `query` with [`Query::inflate`].
    pub compressed: bool,
}

/// Status variables of a QUERY event that change how its statement is interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusVars<'a> {
    /// `sql_mode`.
    pub sql_mode: Option<u64>,
    /// `character_set_client`, `collation_connection`, `collation_server`.
    pub charset: Option<(u16, u16, u16)>,
    /// `time_zone`.
    pub time_zone: Option<&'a [u8]>,
    /// Session `auto_increment_increment` and `auto_increment_offset`.
    pub auto_increment: Option<(u16, u16)>,
    /// Default database collation.
    pub charset_database: Option<u16>,
    /// MariaDB/MySQL XID of a DDL logged with one.
    pub ddl_xid: Option<u64>,
    /// Whether parsing stopped at a status variable unknown to this decoder (the rest of
    /// the block is skipped; the statement itself is unaffected).
    pub truncated_at_unknown: Option<u8>,
}

impl<'a> Query<'a> {
    pub(crate) fn parse(
        body: &'a [u8],
        post_header_len: usize,
        compressed: bool,
    ) -> Result<Self, ErrorKind> {
        let what = "QUERY";
        let sh = |s| ErrorKind::short(what, s);
        let mut r = Reader::new(body);
        let thread_id = r.u32().map_err(sh)?;
        let exec_time = r.u32().map_err(sh)?;
        let db_len = r.u8().map_err(sh)?;
        let error_code = r.u16().map_err(sh)?;
        let status_len = if post_header_len >= 13 {
            usize::from(r.u16().map_err(sh)?)
        } else {
            0
        };
        r.skip(post_header_len.saturating_sub(13)).map_err(sh)?;
        let status_vars = r.take(status_len).map_err(sh)?;
        let schema = r.take(usize::from(db_len)).map_err(sh)?;
        r.skip(1).map_err(sh)?;
        Ok(Query {
            thread_id,
            exec_time,
            error_code,
            schema,
            status_vars,
            query: r.take_rest(),
            compressed,
        })
    }

    /// Inflates a compressed statement into `out`; returns the statement text.
    pub fn inflate<'o>(&'o self, out: &'o mut Vec<u8>) -> Result<&'o [u8], ErrorKind>
    where
        'a: 'o,
    {
        if !self.compressed {
            return Ok(self.query);
        }
        crate::rows::inflate_mariadb("compressed query", self.query, out, 1 << 30)
    }

    /// Whether the statement is `BEGIN` or `XA START`/`XA BEGIN` (a transaction starts;
    /// an XA one ends with XA_PREPARE or a later `XA COMMIT`/`XA ROLLBACK`).
    pub fn is_begin(&self) -> bool {
        let q = self.query;
        let prefix = |p: &[u8]| q.len() >= p.len() && q[..p.len()].eq_ignore_ascii_case(p);
        !self.compressed
            && (q.eq_ignore_ascii_case(b"BEGIN") || prefix(b"XA START") || prefix(b"XA BEGIN"))
    }

    /// Whether the statement is `COMMIT` (a transaction ends).
    pub fn is_commit(&self) -> bool {
        !self.compressed && self.query.eq_ignore_ascii_case(b"COMMIT")
    }

    /// Whether the statement is `ROLLBACK` (a non-transactional group ends).
    pub fn is_rollback(&self) -> bool {
        !self.compressed && self.query.eq_ignore_ascii_case(b"ROLLBACK")
    }

    /// Parses the status variables this decoder knows, in order.
    pub fn status(&self) -> StatusVars<'a> {
        let mut s = StatusVars::default();
        let mut r = Reader::new(self.status_vars);
        while r.remaining() > 0 {
            let Ok(code) = r.u8() else { break };
            if parse_status_var(code, &mut r, &mut s).is_none() {
                s.truncated_at_unknown = Some(code);
                break;
            }
        }
        s
    }
}

/// Reads one status variable; `None` if the code is unknown or its bytes are short.
fn parse_status_var<'a>(code: u8, r: &mut Reader<'a>, s: &mut StatusVars<'a>) -> Option<()> {
    match code {
        0 => {
            r.u32().ok()?; // flags2
        }
        1 => s.sql_mode = Some(r.u64().ok()?),
        2 => {
            let n = r.u8().ok()?;
            r.skip(usize::from(n) + 1).ok()?; // old catalog, NUL-terminated
        }
        3 => s.auto_increment = Some((r.u16().ok()?, r.u16().ok()?)),
        4 => s.charset = Some((r.u16().ok()?, r.u16().ok()?, r.u16().ok()?)),
        5 => {
            let n = r.u8().ok()?;
            s.time_zone = Some(r.take(usize::from(n)).ok()?);
        }
        6 => {
            let n = r.u8().ok()?;
            r.skip(usize::from(n)).ok()?; // catalog
        }
        7 => {
            r.u16().ok()?; // lc_time_names
        }
        8 => s.charset_database = Some(r.u16().ok()?),
        9 => {
            r.u64().ok()?; // table map for update
        }
        10 => {
            r.u32().ok()?; // master data written
        }
        11 => {
            let n = r.u8().ok()?;
            r.skip(usize::from(n)).ok()?;
            let n = r.u8().ok()?;
            r.skip(usize::from(n)).ok()?; // invoker user, host
        }
        12 => {
            let n = r.u8().ok()?;
            // 254 means "too many to list"; otherwise NUL-terminated names.
            if n != 254 {
                for _ in 0..n {
                    let rest = r.rest();
                    let end = rest.iter().position(|&b| b == 0)?;
                    r.skip(end + 1).ok()?;
                }
            }
        }
        13 => {
            r.u24().ok()?; // microseconds
        }
        14 => {} // commit ts (unused by servers)
        15 => {
            r.u32().ok()?;
        }
        16 => {
            r.u8().ok()?; // explicit_defaults_for_timestamp
        }
        17 => s.ddl_xid = Some(r.u64().ok()?),
        18 => {
            r.u16().ok()?; // default_collation_for_utf8mb4
        }
        19 => {
            r.u8().ok()?; // sql_require_primary_key
        }
        20 => {
            r.u8().ok()?; // default_table_encryption
        }
        // MariaDB: hrnow (3), xid (8), gtid flags3 (1).
        128 => {
            r.u24().ok()?;
        }
        129 => s.ddl_xid = Some(r.u64().ok()?),
        130 => {
            r.u8().ok()?;
        }
        _ => return None,
    }
    Some(())
}

/// Most bytes reserved for a TRANSACTION_PAYLOAD on the word of its header alone.
const RESERVE_AHEAD: usize = 16 << 20;

/// A MySQL TRANSACTION_PAYLOAD event: a whole transaction's events, compressed.
#[derive(Debug, Clone, Copy)]
pub struct TransactionPayload<'a> {
    /// 0 = zstd, 255 = none.
    pub compression: u64,
    /// Size of the events once decompressed.
    pub uncompressed_size: u64,
    /// The compressed events.
    pub payload: &'a [u8],
}

impl<'a> TransactionPayload<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ErrorKind> {
        let what = "TRANSACTION_PAYLOAD";
        let mut r = Reader::new(body);
        let mut p = TransactionPayload {
            compression: 255,
            uncompressed_size: 0,
            payload: &[],
        };
        let mut size = None;
        // Header fields are (type, length, value) triples of packed integers, ended by type 0.
        loop {
            let t = r.packed().map_err(|e| ErrorKind::packed(what, e))?;
            if t == 0 {
                break;
            }
            let v = r.packed_bytes().map_err(|e| ErrorKind::packed(what, e))?;
            let mut vr = Reader::new(v);
            let value = vr.packed().map_err(|e| ErrorKind::packed(what, e))?;
            match t {
                1 => size = Some(value),
                2 => p.compression = value,
                3 => p.uncompressed_size = value,
                _ => {}
            }
        }
        let rest = r.take_rest();
        let size = size.map_or(rest.len(), |s| s as usize);
        p.payload = rest.get(..size).ok_or_else(|| {
            ErrorKind::short(
                what,
                crate::bytes::Short {
                    needed: size,
                    available: rest.len(),
                },
            )
        })?;
        Ok(p)
    }

    /// Decompresses the nested events into `out` (cleared first). `limit` bounds the
    /// decompressed size so that a forged size cannot exhaust memory.
    pub fn decompress<'o>(
        &self,
        out: &'o mut Vec<u8>,
        limit: usize,
    ) -> Result<&'o [u8], ErrorKind> {
        let what = "TRANSACTION_PAYLOAD";
        out.clear();
        match self.compression {
            255 => {
                out.extend_from_slice(self.payload);
            }
            0 => {
                let want = self.uncompressed_size as usize;
                if want > limit {
                    return Err(ErrorKind::Decompress {
                        what,
                        reason: format!("declares {want} bytes, over the limit of {limit}"),
                    });
                }
                // A payload may hold several zstd frames; stream them into the buffer with
                // the declared size as a hard cap.
                use std::io::Read;
                let mut dec =
                    zstd::stream::read::Decoder::with_buffer(self.payload).map_err(|e| {
                        ErrorKind::Decompress {
                            what,
                            reason: e.to_string(),
                        }
                    })?;
                // The declared size is a hint until the bytes arrive: trusting it in full
                // would let a few forged bytes reserve up to `limit`. Past the cap the
                // vector grows with the output, still bounded by `limit` below.
                out.reserve(want.min(RESERVE_AHEAD));
                (&mut dec)
                    .take((limit as u64).saturating_add(1))
                    .read_to_end(out)
                    .map_err(|e| ErrorKind::Decompress {
                        what,
                        reason: e.to_string(),
                    })?;
                if out.len() != want {
                    return Err(ErrorKind::Decompress {
                        what,
                        reason: format!("decompressed {} bytes, header says {want}", out.len()),
                    });
                }
            }
            other => {
                return Err(ErrorKind::Unsupported(format!(
                    "TRANSACTION_PAYLOAD compression type {other}"
                )))
            }
        }
        Ok(&out[..])
    }
}

#[cfg(test)]
mod tests {
    use super::TransactionPayload;

    /// "No limit" is spelled `usize::MAX` by callers; the read cap must not overflow on it.
    #[test]
    fn decompress_accepts_the_largest_limit() {
        let events = b"three events worth of bytes".repeat(10);
        let payload = zstd::bulk::compress(&events, 3).expect("compress");
        let tp = TransactionPayload {
            compression: 0,
            uncompressed_size: events.len() as u64,
            payload: &payload,
        };
        let mut out = Vec::new();
        let got = tp.decompress(&mut out, usize::MAX).expect("decompress");
        assert_eq!(got, &events[..]);
    }
}

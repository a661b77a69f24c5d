//! The stateful part of decoding: the current FORMAT_DESCRIPTION, the table-map cache and
//! transaction boundaries. Feed it whole events (see [`crate::stream`] for framing).

use rustc_hash::FxHashMap;

use crate::bytes::Reader;
use crate::error::{DecodeError, ErrorKind};
use crate::event::{Event, Query, TransactionPayload};
use crate::event_type::code::*;
use crate::gtid::{GtidList, MariaGtidEvent, MySqlGtidEvent, PreviousGtids};
use crate::header::{
    is_known, verify_crc32_with, verify_fde_crc32, Checksum, EventHeader, Flavor,
    FormatDescription, LOG_EVENT_IGNORABLE_F,
};
use crate::rows::RowsEvent;
use crate::table_map::TableInfo;

/// One decoded event with its header.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// The common header.
    pub header: EventHeader,
    /// The event.
    pub event: Event<'a>,
}

/// A cached table borrowed for changes; recomputes the table's row layout when dropped,
/// so direct changes to [`crate::ColumnInfo::kind`] cannot leave it out of date.
pub struct TableMut<'d>(&'d mut TableInfo);

impl std::ops::Deref for TableMut<'_> {
    type Target = TableInfo;
    fn deref(&self) -> &TableInfo {
        self.0
    }
}

impl std::ops::DerefMut for TableMut<'_> {
    fn deref_mut(&mut self) -> &mut TableInfo {
        self.0
    }
}

impl Drop for TableMut<'_> {
    fn drop(&mut self) {
        self.0.refresh_layout();
    }
}

struct CachedTable {
    /// The TABLE_MAP body it was parsed from, to skip re-parsing identical maps.
    raw: Vec<u8>,
    info: TableInfo,
}

/// Table definitions kept between transactions before the cache is emptied.
const MAX_CACHED_TABLES: usize = 65_536;

/// Called with every newly parsed TABLE_MAP, to complete it from a caller's schema.
pub type TableHook = Box<dyn FnMut(&mut TableInfo) + Send>;

/// Decodes a sequence of events from one binlog file or replication stream.
pub struct Decoder {
    table_hook: Option<TableHook>,
    crc: crc32fast::Hasher,
    fde: Option<FormatDescription>,
    nested: Option<FormatDescription>,
    /// Cached tables; `index` maps table ids to slots. Row events look their table up
    /// once each, so the lookup is kept cheap: a fast hash, and first a check of the
    /// table the last TABLE_MAP named (servers write each row event right after its map).
    tables: Vec<CachedTable>,
    index: FxHashMap<u64, usize>,
    /// Table id and slot of the last TABLE_MAP (`u64::MAX`, never a 48-bit id, when none).
    last: (u64, usize),
    in_transaction: bool,
    explicit_begin: bool,
    verify_checksums: bool,
    pre_fde_checksum: Checksum,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder that expects a FORMAT_DESCRIPTION event before anything it must interpret.
    pub fn new() -> Self {
        Decoder {
            table_hook: None,
            crc: crc32fast::Hasher::new(),
            fde: None,
            nested: None,
            tables: Vec::new(),
            index: FxHashMap::default(),
            last: (u64::MAX, 0),
            in_transaction: false,
            explicit_begin: false,
            verify_checksums: true,
            pre_fde_checksum: Checksum::Off,
        }
    }

    /// Whether to verify CRC32 checksums (on by default). A replication client whose
    /// server already verified them may turn this off.
    pub fn set_verify_checksums(&mut self, on: bool) {
        self.verify_checksums = on;
    }

    /// The checksum of the artificial ROTATE a replication stream sends before its
    /// FORMAT_DESCRIPTION (it follows `@master_binlog_checksum`).
    pub fn set_pre_format_checksum(&mut self, c: Checksum) {
        self.pre_fde_checksum = c;
    }

    /// Completes every newly parsed table from a caller's schema: column names,
    /// signedness, and precisions the binlog does not carry. Identical TABLE_MAPs are
    /// cached, so the hook runs once per table definition, not once per event.
    pub fn set_table_hook(&mut self, hook: TableHook) {
        self.table_hook = Some(hook);
    }

    /// The FORMAT_DESCRIPTION in force.
    pub fn format(&self) -> Option<&FormatDescription> {
        self.fde.as_ref()
    }

    /// The table a TABLE_MAP mapped to `table_id`.
    #[inline]
    pub fn table(&self, table_id: u64) -> Option<&TableInfo> {
        self.slot(table_id).map(|i| &self.tables[i].info)
    }

    /// Mutable access, to apply a caller's schema (names, signedness). The table's row
    /// layout is recomputed when the returned guard is dropped.
    pub fn table_mut(&mut self, table_id: u64) -> Option<TableMut<'_>> {
        self.slot(table_id)
            .map(|i| TableMut(&mut self.tables[i].info))
    }

    /// The slot of `table_id` in `tables`.
    #[inline]
    fn slot(&self, table_id: u64) -> Option<usize> {
        if table_id == self.last.0 {
            return Some(self.last.1);
        }
        self.index.get(&table_id).copied()
    }

    /// Whether the last event left a transaction open.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Decodes one whole event that starts at stream offset `pos`.
    #[inline]
    pub fn decode<'a>(&mut self, pos: u64, event: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        self.decode_inner(pos, event, false)
    }

    /// Decodes one event nested in a TRANSACTION_PAYLOAD (written without checksum).
    /// `pos` should be the payload event's offset, so errors point at something findable.
    pub fn decode_nested<'a>(
        &mut self,
        pos: u64,
        event: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        self.decode_inner(pos, event, true)
    }

    fn decode_inner<'a>(
        &mut self,
        pos: u64,
        event: &'a [u8],
        nested: bool,
    ) -> Result<Decoded<'a>, DecodeError> {
        let err = |event_type: Option<u8>, kind: ErrorKind| DecodeError {
            pos,
            event_type,
            kind,
        };
        let header = EventHeader::parse(event).map_err(|k| err(None, k))?;
        let t = header.type_code;
        if header.event_size as usize != event.len() {
            return Err(err(
                Some(t),
                ErrorKind::malformed(
                    "event",
                    format!(
                        "header says {} bytes, {} given",
                        header.event_size,
                        event.len()
                    ),
                ),
            ));
        }
        self.decode_event(header, event, nested)
            .map(|event| Decoded { header, event })
            .map_err(|k| err(Some(t), k))
    }

    fn decode_event<'a>(
        &mut self,
        header: EventHeader,
        event: &'a [u8],
        nested: bool,
    ) -> Result<Event<'a>, ErrorKind> {
        let t = header.type_code;
        if t == FORMAT_DESCRIPTION {
            let fde = FormatDescription::parse(event)?;
            if fde.checksum == Checksum::Crc32 && self.verify_checksums {
                verify_fde_crc32(event)?;
            }
            self.nested = Some(fde.without_checksum());
            self.fde = Some(fde);
            return Ok(Event::FormatDescription);
        }
        let fde = if nested {
            self.nested.as_ref()
        } else {
            self.fde.as_ref()
        };
        let (checksum, header_len) = match fde {
            Some(f) => (f.checksum, usize::from(f.header_len)),
            // A replication stream's artificial ROTATE and heartbeats can precede the
            // FORMAT_DESCRIPTION; nothing else can be interpreted without one.
            None if matches!(t, ROTATE | HEARTBEAT | HEARTBEAT_V2) => {
                (self.pre_fde_checksum, crate::header::HEADER_LEN)
            }
            None => return Err(ErrorKind::NoFormatDescription),
        };
        let data = if checksum == Checksum::Crc32 {
            if self.verify_checksums {
                verify_crc32_with(&self.crc, event)?
            } else {
                &event[..event.len().saturating_sub(crate::header::CHECKSUM_LEN)]
            }
        } else {
            event
        };
        let body = data.get(header_len..).ok_or(ErrorKind::Truncated {
            what: "event header",
            needed: header_len,
            available: data.len(),
        })?;
        let phl = |default: usize| fde.and_then(|f| f.post_header_len(t)).unwrap_or(default);
        let sh = |what: &'static str| move |s| ErrorKind::short(what, s);

        if !is_known(t) {
            if !self.in_transaction && header.flags & LOG_EVENT_IGNORABLE_F != 0 {
                return Ok(Event::Other { type_code: t });
            }
            return Err(ErrorKind::UnknownEvent {
                type_code: t,
                in_transaction: self.in_transaction,
            });
        }

        let ev = match t {
            QUERY | MARIA_QUERY_COMPRESSED => {
                let q = Query::parse(body, phl(13), t == MARIA_QUERY_COMPRESSED)?;
                if q.is_begin() {
                    self.in_transaction = true;
                    self.explicit_begin = true;
                } else if q.is_commit() || q.is_rollback() || !self.explicit_begin {
                    self.end_transaction();
                }
                Event::Query(q)
            }
            STOP => Event::Stop,
            ROTATE => {
                let mut r = Reader::new(body);
                let position = r.u64().map_err(sh("ROTATE"))?;
                r.skip(phl(8).saturating_sub(8)).map_err(sh("ROTATE"))?;
                Event::Rotate {
                    position,
                    next_file: r.take_rest(),
                }
            }
            INTVAR => {
                let mut r = Reader::new(body);
                Event::Intvar {
                    kind: r.u8().map_err(sh("INTVAR"))?,
                    value: r.u64().map_err(sh("INTVAR"))?,
                }
            }
            RAND => {
                let mut r = Reader::new(body);
                Event::Rand {
                    seed1: r.u64().map_err(sh("RAND"))?,
                    seed2: r.u64().map_err(sh("RAND"))?,
                }
            }
            USER_VAR => {
                let mut r = Reader::new(body);
                let n = r.u32().map_err(sh("USER_VAR"))?;
                let name = r.take(n as usize).map_err(sh("USER_VAR"))?;
                let is_null = r.u8().map_err(sh("USER_VAR"))? != 0;
                Event::UserVar {
                    name,
                    is_null,
                    value: r.take_rest(),
                }
            }
            XID => {
                let mut r = Reader::new(body);
                let xid = r.u64().map_err(sh("XID"))?;
                self.end_transaction();
                Event::Xid { xid }
            }
            XA_PREPARE => {
                let mut r = Reader::new(body);
                let s = sh("XA_PREPARE");
                let one_phase = r.u8().map_err(s)? != 0;
                let format_id = r.u32().map_err(s)?;
                let g = r.u32().map_err(s)? as usize;
                let b = r.u32().map_err(s)? as usize;
                if g > 64 || b > 64 {
                    return Err(ErrorKind::malformed("XA_PREPARE", "xid part over 64 bytes"));
                }
                let data = r.take(g + b).map_err(s)?;
                self.end_transaction();
                Event::XaPrepare {
                    one_phase,
                    format_id,
                    data,
                    gtrid_len: g,
                }
            }
            TABLE_MAP => {
                self.in_transaction = true;
                let table_id = self.cache_table(body, phl(8))?;
                Event::TableMap { table_id }
            }
            PRE_GA_WRITE_ROWS..=DELETE_ROWS_V1
            | WRITE_ROWS_V2..=DELETE_ROWS_V2
            | PARTIAL_UPDATE_ROWS
            | MARIA_WRITE_ROWS_COMPRESSED_V1..=MARIA_DELETE_ROWS_COMPRESSED => {
                let v2 = matches!(
                    t,
                    WRITE_ROWS_V2..=DELETE_ROWS_V2
                        | PARTIAL_UPDATE_ROWS
                        | MARIA_WRITE_ROWS_COMPRESSED..=MARIA_DELETE_ROWS_COMPRESSED
                );
                Event::Rows(RowsEvent::parse(t, body, phl(if v2 { 10 } else { 8 }))?)
            }
            INCIDENT => {
                let mut r = Reader::new(body);
                let code = r.u16().map_err(sh("INCIDENT"))?;
                let n = r.u8().map_err(sh("INCIDENT"))?;
                let message = r.take(usize::from(n)).map_err(sh("INCIDENT"))?;
                Event::Incident { code, message }
            }
            HEARTBEAT | HEARTBEAT_V2 => Event::Heartbeat,
            ROWS_QUERY => Event::RowsQuery {
                // The first byte is a truncated length; the text runs to the end.
                query: body.get(1..).unwrap_or(&[]),
            },
            GTID | ANONYMOUS_GTID => {
                self.begin_group();
                Event::MySqlGtid(MySqlGtidEvent::parse(body, t == ANONYMOUS_GTID)?)
            }
            GTID_TAGGED => {
                self.begin_group();
                Event::MySqlGtid(MySqlGtidEvent::parse_tagged(body)?)
            }
            PREVIOUS_GTIDS => Event::PreviousGtids(PreviousGtids { raw: body }),
            TRANSACTION_PAYLOAD => Event::TransactionPayload(TransactionPayload::parse(body)?),
            MARIA_ANNOTATE_ROWS => Event::AnnotateRows { query: body },
            MARIA_BINLOG_CHECKPOINT => {
                let mut r = Reader::new(body);
                let n = r.u32().map_err(sh("BINLOG_CHECKPOINT"))?;
                Event::BinlogCheckpoint {
                    file: r.take(n as usize).map_err(sh("BINLOG_CHECKPOINT"))?,
                }
            }
            MARIA_GTID => {
                let g = MariaGtidEvent::parse(body, header.server_id)?;
                self.begin_group();
                Event::MariaGtid(g)
            }
            MARIA_GTID_LIST => Event::GtidList(GtidList::parse(body)?),
            MARIA_START_ENCRYPTION => return Err(ErrorKind::Encrypted),
            // Statement-era LOAD DATA blocks, group-replication bookkeeping, padding.
            _ => Event::Other { type_code: t },
        };
        Ok(ev)
    }

    fn begin_group(&mut self) {
        self.in_transaction = true;
        self.explicit_begin = false;
    }

    fn end_transaction(&mut self) {
        self.in_transaction = false;
        self.explicit_begin = false;
        // Bound the cache: table ids grow when tables are reopened, so a long stream would
        // otherwise accumulate dead entries. Only between transactions: servers write the
        // TABLE_MAPs a transaction needs inside it, so none is lost, whereas clearing
        // mid-transaction would orphan row events of tables already mapped.
        if self.tables.len() >= MAX_CACHED_TABLES {
            self.tables.clear();
            self.index.clear();
            self.last = (u64::MAX, 0);
        }
    }

    /// Parses a TABLE_MAP unless an identical one is cached under the same id.
    fn cache_table(&mut self, body: &[u8], post_header_len: usize) -> Result<u64, ErrorKind> {
        let id_len = if post_header_len == 6 { 4 } else { 6 };
        let id = body
            .get(..id_len)
            .map(crate::bytes::le_uint)
            .ok_or_else(|| {
                ErrorKind::short(
                    "TABLE_MAP",
                    crate::bytes::Short {
                        needed: id_len,
                        available: body.len(),
                    },
                )
            })?;
        let slot = self.slot(id);
        if let Some(i) = slot {
            if self.tables[i].raw == body {
                self.last = (id, i);
                return Ok(id);
            }
        }
        let flavor = self.fde.as_ref().map_or(Flavor::MySql, |f| f.flavor);
        let mut info = TableInfo::parse(body, post_header_len, flavor)?;
        if let Some(hook) = &mut self.table_hook {
            hook(&mut info);
            // The hook may have changed column kinds directly.
            info.refresh_layout();
        }
        let i = match slot {
            Some(i) => {
                let c = &mut self.tables[i];
                c.raw.clear();
                c.raw.extend_from_slice(body);
                c.info = info;
                i
            }
            None => {
                self.tables.push(CachedTable {
                    raw: body.to_vec(),
                    info,
                });
                self.index.insert(id, self.tables.len() - 1);
                self.tables.len() - 1
            }
        };
        self.last = (id, i);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole event: v4 header (no checksum) and `body`.
    fn event(type_code: u8, body: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 19];
        e[4] = type_code;
        e[9..13].copy_from_slice(&((19 + body.len()) as u32).to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    fn format_description() -> Vec<u8> {
        let mut b = 4u16.to_le_bytes().to_vec();
        let mut version = [0u8; 50];
        version[..18].copy_from_slice(b"10.11.6-MariaDB-lo");
        b.extend_from_slice(&version);
        b.extend_from_slice(&[0; 4]);
        b.push(19);
        b.extend_from_slice(&[8; 170]); // post-header lengths
        b.push(0); // checksum off
        b.extend_from_slice(&[0; 4]);
        event(FORMAT_DESCRIPTION, &b)
    }

    fn table_map(id: u64) -> Vec<u8> {
        let mut b = id.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&[0, 0, 1, b'd', 0, 1, b't', 0, 1, LONG_TYPE, 0, 0]);
        event(TABLE_MAP, &b)
    }

    const LONG_TYPE: u8 = crate::table_map::col::LONG;

    #[test]
    fn table_cache_is_bounded_only_between_transactions() {
        let mut d = Decoder::new();
        d.decode(4, &format_description()).unwrap();
        d.decode(0, &table_map(1)).unwrap();
        // More distinct tables than the bound, all inside one transaction.
        for id in 2..=(MAX_CACHED_TABLES as u64 + 1) {
            d.decode(0, &table_map(id)).unwrap();
        }
        assert!(d.in_transaction());
        assert!(
            d.table(1).is_some(),
            "a table mapped earlier in the transaction was dropped"
        );
        d.decode(0, &event(XID, &7u64.to_le_bytes())).unwrap();
        assert!(
            d.table(1).is_none() && d.tables.is_empty(),
            "the cache is not bounded"
        );
    }
}

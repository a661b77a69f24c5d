//! A driver over [`Decoder`] for consumers of row changes: it opens MySQL
//! TRANSACTION_PAYLOAD events, inflates MariaDB compressed rows, tracks the current GTID,
//! and hands each row event to a [`Visitor`] together with its table. Still sans-IO: the
//! caller supplies whole events.

use std::fmt;

use crate::decoder::{Decoded, Decoder};
use crate::error::{DecodeError, ErrorKind};
use crate::event::Event;
use crate::gtid::{MariaGtid, Uuid};
use crate::rows::{inflate_rows, RowIter, RowsEvent};
use crate::stream::split_events;
use crate::table_map::TableInfo;

/// The GTID of the transaction being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrentGtid {
    /// No GTID (before the first one, or GTIDs are off).
    None,
    /// A MariaDB GTID.
    Maria(MariaGtid),
    /// A MySQL GTID (`tag` is empty when untagged).
    MySql {
        /// Source UUID.
        uuid: Uuid,
        /// Tag (MySQL 8.3+).
        tag: String,
        /// Transaction number.
        gno: i64,
    },
}

impl fmt::Display for CurrentGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentGtid::None => Ok(()),
            CurrentGtid::Maria(g) => g.fmt(f),
            CurrentGtid::MySql { uuid, tag, gno } if tag.is_empty() => write!(f, "{uuid}:{gno}"),
            CurrentGtid::MySql { uuid, tag, gno } => write!(f, "{uuid}:{tag}:{gno}"),
        }
    }
}

/// Where a row event sits, for the visitor.
#[derive(Debug, Clone, Copy)]
pub struct RowsContext<'w> {
    /// Offset of the event (for nested events, of their TRANSACTION_PAYLOAD).
    pub pos: u64,
    /// Header timestamp, seconds since the epoch.
    pub timestamp: u32,
    /// The current transaction's GTID.
    pub gtid: &'w CurrentGtid,
}

/// Receives what a [`Walker`] finds.
pub trait Visitor {
    /// The visitor's error; decode errors convert into it.
    type Error: From<DecodeError>;

    /// Every event, before any rows it carries are visited.
    fn event(&mut self, _pos: u64, _event: &Decoded<'_>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Whether the rows of this table are wanted. A `false` skips decoding them entirely.
    fn wants(&mut self, _table: &TableInfo) -> bool {
        true
    }

    /// The row changes of one row event.
    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), Self::Error>;
}

/// An INCIDENT event the server wrote: changes may be missing from the log at `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Offset of the INCIDENT event.
    pub pos: u64,
    /// Incident code (1 = LOST_EVENTS).
    pub code: u16,
    /// The server's message.
    pub message: String,
}

/// Drives a [`Decoder`] and a [`Visitor`] over whole events.
pub struct Walker {
    incidents: Vec<Incident>,
    decoder: Decoder,
    gtid: CurrentGtid,
    inflated: Vec<u8>,
    payload: Vec<u8>,
    max_inflate: usize,
}

impl Default for Walker {
    fn default() -> Self {
        Self::new()
    }
}

impl Walker {
    /// A walker with a fresh decoder.
    pub fn new() -> Self {
        Walker {
            incidents: Vec::new(),
            decoder: Decoder::new(),
            gtid: CurrentGtid::None,
            inflated: Vec::new(),
            payload: Vec::new(),
            max_inflate: crate::stream::DEFAULT_MAX_EVENT,
        }
    }

    /// The decoder, to inspect or adjust its state.
    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Sets the largest decompressed TRANSACTION_PAYLOAD or compressed row event accepted
    /// (default: the largest event, about 1 GiB). zstd turns 33 KB into 1 GiB of zeros, so
    /// a consumer that knows its transactions are smaller should say so.
    pub fn set_max_inflate(&mut self, max: usize) {
        self.max_inflate = max;
    }

    /// The GTID of the transaction being read.
    pub fn gtid(&self) -> &CurrentGtid {
        &self.gtid
    }

    /// INCIDENT events seen so far. They decode (the file is valid), but they mean the
    /// server lost changes there, so a consumer must treat them as errors.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Decodes one whole event at offset `pos` and visits what it carries.
    pub fn process<V: Visitor>(
        &mut self,
        pos: u64,
        event: &[u8],
        v: &mut V,
    ) -> Result<(), V::Error> {
        let d = self.decoder.decode(pos, event)?;
        if let Event::TransactionPayload(p) = &d.event {
            v.event(pos, &d)?;
            let mut payload = std::mem::take(&mut self.payload);
            let r = self.process_payload(pos, p, &mut payload, v);
            self.payload = payload;
            return r;
        }
        self.handle(pos, &d, v)
    }

    fn process_payload<V: Visitor>(
        &mut self,
        pos: u64,
        p: &crate::event::TransactionPayload<'_>,
        buf: &mut Vec<u8>,
        v: &mut V,
    ) -> Result<(), V::Error> {
        let err = |kind| DecodeError {
            pos,
            event_type: Some(crate::event_type::code::TRANSACTION_PAYLOAD),
            kind,
        };
        let bytes = p.decompress(buf, self.max_inflate).map_err(err)?;
        for item in split_events(bytes) {
            let (_, ev) = item.map_err(err)?;
            let d = self.decoder.decode_nested(pos, ev)?;
            self.handle(pos, &d, v)?;
        }
        Ok(())
    }

    fn handle<V: Visitor>(&mut self, pos: u64, d: &Decoded<'_>, v: &mut V) -> Result<(), V::Error> {
        match &d.event {
            Event::MariaGtid(g) => self.gtid = CurrentGtid::Maria(g.gtid),
            Event::MySqlGtid(g) if !g.anonymous => {
                self.gtid = CurrentGtid::MySql {
                    uuid: g.uuid,
                    tag: String::from_utf8_lossy(g.tag).into_owned(),
                    gno: g.gno,
                }
            }
            Event::MySqlGtid(_) => self.gtid = CurrentGtid::None,
            Event::Incident { code, message } => self.incidents.push(Incident {
                pos,
                code: *code,
                message: String::from_utf8_lossy(message).into_owned(),
            }),
            _ => {}
        }
        v.event(pos, d)?;
        let Event::Rows(rows) = &d.event else {
            return Ok(());
        };
        let err = |kind| DecodeError {
            pos,
            event_type: Some(d.header.type_code),
            kind,
        };
        let table = self.decoder.table(rows.table_id).ok_or_else(|| {
            err(ErrorKind::UnknownTable {
                table_id: rows.table_id,
            })
        })?;
        if !v.wants(table) {
            return Ok(());
        }
        let ctx = RowsContext {
            pos,
            timestamp: d.header.timestamp,
            gtid: &self.gtid,
        };
        let iter = if rows.compressed {
            let inflated =
                inflate_rows(rows.payload, &mut self.inflated, self.max_inflate).map_err(err)?;
            rows.rows_in(table, inflated).map_err(err)?
        } else {
            rows.rows(table).map_err(err)?
        };
        v.rows(ctx, rows, table, iter)
    }
}

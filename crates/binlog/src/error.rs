//! Decode errors. Every error says where it happened: the byte offset of the event in the
//! file or stream, the event type, and for row errors the table and column.

use crate::bytes::{Packed, Short};
use crate::value::ValueError;

/// A binlog that could not be decoded at `pos`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binlog position {pos}{}: {kind}", event_label(*.event_type))]
pub struct DecodeError {
    /// Offset of the start of the offending event in the file or stream.
    pub pos: u64,
    /// Type code of the offending event, when the header could be read.
    pub event_type: Option<u8>,
    /// What went wrong.
    pub kind: ErrorKind,
}

fn event_label(t: Option<u8>) -> String {
    match t {
        Some(t) => format!(" ({} event, type {t})", crate::event_type::name(t)),
        None => String::new(),
    }
}

/// What went wrong while decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file does not start with the binlog magic bytes.
    #[error("not a binlog file: bad magic number")]
    BadMagic,
    /// The bytes end in the middle of an event.
    #[error("truncated {what}: needs {needed} bytes, {available} available")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The header's event length is impossible.
    #[error("invalid event length {length}")]
    BadEventLength {
        /// The length in the header.
        length: u32,
    },
    /// The event's CRC32 does not match its bytes.
    #[error("checksum mismatch: event says {stored:#010x}, bytes give {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum stored in the event.
        stored: u32,
        /// Checksum computed over the event.
        computed: u32,
    },
    /// The server wrote an INCIDENT event: changes may be missing from the log here.
    #[error("incident {code} recorded by the server: {message}")]
    Incident {
        /// Incident code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The binlog is encrypted (MariaDB `encrypt_binlog`).
    #[error("encrypted binlogs are not supported: the server writes START_ENCRYPTION; read through a replication connection, which decrypts, or disable encrypt_binlog")]
    Encrypted,
    /// An event type this decoder does not know.
    #[error("unknown event type {type_code}{}", if *.in_transaction { " inside a transaction" } else { "" })]
    UnknownEvent {
        /// The type code.
        type_code: u8,
        /// Whether it appeared between a transaction's start and its commit.
        in_transaction: bool,
    },
    /// A row event refers to a table id that no TABLE_MAP defined.
    #[error("rows event for table id {table_id} with no preceding TABLE_MAP")]
    UnknownTable {
        /// The table id.
        table_id: u64,
    },
    /// A column type byte the decoder cannot read.
    #[error("`{table}` column {column}: unsupported column type {type_code}")]
    UnsupportedColumnType {
        /// `db.table`.
        table: String,
        /// 1-based column number.
        column: usize,
        /// The type code.
        type_code: u8,
    },
    /// A column value could not be decoded.
    #[error("`{table}` column {column}: {error}")]
    Value {
        /// `db.table`.
        table: String,
        /// 1-based column number.
        column: usize,
        /// The value error.
        error: ValueError,
    },
    /// A structure is malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A compressed event or payload could not be decompressed.
    #[error("cannot decompress {what}: {reason}")]
    Decompress {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A row event appeared before any FORMAT_DESCRIPTION event.
    #[error("event before any FORMAT_DESCRIPTION event")]
    NoFormatDescription,
    /// A feature this decoder refuses rather than misread.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl ErrorKind {
    /// Shorthand for a [`ErrorKind::Truncated`] from a failed read.
    pub(crate) fn short(what: &'static str, s: Short) -> Self {
        ErrorKind::Truncated {
            what,
            needed: s.needed,
            available: s.available,
        }
    }

    /// Shorthand for a failed packed-integer read.
    pub(crate) fn packed(what: &'static str, p: Packed) -> Self {
        match p {
            Packed::Short(s) => Self::short(what, s),
            Packed::Invalid(b) => ErrorKind::Malformed {
                what,
                reason: format!("invalid packed integer prefix {b:#04x}"),
            },
        }
    }

    /// Shorthand for [`ErrorKind::Malformed`].
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ErrorKind::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

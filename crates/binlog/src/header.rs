//! The v4 common event header, the FORMAT_DESCRIPTION event and CRC32 verification.
//!
//! Layout of every event since MySQL 5.0 (binlog version 4):
//! `timestamp u32 | type u8 | server_id u32 | event_size u32 | log_pos u32 | flags u16`,
//! then a post-header whose length per type the FORMAT_DESCRIPTION event announces, the body,
//! and, when the FORMAT_DESCRIPTION says CRC32, a 4-byte checksum over all preceding bytes.

use crate::bytes::Reader;
use crate::error::ErrorKind;
use crate::event_type::code;

/// Bytes at the start of every binlog file.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of the v4 common header.
pub const HEADER_LEN: usize = 19;
/// Length of the CRC32 trailer.
pub const CHECKSUM_LEN: usize = 4;
/// Flag: the event may be skipped by a reader that does not know its type.
pub const LOG_EVENT_IGNORABLE_F: u16 = 0x80;

/// The common header of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// Seconds since the epoch when the statement or transaction began.
    pub timestamp: u32,
    /// Event type code.
    pub type_code: u8,
    /// Server that originally wrote the event.
    pub server_id: u32,
    /// Length of the whole event, header and checksum included.
    pub event_size: u32,
    /// Offset just past this event in the source's binlog file (0 for some artificial events).
    pub log_pos: u32,
    /// Header flags.
    pub flags: u16,
}

impl EventHeader {
    /// Reads the header from the first [`HEADER_LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, ErrorKind> {
        // One bounds check, then fixed-offset reads: this runs once per event.
        let Some(b) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(ErrorKind::Truncated {
                what: "event header",
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = EventHeader {
            timestamp: u32_at(0),
            type_code: b[4],
            server_id: u32_at(5),
            event_size: u32_at(9),
            log_pos: u32_at(13),
            flags: u16::from_le_bytes([b[17], b[18]]),
        };
        if (h.event_size as usize) < HEADER_LEN {
            return Err(ErrorKind::BadEventLength {
                length: h.event_size,
            });
        }
        Ok(h)
    }
}

/// Checksum algorithm announced by the FORMAT_DESCRIPTION event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// No checksum: events end with their body.
    Off,
    /// A CRC32 (ISO-HDLC) of the event trails every event.
    Crc32,
}

/// Which server family wrote the binlog: some event layouts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Oracle MySQL, Percona Server, Aurora and other MySQL derivatives.
    MySql,
    /// MariaDB.
    MariaDb,
}

/// A decoded FORMAT_DESCRIPTION event: how to read the events after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDescription {
    /// Binlog format version (4 for every supported server).
    pub binlog_version: u16,
    /// The server's version string, e.g. `10.11.6-MariaDB-log`.
    pub server_version: String,
    /// Server family, from the version string.
    pub flavor: Flavor,
    /// Common header length (19 for v4).
    pub header_len: u8,
    /// Post-header length of each event type, indexed by `type_code - 1`.
    pub post_header_lens: Vec<u8>,
    /// Checksum algorithm of the events that follow (and of this event).
    pub checksum: Checksum,
}

impl FormatDescription {
    /// Parses a FORMAT_DESCRIPTION event. `event` is the whole event, header included.
    pub fn parse(event: &[u8]) -> Result<Self, ErrorKind> {
        let body = event
            .get(HEADER_LEN..)
            .ok_or_else(|| ErrorKind::malformed("FORMAT_DESCRIPTION", "shorter than a header"))?;
        let mut r = Reader::new(body);
        let what = "FORMAT_DESCRIPTION";
        let binlog_version = r.u16().map_err(|s| ErrorKind::short(what, s))?;
        let version_bytes = r.take(50).map_err(|s| ErrorKind::short(what, s))?;
        let _created = r.u32().map_err(|s| ErrorKind::short(what, s))?;
        let header_len = r.u8().map_err(|s| ErrorKind::short(what, s))?;
        if binlog_version != 4 {
            return Err(ErrorKind::Unsupported(format!(
                "binlog format version {binlog_version} (only version 4, MySQL 5.0 and later, is supported)"
            )));
        }
        if usize::from(header_len) < HEADER_LEN {
            return Err(ErrorKind::malformed(
                what,
                format!("common header length {header_len} is below 19"),
            ));
        }
        let end = version_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(version_bytes.len());
        let server_version = String::from_utf8_lossy(&version_bytes[..end]).into_owned();
        let flavor = if server_version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let rest = r.take_rest();
        // Servers that know checksums end the event with the algorithm byte and a 4-byte
        // checksum field, whatever the algorithm; older servers end with the lengths.
        let (post_header_lens, checksum) = if writes_checksum_alg(&server_version, flavor) {
            if rest.len() < 1 + CHECKSUM_LEN {
                return Err(ErrorKind::short(
                    what,
                    crate::bytes::Short {
                        needed: 1 + CHECKSUM_LEN,
                        available: rest.len(),
                    },
                ));
            }
            let (lens, tail) = rest.split_at(rest.len() - 1 - CHECKSUM_LEN);
            let alg = match tail[0] {
                0 => Checksum::Off,
                1 => Checksum::Crc32,
                other => {
                    return Err(ErrorKind::Unsupported(format!(
                        "binlog checksum algorithm {other}"
                    )))
                }
            };
            (lens.to_vec(), alg)
        } else {
            (rest.to_vec(), Checksum::Off)
        };
        Ok(FormatDescription {
            binlog_version,
            server_version,
            flavor,
            header_len,
            post_header_lens,
            checksum,
        })
    }

    /// The post-header length the server announced for `type_code`, if it announced one.
    pub fn post_header_len(&self, type_code: u8) -> Option<usize> {
        let i = usize::from(type_code).checked_sub(1)?;
        self.post_header_lens.get(i).map(|&l| usize::from(l))
    }

    /// A description for reading events nested in a MySQL TRANSACTION_PAYLOAD, which are
    /// written without checksums.
    pub fn without_checksum(&self) -> Self {
        FormatDescription {
            checksum: Checksum::Off,
            ..self.clone()
        }
    }
}

/// MySQL added the checksum algorithm to FORMAT_DESCRIPTION in 5.6.1, MariaDB in 5.3.
fn writes_checksum_alg(version: &str, flavor: Flavor) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match flavor {
        Flavor::MariaDb => v >= (5, 3, 0),
        Flavor::MySql => v >= (5, 6, 1),
    }
}

/// Flag: the binlog file is open for writing (set in the FORMAT_DESCRIPTION).
pub const LOG_EVENT_BINLOG_IN_USE_F: u16 = 0x1;

/// Verifies the CRC32 of a FORMAT_DESCRIPTION event. The server computes it with
/// `LOG_EVENT_BINLOG_IN_USE_F` clear and sets that flag in place while the file is open,
/// so the flag is cleared again before hashing.
pub fn verify_fde_crc32(event: &[u8]) -> Result<&[u8], ErrorKind> {
    if event.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(ErrorKind::BadEventLength {
            length: event.len() as u32,
        });
    }
    let (data, tail) = event.split_at(event.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let mut h = crc32fast::Hasher::new();
    h.update(&data[..17]);
    h.update(&[data[17] & !(LOG_EVENT_BINLOG_IN_USE_F as u8)]);
    h.update(&data[18..]);
    let computed = h.finalize();
    if stored != computed {
        return Err(ErrorKind::ChecksumMismatch { stored, computed });
    }
    Ok(data)
}

/// Verifies the CRC32 trailer of `event` (whole event, checksum included).
/// Returns the event without its trailer.
pub fn verify_crc32(event: &[u8]) -> Result<&[u8], ErrorKind> {
    verify_crc32_with(&crc32fast::Hasher::new(), event)
}

/// [`verify_crc32`] starting from a cloned `proto` hasher: `Hasher::new` detects CPU
/// features on every call, a measurable cost once per event.
pub fn verify_crc32_with<'e>(
    proto: &crc32fast::Hasher,
    event: &'e [u8],
) -> Result<&'e [u8], ErrorKind> {
    if event.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(ErrorKind::BadEventLength {
            length: event.len() as u32,
        });
    }
    let (data, tail) = event.split_at(event.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let mut h = proto.clone();
    h.update(data);
    let computed = h.finalize();
    if stored != computed {
        return Err(ErrorKind::ChecksumMismatch { stored, computed });
    }
    Ok(data)
}

/// Whether `type_code` is one this decoder understands.
#[inline]
pub fn is_known(type_code: u8) -> bool {
    KNOWN[usize::from(type_code)]
}

/// [`is_known`] as a table: this runs once per event.
static KNOWN: [bool; 256] = {
    use code::*;
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = matches!(c, START_V3..=GTID_TAGGED | AURORA_PADDING | MARIA_ANNOTATE_ROWS..=MARIA_DELETE_ROWS_COMPRESSED);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_cutoffs() {
        assert!(writes_checksum_alg("5.6.1-m5", Flavor::MySql));
        assert!(!writes_checksum_alg("5.6.0", Flavor::MySql));
        assert!(!writes_checksum_alg("5.5.27-log", Flavor::MySql));
        assert!(writes_checksum_alg("8.0.31", Flavor::MySql));
        assert!(writes_checksum_alg("10.0.15-MariaDB-log", Flavor::MariaDb));
        assert!(writes_checksum_alg("5.5.5-10.1.0-MariaDB", Flavor::MariaDb));
    }

    #[test]
    fn header_rejects_short_length() {
        let mut h = [0u8; 19];
        h[9..13].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            EventHeader::parse(&h),
            Err(ErrorKind::BadEventLength { length: 5 })
        );
    }

    #[test]
    fn crc_mismatch_is_named() {
        let mut ev = vec![0u8; 23];
        let crc = crc32fast::hash(&ev[..19]);
        ev[19..].copy_from_slice(&crc.to_le_bytes());
        assert!(verify_crc32(&ev).is_ok());
        ev[3] ^= 1;
        assert!(matches!(
            verify_crc32(&ev),
            Err(ErrorKind::ChecksumMismatch { .. })
        ));
    }
}

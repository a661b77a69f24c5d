//! Transaction identifiers: MariaDB `domain-server-sequence` GTIDs and MySQL `uuid:gno` GTIDs.

use crate::bytes::Reader;
use crate::error::ErrorKind;
use std::fmt;

// The identifiers are the pipeline's shared types, so that what the decoder reads is what
// positions, batches and checkpoints carry, without a conversion.
pub use outflow_core::{MariaGtid, Uuid};

/// MariaDB GTID event flags.
pub mod maria_flags {
    /// No terminating COMMIT/XID follows: the event group is a single statement (DDL).
    pub const STANDALONE: u8 = 1;
    /// A group-commit id follows.
    pub const GROUP_COMMIT_ID: u8 = 2;
    /// The group can be rolled back (transactional engines only).
    pub const TRANSACTIONAL: u8 = 4;
    /// An XA transaction's prepare.
    pub const PREPARED_XA: u8 = 64;
    /// An XA transaction's commit or rollback.
    pub const COMPLETED_XA: u8 = 128;
}

/// A MariaDB GTID event: the start of an event group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtidEvent<'a> {
    /// The GTID (server id comes from the event header).
    pub gtid: MariaGtid,
    /// Flags ([`maria_flags`]).
    pub flags: u8,
    /// Group-commit id, if any.
    pub commit_id: Option<u64>,
    /// XA `formatID` and `gtrid||bqual` bytes with the gtrid length, for XA groups.
    pub xa: Option<(u32, u8, &'a [u8])>,
}

impl<'a> MariaGtidEvent<'a> {
    /// Whether the group has no terminating COMMIT/XID.
    pub fn standalone(&self) -> bool {
        self.flags & maria_flags::STANDALONE != 0
    }

    pub(crate) fn parse(body: &'a [u8], server_id: u32) -> Result<Self, ErrorKind> {
        let what = "MariaDB GTID";
        let sh = |s| ErrorKind::short(what, s);
        let mut r = Reader::new(body);
        let sequence = r.u64().map_err(sh)?;
        let domain = r.u32().map_err(sh)?;
        let flags = r.u8().map_err(sh)?;
        let mut commit_id = None;
        let mut xa = None;
        if flags & maria_flags::GROUP_COMMIT_ID != 0 {
            commit_id = Some(r.u64().map_err(sh)?);
        }
        if flags & (maria_flags::PREPARED_XA | maria_flags::COMPLETED_XA) != 0 {
            let format_id = r.u32().map_err(sh)?;
            let gtrid = r.u8().map_err(sh)?;
            let bqual = r.u8().map_err(sh)?;
            let data = r
                .take(usize::from(gtrid) + usize::from(bqual))
                .map_err(sh)?;
            xa = Some((format_id, gtrid, data));
        }
        Ok(MariaGtidEvent {
            gtid: MariaGtid {
                domain,
                server_id,
                sequence,
            },
            flags,
            commit_id,
            xa,
        })
    }
}

/// A MariaDB GTID_LIST event: the binlog state at the start of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidList<'a> {
    entries: &'a [u8],
}

impl<'a> GtidList<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ErrorKind> {
        let what = "GTID_LIST";
        let mut r = Reader::new(body);
        let count = r.u32().map_err(|s| ErrorKind::short(what, s))? & 0x0fff_ffff;
        let entries = r
            .take(count as usize * 16)
            .map_err(|s| ErrorKind::short(what, s))?;
        Ok(GtidList { entries })
    }

    /// The last GTID of each domain.
    pub fn gtids(&self) -> impl Iterator<Item = MariaGtid> + 'a {
        self.entries.chunks_exact(16).map(|c| {
            let mut r = Reader::new(c);
            // Chunks are exactly 16 bytes, so these reads cannot fail.
            MariaGtid {
                domain: r.u32().unwrap_or(0),
                server_id: r.u32().unwrap_or(0),
                sequence: r.u64().unwrap_or(0),
            }
        })
    }
}

/// A MySQL GTID, GTID_TAGGED or ANONYMOUS_GTID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MySqlGtidEvent<'a> {
    /// Source server UUID (all zero for anonymous transactions).
    pub uuid: Uuid,
    /// Transaction number.
    pub gno: i64,
    /// GTID tag (MySQL 8.3+), empty if untagged.
    pub tag: &'a [u8],
    /// Whether this is an ANONYMOUS_GTID event (GTID mode off).
    pub anonymous: bool,
    /// Logical clock for parallel apply, when present: (last_committed, sequence_number).
    pub logical_clock: Option<(i64, i64)>,
}

impl fmt::Display for MySqlGtidEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.anonymous {
            return f.write_str("ANONYMOUS");
        }
        write!(f, "{}:", self.uuid)?;
        if !self.tag.is_empty() {
            write!(f, "{}:", String::from_utf8_lossy(self.tag))?;
        }
        write!(f, "{}", self.gno)
    }
}

impl<'a> MySqlGtidEvent<'a> {
    pub(crate) fn parse(body: &'a [u8], anonymous: bool) -> Result<Self, ErrorKind> {
        let what = "GTID";
        let sh = |s| ErrorKind::short(what, s);
        let mut r = Reader::new(body);
        let _commit_flag = r.u8().map_err(sh)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(r.take(16).map_err(sh)?);
        let gno = r.u64().map_err(sh)? as i64;
        let mut logical_clock = None;
        if r.remaining() >= 17 && r.u8().map_err(sh)? == 2 {
            logical_clock = Some((r.u64().map_err(sh)? as i64, r.u64().map_err(sh)? as i64));
        }
        Ok(MySqlGtidEvent {
            uuid: Uuid(uuid),
            gno,
            tag: &[],
            anonymous,
            logical_clock,
        })
    }

    /// Parses a GTID_TAGGED event (MySQL 8.3+), written in MySQL's field-numbered
    /// serialization format: a message size and last field id, then `field_id value`
    /// pairs. Integers are variable-length; unknown fields end the parse, which is safe
    /// because every field this decoder needs precedes them.
    pub(crate) fn parse_tagged(body: &'a [u8]) -> Result<Self, ErrorKind> {
        let what = "GTID_TAGGED";
        let mut r = Reader::new(body);
        let bad = |m: &str| ErrorKind::malformed(what, m.to_string());
        let _size = varlen_u64(&mut r).ok_or_else(|| bad("message size"))?;
        let _last_field = varlen_u64(&mut r).ok_or_else(|| bad("last field id"))?;
        let mut ev = MySqlGtidEvent {
            uuid: Uuid([0; 16]),
            gno: 0,
            tag: &[],
            anonymous: false,
            logical_clock: None,
        };
        let mut last_committed = None;
        while r.remaining() > 0 {
            let id = varlen_u64(&mut r).ok_or_else(|| bad("field id"))?;
            match id {
                0 => {
                    varlen_u64(&mut r).ok_or_else(|| bad("flags"))?;
                }
                1 => {
                    let u = r.take(16).map_err(|s| ErrorKind::short(what, s))?;
                    ev.uuid.0.copy_from_slice(u);
                }
                2 => ev.gno = varlen_i64(&mut r).ok_or_else(|| bad("gno"))?,
                3 => {
                    let n = varlen_u64(&mut r).ok_or_else(|| bad("tag length"))?;
                    ev.tag = r.take(n as usize).map_err(|s| ErrorKind::short(what, s))?;
                }
                4 => {
                    last_committed = Some(varlen_i64(&mut r).ok_or_else(|| bad("last_committed"))?)
                }
                5 => {
                    let seq = varlen_i64(&mut r).ok_or_else(|| bad("sequence_number"))?;
                    ev.logical_clock = last_committed.map(|l| (l, seq));
                }
                6..=11 => {
                    varlen_u64(&mut r).ok_or_else(|| bad("field"))?;
                }
                _ => break,
            }
        }
        Ok(ev)
    }
}

/// MySQL serialization variable-length unsigned integer: the number of trailing one bits
/// of the first byte says how many more bytes follow (8 ones: 8 more bytes).
fn varlen_u64(r: &mut Reader<'_>) -> Option<u64> {
    let first = r.u8().ok()?;
    let extra = first.trailing_ones() as usize;
    if extra == 0 {
        return Some(u64::from(first >> 1));
    }
    if extra >= 8 {
        return r.u64().ok();
    }
    let rest = r.take(extra).ok()?;
    let mut v = u64::from(first) >> (extra + 1);
    for (i, &b) in rest.iter().enumerate() {
        v |= u64::from(b) << (8 * i + 7 - extra);
    }
    Some(v)
}

/// Signed variant: zig-zag encoded over [`varlen_u64`].
fn varlen_i64(r: &mut Reader<'_>) -> Option<i64> {
    let u = varlen_u64(r)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// A MySQL PREVIOUS_GTIDS event: the GTID set executed before this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousGtids<'a> {
    /// The encoded GTID set.
    pub raw: &'a [u8],
}

impl<'a> PreviousGtids<'a> {
    /// Renders the set as `uuid:1-5:7,uuid2:1-3` (tagged sets as `uuid:tag:1-5`).
    pub fn to_gtid_set_string(&self) -> Result<String, ErrorKind> {
        let what = "PREVIOUS_GTIDS";
        let sh = |s| ErrorKind::short(what, s);
        let mut r = Reader::new(self.raw);
        let head = r.u64().map_err(sh)?;
        // MySQL 8.3+ marks a tagged set with format byte 1 in the top byte.
        let tagged = head >> 56 == 1;
        let n_sids = if tagged {
            (head >> 8) & 0x00ff_ffff_ffff_ffff
        } else {
            head
        };
        let mut out = String::new();
        for i in 0..n_sids {
            let mut u = [0u8; 16];
            u.copy_from_slice(r.take(16).map_err(sh)?);
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Uuid(u).to_string());
            if tagged {
                let n =
                    varlen_u64(&mut r).ok_or_else(|| ErrorKind::malformed(what, "tag length"))?;
                let tag = r.take(n as usize).map_err(sh)?;
                if !tag.is_empty() {
                    out.push(':');
                    out.push_str(&String::from_utf8_lossy(tag));
                }
            }
            let n_iv = r.u64().map_err(sh)?;
            for _ in 0..n_iv {
                let start = r.u64().map_err(sh)? as i64;
                // The end is exclusive. Any i64 can arrive from a corrupt file, and
                // i64::MIN has no predecessor.
                let end = r.u64().map_err(sh)? as i64;
                let last = end
                    .checked_sub(1)
                    .ok_or_else(|| ErrorKind::malformed(what, "interval end out of range"))?;
                if last > start {
                    out.push_str(&format!(":{start}-{last}"));
                } else {
                    out.push_str(&format!(":{start}"));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_display() {
        let u = Uuid([
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        assert_eq!(u.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }

    #[test]
    fn varlen_round_values() {
        assert_eq!(varlen_u64(&mut Reader::new(&[0x02])), Some(1));
        // one trailing one: 2 bytes, 14 bits of value
        let v: u64 = 300;
        let enc = ((v << 2) | 0b01) as u16;
        assert_eq!(varlen_u64(&mut Reader::new(&enc.to_le_bytes())), Some(300));
    }

    #[test]
    fn previous_gtids_untagged() {
        let mut b = vec![];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&[0x11; 16]);
        b.extend_from_slice(&2u64.to_le_bytes());
        for (s, e) in [(1i64, 6i64), (8, 9)] {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&e.to_le_bytes());
        }
        let s = PreviousGtids { raw: &b }.to_gtid_set_string().unwrap();
        assert_eq!(s, "11111111-1111-1111-1111-111111111111:1-5:8");
    }
}

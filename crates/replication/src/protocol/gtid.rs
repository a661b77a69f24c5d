//! GTID positions in the two text forms the servers use, and the binary GTID set of
//! `COM_BINLOG_DUMP_GTID`.
//!
//! These small types carry what the dump needs; when `outflow-core`'s position types land,
//! [`MariaGtidPos`] and [`MySqlGtidSet`] convert to and from them through their text forms.

use std::collections::BTreeMap;
use std::fmt;

use outflow_binlog::bytes::Reader;

/// A bad GTID text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GTID position '{text}': {reason}")]
pub struct GtidParseError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(text: &str, reason: impl Into<String>) -> GtidParseError {
    GtidParseError {
        text: text.to_string(),
        reason: reason.into(),
    }
}

/// A MariaDB GTID position: the last GTID per replication domain, as in
/// `@@gtid_slave_pos` (`0-1-100,1-2-5`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaGtidPos {
    /// Domain id to `(server_id, sequence)`.
    pub domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidPos {
    /// Parses `domain-server-sequence` entries separated by commas (spaces allowed, empty
    /// text = empty position, at most one entry per domain).
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut domains = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let (Some(d), Some(s), Some(n), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad(text, format!("'{part}' is not domain-server-sequence")));
            };
            let num = |v: &str, what: &str, max: u64| -> Result<u64, GtidParseError> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(
                        text,
                        format!("{what} '{v}' in '{part}' is not a number"),
                    ));
                }
                v.parse::<u64>()
                    .ok()
                    .filter(|&n| n <= max)
                    .ok_or_else(|| bad(text, format!("{what} '{v}' in '{part}' is out of range")))
            };
            let domain = num(d, "domain", u32::MAX.into())? as u32;
            let server = num(s, "server id", u32::MAX.into())? as u32;
            let seq = num(n, "sequence", u64::MAX)?;
            if domains.insert(domain, (server, seq)).is_some() {
                return Err(bad(text, format!("domain {domain} appears twice")));
            }
        }
        Ok(MariaGtidPos { domains })
    }

    /// Records a committed transaction.
    pub fn update(&mut self, domain: u32, server_id: u32, sequence: u64) {
        self.domains.insert(domain, (server_id, sequence));
    }
}

impl fmt::Display for MariaGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, (s, n))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{s}-{n}")?;
        }
        Ok(())
    }
}

/// A MySQL GTID set (`uuid:1-5:7,uuid2:1-3`), untagged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MySqlGtidSet {
    /// Source UUID to sorted, disjoint, non-adjacent intervals `[start, end)`.
    pub sids: BTreeMap<[u8; 16], Vec<(u64, u64)>>,
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl MySqlGtidSet {
    /// Parses the text form. Tagged GTIDs (MySQL 8.3+) are refused with a clear error.
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut set = MySqlGtidSet::default();
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for part in compact.split(',').filter(|p| !p.is_empty()) {
            let mut it = part.split(':');
            let uuid_text = it.next().unwrap_or_default();
            let uuid = parse_uuid(uuid_text)
                .ok_or_else(|| bad(text, format!("'{uuid_text}' is not a UUID")))?;
            let mut any = false;
            for iv in it {
                any = true;
                let (a, b) = match iv.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (iv, iv),
                };
                let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                    return Err(bad(
                        text,
                        if iv.bytes().any(|c| c.is_ascii_alphabetic()) {
                            format!("'{iv}' looks like a tag; tagged GTIDs are not supported")
                        } else {
                            format!("'{iv}' is not an interval")
                        },
                    ));
                };
                if a == 0 || b < a || b == u64::MAX {
                    return Err(bad(
                        text,
                        format!("interval '{iv}' is empty or out of range"),
                    ));
                }
                set.add_interval(uuid, a, b + 1);
            }
            if !any {
                return Err(bad(text, format!("'{part}' has no interval")));
            }
        }
        Ok(set)
    }

    /// Adds `[start, end)` for `uuid`, merging with neighbours.
    pub fn add_interval(&mut self, uuid: [u8; 16], start: u64, end: u64) {
        let ivs = self.sids.entry(uuid).or_default();
        ivs.push((start, end));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    /// Records a committed transaction `uuid:gno`.
    pub fn add(&mut self, uuid: [u8; 16], gno: u64) {
        let ivs = self.sids.entry(uuid).or_default();
        // The common case: the next number of the last interval.
        if let Some(last) = ivs.last_mut() {
            if last.1 == gno {
                last.1 += 1;
                return;
            }
        }
        self.add_interval(uuid, gno, gno.saturating_add(1));
    }

    /// The binary form of `COM_BINLOG_DUMP_GTID`: `n_sids u64`, then per source the UUID,
    /// `n_intervals u64` and each interval as `start u64, end u64` (end exclusive).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.sids.len() * 40);
        out.extend_from_slice(&(self.sids.len() as u64).to_le_bytes());
        for (uuid, ivs) in &self.sids {
            out.extend_from_slice(uuid);
            out.extend_from_slice(&(ivs.len() as u64).to_le_bytes());
            for (s, e) in ivs {
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&e.to_le_bytes());
            }
        }
        out
    }

    /// Parses the binary form (for tests and fuzzing of [`MySqlGtidSet::encode`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, super::ProtocolError> {
        const WHAT: &str = "GTID set";
        let sh = super::ProtocolError::short(WHAT);
        let mut r = Reader::new(bytes);
        let n = r.u64().map_err(&sh)?;
        let mut set = MySqlGtidSet::default();
        for _ in 0..n {
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(r.take(16).map_err(&sh)?);
            let k = r.u64().map_err(&sh)?;
            if k > r.remaining() as u64 / 16 {
                return Err(super::ProtocolError::new(
                    WHAT,
                    "interval count exceeds the data",
                ));
            }
            for _ in 0..k {
                let s = r.u64().map_err(&sh)?;
                let e = r.u64().map_err(&sh)?;
                if s == 0 || e <= s {
                    return Err(super::ProtocolError::new(WHAT, "empty interval"));
                }
                set.add_interval(uuid, s, e);
            }
        }
        Ok(set)
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, ivs)) in self.sids.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, b) in uuid.iter().enumerate() {
                if matches!(j, 4 | 6 | 8 | 10) {
                    f.write_str("-")?;
                }
                write!(f, "{b:02x}")?;
            }
            for (s, e) in ivs {
                if e - 1 == *s {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{}", e - 1)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maria_positions() {
        let p = MariaGtidPos::parse(" 1-2-5, 0-1-100 ").unwrap();
        assert_eq!(p.to_string(), "0-1-100,1-2-5");
        assert_eq!(MariaGtidPos::parse("").unwrap().to_string(), "");
        for bad in [
            "0-1",
            "0-1-x",
            "0-1-1,0-2-2",
            "0-1-1-1",
            "0-1-1;DROP",
            "-1-1",
        ] {
            assert!(MariaGtidPos::parse(bad).is_err(), "{bad}");
        }
        let mut p = p;
        p.update(0, 3, 101);
        p.update(7, 1, 1);
        assert_eq!(p.to_string(), "0-3-101,1-2-5,7-1-1");
    }

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn mysql_sets_parse_merge_and_encode() {
        let s = MySqlGtidSet::parse(&format!("{U1}:1-5:7:6, {U1}:10-12")).unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-7:10-12"));
        let enc = s.encode();
        assert_eq!(enc.len(), 8 + 16 + 8 + 2 * 16);
        assert_eq!(&enc[..8], &1u64.to_le_bytes());
        assert_eq!(&enc[24..32], &2u64.to_le_bytes());
        assert_eq!(
            &enc[32..48],
            &[1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(MySqlGtidSet::decode(&enc).unwrap(), s);
        let mut s = s;
        let uuid = *s.sids.keys().next().unwrap();
        s.add(uuid, 13);
        s.add(uuid, 8);
        s.add(uuid, 9);
        s.add(uuid, 20);
        assert_eq!(s.to_string(), format!("{U1}:1-13:20"));
        assert!(MySqlGtidSet::parse("").unwrap().sids.is_empty());
    }

    #[test]
    fn mysql_set_errors() {
        for t in [
            "nope:1-2",
            U1,
            &format!("{U1}:0-3"),
            &format!("{U1}:5-3"),
            &format!("{U1}:x"),
        ] {
            assert!(MySqlGtidSet::parse(t).is_err(), "{t}");
        }
        let e = MySqlGtidSet::parse(&format!("{U1}:mytag:1-3")).unwrap_err();
        assert!(e.to_string().contains("tag"), "{e}");
        assert!(MySqlGtidSet::decode(&[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(MySqlGtidSet::decode(&huge).is_err());
    }
}

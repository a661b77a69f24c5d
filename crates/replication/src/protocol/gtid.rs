//! The binary GTID set of MySQL's `COM_BINLOG_DUMP_GTID`. GTID positions themselves are
//! `outflow-core`'s ([`outflow_core::MariaGtidPos`], [`GtidSet`]), shared by the whole
//! pipeline.

use outflow_binlog::bytes::Reader;
use outflow_core::{GtidSet, Tag, Uuid};

use super::ProtocolError;

/// A GTID set the dump command cannot carry: tagged GTIDs (MySQL 8.3+, whose newer form of
/// the command this client does not send), or a transaction number at the top of the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GTID set cannot be sent in COM_BINLOG_DUMP_GTID: {reason}")]
pub struct UnsendableGtidSet {
    /// What it holds that cannot be sent.
    pub reason: String,
}

/// The binary form: `n_sids u64`, then per source the UUID, `n_intervals u64` and each
/// interval as `start u64, end u64` (end exclusive).
pub fn encode_gtid_set(set: &GtidSet) -> Result<Vec<u8>, UnsendableGtidSet> {
    // `intervals` yields each source's intervals together, in order.
    let mut sids: Vec<(Uuid, Vec<(u64, u64)>)> = Vec::new();
    for (uuid, tag, start, end) in set.intervals() {
        if !tag.is_empty() {
            return Err(UnsendableGtidSet {
                reason: format!("tagged GTIDs ({uuid}:{}) are not supported", tag.as_str()),
            });
        }
        let Some(after) = end.checked_add(1) else {
            return Err(UnsendableGtidSet {
                reason: format!("transaction number {end} of {uuid} is out of range"),
            });
        };
        let interval = (start, after);
        match sids.last_mut() {
            Some((u, ivs)) if *u == uuid => ivs.push(interval),
            _ => sids.push((uuid, vec![interval])),
        }
    }
    let mut out = Vec::with_capacity(8 + sids.len() * 40);
    out.extend_from_slice(&(sids.len() as u64).to_le_bytes());
    for (uuid, ivs) in &sids {
        out.extend_from_slice(&uuid.0);
        out.extend_from_slice(&(ivs.len() as u64).to_le_bytes());
        for (s, e) in ivs {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    Ok(out)
}

/// Parses the binary form (for tests and fuzzing of [`encode_gtid_set`]).
pub fn decode_gtid_set(bytes: &[u8]) -> Result<GtidSet, ProtocolError> {
    const WHAT: &str = "GTID set";
    let sh = ProtocolError::short(WHAT);
    let mut r = Reader::new(bytes);
    let n = r.u64().map_err(&sh)?;
    let mut set = GtidSet::new();
    for _ in 0..n {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(r.take(16).map_err(&sh)?);
        let k = r.u64().map_err(&sh)?;
        if k > r.remaining() as u64 / 16 {
            return Err(ProtocolError::new(WHAT, "interval count exceeds the data"));
        }
        for _ in 0..k {
            let s = r.u64().map_err(&sh)?;
            let e = r.u64().map_err(&sh)?;
            if s == 0 || e <= s {
                return Err(ProtocolError::new(WHAT, "empty interval"));
            }
            set.add_interval(Uuid(uuid), Tag::EMPTY, s, e - 1);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn sets_encode_and_decode() {
        let s: GtidSet = format!("{U1}:1-5:7:6, {U1}:10-12").parse().unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-7:10-12"));
        let enc = encode_gtid_set(&s).unwrap();
        assert_eq!(enc.len(), 8 + 16 + 8 + 2 * 16);
        assert_eq!(&enc[..8], &1u64.to_le_bytes());
        assert_eq!(&enc[24..32], &2u64.to_le_bytes());
        assert_eq!(
            &enc[32..48],
            &[1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(decode_gtid_set(&enc).unwrap(), s);
        assert_eq!(
            encode_gtid_set(&GtidSet::new()).unwrap(),
            0u64.to_le_bytes()
        );
    }

    #[test]
    fn tagged_sets_and_bad_bytes_are_errors() {
        let tagged: GtidSet = format!("{U1}:1-3:mytag:1-3").parse().unwrap();
        let e = encode_gtid_set(&tagged).unwrap_err();
        assert!(e.to_string().contains("mytag"), "{e}");
        let top: GtidSet = format!("{U1}:1-{}", u64::MAX).parse().unwrap();
        assert!(encode_gtid_set(&top).is_err());
        assert!(decode_gtid_set(&[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_gtid_set(&huge).is_err());
    }
}

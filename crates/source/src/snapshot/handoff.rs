//! Where the stream takes over from the snapshot, per table and key range (sans-IO).
//!
//! Each table (or, after a resumed crash, each key range of a table) was read in a
//! consistent snapshot whose binlog position `P` is known: the rows reflect every
//! transaction that ends at or before `P` and none after. So a binlog change to that range
//! must be applied exactly when its event lies at or after `P`. The stream starts at the
//! smallest `P` of all; [`Handoff::applies`] drops the changes a range already holds.
//! Past the largest `P`, everything applies and the handoff can be dropped.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use outflow_core::BinlogPosition;
use serde::{Deserialize, Serialize};

/// Orders binlog coordinates of one server: files by their numeric extension (so
/// `binlog.1000000` follows `binlog.999999`), then offsets.
pub fn cmp_binlog(a: &BinlogPosition, b: &BinlogPosition) -> Ordering {
    let split = |f: &str| -> (String, u64) {
        match f.rsplit_once('.') {
            Some((base, ext)) => match ext.parse::<u64>() {
                Ok(n) => (base.to_string(), n),
                Err(_) => (f.to_string(), 0),
            },
            None => (f.to_string(), 0),
        }
    };
    let (ba, na) = split(&a.file);
    let (bb, nb) = split(&b.file);
    ba.cmp(&bb).then(na.cmp(&nb)).then(a.pos.cmp(&b.pos))
}

/// One key range of a table and the snapshot position it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The range starts after this primary key (integer columns only); `None` is the
    /// table's start.
    pub after_key: Option<Vec<i128>>,
    /// The snapshot position the range was read at.
    pub position: BinlogPosition,
}

/// Per-table snapshot positions: what the stream must skip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// `db.table` → segments in key order (their `after_key`s increase).
    pub tables: BTreeMap<String, Vec<Segment>>,
}

impl Handoff {
    /// Where streaming must start: the earliest snapshot position.
    pub fn start(&self) -> Option<&BinlogPosition> {
        self.tables
            .values()
            .flatten()
            .map(|s| &s.position)
            .min_by(|a, b| cmp_binlog(a, b))
    }

    /// The latest snapshot position: from there on, every change applies.
    pub fn end(&self) -> Option<&BinlogPosition> {
        self.tables
            .values()
            .flatten()
            .map(|s| &s.position)
            .max_by(|a, b| cmp_binlog(a, b))
    }

    /// Whether a change to `db.table` in an event at `pos` must be applied on top of the
    /// snapshot. `key` gives the changed row image's integer primary key; it is asked for
    /// only when the table was read in several ranges. Tables not in the snapshot always
    /// apply. `None`: the key was needed and not given, so no safe answer exists (the
    /// caller must fail rather than guess).
    pub fn applies(
        &self,
        table: &str,
        pos: &BinlogPosition,
        key: impl FnOnce() -> Option<Vec<i128>>,
    ) -> Option<bool> {
        let Some(segs) = self.tables.get(table) else {
            return Some(true);
        };
        let seg = match segs.as_slice() {
            [] => return Some(true),
            [one] => one,
            many => {
                if many
                    .iter()
                    .all(|s| cmp_binlog(pos, &s.position) != Ordering::Less)
                {
                    return Some(true);
                }
                if many
                    .iter()
                    .all(|s| cmp_binlog(pos, &s.position) == Ordering::Less)
                {
                    return Some(false);
                }
                let k = key()?;
                // Key order: the last range whose start lies below the key.
                many.iter()
                    .rev()
                    .find(|s| s.after_key.as_ref().is_none_or(|a| k > *a))
                    .unwrap_or(&many[0])
            }
        };
        Some(cmp_binlog(pos, &seg.position) != Ordering::Less)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(file: &str, pos: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            pos,
        }
    }

    #[test]
    fn binlog_order_is_numeric_across_widths() {
        assert_eq!(
            cmp_binlog(&p("binlog.999999", 9), &p("binlog.1000000", 4)),
            Ordering::Less
        );
        assert_eq!(
            cmp_binlog(&p("b.000002", 4), &p("b.000001", 900)),
            Ordering::Greater
        );
        assert_eq!(
            cmp_binlog(&p("b.000002", 4), &p("b.000002", 4)),
            Ordering::Equal
        );
    }

    #[test]
    fn per_table_and_per_range_positions() {
        let mut h = Handoff::default();
        h.tables.insert(
            "d.a".into(),
            vec![Segment {
                after_key: None,
                position: p("b.000001", 1000),
            }],
        );
        h.tables.insert(
            "d.b".into(),
            vec![
                Segment {
                    after_key: None,
                    position: p("b.000001", 500),
                },
                Segment {
                    after_key: Some(vec![100]),
                    position: p("b.000001", 2000),
                },
            ],
        );
        assert_eq!(h.start(), Some(&p("b.000001", 500)));
        assert_eq!(h.end(), Some(&p("b.000001", 2000)));
        let no_key = || None;
        assert_eq!(h.applies("d.a", &p("b.000001", 999), no_key), Some(false));
        assert_eq!(h.applies("d.a", &p("b.000001", 1000), no_key), Some(true));
        assert_eq!(h.applies("d.other", &p("b.000001", 1), no_key), Some(true));
        // Key 50 was read at 500, key 150 at 2000.
        assert_eq!(
            h.applies("d.b", &p("b.000001", 600), || Some(vec![50])),
            Some(true)
        );
        assert_eq!(
            h.applies("d.b", &p("b.000001", 600), || Some(vec![150])),
            Some(false)
        );
        assert_eq!(
            h.applies("d.b", &p("b.000001", 2000), || Some(vec![150])),
            Some(true)
        );
        assert_eq!(h.applies("d.b", &p("b.000001", 400), no_key), Some(false));
        assert_eq!(h.applies("d.b", &p("b.000001", 2000), no_key), Some(true));
        assert_eq!(h.applies("d.b", &p("b.000001", 1500), no_key), None);
    }
}

//! Every file of the shared real-world corpus (`../shared/binlog-corpus`, beside the repo)
//! decodes: every event, every row, every value. Files known to be damaged must fail with
//! an error that names a position, and must never panic.

use std::path::{Path, PathBuf};

use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{DecodeError, EventBuffer, RowIter, RowsEvent, TableInfo};

/// Files the corpus MANIFEST marks as damaged, and why. They must fail clearly.
const DAMAGED: &[(&str, &str)] = &[
    (
        "blackbeam__rust_mysql_common__test-data__binlogs__binlog_truncated_event.000001",
        "the last event is cut short",
    ),
    (
        "blackbeam__rust_mysql_common__test-data__binlogs__binlog_truncated_prev_gtid_event.000001",
        "PREVIOUS_GTIDS event is truncated",
    ),
    (
        "blackbeam__rust_mysql_common__test-data__binlogs__corrupt-relay-bin.000624",
        "corrupt relay log",
    ),
    (
        "Meituan-Dianping__MyFlash__binlog_output_base.flashback",
        "rewritten by MyFlash without recomputing CRC32",
    ),
    (
        "Meituan-Dianping__MyFlash__binlog_output_base.flashback__ac65cd70",
        "rewritten by MyFlash without recomputing CRC32",
    ),
    (
        "Meituan-Dianping__MyFlash__binlog_output_base.flashback.000001",
        "rewritten by MyFlash without recomputing CRC32",
    ),
    (
        "Meituan-Dianping__MyFlash__binlog_output_base.flashback__e0825ebe",
        "rewritten by MyFlash without recomputing CRC32",
    ),
];

/// Schemas the binlog itself cannot carry, as a replicator would read them from the server.
/// MariaDB 10.0 wrote `TIMESTAMP(3)` in its own fractional format with no precision in the
/// TABLE_MAP (`mysql56_temporal_format=OFF`); the tables are created in the same file
/// (`t timestamp(3)`, `t2`/`t4 timestamp(4)`, `t5 timestamp(1)`, `t6 timestamp(4)`).
fn schema_for(file: &str, t: &mut TableInfo) {
    if file != "pingcap__tiflow__mysql-bin.000001" {
        return;
    }
    let fsp = match t.table.as_str() {
        "t" => 3,
        "t2" | "t4" | "t6" => 4,
        "t5" => 1,
        _ => return,
    };
    assert!(t.set_fractional_precision(1, fsp));
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/binlog-corpus")
}

struct Manifest {
    rows: Vec<(String, String)>,
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv"))
        .expect("the shared binlog corpus is checked out beside the repo");
    let rows = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap().to_string(), f.next().unwrap().to_string())
        })
        .collect();
    Manifest { rows }
}

#[derive(Default)]
struct Everything {
    rows: u64,
    text: String,
}

impl Visitor for Everything {
    type Error = DecodeError;
    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        _e: &RowsEvent<'_>,
        _t: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        let err = |kind| DecodeError {
            pos: ctx.pos,
            event_type: None,
            kind,
        };
        self.rows += rows.decode_all(&mut self.text).map_err(err)?.0;
        Ok(())
    }
}

/// Decodes a whole file in uneven pieces, to exercise reassembly too.
fn decode_file(path: &Path) -> Result<u64, DecodeError> {
    let bytes = std::fs::read(path).unwrap();
    let mut buf = EventBuffer::new(0);
    let mut walker = Walker::new();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    walker
        .decoder()
        .set_table_hook(Box::new(move |t| schema_for(&name, t)));
    let mut v = Everything::default();
    let mut magic = false;
    for piece in bytes.chunks(4093) {
        buf.extend(piece);
        if !magic {
            magic = buf.take_magic()?;
            if !magic {
                continue;
            }
        }
        while let Some((pos, ev)) = buf.next_event()? {
            walker.process(pos, ev, &mut v)?;
        }
    }
    buf.finish()?;
    Ok(v.rows)
}

#[test]
fn every_corpus_file_decodes_or_fails_clearly() {
    let m = manifest();
    assert!(m.rows.len() >= 150, "corpus has {} files", m.rows.len());
    let mut failures = vec![];
    let mut rows = 0;
    for (file, expect) in &m.rows {
        let path = corpus_dir().join(file);
        let damaged = DAMAGED.iter().find(|(f, _)| f == file);
        let result = std::panic::catch_unwind(|| decode_file(&path));
        match (expect.as_str(), result) {
            (_, Err(_)) => failures.push(format!("{file}: PANICKED")),
            ("ok", Ok(Ok(n))) => rows += n,
            ("ok", Ok(Err(e))) => failures.push(format!("{file}: {e}")),
            ("error", Ok(Ok(_))) => failures.push(format!("{file}: decoded, but is damaged")),
            ("error", Ok(Err(e))) => {
                if damaged.is_none() {
                    failures.push(format!("{file}: damaged but not listed in DAMAGED: {e}"));
                }
                assert!(e.to_string().contains("binlog position"), "{e}");
            }
            ("ok-or-error", Ok(r)) => {
                if let Err(e) = r {
                    assert!(e.to_string().contains("binlog position"), "{e}");
                }
            }
            (other, _) => failures.push(format!("{file}: unknown expectation {other}")),
        }
    }
    for (f, why) in DAMAGED {
        assert!(
            m.rows.iter().any(|(n, e)| n == f && e == "error"),
            "{f} ({why}) is not marked damaged in the MANIFEST"
        );
    }
    assert!(
        failures.is_empty(),
        "{} files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(rows > 1000, "only {rows} rows decoded");
}

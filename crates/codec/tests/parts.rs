//! Transactions cut into parts (`PipelineConfig::split_bytes`): over a real binlog, the
//! frames of a pipeline that cuts every few KiB, decoded and joined part to part, carry
//! exactly the transactions and changes of a pipeline that never cuts; parts are marked
//! on both sides of every cut, and no frame's batch grows far past the split size.

mod common;

use std::path::Path;

use outflow_binlog::walk::Walker;
use outflow_codec::{Decoder, Limits, Pipeline, PipelineConfig};
use outflow_core::{ChangeBatch, ImageMode, ValueRef};

/// One transaction as seen by a sink: GTID, commit position, and its changes as text.
#[derive(Debug, PartialEq)]
struct Txn {
    gtid: Option<String>,
    end: u64,
    changes: Vec<String>,
}

fn frames(evs: &[(u64, Vec<u8>)], cfg: PipelineConfig) -> Vec<Vec<u8>> {
    let mut p = Pipeline::new(cfg).unwrap();
    let mut walker = Walker::new();
    p.set_file("binlog.000001");
    let mut out = Vec::new();
    for (pos, ev) in evs {
        walker.process(*pos, ev, &mut p).unwrap();
        // The live source drains after every event; one event must yield one frame at most.
        let mut n = 0;
        p.drain_frames(|f| {
            out.push(f.to_vec());
            n += 1;
        });
        assert!(n <= 1, "{n} frames from the event at {pos}");
    }
    p.flush().unwrap();
    p.drain_frames(|f| out.push(f.to_vec()));
    out
}

fn change_text(b: &ChangeBatch, section: u32, i: usize) -> String {
    let s = &b.sections()[section as usize];
    let c = s.change(i);
    let image = |im: Option<outflow_core::Image<'_>>| {
        im.map_or_else(String::new, |im| {
            im.values()
                .map(|(c, v)| match v {
                    ValueRef::Int(x) => format!("{c}={x}"),
                    other => format!("{c}={other:?}"),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    format!(
        "{} {}.{} [{}] [{}]",
        c.op.name(),
        s.schema().db,
        s.schema().table,
        image(c.before),
        image(c.after)
    )
}

/// Decodes `frames` and joins parts into whole transactions, checking the part marks.
fn transactions(frames: &[Vec<u8>]) -> (Vec<Txn>, usize) {
    let mut dec = Decoder::new(Limits::default()).unwrap();
    let mut b = ChangeBatch::new(ImageMode::Replica);
    let mut out: Vec<Txn> = Vec::new();
    let mut open = false;
    let mut cuts = 0;
    for f in frames {
        dec.decode(f, &mut b).unwrap();
        assert_eq!(
            b.continued(),
            open,
            "a part follows a part, and only a part"
        );
        for (k, t) in b.transactions().iter().enumerate() {
            let mut changes = Vec::new();
            for run in b.transaction_runs(t) {
                for i in run.first..run.first + run.len {
                    changes.push(change_text(&b, run.section, i as usize));
                }
            }
            let gtid = t.gtid.map(|g| g.to_string());
            if k == 0 && b.continued() {
                let last = out.last_mut().unwrap();
                assert_eq!(last.gtid, gtid, "a part keeps its transaction's GTID");
                last.changes.extend(changes);
                last.end = t.end_pos;
            } else {
                out.push(Txn {
                    gtid,
                    end: t.end_pos,
                    changes,
                });
            }
        }
        open = b.continues();
        cuts += usize::from(open);
        if open {
            // The meta's end is the last committed transaction's, never the part's.
            let (_, meta) = dec.peek(f).unwrap();
            let committed = b.complete_transactions().last().map(|t| t.end_pos);
            assert_eq!(meta.end.map(|e| e.pos), committed);
        }
    }
    assert!(!open, "the stream ends inside a transaction");
    (out, cuts)
}

#[test]
fn parts_join_into_exactly_the_uncut_transactions() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/binlog-corpus");
    // The sakila load: multi-row inserts in transactions of up to ~100 KiB.
    let name = "osheroff__mysql-binlog-connector-java__src__test__resources__mysql-bin.sakila";
    let evs = common::events(&std::fs::read(corpus.join(name)).unwrap());
    for compaction in [false, true] {
        let base = PipelineConfig {
            batch_bytes: 64 << 10,
            compaction,
            ..PipelineConfig::default()
        };
        let whole = frames(
            &evs,
            PipelineConfig {
                split_bytes: u64::MAX,
                compaction: false,
                ..base.clone()
            },
        );
        let split = 8 << 10;
        let cut = frames(
            &evs,
            PipelineConfig {
                split_bytes: split,
                ..base.clone()
            },
        );
        let (want, no_cuts) = transactions(&whole);
        assert_eq!(no_cuts, 0);
        let (got, cuts) = transactions(&cut);
        assert!(cuts > 20, "only {cuts} cuts");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        // A frame with parts holds about `split` of binlog: far less than the largest
        // transaction, which the uncut pipeline puts in one frame.
        let mut dec = Decoder::new(Limits::default()).unwrap();
        let mut b = ChangeBatch::new(ImageMode::Replica);
        let mut largest_part = 0;
        for f in &cut {
            dec.decode(f, &mut b).unwrap();
            if b.continues() || b.continued() {
                largest_part = largest_part.max(f.len());
            }
            assert!(
                !(b.is_compacted() && (b.continues() || b.continued())),
                "parts are never compacted"
            );
        }
        let largest_whole = whole.iter().map(Vec::len).max().unwrap();
        println!(
            "compaction {compaction}: {} transactions, {cuts} cuts, {} frames; frames with \
             parts up to {largest_part} bytes, uncut frames up to {largest_whole}",
            want.len(),
            cut.len()
        );
        assert!(
            largest_part * 3 < largest_whole,
            "part frames up to {largest_part} bytes, whole frames up to {largest_whole}"
        );
    }
}

/// `can_flush` is what the live source asks after each event before it reads the clock:
/// it must say exactly whether `flush` would cut a frame, never inside a transaction
/// (whole or in parts), and flushing wherever it says so must lose nothing.
#[test]
fn can_flush_says_exactly_where_flush_cuts() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/binlog-corpus");
    let name = "osheroff__mysql-binlog-connector-java__src__test__resources__mysql-bin.sakila";
    let evs = common::events(&std::fs::read(corpus.join(name)).unwrap());
    let cfg = PipelineConfig {
        batch_bytes: 64 << 10,
        split_bytes: 8 << 10,
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg.clone()).unwrap();
    let mut walker = Walker::new();
    p.set_file("binlog.000001");
    let mut out = Vec::new();
    let (mut yes, mut no_inside) = (0, 0);
    for (pos, ev) in &evs {
        walker.process(*pos, ev, &mut p).unwrap();
        let can = p.can_flush();
        if walker.decoder().in_transaction() {
            assert!(!can, "can_flush inside a transaction, event at {pos}");
            no_inside += 1;
        }
        assert_eq!(p.flush().unwrap(), can, "event at {pos}");
        assert!(
            !p.can_flush(),
            "nothing left to flush after the event at {pos}"
        );
        yes += usize::from(can);
        p.drain_frames(|f| out.push(f.to_vec()));
    }
    let (got, _) = transactions(&out);
    let (want, _) = transactions(&frames(&evs, cfg));
    assert_eq!(got, want);
    // Cuts by flush (others come with DDL, which ends a batch by itself), and many
    // events where none may happen.
    assert!(yes > 10, "{yes} cuts by flush");
    assert!(no_inside > 1000, "{no_inside} events inside transactions");
}

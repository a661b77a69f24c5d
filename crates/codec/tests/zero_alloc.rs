//! Steady-state encoding allocates (next to) nothing: once the tables are known and the
//! buffers have grown to their working size, turning binlog events into frames (build,
//! compact, lay out, compress) must not touch the heap per row. Measured with a counting
//! global allocator over real binlogs of the shared corpus, in both image modes, with and
//! without compaction.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use outflow_binlog::walk::Walker;
use outflow_binlog::TableInfo;
use outflow_codec::{Pipeline, PipelineConfig};
use outflow_core::ImageMode;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count(bytes: usize) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only additions
// are relaxed counter increments and a thread-local read, none of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Every column as the primary key: the corpus binlogs do not name their tables' keys,
/// and the whole row is a key the changes are consistent with (no table here holds two
/// equal rows), so compaction has keys to work on.
fn whole_row_key(t: &mut TableInfo) {
    if t.primary_key.is_empty() {
        t.primary_key = (0..t.columns.len()).collect();
    }
}

/// Allocations a frame may cost in the steady state.
const PER_FRAME: u64 = 6;

#[test]
fn steady_state_encoding_does_not_allocate_per_row() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/binlog-corpus");
    // A MySQL 8.0 binlog (mostly updates) and a MySQL 5.5 sakila load (inserts).
    for name in [
        "rust-us__mysql-cdc-rs__tests__events__8.0__folder__binlog.000693",
        "osheroff__mysql-binlog-connector-java__src__test__resources__mysql-bin.sakila",
    ] {
        let evs = common::events(&std::fs::read(corpus.join(name)).unwrap());
        for (mode, compaction) in [
            (ImageMode::Replica, false),
            (ImageMode::Full, false),
            (ImageMode::Replica, true),
        ] {
            let mut p = Pipeline::new(PipelineConfig {
                mode,
                compaction,
                // Many frames per pass, so that per-frame costs show.
                batch_bytes: 64 << 10,
                keep_frames: false,
                ..PipelineConfig::default()
            })
            .unwrap();
            let mut walker = Walker::new();
            walker.decoder().set_table_hook(Box::new(whole_row_key));
            p.set_file("binlog.000001");
            // Warm-up pass: tables, schemas and buffers settle here.
            for (pos, ev) in &evs {
                walker.process(*pos, ev, &mut p).unwrap();
            }
            p.flush().unwrap();
            let (rows0, frames0) = (p.stats().rows_in, p.stats().frames);
            ALLOCS.store(0, Ordering::Relaxed);
            BYTES.store(0, Ordering::Relaxed);
            COUNTING.with(|c| c.set(true));
            for (pos, ev) in evs.iter().filter(|(_, e)| e[4] != 15) {
                walker.process(*pos, ev, &mut p).unwrap();
            }
            p.flush().unwrap();
            COUNTING.with(|c| c.set(false));
            let (allocs, bytes) = (
                ALLOCS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
            );
            let rows = p.stats().rows_in - rows0;
            let frames = p.stats().frames - frames0;
            let what = format!("{name}, {mode:?}, compaction {compaction}");
            println!("{what}: {rows} rows, {frames} frames, {allocs} allocations, {bytes} bytes");
            assert!(rows > 5_000 && frames >= 5, "{what}: too little to measure");
            // What remains is per frame, not per row: the batch's end position becomes the
            // next one's start and its binlog file name is stored again (2 allocations),
            // and compaction's output batch does the same for its own.
            assert!(
                allocs <= PER_FRAME * frames,
                "{what}: {allocs} allocations ({bytes} bytes) for {rows} rows in {frames} frames"
            );
            assert!(bytes <= 100 * frames, "{what}: {bytes} bytes allocated");
        }
    }
}

//! Steady-state decoding allocates nothing: once table maps are cached, decoding events,
//! iterating rows and reading every value must not touch the heap. Measured with a
//! counting global allocator over real binlogs of the shared corpus.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{DecodeError, EventBuffer, RowIter, RowsEvent, TableInfo};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is
// a relaxed counter increment and a thread-local read, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads every value and renders the ones with a text form into a pre-sized buffer.
struct Reader {
    values: u64,
    text: String,
}

impl Visitor for Reader {
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
        self.values += rows.decode_all(&mut self.text).map_err(err)?.1;
        Ok(())
    }
}

/// Whole events of a file, with their offsets.
fn events(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut buf = EventBuffer::new(0);
    buf.extend(bytes);
    assert!(buf.take_magic().unwrap());
    let mut out = vec![];
    while let Some((pos, ev)) = buf.next_event().unwrap() {
        out.push((pos, ev.to_vec()));
    }
    out
}

#[test]
fn steady_state_decoding_does_not_allocate() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/binlog-corpus");
    let mut total_values = 0;
    // A MySQL 8.0 binlog (v2 rows, many column types) and a MySQL 5.x sakila load.
    for name in [
        "rust-us__mysql-cdc-rs__tests__events__8.0__folder__binlog.000693",
        "osheroff__mysql-binlog-connector-java__src__test__resources__mysql-bin.sakila",
    ] {
        let evs = events(&std::fs::read(corpus.join(name)).unwrap());
        let mut walker = Walker::new();
        let mut v = Reader {
            values: 0,
            text: String::with_capacity(1 << 16),
        };
        // Warm-up pass: FORMAT_DESCRIPTION and TABLE_MAPs are parsed and cached here.
        for (pos, ev) in &evs {
            walker.process(*pos, ev, &mut v).unwrap();
        }
        // Steady state: the same events again, minus the per-file FORMAT_DESCRIPTION.
        v.values = 0;
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for (pos, ev) in evs.iter().filter(|(_, e)| e[4] != 15) {
            walker.process(*pos, ev, &mut v).unwrap();
        }
        COUNTING.with(|c| c.set(false));
        let allocs = ALLOCS.load(Ordering::Relaxed);
        assert!(v.values > 100_000, "{name}: only {} values", v.values);
        assert_eq!(
            allocs, 0,
            "{name}: {allocs} allocations for {} values",
            v.values
        );
        total_values += v.values;
    }
    assert!(total_values > 0);
}

//! A global allocator that counts allocations between [`start`] and [`stop`], shared by the
//! benches that report allocations per row or per event. Each bench installs it with
//! `#[global_allocator] static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations while counting is on; otherwise one relaxed load per call, so timed
/// passes pay next to nothing for it.
pub struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes unchanged to the system allocator; the additions are atomic
// operations on statics, which neither allocate nor touch the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Resets the count and starts counting.
pub fn start() {
    ALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
}

/// Stops counting.
pub fn stop() {
    COUNTING.store(false, Ordering::Relaxed);
}

/// Allocations counted since the last [`start`].
pub fn count() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Bytes requested by the allocations counted since the last [`start`] (a reallocation
/// counts its new size).
#[allow(dead_code)] // Not every bench reports bytes.
pub fn bytes() -> u64 {
    BYTES.load(Ordering::Relaxed)
}

//! A counting global allocator for the fuzz targets: the heap a load holds at its peak, so
//! that a load using more memory than its documented bounds allow fails the input exactly,
//! every time (libFuzzer's `-rss_limit_mb` samples the RSS once a second and misses a short
//! spike; its malloc hooks see single allocations only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most heap one load may hold at once. The bounds (1 MiB a file, 16 MiB a load, 100,000
/// values, 1 MiB of alias copies, 16 MiB of substituted text, 16 MiB of field paths) keep an
/// honest or hostile load to tens of MiB; this leaves room for the structures around them.
pub const MAX_LOAD_HEAP: usize = 256 << 20;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Runs `f`, then panics if the heap grew by more than [`MAX_LOAD_HEAP`] at any point.
pub fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        grew <= MAX_LOAD_HEAP,
        "{what} held {} MiB of heap at its peak, over the {} MiB a bounded load may",
        grew >> 20,
        MAX_LOAD_HEAP >> 20
    );
    out
}

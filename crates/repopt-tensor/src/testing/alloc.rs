//! The largest allocation a piece of code requests, for tests that check a reader never
//! reserves memory its input does not back (a size field read from a damaged header, say).
//!
//! The test binary installs [`TrackingAllocator`] as its global allocator; then
//! [`largest_allocation`] runs a closure and reports the largest single request (allocation
//! or reallocation) made on the calling thread while it ran:
//!
//! ```
//! use repopt_tensor::testing::alloc::{TrackingAllocator, largest_allocation};
//!
//! #[global_allocator]
//! static ALLOC: TrackingAllocator = TrackingAllocator;
//!
//! let (v, largest) = largest_allocation(|| vec![0u8; 5000]);
//! assert!(largest >= 5000 && v.len() == 5000);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // A const-initialised Cell has no destructor, so touching it from inside the allocator
    // never allocates or registers anything.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with` fails only during thread teardown, when nothing is being measured.
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

/// The system allocator, noting the size of every request on the requesting thread.
pub struct TrackingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// extra work only reads a size and updates a thread-local counter.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the largest single allocation request, in bytes,
/// made on this thread while it ran.
///
/// # Panics
///
/// If [`TrackingAllocator`] is not the global allocator, since every measurement would then
/// read 0 and any bound would pass.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    const PROBE: usize = 4099;
    LARGEST.with(|c| c.set(0));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(PROBE)));
    assert!(
        LARGEST.with(Cell::get) >= PROBE,
        "largest_allocation needs `#[global_allocator] static A: TrackingAllocator`"
    );
    LARGEST.with(|c| c.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

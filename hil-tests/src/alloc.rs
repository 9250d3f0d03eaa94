//! A counting global allocator for SAF-010 checks in scenario runs: a test binary registers
//! `#[global_allocator] static A: reflex_hil::alloc::Counting = reflex_hil::alloc::Counting;`
//! and [`counter`] then reads this thread's allocation count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Counts allocations per thread, then defers to the system allocator.
#[derive(Debug)]
pub struct Counting;

static REGISTERED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a thread-local `Cell`
// with a const initializer (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn bump() {
    REGISTERED.store(true, Ordering::Relaxed);
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

fn thread_allocations() -> u64 {
    COUNT.try_with(Cell::get).unwrap_or(0)
}

/// This thread's allocation counter, when [`Counting`] is the global allocator.
pub fn counter() -> Option<fn() -> u64> {
    // Allocate once so a registered allocator has certainly counted something.
    drop(std::hint::black_box(Box::new(0u8)));
    REGISTERED
        .load(Ordering::Relaxed)
        .then_some(thread_allocations as fn() -> u64)
}

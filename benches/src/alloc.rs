//! Heap accounting for the memory figures: a global allocator that counts the bytes Rust
//! code holds, and the C allocator's own totals for what aws-lc (the crypto library under
//! rustls) allocates with `malloc` behind Rust's back.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes currently allocated through it.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping on an atomic counter, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

/// Bytes currently allocated by Rust code (requested sizes, without the allocator's own
/// per-block overhead).
pub fn rust_live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Bytes currently handed out by the C allocator to everyone: Rust code (the system
/// allocator is `malloc`) and C libraries alike, including `malloc`'s per-block overhead.
/// `None` where glibc's `mallinfo2` is not available.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn malloc_in_use() -> Option<usize> {
    // SAFETY: `mallinfo2` takes no arguments, only reads the allocator's statistics and
    // returns them by value.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks + info.hblkhd)
}

/// Bytes currently handed out by the C allocator; not available on this platform.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn malloc_in_use() -> Option<usize> {
    None
}

/// A snapshot of both counters, to measure what a piece of work leaves allocated.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    rust: usize,
    malloc: Option<usize>,
}

/// What stayed allocated between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    /// Bytes held by Rust code (counted by [`Counting`]).
    pub rust: isize,
    /// Bytes held through `malloc` by anything else (C libraries), when known: the C
    /// allocator's growth minus the Rust growth and `malloc`'s overhead on Rust blocks is
    /// not separable, so this includes that overhead.
    pub c: Option<isize>,
}

impl Snapshot {
    /// The counters now.
    pub fn take() -> Self {
        Snapshot {
            rust: rust_live(),
            malloc: malloc_in_use(),
        }
    }

    /// The growth from this snapshot to now.
    pub fn growth(&self) -> Growth {
        let now = Snapshot::take();
        let rust = now.rust as isize - self.rust as isize;
        let c = match (self.malloc, now.malloc) {
            (Some(before), Some(after)) => Some(after as isize - before as isize - rust),
            _ => None,
        };
        Growth { rust, c }
    }
}

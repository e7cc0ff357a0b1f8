//! Whole connections against a real broker: arbitrary byte streams from up to three
//! concurrent clients (with closes, resets, stalled and deaf readers) go through
//! `Broker::serve` and the engine thread. Asserts no panic anywhere (libfuzzer-sys aborts on
//! a panic in any thread, the engine's included; a stack overflow aborts too), a broker that
//! still answers a fresh client afterwards, every connection ending once its client closes,
//! well-formed output, and a bounded peak of heap memory (the counting allocator below). See
//! `connection_logic.rs` for the input layout; `broker/tests/connection_fuzz_corpus.rs`
//! replays the corpus and the crash reproducers in the ordinary test run.
//!
//! Runs on stable Rust (no nightly here): cargo-fuzz with `-s none` (no sanitizer), `-a`
//! (debug assertions and overflow checks), and RUSTC_BOOTSTRAP for the `-Z` flags it passes.
//! From `broker/` (with `-jobs=1` libFuzzer's own log goes to `broker/fuzz-0.log`):
//!
//! ```text
//! cargo install cargo-fuzz
//! mkdir -p /tmp/broker-fuzz-corpus
//! BROKER_FUZZ_SAVE_INPUT=/tmp/broker-fuzz-current RUSTC_BOOTSTRAP=1 nice -n 10 \
//!     cargo fuzz run connection -s none -a /tmp/broker-fuzz-corpus fuzz/corpus/connection -- \
//!     -max_total_time=600 -jobs=1 -print_final_stats=1 -max_len=65536 -timeout=60 \
//!     -rss_limit_mb=4096
//! ```
//!
//! New inputs land in the scratch directory (first on the command line); fold in those that
//! reach new edges (counters off keeps the committed corpus small, so the replay test stays
//! fast) with `RUSTC_BOOTSTRAP=1 cargo fuzz run connection -s none -a fuzz/corpus/connection
//! /tmp/broker-fuzz-corpus -- -merge=1 -use_counters=0 -max_len=65536`. A crash is written to `fuzz/artifacts/connection/`
//! (a stack overflow is not: take `/tmp/broker-fuzz-current`); minimize it with `cargo fuzz
//! tmin connection -s none -a <file>` and keep it in `fuzz/regressions/connection/`.
#![no_main]
// The counting allocator wraps `System` and must be an `unsafe impl`; this crate is outside
// the workspace and its `unsafe_code = "forbid"`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;

#[path = "connection_logic.rs"]
mod connection_logic;

/// Bytes allocated now, through the Rust allocator (every thread, the engine's included).
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The highest `CURRENT` since the last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting.
struct Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the
// counters are plain atomics and never affect the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    // A stack overflow on the engine thread kills the process with SIGSEGV before libFuzzer
    // can write the crashing input (its handler has no alternate stack there): with this set,
    // each input is written to that file first, so the last one is the reproducer.
    if let Some(path) = std::env::var_os("BROKER_FUZZ_SAVE_INPUT") {
        let _ = std::fs::write(path, data);
    }
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    connection_logic::run(data);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let bound = connection_logic::memory_bound(data);
    if std::env::var_os("BROKER_FUZZ_PEAKS").is_some() {
        eprintln!("peak {peak} bound {bound} len {}", data.len());
    }
    assert!(
        peak <= bound,
        "peak heap {peak} bytes over the bound {bound} for a {}-byte input",
        data.len()
    );
});

//! Parser and routing micro-benchmarks: the per-message work of the hot path without sockets.
//! `cargo bench --bench hot_path`.
//!
//! `call` is what the proxy does for one call of the SIPp bench (`bench/run.sh`): INVITE, 100,
//! 180, 200, ACK, BYE, 200, UDP in and out, each parsed, validated, routed and rewritten.
//! The same call through the whole handler, with and without the metrics, is `benches/handler.rs`
//! (a binary of its own, so that this one's code and its figures stay as they were).
//! For instruction counts, `HOT_PATH_CALLS=N` skips criterion and runs `call` N times:
//! `HOT_PATH_CALLS=100000 perf stat -e instructions:u target/release/deps/hot_path-<hash>`.

#![allow(clippy::unwrap_used)] // a benchmark of fixed inputs: a failure is a bug to see at once
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use roundabout::sip::{Message, Transport};
use roundabout::transport::FlowKey;

mod common;
use common::{forward, router, Call, INVITE};

fn hot_path(c: &mut Criterion) {
    let invite = Bytes::from_static(INVITE);
    let source = FlowKey {
        transport: Transport::Udp,
        remote: "127.0.0.3:5070".parse().unwrap(),
    };
    let router = router(Transport::Tcp);
    let rewriter = router.rewriter();
    let mut group = c.benchmark_group("invite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| Message::parse(black_box(invite.clone())).unwrap());
    });
    group.bench_function("parse_validate_route_rewrite", |b| {
        b.iter(|| forward(&router, &rewriter, black_box(&invite), source));
    });
    group.finish();
    let call = Call::new();
    let mut group = c.benchmark_group("call");
    group.throughput(Throughput::Elements(call.messages.len() as u64));
    group.bench_function("udp_to_udp", |b| b.iter(|| call.forward_all()));
    group.finish();
}

/// Counts heap allocations, so the cost of the hot path in allocations is a number, not a guess.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations (and reallocations) of parse → validate → route → rewrite for one INVITE,
/// UDP in, TCP out: the figure the README quotes.
fn allocations_per_forwarded_invite() -> usize {
    let invite = Bytes::from_static(INVITE);
    let source = FlowKey {
        transport: Transport::Udp,
        remote: "127.0.0.3:5070".parse().unwrap(),
    };
    let router = router(Transport::Tcp);
    let rewriter = router.rewriter();
    let forward_once = || {
        black_box(forward(&router, &rewriter, &invite, source));
    };
    forward_once();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    forward_once();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

criterion_group!(benches, hot_path);

fn main() {
    if let Some(calls) = std::env::var("HOT_PATH_CALLS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let call = Call::new();
        for _ in 0..calls {
            call.forward_all();
        }
        return;
    }
    println!(
        "allocations per forwarded INVITE (parse, validate, route, rewrite): {}",
        allocations_per_forwarded_invite()
    );
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! The time from receiving a message to handing each message it causes to a transport, while
//! the proxy handles it (the forwarding path: parse, route, rewrite, send). What is sent later
//! (after a host name is resolved, a transaction's retransmissions) is not timed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the buckets, in microseconds; one more bucket takes the rest.
pub(super) const BOUNDS_MICROS: [u64; 12] = [
    5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000,
];

thread_local! {
    /// When the message the proxy is handling on this thread arrived. The proxy handles a
    /// message without yielding, so what it sends meanwhile on this thread is caused by it.
    static RECEIVED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

#[derive(Debug, Default)]
pub(super) struct Latency {
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    /// A message arrived and is handed to the proxy.
    pub(super) fn received() {
        RECEIVED_AT.set(Some(Instant::now()));
    }

    /// The proxy is done with it.
    pub(super) fn handled() {
        RECEIVED_AT.set(None);
    }

    /// A message was handed to a transport: timed if the proxy sent it while handling one.
    pub(super) fn sent(&self) {
        if let Some(at) = RECEIVED_AT.get() {
            self.observe(at.elapsed());
        }
    }

    fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and each bucket's own count with its upper bound in
    /// seconds (`f64::MAX` for the last, which `prometheus-client` writes as `+Inf`).
    pub(super) fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let bounds = BOUNDS_MICROS
            .iter()
            .map(|&micros| Duration::from_micros(micros).as_secs_f64())
            .chain([f64::MAX]);
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        (sum, counts.iter().sum(), bounds.zip(counts).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_time_lands_in_the_first_bucket_that_holds_it() {
        let latency = Latency::default();
        for micros in [3, 5, 6, 49, 50, 70_000] {
            latency.observe(Duration::from_micros(micros));
        }
        let (sum, count, buckets) = latency.read();
        assert_eq!(count, 6);
        assert!((sum - 0.070_113).abs() < 1e-9, "{sum}");
        let counts: Vec<u64> = buckets.iter().map(|&(_, n)| n).collect();
        assert_eq!(counts, [2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(buckets[0].0, 0.000_005);
        assert_eq!(buckets[12].0, f64::MAX);
    }

    #[test]
    fn only_what_is_sent_while_a_message_is_handled_is_timed() {
        let latency = Latency::default();
        latency.sent();
        Latency::received();
        latency.sent();
        latency.sent();
        Latency::handled();
        latency.sent();
        assert_eq!(latency.read().1, 2);
    }
}

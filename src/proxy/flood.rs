//! Flood limits. Per source: a token bucket per IP address, so one scanner or broken phone
//! cannot take the proxy's time from everyone else; trusted servers are exempt (a trunk carries
//! many users' traffic from one address). Overall: a cap on new requests per second, above
//! which new work is refused with 503 so calls already up keep their in-dialog requests and
//! responses flowing. Time is passed in.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Source addresses tracked at most. Beyond this (a spoofed-source UDP flood), addresses with a
/// full bucket are swept first; if none can go, new sources pass unlimited rather than locking
/// out legitimate ones, since spoofed traffic cannot be told apart anyway.
const MAX_SOURCES: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct SourceLimiter {
    /// Tokens per second; 0 disables the limit.
    rate: f64,
    burst: f64,
    buckets: DashMap<IpAddr, Bucket>,
    max_sources: usize,
}

impl SourceLimiter {
    /// `rate` messages per second per source, bursts of `2 × rate`; `0` never limits.
    #[must_use]
    pub fn new(rate: u32) -> SourceLimiter {
        SourceLimiter::with_capacity(rate, MAX_SOURCES)
    }

    fn with_capacity(rate: u32, max_sources: usize) -> SourceLimiter {
        SourceLimiter {
            rate: f64::from(rate),
            burst: 2.0 * f64::from(rate),
            buckets: DashMap::new(),
            max_sources,
        }
    }

    /// Whether one more message from `ip` may be processed now.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if let Some(mut bucket) = self.buckets.get_mut(&ip) {
            return self.take(&mut bucket, now);
        }
        if self.buckets.len() >= self.max_sources && self.sweep(now) == 0 {
            return true;
        }
        let mut bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        self.take(&mut bucket, now)
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose bucket has refilled (they would start full anyway); returns how
    /// many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let refill = Duration::from_secs_f64(if self.rate > 0.0 {
            self.burst / self.rate
        } else {
            0.0
        });
        let before = self.buckets.len();
        self.buckets
            .retain(|_, bucket| now.saturating_duration_since(bucket.last) < refill);
        before - self.buckets.len()
    }

    #[must_use]
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

/// The overall cap on new (out-of-dialog) requests per second.
#[derive(Debug)]
pub struct OverloadGuard {
    /// New requests per second; 0 disables the guard.
    max: u64,
    epoch: Instant,
    /// The current one-second window (seconds since `epoch`) in the high 32 bits, the requests
    /// counted in it in the low 32: one atomic word, so no lock on the hot path.
    window: AtomicU64,
}

impl OverloadGuard {
    #[must_use]
    pub fn new(max_per_second: u32) -> OverloadGuard {
        OverloadGuard {
            max: u64::from(max_per_second),
            epoch: Instant::now(),
            window: AtomicU64::new(0),
        }
    }

    /// Whether one more new request may start now.
    pub fn admit(&self, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let second = now.saturating_duration_since(self.epoch).as_secs() & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 == second {
                if current & 0xffff_ffff >= self.max {
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn passed(limiter: &SourceLimiter, ip: IpAddr, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| limiter.allow(ip, now)).count()
    }

    #[test]
    fn burst_then_rate_per_source() {
        let limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        assert_eq!(passed(&limiter, A, 100, t0), 20, "burst of 2 × rate");
        // Another source is not affected by A's flood.
        assert_eq!(passed(&limiter, B, 5, t0), 5);
        // Half a second later A has earned 5 more.
        assert_eq!(passed(&limiter, A, 100, t0 + Duration::from_millis(500)), 5);
        // After a quiet spell the bucket is full again, never fuller.
        assert_eq!(passed(&limiter, A, 100, t0 + Duration::from_secs(60)), 20);
    }

    #[test]
    fn overload_guard_caps_each_second() {
        let guard = OverloadGuard::new(100);
        let t0 = guard.epoch;
        let admitted = |at: Instant| (0..1000).filter(|_| guard.admit(at)).count();
        assert_eq!(admitted(t0), 100);
        assert_eq!(admitted(t0 + Duration::from_millis(900)), 0, "same second");
        assert_eq!(
            admitted(t0 + Duration::from_millis(1100)),
            100,
            "next second"
        );
        let off = OverloadGuard::new(0);
        assert_eq!((0..1000).filter(|_| off.admit(t0)).count(), 1000);
    }

    #[test]
    fn zero_rate_never_limits_and_tracks_nothing() {
        let limiter = SourceLimiter::new(0);
        let now = Instant::now();
        assert_eq!(passed(&limiter, A, 10_000, now), 10_000);
        assert_eq!(limiter.sources(), 0);
    }

    #[test]
    fn sources_are_bounded_and_swept() {
        let limiter = SourceLimiter::with_capacity(10, 4);
        let t0 = Instant::now();
        for last in 1..=4u8 {
            assert!(limiter.allow(IpAddr::from([198, 51, 100, last]), t0));
        }
        assert_eq!(limiter.sources(), 4);
        // Full and nothing refilled yet: a new source passes but is not tracked.
        assert!(limiter.allow(B, t0));
        assert_eq!(limiter.sources(), 4);
        // Two seconds on every bucket has refilled: sweeping makes room.
        assert!(limiter.allow(A, t0 + Duration::from_secs(3)));
        assert_eq!(limiter.sources(), 1);
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(10)), 1);
    }
}

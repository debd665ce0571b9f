//! Flood limits. Per source: a token bucket per IP address, so one scanner or broken phone
//! cannot take the proxy's time from everyone else; trusted servers are exempt (a trunk carries
//! many users' traffic from one address). Overall: a cap on new requests per second, above
//! which new work is refused with 503 so calls already up keep their in-dialog requests and
//! responses flowing. Time is passed in.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Source addresses tracked at most. When the table is full (a spoofed-source UDP flood), a
/// clock hand goes round the tracked sources in the order they came: a source whose bucket has
/// refilled is forgotten (its bucket would start full anyway) and its place goes to the new
/// one; a source heard from within its refill time gets a second chance. The hand looks at
/// [`CLOCK_STEPS`] sources at most, so a full table costs the same few steps per new source
/// instead of a sweep of the whole table. If none of them can go, the new source passes
/// untracked rather than locking out legitimate ones, since spoofed traffic cannot be told
/// apart anyway. While spoofed sources come slower than the table holds per refill time
/// (32,768 a second at the default 2 s), the oldest of them can always go, so every new
/// source, a real flooder's too, is tracked and limited.
const MAX_SOURCES: usize = 65_536;
/// Sources the clock hand looks at for one new source when the table is full.
const CLOCK_STEPS: usize = 8;
/// Sources the periodic sweep looks at: a full table is forgotten over a few minutes of
/// sweeps once a flood is over, with the lock held for microseconds per sweep.
const SWEEP_STEPS: usize = 4096;

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
    /// How long an idle bucket takes to fill up: after that, forgetting it loses nothing.
    refill: Duration,
    buckets: DashMap<IpAddr, Bucket>,
    /// The tracked sources in the order the clock hand visits them. Sources are added and
    /// removed only under this lock, so it holds exactly the keys of `buckets`; a message from
    /// a source already tracked never takes it.
    ring: Mutex<VecDeque<IpAddr>>,
    max_sources: usize,
}

impl SourceLimiter {
    /// `rate` messages per second per source, bursts of `2 × rate`; `0` never limits.
    #[must_use]
    pub fn new(rate: u32) -> SourceLimiter {
        SourceLimiter::with_capacity(rate, MAX_SOURCES)
    }

    fn with_capacity(rate: u32, max_sources: usize) -> SourceLimiter {
        let burst = 2.0 * f64::from(rate);
        SourceLimiter {
            rate: f64::from(rate),
            burst,
            refill: Duration::from_secs_f64(if rate > 0 {
                burst / f64::from(rate)
            } else {
                0.0
            }),
            buckets: DashMap::new(),
            ring: Mutex::new(VecDeque::new()),
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
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        // Tracked meanwhile by another message from the same source.
        if let Some(mut bucket) = self.buckets.get_mut(&ip) {
            return self.take(&mut bucket, now);
        }
        if ring.len() >= self.max_sources && self.clock(&mut ring, now, CLOCK_STEPS) == 0 {
            return true;
        }
        let mut bucket = Bucket {
            tokens: self.burst,
            last: now,
        };
        let allowed = self.take(&mut bucket, now);
        self.buckets.insert(ip, bucket);
        ring.push_back(ip);
        allowed
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

    /// Moves the clock hand `steps` sources on: those whose bucket has refilled are forgotten,
    /// the others go to the back of the ring. Returns how many went.
    fn clock(&self, ring: &mut VecDeque<IpAddr>, now: Instant, steps: usize) -> usize {
        let mut forgotten = 0;
        for _ in 0..steps.min(ring.len()) {
            let Some(ip) = ring.pop_front() else { break };
            let refilled = |_: &IpAddr, bucket: &Bucket| {
                now.saturating_duration_since(bucket.last) >= self.refill
            };
            if self.buckets.remove_if(&ip, refilled).is_some() {
                forgotten += 1;
            } else {
                ring.push_back(ip);
            }
        }
        forgotten
    }

    /// Forgets sources whose bucket has refilled, a bounded number per call; returns how many
    /// went.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        self.clock(&mut ring, now, SWEEP_STEPS)
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

    /// The clock hand on a full table of three: (second, source, allowed, sources tracked).
    /// A source heard from within its refill time (2 s) gets a second chance; refilled ones
    /// make room; with every tracked source active a new one passes untracked.
    #[test]
    fn a_full_table_forgets_refilled_sources_first() {
        let limiter = SourceLimiter::with_capacity(1, 3);
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::from([198, 51, 100, n]);
        let steps = [
            (0.0, 1, true, 1),
            (0.0, 2, true, 2),
            (0.0, 3, true, 3),
            (1.5, 1, true, 3),
            (1.5, 1, true, 3), // 1's bucket is empty now
            (1.9, 4, true, 3), // nobody refilled: 4 passes untracked
            (1.9, 4, true, 3), // ... every time
            (2.5, 4, true, 2), // 2 and 3 refilled and went, 1 got its second chance
            (2.5, 1, true, 2), // 1 kept its bucket: the one token earned since 1.5 s
            (2.5, 1, false, 2),
            (2.5, 5, true, 3),
        ];
        for (n, (at, source, allowed, tracked)) in steps.into_iter().enumerate() {
            let now = t0 + Duration::from_secs_f64(at);
            assert_eq!(limiter.allow(ip(source), now), allowed, "step {n}");
            assert_eq!(limiter.sources(), tracked, "step {n}");
        }
    }

    /// A spoofed flood on a full table of real size costs a few steps per datagram: 20,000 new
    /// sources, every tracked one still active, pass in well under a second even in a debug
    /// build (about 0.16 s; a sweep of the whole table per new source took 5 ms each).
    #[test]
    fn new_sources_on_a_full_table_cost_constant_time() {
        let limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        for n in 0..MAX_SOURCES as u32 {
            assert!(limiter.allow(IpAddr::from((10 << 24 | n).to_be_bytes()), t0));
        }
        let started = Instant::now();
        for n in 0..20_000u32 {
            assert!(limiter.allow(IpAddr::from((11 << 24 | n).to_be_bytes()), t0));
        }
        let spent = started.elapsed();
        assert_eq!(limiter.sources(), MAX_SOURCES);
        assert!(spent < Duration::from_secs(1), "{spent:?}");
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

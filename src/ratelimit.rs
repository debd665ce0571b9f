//! Rate-limited warnings: a remote peer that can trigger a log line must not be able to flood
//! the log with it. At most one line per second per limiter; the rest are counted and reported
//! with the next line that gets through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct LogLimiter {
    /// Milliseconds since the process epoch of the last line let through, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    #[must_use]
    pub const fn new() -> LogLimiter {
        LogLimiter {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now, else `None`.
    pub fn allow(&self) -> Option<u64> {
        let now = epoch_millis() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

fn epoch_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `warn!` through a static [`LogLimiter`] for this call site.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::ratelimit::LogLimiter = $crate::ratelimit::LogLimiter::new();
        if let Some(suppressed) = LIMITER.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second() {
        let limiter = LogLimiter::new();
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);
    }
}

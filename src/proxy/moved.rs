//! The INVITEs `-udp-mtu` moved off UDP, remembered so that their CANCEL and the ACK of a
//! non-2xx answer, small enough for UDP themselves, follow them: a CANCEL goes where its
//! INVITE went with the same Via (RFC 3261 §9.1), and so does that ACK (§17.1.1.3), or the
//! server does not match them to the INVITE. Bounded in number and in time; only made with
//! `-udp-mtu`.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// INVITEs remembered at once; beyond this the oldest is forgotten first.
const MAX_MOVED: usize = 4096;
/// How long a CANCEL may follow: longer than an INVITE waits for its final answer (Timer C,
/// more than 3 minutes, RFC 3261 §16.6 step 11).
const KEEP: Duration = Duration::from_secs(240);

/// Moved INVITEs by their server-transaction identity (what their CANCEL and ACK share).
#[derive(Debug, Default)]
pub struct MovedInvites {
    inner: Mutex<Moved>,
}

#[derive(Debug, Default)]
struct Moved {
    /// In the order they were moved, each with when.
    order: VecDeque<(Instant, u64)>,
    keys: HashSet<u64>,
}

impl Moved {
    fn forget_expired(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_duration_since(at) < KEEP && self.order.len() <= MAX_MOVED {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&key);
        }
    }
}

impl MovedInvites {
    /// An INVITE was moved off UDP (its retransmissions again: remembered once).
    pub fn remember(&self, key: u64, now: Instant) {
        let mut moved = self.lock();
        if moved.keys.insert(key) {
            moved.order.push_back((now, key));
        }
        moved.forget_expired(now);
    }

    /// Whether the INVITE of a CANCEL or ACK with this server-transaction identity was moved.
    #[must_use]
    pub fn contains(&self, key: u64, now: Instant) -> bool {
        let mut moved = self.lock();
        moved.forget_expired(now);
        moved.keys.contains(&key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Moved> {
        // The set stays consistent whatever panicked while it was held.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_invite_is_found_until_it_expires() {
        let moved = MovedInvites::default();
        let start = Instant::now();
        moved.remember(7, start);
        assert!(moved.contains(7, start + KEEP - Duration::from_secs(1)));
        assert!(!moved.contains(8, start));
        assert!(!moved.contains(7, start + KEEP));
    }

    #[test]
    fn a_retransmission_does_not_renew_it_and_the_oldest_goes_first_when_full() {
        let moved = MovedInvites::default();
        let start = Instant::now();
        moved.remember(1, start);
        moved.remember(1, start + Duration::from_secs(100));
        assert!(!moved.contains(1, start + KEEP));
        for key in 0..=MAX_MOVED as u64 {
            moved.remember(key, start);
        }
        assert!(!moved.contains(0, start));
        assert!(moved.contains(1, start));
        assert!(moved.contains(MAX_MOVED as u64, start));
        assert_eq!(moved.lock().order.len(), MAX_MOVED);
    }
}

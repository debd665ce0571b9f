//! Counts of what the proxy decided, for `-metrics-addr`: requests forwarded, answered by
//! Roundabout, refused, undelivered, and messages dropped. Kept only when the metrics are on
//! ([`Counting::On`]); off, each count is one untaken branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The status codes of Roundabout's own answers that are counted by code; any other is
/// counted as [`ANSWERED_OTHER`].
pub const ANSWER_CODES: [u16; 14] = [
    100, 200, 400, 403, 404, 408, 416, 420, 480, 481, 482, 483, 500, 503,
];
/// Where answers with a code not in [`ANSWER_CODES`] are counted.
pub const ANSWERED_OTHER: usize = ANSWER_CODES.len();

/// How a request was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Stateless,
    /// With a client transaction (a reliable transport to UDP).
    Stateful,
}

impl Path {
    pub const ALL: [Path; 2] = [Path::Stateless, Path::Stateful];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Stateless => "stateless",
            Path::Stateful => "stateful",
        }
    }
}

/// Why a message got no answer and went nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Over `-rate-limit` from its source: dropped before parsing.
    RateLimited,
    /// Not a SIP message that can be answered.
    Malformed,
    /// A response that answers nothing Roundabout sent, or comes from elsewhere.
    Forged,
    /// Nowhere to go: a response not for Roundabout, an ACK with Max-Forwards 0.
    Unroutable,
    /// An answer of Roundabout's own that would be larger than the request, to a UDP source
    /// that is no trusted server (it could amplify a flood with a forged source).
    Amplifying,
    /// The transport did not take a response: its flow is gone or its send queue is full.
    NotSent,
}

impl Dropped {
    pub const ALL: [Dropped; 6] = [
        Dropped::RateLimited,
        Dropped::Malformed,
        Dropped::Forged,
        Dropped::Unroutable,
        Dropped::Amplifying,
        Dropped::NotSent,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::RateLimited => "rate_limit",
            Dropped::Malformed => "malformed",
            Dropped::Forged => "forged",
            Dropped::Unroutable => "unroutable",
            Dropped::Amplifying => "amplifying",
            Dropped::NotSent => "not_sent",
        }
    }
}

/// Why a new request was refused (answered 503) before it was routed or forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over `-max-new-requests`.
    Overload,
    /// Roundabout is shutting down.
    Draining,
    /// A REGISTER of a new user with the client cache full (`-client-cache-size`).
    ClientCacheFull,
    /// Too many host names being resolved at once.
    ResolveLimit,
    /// `-max-transactions` reached.
    TransactionLimit,
}

impl Refused {
    pub const ALL: [Refused; 5] = [
        Refused::Overload,
        Refused::Draining,
        Refused::ClientCacheFull,
        Refused::ResolveLimit,
        Refused::TransactionLimit,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Overload => "overload",
            Refused::Draining => "draining",
            Refused::ClientCacheFull => "client_cache_full",
            Refused::ResolveLimit => "resolve_limit",
            Refused::TransactionLimit => "transaction_limit",
        }
    }
}

/// Why a request could not be delivered to its next hop, and what answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The client's flow is gone and cannot be dialled: 480.
    FlowGone,
    /// The transport refused it or could not connect: 503 (RFC 3261 §16.9).
    NotSent,
}

impl Undelivered {
    pub const ALL: [Undelivered; 2] = [Undelivered::FlowGone, Undelivered::NotSent];

    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Undelivered::FlowGone => 480,
            Undelivered::NotSent => 503,
        }
    }
}

/// The counts, since start.
#[derive(Debug, Default)]
pub struct Decisions {
    forwarded: [AtomicU64; Path::ALL.len()],
    answered: [AtomicU64; ANSWER_CODES.len() + 1],
    dropped: [AtomicU64; Dropped::ALL.len()],
    refused: [AtomicU64; Refused::ALL.len()],
    undelivered: [AtomicU64; Undelivered::ALL.len()],
}

impl Decisions {
    #[must_use]
    pub fn forwarded(&self, path: Path) -> u64 {
        load(&self.forwarded[path as usize])
    }

    /// Answers of Roundabout's own, by index into [`ANSWER_CODES`] ([`ANSWERED_OTHER`] for
    /// any other code).
    #[must_use]
    pub fn answered(&self, index: usize) -> u64 {
        self.answered.get(index).map_or(0, load)
    }

    #[must_use]
    pub fn dropped(&self, reason: Dropped) -> u64 {
        load(&self.dropped[reason as usize])
    }

    #[must_use]
    pub fn refused(&self, reason: Refused) -> u64 {
        load(&self.refused[reason as usize])
    }

    #[must_use]
    pub fn undelivered(&self, reason: Undelivered) -> u64 {
        load(&self.undelivered[reason as usize])
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where the proxy counts its decisions: nowhere unless the metrics are on.
#[derive(Clone, Debug, Default)]
pub enum Counting {
    #[default]
    Off,
    On(Arc<Decisions>),
}

impl Counting {
    pub(super) fn forwarded(&self, path: Path) {
        if let Counting::On(counts) = self {
            bump(&counts.forwarded[path as usize]);
        }
    }

    pub(super) fn answered(&self, code: u16) {
        if let Counting::On(counts) = self {
            let index = ANSWER_CODES
                .iter()
                .position(|&counted| counted == code)
                .unwrap_or(ANSWERED_OTHER);
            bump(&counts.answered[index]);
        }
    }

    pub(super) fn dropped(&self, reason: Dropped) {
        if let Counting::On(counts) = self {
            bump(&counts.dropped[reason as usize]);
        }
    }

    pub(super) fn refused(&self, reason: Refused) {
        if let Counting::On(counts) = self {
            bump(&counts.refused[reason as usize]);
        }
    }

    pub(super) fn undelivered(&self, reason: Undelivered) {
        if let Counting::On(counts) = self {
            bump(&counts.undelivered[reason as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_their_code_or_as_other() {
        let counts = Arc::new(Decisions::default());
        let counting = Counting::On(Arc::clone(&counts));
        counting.answered(503);
        counting.answered(503);
        counting.answered(100);
        counting.answered(599);
        let index = |code| ANSWER_CODES.iter().position(|&c| c == code).unwrap();
        assert_eq!(counts.answered(index(503)), 2);
        assert_eq!(counts.answered(index(100)), 1);
        assert_eq!(counts.answered(ANSWERED_OTHER), 1);
        assert_eq!(counts.answered(index(480)), 0);
    }
}

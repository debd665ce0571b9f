//! Transactions for requests that leave a reliable transport for UDP.
//!
//! Stateless where the transports allow, transaction-stateful where a reliable leg meets UDP:
//! a UA on TCP, TLS, WS or WSS never retransmits (RFC 3261 §17.1.1.2, §17.1.2.2), so a request
//! it sends that Roundabout forwards over UDP gets a client transaction on the UDP leg — Timers
//! A/B (INVITE) or E/F (non-INVITE), 408 upstream on timeout, the ACK of a non-2xx generated
//! here, retransmitted finals absorbed — and the incoming flow is its server transaction
//! (RFC 3261 §16.6–16.10, §17). Everything else stays stateless (RFC 3261 §16 lets a proxy
//! choose per request): over UDP the sender retransmits, between reliable transports nothing is
//! lost.
//!
//! The table is pure state: it is told of requests, responses and the time, and answers with
//! what must be sent. One lock guards it; nothing awaits while holding it. Timers are a heap of
//! wake-ups with lazy deletion served by one task, not a task per transaction (`timers`);
//! `cancel` cancels INVITEs for the caller, for a caller gone, and at shutdown.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{SipTimers, TransactionLimits};
use crate::sip::{reply, Encoded, Message, Method, Transport};
use crate::transport::{ConnectionId, Destination, FlowKey};

use super::branch::Branch;
use super::status::Status;

mod cancel;
mod timers;

impl SipTimers {
    /// Timers B and F, and the wait for a final answer after a CANCEL (RFC 3261 §9.1).
    fn timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: long enough to absorb every retransmission of a non-2xx final (> 32 s).
    fn timer_d(&self) -> Duration {
        self.timeout().max(Duration::from_secs(32))
    }
}

/// The per-request choice of RFC 3261 §16: a transaction only where a request leaves a
/// reliable transport for UDP. An ACK never has one (the ACK of a 2xx is end to end; the ACK of
/// a non-2xx belongs to the INVITE's transaction).
#[must_use]
pub fn needs_transaction(method: Option<Method>, ingress: Transport, egress: Transport) -> bool {
    ingress.is_stream() && egress == Transport::Udp && method != Some(Method::Ack)
}

/// INVITE and non-INVITE transactions run different machines (RFC 3261 §17.1.1, §17.1.2); a
/// CANCEL has the branch of the INVITE it cancels and a transaction of its own (§9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Invite,
    Cancel,
    NonInvite,
}

impl Kind {
    #[must_use]
    pub fn of(method: Method) -> Kind {
        match method {
            Method::Invite => Kind::Invite,
            Method::Cancel => Kind::Cancel,
            _ => Kind::NonInvite,
        }
    }
}

/// A client transaction: Roundabout's branch and the kind of its request (RFC 3261 §17.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub branch: Branch,
    pub kind: Kind,
}

/// What became of a request offered to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    /// The same request again (its transaction exists): nothing is sent.
    Retransmission,
    /// A CANCEL for an INVITE Roundabout has cancelled itself already (Timer C, the caller's
    /// flow gone): the caller's CANCEL is answered, nothing more is sent (RFC 3261 §9.2).
    CancelledAlready,
    /// At the transaction limit: the request is refused.
    Full,
}

/// A message the table asks to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Send {
    /// To the next hop on the UDP leg: a retransmission, an ACK, a CANCEL.
    Downstream(Destination, Encoded),
    /// Upstream, as if the next hop had answered `status`: the answer is built from `request`
    /// (as forwarded, Roundabout's Via on top) and goes back to `upstream`.
    Answer {
        request: Encoded,
        from: FlowKey,
        upstream: Destination,
        status: Status,
    },
}

/// A response matched to its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// Where the response goes on, or `None` when it is absorbed.
    pub forward_to: Option<Destination>,
    pub send: Vec<Send>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseMatch {
    /// Not a response to a transaction (stateless, or its state is gone): handled statelessly.
    NoTransaction,
    /// The branch is one of a transaction, but the response does not come from where the
    /// request went: forged.
    WrongSource,
    Matched(Matched),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No response yet (INVITE "Calling", non-INVITE "Trying").
    Calling,
    Proceeding,
    /// A final response came (INVITE: a non-2xx); kept to absorb its retransmissions.
    Completed,
}

/// Who answers upstream for the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A request from upstream: its responses go back there.
    Upstream,
    /// A CANCEL Roundabout sent itself (RFC 3261 §16.10): upstream already got its 200.
    Own,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancelling {
    No,
    /// CANCEL asked for before any provisional response: sent when one comes (RFC 3261 §9.1).
    Pending,
    Sent,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    state: State,
    origin: Origin,
    /// The request as forwarded, while it may be retransmitted or answered for.
    request: Option<Encoded>,
    dest: Destination,
    /// The flow (and connection) the request came in on.
    upstream: Destination,
    server_key: Option<u64>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    deadline: Instant,
    /// INVITE, completed: the ACK of the non-2xx, sent again for each retransmission of it.
    ack: Option<Encoded>,
    cancelling: Cancelling,
    /// Tells this entry's current wake-up from stale ones in the heap.
    generation: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.request.as_ref().map_or(0, Encoded::len) + self.ack.as_ref().map_or(0, Encoded::len)
    }

    fn wake(&self) -> Instant {
        self.retransmit_at
            .map_or(self.deadline, |at| at.min(self.deadline))
    }

    /// Upstream's answer `status` for the next hop, while the request is kept to build it.
    fn answer(&self, status: Status) -> Option<Send> {
        self.request.clone().map(|request| Send::Answer {
            request,
            from: self.dest.flow,
            upstream: self.upstream.clone(),
            status,
        })
    }

    /// The CANCEL of the kept request (RFC 3261 §9.1).
    fn cancel_request(&self) -> Option<Encoded> {
        let request = Message::parse_own(self.request.as_ref()?.to_contiguous()).ok()?;
        Some(reply::cancel_for(&request))
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// INVITE transactions by their server-transaction identity (RFC 3261 §17.2.3), for the
    /// CANCEL and the ACK that follow from upstream.
    by_server: HashMap<u64, Key>,
    /// INVITE transactions by the connection they came in on: when it closes they are
    /// cancelled, or the callee would ring for nobody until Timer C.
    by_upstream: HashMap<ConnectionId, Vec<Key>>,
    wakeups: BinaryHeap<Reverse<(Instant, Key, u64)>>,
    bytes: usize,
    generation: u64,
}

/// The transaction table and what its timer task waits on.
#[derive(Debug)]
pub struct Transactions {
    table: Mutex<Table>,
    /// Entries, readable without the lock: an empty table costs the stateless paths nothing.
    len: AtomicUsize,
    /// Wakes the timer task when a wake-up earlier than all others is scheduled.
    earlier: Notify,
    timers: SipTimers,
    limits: TransactionLimits,
    /// Client transactions that ended with no final response (Timers B, F and C).
    timed_out: AtomicU64,
}

impl Transactions {
    #[must_use]
    pub fn new(timers: SipTimers, limits: TransactionLimits) -> Transactions {
        Transactions {
            table: Mutex::new(Table::default()),
            len: AtomicUsize::new(0),
            earlier: Notify::new(),
            timers,
            limits,
            timed_out: AtomicU64::new(0),
        }
    }

    /// Client transactions that timed out with no final response, since start.
    #[must_use]
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// The table holds no borrowed data across a panic, so a poisoned lock is still usable.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of messages the transactions keep.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.table().bytes
    }

    /// A request from `upstream`, forwarded as `request` to `dest` (over UDP). `server_key`
    /// identifies it as a server transaction (INVITE only).
    pub fn start(
        &self,
        key: Key,
        request: Encoded,
        dest: Destination,
        upstream: Destination,
        server_key: Option<u64>,
        now: Instant,
    ) -> Start {
        let mut table = self.table();
        if let Some(existing) = table.entries.get(&key) {
            return match existing.origin {
                Origin::Upstream => Start::Retransmission,
                Origin::Own => Start::CancelledAlready,
            };
        }
        if table.entries.len() >= self.limits.max
            || table.bytes + request.len() > self.limits.max_bytes
        {
            return Start::Full;
        }
        let entry = self.entry(key.kind, Origin::Upstream, request, dest, upstream, now);
        if let Some(server_key) = server_key {
            table.by_server.insert(server_key, key);
        }
        if let (Kind::Invite, Some(connection)) = (key.kind, entry.upstream.connection) {
            table.by_upstream.entry(connection).or_default().push(key);
        }
        let entry = Entry {
            server_key,
            ..entry
        };
        self.insert(&mut table, key, entry);
        Start::Started
    }

    fn entry(
        &self,
        kind: Kind,
        origin: Origin,
        request: Encoded,
        dest: Destination,
        upstream: Destination,
        now: Instant,
    ) -> Entry {
        let t1 = self.timers.t1;
        Entry {
            kind,
            state: State::Calling,
            origin,
            request: Some(request),
            dest,
            upstream,
            server_key: None,
            interval: t1,
            retransmit_at: Some(now + t1),
            deadline: now + self.timers.timeout(),
            ack: None,
            cancelling: Cancelling::No,
            generation: 0,
        }
    }

    fn insert(&self, table: &mut Table, key: Key, entry: Entry) {
        table.bytes += entry.bytes();
        table.entries.insert(key, entry);
        self.len.store(table.entries.len(), Ordering::Relaxed);
        self.schedule(table, key);
    }

    /// Forgets a transaction whose request could not be sent after all.
    pub fn remove(&self, key: Key) {
        let mut table = self.table();
        self.remove_entry(&mut table, key);
    }

    fn remove_entry(&self, table: &mut Table, key: Key) -> Option<Entry> {
        let entry = table.entries.remove(&key)?;
        table.bytes -= entry.bytes();
        // Only if they still name this transaction: another one may have taken the identity
        // since (the same request routed elsewhere).
        if let Some(server_key) = entry.server_key {
            if table.by_server.get(&server_key) == Some(&key) {
                table.by_server.remove(&server_key);
            }
        }
        if let (Kind::Invite, Some(connection)) = (key.kind, entry.upstream.connection) {
            if let Some(keys) = table.by_upstream.get_mut(&connection) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    table.by_upstream.remove(&connection);
                }
            }
        }
        self.len.store(table.entries.len(), Ordering::Relaxed);
        Some(entry)
    }

    /// A response whose top Via carries a stateful branch of ours. `from_responder` says
    /// whether the response may come from where the transaction's request went.
    pub fn on_response(
        &self,
        key: Key,
        response: &Message,
        from_responder: impl Fn(&FlowKey) -> bool,
        now: Instant,
    ) -> ResponseMatch {
        let Some(code) = response.status_code() else {
            return ResponseMatch::NoTransaction;
        };
        let mut table = self.table();
        let Some(entry) = table.entries.get_mut(&key) else {
            return ResponseMatch::NoTransaction;
        };
        if !from_responder(&entry.dest.flow) {
            return ResponseMatch::WrongSource;
        }
        let before = entry.bytes();
        let mut send = Vec::new();
        let mut forward = entry.origin == Origin::Upstream;
        let mut cancel_now = false;
        let mut done = false;
        match (entry.kind, entry.state, code) {
            (Kind::Invite, State::Completed, 200..=299) => {
                // RFC 3261 §16.7 step 10: a 2xx after a non-2xx (a forking next hop) still
                // goes upstream; the transaction stays to absorb the non-2xx.
            }
            (_, State::Completed, _) => {
                // A retransmitted final (or a late provisional): absorbed; a non-2xx to an
                // INVITE is ACKed again, since the first ACK was lost (RFC 3261 §17.1.1.2).
                forward = false;
                if let Some(ack) = &entry.ack {
                    if code >= 300 {
                        send.push(Send::Downstream(entry.dest.clone(), ack.clone()));
                    }
                }
            }
            (Kind::Invite, _, 100..=199) => {
                if entry.state == State::Calling {
                    entry.state = State::Proceeding;
                    entry.retransmit_at = None;
                    entry.deadline = now + self.timers.timer_c;
                    cancel_now = entry.cancelling == Cancelling::Pending;
                } else if code > 100 && entry.cancelling == Cancelling::No {
                    // RFC 3261 §16.7 step 2: a provisional other than 100 resets Timer C.
                    entry.deadline = now + self.timers.timer_c;
                }
                // §16.7 step 5: a 100 (Trying) is not forwarded; Roundabout sent its own.
                forward &= code > 100;
            }
            (Kind::Invite, _, 200..=299) => {
                // RFC 6026: the 2xx and its retransmissions go upstream as they arrive, the
                // ACK is end to end. With the transaction gone, the retransmissions find no
                // state and are forwarded statelessly — the same thing, for no memory.
                done = true;
            }
            (Kind::Invite, _, _) => {
                // RFC 3261 §17.1.1.3: the ACK of a non-2xx is the client transaction's.
                let ack = entry
                    .request
                    .as_ref()
                    .and_then(|request| Message::parse_own(request.to_contiguous()).ok())
                    .map(|invite| reply::ack_for(&invite, response));
                if let Some(ack) = &ack {
                    send.push(Send::Downstream(entry.dest.clone(), ack.clone()));
                }
                entry.ack = ack;
                entry.state = State::Completed;
                entry.request = None;
                entry.retransmit_at = None;
                entry.deadline = now + self.timers.timer_d();
            }
            (_, _, 100..=199) => {
                // Timer E goes on at T2 (RFC 3261 §17.1.2.2).
                entry.state = State::Proceeding;
                entry.interval = self.timers.t2;
                forward &= code > 100;
            }
            (_, _, _) => {
                entry.state = State::Completed;
                entry.request = None;
                entry.retransmit_at = None;
                // Timer K.
                entry.deadline = now + self.timers.t4;
            }
        }
        let upstream = entry.upstream.clone();
        let after = entry.bytes();
        table.bytes = table.bytes + after - before;
        if cancel_now {
            self.send_cancel(&mut table, key, now, &mut send);
        }
        if done {
            self.remove_entry(&mut table, key);
        } else {
            self.schedule(&mut table, key);
        }
        ResponseMatch::Matched(Matched {
            forward_to: forward.then_some(upstream),
            send,
        })
    }

    /// The ACK of a non-2xx from upstream (same server transaction as its INVITE): absorbed
    /// when Roundabout's own ACK already went downstream.
    #[must_use]
    pub fn absorbs_ack(&self, server_key: u64) -> bool {
        let table = self.table();
        table
            .by_server
            .get(&server_key)
            .and_then(|key| table.entries.get(key))
            .is_some_and(|entry| entry.state == State::Completed)
    }
}

#[cfg(test)]
mod tests;

//! The client cache: registered user → where that client is (its flow and original contact).
//!
//! Filled from the 2xx answers to REGISTER (the granted expiry), emptied by `Expires: 0` and by
//! expiry; bounded in size so a registration flood cannot grow it. A REGISTER that asks for a
//! binding the cache could not keep is refused before it is forwarded
//! ([`ClientCache::admit_register`]), so no client is told it is registered when it cannot be
//! reached.
//!
//! Every operation costs the same whether the cache is empty or full. The bindings are spread
//! over [`SHARDS`] shards by a keyed hash of the user (users are chosen by whoever sends a
//! REGISTER); each shard, under its own lock, keeps its bindings in a slab and threads each onto
//! a hashed timing wheel (Varghese and Lauck's scheme 6) of [`SLOTS`] one-second slots, by the
//! second in which it runs out. Binding, rebinding and removal link or unlink one node. Expiry
//! walks only the slots of the seconds that have passed: what ran out in them, plus bindings
//! whose end lies whole turns of the wheel ahead, which stay where they are. Those are passed
//! over once a turn, about every 17 minutes, so a binding of the usual hour (RFC 3261
//! §10.2.1.1) is looked at four times in its life: a constant per binding. The table is never
//! swept whole; the design before this one swept it on every REGISTER once full.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use crate::sip::Message;
use crate::transport::{ConnectionId, FlowKey};
use crate::warn_limited;

/// Locks a REGISTER or a request for a registered user contends for: a few per core.
const SHARDS: usize = 16;
/// One-second slots of each shard's wheel: 1024 index words per shard (8 KiB), one turn 17 min.
const SLOTS: u64 = 1024;
/// No node: the end of a slot's list.
const NIL: usize = usize::MAX;
/// Seconds a client refused for want of room is told to wait (Retry-After). Room comes back
/// as other bindings run out, over minutes; a minute keeps the retries of many refused
/// clients from adding up to a flood of their own.
pub const CACHE_FULL_RETRY_AFTER: u32 = 60;

/// Where a registered client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientBinding {
    pub flow: FlowKey,
    /// The client's connection, when it opened one: requests go on that one only.
    pub connection: Option<ConnectionId>,
    /// The Contact URI the client registered, as it wrote it.
    pub contact: Bytes,
    pub expires_at: Instant,
}

/// Result of looking a user up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientLookup {
    Bound(ClientBinding),
    /// The user registered, but the binding has run out.
    Expired,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("client cache full ({0} bindings)")]
pub struct CacheFull(pub usize);

pub struct ClientCache {
    shards: Box<[Mutex<Shard>]>,
    /// Picks a user's shard; keyed per process, so nobody can aim every user at one shard.
    hasher: RandomState,
    /// Ticks of the wheels are whole seconds since this.
    epoch: Instant,
    capacity: usize,
    /// Bindings over all shards, reserved before a new user is inserted.
    len: AtomicUsize,
    /// REGISTERs refused because no binding could be kept.
    refused: AtomicU64,
    bound: AtomicU64,
    removed: AtomicU64,
    expired: AtomicU64,
}

/// What happened to the cache's bindings since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindingCounts {
    /// Bindings stored or refreshed by a REGISTER's 2xx.
    pub bound: u64,
    /// Removed by an un-REGISTER's 2xx (expires 0).
    pub removed: u64,
    /// Run out and swept.
    pub expired: u64,
    /// REGISTERs refused because the cache was full.
    pub refused: u64,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ClientCache {
    #[must_use]
    pub fn new(capacity: usize) -> ClientCache {
        ClientCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            capacity,
            len: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            bound: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    #[must_use]
    pub fn lookup(&self, user: &[u8], now: Instant) -> ClientLookup {
        let shard = self.shard(user);
        match shard.users.get(user).map(|&key| &shard.nodes[key].binding) {
            Some(b) if b.expires_at > now => ClientLookup::Bound(b.clone()),
            Some(_) => ClientLookup::Expired,
            None => ClientLookup::Unknown,
        }
    }

    /// Binds `user`, replacing an earlier binding (a browser that reconnected has a new flow).
    /// A new user is refused when the cache is full even after expiring what is due.
    pub fn bind(
        &self,
        user: &[u8],
        flow: FlowKey,
        connection: Option<ConnectionId>,
        contact: Bytes,
        expires: Duration,
        now: Instant,
    ) -> Result<(), CacheFull> {
        let mut binding = ClientBinding {
            flow,
            connection,
            contact,
            expires_at: now + expires,
        };
        // Run out by the end of the second it runs out in: expired once that tick is reached.
        let due = self.tick(binding.expires_at) + 1;
        for expire_first in [false, true] {
            if expire_first {
                self.sweep(now);
            }
            match self.shard(user).bind(user, binding, due, || self.reserve()) {
                Ok(()) => {
                    self.bound.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(unbound) => binding = unbound,
            }
        }
        Err(CacheFull(self.capacity))
    }

    /// Removes `user`'s binding if it is to a client at `remote` (another device of the same
    /// user, registered later from elsewhere, keeps its binding).
    pub fn remove_at(&self, user: &[u8], remote: SocketAddr) -> bool {
        let mut shard = self.shard(user);
        let Some(&key) = shard.users.get(user) else {
            return false;
        };
        if shard.nodes[key].binding.flow.remote != remote {
            return false;
        }
        shard.remove(key);
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.removed.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drops the bindings that have run out; returns how many went. Costs the seconds since the
    /// last call (at most one turn of the wheel) plus the bindings in their slots, never the
    /// whole table.
    pub fn sweep(&self, now: Instant) -> usize {
        let tick = self.tick(now);
        let gone = self
            .shards
            .iter()
            .map(|shard| lock(shard).expire(tick))
            .sum();
        self.len.fetch_sub(gone, Ordering::Relaxed);
        self.expired.fetch_add(gone as u64, Ordering::Relaxed);
        gone
    }

    /// Whether a REGISTER may be forwarded. One that asks for a binding of a user who has none
    /// while the cache is full, even after expiring what is due, is refused: the registrar's
    /// 200 would tell the client it can be reached through Roundabout when it cannot. Refusals
    /// are counted ([`ClientCache::refused`]) and warned about at most once a second.
    /// Un-REGISTERs and queries ask for nothing and always pass.
    #[must_use]
    pub fn admit_register(&self, msg: &Message, now: Instant) -> bool {
        // A REGISTER whose To cannot be read fails in routing; one without a user binds nothing.
        let buf = msg.bytes();
        let Ok(to) = msg.to() else { return true };
        let Some(user) = to.parsed_uri(buf).ok().and_then(|uri| uri.user()) else {
            return true;
        };
        if !adds_binding(msg) || self.has_room(user, now) {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            capacity = self.capacity,
            "client cache full: REGISTER of a new user refused with 503 (-client-cache-size)"
        );
        false
    }

    #[must_use]
    pub fn counts(&self) -> BindingCounts {
        BindingCounts {
            bound: self.bound.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `user` could be bound now: it is bound already (a rebinding takes no room), or
    /// there is room, after expiring what is due if need be.
    fn has_room(&self, user: &[u8], now: Instant) -> bool {
        if self.len() < self.capacity || self.shard(user).users.contains_key(user) {
            return true;
        }
        self.sweep(now);
        self.len() < self.capacity
    }

    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn shard(&self, user: &[u8]) -> MutexGuard<'_, Shard> {
        // The remainder is below SHARDS, so the cast keeps every bit that matters.
        lock(&self.shards[(self.hasher.hash_one(user) % SHARDS as u64) as usize])
    }

    fn tick(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }
}

/// A shard stays consistent at every step of its operations, none of which can panic on input,
/// so one poisoned by a panic elsewhere is still fit for use.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a REGISTER asks for a binding: a Contact other than `*` whose lifetime is not zero
/// (its `expires` parameter, else the Expires header; with neither, the registrar's default,
/// RFC 3261 §10.2.1.1). An un-REGISTER (§10.2.2) and a query without Contact (§10.2.3) do not.
fn adds_binding(msg: &Message) -> bool {
    let buf = msg.bytes();
    let header = msg.expires();
    msg.contacts()
        .filter_map(Result::ok)
        .any(|contact| contact.expires(buf).or(header) != Some(0))
}

struct Node {
    user: Bytes,
    binding: ClientBinding,
    /// The tick by which the binding has run out: its slot is `due % SLOTS`.
    due: u64,
    prev: usize,
    next: usize,
}

struct Shard {
    users: HashMap<Bytes, usize>,
    nodes: Slab<Node>,
    /// The first node of each slot's list.
    heads: Box<[usize]>,
    /// Every tick before this one has been expired.
    next_tick: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            users: HashMap::new(),
            nodes: Slab::new(),
            heads: vec![NIL; SLOTS as usize].into_boxed_slice(),
            next_tick: 0,
        }
    }

    /// Binds or rebinds `user`; a new user only if `room()` grants it, else the binding comes
    /// back.
    fn bind(
        &mut self,
        user: &[u8],
        binding: ClientBinding,
        due: u64,
        room: impl FnOnce() -> bool,
    ) -> Result<(), ClientBinding> {
        // Never into a slot already passed this turn: a caller's clock may lag another's.
        let due = due.max(self.next_tick);
        if let Some(&key) = self.users.get(user) {
            self.unlink(key);
            let node = &mut self.nodes[key];
            node.binding = binding;
            node.due = due;
            self.link(key);
            return Ok(());
        }
        if !room() {
            return Err(binding);
        }
        let user = Bytes::copy_from_slice(user);
        let key = self.nodes.insert(Node {
            user: user.clone(),
            binding,
            due,
            prev: NIL,
            next: NIL,
        });
        self.users.insert(user, key);
        self.link(key);
        Ok(())
    }

    fn remove(&mut self, key: usize) {
        self.unlink(key);
        let node = self.nodes.remove(key);
        self.users.remove(&node.user);
    }

    /// Removes what is due by `tick`, walking each slot not yet walked up to it once.
    fn expire(&mut self, tick: u64) -> usize {
        // After a whole turn unwalked, one walk of every slot finds everything due.
        let first = self.next_tick.max(tick.saturating_sub(SLOTS - 1));
        let mut gone = 0;
        for passed in first..=tick {
            let mut key = self.heads[slot(passed)];
            while key != NIL {
                let node = &self.nodes[key];
                let next = node.next;
                if node.due <= tick {
                    self.remove(key);
                    gone += 1;
                }
                key = next;
            }
        }
        self.next_tick = self.next_tick.max(tick + 1);
        gone
    }

    fn link(&mut self, key: usize) {
        let slot = slot(self.nodes[key].due);
        let head = self.heads[slot];
        if head != NIL {
            self.nodes[head].prev = key;
        }
        let node = &mut self.nodes[key];
        node.prev = NIL;
        node.next = head;
        self.heads[slot] = key;
    }

    fn unlink(&mut self, key: usize) {
        let Node {
            prev, next, due, ..
        } = self.nodes[key];
        match prev {
            NIL => self.heads[slot(due)] = next,
            prev => self.nodes[prev].next = next,
        }
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }
}

fn slot(tick: u64) -> usize {
    // Below SLOTS, so the cast keeps every bit.
    (tick % SLOTS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Wss,
            remote: ([192, 0, 2, 1], port).into(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn bind(cache: &ClientCache, user: &str, port: u16, expires: u64, now: Instant) -> bool {
        let contact = Bytes::from_static(b"sip:a@x.invalid");
        cache
            .bind(
                user.as_bytes(),
                flow(port),
                None,
                contact,
                secs(expires),
                now,
            )
            .is_ok()
    }

    #[test]
    fn bind_lookup_expire_and_sweep() {
        let cache = ClientCache::new(10);
        let t0 = Instant::now();
        assert!(bind(&cache, "1000", 1, 60, t0));
        match cache.lookup(b"1000", t0 + secs(59)) {
            ClientLookup::Bound(b) => assert_eq!(b.flow, flow(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.lookup(b"1000", t0 + secs(60)), ClientLookup::Expired);
        assert_eq!(cache.lookup(b"2000", t0), ClientLookup::Unknown);
        assert_eq!(cache.sweep(t0 + secs(59)), 0, "not run out yet");
        assert_eq!(cache.sweep(t0 + secs(61)), 1);
        assert!(cache.is_empty());
        assert_eq!(cache.lookup(b"1000", t0), ClientLookup::Unknown);
        let counts = cache.counts();
        assert_eq!((counts.bound, counts.expired, counts.removed), (1, 1, 0));
    }

    #[test]
    fn rebinding_replaces_the_flow_and_the_expiry() {
        let cache = ClientCache::new(1);
        let t0 = Instant::now();
        assert!(bind(&cache, "1000", 1, 60, t0));
        assert!(bind(&cache, "1000", 2, 600, t0 + secs(30)), "takes no room");
        assert_eq!(cache.len(), 1);
        assert!(matches!(cache.lookup(b"1000", t0), ClientLookup::Bound(b) if b.flow == flow(2)));
        assert_eq!(cache.sweep(t0 + secs(120)), 0, "the old expiry is gone");
        assert!(
            !cache.remove_at(b"1000", flow(1).remote),
            "bound to the newer flow"
        );
        assert!(cache.remove_at(b"1000", flow(2).remote));
        assert_eq!(cache.lookup(b"1000", t0), ClientLookup::Unknown);
        assert!(cache.is_empty());
        assert_eq!(cache.sweep(t0 + secs(700)), 0, "removed, not expired again");
        let counts = cache.counts();
        assert_eq!((counts.bound, counts.expired, counts.removed), (2, 0, 1));
    }

    /// Capacity with expiry making room: (step, user, bind at second, expires, bound?, len).
    #[test]
    fn size_is_bounded_and_expired_entries_make_room() {
        let cache = ClientCache::new(2);
        let t0 = Instant::now();
        let steps = [
            ("first", "1", 0, 1, true, 1),
            ("second", "2", 0, 60, true, 2),
            ("full", "3", 0, 60, false, 2),
            ("rebinding a bound user when full", "2", 1, 60, true, 2),
            ("1 has run out and makes room", "3", 2, 60, true, 2),
            ("full again", "4", 3, 60, false, 2),
        ];
        for (step, user, at, expires, bound, len) in steps {
            assert_eq!(
                bind(&cache, user, 1, expires, t0 + secs(at)),
                bound,
                "{step}"
            );
            assert_eq!(cache.len(), len, "{step}");
        }
        assert_eq!(cache.lookup(b"1", t0), ClientLookup::Unknown);
    }

    /// Bindings whose end is several turns of the wheel away, or at the same slot a turn
    /// apart, are expired at their own second and no other; a sweep after a long quiet spell
    /// finds everything that ran out meanwhile.
    #[test]
    fn expiry_across_turns_of_the_wheel() {
        let cache = ClientCache::new(100);
        let t0 = Instant::now();
        let turn = SLOTS;
        // (user, expires): 5 and 5 + a turn share a slot; 3 turns + 7 wraps three times.
        let bindings = [("a", 5), ("b", 5 + turn), ("c", 3 * turn + 7), ("d", 10)];
        for (user, expires) in bindings {
            assert!(bind(&cache, user, 1, expires, t0));
        }
        let bound = |at: u64| {
            bindings
                .iter()
                .filter(|(user, _)| {
                    matches!(
                        cache.lookup(user.as_bytes(), t0 + secs(at)),
                        ClientLookup::Bound(_) | ClientLookup::Expired
                    )
                })
                .count()
        };
        // (sweep at second, how many go, how many remain in the cache)
        let sweeps = [
            (4, 0, 4),
            (6, 1, 3),
            (turn + 4, 1, 2),
            (turn + 6, 1, 1),
            (2 * turn + 7, 0, 1),
            (10 * turn, 1, 0),
        ];
        for (at, gone, left) in sweeps {
            assert_eq!(cache.sweep(t0 + secs(at)), gone, "sweep at {at} s");
            assert_eq!(
                (cache.len(), bound(at)),
                (left, left),
                "after the sweep at {at} s"
            );
        }
    }

    /// Table-driven REGISTERs against a full cache of one binding (user "bound").
    #[test]
    fn full_cache_refuses_only_registers_that_add_a_new_user() {
        let register = |to: &str, headers: &str| {
            Message::parse(Bytes::from(format!(
                "REGISTER sip:registrar.example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr\r\n\
                 From: <{to}>;tag=1\r\nTo: <{to}>\r\n\
                 Call-ID: r\r\nCSeq: 1 REGISTER\r\n{headers}Content-Length: 0\r\n\r\n"
            )))
            .unwrap()
        };
        let (bound, other) = ("sip:bound@example.com", "sip:other@example.com");
        let contact = "Contact: <sip:u@192.0.2.1>\r\n";
        let cases = [
            ("new user", other, contact, false),
            (
                "new user, Expires 3600",
                other,
                "Contact: <sip:u@192.0.2.1>\r\nExpires: 3600\r\n",
                false,
            ),
            ("bound user re-registers", bound, contact, true),
            (
                "un-REGISTER by Expires",
                other,
                "Contact: <sip:u@192.0.2.1>\r\nExpires: 0\r\n",
                true,
            ),
            (
                "un-REGISTER by parameter",
                other,
                "Contact: <sip:u@192.0.2.1>;expires=0\r\n",
                true,
            ),
            (
                "parameter wins over header",
                other,
                "Contact: <sip:u@192.0.2.1>;expires=60\r\nExpires: 0\r\n",
                false,
            ),
            (
                "one of two contacts stays",
                other,
                "Contact: <sip:u@192.0.2.1>;expires=0, <sip:u@192.0.2.2>\r\n",
                false,
            ),
            ("wildcard", other, "Contact: *\r\nExpires: 0\r\n", true),
            ("query", other, "", true),
            ("no user in To", "sip:example.com", contact, true),
        ];
        let cache = ClientCache::new(1);
        let t0 = Instant::now();
        assert!(bind(&cache, "bound", 1, 60, t0));
        let mut refused = 0;
        for (case, to, headers, admitted) in cases {
            assert_eq!(
                cache.admit_register(&register(to, headers), t0),
                admitted,
                "{case}"
            );
            refused += u64::from(!admitted);
            assert_eq!(cache.counts().refused, refused, "{case}");
        }
        // Once the binding has run out, a new user is admitted again.
        assert!(cache.admit_register(&register(other, contact), t0 + secs(61)));
        assert!(cache.is_empty());
    }
}

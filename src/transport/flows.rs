//! The flow table: every open stream connection, keyed by (transport, remote address), so that
//! responses and requests for a peer go back on the connection it uses. Also the connection
//! limits, counted here where connections are admitted and released, and the counts of
//! connections per transport that the metrics read.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::queue::QueueSender;
use super::{ConnectionId, FlowKey};
use crate::sip::Transport;

/// The write side of a connection: a bounded queue its writer task drains.
#[derive(Clone, Debug)]
struct FlowHandle {
    queue: QueueSender,
    /// Tells two connections that had the same key apart (a reconnect reuses the address).
    id: ConnectionId,
}

#[derive(Debug)]
pub(crate) struct FlowTable {
    flows: DashMap<FlowKey, FlowHandle>,
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    next_id: AtomicU64,
    max_total: usize,
    max_per_ip: usize,
    /// Indexed by `Transport as usize`.
    counts: [TransportCounts; Transport::ALL.len()],
}

/// One transport's connection counts, kept with relaxed atomics: bumped once per connection,
/// read only when the metrics are scraped.
#[derive(Debug, Default)]
struct TransportCounts {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Indexed by [`Handshake::index`].
    handshakes: [AtomicU64; 4],
    queue_full: AtomicU64,
}

/// A transport's connections as counted since start (see [`super::Senders::connections`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// In the flow table now, accepted or dialled.
    pub open: u64,
    /// Accepted from a peer and handed to the transport's handshake.
    pub accepted: u64,
    /// Refused on accept: a connection limit, or a bad or unexpected PROXY protocol header.
    pub refused: u64,
    /// TLS and WebSocket handshakes (none are counted for TCP), by [`Handshake::index`].
    pub handshakes: [u64; 4],
    /// Messages not sent because the connection's send queue was full.
    pub queue_full: u64,
}

/// A TLS or WebSocket handshake's outcome, on a connection accepted or dialled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub dialled: bool,
    pub ok: bool,
}

impl Handshake {
    /// Every outcome, in index order.
    pub const ALL: [Handshake; 4] = [
        Handshake {
            dialled: false,
            ok: true,
        },
        Handshake {
            dialled: false,
            ok: false,
        },
        Handshake {
            dialled: true,
            ok: true,
        },
        Handshake {
            dialled: true,
            ok: false,
        },
    ];

    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.dialled) * 2 + usize::from(!self.ok)
    }
}

/// What happened on a transport's connections, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionEvent {
    /// Accepted, and handed to the transport's handshake.
    Accepted,
    /// Refused as it was accepted.
    Refused,
    /// A TLS or WebSocket handshake ended.
    Handshake(Handshake),
    /// A message found the send queue full.
    QueueFull,
}

/// Where connection ids start: random, so that an id a token names before a restart is not
/// given to another connection after it (the counter then runs on for 2^63 connections).
fn first_connection_id() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    (u64::from_le_bytes(bytes) >> 1) | 1
}

/// A connection slot; releasing it (on drop) frees the counts it took.
#[derive(Debug)]
pub(crate) struct Admission {
    table: Arc<FlowTable>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.table.total.fetch_sub(1, Ordering::Relaxed);
        if let dashmap::Entry::Occupied(mut count) = self.table.per_ip.entry(self.ip) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

/// A connection's entry in the table, from [`FlowTable::list`] until this is dropped, however
/// the connection ends.
#[derive(Debug)]
pub(crate) struct Listed {
    table: Arc<FlowTable>,
    pub(crate) key: FlowKey,
    pub(crate) id: ConnectionId,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.table.remove(&self.key, self.id);
        self.table
            .counts(self.key.transport)
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("connection limit ({0}) reached")]
    Total(usize),
    #[error("per-address connection limit ({0}) reached")]
    PerAddress(usize),
}

impl FlowTable {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> FlowTable {
        FlowTable {
            flows: DashMap::new(),
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(first_connection_id()),
            max_total,
            max_per_ip,
            counts: Default::default(),
        }
    }

    fn counts(&self, transport: Transport) -> &TransportCounts {
        &self.counts[transport as usize]
    }

    pub(crate) fn count(&self, transport: Transport, event: ConnectionEvent) {
        let counts = self.counts(transport);
        let counter = match event {
            ConnectionEvent::Accepted => &counts.accepted,
            ConnectionEvent::Refused => &counts.refused,
            ConnectionEvent::Handshake(handshake) => &counts.handshakes[handshake.index()],
            ConnectionEvent::QueueFull => &counts.queue_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_counts(&self, transport: Transport) -> ConnectionCounts {
        let counts = self.counts(transport);
        ConnectionCounts {
            open: counts.open.load(Ordering::Relaxed),
            accepted: counts.accepted.load(Ordering::Relaxed),
            refused: counts.refused.load(Ordering::Relaxed),
            handshakes: std::array::from_fn(|i| counts.handshakes[i].load(Ordering::Relaxed)),
            queue_full: counts.queue_full.load(Ordering::Relaxed),
        }
    }

    /// Takes a connection slot for `ip` if the limits allow.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, LimitReached> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(LimitReached::Total(self.max_total));
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(LimitReached::PerAddress(self.max_per_ip));
        }
        *count += 1;
        Ok(Admission {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Puts a new connection of `key`, written to through `queue`, in the table, in place of
    /// any other of that key.
    pub(crate) fn list(self: &Arc<Self>, key: FlowKey, queue: QueueSender) -> Listed {
        let id = self.next_id();
        self.insert(key, FlowHandle { queue, id });
        self.counts(key.transport)
            .open
            .fetch_add(1, Ordering::Relaxed);
        Listed {
            table: Arc::clone(self),
            key,
            id,
        }
    }

    fn next_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn insert(&self, key: FlowKey, handle: FlowHandle) {
        self.flows.insert(key, handle);
    }

    /// Removes the flow, unless a newer connection has taken the key meanwhile.
    fn remove(&self, key: &FlowKey, id: ConnectionId) {
        self.flows.remove_if(key, |_, handle| handle.id == id);
    }

    /// The queue of the connection `key` names; with `connection`, only if it is that one.
    pub(crate) fn queue(
        &self,
        key: &FlowKey,
        connection: Option<ConnectionId>,
    ) -> Option<QueueSender> {
        self.flows
            .get(key)
            .filter(|handle| connection.is_none_or(|id| id == handle.id))
            .map(|handle| handle.queue.clone())
    }

    /// The connection `key` names, if one is open.
    pub(crate) fn connection(&self, key: &FlowKey) -> Option<ConnectionId> {
        self.flows.get(key).map(|handle| handle.id)
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &FlowKey) -> bool {
        self.flows.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue;
    use super::*;

    #[test]
    fn limits_are_enforced_and_released() {
        let table = Arc::new(FlowTable::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = table.admit(a).unwrap();
        let _a2 = table.admit(a).unwrap();
        assert_eq!(table.admit(a).unwrap_err(), LimitReached::PerAddress(2));
        let _b1 = table.admit(b).unwrap();
        assert_eq!(table.admit(b).unwrap_err(), LimitReached::Total(3));
        drop(a1);
        assert!(table.admit(b).is_ok());
    }

    #[test]
    fn remove_only_the_same_connection() {
        let table = FlowTable::new(10, 10);
        let key = FlowKey {
            transport: crate::sip::Transport::Tcp,
            remote: "192.0.2.1:5060".parse().unwrap(),
        };
        let (tx, _rx) = queue::send_queue(
            queue::QueueLimits {
                messages: 1,
                bytes: 1,
            },
            Arc::new(queue::SendBudget::new(1)),
        );
        table.insert(
            key,
            FlowHandle {
                queue: tx.clone(),
                id: ConnectionId(1),
            },
        );
        table.insert(
            key,
            FlowHandle {
                queue: tx,
                id: ConnectionId(2),
            },
        );
        assert!(table.queue(&key, Some(ConnectionId(2))).is_some());
        assert!(
            table.queue(&key, Some(ConnectionId(1))).is_none(),
            "a new connection is not the old one"
        );
        assert!(table.queue(&key, None).is_some());
        table.remove(&key, ConnectionId(1));
        assert!(table.contains(&key));
        table.remove(&key, ConnectionId(2));
        assert!(!table.contains(&key));
    }
}

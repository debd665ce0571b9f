//! The client cache: registered user → where that client is (its flow and original contact).
//!
//! Filled from the 2xx answers to REGISTER (the granted expiry), emptied by `Expires: 0`, by
//! expiry and by the periodic sweep; bounded in size so a registration flood cannot grow it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;

use crate::transport::FlowKey;

/// Where a registered client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientBinding {
    pub flow: FlowKey,
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

#[derive(Debug)]
pub struct ClientCache {
    bindings: DashMap<Bytes, ClientBinding>,
    capacity: usize,
}

impl ClientCache {
    #[must_use]
    pub fn new(capacity: usize) -> ClientCache {
        ClientCache {
            bindings: DashMap::new(),
            capacity,
        }
    }

    #[must_use]
    pub fn lookup(&self, user: &[u8], now: Instant) -> ClientLookup {
        match self.bindings.get(user) {
            Some(b) if b.expires_at > now => ClientLookup::Bound(b.clone()),
            Some(_) => ClientLookup::Expired,
            None => ClientLookup::Unknown,
        }
    }

    /// Binds `user`, replacing an earlier binding (a browser that reconnected has a new flow).
    /// A new user is refused when the cache is full even after dropping expired bindings.
    pub fn bind(
        &self,
        user: &[u8],
        flow: FlowKey,
        contact: Bytes,
        expires: Duration,
        now: Instant,
    ) -> Result<(), CacheFull> {
        let binding = ClientBinding {
            flow,
            contact,
            expires_at: now + expires,
        };
        if let Some(mut existing) = self.bindings.get_mut(user) {
            *existing = binding;
            return Ok(());
        }
        if self.bindings.len() >= self.capacity {
            self.sweep(now);
            if self.bindings.len() >= self.capacity {
                return Err(CacheFull(self.capacity));
            }
        }
        self.bindings.insert(Bytes::copy_from_slice(user), binding);
        Ok(())
    }

    /// Removes `user`'s binding if it is to a client at `remote` (another device of the same
    /// user, registered later from elsewhere, keeps its binding).
    pub fn remove_at(&self, user: &[u8], remote: SocketAddr) -> bool {
        self.bindings
            .remove_if(user, |_, binding| binding.flow.remote == remote)
            .is_some()
    }

    /// Drops expired bindings; returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|_, b| b.expires_at > now);
        before - self.bindings.len()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Wss,
            remote: ([192, 0, 2, 1], port).into(),
        }
    }

    #[test]
    fn bind_lookup_expire_and_sweep() {
        let cache = ClientCache::new(10);
        let t0 = Instant::now();
        cache
            .bind(
                b"1000",
                flow(1),
                Bytes::from_static(b"sip:a@x.invalid"),
                Duration::from_secs(60),
                t0,
            )
            .unwrap();
        match cache.lookup(b"1000", t0 + Duration::from_secs(59)) {
            ClientLookup::Bound(b) => assert_eq!(b.flow, flow(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cache.lookup(b"1000", t0 + Duration::from_secs(60)),
            ClientLookup::Expired
        );
        assert_eq!(cache.lookup(b"2000", t0), ClientLookup::Unknown);
        assert_eq!(cache.sweep(t0 + Duration::from_secs(61)), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn rebinding_replaces_the_flow() {
        let cache = ClientCache::new(1);
        let t0 = Instant::now();
        let contact = Bytes::from_static(b"sip:a@x.invalid");
        cache
            .bind(
                b"1000",
                flow(1),
                contact.clone(),
                Duration::from_secs(60),
                t0,
            )
            .unwrap();
        cache
            .bind(b"1000", flow(2), contact, Duration::from_secs(60), t0)
            .unwrap();
        assert_eq!(cache.len(), 1);
        assert!(matches!(cache.lookup(b"1000", t0), ClientLookup::Bound(b) if b.flow == flow(2)));
        assert!(
            !cache.remove_at(b"1000", flow(1).remote),
            "bound to the newer flow"
        );
        assert!(cache.remove_at(b"1000", flow(2).remote));
        assert_eq!(cache.lookup(b"1000", t0), ClientLookup::Unknown);
    }

    #[test]
    fn size_is_bounded_and_expired_entries_make_room() {
        let cache = ClientCache::new(2);
        let t0 = Instant::now();
        let c = Bytes::from_static(b"sip:a@b");
        cache
            .bind(b"1", flow(1), c.clone(), Duration::from_secs(1), t0)
            .unwrap();
        cache
            .bind(b"2", flow(2), c.clone(), Duration::from_secs(60), t0)
            .unwrap();
        assert_eq!(
            cache.bind(b"3", flow(3), c.clone(), Duration::from_secs(60), t0),
            Err(CacheFull(2))
        );
        cache
            .bind(
                b"3",
                flow(3),
                c,
                Duration::from_secs(60),
                t0 + Duration::from_secs(2),
            )
            .unwrap();
        assert_eq!(cache.lookup(b"1", t0), ClientLookup::Unknown);
        assert_eq!(cache.len(), 2);
    }
}

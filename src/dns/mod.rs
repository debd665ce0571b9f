//! Locating SIP servers (RFC 3263 §4): a SIP URI's host name to the ordered list of places a
//! request for it may go. `order` decides what to look up and the order of what is found
//! (pure); `resolver` asks DNS through hickory (docs/dns.md).
//!
//! The whole ordered list is returned so that a failed attempt can take the next target
//! (§4.3); today the proxy sends to the first.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::sip::{Scheme, Transport, Uri};

mod order;
mod resolver;

pub use resolver::{DnsError, Resolver};

/// What RFC 3263 resolution reads from a SIP URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The host as written (a name; an IP address needs no lookup).
    pub host: String,
    /// The URI's own port, when it has one.
    pub port: Option<u16>,
    /// The URI's `transport` parameter, when it names a transport.
    pub transport: Option<Transport>,
    /// A `sips:` URI.
    pub secure: bool,
}

impl Query {
    #[must_use]
    pub fn of(uri: &Uri) -> Query {
        Query {
            host: String::from_utf8_lossy(uri.host()).into_owned(),
            port: uri.port,
            transport: uri.param_value("transport").and_then(Transport::from_token),
            secure: uri.scheme == Scheme::Sips,
        }
    }

    /// The transport the URI asks for itself (see [`asked_transport`]).
    #[must_use]
    pub fn asked_transport(&self) -> Option<Transport> {
        asked_transport(self.secure, self.transport)
    }
}

/// The transport a URI asks for: its `transport` parameter, or TLS for `sips:` (WSS when it
/// asks for WebSocket), RFC 3261 §26.2.2.
#[must_use]
pub fn asked_transport(secure: bool, param: Option<Transport>) -> Option<Transport> {
    match (secure, param) {
        (true, Some(Transport::Ws | Transport::Wss)) => Some(Transport::Wss),
        (true, _) => Some(Transport::Tls),
        (false, param) => param,
    }
}

/// One place to send a request: how, where, and the name a TLS or WSS server must prove (the
/// URI's host, RFC 5922 §4: not the SRV target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub name: Arc<str>,
}

/// The transports Roundabout can send on: every stream transport (it dials them), UDP only
/// while it has a UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usable {
    pub udp: bool,
}

impl Usable {
    #[must_use]
    pub fn has(self, transport: Transport) -> bool {
        transport != Transport::Udp || self.udp
    }
}

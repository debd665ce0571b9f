//! Transports turn bytes on sockets into [`Inbound`] SIP messages and send [`Encoded`] ones.
//!
//! Every listener frames its bytes (a UDP datagram, a Content-Length framed TCP/TLS stream,
//! one WebSocket frame) and hands each message to one [`Handler`]. Transports never decide
//! where a message goes; the handler never touches a socket.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::sip::Encoded;

/// The five SIP transports Roundabout speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// Lower-case name, as in `;transport=` and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Upper-case token of a Via header (`SIP/2.0/WSS`), RFC 3261 §20.42, RFC 7118 §5.
    #[must_use]
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Parses a transport token case-insensitively (`udp`, `TCP`, `Wss`, …).
    #[must_use]
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| token.eq_ignore_ascii_case(t.as_str().as_bytes()))
    }

    /// Connection-oriented transports need a flow (a connection) to send on.
    #[must_use]
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The default port of the transport (RFC 3261 §19.1.2; RFC 7118 leaves WS to the URI).
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a flow: for UDP a remote address, for the others one connection to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub transport: Transport,
    pub remote: SocketAddr,
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.remote)
    }
}

/// One framed SIP message (not yet parsed) and the flow it arrived on.
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub flow: FlowKey,
}

/// Where an outgoing message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub flow: FlowKey,
    /// Name for certificate verification, SNI and the WebSocket `Host`; `None` uses the IP.
    pub server_name: Option<Arc<str>>,
    /// Whether a stream transport may open a new connection when no flow exists. False for
    /// flows a client opened to us (a browser's WebSocket cannot be dialled back).
    pub may_connect: bool,
}

/// Receives every message any listener frames. Implementations must not block: they run on
/// the listener's task, so sending is queueing (see `Senders::send`).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, inbound: Inbound);
}

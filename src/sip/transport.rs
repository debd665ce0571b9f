//! The SIP transports (RFC 3261 §18, RFC 7118): the tokens of `;transport=` and of Via, and
//! their default ports. A SIP word, so that configuration and routing can name a transport
//! without the sockets that carry it.

use std::fmt;

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

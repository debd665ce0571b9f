//! `-metrics-addr`: the Prometheus metrics and the health check, over HTTP (`endpoint`).
//!
//! Most of what is shown is read when it is scraped, from counts that exist anyway: the flow
//! table's connection counts, the client cache, the transactions, the forged-response counter,
//! and the process itself (`process`); `collect` encodes them with `prometheus-client`. The one
//! count added to the forwarding path is of SIP messages received and sent, by transport and
//! kind, and the time from receiving a message to sending what it causes (`latency`):
//! [`Messages`] is a [`Tap`] that the server puts between the transports and the proxy only
//! when `-metrics-addr` is given, so without it nothing is counted or timed. The proxy counts
//! its decisions ([`crate::proxy::decisions`]) only when it is given somewhere to count them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sip::Transport;
use crate::transport::{Destination, Encoded, Inbound, Tap};
use latency::Latency;

mod collect;
mod endpoint;
mod latency;
mod process;

pub use collect::Collected;
pub use endpoint::serve;

/// Request methods counted by name; any other is `other`.
const METHODS: [&str; 10] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "other",
];
/// Response classes (RFC 3261 §7.2), by the first digit of the status code.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// What a message is, as far as the counts tell kinds apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An index into [`METHODS`].
    Request(usize),
    /// An index into [`CLASSES`].
    Response(usize),
}

impl Kind {
    /// From the start of the message (RFC 3261 §7.1, §7.2): `SIP/2.0 2xx` is a response, a
    /// token then a space a request. Anything else is not counted: it is no SIP message (the
    /// proxy refuses it as malformed).
    fn of(message: &[u8]) -> Option<Kind> {
        if let Some(status) = message.strip_prefix(b"SIP/2.0 ") {
            return match status.first() {
                Some(digit @ b'1'..=b'6') => Some(Kind::Response(usize::from(digit - b'1'))),
                _ => None,
            };
        }
        let method = &message[..memchr::memchr(b' ', message)?];
        let other = METHODS.len() - 1;
        let index = METHODS[..other]
            .iter()
            .position(|name| name.as_bytes() == method)
            .unwrap_or(other);
        Some(Kind::Request(index))
    }
}

/// SIP messages of one direction, by transport and kind.
#[derive(Debug, Default)]
struct MessageCounts {
    /// Indexed by `Transport as usize`, then by method.
    requests: [[AtomicU64; METHODS.len()]; Transport::ALL.len()],
    responses: [[AtomicU64; CLASSES.len()]; Transport::ALL.len()],
}

impl MessageCounts {
    /// Counts a message of `kind`; one that is none ([`Kind::of`]) is not counted.
    fn count(&self, transport: Transport, kind: Option<Kind>) {
        let counter = match kind {
            Some(Kind::Request(method)) => &self.requests[transport as usize][method],
            Some(Kind::Response(class)) => &self.responses[transport as usize][class],
            None => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self, transport: Transport, method: usize) -> u64 {
        self.requests[transport as usize][method].load(Ordering::Relaxed)
    }

    fn responses(&self, transport: Transport, class: usize) -> u64 {
        self.responses[transport as usize][class].load(Ordering::Relaxed)
    }
}

/// The SIP message counts: what the transports handed the proxy, and what the proxy handed
/// the transports to send.
#[derive(Debug, Default)]
pub struct Messages {
    received: MessageCounts,
    sent: MessageCounts,
    /// From receiving a message to sending what it causes.
    forwarding: Latency,
}

/// Counts every message a [`Tapped`](crate::transport::Tapped) handler or outbound passes.
impl Tap for Arc<Messages> {
    type Sending = Option<Kind>;

    fn received(&self, inbound: &Inbound) {
        self.received
            .count(inbound.flow.transport, Kind::of(&inbound.data));
        Latency::received();
    }

    fn handled(&self) {
        Latency::handled();
    }

    fn sending(&self, msg: &Encoded) -> Option<Kind> {
        Kind::of(&msg.head)
    }

    fn sent(&self, dest: &Destination, kind: Option<Kind>) {
        self.sent.count(dest.flow.transport, kind);
        self.forwarding.sent();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use std::net::SocketAddr;

    use crate::transport::{ConnectionId, FlowKey, Outbound, SendError, Tapped};

    /// An outbound that takes every message, or refuses every one.
    struct Taking(bool);

    impl Outbound for Taking {
        fn send(&self, _: &Destination, _: Encoded) -> Result<(), SendError> {
            if self.0 {
                Ok(())
            } else {
                Err(SendError::QueueFull)
            }
        }

        fn connection_at(&self, _: SocketAddr, _: Transport) -> Option<(FlowKey, ConnectionId)> {
            None
        }
    }

    #[test]
    fn only_what_a_transport_took_counts_as_sent() {
        let messages = Arc::new(Messages::default());
        let dest = Destination {
            flow: FlowKey {
                transport: Transport::Tcp,
                remote: "192.0.2.1:5060".parse().unwrap(),
            },
            connection: None,
            server_name: None,
            may_connect: true,
        };
        let bye = || Encoded {
            head: Bytes::from_static(b"BYE sip:a@192.0.2.1 SIP/2.0\r\n\r\n"),
            body: Bytes::new(),
        };
        let taken = Tapped::new(Taking(true), Arc::clone(&messages));
        let refused = Tapped::new(Taking(false), Arc::clone(&messages));
        assert!(taken.send(&dest, bye()).is_ok());
        assert!(refused.send(&dest, bye()).is_err());
        assert!(taken.send(&dest, bye()).is_ok());
        let bye_index = 2;
        assert_eq!(messages.sent.requests(Transport::Tcp, bye_index), 2);
        assert_eq!(messages.sent.requests(Transport::Udp, bye_index), 0);
        assert_eq!(messages.received.requests(Transport::Tcp, bye_index), 0);
    }

    #[test]
    fn kinds_are_read_from_the_start_line() {
        let kind = |text: &str| Kind::of(text.as_bytes());
        assert_eq!(kind("INVITE sip:a@b SIP/2.0\r\n"), Some(Kind::Request(0)));
        assert_eq!(kind("NOTIFY sip:a@b SIP/2.0\r\n"), Some(Kind::Request(8)));
        assert_eq!(kind("PUBLISH sip:a@b SIP/2.0\r\n"), Some(Kind::Request(9)));
        assert_eq!(kind("invite sip:a@b SIP/2.0\r\n"), Some(Kind::Request(9)));
        assert_eq!(kind("SIP/2.0 180 Ringing\r\n"), Some(Kind::Response(0)));
        assert_eq!(kind("SIP/2.0 603 Decline\r\n"), Some(Kind::Response(5)));
        assert_eq!(kind("SIP/2.0 700 Nope\r\n"), None);
        assert_eq!(kind("garbage"), None);
    }
}

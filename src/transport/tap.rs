//! The seam for what watches the messages between the transports and the proxy without
//! changing them (the metrics' counts, the HEP capture): [`Tapped`] wraps the proxy as the
//! transports' handler, or the transports as the proxy's outbound, and tells its [`Tap`] of
//! every message that passes. Only built when something watches, so it costs nothing otherwise.

use std::net::SocketAddr;

use super::{ConnectionId, Destination, Encoded, FlowKey, Handler, Inbound, Outbound, SendError};
use crate::sip::Transport;

/// What is told of every message received and sent. Must not block: it runs on the
/// forwarding path.
pub trait Tap: Send + Sync + 'static {
    /// What [`Tap::sent`] needs of a message, taken before the transport takes it.
    type Sending;

    fn received(&self, inbound: &Inbound);

    /// The handler is done with the message last received on this thread.
    fn handled(&self) {}

    fn sending(&self, msg: &Encoded) -> Self::Sending;

    /// The transport took the message (sent on UDP, queued on a stream); a message it refused
    /// is not told of.
    fn sent(&self, dest: &Destination, sending: Self::Sending);
}

/// A handler or an outbound with every message that passes told to `tap`.
pub struct Tapped<T, P> {
    inner: T,
    tap: P,
}

impl<T, P> Tapped<T, P> {
    pub fn new(inner: T, tap: P) -> Tapped<T, P> {
        Tapped { inner, tap }
    }
}

impl<H: Handler, P: Tap> Handler for Tapped<H, P> {
    fn handle(&self, inbound: Inbound) {
        self.tap.received(&inbound);
        self.inner.handle(inbound);
        self.tap.handled();
    }

    fn undelivered(&self, msg: Encoded, flow: FlowKey) {
        self.inner.undelivered(msg, flow);
    }

    fn connection_closed(&self, flow: FlowKey, connection: ConnectionId) {
        self.inner.connection_closed(flow, connection);
    }
}

impl<O: Outbound, P: Tap> Outbound for Tapped<O, P> {
    fn send(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError> {
        let sending = self.tap.sending(&msg);
        self.inner.send(dest, msg)?;
        self.tap.sent(dest, sending);
        Ok(())
    }

    fn connection_at(
        &self,
        remote: SocketAddr,
        transport: Transport,
    ) -> Option<(FlowKey, ConnectionId)> {
        self.inner.connection_at(remote, transport)
    }
}

/// Two taps told of each message: the first, then the second.
impl<A: Tap, B: Tap> Tap for (A, B) {
    type Sending = (A::Sending, B::Sending);

    fn received(&self, inbound: &Inbound) {
        self.0.received(inbound);
        self.1.received(inbound);
    }

    fn handled(&self) {
        self.0.handled();
        self.1.handled();
    }

    fn sending(&self, msg: &Encoded) -> Self::Sending {
        (self.0.sending(msg), self.1.sending(msg))
    }

    fn sent(&self, dest: &Destination, (first, second): Self::Sending) {
        self.0.sent(dest, first);
        self.1.sent(dest, second);
    }
}

/// A tap that may be off (one of two configured).
impl<P: Tap> Tap for Option<P> {
    type Sending = Option<P::Sending>;

    fn received(&self, inbound: &Inbound) {
        if let Some(tap) = self {
            tap.received(inbound);
        }
    }

    fn handled(&self) {
        if let Some(tap) = self {
            tap.handled();
        }
    }

    fn sending(&self, msg: &Encoded) -> Self::Sending {
        self.as_ref().map(|tap| tap.sending(msg))
    }

    fn sent(&self, dest: &Destination, sending: Self::Sending) {
        if let (Some(tap), Some(sending)) = (self, sending) {
            tap.sent(dest, sending);
        }
    }
}

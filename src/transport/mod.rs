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
use crate::sip::Transport;

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

/// One connection of a stream flow. A new connection from the same address and port is a
/// different one, so what was meant for the old connection never reaches the new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// One framed SIP message (not yet parsed) and the flow it arrived on.
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub flow: FlowKey,
    /// The connection, for a stream flow.
    pub connection: Option<ConnectionId>,
}

/// Where an outgoing message goes: exactly `flow`, never a flow of another transport to the
/// same address (finding the connection a peer uses is the proxy's decision, with
/// [`Outbound::connection_at`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub flow: FlowKey,
    /// Only this connection of the flow will do (a client's; it cannot be dialled again).
    pub connection: Option<ConnectionId>,
    /// Name for certificate verification, SNI and the WebSocket `Host`; `None` uses the IP.
    pub server_name: Option<Arc<str>>,
    /// Whether a stream transport may open a new connection when no flow exists. False for
    /// flows a client opened to us (a browser's WebSocket cannot be dialled back).
    pub may_connect: bool,
}

/// Where the proxy hands every message it sends: the transports in production, a recording
/// double in tests (the send seam that lets the proxy be tested without sockets).
pub trait Outbound: Send + Sync + 'static {
    /// Hands `msg` on without waiting (see [`Senders::send`]).
    ///
    /// # Errors
    /// The message was not taken: no flow and none may be opened, a full queue, no listener
    /// for the transport, or a socket error.
    fn send(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError>;

    /// The stream connection open with the peer at `remote`, and its flow: the one of
    /// `transport` if there is one, else one of another stream transport.
    fn connection_at(
        &self,
        remote: SocketAddr,
        transport: Transport,
    ) -> Option<(FlowKey, ConnectionId)>;
}

/// Receives every message any listener frames. Implementations must not block: they run on
/// the listener's task, so sending is queueing (see `Senders::send`).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, inbound: Inbound);

    /// A message queued for `flow` that could not be sent because the connection could not
    /// be opened (RFC 3261 §16.9: for a request, as if a 503 had come back).
    fn undelivered(&self, msg: Encoded, flow: FlowKey);

    /// The connection `connection` of `flow` has closed: nothing sent to it arrives any more.
    fn connection_closed(&self, flow: FlowKey, connection: ConnectionId);
}

mod deadline;
mod flows;
mod lifecycle;
mod proxy_header;
mod queue;
mod stream;
mod tap;
mod tcp;
mod tls;
mod udp;
mod ws;

pub use flows::{ConnectionCounts, Handshake, LimitReached};
pub use tap::{Tap, Tapped};
pub use tls::{KeyPair, TlsError};
pub use udp::is_transient;

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::config::{Config, Limits};
use crate::warn_limited;
use flows::{ConnectionEvent, FlowTable};

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why a message was not handed to a transport.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no connection to this peer, and it cannot be dialled")]
    NoFlow,
    #[error("send queue of the connection is full")]
    QueueFull,
    #[error("transport {0} is not available")]
    Unavailable(Transport),
    /// A connection would have to be opened, and `-max-connections` or
    /// `-max-connections-per-ip` does not allow another.
    #[error(transparent)]
    ConnectionLimit(#[from] LimitReached),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What every listener, connection and sender shares.
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) flows: Arc<FlowTable>,
    /// `-send-buffer-total`: what every connection's send queue counts its bytes against.
    pub(crate) send_budget: Arc<queue::SendBudget>,
    pub(crate) handler: OnceLock<Arc<dyn Handler>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) tls: tls::TlsContext,
    /// `-ws-path`: the only request path WS and WSS handshakes may use (`None`: any).
    pub(crate) ws_path: Option<Arc<str>>,
    /// `-proxy-protocol-from`: where connections start with a PROXY protocol header (none: the
    /// accept loop never looks).
    pub(crate) balancers: crate::config::ClientRanges,
    udp: Option<Arc<tokio::net::UdpSocket>>,
    local: Vec<(Transport, SocketAddr)>,
}

/// The listeners bound from the configuration, not yet running.
pub struct Transports {
    shared: Arc<Shared>,
    /// TCP, TLS, WS and WSS listeners.
    streams: Vec<(Transport, tokio::net::TcpListener)>,
}

impl Transports {
    /// Loads the TLS material, then binds every enabled listener on `-bind-ip`; logs one
    /// `listening` line per listener.
    pub async fn bind(config: &Config) -> Result<Transports, TransportError> {
        // Before any socket: a bad certificate must stop the start with nothing bound.
        let tls = tls::TlsContext::load(
            config.tls.as_ref(),
            config.tls_ca.as_deref(),
            &config.mutual_tls,
            &config.trusted_servers,
        )?;
        let mut local = Vec::new();
        let bind_error = |transport, addr| {
            move |source| TransportError::Bind {
                transport,
                addr,
                source,
            }
        };
        let udp = match config.ports.udp {
            Some(port) => {
                let addr = SocketAddr::new(config.bind_ip, port);
                let socket = udp::bind(addr).map_err(bind_error(Transport::Udp, addr))?;
                let bound = socket
                    .local_addr()
                    .map_err(bind_error(Transport::Udp, addr))?;
                local.push((Transport::Udp, bound));
                Some(Arc::new(socket))
            }
            None => None,
        };
        let mut streams = Vec::new();
        for transport in STREAMS {
            let Some(port) = config.ports.get(transport) else {
                continue;
            };
            let addr = SocketAddr::new(config.bind_ip, port);
            let listener = tcp::bind(addr).map_err(bind_error(transport, addr))?;
            let bound = listener.local_addr().map_err(bind_error(transport, addr))?;
            local.push((transport, bound));
            streams.push((transport, listener));
        }
        for (transport, addr) in &local {
            info!(%transport, %addr, "listening");
        }
        let limits = config.limits;
        Ok(Transports {
            shared: Arc::new(Shared {
                limits,
                flows: Arc::new(FlowTable::new(
                    limits.max_connections,
                    limits.max_connections_per_ip,
                )),
                send_budget: Arc::new(queue::SendBudget::new(limits.send_buffer_total)),
                handler: OnceLock::new(),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                tls,
                ws_path: config.ws_path.as_deref().map(Arc::from),
                balancers: config.proxy_protocol_from.clone(),
                udp,
                local,
            }),
            streams,
        })
    }

    #[must_use]
    pub fn senders(&self) -> Senders {
        Senders {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs every listener until `shutdown`, then lets connections flush for at most `flush`.
    pub async fn run(
        self,
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
        flush: Duration,
    ) {
        let Transports { shared, streams } = self;
        let _ = shared.handler.set(handler);
        if let Some(socket) = shared.udp.clone() {
            shared
                .tracker
                .spawn(udp::receive(socket, Arc::clone(&shared)));
        }
        for (transport, listener) in streams {
            let shared = Arc::clone(&shared);
            let tracker = shared.tracker.clone();
            match transport {
                Transport::Tcp => {
                    tracker.spawn(tcp::accept(listener, transport, shared, tcp::serve_plain))
                }
                Transport::Tls => {
                    tracker.spawn(tcp::accept(listener, transport, shared, tcp::serve_tls))
                }
                Transport::Ws => {
                    tracker.spawn(tcp::accept(listener, transport, shared, ws::serve_plain))
                }
                Transport::Wss => {
                    tracker.spawn(tcp::accept(listener, transport, shared, ws::serve_secure))
                }
                Transport::Udp => continue,
            };
        }
        shutdown.cancelled().await;
        shared.shutdown.cancel();
        shared.tracker.close();
        if tokio::time::timeout(flush, shared.tracker.wait())
            .await
            .is_err()
        {
            debug!("connections still open at exit");
        }
    }
}

/// Messages queued for one connection that are written together before a flush.
const MAX_WRITE_BATCH: usize = 32;

/// The connection-oriented transports.
const STREAMS: [Transport; 4] = [
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
];

/// Cheap-clone handle for sending on any transport.
#[derive(Clone)]
pub struct Senders {
    shared: Arc<Shared>,
}

impl Outbound for Senders {
    fn send(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError> {
        Senders::send(self, dest, msg)
    }

    fn connection_at(
        &self,
        remote: SocketAddr,
        transport: Transport,
    ) -> Option<(FlowKey, ConnectionId)> {
        let others = STREAMS.into_iter().filter(|&t| t != transport);
        std::iter::once(transport)
            .chain(others)
            .map(|transport| FlowKey { transport, remote })
            .find_map(|key| Some((key, self.shared.flows.connection(&key)?)))
    }
}

impl Senders {
    /// Hands `msg` to the transport without waiting: UDP sends at once; a stream queues on
    /// the flow's connection, dialling one first when none exists and `dest.may_connect`.
    pub fn send(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError> {
        let shared = &self.shared;
        let key = dest.flow;
        if key.transport == Transport::Udp {
            let socket = shared
                .udp
                .as_ref()
                .ok_or(SendError::Unavailable(Transport::Udp))?;
            return udp::send(socket, key.remote, msg);
        }
        match shared.flows.queue(&key, dest.connection) {
            Some(queue) => queue.try_send(msg).map_err(|e| match e {
                queue::QueueError::Full => {
                    shared
                        .flows
                        .count(key.transport, ConnectionEvent::QueueFull);
                    SendError::QueueFull
                }
                queue::QueueError::Closed => SendError::NoFlow,
            }),
            // A named connection that is gone is gone: another is never opened in its place.
            None if dest.may_connect && dest.connection.is_none() => self.dial(dest, msg),
            None => Err(SendError::NoFlow),
        }
    }

    fn dial(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError> {
        let shared = Arc::clone(&self.shared);
        let key = dest.flow;
        let admission = shared.flows.admit(key.remote.ip())?;
        let flow = lifecycle::Registered::new(key, &shared);
        let _ = flow.tx.try_send(msg);
        let name = dest.server_name.clone();
        let tracker = shared.tracker.clone();
        tracker.spawn(async move {
            let name = name.as_deref();
            let connected = match key.transport {
                Transport::Ws | Transport::Wss => match ws::connect(key, name, &shared).await {
                    Ok(socket) => {
                        lifecycle::count_handshake(&shared, key.transport, true, true);
                        return ws::serve(socket, flow, shared, admission).await;
                    }
                    Err(error) => error,
                },
                _ => match tcp::connect(key, name, &shared).await {
                    Ok(socket) => {
                        lifecycle::count_handshake(&shared, key.transport, true, true);
                        return stream::serve(socket, flow, shared, admission).await;
                    }
                    Err(error) => error,
                },
            };
            lifecycle::count_handshake(&shared, key.transport, true, false);
            let mut queued = flow.unserved();
            warn_limited!(flow = %key, error = %connected, "cannot connect");
            if let Some(handler) = shared.handler.get() {
                while let Some(msg) = queued.try_recv() {
                    handler.undelivered(msg, key);
                }
            }
        });
        Ok(())
    }

    /// SIGHUP: rereads the TLS certificate and key for new handshakes.
    ///
    /// # Errors
    /// The new files are unusable; the old certificate stays in use.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.shared.tls.reload()
    }

    /// The connections of `transport` (a stream transport; UDP has none) counted so far.
    #[must_use]
    pub fn connections(&self, transport: Transport) -> ConnectionCounts {
        self.shared.flows.connection_counts(transport)
    }

    /// The address the listener of `transport` is bound to, if it listens.
    #[must_use]
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.shared
            .local
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, addr)| *addr)
    }
}

#[cfg(test)]
mod tests {
    use super::stream::tests::{limits, shared};
    use super::*;

    fn senders() -> (Arc<Shared>, Senders) {
        let (shared, _) = shared(limits());
        let senders = Senders {
            shared: Arc::clone(&shared),
        };
        (shared, senders)
    }

    fn to(transport: Transport, remote: &str, may_connect: bool) -> Destination {
        Destination {
            flow: FlowKey {
                transport,
                remote: remote.parse().unwrap(),
            },
            connection: None,
            server_name: None,
            may_connect,
        }
    }

    #[test]
    fn a_flow_goes_on_its_own_transport_and_is_found_by_address() {
        let (shared, senders) = senders();
        let ws = to(Transport::Ws, "192.0.2.7:50000", false);
        let flow = lifecycle::Registered::new(ws.flow, &shared);
        let wss = to(Transport::Wss, "192.0.2.7:50000", false);
        assert!(matches!(
            senders.send(&wss, Encoded::default()),
            Err(SendError::NoFlow)
        ));
        let (key, connection) = senders
            .connection_at(wss.flow.remote, Transport::Wss)
            .unwrap();
        assert_eq!(key, ws.flow);
        let found = Destination {
            flow: key,
            connection: Some(connection),
            ..wss
        };
        assert!(senders.send(&found, Encoded::default()).is_ok());
        drop(flow);
        assert!(senders
            .connection_at(ws.flow.remote, Transport::Ws)
            .is_none());
    }

    #[test]
    fn a_dial_over_the_per_address_limit_is_refused_as_such() {
        let (shared, senders) = senders();
        let dest = to(Transport::Tcp, "192.0.2.7:5060", true);
        let _held = shared.flows.admit(dest.flow.remote.ip()).unwrap();
        let refused = senders.send(&dest, Encoded::default());
        assert!(
            matches!(
                refused,
                Err(SendError::ConnectionLimit(LimitReached::PerAddress(1)))
            ),
            "{refused:?}"
        );
    }
}

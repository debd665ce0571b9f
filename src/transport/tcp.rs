//! TCP: the accept loop and dialling out. Each connection becomes a flow served by `stream`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::warn_limited;

use super::deadline::WriteDeadline;
use super::flows::{Admission, ConnectionEvent};
use super::lifecycle::{self, Registered};
use super::stream::ByteStream;
use super::{proxy_header, stream, FlowKey, Shared};
use crate::sip::Transport;

/// A flow's TCP socket, accepted or dialled, under TLS and WebSocket when the flow has them.
pub(crate) type Connection = WriteDeadline<TcpStream>;

/// Pending connections the kernel queues before accept.
const BACKLOG: i32 = 1024;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections until shutdown. `upgrade` turns the TCP stream into the transport's
/// stream (identity for TCP, a TLS handshake for TLS) and serves it.
pub(crate) async fn accept<F, Fut>(
    listener: TcpListener,
    transport: Transport,
    shared: Arc<Shared>,
    upgrade: F,
) where
    F: Fn(Connection, FlowKey, Arc<Shared>, Admission) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: keep serving existing flows and retry.
                warn_limited!(%transport, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.balancers.is_empty() {
            let Some(admission) = admit(&shared, transport, remote) else {
                continue;
            };
            let (socket, key) = into_flow(socket, transport, remote, &shared);
            shared
                .tracker
                .spawn(upgrade(socket, key, Arc::clone(&shared), admission));
        } else {
            let upgrade = upgrade.clone();
            let shared = Arc::clone(&shared);
            shared.tracker.clone().spawn(async move {
                // Boxed, so that the header's buffers are freed before the flow is served
                // (see `lifecycle::after_handshake`).
                let Some((socket, remote, admission)) =
                    Box::pin(behind_balancer(socket, transport, remote, &shared)).await
                else {
                    return;
                };
                let (socket, key) = into_flow(socket, transport, remote, &shared);
                upgrade(socket, key, Arc::clone(&shared), admission).await;
            });
        }
    }
}

/// An admitted connection from `remote` (the client's address behind a balancer), counted and
/// readied as a flow of `transport`.
fn into_flow(
    socket: TcpStream,
    transport: Transport,
    remote: SocketAddr,
    shared: &Shared,
) -> (Connection, FlowKey) {
    shared.flows.count(transport, ConnectionEvent::Accepted);
    let key = FlowKey { transport, remote };
    (prepare(socket, key, shared.limits.write_timeout), key)
}

/// A connection slot for a connection from `remote`, if the limits allow it.
fn admit(shared: &Arc<Shared>, transport: Transport, remote: SocketAddr) -> Option<Admission> {
    match shared.flows.admit(remote.ip()) {
        Ok(admission) => Some(admission),
        Err(limit) => {
            shared.flows.count(transport, ConnectionEvent::Refused);
            warn_limited!(%transport, %remote, %limit, "connection refused");
            None
        }
    }
}

/// With `-proxy-protocol-from`: the client a connection carries, and its slot. A balancer's
/// connection is admitted as its client once the header is read (the per-address limit is the
/// client's); anyone else's is admitted as itself before its first bytes are looked at, and
/// refused if they are a PROXY header.
async fn behind_balancer(
    mut socket: TcpStream,
    transport: Transport,
    remote: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(TcpStream, SocketAddr, Admission)> {
    let limit = shared.limits.handshake_timeout;
    let outcome = if shared.balancers.contains(remote.ip()) {
        match proxy_header::read_client(&mut socket, remote, limit).await {
            Ok(client) => {
                debug!(%transport, balancer = %remote, %client, "PROXY protocol header");
                let admission = admit(shared, transport, client)?;
                return Some((socket, client, admission));
            }
            Err(refused) => refused,
        }
    } else {
        let admission = admit(shared, transport, remote)?;
        match proxy_header::refuse_header(&socket, limit).await {
            Ok(()) => return Some((socket, remote, admission)),
            Err(refused) => refused,
        }
    };
    // Every refusal at debug; the warning is rate-limited and may leave some out.
    debug!(%transport, %remote, reason = %outcome, "PROXY protocol refusal");
    shared.flows.count(transport, ConnectionEvent::Refused);
    warn_limited!(%transport, %remote, reason = %outcome, "connection refused");
    None
}

/// Readies a flow's socket: no Nagle delay, and writes bounded by `-write-timeout` both here and
/// in the kernel, where TCP_USER_TIMEOUT closes a connection whose sent data stays unacknowledged
/// that long (a peer that is gone rather than just not reading).
fn prepare(socket: TcpStream, key: FlowKey, write_timeout: Duration) -> Connection {
    let _ = socket.set_nodelay(true);
    if let Err(error) = SockRef::from(&socket).set_tcp_user_timeout(Some(write_timeout)) {
        debug!(flow = %key, %error, "TCP_USER_TIMEOUT not set");
    }
    WriteDeadline::new(socket, write_timeout)
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Serves an accepted plain TCP connection.
pub(crate) fn serve_plain(
    socket: Connection,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let flow = Registered::new(key, &shared);
    stream::serve(socket, flow, shared, admission)
}

/// Serves an accepted TLS connection once its handshake completes within the handshake timeout.
pub(crate) fn serve_tls(
    socket: Connection,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let handshake = {
        let shared = Arc::clone(&shared);
        async move {
            let limit = shared.limits.handshake_timeout;
            shared.tls.accept(socket, key, limit).await
        }
    };
    lifecycle::after_handshake(handshake, key, shared, admission, stream::serve)
}

/// Connects to `key.remote` within the handshake timeout, with TLS on top for TLS and WSS
/// (the peer verified as `name`, its FQDN, else as its IP address).
pub(crate) async fn connect(
    key: FlowKey,
    name: Option<&str>,
    shared: &Shared,
) -> std::io::Result<Box<dyn ByteStream>> {
    let connecting = async {
        let socket = TcpStream::connect(key.remote).await?;
        let socket = prepare(socket, key, shared.limits.write_timeout);
        Ok::<Box<dyn ByteStream>, std::io::Error>(match key.transport {
            Transport::Tls | Transport::Wss => {
                Box::new(shared.tls.connect(socket, name, key.remote.ip()).await?)
            }
            _ => Box::new(socket),
        })
    };
    // Boxed for the same reason as an accepted handshake (`lifecycle::after_handshake`): the
    // dialling task goes on to serve the flow.
    tokio::time::timeout(shared.limits.handshake_timeout, Box::pin(connecting))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::super::stream::tests::shared;
    use super::*;
    use crate::config::Limits;

    fn user_timeout(socket: &TcpStream) -> Option<Duration> {
        SockRef::from(socket).tcp_user_timeout().unwrap()
    }

    #[tokio::test]
    async fn flow_sockets_get_the_write_timeout_as_tcp_user_timeout() {
        let limits = Limits {
            write_timeout: Duration::from_secs(7),
            ..Limits::DEFAULT
        };
        let (shared, _) = shared(limits);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, mut timeouts) = mpsc::unbounded_channel();
        let upgrade = move |socket: Connection, _: FlowKey, _: Arc<Shared>, _: Admission| {
            let _ = accepted.send(user_timeout(socket.get_ref()));
            async {}
        };
        tokio::spawn(accept(
            listener,
            Transport::Tcp,
            Arc::clone(&shared),
            upgrade,
        ));
        let dialled = TcpStream::connect(addr).await.unwrap();
        assert_eq!(timeouts.recv().await.unwrap(), Some(limits.write_timeout));
        let key = FlowKey {
            transport: Transport::Tcp,
            remote: addr,
        };
        let dialled = prepare(dialled, key, limits.write_timeout);
        assert_eq!(user_timeout(dialled.get_ref()), Some(limits.write_timeout));
        shared.shutdown.cancel();
    }
}

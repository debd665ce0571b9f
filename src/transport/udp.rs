//! UDP: one socket per listener; requests, responses and forwards all leave from it, so peers
//! see one address for Roundabout (RFC 3261 §18.2.2, RFC 3581).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, error};

use crate::warn_limited;

use super::{Encoded, FlowKey, Inbound, SendError, Shared};
use crate::sip::Transport;

/// Socket buffers asked for (the kernel caps them at rmem_max/wmem_max): bursts of a few
/// thousand datagrams must not be dropped while the proxy is busy.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams are received into blocks this large and split off without copying.
const BLOCK: usize = 1 << 20;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until shutdown; a bad datagram is skipped, only a socket error ends it.
pub(crate) async fn receive(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let max = shared.limits.max_message;
    let mut buf = BytesMut::new();
    // One shutdown waiter for the life of the loop, not one registered per datagram.
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        if buf.capacity() - buf.len() <= max {
            buf = BytesMut::with_capacity(BLOCK.max(max + 1));
        }
        let received = tokio::select! {
            () = &mut shutdown => return,
            received = socket.recv_buf_from(&mut buf) => received,
        };
        let (len, remote) = match received {
            Ok(received) => received,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                error!(error = %e, "UDP receive failed; listener stopped");
                return;
            }
        };
        let data = buf.split().freeze();
        if len > max {
            warn_limited!(%remote, len, max, "oversized UDP datagram dropped");
            continue;
        }
        if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            // Keep-alive (CRLF or the NUL some NATed phones send): nothing to answer on UDP.
            continue;
        }
        if let Some(handler) = shared.handler.get() {
            handler.handle(Inbound {
                data,
                flow: FlowKey {
                    transport: Transport::Udp,
                    remote,
                },
                connection: None,
            });
        }
    }
}

/// Errors a UDP socket reports for one peer (an ICMP unreachable from an earlier send) that
/// say nothing about the socket itself: a receive loop goes on after them.
#[must_use]
pub fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Sends head and body as one datagram without joining them (sendmsg with two slices).
pub(crate) fn send(
    socket: &Arc<UdpSocket>,
    remote: SocketAddr,
    msg: Encoded,
) -> Result<(), SendError> {
    let sent = socket.try_io(Interest::WRITABLE, || {
        let slices = [IoSlice::new(&msg.head), IoSlice::new(&msg.body)];
        SockRef::from(&**socket).send_to_vectored(&slices, &remote.into())
    });
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            // The socket buffer is full: wait for room off the caller's task.
            let socket = Arc::clone(socket);
            tokio::spawn(async move {
                let data = msg.to_contiguous();
                if let Err(error) = socket.send_to(&data, remote).await {
                    debug!(%remote, %error, "UDP send failed");
                }
            });
            Ok(())
        }
        Err(e) => Err(SendError::Io(e)),
    }
}

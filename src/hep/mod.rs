//! `-hep-addr`: every SIP message received and sent, as the handler gets it and the transports
//! take it (TLS and WebSocket framing already removed), goes as a HEPv3 packet over UDP to a
//! capture server (Homer, sngrep). [`Capture`] is a [`Tap`] that the server puts between the
//! transports and the proxy only when `-hep-addr` is given, so without it nothing is captured.
//! Capturing never waits: messages go into a bounded queue that one task ([`Sender::run`])
//! drains; when the queue is full the message is dropped and counted.
//!
//! Stream transports (TCP, TLS, WS, WSS) are all marked as TCP: HEP's protocol chunk is the IP
//! protocol, and the port tells the transports apart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sip::Transport;
use crate::transport::{Destination, Encoded, FlowKey, Inbound, Senders, Tap};
use crate::warn_limited;

mod encode;

/// Messages waiting to be sent to the capture server; beyond this they are dropped.
const QUEUE: usize = 4096;

/// One message on its way to the capture server.
#[derive(Debug)]
struct Message {
    source: SocketAddr,
    destination: SocketAddr,
    transport: Transport,
    time: Duration,
    head: Bytes,
    body: Bytes,
}

/// The capturing side: puts messages in the queue, never waiting.
#[derive(Clone, Debug)]
pub struct Capture {
    queue: mpsc::Sender<Message>,
    /// Roundabout's listening address per transport (`Transport as usize`).
    local: Arc<[Option<SocketAddr>; Transport::ALL.len()]>,
    dropped: Arc<AtomicU64>,
}

/// The sending side: the socket connected to the capture server and the queue it drains.
#[derive(Debug)]
pub struct Sender {
    socket: UdpSocket,
    queue: mpsc::Receiver<Message>,
    agent_id: u32,
    dropped: Arc<AtomicU64>,
}

/// Binds the socket to the capture server at `addr`, sending as capture agent `agent_id`.
///
/// # Errors
/// The socket cannot be bound or connected.
pub async fn bind(
    addr: SocketAddr,
    agent_id: u32,
    senders: &Senders,
) -> std::io::Result<(Capture, Sender)> {
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await?;
    socket.connect(addr).await?;
    let (queue, receiver) = mpsc::channel(QUEUE);
    let local = Transport::ALL.map(|transport| senders.local_addr(transport));
    let dropped = Arc::<AtomicU64>::default();
    let capture = Capture {
        queue,
        local: Arc::new(local),
        dropped: Arc::clone(&dropped),
    };
    let sender = Sender {
        socket,
        queue: receiver,
        agent_id,
        dropped,
    };
    Ok((capture, sender))
}

impl Capture {
    /// Messages not captured: the queue was full, or one was too long for a HEP packet.
    #[must_use]
    pub fn dropped(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    fn local(&self, transport: Transport) -> SocketAddr {
        self.local[transport as usize]
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    fn capture(
        &self,
        (source, destination): (SocketAddr, SocketAddr),
        flow: &FlowKey,
        msg: Encoded,
        time: Duration,
    ) {
        let captured = Message {
            source,
            destination,
            transport: flow.transport,
            time,
            head: msg.head,
            body: msg.body,
        };
        if self.queue.try_send(captured).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Sender {
    /// Sends what is queued until `shutdown`, then what is still queued then.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut packet = Vec::with_capacity(2048);
        loop {
            let captured = tokio::select! {
                () = shutdown.cancelled() => match self.queue.try_recv() {
                    Ok(captured) => captured,
                    Err(_) => break,
                },
                captured = self.queue.recv() => match captured {
                    Some(captured) => captured,
                    None => break,
                },
            };
            let payload: [&[u8]; 2] = [&captured.head, &captured.body];
            let hep = encode::Packet {
                source: captured.source,
                destination: captured.destination,
                ip_protocol: ip_protocol(captured.transport),
                time: captured.time,
                agent_id: self.agent_id,
                payload: &payload,
            };
            if let Err(error) = encode::encode(&hep, &mut packet) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                warn_limited!(%error, "message not captured");
                continue;
            }
            if let Err(error) = self.socket.send(&packet).await {
                warn_limited!(%error, "HEP packet not sent");
            }
        }
    }
}

/// HEP's protocol chunk is the IP protocol: TLS, WS and WSS run over TCP too.
fn ip_protocol(transport: Transport) -> u8 {
    if transport.is_stream() {
        encode::IPPROTO_TCP
    } else {
        encode::IPPROTO_UDP
    }
}

impl Tap for Capture {
    /// The message itself (its two parts shared, not copied) and the time it was handed to the
    /// transport. Stamped once the transport took it, a request would be later than an answer
    /// that came back meanwhile, and a capture server orders a call's messages by their time.
    type Sending = (Encoded, Duration);

    fn received(&self, inbound: &Inbound) {
        let msg = Encoded {
            head: inbound.data.clone(),
            body: Bytes::new(),
        };
        let local = self.local(inbound.flow.transport);
        let addresses = (inbound.flow.remote, local);
        self.capture(addresses, &inbound.flow, msg, encode::now());
    }

    fn sending(&self, msg: &Encoded) -> (Encoded, Duration) {
        (msg.clone(), encode::now())
    }

    fn sent(&self, dest: &Destination, (msg, time): (Encoded, Duration)) {
        let local = self.local(dest.flow.transport);
        self.capture((local, dest.flow.remote), &dest.flow, msg, time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(queue: usize) -> (Capture, mpsc::Receiver<Message>) {
        let (sender, receiver) = mpsc::channel(queue);
        let mut local = [None; Transport::ALL.len()];
        local[Transport::Udp as usize] = Some("192.0.2.9:5060".parse().unwrap());
        let capture = Capture {
            queue: sender,
            local: Arc::new(local),
            dropped: Arc::default(),
        };
        (capture, receiver)
    }

    fn inbound() -> Inbound {
        Inbound {
            data: Bytes::from_static(b"OPTIONS sip:a@192.0.2.9 SIP/2.0\r\n\r\n"),
            flow: FlowKey {
                transport: Transport::Udp,
                remote: "192.0.2.1:5070".parse().unwrap(),
            },
            connection: None,
        }
    }

    #[test]
    fn a_received_message_goes_from_the_remote_to_the_listener() {
        let (capture, mut queue) = capture(4);
        capture.received(&inbound());
        let message = queue.try_recv().unwrap();
        assert_eq!(message.source, "192.0.2.1:5070".parse().unwrap());
        assert_eq!(message.destination, "192.0.2.9:5060".parse().unwrap());
        assert_eq!(&message.head[..], &inbound().data[..]);
    }

    #[test]
    fn a_message_sent_is_stamped_before_an_answer_that_came_while_it_was_sent() {
        let (capture, mut queue) = capture(4);
        let request = Encoded {
            head: Bytes::from_static(b"OPTIONS sip:b@192.0.2.1 SIP/2.0\r\n\r\n"),
            body: Bytes::new(),
        };
        let dest = Destination {
            flow: inbound().flow,
            connection: None,
            server_name: None,
            may_connect: true,
        };
        let sending = capture.sending(&request);
        capture.received(&inbound());
        capture.sent(&dest, sending);
        let answer = queue.try_recv().unwrap();
        let sent = queue.try_recv().unwrap();
        assert_eq!(sent.source, "192.0.2.9:5060".parse().unwrap());
        assert!(sent.time <= answer.time, "{sent:?} {answer:?}");
    }

    #[test]
    fn stream_transports_are_marked_tcp() {
        let protocols = Transport::ALL.map(ip_protocol);
        for (transport, protocol) in Transport::ALL.into_iter().zip(protocols) {
            let expected = if transport == Transport::Udp { 17 } else { 6 };
            assert_eq!(protocol, expected, "{transport}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (capture, mut queue) = capture(1);
        capture.received(&inbound());
        capture.received(&inbound());
        capture.received(&inbound());
        assert_eq!(capture.dropped().load(Ordering::Relaxed), 2);
        assert!(queue.try_recv().is_ok());
        assert!(queue.try_recv().is_err());
    }
}

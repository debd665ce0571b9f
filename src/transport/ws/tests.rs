use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::super::deadline::WriteDeadline;
use super::super::queue::QueueSender;
use super::super::stream::tests::{ended, fill, gone, limits, shared, PIPE};
use super::*;
use crate::config::Limits;

const STEP: Duration = Duration::from_secs(5);
const KEY: FlowKey = FlowKey {
    transport: Transport::Ws,
    remote: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        50000,
    )),
};

fn is_close(frame: Option<&Message>, code: CloseCode) -> bool {
    matches!(frame, Some(Message::Close(Some(CloseFrame { code: c, .. }))) if *c == code)
}

/// A served flow on an in-memory stream, and the peer's end of it.
async fn open(
    limits: Limits,
) -> (
    Arc<Shared>,
    WebSocketStream<DuplexStream>,
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Bytes>,
) {
    open_on(limits, 64 * 1024, false).await
}

/// `open` over a pipe holding `pipe` bytes each way, with the write deadline under the
/// WebSocket when `deadline`.
async fn open_on(
    limits: Limits,
    pipe: usize,
    deadline: bool,
) -> (
    Arc<Shared>,
    WebSocketStream<DuplexStream>,
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Bytes>,
) {
    let (shared, inbound) = shared(limits);
    let (ours, theirs) = tokio::io::duplex(pipe);
    let peer = WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
    let admission = shared.flows.admit(KEY.remote.ip()).unwrap();
    let flow = Registered::new(KEY, &shared);
    let (shared_, config) = (Arc::clone(&shared), Some(config(&shared)));
    let served = if deadline {
        let ours = WriteDeadline::new(ours, limits.write_timeout);
        let server = WebSocketStream::from_raw_socket(ours, Role::Server, config).await;
        tokio::spawn(serve(server, flow, shared_, admission))
    } else {
        let server = WebSocketStream::from_raw_socket(ours, Role::Server, config).await;
        tokio::spawn(serve(server, flow, shared_, admission))
    };
    (shared, peer, served, inbound)
}

fn queue(shared: &Shared) -> QueueSender {
    shared.flows.queue(&KEY, None).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_closed_at_the_write_timeout() {
    let started = tokio::time::Instant::now();
    let (shared, _peer, served, _) = open_on(limits(), PIPE, true).await;
    let queue = queue(&shared);
    fill(&shared, &KEY, PIPE);
    assert_eq!(ended(served, started).await, shared.limits.write_timeout);
    gone(&shared, &KEY, &queue);
}

#[tokio::test(start_paused = true)]
async fn no_pong_ends_a_flow_whose_writer_is_stuck() {
    let limits = Limits {
        ws_ping_interval: Duration::from_secs(1),
        ..limits()
    };
    let started = tokio::time::Instant::now();
    // No write deadline under it: only the reader can end this flow.
    let (shared, _peer, served, _) = open_on(limits, PIPE, false).await;
    let queue = queue(&shared);
    fill(&shared, &KEY, PIPE);
    // A ping after one silent interval, none back in the next, then -write-timeout for the
    // writer to finish.
    assert_eq!(
        ended(served, started).await,
        2 * limits.ws_ping_interval + limits.write_timeout
    );
    gone(&shared, &KEY, &queue);
}

#[tokio::test(start_paused = true)]
async fn a_flow_that_answers_pings_but_carries_no_messages_is_closed_at_the_idle_timeout() {
    let limits = Limits {
        ws_ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        ..limits()
    };
    let started = tokio::time::Instant::now();
    let (shared, mut peer, served, mut inbound) = open_on(limits, 64 * 1024, true).await;
    let queue = queue(&shared);
    // A message each way keeps it in use: from the peer at 4 s (without it the flow would
    // close at 5 s), from the proxy at 8 s. The peer reads all along, which answers the pings.
    let mut pings = 0;
    let mut step = 0;
    let bye = loop {
        let at = started + Duration::from_secs([4, 8][step.min(1)]);
        let frame = tokio::select! {
            frame = peer.next() => frame.unwrap().unwrap(),
            () = tokio::time::sleep_until(at), if step < 2 => {
                if step == 0 {
                    peer.send(Message::text("MESSAGE sip:b SIP/2.0\r\n\r\n")).await.unwrap();
                } else {
                    let msg = Bytes::from_static(b"OPTIONS sip:a SIP/2.0\r\n\r\n");
                    queue.try_send(Encoded { head: msg, body: Bytes::new() }).unwrap();
                }
                step += 1;
                continue;
            }
        };
        match frame {
            Message::Ping(_) => pings += 1,
            Message::Text(_) => {}
            other => break other,
        }
    };
    assert!(is_close(Some(&bye), CloseCode::Away), "{bye:?}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(8) + limits.idle_timeout
    );
    // Pinged every second it was silent, and every ping answered (the reading above).
    assert!(pings >= 5, "{pings} pings");
    assert!(inbound.recv().await.is_some());
    ended(served, started).await;
    gone(&shared, &KEY, &queue);
}

#[tokio::test]
async fn a_close_replaces_a_pending_ping_but_not_the_reverse() {
    let (tx, rx) = control_slot();
    tx.send(Message::Ping(Bytes::new()));
    tx.send(close(CloseCode::Size, "message too big"));
    tx.send(Message::Ping(Bytes::new()));
    assert!(is_close(rx.recv().await.as_ref(), CloseCode::Size));
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn the_writer_gets_what_was_posted_before_the_reader_hung_up_then_none() {
    let (tx, rx) = control_slot();
    let writer = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
    tokio::task::yield_now().await;
    tx.send(close(CloseCode::Away, "shutting down"));
    drop(tx);
    let (first, second) = writer.await.unwrap();
    assert!(is_close(first.as_ref(), CloseCode::Away));
    assert!(second.is_none());
}

#[tokio::test]
async fn a_silent_peer_is_pinged_and_told_when_the_proxy_shuts_down() {
    let limits = Limits {
        ws_ping_interval: Duration::from_millis(50),
        ..Limits::DEFAULT
    };
    let (shared, mut peer, served, _) = open(limits).await;
    let ping = timeout(STEP, peer.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
    shared.shutdown.cancel();
    let bye = timeout(STEP, peer.next()).await.unwrap().unwrap().unwrap();
    assert!(is_close(Some(&bye), CloseCode::Away), "{bye:?}");
    timeout(STEP, served).await.unwrap().unwrap();
    assert!(!shared.flows.contains(&KEY));
}

#[tokio::test]
async fn a_message_of_many_read_buffers_arrives_whole() {
    let (_shared, mut peer, _served, mut inbound) = open(Limits::DEFAULT).await;
    let body = "x".repeat(40 * READ_BUFFER);
    let message = format!(
        "MESSAGE sip:a@example.com SIP/2.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    peer.send(Message::text(message.clone())).await.unwrap();
    let data = timeout(STEP, inbound.recv()).await.unwrap().unwrap();
    assert_eq!(data, message.as_bytes());
}

//! The handler with its transactions, in-process: a recording sender instead of sockets and
//! tokio's paused clock for the timers, so every schedule is checked to the millisecond.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decisions::{Counting, Decisions, Dropped};
use super::flood::{OverloadGuard, SourceLimiter};
use super::router::Router;
use super::tests::{config, flow};
use super::transaction::Transactions;
use super::{Proxy, Services};
use crate::config::{SipTimers, TransactionLimits};
use crate::dns::{Resolver, Usable};
use crate::sip::{reply, Encoded, Message, Transport};
use crate::transport::{ConnectionId, Destination, FlowKey, Handler, Inbound, Outbound, SendError};

/// What the proxy sent, when, and to whom.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(Duration, FlowKey, String)>>,
    /// Sends to this transport fail (a trunk that refuses connections), and are counted here.
    failing: Option<Transport>,
    refused: Mutex<Vec<FlowKey>>,
    start: Mutex<Option<Instant>>,
}

impl Outbound for Recorder {
    fn send(&self, dest: &Destination, msg: Encoded) -> Result<(), SendError> {
        if Some(dest.flow.transport) == self.failing {
            self.refused.lock().unwrap().push(dest.flow);
            return Err(SendError::Io(std::io::ErrorKind::ConnectionRefused.into()));
        }
        let start = self.start.lock().unwrap().unwrap_or_else(Instant::now);
        let text = String::from_utf8(msg.to_contiguous().to_vec()).unwrap();
        self.sent
            .lock()
            .unwrap()
            .push((start.elapsed(), dest.flow, text));
        Ok(())
    }

    /// The browser's is the one connection of these tests (`Harness::receive` numbers it 1).
    fn connection_at(&self, remote: SocketAddr, _: Transport) -> Option<(FlowKey, ConnectionId)> {
        (remote == browser().remote).then_some((browser(), ConnectionId(1)))
    }
}

impl Recorder {
    fn take(&self) -> Vec<(Duration, FlowKey, String)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

struct Harness {
    proxy: Proxy,
    sent: Arc<Recorder>,
    stop: CancellationToken,
    decisions: Arc<Decisions>,
}

const UDP_SERVER: &str = "203.0.113.180:5070";

fn browser() -> FlowKey {
    flow(Transport::Ws, "192.0.2.10:50000")
}

fn udp_server() -> FlowKey {
    flow(Transport::Udp, UDP_SERVER)
}

impl Harness {
    fn new(limits: TransactionLimits, failing: Option<Transport>) -> Harness {
        let mut config = config();
        config.strict_host = true;
        let router = Router::new(
            &config,
            vec![
                (Transport::Udp, 5060),
                (Transport::Tcp, 5060),
                (Transport::Ws, 5066),
            ],
        );
        let sent = Arc::new(Recorder {
            failing,
            start: Mutex::new(Some(Instant::now())),
            ..Recorder::default()
        });
        let decisions = Arc::new(Decisions::default());
        let proxy = Proxy::new(
            router,
            Arc::clone(&sent) as Arc<dyn Outbound>,
            SourceLimiter::new(0),
            OverloadGuard::new(0),
            Transactions::new(SipTimers::RFC_3261, limits),
            Counting::On(Arc::clone(&decisions)),
            Services {
                resolver: Resolver::new(None, Transport::Tcp, Usable { udp: true }).unwrap(),
                media: None,
            },
        );
        let stop = CancellationToken::new();
        let timers = proxy.clone();
        let stopped = stop.clone();
        tokio::spawn(async move { timers.run_transaction_timers(stopped).await });
        Harness {
            proxy,
            sent,
            stop,
            decisions,
        }
    }

    fn default() -> Harness {
        Harness::new(TransactionLimits::DEFAULT, None)
    }

    fn receive(&self, from: FlowKey, text: &str) {
        self.proxy.handle(Inbound {
            data: Bytes::from(text.to_owned()),
            flow: from,
            connection: from.transport.is_stream().then_some(ConnectionId(1)),
        });
    }

    /// Lets the timer task run everything due up to `at` after the start.
    async fn run_until(&self, at: Duration) {
        let start = self.sent.start.lock().unwrap().unwrap();
        tokio::time::sleep_until(start + at).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn request(method: &str, n: u32, extra: &str) -> String {
    format!(
        "{method} sip:bob@edge.example.com SIP/2.0\r\n\
         Via: SIP/2.0/WSS b.invalid;branch=z9hG4bK-{method}-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a{n}\r\n\
         To: <sip:bob@edge.example.com>{extra}\r\nCall-ID: call-{n}\r\nCSeq: {n} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// What the UDP server answers to a request as it arrived there.
fn answer(forwarded: &str, code: u16, reason: &str) -> String {
    // A UAS takes more header lines than Roundabout's cap (see the header-limit test).
    let msg = Message::parse_own(Bytes::from(forwarded.to_owned())).unwrap();
    let out = reply::response(&msg, code, reason, "uas");
    String::from_utf8(out.to_contiguous().to_vec()).unwrap()
}

fn start_line(text: &str) -> &str {
    text.split("\r\n").next().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A MESSAGE from a browser to a silent UDP server: Timer E retransmits it at 0.5, 1.5, 3.5,
/// 7.5 s and then every T2, and Timer F answers 408 upstream at 32 s; state is gone after.
#[tokio::test(start_paused = true)]
async fn a_silent_udp_server_gets_retransmissions_and_the_browser_a_408() {
    let h = Harness::default();
    h.receive(browser(), &request("MESSAGE", 1, ""));
    h.run_until(ms(40_000)).await;
    let sent = h.sent.take();
    let to_server: Vec<u128> = sent
        .iter()
        .filter(|(_, to, _)| *to == udp_server())
        .map(|(at, _, _)| at.as_millis())
        .collect();
    assert_eq!(
        to_server,
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let upstream: Vec<_> = sent.iter().filter(|(_, to, _)| *to == browser()).collect();
    assert_eq!(upstream.len(), 1, "{upstream:#?}");
    assert_eq!(upstream[0].0, ms(32_000));
    let timeout = &upstream[0].2;
    assert_eq!(start_line(timeout), "SIP/2.0 408 Request Timeout");
    // Roundabout's own Via is gone; the browser's is the only one, with received/rport.
    let vias: Vec<_> = timeout.lines().filter(|l| l.starts_with("Via:")).collect();
    assert_eq!(vias.len(), 1, "{timeout}");
    assert!(vias[0].contains("branch=z9hG4bK-MESSAGE-1;received=192.0.2.10;rport=50000"));
    assert!(h.proxy.transactions().is_empty());
}

/// The same path when the server answers after one loss: the retransmission gets through,
/// the 200 goes upstream once, its retransmission is absorbed.
#[tokio::test(start_paused = true)]
async fn the_first_final_goes_upstream_and_its_retransmissions_are_absorbed() {
    let h = Harness::default();
    h.receive(browser(), &request("MESSAGE", 2, ""));
    h.run_until(ms(600)).await;
    let sent = h.sent.take();
    assert_eq!(sent.len(), 2, "original and one retransmission");
    let ok = answer(&sent[1].2, 200, "OK");
    h.receive(udp_server(), &ok);
    h.receive(udp_server(), &ok);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].1, browser());
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 200 OK");
    h.run_until(ms(20_000)).await;
    assert!(h.sent.take().is_empty(), "no more retransmissions");
    assert!(h.proxy.transactions().is_empty(), "Timer K freed it");
}

/// INVITE from a browser: Roundabout's own 100 Trying upstream at once; the server's 486 is
/// ACKed on the UDP leg by Roundabout and sent upstream once; the browser's ACK for it is
/// absorbed; a retransmitted 486 is ACKed again and not forwarded.
#[tokio::test(start_paused = true)]
async fn invite_rejected_downstream_is_acked_here() {
    let h = Harness::default();
    let invite = request("INVITE", 3, "");
    h.receive(browser(), &invite);
    let sent = h.sent.take();
    let trying: Vec<_> = sent.iter().filter(|(_, to, _)| *to == browser()).collect();
    assert_eq!(trying.len(), 1);
    assert_eq!(start_line(&trying[0].2), "SIP/2.0 100 Trying");
    assert!(
        trying[0].2.contains("To: <sip:bob@edge.example.com>\r\n"),
        "a 100 has no To tag: {}",
        trying[0].2
    );
    let forwarded = &sent
        .iter()
        .find(|(_, to, _)| *to == udp_server())
        .unwrap()
        .2;
    let busy = answer(forwarded, 486, "Busy Here");
    h.receive(udp_server(), &answer(forwarded, 100, "Trying"));
    h.receive(udp_server(), &busy);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (ack, up): (Vec<_>, Vec<_>) = sent.iter().partition(|(_, to, _)| *to == udp_server());
    assert!(start_line(&ack[0].2).starts_with("ACK sip:bob@edge.example.com SIP/2.0"));
    assert!(ack[0].2.contains("To: <sip:bob@edge.example.com>;tag=uas"));
    assert_eq!(start_line(&up[0].2), "SIP/2.0 486 Busy Here");
    // The browser ACKs the 486 (same branch as its INVITE, RFC 3261 §17.1.1.3).
    let browser_ack = request("ACK", 3, ";tag=uas").replace("z9hG4bK-ACK-3", "z9hG4bK-INVITE-3");
    h.receive(browser(), &browser_ack);
    assert!(h.sent.take().is_empty(), "the browser's ACK is absorbed");
    h.receive(udp_server(), &busy);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, udp_server());
    assert!(start_line(&sent[0].2).starts_with("ACK "));
    h.run_until(ms(40_000)).await;
    assert!(
        h.sent.take().is_empty(),
        "no INVITE retransmission after the final"
    );
    assert!(h.proxy.transactions().is_empty(), "Timer D freed it");
}

/// INVITE retransmitted at Timer A until the server's 180; a 2xx then goes upstream and its
/// retransmission too (RFC 6026); the 2xx ACK is a new request, forwarded.
#[tokio::test(start_paused = true)]
async fn invite_2xx_and_its_retransmissions_go_upstream() {
    let h = Harness::default();
    h.receive(browser(), &request("INVITE", 4, ""));
    h.run_until(ms(1_600)).await;
    let sent = h.sent.take();
    let at: Vec<u128> = sent
        .iter()
        .filter(|(_, to, _)| *to == udp_server())
        .map(|(at, _, _)| at.as_millis())
        .collect();
    assert_eq!(at, [0, 500, 1500], "Timer A");
    let forwarded = &sent.last().unwrap().2;
    h.receive(udp_server(), &answer(forwarded, 180, "Ringing"));
    h.run_until(ms(10_000)).await;
    let sent = h.sent.take();
    assert_eq!(
        sent.len(),
        1,
        "the 180 upstream, no more retransmissions: {sent:#?}"
    );
    let ok = answer(forwarded, 200, "OK");
    h.receive(udp_server(), &ok);
    h.receive(udp_server(), &ok);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    // The retransmission finds no transaction and goes back by the Via, which names WSS for
    // this WS flow: the sender finds the connection by its address (as for any response).
    assert!(
        sent.iter()
            .all(|(_, to, text)| to.remote == browser().remote
                && start_line(text) == "SIP/2.0 200 OK"),
        "{sent:#?}"
    );
    assert!(h.proxy.transactions().is_empty());
}

/// RFC 3261 §16.10: a CANCEL from the browser is answered 200 by Roundabout and sent as a
/// transaction of its own once the INVITE has a provisional response; the server's 200 to it
/// is absorbed; the 487 comes back through the INVITE's transaction and is ACKed here.
#[tokio::test(start_paused = true)]
async fn cancel_is_answered_here_and_sent_after_a_provisional() {
    let h = Harness::default();
    h.receive(browser(), &request("INVITE", 5, ""));
    let sent = h.sent.take();
    let forwarded = sent
        .iter()
        .find(|(_, to, _)| *to == udp_server())
        .unwrap()
        .2
        .clone();
    let cancel = request("CANCEL", 5, "").replace("z9hG4bK-CANCEL-5", "z9hG4bK-INVITE-5");
    h.receive(browser(), &cancel);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1, "no CANCEL before a provisional: {sent:#?}");
    assert_eq!(sent[0].1, browser());
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 200 OK");
    assert!(sent[0].2.contains("CSeq: 5 CANCEL"));
    h.receive(udp_server(), &answer(&forwarded, 180, "Ringing"));
    let sent = h.sent.take();
    let cancel_out = sent
        .iter()
        .find(|(_, to, text)| *to == udp_server() && text.starts_with("CANCEL "))
        .expect("CANCEL sent after the 180");
    // Same branch as the INVITE, so the server matches it (RFC 3261 §9.1).
    let branch = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Via:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(branch(&cancel_out.2), branch(&forwarded));
    h.receive(udp_server(), &answer(&cancel_out.2, 200, "OK"));
    assert!(h.sent.take().is_empty(), "the CANCEL's 200 is absorbed");
    h.receive(udp_server(), &answer(&forwarded, 487, "Request Terminated"));
    let sent = h.sent.take();
    assert!(sent
        .iter()
        .any(|(_, to, text)| *to == browser()
            && start_line(text) == "SIP/2.0 487 Request Terminated"));
    assert!(sent
        .iter()
        .any(|(_, to, text)| *to == udp_server() && text.starts_with("ACK ")));
}

/// Beyond -max-transactions, a request that needs one gets 503 and is not forwarded.
#[tokio::test(start_paused = true)]
async fn the_transaction_limit_answers_503() {
    let h = Harness::new(
        TransactionLimits {
            max: 1,
            max_bytes: 1 << 20,
        },
        None,
    );
    h.receive(browser(), &request("MESSAGE", 6, ""));
    assert_eq!(h.sent.take().len(), 1);
    h.receive(browser(), &request("MESSAGE", 7, ""));
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, browser());
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 503 Service Unavailable");
}

/// A request over TCP that the UA sends twice is one transaction.
#[tokio::test(start_paused = true)]
async fn a_repeated_request_is_absorbed() {
    let h = Harness::default();
    h.receive(browser(), &request("MESSAGE", 8, ""));
    h.receive(browser(), &request("MESSAGE", 8, ""));
    assert_eq!(h.sent.take().len(), 1);
}

/// A response to a stateful request from anywhere but the server it went to is dropped and
/// counted; the transaction goes on and takes the real answer.
#[tokio::test(start_paused = true)]
async fn a_forged_response_to_a_transaction_is_dropped() {
    let h = Harness::default();
    h.receive(browser(), &request("MESSAGE", 9, ""));
    let forwarded = h.sent.take().pop().unwrap().2;
    let ok = answer(&forwarded, 200, "OK");
    h.receive(flow(Transport::Udp, "192.0.2.66:5060"), &ok);
    assert!(h.sent.take().is_empty());
    assert_eq!(h.decisions.dropped(Dropped::Forged), 1);
    h.receive(udp_server(), &ok);
    assert_eq!(h.sent.take().len(), 1);
}

/// RFC 3261 §16.9 and §17.2.1: the ACK for an answer Roundabout gave itself (here a 503 for a
/// TCP trunk it could not reach) ends here; it never goes to the trunk, and nothing is
/// dialled for it.
#[tokio::test(start_paused = true)]
async fn the_ack_of_our_own_answer_is_absorbed() {
    let h = Harness::new(TransactionLimits::DEFAULT, Some(Transport::Tcp));
    let phone = flow(Transport::Udp, "192.0.2.20:5060");
    let invite = request("INVITE", 10, "").replace("edge.example.com", "server.example.com");
    h.receive(phone, &invite);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 503 Service Unavailable");
    let tried = || std::mem::take(&mut *h.sent.refused.lock().unwrap()).len();
    assert_eq!(tried(), 1, "the INVITE was tried");
    let answer = Message::parse(Bytes::from(sent[0].2.clone())).unwrap();
    let tag = answer.to().unwrap();
    let tag = tag.param(answer.bytes(), "tag").unwrap().value.unwrap();
    let tag = std::str::from_utf8(answer.slice(tag)).unwrap().to_owned();
    let ack = request("ACK", 10, &format!(";tag={tag}"))
        .replace("edge.example.com", "server.example.com")
        .replace("z9hG4bK-ACK-10", "z9hG4bK-INVITE-10");
    h.receive(phone, &ack);
    assert!(h.sent.take().is_empty());
    assert_eq!(tried(), 0, "the ACK of our 503 is not sent to the trunk");
    // The ACK of a 2xx from the trunk (its tag) is a request like any other: routed.
    h.receive(phone, &ack.replace(&tag, "trunk-tag"));
    assert_eq!(tried(), 1);
}

/// An INVITE with as many header lines as the parser takes: forwarded, it has one more (the
/// Via Roundabout pushed). Its transaction must still be able to cancel it at Timer C and answer
/// 408, not leak.
#[tokio::test(start_paused = true)]
async fn a_request_at_the_header_limit_is_still_cancelled_and_answered() {
    let h = Harness::default();
    let pad: String = (0..249).map(|i| format!("\r\nX-Pad-{i}: x")).collect();
    let invite = request("INVITE", 40, &pad);
    assert!(Message::parse(Bytes::from(invite.clone())).is_ok());
    h.receive(browser(), &invite);
    let sent = h.sent.take();
    let forwarded = &sent
        .iter()
        .find(|(_, to, _)| *to == udp_server())
        .unwrap()
        .2;
    assert!(
        Message::parse(Bytes::from(forwarded.clone())).is_err(),
        "over the limit once forwarded"
    );
    h.receive(udp_server(), &answer(forwarded, 180, "Ringing"));
    assert_eq!(h.sent.take().len(), 1, "the 180 goes upstream");
    h.run_until(ms(181_000)).await;
    let sent = h.sent.take();
    assert!(
        sent.iter()
            .any(|(_, to, text)| *to == udp_server() && text.starts_with("CANCEL ")),
        "Timer C cancels it: {sent:#?}"
    );
    h.run_until(ms(214_000)).await;
    let sent = h.sent.take();
    assert!(
        sent.iter()
            .any(|(_, to, text)| *to == browser()
                && start_line(text) == "SIP/2.0 408 Request Timeout")
    );
    assert!(h.proxy.transactions().is_empty());
}

/// The caller's connection closes while its INVITE rings: Roundabout cancels it downstream at
/// once; a CANCEL the caller still sends for it is answered 200 and not sent again.
#[tokio::test(start_paused = true)]
async fn a_closed_caller_connection_cancels_its_ringing_invite() {
    let h = Harness::default();
    h.receive(browser(), &request("INVITE", 41, ""));
    let forwarded = h
        .sent
        .take()
        .into_iter()
        .find(|(_, to, _)| *to == udp_server())
        .unwrap()
        .2;
    h.receive(udp_server(), &answer(&forwarded, 180, "Ringing"));
    h.sent.take();
    h.proxy.connection_closed(browser(), ConnectionId(1));
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].2.starts_with("CANCEL "));
    // The INVITE ends (a 2xx that crossed the CANCEL); the caller's own CANCEL comes late.
    h.receive(udp_server(), &answer(&forwarded, 200, "OK"));
    h.sent.take();
    let cancel = request("CANCEL", 41, "").replace("z9hG4bK-CANCEL-41", "z9hG4bK-INVITE-41");
    h.receive(browser(), &cancel);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].1, browser());
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 200 OK");
}

/// RFC 3261 §16.7 step 10: a 2xx after a non-2xx (from a forking next hop) goes upstream.
#[tokio::test(start_paused = true)]
async fn a_2xx_after_a_non_2xx_goes_upstream() {
    let h = Harness::default();
    h.receive(browser(), &request("INVITE", 42, ""));
    let forwarded = h
        .sent
        .take()
        .into_iter()
        .find(|(_, to, _)| *to == udp_server())
        .unwrap()
        .2;
    h.receive(udp_server(), &answer(&forwarded, 486, "Busy Here"));
    h.sent.take();
    h.receive(udp_server(), &answer(&forwarded, 200, "OK"));
    let sent = h.sent.take();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].1.remote, browser().remote);
    assert_eq!(start_line(&sent[0].2), "SIP/2.0 200 OK");
}
/// A response that goes back by its Via (no transaction takes it: here the retransmission of
/// a 2xx to INVITE) goes on the connection the browser uses, although its Via names WSS and the
/// connection is WS.
#[tokio::test(start_paused = true)]
async fn a_response_by_the_via_goes_on_the_connection_the_peer_uses() {
    let h = Harness::default();
    h.receive(browser(), &request("INVITE", 11, ""));
    let sent = h.sent.take();
    let forwarded = sent.iter().find(|(_, to, _)| *to == udp_server()).unwrap();
    let ok = answer(&forwarded.2, 200, "OK");
    h.receive(udp_server(), &ok);
    h.receive(udp_server(), &ok);
    let sent = h.sent.take();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(sent.iter().all(|(_, to, _)| *to == browser()), "{sent:#?}");
    assert!(h.proxy.transactions().is_empty());
}

//! Reliable bridging (issue 13): a UA on a reliable transport (WS, WSS, TCP) never retransmits
//! (RFC 3261 §17.1.1.2), so when Roundabout carries its request on over UDP, Roundabout alone
//! can make up for a lost datagram. Here the UDP leg loses 10 % of its datagrams each way — a
//! seeded relay in front of a SIPp UAS, or SIPp's own `-lost` — and every transaction must still
//! complete: 200 MESSAGEs from JsSIP and 50 INVITE/ACK/BYE calls from a raw WebSocket UAC, over
//! WS and WSS, and 50 calls from a SIPp UAC over TCP. The same harness without loss is the
//! control. Each test prints its figures (`cargo test --test e2e_reliable -- --nocapture`).

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::lossy::{LossyRelay, RelayCounts};
use common::node::{self, Json, NodeScript};
use common::process::poll_until;
use common::{free_port, header, require, wait_udp_bound, Roundabout, Sipp, UdpPeer};

/// Loss on the UDP leg, each way, in percent.
const LOSS: u32 = 10;
/// The relay's seed (the number): the same drop pattern for the same datagram order.
const SEED: u64 = 13;
const MESSAGES: u64 = 200;
const CALLS: u64 = 50;

const UAS_IP: &str = "127.0.0.2";
const UAC_IP: &str = "127.0.0.3";
const RELAY_IP: &str = "127.0.0.5";
/// The UDP server's name in the trusted-server table, and the Request-URI the UAs use.
const SERVER: &str = "uas.test";
const TARGET: &str = "sip:uas@uas.test";

/// The `<timewait>` of uas_lossy.xml: the UAS ends this long after its last call.
const UAS_TIMEWAIT: Duration = Duration::from_secs(16);
/// How long a UA waits for any one final response. With Timers E/A doubling from T1 = 500 ms up
/// to T2 = 4 s a proxy sends a request 8 times within it, so at 19 % loss per round trip a
/// transaction is still unanswered after it once in half a million; without retransmission,
/// one in five.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// What a whole run of a test's UA may take; the tests stay well under 90 s.
const RUN: Duration = Duration::from_secs(75);
const STEP: Duration = Duration::from_secs(10);

/// How the UDP leg loses datagrams.
#[derive(Clone, Copy)]
enum Loss {
    /// The seeded relay, dropping this percentage each way (0: the control).
    Relay(u32),
    /// SIPp's `-lost`: the UAS itself throws away this percentage of what it receives and of
    /// what it sends (on UDP every message goes through that check).
    Sipp(u32),
}

/// The UDP leg: a SIPp UAS on UDP, behind the relay unless SIPp loses the datagrams itself.
struct UdpLeg {
    uas: Sipp,
    relay: Option<LossyRelay>,
    loss: Loss,
    /// What Roundabout sends to: the relay, or the UAS itself.
    front: SocketAddr,
}

impl UdpLeg {
    /// Starts the UAS (ending after `calls` calls when given, else running until dropped) and
    /// waits until it is bound.
    fn start(loss: Loss, calls: Option<u64>) -> UdpLeg {
        let port = free_port(UAS_IP);
        let mut uas = Sipp::run("uas_lossy.xml", UAS_IP, port, "udp").arg("-timeout", 90);
        if let Loss::Sipp(percent) = loss {
            uas = uas.arg("-lost", percent);
        }
        if let Some(calls) = calls {
            uas = uas.calls(calls);
        }
        let uas = uas.spawn();
        let addr: SocketAddr = format!("{UAS_IP}:{port}").parse().unwrap();
        assert!(wait_udp_bound(addr, STEP), "SIPp UAS did not bind {addr}");
        let relay = match loss {
            Loss::Relay(percent) => Some(LossyRelay::start(RELAY_IP, addr, percent, SEED)),
            Loss::Sipp(_) => None,
        };
        let front = relay.as_ref().map_or(addr, LossyRelay::addr);
        UdpLeg {
            uas,
            relay,
            loss,
            front,
        }
    }

    /// The `-trusted-server` dataset for the leg.
    fn trusted(&self) -> String {
        format!("{}:{SERVER}:{}:udp:", self.front.ip(), self.front.port())
    }

    /// Checks that the loss asked for really happened (datagrams dropped each way, or none in
    /// the control) and says what it was.
    fn check_loss(&self) -> String {
        match (self.loss, &self.relay) {
            (Loss::Relay(percent), Some(relay)) => {
                let counts = relay.counts();
                let RelayCounts {
                    to_server,
                    to_client,
                } = counts;
                assert!(
                    to_server.forwarded > 0 && to_client.forwarded > 0,
                    "the relay carried traffic each way: {counts}"
                );
                if percent == 0 {
                    assert_eq!(to_server.dropped + to_client.dropped, 0, "{counts}");
                } else {
                    assert!(
                        to_server.dropped > 0 && to_client.dropped > 0,
                        "the relay dropped datagrams each way: {counts}"
                    );
                }
                format!("relay at {percent} %: {counts}")
            }
            (Loss::Sipp(percent), _) => {
                let (received, sent) = self.uas.lost();
                assert!(
                    received > 0 && sent > 0,
                    "SIPp -lost {percent} dropped messages each way: {received} received, {sent} sent"
                );
                format!("SIPp -lost {percent}: {received} received and {sent} sent messages lost")
            }
            (Loss::Relay(_), None) => unreachable!("a relay leg has its relay"),
        }
    }

    /// The distinct Call-IDs of the requests `method` the UAS got.
    fn call_ids(&self, method: &str) -> BTreeSet<String> {
        let prefix = format!("{method} ");
        self.uas
            .received()
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .filter_map(|m| header(m, "Call-ID").map(String::from))
            .collect()
    }
}

/// Roundabout in front of the leg, taking WS or WSS (with a test CA the Node peers trust) or
/// TCP, and the URL or address a UA on `transport` uses.
struct Proxy {
    rb: Roundabout,
    ca: Option<TestCa>,
}

impl Proxy {
    fn start(leg: &UdpLeg, transport: &str) -> Proxy {
        let mut args = [
            "-strict-host",
            "-ack-ruri",
            "-trusted-server",
            &leg.trusted(),
        ]
        .map(String::from)
        .to_vec();
        let ca = (transport == "wss").then(TestCa::new);
        if let Some(ca) = &ca {
            args.extend(ca.leaf("proxy.test").wss_flags());
        }
        Proxy {
            rb: Roundabout::start(&args),
            ca,
        }
    }

    fn url(&self, transport: &str) -> String {
        format!("{transport}://127.0.0.1:{}", self.rb.port(transport))
    }

    /// The environment for a Node peer: trust the test CA (WSS).
    fn node_env(&self) -> Vec<(&'static str, String)> {
        self.ca
            .iter()
            .map(|ca| ("NODE_EXTRA_CA_CERTS", ca.cert.display().to_string()))
            .collect()
    }
}

fn peers_for(transport: &str) -> bool {
    require("sipp")
        && (transport == "tcp" || node::require_node())
        && (transport != "wss" || require("openssl"))
}

/// Starts the UDP leg, Roundabout taking `transport` (ws or wss) in front of it, and the Node
/// `script` connecting there (`--ws URL --deadline 80`, then `args`); `None` when a peer
/// program is missing (outside CI).
fn ws_peer(
    transport: &str,
    loss: Loss,
    script: &str,
    args: &[&str],
) -> Option<(UdpLeg, Proxy, NodeScript)> {
    if !peers_for(transport) {
        return None;
    }
    let leg = UdpLeg::start(loss, None);
    let proxy = Proxy::start(&leg, transport);
    let url = proxy.url(transport);
    let mut all = vec!["--ws", &url, "--deadline", "80"];
    all.extend(args);
    let env = proxy.node_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = NodeScript::spawn(script, &all, &env);
    Some((leg, proxy, node))
}

/// JsSIP on `transport` sends [`MESSAGES`] MESSAGEs through Roundabout over the UDP leg; every
/// one must get its 200.
fn messages_over(transport: &str, loss: Loss) {
    let started = Instant::now();
    let (count, answer_timeout) = (MESSAGES.to_string(), ANSWER_TIMEOUT.as_secs().to_string());
    let Some((leg, _proxy, mut jssip)) = ws_peer(
        transport,
        loss,
        "jssip_client.js",
        &[
            "--uri",
            "sip:ws-user@uas.test",
            "--register",
            "0",
            "--message-to",
            TARGET,
            "--messages",
            &count,
            "--message-rate",
            "50",
            "--answer-timeout",
            &answer_timeout,
        ],
    ) else {
        return;
    };
    let done = jssip.wait_any(&["messages_done", "error", "timeout"], RUN);
    let loss_seen = leg.check_loss();
    let ok = done.get("ok").and_then(Json::as_u64);
    let statuses = match done.get("statuses") {
        Some(Json::Obj(members)) => members
            .iter()
            .map(|(code, n)| format!("{code}: {}", n.as_u64().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    eprintln!(
        "{transport} MESSAGE: {}/{MESSAGES} answered 200 (final statuses {{{statuses}}}, {} \
         unanswered; {loss_seen}) in {:.1} s",
        ok.unwrap_or_default(),
        done.get("unanswered")
            .and_then(Json::as_u64)
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (done.event(), ok, done.get("sent").and_then(Json::as_u64)),
        (Some("messages_done"), Some(MESSAGES), Some(MESSAGES)),
        "every MESSAGE over {transport} gets its 200 across the UDP leg ({loss_seen}): {done:?}\n{}",
        jssip.transcript()
    );
    assert_eq!(
        leg.call_ids("MESSAGE").len() as u64,
        MESSAGES,
        "each MESSAGE reached the UAS"
    );
}

/// The raw WebSocket UAC on `transport` places [`CALLS`] calls through Roundabout over the UDP
/// leg; every one must get its 200, its ACK to the UAS's Contact and a 200 for its BYE.
fn calls_over(transport: &str, loss: Loss) {
    let started = Instant::now();
    let (calls, timeout) = (CALLS.to_string(), ANSWER_TIMEOUT.as_millis().to_string());
    let Some((leg, _proxy, mut uac)) = ws_peer(
        transport,
        loss,
        "ws_uac.js",
        &[
            "--target",
            TARGET,
            "--calls",
            &calls,
            "--rate",
            "10",
            "--sockets",
            "10",
            "--hold-ms",
            "1000",
            "--timeout-ms",
            &timeout,
        ],
    ) else {
        return;
    };
    let done = uac.wait_any(&["calls_done", "error", "timeout"], RUN);
    let loss_seen = leg.check_loss();
    let outcomes = uac.events("call");
    let acks: u64 = outcomes.iter().map(|o| o.num("acks")).sum();
    let acked = leg.call_ids("ACK").len();
    let byed = leg.call_ids("BYE").len();
    let completed = done.get("completed").and_then(Json::as_u64);
    let failed: Vec<u64> = done
        .get("failed")
        .and_then(Json::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(Json::as_u64)
        .collect();
    eprintln!(
        "{transport} calls: {}/{CALLS} completed (failed: calls {failed:?}; {acks} ACKs sent for \
         {} calls; the UAS saw ACK in {acked} and BYE in {byed}; {loss_seen}) in {:.1} s",
        completed.unwrap_or_default(),
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (done.event(), completed),
        (Some("calls_done"), Some(CALLS)),
        "every call over {transport} completes across the UDP leg ({loss_seen}): {done:?}\n{}",
        uac.transcript()
    );
    assert_eq!(byed as u64, CALLS, "each BYE reached the UAS");
    // An ACK goes once per 2xx that reaches the UAC and a BYE may overtake a lost one, so under
    // loss a few calls may end without the UAS seeing it; most must, and all without loss.
    match loss {
        Loss::Relay(0) => assert_eq!(acked as u64, CALLS, "each ACK reached the UAS"),
        _ => assert!(
            acked as u64 >= CALLS * 8 / 10,
            "ACKs reached the UAS in {acked} of {CALLS} calls"
        ),
    }
}

/// A SIPp UAC on TCP places [`CALLS`] calls through Roundabout over the UDP leg; both SIPps
/// must end with every call successful (exit code 0).
fn sipp_calls_over_tcp(loss: Loss) {
    if !peers_for("tcp") {
        return;
    }
    let started = Instant::now();
    let mut leg = UdpLeg::start(loss, Some(CALLS));
    let proxy = Proxy::start(&leg, "tcp");
    // A call whose request or answer was lost for good fails instead of hanging.
    let mut uac = Sipp::run("uac.xml", UAC_IP, free_port(UAC_IP), "tcp")
        .to(leg.front)
        .via(proxy.rb.addr("tcp"))
        .key("uas_transport", "udp")
        .calls(CALLS)
        .rate(10)
        .arg("-recv_timeout", ANSWER_TIMEOUT.as_millis())
        .arg("-timeout", 70)
        .spawn();
    let uac_code = uac.wait(RUN);
    // The UAS ends after its last call's timewait, if all its calls came: after a failed UAC
    // it has calls that never will, so it is not waited for long.
    let uas_wait = if uac_code == Some(0) {
        UAS_TIMEWAIT + STEP
    } else {
        Duration::from_secs(1)
    };
    let uas_code = leg.uas.wait(uas_wait);
    let loss_seen = leg.check_loss();
    let completed: BTreeSet<String> = uac
        .received()
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some("2 BYE"))
        .filter_map(|m| header(m, "Call-ID").map(String::from))
        .collect();
    eprintln!(
        "tcp calls (SIPp): {}/{CALLS} completed; exit codes UAC {uac_code:?}, UAS {uas_code:?} \
         ({loss_seen}) in {:.1} s",
        completed.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (completed.len() as u64, uac_code, uas_code),
        (CALLS, Some(0), Some(0)),
        "every call from TCP completes across the UDP leg ({loss_seen})\nUAC errors:\n{}\nUAS \
         errors:\n{}",
        uac.errors(),
        leg.uas.errors()
    );
}

#[test]
fn ws_messages_complete_across_a_lossy_udp_leg() {
    messages_over("ws", Loss::Relay(LOSS));
}

#[test]
fn wss_messages_complete_across_a_lossy_udp_leg() {
    messages_over("wss", Loss::Relay(LOSS));
}

#[test]
fn ws_calls_complete_across_a_lossy_udp_leg() {
    calls_over("ws", Loss::Relay(LOSS));
}

#[test]
fn wss_calls_complete_across_a_lossy_udp_leg() {
    calls_over("wss", Loss::Relay(LOSS));
}

#[test]
fn tcp_calls_complete_across_a_lossy_udp_leg() {
    sipp_calls_over_tcp(Loss::Relay(LOSS));
}

#[test]
fn tcp_calls_complete_when_the_udp_uas_loses_messages_itself() {
    sipp_calls_over_tcp(Loss::Sipp(LOSS));
}

/// The control: the same harness without loss passes with stateless forwarding too, so a
/// failure above is the loss's doing.
#[test]
fn ws_messages_and_calls_complete_without_loss() {
    messages_over("ws", Loss::Relay(0));
    calls_over("ws", Loss::Relay(0));
}

#[test]
fn wss_messages_and_calls_complete_without_loss() {
    messages_over("wss", Loss::Relay(0));
    calls_over("wss", Loss::Relay(0));
}

#[test]
fn tcp_calls_complete_without_loss() {
    sipp_calls_over_tcp(Loss::Relay(0));
}

/// Sends `n` numbered datagrams from a client to a server through a relay seeded with `seed`,
/// and as many back; the numbers that got through each way, and the relay's counts.
fn through_relay(seed: u64, n: usize) -> (Vec<usize>, Vec<usize>, RelayCounts) {
    let server = UdpPeer::bind(UAS_IP);
    let relay = LossyRelay::start(RELAY_IP, server.addr(), LOSS, seed);
    let client = UdpPeer::bind(UAC_IP);
    // In batches, each waited for by the relay's counts, so no socket buffer overflows and
    // only the relay drops anything.
    let batch = 25;
    let pass = |from: &UdpSocket,
                to: SocketAddr,
                at: &UdpSocket,
                handled: &dyn Fn(RelayCounts) -> (u64, u64)| {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let mut read = 0;
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            for i in start..end {
                from.send_to(i.to_string().as_bytes(), to).unwrap();
            }
            let counted = || {
                let (forwarded, dropped) = handled(relay.counts());
                (forwarded + dropped == end as u64).then_some((forwarded, dropped))
            };
            let (forwarded, _) =
                poll_until(Instant::now() + STEP, Duration::from_millis(5), counted)
                    .unwrap_or_else(|| panic!("the relay saw every datagram: {}", relay.counts()));
            while read < forwarded {
                let (len, source) = at.recv_from(&mut buf).unwrap();
                got.push((
                    std::str::from_utf8(&buf[..len]).unwrap().parse().unwrap(),
                    source,
                ));
                read += 1;
            }
        }
        got
    };
    let to_server = pass(&client.socket, relay.addr(), &server.socket, &|c| {
        (c.to_server.forwarded, c.to_server.dropped)
    });
    // The relay's server-facing socket, as the server sees it.
    let back = to_server[0].1;
    let to_client = pass(&server.socket, back, &client.socket, &|c| {
        (c.to_client.forwarded, c.to_client.dropped)
    });
    assert!(
        to_client.iter().all(|(_, source)| *source == relay.addr()),
        "the server's datagrams reach the client from the address it sent to"
    );
    let numbers = |got: Vec<(usize, SocketAddr)>| got.into_iter().map(|(i, _)| i).collect();
    (numbers(to_server), numbers(to_client), relay.counts())
}

#[test]
fn the_relay_drops_a_seeded_fraction_each_way() {
    let n = 500;
    let (to_server, to_client, counts) = through_relay(SEED, n);
    for (way, got) in [("to server", &to_server), ("to client", &to_client)] {
        let dropped = n - got.len();
        assert!(
            (n / 20..n * 3 / 20).contains(&dropped),
            "{way}: {dropped} of {n} dropped at {LOSS} % ({counts})"
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{way}: in order");
    }
    assert_ne!(to_server, to_client, "each way draws its own drops");
    assert_eq!(
        counts.to_server.dropped + counts.to_client.dropped,
        (2 * n - to_server.len() - to_client.len()) as u64
    );
    // The same seed drops the same datagrams; another seed others.
    let (again_server, again_client, _) = through_relay(SEED, n);
    assert_eq!((&again_server, &again_client), (&to_server, &to_client));
    let (other_server, _, _) = through_relay(SEED + 1, n);
    assert_ne!(other_server, to_server);
}

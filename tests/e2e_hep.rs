//! `-hep-addr` against a real capture server: sngrep listens for HEP and writes what it gets to
//! a pcap; SIPp sends MESSAGEs over UDP through Roundabout to a UDP server. Every message of
//! the exchange is then in the pcap as readable SIP on both legs, with the real addresses:
//! SIPp to Roundabout's UDP listener, Roundabout's listener to the server, and back. With
//! `-metrics-addr` as well, the messages are counted too and no capture was dropped. JsSIP over
//! WSS: its REGISTER and MESSAGE show as readable SIP inside the TLS and WebSocket framing. A
//! call over WSS to a SIPp UAS on UDP: every message of it on both legs, in order.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::http::get;
use common::node::{self, Json, NodeScript};
use common::process::wait_for_exit;
use common::udp_server::UdpServer;
use common::{free_port, header, require, sipp_messages, uri_of, wait_udp_bound, Roundabout, Sipp};

/// MESSAGEs SIPp sends.
const CALLS: usize = 3;
/// What any single step may take.
const STEP: Duration = Duration::from_secs(10);

/// One captured packet: its time, IP protocol, source, destination and the transport payload.
/// (sngrep writes each HEP packet it gets as a UDP frame, whatever its protocol chunk says.)
#[derive(Debug)]
struct Frame {
    time: Duration,
    protocol: u8,
    source: SocketAddr,
    destination: SocketAddr,
    payload: String,
}

/// The IPv4 UDP and TCP frames of a pcap file (24-byte global header, then 16-byte record
/// headers each followed by the frame), whatever the link type sngrep chose, in the order of
/// their time: sngrep writes them as they arrive, stamped with the HEP packet's time, and a
/// capture server shows a call's messages in time order.
fn frames(pcap: &[u8]) -> Vec<Frame> {
    let Some(header) = pcap.get(..24) else {
        return Vec::new();
    };
    let little = header[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || header[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let nanos = header[..4] == [0x4d, 0x3c, 0xb2, 0xa1] || header[..4] == [0xa1, 0xb2, 0x3c, 0x4d];
    let u32_at = |bytes: &[u8], at: usize| {
        let word: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    };
    let link_header = match u32_at(header, 20) {
        1 => 14,      // Ethernet
        113 => 16,    // Linux cooked
        276 => 20,    // Linux cooked v2
        0 | 108 => 4, // BSD loopback
        _ => 0,       // raw IP
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let fraction = u32_at(pcap, at + 4);
        let time = Duration::from_secs(u32_at(pcap, at).into())
            + if nanos {
                Duration::from_nanos(fraction.into())
            } else {
                Duration::from_micros(fraction.into())
            };
        let captured = u32_at(pcap, at + 8) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + captured) else {
            break;
        };
        at += 16 + captured;
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            continue;
        }
        let ip_header = usize::from(ip[0] & 0x0f) * 4;
        let address = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let port = |at: usize| u16::from_be_bytes([ip[at], ip[at + 1]]);
        let protocol = ip[9];
        let transport_header = match protocol {
            17 => 8,
            6 => usize::from(ip[ip_header + 12] >> 4) * 4,
            _ => continue,
        };
        frames.push(Frame {
            time,
            protocol,
            source: SocketAddr::from((address(12), port(ip_header))),
            destination: SocketAddr::from((address(16), port(ip_header + 2))),
            payload: String::from_utf8_lossy(&ip[ip_header + transport_header..]).into_owned(),
        });
    }
    frames.sort_by_key(|frame| frame.time);
    frames
}

/// sngrep as a HEP server on a free loopback port, writing what it gets to a pcap in a temp dir
/// of its own; killed (by its PID) on drop if the test never stopped it.
struct Capture {
    hep: SocketAddr,
    sngrep: Child,
    pcap: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Started and listening.
    fn start() -> Capture {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("out.pcap");
        let hep = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
        let sngrep = Command::new("sngrep")
            .args(["-N", "-q", "-L", &format!("udp:{hep}"), "-O"])
            .arg(&pcap)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sngrep starts");
        assert!(wait_udp_bound(hep, STEP), "sngrep never listened on {hep}");
        Capture {
            hep,
            sngrep,
            pcap,
            _dir: dir,
        }
    }

    /// Stops Roundabout, which sends what it queued before it exits, then sngrep, which writes
    /// the pcap as it stops, and reads that.
    fn stop(&mut self, rb: &mut Roundabout) -> Vec<Frame> {
        rb.signal("TERM");
        assert_eq!(rb.wait_exit(STEP), Some(0), "{}", rb.logs());
        let _ = Command::new("kill")
            .args(["-TERM", &self.sngrep.id().to_string()])
            .status();
        assert!(
            wait_for_exit(&mut self.sngrep, Instant::now() + STEP).is_some(),
            "sngrep did not stop"
        );
        let frames = frames(&std::fs::read(&self.pcap).unwrap_or_default());
        assert!(
            !frames.is_empty(),
            "nothing in {}\nproxy log:\n{}",
            self.pcap.display(),
            rb.logs()
        );
        frames
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this PID; after `stop` it has exited already.
        let _ = self.sngrep.kill();
        let _ = self.sngrep.wait();
    }
}

/// Roundabout in front of the UDP server at `server`, known as `name`, capturing to `capture`
/// with `extra` flags; no drain, so it stops at once.
fn proxy(server: SocketAddr, name: &str, capture: &Capture, extra: &[String]) -> Roundabout {
    let trusted = format!("{}:{name}:{}:udp:", server.ip(), server.port());
    let hep = capture.hep.to_string();
    let mut args = [
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
        "-drain-timeout",
        "0",
        "-hep-addr",
        &hep,
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(extra);
    Roundabout::start(&args)
}

#[test]
fn every_message_of_both_legs_reaches_the_capture_server() {
    if !require("sipp") || !require("sngrep") {
        return;
    }
    let mut capture = Capture::start();
    let mut server = UdpServer::start("127.0.0.2");
    // Metrics on too: both taps at once, and the drop count shown.
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let extra = ["-hep-id", "4242", "-metrics-addr", &metrics.to_string()].map(String::from);
    let mut rb = proxy(server.addr, "registrar.test", &capture, &extra);
    let proxy = rb.addr("udp");
    let sipp_addr = SocketAddr::from(([127, 0, 0, 3], free_port("127.0.0.3")));
    let uac = sipp_messages(
        &rb,
        "127.0.0.3",
        sipp_addr.port(),
        "sip:bob@registrar.test",
        CALLS,
    );
    let call_ids: Vec<String> = uac
        .sent()
        .iter()
        .filter(|m| m.starts_with("MESSAGE "))
        .filter_map(|m| header(m, "Call-ID").map(str::to_owned))
        .collect();
    assert!(call_ids.len() >= CALLS, "{call_ids:?}");
    let server_got = server.all().len();
    assert!(server_got >= CALLS);
    let scrape = get(metrics, "/metrics").expect("metrics answer").body;
    assert!(
        scrape
            .lines()
            .any(|line| line == "roundabout_hep_dropped_total 0"),
        "{scrape}"
    );
    let requests = r#"roundabout_sip_requests_received_total{transport="udp",method="MESSAGE"} "#;
    assert!(
        scrape
            .lines()
            .any(|line| line.strip_prefix(requests) == Some(&uac.sent().len().to_string())),
        "{scrape}"
    );

    let frames = capture.stop(&mut rb);

    let legs = [
        ("MESSAGE ", sipp_addr, proxy),
        ("MESSAGE ", proxy, server.addr),
        ("SIP/2.0 200", server.addr, proxy),
        ("SIP/2.0 200", proxy, sipp_addr),
    ];
    for call_id in &call_ids {
        for (start, source, destination) in legs {
            let found = frames.iter().any(|frame| {
                frame.protocol == 17
                    && frame.source == source
                    && frame.destination == destination
                    && frame.payload.starts_with(start)
                    && header(&frame.payload, "Call-ID") == Some(call_id.as_str())
            });
            assert!(
                found,
                "no {start} {source} -> {destination} of {call_id} in the capture:\n{frames:#?}"
            );
        }
    }
    // Nothing else: each message once, retransmissions included (SIPp's and the server's).
    let sipp_sent = uac.sent().len();
    let sipp_got = uac.received().len();
    assert_eq!(
        frames.len(),
        sipp_sent + sipp_got + server_got * 2,
        "{frames:#?}"
    );
}

/// JsSIP over WSS registers through Roundabout to a UDP registrar and sends a MESSAGE: the
/// capture shows both inside the TLS and WebSocket framing, as IP protocol TCP to Roundabout's
/// WSS listener, and on the UDP leg, with both 200s back.
#[test]
fn a_wss_leg_is_captured_as_readable_sip() {
    if !require("sngrep") || !require("openssl") || !node::require_node() {
        return;
    }
    let mut capture = Capture::start();
    let ca = TestCa::new();
    let mut registrar = UdpServer::start("127.0.0.2");
    let wss_flags = ca.leaf("proxy.test").wss_flags();
    let mut rb = proxy(registrar.addr, "registrar.test", &capture, &wss_flags);
    let (udp, wss) = (rb.addr("udp"), rb.addr("wss"));
    let url = format!("wss://127.0.0.1:{}", wss.port());
    let jssip = node::jssip_alice_messages_bob(&url, Some(&ca.cert));
    let register = registrar.wait_request("REGISTER", STEP);
    let message = registrar.wait_request("MESSAGE", STEP);
    drop(jssip);
    let frames = capture.stop(&mut rb);

    for (method, request) in [("REGISTER", &register), ("MESSAGE", &message)] {
        let call_id = header(request, "Call-ID").unwrap();
        let of_call = |frame: &&Frame| header(&frame.payload, "Call-ID") == Some(call_id);
        // JsSIP's port is its own; sngrep writes every HEP packet into its pcap as a UDP
        // frame, so the IP protocol (6 for the WSS leg) is not in the pcap to check.
        let legs = [
            (method, None, Some(wss)),
            (method, Some(udp), Some(registrar.addr)),
            ("SIP/2.0 200", Some(registrar.addr), Some(udp)),
            ("SIP/2.0 200", Some(wss), None),
        ];
        for (start, source, destination) in legs {
            let found = frames.iter().filter(of_call).any(|frame| {
                source.is_none_or(|source| frame.source == source)
                    && destination.is_none_or(|destination| frame.destination == destination)
                    && frame.payload.starts_with(start)
            });
            assert!(
                found,
                "no {start} {source:?} -> {destination:?} of {call_id}:\n{frames:#?}"
            );
        }
    }
}

/// One message of a leg as the capture shows it: source, destination and start line.
type Hop<'a> = (SocketAddr, SocketAddr, &'a str);

/// The messages of `frames` between `a` and `b` (either way), in their order. Each must be a
/// whole SIP message (its Content-Length is its body, no framing left around it). A repeat of
/// one already there, same way, start line and CSeq, is a retransmission and listed once;
/// `repeats` counts those.
fn leg<'a>(
    frames: &[&'a Frame],
    a: SocketAddr,
    b: SocketAddr,
    repeats: &mut usize,
) -> Vec<Hop<'a>> {
    let mut seen: Vec<(Hop<'a>, Option<&str>)> = Vec::new();
    for frame in frames {
        if ![(a, b), (b, a)].contains(&(frame.source, frame.destination)) {
            continue;
        }
        let (head, body) = frame.payload.split_once("\r\n\r\n").unwrap_or_default();
        let length = header(head, "Content-Length").and_then(|l| l.parse().ok());
        assert_eq!(
            length,
            Some(body.len()),
            "not one whole message:\n{frame:#?}"
        );
        let start = head.lines().next().unwrap_or_default();
        let key = (
            (frame.source, frame.destination, start),
            header(head, "CSeq"),
        );
        if seen.contains(&key) {
            *repeats += 1;
        } else {
            seen.push(key);
        }
    }
    seen.into_iter().map(|(hop, _)| hop).collect()
}

/// The raw WebSocket UAC (`ws_uac.js`: JsSIP in Node cannot place a call, having no
/// RTCPeerConnection) calls a SIPp UAS on UDP through Roundabout over WSS: INVITE, 100, 180,
/// 200, ACK, BYE, 200 (uas.xml). Every message of the call is in the capture as whole,
/// readable SIP on both legs, in order, each way, from and to the real addresses: the UAC's
/// own socket and Roundabout's WSS listener; Roundabout's UDP listener and the UAS. A 100 is
/// hop by hop (RFC 3261 §16.7 step 5 forwards every other provisional; the INVITE server
/// transaction sends its own, §17.2.1), so each leg has one. The ACK and BYE go to the Contact
/// of the 200 as that leg saw it (§12.1.2): Roundabout's own on the WSS leg, the UAS's on the
/// UDP leg.
#[test]
fn every_message_of_a_wss_call_is_captured_on_both_legs() {
    if !require("sipp") || !require("sngrep") || !require("openssl") || !node::require_node() {
        return;
    }
    let mut capture = Capture::start();
    let uas_addr = SocketAddr::from(([127, 0, 0, 2], free_port("127.0.0.2")));
    let mut uas = Sipp::run("uas.xml", "127.0.0.2", uas_addr.port(), "udp")
        .calls(1)
        .spawn();
    assert!(
        wait_udp_bound(uas_addr, STEP),
        "SIPp UAS did not bind {uas_addr}"
    );
    let ca = TestCa::new();
    let wss_flags = ca.leaf("proxy.test").wss_flags();
    let mut rb = proxy(uas_addr, "uas.test", &capture, &wss_flags);
    let (udp, wss) = (rb.addr("udp"), rb.addr("wss"));

    let url = format!("wss://127.0.0.1:{}", wss.port());
    let ca_path = ca.cert.display().to_string();
    let mut uac = NodeScript::spawn(
        "ws_uac.js",
        &[
            "--ws",
            &url,
            "--target",
            "sip:uas@uas.test",
            "--hold-ms",
            "200",
            "--deadline",
            "30",
        ],
        &[("NODE_EXTRA_CA_CERTS", &ca_path)],
    );
    let connected = uac.wait_any(&["connected", "error"], STEP);
    let client: SocketAddr = connected.strs("local")[0].parse().unwrap();
    let done = uac.wait_any(&["calls_done", "error", "timeout"], Duration::from_secs(30));
    assert_eq!(
        done.get("completed").and_then(Json::as_u64),
        Some(1),
        "{}\nproxy log:\n{}",
        uac.transcript(),
        rb.logs()
    );
    let call = uac.events("call").remove(0);
    let call_id = call.str("call_id");
    assert_eq!(uas.wait(STEP), Some(0), "{}", uas.errors());
    let frames = capture.stop(&mut rb);

    let of_call: Vec<&Frame> = frames
        .iter()
        .filter(|frame| header(&frame.payload, "Call-ID") == Some(call_id))
        .collect();
    let transcript = || format!("{frames:#?}\nproxy log:\n{}", rb.logs());
    assert_eq!(
        of_call.len(),
        frames.len(),
        "only the call: {}",
        transcript()
    );
    let mut repeats = 0;
    let wss_leg = leg(&of_call, client, wss, &mut repeats);
    let udp_leg = leg(&of_call, udp, uas_addr, &mut repeats);
    // The Contact of the 200 to the INVITE from `from`.
    let contact_of_200 = |from: SocketAddr| {
        of_call
            .iter()
            .find(|f| f.source == from && f.payload.starts_with("SIP/2.0 200 OK\r\n"))
            .and_then(|f| header(&f.payload, "Contact"))
            .map(|contact| uri_of(contact).to_owned())
            .unwrap_or_else(|| panic!("no 200 with a Contact from {from}: {}", transcript()))
    };
    let (ours, theirs) = (contact_of_200(wss), contact_of_200(uas_addr));
    assert_eq!(
        theirs,
        format!("sip:{uas_addr};transport=UDP"),
        "uas.xml's Contact"
    );
    assert!(
        ours.starts_with(&format!("sip:{wss};transport=wss;rbt=")),
        "Roundabout's own Contact, with a token, on the WSS leg: {ours}"
    );
    let (ack_ours, bye_ours) = (format!("ACK {ours} SIP/2.0"), format!("BYE {ours} SIP/2.0"));
    let (ack_theirs, bye_theirs) = (
        format!("ACK {theirs} SIP/2.0"),
        format!("BYE {theirs} SIP/2.0"),
    );
    let invite = "INVITE sip:uas@uas.test SIP/2.0";
    assert_eq!(
        wss_leg,
        [
            (client, wss, invite),
            (wss, client, "SIP/2.0 100 Trying"),
            (wss, client, "SIP/2.0 180 Ringing"),
            (wss, client, "SIP/2.0 200 OK"),
            (client, wss, ack_ours.as_str()),
            (client, wss, bye_ours.as_str()),
            (wss, client, "SIP/2.0 200 OK"),
        ],
        "the WSS leg\n{}",
        transcript()
    );
    assert_eq!(
        udp_leg,
        [
            (udp, uas_addr, invite),
            (uas_addr, udp, "SIP/2.0 100 Trying"),
            (uas_addr, udp, "SIP/2.0 180 Ringing"),
            (uas_addr, udp, "SIP/2.0 200 OK"),
            (udp, uas_addr, ack_theirs.as_str()),
            (udp, uas_addr, bye_theirs.as_str()),
            (uas_addr, udp, "SIP/2.0 200 OK"),
        ],
        "the UDP leg\n{}",
        transcript()
    );
    // Nothing off the two legs, and every repeat a real retransmission: the UAS's trace and the
    // UAC's ACK count account for each frame from and to them.
    assert_eq!(
        of_call.len(),
        wss_leg.len() + udp_leg.len() + repeats,
        "{}",
        transcript()
    );
    let count = |source: SocketAddr, destination: SocketAddr| {
        of_call
            .iter()
            .filter(|f| (f.source, f.destination) == (source, destination))
            .count()
    };
    assert_eq!(
        [
            count(udp, uas_addr),
            count(uas_addr, udp),
            count(client, wss)
        ],
        [
            uas.received().len(),
            uas.sent().len(),
            2 + call.num("acks") as usize
        ],
        "{}",
        transcript()
    );
}

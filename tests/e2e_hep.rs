//! `-hep-addr` against a real capture server: sngrep listens for HEP and writes what it gets to
//! a pcap; SIPp sends MESSAGEs over UDP through Roundabout to a UDP server. Every message of
//! the exchange is then in the pcap as readable SIP on both legs, with the real addresses:
//! SIPp to Roundabout's UDP listener, Roundabout's listener to the server, and back. With
//! `-metrics-addr` as well, the messages are counted too and no capture was dropped. JsSIP over
//! WSS: its REGISTER and MESSAGE show as readable SIP inside the TLS and WebSocket framing.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::http::get;
use common::node;
use common::process::wait_for_exit;
use common::udp_server::UdpServer;
use common::{free_port, header, require, sipp_messages, wait_udp_bound, Roundabout};

/// MESSAGEs SIPp sends.
const CALLS: usize = 3;
/// What any single step may take.
const STEP: Duration = Duration::from_secs(10);

/// One captured packet: IP protocol, source, destination and the transport payload. (sngrep
/// writes each HEP packet it gets as a UDP frame, whatever its protocol chunk says.)
#[derive(Debug)]
struct Frame {
    protocol: u8,
    source: SocketAddr,
    destination: SocketAddr,
    payload: String,
}

/// The IPv4 UDP and TCP frames of a pcap file (24-byte global header, then 16-byte record
/// headers each followed by the frame), whatever the link type sngrep chose.
fn frames(pcap: &[u8]) -> Vec<Frame> {
    let Some(header) = pcap.get(..24) else {
        return Vec::new();
    };
    let little = header[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || header[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
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
            protocol,
            source: SocketAddr::from((address(12), port(ip_header))),
            destination: SocketAddr::from((address(16), port(ip_header + 2))),
            payload: String::from_utf8_lossy(&ip[ip_header + transport_header..]).into_owned(),
        });
    }
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
    let extra = [
        "--message-to",
        "sip:bob@registrar.test",
        "--message-body",
        "hi",
    ];
    let mut jssip = node::jssip_alice(&url, Some(&ca.cert), &extra);
    let sent = jssip.wait_any(&["message_sent", "message_failed"], STEP);
    assert_eq!(sent.event(), Some("message_sent"), "{}", jssip.transcript());
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

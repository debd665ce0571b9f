//! `-rtpengine` against a real rtpengine (Debian's `rtpengine-daemon`, userspace): a WebSocket
//! UAC (`ws_uac.js`) offers WebRTC media to a SIPp UAS on UDP through Roundabout. SIPp gets a
//! plain RTP/AVP offer with no ICE and no DTLS fingerprint; the UAC gets SIPp's answer as WebRTC
//! (UDP/TLS/RTP/SAVPF, ICE candidates, a fingerprint); after the BYE rtpengine holds no call;
//! the relay's requests are counted. A call the UAS refuses leaves no call in rtpengine. With
//! rtpengine stopped, the INVITE gets a 503 that names the media relay and reaches no one.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::get;
use common::node::{self, NodeScript};
use common::rtpengine::{Rtpengine, WEBRTC_OFFER};
use common::udp_server::UdpServer;
use common::{first, free_port, header, require, Roundabout, Sipp};

const UAS_IP: &str = "127.0.0.2";
const TARGET: &str = "sip:uas@uas.test";

fn peers() -> bool {
    require("rtpengine") && require("sipp") && node::require_node()
}

/// The body of a SIP message.
fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// The WebSocket UAC placing one call to [`TARGET`] through `rb` with the WebRTC offer; its
/// `call` event.
fn call_over_ws(rb: &Roundabout) -> (NodeScript, node::Json) {
    let dir = tempfile::tempdir().unwrap();
    let offer = dir.path().join("offer.sdp");
    std::fs::write(&offer, WEBRTC_OFFER).unwrap();
    let url = format!("ws://127.0.0.1:{}", rb.port("ws"));
    let offer = offer.display().to_string();
    let args = [
        "--ws",
        &url,
        "--target",
        TARGET,
        "--sdp-file",
        &offer,
        "--hold-ms",
        "500",
        "--timeout-ms",
        "15000",
        "--deadline",
        "40",
    ];
    let mut uac = NodeScript::spawn("ws_uac.js", &args, &[]);
    let call = uac.wait_any(&["call", "error", "timeout"], Duration::from_secs(30));
    (uac, call)
}

/// rtpengine, a SIPp UAS on UDP playing `scenario` for one call, and Roundabout relaying media
/// through that rtpengine with the UAS as its trusted server, and `extra` flags.
fn scene(scenario: &str, extra: &[&str]) -> (Rtpengine, Sipp, Roundabout) {
    let rtpengine = Rtpengine::start();
    let port = free_port(UAS_IP);
    let uas = Sipp::run(scenario, UAS_IP, port, "udp").calls(1).spawn();
    let trusted = format!("{UAS_IP}:uas.test:{port}:udp:");
    let ng = rtpengine.ng.to_string();
    let args = [
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
        "-rtpengine",
        &ng,
    ];
    let rb = Roundabout::start(&[&args[..], extra].concat());
    (rtpengine, uas, rb)
}

#[test]
fn a_webrtc_call_to_a_plain_rtp_uas_goes_through_the_media_relay() {
    if !peers() {
        return;
    }
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let metrics_flag = metrics.to_string();
    let (rtpengine, mut uas, rb) = scene("uas.xml", &["-metrics-addr", &metrics_flag]);
    let (mut uac, call) = call_over_ws(&rb);
    let context = || format!("{}\n{}\n{}", uac.transcript(), rb.logs(), rtpengine.logs());
    assert_eq!(
        (
            call.event(),
            call.get("invite").and_then(node::Json::as_u64)
        ),
        (Some("call"), Some(200)),
        "{}",
        context()
    );
    assert_eq!(call.get("bye").and_then(node::Json::as_u64), Some(200));
    assert_eq!(
        uas.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        uas.errors()
    );

    // What SIPp got: plain RTP, nothing of WebRTC, and a Content-Length that fits.
    let received = uas.received();
    let invite = first(&received, "INVITE ");
    let offer = body(invite);
    let media = offer.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    assert!(media.contains(" RTP/AVP "), "{media}\n{invite}");
    for webrtc in [
        "a=candidate",
        "a=fingerprint",
        "a=ice-ufrag",
        "a=rtcp-mux",
        "a=setup",
    ] {
        assert!(!offer.contains(webrtc), "{webrtc} reached SIPp:\n{invite}");
    }
    // SIPp's trace ends each message with a line end of its own after the SDP's last CRLF.
    let length: usize = header(invite, "Content-Length").unwrap().parse().unwrap();
    assert_eq!(length, offer.trim_end().len() + "\r\n".len(), "{invite}");
    assert!(
        !offer.contains("m=audio 40000 "),
        "the browser's own port reached SIPp: the media does not go through rtpengine\n{offer}"
    );

    // What the WebSocket UAC got: WebRTC media, from rtpengine, answering its offer.
    let answer = call.str("answer_sdp");
    let media = answer.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    assert!(media.contains(" UDP/TLS/RTP/SAVPF "), "{media}\n{answer}");
    for webrtc in [
        "a=candidate:",
        "a=fingerprint:",
        "a=ice-ufrag:",
        "a=ice-pwd:",
    ] {
        assert!(answer.contains(webrtc), "no {webrtc} in\n{answer}");
    }

    // The BYE ended the call in rtpengine.
    let left = rtpengine.calls_left_within(Duration::from_secs(5));
    assert!(left.is_empty(), "rtpengine still holds {left:?}");
    let scrape = get(metrics, "/metrics").unwrap().body;
    for (command, expected) in [("offer", 1), ("answer", 1), ("delete", 1)] {
        let series = format!(r#"roundabout_rtpengine_requests_total{{command="{command}"}} "#);
        let line = scrape.lines().find(|l| l.starts_with(&series)).unwrap();
        assert_eq!(line, format!("{series}{expected}"), "{scrape}");
    }
    assert!(scrape.contains(r#"roundabout_rtpengine_failures_total{command="offer"} 0"#));
    drop(uac.wait_any(&["calls_done"], Duration::from_secs(5)));
}

/// A busy UAS: the 486 reaches the WebSocket UAC, and the call its INVITE's offer made in
/// rtpengine is gone (a final non-2xx to the INVITE that started the call).
#[test]
fn a_call_the_uas_refuses_leaves_no_call_in_rtpengine() {
    refused_call_leaves_no_call("uas_busy.xml");
}

/// The same after early media: a 183 with SDP (answered in rtpengine, so the callee's tag is
/// known there) and then the 486.
#[test]
fn a_call_refused_after_early_media_leaves_no_call_in_rtpengine() {
    refused_call_leaves_no_call("uas_early_busy.xml");
}

fn refused_call_leaves_no_call(scenario: &str) {
    if !peers() {
        return;
    }
    let (rtpengine, mut uas, rb) = scene(scenario, &[]);
    let (uac, call) = call_over_ws(&rb);
    assert_eq!(
        call.get("invite").and_then(node::Json::as_u64),
        Some(486),
        "{}\n{}",
        uac.transcript(),
        rb.logs()
    );
    assert_eq!(
        uas.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        uas.errors()
    );
    assert!(
        first(&uas.received(), "INVITE ").contains(" RTP/AVP "),
        "the offer went through rtpengine"
    );
    let left = rtpengine.calls_left_within(Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "rtpengine still holds {left:?}\n{}",
        rb.logs()
    );
}

/// rtpengine stopped: the INVITE is answered 503 with a reason that names the media relay,
/// within the client's bound (three tries of a second), and goes nowhere.
#[test]
fn with_rtpengine_stopped_an_invite_is_refused_and_reaches_no_one() {
    if !peers() {
        return;
    }
    let rtpengine = Rtpengine::start();
    let ng = rtpengine.ng.to_string();
    drop(rtpengine);
    let mut server = UdpServer::start(UAS_IP);
    let trusted = format!("{UAS_IP}:uas.test:{}:udp:", server.addr.port());
    let rb = Roundabout::start(&[
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-rtpengine",
        &ng,
    ]);
    let started = Instant::now();
    let (uac, call) = call_over_ws(&rb);
    assert_eq!(
        (
            call.get("invite").and_then(node::Json::as_u64),
            call.str("reason")
        ),
        (Some(503), "Service Unavailable (media relay unavailable)"),
        "{}\n{}",
        uac.transcript(),
        rb.logs()
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");
    assert!(
        server.all().iter().all(|m| !m.starts_with("INVITE ")),
        "the INVITE went on: {:?}",
        server.all()
    );
}

//! WebRTC calls between real browsers (issue 17): chromium, headless, running JsSIP over WSS
//! (`tests/node/browser_phone.js`, through [`common::browser::BrowserPhone`]).
//!
//! - **Browser to browser through Roundabout.** Bob's browser registers `sip:bob@registrar.test`
//!   over WSS through Roundabout at Kamailio (the registrar of `common::kamailio::registrar`:
//!   tm, usrloc in memory, no Record-Route); Alice's browser calls the AOR, Kamailio looks the
//!   binding up and relays the INVITE back to Roundabout, whose token leads it down Bob's
//!   WebSocket. Both SDPs go through untouched, with ICE candidates, DTLS fingerprints and
//!   UDP/TLS/RTP/SAVPF; no media relay is in the path, so audio flows browser to browser on
//!   loopback, and each side's getStats() counts packets sent and received. Alice hangs up and
//!   both see the call end.
//! - **A browser and a plain-RTP phone through rtpengine** (`-rtpengine`, docs/media.md), both
//!   ways: the browser calls SIPp on UDP, and SIPp calls the browser registered at Kamailio.
//!   The phone (SIPp playing Debian's g711a.pcap) gets RTP/AVP with no ICE or DTLS, the browser
//!   WebRTC SDP from rtpengine; the browser's getStats() counts audio packets both ways, and
//!   after the BYE rtpengine holds no call.
//! - **No browser outlives its script**: killed by its PID as every Node peer is, the script
//!   takes chromium and its helpers with it.
//!
//! Loopback addresses used here (none used by other test files): 127.0.51.x; Roundabout, the
//! browsers and rtpengine are on 127.0.0.1.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::browser::{require_browser, BrowserPhone};
use common::certs::{Leaf, TestCa};
use common::kamailio::{registrar, Kamailio, ONE_CONTACT};
use common::node::Json;
use common::rtpengine::Rtpengine;
use common::{first, free_port, require, Roundabout, Sipp};

/// What any single signalling step may take.
const STEP: Duration = Duration::from_secs(10);

/// How long audio may take to flow both ways once the call is up: ICE checks and the DTLS
/// handshake on loopback take well under a second.
const MEDIA: Duration = Duration::from_secs(10);

/// Waits for `phone`'s next event among `wanted` and failures, and checks it is `wanted`.
fn expect(phone: &mut BrowserPhone, wanted: &str, diagnostics: &dyn Fn() -> String) -> Json {
    let failures = ["failed", "registration_failed", "disconnected", "error"];
    let event = phone.wait_any(&[&[wanted][..], &failures].concat(), STEP);
    assert_eq!(
        event.event(),
        Some(wanted),
        "{event:?}\n{}\n{}",
        phone.transcript(),
        diagnostics()
    );
    event
}

/// Bob's browser, registered as `sip:bob@registrar.test` over the WSS at `url` (trusting
/// `leaf`), answering the first call.
fn registered_bob(url: &str, leaf: &Leaf, diagnostics: &dyn Fn() -> String) -> BrowserPhone {
    let mut bob = BrowserPhone::start(
        url,
        "sip:bob@registrar.test",
        Some(&leaf.cert),
        &["--answer", "1"],
    );
    assert_eq!(
        expect(&mut bob, "registered", diagnostics).num("status"),
        200
    );
    bob
}

/// Waits until `phone`'s stats show audio packets both sent and received; those stats.
fn expect_media(phone: &mut BrowserPhone) -> Json {
    let deadline = Instant::now() + MEDIA;
    loop {
        let stats = phone.wait_for("stats", deadline.saturating_duration_since(Instant::now()));
        if stats.num("packets_received") > 0 && stats.num("packets_sent") > 0 {
            return stats;
        }
    }
}

/// A browser's SDP as WebRTC writes it: ICE candidates (on loopback only, as the phone
/// offers them), a DTLS fingerprint, and audio over UDP/TLS/RTP/SAVPF (RFC 5764, RFC 8827).
fn check_webrtc_sdp(sdp: &str, what: &str) {
    let lines: Vec<&str> = sdp.lines().collect();
    let media: Vec<&&str> = lines.iter().filter(|l| l.starts_with("m=")).collect();
    assert!(
        media.len() == 1
            && media[0].starts_with("m=audio ")
            && media[0].contains(" UDP/TLS/RTP/SAVPF "),
        "{what}: one audio stream over UDP/TLS/RTP/SAVPF:\n{sdp}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a=fingerprint:sha-256 ")),
        "{what}: a DTLS fingerprint:\n{sdp}"
    );
    // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    let candidates: Vec<Vec<&str>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| c.split(' ').collect())
        .collect();
    assert!(
        // The transport is case-insensitive (RFC 8839 §5.1): chromium writes udp, rtpengine UDP.
        candidates
            .iter()
            .any(|c| c.get(2).is_some_and(|t| t.eq_ignore_ascii_case("udp"))),
        "{what}: UDP ICE candidates:\n{sdp}"
    );
    assert!(
        candidates
            .iter()
            .all(|c| c.get(4) == Some(&"127.0.0.1") && c.get(7) == Some(&"host")),
        "{what}: host candidates on loopback only:\n{sdp}"
    );
}

#[test]
fn two_browsers_call_through_roundabout_with_audio_both_ways() {
    if !require_browser()
        || !require("openssl")
        || !Kamailio::available(&["tm", "usrloc", "registrar"])
    {
        return;
    }
    let started = Instant::now();
    let ca = TestCa::new();
    let kamailio = registrar("127.0.51.2", ONE_CONTACT, &[]);
    let k_addr = kamailio.addr("udp");
    let trusted = format!("{}:registrar.test:{}:udp:", k_addr.ip(), k_addr.port());
    let mut args: Vec<String> = [
        "-strict-host",
        "-strict-client",
        "-trusted-client-ip",
        "127.0.0.1",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
    ]
    .map(String::from)
    .into();
    let leaf = ca.leaf("proxy.test");
    args.extend(leaf.wss_flags());
    let rb = Roundabout::start(&args);
    let url = format!("wss://127.0.0.1:{}", rb.port("wss"));
    let diagnostics = || {
        format!(
            "proxy log:\n{}\nkamailio log:\n{}",
            rb.logs(),
            kamailio.logs()
        )
    };

    let mut bob = registered_bob(&url, &leaf, &diagnostics);
    let mut alice = BrowserPhone::start(
        &url,
        "sip:alice@registrar.test",
        Some(&leaf.cert),
        &["--call", "sip:bob@registrar.test"],
    );
    assert_eq!(
        expect(&mut alice, "registered", &diagnostics).num("status"),
        200
    );

    // The INVITE reaches Bob through the registrar's lookup; he rings, answers, gets the ACK.
    let call_id = expect(&mut alice, "calling", &diagnostics)
        .str("call_id")
        .to_string();
    let incoming = expect(&mut bob, "incoming", &diagnostics);
    assert_eq!(
        (incoming.str("from"), incoming.str("call_id")),
        ("sip:alice@registrar.test", call_id.as_str())
    );
    assert!(
        kamailio.wait_for_log(&format!("KRELAY INVITE ci={call_id} "), STEP),
        "Kamailio looked Bob up and relayed the INVITE\n{}",
        diagnostics()
    );
    assert_eq!(
        expect(&mut alice, "progress", &diagnostics).num("status"),
        180
    );
    assert_eq!(
        expect(&mut alice, "accepted", &diagnostics).num("status"),
        200
    );
    expect(&mut alice, "confirmed", &diagnostics);
    expect(&mut bob, "confirmed", &diagnostics);

    // Each SDP arrives as it was sent: Roundabout and Kamailio forward bodies untouched.
    let offer = alice.wait_for("local_sdp", STEP);
    let answer = bob.wait_for("local_sdp", STEP);
    assert_eq!((offer.str("type"), answer.str("type")), ("offer", "answer"));
    let offered = bob.wait_for("remote_sdp", STEP);
    let answered = alice.wait_for("remote_sdp", STEP);
    assert_eq!(offered.str("sdp"), offer.str("sdp"), "the offer Bob got");
    assert_eq!(
        answered.str("sdp"),
        answer.str("sdp"),
        "the answer Alice got"
    );
    check_webrtc_sdp(offer.str("sdp"), "Alice's offer");
    check_webrtc_sdp(answer.str("sdp"), "Bob's answer");

    // Audio both ways. No relay is in the path: the SDPs name only the browsers' own
    // candidates. (Which pair ICE selects is chromium's choice: it may send from a host address
    // it did not offer, preferring an interface of lower network cost to loopback, and then
    // the peer sees a peer-reflexive address; every address involved is this host's own.)
    for phone in [&mut alice, &mut bob] {
        let media = expect_media(phone);
        assert_eq!(media.str("connection"), "connected", "{media:?}");
    }

    alice.hangup();
    alice.wait_for("hangup", STEP);
    let ended = expect(&mut alice, "ended", &diagnostics);
    assert_eq!(ended.str("originator"), "local");
    let ended = expect(&mut bob, "ended", &diagnostics);
    assert_eq!(
        (ended.str("originator"), ended.str("cause")),
        ("remote", "Terminated"),
        "Bob got the BYE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the call took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_killed_phone_takes_its_browser_with_it() {
    if !require_browser() {
        return;
    }
    // A WebSocket that nothing answers (most likely): the phone keeps its browser running.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut phone = BrowserPhone::start(
        &format!("ws://127.0.0.1:{port}"),
        "sip:carol@registrar.test",
        None,
        &["--register", "0"],
    );
    phone.wait_any(&["connected", "disconnected"], STEP);
    assert!(
        phone.kill(),
        "chromium outlived its script\n{}",
        phone.transcript()
    );
}

/// The SDP a plain-RTP phone got: RTP/AVP on rtpengine's port, nothing of WebRTC.
fn check_plain_sdp(msg: &str, what: &str) {
    let sdp = msg.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let media = sdp.lines().find(|l| l.starts_with("m=audio "));
    assert!(
        media.is_some_and(|m| m.contains(" RTP/AVP ")),
        "{what}: audio over RTP/AVP:\n{msg}"
    );
    for webrtc in ["a=candidate", "a=fingerprint", "a=ice-ufrag", "a=rtcp-mux"] {
        assert!(
            !sdp.contains(webrtc),
            "{what}: {webrtc} reached the phone:\n{msg}"
        );
    }
}

/// A media port for SIPp on `ip` (its RTP port; RTCP is the next one).
fn media_port(ip: &str) -> u16 {
    loop {
        let port = free_port(ip);
        if port % 2 == 0 && port < u16::MAX {
            return port;
        }
    }
}

/// Waits until rtpengine holds no call.
fn no_call_left(rtpengine: &Rtpengine) {
    let left = rtpengine.calls_left_within(STEP);
    assert!(left.is_empty(), "rtpengine still holds {left:?}");
}

/// Roundabout with WSS, `server` as its one trusted server on UDP (known as `name`), and
/// rtpengine as its media relay.
fn with_media_relay(
    ca: &TestCa,
    server: SocketAddr,
    name: &str,
    rtpengine: &Rtpengine,
) -> (Roundabout, Leaf) {
    let trusted = format!("{}:{name}:{}:udp:", server.ip(), server.port());
    let ng = rtpengine.ng.to_string();
    let mut args: Vec<String> = [
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
        "-rtpengine",
        &ng,
    ]
    .map(String::from)
    .into();
    let leaf = ca.leaf("proxy.test");
    args.extend(leaf.wss_flags());
    (Roundabout::start(&args), leaf)
}

/// A browser calls a plain-RTP phone (SIPp on UDP, playing G.711 audio) through Roundabout
/// and rtpengine: the phone gets an RTP/AVP offer without ICE or DTLS, the browser an answer
/// with ICE candidates, a fingerprint and UDP/TLS/RTP/SAVPF, and the browser's getStats()
/// counts audio packets both ways. After the BYE rtpengine holds no call.
#[test]
fn a_browser_calls_a_plain_rtp_phone_through_rtpengine_with_audio_both_ways() {
    if !require_browser() || !require("openssl") || !require("sipp") || !require("rtpengine") {
        return;
    }
    let rtpengine = Rtpengine::start();
    let phone_ip = "127.0.51.5";
    let port = free_port(phone_ip);
    let mut phone = Sipp::run("uas_media.xml", phone_ip, port, "udp")
        .arg("-mp", media_port(phone_ip))
        .calls(1)
        .arg("-timeout", 40)
        .spawn();
    let ca = TestCa::new();
    let server = SocketAddr::from(([127, 0, 51, 5], port));
    let (rb, leaf) = with_media_relay(&ca, server, "phone.test", &rtpengine);
    let url = format!("wss://127.0.0.1:{}", rb.port("wss"));
    let diagnostics = || {
        format!(
            "proxy log:\n{}\nrtpengine log:\n{}",
            rb.logs(),
            rtpengine.logs()
        )
    };
    let mut alice = BrowserPhone::start(
        &url,
        "sip:alice@phone.test",
        Some(&leaf.cert),
        &["--register", "0", "--call", "sip:phone@phone.test"],
    );
    expect(&mut alice, "confirmed", &diagnostics);
    let answered = alice.wait_for("remote_sdp", STEP);
    assert_eq!(answered.str("type"), "answer");
    check_webrtc_sdp(answered.str("sdp"), "the answer the browser got");
    let media = expect_media(&mut alice);
    assert_eq!(media.str("connection"), "connected", "{media:?}");
    check_plain_sdp(
        first(&phone.received(), "INVITE "),
        "the offer the phone got",
    );

    alice.hangup();
    expect(&mut alice, "ended", &diagnostics);
    assert_eq!(phone.wait(STEP), Some(0), "{}", phone.errors());
    no_call_left(&rtpengine);
}

/// A plain-RTP phone (SIPp on UDP, playing G.711 audio) calls a browser registered through
/// Roundabout at a Kamailio registrar: the browser gets a WebRTC offer, answers, and receives
/// audio; the phone gets the answer as RTP/AVP. After the BYE rtpengine holds no call.
#[test]
fn a_plain_rtp_phone_calls_a_registered_browser_through_kamailio_and_rtpengine() {
    if !require_browser()
        || !require("openssl")
        || !require("sipp")
        || !require("rtpengine")
        || !Kamailio::available(&["tm", "usrloc", "registrar"])
    {
        return;
    }
    let rtpengine = Rtpengine::start();
    let kamailio = registrar("127.0.51.7", ONE_CONTACT, &[]);
    let ca = TestCa::new();
    let (rb, leaf) = with_media_relay(&ca, kamailio.addr("udp"), "registrar.test", &rtpengine);
    let url = format!("wss://127.0.0.1:{}", rb.port("wss"));
    let diagnostics = || {
        format!(
            "proxy log:\n{}\nkamailio log:\n{}\nrtpengine log:\n{}",
            rb.logs(),
            kamailio.logs(),
            rtpengine.logs()
        )
    };
    let mut bob = registered_bob(&url, &leaf, &diagnostics);

    let phone_ip = "127.0.51.8";
    let k = kamailio.addr("udp");
    let target = k.to_string();
    let mut phone = Sipp::run("uac_media.xml", phone_ip, free_port(phone_ip), "udp")
        .arg("-mp", media_port(phone_ip))
        .arg("-s", "bob")
        .calls(1)
        .arg("-d", 4000)
        .arg("-timeout", 40)
        .to(&target)
        .spawn();
    expect(&mut bob, "incoming", &diagnostics);
    expect(&mut bob, "confirmed", &diagnostics);
    let offered = bob.wait_for("remote_sdp", STEP);
    assert_eq!(offered.str("type"), "offer");
    check_webrtc_sdp(offered.str("sdp"), "the offer the browser got");
    let media = expect_media(&mut bob);
    assert_eq!(media.str("connection"), "connected", "{media:?}");
    let ended = expect(&mut bob, "ended", &diagnostics);
    assert_eq!(ended.str("originator"), "remote", "the phone hung up");
    assert_eq!(
        phone.wait(STEP),
        Some(0),
        "{}\n{}",
        phone.errors(),
        diagnostics()
    );
    check_plain_sdp(
        first(&phone.received(), "SIP/2.0 200"),
        "the answer the phone got",
    );
    no_call_left(&rtpengine);
}

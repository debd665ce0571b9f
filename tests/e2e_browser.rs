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
//! - **No browser outlives its script**: killed by its PID as every Node peer is, the script
//!   takes chromium and its helpers with it.
//!
//! Loopback addresses used here (none used by other test files): 127.0.51.x; Roundabout and
//! the browsers are on 127.0.0.1.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::browser::{require_browser, BrowserPhone};
use common::certs::TestCa;
use common::kamailio::{registrar, Kamailio, ONE_CONTACT};
use common::node::Json;
use common::{require, Roundabout};

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
        candidates.iter().any(|c| c.get(2) == Some(&"udp")),
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

    let mut bob = BrowserPhone::start(
        &url,
        "sip:bob@registrar.test",
        Some(&leaf.cert),
        &["--answer", "1"],
    );
    assert_eq!(
        expect(&mut bob, "registered", &diagnostics).num("status"),
        200
    );
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

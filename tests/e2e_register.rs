//! Client to server (docs/client-cache.md; docs/routing.md rules 2, 4, 5): REGISTER through
//! Roundabout to a real registrar, calls back to the registered client, the client cache and
//! `-default-sip-server`.
//!
//! - **Kamailio as registrar** (tm, usrloc in memory, registrar; no authentication, no
//!   Record-Route; `save("location", "0x04")`: one contact per AOR, so a new registration
//!   replaces the old one). JsSIP in Node registers `sip:alice@registrar.test` over WSS through
//!   Roundabout (`-strict-client`, the JsSIP side's 127.0.0.1 in the trusted client range);
//!   Kamailio stores the Contact Roundabout rewrote to itself with a token. A SIPp UAC on UDP
//!   calls the AOR at Kamailio, which looks the binding up and relays the INVITE to Roundabout;
//!   the token leads it down the WebSocket. JsSIP in Node cannot answer a call (no
//!   RTCPeerConnection), so `jssip_client.js --answer-invites 1` answers it with raw SIP on
//!   the same socket (180, 200 with its registered contact). SIPp sends ACK and BYE to the
//!   200's Contact - Roundabout's, with a token - and they too go down the WebSocket. After the
//!   call JsSIP unregisters, and the same call gets Kamailio's 404. A REGISTER from outside the
//!   trusted range gets 403 from Roundabout and never reaches Kamailio.
//! - **A client without an outbound proxy** sends its INVITE to Roundabout itself
//!   (`sip:1000@<roundabout>`): with `-default-sip-server` it goes to that server with the R-URI
//!   host rewritten to the server's first FQDN or IP; without it, 404.
//! - **A browser that reconnects** registers the same AOR on a new WebSocket: Kamailio keeps
//!   only the new binding and requests reach the new flow.
//! - The client cache follows the registrar: an un-REGISTER removes the user, and a 2xx that
//!   lists several bindings of one user binds the user to the client it goes back to.
//!
//! Loopback addresses used here (none used by other test files): 127.0.21.x, 127.0.22.x,
//! 127.0.23.x, 127.0.24.x, 127.0.25.x; Roundabout itself and JsSIP are on 127.0.0.1.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::certs::TestCa;
use common::kamailio::{registrar, Kamailio, ONE_CONTACT};
use common::node::{self, Json, NodeScript};
use common::{free_port, header, ok_to_invite, require, uri_of, vias, Roundabout, Sipp, UdpPeer};

/// What any single step may take; every test stays well under a minute.
const STEP: Duration = Duration::from_secs(10);

/// A registrar and Roundabout in front of it: `-strict-host -strict-client -ack-ruri`, the
/// registrar the trusted server `registrar.test`, clients from `trusted_clients`.
struct Scene {
    kamailio: Kamailio,
    rb: Roundabout,
}

impl Scene {
    /// Roundabout for `kamailio`, with `extra` flags.
    fn start(kamailio: Kamailio, trusted_clients: &str, extra: &[String]) -> Scene {
        let k_addr = kamailio.addr("udp");
        let trusted = format!("{}:registrar.test:{}:udp:", k_addr.ip(), k_addr.port());
        let mut args: Vec<String> = [
            "-strict-host",
            "-strict-client",
            "-trusted-client-ip",
            trusted_clients,
            "-ack-ruri",
            "-trusted-server",
            &trusted,
        ]
        .map(String::from)
        .into();
        args.extend_from_slice(extra);
        Scene {
            rb: Roundabout::start(&args),
            kamailio,
        }
    }

    /// Roundabout's UDP listener, the side the registrar sees.
    fn udp(&self) -> SocketAddr {
        self.rb.addr("udp")
    }

    /// Where a WebSocket client connects.
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.rb.port("ws"))
    }

    /// Both logs, for failure messages.
    fn diagnostics(&self) -> String {
        format!(
            "proxy log:\n{}\nkamailio log:\n{}",
            self.rb.logs(),
            self.kamailio.logs()
        )
    }
}

fn kamailio_available() -> bool {
    require("sipp")
        && require("openssl")
        && node::require_node()
        && Kamailio::available(&["tm", "usrloc", "registrar"])
}

/// The user part of a SIP URI.
fn user_of(uri: &str) -> &str {
    uri.strip_prefix("sip:")
        .and_then(|rest| rest.split_once('@'))
        .map(|(user, _)| user)
        .unwrap()
}

/// `key=value` (up to the next space) in a Kamailio log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 2;
    line[start..].split(' ').next().unwrap()
}

/// JsSIP registering `sip:alice@registrar.test` through Roundabout at `url`, answering calls.
fn spawn_jssip(url: &str, ca: Option<&TestCa>, extra: &[&str]) -> (NodeScript, String) {
    let args = [&["--answer-invites", "1"][..], extra].concat();
    let mut jssip = node::jssip_alice(url, ca.map(|ca| ca.cert.as_path()), &args);
    let contact = jssip.wait_for("started", STEP).str("contact").to_string();
    (jssip, contact)
}

/// Waits for JsSIP to report `wanted` (`registered` or `unregistered`) or a failure, and checks
/// that it is `wanted`, answered 200; that event.
fn expect_200(jssip: &mut NodeScript, wanted: &str, diagnostics: &dyn Fn() -> String) -> Json {
    let event = jssip.wait_any(&[wanted, "registration_failed", "error"], STEP);
    assert_eq!(
        (event.event(), event.get("status").and_then(Json::as_u64)),
        (Some(wanted), Some(200)),
        "JsSIP did not get its 200\n{}\n{}",
        jssip.transcript(),
        diagnostics()
    );
    event
}

/// Waits for JsSIP's registration and checks the 2xx it got lists exactly its own contact
/// (restored by Roundabout, no token); the REGISTER's Call-ID.
fn expect_registered(
    jssip: &mut NodeScript,
    contact: &str,
    diagnostics: &dyn Fn() -> String,
) -> String {
    let registered = expect_200(jssip, "registered", diagnostics);
    let answered = registered.strs("contacts");
    assert!(
        answered.len() == 1 && uri_of(answered[0]) == contact && !answered[0].contains("rbt="),
        "the REGISTER 200 back to JsSIP lists only its own {contact}: {answered:?}\n{}",
        diagnostics()
    );
    registered.str("call_id").to_string()
}

/// Waits for a Kamailio log line containing `needle`; the last such line.
fn wait_line(kamailio: &Kamailio, needle: &str) -> String {
    assert!(
        kamailio.wait_for_log(needle, STEP),
        "no {needle:?} in the kamailio log:\n{}",
        kamailio.logs()
    );
    kamailio.log_lines(needle).pop().unwrap()
}

/// The Contact Kamailio stored for alice from the REGISTER with `call_id` (its `KSAVED` line).
fn wait_saved(kamailio: &Kamailio, call_id: &str) -> String {
    let saved = wait_line(
        kamailio,
        &format!("KSAVED aor=sip:alice@registrar.test ci={call_id} "),
    );
    field(&saved, "ct").to_string()
}

/// Runs SIPp once on `ip` with `scenario_name` towards `remote`, `-key ruri <ruri>`; its exit
/// code must be 0.
fn sipp_call(
    scenario_name: &str,
    ip: &str,
    remote: SocketAddr,
    ruri: &str,
    diagnostics: &dyn Fn() -> String,
) -> Sipp {
    let mut uac = Sipp::run(scenario_name, ip, free_port(ip), "udp")
        .to(remote)
        .key("ruri", ruri)
        .calls(1)
        .spawn();
    let code = uac.wait(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(0),
        "SIPp {scenario_name} to {ruri} via {remote} failed\nerrors:\n{}\nsent:\n{:#?}\nreceived:\n{:#?}\n{}",
        uac.errors(),
        uac.sent(),
        uac.received(),
        diagnostics()
    );
    uac
}

/// A REGISTER for `user` as a raw UDP peer at `from` writes it.
fn raw_register(from: SocketAddr, user: &str, call_id: &str) -> String {
    format!(
        "REGISTER sip:registrar.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@registrar.test>;tag=untrusted\r\n\
         To: <sip:{user}@registrar.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{from};transport=udp>;expires=600\r\n\
         Expires: 600\r\n\
         User-Agent: roundabout-e2e untrusted client\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A MESSAGE from `probe` for `user@roundabout`, which only the client cache can route (no
/// token); the answer.
fn message_by_user(probe: &UdpPeer, udp: SocketAddr, user: &str, call_id: &str) -> String {
    probe.send(
        udp,
        &raw_message(probe.addr(), &format!("sip:{user}@{udp}"), call_id),
    );
    probe
        .recv()
        .unwrap_or_else(|| panic!("no answer to {call_id} for {user}"))
}

/// A MESSAGE to `ruri` as a raw UDP peer at `from` writes it.
fn raw_message(from: SocketAddr, ruri: &str, call_id: &str) -> String {
    format!(
        "MESSAGE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag=probe\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 17\r\n\r\n\
         hello from a peer"
    )
}

/// JsSIP over WSS registers through Roundabout to Kamailio, is called by a SIPp UAC via
/// Kamailio (INVITE by the stored, rewritten contact; ACK and BYE by the Contact Roundabout
/// wrote into the 200), unregisters, and is then unreachable (404). A REGISTER from outside
/// the trusted client range is refused with 403 and never reaches Kamailio.
#[test]
fn jssip_registers_at_kamailio_over_wss_and_is_called_back() {
    if !kamailio_available() {
        return;
    }
    const KAMAILIO: &str = "127.0.21.2";
    const UAC: &str = "127.0.21.3";
    const UNTRUSTED: &str = "127.0.21.9";
    let ca = TestCa::new();
    // JsSIP connects from 127.0.0.1; the SIPp UAC and the untrusted peer are outside.
    let scene = Scene::start(
        registrar(KAMAILIO, ONE_CONTACT, &[]),
        "127.0.0.0/24",
        &ca.leaf("proxy.test").wss_flags(),
    );
    let (kamailio, rb) = (&scene.kamailio, &scene.rb);
    let k_addr = kamailio.addr("udp");
    let udp = scene.udp();
    let wss_port = rb.port("wss");
    let diagnostics = || scene.diagnostics();

    // An untrusted REGISTER: 403 from Roundabout itself (its To tag), not relayed.
    let untrusted = UdpPeer::bind(UNTRUSTED);
    untrusted.send(
        udp,
        &raw_register(untrusted.addr(), "mallory", "untrusted-register"),
    );
    let answer = untrusted
        .recv()
        .expect("an answer to the untrusted REGISTER");
    assert!(
        answer.starts_with("SIP/2.0 403 "),
        "{answer}\n{}",
        diagnostics()
    );
    assert!(
        header(&answer, "To").is_some_and(|to| to.contains(";tag=rb")),
        "{answer}"
    );
    assert_eq!(header(&answer, "Call-ID"), Some("untrusted-register"));

    // JsSIP registers over WSS; Kamailio stores the Contact rewritten to Roundabout's UDP side.
    let url = format!("wss://127.0.0.1:{wss_port}");
    let (mut jssip, contact) = spawn_jssip(&url, Some(&ca), &["--unregister-after-calls", "1"]);
    let user = user_of(&contact).to_string();
    let call_id = expect_registered(&mut jssip, &contact, &diagnostics);
    let stored = wait_saved(kamailio, &call_id);
    let register = wait_line(kamailio, &format!("KREQ REGISTER ci={call_id} "));
    assert_eq!(field(&register, "src"), udp.to_string(), "{register}");
    assert!(
        stored.starts_with(&format!(
            "<sip:{user}@127.0.0.1:{};transport=udp;rbt=",
            udp.port()
        )) && stored.contains("+sip.instance="),
        "Kamailio stored the Contact naming Roundabout on UDP with a token: {stored}"
    );
    let rewritten = uri_of(&stored).to_string();

    // A SIPp UAC calls alice at Kamailio; Kamailio relays to the stored (rewritten) contact.
    let uac = sipp_call(
        "invite_to_contact_uac.xml",
        UAC,
        k_addr,
        "sip:alice@registrar.test",
        &diagnostics,
    );
    let invite_ci = header(
        uac.sent()
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap(),
        "Call-ID",
    )
    .unwrap()
    .to_string();
    let relayed = wait_line(kamailio, &format!("KRELAY INVITE ci={invite_ci} "));
    assert_eq!(
        field(&relayed, "to"),
        rewritten,
        "Kamailio relayed the INVITE to the stored contact"
    );

    // JsSIP's side got the INVITE on its WebSocket with its own contact as R-URI (restored from
    // the token): Roundabout's WSS Via on top, then Kamailio's, then SIPp's.
    let invite = jssip.wait_for("incoming_invite", STEP);
    assert_eq!(invite.str("ruri"), contact, "R-URI restored from the token");
    assert_eq!(invite.str("call_id"), invite_ci);
    let invite_vias = invite.strs("vias");
    assert_eq!(invite_vias.len(), 3, "{invite:?}");
    assert!(
        invite_vias[0].starts_with(&format!(
            "SIP/2.0/WSS 127.0.0.1:{wss_port};branch=z9hG4bKrb"
        )),
        "{invite:?}"
    );
    assert!(
        invite_vias[1].starts_with(&format!("SIP/2.0/UDP {k_addr};")),
        "{invite:?}"
    );
    assert!(
        invite_vias[2].starts_with(&format!("SIP/2.0/UDP {UAC}:")),
        "{invite:?}"
    );
    // SIPp's Contact reaches the WebSocket side rewritten to Roundabout's WSS listener.
    assert!(
        invite.str("contact").starts_with(&format!(
            "<sip:sipp@127.0.0.1:{wss_port};transport=wss;rbt="
        )),
        "{invite:?}"
    );

    // The 200 SIPp got (through Kamailio) names Roundabout on UDP with a token, not JsSIP.
    let received = uac.received();
    let ok = received
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 1 INVITE"))
        .unwrap();
    let ok_contact = uri_of(header(ok, "Contact").unwrap()).to_string();
    assert!(
        ok_contact.starts_with(&format!(
            "sip:{user}@127.0.0.1:{};transport=udp;rbt=",
            udp.port()
        )),
        "{ok}"
    );
    assert!(
        !ok.contains(".invalid"),
        "JsSIP's own contact stays hidden: {ok}"
    );
    let sent = uac.sent();
    for method in ["ACK", "BYE"] {
        let request = sent
            .iter()
            .find(|m| m.starts_with(&format!("{method} ")))
            .unwrap();
        assert!(
            request.starts_with(&format!("{method} {ok_contact} SIP/2.0\r\n")),
            "{request}"
        );
    }
    // ACK and BYE went from SIPp to Roundabout directly (not via Kamailio: no Record-Route)
    // and down the WebSocket, again with JsSIP's own contact as R-URI.
    let ack = jssip.wait_for("ack", STEP);
    assert_eq!(
        (ack.str("ruri"), ack.str("call_id")),
        (contact.as_str(), invite_ci.as_str())
    );
    let bye = jssip.wait_for("bye", STEP);
    assert_eq!(
        (bye.str("ruri"), bye.str("call_id")),
        (contact.as_str(), invite_ci.as_str())
    );
    for method in ["ACK", "BYE"] {
        assert!(
            kamailio
                .log_lines(&format!("KREQ {method} ci={invite_ci} "))
                .is_empty(),
            "{method} bypassed Kamailio\n{}",
            diagnostics()
        );
    }

    // After the call JsSIP unregisters (Contact with expires=0, rewritten to the same token so
    // Kamailio finds the binding); the same call now gets Kamailio's 404.
    expect_200(&mut jssip, "unregistered", &diagnostics);
    let unregister = wait_line(kamailio, &format!("KREQ REGISTER ci={call_id} "));
    assert!(
        field(&unregister, "ct").starts_with(&format!("<{rewritten}>"))
            && field(&unregister, "ct").ends_with(";expires=0"),
        "the un-REGISTER names the same rewritten contact: {unregister}"
    );
    let refused = sipp_call(
        "invite_404_uac.xml",
        UAC,
        k_addr,
        "sip:alice@registrar.test",
        &diagnostics,
    );
    let refused_ci = header(&refused.sent()[0], "Call-ID").unwrap().to_string();
    wait_line(kamailio, &format!("KNOTFOUND INVITE ci={refused_ci} "));
    assert_eq!(
        jssip.events("incoming_invite").len(),
        1,
        "{}",
        jssip.transcript()
    );

    // The untrusted REGISTER never reached Kamailio, and mallory is not in the client cache:
    // a request for mallory@roundabout gets 404 (no -default-sip-server here).
    assert!(
        kamailio.log_lines("ci=untrusted-register").is_empty(),
        "{}",
        diagnostics()
    );
    let answer = message_by_user(&UdpPeer::bind(UNTRUSTED), udp, "mallory", "probe-mallory");
    assert!(answer.starts_with("SIP/2.0 404 "), "{answer}");
    // One WebSocket served JsSIP all along.
    assert_eq!(jssip.events("connected").len(), 1, "{}", jssip.transcript());
}

/// docs/client-cache.md: an un-REGISTER removes the binding from the client
/// cache. A registrar answers an un-REGISTER with the bindings that *remain* (RFC 3261
/// §10.3 step 8), so its 2xx lists no Contact for the removed one: Roundabout must take that
/// absence as the un-REGISTER, and a request for `alice@roundabout` no longer reaches the browser.
#[test]
fn unregister_removes_the_client_cache_binding() {
    if !kamailio_available() {
        return;
    }
    const KAMAILIO: &str = "127.0.24.2";
    const PROBE: &str = "127.0.24.3";
    let scene = Scene::start(registrar(KAMAILIO, ONE_CONTACT, &[]), "127.0.0.0/24", &[]);
    let udp = scene.udp();
    let diagnostics = || scene.diagnostics();
    let url = scene.ws_url();
    let (mut jssip, contact) = spawn_jssip(&url, None, &["--unregister-on-sigusr1", "1"]);
    expect_registered(&mut jssip, &contact, &diagnostics);
    // Bound: a MESSAGE for alice@roundabout (no token) reaches JsSIP through the client cache.
    let probe = UdpPeer::bind(PROBE);
    let answer = message_by_user(&probe, udp, "alice", "probe-bound");
    let incoming = jssip.wait_for("incoming_message", STEP);
    assert_eq!(incoming.str("ruri"), contact);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");

    // Unregistered (JsSIP sends `Contact: …;expires=0` and `Expires: 0`; Kamailio's 200 lists
    // no Contact): the user must be gone from the cache, so 404 (no -default-sip-server), or
    // 480 if the fix keeps the user as expired.
    // (SIGUSR1 to exactly the Node process this test started, by its PID.)
    let signalled = std::process::Command::new("kill")
        .args(["-USR1", &jssip.pid().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let unregistered = expect_200(&mut jssip, "unregistered", &diagnostics);
    assert!(unregistered.strs("contacts").is_empty(), "{unregistered:?}");
    let answer = message_by_user(&probe, udp, "alice", "probe-unbound");
    assert!(
        answer.starts_with("SIP/2.0 404 ") || answer.starts_with("SIP/2.0 480 "),
        "{answer}\nJsSIP got {:?}\n{}",
        jssip.events("incoming_message"),
        diagnostics()
    );
    assert_eq!(jssip.events("incoming_message").len(), 1);
}

/// A client that cannot set an outbound proxy sends its INVITE to Roundabout itself
/// (`sip:1000@<roundabout>`, user 1000 not registered): with `-default-sip-server` the call
/// goes to that server with the R-URI host rewritten to `expected_host` (its first FQDN, else
/// its IP) and completes, ACK and BYE following the Contact Roundabout rewrote.
fn default_server_call(uas_ip: &str, uac_ip: &str, fqdns: &str, expected_host: &str) {
    if !require("sipp") {
        return;
    }
    let uas_port = free_port(uas_ip);
    let mut uas = Sipp::run("uas.xml", uas_ip, uas_port, "udp")
        .calls(1)
        .spawn();
    let trusted = format!("{uas_ip}:{fqdns}:{uas_port}:udp:");
    let rb = Roundabout::start(&[
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
        "-default-sip-server",
        uas_ip,
    ]);
    let udp = rb.addr("udp");
    // uac.xml: R-URI sip:1000@<remote>;transport=udp, everything sent to the remote (Roundabout);
    // ACK and BYE by the 200's Contact, which names Roundabout too.
    let mut uac = Sipp::run("uac.xml", uac_ip, free_port(uac_ip), "udp")
        .to(udp)
        .arg("-s", "1000")
        .key("uas_transport", "udp")
        .calls(1)
        .spawn();
    let uac_code = uac.wait(Duration::from_secs(20));
    let uas_code = uas.wait(STEP);
    assert_eq!(
        (uac_code, uas_code),
        (Some(0), Some(0)),
        "call via -default-sip-server failed\nUAC errors:\n{}\nUAS errors:\n{}\nUAS got:\n{:#?}\nproxy log:\n{}",
        uac.errors(),
        uas.errors(),
        uas.received(),
        rb.logs()
    );
    let received = uas.received();
    let invite = received.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    assert!(
        invite.starts_with(&format!(
            "INVITE sip:1000@{expected_host}:{uas_port};transport=udp SIP/2.0\r\n"
        )),
        "R-URI host and port become the default server's:\n{invite}"
    );
    let v = vias(invite);
    assert!(
        v.len() == 2 && v[0].starts_with(&format!("Via: SIP/2.0/UDP {udp};branch=z9hG4bKrb")),
        "{invite}"
    );
    assert!(
        header(invite, "Contact").is_some_and(|c| c.starts_with(&format!(
            "<sip:sipp@127.0.0.1:{};transport=udp;rbt=",
            udp.port()
        ))),
        "{invite}"
    );
    // ACK and BYE reached the UAS through the token, with its own Contact as R-URI.
    let sent = uas.sent();
    let uas_contact = uri_of(header(ok_to_invite(&sent), "Contact").unwrap());
    for method in ["ACK", "BYE"] {
        let request = received
            .iter()
            .find(|m| m.starts_with(&format!("{method} ")))
            .unwrap_or_else(|| panic!("no {method} at the UAS: {received:#?}"));
        assert!(
            request.starts_with(&format!("{method} {uas_contact} SIP/2.0\r\n")),
            "{request}"
        );
    }
    drop(rb);

    // The same INVITE to a Roundabout without -default-sip-server: 404 from Roundabout itself.
    let rb = Roundabout::start(&["-strict-host", "-ack-ruri", "-trusted-server", &trusted]);
    let udp = rb.addr("udp");
    let diagnostics = || format!("proxy log:\n{}", rb.logs());
    let refused = sipp_call(
        "invite_404_uac.xml",
        uac_ip,
        udp,
        &format!("sip:1000@{udp};transport=udp"),
        &diagnostics,
    );
    let answer = refused
        .received()
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 404"))
        .unwrap();
    assert!(
        header(&answer, "To").is_some_and(|to| to.contains(";tag=rb")),
        "the 404 is Roundabout's own: {answer}"
    );
    assert!(
        rb.wait_for_log("request answered by the proxy", STEP),
        "{}",
        rb.logs()
    );
    assert!(!rb.logs().contains("request forwarded"), "{}", rb.logs());
}

#[test]
fn unknown_user_at_roundabout_goes_to_default_sip_server_by_ip() {
    default_server_call("127.0.22.2", "127.0.22.3", "", "127.0.22.2");
}

#[test]
fn unknown_user_at_roundabout_goes_to_default_sip_server_by_first_fqdn() {
    default_server_call(
        "127.0.22.4",
        "127.0.22.5",
        "pbx.test/alt.pbx.test",
        "pbx.test",
    );
}

/// A browser reconnects: JsSIP registers alice over WS, its process is killed (the WebSocket
/// closes), a new JsSIP registers the same AOR - with the same Contact user - on a new
/// WebSocket. Kamailio (one contact per AOR) keeps only the new binding; a MESSAGE to alice
/// via Kamailio and one to alice@roundabout (the client cache) both reach the new flow, and a
/// call via Kamailio is answered there.
#[test]
fn re_register_from_a_new_websocket_replaces_the_old_flow() {
    if !kamailio_available() {
        return;
    }
    const KAMAILIO: &str = "127.0.23.2";
    const UAC: &str = "127.0.23.3";
    let scene = Scene::start(registrar(KAMAILIO, ONE_CONTACT, &[]), "127.0.0.1", &[]);
    let (kamailio, rb) = (&scene.kamailio, &scene.rb);
    let k_addr = kamailio.addr("udp");
    let udp = scene.udp();
    let diagnostics = || scene.diagnostics();
    let url = scene.ws_url();

    let (mut first, first_contact) = spawn_jssip(&url, None, &["--contact-user", "alice"]);
    let first_call_id = expect_registered(&mut first, &first_contact, &diagnostics);
    let first_stored = uri_of(&wait_saved(kamailio, &first_call_id)).to_string();
    // The flow Roundabout saw the first WebSocket on (it logs the open).
    assert!(rb.wait_for_log("WebSocket open flow=ws:127.0.0.1:", STEP));
    let first_flow = rb
        .logs()
        .lines()
        .find_map(|l| l.split("WebSocket open flow=").nth(1))
        .map(|f| f.split_whitespace().next().unwrap().to_string())
        .unwrap();
    drop(first);
    let closed = format!("WebSocket closed flow={first_flow}");
    assert!(
        rb.wait_for_log(&closed, STEP),
        "{closed}\n{}",
        diagnostics()
    );

    let (mut second, second_contact) = spawn_jssip(&url, None, &["--contact-user", "alice"]);
    assert_ne!(first_contact, second_contact);
    // The 2xx lists the new binding only: Kamailio replaced the old one.
    let second_call_id = expect_registered(&mut second, &second_contact, &diagnostics);
    let second_stored = uri_of(&wait_saved(kamailio, &second_call_id)).to_string();
    assert!(
        second_stored.starts_with(&format!(
            "sip:alice@127.0.0.1:{};transport=udp;rbt=",
            udp.port()
        )),
        "{second_stored}"
    );
    // Same Contact user, another original URI (JsSIP picks a random host) and another flow.
    assert_ne!(first_stored, second_stored);

    // A MESSAGE to the AOR via Kamailio: relayed once, to the new contact, and delivered there.
    let message = sipp_call(
        "message_uac.xml",
        UAC,
        k_addr,
        "sip:alice@registrar.test",
        &diagnostics,
    );
    let message_ci = header(&message.sent()[0], "Call-ID").unwrap().to_string();
    wait_line(kamailio, &format!("KRELAY MESSAGE ci={message_ci} "));
    let relayed = kamailio.log_lines(&format!("KRELAY MESSAGE ci={message_ci} "));
    assert!(
        relayed.len() == 1 && field(&relayed[0], "to") == second_stored,
        "{relayed:#?}\n{}",
        diagnostics()
    );
    let incoming = second.wait_for("incoming_message", STEP);
    assert_eq!(incoming.str("ruri"), second_contact);
    assert_eq!(incoming.str("call_id"), message_ci);

    // The client cache follows the new flow as well: alice@roundabout reaches it.
    let answer = message_by_user(&UdpPeer::bind(UAC), udp, "alice", "probe-cache");
    assert!(
        answer.starts_with("SIP/2.0 200 "),
        "{answer}\n{}",
        diagnostics()
    );
    let incoming = second.wait_for("incoming_message", STEP);
    assert_eq!(
        (incoming.str("ruri"), incoming.str("call_id")),
        (second_contact.as_str(), "probe-cache")
    );

    // A call via Kamailio is answered on the new WebSocket.
    sipp_call(
        "invite_to_contact_uac.xml",
        UAC,
        k_addr,
        "sip:alice@registrar.test",
        &diagnostics,
    );
    let invite = second.wait_for("incoming_invite", STEP);
    assert_eq!(invite.str("ruri"), second_contact);
    second.wait_for("ack", STEP);
    second.wait_for("bye", STEP);
    // Nothing was sent towards the dead flow.
    assert!(!rb.logs().contains("flow gone"), "{}", diagnostics());
}

/// docs/client-cache.md: Roundabout finds the client by the user part of the R-URI in its client
/// cache (user → where the client is). A registrar that keeps several contacts per AOR lists
/// them all in every REGISTER 2xx (RFC 3261 §10.3 step 8) - here Kamailio with the newest
/// first (`desc_time_order`). Only the binding of the client the 2xx goes back to may enter
/// the client cache, so after a browser reconnects `alice@roundabout` reaches the new WebSocket,
/// not the old, closed one.
#[test]
fn client_cache_follows_the_flow_the_register_came_from() {
    if !kamailio_available() {
        return;
    }
    const KAMAILIO: &str = "127.0.25.2";
    const PROBE: &str = "127.0.25.3";
    // Several contacts per AOR (no single-contact flag), listed newest first.
    let kamailio = registrar(
        KAMAILIO,
        "0x00",
        &[r#"modparam("usrloc", "desc_time_order", 1)"#],
    );
    let scene = Scene::start(kamailio, "127.0.0.1", &[]);
    let rb = &scene.rb;
    let udp = scene.udp();
    let diagnostics = || scene.diagnostics();
    let url = scene.ws_url();
    let (mut first, first_contact) = spawn_jssip(&url, None, &["--contact-user", "alice"]);
    expect_registered(&mut first, &first_contact, &diagnostics);
    drop(first);
    assert!(
        rb.wait_for_log("WebSocket closed flow=ws:", STEP),
        "{}",
        diagnostics()
    );
    let (mut second, second_contact) = spawn_jssip(&url, None, &["--contact-user", "alice"]);
    let registered = second.wait_any(&["registered", "registration_failed"], STEP);
    assert_eq!(
        registered.event(),
        Some("registered"),
        "{}",
        second.transcript()
    );
    // Both bindings are listed, the new one first.
    let listed = registered.strs("contacts");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(uri_of(listed[0]), second_contact, "{listed:?}");

    let answer = message_by_user(&UdpPeer::bind(PROBE), udp, "alice", "probe-cache");
    assert!(
        answer.starts_with("SIP/2.0 200 "),
        "alice@roundabout reaches the connected browser: {answer}\n{}",
        diagnostics()
    );
    let incoming = second.wait_for("incoming_message", STEP);
    assert_eq!(incoming.str("ruri"), second_contact);
}

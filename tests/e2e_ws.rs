//! WebSocket and secure WebSocket (RFC 7118) end to end, with browser-style peers: JsSIP over
//! WS and WSS registering through Roundabout to a UDP registrar and being reached back through
//! its rewritten Contact; Roundabout as the WS/WSS client of a `ws` SIP server; and the
//! refusals (no `sip` subprotocol, a frame over the size limit) leaving other flows unharmed.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::HandshakeError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use common::certs::TestCa;
use common::node::{self, Json, NodeScript};
use common::udp_server::UdpServer;
use common::{free_port, header, require, sipp_messages, uri_of, vias, Roundabout, Sipp, UdpPeer};

/// What any single step may take; every test stays well under a minute.
const STEP: Duration = Duration::from_secs(10);

/// Every 200 SIPp got names only SIPp's own Via (Roundabout's was popped).
fn check_sipp_answers(uac: &Sipp, calls: usize) {
    let oks: Vec<String> = uac
        .received()
        .into_iter()
        .filter(|m| m.starts_with("SIP/2.0 200"))
        .collect();
    // One per call (a UDP retransmission under load may add a duplicate).
    let calls_answered: BTreeSet<&str> =
        oks.iter().filter_map(|ok| header(ok, "Call-ID")).collect();
    assert_eq!(calls_answered.len(), calls, "{oks:#?}");
    for ok in &oks {
        let vias = vias(ok);
        assert_eq!(vias.len(), 1, "{ok}");
        assert!(vias[0].contains("127.0.0.3:"), "{ok}");
    }
}

/// What JsSIP and Roundabout said, for a failure about `what`.
fn fail(jssip: &NodeScript, rb: &Roundabout, what: &str) -> String {
    format!("{what}\n{}\nproxy log:\n{}", jssip.transcript(), rb.logs())
}

/// Waits for JsSIP to report its `what` request (`message`, `options`) sent or failed, and
/// checks that it got a 200.
fn expect_sent(jssip: &mut NodeScript, what: &str, rb: &Roundabout) {
    let (sent, failed) = (format!("{what}_sent"), format!("{what}_failed"));
    let event = jssip.wait_any(&[&sent, &failed], STEP);
    assert_eq!(
        (event.event(), event.get("status").and_then(Json::as_u64)),
        (Some(sent.as_str()), Some(200)),
        "{}",
        fail(jssip, rb, &what.to_uppercase())
    );
}

/// JsSIP on `transport` (ws or wss) registers through Roundabout to a UDP registrar, sends a
/// MESSAGE and an OPTIONS that get 200, then is reached by a SIPp MESSAGE sent to the Contact
/// the registrar saw: the token in it leads back down the same WebSocket.
fn jssip_through_roundabout(transport: &str, contact_user: Option<&str>) {
    if !require("sipp") || !require("openssl") || !node::require_node() {
        return;
    }
    let ca = TestCa::new();
    let mut registrar = UdpServer::start("127.0.0.2");
    let trusted = format!("127.0.0.2:registrar.test:{}:udp:", registrar.addr.port());
    let mut args = ["-strict-host", "-ack-ruri", "-trusted-server", &trusted]
        .map(String::from)
        .to_vec();
    if transport == "wss" {
        args.extend(ca.leaf("proxy.test").wss_flags());
    }
    let rb = Roundabout::start(&args);
    let udp_port = rb.port("udp");
    let url = format!("{transport}://127.0.0.1:{}", rb.port(transport));

    let mut extra = vec![
        "--message-to",
        "sip:bob@registrar.test",
        "--message-body",
        "hello from jssip",
        "--options-to",
        "sip:registrar.test",
    ];
    if let Some(user) = contact_user {
        extra.extend(["--contact-user", user]);
    }
    let mut jssip = node::jssip_alice(&url, Some(&ca.cert), &extra);
    let contact = jssip.wait_for("started", STEP).str("contact").to_string();
    let user = contact
        .strip_prefix("sip:")
        .and_then(|c| c.split_once('@'))
        .map(|(user, _)| user.to_string())
        .unwrap();
    if let Some(wanted) = contact_user {
        assert_eq!(user, wanted);
    }

    // REGISTER: through Roundabout to the UDP registrar, and its 200 back.
    let registered = jssip.wait_any(&["registered", "registration_failed", "error"], STEP);
    assert_eq!(
        registered.event(),
        Some("registered"),
        "{}",
        fail(&jssip, &rb, "JsSIP did not register")
    );
    assert_eq!(registered.num("status"), 200);
    let register = registrar.wait_request("REGISTER", STEP);
    let register_vias = vias(&register);
    assert!(
        register_vias[0].starts_with(&format!(
            "Via: SIP/2.0/UDP 127.0.0.1:{udp_port};branch=z9hG4bKrb"
        )),
        "Roundabout's UDP Via on top:\n{register}"
    );
    assert!(
        register_vias[1].starts_with(&format!("Via: SIP/2.0/{} ", transport.to_uppercase()))
            && register_vias[1].contains(";received=127.0.0.1;rport="),
        "JsSIP's Via below, with received and rport:\n{register}"
    );
    let rewritten = header(&register, "Contact").unwrap();
    assert!(
        rewritten.starts_with(&format!(
            "<sip:{user}@127.0.0.1:{udp_port};transport=udp;rbt="
        )),
        "Contact names Roundabout on UDP with a token:\n{register}"
    );
    assert!(
        rewritten.contains("+sip.instance=") && rewritten.contains("reg-id=1"),
        "the Contact's header parameters are kept: {rewritten}"
    );
    // JsSIP sends Max-Forwards: 69; Roundabout takes one off.
    assert_eq!(header(&register, "Max-Forwards"), Some("68"), "{register}");
    // The 2xx JsSIP got carries its own Contact again, not Roundabout's.
    let answered = registered.strs("contacts");
    assert!(
        answered.len() == 1 && uri_of(answered[0]) == contact && !answered[0].contains("rbt="),
        "REGISTER 200 back to JsSIP carries {contact}: {answered:?}"
    );

    // MESSAGE and OPTIONS from JsSIP, answered by the UDP server through Roundabout.
    expect_sent(&mut jssip, "message", &rb);
    let message = registrar.wait_request("MESSAGE", STEP);
    assert!(
        message.starts_with("MESSAGE sip:bob@registrar.test SIP/2.0\r\n"),
        "{message}"
    );
    assert!(message.ends_with("\r\n\r\nhello from jssip"), "{message}");
    assert!(vias(&message)[0].starts_with("Via: SIP/2.0/UDP 127.0.0.1:"));
    expect_sent(&mut jssip, "options", &rb);
    let options = registrar.wait_request("OPTIONS", STEP);
    assert!(
        options.starts_with("OPTIONS sip:registrar.test SIP/2.0\r\n"),
        "{options}"
    );

    // A SIPp UAC on UDP sends a MESSAGE to the Contact the registrar saw; JsSIP gets it, with
    // its own contact as Request-URI, and SIPp gets JsSIP's 200.
    let target = uri_of(rewritten).to_string();
    let uac = sipp_messages(&rb, "127.0.0.3", free_port("127.0.0.3"), &target, 1);
    let incoming = jssip.wait_for("incoming_message", STEP);
    assert!(
        incoming.str("body").starts_with("hello from sipp 1"),
        "{incoming:?}"
    );
    assert_eq!(
        incoming.str("ruri"),
        contact,
        "R-URI restored from the token"
    );
    assert!(incoming.str("from").contains("sip:sipp@127.0.0.3:"));
    check_sipp_answers(&uac, 1);
    // Without a token, the client cache finds the registered user (the To user of the
    // REGISTER, whatever JsSIP's Contact user is) and sends down the same WebSocket.
    let uac = sipp_messages(
        &rb,
        "127.0.0.3",
        free_port("127.0.0.3"),
        &format!("sip:alice@127.0.0.1:{udp_port}"),
        1,
    );
    let incoming = jssip.wait_for("incoming_message", STEP);
    assert!(incoming.str("body").starts_with("hello from sipp 1"));
    assert_eq!(incoming.str("ruri"), contact, "R-URI from the client cache");
    check_sipp_answers(&uac, 1);
    // Exactly one WebSocket served JsSIP all along: it never reconnected.
    assert_eq!(jssip.events("connected").len(), 1, "{}", jssip.transcript());
    assert!(
        jssip.events("disconnected").is_empty(),
        "{}",
        jssip.transcript()
    );

    // The browser goes away: its WebSocket cannot be dialled back, so the same Contact now
    // gets 480 instead of being relayed anywhere.
    let rport = register_vias[1]
        .split(";rport=")
        .nth(1)
        .and_then(|p| p.split(';').next())
        .unwrap()
        .to_string();
    drop(jssip);
    let closed = format!("WebSocket closed flow={transport}:127.0.0.1:{rport}");
    assert!(rb.wait_for_log(&closed, STEP), "{closed}\n{}", rb.logs());
    let caller = UdpPeer::bind("127.0.0.3");
    let request = format!(
        "MESSAGE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK-gone;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:late@127.0.0.3>;tag=gone\r\nTo: <{target}>\r\n\
         Call-ID: gone@test\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        addr = caller.addr()
    );
    caller.send(rb.addr("udp"), &request);
    let answer = caller.recv().expect("an answer for the gone client");
    assert!(
        answer.starts_with("SIP/2.0 480 "),
        "{answer}\n{}",
        rb.logs()
    );
}

#[test]
fn jssip_over_wss_registers_messages_and_is_reached_via_its_contact() {
    // JsSIP's default: a random Contact user, as a browser would register.
    jssip_through_roundabout("wss", None);
}

#[test]
fn jssip_over_ws_registers_messages_and_is_reached_via_its_contact() {
    jssip_through_roundabout("ws", Some("alice"));
}

/// Roundabout as a WebSocket client: SIPp on UDP sends MESSAGEs for a trusted server whose
/// transport is `transport` (ws or wss); Roundabout dials the `ws` server peer with the `sip`
/// subprotocol and sends one SIP message per text frame.
fn roundabout_dials_ws_server(transport: &str) {
    if !require("sipp") || !require("openssl") || !node::require_node() {
        return;
    }
    let ca = TestCa::new();
    let leaf = ca.leaf("wsspeer.test");
    let (cert, key) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
    );
    let mut peer_args = vec!["--host", "127.0.0.5", "--port", "0"];
    if transport == "wss" {
        peer_args.extend(["--cert", &cert, "--key", &key]);
    }
    let mut peer = NodeScript::spawn("ws_server_peer.js", &peer_args, &[]);
    let port = peer.wait_for("listening", STEP).num("port");
    let trusted = format!("127.0.0.5:wsspeer.test:{port}:{transport}:");
    let ca_path = ca.cert.display().to_string();
    let rb = Roundabout::start(&[
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-tls-ca",
        &ca_path,
    ]);

    let uac = sipp_messages(
        &rb,
        "127.0.0.3",
        free_port("127.0.0.3"),
        "sip:peer@wsspeer.test",
        2,
    );
    check_sipp_answers(&uac, 2);

    // One connection, offering exactly `sip`, Host and SNI the server's first FQDN, path `/`.
    let connection = peer.wait_for("connection", STEP);
    let offered = connection.strs("offered");
    assert_eq!(offered, ["sip"], "{connection:?}");
    assert_eq!(connection.str("protocol"), "sip");
    assert_eq!(connection.str("path"), "/");
    assert_eq!(connection.str("host"), format!("wsspeer.test:{port}"));
    if transport == "wss" {
        assert_eq!(connection.str("servername"), "wsspeer.test");
    }
    // Each MESSAGE in a text frame of its own, Roundabout's Via on top.
    // (SIPp has its answers, so every frame is already reported; a UDP retransmission under
    // load would only add a duplicate.)
    peer.wait_for("frame", STEP);
    peer.wait_for("frame", STEP);
    let mut bodies = BTreeSet::new();
    for frame in peer.events("frame") {
        assert_eq!(frame.str("type"), "text", "{frame:?}");
        let sip = frame.str("sip");
        let (head, body) = sip.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("MESSAGE sip:peer@wsspeer.test SIP/2.0\r\n"),
            "{sip}"
        );
        let length: usize = header(head, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(
            length,
            body.len(),
            "exactly one SIP message per frame:\n{sip}"
        );
        assert_eq!(head.matches(" SIP/2.0\r\n").count(), 1, "{sip}");
        let vias = vias(head);
        assert!(
            vias[0].starts_with(&format!(
                "Via: SIP/2.0/{} 127.0.0.1:",
                transport.to_uppercase()
            )) && vias[0].contains(";branch=z9hG4bKrb"),
            "{sip}"
        );
        assert!(vias[1].starts_with("Via: SIP/2.0/UDP 127.0.0.3:"), "{sip}");
        bodies.insert(body.trim_end().to_string());
    }
    assert_eq!(
        bodies.iter().map(String::as_str).collect::<Vec<_>>(),
        ["hello from sipp 1", "hello from sipp 2"]
    );
    assert_eq!(
        peer.events("connection").len(),
        1,
        "the second MESSAGE reused the connection\n{}",
        peer.transcript()
    );
    assert!(peer.events("refused").is_empty(), "{}", peer.transcript());
}

#[test]
fn roundabout_dials_a_wss_server_with_the_sip_subprotocol() {
    roundabout_dials_ws_server("wss");
}

#[test]
fn roundabout_dials_a_ws_server_with_the_sip_subprotocol() {
    roundabout_dials_ws_server("ws");
}

type Ws = WebSocket<TcpStream>;

/// Opens a WebSocket to `addr`, offering `protocol` (none when `None`). A refused handshake
/// gives its HTTP status and body.
fn ws_connect(addr: SocketAddr, protocol: Option<&str>) -> Result<Ws, (u16, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => {
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap()),
                Some("sip"),
                "the sip subprotocol is echoed"
            );
            Ok(ws)
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(error) => panic!("handshake with {addr} failed: {error}"),
    }
}

/// The next SIP message on `ws` (control frames skipped).
fn ws_recv(ws: &mut Ws) -> String {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        match ws.read().unwrap() {
            Message::Text(text) => return text.as_str().to_string(),
            Message::Binary(data) => return String::from_utf8_lossy(&data).into_owned(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
    panic!("no SIP message within {STEP:?}");
}

/// A request from a WebSocket client at `ws`, for the UDP server behind Roundabout.
fn ws_request(method: &str, n: usize, body: &str) -> String {
    format!(
        "{method} sip:registrar.test SIP/2.0\r\n\
         Via: SIP/2.0/WS client{n}.invalid;branch=z9hG4bK-ws-{method}-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@registrar.test>;tag=ws{n}\r\n\
         To: <sip:registrar.test>\r\nCall-ID: ws-{method}-{n}@test\r\nCSeq: {n} {method}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends a request on `ws` and expects its 200 back on the same connection.
fn ws_round_trip(ws: &mut Ws, method: &str, n: usize, body: &str) {
    let request = ws_request(method, n, body);
    ws.send(Message::text(request)).unwrap();
    let answer = ws_recv(ws);
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(header(&answer, "CSeq"), Some(&*format!("{n} {method}")));
    let vias = vias(&answer);
    assert_eq!(vias.len(), 1, "{answer}");
    assert!(vias[0].contains(&format!("client{n}.invalid")), "{answer}");
}

/// The next frame on `ws` that is not a WebSocket ping or pong.
fn ws_next_frame(ws: &mut Ws) -> Message {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            frame => return frame,
        }
    }
    panic!("no frame within {STEP:?}");
}

#[test]
fn a_double_crlf_frame_is_answered_with_a_single_crlf() {
    let mut server = UdpServer::start("127.0.0.2");
    let trusted = format!("127.0.0.2:registrar.test:{}:udp:", server.addr.port());
    let rb = Roundabout::start(&["-strict-host", "-trusted-server", &trusted]);
    let mut ws = ws_connect(rb.addr("ws"), Some("sip")).unwrap();

    // RFC 5626 §3.5.1 as SIP.js sends it: a text frame of CRLFCRLF gets a text frame of CRLF.
    ws.send(Message::text("\r\n\r\n")).unwrap();
    assert_eq!(ws_next_frame(&mut ws), Message::text("\r\n"));
    // In a binary frame, the answer is binary.
    ws.send(Message::binary(b"\r\n\r\n".to_vec())).unwrap();
    assert_eq!(ws_next_frame(&mut ws), Message::binary(b"\r\n".to_vec()));
    // A lone CRLF is someone's pong: no answer, so the next frame is the 200 to a request.
    ws.send(Message::text("\r\n")).unwrap();
    ws_round_trip(&mut ws, "OPTIONS", 1, "");
    // The keep-alives never reached the server; the request did, once.
    drop(ws);
    let seen = server.all();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn refused_handshake_and_oversized_frame_leave_other_flows_alone() {
    let mut server = UdpServer::start("127.0.0.2");
    let trusted = format!("127.0.0.2:registrar.test:{}:udp:", server.addr.port());
    let rb = Roundabout::start(&[
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-max-message-size",
        "2048",
    ]);
    let ws_addr = rb.addr("ws");

    // A good client, connected before the trouble and served before it.
    let mut good = ws_connect(ws_addr, Some("sip")).unwrap();
    ws_round_trip(&mut good, "OPTIONS", 1, "");

    // No subprotocol at all, or only others: HTTP 400 and a warning.
    let (status, reason) = ws_connect(ws_addr, None).err().unwrap();
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("sip"), "the refusal says why: {reason}");
    let (status, _) = ws_connect(ws_addr, Some("chat, xmpp")).err().unwrap();
    assert_eq!(status, 400);
    assert!(
        rb.wait_for_log("WebSocket handshake refused", STEP),
        "{}",
        rb.logs()
    );
    let refused = rb
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("WebSocket handshake refused"))
        .count();
    assert!(refused >= 1, "a warn line per refusal:\n{}", rb.logs());

    // A frame over -max-message-size: that connection is closed with 1009 and a warning.
    let mut big = ws_connect(ws_addr, Some("sip")).unwrap();
    let oversized = ws_request("MESSAGE", 2, &"x".repeat(4096));
    assert!(oversized.len() > 4096);
    big.send(Message::text(oversized)).unwrap();
    let deadline = Instant::now() + STEP;
    let close = loop {
        assert!(Instant::now() < deadline, "no close frame within {STEP:?}");
        match big.read() {
            Ok(Message::Close(close)) => break close,
            Ok(_) => continue,
            Err(error) => panic!("no close frame before {error}\n{}", rb.logs()),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Size, "{close:?}");
    assert_eq!(u16::from(close.code), 1009);
    assert!(rb.wait_for_log("message too big", STEP), "{}", rb.logs());
    assert!(
        rb.logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("message too big")),
        "{}",
        rb.logs()
    );

    // The good client is still served on its connection, up to the limit itself; a new one too.
    ws_round_trip(&mut good, "OPTIONS", 3, "");
    let at_limit = (0..2048)
        .map(|n| "y".repeat(n))
        .find(|body| ws_request("MESSAGE", 4, body).len() == 2048)
        .unwrap();
    ws_round_trip(&mut good, "MESSAGE", 4, &at_limit);
    let mut again = ws_connect(ws_addr, Some("sip")).unwrap();
    ws_round_trip(&mut again, "OPTIONS", 5, "");

    // Nothing of the oversized message reached the server.
    let cseqs: HashMap<String, usize> = server
        .all()
        .iter()
        .filter_map(|m| header(m, "CSeq").map(String::from))
        .fold(HashMap::new(), |mut seen, cseq| {
            *seen.entry(cseq).or_default() += 1;
            seen
        });
    assert!(!cseqs.contains_key("2 MESSAGE"), "{cseqs:?}");
    for cseq in ["1 OPTIONS", "3 OPTIONS", "4 MESSAGE", "5 OPTIONS"] {
        assert_eq!(
            cseqs.get(cseq),
            Some(&1),
            "{cseq} reached the server once: {cseqs:?}"
        );
    }
}

#[test]
fn script_events_parse_as_json() {
    let line = r#"{"event":"frame","type":"text","sip":"OPTIONS sip:a SIP/2.0\r\nX: \"q\" \u00e9\ud83d\ude00\r\n\r\n","n":[1,2.5,-3],"ok":true,"none":null}"#;
    let event = Json::parse(line).unwrap();
    assert_eq!(event.event(), Some("frame"));
    assert_eq!(
        event.str("sip"),
        "OPTIONS sip:a SIP/2.0\r\nX: \"q\" \u{e9}\u{1f600}\r\n\r\n"
    );
    assert_eq!(event.get("n").unwrap().as_array().unwrap().len(), 3);
    assert_eq!(event.get("ok"), Some(&Json::Bool(true)));
    assert_eq!(event.get("none"), Some(&Json::Null));
    assert_eq!(Json::parse(r#"{"port":40123}"#).unwrap().num("port"), 40123);
    assert_eq!(Json::parse("{\"a\":1} trailing"), None);
    assert_eq!(Json::parse("not json"), None);
}

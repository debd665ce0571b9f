//! The proxy core against SIPp and raw peers: full calls across UDP and TCP through
//! `-trusted-server` entries, and the answers Roundabout gives itself (403, 483, 400).

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    first, free_port, header, ok_to_invite, require, uri_of, vias, Roundabout, Sipp, UdpPeer,
};

const CALLS: u32 = 3;

/// Runs calls from a SIPp UAC on `uac_t` to a SIPp UAS on `uas_t` through Roundabout and
/// returns (proxy, uac, uas) after both ends finished successfully.
fn call_through(uac_t: &str, uas_t: &str) -> (Roundabout, Sipp, Sipp) {
    let uas_port = free_port("127.0.0.2");
    let trusted = format!("127.0.0.2::{uas_port}:{uas_t}:");
    let rb = Roundabout::start(&["-strict-host", "-ack-ruri", "-trusted-server", &trusted]);
    let mut uas = Sipp::run("uas.xml", "127.0.0.2", uas_port, uas_t)
        .calls(CALLS)
        .spawn();
    let mut uac = Sipp::run("uac.xml", "127.0.0.3", free_port("127.0.0.3"), uac_t)
        .to(format!("127.0.0.2:{uas_port}"))
        .via(rb.addr(uac_t))
        .key("uas_transport", uas_t)
        .calls(CALLS)
        .rate(10)
        .spawn();
    let uac_code = uac.wait(Duration::from_secs(40));
    let uas_code = uas.wait(Duration::from_secs(10));
    assert_eq!(
        (uac_code, uas_code),
        (Some(0), Some(0)),
        "calls failed\nUAC errors:\n{}\nUAS errors:\n{}\nproxy log:\n{}",
        uac.errors(),
        uas.errors(),
        rb.logs()
    );
    (rb, uac, uas)
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn check_call(rb: &Roundabout, uac: &Sipp, uas: &Sipp, uac_t: &str, uas_t: &str) {
    let sent = uac.sent();
    let sent_invite = first(&sent, "INVITE ");
    let received = uas.received();
    let invite = first(&received, "INVITE ");
    // Roundabout's Via on top, for the egress transport, then the UAC's with received/rport.
    let invite_vias = vias(invite);
    assert!(
        invite_vias[0].starts_with(&format!(
            "Via: SIP/2.0/{} 127.0.0.1:{};branch=z9hG4bKrb",
            uas_t.to_uppercase(),
            rb.port(uas_t)
        )),
        "{invite}"
    );
    assert!(
        invite_vias[1].contains(";received=127.0.0.3;rport="),
        "{invite}"
    );
    // The Contact names Roundabout on the egress transport.
    let contact = header(invite, "Contact").unwrap();
    assert!(
        contact.starts_with(&format!(
            "<sip:sipp@127.0.0.1:{};transport={uas_t};rbt=",
            rb.port(uas_t)
        )),
        "{contact}"
    );
    // Unedited headers and the body arrive byte for byte.
    for name in ["From", "To", "Call-ID", "CSeq", "Subject", "Content-Type"] {
        assert_eq!(header(invite, name), header(sent_invite, name), "{name}");
    }
    assert_eq!(body(invite), body(sent_invite));
    assert_eq!(header(invite, "Max-Forwards"), Some("69"));
    // The 200 the UAC gets names Roundabout on the UAC's transport, our Via gone.
    let received_by_uac = uac.received();
    let ok = ok_to_invite(&received_by_uac);
    let contact = header(ok, "Contact").unwrap();
    assert!(
        contact.starts_with(&format!(
            "<sip:127.0.0.1:{};transport={uac_t};rbt=",
            rb.port(uac_t)
        )),
        "{contact}"
    );
    assert_eq!(vias(ok).len(), 1, "{ok}");
    // In-dialog ACK and BYE, sent to that Contact, reached the UAS with its own URI restored.
    let sent_by_uas = uas.sent();
    let uas_ok = ok_to_invite(&sent_by_uas);
    let uas_uri = uri_of(header(uas_ok, "Contact").unwrap());
    assert!(
        uas_uri.starts_with(&format!("sip:127.0.0.2:{}", port_of(invite))),
        "{uas_ok}"
    );
    let ack = first(&received, "ACK ");
    assert!(
        ack.starts_with(&format!("ACK {uas_uri} SIP/2.0\r\n")),
        "{ack}"
    );
    first(&received, "BYE ");
}

/// The UAS port, from the INVITE's request line.
fn port_of(invite: &str) -> u16 {
    let uri = invite.split_whitespace().nth(1).unwrap();
    uri.split(':')
        .nth(2)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn call_from_udp_to_tcp() {
    if !require("sipp") {
        return;
    }
    let (rb, uac, uas) = call_through("udp", "tcp");
    check_call(&rb, &uac, &uas, "udp", "tcp");
}

#[test]
fn call_from_tcp_to_udp() {
    if !require("sipp") {
        return;
    }
    let (rb, uac, uas) = call_through("tcp", "udp");
    check_call(&rb, &uac, &uas, "tcp", "udp");
}

fn options(ruri: &str, peer: &UdpPeer, extra: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK-{n}\r\n\
         From: <sip:t@example.com>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: {n}@test\r\n\
         CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n",
        addr = peer.addr(),
        n = extra.len(),
    )
}

#[test]
fn answers_of_its_own_and_recovery_from_bad_input() {
    let server = UdpPeer::bind("127.0.0.2");
    let rb = Roundabout::serving(&server, "", &["-strict-host"]);
    let proxy = rb.addr("udp");
    let client = UdpPeer::bind("127.0.0.3");

    // -strict-host: an unknown host is refused and nothing is relayed.
    client.send(
        proxy,
        &options(
            "sip:x@192.0.2.99",
            &client,
            "Max-Forwards: 70\r\nUser-Agent: roundabout-e2e-test-client/1.0\r\n",
        ),
    );
    let answer = client.recv().expect("403");
    assert!(answer.starts_with("SIP/2.0 403 Forbidden\r\n"), "{answer}");
    assert!(header(&answer, "To").unwrap().contains(";tag="), "{answer}");
    // RFC 3261 §18.2.1: the answer's Via says where the request really came from.
    let via = header(&answer, "Via").unwrap();
    assert!(via.contains(";received=127.0.0.3"), "{answer}");

    // Max-Forwards 0.
    client.send(
        proxy,
        &options("sip:x@127.0.0.2", &client, "Max-Forwards: 0\r\n"),
    );
    assert!(client
        .recv()
        .unwrap()
        .starts_with("SIP/2.0 483 Too Many Hops\r\n"));

    // Malformed but answerable: 400 with the Via echoed.
    let bad = options("sip:x@127.0.0.2", &client, "Max-Forwards: 70\r\n")
        .replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    client.send(proxy, &bad);
    let answer = client.recv().expect("400");
    assert!(answer.starts_with("SIP/2.0 400 Bad Request"), "{answer}");
    assert_eq!(header(&answer, "Via"), header(&bad, "Via"));

    // Garbage: dropped without an answer.
    client
        .socket
        .send_to(b"\x16\x03\x01garbage\r\n\r\n", proxy)
        .unwrap();
    client
        .socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(client.recv(), None);
    client
        .socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();

    // Nothing of the above reached the server; the next good request does.
    server
        .socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(server.recv(), None, "nothing relayed for refused requests");
    server
        .socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.send(
        proxy,
        &options("sip:x@127.0.0.2", &client, "Max-Forwards: 70\r\n"),
    );
    let relayed = server.recv().expect("relayed OPTIONS");
    assert!(
        relayed.starts_with("OPTIONS sip:x@127.0.0.2 SIP/2.0\r\n"),
        "{relayed}"
    );
    assert!(
        rb.wait_for_log("malformed message dropped", Duration::from_secs(1)),
        "{}",
        rb.logs()
    );
}

/// RFC 3261 §16.9: a request whose next hop cannot be connected to is answered 503, not lost.
#[test]
fn unreachable_server_is_answered_503() {
    // A TCP port with nothing listening: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let trusted = format!("127.0.0.2::{port}:tcp:");
    let rb = Roundabout::start(&["-strict-host", "-trusted-server", &trusted]);
    let client = UdpPeer::bind("127.0.0.3");
    let ruri = format!("sip:x@127.0.0.2:{port}");
    client.send(
        rb.addr("udp"),
        &options(&ruri, &client, "Max-Forwards: 70\r\n"),
    );
    let answer = client.recv().expect("503");
    assert!(
        answer.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{answer}"
    );
    // Only the client's own Via comes back, with received/rport.
    let answer_vias = vias(&answer);
    assert_eq!(answer_vias.len(), 1, "{answer}");
    assert!(answer_vias[0].contains("received=127.0.0.3"), "{answer}");
    assert!(
        rb.wait_for_log("cannot connect", Duration::from_secs(1)),
        "{}",
        rb.logs()
    );
}

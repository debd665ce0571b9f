//! Large requests off UDP (issue 19, RFC 3261 §18.1.1): with `-udp-mtu`, a 4 KB MESSAGE to a
//! UDP trusted server leaves over TCP to the same address and port, its Via and Contact naming
//! TCP, and the answer to it comes back to the UDP client; without the flag the same request
//! goes over UDP unchanged; with the flag and nothing listening on TCP there, it goes over UDP
//! after all. The server is a std UDP socket and a TCP listener on one port.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{header, ok_for, vias, Roundabout, UdpPeer};

const SERVER_IP: &str = "127.0.0.2";
const CLIENT_IP: &str = "127.0.0.3";
/// The body that makes the request about 4 KB: far over the 1300 bytes of `-udp-mtu` alone.
const BODY_BYTES: usize = 3800;
const WAIT: Duration = Duration::from_secs(5);
/// How long a message that must not come is waited for.
const QUIET: Duration = Duration::from_millis(500);

/// A 4 KB MESSAGE from `client` to the server at `server`.
fn big_message(client: &UdpPeer, server: SocketAddr, n: u32) -> String {
    request("MESSAGE", client, server, n, &"x".repeat(BODY_BYTES))
}

/// A request from `client` to the server at `server`, the `n`th of its test, with `body`; a
/// CANCEL for the INVITE of the same `n` has its Via, Call-ID and CSeq number.
fn request(method: &str, client: &UdpPeer, server: SocketAddr, n: u32, body: &str) -> String {
    format!(
        "{method} sip:peer@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK-mtu{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:c@example.com>;tag=c{n}\r\nTo: <sip:peer@{server}>\r\n\
         Call-ID: mtu{n}@test\r\nCSeq: 1 {method}\r\nContact: <sip:c@{addr}>\r\n\
         Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}",
        addr = client.addr(),
        len = body.len(),
    )
}

/// Accepts one connection, handed back when it comes.
fn accept_one(listener: TcpListener) -> mpsc::Receiver<TcpStream> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let _ = tx.send(stream);
        }
    });
    rx
}

/// The next message on `stream` (head, then Content-Length bytes), what was read after it
/// kept in `pending`; panics after the stream's read timeout.
fn read_message(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(pending).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = header(&text[..end], "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let rest = pending.split_off(end + 4 + len);
                let msg = String::from_utf8(std::mem::replace(pending, rest)).unwrap();
                return msg;
            }
        }
        let n = stream
            .read(&mut chunk)
            .expect("a message within the timeout");
        assert!(n > 0, "connection closed");
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// The server's end of the connection Roundabout opens.
fn accepted_within(accepted: &mpsc::Receiver<TcpStream>, rb: &Roundabout) -> TcpStream {
    accepted
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("nothing over TCP:\n{}", rb.logs()))
}

#[test]
fn a_request_over_the_mtu_goes_over_tcp_and_its_answer_comes_back() {
    let server = UdpPeer::bind(SERVER_IP);
    let listener = TcpListener::bind(server.addr()).unwrap();
    let accepted = accept_one(listener);
    let rb = Roundabout::serving(&server, "", &["-strict-host", "-udp-mtu"]);
    let client = UdpPeer::bind(CLIENT_IP);

    client.send(rb.addr("udp"), &big_message(&client, server.addr(), 1));
    let mut stream = accepted_within(&accepted, &rb);
    let request = read_message(&mut stream, &mut Vec::new());
    let tcp = rb.port("tcp");
    let top = vias(&request)[0];
    assert!(
        top.starts_with(&format!("Via: SIP/2.0/TCP 127.0.0.1:{tcp};branch=")),
        "{request}"
    );
    let contact = header(&request, "Contact").unwrap();
    assert!(
        contact.contains(&format!("@127.0.0.1:{tcp};transport=tcp;")),
        "{contact}"
    );
    assert!(request.ends_with(&"x".repeat(BODY_BYTES)), "body changed");
    assert_eq!(server.recv_within(QUIET), None, "also sent over UDP");
    assert!(rb.wait_for_log("forwarded over TCP", WAIT), "{}", rb.logs());

    // The answer takes the Via back to the client, over UDP.
    stream
        .write_all(ok_for(&request, "server", &[]).as_bytes())
        .unwrap();
    let answer = client.recv_within(WAIT).expect("200 back to the client");
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(vias(&answer).len(), 1, "{answer}");
}

/// `request` as it left over UDP: Roundabout's UDP Via (at `udp`) on top, without the
/// moved-off-UDP mark.
fn assert_left_over_udp(request: &str, udp: u16) {
    assert!(
        vias(request)[0].starts_with(&format!("Via: SIP/2.0/UDP 127.0.0.1:{udp};branch=")),
        "{request}"
    );
    assert!(!request.contains("rbmtu"), "{request}");
}

#[test]
fn without_the_flag_the_same_request_goes_over_udp_unchanged() {
    let server = UdpPeer::bind(SERVER_IP);
    let listener = TcpListener::bind(server.addr()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let rb = Roundabout::serving(&server, "", &["-strict-host"]);
    let client = UdpPeer::bind(CLIENT_IP);

    client.send(rb.addr("udp"), &big_message(&client, server.addr(), 2));
    let request = server.recv_within(WAIT).expect("over UDP");
    let udp = rb.port("udp");
    assert_left_over_udp(&request, udp);
    assert!(
        header(&request, "Contact")
            .unwrap()
            .contains(";transport=udp;"),
        "{request}"
    );
    assert!(request.ends_with(&"x".repeat(BODY_BYTES)), "body changed");
    assert!(
        listener.accept().is_err(),
        "a TCP connection was opened too"
    );
}

#[test]
fn with_nothing_on_tcp_it_falls_back_to_udp_and_arrives() {
    // UDP only: the same port on TCP is refused.
    let server = UdpPeer::bind(SERVER_IP);
    let rb = Roundabout::serving(&server, "", &["-strict-host", "-udp-mtu=1300"]);
    let client = UdpPeer::bind(CLIENT_IP);

    client.send(rb.addr("udp"), &big_message(&client, server.addr(), 3));
    let request = server
        .recv_within(WAIT)
        .unwrap_or_else(|| panic!("did not fall back to UDP:\n{}", rb.logs()));
    let udp = rb.port("udp");
    assert_left_over_udp(&request, udp);
    assert!(
        header(&request, "Contact")
            .unwrap()
            .contains(&format!("@127.0.0.1:{udp};transport=udp;")),
        "{request}"
    );
    assert!(request.ends_with(&"x".repeat(BODY_BYTES)), "body changed");
    assert!(
        rb.wait_for_log("no TCP connection, sent over UDP", WAIT),
        "{}",
        rb.logs()
    );

    // Its branch verifies for the UDP flow: the answer reaches the client.
    server.send(rb.addr("udp"), &ok_for(&request, "server", &[]));
    let answer = client.recv_within(WAIT).expect("200 back to the client");
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
}

#[test]
fn the_cancel_of_a_moved_invite_follows_it_over_tcp() {
    let server = UdpPeer::bind(SERVER_IP);
    let listener = TcpListener::bind(server.addr()).unwrap();
    let accepted = accept_one(listener);
    let rb = Roundabout::serving(&server, "", &["-strict-host", "-udp-mtu"]);
    let client = UdpPeer::bind(CLIENT_IP);
    let body = "v=0\r\n".repeat(BODY_BYTES / 5);

    client.send(
        rb.addr("udp"),
        &request("INVITE", &client, server.addr(), 4, &body),
    );
    let mut stream = accepted_within(&accepted, &rb);
    let mut pending = Vec::new();
    let invite = read_message(&mut stream, &mut pending);
    assert!(invite.starts_with("INVITE "), "{invite}");

    // Small enough for UDP, the CANCEL goes where its INVITE went, with the same Via.
    client.send(
        rb.addr("udp"),
        &request("CANCEL", &client, server.addr(), 4, ""),
    );
    let cancel = read_message(&mut stream, &mut pending);
    assert!(cancel.starts_with("CANCEL "), "{cancel}");
    assert_eq!(vias(&cancel)[0], vias(&invite)[0], "{invite}\n{cancel}");
    assert_eq!(server.recv_within(QUIET), None, "sent over UDP too");
}

#[test]
fn a_peer_that_is_no_trusted_server_answers_the_fallback_over_udp() {
    // Who may answer a peer that is no trusted server depends on the transport: the branch of
    // the fallback is minted for UDP, so the peer's answer over UDP verifies.
    let peer = UdpPeer::bind("127.0.0.4");
    let rb = Roundabout::start(&["-udp-mtu", "-default-network", "udp"]);
    let client = UdpPeer::bind(CLIENT_IP);

    client.send(rb.addr("udp"), &big_message(&client, peer.addr(), 5));
    let request = peer
        .recv_within(WAIT)
        .unwrap_or_else(|| panic!("did not fall back to UDP:\n{}", rb.logs()));
    assert!(
        vias(&request)[0].starts_with("Via: SIP/2.0/UDP "),
        "{request}"
    );
    assert!(
        rb.wait_for_log("no TCP connection, sent over UDP", WAIT),
        "{}",
        rb.logs()
    );
    peer.send(rb.addr("udp"), &ok_for(&request, "peer", &[]));
    let answer = client
        .recv_within(WAIT)
        .unwrap_or_else(|| panic!("no 200 back:\n{}", rb.logs()));
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
}

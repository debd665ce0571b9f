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
    let body = "x".repeat(BODY_BYTES);
    format!(
        "MESSAGE sip:peer@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK-mtu{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:c@example.com>;tag=c{n}\r\nTo: <sip:peer@{server}>\r\n\
         Call-ID: mtu{n}@test\r\nCSeq: 1 MESSAGE\r\nContact: <sip:c@{addr}>\r\n\
         Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}",
        addr = client.addr(),
        len = body.len(),
    )
}

/// Accepts one connection and reads one message from it (head, then Content-Length bytes),
/// handing both back; the stream stays open for the answer.
fn accept_one(listener: TcpListener) -> mpsc::Receiver<(String, TcpStream)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = header(&text, "Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let _ = tx.send((text, stream));
                    return;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    rx
}

#[test]
fn a_request_over_the_mtu_goes_over_tcp_and_its_answer_comes_back() {
    let server = UdpPeer::bind(SERVER_IP);
    let listener = TcpListener::bind(server.addr()).unwrap();
    let accepted = accept_one(listener);
    let rb = Roundabout::serving(&server, "", &["-strict-host", "-udp-mtu"]);
    let client = UdpPeer::bind(CLIENT_IP);

    client.send(rb.addr("udp"), &big_message(&client, server.addr(), 1));
    let (request, mut stream) = accepted
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("nothing over TCP:\n{}", rb.logs()));
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
    assert!(
        vias(&request)[0].starts_with(&format!("Via: SIP/2.0/UDP 127.0.0.1:{udp};branch=")),
        "{request}"
    );
    assert!(!request.contains("rbmtu"), "{request}");
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
    assert!(
        vias(&request)[0].starts_with(&format!("Via: SIP/2.0/UDP 127.0.0.1:{udp};branch=")),
        "{request}"
    );
    assert!(!request.contains("rbmtu"), "{request}");
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

//! Roundabout played against as an attacker would, with `-strict-host -strict-client`: forged
//! responses, sent from anywhere, must change nothing and reach no one.
//!
//! The attacker here is as strong as one can be without being on the path: it knows
//! Roundabout's address, its branch prefix, even a branch Roundabout really used (as if it had
//! seen one), and it holds valid contact tokens (the test gives Roundabout a known
//! `-token-key` and mints them). Only the response authentication stands in its way.
//!
//! Loopback addresses used here (none used by other test files): 127.0.31.x.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use roundabout::proxy::token::TokenKey;
use roundabout::sip::Transport;
use roundabout::transport::FlowKey;

use common::{header, tcp_from, Roundabout, UdpPeer};

const KEY: [u8; 32] = [0x5a; 32];

fn key_hex() -> String {
    KEY.iter().map(|b| format!("{b:02x}")).collect()
}

struct Net {
    rb: Roundabout,
    alice: UdpPeer,
    registrar: UdpPeer,
    attacker: UdpPeer,
    victim: UdpPeer,
}

impl Net {
    fn start() -> Net {
        Net::start_with_client("127.0.31.10")
    }

    /// With `client` the one trusted client address (-strict-client).
    fn start_with_client(client: &str) -> Net {
        let registrar = UdpPeer::bind("127.0.31.2");
        let rb = Roundabout::serving(
            &registrar,
            "registrar.test",
            &[
                "-strict-host",
                "-strict-client",
                "-trusted-client-ip",
                client,
                "-trusted-client-mask",
                "32",
                "-token-key",
                &key_hex(),
            ],
        );
        let net = Net {
            rb,
            alice: UdpPeer::bind("127.0.31.10"),
            registrar,
            attacker: UdpPeer::bind("127.0.31.66"),
            victim: UdpPeer::bind("127.0.31.77"),
        };
        for peer in [&net.alice, &net.registrar, &net.attacker, &net.victim] {
            peer.socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        net
    }

    fn proxy(&self) -> SocketAddr {
        self.rb.addr("udp")
    }

    /// Alice registers through Roundabout; the registrar grants it. Returns the REGISTER as
    /// the registrar got it.
    fn register_alice(&self) -> String {
        let register = format!(
            "REGISTER sip:registrar.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch=z9hG4bK-reg-1\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@registrar.test>;tag=a1\r\nTo: <sip:alice@registrar.test>\r\n\
             Call-ID: reg-alice@test\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:alice@{}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            self.alice.addr(),
            self.alice.addr()
        );
        self.alice.send(self.proxy(), &register);
        let got = self
            .registrar
            .recv()
            .expect("REGISTER reached the registrar");
        self.registrar.send(self.proxy(), &granted(&got, &got));
        let ok = self.alice.recv().expect("200 back to alice");
        assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
        got
    }

    /// A new INVITE for `user@roundabout` from the registrar (as after a location lookup).
    fn call(&self, user: &str, n: u32) {
        let invite = format!(
            "INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {reg};branch=z9hG4bK-call-{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:carol@registrar.test>;tag=c{n}\r\nTo: <sip:{user}@registrar.test>\r\n\
             Call-ID: call-{n}@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            port = self.proxy().port(),
            reg = self.registrar.addr(),
        );
        self.registrar.send(self.proxy(), &invite);
    }

    /// Nothing arrives at any peer.
    fn all_quiet(&self, what: &str) {
        for (name, peer) in [
            ("alice", &self.alice),
            ("registrar", &self.registrar),
            ("attacker", &self.attacker),
            ("victim", &self.victim),
        ] {
            if let Some(got) = peer.recv() {
                panic!("{what}: {name} got\n{got}\nproxy log:\n{}", self.rb.logs());
            }
        }
    }
}

/// The registrar's 200 to `register` (as it arrived there), listing `contacts_from`'s Contacts.
fn granted(register: &str, contacts_from: &str) -> String {
    let vias: String = register
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let contacts: String = contacts_from
        .lines()
        .filter(|l| l.starts_with("Contact:"))
        .map(|l| format!("{l};expires=600\r\n"))
        .collect();
    format!(
        "SIP/2.0 200 OK\r\n{vias}From: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         {contacts}Content-Length: 0\r\n\r\n",
        header(register, "From").unwrap(),
        header(register, "To").unwrap(),
        header(register, "Call-ID").unwrap(),
        header(register, "CSeq").unwrap(),
    )
}

/// A contact token the attacker holds for its own address, as Roundabout would mint it.
fn token_for(addr: SocketAddr) -> String {
    let mut out = BytesMut::new();
    TokenKey::new(&KEY)
        .encode_into(
            &mut out,
            FlowKey {
                transport: Transport::Udp,
                remote: addr,
            },
            None,
            true,
            format!("sip:mallory@{addr}").as_bytes(),
        )
        .unwrap();
    String::from_utf8(out.to_vec()).unwrap()
}

/// Roundabout's Via of a REGISTER as it reached the registrar (the one the attacker copies).
fn our_via(register: &str) -> &str {
    register.lines().find(|l| l.starts_with("Via:")).unwrap()
}

/// One spoofed 200 to REGISTER (RFC 3261 §10.3), sent from anywhere, with Roundabout's real
/// Via on top, cannot bind, rebind or unbind anyone: alice's calls still reach alice.
#[test]
fn spoofed_register_answers_change_no_binding() {
    let net = Net::start();
    let register = net.register_alice();
    net.call("alice", 1);
    let invite = net.alice.recv().expect("alice is reachable");
    assert!(
        invite.starts_with("INVITE sip:alice@127.0.31.10"),
        "{invite}"
    );
    let via = our_via(&register);
    let proxy_port = net.proxy().port();
    let attacker = net.attacker.addr();
    let token = token_for(attacker);
    let forged = |to_user: &str, below: &str, contact: &str| {
        format!(
            "SIP/2.0 200 OK\r\n{via}\r\n{below}\r\nFrom: <sip:{to_user}@registrar.test>;tag=a1\r\n\
             To: <sip:{to_user}@registrar.test>;tag=reg\r\nCall-ID: reg-alice@test\r\n\
             CSeq: 1 REGISTER\r\n{contact}Content-Length: 0\r\n\r\n"
        )
    };
    let to_attacker = format!(
        "Via: SIP/2.0/UDP {attacker};branch=z9hG4bK-reg-1;received={};rport={}",
        attacker.ip(),
        attacker.port()
    );
    let to_alice = register.lines().nth(2).unwrap().to_owned();
    assert!(to_alice.contains("received=127.0.31.10"), "{to_alice}");
    let our_contact =
        format!("Contact: <sip:mallory@127.0.0.1:{proxy_port};transport=udp;rbt={token}>\r\n");
    let cases = [
        (
            "(a) rebind alice to the attacker",
            forged("alice", &to_attacker, &our_contact),
        ),
        (
            "(b) unbind alice (no Contact of its own)",
            forged("alice", &to_alice, ""),
        ),
        (
            "(c) a binding no registrar granted",
            forged("bob", &to_attacker, &our_contact),
        ),
    ];
    for (what, datagram) in &cases {
        // From the attacker, and even from the registrar's IP on another port.
        net.attacker.send(net.proxy(), datagram);
        net.all_quiet(what);
    }
    // alice still gets her calls, and "bob" (never registered) is unknown: 404 to the caller.
    net.call("alice", 2);
    let invite = net.alice.recv().expect("alice is still reachable");
    assert!(
        invite.starts_with("INVITE sip:alice@127.0.31.10"),
        "{invite}"
    );
    net.call("bob", 3);
    let answer = net.registrar.recv().expect("an answer for bob");
    assert!(answer.starts_with("SIP/2.0 404"), "{answer}");
    assert!(net.attacker.recv().is_none());
    assert!(
        net.rb
            .wait_for_log("forged response dropped", Duration::from_secs(2)),
        "{}",
        net.rb.logs()
    );
}

/// A response with Roundabout's Via prefix and a Via below naming a victim is not relayed
/// anywhere (no reflection), and a response from the right address with a forged branch is
/// dropped too.
#[test]
fn forged_responses_reach_no_one() {
    let net = Net::start();
    let register = net.register_alice();
    let proxy = net.proxy();
    let victim = net.victim.addr();
    let reflect = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKrb0123456789abcdef\r\n\
         Via: SIP/2.0/UDP {victim};branch=z9hG4bKv;received={};rport={}\r\n\
         From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: reflect@test\r\n\
         CSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n0123456789",
        proxy.port(),
        victim.ip(),
        victim.port()
    );
    net.attacker.send(proxy, &reflect);
    net.all_quiet("a reflected response");
    // From the registrar itself, answering alice's REGISTER, but with a branch of its own
    // making: dropped, alice hears nothing.
    let real = granted(&register, &register);
    let at = real.find("z9hG4bKrb").unwrap() + "z9hG4bKrb".len();
    let forged = format!("{}fedcba9876543210{}", &real[..at], &real[at + 16..]);
    net.registrar.send(proxy, &forged);
    net.all_quiet("a forged branch from the right address");
    // The real answer, sent again (a retransmission), still goes to alice.
    net.registrar.send(proxy, &real);
    let ok = net.alice.recv().expect("the genuine 200 is forwarded");
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
}

/// A TCP connection from exactly `local` (so a second one can come from the same address and
/// port), to `to`, reading with a 2 s timeout.
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    let stream = tcp_from(local, to, None);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
}

/// Reads until `needle` has arrived on `stream`; what was read.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A flow is a connection: after a TCP client's connection closed, whoever connects next from
/// the same address and port (behind a carrier-grade NAT: another subscriber) receives nothing
/// meant for it, by its token or by its registration; the caller gets 480.
#[test]
fn a_new_connection_from_the_same_address_is_not_the_old_client() {
    let net = Net::start_with_client("127.0.31.20");
    let proxy_tcp = net.rb.addr("tcp");
    let local: SocketAddr = format!("127.0.31.20:{}", common::free_port("127.0.31.20"))
        .parse()
        .unwrap();
    let mut first = connect_from(local, proxy_tcp);
    let register = format!(
        "REGISTER sip:registrar.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-reg-1\r\nMax-Forwards: 70\r\n\
         From: <sip:dave@registrar.test>;tag=d1\r\nTo: <sip:dave@registrar.test>\r\n\
         Call-ID: reg-dave@test\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:dave@{local};transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    first.write_all(register.as_bytes()).unwrap();
    let got = net
        .registrar
        .recv()
        .expect("REGISTER reached the registrar");
    net.registrar.send(net.proxy(), &granted(&got, &got));
    assert!(read_until(&mut first, "\r\n\r\n").starts_with("SIP/2.0 200 OK"));
    let contact = header(&got, "Contact").unwrap();
    let token_uri = &contact[contact.find('<').unwrap() + 1..contact.find('>').unwrap()];
    // Gone without a trace (RST, no TIME_WAIT), and at once someone else from the same port.
    socket2::SockRef::from(&first)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(first);
    let mut second = connect_from(local, proxy_tcp);
    // A keep-alive answered: Roundabout serves the new connection before the requests come.
    second.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(read_until(&mut second, "\r\n"), "\r\n");
    for (n, ruri) in [
        (1, token_uri.to_owned()),
        (2, format!("sip:dave@127.0.0.1:{}", net.proxy().port())),
    ] {
        let invite = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-cgnat-{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carol@registrar.test>;tag=c{n}\r\n\
             To: <sip:dave@registrar.test>\r\nCall-ID: cgnat-{n}@test\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n",
            net.registrar.addr()
        );
        net.registrar.send(net.proxy(), &invite);
        let answer = net.registrar.recv().expect("an answer to the caller");
        assert!(
            answer.starts_with("SIP/2.0 480 "),
            "request {n}: {answer}\n{}",
            net.rb.logs()
        );
    }
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match second.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the new connection got something: {other:?}"),
    }
}

//! Behind an L4 load balancer: HAProxy in TCP mode with `send-proxy` (v1) and `send-proxy-v2`
//! in front of Roundabout's TCP and WSS listeners, connecting from its own address. Roundabout
//! trusts the PROXY protocol header from that address only (`-proxy-protocol-from`), so the far
//! server sees each client's own address in Via `received`, and `-rate-limit` counts each
//! client apart; a header from anyone else, or none from the balancer, closes the connection.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::haproxy::{Haproxy, Header};
use common::node;
use common::udp_server::UdpServer;
use common::{free_port, header, require, tcp_from, vias, Roundabout, Sipp};

/// What any single step may take.
const STEP: Duration = Duration::from_secs(10);
/// Where HAProxy connects to Roundabout from: the one `-proxy-protocol-from` address.
const BALANCER_IP: &str = "127.0.0.3";
/// The UDP server behind Roundabout.
const SERVER_IP: &str = "127.0.0.2";

/// Roundabout serving a UDP server, with HAProxy's address as its one balancer.
struct Scene {
    rb: Roundabout,
    server: UdpServer,
    ca: TestCa,
}

impl Scene {
    /// The scene with `args` added to Roundabout's flags; `None` when a peer is missing (and
    /// the test is skipped).
    fn start(args: &[&str]) -> Option<Scene> {
        if !(require("haproxy") && require("sipp") && require("openssl")) {
            return None;
        }
        let ca = TestCa::new();
        let server = UdpServer::start(SERVER_IP);
        let rb = roundabout(&server, &ca, args);
        Some(Scene { rb, server, ca })
    }
}

/// A TCP connection to `to` from a free port of `ip`.
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    tcp_from(format!("{ip}:{}", free_port(ip)).parse().unwrap(), to, None)
}

/// Roundabout serving `server`, with HAProxy's address as its one balancer, plus `args`.
fn roundabout(server: &UdpServer, ca: &TestCa, args: &[&str]) -> Roundabout {
    let trusted = format!("{SERVER_IP}:registrar.test:{}:udp:", server.addr.port());
    let mut all = vec![
        "-strict-host".to_owned(),
        "-ack-ruri".to_owned(),
        "-trusted-server".to_owned(),
        trusted,
        "-proxy-protocol-from".to_owned(),
        BALANCER_IP.to_owned(),
    ];
    all.extend(ca.leaf("proxy.test").wss_flags());
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Roundabout::start(&all)
}

/// An OPTIONS from `n` for the UDP server.
fn options(n: usize) -> String {
    format!(
        "OPTIONS sip:registrar.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP client{n}.invalid;branch=z9hG4bK-lb-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@registrar.test>;tag=lb{n}\r\n\
         To: <sip:registrar.test>\r\nCall-ID: lb-{n}@test\r\nCSeq: {n} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Every complete SIP message `socket` receives until it has been quiet for `quiet`.
fn answers(socket: &mut TcpStream, quiet: Duration) -> Vec<String> {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 65_536];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.split("SIP/2.0 ")
        .skip(1)
        .map(|m| format!("SIP/2.0 {m}"))
        .collect()
}

/// Whether Roundabout closes `socket` without answering it.
fn closed_unanswered(socket: &mut TcpStream) -> bool {
    socket.set_read_timeout(Some(STEP)).unwrap();
    let mut buf = [0u8; 1024];
    // End of stream or a reset, never bytes.
    !matches!(socket.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn sipp_behind_haproxy_is_seen_at_its_own_address_with_v1_and_v2() {
    let Some(scene) = Scene::start(&[]) else {
        return;
    };
    let rb = &scene.rb;
    let tcp = rb.addr("tcp");
    let (haproxy, frontends) = Haproxy::start(
        "127.0.0.1",
        BALANCER_IP,
        &[(tcp, Header::V1), (tcp, Header::V2)],
    );
    // Each client has an address of its own; neither is the balancer's.
    for (frontend, client_ip) in frontends.iter().zip(["127.0.0.5", "127.0.0.6"]) {
        let mut uac = Sipp::run("message_uac.xml", client_ip, free_port(client_ip), "tcp")
            .to(frontend.listen)
            .via(frontend.listen)
            .key("ruri", "sip:bob@registrar.test")
            .calls(3)
            .rate(10)
            .spawn();
        let code = uac.wait(STEP * 2);
        assert_eq!(
            code,
            Some(0),
            "SIPp behind HAProxy ({frontend:?}) failed\n{}\nproxy log:\n{}\nhaproxy:\n{}",
            uac.errors(),
            rb.logs(),
            haproxy.logs()
        );
        let answered = uac.received();
        let ok = answered
            .iter()
            .find(|m| m.starts_with("SIP/2.0 200"))
            .expect("a 200 for SIPp");
        // The 200 echoes the Via the UDP server got under Roundabout's: SIPp's, with where
        // Roundabout saw it come from.
        let sipp_via = vias(ok)[0];
        assert!(
            sipp_via.contains(&format!(";received={client_ip}")) && sipp_via.contains(";rport="),
            "the far server saw {client_ip}, not the balancer: {ok}"
        );
        assert!(!ok.contains(BALANCER_IP), "{ok}");
    }
    assert!(
        rb.wait_for_log("PROXY protocol header", STEP),
        "each header is logged at debug:\n{}",
        rb.logs()
    );
}

#[test]
fn jssip_over_wss_behind_haproxy_registers_from_its_own_address() {
    if !node::require_node() {
        return;
    }
    let Some(Scene {
        rb,
        server: mut registrar,
        ca,
    }) = Scene::start(&[])
    else {
        return;
    };
    let wss = rb.addr("wss");
    // HAProxy listens on 127.0.0.1, the address the test certificate names.
    let (haproxy, frontends) = Haproxy::start(
        "127.0.0.1",
        BALANCER_IP,
        &[(wss, Header::V1), (wss, Header::V2)],
    );
    for frontend in &frontends {
        let url = format!("wss://127.0.0.1:{}", frontend.listen.port());
        let mut jssip = node::jssip_alice(&url, Some(&ca.cert), &[]);
        let registered = jssip.wait_any(&["registered", "registration_failed", "error"], STEP);
        assert_eq!(
            registered.event(),
            Some("registered"),
            "{}\nproxy log:\n{}\nhaproxy:\n{}",
            jssip.transcript(),
            rb.logs(),
            haproxy.logs()
        );
        let register = registrar.wait_request("REGISTER", STEP);
        let jssip_via = vias(&register)[1];
        assert!(
            jssip_via.starts_with("Via: SIP/2.0/WSS ")
                && jssip_via.contains(";received=127.0.0.1;rport="),
            "JsSIP's own address, not the balancer's {BALANCER_IP}:\n{register}"
        );
    }
}

#[test]
fn rate_limit_counts_each_client_behind_the_balancer_apart() {
    // 5 per second, bursts of 10.
    let Some(scene) = Scene::start(&["-rate-limit", "5"]) else {
        return;
    };
    let rb = &scene.rb;
    let (_haproxy, frontends) =
        Haproxy::start("127.0.0.1", BALANCER_IP, &[(rb.addr("tcp"), Header::V2)]);
    let front = frontends[0].listen;

    // The first client floods: it gets no more than its burst and what refills meanwhile.
    let mut flooding = connect_from("127.0.0.5", front);
    let flood: String = (1..=40).map(options).collect();
    flooding.write_all(flood.as_bytes()).unwrap();
    let flooded = answers(&mut flooding, Duration::from_millis(700));
    assert!(
        (5..=15).contains(&flooded.len()),
        "40 sent at once, {} answered:\n{}",
        flooded.len(),
        rb.logs()
    );
    // The second, behind the same balancer, has a bucket of its own: all of its few pass.
    let started = Instant::now();
    let mut polite = connect_from("127.0.0.6", front);
    let few: String = (101..=105).map(options).collect();
    polite.write_all(few.as_bytes()).unwrap();
    let answered = answers(&mut polite, Duration::from_millis(700));
    assert_eq!(
        answered.len(),
        5,
        "a second client gets all 5 answered ({:?} after the flood):\n{answered:#?}\n{}",
        started.elapsed(),
        rb.logs()
    );
    for answer in &answered {
        assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        assert!(
            header(answer, "Via").is_some_and(|via| via.contains("received=127.0.0.6")),
            "{answer}"
        );
    }
}

#[test]
fn a_header_from_anyone_else_or_none_from_the_balancer_closes_the_connection() {
    let Some(scene) = Scene::start(&[]) else {
        return;
    };
    let rb = &scene.rb;
    let tcp = rb.addr("tcp");

    // A client that is not the balancer claims to speak for someone else.
    let mut forged = connect_from("127.0.0.7", tcp);
    let claim = format!(
        "PROXY TCP4 198.51.100.9 {} 5555 {}\r\n",
        tcp.ip(),
        tcp.port()
    );
    forged
        .write_all(format!("{claim}{}", options(1)).as_bytes())
        .unwrap();
    assert!(closed_unanswered(&mut forged), "{}", rb.logs());
    assert!(
        rb.wait_for_log(
            "reason=PROXY protocol header from an address not in -proxy-protocol-from",
            STEP
        ),
        "{}",
        rb.logs()
    );

    // The balancer's address without a header: closed too.
    let mut bare = connect_from(BALANCER_IP, tcp);
    bare.write_all(options(2).as_bytes()).unwrap();
    assert!(closed_unanswered(&mut bare), "{}", rb.logs());
    assert!(
        rb.wait_for_log(
            "reason=no PROXY protocol header from a -proxy-protocol-from address",
            STEP
        ),
        "{}",
        rb.logs()
    );

    // A client connecting directly, without a header, is served as before.
    let mut direct = connect_from("127.0.0.7", tcp);
    direct.write_all(options(3).as_bytes()).unwrap();
    let answered = answers(&mut direct, Duration::from_millis(700));
    assert_eq!(answered.len(), 1, "{answered:?}\n{}", rb.logs());
    assert!(answered[0].starts_with("SIP/2.0 200"), "{}", answered[0]);
}

//! RFC 3263 resolution against a real DNS server: dnsmasq serves a test domain whose NAPTR
//! records lead to SRV records with two targets of different priorities, and A records for
//! loopback addresses where UDP servers listen. Roundabout (without `-strict-host`, with
//! `-dns-server` naming dnsmasq) forwards a request for `sip:bob@<domain>` to the target of
//! highest priority, the one sofia-sip's `sip-dig` finds first for the same URI through the
//! same server. A numeric port in the URI skips NAPTR and SRV: the request goes to the
//! domain's own A record at that port. A name whose SRV target is Roundabout itself is
//! Roundabout's: the request is answered, never sent to itself.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::dnsmasq::{Dnsmasq, Record};
use common::udp_server::UdpServer;
use common::{require, Roundabout, UdpPeer};

/// The test domain (RFC 6761 reserves `.test`).
const DOMAIN: &str = "rfc3263.test";
/// What any single step may take.
const STEP: Duration = Duration::from_secs(10);

/// The UDP servers behind the domain: the SRV targets of priority 10 and 20, and the
/// domain's own A record.
struct Servers {
    primary: UdpServer,
    backup: UdpServer,
    domain: UdpServer,
}

/// dnsmasq with the domain's records: NAPTR SIP+D2U (order 10) to `_sip._udp`, SIP+D2T (order
/// 20) to `_sip._tcp`, which has no records; `_sip._udp` has `primary` at priority 10 and
/// `backup` at priority 20. The weights are not 0: sip-dig passes over a priority whose weights
/// add up to 0.
fn dns_for(servers: &Servers) -> Dnsmasq {
    let name = |label: &str| format!("{label}.{DOMAIN}");
    let srv = |target: &str, server: &UdpServer, priority| Record::Srv {
        name: name("_sip._udp"),
        target: name(target),
        port: server.addr.port(),
        priority,
        weight: 10,
    };
    let host = |name: String, server: &UdpServer| Record::Host {
        name,
        ip: server.addr.ip().to_string(),
    };
    Dnsmasq::start(
        DOMAIN,
        &[
            Record::Naptr {
                name: DOMAIN.to_owned(),
                order: 10,
                preference: 50,
                service: "SIP+D2U".into(),
                replacement: name("_sip._udp"),
            },
            Record::Naptr {
                name: DOMAIN.to_owned(),
                order: 20,
                preference: 50,
                service: "SIP+D2T".into(),
                replacement: name("_sip._tcp"),
            },
            srv("backup", &servers.backup, 20),
            srv("primary", &servers.primary, 10),
            host(name("primary"), &servers.primary),
            host(name("backup"), &servers.backup),
            host(DOMAIN.to_owned(), &servers.domain),
        ],
    )
}

/// Everything the tests need, or `None` (skipped) where a peer is missing outside CI.
fn setup() -> Option<(Servers, Dnsmasq, Roundabout)> {
    if !require("dnsmasq") || !require("sip-dig") {
        return None;
    }
    let servers = Servers {
        primary: UdpServer::start("127.0.63.1"),
        backup: UdpServer::start("127.0.63.2"),
        domain: UdpServer::start("127.0.63.3"),
    };
    let dns = dns_for(&servers);
    let dns_server = dns.addr.to_string();
    let rb = Roundabout::start(&["-dns-server", &dns_server, "-default-network", "udp"]);
    Some((servers, dns, rb))
}

fn options(ruri: &str, from: &UdpPeer, call: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{call};rport\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: {call}@e2e-dns\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        from.addr()
    )
}

/// Sends an OPTIONS for `ruri` through Roundabout and waits for its 200 (from a UDP server).
fn ask(rb: &Roundabout, ruri: &str, call: &str) {
    let client = UdpPeer::bind("127.0.0.1");
    client.send(rb.addr("udp"), &options(ruri, &client, call));
    let answer = client
        .recv_within(STEP)
        .unwrap_or_else(|| panic!("no answer to {ruri}\n{}", rb.logs()));
    assert!(
        answer.starts_with("SIP/2.0 200 "),
        "{answer}\n{}",
        rb.logs()
    );
}

#[test]
fn naptr_and_srv_lead_to_the_target_of_highest_priority() {
    let Some((mut servers, dns, rb)) = setup() else {
        return;
    };
    let ruri = format!("sip:bob@{DOMAIN}");
    ask(&rb, &ruri, "naptr");
    let request = servers.primary.wait_request("OPTIONS", STEP);
    assert!(
        request.starts_with(&format!("OPTIONS {ruri} SIP/2.0")),
        "{request}"
    );
    assert_eq!(servers.backup.all(), [] as [String; 0], "the backup got it");
    assert_eq!(servers.domain.all(), [] as [String; 0]);
    let logs = rb.logs();
    assert!(
        logs.contains(&format!("addr={}", servers.primary.addr)),
        "the log names the target\n{logs}"
    );
    // Roundabout asked in RFC 3263's order: NAPTR, then the SRV name it gave, then the
    // target's address.
    let address = format!("query[A] primary.{DOMAIN}");
    assert!(dns.wait_for_query(&address, STEP), "{}", dns.logs());
    let queries = dns.queries();
    let position = |query: &str| {
        queries
            .iter()
            .position(|q| q == query)
            .unwrap_or_else(|| panic!("no {query} in {queries:#?}"))
    };
    let naptr = position(&format!("query[NAPTR] {DOMAIN}"));
    let srv = position(&format!("query[SRV] _sip._udp.{DOMAIN}"));
    assert!(naptr < srv && srv < position(&address), "{queries:#?}");
    // The cross-check: RFC 3263 as sofia-sip reads it, through the same server, finds the
    // same target first.
    let dug = dns.sip_dig(&ruri);
    assert_eq!(
        dug.first(),
        Some(&("udp".to_owned(), servers.primary.addr)),
        "sip-dig {ruri}: {dug:?}\n{}",
        dns.logs()
    );
}

#[test]
fn a_numeric_port_skips_naptr_and_srv() {
    let Some((mut servers, dns, rb)) = setup() else {
        return;
    };
    let ruri = format!("sip:bob@{DOMAIN}:{}", servers.domain.addr.port());
    ask(&rb, &ruri, "port");
    servers.domain.wait_request("OPTIONS", STEP);
    assert_eq!(servers.primary.all(), [] as [String; 0]);
    assert_eq!(servers.backup.all(), [] as [String; 0]);
    assert!(
        dns.wait_for_query(&format!("query[A] {DOMAIN}"), STEP),
        "{}",
        dns.logs()
    );
    let queries = dns.queries();
    assert!(
        !queries
            .iter()
            .any(|q| q.starts_with("query[NAPTR]") || q.starts_with("query[SRV]")),
        "{queries:#?}"
    );
    // sip-dig reads a port without a transport as every transport; with UDP asked, its first
    // is where the request went.
    let dug = dns.sip_dig(&format!("{ruri};transport=udp"));
    assert_eq!(dug.first(), Some(&("udp".to_owned(), servers.domain.addr)));
}

/// A name whose SRV target is Roundabout's own listener names Roundabout: the request is
/// answered as one for Roundabout itself (no such user: 404), never sent to itself.
#[test]
fn a_name_with_a_target_at_roundabout_is_roundabout() {
    if !require("dnsmasq") {
        return;
    }
    let port = common::free_port("127.0.0.1");
    let name = format!("self.{DOMAIN}");
    let dns = Dnsmasq::start(
        DOMAIN,
        &[
            Record::Srv {
                name: format!("_sip._udp.{name}"),
                target: format!("proxy.{DOMAIN}"),
                port,
                priority: 10,
                weight: 10,
            },
            Record::Host {
                name: format!("proxy.{DOMAIN}"),
                ip: "127.0.0.1".into(),
            },
        ],
    );
    let dns_server = dns.addr.to_string();
    let rb = Roundabout::start(&[
        "-dns-server",
        &dns_server,
        "-default-network",
        "udp",
        "-udp-port",
        &port.to_string(),
    ]);
    let client = UdpPeer::bind("127.0.0.1");
    let ruri = format!("sip:bob@{name}");
    client.send(rb.addr("udp"), &options(&ruri, &client, "self"));
    let answer = client
        .recv_within(STEP)
        .unwrap_or_else(|| panic!("no answer\n{}", rb.logs()));
    // Rule 5's 404, not the one of a name that resolves to nothing.
    assert!(answer.starts_with("SIP/2.0 404 Not Found\r\n"), "{answer}");
    assert!(rb.wait_for_log("host name resolves to Roundabout itself", STEP));
    let logs = rb.logs();
    assert_eq!(logs.matches("request forwarded").count(), 0, "{logs}");
}

//! Routing rules, one table entry or test per rule of docs/routing.md, without sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::action::{Forward, Lookup, NextHop, RequestAction, ResponseAction};
use super::clients::ClientCache;
use super::rewrite::OwnVia;
use super::router::Router;
use super::status::Status;
use crate::config::{ClientRanges, Config, Limits, Ports, RouteHop, TrustedServer, TrustedServers};
use crate::dns::Query;
use crate::sip::{Encoded, Message, Transport};
use crate::transport::{Destination, FlowKey};

const US: &str = "198.51.100.1";

fn limits() -> Limits {
    Limits {
        max_message: 65_536,
        max_connections: 100,
        max_connections_per_ip: 10,
        idle_timeout: Duration::from_secs(300),
        handshake_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(10),
        ws_ping_interval: Duration::from_secs(30),
        client_cache_size: 100,
        send_queue: 64,
        send_queue_bytes: 1 << 20,
        send_buffer_total: 256 << 20,
        rate_limit: 0,
        max_new_requests: 0,
    }
}

fn server(ip: &str, fqdns: &[&str], port: u16, transport: Transport) -> TrustedServer {
    TrustedServer {
        ip: ip.parse().unwrap(),
        fqdns: fqdns.iter().map(|s| s.to_string()).collect(),
        port,
        transport,
        routes: vec![],
    }
}

pub(super) fn config() -> Config {
    let mut routed = server("203.0.113.110", &["pbx.example.com"], 5060, Transport::Wss);
    routed.routes = vec![
        RouteHop::Ip("203.0.113.150".parse().unwrap()),
        RouteHop::Name("edge.example.com".into()),
    ];
    Config {
        local_ip: US.parse().unwrap(),
        local_fqdn: Some("proxya.example.com".into()),
        bind_ip: US.parse().unwrap(),
        strict_host: false,
        strict_client: false,
        ack_ruri: true,
        contact_header_fqdn: false,
        trusted_servers: TrustedServers {
            servers: vec![
                server(
                    "203.0.113.20",
                    &["server.example.com"],
                    5060,
                    Transport::Tcp,
                ),
                routed,
                server("203.0.113.180", &["edge.example.com"], 5070, Transport::Udp),
                server(US, &[], 5080, Transport::Udp),
            ],
        },
        trusted_clients: ClientRanges {
            ranges: vec!["192.0.2.0/24".parse().unwrap()],
        },
        default_sip_server: None,
        default_network: Transport::Tcp,
        ports: Ports {
            udp: Some(5060),
            tcp: Some(5060),
            tls: None,
            ws: Some(5066),
            wss: None,
        },
        tls: None,
        tls_ca: None,
        mutual_tls: crate::config::MutualTls::default(),
        ws_path: None,
        proxy_protocol_from: ClientRanges::default(),
        token_key: [3; 32],
        limits: limits(),
        sip_timers: crate::config::SipTimers::RFC_3261,
        transaction_limits: crate::config::TransactionLimits::DEFAULT,
        drain_timeout: Duration::from_secs(5),
        metrics_addr: None,
        hep: None,
        rtpengine: Vec::new(),
        dns_server: None,
        udp_mtu: None,
    }
}

fn router_with(edit: impl FnOnce(&mut Config)) -> Router {
    let mut c = config();
    edit(&mut c);
    Router::new(
        &c,
        vec![
            (Transport::Udp, 5060),
            (Transport::Tcp, 5060),
            (Transport::Ws, 5066),
        ],
    )
}

pub(super) fn flow(transport: Transport, addr: &str) -> FlowKey {
    FlowKey {
        transport,
        remote: addr.parse().unwrap(),
    }
}

fn client() -> FlowKey {
    flow(Transport::Ws, "192.0.2.10:50000")
}

fn request(method: &str, ruri: &str, extra: &str) -> Message {
    let text = format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKnashds7\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:bob@server.example.com>\r\n\
         Call-ID: c1\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn route(router: &Router, msg: &Message, source: FlowKey) -> RequestAction {
    router.route_request(msg, &source, Instant::now())
}

fn forward_dest(action: &RequestAction) -> (Transport, String) {
    match action {
        RequestAction::Forward(f) => match &f.next {
            NextHop::Flow(d) => (d.flow.transport, d.flow.remote.to_string()),
            other => panic!("not a flow: {other:?}"),
        },
        other => panic!("not forwarded: {other:?}"),
    }
}

/// The request as it leaves over `egress` to the next hop `route` chose (statelessly).
fn rewrite(
    r: &Router,
    msg: &Message,
    source: &FlowKey,
    f: &Forward,
    egress: Transport,
) -> Result<Encoded, crate::sip::ParseError> {
    let remote = match &f.next {
        NextHop::Flow(d) => d.flow.remote,
        NextHop::Resolve { .. } => "192.0.2.200:5060".parse().unwrap(),
    };
    let dest = FlowKey {
        transport: egress,
        remote,
    };
    r.rewriter()
        .rewrite_request(msg, source, None, f, &dest, OwnVia::default())
        .map(|(out, _)| out)
}

fn wire(e: &Encoded) -> String {
    String::from_utf8([&e.head[..], &e.body[..]].concat()).unwrap()
}

#[test]
fn trusted_server_by_ip_fqdn_and_port() {
    let r = router_with(|_| {});
    let cases = [
        ("sip:bob@203.0.113.20", Transport::Tcp, "203.0.113.20:5060"),
        (
            "sip:bob@SERVER.example.com",
            Transport::Tcp,
            "203.0.113.20:5060",
        ),
        (
            "sip:bob@edge.example.com",
            Transport::Udp,
            "203.0.113.180:5070",
        ),
        // Roundabout's own IP on a port it does not listen on is a server, not itself.
        (
            &format!("sip:x@{US}:5080"),
            Transport::Udp,
            "198.51.100.1:5080",
        ),
    ];
    for (ruri, transport, addr) in cases {
        let action = route(&r, &request("INVITE", ruri, ""), client());
        assert_eq!(
            forward_dest(&action),
            (transport, addr.to_string()),
            "{ruri}"
        );
    }
}

#[test]
fn unknown_hosts_strict_and_not() {
    let strict = router_with(|c| c.strict_host = true);
    for ruri in [
        "sip:bob@192.0.2.99",
        "sip:bob@evil.example.net",
        "sip:bob@[::ffff:192.0.2.99]",
        "sip:bob@203.0.113.21;maddr=203.0.113.20",
    ] {
        assert_eq!(
            route(&strict, &request("INVITE", ruri, ""), client()),
            RequestAction::Reply(Status::FORBIDDEN),
            "{ruri}"
        );
    }
    let open = router_with(|_| {});
    let cases = [
        ("sip:bob@192.0.2.99", Transport::Tcp, "192.0.2.99:5060"),
        (
            "sip:bob@192.0.2.99:5070;transport=udp",
            Transport::Udp,
            "192.0.2.99:5070",
        ),
        ("sips:bob@192.0.2.99", Transport::Tls, "192.0.2.99:5061"),
        (
            "sip:bob@[2001:db8::7]:5099;transport=ws",
            Transport::Ws,
            "[2001:db8::7]:5099",
        ),
    ];
    for (ruri, transport, addr) in cases {
        let action = route(&open, &request("INVITE", ruri, ""), client());
        assert_eq!(
            forward_dest(&action),
            (transport, addr.to_string()),
            "{ruri}"
        );
    }
    match route(
        &open,
        &request("INVITE", "sip:bob@far.example.net:5071", ""),
        client(),
    ) {
        RequestAction::Forward(f) => assert_eq!(
            f.next,
            NextHop::Resolve(Lookup {
                query: Query {
                    host: "far.example.net".into(),
                    port: Some(5071),
                    transport: None,
                    secure: false,
                },
                port: 5071,
            })
        ),
        other => panic!("{other:?}"),
    }
    let udp_default = router_with(|c| c.default_network = Transport::Udp);
    let action = route(
        &udp_default,
        &request("INVITE", "sip:bob@192.0.2.99", ""),
        client(),
    );
    assert_eq!(forward_dest(&action).0, Transport::Udp);
}

#[test]
fn max_forwards_zero_is_483_and_ack_is_dropped() {
    let r = router_with(|_| {});
    let msg = request("OPTIONS", "sip:bob@203.0.113.20", "")
        .bytes()
        .clone();
    let text = String::from_utf8(msg.to_vec())
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let msg = Message::parse(Bytes::from(text.clone())).unwrap();
    assert_eq!(
        route(&r, &msg, client()),
        RequestAction::Reply(Status::TOO_MANY_HOPS)
    );
    let ack = Message::parse(Bytes::from(text.replace("OPTIONS", "ACK"))).unwrap();
    assert!(matches!(route(&r, &ack, client()), RequestAction::Drop(_)));
}

#[test]
fn strict_client_guards_register() {
    let r = router_with(|c| c.strict_client = true);
    let reg = request(
        "REGISTER",
        "sip:server.example.com",
        "Contact: <sip:1000@x.invalid;transport=ws>\r\n",
    );
    assert_eq!(
        route(&r, &reg, flow(Transport::Ws, "203.0.113.99:4000")),
        RequestAction::Reply(Status::FORBIDDEN)
    );
    assert!(matches!(
        route(&r, &reg, client()),
        RequestAction::Forward(_)
    ));
    let none = router_with(|c| {
        c.strict_client = true;
        c.trusted_clients = ClientRanges::default();
    });
    assert_eq!(
        route(&none, &reg, client()),
        RequestAction::Reply(Status::FORBIDDEN)
    );
    // Other methods are not affected by -strict-client.
    let invite = request("INVITE", "sip:bob@203.0.113.20", "");
    assert!(matches!(
        route(&r, &invite, flow(Transport::Udp, "203.0.113.99:4000")),
        RequestAction::Forward(_)
    ));
}

#[test]
fn loose_routing_pops_our_route_and_follows_the_next() {
    let r = router_with(|_| {});
    let msg = request(
        "BYE",
        "sip:bob@192.0.2.50",
        &format!("Route: <sip:{US};lr>, <sip:server.example.com;lr>\r\n"),
    );
    match route(&r, &msg, client()) {
        RequestAction::Forward(f) => {
            assert_eq!(f.pop_routes, 1);
            assert!(f.request_uri.is_none());
            assert_eq!(
                forward_dest(&RequestAction::Forward(f)),
                (Transport::Tcp, "203.0.113.20:5060".into())
            );
        }
        other => panic!("{other:?}"),
    }
    // Only our Route: the R-URI decides.
    let msg = request(
        "BYE",
        "sip:bob@203.0.113.20",
        &format!("Route: <sip:{US}:5060;lr>\r\n"),
    );
    let action = route(&r, &msg, client());
    assert!(matches!(&action, RequestAction::Forward(f) if f.pop_routes == 1));
    assert_eq!(forward_dest(&action).1, "203.0.113.20:5060");
    // A foreign Route under -strict-host is refused.
    let strict = router_with(|c| c.strict_host = true);
    let msg = request(
        "BYE",
        "sip:bob@203.0.113.20",
        "Route: <sip:192.0.2.66;lr>\r\n",
    );
    assert_eq!(
        route(&strict, &msg, client()),
        RequestAction::Reply(Status::FORBIDDEN)
    );
}

/// Which addresses and URIs name Roundabout, by bind address: (bind, host interface addresses,
/// what, names us). The listening ports are 5060 (UDP, TCP) and 5066 (WS).
#[test]
fn own_addresses_by_bind_address() {
    let cases: &[(&str, &[&str], &str, bool)] = &[
        // Bound to -local-ip: that address only.
        (US, &["10.1.2.3"], "198.51.100.1:5060", true),
        (US, &["10.1.2.3"], "198.51.100.1:5066", true),
        (US, &["10.1.2.3"], "198.51.100.1:5080", false),
        (US, &["10.1.2.3"], "127.0.0.1:5060", false),
        (US, &["10.1.2.3"], "10.1.2.3:5060", false),
        // -bind-ip other than -local-ip (1:1 NAT with a bound private address): both.
        ("10.1.2.3", &[], "10.1.2.3:5060", true),
        ("10.1.2.3", &[], "198.51.100.1:5060", true),
        ("10.1.2.3", &[], "10.1.2.4:5060", false),
        // Wildcard IPv4: every IPv4 loopback and interface address, no IPv6.
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "10.1.2.3:5060",
            true,
        ),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "127.0.0.1:5060",
            true,
        ),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "127.0.3.4:5066",
            true,
        ),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "10.1.2.3:5070",
            false,
        ),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "10.1.2.4:5060",
            false,
        ),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "[2001:db8::5]:5060",
            false,
        ),
        ("0.0.0.0", &["10.1.2.3", "2001:db8::5"], "[::1]:5060", false),
        (
            "0.0.0.0",
            &["10.1.2.3", "2001:db8::5"],
            "0.0.0.0:5060",
            false,
        ),
        // Wildcard IPv6 takes IPv4 too.
        (
            "::",
            &["10.1.2.3", "2001:db8::5"],
            "[2001:db8::5]:5060",
            true,
        ),
        ("::", &["10.1.2.3", "2001:db8::5"], "[::1]:5060", true),
        ("::", &["10.1.2.3", "2001:db8::5"], "10.1.2.3:5060", true),
        (
            "::",
            &["10.1.2.3", "2001:db8::5"],
            "[::ffff:127.0.0.1]:5060",
            true,
        ),
        (
            "::",
            &["10.1.2.3", "2001:db8::5"],
            "[2001:db8::6]:5060",
            false,
        ),
    ];
    for &(bind, host_ips, addr, ours) in cases {
        let r = router_with(|c| c.bind_ip = bind.parse().unwrap())
            .with_host_addresses(host_ips.iter().map(|ip| ip.parse().unwrap()).collect());
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert_eq!(r.is_own_address(addr), ours, "{addr} with -bind-ip {bind}");
        // The same address as an R-URI host: Roundabout itself (rule 5, no binding: 404) or
        // forwarded there, never both.
        let ruri = format!("sip:bob@{addr}");
        let action = route(&r, &request("OPTIONS", &ruri, ""), client());
        let expected_self = ours && !addr.ip().is_unspecified();
        assert_eq!(
            action == RequestAction::Reply(Status::NOT_FOUND),
            expected_self,
            "{ruri} with -bind-ip {bind}: {action:?}"
        );
    }
}

/// Every Route on top that names Roundabout is removed, not only the first: the next hop is
/// never Roundabout itself.
#[test]
fn every_route_naming_roundabout_on_top_is_popped() {
    let r = router_with(|_| {});
    let cases = [
        (
            format!("Route: <sip:{US};lr>, <sip:{US}:5060;lr>\r\nRoute: <sip:proxya.example.com;lr>, <sip:server.example.com;lr>\r\n"),
            "sip:bob@192.0.2.50",
            3,
            "203.0.113.20:5060",
        ),
        (
            format!("Route: <sip:{US};lr>\r\nRoute: <sip:{US}:5066;transport=ws;lr>\r\n"),
            "sip:bob@203.0.113.20",
            2,
            "203.0.113.20:5060",
        ),
        // Roundabout's IP at a port it does not listen on is not Roundabout.
        (
            format!("Route: <sip:{US};lr>, <sip:{US}:5080;lr>, <sip:{US};lr>\r\n"),
            "sip:bob@203.0.113.20",
            1,
            "198.51.100.1:5080",
        ),
    ];
    for (routes, ruri, popped, to) in cases {
        let msg = request("BYE", ruri, &routes);
        let action = route(&r, &msg, client());
        assert_eq!(forward_dest(&action).1, to, "{routes}");
        let RequestAction::Forward(f) = action else {
            unreachable!()
        };
        assert_eq!(f.pop_routes, popped, "{routes}");
        let out = wire(&rewrite(&r, &msg, &client(), &f, Transport::Tcp).unwrap());
        assert_eq!(
            out.matches(";lr>").count(),
            routes.matches(";lr>").count() - popped,
            "{out}"
        );
    }
}

/// A host name that resolved to one of Roundabout's own listening addresses: the request is
/// routed again knowing the name is Roundabout's. (R-URI, Routes, what the resolutions found in
/// turn, what happens at the end.)
#[test]
fn names_resolving_to_roundabout_are_roundabout() {
    let r = router_with(|_| {});
    r.clients()
        .bind(
            b"alice",
            client(),
            None,
            Bytes::from_static(b"sip:alice@192.0.2.10:50000;transport=ws"),
            Duration::from_secs(60),
            Instant::now(),
        )
        .unwrap();
    // The URI's own port, if any; without one routing reads it as the default transport's.
    let lookup = |host: &str, port: Option<u16>| Lookup {
        query: Query {
            host: host.into(),
            port,
            transport: None,
            secure: false,
        },
        port: port.unwrap_or(5060),
    };
    let cases: [(&str, &str, &[Lookup], RequestAction); 6] = [
        // An R-URI naming us by another name: rule 5, no such user.
        (
            "sip:bob@alias.example.net",
            "",
            &[lookup("alias.example.net", None)],
            RequestAction::Reply(Status::NOT_FOUND),
        ),
        // ... and a registered user is found, whatever the case of the name.
        (
            "sip:alice@ALIAS.example.net",
            "Route: <sip:alias.example.net;lr>\r\n",
            &[lookup("alias.example.net", None)],
            route(
                &r,
                &request("OPTIONS", &format!("sip:alice@{US}"), &format!("Route: <sip:{US};lr>\r\n")),
                client(),
            ),
        ),
        // The same name at another port is not known to be ours: it is resolved again.
        (
            "sip:bob@alias.example.net:5070",
            "Route: <sip:alias.example.net;lr>\r\n",
            &[lookup("alias.example.net", None)],
            RequestAction::Forward(Forward {
                next: NextHop::Resolve(lookup("alias.example.net", Some(5070))),
                fallback: None,
                request_uri: None,
                pop_routes: 1,
                push_routes: Vec::new(),
            }),
        ),
        // A Route naming us by another name goes; the R-URI decides.
        (
            "sip:bob@server.example.com",
            "Route: <sip:alias.example.net;lr>\r\n",
            &[lookup("alias.example.net", None)],
            route(
                &r,
                &request("OPTIONS", "sip:bob@server.example.com", &format!("Route: <sip:{US};lr>\r\n")),
                client(),
            ),
        ),
        // Two names, found in turn: the Route's, then the R-URI's.
        (
            "sip:bob@other.example.net",
            "Route: <sip:alias.example.net;lr>\r\n",
            &[lookup("alias.example.net", None), lookup("other.example.net", None)],
            RequestAction::Reply(Status::NOT_FOUND),
        ),
        // More names than any honest request needs: a loop.
        (
            "sip:bob@e.example.net",
            "Route: <sip:a.example.net;lr>, <sip:b.example.net;lr>, <sip:c.example.net;lr>, <sip:d.example.net;lr>\r\n",
            &[
                lookup("a.example.net", None),
                lookup("b.example.net", None),
                lookup("c.example.net", None),
                lookup("d.example.net", None),
                lookup("e.example.net", None),
            ],
            RequestAction::Reply(Status::LOOP_DETECTED),
        ),
    ];
    for (ruri, routes, found, expected) in cases {
        let msg = request("OPTIONS", ruri, routes);
        let mut names = super::router::SelfNames::default();
        let mut action = route(&r, &msg, client());
        for resolved in found {
            match &action {
                RequestAction::Forward(f) => {
                    assert_eq!(f.next, NextHop::Resolve(resolved.clone()), "{ruri}")
                }
                other => panic!("{ruri}: {other:?} before {resolved:?} resolved"),
            }
            action = r.route_as_self(&msg, &client(), Instant::now(), resolved, &mut names);
        }
        assert_eq!(action, expected, "{ruri} {routes}");
    }
}

#[test]
fn route_list_pushes_routes_and_goes_to_the_first_hop() {
    let r = router_with(|_| {});
    let msg = request("INVITE", "sip:bob@pbx.example.com", "");
    let action = route(&r, &msg, client());
    assert_eq!(
        forward_dest(&action),
        (Transport::Wss, "203.0.113.150:5060".into())
    );
    let RequestAction::Forward(f) = action else {
        unreachable!()
    };
    assert_eq!(f.push_routes, config().trusted_servers.servers[1].routes);
    let out = wire(&rewrite(&r, &msg, &client(), &f, Transport::Wss).unwrap());
    assert!(
        out.contains("Route: <sip:203.0.113.150;lr>\r\nRoute: <sip:edge.example.com;lr>\r\n"),
        "{out}"
    );
}

#[test]
fn ack_follows_to_host_without_ack_ruri() {
    let r = router_with(|c| c.ack_ruri = false);
    let ack = request("ACK", "sip:bob@192.0.2.77:5090", "");
    assert_eq!(
        forward_dest(&route(&r, &ack, client())),
        (Transport::Tcp, "203.0.113.20:5060".into())
    );
    let r = router_with(|_| {});
    assert_eq!(
        forward_dest(&route(&r, &ack, client())),
        (Transport::Tcp, "192.0.2.77:5090".into())
    );
}

/// The Contact URI (inside <>) of the first Contact in a wire message.
fn contact_uri(wire: &str) -> String {
    let line = wire.lines().find(|l| l.starts_with("Contact:")).unwrap();
    line[line.find('<').unwrap() + 1..line.find('>').unwrap()].to_string()
}

#[test]
fn contact_token_round_trip_brings_in_dialog_requests_back() {
    let r = router_with(|_| {});
    let uac = flow(Transport::Udp, "192.0.2.5:5070");
    let invite = request(
        "INVITE",
        "sip:bob@203.0.113.20",
        "Contact: <sip:alice@192.0.2.5:5070>\r\n",
    );
    let RequestAction::Forward(f) = route(&r, &invite, uac) else {
        panic!()
    };
    let out = wire(&rewrite(&r, &invite, &uac, &f, Transport::Tcp).unwrap());
    let rewritten = contact_uri(&out);
    assert!(
        rewritten.starts_with(&format!("sip:alice@{US}:5060;transport=tcp;rbt=")),
        "{rewritten}"
    );
    // The far side's BYE to that Contact comes back to the UAC's flow with its own URI restored.
    let bye = request("BYE", &rewritten, "");
    let action = route(&r, &bye, flow(Transport::Tcp, "203.0.113.20:5060"));
    assert_eq!(
        forward_dest(&action),
        (Transport::Udp, "192.0.2.5:5070".into())
    );
    let RequestAction::Forward(f) = action else {
        panic!()
    };
    let out = wire(
        &rewrite(
            &r,
            &bye,
            &flow(Transport::Tcp, "203.0.113.20:5060"),
            &f,
            Transport::Udp,
        )
        .unwrap(),
    );
    assert!(
        out.starts_with("BYE sip:alice@192.0.2.5:5070 SIP/2.0\r\n"),
        "{out}"
    );
    // A forged token is ignored: the URI names Roundabout, no client, no default server → 404.
    let forged = rewritten.replace("rbt=", "rbt=AAAA");
    assert_eq!(
        route(&r, &request("BYE", &forged, ""), client()),
        RequestAction::Reply(Status::NOT_FOUND)
    );
    assert_eq!(r.token_failures(), 1, "the forged token is counted");
    // ... and under -strict-host too, it never reaches an address of its own choosing.
    let strict = router_with(|c| c.strict_host = true);
    assert!(!matches!(
        route(&strict, &request("BYE", &forged, ""), client()),
        RequestAction::Forward(_)
    ));
}

/// A '"' inside <…> does not hide the comma after the '>' (`split_list` agrees with
/// `NameAddr::parse`, RFC 3261 §25.1), so no Contact slips through the rewrite still pointing
/// at a host of the sender's choosing: `<s:x">` is seen as a Contact of its own, and as its URI
/// is no URI (RFC 3986 §2) the request is not rewritten at all (the handler answers 400).
#[test]
fn quote_inside_angle_brackets_hides_no_contact() {
    let r = router_with(|_| {});
    let uac = flow(Transport::Udp, "192.0.2.5:5070");
    for (contact, rewritable) in [
        ("<s:x\">,<sip:evil@203.0.113.66>", false),
        ("<sip:a@192.0.2.5>;p=\"x,<y\",<sip:evil@203.0.113.66>", true),
    ] {
        let invite = request(
            "INVITE",
            "sip:bob@203.0.113.20",
            &format!("Contact: {contact}\r\n"),
        );
        assert_eq!(invite.contacts().count(), 2, "{contact}");
        let RequestAction::Forward(f) = route(&r, &invite, uac) else {
            panic!()
        };
        let Ok(out) = rewrite(&r, &invite, &uac, &f, Transport::Tcp) else {
            assert!(!rewritable, "{contact}");
            continue;
        };
        assert!(rewritable, "{contact}");
        let sent = Message::parse(out.to_contiguous()).unwrap();
        let buf = sent.bytes().clone();
        let contacts: Vec<_> = sent.contacts().map(|c| c.unwrap()).collect();
        assert_eq!(contacts.len(), 2, "{}", wire(&out));
        for contact in contacts {
            let uri = contact.parsed_uri(&buf).unwrap();
            assert_eq!(uri.host(), US.as_bytes(), "{}", wire(&out));
            assert!(uri.has_param("rbt"));
        }
        assert!(!wire(&out).contains("@203.0.113.66"), "{}", wire(&out));
    }
}

#[test]
fn token_flow_of_a_browser_is_not_dialled_back() {
    let r = router_with(|_| {});
    let invite = request(
        "INVITE",
        "sip:bob@203.0.113.20",
        "Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>\r\n",
    );
    let RequestAction::Forward(f) = route(&r, &invite, client()) else {
        panic!()
    };
    let out = wire(&rewrite(&r, &invite, &client(), &f, Transport::Tcp).unwrap());
    let bye = request("BYE", &contact_uri(&out), "");
    match route(&r, &bye, flow(Transport::Tcp, "203.0.113.20:5060")) {
        RequestAction::Forward(f) => {
            assert_eq!(
                f.next,
                NextHop::Flow(Destination {
                    flow: client(),
                    connection: None,
                    server_name: None,
                    may_connect: false
                })
            );
            assert_eq!(f.fallback, None);
        }
        other => panic!("{other:?}"),
    }
    // A response's Contact from a trusted server names a flow Roundabout may dial again.
    let server_flow = flow(Transport::Tcp, "203.0.113.20:5060");
    let resp = Message::parse(Bytes::from(format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {US}:5060;branch=z9hG4bKrb1\r\n\
         Via: SIP/2.0/WS x.invalid;branch=z9hG4bKa;received=192.0.2.10;rport=50000\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:bob@203.0.113.20:5060;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    )))
    .unwrap();
    let (out, _) = r
        .rewriter()
        .rewrite_response(&resp, &server_flow, None, &client())
        .unwrap();
    let out = wire(&out);
    assert!(
        out.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/WS x.invalid"),
        "{out}"
    );
    let ack = request("ACK", &contact_uri(&out), "");
    match route(&r, &ack, client()) {
        RequestAction::Forward(f) => assert_eq!(
            f.next,
            NextHop::Flow(Destination {
                flow: server_flow,
                connection: None,
                server_name: Some("server.example.com".into()),
                may_connect: true
            })
        ),
        other => panic!("{other:?}"),
    }
}

/// A token names a flow, transport and address: of two trusted servers at one address, one on
/// UDP and one on TLS, the token of the TLS one's Contact is sent with that server's name
/// (its certificate's), not with the UDP entry's, listed first.
#[test]
fn token_names_the_server_of_its_transport() {
    let r = router_with(|c| {
        let servers = &mut c.trusted_servers.servers;
        servers.push(server("203.0.113.30", &[], 5061, Transport::Udp));
        servers.push(server(
            "203.0.113.30",
            &["tls.example.com"],
            5061,
            Transport::Tls,
        ));
    });
    let tls_server = flow(Transport::Tls, "203.0.113.30:5061");
    let resp = Message::parse(Bytes::from(format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS {US}:5061;branch=z9hG4bKrb1\r\n\
         Via: SIP/2.0/WS x.invalid;branch=z9hG4bKa;received=192.0.2.10;rport=50000\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:bob@203.0.113.30:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    )))
    .unwrap();
    let (out, _) = r
        .rewriter()
        .rewrite_response(&resp, &tls_server, None, &client())
        .unwrap();
    let ack = request("ACK", &contact_uri(&wire(&out)), "");
    match route(&r, &ack, client()) {
        RequestAction::Forward(f) => assert_eq!(
            f.next,
            NextHop::Flow(Destination {
                flow: tls_server,
                connection: None,
                server_name: Some("tls.example.com".into()),
                may_connect: true
            })
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hairpin_contact_is_not_wrapped_twice() {
    let r = router_with(|_| {});
    let invite = request(
        "INVITE",
        "sip:bob@203.0.113.20",
        "Contact: <sip:alice@192.0.2.5>\r\n",
    );
    let src = flow(Transport::Udp, "192.0.2.5:5060");
    let RequestAction::Forward(f) = route(&r, &invite, src) else {
        panic!()
    };
    let once = contact_uri(&wire(
        &rewrite(&r, &invite, &src, &f, Transport::Tcp).unwrap(),
    ));
    let again = request(
        "INVITE",
        "sip:bob@203.0.113.20",
        &format!("Contact: <{once}>\r\n"),
    );
    let RequestAction::Forward(f) = route(&r, &again, src) else {
        panic!()
    };
    let twice = contact_uri(&wire(
        &rewrite(&r, &again, &src, &f, Transport::Udp).unwrap(),
    ));
    assert_eq!(once, twice);
}

#[test]
fn requests_to_roundabout_use_the_client_cache_then_the_default_server() {
    let r = router_with(|_| {});
    let now = Instant::now();
    let ws_client = client();
    r.clients()
        .bind(
            b"1000",
            ws_client,
            None,
            Bytes::from_static(b"sip:abc@x.invalid;transport=ws"),
            Duration::from_secs(60),
            now,
        )
        .unwrap();
    let invite = request("INVITE", &format!("sip:1000@{US}"), "");
    match r.route_request(&invite, &flow(Transport::Udp, "203.0.113.20:5060"), now) {
        RequestAction::Forward(f) => {
            assert_eq!(
                f.next,
                NextHop::Flow(Destination {
                    flow: ws_client,
                    connection: None,
                    server_name: None,
                    may_connect: false
                })
            );
            let out = wire(
                &rewrite(
                    &r,
                    &invite,
                    &flow(Transport::Udp, "203.0.113.20:5060"),
                    &f,
                    Transport::Ws,
                )
                .unwrap(),
            );
            assert!(
                out.starts_with("INVITE sip:abc@x.invalid;transport=ws SIP/2.0\r\n"),
                "{out}"
            );
        }
        other => panic!("{other:?}"),
    }
    let expired = r.route_request(
        &invite,
        &flow(Transport::Udp, "203.0.113.20:5060"),
        now + Duration::from_secs(61),
    );
    assert_eq!(
        expired,
        RequestAction::Reply(Status::TEMPORARILY_UNAVAILABLE)
    );
    let unknown = request("INVITE", "sip:2000@proxya.example.com", "");
    assert_eq!(
        route(&r, &unknown, client()),
        RequestAction::Reply(Status::NOT_FOUND)
    );

    let with_default = router_with(|c| c.default_sip_server = Some(0));
    let action = route(&with_default, &unknown, client());
    assert_eq!(
        forward_dest(&action),
        (Transport::Tcp, "203.0.113.20:5060".into())
    );
    let RequestAction::Forward(f) = action else {
        unreachable!()
    };
    let out = wire(&rewrite(&with_default, &unknown, &client(), &f, Transport::Tcp).unwrap());
    assert!(
        out.starts_with("INVITE sip:2000@server.example.com:5060 SIP/2.0\r\n"),
        "{out}"
    );
}

#[test]
fn forwarded_request_edits() {
    let r = router_with(|c| c.contact_header_fqdn = true);
    let src = flow(Transport::Udp, "192.0.2.5:40000");
    let text = "INVITE sip:bob@203.0.113.20 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKabc;rport\r\n\
        From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@203.0.113.20>\r\n\
        Call-ID: c9\r\nCSeq: 7 INVITE\r\nContact: \"A\" <sip:alice@192.0.2.5>;+sip.instance=\"<urn:x>\"\r\n\
        Subject: untouched\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n";
    let msg = Message::parse(Bytes::from(text)).unwrap();
    let RequestAction::Forward(f) = route(&r, &msg, src) else {
        panic!()
    };
    let out = rewrite(&r, &msg, &src, &f, Transport::Tcp).unwrap();
    let s = wire(&out);
    let mut lines = s.lines();
    assert_eq!(lines.next(), Some("INVITE sip:bob@203.0.113.20 SIP/2.0"));
    let via = lines.next().unwrap();
    assert!(
        via.starts_with(&format!("Via: SIP/2.0/TCP {US}:5060;branch=z9hG4bKrb")),
        "{via}"
    );
    assert_eq!(
        lines.next(),
        Some("Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKabc;received=192.0.2.5;rport=40000")
    );
    assert!(
        s.contains("Max-Forwards: 70\r\n"),
        "added when missing: {s}"
    );
    assert!(
        s.contains("Contact: \"A\" <sip:alice@proxya.example.com:5060;transport=tcp;rbt="),
        "{s}"
    );
    assert!(s.contains(">;+sip.instance=\"<urn:x>\"\r\n"), "{s}");
    assert!(s.contains("Subject: untouched\r\n"));
    assert!(
        s.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"),
        "stream egress gets Content-Length: {s}"
    );
    // Deterministic branch: a retransmission gets the same one (RFC 3261 §16.11).
    let again = wire(&rewrite(&r, &msg, &src, &f, Transport::Tcp).unwrap());
    assert_eq!(s, again);
}

/// A request from `source` as Roundabout forwards it to `dest`, and the answer `dest` sends
/// back to it (every Via copied, RFC 3261 §8.2.6.2), with `edit` applied to the answer's text.
fn answered(
    r: &Router,
    source: FlowKey,
    dest: FlowKey,
    edit: impl Fn(String) -> String,
) -> Message {
    let invite = request("INVITE", "sip:bob@203.0.113.20", "");
    let RequestAction::Forward(f) = route(r, &invite, source) else {
        panic!()
    };
    let (out, _) = r
        .rewriter()
        .rewrite_request(&invite, &source, None, &f, &dest, OwnVia::default())
        .unwrap();
    let forwarded = Message::parse(out.to_contiguous()).unwrap();
    let answer = crate::sip::reply::response(&forwarded, 180, "Ringing", "t");
    Message::parse(Bytes::from(edit(
        String::from_utf8(answer.to_contiguous().to_vec()).unwrap(),
    )))
    .unwrap()
}

#[test]
fn responses_follow_the_via_chain_when_they_answer_what_was_sent() {
    let r = router_with(|_| {});
    let server = flow(Transport::Tcp, "203.0.113.20:5060");
    let stranger = flow(Transport::Udp, "192.0.2.77:5060");
    let back = |transport, addr: &str| {
        ResponseAction::Forward(Destination {
            flow: flow(transport, addr),
            connection: None,
            server_name: None,
            may_connect: false,
        })
    };
    let same = |m: String| m;
    let cases: Vec<(&str, Message, FlowKey, ResponseAction)> = vec![
        (
            "a UDP client's answer goes to received/rport",
            answered(&r, flow(Transport::Udp, "192.0.2.9:4000"), server, same),
            server,
            back(Transport::Ws, "192.0.2.9:4000"),
        ),
        (
            "IPv6",
            answered(&r, flow(Transport::Wss, "[2001:db8::2]:443"), server, same),
            server,
            back(Transport::Ws, "[2001:db8::2]:443"),
        ),
        (
            // Any trusted server may answer for another (a cluster answering from a sibling).
            "from another trusted server",
            answered(&r, client(), server, same),
            flow(Transport::Udp, "203.0.113.180:5070"),
            back(Transport::Ws, "192.0.2.10:50000"),
        ),
        (
            "from anyone but the untrusted address the request went to",
            answered(&r, client(), stranger, same),
            flow(Transport::Udp, "192.0.2.77:5061"),
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            "from the untrusted address it went to",
            answered(&r, client(), stranger, same),
            stranger,
            back(Transport::Ws, "192.0.2.10:50000"),
        ),
        (
            "from a stranger, for a request that went to a server",
            answered(&r, client(), server, same),
            stranger,
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            "redirected elsewhere by its Via",
            answered(&r, client(), server, |m| {
                m.replace("rport=50000", "rport=50001")
            }),
            server,
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            "received removed",
            answered(&r, client(), server, |m| {
                m.replace(";received=192.0.2.10", "")
            }),
            server,
            ResponseAction::Forged("no received/rport below Roundabout's Via"),
        ),
        (
            "answering another Call-ID",
            answered(&r, client(), server, |m| {
                m.replace("Call-ID: c1", "Call-ID: c2")
            }),
            server,
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            // A REGISTER 2xx made from an INVITE's branch would bind whoever the forger likes.
            "answering another method",
            answered(&r, client(), server, |m| {
                m.replace("1 INVITE", "1 REGISTER")
            }),
            server,
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            "a copied prefix with digits of its own",
            answered(&r, client(), server, |m| {
                let at = m.find("z9hG4bKrb").unwrap() + "z9hG4bKrb".len();
                format!("{}0123456789abcdef{}", &m[..at], &m[at + 16..])
            }),
            server,
            ResponseAction::Forged("branch does not match the response or its source"),
        ),
        (
            "a branch that is not one of ours in form",
            answered(&r, client(), server, |m| {
                m.replacen("z9hG4bKrb", "z9hG4bKrbX", 1)
            }),
            server,
            ResponseAction::Forged("branch not minted by Roundabout"),
        ),
        (
            "not our Via on top",
            answered(&r, client(), server, |m| {
                m.replacen(
                    &format!("SIP/2.0/TCP {US}:5060"),
                    "SIP/2.0/TCP 192.0.2.1",
                    1,
                )
            }),
            server,
            ResponseAction::Drop("top Via is not Roundabout's"),
        ),
        (
            "no Via below ours",
            answered(&r, client(), server, |m| {
                let start = m.find("Via: SIP/2.0/WS ").unwrap();
                let end = start + m[start..].find("\r\n").unwrap() + 2;
                format!("{}{}", &m[..start], &m[end..])
            }),
            server,
            ResponseAction::Drop("no Via below Roundabout's"),
        ),
    ];
    for (what, msg, source, expected) in cases {
        assert_eq!(r.route_response(&msg, &source), expected, "{what}");
    }
}

#[test]
fn register_2xx_restores_the_client_contact_and_reports_the_binding() {
    let r = router_with(|_| {});
    let reg = request(
        "REGISTER",
        "sip:server.example.com",
        "Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n",
    );
    let RequestAction::Forward(f) = route(&r, &reg, client()) else {
        panic!()
    };
    let out = wire(&rewrite(&r, &reg, &client(), &f, Transport::Tcp).unwrap());
    let registered = contact_uri(&out);
    let ok = Message::parse(Bytes::from(format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {US}:5060;branch=z9hG4bKrb1\r\n\
         Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKnashds7;received=192.0.2.10;rport=50000\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <sip:1000@server.example.com>;tag=9\r\n\
         Call-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <{registered}>;expires=300\r\nContent-Length: 0\r\n\r\n"
    )))
    .unwrap();
    let (out, regs) = r
        .rewriter()
        .rewrite_response(
            &ok,
            &flow(Transport::Tcp, "203.0.113.20:5060"),
            None,
            &client(),
        )
        .unwrap();
    assert!(
        wire(&out).contains("Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>;expires=300\r\n"),
        "{}",
        wire(&out)
    );
    assert_eq!(regs.len(), 1);
    assert_eq!(&regs[0].user[..], b"1000");
    assert_eq!(regs[0].flow, client());
    assert_eq!(regs[0].expires, Duration::from_secs(300));
}

#[test]
fn register_2xx_binds_only_the_client_it_goes_to_and_reports_unregistration() {
    let r = router_with(|_| {});
    let other_device = flow(Transport::Ws, "192.0.2.77:40000");
    let tokened = |source: FlowKey, contact: &str| {
        let reg = request(
            "REGISTER",
            "sip:server.example.com",
            &format!("Contact: <{contact}>\r\n"),
        );
        let RequestAction::Forward(f) = route(&r, &reg, source) else {
            panic!()
        };
        contact_uri(&wire(
            &rewrite(&r, &reg, &source, &f, Transport::Tcp).unwrap(),
        ))
    };
    let mine = tokened(client(), "sip:abc@mine.invalid;transport=ws");
    let theirs = tokened(other_device, "sip:xyz@theirs.invalid;transport=ws");
    let ok = |contacts: &str| {
        Message::parse(Bytes::from(format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {US}:5060;branch=z9hG4bKrb1\r\n\
             Via: SIP/2.0/WSS mine.invalid;branch=z9hG4bKa;received=192.0.2.10;rport=50000\r\n\
             From: <sip:1000@example.com>;tag=1\r\nTo: <sip:1000@server.example.com>;tag=9\r\n\
             Call-ID: c1\r\nCSeq: 2 REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    };
    let server = flow(Transport::Tcp, "203.0.113.20:5060");
    // The registrar lists the other device first: only this client's binding is reported,
    // yet both contacts are shown as their devices wrote them.
    let both = ok(&format!(
        "Contact: <{theirs}>;expires=500\r\nContact: <{mine}>;expires=300\r\n"
    ));
    let (out, regs) = r
        .rewriter()
        .rewrite_response(&both, &server, None, &client())
        .unwrap();
    let out = wire(&out);
    assert!(
        out.contains("Contact: <sip:xyz@theirs.invalid;transport=ws>;expires=500\r\n"),
        "{out}"
    );
    assert!(
        out.contains("Contact: <sip:abc@mine.invalid;transport=ws>;expires=300\r\n"),
        "{out}"
    );
    assert_eq!(regs.len(), 1);
    assert_eq!(
        (regs[0].flow, regs[0].expires),
        (client(), Duration::from_secs(300))
    );
    // After an un-REGISTER only the other device remains: this client's binding goes.
    let (_, regs) = r
        .rewriter()
        .rewrite_response(
            &ok(&format!("Contact: <{theirs}>;expires=500\r\n")),
            &server,
            None,
            &client(),
        )
        .unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(
        (&regs[0].user[..], regs[0].expires),
        (&b"1000"[..], Duration::ZERO)
    );
    // The client cache removes a binding only when it is still to that client.
    let now = Instant::now();
    let cache = ClientCache::new(10);
    cache
        .bind(
            b"1000",
            other_device,
            None,
            Bytes::new(),
            Duration::from_secs(60),
            now,
        )
        .unwrap();
    assert!(!cache.remove_at(b"1000", client().remote));
    assert!(cache.remove_at(b"1000", other_device.remote));
}

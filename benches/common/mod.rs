//! What both benchmarks use: the INVITE of the SIPp bench, the router they route with, and the
//! messages of one call as they reach the proxy.

// Each benchmark uses part of this.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roundabout::config::{ClientRanges, Config, Limits, Ports, TrustedServer, TrustedServers};
use roundabout::proxy::action::{Forward, NextHop, RequestAction, ResponseAction};
use roundabout::proxy::rewrite::{OwnVia, Rewriter};
use roundabout::proxy::router::Router;
use roundabout::sip::{Encoded, HeaderName, Message, Transport};
use roundabout::transport::FlowKey;

pub const INVITE: &[u8] = b"INVITE sip:service@127.0.0.2:5080;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.3:5070;branch=z9hG4bK-1-1-0;rport\r\n\
From: sipp <sip:sipp@127.0.0.3:5070>;tag=1SIPpTag001\r\n\
To: service <sip:service@127.0.0.2:5080>\r\n\
Call-ID: 1-12345@127.0.0.3\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:sipp@127.0.0.3:5070;transport=udp>\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.3\r\n\
s=-\r\n\
c=IN IP4 127.0.0.3\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

pub fn router(egress: Transport) -> Router {
    let config = Config {
        local_ip: "127.0.0.1".parse().unwrap(),
        local_fqdn: None,
        bind_ip: "127.0.0.1".parse().unwrap(),
        strict_host: true,
        strict_client: false,
        ack_ruri: true,
        contact_header_fqdn: false,
        trusted_servers: TrustedServers {
            servers: vec![TrustedServer {
                ip: "127.0.0.2".parse().unwrap(),
                fqdns: vec![],
                port: 5080,
                transport: egress,
                routes: vec![],
            }],
        },
        trusted_clients: ClientRanges::default(),
        default_sip_server: None,
        default_network: Transport::Tcp,
        ports: Ports {
            udp: Some(5060),
            tcp: Some(5060),
            tls: None,
            ws: None,
            wss: None,
        },
        tls: None,
        tls_ca: None,
        mutual_tls: roundabout::config::MutualTls::default(),
        ws_path: None,
        proxy_protocol_from: ClientRanges::default(),
        token_key: [9; 32],
        // The flood guards off: the benchmarks measure forwarding.
        limits: Limits {
            client_cache_size: 1000,
            rate_limit: 0,
            max_new_requests: 0,
            ..Limits::DEFAULT
        },
        sip_timers: roundabout::config::SipTimers::RFC_3261,
        transaction_limits: roundabout::config::TransactionLimits::DEFAULT,
        drain_timeout: Duration::from_secs(5),
        metrics_addr: None,
        hep: None,
        rtpengine: Vec::new(),
        dns_server: None,
        udp_mtu: None,
    };
    Router::new(
        &config,
        vec![(Transport::Udp, 5060), (Transport::Tcp, 5060)],
    )
}

/// The messages of one call as they reach the proxy, and where each comes from.
pub struct Call {
    router: Router,
    rewriter: Rewriter,
    pub messages: Vec<(Bytes, FlowKey)>,
}

impl Call {
    /// Builds the call the way it happens: the UAS answers what the proxy forwarded, and the
    /// UAC's ACK and BYE go to the Contact the proxy wrote into the 200.
    pub fn new() -> Call {
        let router = router(Transport::Udp);
        let rewriter = router.rewriter();
        let uac = FlowKey {
            transport: Transport::Udp,
            remote: "127.0.0.3:5070".parse().unwrap(),
        };
        let uas = FlowKey {
            transport: Transport::Udp,
            remote: "127.0.0.2:5080".parse().unwrap(),
        };
        let invite = Bytes::from(
            String::from_utf8_lossy(INVITE)
                .replace(";transport=tcp", ";transport=udp")
                .into_bytes(),
        );
        let forwarded =
            Message::parse(forward(&router, &rewriter, &invite, uac).to_contiguous()).unwrap();
        let answer = |status: &str, contact: bool| uas_answer(&forwarded, status, contact);
        let ok = answer("200 OK", true);
        let relayed_ok =
            Message::parse(forward(&router, &rewriter, &ok, uas).to_contiguous()).unwrap();
        let contact = relayed_ok.contacts().next().unwrap().unwrap();
        let dialog_uri = std::str::from_utf8(relayed_ok.slice(contact.uri)).unwrap();
        let in_dialog = |method: &str, cseq: u32, branch: &str| {
            Bytes::from(format!(
                "{method} {dialog_uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.3:5070;branch=z9hG4bK-1-1-{branch};rport\r\n\
                 From: sipp <sip:sipp@127.0.0.3:5070>;tag=1SIPpTag001\r\n\
                 To: service <sip:service@127.0.0.2:5080>;tag=2SIPpTag012\r\n\
                 Call-ID: 1-12345@127.0.0.3\r\n\
                 CSeq: {cseq} {method}\r\n\
                 Contact: <sip:sipp@127.0.0.3:5070;transport=UDP>\r\n\
                 Max-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n"
            ))
        };
        let bye = in_dialog("BYE", 2, "7");
        let forwarded_bye =
            Message::parse(forward(&router, &rewriter, &bye, uac).to_contiguous()).unwrap();
        let messages = vec![
            (invite, uac),
            (answer("100 Trying", false), uas),
            (answer("180 Ringing", true), uas),
            (ok, uas),
            (in_dialog("ACK", 1, "5"), uac),
            (bye, uac),
            (uas_answer(&forwarded_bye, "200 OK", false), uas),
        ];
        Call {
            router,
            rewriter,
            messages,
        }
    }

    pub fn forward_all(&self) {
        for (data, source) in &self.messages {
            black_box(forward(
                &self.router,
                &self.rewriter,
                black_box(data),
                *source,
            ));
        }
    }
}

/// The UAS's response to `request` as the proxy forwarded it: the Vias it received, the dialog's
/// From/To/Call-ID, the request's CSeq, and the UAS's Contact when `contact`.
fn uas_answer(request: &Message, status: &str, contact: bool) -> Bytes {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for via in request.fields(HeaderName::Via) {
        out.push_str(std::str::from_utf8(request.slice(via.line)).unwrap());
    }
    let cseq = request.first(HeaderName::CSeq).unwrap();
    out.push_str(
        "From: sipp <sip:sipp@127.0.0.3:5070>;tag=1SIPpTag001\r\n\
         To: service <sip:service@127.0.0.2:5080>;tag=2SIPpTag012\r\n\
         Call-ID: 1-12345@127.0.0.3\r\n",
    );
    out.push_str(std::str::from_utf8(request.slice(cseq.line)).unwrap());
    if contact {
        out.push_str("Contact: <sip:127.0.0.2:5080;transport=udp>\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

/// What the proxy's handler does to one message, without the sending.
pub fn forward(router: &Router, rewriter: &Rewriter, data: &Bytes, source: FlowKey) -> Encoded {
    let msg = Message::parse(data.clone()).unwrap();
    if !msg.is_request() {
        let ResponseAction::Forward(dest) = router.route_response(&msg, &source) else {
            panic!("response not forwarded");
        };
        return rewriter
            .rewrite_response(&msg, &source, None, &dest.flow)
            .unwrap()
            .0;
    }
    msg.validate_request().unwrap();
    let RequestAction::Forward(forward) = router.route_request(&msg, &source, Instant::now())
    else {
        panic!("request not forwarded");
    };
    rewriter
        .rewrite_request(
            &msg,
            &source,
            None,
            &forward,
            &next_hop(&forward),
            OwnVia::default(),
        )
        .unwrap()
        .0
}

/// Where the router sends a request (every hop of these benchmarks is an address).
fn next_hop(forward: &Forward) -> FlowKey {
    match &forward.next {
        NextHop::Flow(dest) => dest.flow,
        NextHop::Resolve { .. } => panic!("the benchmark's hops are addresses"),
    }
}

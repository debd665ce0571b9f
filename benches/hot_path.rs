//! Parser and routing micro-benchmarks: the per-message work of the hot path without sockets.
//! `cargo bench --bench hot_path`.
//!
//! `call` is what the proxy does for one call of the SIPp bench (`bench/run.sh`): INVITE, 100,
//! 180, 200, ACK, BYE, 200, UDP in and out, each parsed, validated, routed and rewritten.
//! `handler` is the same call through the whole handler (`Proxy::handle`: the flood check, the
//! decisions, the send into an outbound that drops what it gets), without the metrics and with
//! them (`-metrics-addr`'s taps, counts and timing): what turning them on costs.
//! For instruction counts, `HOT_PATH_CALLS=N` skips criterion and runs `call` N times
//! (`HOT_PATH_MODE=handler` or `metrics` for the handler without or with the metrics):
//! `HOT_PATH_CALLS=100000 perf stat -e instructions:u target/release/deps/hot_path-<hash>`.

#![allow(clippy::unwrap_used)] // a benchmark of fixed inputs: a failure is a bug to see at once
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use roundabout::config::{ClientRanges, Config, Limits, Ports, TrustedServer, TrustedServers};
use roundabout::metrics::Messages;
use roundabout::proxy::action::{Forward, NextHop, RequestAction, ResponseAction};
use roundabout::proxy::decisions::Counting;
use roundabout::proxy::flood::{OverloadGuard, SourceLimiter};
use roundabout::proxy::rewrite::Rewriter;
use roundabout::proxy::router::Router;
use roundabout::proxy::transaction::Transactions;
use roundabout::proxy::Proxy;
use roundabout::sip::{Encoded, HeaderName, Message, Transport};
use roundabout::transport::{
    ConnectionId, Destination, FlowKey, Handler, Inbound, Outbound, SendError, Tapped,
};

const INVITE: &[u8] = b"INVITE sip:service@127.0.0.2:5080;transport=tcp SIP/2.0\r\n\
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

fn router(egress: Transport) -> Router {
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
        limits: Limits {
            max_message: 65_536,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            ws_ping_interval: Duration::from_secs(30),
            client_cache_size: 1000,
            send_queue: 1024,
            send_queue_bytes: 1 << 20,
            send_buffer_total: 256 << 20,
            rate_limit: 0,
            max_new_requests: 0,
        },
        sip_timers: roundabout::config::SipTimers::RFC_3261,
        transaction_limits: roundabout::config::TransactionLimits::DEFAULT,
        drain_timeout: Duration::from_secs(5),
        metrics_addr: None,
        hep: None,
    };
    Router::new(
        &config,
        vec![(Transport::Udp, 5060), (Transport::Tcp, 5060)],
    )
}

fn hot_path(c: &mut Criterion) {
    let invite = Bytes::from_static(INVITE);
    let source = FlowKey {
        transport: Transport::Udp,
        remote: "127.0.0.3:5070".parse().unwrap(),
    };
    let router = router(Transport::Tcp);
    let rewriter = router.rewriter();
    let mut group = c.benchmark_group("invite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| Message::parse(black_box(invite.clone())).unwrap());
    });
    group.bench_function("parse_validate_route_rewrite", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(invite.clone())).unwrap();
            msg.validate_request().unwrap();
            let RequestAction::Forward(forward) =
                router.route_request(&msg, &source, Instant::now())
            else {
                panic!("not forwarded");
            };
            rewriter
                .rewrite_request(&msg, &source, None, &forward, &next_hop(&forward), false)
                .unwrap()
        });
    });
    group.finish();
    let call = Call::new();
    let mut group = c.benchmark_group("call");
    group.throughput(Throughput::Elements(call.messages.len() as u64));
    group.bench_function("udp_to_udp", |b| b.iter(|| call.forward_all()));
    group.finish();
    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(call.messages.len() as u64));
    for metrics in [false, true] {
        let handler = call.handler(metrics);
        let name = if metrics {
            "udp_to_udp_metrics"
        } else {
            "udp_to_udp"
        };
        group.bench_function(name, |b| b.iter(|| call.handle_all(&*handler)));
    }
    group.finish();
}

/// An outbound that takes every message and drops it (counting them): the handler's work
/// without the sending.
struct Discard(Arc<AtomicUsize>);

impl Outbound for Discard {
    fn send(&self, _: &Destination, msg: Encoded) -> Result<(), SendError> {
        black_box(msg);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn connection_at(&self, _: SocketAddr, _: Transport) -> Option<(FlowKey, ConnectionId)> {
        None
    }
}

/// The messages of one call as they reach the proxy, and where each comes from.
struct Call {
    router: Router,
    rewriter: Rewriter,
    messages: Vec<(Bytes, FlowKey)>,
}

impl Call {
    /// Builds the call the way it happens: the UAS answers what the proxy forwarded, and the
    /// UAC's ACK and BYE go to the Contact the proxy wrote into the 200.
    fn new() -> Call {
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

    /// The proxy as the transports see it, with the metrics' taps and counts when `metrics`
    /// (as the server builds it with `-metrics-addr`). Its router has the bench router's keys,
    /// so the call's branches and tokens verify: checked by sending the call once.
    fn handler(&self, metrics: bool) -> Box<dyn Handler> {
        let messages = Arc::new(Messages::default());
        let sent = Arc::new(AtomicUsize::new(0));
        let discard = Discard(Arc::clone(&sent));
        let outbound: Arc<dyn Outbound> = if metrics {
            Arc::new(Tapped::new(discard, Arc::clone(&messages)))
        } else {
            Arc::new(discard)
        };
        let counting = if metrics {
            Counting::On(Arc::default())
        } else {
            Counting::Off
        };
        let proxy = Proxy::new(
            router(Transport::Udp),
            outbound,
            SourceLimiter::new(0),
            OverloadGuard::new(0),
            Transactions::new(
                roundabout::config::SipTimers::RFC_3261,
                roundabout::config::TransactionLimits::DEFAULT,
            ),
            counting,
        );
        let handler: Box<dyn Handler> = if metrics {
            Box::new(Tapped::new(proxy, messages))
        } else {
            Box::new(proxy)
        };
        self.handle_all(&*handler);
        assert_eq!(
            sent.load(Ordering::Relaxed),
            self.messages.len(),
            "all forwarded"
        );
        handler
    }

    fn handle_all(&self, handler: &dyn Handler) {
        for (data, source) in &self.messages {
            handler.handle(Inbound {
                data: black_box(data.clone()),
                flow: *source,
                connection: None,
            });
        }
    }

    fn forward_all(&self) {
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
fn forward(router: &Router, rewriter: &Rewriter, data: &Bytes, source: FlowKey) -> Encoded {
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
        .rewrite_request(&msg, &source, None, &forward, &next_hop(&forward), false)
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

/// Counts heap allocations, so the cost of the hot path in allocations is a number, not a guess.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations (and reallocations) of parse → validate → route → rewrite for one INVITE,
/// UDP in, TCP out: the figure the README quotes.
fn allocations_per_forwarded_invite() -> usize {
    let invite = Bytes::from_static(INVITE);
    let source = FlowKey {
        transport: Transport::Udp,
        remote: "127.0.0.3:5070".parse().unwrap(),
    };
    let router = router(Transport::Tcp);
    let rewriter = router.rewriter();
    let forward_once = || {
        let msg = Message::parse(invite.clone()).unwrap();
        msg.validate_request().unwrap();
        let RequestAction::Forward(forward) = router.route_request(&msg, &source, Instant::now())
        else {
            panic!("not forwarded");
        };
        black_box(
            rewriter
                .rewrite_request(&msg, &source, None, &forward, &next_hop(&forward), false)
                .unwrap(),
        );
    };
    forward_once();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    forward_once();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

criterion_group!(benches, hot_path);

fn main() {
    if let Some(calls) = std::env::var("HOT_PATH_CALLS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let call = Call::new();
        let mode = std::env::var("HOT_PATH_MODE").unwrap_or_default();
        let handler = match mode.as_str() {
            "handler" => Some(call.handler(false)),
            "metrics" => Some(call.handler(true)),
            _ => None,
        };
        for _ in 0..calls {
            match &handler {
                Some(handler) => call.handle_all(&**handler),
                None => call.forward_all(),
            }
        }
        return;
    }
    println!(
        "allocations per forwarded INVITE (parse, validate, route, rewrite): {}",
        allocations_per_forwarded_invite()
    );
    benches();
    Criterion::default().configure_from_args().final_summary();
}

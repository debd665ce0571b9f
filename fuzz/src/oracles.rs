//! The fuzz targets' checks, one function per target, shared with the regression tests:
//! `fuzz/fuzz_targets/*.rs` call them, and `tests/torture.rs` includes this file (`#[path]`) to
//! run every crash input in `tests/torture/crashes/` through the same code. So this file uses
//! only `roundabout`, `bytes` and `tokio`, which both crates have.
//!
//! Each function panics when Roundabout misbehaves on `data`: a panic of its own, or a broken
//! oracle (stated in the function's documentation).
//!
//! The configuration has only UDP trusted servers and `-strict-host`, so no input can make the
//! proxy resolve a name or dial a connection: nothing here touches the network.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use roundabout::cli::Action;
use roundabout::config::Config;
use roundabout::dns::{Resolver, Usable};
use roundabout::proxy::action::{NextHop, RequestAction, ResponseAction};
use roundabout::proxy::decisions::Counting;
use roundabout::proxy::flood::{OverloadGuard, SourceLimiter};
use roundabout::proxy::rewrite::{OwnVia, Rewriter};
use roundabout::proxy::router::Router;
use roundabout::proxy::token::TokenKey;
use roundabout::proxy::transaction::{needs_transaction, Transactions};
use roundabout::proxy::{token, Proxy, Services};
use roundabout::sip::codec::{self, Frame};
use roundabout::sip::{reply, HeaderName, Message, NameAddr, Transport, Uri};
use roundabout::transport::{FlowKey, Handler, Inbound, Transports};

/// Trusted servers: one by FQDN (the names the seeds use), one with a route-list, one IPv6;
/// `127.0.0.2` is also the default SIP server, so requests to Roundabout itself are routed.
const TRUSTED: &str = "127.0.0.2:example.com/example.org/example.net/chair-dnrc.example.com/\
                       services.example.com/registrar.example.com/company.com/host.example.net:\
                       5080:udp:,\
                       127.0.0.4:pbx.example.com:5090:udp:127.0.0.5/127.0.0.6,\
                       [::1]::5070:udp:";

/// The run configuration for these flags plus `extra`, parsed and validated as the binary does.
///
/// # Panics
/// If the flags do not parse (a bug in this file).
#[must_use]
pub fn config(extra: &[&str]) -> Config {
    let mut args = vec![
        "roundabout",
        "-local-ip",
        "127.0.0.1",
        "-local-fqdn",
        "proxy.example.com",
        "-strict-host",
        "-trusted-server",
        TRUSTED,
        "-default-sip-server",
        "127.0.0.2",
        "-token-key",
        "0202020202020202020202020202020202020202020202020202020202020202",
    ];
    args.extend_from_slice(extra);
    let cli = roundabout::cli::parse(args.iter().map(Into::into)).expect("fuzz flags parse");
    let Ok(Action::Run(run)) = cli.into_action() else {
        panic!("fuzz flags are not a run command line");
    };
    Config::from_args(&run).expect("fuzz flags validate").config
}

/// The router for [`config`], Roundabout listening on UDP and TCP 5060 and WS 5066.
#[must_use]
pub fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        Router::new(
            &config(&[]),
            vec![
                (Transport::Udp, 5060),
                (Transport::Tcp, 5060),
                (Transport::Ws, 5066),
            ],
        )
    })
}

/// The rewriter of [`router`].
#[must_use]
pub fn rewriter() -> &'static Rewriter {
    static REWRITER: OnceLock<Rewriter> = OnceLock::new();
    REWRITER.get_or_init(|| router().rewriter())
}

/// The contact token key of [`config`], to read back what the rewriter wrote.
fn token_key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| TokenKey::new(&config(&[]).token_key))
}

/// Reads every value the proxy can read lazily from a parsed message. Only panics matter.
pub fn touch_everything(msg: &Message) {
    let buf = msg.bytes().clone();
    let _ = (
        msg.method(),
        msg.method_token(),
        msg.status_code(),
        msg.body(),
    );
    let _ = (msg.content_length(), msg.max_forwards(), msg.expires());
    let _ = (
        msg.call_id(),
        msg.has_wildcard_contact(),
        msg.cseq(),
        msg.top_via(),
    );
    for field in msg.headers() {
        let _ = (msg.slice(field.line), msg.slice(field.value));
    }
    for via in msg.vias().flatten() {
        let _ = (via.branch(&buf), via.param(&buf, "received"));
        let _ = via.param(&buf, "rport");
    }
    let name_addrs = msg
        .contacts()
        .chain(msg.routes())
        .chain([msg.to(), msg.from()]);
    for name_addr in name_addrs.flatten() {
        touch_name_addr(&buf, &name_addr);
    }
    if let Some(span) = msg.request_uri() {
        if let Ok(uri) = Uri::parse(&buf, span) {
            touch_uri(&uri);
        }
    }
}

fn touch_name_addr(buf: &Bytes, name_addr: &NameAddr) {
    let _ = (name_addr.param(buf, "tag"), name_addr.param(buf, "expires"));
    if let Ok(uri) = name_addr.parsed_uri(buf) {
        touch_uri(&uri);
    }
}

fn touch_uri(uri: &Uri) {
    let _ = (
        uri.user(),
        uri.host(),
        uri.host_ip(),
        uri.as_bytes(),
        uri.is_sip(),
    );
    let _ = (uri.param_value("transport"), uri.param_value("rbt"));
    let _ = uri.has_param("lr");
}

/// `parse_message`: `Message::parse`, every accessor, `validate_request`, and the two ways
/// Roundabout builds answers of its own. Oracle: each answer parses as the 400 it is (a
/// salvaged one: 505 when the request line names another SIP version, RFC 3261 §21.5.6), with
/// a Via a client can match (RFC 3261 §8.2.6.2).
pub fn parse_message(data: &[u8]) {
    match Message::parse(Bytes::copy_from_slice(data)) {
        Ok(msg) => {
            touch_everything(&msg);
            if msg.is_request() {
                let _ = msg.validate_request();
                let answer = reply::response(&msg, 400, "Bad Request", "rb0");
                let parsed = Message::parse(answer.to_contiguous())
                    .unwrap_or_else(|e| panic!("our answer does not parse: {e}"));
                assert_eq!(parsed.status_code(), Some(400));
            }
        }
        Err(_) => {
            if let Some(answer) = reply::salvage_bad_request(data, "Bad Request") {
                let parsed = Message::parse(answer.to_contiguous())
                    .unwrap_or_else(|e| panic!("our salvaged 400 does not parse: {e}"));
                let request_line = data
                    .split(|&b| b == b'\n')
                    .find(|l| !l.is_empty() && *l != b"\r");
                let sip_2 = request_line
                    .is_some_and(|l| l.ends_with(b" SIP/2.0") || l.ends_with(b" SIP/2.0\r"));
                assert_eq!(parsed.status_code(), Some(if sip_2 { 400 } else { 505 }));
                assert!(parsed.top_via().is_ok(), "salvaged 400 without a valid Via");
            }
        }
    }
}

/// Frames `stream` read `chunk` bytes at a time: the frames, and whether framing failed.
fn frames(stream: &[u8], chunk: usize, max: usize) -> (Vec<Frame>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec::frame(&mut buf, max) {
                Ok(Some(frame)) => {
                    if let Frame::Message(message) = &frame {
                        assert!(message.len() <= max, "frame of {} > {max}", message.len());
                        let _ = Message::parse(message.clone());
                    }
                    out.push(frame);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// `stream_framer`: one control byte (read size and size cap), then a TCP byte stream.
/// Oracles: no frame larger than the cap; the frames and the failure do not depend on how the
/// stream was cut into reads.
pub fn stream_framer(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let max = 64 + usize::from(control) * 4;
    let chunk = 1 + usize::from(control % 61);
    let whole = frames(stream, stream.len().max(1), max);
    let chunked = frames(stream, chunk, max);
    assert_eq!(
        whole, chunked,
        "framing depends on read boundaries (chunk {chunk})"
    );
}

const SOURCES: [&str; 4] = [
    "127.0.0.3:5070",   // a client
    "127.0.0.2:5080",   // a trusted server (its Contacts may be dialled back)
    "[::1]:5070",       // the IPv6 trusted server
    "192.0.2.33:40000", // anyone
];

const TRANSPORTS: [Transport; 5] = [
    Transport::Udp,
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
];

/// `proxy_rewrite`: one control byte (the flow the message came from, the transport it leaves
/// on), then the message; route and rewrite as the handler would. Oracles: what Roundabout
/// would send parses; a forwarded request still validates, keeps its body (and its start
/// line unless the route replaces the R-URI), has our Via on top and Contacts whose tokens
/// give back the Contacts they replaced; a forwarded response lost exactly our Via.
pub fn proxy_rewrite(data: &[u8]) {
    let Some((&control, message)) = data.split_first() else {
        return;
    };
    let remote: SocketAddr = SOURCES[usize::from(control & 3)].parse().expect("address");
    let source = FlowKey {
        transport: TRANSPORTS[usize::from(control >> 2) % 5],
        remote,
    };
    let egress = TRANSPORTS[usize::from(control >> 5) % 5];
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(message)) else {
        return;
    };
    touch_everything(&msg);
    if msg.is_request() {
        check_forwarded_request(router(), rewriter(), &msg, &source, egress);
    } else {
        check_forwarded_response(router(), rewriter(), &msg, &source);
    }
}

fn check_forwarded_request(
    router: &Router,
    rewriter: &Rewriter,
    msg: &Message,
    source: &FlowKey,
    egress: Transport,
) {
    if msg.validate_request().is_err() {
        return;
    }
    let RequestAction::Forward(forward) = router.route_request(msg, source, Instant::now()) else {
        return;
    };
    let remote = match &forward.next {
        NextHop::Flow(dest) => dest.flow.remote,
        NextHop::Resolve { .. } => source.remote,
    };
    let dest = FlowKey {
        transport: egress,
        remote,
    };
    let stateful = needs_transaction(msg.method(), source.transport, egress);
    let Ok((out, _branch)) = rewriter.rewrite_request(
        msg,
        source,
        None,
        &forward,
        &dest,
        OwnVia {
            stateful,
            params: b"",
        },
    ) else {
        return;
    };
    assert_eq!(out.body, msg.body(), "rewrite changed the body");
    let sent = Message::parse(out.to_contiguous())
        .unwrap_or_else(|e| panic!("forwarded request does not parse: {e}"));
    sent.validate_request()
        .unwrap_or_else(|e| panic!("forwarded request does not validate: {e}"));
    assert_eq!(sent.body(), msg.body(), "forwarded body differs");
    if forward.request_uri.is_none() {
        assert_eq!(
            sent.slice(sent.start_line()),
            msg.slice(msg.start_line()),
            "start line changed"
        );
    }
    let top = sent.top_via().expect("validated");
    assert!(router.is_our_via(sent.bytes(), &top), "top Via is not ours");
    assert_eq!(
        sent.values(HeaderName::Via).count(),
        msg.values(HeaderName::Via).count() + 1,
        "not exactly one Via pushed"
    );
    // Every Contact now carries a token that gives back the Contact it replaced.
    let before: Vec<_> = msg.contacts().collect();
    let after: Vec<_> = sent.contacts().collect();
    assert_eq!(before.len(), after.len(), "Contact count changed");
    for (old, new) in before.into_iter().zip(after) {
        let (Ok(old), Ok(new)) = (old, new) else {
            continue;
        };
        let uri = new
            .parsed_uri(sent.bytes())
            .unwrap_or_else(|e| panic!("rewritten Contact URI: {e}"));
        let token = uri
            .param_value(token::PARAM)
            .expect("rewritten Contact without a token");
        let decoded = token_key()
            .decode(token)
            .expect("our own token does not decode");
        let old_uri = msg.slice(old.uri);
        let kept_as_it_was = old_uri == sent.slice(new.uri);
        assert!(
            kept_as_it_was || decoded.original_uri == old_uri,
            "token does not give back the original Contact"
        );
    }
}

fn check_forwarded_response(router: &Router, rewriter: &Rewriter, msg: &Message, source: &FlowKey) {
    // Only a response whose branch verifies for `source` gets this far (rarely, from fuzzing).
    let ResponseAction::Forward(dest) = router.route_response(msg, source) else {
        return;
    };
    let Ok((out, _registrations)) = rewriter.rewrite_response(msg, source, None, &dest.flow) else {
        return;
    };
    let sent = Message::parse(out.to_contiguous())
        .unwrap_or_else(|e| panic!("forwarded response does not parse: {e}"));
    assert_eq!(sent.status_code(), msg.status_code());
    assert_eq!(sent.body(), msg.body(), "forwarded body differs");
    assert_eq!(
        sent.values(HeaderName::Via).count() + 1,
        msg.values(HeaderName::Via).count(),
        "not exactly our Via popped"
    );
}

struct WsSetup {
    runtime: tokio::runtime::Runtime,
    proxy: Proxy,
}

fn ws_setup() -> &'static WsSetup {
    static SETUP: OnceLock<WsSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let config = config(&["-udp-port", "off", "-tcp-port", "off", "-ws-port", "off"]);
        let transports = runtime
            .block_on(Transports::bind(&config))
            .expect("binding nothing cannot fail");
        let router = Router::new(&config, vec![(Transport::Ws, 5066), (Transport::Udp, 5060)]);
        // Both flood limits off (0): every input comes from one source, and a limited one would
        // only ever reach the rate limiter.
        let proxy = Proxy::new(
            router,
            Arc::new(transports.senders()),
            SourceLimiter::new(0),
            OverloadGuard::new(0),
            Transactions::new(config.sip_timers, config.transaction_limits),
            // Counting on, so that what counts the decisions is fuzzed with them.
            Counting::On(Arc::default()),
            Services {
                resolver: Resolver::new(None, Transport::Tcp, Usable { udp: true })
                    .expect("a resolver without DNS servers still builds"),
                media: None,
            },
        );
        WsSetup { runtime, proxy }
    })
}

/// `ws_message`: what `transport::ws` does with a text or binary frame (drop a CRLF keep-alive,
/// else hand it to the handler), into the real `Proxy` — parse, validate, salvage or answer,
/// route, rewrite, send. The transports are bound with every listener off and the trusted
/// servers are UDP only, so every send fails cleanly (`Unavailable`, `NoFlow`) and nothing
/// reaches the network. Oracle: no panic.
pub fn ws_message(data: &[u8]) {
    if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        return;
    }
    let setup = ws_setup();
    let _context = setup.runtime.enter();
    setup.proxy.handle(Inbound {
        data: Bytes::copy_from_slice(data),
        flow: FlowKey {
            transport: Transport::Ws,
            remote: "192.0.2.44:51000".parse().expect("address"),
        },
        connection: Some(roundabout::transport::ConnectionId(1)),
    });
}

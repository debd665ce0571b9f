//! WebSocket SIP load generator for `bench/ws.sh` (not part of the shipped binary).
//!
//! Opens `--flows` WS or WSS connections (subprotocol `sip`, RFC 7118; the run fails when the
//! server does not echo it) and sends OPTIONS or MESSAGE requests for `sip:bench@<target>` at a
//! fixed total rate, round-robin over the flows, for `--warmup` + `--duration` seconds. A SIPp
//! UAS behind the proxy (`bench/scenarios/uas_options.xml`) answers each with 200.
//!
//! Every request has its own Call-ID (`wl<run>.<seq>@ws-load.invalid`) and Via branch; responses
//! are matched by Call-ID, latency is send→200 as seen by the generator. A request without a
//! final response within `--timeout-ms` is lost. Only requests sent after the warm-up count.
//!
//! With `--proxy-pid`, utime+stime of that process and its descendants (Kamailio forks
//! workers; a threaded process is covered by its own /proc/PID/stat) are sampled over the
//! measurement window: proxy CPU % (100 % = one core) and CPU µs per forwarded message, each
//! transaction being 2 messages through the proxy (request and 200).
//!
//! ```text
//! cargo run --release --example ws_load -- --url ws://127.0.0.1:5066/ --target 127.0.0.2:5080 \
//!     --flows 100 --rate 2000 --duration 10 --method OPTIONS --proxy-pid "$PID"
//! cargo run --release --example ws_load -- --url wss://127.0.0.1:7443/ --ca ca.pem ...
//! ```
//! Output: a human summary, then one `RESULT key=value ...` line for scripts.
//!
//! The generator runs on one thread (a current-thread runtime) so that it stays light next to
//! the proxy; pacing is a `tokio::time::interval` tick that sends whatever the rate makes due.
//!
//! `--mode idle` (`bench/idle.sh`) measures memory per idle flow instead: the `--proxy-pid`
//! process and its descendants are sampled (VmRSS from /proc/PID/status, Pss from
//! /proc/PID/smaps_rollup, summed) before any connection; then `--flows` flows connect
//! (`--connect-parallel` at once, 10 s each, all within `--setup-timeout`) and each sends one
//! REGISTER for `sip:idle<N>@<target host>` to `sip:<target>`, shaped like JsSIP's (`.invalid`
//! Via and Contact hosts, `transport=ws`, `Expires: --expires`); the 2xx answers are counted and
//! the proxy sampled again; the flows then stay open and silent (pings from the proxy are
//! answered) for `--hold` s, with the "after" sample at `--settle` s and a last one at the end.
//! Reported: (after − before) / registered flows in KiB, for RSS and PSS, and the generator's
//! own RSS per flow (one task per flow, one shared rustls `ClientConfig`).
//! ```text
//! ws_load --mode idle --url wss://127.0.0.1:7443/ --ca ca.pem --target 127.0.0.2:5080 \
//!     --flows 10000 --sources 10 --settle 10 --hold 20 --proxy-pid "$PID"
//! ```
//! Last line: `RESULT mode=idle ... registered=… proxy_rss_before_kib=… proxy_rss_after_kib=…
//! kib_per_flow_rss=… kib_per_flow_pss=… gen_kib_per_flow=…`; exit 1 unless every flow registered.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Upper bounds that keep every run finite and its bookkeeping small.
const MAX_DURATION_S: u64 = 3600;
const MAX_REQUESTS: u64 = 20_000_000;
const MAX_FLOWS: usize = 60_000;
/// Linux USER_HZ (the unit of utime/stime in /proc/PID/stat) is 100 on every architecture.
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// Requests queued per flow in the generator before sends to it count as local drops.
const FLOW_QUEUE: usize = 256;

/// What the generator does with its flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// OPTIONS or MESSAGE at a fixed total rate (`--rate`, `--duration`)
    Load,
    /// One REGISTER per flow, then every flow held open and silent (`--hold`) while the
    /// proxy's memory is sampled
    Idle,
}

#[derive(Parser, Debug)]
#[command(
    about = "WebSocket SIP load generator (OPTIONS/MESSAGE at a rate, or idle registered flows) for Roundabout benchmarks"
)]
struct Args {
    /// load: requests at a fixed rate; idle: REGISTER once per flow, then hold the flows idle
    #[arg(long, value_enum, default_value_t = Mode::Load)]
    mode: Mode,
    /// ws://host:port/path or wss://host:port/path of the proxy
    #[arg(long)]
    url: String,
    /// PEM file of the CA(s) that signed the proxy's certificate (wss; default: system roots)
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Concurrent WebSocket flows
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Total requests per second, spread round-robin over the flows
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured seconds of sending (after the warm-up)
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of sending at the same rate before measuring starts
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// OPTIONS or MESSAGE
    #[arg(long, default_value = "OPTIONS", value_parser = ["OPTIONS", "MESSAGE"])]
    method: String,
    /// host:port of the UAS; the R-URI is sip:bench@<target>
    #[arg(long, default_value = "127.0.0.2:5080")]
    target: String,
    /// Measure the CPU time of this process (and its descendants) over the window
    #[arg(long)]
    proxy_pid: Option<u32>,
    /// A request without a final response within this many ms is lost
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// MESSAGE body size in bytes
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Spread flows over this many source addresses 127.0.1.1..127.0.1.N (0: let the kernel
    /// choose, i.e. 127.0.0.1); per-source limits of the proxy then see N clients
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=254))]
    sources: u8,
    /// Pacing tick in ms: each tick sends every request the rate has made due
    #[arg(long, default_value_t = 2)]
    tick_ms: u64,
    /// Connections being opened at once
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// idle: seconds every flow stays open and silent after the last REGISTER is answered
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// idle: seconds after the last REGISTER answer at which the "after" memory sample is
    /// taken (at most --hold; a last sample is taken at the end of the hold)
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// idle: Expires of each REGISTER (header and Contact parameter)
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// idle: seconds allowed for connecting and registering every flow; flows not registered
    /// by then are given up
    #[arg(long, default_value_t = 300)]
    setup_timeout: u64,
}

/// The parts of `--url` the generator needs.
#[derive(Clone, Debug)]
struct Endpoint {
    secure: bool,
    host: String,
    port: u16,
    url: String,
}

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(format!("--url {url}: must start with ws:// or wss://"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--url {url}: unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| format!("--url {url}: bad port {port}"))?,
        None if secure => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("--url {url}: no host"));
    }
    let url = if authority.len() == rest.len() {
        format!("{url}/")
    } else {
        url.to_owned()
    };
    Ok(Endpoint {
        secure,
        host: host.to_owned(),
        port,
        url,
    })
}

/// Per-request bookkeeping, indexed by sequence number. One thread touches it, so the atomics
/// are uncontended; they only make the shared tables `Sync` for `tokio::spawn`.
struct Book {
    t0: Instant,
    run: u32,
    /// Nanoseconds from `t0` to the send, plus one; 0: not sent.
    sent_ns: Vec<AtomicU64>,
    /// Send→final response in µs, plus one; 0: no final response (yet).
    latency_us: Vec<AtomicU32>,
    /// Final status code; 0: none yet.
    status: Vec<AtomicU16>,
    timeout_ns: u64,
    /// Final responses that came after the timeout (counted as lost).
    late: AtomicU64,
    /// Frames that are not responses to our requests.
    unmatched: AtomicU64,
    /// Flows that closed or failed while the run was going.
    flows_closed: AtomicU64,
}

impl Book {
    /// A book for `slots` requests, its Call-IDs marked with a run id of this process and time.
    fn new(slots: usize, timeout_ms: u64) -> Book {
        let run = (std::process::id() << 12)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        Book {
            t0: Instant::now(),
            run,
            sent_ns: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            latency_us: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            status: (0..slots).map(|_| AtomicU16::new(0)).collect(),
            timeout_ns: timeout_ms.saturating_mul(1_000_000),
            late: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            flows_closed: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a frame received on a flow: a final response to one of our requests, or noise.
    fn on_frame(&self, data: &[u8]) {
        let Some((code, seq)) = self.parse_response(data) else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if code < 200 {
            return;
        }
        let Some(sent) = self.sent_ns.get(seq).map(|s| s.load(Ordering::Relaxed)) else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if sent == 0 {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let elapsed = self.now_ns().saturating_sub(sent - 1);
        if elapsed > self.timeout_ns {
            self.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The first final response wins; a retransmitted one changes nothing.
        if self.status[seq]
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let us = u32::try_from(elapsed / 1000).unwrap_or(u32::MAX - 1);
            self.latency_us[seq].store(us + 1, Ordering::Relaxed);
        }
    }

    /// `SIP/2.0 <code> ...` with our Call-ID → (code, sequence number).
    fn parse_response(&self, data: &[u8]) -> Option<(u16, usize)> {
        let code = data.strip_prefix(b"SIP/2.0 ")?.get(..3)?;
        let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
        let call_id = header(data, b"call-id", b"i")?;
        let rest = call_id.strip_prefix(b"wl")?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let run = u32::from_str_radix(std::str::from_utf8(&rest[..dot]).ok()?, 16).ok()?;
        if run != self.run {
            return None;
        }
        let digits = &rest[dot + 1..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        let seq = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        Some((code, seq))
    }
}

/// The trimmed value of the first header named `long` or `compact` (case-insensitive).
fn header<'a>(data: &'a [u8], long: &[u8], compact: &[u8]) -> Option<&'a [u8]> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    for line in data[..head_end].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(compact) {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// The bytes of request `seq`, sent on flow `flow`.
struct RequestTemplate {
    method: &'static str,
    via_transport: &'static str,
    target: String,
    run: u32,
    body: String,
}

impl RequestTemplate {
    fn build(&self, seq: u64, flow: usize) -> String {
        let Self {
            method,
            via_transport,
            target,
            run,
            body,
        } = self;
        let mut msg = String::with_capacity(512 + body.len());
        // RFC 7118 §5: a WebSocket client puts a random .invalid host in its Via.
        let _ = write!(
            msg,
            "{method} sip:bench@{target} SIP/2.0\r\n\
             Via: SIP/2.0/{via_transport} f{flow}.ws-load.invalid;branch=z9hG4bK{run:x}x{seq}\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:bench@{target}>\r\n\
             From: <sip:load{flow}@ws-load.invalid>;tag={run:x}t{flow}\r\n\
             Call-ID: wl{run:x}.{seq}@ws-load.invalid\r\n\
             CSeq: 1 {method}\r\n\
             User-Agent: roundabout-ws-load\r\n"
        );
        if body.is_empty() {
            msg.push_str("Content-Length: 0\r\n\r\n");
        } else {
            let _ = write!(
                msg,
                "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        msg
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connected WebSocket flow (plain or over TLS).
type Flow = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Connects TCP (from 127.0.1.x with `--sources`), TLS for wss, then the WebSocket handshake
/// offering `sip`; fails unless the server echoes `sip`.
async fn connect_ws(
    index: usize,
    endpoint: &Endpoint,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    sources: u8,
) -> Result<Flow, String> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if sources > 0 {
        let host = u8::try_from(index % usize::from(sources)).unwrap_or(0) + 1;
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)), 0);
        socket
            .bind(local)
            .map_err(|e| format!("bind {local}: {e}"))?;
    }
    let tcp: TcpStream = socket
        .connect(remote)
        .await
        .map_err(|e| format!("connect {remote}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match tls {
        Some(connector) => {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("server name {}: {e}", endpoint.host))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            )
        }
        None => Box::new(tcp),
    };
    let mut request = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("url: {e}"))?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    // Small read buffers: tungstenite's default (128 KiB) times 1000+ flows adds up.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let echoed = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if !echoed.is_some_and(|v| v.trim().eq_ignore_ascii_case("sip")) {
        return Err(format!(
            "server did not accept the sip subprotocol (Sec-WebSocket-Protocol: {echoed:?})"
        ));
    }
    Ok(ws)
}

/// Opens one WebSocket flow and starts its reader and writer tasks; returns its send queue.
async fn open_flow(
    index: usize,
    endpoint: Endpoint,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    sources: u8,
    book: Arc<Book>,
) -> Result<mpsc::Sender<String>, String> {
    let ws = connect_ws(index, &endpoint, remote, tls, sources).await?;
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(FLOW_QUEUE);
    let reader_book = Arc::clone(&book);
    tokio::spawn(async move {
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(Message::Text(text)) => reader_book.on_frame(text.as_bytes()),
                Ok(Message::Binary(data)) => reader_book.on_frame(&data),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        reader_book.flows_closed.fetch_add(1, Ordering::Relaxed);
    });
    tokio::spawn(async move {
        // Whatever queued while writing goes out in one flush (one write, one TLS record).
        while let Some(msg) = rx.recv().await {
            if sink.feed(Message::text(msg)).await.is_err() {
                break;
            }
            let mut more = 0;
            while more < 64 {
                let Ok(msg) = rx.try_recv() else { break };
                if sink.feed(Message::text(msg)).await.is_err() {
                    return;
                }
                more += 1;
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    Ok(tx)
}

async fn resolve(endpoint: &Endpoint) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("{}: {e}", endpoint.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", endpoint.host))
}

/// One shared client configuration serves every flow (10,000 TLS clients in one process).
/// The TLS connector a `wss://` endpoint needs; `None` for `ws://`.
fn endpoint_tls(
    endpoint: &Endpoint,
    ca: Option<&PathBuf>,
) -> Result<Option<tokio_rustls::TlsConnector>, String> {
    endpoint.secure.then(|| tls_connector(ca)).transpose()
}

fn tls_connector(ca: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// utime+stime (clock ticks) of a process, from /proc/PID/stat.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `pid` and every descendant process (Kamailio's workers are forked children).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..))
                .and_then(|rest| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < 10_000 {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    tree
}

fn tree_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| process_ticks(p)).sum()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ws_load: cannot start the runtime: {error}");
            std::process::exit(2);
        }
    };
    let outcome = match args.mode {
        Mode::Load => runtime.block_on(run(args)),
        Mode::Idle => runtime.block_on(run_idle(args)),
    };
    if let Err(error) = outcome {
        eprintln!("ws_load: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let endpoint = parse_url(&args.url)?;
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        return Err("--rate must be in (0, 1000000]".into());
    }
    if args.duration == 0 || args.duration + args.warmup > MAX_DURATION_S {
        return Err(format!(
            "--duration must be 1..{MAX_DURATION_S} s including the warm-up"
        ));
    }
    if args.flows == 0 || args.flows > MAX_FLOWS {
        return Err(format!("--flows must be 1..{MAX_FLOWS}"));
    }
    let total = (args.rate * (args.warmup + args.duration) as f64).round() as u64;
    let first_measured = (args.rate * args.warmup as f64).round() as u64;
    if total > MAX_REQUESTS {
        return Err(format!(
            "rate × (warmup + duration) = {total} requests: more than {MAX_REQUESTS}"
        ));
    }
    let remote = resolve(&endpoint).await?;
    let tls = endpoint_tls(&endpoint, args.ca.as_ref())?;

    let total_slots = usize::try_from(total).map_err(|_| "too many requests")?;
    let book = Arc::new(Book::new(total_slots, args.timeout_ms));

    // ---- connect every flow (bounded parallelism, each within 10 s)
    let connect_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    for index in 0..args.flows {
        let (endpoint, tls, book, permits) = (
            endpoint.clone(),
            tls.clone(),
            Arc::clone(&book),
            Arc::clone(&permits),
        );
        let sources = args.sources;
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let opened = tokio::time::timeout(
                Duration::from_secs(10),
                open_flow(index, endpoint, remote, tls, sources, book),
            )
            .await
            .unwrap_or_else(|_| Err("connect timed out after 10 s".into()));
            (index, opened)
        });
    }
    let mut flows: Vec<Option<mpsc::Sender<String>>> = vec![None; args.flows];
    let mut first_error = None;
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok((index, Ok(tx))) => flows[index] = Some(tx),
            Ok((index, Err(error))) => {
                first_error.get_or_insert(format!("flow {index}: {error}"));
            }
            Err(error) => {
                first_error.get_or_insert(format!("connect task: {error}"));
            }
        }
    }
    if let Some(error) = first_error {
        let open = flows.iter().flatten().count();
        return Err(format!("{open}/{} flows opened; {error}", args.flows));
    }
    let flows: Vec<mpsc::Sender<String>> = flows.into_iter().flatten().collect();
    let connect_s = connect_start.elapsed().as_secs_f64();

    let (host_port, via_transport) = (
        args.target.clone(),
        if endpoint.secure { "WSS" } else { "WS" },
    );
    let template = RequestTemplate {
        method: if args.method == "MESSAGE" {
            "MESSAGE"
        } else {
            "OPTIONS"
        },
        via_transport,
        target: host_port,
        run: book.run,
        body: if args.method == "MESSAGE" {
            "x".repeat(args.body)
        } else {
            String::new()
        },
    };
    let proxy_tree = args.proxy_pid.map(process_tree);
    let self_pid = std::process::id();
    println!(
        "ws_load: {} {} -> sip:bench@{}, {} flows (opened in {:.2} s), {} req/s for {} s after {} s warm-up{}",
        endpoint.url,
        template.method,
        args.target,
        flows.len(),
        connect_s,
        args.rate,
        args.duration,
        args.warmup,
        match &proxy_tree {
            Some(tree) => format!(", proxy pid {} ({} processes)", tree[0], tree.len()),
            None => String::new(),
        }
    );

    // ---- send at the fixed rate
    let mut tick = tokio::time::interval(Duration::from_millis(args.tick_ms.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let send_start = Instant::now();
    let send_deadline = Duration::from_secs(args.warmup + args.duration + 5);
    let mut seq: u64 = 0;
    let mut local_drops: u64 = 0;
    let mut window: Option<(Instant, u64, u64)> = None; // (start, proxy ticks, own ticks)
    while seq < total && send_start.elapsed() < send_deadline {
        tick.tick().await;
        // Request k is due at k / rate: the first at once, the last one period before the end.
        let due = ((send_start.elapsed().as_secs_f64() * args.rate) as u64 + 1).min(total);
        while seq < due {
            if seq == first_measured && window.is_none() {
                window = Some((
                    Instant::now(),
                    proxy_tree.as_deref().map(tree_ticks).unwrap_or(0),
                    process_ticks(self_pid).unwrap_or(0),
                ));
            }
            let flow = usize::try_from(seq).unwrap_or(0) % flows.len();
            let msg = template.build(seq, flow);
            let slot = usize::try_from(seq).unwrap_or(usize::MAX);
            book.sent_ns[slot].store(book.now_ns() + 1, Ordering::Relaxed);
            if flows[flow].try_send(msg).is_err() {
                book.sent_ns[slot].store(0, Ordering::Relaxed);
                local_drops += 1;
            }
            seq += 1;
        }
    }
    // The window is the nominal one (warm-up end to warm-up + duration): the last period's
    // answers and the proxy's work on them fall inside it.
    tokio::time::sleep_until(
        (send_start + Duration::from_secs(args.warmup + args.duration)).into(),
    )
    .await;
    let window_end = Instant::now();
    let proxy_ticks_end = proxy_tree.as_deref().map(tree_ticks).unwrap_or(0);
    let own_ticks_end = process_ticks(self_pid).unwrap_or(0);
    let (window_start, proxy_ticks_start, own_ticks_start) =
        window.unwrap_or((window_end, proxy_ticks_end, own_ticks_end));
    let window_s = window_end.duration_since(window_start).as_secs_f64();

    // ---- wait (bounded by the timeout) for the last answers
    let range = usize::try_from(first_measured).unwrap_or(0)..usize::try_from(seq).unwrap_or(0);
    let drain_deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let finished = |i: usize| {
        book.sent_ns[i].load(Ordering::Relaxed) == 0 || book.status[i].load(Ordering::Relaxed) != 0
    };
    // Everything before `cursor` is answered (or was never sent); each request is looked at
    // about once however long the wait.
    let mut cursor = range.start;
    while Instant::now() < drain_deadline {
        while cursor < range.end && finished(cursor) {
            cursor += 1;
        }
        if cursor == range.end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // ---- tally the measured requests
    let (mut sent, mut answered, mut failed, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut failed_code = 0;
    let mut latencies = Vec::with_capacity(range.len());
    for i in range.clone() {
        if book.sent_ns[i].load(Ordering::Relaxed) == 0 {
            continue;
        }
        sent += 1;
        match book.status[i].load(Ordering::Relaxed) {
            0 => lost += 1,
            200..=299 => {
                answered += 1;
                latencies.push(book.latency_us[i].load(Ordering::Relaxed).saturating_sub(1));
            }
            code => {
                failed += 1;
                failed_code = code;
            }
        }
    }
    latencies.sort_unstable();
    let (p50, p90, p99) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
    );
    let max = latencies.last().copied().unwrap_or(0);
    let achieved = if window_s > 0.0 {
        sent as f64 / window_s
    } else {
        0.0
    };
    let pct = |ticks: u64| {
        if window_s > 0.0 {
            100.0 * ticks as f64 / CLOCK_TICKS_PER_S / window_s
        } else {
            0.0
        }
    };
    let own_cpu = pct(own_ticks_end.saturating_sub(own_ticks_start));
    let lost_pct = if sent > 0 {
        100.0 * lost as f64 / sent as f64
    } else {
        0.0
    };

    println!(
        "  sent {sent}  answered(2xx) {answered}  failed(non-2xx) {failed}{}  lost(>{} ms) {lost} ({lost_pct:.2}%)  achieved {achieved:.1} req/s over {window_s:.2} s",
        if failed > 0 { format!(" (last {failed_code})") } else { String::new() },
        args.timeout_ms,
    );
    println!("  latency send->200 (us): p50 {p50}  p90 {p90}  p99 {p99}  max {max}");
    let mut result = format!(
        "RESULT url={} transport={} method={} flows={} rate={} duration={} sent={sent} answered={answered} failed={failed} lost={lost} lost_pct={lost_pct:.3} achieved_rps={achieved:.1} p50_us={p50} p90_us={p90} p99_us={p99} max_us={max}",
        endpoint.url,
        if endpoint.secure { "wss" } else { "ws" },
        template.method,
        flows.len(),
        args.rate,
        args.duration,
    );
    if let Some(tree) = &proxy_tree {
        let cpu = pct(proxy_ticks_end.saturating_sub(proxy_ticks_start));
        let messages = 2 * answered;
        let us_per_msg = if messages > 0 {
            cpu / 100.0 * window_s * 1e6 / messages as f64
        } else {
            0.0
        };
        println!(
            "  proxy pid {} (+{} descendants): CPU {cpu:.1} % of one core, {us_per_msg:.2} us CPU per forwarded message (2 per transaction)",
            tree[0],
            tree.len() - 1
        );
        let _ = write!(result, " proxy_cpu_pct={cpu:.1} us_per_msg={us_per_msg:.2}");
    }
    let (late, unmatched, closed) = (
        book.late.load(Ordering::Relaxed),
        book.unmatched.load(Ordering::Relaxed),
        book.flows_closed.load(Ordering::Relaxed),
    );
    println!(
        "  generator CPU {own_cpu:.1} %  local queue drops {local_drops}  late answers {late}  unmatched frames {unmatched}  flows closed during run {closed}"
    );
    let _ = write!(
        result,
        " gen_cpu_pct={own_cpu:.1} local_drops={local_drops} late={late} unmatched={unmatched} flows_closed={closed}"
    );
    println!("{result}");
    drop(flows); // closes every writer, which sends a Close frame
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

// ---------------------------------------------------------------- idle mode

/// Connecting one flow (TCP, TLS, WebSocket handshake) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Closing every flow at the end of an idle run is given this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The REGISTER of idle flow `flow`, shaped like JsSIP's: a `.invalid` Via host and Contact
/// host, `transport=ws`, outbound/ICE Contact parameters, Expires in the header and in the
/// Contact. Its Call-ID carries the flow number, so `Book` matches the answer to the flow.
fn register_request(
    registrar: &str,
    via_transport: &str,
    run: u32,
    flow: usize,
    expires: u32,
) -> String {
    let domain = registrar
        .rsplit_once(':')
        .map_or(registrar, |(host, _)| host);
    format!(
        "REGISTER sip:{registrar} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} f{flow}.ws-load.invalid;branch=z9hG4bK{run:x}r{flow}\r\n\
         Max-Forwards: 69\r\n\
         To: <sip:idle{flow}@{domain}>\r\n\
         From: <sip:idle{flow}@{domain}>;tag={run:x}t{flow}\r\n\
         Call-ID: wl{run:x}.{flow}@ws-load.invalid\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:idle{flow}@f{flow}.ws-load.invalid;transport=ws>;+sip.ice;reg-id=1;\
         +sip.instance=\"<urn:uuid:00000000-0000-4000-8000-{flow:012x}>\";expires={expires}\r\n\
         Expires: {expires}\r\n\
         Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
         Supported: path,gruu,outbound\r\n\
         User-Agent: roundabout-ws-load\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// How the set-up of one idle flow ended.
enum Setup {
    /// 2xx to the REGISTER.
    Registered,
    /// A final non-2xx answer.
    Refused(u16),
    /// No final answer within `--timeout-ms`.
    Unanswered,
    /// The flow could not be opened, or closed before the answer.
    Failed(String),
}

/// Everything one idle flow needs; shared by all flows.
struct IdleShared {
    endpoint: Endpoint,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    sources: u8,
    registrar: String,
    expires: u32,
    book: Arc<Book>,
    answer_timeout: Duration,
    permits: Semaphore,
    /// Cancelled when the set-up time is over: flows still connecting give up.
    setup_over: tokio_util::sync::CancellationToken,
    /// Cancelled at the end of the hold: every flow closes.
    stop: tokio_util::sync::CancellationToken,
}

/// One idle flow: connect (at most `--connect-parallel` at once), REGISTER, report the
/// outcome, then read (tungstenite answers the proxy's pings) until `stop`, then close.
async fn idle_flow(index: usize, shared: Arc<IdleShared>, report: mpsc::Sender<Setup>) {
    let setup = async {
        let connected = {
            let _permit = shared.permits.acquire().await;
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect_ws(
                    index,
                    &shared.endpoint,
                    shared.remote,
                    shared.tls.clone(),
                    shared.sources,
                ),
            )
            .await
            .unwrap_or_else(|_| Err("connect timed out after 10 s".into()))
        };
        let mut ws = connected?;
        let via = if shared.endpoint.secure { "WSS" } else { "WS" };
        let register = register_request(
            &shared.registrar,
            via,
            shared.book.run,
            index,
            shared.expires,
        );
        let book = &shared.book;
        book.sent_ns[index].store(book.now_ns() + 1, Ordering::Relaxed);
        ws.send(Message::text(register))
            .await
            .map_err(|e| format!("send REGISTER: {e}"))?;
        let deadline = tokio::time::Instant::now() + shared.answer_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Ok((ws, Setup::Unanswered)),
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => return Err(format!("closed before the answer: {e}")),
                Ok(None) => return Err("closed before the answer".into()),
            };
            match frame {
                Message::Text(text) => book.on_frame(text.as_bytes()),
                Message::Binary(data) => book.on_frame(&data),
                Message::Close(_) => return Err("closed by the proxy before the answer".into()),
                _ => continue,
            }
            match book.status[index].load(Ordering::Relaxed) {
                0 => {}
                200..=299 => return Ok((ws, Setup::Registered)),
                code => return Ok((ws, Setup::Refused(code))),
            }
        }
    };
    let setup = tokio::select! {
        () = shared.setup_over.cancelled() => Err("not registered within --setup-timeout".into()),
        setup = setup => setup,
    };
    let mut ws = match setup {
        Ok((ws, outcome)) => {
            let keep = matches!(outcome, Setup::Registered);
            let _ = report.send(outcome).await;
            if !keep {
                return;
            }
            ws
        }
        Err(error) => {
            let _ = report.send(Setup::Failed(error)).await;
            return;
        }
    };
    drop(report);
    let book = &shared.book;
    let closed_early = tokio::select! {
        () = shared.stop.cancelled() => false,
        () = async {
            while let Some(Ok(frame)) = ws.next().await {
                match frame {
                    Message::Text(text) => book.on_frame(text.as_bytes()),
                    Message::Binary(data) => book.on_frame(&data),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        } => true,
    };
    if closed_early {
        book.flows_closed.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
}

/// A `Name:   1234 kB` field of a /proc file, in KiB (0 when absent).
fn proc_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a set of processes, KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    /// VmRSS summed (memory shared between the processes counted once per process).
    rss: u64,
    /// Pss summed (shared pages split between their users: the set's real share).
    pss: u64,
    processes: usize,
}

/// VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of `pid` and its descendants.
fn memory_of_tree(pid: u32) -> Memory {
    let mut memory = Memory::default();
    for p in process_tree(pid) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        memory.rss += proc_kib(&status, "VmRSS:");
        memory.processes += 1;
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            memory.pss += proc_kib(&rollup, "Pss:");
        }
    }
    memory
}

fn own_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| proc_kib(&status, "VmRSS:"))
        .unwrap_or(0)
}

/// KiB per flow between two samples.
fn per_flow(before: u64, after: u64, flows: usize) -> f64 {
    if flows == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) / flows as f64
}

async fn run_idle(args: Args) -> Result<(), String> {
    let endpoint = parse_url(&args.url)?;
    if args.flows == 0 || args.flows > MAX_FLOWS {
        return Err(format!("--flows must be 1..{MAX_FLOWS}"));
    }
    if args.hold == 0 || args.hold > MAX_DURATION_S || args.settle > args.hold {
        return Err(format!(
            "--hold must be 1..{MAX_DURATION_S} s and --settle at most --hold"
        ));
    }
    if args.setup_timeout == 0 || args.setup_timeout > MAX_DURATION_S {
        return Err(format!("--setup-timeout must be 1..{MAX_DURATION_S} s"));
    }
    let proxy_pid = args
        .proxy_pid
        .ok_or("--mode idle needs --proxy-pid (the process whose memory is measured)")?;
    let remote = resolve(&endpoint).await?;
    let tls = endpoint_tls(&endpoint, args.ca.as_ref())?;
    let book = Arc::new(Book::new(args.flows, args.timeout_ms));
    let transport = if endpoint.secure { "wss" } else { "ws" };
    println!(
        "ws_load idle: {} REGISTER sip:{} (Expires {}), {} flows ({} connecting at once{}), then {} s idle; proxy pid {proxy_pid}",
        endpoint.url,
        args.target,
        args.expires,
        args.flows,
        args.connect_parallel.max(1),
        if args.sources > 0 {
            format!(", from 127.0.1.1..127.0.1.{}", args.sources)
        } else {
            String::new()
        },
        args.hold,
    );

    // ---- before any connection
    let before = memory_of_tree(proxy_pid);
    let gen_before = own_rss_kib();
    if before.processes == 0 {
        return Err(format!("--proxy-pid {proxy_pid}: no such process"));
    }
    println!(
        "  before:     proxy RSS {} KiB  PSS {} KiB ({} processes)  generator RSS {gen_before} KiB",
        before.rss, before.pss, before.processes
    );

    // ---- connect and register every flow
    let shared = Arc::new(IdleShared {
        endpoint: endpoint.clone(),
        remote,
        tls,
        sources: args.sources,
        registrar: args.target.clone(),
        expires: args.expires,
        book: Arc::clone(&book),
        answer_timeout: Duration::from_millis(args.timeout_ms),
        permits: Semaphore::new(args.connect_parallel.max(1)),
        setup_over: tokio_util::sync::CancellationToken::new(),
        stop: tokio_util::sync::CancellationToken::new(),
    });
    let setup_start = Instant::now();
    let (report, mut reports) = mpsc::channel::<Setup>(args.flows);
    let mut flows = JoinSet::new();
    for index in 0..args.flows {
        flows.spawn(idle_flow(index, Arc::clone(&shared), report.clone()));
    }
    drop(report);
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(args.setup_timeout);
    let (mut registered, mut refused, mut unanswered, mut failed) = (0usize, 0usize, 0usize, 0);
    let (mut refused_code, mut first_error) = (0, None);
    let mut reported = 0;
    while reported < args.flows {
        let outcome = match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => break,
            Err(_) if !shared.setup_over.is_cancelled() => {
                // Flows still connecting give up and report; those registered stay.
                shared.setup_over.cancel();
                deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
                continue;
            }
            Err(_) => break,
        };
        reported += 1;
        match outcome {
            Setup::Registered => registered += 1,
            Setup::Refused(code) => {
                refused += 1;
                refused_code = code;
            }
            Setup::Unanswered => unanswered += 1,
            Setup::Failed(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let registered_at = Instant::now();
    let at_registered = memory_of_tree(proxy_pid);
    let gen_registered = own_rss_kib();
    let mut latencies: Vec<u32> = book
        .latency_us
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|&l| l > 0)
        .map(|l| l - 1)
        .collect();
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let max = latencies.last().copied().unwrap_or(0);
    println!(
        "  registered: {registered}/{} flows in {setup_s:.1} s (refused {refused}{}, unanswered {unanswered}, failed {failed}{}); REGISTER->200 p50 {p50} us, p99 {p99} us, max {max} us",
        args.flows,
        if refused > 0 { format!(", last {refused_code}") } else { String::new() },
        match &first_error {
            Some(error) => format!(", first: {error}"),
            None => String::new(),
        },
    );
    println!(
        "              proxy RSS {} KiB  PSS {} KiB  generator RSS {gen_registered} KiB",
        at_registered.rss, at_registered.pss
    );

    // ---- idle: the "after" sample once settled, a last one at the end of the hold
    tokio::time::sleep_until((registered_at + Duration::from_secs(args.settle)).into()).await;
    let after = memory_of_tree(proxy_pid);
    let gen_after = own_rss_kib();
    let open_after = registered.saturating_sub(
        usize::try_from(book.flows_closed.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
    );
    println!(
        "  settled:    +{} s, {open_after} flows open: proxy RSS {} KiB  PSS {} KiB  generator RSS {gen_after} KiB",
        args.settle, after.rss, after.pss
    );
    tokio::time::sleep_until((registered_at + Duration::from_secs(args.hold)).into()).await;
    let end = memory_of_tree(proxy_pid);
    let closed = book.flows_closed.load(Ordering::Relaxed);
    println!(
        "  end:        +{} s, {} flows open: proxy RSS {} KiB  PSS {} KiB",
        args.hold,
        registered.saturating_sub(usize::try_from(closed).unwrap_or(usize::MAX)),
        end.rss,
        end.pss
    );

    // ---- per flow: growth from before any connection to the settled sample, over the flows
    // that were registered (and are still open)
    // A proxy that died (no process left at the sample) or no open flow: nothing to divide.
    let proxy_gone = after.processes == 0;
    let kib = |before: u64, after: u64, valid: bool| {
        if valid && open_after > 0 {
            format!("{:.2}", per_flow(before, after, open_after))
        } else {
            "n/a".to_owned()
        }
    };
    let (rss_per_flow, pss_per_flow, gen_per_flow) = (
        kib(before.rss, after.rss, !proxy_gone),
        kib(before.pss, after.pss, !proxy_gone),
        kib(gen_before, gen_after, true),
    );
    if proxy_gone {
        println!("  the proxy (pid {proxy_pid}) is gone: no per-flow figure");
    }
    println!(
        "  per registered idle flow: proxy RSS {rss_per_flow} KiB  PSS {pss_per_flow} KiB  (settled - before) / {open_after}; generator {gen_per_flow} KiB"
    );
    println!(
        "RESULT mode=idle url={} transport={transport} flows={} registered={registered} refused={refused} unanswered={unanswered} failed={failed} closed_during_hold={closed} setup_s={setup_s:.1} register_p50_us={p50} register_p99_us={p99} settle_s={} hold_s={} proxy_processes={} proxy_rss_before_kib={} proxy_rss_registered_kib={} proxy_rss_after_kib={} proxy_rss_end_kib={} proxy_pss_before_kib={} proxy_pss_registered_kib={} proxy_pss_after_kib={} proxy_pss_end_kib={} kib_per_flow_rss={rss_per_flow} kib_per_flow_pss={pss_per_flow} gen_rss_before_kib={gen_before} gen_rss_after_kib={gen_after} gen_kib_per_flow={gen_per_flow} late={} unmatched={}",
        endpoint.url,
        args.flows,
        args.settle,
        args.hold,
        after.processes,
        before.rss,
        at_registered.rss,
        after.rss,
        end.rss,
        before.pss,
        at_registered.pss,
        after.pss,
        end.pss,
        book.late.load(Ordering::Relaxed),
        book.unmatched.load(Ordering::Relaxed),
    );

    // ---- close every flow (bounded)
    shared.stop.cancel();
    let closing = async { while flows.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        flows.abort_all();
    }
    if registered < args.flows {
        return Err(format!("only {registered}/{} flows registered", args.flows));
    }
    Ok(())
}

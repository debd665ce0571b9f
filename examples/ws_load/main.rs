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
//!
//! One module per concern: `flow` (where the flows go and how one connects), `book` (what each
//! request did), `procfs` (the proxy's CPU and memory), and one per mode, `load` and `idle`.

mod book;
mod flow;
mod idle;
mod load;
mod procfs;

use std::path::PathBuf;

use clap::Parser;

/// Upper bounds that keep every run finite and its bookkeeping small.
const MAX_DURATION_S: u64 = 3600;
const MAX_FLOWS: usize = 60_000;

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

/// `--flows` within its bounds.
fn check_flows(flows: usize) -> Result<(), String> {
    if flows == 0 || flows > MAX_FLOWS {
        return Err(format!("--flows must be 1..{MAX_FLOWS}"));
    }
    Ok(())
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
        Mode::Load => runtime.block_on(load::run(args)),
        Mode::Idle => runtime.block_on(idle::run(args)),
    };
    if let Err(error) = outcome {
        eprintln!("ws_load: {error}");
        std::process::exit(1);
    }
}

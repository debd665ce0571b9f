//! `--mode idle`: memory per idle flow. Every flow connects and sends one REGISTER, then stays
//! open and silent while the proxy's memory is sampled.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::book::{percentile, Book};
use crate::flow::{parse_url, Target};
use crate::procfs::{memory_of_tree, own_rss_kib, Memory};
use crate::{check_flows, Args, MAX_DURATION_S};

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
    target: Target,
    registrar: String,
    expires: u32,
    book: Arc<Book>,
    answer_timeout: Duration,
    permits: Semaphore,
    /// Cancelled when the set-up time is over: flows still connecting give up.
    setup_over: CancellationToken,
    /// Cancelled at the end of the hold: every flow closes.
    stop: CancellationToken,
}

/// One idle flow: connect (at most `--connect-parallel` at once), REGISTER, report the
/// outcome, then read (tungstenite answers the proxy's pings) until `stop`, then close.
async fn idle_flow(index: usize, shared: Arc<IdleShared>, report: mpsc::Sender<Setup>) {
    let setup = async {
        let connected = {
            let _permit = shared.permits.acquire().await;
            shared.target.connect(index).await
        };
        let mut ws = connected?;
        let register = register_request(
            &shared.registrar,
            shared.target.endpoint.via_transport(),
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
            if !book.on_message(&frame) {
                return Err("closed by the proxy before the answer".into());
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
                if !book.on_message(&frame) {
                    break;
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

/// How the set-ups ended, counted as the flows report them.
#[derive(Default)]
struct Setups {
    registered: usize,
    refused: usize,
    unanswered: usize,
    failed: usize,
    /// The status of the last refusal.
    refused_code: u16,
    first_error: Option<String>,
}

impl Setups {
    /// Counts the reports of `flows` flows, for at most `setup_timeout`; then the flows still
    /// setting up are told to give up (`setup_over`) and get [`CLOSE_TIMEOUT`] to report.
    async fn collect(
        reports: &mut mpsc::Receiver<Setup>,
        flows: usize,
        setup_timeout: Duration,
        setup_over: &CancellationToken,
    ) -> Setups {
        let mut setups = Setups::default();
        let mut deadline = tokio::time::Instant::now() + setup_timeout;
        let mut reported = 0;
        while reported < flows {
            let outcome = match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => break,
                Err(_) if !setup_over.is_cancelled() => {
                    // Flows still connecting give up and report; those registered stay.
                    setup_over.cancel();
                    deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
                    continue;
                }
                Err(_) => break,
            };
            reported += 1;
            match outcome {
                Setup::Registered => setups.registered += 1,
                Setup::Refused(code) => {
                    setups.refused += 1;
                    setups.refused_code = code;
                }
                Setup::Unanswered => setups.unanswered += 1,
                Setup::Failed(error) => {
                    setups.failed += 1;
                    setups.first_error.get_or_insert(error);
                }
            }
        }
        setups
    }
}

/// The memory of the proxy (with its descendants) and of the generator at one moment.
struct Sample {
    proxy: Memory,
    generator_kib: u64,
}

impl Sample {
    fn take(proxy_pid: u32) -> Sample {
        Sample {
            proxy: memory_of_tree(proxy_pid),
            generator_kib: own_rss_kib(),
        }
    }
}

/// KiB per flow between two samples.
fn per_flow(before: u64, after: u64, flows: usize) -> f64 {
    if flows == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) / flows as f64
}

/// The idle options checked; the pid of the process whose memory is measured.
fn check(args: &Args) -> Result<u32, String> {
    check_flows(args.flows)?;
    if args.hold == 0 || args.hold > MAX_DURATION_S || args.settle > args.hold {
        return Err(format!(
            "--hold must be 1..{MAX_DURATION_S} s and --settle at most --hold"
        ));
    }
    if args.setup_timeout == 0 || args.setup_timeout > MAX_DURATION_S {
        return Err(format!("--setup-timeout must be 1..{MAX_DURATION_S} s"));
    }
    args.proxy_pid.ok_or_else(|| {
        "--mode idle needs --proxy-pid (the process whose memory is measured)".into()
    })
}

pub async fn run(args: Args) -> Result<(), String> {
    let endpoint = parse_url(&args.url)?;
    let proxy_pid = check(&args)?;
    let target = Target::new(endpoint, args.ca.as_ref(), args.sources).await?;
    let book = Arc::new(Book::new(args.flows, args.timeout_ms));
    println!(
        "ws_load idle: {} REGISTER sip:{} (Expires {}), {} flows ({} connecting at once{}), then {} s idle; proxy pid {proxy_pid}",
        target.endpoint.url,
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
    let before = Sample::take(proxy_pid);
    if before.proxy.processes == 0 {
        return Err(format!("--proxy-pid {proxy_pid}: no such process"));
    }
    println!(
        "  before:     proxy RSS {} KiB  PSS {} KiB ({} processes)  generator RSS {} KiB",
        before.proxy.rss, before.proxy.pss, before.proxy.processes, before.generator_kib
    );

    // ---- connect and register every flow
    let shared = Arc::new(IdleShared {
        target,
        registrar: args.target.clone(),
        expires: args.expires,
        book: Arc::clone(&book),
        answer_timeout: Duration::from_millis(args.timeout_ms),
        permits: Semaphore::new(args.connect_parallel.max(1)),
        setup_over: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let setup_start = Instant::now();
    let (report, mut reports) = mpsc::channel::<Setup>(args.flows);
    let mut flows = JoinSet::new();
    for index in 0..args.flows {
        flows.spawn(idle_flow(index, Arc::clone(&shared), report.clone()));
    }
    drop(report);
    let setups = Setups::collect(
        &mut reports,
        args.flows,
        Duration::from_secs(args.setup_timeout),
        &shared.setup_over,
    )
    .await;
    let Setups {
        registered,
        refused,
        unanswered,
        failed,
        refused_code,
        first_error,
    } = &setups;
    let registered = *registered;
    let setup_s = setup_start.elapsed().as_secs_f64();
    let registered_at = Instant::now();
    let at_registered = Sample::take(proxy_pid);
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
        if *refused > 0 { format!(", last {refused_code}") } else { String::new() },
        match first_error {
            Some(error) => format!(", first: {error}"),
            None => String::new(),
        },
    );
    println!(
        "              proxy RSS {} KiB  PSS {} KiB  generator RSS {} KiB",
        at_registered.proxy.rss, at_registered.proxy.pss, at_registered.generator_kib
    );

    // ---- idle: the "after" sample once settled, a last one at the end of the hold
    tokio::time::sleep_until((registered_at + Duration::from_secs(args.settle)).into()).await;
    let after = Sample::take(proxy_pid);
    let open_after = registered.saturating_sub(
        usize::try_from(book.flows_closed.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
    );
    println!(
        "  settled:    +{} s, {open_after} flows open: proxy RSS {} KiB  PSS {} KiB  generator RSS {} KiB",
        args.settle, after.proxy.rss, after.proxy.pss, after.generator_kib
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
    let proxy_gone = after.proxy.processes == 0;
    let kib = |before: u64, after: u64, valid: bool| {
        if valid && open_after > 0 {
            format!("{:.2}", per_flow(before, after, open_after))
        } else {
            "n/a".to_owned()
        }
    };
    let (rss_per_flow, pss_per_flow, gen_per_flow) = (
        kib(before.proxy.rss, after.proxy.rss, !proxy_gone),
        kib(before.proxy.pss, after.proxy.pss, !proxy_gone),
        kib(before.generator_kib, after.generator_kib, true),
    );
    if proxy_gone {
        println!("  the proxy (pid {proxy_pid}) is gone: no per-flow figure");
    }
    println!(
        "  per registered idle flow: proxy RSS {rss_per_flow} KiB  PSS {pss_per_flow} KiB  (settled - before) / {open_after}; generator {gen_per_flow} KiB"
    );
    println!(
        "RESULT mode=idle url={} transport={} flows={} registered={registered} refused={refused} unanswered={unanswered} failed={failed} closed_during_hold={closed} setup_s={setup_s:.1} register_p50_us={p50} register_p99_us={p99} settle_s={} hold_s={} proxy_processes={} proxy_rss_before_kib={} proxy_rss_registered_kib={} proxy_rss_after_kib={} proxy_rss_end_kib={} proxy_pss_before_kib={} proxy_pss_registered_kib={} proxy_pss_after_kib={} proxy_pss_end_kib={} kib_per_flow_rss={rss_per_flow} kib_per_flow_pss={pss_per_flow} gen_rss_before_kib={} gen_rss_after_kib={} gen_kib_per_flow={gen_per_flow} late={} unmatched={}",
        shared.target.endpoint.url,
        shared.target.endpoint.transport(),
        args.flows,
        args.settle,
        args.hold,
        after.proxy.processes,
        before.proxy.rss,
        at_registered.proxy.rss,
        after.proxy.rss,
        end.rss,
        before.proxy.pss,
        at_registered.proxy.pss,
        after.proxy.pss,
        end.pss,
        before.generator_kib,
        after.generator_kib,
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

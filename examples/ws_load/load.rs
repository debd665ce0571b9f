//! `--mode load`: OPTIONS or MESSAGE at a fixed total rate, round-robin over the flows, and
//! the figures of the measured window (after the warm-up).

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::book::{percentile, Book};
use crate::flow::{parse_url, Target};
use crate::procfs::{process_ticks, process_tree, tree_ticks, CLOCK_TICKS_PER_S};
use crate::{check_flows, Args, MAX_DURATION_S};

/// Upper bound on the requests of one run, which keeps its bookkeeping small.
const MAX_REQUESTS: u64 = 20_000_000;
/// Requests queued per flow in the generator before sends to it count as local drops.
const FLOW_QUEUE: usize = 256;

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

/// Opens WebSocket flow `index` and starts its reader and writer tasks; returns its send queue.
async fn open_flow(
    index: usize,
    target: &Target,
    book: Arc<Book>,
) -> Result<mpsc::Sender<String>, String> {
    let ws = target.connect(index).await?;
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(FLOW_QUEUE);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = frames.next().await {
            if !book.on_message(&frame) {
                break;
            }
        }
        book.flows_closed.fetch_add(1, Ordering::Relaxed);
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

/// How many requests the run sends in all, and the first one measured (after the warm-up).
fn plan(args: &Args) -> Result<(u64, u64), String> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        return Err("--rate must be in (0, 1000000]".into());
    }
    if args.duration == 0 || args.duration + args.warmup > MAX_DURATION_S {
        return Err(format!(
            "--duration must be 1..{MAX_DURATION_S} s including the warm-up"
        ));
    }
    check_flows(args.flows)?;
    let total = (args.rate * (args.warmup + args.duration) as f64).round() as u64;
    let first_measured = (args.rate * args.warmup as f64).round() as u64;
    if total > MAX_REQUESTS {
        return Err(format!(
            "rate × (warmup + duration) = {total} requests: more than {MAX_REQUESTS}"
        ));
    }
    Ok((total, first_measured))
}

/// Connects every flow (`--connect-parallel` at once); their send queues, or the first error.
async fn connect_flows(
    args: &Args,
    target: &Arc<Target>,
    book: &Arc<Book>,
) -> Result<Vec<mpsc::Sender<String>>, String> {
    let permits = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    for index in 0..args.flows {
        let (target, book, permits) = (Arc::clone(target), Arc::clone(book), Arc::clone(&permits));
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, open_flow(index, &target, book).await)
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
    Ok(flows.into_iter().flatten().collect())
}

/// CPU time used so far by the proxy (and its descendants) and by the generator, and when.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    proxy_ticks: u64,
    own_ticks: u64,
}

impl CpuSample {
    fn take(proxy_tree: Option<&[u32]>) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            proxy_ticks: proxy_tree.map(tree_ticks).unwrap_or(0),
            own_ticks: process_ticks(std::process::id()).unwrap_or(0),
        }
    }
}

/// What the sending did: requests handed to flows, those refused by a full flow queue, and the
/// CPU sample at the first measured request (none when the warm-up never ended).
struct Sending {
    sent: u64,
    local_drops: u64,
    window_start: Option<CpuSample>,
}

/// Sends request k at k / `--rate` s after the start (each tick sends what is due), at most
/// `total`, for the warm-up and the duration plus 5 s of slack.
async fn send_paced(
    args: &Args,
    template: &RequestTemplate,
    flows: &[mpsc::Sender<String>],
    book: &Book,
    (total, first_measured): (u64, u64),
    proxy_tree: Option<&[u32]>,
) -> Sending {
    let mut tick = tokio::time::interval(Duration::from_millis(args.tick_ms.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let send_start = Instant::now();
    let send_deadline = Duration::from_secs(args.warmup + args.duration + 5);
    let mut seq: u64 = 0;
    let mut local_drops: u64 = 0;
    let mut window_start = None;
    while seq < total && send_start.elapsed() < send_deadline {
        tick.tick().await;
        // Request k is due at k / rate: the first at once, the last one period before the end.
        let due = ((send_start.elapsed().as_secs_f64() * args.rate) as u64 + 1).min(total);
        while seq < due {
            if seq == first_measured && window_start.is_none() {
                window_start = Some(CpuSample::take(proxy_tree));
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
    Sending {
        sent: seq,
        local_drops,
        window_start,
    }
}

/// Waits, at most `timeout`, until every request of `range` that was sent has its answer.
async fn wait_for_answers(book: &Book, range: Range<usize>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let finished = |i: usize| {
        book.sent_ns[i].load(Ordering::Relaxed) == 0 || book.status[i].load(Ordering::Relaxed) != 0
    };
    // Everything before `cursor` is answered (or was never sent); each request is looked at
    // about once however long the wait.
    let mut cursor = range.start;
    while Instant::now() < deadline {
        while cursor < range.end && finished(cursor) {
            cursor += 1;
        }
        if cursor == range.end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How the measured requests ended.
#[derive(Default)]
struct Tally {
    sent: u64,
    answered: u64,
    failed: u64,
    lost: u64,
    /// The status of the last non-2xx final answer.
    failed_code: u16,
    /// Send→2xx of every answered request, in µs, sorted.
    latencies: Vec<u32>,
}

impl Tally {
    fn of(book: &Book, range: Range<usize>) -> Tally {
        let mut tally = Tally {
            latencies: Vec::with_capacity(range.len()),
            ..Tally::default()
        };
        for i in range {
            if book.sent_ns[i].load(Ordering::Relaxed) == 0 {
                continue;
            }
            tally.sent += 1;
            match book.status[i].load(Ordering::Relaxed) {
                0 => tally.lost += 1,
                200..=299 => {
                    tally.answered += 1;
                    let latency = book.latency_us[i].load(Ordering::Relaxed).saturating_sub(1);
                    tally.latencies.push(latency);
                }
                code => {
                    tally.failed += 1;
                    tally.failed_code = code;
                }
            }
        }
        tally.latencies.sort_unstable();
        tally
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    let endpoint = parse_url(&args.url)?;
    let (total, first_measured) = plan(&args)?;
    let target = Arc::new(Target::new(endpoint, args.ca.as_ref(), args.sources).await?);
    let endpoint = &target.endpoint;
    let total_slots = usize::try_from(total).map_err(|_| "too many requests")?;
    let book = Arc::new(Book::new(total_slots, args.timeout_ms));

    let connect_start = Instant::now();
    let flows = connect_flows(&args, &target, &book).await?;
    let connect_s = connect_start.elapsed().as_secs_f64();

    let message = args.method == "MESSAGE";
    let template = RequestTemplate {
        method: if message { "MESSAGE" } else { "OPTIONS" },
        via_transport: endpoint.via_transport(),
        target: args.target.clone(),
        run: book.run,
        body: if message {
            "x".repeat(args.body)
        } else {
            String::new()
        },
    };
    let proxy_tree = args.proxy_pid.map(process_tree);
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

    let sending = send_paced(
        &args,
        &template,
        &flows,
        &book,
        (total, first_measured),
        proxy_tree.as_deref(),
    )
    .await;
    let window_end = CpuSample::take(proxy_tree.as_deref());
    let window_start = sending.window_start.unwrap_or(window_end);
    let window_s = window_end.at.duration_since(window_start.at).as_secs_f64();

    let range =
        usize::try_from(first_measured).unwrap_or(0)..usize::try_from(sending.sent).unwrap_or(0);
    wait_for_answers(&book, range.clone(), Duration::from_millis(args.timeout_ms)).await;
    let tally = Tally::of(&book, range);

    let Tally {
        sent,
        answered,
        failed,
        lost,
        failed_code,
        latencies,
    } = &tally;
    let (p50, p90, p99) = (
        percentile(latencies, 50.0),
        percentile(latencies, 90.0),
        percentile(latencies, 99.0),
    );
    let max = latencies.last().copied().unwrap_or(0);
    let achieved = if window_s > 0.0 {
        *sent as f64 / window_s
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
    let own_cpu = pct(window_end.own_ticks.saturating_sub(window_start.own_ticks));
    let lost_pct = if *sent > 0 {
        100.0 * *lost as f64 / *sent as f64
    } else {
        0.0
    };

    println!(
        "  sent {sent}  answered(2xx) {answered}  failed(non-2xx) {failed}{}  lost(>{} ms) {lost} ({lost_pct:.2}%)  achieved {achieved:.1} req/s over {window_s:.2} s",
        if *failed > 0 { format!(" (last {failed_code})") } else { String::new() },
        args.timeout_ms,
    );
    println!("  latency send->200 (us): p50 {p50}  p90 {p90}  p99 {p99}  max {max}");
    let mut result = format!(
        "RESULT url={} transport={} method={} flows={} rate={} duration={} sent={sent} answered={answered} failed={failed} lost={lost} lost_pct={lost_pct:.3} achieved_rps={achieved:.1} p50_us={p50} p90_us={p90} p99_us={p99} max_us={max}",
        endpoint.url,
        endpoint.transport(),
        template.method,
        flows.len(),
        args.rate,
        args.duration,
    );
    if let Some(tree) = &proxy_tree {
        let cpu = pct(window_end
            .proxy_ticks
            .saturating_sub(window_start.proxy_ticks));
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
    let local_drops = sending.local_drops;
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

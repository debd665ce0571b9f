//! `-metrics-addr` against real peers: SIPp sends MESSAGEs over UDP through Roundabout to a UDP
//! server; `/metrics` then counts exactly the messages the peers' own traces show, the text
//! passes `promtool check metrics`, and `/health` turns from 200 to 503 when SIGTERM starts
//! the drain. The connection counts follow TCP connections opened, refused and closed.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{get, Answer};
use common::process::poll_until;
use common::udp_server::UdpServer;
use common::{free_port, require, sipp_messages, Roundabout};

/// MESSAGEs SIPp sends.
const CALLS: usize = 5;

/// The value of the sample `series` (name and labels, as written) in a scrape.
fn sample(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
}

/// The four UDP series the MESSAGEs and their 200s move.
fn udp_counts(scrape: &str) -> [u64; 4] {
    [
        r#"roundabout_sip_requests_received_total{transport="udp",method="MESSAGE"}"#,
        r#"roundabout_sip_requests_sent_total{transport="udp",method="MESSAGE"}"#,
        r#"roundabout_sip_responses_received_total{transport="udp",class="2xx"}"#,
        r#"roundabout_sip_responses_sent_total{transport="udp",class="2xx"}"#,
    ]
    .map(|series| sample(scrape, series))
}

/// Roundabout with `args` and `-metrics-addr` on a free loopback port, and that address.
fn with_metrics(args: &[&str]) -> (Roundabout, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let flag = metrics.to_string();
    let rb = Roundabout::start(&[args, &["-metrics-addr", &flag]].concat());
    (rb, metrics)
}

/// `GET path`, asked again until it answers (the listener is up before `ready` is logged, so
/// this is for the failure message, not for start-up).
fn answer(metrics: SocketAddr, path: &str) -> Answer {
    poll_until(
        Instant::now() + Duration::from_secs(5),
        Duration::from_millis(50),
        || get(metrics, path),
    )
    .unwrap_or_else(|| panic!("no answer to GET {path} from {metrics}"))
}

/// What `promtool check metrics` says of `scrape` that is a problem. The classic text linter
/// reads an OpenMetrics counter's `NAME_total` samples as a family of their own, one without
/// `# HELP`; that is the format's naming (OpenMetrics 1.0, "Counter"), not a problem, and is
/// accepted exactly when `NAME` is a counter with help in the scrape.
fn promtool_problems(scrape: &str) -> Vec<String> {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(scrape.as_bytes()).unwrap();
    }
    let output = promtool.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // Exit 1 is text promtool could not parse at all; 3 is lint problems, looked at below.
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool failed: {said}\n{scrape}"
    );
    said.lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| {
            let counter_total = line.strip_suffix(" no help text").and_then(|metric| {
                let family = metric.strip_suffix("_total")?;
                let typed = format!("# TYPE {family} counter");
                let helped = format!("# HELP {family} ");
                Some(scrape.lines().any(|l| l == typed) && scrape.contains(&helped))
            });
            counter_total != Some(true)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn metrics_count_what_the_peers_saw_and_health_follows_the_drain() {
    if !require("sipp") || !require("promtool") {
        return;
    }
    let mut server = UdpServer::start("127.0.0.2");
    let trusted = format!("127.0.0.2:registrar.test:{}:udp:", server.addr.port());
    let (rb, metrics) = with_metrics(&[
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-drain-timeout",
        "20",
    ]);

    let health = answer(metrics, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(answer(metrics, "/nowhere").status, 404);
    let before = answer(metrics, "/metrics");
    assert_eq!(before.status, 200);
    assert_eq!(udp_counts(&before.body), [0; 4], "{}", before.body);

    let uac = sipp_messages(
        &rb,
        "127.0.0.3",
        free_port("127.0.0.3"),
        "sip:bob@registrar.test",
        CALLS,
    );
    // What each peer's own trace says went over the wire (a UDP retransmission included).
    let count = |messages: &[String], start: &str| {
        messages.iter().filter(|m| m.starts_with(start)).count() as u64
    };
    let sipp_sent = count(&uac.sent(), "MESSAGE ");
    let sipp_got = count(&uac.received(), "SIP/2.0 200");
    // The server answers each request it gets with one 200.
    let server_got = count(server.all(), "MESSAGE ");
    assert!(sipp_sent >= CALLS as u64 && sipp_got >= CALLS as u64);

    let after = answer(metrics, "/metrics");
    assert_eq!(
        udp_counts(&after.body),
        [sipp_sent, server_got, server_got, sipp_got],
        "MESSAGEs received and sent, 2xx received and sent\n{}",
        after.body
    );
    for family in [
        "roundabout_connections_open",
        "roundabout_client_cache_entries",
        "roundabout_transactions_active",
        "roundabout_forged_responses_dropped",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds",
    ] {
        assert!(
            after.body.contains(&format!("# HELP {family} ")),
            "{family} missing\n{}",
            after.body
        );
    }
    assert_eq!(
        sample(&after.body, "roundabout_forged_responses_dropped_total"),
        0
    );
    let problems = promtool_problems(&after.body);
    assert!(problems.is_empty(), "{problems:#?}\n{}", after.body);

    rb.signal("TERM");
    let draining = poll_until(
        Instant::now() + Duration::from_secs(5),
        Duration::from_millis(50),
        || get(metrics, "/health").filter(|health| health.status == 503),
    );
    assert!(
        draining.is_some(),
        "/health still not 503 after SIGTERM\n{}",
        rb.logs()
    );
    // The endpoint turns 503 on the drain signal itself, so the log line may come after.
    assert!(
        rb.wait_for_log("shutting down: draining", Duration::from_secs(5)),
        "{}",
        rb.logs()
    );
}

#[test]
fn connection_counts_follow_tcp_connections() {
    let (rb, metrics) = with_metrics(&["-max-connections-per-ip", "1"]);
    let tcp = |scrape: &str, name: &str| sample(scrape, &format!(r#"{name}{{transport="tcp"}}"#));
    // Waits for the counts of TCP connections (open, accepted, refused) to be `expected`.
    let counts_become = |expected: [u64; 3]| {
        let mut last = String::new();
        let reached = poll_until(
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                last = answer(metrics, "/metrics").body;
                let counts = [
                    tcp(&last, "roundabout_connections_open"),
                    tcp(&last, "roundabout_connections_accepted_total"),
                    tcp(&last, "roundabout_connections_refused_total"),
                ];
                (counts == expected).then_some(())
            },
        );
        assert!(
            reached.is_some(),
            "not {expected:?}:\n{last}\n{}",
            rb.logs()
        );
    };
    counts_become([0, 0, 0]);
    let first = std::net::TcpStream::connect(rb.addr("tcp")).unwrap();
    counts_become([1, 1, 0]);
    // Over -max-connections-per-ip: refused, and the first stays open.
    let _second = std::net::TcpStream::connect(rb.addr("tcp")).unwrap();
    counts_become([1, 1, 1]);
    drop(first);
    counts_become([0, 1, 1]);
}

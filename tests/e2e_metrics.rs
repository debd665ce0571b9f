//! `-metrics-addr` against real peers: SIPp sends MESSAGEs over UDP through Roundabout to a UDP
//! server; `/metrics` then counts exactly the messages the peers' own traces show, the text
//! passes `promtool check metrics`, and `/health` turns from 200 to 503 when SIGTERM starts
//! the drain. JsSIP over WSS moves the WSS, handshake, stateful and registration counts; what
//! Roundabout answers, refuses and drops is counted by code and reason. The connection counts
//! follow TCP connections opened, refused and closed.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::http::{get, Answer};
use common::process::poll_until;
use common::udp_server::UdpServer;
use common::{free_port, node, require, sipp_messages, Roundabout, UdpPeer};

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

/// A UDP registrar (`registrar.test` on 127.0.0.2, answering 200) as Roundabout's one trusted
/// server under `-strict-host`, Roundabout with `extra` and `-metrics-addr`, and that address.
fn behind_a_registrar(extra: &[&str]) -> (UdpServer, Roundabout, SocketAddr) {
    let server = UdpServer::start("127.0.0.2");
    let trusted = format!("127.0.0.2:registrar.test:{}:udp:", server.addr.port());
    let args = ["-strict-host", "-trusted-server", &trusted];
    let (rb, metrics) = with_metrics(&[&args[..], extra].concat());
    (server, rb, metrics)
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
    let (mut server, rb, metrics) = behind_a_registrar(&["-drain-timeout", "20"]);

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
        "roundabout_messages_dropped",
        "roundabout_forwarding_seconds",
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
    // Every MESSAGE the server got was forwarded, without a transaction (UDP to UDP), and
    // each message sent was timed from the one that caused it.
    let forwarded = r#"roundabout_requests_forwarded_total{path="stateless"}"#;
    assert_eq!(sample(&after.body, forwarded), server_got);
    assert_eq!(
        sample(&after.body, "roundabout_forwarding_seconds_count"),
        server_got + sipp_got
    );
    let forged = r#"roundabout_messages_dropped_total{reason="forged"}"#;
    assert_eq!(sample(&after.body, forged), 0);
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

/// A request from `from` over UDP, with `extra` header lines.
fn request(method: &str, ruri: &str, from: &UdpPeer, call: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{call};rport\r\n\
         From: <sip:m@example.com>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: {call}@metrics\r\n\
         CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n",
        from.addr()
    )
}

/// The status code of a response.
fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or_default()
}

/// Roundabout answers, drops and forwards what a UDP peer sends, and a flood over
/// `-rate-limit`: each is counted under its code or reason, exactly as many times as it
/// happened, and every message sent was timed.
#[test]
fn answers_drops_and_refusals_are_counted_by_code_and_reason() {
    if !require("promtool") {
        return;
    }
    let (mut server, rb, metrics) = behind_a_registrar(&["-rate-limit", "5"]);
    let proxy = rb.addr("udp");
    let peer = UdpPeer::bind("127.0.0.3");
    let max_forwards = "Max-Forwards: 70\r\n";

    // Answered by Roundabout: a host it may not relay to, no Max-Forwards left, a token that
    // does not verify (its Request-URI then names Roundabout and no client).
    let unknown = request(
        "OPTIONS",
        "sip:x@elsewhere.example",
        &peer,
        "unknown",
        max_forwards,
    );
    let no_hops = request(
        "OPTIONS",
        "sip:bob@registrar.test",
        &peer,
        "hops",
        "Max-Forwards: 0\r\n",
    );
    let token = format!("sip:x@{proxy};rbt=AAAAforged");
    let forged_token = request("BYE", &token, &peer, "token", max_forwards);
    let mut codes = Vec::new();
    for asked in [&unknown, &no_hops, &forged_token] {
        peer.send(proxy, asked);
        let answer = peer.recv().expect("Roundabout answers");
        codes.push(status(&answer).to_owned());
    }
    assert_eq!(codes, ["403", "483", "404"]);
    // Dropped: a response that is not for Roundabout, and one that claims to answer a request
    // of Roundabout's with a branch it never minted.
    let stray = String::from(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-stray\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: stray@metrics\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    let forged = stray.replace(
        "192.0.2.9:5060;branch=z9hG4bK-stray",
        &format!("{proxy};branch=z9hG4bKrbforged"),
    );
    peer.send(proxy, &stray);
    peer.send(proxy, &forged);

    // A flood of 40 OPTIONS from one source, over 5/s with bursts of 10.
    let flooder = UdpPeer::bind("127.0.0.4");
    const FLOOD: u64 = 40;
    for n in 0..FLOOD {
        let options = request(
            "OPTIONS",
            "sip:bob@registrar.test",
            &flooder,
            &format!("flood{n}"),
            max_forwards,
        );
        flooder.send(proxy, &options);
    }
    let mut answered = 0;
    while flooder.recv_within(Duration::from_millis(500)).is_some() {
        answered += 1;
    }
    let relayed = server
        .all()
        .iter()
        .filter(|m| m.contains("@metrics"))
        .count() as u64;
    assert_eq!(answered, relayed, "every OPTIONS relayed is answered");
    assert!(
        (1..FLOOD).contains(&relayed),
        "{relayed} of {FLOOD} relayed"
    );

    let scrape = answer(metrics, "/metrics").body;
    let count = |series: &str| sample(&scrape, series);
    let expected = [
        (r#"roundabout_requests_answered_total{code="403"}"#, 1),
        (r#"roundabout_requests_answered_total{code="483"}"#, 1),
        (r#"roundabout_requests_answered_total{code="404"}"#, 1),
        (r#"roundabout_requests_answered_total{code="503"}"#, 0),
        ("roundabout_token_failures_total", 1),
        (
            r#"roundabout_messages_dropped_total{reason="unroutable"}"#,
            1,
        ),
        (r#"roundabout_messages_dropped_total{reason="forged"}"#, 1),
        (
            r#"roundabout_messages_dropped_total{reason="rate_limit"}"#,
            FLOOD - relayed,
        ),
        (
            r#"roundabout_requests_forwarded_total{path="stateless"}"#,
            relayed,
        ),
        (r#"roundabout_requests_forwarded_total{path="stateful"}"#, 0),
        (r#"roundabout_requests_refused_total{reason="overload"}"#, 0),
        (r#"roundabout_requests_undelivered_total{code="480"}"#, 0),
    ];
    let seen: Vec<(&str, u64)> = expected
        .iter()
        .map(|&(series, _)| (series, count(series)))
        .collect();
    assert_eq!(seen, expected, "\n{scrape}\n{}", rb.logs());
    // Every message sent was sent while Roundabout handled the one that caused it.
    let sent: u64 = scrape
        .lines()
        .filter(|line| {
            line.starts_with("roundabout_sip_requests_sent_total")
                || line.starts_with("roundabout_sip_responses_sent_total")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        sent,
        3 + 2 * relayed,
        "three answers, each OPTIONS and its 200"
    );
    assert_eq!(count("roundabout_forwarding_seconds_count"), sent);
    let problems = promtool_problems(&scrape);
    assert!(problems.is_empty(), "{problems:#?}\n{scrape}");
}

/// JsSIP over WSS registers through Roundabout to a UDP registrar and sends a MESSAGE: the WSS
/// handshake, both requests received over WSS and forwarded with a client transaction (WSS to
/// UDP), and the binding the REGISTER's 200 made are counted.
#[test]
fn a_wss_client_moves_the_handshake_transaction_and_registration_counts() {
    if !require("openssl") || !node::require_node() || !require("promtool") {
        return;
    }
    let ca = TestCa::new();
    let wss_flags = ca.leaf("proxy.test").wss_flags();
    let wss_flags: Vec<&str> = wss_flags.iter().map(String::as_str).collect();
    let (mut registrar, rb, metrics) = behind_a_registrar(&wss_flags);
    let url = format!("wss://127.0.0.1:{}", rb.addr("wss").port());
    let jssip = node::jssip_alice_messages_bob(&url, Some(&ca.cert));
    registrar.wait_request("REGISTER", Duration::from_secs(10));
    registrar.wait_request("MESSAGE", Duration::from_secs(10));

    let scrape = answer(metrics, "/metrics").body;
    let expected = [
        (
            r#"roundabout_handshakes_total{transport="wss",direction="in",result="ok"}"#,
            1,
        ),
        (
            r#"roundabout_handshakes_total{transport="wss",direction="in",result="failed"}"#,
            0,
        ),
        (
            r#"roundabout_connections_accepted_total{transport="wss"}"#,
            1,
        ),
        (r#"roundabout_connections_open{transport="wss"}"#, 1),
        (
            r#"roundabout_sip_requests_received_total{transport="wss",method="REGISTER"}"#,
            1,
        ),
        (
            r#"roundabout_sip_requests_received_total{transport="wss",method="MESSAGE"}"#,
            1,
        ),
        (
            r#"roundabout_sip_responses_sent_total{transport="wss",class="2xx"}"#,
            2,
        ),
        (r#"roundabout_requests_forwarded_total{path="stateful"}"#, 2),
        (
            r#"roundabout_requests_forwarded_total{path="stateless"}"#,
            0,
        ),
        (r#"roundabout_registrations_total{event="bound"}"#, 1),
        ("roundabout_client_cache_entries", 1),
        ("roundabout_transactions_timed_out_total", 0),
    ];
    let seen: Vec<(&str, u64)> = expected
        .iter()
        .map(|&(series, _)| (series, sample(&scrape, series)))
        .collect();
    assert_eq!(seen, expected, "\n{scrape}\n{}", rb.logs());
    let problems = promtool_problems(&scrape);
    assert!(problems.is_empty(), "{problems:#?}\n{scrape}");
    drop(jssip);
}

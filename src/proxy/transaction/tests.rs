use bytes::Bytes;

use super::*;

const T: Duration = Duration::from_millis(1);

fn flow(transport: Transport, addr: &str) -> FlowKey {
    FlowKey {
        transport,
        remote: addr.parse().unwrap(),
    }
}

fn server() -> Destination {
    Destination {
        flow: flow(Transport::Udp, "203.0.113.20:5060"),
        connection: None,
        server_name: None,
        may_connect: true,
    }
}

fn browser() -> Destination {
    Destination {
        flow: flow(Transport::Ws, "192.0.2.10:50000"),
        connection: Some(crate::transport::ConnectionId(7)),
        server_name: None,
        may_connect: false,
    }
}

fn table() -> Transactions {
    Transactions::new(SipTimers::RFC_3261, TransactionLimits::DEFAULT)
}

/// A request as Roundabout forwards it: its own Via on top.
fn forwarded(method: &str) -> Encoded {
    Encoded {
        head: Bytes::from(format!(
            "{method} sip:bob@203.0.113.20 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKrb0000000000000001\r\n\
             Via: SIP/2.0/WS b.invalid;branch=z9hG4bKc;received=192.0.2.10;rport=50000\r\n\
             Max-Forwards: 69\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@y>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )),
        body: Bytes::new(),
    }
}

fn response(code: u16, method: &str) -> Message {
    Message::parse(Bytes::from(format!(
        "SIP/2.0 {code} Whatever\r\n\
         Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKrb0000000000000001\r\n\
         Via: SIP/2.0/WS b.invalid;branch=z9hG4bKc;received=192.0.2.10;rport=50000\r\n\
         From: <sip:a@x>;tag=f\r\nTo: <sip:bob@y>;tag=uas\r\nCall-ID: c1\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )))
    .unwrap()
}

fn key(kind: Kind) -> Key {
    Key {
        branch: Branch(1),
        kind,
    }
}

fn start(table: &Transactions, kind: Kind, method: &str, t0: Instant) {
    let server_key = (kind == Kind::Invite).then_some(77);
    let started = table.start(
        key(kind),
        forwarded(method),
        server(),
        browser(),
        server_key,
        t0,
    );
    assert_eq!(started, Start::Started);
}

/// Runs the timers millisecond by millisecond up to `until`; what was sent, and when.
fn run(table: &Transactions, t0: Instant, from: u64, until: u64) -> Vec<(u64, Send)> {
    let mut sent = Vec::new();
    for ms in from..=until {
        for send in table.expire(t0 + T * u32::try_from(ms).unwrap()) {
            sent.push((ms, send));
        }
    }
    sent
}

fn times(sent: &[(u64, Send)]) -> Vec<u64> {
    sent.iter().map(|(ms, _)| *ms).collect()
}

fn is_answer(send: &Send, code: u16) -> bool {
    matches!(send, Send::Answer { status, upstream, .. } if status.code == code && *upstream == browser())
}

fn downstream_method(send: &Send) -> String {
    let Send::Downstream(dest, msg) = send else {
        panic!("not downstream: {send:?}");
    };
    assert_eq!(*dest, server());
    let text = String::from_utf8_lossy(&msg.head).into_owned();
    text.split(' ').next().unwrap().to_owned()
}

fn matched(result: ResponseMatch) -> Matched {
    match result {
        ResponseMatch::Matched(m) => m,
        other => panic!("not matched: {other:?}"),
    }
}

fn from_server(to: &FlowKey) -> bool {
    *to == server().flow
}

/// RFC 3261 §17.1.1.2: Timer A at T1, doubling; Timer B at 64·T1 answers 408 upstream.
#[test]
fn invite_timers_a_and_b_to_the_millisecond() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    let sent = run(&table, t0, 0, 40_000);
    assert_eq!(
        times(&sent),
        [500, 1500, 3500, 7500, 15500, 31500, 32000],
        "{sent:?}"
    );
    assert!(sent[..6]
        .iter()
        .all(|(_, s)| downstream_method(s) == "INVITE"));
    assert!(is_answer(&sent[6].1, 408), "{:?}", sent[6]);
    assert!(table.is_empty());
    assert_eq!(table.timed_out(), 1);
}

/// RFC 3261 §17.1.2.2: Timer E at T1 doubling up to T2, Timer F at 64·T1.
#[test]
fn non_invite_timers_e_and_f_to_the_millisecond() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::NonInvite, "MESSAGE", t0);
    let sent = run(&table, t0, 0, 40_000);
    assert_eq!(
        times(&sent),
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500, 32000],
        "{sent:?}"
    );
    assert!(is_answer(&sent.last().unwrap().1, 408));
    assert!(table.is_empty());
}

/// After a provisional, Timer E fires every T2; the first final goes upstream, its
/// retransmissions are absorbed, and Timer K (T4) frees the state.
#[test]
fn non_invite_provisional_final_and_timer_k() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::NonInvite, "MESSAGE", t0);
    let sent = run(&table, t0, 0, 600);
    assert_eq!(times(&sent), [500]);
    let trying = matched(table.on_response(
        key(Kind::NonInvite),
        &response(100, "MESSAGE"),
        from_server,
        t0 + T * 600,
    ));
    assert_eq!(trying.forward_to, None, "a 100 is not forwarded");
    let sent = run(&table, t0, 601, 10_000);
    assert_eq!(times(&sent), [1500, 5500, 9500], "{sent:?}");
    let ok = matched(table.on_response(
        key(Kind::NonInvite),
        &response(200, "MESSAGE"),
        from_server,
        t0 + T * 10_000,
    ));
    assert_eq!(ok.forward_to, Some(browser()));
    assert!(ok.send.is_empty());
    let again = matched(table.on_response(
        key(Kind::NonInvite),
        &response(200, "MESSAGE"),
        from_server,
        t0 + T * 12_000,
    ));
    assert_eq!(again.forward_to, None, "retransmitted final absorbed");
    assert!(run(&table, t0, 10_001, 14_999).is_empty());
    assert_eq!(table.len(), 1);
    assert!(run(&table, t0, 15_000, 15_000).is_empty());
    assert!(table.is_empty(), "Timer K frees the state");
    assert_eq!(table.bytes(), 0);
    assert_eq!(table.timed_out(), 0, "ended by its final, not by a timer");
}

/// RFC 3261 §17.1.1.3: a non-2xx is ACKed on the UDP leg by Roundabout and sent upstream
/// once; its retransmissions are ACKed again and absorbed; Timer D frees the state; the
/// upstream ACK for it is absorbed meanwhile.
#[test]
fn invite_non_2xx_is_acked_here() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    let busy = matched(table.on_response(
        key(Kind::Invite),
        &response(486, "INVITE"),
        from_server,
        t0 + T * 100,
    ));
    assert_eq!(busy.forward_to, Some(browser()));
    assert_eq!(busy.send.len(), 1);
    assert_eq!(downstream_method(&busy.send[0]), "ACK");
    let Send::Downstream(_, ack) = &busy.send[0] else {
        unreachable!()
    };
    let ack = String::from_utf8_lossy(&ack.head).into_owned();
    assert!(ack.contains("To: <sip:bob@y>;tag=uas\r\n"), "{ack}");
    assert!(ack.contains("CSeq: 1 ACK\r\n"), "{ack}");
    assert!(
        ack.contains("branch=z9hG4bKrb0000000000000001\r\n"),
        "{ack}"
    );
    assert!(table.absorbs_ack(77));
    let again = matched(table.on_response(
        key(Kind::Invite),
        &response(486, "INVITE"),
        from_server,
        t0 + T * 600,
    ));
    assert_eq!(again.forward_to, None);
    assert_eq!(downstream_method(&again.send[0]), "ACK");
    // No retransmission of the INVITE after the final, and Timer D at 32 s.
    assert!(run(&table, t0, 101, 32_099).is_empty());
    assert_eq!(table.len(), 1);
    run(&table, t0, 32_100, 32_100);
    assert!(table.is_empty());
    assert!(!table.absorbs_ack(77));
}

/// RFC 6026: a 2xx goes upstream and the transaction ends at once; its retransmissions
/// find no transaction and are forwarded statelessly.
#[test]
fn invite_2xx_goes_upstream_and_ends_the_transaction() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    let trying =
        matched(table.on_response(key(Kind::Invite), &response(100, "INVITE"), from_server, t0));
    assert_eq!(trying.forward_to, None);
    let ringing =
        matched(table.on_response(key(Kind::Invite), &response(180, "INVITE"), from_server, t0));
    assert_eq!(ringing.forward_to, Some(browser()));
    assert!(run(&table, t0, 0, 5000).is_empty(), "Timer A stops");
    let ok = matched(table.on_response(
        key(Kind::Invite),
        &response(200, "INVITE"),
        from_server,
        t0 + T * 5000,
    ));
    assert_eq!(ok.forward_to, Some(browser()));
    assert!(ok.send.is_empty(), "the ACK of a 2xx is end to end");
    assert!(table.is_empty());
    assert_eq!(
        table.on_response(key(Kind::Invite), &response(200, "INVITE"), from_server, t0),
        ResponseMatch::NoTransaction
    );
}

#[test]
fn a_response_from_elsewhere_is_refused() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::NonInvite, "MESSAGE", t0);
    assert_eq!(
        table.on_response(
            key(Kind::NonInvite),
            &response(200, "MESSAGE"),
            |_| false,
            t0
        ),
        ResponseMatch::WrongSource
    );
    assert_eq!(table.len(), 1, "the transaction goes on");
}

/// RFC 3261 §9.1, §16.10: a CANCEL before any provisional waits for one; the CANCEL is a
/// transaction of its own whose answers are absorbed (upstream got Roundabout's 200).
#[test]
fn cancel_waits_for_a_provisional_and_is_its_own_transaction() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    assert_eq!(
        table.cancel(77, t0),
        Some(vec![]),
        "no CANCEL before a provisional"
    );
    assert_eq!(table.cancel(78, t0), None, "not a transaction");
    let ringing = matched(table.on_response(
        key(Kind::Invite),
        &response(180, "INVITE"),
        from_server,
        t0 + T * 200,
    ));
    assert_eq!(ringing.send.len(), 1);
    assert_eq!(downstream_method(&ringing.send[0]), "CANCEL");
    assert_eq!(table.len(), 2);
    // The CANCEL is retransmitted on its own Timer E.
    let sent = run(&table, t0, 201, 800);
    assert_eq!(times(&sent), [700]);
    assert_eq!(downstream_method(&sent[0].1), "CANCEL");
    let ok = matched(table.on_response(
        key(Kind::Cancel),
        &response(200, "CANCEL"),
        from_server,
        t0 + T * 800,
    ));
    assert_eq!(ok.forward_to, None, "upstream got Roundabout's own 200");
    let terminated = matched(table.on_response(
        key(Kind::Invite),
        &response(487, "INVITE"),
        from_server,
        t0 + T * 900,
    ));
    assert_eq!(terminated.forward_to, Some(browser()));
    assert_eq!(downstream_method(&terminated.send[0]), "ACK");
}

/// RFC 3261 §16.8: Timer C after a provisional cancels the branch; without a final 64·T1
/// later, upstream gets 408.
#[test]
fn timer_c_cancels_then_answers_408() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    matched(table.on_response(key(Kind::Invite), &response(183, "INVITE"), from_server, t0));
    let sent = run(&table, t0, 0, 181_000);
    assert_eq!(times(&sent), [181_000]);
    assert_eq!(downstream_method(&sent[0].1), "CANCEL");
    let sent = run(&table, t0, 181_001, 213_000);
    let answers: Vec<_> = sent.iter().filter(|(_, s)| is_answer(s, 408)).collect();
    assert_eq!(answers.len(), 1, "{sent:?}");
    assert_eq!(answers[0].0, 213_000);
    assert!(table.is_empty());
}

#[test]
fn limits_refuse_and_retransmissions_are_recognised() {
    let table = Transactions::new(
        SipTimers::RFC_3261,
        TransactionLimits {
            max: 1,
            max_bytes: 1 << 20,
        },
    );
    let t0 = Instant::now();
    start(&table, Kind::NonInvite, "MESSAGE", t0);
    let again = table.start(
        key(Kind::NonInvite),
        forwarded("MESSAGE"),
        server(),
        browser(),
        None,
        t0,
    );
    assert_eq!(again, Start::Retransmission);
    let other = Key {
        branch: Branch(3),
        kind: Kind::NonInvite,
    };
    assert_eq!(
        table.start(other, forwarded("MESSAGE"), server(), browser(), None, t0),
        Start::Full
    );
    let small = Transactions::new(
        SipTimers::RFC_3261,
        TransactionLimits {
            max: 10,
            max_bytes: 100,
        },
    );
    assert_eq!(
        small.start(other, forwarded("MESSAGE"), server(), browser(), None, t0),
        Start::Full
    );
}

#[test]
fn drain_answers_what_is_pending_and_cancels_ringing_calls() {
    let table = table();
    let t0 = Instant::now();
    start(&table, Kind::Invite, "INVITE", t0);
    matched(table.on_response(key(Kind::Invite), &response(180, "INVITE"), from_server, t0));
    start(&table, Kind::NonInvite, "MESSAGE", t0);
    let sent = table.drain();
    assert_eq!(sent.iter().filter(|s| is_answer(s, 503)).count(), 2);
    let cancels: Vec<_> = sent
        .iter()
        .filter(|s| matches!(s, Send::Downstream(..)))
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(downstream_method(cancels[0]), "CANCEL");
    assert!(table.is_empty());
    assert_eq!(table.bytes(), 0);
}

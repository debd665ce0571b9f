//! Transactions where a reliable leg meets UDP, against the real binary: bounded by
//! -max-transactions (503 beyond), every one freed by its timer (408 from a silent server),
//! and what one costs in memory.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use roundabout::sip::codec::{self, Frame};

use common::{rss_kib, Roundabout, UNTHROTTLED};

const LIMIT: usize = 5000;
const EXTRA: usize = 500;

fn message(n: usize) -> String {
    let body = "x".repeat(200);
    format!(
        "MESSAGE sip:bob@127.0.11.2 SIP/2.0\r\n\
         Via: SIP/2.0/TCP client.invalid;branch=z9hG4bK-bound-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=t{n}\r\n\
         To: <sip:bob@127.0.11.2>\r\nCall-ID: bound-{n}@test\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The status codes of the responses arriving on `stream`, one per message, on a channel.
fn read_statuses(mut stream: TcpStream) -> mpsc::Receiver<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Ok(Some(frame)) = codec::frame(&mut buf, 65_536) {
                if let Frame::Message(m) = frame {
                    let code = std::str::from_utf8(&m[8..11]).unwrap().parse().unwrap();
                    if tx.send(code).is_err() {
                        return;
                    }
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    rx
}

/// Waits until `count` responses with `code` have come (others are counted too).
fn wait_for(
    rx: &mpsc::Receiver<u16>,
    seen: &mut Vec<u16>,
    code: u16,
    count: usize,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while seen.iter().filter(|&&c| c == code).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(c) => seen.push(c),
            Err(_) => panic!(
                "{} of {count} {code}s within {limit:?}",
                seen.iter().filter(|&&c| c == code).count()
            ),
        }
    }
}

/// A TCP client sends more requests than -max-transactions allows to a UDP server that never
/// answers: the excess gets 503 at once, every admitted one 408 once Timer F (64·T1) fires,
/// and then the table is empty again: a new request is admitted and forwarded.
#[test]
fn transactions_are_bounded_and_each_is_freed_by_its_timer() {
    let silent = UdpSocket::bind("127.0.11.2:0").unwrap();
    let trusted = format!("127.0.11.2::{}:udp:", silent.local_addr().unwrap().port());
    let limit = LIMIT.to_string();
    let flags = [
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-sip-t1-ms",
        "100",
        "-max-transactions",
        &limit,
        "-log-level",
        "info",
    ];
    let rb = Roundabout::start(&[&flags[..], &UNTHROTTLED].concat());
    let mut stream = TcpStream::connect(rb.addr("tcp")).unwrap();
    let statuses = read_statuses(stream.try_clone().unwrap());
    let before = rss_kib(rb.pid());
    let mut all = String::new();
    for n in 0..LIMIT + EXTRA {
        all.push_str(&message(n));
    }
    stream.write_all(all.as_bytes()).unwrap();
    let mut seen = Vec::new();
    wait_for(&statuses, &mut seen, 503, EXTRA, Duration::from_secs(30));
    let held = rss_kib(rb.pid()).saturating_sub(before);
    let per = held as f64 * 1024.0 / LIMIT as f64;
    println!(
        "{LIMIT} pending transactions of a {}-byte MESSAGE: +{held} KiB RSS, {per:.0} bytes each",
        message(0).len()
    );
    assert!(
        per < 4096.0,
        "{per:.0} bytes per pending transaction is more than expected"
    );
    assert!(
        seen.iter().all(|&c| c == 503),
        "only the excess is answered before the timeout: {seen:?}"
    );
    // Timer F: 64 × 100 ms after each was sent.
    wait_for(&statuses, &mut seen, 408, LIMIT, Duration::from_secs(30));
    assert_eq!(seen.len(), LIMIT + EXTRA, "{seen:?}");
    // Everything was freed: a new request is admitted and sent (the silent server sees it).
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut datagram = vec![0u8; 65_536];
    while silent.recv_from(&mut datagram).is_ok() {}
    stream.write_all(message(LIMIT + EXTRA).as_bytes()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (n, _) = silent.recv_from(&mut datagram).unwrap();
        if String::from_utf8_lossy(&datagram[..n]).contains("Call-ID: bound-5500@test") {
            break;
        }
        assert!(Instant::now() < deadline, "new request not forwarded");
    }
}

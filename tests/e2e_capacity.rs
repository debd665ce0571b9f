//! A full client cache, end to end: 130,000 REGISTERs of distinct users from one UDP client
//! through Roundabout (`-client-cache-size 100000`) to a UDP registrar that grants every one.
//! The first 100,000 are bound (200); each of the 30,000 beyond the capacity gets Roundabout's
//! own 503 with a Retry-After and never reaches the registrar, so no client is told it is
//! registered when Roundabout could not keep its binding; users already bound still
//! re-register while the cache is full. The proxy's CPU time per REGISTER (utime + stime from
//! `/proc/<pid>/stat`) is printed for each phase and must not grow once the cache is full.
//! Before, each REGISTER beyond the capacity swept the whole cache and was still granted:
//! 650–1290 µs each instead of 21–29 µs in a release build (`cargo test --release --test
//! e2e_capacity -- --nocapture`; SECURITY.md has the figures).
//!
//! Sends are windowed (a few REGISTERs outstanding at a time), so no socket buffer overflows
//! and nothing is lost. `ROUNDABOUT_CAPACITY` sets the cache size (default 100,000; 30% more
//! REGISTERs are sent and a tenth of it re-registers).
//!
//! Loopback addresses used here (none used by other test files): 127.0.30.x.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{header, ok_for, Roundabout, UNTHROTTLED};

/// REGISTERs in flight at once: enough to keep the proxy busy, few enough for any buffer.
const WINDOW: usize = 32;
/// The longest any one answer may take before the test gives up.
const ANSWER: Duration = Duration::from_secs(5);

/// A registrar that answers every REGISTER 200 with the Contact it was sent (Roundabout's, with
/// the token that leads back to the client), counting what reached it.
struct Registrar {
    addr: SocketAddr,
    registers: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registrar {
    fn start(ip: &str) -> Registrar {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let registers = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (registers, stop) = (Arc::clone(&registers), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let request = String::from_utf8_lossy(&buf[..n]);
                    if request.starts_with("REGISTER ") {
                        registers.fetch_add(1, Ordering::Relaxed);
                        socket
                            .send_to(ok_for(&request, "registrar", &["Contact"]).as_bytes(), from)
                            .unwrap();
                    }
                }
            })
        };
        Registrar {
            addr,
            registers,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn register(registrar: SocketAddr, client: SocketAddr, user: usize, cseq: u32) -> String {
    format!(
        "REGISTER sip:{registrar} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {client};branch=z9hG4bK-u{user}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{user}@registrar.test>;tag=f{user}\r\n\
         To: <sip:u{user}@registrar.test>\r\n\
         Call-ID: u{user}@capacity\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:u{user}@{client};transport=udp>;expires=600\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// CPU time the process has used, in microseconds.
fn cpu_micros(pid: u32, ticks_per_second: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: state is the first, utime
    // and stime the 12th and 13th (fields 14 and 15 of proc(5)).
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 1_000_000 / ticks_per_second
}

fn clock_ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// What one phase got back: answers by status code, and the proxy's CPU per REGISTER.
struct Phase {
    codes: BTreeMap<u16, usize>,
    micros_per_register: f64,
    wall: Duration,
}

/// Sends a REGISTER for every user in `users`, at most `WINDOW` unanswered, and collects the
/// answers. Every 503 must carry `Retry-After: 60`.
fn run_phase(
    client: &UdpSocket,
    proxy: SocketAddr,
    registrar: SocketAddr,
    users: Range<usize>,
    cseq: u32,
    rb: &Roundabout,
    ticks: u64,
) -> Phase {
    let me = client.local_addr().unwrap();
    let total = users.len();
    let (cpu_before, started) = (cpu_micros(rb.pid(), ticks), Instant::now());
    let mut next = users.start;
    let (mut outstanding, mut answered) = (0, 0);
    let mut codes = BTreeMap::new();
    let mut buf = vec![0u8; 65_536];
    while answered < total {
        while outstanding < WINDOW && next < users.end {
            let msg = register(registrar, me, next, cseq);
            client.send_to(msg.as_bytes(), proxy).unwrap();
            next += 1;
            outstanding += 1;
        }
        let Ok((n, _)) = client.recv_from(&mut buf) else {
            panic!(
                "no answer within {ANSWER:?}: {answered} of {total} answered, {codes:?}\n{}",
                rb.logs()
            );
        };
        let answer = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {answer}"));
        if code == 503 {
            assert_eq!(header(&answer, "Retry-After"), Some("60"), "{answer}");
        }
        *codes.entry(code).or_insert(0) += 1;
        outstanding -= 1;
        answered += 1;
    }
    let wall = started.elapsed();
    let spent = cpu_micros(rb.pid(), ticks) - cpu_before;
    Phase {
        codes,
        micros_per_register: spent as f64 / total as f64,
        wall,
    }
}

#[test]
fn registers_beyond_the_client_cache_size_get_503_at_constant_cost() {
    let capacity: usize = std::env::var("ROUNDABOUT_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let excess = capacity * 3 / 10;
    let again = capacity / 10;
    let registrar = Registrar::start("127.0.30.2");
    let trusted = format!("127.0.30.2::{}:udp:", registrar.addr.port());
    let size = capacity.to_string();
    let flags = [
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-client-cache-size",
        &size,
        // A debug line per message would cost more than the messages.
        "-log-level",
        "info",
    ];
    let rb = Roundabout::start(&[&flags[..], &UNTHROTTLED].concat());
    let proxy = rb.addr("udp");
    let client = UdpSocket::bind("127.0.30.3:0").unwrap();
    client.set_read_timeout(Some(ANSWER)).unwrap();
    let ticks = clock_ticks_per_second();
    let run = |users: Range<usize>, cseq| {
        run_phase(&client, proxy, registrar.addr, users, cseq, &rb, ticks)
    };

    // The first tenth warms the proxy up (allocator, maps growing); it is not measured.
    let warm = run(0..again, 1);
    let filling = run(again..capacity, 1);
    let full = run(capacity..capacity + excess, 1);
    let rebinding = run(0..again, 2);
    let report = [
        ("filling the cache (200)", &filling),
        ("beyond it (503)", &full),
        ("bound users re-registering while full (200)", &rebinding),
    ];
    for (what, phase) in report {
        println!(
            "{what}: {:.1} µs of proxy CPU per REGISTER, {:?} in {:.1} s",
            phase.micros_per_register,
            phase.codes,
            phase.wall.as_secs_f64()
        );
    }

    let only = |code: u16, n: usize| BTreeMap::from([(code, n)]);
    assert_eq!(warm.codes, only(200, again));
    assert_eq!(
        filling.codes,
        only(200, capacity - again),
        "every binding kept is granted"
    );
    assert_eq!(
        full.codes,
        only(503, excess),
        "every REGISTER beyond the cache refused"
    );
    assert_eq!(
        rebinding.codes,
        only(200, again),
        "bound users re-register when full"
    );
    assert_eq!(
        registrar.registers.load(Ordering::Relaxed),
        capacity + again,
        "no refused REGISTER reached the registrar"
    );
    assert!(
        rb.wait_for_log(
            "client cache full: REGISTER of a new user refused with 503",
            ANSWER
        ),
        "{}",
        rb.logs()
    );
    let base = filling.micros_per_register;
    for (what, phase) in &report[1..] {
        assert!(
            phase.micros_per_register <= 3.0 * base,
            "{what}: {:.1} µs per REGISTER, filling took {base:.1}",
            phase.micros_per_register
        );
    }
}

//! A lossy UDP leg: a relay between Roundabout and a real UDP server that drops a seeded
//! fraction of the datagrams in each direction, so a test can show what a lost datagram does
//! to a transaction (RFC 3261 §17.1.1.2: only the UDP hop can retransmit).
//!
//! Roundabout is given the relay's address as its trusted server. Datagrams arriving there are
//! sent on to the server from a second socket; the server's datagrams arriving on that second
//! socket are sent back *from the first address*, to whoever last sent there, so to Roundabout
//! the server's answers come from where its requests went.

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A relay outlives no test: past this its threads stop even if it was never dropped.
const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A seeded PRNG (splitmix64): the same seed gives the same drop pattern on every run and
/// machine, with no crate for it.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100 (0 never, 100 always).
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }
}

/// What one direction of the relay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub forwarded: u64,
    pub dropped: u64,
}

/// What the relay did, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Roundabout → server.
    pub to_server: Direction,
    /// Server → Roundabout.
    pub to_client: Direction,
}

impl fmt::Display for RelayCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            to_server,
            to_client,
        } = self;
        write!(
            f,
            "to server {} forwarded, {} dropped; to client {} forwarded, {} dropped",
            to_server.forwarded, to_server.dropped, to_client.forwarded, to_client.dropped
        )
    }
}

#[derive(Default)]
struct Counters {
    to_server_forwarded: AtomicU64,
    to_server_dropped: AtomicU64,
    to_client_forwarded: AtomicU64,
    to_client_dropped: AtomicU64,
}

/// A running relay; its threads stop (and its sockets close) on drop.
pub struct LossyRelay {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LossyRelay {
    /// Binds the client-facing socket on `ip` (ephemeral port) and a server-facing one beside
    /// it, and relays to `server`, dropping `loss_percent` % of the datagrams each way; each
    /// direction draws from its own PRNG seeded from `seed`.
    pub fn start(ip: &str, server: SocketAddr, loss_percent: u32, seed: u64) -> LossyRelay {
        assert!(loss_percent <= 100, "a loss of {loss_percent} %");
        let front = Arc::new(UdpSocket::bind((ip, 0)).unwrap());
        let back = Arc::new(UdpSocket::bind((ip, 0)).unwrap());
        for socket in [&front, &back] {
            socket.set_read_timeout(Some(POLL)).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let until = Instant::now() + MAX_LIFETIME;

        let to_server = {
            let (front, back, counters, stop, client) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&counters),
                Arc::clone(&stop),
                Arc::clone(&client),
            );
            let mut rng = SplitMix64::new(seed);
            std::thread::spawn(move || {
                relay(&front, &stop, until, |data, from| {
                    *client.lock().unwrap() = Some(from);
                    if rng.chance(loss_percent) {
                        counters.to_server_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = back.send_to(data, server);
                        counters.to_server_forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
        };
        let to_client = {
            let (front, back, counters, stop) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&counters),
                Arc::clone(&stop),
            );
            // A different stream than the other direction's, so drops each way are independent.
            let mut rng = SplitMix64::new(seed ^ 0x5555_5555_5555_5555);
            std::thread::spawn(move || {
                relay(&back, &stop, until, |data, from| {
                    let to = *client.lock().unwrap();
                    let Some(to) = to.filter(|_| from == server) else {
                        return; // not the server's, or nobody to send it to yet
                    };
                    if rng.chance(loss_percent) {
                        counters.to_client_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = front.send_to(data, to);
                        counters.to_client_forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
        };
        LossyRelay {
            addr,
            counters,
            stop,
            threads: vec![to_server, to_client],
        }
    }

    /// Where Roundabout must send: the server's address as far as it knows.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counts(&self) -> RelayCounts {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RelayCounts {
            to_server: Direction {
                forwarded: load(&c.to_server_forwarded),
                dropped: load(&c.to_server_dropped),
            },
            to_client: Direction {
                forwarded: load(&c.to_client_forwarded),
                dropped: load(&c.to_client_dropped),
            },
        }
    }
}

/// Receives on `socket` until stopped or `until`, handing each datagram and its source on.
fn relay(
    socket: &UdpSocket,
    stop: &AtomicBool,
    until: Instant,
    mut each: impl FnMut(&[u8], SocketAddr),
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            each(&buf[..n], from);
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

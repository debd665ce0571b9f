//! A UDP SIP server that answers every request with 200, for tests that need a registrar or a
//! plain UAS on the far side of Roundabout and want to see what reached it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::UdpPeer;

/// A UDP SIP server on its own thread: answers every request with 200 (Via, From, To with a
/// tag, Call-ID and CSeq copied; a REGISTER's Contacts echoed with an expiry) and hands each
/// request it received to the test.
pub struct UdpServer {
    pub addr: SocketAddr,
    requests: mpsc::Receiver<String>,
    seen: Vec<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(ip: &str) -> UdpServer {
        let peer = UdpPeer::bind(ip);
        let addr = peer.addr();
        peer.socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, requests) = mpsc::channel();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = peer.socket.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.starts_with("SIP/2.0 ") {
                    continue;
                }
                if let Some(ok) = answer_200(&msg) {
                    peer.send(from, &ok);
                }
                let _ = tx.send(msg);
            }
        });
        UdpServer {
            addr,
            requests,
            seen: Vec::new(),
            stop,
            thread: Some(thread),
        }
    }

    /// The next request with `method` (requests of other methods are kept in `seen`).
    pub fn wait_request(&mut self, method: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let prefix = format!("{method} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(left) {
                Ok(msg) => {
                    self.seen.push(msg.clone());
                    if msg.starts_with(&prefix) {
                        return msg;
                    }
                }
                Err(_) => panic!(
                    "no {method} reached the UDP server within {timeout:?}; it saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every request received so far.
    pub fn all(&mut self) -> &[String] {
        while let Ok(msg) = self.requests.try_recv() {
            self.seen.push(msg);
        }
        &self.seen
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The 200 OK for a request, as a registrar or a plain UAS would send it.
pub fn answer_200(request: &str) -> Option<String> {
    let head = request.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let register = lines.next()?.starts_with("REGISTER ");
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out.push_str(line),
            "to" | "t" if value.contains(";tag=") => out.push_str(line),
            "to" | "t" => out.push_str(&format!("{line};tag=udpserver")),
            "contact" | "m" if register && value.contains("expires=") => out.push_str(line),
            "contact" | "m" if register => out.push_str(&format!("{line};expires=600")),
            _ => continue,
        }
        out.push_str("\r\n");
    }
    out.push_str("Server: roundabout-e2e udp server\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}

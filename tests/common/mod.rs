//! Shared helpers for the end-to-end tests: the real `roundabout` binary on ephemeral ports,
//! SIPp, and raw SIP peers on loopback. Everything is bounded in time and stopped by PID.

#![allow(dead_code)]
// each test binary uses a different subset
// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod browser;
pub mod certs;
pub mod dnsmasq;
pub mod haproxy;
pub mod http;
pub mod kamailio;
pub mod lossy;
pub mod node;
pub mod process;
pub mod rtpengine;
pub mod text;
pub mod udp_server;

#[allow(unused_imports)] // as for dead code: each test binary uses a different subset
pub use text::{first, header, ok_for, ok_to_invite, uri_of, vias};

use process::{poll_until, wait_for_exit};

pub const BIN: &str = env!("CARGO_BIN_EXE_roundabout");

/// Why `program` cannot be used, or `None` when it is on the PATH.
pub fn missing(program: &str) -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("{program} is not installed"))
}

/// Whether an external program is there; when it is not, see [`peer_missing`].
pub fn require(program: &str) -> bool {
    match missing(program) {
        None => true,
        Some(reason) => {
            peer_missing(&reason);
            false
        }
    }
}

/// A peer the running test needs is missing, for `reason`: a failure under `CI=true`, where
/// every peer must be there; elsewhere the test is [`skipped`] and returns early.
pub fn peer_missing(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, and under CI=true every peer is required (scripts/test.sh installs them)"
    );
    skipped(reason);
}

/// Says that the running test returns without checking what it is for, where nobody can miss
/// it: a passing test's `eprintln!` is captured by the harness and never shown, so the line
/// goes straight to the process's stderr, and to the file named by `TEST_SKIP_LOG` when set
/// (scripts/test.sh lists that file at the end of the run).
pub fn skipped(reason: &str) {
    let thread = std::thread::current();
    // The harness names each test's thread after the test.
    let test = thread
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("a test");
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("TEST_SKIP_LOG") {
        // Appends of one short line each: tests of several binaries never interleave within one.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot note the skip in {log:?}: {error}"
            );
        }
    }
}

/// Flags that turn the flood guards off (`-rate-limit`, `-max-new-requests`), for tests that
/// send faster than a client would.
pub const UNTHROTTLED: [&str; 4] = ["-rate-limit", "0", "-max-new-requests", "0"];

/// A running `roundabout` with its log captured.
pub struct Roundabout {
    child: Child,
    output: CapturedLines,
    pub listening: HashMap<String, SocketAddr>,
    _state: tempfile::TempDir,
}

impl Roundabout {
    /// The binary with the tests' defaults: ephemeral ports (`-udp-port 0 -tcp-port 0 -ws-port
    /// 0`), debug log, `-drain-timeout 1`, its state in `state`; a flag given in `args`
    /// replaces its default.
    pub fn command<S: AsRef<str>>(args: &[S], state: &Path) -> Command {
        let defaults = [
            ("-local-ip", "127.0.0.1"),
            ("-log-level", "debug"),
            ("-udp-port", "0"),
            ("-tcp-port", "0"),
            ("-ws-port", "0"),
            ("-drain-timeout", "1"),
        ];
        let mut command = Command::new(BIN);
        for (flag, value) in defaults {
            if !args.iter().any(|arg| arg.as_ref() == flag) {
                command.args([flag, value]);
            }
        }
        command.arg("-state-dir").arg(state);
        command.args(args.iter().map(AsRef::as_ref));
        command.env_remove("RUST_LOG");
        command
    }

    /// Starts Roundabout with `server` as a trusted server known by `fqdns`, plus `args`.
    pub fn serving(server: &UdpPeer, fqdns: &str, args: &[&str]) -> Roundabout {
        let trusted = server.trusted_server(fqdns);
        Roundabout::start(&[&["-trusted-server", trusted.as_str()][..], args].concat())
    }

    /// Starts [`Roundabout::command`] with `args` and waits until every listener has said where
    /// it listens (so `-log-level` must be info or finer).
    pub fn start<S: AsRef<str>>(args: &[S]) -> Roundabout {
        let state = tempfile::tempdir().unwrap();
        let mut child = Roundabout::command(args, state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("roundabout starts");
        let output = CapturedLines::new(child.stderr.take().unwrap());
        let mut rb = Roundabout {
            child,
            output,
            listening: HashMap::new(),
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rb.output.next_line(left) {
                Ok(line) if line.contains(" ready") => break,
                Ok(line) => {
                    if let Some((t, addr)) = parse_listening(&line) {
                        rb.listening.insert(t, addr);
                    }
                }
                Err(_) => panic!("roundabout did not start:\n{}", rb.logs()),
            }
        }
        rb
    }

    pub fn addr(&self, transport: &str) -> SocketAddr {
        *self
            .listening
            .get(transport)
            .unwrap_or_else(|| panic!("no {transport} listener:\n{}", self.logs()))
    }

    pub fn port(&self, transport: &str) -> u16 {
        self.addr(transport).port()
    }

    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// Waits for a log line containing `needle` (lines already seen count too).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.output.wait_for(needle, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the proxy.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for the proxy to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for_exit(&mut self.child, Instant::now() + timeout)?.code()
    }
}

impl Drop for Roundabout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's output read on a thread: every line is kept in a log and also handed over one by
/// one, so a test can both wait for a line and show the whole log on failure.
pub struct CapturedLines {
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

impl CapturedLines {
    pub fn new(output: impl std::io::Read + Send + 'static) -> CapturedLines {
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        CapturedLines { log, lines }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The next line not yet handed over, waiting at most `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// Waits for a line containing `needle` (lines already read count too).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            let _ = self.next_line(Duration::from_millis(50));
        }
        self.text().contains(needle)
    }
}

/// `listening transport=udp addr=127.0.0.1:40123` → ("udp", addr).
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let rest = &line[line.find("listening transport=")? + "listening transport=".len()..];
    let (transport, rest) = rest.split_once(' ')?;
    let addr = rest.strip_prefix("addr=")?.split_whitespace().next()?;
    Some((transport.to_string(), addr.parse().ok()?))
}

/// A port that was free a moment ago on `ip` for both UDP and TCP (SIPp cannot bind port 0).
pub fn free_port(ip: &str) -> u16 {
    loop {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// Waits until some process has a UDP socket bound to `addr` (IPv4), as `/proc/net/udp` lists
/// it: a server started as a child (SIPp) is ready only then, and a probe bind would race it.
pub fn wait_udp_bound(addr: SocketAddr, timeout: Duration) -> bool {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}: only IPv4 is looked up");
    };
    // The kernel writes the address as the host-order hex of its network-order bytes.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let bound = || {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        table
            .lines()
            .skip(1)
            .any(|line| line.split_whitespace().nth(1) == Some(wanted.as_str()))
            .then_some(())
    };
    poll_until(Instant::now() + timeout, Duration::from_millis(20), bound).is_some()
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

/// A SIPp process, killed on drop, with its message trace in a temp dir.
pub struct Sipp {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts `sipp` with the common bounded options plus `args` (a `-timeout` in `args`
    /// replaces the default 30 s).
    pub fn spawn(args: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("messages.log");
        let errors = dir.path().join("errors.log");
        let timeout: &[&str] = if args.contains(&"-timeout") {
            &[]
        } else {
            &["-timeout", "30"]
        };
        let child = Command::new("sipp")
            .args(args)
            .args(timeout)
            .args(["-nostdin", "-trace_msg", "-message_file"])
            .arg(&trace)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp starts");
        Sipp { child, dir }
    }

    /// SIPp playing `scenario_name` (a file of `tests/scenarios`) from `ip:port`, over
    /// `transport` (`udp` or `tcp`, one socket); the rest is added to the [`SippArgs`].
    pub fn run(scenario_name: &str, ip: &str, port: u16, transport: &str) -> SippArgs {
        let mode = match transport {
            "udp" => "u1",
            "tcp" => "t1",
            other => panic!("SIPp has no transport {other} here"),
        };
        let scenario = scenario(scenario_name).display().to_string();
        let args = [
            "-sf",
            &scenario,
            "-i",
            ip,
            "-p",
            &port.to_string(),
            "-t",
            mode,
        ];
        SippArgs {
            args: args.map(String::from).into(),
        }
    }

    /// Waits for SIPp to finish; its exit code (0: every call succeeded).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        wait_for_exit(&mut self.child, Instant::now() + timeout)?.code()
    }

    /// Every message SIPp received, as it logged them.
    pub fn received(&self) -> Vec<String> {
        self.trace("message received")
    }

    /// Every message SIPp sent.
    pub fn sent(&self) -> Vec<String> {
        self.trace("message sent")
    }

    fn trace(&self, kind: &str) -> Vec<String> {
        let trace =
            std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default();
        trace
            .split("----------------------------------------------- ")
            .filter(|block| block.lines().nth(1).is_some_and(|l| l.contains(kind)))
            // "<timestamp>\n<T> message received [N] bytes :\n\n<message>" (sent: "(N bytes):").
            .filter_map(|block| {
                let (_, rest) = block.split_once('\n')?;
                let (_, msg) = rest.split_once('\n')?;
                Some(msg.trim_start_matches('\n').to_string())
            })
            .flat_map(|text| split_stream(&text))
            .collect()
    }

    /// How many messages SIPp's `-lost` threw away: (on receiving, on sending), as its trace
    /// tells them.
    pub fn lost(&self) -> (usize, usize) {
        let trace =
            std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default();
        (
            trace.matches(" lost (recv)").count(),
            trace
                .matches(" message voluntary lost (while sending)")
                .count(),
        )
    }

    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default()
    }
}

/// The messages in what SIPp logged as one: from a stream it logs what one read gave, and that
/// may hold several (a 2xx retransmission and the answer to a BYE, say), each ended by its
/// Content-Length (RFC 3261 §18.3).
fn split_stream(text: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut rest = text;
    while let Some(head_end) = rest.find("\r\n\r\n") {
        let head = &rest[..head_end];
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        let end = (head_end + 4 + length).min(rest.len());
        let next = &rest[end..];
        // Only a next start line begins another message; anything else (the log's own line
        // ends) stays with this one, as before.
        let another = next.starts_with("SIP/2.0 ")
            || next
                .split(' ')
                .nth(2)
                .is_some_and(|v| v.starts_with("SIP/2.0\r\n"));
        if !another {
            break;
        }
        messages.push(rest[..end].to_string());
        rest = next;
    }
    messages.push(rest.to_string());
    messages
}

/// SIPp at `ip:port` sending `calls` MESSAGEs (`message_uac.xml`) to `ruri` through `rb`'s UDP
/// listener, run to the end: each must get its 200, or the test fails with SIPp's errors, what
/// it received and the proxy's log.
pub fn sipp_messages(rb: &Roundabout, ip: &str, port: u16, ruri: &str, calls: usize) -> Sipp {
    let proxy = rb.addr("udp");
    let mut uac = Sipp::run("message_uac.xml", ip, port, "udp")
        .to(proxy)
        .via(proxy)
        .key("ruri", ruri)
        .calls(calls)
        .rate(10)
        .spawn();
    let code = uac.wait(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(0),
        "SIPp MESSAGE to {ruri} failed\nerrors:\n{}\nreceived:\n{:#?}\nproxy log:\n{}",
        uac.errors(),
        uac.received(),
        rb.logs()
    );
    uac
}

/// A SIPp command line being put together; [`SippArgs::spawn`] starts it.
pub struct SippArgs {
    args: Vec<String>,
}

impl SippArgs {
    /// The remote host: where a UAC sends (unless [`SippArgs::via`] says otherwise).
    pub fn to(mut self, remote: impl std::fmt::Display) -> SippArgs {
        self.args.push(remote.to_string());
        self
    }

    /// Every request goes to `proxy` (`-rsa`), whatever the scenario addresses.
    pub fn via(self, proxy: SocketAddr) -> SippArgs {
        self.arg("-rsa", proxy)
    }

    /// `-key name value`: `[name]` in the scenario.
    pub fn key(mut self, name: &str, value: &str) -> SippArgs {
        self.args.extend(["-key", name, value].map(String::from));
        self
    }

    /// Ends after this many calls (`-m`).
    pub fn calls(self, calls: impl std::fmt::Display) -> SippArgs {
        self.arg("-m", calls)
    }

    /// Starts this many calls per second (`-r`).
    pub fn rate(self, rate: impl std::fmt::Display) -> SippArgs {
        self.arg("-r", rate)
    }

    /// Any other option with its value.
    pub fn arg(mut self, option: &str, value: impl std::fmt::Display) -> SippArgs {
        self.args.extend([option.to_string(), value.to_string()]);
        self
    }

    pub fn spawn(&self) -> Sipp {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Sipp::spawn(&args)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw UDP SIP peer for byte-level checks.
pub struct UdpPeer {
    pub socket: UdpSocket,
}

impl UdpPeer {
    pub fn bind(ip: &str) -> UdpPeer {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        UdpPeer { socket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// This peer as a `-trusted-server` dataset on UDP, known by `fqdns` (`/`-separated).
    pub fn trusted_server(&self, fqdns: &str) -> String {
        let addr = self.addr();
        format!("{}:{fqdns}:{}:udp:", addr.ip(), addr.port())
    }

    pub fn send(&self, to: SocketAddr, msg: &str) {
        self.socket.send_to(msg.as_bytes(), to).unwrap();
    }

    /// The next datagram, or `None` after the read timeout.
    pub fn recv(&self) -> Option<String> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next datagram within `wait` instead of the read timeout, which then stays as it was:
    /// `None` shows that nothing more came.
    pub fn recv_within(&self, wait: Duration) -> Option<String> {
        let timeout = self.socket.read_timeout().unwrap();
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let msg = self.recv();
        self.socket.set_read_timeout(timeout).unwrap();
        msg
    }
}

/// A TCP connection to `to` from exactly `local` (port 0: any), with a receive buffer of
/// `receive_buffer` bytes when given (set before the handshake, so the window it advertises
/// stays that small). `SO_REUSEADDR` lets a test connect again from the same address and port.
pub fn tcp_from(local: SocketAddr, to: SocketAddr, receive_buffer: Option<usize>) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_reuse_address(true).unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

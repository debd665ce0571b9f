//! rtpengine (Debian `rtpengine-daemon`) in userspace: no kernel forwarding table
//! (`--table=-1`), media on loopback, the ng control protocol on a free loopback UDP port;
//! in the foreground, logging to stderr, killed by its PID on drop.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roundabout::media::bencode::{self, Value};

use super::process::poll_until;
use super::{free_port, CapturedLines};

/// What a browser offers: audio over DTLS-SRTP with ICE, RTCP multiplexed.
pub const WEBRTC_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 40000 UDP/TLS/RTP/SAVPF 111 0\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host generation 0\r\n\
a=ice-ufrag:Wb3r\r\n\
a=ice-pwd:0aJvZdXUr8GRmgg0gqNz4Zbm\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 9C:2F:63:3C:12:8B:5E:2A:4F:0E:77:6A:21:90:3B:DE:58:0C:11:7F:2E:44:86:A1:BB:05:CD:72:19:E3:60:4A\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A ping under a cookie of the helper's own, to see that rtpengine answers.
const PING: &[u8] = b"ready d7:command4:pinge";
const PONG: &[u8] = b"ready d6:result4:ponge";

/// A running rtpengine.
pub struct Rtpengine {
    child: Child,
    output: CapturedLines,
    /// Where it takes ng requests.
    pub ng: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rtpengine {
    /// Starts rtpengine and waits (at most 10 s) until it answers a ping.
    pub fn start() -> Rtpengine {
        let ip = "127.0.0.1";
        let ng: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("rtpengine")
            // Not /etc/rtpengine/rtpengine.conf: only these flags.
            .arg("--config-file=none")
            .arg("--table=-1")
            .arg(format!("--interface={ip}"))
            .arg(format!("--listen-ng={ng}"))
            // Below Linux's ephemeral ports, so media ports never take one that another
            // test's free_port has just found free.
            .args(["--port-min=20000", "--port-max=29999"])
            // A deleted call leaves `list` at once (the default keeps it 30 s).
            .arg("--delete-delay=0")
            .arg("--num-threads=2")
            .args(["--foreground", "--log-stderr"])
            .arg("--pidfile")
            .arg(dir.path().join("rtpengine.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rtpengine starts");
        let output = CapturedLines::new(child.stderr.take().unwrap());
        let mut rtpengine = Rtpengine {
            child,
            output,
            ng,
            _dir: dir,
        };
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let answered = poll_until(deadline, Duration::from_millis(20), || {
            if let Ok(Some(status)) = rtpengine.child.try_wait() {
                panic!("rtpengine exited ({status}):\n{}", rtpengine.logs());
            }
            socket.send_to(PING, ng).ok()?;
            let mut buf = [0; 64];
            let len = socket.recv(&mut buf).ok()?;
            (&buf[..len] == PONG).then_some(())
        });
        assert!(
            answered.is_some(),
            "rtpengine does not answer a ping on {ng}:\n{}",
            rtpengine.logs()
        );
        rtpengine
    }

    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// The calls rtpengine still holds once it holds none or `timeout` has passed (a
    /// `delete` is sent beside the message that ends a call, so it may come a moment later).
    pub fn calls_left_within(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        poll_until(deadline, Duration::from_millis(50), || {
            self.calls().is_empty().then_some(())
        });
        self.calls()
    }

    /// The Call-IDs of the calls rtpengine holds now (the ng `list` command).
    pub fn calls(&self) -> Vec<String> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(b"calls d7:command4:liste", self.ng).unwrap();
        let mut buf = vec![0; 65_536];
        let len = socket.recv(&mut buf).expect("rtpengine answers list");
        let dict = buf[..len]
            .strip_prefix(b"calls ")
            .expect("the answer carries the cookie");
        let Ok(Value::Dict(answer)) = bencode::decode(&Bytes::copy_from_slice(dict)) else {
            panic!("list answered with no dictionary");
        };
        let Some(Value::List(calls)) = answer.get(&b"calls"[..]) else {
            panic!("list answered with no calls");
        };
        calls
            .iter()
            .filter_map(|call| call.as_bytes())
            .map(|call| String::from_utf8_lossy(call).into_owned())
            .collect()
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

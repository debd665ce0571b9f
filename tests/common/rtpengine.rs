//! rtpengine (Debian `rtpengine-daemon`) in userspace: no kernel forwarding table
//! (`--table=-1`), media on loopback, the ng control protocol on a free loopback UDP port;
//! in the foreground, logging to stderr, killed by its PID on drop.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::poll_until;
use super::{free_port, CapturedLines};

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
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

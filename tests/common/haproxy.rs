//! HAProxy (Debian `haproxy`) as the L4 load balancer in front of Roundabout: TCP mode, each
//! frontend passing its connections to one Roundabout listener with a PROXY protocol header.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::poll_until;
use super::{free_port, CapturedLines};

/// Which PROXY protocol header HAProxy writes for a frontend.
#[derive(Clone, Copy, Debug)]
pub enum Header {
    V1,
    V2,
}

impl Header {
    fn option(self) -> &'static str {
        match self {
            Header::V1 => "send-proxy",
            Header::V2 => "send-proxy-v2",
        }
    }
}

/// A frontend: where clients connect, the Roundabout listener behind it, the header written.
#[derive(Debug)]
pub struct Frontend {
    pub listen: SocketAddr,
    backend: SocketAddr,
    header: Header,
}

/// A running HAProxy, killed by its PID on drop.
pub struct Haproxy {
    child: Child,
    output: CapturedLines,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy with one frontend per `(backend, header)` on `listen_ip`, connecting to
    /// Roundabout from `source_ip`; waits (at most 10 s) until every frontend accepts.
    pub fn start(
        listen_ip: &str,
        source_ip: &str,
        backends: &[(SocketAddr, Header)],
    ) -> (Haproxy, Vec<Frontend>) {
        let frontends: Vec<Frontend> = backends
            .iter()
            .map(|&(backend, header)| Frontend {
                listen: format!("{listen_ip}:{}", free_port(listen_ip))
                    .parse()
                    .unwrap(),
                backend,
                header,
            })
            .collect();
        let mut cfg = String::from(
            "global\n    log stderr format raw local0 info\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n\
             \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n",
        );
        for (n, frontend) in frontends.iter().enumerate() {
            cfg.push_str(&format!(
                "frontend f{n}\n    bind {}\n    default_backend b{n}\n\
                 backend b{n}\n    server rb{n} {} {} source {source_ip}\n",
                frontend.listen,
                frontend.backend,
                frontend.header.option()
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c rejects the configuration:\n{}{}\n{cfg}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let output = CapturedLines::new(child.stderr.take().unwrap());
        let haproxy = Haproxy {
            child,
            output,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for frontend in &frontends {
            let listening = poll_until(deadline, Duration::from_millis(20), || {
                TcpStream::connect(frontend.listen).ok()
            });
            assert!(
                listening.is_some(),
                "haproxy does not listen on {}:\n{}",
                frontend.listen,
                haproxy.logs()
            );
        }
        (haproxy, frontends)
    }

    pub fn logs(&self) -> String {
        self.output.text()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

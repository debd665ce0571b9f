//! dnsmasq (Debian `dnsmasq-base`) as the tests' DNS server: in the foreground on a free loopback
//! port, no configuration file, no upstream servers and no `/etc/hosts`, authoritative for
//! one test domain, every record given on its command line; queries logged to stderr; killed
//! by its PID on drop. And sofia-sip's `sip-dig` (Debian `sofia-sip-bin`), which resolves a SIP
//! URI by RFC 3263 through it: the cross-check of what Roundabout should find.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::run_to_exit;
use super::{free_port, wait_udp_bound, CapturedLines};

/// A record dnsmasq serves, as its command line writes it.
pub enum Record {
    /// `order`, `preference`, the service (`SIP+D2U`) and the SRV name it leads to.
    Naptr {
        name: String,
        order: u16,
        preference: u16,
        service: String,
        replacement: String,
    },
    /// An SRV record: its name (`_sip._udp.example.test`), target, port, priority, weight.
    Srv {
        name: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
    /// An A record.
    Host { name: String, ip: String },
}

impl Record {
    fn arg(&self) -> String {
        match self {
            Record::Naptr {
                name,
                order,
                preference,
                service,
                replacement,
            } => format!("--naptr-record={name},{order},{preference},s,{service},,{replacement}"),
            Record::Srv {
                name,
                target,
                port,
                priority,
                weight,
            } => format!("--srv-host={name},{target},{port},{priority},{weight}"),
            Record::Host { name, ip } => format!("--host-record={name},{ip}"),
        }
    }
}

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    output: CapturedLines,
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    /// A resolv.conf naming it, for `sip-dig`.
    resolv_conf: tempfile::NamedTempFile,
}

impl Dnsmasq {
    /// Starts dnsmasq serving `records` for `domain` (and answering nothing else) and waits
    /// (at most 10 s) until its UDP socket is bound.
    pub fn start(domain: &str, records: &[Record]) -> Dnsmasq {
        let ip = "127.0.0.1";
        let port = free_port(ip);
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let mut child = Command::new("dnsmasq")
            .args(["--no-daemon", "--conf-file=/dev/null", "--pid-file="])
            .arg(format!("--port={port}"))
            .arg(format!("--listen-address={ip}"))
            .args(["--bind-interfaces", "--no-resolv", "--no-hosts"])
            // Names of the domain without a record get NXDOMAIN or NODATA, not REFUSED.
            .arg(format!("--local=/{domain}/"))
            .args(["--log-queries", "--log-facility=-"])
            .args(records.iter().map(Record::arg))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq starts");
        let output = CapturedLines::new(child.stderr.take().unwrap());
        let mut resolv_conf = tempfile::NamedTempFile::new().unwrap();
        // sip-dig's usage names an `@dnsserver` argument that its source ignores: it takes
        // its servers from the file SRESOLV_CONF names, whose `port` line (sofia-sip's own;
        // glibc's resolv.conf has none) reaches a server off port 53.
        std::io::Write::write_all(
            &mut resolv_conf,
            format!("nameserver {ip}\nport {port}\n").as_bytes(),
        )
        .unwrap();
        let mut dnsmasq = Dnsmasq {
            child,
            output,
            addr,
            resolv_conf,
        };
        if !wait_udp_bound(addr, Duration::from_secs(10)) {
            let exited = dnsmasq.child.try_wait().ok().flatten();
            panic!(
                "dnsmasq does not listen on {addr} (exit: {exited:?}):\n{}",
                dnsmasq.logs()
            );
        }
        dnsmasq
    }

    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// Waits until dnsmasq has logged `query` (`query[A] example.test`).
    pub fn wait_for_query(&self, query: &str, timeout: Duration) -> bool {
        self.output.wait_for(&format!("{query} from "), timeout)
    }

    /// The queries dnsmasq has logged so far, as `query[SRV] _sip._udp.example.test`.
    pub fn queries(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter_map(|line| Some(line[line.find("query[")?..].to_owned()))
            .map(|query| match query.split_once(" from ") {
                Some((query, _)) => query.to_owned(),
                None => query,
            })
            .collect()
    }

    /// What `sip-dig` finds for `uri` through this server, best first: `(transport, address)`.
    pub fn sip_dig(&self, uri: &str) -> Vec<(String, SocketAddr)> {
        let finished = run_to_exit(
            Command::new("sip-dig")
                .arg(uri)
                .env("SRESOLV_CONF", self.resolv_conf.path()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(
            finished.success(),
            "sip-dig {uri}: {}{}",
            finished.stdout,
            finished.stderr
        );
        // `\t1 1.000 udp 5070 127.0.5.1`: preference, weight, transport, port, address.
        finished
            .stdout
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [_, _, transport, port, ip] = fields[..] else {
                    return None;
                };
                Some((transport.to_owned(), format!("{ip}:{port}").parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

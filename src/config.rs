//! Command-line arguments turned into a validated, immutable [`Config`]. No sockets here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::transport::Transport;

/// Everything the daemon needs, checked before any socket is bound.
#[derive(Clone, Debug)]
pub struct Config {
    /// `-local-ip`: advertised in Via and Contact, recognised in R-URIs.
    pub local_ip: IpAddr,
    /// `-local-fqdn`: recognised in R-URIs; written into Contact with `-contact-header-fqdn`.
    pub local_fqdn: Option<String>,
    /// `-bind-ip`: the address listeners bind (default `-local-ip`).
    pub bind_ip: IpAddr,
    pub strict_host: bool,
    pub strict_client: bool,
    pub ack_ruri: bool,
    pub contact_header_fqdn: bool,
    pub trusted_servers: TrustedServers,
    pub trusted_clients: ClientRanges,
    /// `-default-sip-server`: index into `trusted_servers`.
    pub default_sip_server: Option<usize>,
    /// `-default-network`: transport for untrusted R-URI hosts without `;transport=`.
    pub default_network: Transport,
    pub ports: Ports,
    /// `-tls-cert` and `-tls-key`, both or neither.
    pub tls: Option<TlsFiles>,
    /// `-tls-ca`: extra roots for outbound TLS and WSS.
    pub tls_ca: Option<PathBuf>,
    /// `-token-key`, or the key kept in `-state-dir`.
    pub token_key: [u8; 32],
    pub limits: Limits,
    /// `-drain-timeout`: after SIGTERM, how long responses and in-dialog requests still flow.
    pub drain_timeout: Duration,
}

/// Listening port per transport; `None` is `off`, `Some(0)` an ephemeral port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
    pub ws: Option<u16>,
    pub wss: Option<u16>,
}

impl Ports {
    #[must_use]
    pub fn get(&self, transport: Transport) -> Option<u16> {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
            Transport::Ws => self.ws,
            Transport::Wss => self.wss,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Resource limits; each has a flag and a sane default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest SIP message accepted on any transport (default 64 KiB).
    pub max_message: usize,
    /// Open connections of all stream transports together (default 10 000).
    pub max_connections: usize,
    /// Open connections from one remote IP address (default 100).
    pub max_connections_per_ip: usize,
    /// A connection with no traffic for this long is closed (default 300 s).
    pub idle_timeout: Duration,
    /// Time allowed for a TLS or WebSocket handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// A message started on a stream must be complete within this time (default 30 s).
    pub read_timeout: Duration,
    /// WebSocket ping interval on idle WS/WSS flows (default 30 s).
    pub ws_ping_interval: Duration,
    /// Bindings the client cache holds at most (default 100 000).
    pub client_cache_size: usize,
    /// Messages queued per connection before sends to it are refused (default 1024).
    pub send_queue: usize,
}

/// One `-trusted-server` dataset: `ip-address:fqdn-list:port:network-protocol:route-list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedServer {
    pub ip: IpAddr,
    /// Every name under which this server may appear in an R-URI (lower-cased).
    pub fqdns: Vec<String>,
    pub port: u16,
    pub transport: Transport,
    /// Next hops to use instead of the server's address, in order.
    pub routes: Vec<RouteHop>,
}

impl TrustedServer {
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The host to write into an R-URI for this server: its first FQDN, else its IP.
    #[must_use]
    pub fn uri_host(&self) -> String {
        match self.fqdns.first() {
            Some(name) => name.clone(),
            None => match self.ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
        }
    }
}

/// A route-list entry: an IP address or a host name (lower-cased), no port (`:` separates fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteHop {
    Ip(IpAddr),
    Name(String),
}

/// The `-trusted-server` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedServers {
    pub servers: Vec<TrustedServer>,
}

/// The `-trusted-client-ip` ranges, reduced to their networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientRanges {
    pub ranges: Vec<IpNet>,
}

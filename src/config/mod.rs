//! Command-line arguments turned into a validated, immutable [`Config`]. No sockets here.
//!
//! This module holds the types and [`Config::from_args`], which checks the flags against each
//! other; `flags` declares the flags themselves, `servers` is the `-trusted-server` dataset
//! grammar, `clients` the `-trusted-client-ip` ranges, `token_key` the contact token key file
//! and `describe` the start-up description.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::sip::host::is_host_name;
use crate::sip::Transport;

mod clients;
mod describe;
mod flags;
mod servers;
mod token_key;

pub use clients::{ClientEntryError, ClientRanges};
pub use flags::{LimitArgs, LogLevel, PortSetting, RunArgs, TransactionArgs, VerifyClient};
pub use servers::{
    DatasetError, DatasetField, FieldError, RouteHop, TrustedServer, TrustedServers,
};
pub use token_key::TokenKeyError;

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
    /// `-proxy-protocol-from`: the load balancers whose connections start with a PROXY
    /// protocol header; empty turns the PROXY protocol off.
    pub proxy_protocol_from: ClientRanges,
    /// `-default-sip-server`: index into `trusted_servers`.
    pub default_sip_server: Option<usize>,
    /// `-default-network`: transport for untrusted R-URI hosts without `;transport=`.
    pub default_network: Transport,
    pub ports: Ports,
    /// `-tls-cert` and `-tls-key`, both or neither.
    pub tls: Option<TlsFiles>,
    /// `-tls-ca`: extra roots for outbound TLS and WSS, the roots of client certificates, and
    /// the certificates peers may present pinned.
    pub tls_ca: Option<PathBuf>,
    /// `-tls-client-cert`/`-tls-client-key` and `-tls-verify-client`.
    pub mutual_tls: MutualTls,
    /// `-ws-path`: the one path WS and WSS handshakes may request; `None` accepts any.
    pub ws_path: Option<String>,
    /// `-token-key`, or the key kept in `-state-dir`.
    pub token_key: [u8; 32],
    pub limits: Limits,
    pub sip_timers: SipTimers,
    pub transaction_limits: TransactionLimits,
    /// `-drain-timeout`: after SIGTERM, how long responses and in-dialog requests still flow.
    pub drain_timeout: Duration,
    /// `-metrics-addr`: where `GET /metrics` and `GET /health` are served; `None` is off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `-hep-addr` and `-hep-id`: where captured messages go; `None` is off.
    pub hep: Option<Hep>,
    /// `-rtpengine`: the media relays' ng control addresses, the first preferred; empty is
    /// off (SDP bodies are never touched).
    pub rtpengine: Vec<std::net::SocketAddr>,
    /// `-dns-server`: where host names are resolved; `None` is the system's resolvers.
    pub dns_server: Option<std::net::SocketAddr>,
    /// `-udp-mtu`: requests larger than this that would leave over UDP leave over TCP;
    /// `None` is off.
    pub udp_mtu: Option<u16>,
}

/// The HEP capture server and the agent id Roundabout sends as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hep {
    pub addr: std::net::SocketAddr,
    pub agent_id: u32,
}

/// What `-udp-mtu` may be: below 200 bytes hardly a request fits, and a UDP datagram holds
/// no more than 65535.
pub const UDP_MTU: std::ops::RangeInclusive<u16> = 200..=65535;

/// `-hep-id` when not given.
pub const DEFAULT_HEP_ID: u32 = 2001;

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

/// Mutual TLS: the identity presented when dialling, and what listeners ask of clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutualTls {
    /// `-tls-client-cert` and `-tls-client-key`, both or neither; `None` presents `-tls-cert`.
    pub client_identity: Option<TlsFiles>,
    /// `-tls-verify-client`.
    pub verify_client: VerifyClient,
}

/// Resource limits; each has a flag and a sane default ([`Limits::DEFAULT`]).
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
    /// A connection whose writes make no progress for this long is closed; also its
    /// TCP_USER_TIMEOUT (default 10 s).
    pub write_timeout: Duration,
    /// WebSocket ping interval on idle WS/WSS flows (default 30 s).
    pub ws_ping_interval: Duration,
    /// Bindings the client cache holds at most (default 100 000).
    pub client_cache_size: usize,
    /// Messages queued per connection before sends to it are refused (default 1024).
    pub send_queue: usize,
    /// Bytes queued per connection, counted until written, before sends to it are refused
    /// (default 1 MiB).
    pub send_queue_bytes: usize,
    /// Bytes queued over all connections together before sends to any are refused
    /// (default 256 MiB).
    pub send_buffer_total: usize,
    /// Messages per second accepted from one source address that is not a trusted server;
    /// 0 turns the limit off. Bursts of twice as many pass.
    pub rate_limit: u32,
    /// New (out-of-dialog) requests per second over all sources; beyond it they get 503.
    /// 0 turns the guard off.
    pub max_new_requests: u32,
}

/// RFC 3261 Table 4 and §16.6 step 11: the timers of the transactions Roundabout keeps where a
/// reliable transport meets UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipTimers {
    /// `-sip-t1-ms`: RTT estimate, the first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// `-sip-t2-ms`: longest retransmission interval of non-INVITE requests (default 4 s).
    pub t2: Duration,
    /// How long a message may remain in the network: Timer K (5 s).
    pub t4: Duration,
    /// How long an INVITE may stay unanswered after a provisional response (> 3 min).
    pub timer_c: Duration,
}

impl SipTimers {
    pub const RFC_3261: SipTimers = SipTimers {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
        timer_c: Duration::from_secs(181),
    };
}

/// How many transactions, and how many bytes of the messages they keep, may exist at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionLimits {
    /// `-max-transactions` (default 50 000).
    pub max: usize,
    /// `-max-transaction-bytes` (default 64 MiB).
    pub max_bytes: usize,
}

impl TransactionLimits {
    pub const DEFAULT: TransactionLimits = TransactionLimits {
        max: 50_000,
        max_bytes: 64 << 20,
    };
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_message: 64 * 1024,
        max_connections: 10_000,
        max_connections_per_ip: 100,
        idle_timeout: Duration::from_secs(300),
        handshake_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(10),
        ws_ping_interval: Duration::from_secs(30),
        client_cache_size: 100_000,
        send_queue: 1024,
        send_queue_bytes: 1 << 20,
        send_buffer_total: 256 << 20,
        rate_limit: 1000,
        max_new_requests: 20_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// TLS listening port when `-tls-cert` and `-tls-key` are given and `-tls-port` is not.
const DEFAULT_TLS_PORT: u16 = 5061;
/// WSS listening port when `-tls-cert` and `-tls-key` are given and `-wss-port` is not.
const DEFAULT_WSS_PORT: u16 = 7443;

/// A configuration the daemon cannot start with. Display names the flag and the bad part.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("-trusted-server dataset {index} \"{text}\": {problem}")]
    TrustedServer {
        /// 1-based, counted over every `-trusted-server` given.
        index: usize,
        text: String,
        problem: DatasetError,
    },
    #[error("-trusted-server dataset {index} \"{text}\": duplicate of dataset {first}")]
    DuplicateTrustedServer {
        index: usize,
        text: String,
        first: usize,
    },
    #[error("-trusted-client-ip entry \"{entry}\": {problem}")]
    TrustedClient {
        entry: String,
        problem: ClientEntryError,
    },
    #[error("-proxy-protocol-from entry \"{entry}\": {problem}")]
    ProxyProtocolFrom {
        entry: String,
        problem: ClientEntryError,
    },
    #[error("-local-fqdn \"{0}\" is not a host name")]
    LocalFqdn(String),
    #[error("-contact-header-fqdn needs -local-fqdn")]
    ContactFqdnWithoutLocalFqdn,
    #[error("-hep-id needs -hep-addr")]
    HepIdWithoutHepAddr,
    #[error("-rtpengine {addr}: {problem}")]
    Rtpengine {
        addr: std::net::SocketAddr,
        problem: &'static str,
    },
    #[error("-dns-server {0}: not an address a DNS server can listen on")]
    DnsServer(std::net::SocketAddr),
    #[error("-udp-mtu {0}: between {min} and {max} bytes", min = UDP_MTU.start(), max = UDP_MTU.end())]
    UdpMtu(u32),
    #[error("-udp-mtu needs a TCP listener (-tcp-port): the Via and Contact of a request sent over TCP name it")]
    UdpMtuWithoutTcp,
    #[error("-default-sip-server {0} is not the IP address of any -trusted-server")]
    DefaultServerNotTrusted(IpAddr),
    #[error("-ws-path {0:?}: a path starts with / and has no spaces")]
    WsPath(String),
    #[error("-tls-cert and -tls-key go together; only -{given} was given")]
    TlsHalf { given: &'static str },
    #[error("-tls-client-cert and -tls-client-key go together; only -{given} was given")]
    TlsClientHalf { given: &'static str },
    #[error("-tls-verify-client {0} needs -tls-cert and -tls-key (a TLS or WSS listener)")]
    VerifyClientWithoutCertificate(&'static str),
    #[error("-tls-verify-client {0} needs -tls-ca: the roots client certificates must chain to")]
    VerifyClientWithoutCa(&'static str),
    #[error("-{flag} {port} needs -tls-cert and -tls-key")]
    TlsPortWithoutCertificate { flag: &'static str, port: u16 },
    #[error("-{flag} {}: {source}", .path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("-token-key: {0}")]
    TokenKey(TokenKeyError),
    #[error("-sip-t2-ms {t2} is below -sip-t1-ms {t1}: T2 caps intervals that start at T1")]
    SipT2BelowT1 { t1: u64, t2: u64 },
    #[error(
        "-send-queue-bytes {queue} is below -max-message-size {message}: \
         no message of the largest size could be queued"
    )]
    SendQueueBelowMessage { queue: usize, message: usize },
    #[error(
        "-send-buffer-total {total} is below -send-queue-bytes {queue}: \
         no connection could use its own budget"
    )]
    SendTotalBelowQueue { total: usize, queue: usize },
}

/// A validated configuration, plus the datasets `-lenient-trusted-server` skipped (to log).
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub skipped: Vec<ConfigError>,
}

impl Config {
    /// Validates the run flags into a [`Config`]. Reads (or creates) the token key file.
    ///
    /// # Errors
    /// The first problem found, naming its flag.
    pub fn from_args(args: &RunArgs) -> Result<Validated, ConfigError> {
        // Destructured whole, so a new flag cannot be silently ignored here.
        let RunArgs {
            local_ip,
            local_fqdn,
            strict_host,
            strict_client,
            ack_ruri,
            contact_header_fqdn,
            trusted_server,
            trusted_client_ip,
            trusted_client_mask,
            proxy_protocol_from,
            default_sip_server,
            default_network,
            udp_port,
            tcp_port,
            tls_port,
            ws_port,
            wss_port,
            tls_cert,
            tls_key,
            tls_ca,
            tls_client_cert,
            tls_client_key,
            tls_verify_client,
            ws_path,
            bind_ip,
            token_key,
            state_dir,
            log_level: _,
            check_config: _,
            lenient_trusted_server,
            drain_timeout,
            metrics_addr,
            hep_addr,
            hep_id,
            rtpengine,
            dns_server,
            udp_mtu,
            transactions:
                TransactionArgs {
                    sip_t1_ms,
                    sip_t2_ms,
                    max_transactions,
                    max_transaction_bytes,
                },
            limits:
                LimitArgs {
                    max_message_size,
                    max_connections,
                    max_connections_per_ip,
                    idle_timeout,
                    handshake_timeout,
                    read_timeout,
                    write_timeout,
                    ws_ping_interval,
                    client_cache_size,
                    send_queue,
                    send_queue_bytes,
                    send_buffer_total,
                    rate_limit,
                    max_new_requests,
                },
        } = args;
        let local_fqdn = match local_fqdn {
            Some(name) if is_host_name(name) => Some(name.to_ascii_lowercase()),
            Some(name) => return Err(ConfigError::LocalFqdn(name.clone())),
            None => None,
        };
        if *contact_header_fqdn && local_fqdn.is_none() {
            return Err(ConfigError::ContactFqdnWithoutLocalFqdn);
        }
        let hep = match (hep_addr, hep_id) {
            (Some(addr), id) => Some(Hep {
                addr: *addr,
                agent_id: id.unwrap_or(DEFAULT_HEP_ID),
            }),
            (None, Some(_)) => return Err(ConfigError::HepIdWithoutHepAddr),
            (None, None) => None,
        };
        for (index, &addr) in rtpengine.iter().enumerate() {
            let problem = if addr.ip().is_unspecified() || addr.ip().is_multicast() {
                Some("not an address rtpengine can listen on")
            } else if addr.port() == 0 {
                Some("port 0")
            } else if rtpengine[..index].contains(&addr) {
                Some("given twice")
            } else if index > 0 && addr.is_ipv4() != rtpengine[0].is_ipv4() {
                // One socket sends to every one of them.
                Some("IPv4 and IPv6 addresses mixed")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Rtpengine { addr, problem });
            }
        }
        if let Some(addr) = dns_server {
            if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
                return Err(ConfigError::DnsServer(*addr));
            }
        }
        let udp_mtu = match *udp_mtu {
            Some(bytes) => Some(
                u16::try_from(bytes)
                    .ok()
                    .filter(|b| UDP_MTU.contains(b))
                    .ok_or(ConfigError::UdpMtu(bytes))?,
            ),
            None => None,
        };
        if udp_mtu.is_some() && tcp_port.port().is_none() {
            return Err(ConfigError::UdpMtuWithoutTcp);
        }
        let (trusted_servers, skipped) =
            servers::parse_trusted_servers(trusted_server, *lenient_trusted_server)?;
        let trusted_clients = clients::parse_client_ranges(
            trusted_client_ip.as_deref().unwrap_or_default(),
            *trusted_client_mask,
        )?;
        let proxy_protocol_from =
            clients::parse_balancers(proxy_protocol_from.as_deref().unwrap_or_default())?;
        let default_sip_server = match *default_sip_server {
            Some(ip) => Some(
                trusted_servers
                    .servers
                    .iter()
                    .position(|server| server.ip == ip)
                    .ok_or(ConfigError::DefaultServerNotTrusted(ip))?,
            ),
            None => None,
        };
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                check_readable("tls-cert", cert)?;
                check_readable("tls-key", key)?;
                Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
            }
            (Some(_), None) => return Err(ConfigError::TlsHalf { given: "tls-cert" }),
            (None, Some(_)) => return Err(ConfigError::TlsHalf { given: "tls-key" }),
            (None, None) => None,
        };
        if let Some(ca) = tls_ca {
            check_readable("tls-ca", ca)?;
        }
        let mutual_tls = mutual_tls(
            (tls_client_cert, tls_client_key),
            *tls_verify_client,
            tls.is_some(),
            tls_ca.is_some(),
        )?;
        let ports = Ports {
            udp: udp_port.port(),
            tcp: tcp_port.port(),
            tls: tls_port_for("tls-port", *tls_port, DEFAULT_TLS_PORT, tls.is_some())?,
            ws: ws_port.port(),
            wss: tls_port_for("wss-port", *wss_port, DEFAULT_WSS_PORT, tls.is_some())?,
        };
        if send_queue_bytes < max_message_size {
            return Err(ConfigError::SendQueueBelowMessage {
                queue: *send_queue_bytes,
                message: *max_message_size,
            });
        }
        if send_buffer_total < send_queue_bytes {
            return Err(ConfigError::SendTotalBelowQueue {
                total: *send_buffer_total,
                queue: *send_queue_bytes,
            });
        }
        let limits = Limits {
            max_message: *max_message_size,
            max_connections: *max_connections,
            max_connections_per_ip: *max_connections_per_ip,
            idle_timeout: Duration::from_secs(*idle_timeout),
            handshake_timeout: Duration::from_secs(*handshake_timeout),
            read_timeout: Duration::from_secs(*read_timeout),
            write_timeout: Duration::from_secs(*write_timeout),
            ws_ping_interval: Duration::from_secs(*ws_ping_interval),
            client_cache_size: *client_cache_size,
            send_queue: *send_queue,
            send_queue_bytes: *send_queue_bytes,
            send_buffer_total: *send_buffer_total,
            rate_limit: *rate_limit,
            max_new_requests: *max_new_requests,
        };
        if sip_t2_ms < sip_t1_ms {
            return Err(ConfigError::SipT2BelowT1 {
                t1: *sip_t1_ms,
                t2: *sip_t2_ms,
            });
        }
        let sip_timers = SipTimers {
            t1: Duration::from_millis(*sip_t1_ms),
            t2: Duration::from_millis(*sip_t2_ms),
            ..SipTimers::RFC_3261
        };
        let transaction_limits = TransactionLimits {
            max: *max_transactions,
            max_bytes: *max_transaction_bytes,
        };
        let token_key =
            token_key::load(token_key.as_deref(), state_dir).map_err(ConfigError::TokenKey)?;
        let config = Config {
            local_ip: *local_ip,
            local_fqdn,
            bind_ip: bind_ip.unwrap_or(*local_ip),
            strict_host: *strict_host,
            strict_client: *strict_client,
            ack_ruri: *ack_ruri,
            contact_header_fqdn: *contact_header_fqdn,
            trusted_servers,
            trusted_clients,
            proxy_protocol_from,
            default_sip_server,
            default_network: *default_network,
            ports,
            tls,
            tls_ca: tls_ca.clone(),
            mutual_tls,
            ws_path: match ws_path {
                Some(path) if !path.starts_with('/') || path.contains(char::is_whitespace) => {
                    return Err(ConfigError::WsPath(path.clone()))
                }
                path => path.clone(),
            },
            token_key,
            limits,
            sip_timers,
            transaction_limits,
            drain_timeout: Duration::from_secs(*drain_timeout),
            metrics_addr: *metrics_addr,
            hep,
            rtpengine: rtpengine.clone(),
            dns_server: *dns_server,
            udp_mtu,
        };
        Ok(Validated { config, skipped })
    }
}

fn check_readable(flag: &'static str, path: &Path) -> Result<(), ConfigError> {
    fs::File::open(path)
        .map(drop)
        .map_err(|source| ConfigError::File {
            flag,
            path: path.to_owned(),
            source,
        })
}

/// `-tls-client-cert`/`-tls-client-key` (both or neither, readable) and `-tls-verify-client`
/// (a listener certificate and `-tls-ca` unless off).
fn mutual_tls(
    (cert, key): (&Option<PathBuf>, &Option<PathBuf>),
    verify_client: VerifyClient,
    have_certificate: bool,
    have_ca: bool,
) -> Result<MutualTls, ConfigError> {
    let client_identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            check_readable("tls-client-cert", cert)?;
            check_readable("tls-client-key", key)?;
            Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
        }
        (Some(_), None) => {
            return Err(ConfigError::TlsClientHalf {
                given: "tls-client-cert",
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::TlsClientHalf {
                given: "tls-client-key",
            })
        }
        (None, None) => None,
    };
    if verify_client != VerifyClient::Off {
        if !have_certificate {
            return Err(ConfigError::VerifyClientWithoutCertificate(
                verify_client.as_str(),
            ));
        }
        if !have_ca {
            return Err(ConfigError::VerifyClientWithoutCa(verify_client.as_str()));
        }
    }
    Ok(MutualTls {
        client_identity,
        verify_client,
    })
}

fn tls_port_for(
    flag: &'static str,
    setting: Option<PortSetting>,
    default: u16,
    have_certificate: bool,
) -> Result<Option<u16>, ConfigError> {
    match (setting, have_certificate) {
        (None, true) => Ok(Some(default)),
        (None | Some(PortSetting::Off), _) => Ok(None),
        (Some(PortSetting::Port(port)), true) => Ok(Some(port)),
        (Some(PortSetting::Port(port)), false) => {
            Err(ConfigError::TlsPortWithoutCertificate { flag, port })
        }
    }
}

/// An IPv6 address in brackets, or an IPv4 address.
fn parse_bracketed_ip(text: &str) -> Option<IpAddr> {
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Decimal digits only: `str::parse` would also take `+5060`.
fn parse_port_digits(text: &str) -> Option<u16> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests;

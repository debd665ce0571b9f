//! Command-line arguments turned into a validated, immutable [`Config`]. No sockets here.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use ring::rand::{SecureRandom as _, SystemRandom};
use thiserror::Error;

use crate::cli::{LimitArgs, PortSetting, RunArgs, TransactionArgs};
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
    /// `-ws-path`: the one path WS and WSS handshakes may request; `None` accepts any.
    pub ws_path: Option<String>,
    /// `-token-key`, or the key kept in `-state-dir`.
    pub token_key: [u8; 32],
    pub limits: Limits,
    pub sip_timers: SipTimers,
    pub transaction_limits: TransactionLimits,
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

impl fmt::Display for RouteHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteHop::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RouteHop::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            RouteHop::Name(name) => f.write_str(name),
        }
    }
}

/// TLS listening port when `-tls-cert` and `-tls-key` are given and `-tls-port` is not.
const DEFAULT_TLS_PORT: u16 = 5061;
/// WSS listening port when `-tls-cert` and `-tls-key` are given and `-wss-port` is not.
const DEFAULT_WSS_PORT: u16 = 7443;
/// The generated token key's file in `-state-dir`.
const TOKEN_KEY_FILE: &str = "roundabout.key";
/// `-trusted-client-ip` prefix for IPv6 entries while `-trusted-client-mask` keeps its default.
const DEFAULT_CLIENT_MASK: u8 = 24;
const DEFAULT_CLIENT_MASK_V6: u8 = 64;

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
    #[error("-local-fqdn \"{0}\" is not a host name")]
    LocalFqdn(String),
    #[error("-contact-header-fqdn needs -local-fqdn")]
    ContactFqdnWithoutLocalFqdn,
    #[error("-default-sip-server {0} is not the IP address of any -trusted-server")]
    DefaultServerNotTrusted(IpAddr),
    #[error("-ws-path {0:?}: a path starts with / and has no spaces")]
    WsPath(String),
    #[error("-tls-cert and -tls-key go together; only -{given} was given")]
    TlsHalf { given: &'static str },
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
    #[error("-csr needs -csr-cn (the subject's common name)")]
    CsrWithoutCommonName,
}

/// What is wrong with one `-trusted-server` dataset.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DatasetError {
    #[error("empty dataset (a stray or trailing comma?)")]
    Empty,
    #[error(
        "has {0} fields, expected 5: ip-address:fqdn-list:port:network-protocol:route-list \
         (IPv6 addresses in brackets)"
    )]
    FieldCount(usize),
    #[error("field {} ({}): {problem}", .field.number(), .field.name())]
    Field {
        field: DatasetField,
        problem: FieldError,
    },
}

/// The five fields of a `-trusted-server` dataset, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetField {
    IpAddress,
    FqdnList,
    Port,
    NetworkProtocol,
    RouteList,
}

impl DatasetField {
    #[must_use]
    pub fn number(self) -> usize {
        match self {
            DatasetField::IpAddress => 1,
            DatasetField::FqdnList => 2,
            DatasetField::Port => 3,
            DatasetField::NetworkProtocol => 4,
            DatasetField::RouteList => 5,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DatasetField::IpAddress => "ip-address",
            DatasetField::FqdnList => "fqdn-list",
            DatasetField::Port => "port",
            DatasetField::NetworkProtocol => "network-protocol",
            DatasetField::RouteList => "route-list",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("must not be empty")]
    Empty,
    #[error("\"{0}\" is not an IP address (IPv6 is written in brackets: [2001:db8::1])")]
    NotAnIp(String),
    #[error("\"{0}\" is not a host name")]
    NotAHostName(String),
    #[error("\"{0}\" is not a port number (1-65535)")]
    NotAPort(String),
    #[error("\"{0}\" is not a transport (udp, tcp, tls, ws or wss)")]
    UnknownTransport(String),
    #[error("\"{0}\" is not an IP address or host name (no port; IPv6 in brackets)")]
    NotARouteHop(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientEntryError {
    #[error("empty entry (a stray or trailing comma?)")]
    Empty,
    #[error("not an IP address or network (192.0.2.0/24, 2001:db8::/32)")]
    NotAnAddress,
    #[error("-trusted-client-mask {0} is longer than an IPv4 prefix (0-32)")]
    MaskTooLong(u8),
}

#[derive(Debug, Error)]
pub enum TokenKeyError {
    #[error("\"{value}\" is neither 64 hex digits nor a readable file: {source}")]
    Unreadable { value: String, source: io::Error },
    #[error("{}: expected 64 hex digits", .0.display())]
    NotHex(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no random bytes from the system")]
    Random,
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
            ws_path,
            bind_ip,
            token_key,
            state_dir,
            log_level: _,
            check_config: _,
            lenient_trusted_server,
            drain_timeout,
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
        let (trusted_servers, skipped) =
            parse_trusted_servers(trusted_server, *lenient_trusted_server)?;
        let trusted_clients = parse_client_ranges(
            trusted_client_ip.as_deref().unwrap_or_default(),
            *trusted_client_mask,
        )?;
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
            load_token_key(token_key.as_deref(), state_dir).map_err(ConfigError::TokenKey)?;
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
            default_sip_server,
            default_network: *default_network,
            ports,
            tls,
            tls_ca: tls_ca.clone(),
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
        };
        Ok(Validated { config, skipped })
    }

    /// One line per switch group, trusted server and client range, for the start-up log and
    /// `--check-config`. Never includes the token key.
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        let Config {
            local_ip,
            local_fqdn,
            bind_ip,
            strict_host,
            strict_client,
            ack_ruri,
            contact_header_fqdn,
            trusted_servers,
            trusted_clients,
            default_sip_server,
            default_network,
            ports,
            tls,
            tls_ca,
            ws_path,
            token_key: _,
            limits,
            sip_timers,
            transaction_limits,
            drain_timeout,
        } = self;
        let port = |transport| match ports.get(transport) {
            Some(port) => port.to_string(),
            None => "off".to_owned(),
        };
        let default_server = default_sip_server
            .and_then(|index| Some((index + 1, trusted_servers.servers.get(index)?)))
            .map_or("-".to_owned(), |(number, server)| {
                format!("{} (trusted-server {number})", server.ip)
            });
        let mut lines = vec![
            format!(
                "local-ip={local_ip} local-fqdn={} bind-ip={bind_ip}",
                local_fqdn.as_deref().unwrap_or("-")
            ),
            format!(
                "strict-host={strict_host} strict-client={strict_client} ack-ruri={ack_ruri} \
                 contact-header-fqdn={contact_header_fqdn}"
            ),
            format!("default-sip-server={default_server} default-network={default_network}"),
            format!("drain-timeout={}s", drain_timeout.as_secs()),
            format!(
                "ports udp={} tcp={} tls={} ws={} wss={}",
                port(Transport::Udp),
                port(Transport::Tcp),
                port(Transport::Tls),
                port(Transport::Ws),
                port(Transport::Wss)
            ),
            format!(
                "tls cert={} key={} ca={}",
                tls.as_ref()
                    .map_or("-".into(), |t| t.cert.display().to_string()),
                tls.as_ref()
                    .map_or("-".into(), |t| t.key.display().to_string()),
                tls_ca
                    .as_ref()
                    .map_or("-".into(), |ca| ca.display().to_string()),
            ),
            format!("ws-path={}", ws_path.as_deref().unwrap_or("any")),
            format!(
                "limits max-message-size={} max-connections={} max-connections-per-ip={} \
                 idle-timeout={}s handshake-timeout={}s read-timeout={}s write-timeout={}s \
                 ws-ping-interval={}s client-cache-size={} send-queue={} send-queue-bytes={} \
                 send-buffer-total={} rate-limit={} max-new-requests={}",
                limits.max_message,
                limits.max_connections,
                limits.max_connections_per_ip,
                limits.idle_timeout.as_secs(),
                limits.handshake_timeout.as_secs(),
                limits.read_timeout.as_secs(),
                limits.write_timeout.as_secs(),
                limits.ws_ping_interval.as_secs(),
                limits.client_cache_size,
                limits.send_queue,
                limits.send_queue_bytes,
                limits.send_buffer_total,
                limits.rate_limit,
                limits.max_new_requests,
            ),
            format!(
                "transactions sip-t1={}ms sip-t2={}ms max-transactions={} \
                 max-transaction-bytes={}",
                sip_timers.t1.as_millis(),
                sip_timers.t2.as_millis(),
                transaction_limits.max,
                transaction_limits.max_bytes,
            ),
        ];
        for (index, server) in trusted_servers.servers.iter().enumerate() {
            lines.push(format!(
                "trusted-server {} ip={} fqdns={} port={} transport={} routes={}",
                index + 1,
                server.ip,
                join_or_dash(&server.fqdns),
                server.port,
                server.transport,
                join_or_dash(&server.routes),
            ));
        }
        if trusted_servers.servers.is_empty() {
            lines.push("trusted-servers none".to_owned());
        }
        for range in &trusted_clients.ranges {
            lines.push(format!("trusted-client-range {range}"));
        }
        if trusted_clients.ranges.is_empty() {
            lines.push("trusted-client-ranges none".to_owned());
        }
        lines
    }
}

fn join_or_dash<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("/")
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

/// Parses every `-trusted-server` value; datasets are numbered across all of them. An entirely
/// empty value (an `EnvironmentFile=` placeholder) holds no datasets.
fn parse_trusted_servers(
    values: &[String],
    lenient: bool,
) -> Result<(TrustedServers, Vec<ConfigError>), ConfigError> {
    let mut servers: Vec<TrustedServer> = Vec::new();
    let mut skipped = Vec::new();
    let datasets = values
        .iter()
        .filter(|value| !value.is_empty())
        .flat_map(|value| value.split(','));
    for (offset, text) in datasets.enumerate() {
        let index = offset + 1;
        let outcome = match parse_dataset(text) {
            Ok(server) => match servers.iter().position(|known| *known == server) {
                Some(first) => Err(ConfigError::DuplicateTrustedServer {
                    index,
                    text: text.to_owned(),
                    first: first + 1,
                }),
                None => Ok(server),
            },
            Err(problem) => Err(ConfigError::TrustedServer {
                index,
                text: text.to_owned(),
                problem,
            }),
        };
        match outcome {
            Ok(server) => servers.push(server),
            Err(error) if lenient => skipped.push(error),
            Err(error) => return Err(error),
        }
    }
    Ok((TrustedServers { servers }, skipped))
}

/// `ip-address:fqdn-list:port:network-protocol:route-list`; `:` inside brackets belongs to an
/// IPv6 address.
fn parse_dataset(text: &str) -> Result<TrustedServer, DatasetError> {
    if text.is_empty() {
        return Err(DatasetError::Empty);
    }
    let fields = split_outside_brackets(text, ':');
    let [ip, fqdns, port, transport, routes] = fields[..] else {
        return Err(DatasetError::FieldCount(fields.len()));
    };
    let in_field = |field| move |problem| DatasetError::Field { field, problem };
    Ok(TrustedServer {
        ip: parse_server_ip(ip).map_err(in_field(DatasetField::IpAddress))?,
        fqdns: parse_list(fqdns, parse_fqdn).map_err(in_field(DatasetField::FqdnList))?,
        port: parse_server_port(port).map_err(in_field(DatasetField::Port))?,
        transport: parse_transport(transport).map_err(in_field(DatasetField::NetworkProtocol))?,
        routes: parse_list(routes, parse_route_hop).map_err(in_field(DatasetField::RouteList))?,
    })
}

fn split_outside_brackets(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A `/`-separated list; an empty field is an empty list.
fn parse_list<T>(
    field: &str,
    parse_one: fn(&str) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    if field.is_empty() {
        return Ok(Vec::new());
    }
    field.split('/').map(parse_one).collect()
}

/// An IPv6 address in brackets, or an IPv4 address.
fn parse_bracketed_ip(text: &str) -> Option<IpAddr> {
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn parse_server_ip(text: &str) -> Result<IpAddr, FieldError> {
    if text.is_empty() {
        return Err(FieldError::Empty);
    }
    parse_bracketed_ip(text).ok_or_else(|| FieldError::NotAnIp(text.to_owned()))
}

fn parse_fqdn(text: &str) -> Result<String, FieldError> {
    if is_host_name(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(FieldError::NotAHostName(text.to_owned()))
    }
}

fn parse_server_port(text: &str) -> Result<u16, FieldError> {
    if text.is_empty() {
        return Err(FieldError::Empty);
    }
    match parse_port_digits(text) {
        Some(port) if port != 0 => Ok(port),
        _ => Err(FieldError::NotAPort(text.to_owned())),
    }
}

/// Decimal digits only: `str::parse` would also take `+5060`.
pub(crate) fn parse_port_digits(text: &str) -> Option<u16> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn parse_transport(text: &str) -> Result<Transport, FieldError> {
    if text.is_empty() {
        return Err(FieldError::Empty);
    }
    Transport::from_token(text.as_bytes())
        .ok_or_else(|| FieldError::UnknownTransport(text.to_owned()))
}

fn parse_route_hop(text: &str) -> Result<RouteHop, FieldError> {
    if let Some(ip) = parse_bracketed_ip(text) {
        return Ok(RouteHop::Ip(ip));
    }
    if is_host_name(text) {
        return Ok(RouteHop::Name(text.to_ascii_lowercase()));
    }
    Err(FieldError::NotARouteHop(text.to_owned()))
}

/// A DNS host name: labels of letters, digits and inner hyphens (RFC 1123 §2.1), and a last
/// label that is not all digits so a mistyped IPv4 address is not taken for a name (RFC 3696 §2).
fn is_host_name(text: &str) -> bool {
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    text.len() <= 253
        && text.split('.').all(valid_label)
        && !text
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// `-trusted-client-ip` entries, each reduced to its network; duplicates after reduction are
/// kept once. An empty list holds no ranges.
fn parse_client_ranges(list: &str, mask: u8) -> Result<ClientRanges, ConfigError> {
    let mut ranges: Vec<IpNet> = Vec::new();
    if list.is_empty() {
        return Ok(ClientRanges { ranges });
    }
    for entry in list.split(',') {
        let range =
            parse_client_entry(entry, mask).map_err(|problem| ConfigError::TrustedClient {
                entry: entry.to_owned(),
                problem,
            })?;
        if !ranges.contains(&range) {
            ranges.push(range);
        }
    }
    Ok(ClientRanges { ranges })
}

fn parse_client_entry(entry: &str, mask: u8) -> Result<IpNet, ClientEntryError> {
    if entry.is_empty() {
        return Err(ClientEntryError::Empty);
    }
    if entry.contains('/') {
        return entry
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| ClientEntryError::NotAnAddress);
    }
    let ip = parse_bracketed_ip(entry)
        .or_else(|| entry.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
        .ok_or(ClientEntryError::NotAnAddress)?;
    let prefix = match ip {
        IpAddr::V4(_) if mask > 32 => return Err(ClientEntryError::MaskTooLong(mask)),
        IpAddr::V4(_) => mask,
        IpAddr::V6(_) if mask == DEFAULT_CLIENT_MASK => DEFAULT_CLIENT_MASK_V6,
        IpAddr::V6(_) => mask,
    };
    IpNet::new(ip, prefix)
        .map(|net| net.trunc())
        .map_err(|_| ClientEntryError::NotAnAddress)
}

/// `-token-key` as 64 hex digits or a file holding them; without it the key file in the state
/// directory, created with a fresh random key on first start so tokens survive restarts.
fn load_token_key(value: Option<&str>, state_dir: &Path) -> Result<[u8; 32], TokenKeyError> {
    match value {
        Some(text) => match decode_key_hex(text) {
            Some(key) => Ok(key),
            None => {
                let path = PathBuf::from(text);
                let contents =
                    fs::read_to_string(&path).map_err(|source| TokenKeyError::Unreadable {
                        value: text.to_owned(),
                        source,
                    })?;
                decode_key_hex(contents.trim()).ok_or(TokenKeyError::NotHex(path))
            }
        },
        None => load_or_create_key_file(&state_dir.join(TOKEN_KEY_FILE)),
    }
}

fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], TokenKeyError> {
    let io_error = |source| TokenKeyError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(contents) => {
            return decode_key_hex(contents.trim())
                .ok_or_else(|| TokenKeyError::NotHex(path.to_owned()));
        }
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(io_error(error)),
        Err(_) => {}
    }
    let mut key = [0_u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| TokenKeyError::Random)?;
    // Written whole to a private file first, then linked into place: hard_link fails if the key
    // file exists, so two instances starting at once agree on one complete key.
    let staging = path.with_extension(format!("key.{}", std::process::id()));
    let staged = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut file| writeln!(file, "{}", encode_hex(&key)));
    let linked = staged.and_then(|()| fs::hard_link(&staging, path));
    // The staging file is only a vehicle; failing to remove it loses nothing.
    let _ = fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let contents = fs::read_to_string(path).map_err(io_error)?;
            decode_key_hex(contents.trim()).ok_or_else(|| TokenKeyError::NotHex(path.to_owned()))
        }
        Err(error) => Err(io_error(error)),
    }
}

fn decode_key_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0_u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(key)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Action};

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn run_args(flags: &[&str]) -> RunArgs {
        let argv = ["roundabout"].iter().chain(flags).map(Into::into);
        match cli::parse(argv).unwrap().into_action().unwrap() {
            Action::Run(args) => *args,
            Action::Csr(_) => panic!("not a run"),
        }
    }

    fn validate(flags: &[&str]) -> Result<Validated, ConfigError> {
        let mut all = vec!["-token-key", KEY_HEX];
        all.extend_from_slice(flags);
        Config::from_args(&run_args(&all))
    }

    fn config(flags: &[&str]) -> Config {
        validate(flags).unwrap().config
    }

    fn error(flags: &[&str]) -> String {
        validate(flags).unwrap_err().to_string()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn trusted_server_datasets() {
        let cases: &[(&str, TrustedServer)] = &[
            (
                "203.0.113.20::5060:tcp:",
                TrustedServer {
                    ip: ip("203.0.113.20"),
                    fqdns: vec![],
                    port: 5060,
                    transport: Transport::Tcp,
                    routes: vec![],
                },
            ),
            (
                "203.0.113.110:PBX.example.com/srv.tel.example.com:5061:WSS:203.0.113.150/Hop.example.com",
                TrustedServer {
                    ip: ip("203.0.113.110"),
                    fqdns: vec!["pbx.example.com".into(), "srv.tel.example.com".into()],
                    port: 5061,
                    transport: Transport::Wss,
                    routes: vec![
                        RouteHop::Ip(ip("203.0.113.150")),
                        RouteHop::Name("hop.example.com".into()),
                    ],
                },
            ),
            (
                "[2001:db8::1]:pbx.example.com:5060:udp:[2001:db8::2]/hop.example.com",
                TrustedServer {
                    ip: ip("2001:db8::1"),
                    fqdns: vec!["pbx.example.com".into()],
                    port: 5060,
                    transport: Transport::Udp,
                    routes: vec![
                        RouteHop::Ip(ip("2001:db8::2")),
                        RouteHop::Name("hop.example.com".into()),
                    ],
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_dataset(text).as_ref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn several_datasets_and_flags_concatenate() {
        let config = config(&[
            "-trusted-server",
            "203.0.113.20::5060:tcp:,203.0.113.21::5060:udp:",
            "-trusted-server",
            "203.0.113.22::5080:tls:",
        ]);
        let ports: Vec<_> = config
            .trusted_servers
            .servers
            .iter()
            .map(|s| (s.ip, s.port, s.transport))
            .collect();
        assert_eq!(
            ports,
            [
                (ip("203.0.113.20"), 5060, Transport::Tcp),
                (ip("203.0.113.21"), 5060, Transport::Udp),
                (ip("203.0.113.22"), 5080, Transport::Tls),
            ]
        );
    }

    #[test]
    fn malformed_datasets_name_dataset_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "203.0.113.20:srv:50x0:tcp:",
                r#"dataset 2 "203.0.113.20:srv:50x0:tcp:": field 3 (port): "50x0" is not a port number"#,
            ),
            ("203.0.113.20:srv:5060:tcp", "has 4 fields, expected 5"),
            ("203.0.113.20:srv:5060:tcp::", "has 6 fields, expected 5"),
            ("2001:db8::1:srv:5060:tcp:", "has 8 fields"),
            (
                "203.0.113.256::5060:tcp:",
                r#"field 1 (ip-address): "203.0.113.256" is not an IP address"#,
            ),
            (
                "[203.0.113.2]::5060:tcp:",
                r#"field 1 (ip-address): "[203.0.113.2]" is not an IP address"#,
            ),
            ("::5060:tcp:", "field 1 (ip-address): must not be empty"),
            (
                "203.0.113.20:bad_name:5060:tcp:",
                r#"field 2 (fqdn-list): "bad_name" is not a host name"#,
            ),
            (
                "203.0.113.20:a..b:5060:tcp:",
                r#"field 2 (fqdn-list): "a..b" is not a host name"#,
            ),
            (
                "203.0.113.20:a.example//b:5060:tcp:",
                r#"field 2 (fqdn-list): "" is not a host name"#,
            ),
            (
                "203.0.113.20:-a.example:5060:tcp:",
                r#""-a.example" is not a host name"#,
            ),
            (
                "203.0.113.20:srv::tcp:",
                "field 3 (port): must not be empty",
            ),
            (
                "203.0.113.20:srv:0:tcp:",
                r#"field 3 (port): "0" is not a port number"#,
            ),
            (
                "203.0.113.20:srv:65536:tcp:",
                r#"field 3 (port): "65536" is not a port number"#,
            ),
            (
                "203.0.113.20:srv:+5060:tcp:",
                r#"field 3 (port): "+5060" is not a port number"#,
            ),
            (
                "203.0.113.20:srv:5060:sctp:",
                r#"field 4 (network-protocol): "sctp" is not a transport"#,
            ),
            (
                "203.0.113.20:srv:5060::",
                "field 4 (network-protocol): must not be empty",
            ),
            (
                "203.0.113.20:srv:5060:tcp:hop_1",
                r#"field 5 (route-list): "hop_1" is not an IP address or host name"#,
            ),
            (
                "203.0.113.20:srv:5060:tcp:203.0.113.999",
                r#"field 5 (route-list): "203.0.113.999""#,
            ),
            (
                "203.0.113.20:srv:5060:tcp:[2001:db8::2]:5060",
                "has 6 fields",
            ),
            (
                "203.0.113.20:srv:5060:tcp:a.example/",
                r#"field 5 (route-list): "" is not"#,
            ),
        ];
        for (dataset, expected) in cases {
            let list = format!("192.0.2.1::5060:udp:,{dataset}");
            let message = error(&["-trusted-server", &list]);
            assert!(
                message.starts_with("-trusted-server dataset 2 "),
                "{message}"
            );
            assert!(message.contains(expected), "{dataset}: {message}");
        }
    }

    #[test]
    fn empty_datasets_are_errors() {
        for (list, index) in [
            ("192.0.2.1::5060:udp:,", 2),
            ("192.0.2.1::5060:udp:,,192.0.2.2::5060:udp:", 2),
            (",192.0.2.1::5060:udp:", 1),
        ] {
            let message = error(&["-trusted-server", list]);
            assert_eq!(
                message,
                format!(
                    r#"-trusted-server dataset {index} "": empty dataset (a stray or trailing comma?)"#
                )
            );
        }
    }

    #[test]
    fn exact_duplicate_dataset_is_rejected() {
        let message = error(&[
            "-trusted-server",
            "192.0.2.1:a:5060:udp:,192.0.2.1:A:5060:UDP:",
        ]);
        assert_eq!(
            message,
            r#"-trusted-server dataset 2 "192.0.2.1:A:5060:UDP:": duplicate of dataset 1"#
        );
        let config = config(&[
            "-trusted-server",
            "192.0.2.1::5060:udp:,192.0.2.1::5060:tcp:",
        ]);
        assert_eq!(config.trusted_servers.servers.len(), 2);
    }

    #[test]
    fn lenient_mode_skips_malformed_datasets() {
        let validated = validate(&[
            "-lenient-trusted-server",
            "-trusted-server",
            "192.0.2.1::5060:udp:,192.0.2.2::x:udp:,192.0.2.3::5060:tcp:",
        ])
        .unwrap();
        let ips: Vec<_> = validated
            .config
            .trusted_servers
            .servers
            .iter()
            .map(|s| s.ip)
            .collect();
        assert_eq!(ips, [ip("192.0.2.1"), ip("192.0.2.3")]);
        assert_eq!(validated.skipped.len(), 1);
        assert!(validated.skipped[0].to_string().contains("dataset 2"));
    }

    #[test]
    fn client_ranges() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["-trusted-client-ip", "192.0.2.35"], &["192.0.2.0/24"]),
            (
                &[
                    "-trusted-client-ip",
                    "192.0.2.35,192.0.2.14,198.51.100.7",
                    "-trusted-client-mask",
                    "32",
                ],
                &["192.0.2.35/32", "192.0.2.14/32", "198.51.100.7/32"],
            ),
            // Reduced to the same network: kept once.
            (
                &["-trusted-client-ip", "192.0.2.35,192.0.2.14"],
                &["192.0.2.0/24"],
            ),
            (
                &["-trusted-client-ip", "192.0.2.35/16,198.51.100.0/24"],
                &["192.0.0.0/16", "198.51.100.0/24"],
            ),
            (
                &["-trusted-client-ip", "2001:db8:1:2::5"],
                &["2001:db8:1:2::/64"],
            ),
            (
                &[
                    "-trusted-client-ip",
                    "[2001:db8:1:2::5]",
                    "-trusted-client-mask",
                    "48",
                ],
                &["2001:db8:1::/48"],
            ),
            (
                &["-trusted-client-ip", "2001:db8::/32,192.0.2.9"],
                &["2001:db8::/32", "192.0.2.0/24"],
            ),
            (
                &["-trusted-client-ip", "0.0.0.0", "-trusted-client-mask", "0"],
                &["0.0.0.0/0"],
            ),
            (&["-trusted-client-ip", ""], &[]),
            (&[], &[]),
        ];
        for (flags, expected) in cases {
            let ranges: Vec<String> = config(flags)
                .trusted_clients
                .ranges
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(ranges, *expected, "{flags:?}");
        }
    }

    #[test]
    fn bad_client_entries_name_flag_and_entry() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["-trusted-client-ip", "192.0.2.300"],
                r#"-trusted-client-ip entry "192.0.2.300": not an IP address"#,
            ),
            (
                &["-trusted-client-ip", "192.0.2.1,"],
                r#"-trusted-client-ip entry "": empty entry"#,
            ),
            (
                &["-trusted-client-ip", "192.0.2.0/33"],
                r#"-trusted-client-ip entry "192.0.2.0/33""#,
            ),
            (
                &["-trusted-client-ip", "pbx.example.com"],
                r#"entry "pbx.example.com": not an IP address"#,
            ),
            (
                &[
                    "-trusted-client-ip",
                    "2001:db8::1,192.0.2.1",
                    "-trusted-client-mask",
                    "48",
                ],
                r#"-trusted-client-ip entry "192.0.2.1": -trusted-client-mask 48 is longer than an IPv4 prefix"#,
            ),
        ];
        for (flags, expected) in cases {
            let message = error(flags);
            assert!(message.contains(expected), "{flags:?}: {message}");
        }
    }

    #[test]
    fn default_sip_server_must_be_trusted() {
        let trusted = "203.0.113.20::5060:tcp:,203.0.113.110::5060:wss:,203.0.113.110::5080:udp:";
        let config = config(&[
            "-trusted-server",
            trusted,
            "-default-sip-server",
            "203.0.113.110",
        ]);
        assert_eq!(config.default_sip_server, Some(1));
        assert_eq!(
            error(&[
                "-trusted-server",
                trusted,
                "-default-sip-server",
                "203.0.113.111"
            ]),
            "-default-sip-server 203.0.113.111 is not the IP address of any -trusted-server"
        );
    }

    #[test]
    fn contact_header_fqdn_needs_local_fqdn() {
        assert_eq!(
            error(&["-contact-header-fqdn"]),
            "-contact-header-fqdn needs -local-fqdn"
        );
        let config = config(&["-contact-header-fqdn", "-local-fqdn", "ProxyA.example.com"]);
        assert_eq!(config.local_fqdn.as_deref(), Some("proxya.example.com"));
        assert_eq!(
            error(&["-local-fqdn", "a_b"]),
            r#"-local-fqdn "a_b" is not a host name"#
        );
    }

    #[test]
    fn tls_ports_follow_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        fs::write(&cert, "cert").unwrap();
        fs::write(&key, "key").unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

        let without = config(&[]);
        assert_eq!((without.ports.tls, without.ports.wss), (None, None));
        assert!(without.tls.is_none());
        let with = config(&["-tls-cert", cert, "-tls-key", key]);
        assert_eq!((with.ports.tls, with.ports.wss), (Some(5061), Some(7443)));
        let chosen = config(&[
            "-tls-cert",
            cert,
            "-tls-key",
            key,
            "-tls-port",
            "0",
            "-wss-port",
            "off",
        ]);
        assert_eq!((chosen.ports.tls, chosen.ports.wss), (Some(0), None));
        let off = config(&["-tls-port", "off"]);
        assert_eq!(off.ports.tls, None);

        assert_eq!(
            error(&["-tls-port", "5061"]),
            "-tls-port 5061 needs -tls-cert and -tls-key"
        );
        assert_eq!(
            error(&["-wss-port", "0"]),
            "-wss-port 0 needs -tls-cert and -tls-key"
        );
        assert_eq!(
            error(&["-tls-cert", cert]),
            "-tls-cert and -tls-key go together; only -tls-cert was given"
        );
        let missing = dir.path().join("missing.pem");
        let message = error(&["-tls-cert", cert, "-tls-key", missing.to_str().unwrap()]);
        assert!(
            message.starts_with("-tls-key ") && message.contains("missing.pem"),
            "{message}"
        );
    }

    #[test]
    fn ports_and_limits() {
        let config = config(&[
            "-udp-port",
            "off",
            "-tcp-port",
            "0",
            "-ws-port",
            "8080",
            "-max-message-size",
            "2048",
            "-idle-timeout",
            "60",
            "-send-queue",
            "8",
        ]);
        assert_eq!(
            config.ports,
            Ports {
                udp: None,
                tcp: Some(0),
                tls: None,
                ws: Some(8080),
                wss: None
            }
        );
        assert_eq!(config.limits.max_message, 2048);
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.send_queue, 8);
        assert_eq!(
            config.limits.max_connections,
            Limits::DEFAULT.max_connections
        );
        assert_eq!(config.local_ip, ip("127.0.0.1"));
        assert_eq!(config.bind_ip, ip("127.0.0.1"));
        assert_eq!(config.default_network, Transport::Tcp);
    }

    #[test]
    fn send_budgets_and_write_timeout() {
        let defaults = config(&[]).limits;
        assert_eq!(defaults.write_timeout, Duration::from_secs(10));
        assert_eq!(defaults.send_queue_bytes, 1 << 20);
        assert_eq!(defaults.send_buffer_total, 256 << 20);
        let set = config(&[
            "-write-timeout",
            "2",
            "-send-queue-bytes",
            "65536",
            "-send-buffer-total",
            "65536",
        ])
        .limits;
        assert_eq!(set.write_timeout, Duration::from_secs(2));
        assert_eq!(
            (set.send_queue_bytes, set.send_buffer_total),
            (65536, 65536)
        );
        assert_eq!(
            error(&["-send-queue-bytes", "65535"]),
            "-send-queue-bytes 65535 is below -max-message-size 65536: \
             no message of the largest size could be queued"
        );
        assert!(validate(&["-send-queue-bytes", "2048", "-max-message-size", "2048"]).is_ok());
        assert_eq!(
            error(&["-send-buffer-total", "1048575"]),
            "-send-buffer-total 1048575 is below -send-queue-bytes 1048576: \
             no connection could use its own budget"
        );
    }

    #[test]
    fn drain_timeout() {
        assert_eq!(config(&[]).drain_timeout, Duration::from_secs(5));
        assert_eq!(
            config(&["-drain-timeout", "0"]).drain_timeout,
            Duration::ZERO
        );
    }

    #[test]
    fn token_key_from_hex_or_file() {
        let expected: [u8; 32] = std::array::from_fn(|i| {
            let pattern = [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ];
            pattern[i % 16]
        });
        assert_eq!(config(&[]).token_key, expected);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.hex");
        fs::write(&file, format!("{KEY_HEX}\n")).unwrap();
        let args = run_args(&["-token-key", file.to_str().unwrap()]);
        assert_eq!(Config::from_args(&args).unwrap().config.token_key, expected);

        fs::write(&file, "abc").unwrap();
        let message = Config::from_args(&args).unwrap_err().to_string();
        assert!(
            message.starts_with("-token-key: ") && message.ends_with("expected 64 hex digits"),
            "{message}"
        );
        let args = run_args(&["-token-key", "not-hex-and-no-file"]);
        let message = Config::from_args(&args).unwrap_err().to_string();
        assert!(
            message.contains("neither 64 hex digits nor a readable file"),
            "{message}"
        );
    }

    #[test]
    fn token_key_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().to_str().unwrap();
        let args = run_args(&["-state-dir", state_dir]);
        let first = Config::from_args(&args).unwrap().config.token_key;
        let path = dir.path().join(TOKEN_KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(
            decode_key_hex(fs::read_to_string(&path).unwrap().trim()),
            Some(first)
        );
        let second = Config::from_args(&args).unwrap().config.token_key;
        assert_eq!(first, second);
        assert_ne!(first, [0; 32]);
        // Only the key file is left behind, no staging file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn describe_lists_servers_ranges_and_switches() {
        let lines = config(&[
            "-local-ip", "203.0.113.5", "-strict-host", "-trusted-client-ip", "192.0.2.35",
            "-trusted-server",
            "203.0.113.20::5060:tcp:,[2001:db8::1]:pbx.example.com/b.example:5061:tls:[2001:db8::2]/hop.example",
        ])
        .describe();
        for expected in [
            "trusted-server 1 ip=203.0.113.20 fqdns=- port=5060 transport=tcp routes=-",
            "trusted-server 2 ip=2001:db8::1 fqdns=pbx.example.com/b.example port=5061 transport=tls routes=[2001:db8::2]/hop.example",
            "trusted-client-range 192.0.2.0/24",
            "local-ip=203.0.113.5 local-fqdn=- bind-ip=203.0.113.5",
            "strict-host=true strict-client=false ack-ruri=false contact-header-fqdn=false",
            "ports udp=5060 tcp=5060 tls=off ws=5066 wss=off",
        ] {
            assert!(lines.iter().any(|line| line == expected), "{expected} not in {lines:#?}");
        }
        assert!(!lines
            .iter()
            .any(|line| line.to_ascii_lowercase().contains("8899aabb")));
    }

    #[test]
    fn host_names() {
        for good in ["a", "pbx.example.com", "x-1.example", "123.example.com"] {
            assert!(is_host_name(good), "{good}");
        }
        let long_label = "a".repeat(64);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a_b",
            "-a",
            "a-",
            "192.0.2.300",
            long_label.as_str(),
            "é.example",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}

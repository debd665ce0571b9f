//! The flags of a proxy run (clap derive), as [`Config::from_args`](super::Config::from_args)
//! reads them. Their defaults are the defaults of the values they become; the command line
//! (`cli`) puts them under its commands, next to the CSR flags.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::TypedValueParser as _;
use clap::builder::{BoolishValueParser, PossibleValuesParser, RangedU64ValueParser};
use clap::{ArgAction, ValueEnum};

use super::{parse_port_digits, Limits, SipTimers, TransactionLimits};
use crate::sip::Transport;

/// A listening port: a number (0 = ephemeral) or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSetting {
    Off,
    Port(u16),
}

impl PortSetting {
    #[must_use]
    pub fn port(self) -> Option<u16> {
        match self {
            PortSetting::Off => None,
            PortSetting::Port(port) => Some(port),
        }
    }
}

impl FromStr for PortSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(PortSetting::Off);
        }
        parse_port_digits(text)
            .map(PortSetting::Port)
            .ok_or_else(|| format!("\"{text}\" is not a port number (0-65535) or off"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `-tls-verify-client`: what the TLS and WSS listeners ask of clients (docs/tls.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum VerifyClient {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// Asked for; one presented must verify against -tls-ca (and, from a trusted server's
    /// address, name that server).
    Optional,
    /// As optional, and a connection from a trusted server's address must present one.
    TrustedServers,
    /// Every client must present one that verifies against -tls-ca.
    Required,
}

impl VerifyClient {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyClient::Off => "off",
            VerifyClient::Optional => "optional",
            VerifyClient::TrustedServers => "trusted-servers",
            VerifyClient::Required => "required",
        }
    }
}

fn transport_parser() -> impl clap::builder::TypedValueParser<Value = Transport> {
    PossibleValuesParser::new(Transport::ALL.map(Transport::as_str))
        .try_map(|name| Transport::from_token(name.as_bytes()).ok_or("unknown transport"))
}

/// Flags of a proxy run (the original's and ours).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Roundabout's own address: sent from, written into Via and Contact, recognised in R-URIs
    #[arg(
        long,
        env = "ROUNDABOUT_LOCAL_IP",
        value_name = "IP",
        default_value = "127.0.0.1"
    )]
    pub local_ip: IpAddr,

    /// Roundabout's FQDN / SIP domain, recognised in R-URIs [default: none]
    #[arg(long, env = "ROUNDABOUT_LOCAL_FQDN", value_name = "NAME")]
    pub local_fqdn: Option<String>,

    /// Forward only R-URIs whose host is a trusted server
    #[arg(long, env = "ROUNDABOUT_STRICT_HOST", value_name = "BOOL", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub strict_host: bool,

    /// Accept REGISTER only from trusted client addresses
    #[arg(long, env = "ROUNDABOUT_STRICT_CLIENT", value_name = "BOOL", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub strict_client: bool,

    /// Route ACK by its R-URI instead of its To host (recommended)
    #[arg(long, env = "ROUNDABOUT_ACK_RURI", value_name = "BOOL", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ack_ruri: bool,

    /// Write -local-fqdn instead of -local-ip into rewritten Contact headers (needs -local-fqdn)
    #[arg(long, env = "ROUNDABOUT_CONTACT_HEADER_FQDN", value_name = "BOOL", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub contact_header_fqdn: bool,

    /// Trusted SIP servers: comma-separated datasets ip-address:fqdn-list:port:network-protocol:route-list
    /// [default: none]
    ///
    /// Each dataset has exactly five `:`-separated fields and every `:` must be present even when
    /// a field is empty: `203.0.113.20::5060:tcp:`. fqdn-list and route-list hold several values
    /// separated by `/`: `203.0.113.110:pbx.example.com/srv.tel.example.com:5060:wss:203.0.113.150`.
    /// The port (1-65535) and protocol (udp, tcp, tls, ws, wss) are required. Route hops are IP
    /// addresses or host names without a port. IPv6 addresses, in the ip-address field and in the
    /// route-list, are written in brackets:
    /// `[2001:db8::1]:pbx.example.com:5060:udp:[2001:db8::2]/hop.example.com`.
    /// The flag may be given several times; the lists are concatenated.
    #[arg(long, env = "ROUNDABOUT_TRUSTED_SERVER", value_name = "LIST", action = ArgAction::Append)]
    pub trusted_server: Vec<String>,

    /// Trusted client addresses or networks, comma-separated (`192.0.2.35,198.51.100.0/24`)
    /// [default: none]
    ///
    /// An entry without its own `/prefix` gets -trusted-client-mask. Every entry is reduced to its
    /// network (192.0.2.35 with mask 24 is 192.0.2.0/24).
    #[arg(long, env = "ROUNDABOUT_TRUSTED_CLIENT_IP", value_name = "LIST")]
    pub trusted_client_ip: Option<String>,

    /// Prefix length for -trusted-client-ip entries without their own (IPv4 0-32; IPv6 entries
    /// get 64 while this is 24, else this value)
    #[arg(long, env = "ROUNDABOUT_TRUSTED_CLIENT_MASK", value_name = "N", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(0..=128))]
    pub trusted_client_mask: u8,

    /// Load balancers whose TCP, TLS, WS and WSS connections start with a PROXY protocol header
    /// (v1 or v2), comma-separated addresses or networks (`10.0.0.0/24,192.0.2.7`) [default: none]
    ///
    /// The address in the header is the connection's remote address everywhere (Via received,
    /// limits, -trusted-client-ip, the client cache, logs). A connection from a listed address
    /// without a header, or from any other address with one, is closed.
    #[arg(long, env = "ROUNDABOUT_PROXY_PROTOCOL_FROM", value_name = "LIST")]
    pub proxy_protocol_from: Option<String>,

    /// Where requests for Roundabout itself go when no client matches; must be the IP address of
    /// a -trusted-server [default: none]
    #[arg(long, env = "ROUNDABOUT_DEFAULT_SIP_SERVER", value_name = "IP")]
    pub default_sip_server: Option<IpAddr>,

    /// Transport for R-URI hosts that are not trusted servers (without -strict-host)
    #[arg(long, env = "ROUNDABOUT_DEFAULT_NETWORK", value_name = "TRANSPORT", default_value = "tcp",
          value_parser = transport_parser(), ignore_case = true)]
    pub default_network: Transport,

    /// UDP listening port, or off (0 = an ephemeral port)
    #[arg(
        long,
        env = "ROUNDABOUT_UDP_PORT",
        value_name = "PORT|off",
        default_value = "5060"
    )]
    pub udp_port: PortSetting,

    /// TCP listening port, or off (0 = an ephemeral port)
    #[arg(
        long,
        env = "ROUNDABOUT_TCP_PORT",
        value_name = "PORT|off",
        default_value = "5060"
    )]
    pub tcp_port: PortSetting,

    /// TLS listening port, or off; needs -tls-cert and -tls-key [default: 5061 when both are
    /// given, else off]
    #[arg(long, env = "ROUNDABOUT_TLS_PORT", value_name = "PORT|off")]
    pub tls_port: Option<PortSetting>,

    /// WebSocket listening port, or off (0 = an ephemeral port)
    #[arg(
        long,
        env = "ROUNDABOUT_WS_PORT",
        value_name = "PORT|off",
        default_value = "5066"
    )]
    pub ws_port: PortSetting,

    /// Secure WebSocket listening port, or off; needs -tls-cert and -tls-key [default: 7443 when
    /// both are given, else off]
    #[arg(long, env = "ROUNDABOUT_WSS_PORT", value_name = "PORT|off")]
    pub wss_port: Option<PortSetting>,

    /// PEM certificate chain for the TLS and WSS listeners (with -tls-key) [default: none]
    #[arg(long, env = "ROUNDABOUT_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the TLS and WSS listeners (with -tls-cert); also the key -csr signs
    /// with [default: none; ./key.pem for -csr]
    #[arg(long, env = "ROUNDABOUT_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Extra PEM root certificates for outbound TLS and WSS, and the roots client certificates
    /// must chain to; a peer presenting one of them as its own certificate is pinned (accepted,
    /// self-signed or not; docs/tls.md) [default: none]
    #[arg(long, env = "ROUNDABOUT_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// PEM certificate chain presented as client certificate when dialling TLS and WSS servers
    /// that ask for one (with -tls-client-key) [default: -tls-cert]
    #[arg(long, env = "ROUNDABOUT_TLS_CLIENT_CERT", value_name = "PATH")]
    pub tls_client_cert: Option<PathBuf>,

    /// PEM private key of -tls-client-cert [default: -tls-key]
    #[arg(long, env = "ROUNDABOUT_TLS_CLIENT_KEY", value_name = "PATH")]
    pub tls_client_key: Option<PathBuf>,

    /// Client certificates on the TLS and WSS listeners, verified against -tls-ca: off,
    /// optional, trusted-servers (required from trusted servers' addresses, naming one of their
    /// FQDNs) or required (from every client)
    #[arg(
        long,
        env = "ROUNDABOUT_TLS_VERIFY_CLIENT",
        value_name = "MODE",
        default_value = "off",
        ignore_case = true
    )]
    pub tls_verify_client: VerifyClient,

    /// Request path WS and WSS clients must use, e.g. /ws [default: any path]
    #[arg(long, env = "ROUNDABOUT_WS_PATH", value_name = "PATH")]
    pub ws_path: Option<String>,

    /// Address the listeners bind, e.g. 0.0.0.0 behind 1:1 NAT [default: -local-ip]
    #[arg(long, env = "ROUNDABOUT_BIND_IP", value_name = "IP")]
    pub bind_ip: Option<IpAddr>,

    /// Contact token key: 64 hex digits, or a file holding them [default: <state-dir>/roundabout.key,
    /// created with a random key if missing]
    #[arg(long, env = "ROUNDABOUT_TOKEN_KEY", value_name = "HEX|PATH")]
    pub token_key: Option<String>,

    /// Directory for state kept across restarts (the generated token key)
    #[arg(
        long,
        env = "ROUNDABOUT_STATE_DIR",
        value_name = "DIR",
        default_value = "."
    )]
    pub state_dir: PathBuf,

    /// Log level of Roundabout's own logs (other crates log warnings); RUST_LOG, if set, wins
    #[arg(
        long,
        env = "ROUNDABOUT_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info",
        ignore_case = true
    )]
    pub log_level: LogLevel,

    /// Print the parsed configuration and exit (non-zero on any malformed dataset)
    #[arg(long)]
    pub check_config: bool,

    /// Log and skip a malformed -trusted-server dataset instead of refusing to start (the
    /// original's behaviour)
    #[arg(long, env = "ROUNDABOUT_LENIENT_TRUSTED_SERVER", value_name = "BOOL", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub lenient_trusted_server: bool,

    /// Seconds after SIGTERM during which responses and in-dialog requests still flow
    #[arg(
        long,
        env = "ROUNDABOUT_DRAIN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    pub drain_timeout: u64,

    /// Serve GET /metrics (Prometheus) and GET /health over HTTP on this address (off unless
    /// given)
    #[arg(long, env = "ROUNDABOUT_METRICS_ADDR", value_name = "IP:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Send every SIP message received and sent as a HEPv3 packet over UDP to this address
    /// (Homer, sngrep; off unless given)
    #[arg(long, env = "ROUNDABOUT_HEP_ADDR", value_name = "IP:PORT")]
    pub hep_addr: Option<std::net::SocketAddr>,

    /// Capture agent id in the HEP packets (default 2001; needs -hep-addr)
    #[arg(long, env = "ROUNDABOUT_HEP_ID", value_name = "N")]
    pub hep_id: Option<u32>,

    /// rtpengine's ng control address(es), comma-separated, the first preferred: WebRTC calls
    /// to and from plain-RTP endpoints get their media relayed (off unless given)
    #[arg(
        long,
        env = "ROUNDABOUT_RTPENGINE",
        value_name = "IP:PORT[,IP:PORT...]",
        value_delimiter = ','
    )]
    pub rtpengine: Vec<std::net::SocketAddr>,

    /// The DNS server host names are resolved through (RFC 3263: NAPTR, SRV, A/AAAA); the
    /// system's resolvers (/etc/resolv.conf) unless given
    #[arg(long, env = "ROUNDABOUT_DNS_SERVER", value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,

    /// Requests larger than this many bytes whose next hop is UDP go over TCP to the same
    /// address and port instead (RFC 3261 §18.1.1); 1300 when given without a value (off
    /// unless given)
    #[arg(long, env = "ROUNDABOUT_UDP_MTU", value_name = "BYTES", num_args = 0..=1,
          default_missing_value = "1300")]
    pub udp_mtu: Option<u32>,

    #[command(flatten)]
    pub transactions: TransactionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Where a request leaves a reliable transport (TCP, TLS, WS, WSS) for UDP, Roundabout keeps a
/// transaction and retransmits it (RFC 3261 §17.1); these are its timers and limits.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Transactions (reliable transport to UDP)")]
pub struct TransactionArgs {
    /// RFC 3261 T1, the first retransmission interval, in milliseconds (50-10000); raise it
    /// for paths with a round trip near or above 500 ms
    #[arg(long, env = "ROUNDABOUT_SIP_T1_MS", value_name = "MS",
          default_value_t = duration_ms(SipTimers::RFC_3261.t1),
          value_parser = clap::value_parser!(u64).range(50..=10_000))]
    pub sip_t1_ms: u64,

    /// RFC 3261 T2, the longest retransmission interval of non-INVITE requests, in
    /// milliseconds (at least -sip-t1-ms, at most 60000)
    #[arg(long, env = "ROUNDABOUT_SIP_T2_MS", value_name = "MS",
          default_value_t = duration_ms(SipTimers::RFC_3261.t2),
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub sip_t2_ms: u64,

    /// Transactions kept at once; beyond it, requests that need one get 503
    #[arg(long, env = "ROUNDABOUT_MAX_TRANSACTIONS", value_name = "N",
          default_value_t = TransactionLimits::DEFAULT.max,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_transactions: usize,

    /// Bytes of requests and ACKs the transactions keep at once; beyond it, requests that
    /// need a transaction get 503
    #[arg(long, env = "ROUNDABOUT_MAX_TRANSACTION_BYTES", value_name = "BYTES",
          default_value_t = TransactionLimits::DEFAULT.max_bytes,
          value_parser = RangedU64ValueParser::<usize>::new().range(65_536..))]
    pub max_transaction_bytes: usize,
}

const fn duration_ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

/// Resource limits; defaults are [`Limits::DEFAULT`].
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest SIP message accepted, in bytes (1024-1048576)
    #[arg(long, env = "ROUNDABOUT_MAX_MESSAGE_SIZE", value_name = "BYTES",
          default_value_t = Limits::DEFAULT.max_message,
          value_parser = RangedU64ValueParser::<usize>::new().range(1024..=1_048_576))]
    pub max_message_size: usize,

    /// Open TCP, TLS, WS and WSS connections together
    #[arg(long, env = "ROUNDABOUT_MAX_CONNECTIONS", value_name = "N",
          default_value_t = Limits::DEFAULT.max_connections,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,

    /// Open connections from one IP address
    #[arg(long, env = "ROUNDABOUT_MAX_CONNECTIONS_PER_IP", value_name = "N",
          default_value_t = Limits::DEFAULT.max_connections_per_ip,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_ip: usize,

    /// Seconds without traffic after which a connection is closed (WS and WSS: without a
    /// message either way; pings do not count)
    #[arg(long, env = "ROUNDABOUT_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = Limits::DEFAULT.idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,

    /// Seconds allowed for a TLS or WebSocket handshake
    #[arg(long, env = "ROUNDABOUT_HANDSHAKE_TIMEOUT", value_name = "SECONDS",
          default_value_t = Limits::DEFAULT.handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,

    /// Seconds within which a message started on a stream must be complete
    #[arg(long, env = "ROUNDABOUT_READ_TIMEOUT", value_name = "SECONDS",
          default_value_t = Limits::DEFAULT.read_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout: u64,

    /// Seconds a connection's writes may make no progress (the peer stopped reading) before it
    /// is closed; also its TCP_USER_TIMEOUT
    #[arg(long, env = "ROUNDABOUT_WRITE_TIMEOUT", value_name = "SECONDS",
          default_value_t = Limits::DEFAULT.write_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Seconds between WebSocket pings on idle WS and WSS flows
    #[arg(long, env = "ROUNDABOUT_WS_PING_INTERVAL", value_name = "SECONDS",
          default_value_t = Limits::DEFAULT.ws_ping_interval.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_ping_interval: u64,

    /// Client bindings (REGISTERed users) kept at most
    #[arg(long, env = "ROUNDABOUT_CLIENT_CACHE_SIZE", value_name = "N",
          default_value_t = Limits::DEFAULT.client_cache_size,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub client_cache_size: usize,

    /// Messages queued per connection before sends to it are refused
    #[arg(long, env = "ROUNDABOUT_SEND_QUEUE", value_name = "N",
          default_value_t = Limits::DEFAULT.send_queue,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub send_queue: usize,

    /// Bytes queued per connection (until written) before sends to it are refused; at least
    /// -max-message-size
    #[arg(long, env = "ROUNDABOUT_SEND_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = Limits::DEFAULT.send_queue_bytes,
          value_parser = RangedU64ValueParser::<usize>::new().range(1024..))]
    pub send_queue_bytes: usize,

    /// Bytes queued over all connections together before sends to any are refused; at least
    /// -send-queue-bytes
    #[arg(long, env = "ROUNDABOUT_SEND_BUFFER_TOTAL", value_name = "BYTES",
          default_value_t = Limits::DEFAULT.send_buffer_total,
          value_parser = RangedU64ValueParser::<usize>::new().range(1024..))]
    pub send_buffer_total: usize,

    /// Messages per second accepted from one source IP that is not a trusted server (bursts
    /// of twice as many pass); 0 turns the limit off
    #[arg(long, env = "ROUNDABOUT_RATE_LIMIT", value_name = "N",
          default_value_t = Limits::DEFAULT.rate_limit)]
    pub rate_limit: u32,

    /// New (out-of-dialog) requests per second over all sources before further ones get 503,
    /// so calls in progress keep flowing under overload; 0 turns the guard off
    #[arg(long, env = "ROUNDABOUT_MAX_NEW_REQUESTS", value_name = "N",
          default_value_t = Limits::DEFAULT.max_new_requests)]
    pub max_new_requests: u32,
}

//! Command-line types (clap derive) and the argv pre-pass that lets every long flag also be
//! written Go-style with a single dash (`-local-ip`), as the original Roundabout's users do.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::TypedValueParser as _;
use clap::builder::{BoolishValueParser, PossibleValuesParser, RangedU64ValueParser};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{parse_port_digits, ConfigError, Limits, SipTimers, TransactionLimits};
use crate::csr::CsrRequest;
use crate::transport::Transport;

/// Key file the CSR commands read when none is named (the original looked in the working directory).
const DEFAULT_CSR_KEY: &str = "./key.pem";

/// A SIP proxy that bridges UDP, TCP, TLS, WS and WSS endpoints.
///
/// Every flag may be written with one dash or two (`-local-ip` or `--local-ip`), and every run
/// flag may also come from the environment variable named in its help (`ROUNDABOUT_<NAME>`).
/// Switches take an optional value after `=`, as in Go: `-strict-host` is `-strict-host=true`;
/// they and their variables accept true/false, 1/0, yes/no and on/off.
#[derive(Debug, Parser)]
#[command(name = "roundabout", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub legacy_csr: LegacyCsrArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a certificate signing request for an existing RSA or ECDSA key, then exit.
    Csr(CsrArgs),
}

/// What the command line asks for, once the two CSR spellings are merged.
#[derive(Debug)]
pub enum Action {
    Run(Box<RunArgs>),
    Csr(Box<CsrRequest>),
}

impl Cli {
    /// Resolves the subcommand, the original's `-csr` flag, or a proxy run.
    ///
    /// # Errors
    /// `-csr` without `-csr-cn`.
    pub fn into_action(self) -> Result<Action, ConfigError> {
        if let Some(Command::Csr(args)) = self.command {
            return Ok(Action::Csr(Box::new(args.into_request())));
        }
        if self.legacy_csr.csr {
            let key = self
                .run
                .tls_key
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CSR_KEY));
            return self
                .legacy_csr
                .into_request(key)
                .map(|request| Action::Csr(Box::new(request)));
        }
        Ok(Action::Run(Box::new(self.run)))
    }
}

/// Parses the process arguments, accepting single-dash long flags.
///
/// # Errors
/// clap's error for unknown flags, bad values, `--help` and `--version`.
pub fn parse<I>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = OsString>,
{
    let mut command = Cli::command();
    // Built, the command also lists clap's own --help and --version, so -help works too.
    command.build();
    let args = normalize_args(&command, args);
    let matches = command.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
}

/// Rewrites `-name` and `-name=value` to `--name…` when `name` is a long flag of the command
/// being parsed (clap has no single-dash long flags). Values of flags that take one, short
/// flags and unknown words pass unchanged, so clap still reports what it does not know.
#[must_use]
pub fn normalize_args<I>(command: &clap::Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let mut normalized: Vec<OsString> = args.next().into_iter().collect();
    let mut current = command;
    let mut value_follows = false;
    let mut only_values = false;
    for arg in args {
        if value_follows || only_values {
            value_follows = false;
            normalized.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            normalized.push(arg);
            continue;
        };
        if text == "--" {
            only_values = true;
            normalized.push(arg);
            continue;
        }
        let long = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-').filter(|word| word.len() > 1));
        let Some(long) = long else {
            if let Some(sub) = current.find_subcommand(text) {
                current = sub;
            }
            normalized.push(arg);
            continue;
        };
        let (name, inline_value) = match long.split_once('=') {
            Some((name, _)) => (name, true),
            None => (long, false),
        };
        match current.get_arguments().find(|a| a.get_long() == Some(name)) {
            Some(known) => {
                value_follows = !inline_value
                    && known.get_action().takes_values()
                    && !known.is_require_equals_set();
                normalized.push(format!("--{long}").into());
            }
            None => normalized.push(arg),
        }
    }
    normalized
}

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

    /// Extra PEM root certificates for outbound TLS and WSS [default: none]
    #[arg(long, env = "ROUNDABOUT_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

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

/// The original's once-off CSR flags (`-csr -csr-cn … -tls-key …`).
#[derive(Debug, clap::Args)]
#[command(
    next_help_heading = "Certificate signing request (original flags; see also `roundabout csr`)"
)]
pub struct LegacyCsrArgs {
    /// Write a certificate signing request signed by -tls-key, then exit
    #[arg(long)]
    pub csr: bool,

    /// CSR subject country
    #[arg(long, value_name = "C", requires = "csr")]
    pub csr_c: Option<String>,

    /// CSR subject common name (required with -csr)
    #[arg(long, value_name = "NAME", requires = "csr")]
    pub csr_cn: Option<String>,

    /// CSR subject locality
    #[arg(long, value_name = "L", requires = "csr")]
    pub csr_l: Option<String>,

    /// CSR subject organisation
    #[arg(long, value_name = "O", requires = "csr")]
    pub csr_o: Option<String>,

    /// CSR subject organisational unit
    #[arg(long, value_name = "OU", requires = "csr")]
    pub csr_ou: Option<String>,

    /// CSR subject state or province
    #[arg(long, value_name = "ST", requires = "csr")]
    pub csr_p: Option<String>,

    /// CSR subject alternative names, comma-separated (DNS names or IP addresses)
    #[arg(long, value_name = "LIST", requires = "csr", value_delimiter = ',', action = ArgAction::Append)]
    pub csr_san: Vec<String>,
}

impl LegacyCsrArgs {
    fn into_request(self, key: PathBuf) -> Result<CsrRequest, ConfigError> {
        let common_name = self.csr_cn.ok_or(ConfigError::CsrWithoutCommonName)?;
        Ok(CsrRequest {
            key,
            common_name,
            sans: self.csr_san,
            country: self.csr_c,
            state: self.csr_p,
            locality: self.csr_l,
            organization: self.csr_o,
            organizational_unit: self.csr_ou,
            out: None,
        })
    }
}

/// `roundabout csr`: the new spelling of `-csr`.
#[derive(Debug, clap::Args)]
pub struct CsrArgs {
    /// PEM private key (PKCS#1, PKCS#8 or SEC1; RSA or ECDSA)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CSR_KEY)]
    pub key: PathBuf,

    /// Subject common name
    #[arg(long, value_name = "NAME", required = true)]
    pub cn: String,

    /// Subject alternative names, comma-separated or repeated (DNS names or IP addresses)
    #[arg(long, value_name = "LIST", value_delimiter = ',', action = ArgAction::Append)]
    pub san: Vec<String>,

    /// Subject country
    #[arg(long, value_name = "C")]
    pub c: Option<String>,

    /// Subject state or province
    #[arg(long, value_name = "ST")]
    pub st: Option<String>,

    /// Subject locality
    #[arg(long, value_name = "L")]
    pub l: Option<String>,

    /// Subject organisation
    #[arg(long, value_name = "O")]
    pub o: Option<String>,

    /// Subject organisational unit
    #[arg(long, value_name = "OU")]
    pub ou: Option<String>,

    /// Write the PEM CSR here [default: stdout]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl CsrArgs {
    fn into_request(self) -> CsrRequest {
        CsrRequest {
            key: self.key,
            common_name: self.cn,
            sans: self.san,
            country: self.c,
            state: self.st,
            locality: self.l,
            organization: self.o,
            organizational_unit: self.ou,
            out: self.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_args(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn normalized(args: &[&str]) -> Vec<String> {
        let mut command = Cli::command();
        command.build();
        normalize_args(&command, os_args(args))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(os_args(args))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn normalization_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["rb", "-local-ip=1.2.3.4"], &["rb", "--local-ip=1.2.3.4"]),
            (
                &["rb", "-local-ip", "1.2.3.4"],
                &["rb", "--local-ip", "1.2.3.4"],
            ),
            (
                &["rb", "-strict-host", "-ack-ruri"],
                &["rb", "--strict-host", "--ack-ruri"],
            ),
            (&["rb", "-h"], &["rb", "-h"]),
            (&["rb", "-help"], &["rb", "--help"]),
            (&["rb", "-V"], &["rb", "-V"]),
            // A value that looks like a flag stays a value.
            (
                &["rb", "-csr-ou", "-strict-host"],
                &["rb", "--csr-ou", "-strict-host"],
            ),
            (
                &["rb", "--local-fqdn", "-ack-ruri"],
                &["rb", "--local-fqdn", "-ack-ruri"],
            ),
            // Unknown words are left for clap to report.
            (
                &["rb", "-no-such-flag", "-local"],
                &["rb", "-no-such-flag", "-local"],
            ),
            // Subcommand flags are looked up in the subcommand.
            (
                &["rb", "csr", "-cn", "x", "-san=a,b"],
                &["rb", "csr", "--cn", "x", "--san=a,b"],
            ),
            (
                &["rb", "csr", "-local-ip", "1.2.3.4"],
                &["rb", "csr", "-local-ip", "1.2.3.4"],
            ),
            // A value equal to a subcommand name is not the subcommand.
            (
                &["rb", "-local-fqdn", "csr", "-cn"],
                &["rb", "--local-fqdn", "csr", "-cn"],
            ),
            (&["rb", "--", "-strict-host"], &["rb", "--", "-strict-host"]),
        ];
        for (input, expected) in cases {
            assert_eq!(normalized(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn every_run_flag_reads_its_environment_variable() {
        let command = Cli::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "check-config"
                || long == "help"
                || long == "version"
                || long.starts_with("csr")
            {
                assert!(
                    arg.get_env().is_none(),
                    "--{long} has an environment variable"
                );
                continue;
            }
            let expected = format!("ROUNDABOUT_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} run flags");
    }

    #[test]
    fn single_and_double_dash_parse_alike() {
        let single = parsed(&[
            "rb",
            "-local-ip",
            "203.0.113.5",
            "-strict-host",
            "-udp-port=off",
        ])
        .unwrap();
        let double = parsed(&[
            "rb",
            "--local-ip",
            "203.0.113.5",
            "--strict-host",
            "--udp-port=off",
        ])
        .unwrap();
        for cli in [single, double] {
            assert_eq!(cli.run.local_ip, "203.0.113.5".parse::<IpAddr>().unwrap());
            assert!(cli.run.strict_host);
            assert_eq!(cli.run.udp_port, PortSetting::Off);
            assert_eq!(cli.run.tcp_port, PortSetting::Port(5060));
        }
    }

    #[test]
    fn switches_take_an_optional_go_style_value() {
        let cli = parsed(&["rb", "-strict-host=false", "-ack-ruri", "-strict-client=1"]).unwrap();
        assert!(!cli.run.strict_host);
        assert!(cli.run.ack_ruri);
        assert!(cli.run.strict_client);
        assert!(!cli.run.contact_header_fqdn);
        assert!(parsed(&["rb", "-strict-host", "true"]).is_err());
        assert!(parsed(&["rb", "-strict-host=maybe"]).is_err());
    }

    #[test]
    fn trusted_server_may_repeat() {
        let cli = parsed(&["rb", "-trusted-server", "a", "--trusted-server=b"]).unwrap();
        assert_eq!(cli.run.trusted_server, ["a", "b"]);
    }

    #[test]
    fn default_network_is_case_insensitive() {
        let cli = parsed(&["rb", "-default-network", "WSS"]).unwrap();
        assert_eq!(cli.run.default_network, Transport::Wss);
        assert!(parsed(&["rb", "-default-network", "sctp"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["rb", "-udp-port", "70000"][..],
            &["rb", "-tcp-port", "5o60"],
            &["rb", "-trusted-client-mask", "129"],
            &["rb", "-max-message-size", "100"],
            &["rb", "-max-connections", "0"],
            &["rb", "-write-timeout", "0"],
            &["rb", "-send-queue-bytes", "1023"],
            &["rb", "-send-buffer-total", "1000"],
            &["rb", "-log-level", "loud"],
            &["rb", "-no-such-flag"],
            &["rb", "csr", "--key", "k.pem"],
            &["rb", "-csr-cn", "x"],
        ] {
            let error = parsed(args).unwrap_err();
            assert!(error.use_stderr(), "{args:?}");
        }
    }

    #[test]
    fn legacy_csr_flags_make_a_request() {
        let cli = parsed(&[
            "rb",
            "-csr",
            "-csr-c",
            "US",
            "-csr-cn",
            "proxya.example.com",
            "-csr-l",
            "Mountain View",
            "-csr-o",
            "The Firm",
            "-csr-ou",
            "Development",
            "-csr-p",
            "California",
            "-csr-san",
            "proxya.example.com,203.0.113.5",
            "-tls-key",
            "/home/admin/key.pem",
        ])
        .unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(
            *request,
            CsrRequest {
                key: PathBuf::from("/home/admin/key.pem"),
                common_name: "proxya.example.com".into(),
                sans: vec!["proxya.example.com".into(), "203.0.113.5".into()],
                country: Some("US".into()),
                state: Some("California".into()),
                locality: Some("Mountain View".into()),
                organization: Some("The Firm".into()),
                organizational_unit: Some("Development".into()),
                out: None,
            }
        );
    }

    #[test]
    fn legacy_csr_defaults_key_and_needs_common_name() {
        let cli = parsed(&["rb", "-csr", "-csr-cn", "a.example"]).unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(request.key, PathBuf::from("./key.pem"));
        let cli = parsed(&["rb", "-csr"]).unwrap();
        assert!(matches!(
            cli.into_action(),
            Err(ConfigError::CsrWithoutCommonName)
        ));
    }

    #[test]
    fn csr_subcommand_makes_a_request() {
        let cli = parsed(&[
            "rb",
            "csr",
            "--key",
            "k.pem",
            "-cn",
            "a.example",
            "--san",
            "a.example,b.example",
            "--san",
            "192.0.2.1",
            "--st",
            "Bavaria",
            "--out",
            "req.pem",
        ])
        .unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(request.key, PathBuf::from("k.pem"));
        assert_eq!(request.common_name, "a.example");
        assert_eq!(request.sans, ["a.example", "b.example", "192.0.2.1"]);
        assert_eq!(request.state.as_deref(), Some("Bavaria"));
        assert_eq!(request.out, Some(PathBuf::from("req.pem")));
    }

    #[test]
    fn port_settings() {
        assert_eq!("off".parse::<PortSetting>(), Ok(PortSetting::Off));
        assert_eq!("0".parse::<PortSetting>(), Ok(PortSetting::Port(0)));
        assert_eq!("65535".parse::<PortSetting>(), Ok(PortSetting::Port(65535)));
        assert!("+5060".parse::<PortSetting>().is_err());
        assert!("".parse::<PortSetting>().is_err());
    }
}

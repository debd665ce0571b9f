//! The `-trusted-server` table: datasets `ip-address:fqdn-list:port:network-protocol:route-list`
//! and what is wrong with a malformed one, field by field.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::{parse_bracketed_ip, parse_port_digits, ConfigError};
use crate::sip::host::is_host_name;
use crate::sip::Transport;

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

impl fmt::Display for RouteHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteHop::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RouteHop::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            RouteHop::Name(name) => f.write_str(name),
        }
    }
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

/// Parses every `-trusted-server` value; datasets are numbered across all of them. An entirely
/// empty value (an `EnvironmentFile=` placeholder) holds no datasets.
pub(super) fn parse_trusted_servers(
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
pub(super) fn parse_dataset(text: &str) -> Result<TrustedServer, DatasetError> {
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

//! The `-trusted-client-ip` ranges: addresses and networks, each reduced to its network.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

use super::{parse_bracketed_ip, ConfigError};

/// Addresses and networks, each reduced to its network: the `-trusted-client-ip` ranges, and
/// the `-proxy-protocol-from` balancers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientRanges {
    pub ranges: Vec<IpNet>,
}

impl ClientRanges {
    /// Whether `ip` is in one of the ranges; an IPv4-mapped IPv6 address (a dual-stack
    /// socket's view of an IPv4 peer) counts as its IPv4 address.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.ranges.iter().any(|net| net.contains(&ip))
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// `-trusted-client-ip` prefix for IPv6 entries while `-trusted-client-mask` keeps its default.
const DEFAULT_CLIENT_MASK: u8 = 24;
const DEFAULT_CLIENT_MASK_V6: u8 = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientEntryError {
    #[error("empty entry (a stray or trailing comma?)")]
    Empty,
    #[error("not an IP address or network (192.0.2.0/24, 2001:db8::/32)")]
    NotAnAddress,
    #[error("-trusted-client-mask {0} is longer than an IPv4 prefix (0-32)")]
    MaskTooLong(u8),
}

/// `-trusted-client-ip` entries, each reduced to its network; duplicates after reduction are
/// kept once. An empty list holds no ranges.
pub(super) fn parse_client_ranges(list: &str, mask: u8) -> Result<ClientRanges, ConfigError> {
    let ranges = parse_networks(list, |ip| match ip {
        IpAddr::V4(_) if mask > 32 => Err(ClientEntryError::MaskTooLong(mask)),
        IpAddr::V4(_) => Ok(mask),
        IpAddr::V6(_) if mask == DEFAULT_CLIENT_MASK => Ok(DEFAULT_CLIENT_MASK_V6),
        IpAddr::V6(_) => Ok(mask),
    })
    .map_err(|(entry, problem)| ConfigError::TrustedClient { entry, problem })?;
    Ok(ClientRanges { ranges })
}

/// `-proxy-protocol-from` entries: an address without a `/prefix` is that one host.
pub(super) fn parse_balancers(list: &str) -> Result<ClientRanges, ConfigError> {
    let ranges = parse_networks(list, |ip| Ok(if ip.is_ipv4() { 32 } else { 128 }))
        .map_err(|(entry, problem)| ConfigError::ProxyProtocolFrom { entry, problem })?;
    Ok(ClientRanges { ranges })
}

/// A comma-separated list of addresses and networks, each reduced to its network, an address
/// without a prefix getting `prefix_of` its family; duplicates are kept once. On error, the
/// entry and what is wrong with it.
fn parse_networks(
    list: &str,
    prefix_of: impl Fn(IpAddr) -> Result<u8, ClientEntryError>,
) -> Result<Vec<IpNet>, (String, ClientEntryError)> {
    let mut ranges: Vec<IpNet> = Vec::new();
    if list.is_empty() {
        return Ok(ranges);
    }
    for entry in list.split(',') {
        let range =
            parse_network(entry, &prefix_of).map_err(|problem| (entry.to_owned(), problem))?;
        if !ranges.contains(&range) {
            ranges.push(range);
        }
    }
    Ok(ranges)
}

fn parse_network(
    entry: &str,
    prefix_of: impl Fn(IpAddr) -> Result<u8, ClientEntryError>,
) -> Result<IpNet, ClientEntryError> {
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
    IpNet::new(ip, prefix_of(ip)?)
        .map(|net| net.trunc())
        .map_err(|_| ClientEntryError::NotAnAddress)
}

//! Who Roundabout is: the addresses, names and ports it recognises as its own in URIs, and
//! the text it writes about itself into Via and Contact. Neither routing nor rewriting: the
//! router asks the one, the rewriter writes the other.

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};

use crate::sip::text::{put_decimal, put_host_ip};
use crate::sip::uri::parse_host_ip;
use crate::sip::{Scheme, Transport, Uri};

use super::branch::BRANCH_PREFIX;
use super::token;

/// Roundabout's own addresses: what it writes into Via and Contact and recognises in URIs.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ip: IpAddr,
    pub fqdn: Option<String>,
    pub bind_ip: IpAddr,
    /// Bound port per listening transport.
    pub ports: Vec<(Transport, u16)>,
    /// `-contact-header-fqdn`.
    pub contact_uses_fqdn: bool,
    /// The addresses of this host's interfaces, read at start: with a wildcard `-bind-ip` the
    /// listeners take what is sent to any of them.
    pub host_ips: Vec<IpAddr>,
}

impl Identity {
    /// Whether a URI host names Roundabout: `-local-ip`, `-local-fqdn`, or an address its
    /// listeners take (see [`Identity::is_own_ip`]).
    #[must_use]
    pub fn names_host(&self, host: &[u8]) -> bool {
        match parse_host_ip(host) {
            Some(ip) => self.is_own_ip(ip),
            None => self
                .fqdn
                .as_ref()
                .is_some_and(|f| f.as_bytes().eq_ignore_ascii_case(host)),
        }
    }

    /// Whether what is sent to `ip` reaches Roundabout's listeners (at a port they listen on):
    /// `-local-ip`, `-bind-ip`, and with a wildcard `-bind-ip` every loopback address and every
    /// address of the host's interfaces, of IPv4 only for `0.0.0.0` (an IPv6 wildcard socket
    /// takes IPv4 too, as its listeners do not set `IPV6_V6ONLY`).
    #[must_use]
    pub fn is_own_ip(&self, ip: IpAddr) -> bool {
        let local = || ip.is_loopback() || self.host_ips.contains(&ip);
        ip == self.ip
            || match self.bind_ip {
                IpAddr::V4(any) if any.is_unspecified() => ip.is_ipv4() && local(),
                IpAddr::V6(any) if any.is_unspecified() => local(),
                bound => ip == bound,
            }
    }

    /// Whether a SIP URI names Roundabout: its host and a port it listens on (the scheme's
    /// default when the URI has none), so a server sharing Roundabout's IP is not mistaken for it.
    #[must_use]
    pub fn is_self(&self, uri: &Uri) -> bool {
        let port = uri.port.unwrap_or(match uri.scheme {
            Scheme::Sips => 5061,
            _ => 5060,
        });
        uri.is_sip() && self.names_host(uri.host()) && self.listens_on(port)
    }

    /// Whether an address a host name resolved to is one of Roundabout's listening addresses:
    /// sending there would send to itself.
    #[must_use]
    pub fn is_own_address(&self, addr: SocketAddr) -> bool {
        self.is_own_ip(addr.ip().to_canonical()) && self.listens_on(addr.port())
    }

    fn listens_on(&self, port: u16) -> bool {
        self.ports.iter().any(|(_, p)| *p == port)
    }

    /// The port advertised for a transport: the bound one, else the transport's default.
    #[must_use]
    pub fn port(&self, transport: Transport) -> u16 {
        self.ports
            .iter()
            .find(|(t, _)| *t == transport)
            .map_or(transport.default_port(), |(_, p)| *p)
    }
}

/// What Roundabout writes about itself, prepared once per egress transport: its Via up to the
/// branch value, and its Contact URI from the host up to the token value.
#[derive(Clone, Debug)]
pub struct OwnText {
    via: [Bytes; Transport::ALL.len()],
    contact: [Bytes; Transport::ALL.len()],
}

impl OwnText {
    #[must_use]
    pub fn new(identity: &Identity) -> OwnText {
        let per_transport = |write: &dyn Fn(&mut BytesMut, Transport)| {
            Transport::ALL.map(|transport| {
                let mut out = BytesMut::new();
                write(&mut out, transport);
                out.freeze()
            })
        };
        OwnText {
            via: per_transport(&|o, transport| {
                o.extend_from_slice(b"SIP/2.0/");
                o.extend_from_slice(transport.via_token().as_bytes());
                o.extend_from_slice(b" ");
                put_host_ip(o, identity.ip);
                o.extend_from_slice(b":");
                put_decimal(o, u32::from(identity.port(transport)));
                o.extend_from_slice(b";branch=");
                o.extend_from_slice(BRANCH_PREFIX.as_bytes());
            }),
            contact: per_transport(&|o, transport| {
                match (&identity.fqdn, identity.contact_uses_fqdn) {
                    (Some(fqdn), true) => o.extend_from_slice(fqdn.as_bytes()),
                    _ => put_host_ip(o, identity.ip),
                }
                o.extend_from_slice(b":");
                put_decimal(o, u32::from(identity.port(transport)));
                o.extend_from_slice(b";transport=");
                o.extend_from_slice(transport.as_str().as_bytes());
                o.extend_from_slice(b";");
                o.extend_from_slice(token::PARAM.as_bytes());
                o.extend_from_slice(b"=");
            }),
        }
    }

    /// `SIP/2.0/<TRANSPORT> <us>:<port>;branch=<BRANCH_PREFIX>`: the Via pushed on a request
    /// leaving on `transport`, without the branch's digits.
    #[must_use]
    pub fn via(&self, transport: Transport) -> &[u8] {
        &self.via[transport as usize]
    }

    /// `<us>:<port>;transport=<transport>;rbt=`: a rewritten Contact URI after the user part,
    /// without the token.
    #[must_use]
    pub fn contact(&self, transport: Transport) -> &[u8] {
        &self.contact[transport as usize]
    }
}

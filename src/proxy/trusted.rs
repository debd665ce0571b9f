//! Lookups in the trusted-server table and the trusted client ranges.

use std::net::IpAddr;

use crate::config::{RouteHop, TrustedServer, TrustedServers};
use crate::sip::uri::parse_host_ip;
use crate::transport::FlowKey;

use super::branch::Responder;

impl TrustedServers {
    /// The server an R-URI, Route or To host names: by IP or any of its FQDNs. Where several
    /// servers share the host, the URI's port picks among them; without a match on the port the
    /// first one wins.
    #[must_use]
    pub fn find(&self, host: &[u8], port: Option<u16>) -> Option<(usize, &TrustedServer)> {
        match parse_host_ip(host) {
            Some(ip) => self.find_where(port, |s| s.ip == ip),
            None => self.find_where(port, |s| {
                s.fqdns
                    .iter()
                    .any(|name| name.as_bytes().eq_ignore_ascii_case(host))
            }),
        }
    }

    fn find_where(
        &self,
        port: Option<u16>,
        names_host: impl Fn(&TrustedServer) -> bool,
    ) -> Option<(usize, &TrustedServer)> {
        let mut matches = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| names_host(s));
        let first = matches.next()?;
        match port {
            Some(port) if first.1.port != port => {
                Some(matches.find(|(_, s)| s.port == port).unwrap_or(first))
            }
            _ => Some(first),
        }
    }

    /// The server listening exactly at `flow`: its address and its transport. A flow names
    /// both, and one host may list a server per transport on one address (UDP and TLS on
    /// 5061, say) with different names.
    #[must_use]
    pub fn at(&self, flow: &FlowKey) -> Option<&TrustedServer> {
        self.servers
            .iter()
            .find(|s| s.addr() == flow.remote && s.transport == flow.transport)
    }

    /// Whether `flow` is a trusted server's (see [`TrustedServers::at`]): a flow Roundabout may
    /// dial again.
    #[must_use]
    pub fn is_server_address(&self, flow: &FlowKey) -> bool {
        self.at(flow).is_some()
    }

    /// The server at `index` in the table (`-default-sip-server` names one so).
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&TrustedServer> {
        self.servers.get(index)
    }

    /// Who may answer a request sent to `flow` (and, for a response, who sent it): a trusted
    /// server's address stands for every trusted server, any other address for itself.
    #[must_use]
    pub fn responder(&self, flow: &FlowKey) -> Responder {
        if self.is_server_ip(flow.remote.ip()) {
            Responder::TrustedServer
        } else {
            Responder::Exactly(*flow)
        }
    }

    /// Whether `ip` is the address of a trusted server (on any port and transport).
    #[must_use]
    pub fn is_server_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.servers.iter().any(|s| s.ip.to_canonical() == ip)
    }

    /// Resolves a route-list hop to an address: an IP directly, a name through the table.
    #[must_use]
    pub fn hop_address(&self, hop: &RouteHop) -> Option<(IpAddr, Option<&TrustedServer>)> {
        match hop {
            RouteHop::Ip(ip) => Some((*ip, self.find_where(None, |s| s.ip == *ip).map(|(_, s)| s))),
            RouteHop::Name(name) => self
                .find(name.as_bytes(), None)
                .map(|(_, s)| (s.ip, Some(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn server(ip: &str, fqdns: &[&str], port: u16, transport: Transport) -> TrustedServer {
        TrustedServer {
            ip: ip.parse().unwrap(),
            fqdns: fqdns.iter().map(|s| s.to_string()).collect(),
            port,
            transport,
            routes: vec![],
        }
    }

    fn table() -> TrustedServers {
        TrustedServers {
            servers: vec![
                server(
                    "203.0.113.20",
                    &["server.example.com"],
                    5060,
                    Transport::Tcp,
                ),
                server(
                    "203.0.113.110",
                    &["pbx.example.com", "srv.tel.example.com"],
                    5060,
                    Transport::Wss,
                ),
                server("203.0.113.110", &[], 5080, Transport::Udp),
                server("2001:db8::1", &[], 5060, Transport::Udp),
            ],
        }
    }

    #[test]
    fn finds_by_ip_fqdn_and_port() {
        let t = table();
        let idx = |host: &str, port| t.find(host.as_bytes(), port).map(|(i, _)| i);
        assert_eq!(idx("203.0.113.20", None), Some(0));
        assert_eq!(idx("SERVER.example.com", Some(5060)), Some(0));
        assert_eq!(idx("srv.tel.example.com", None), Some(1));
        assert_eq!(idx("203.0.113.110", None), Some(1));
        assert_eq!(idx("203.0.113.110", Some(5080)), Some(2));
        assert_eq!(idx("203.0.113.110", Some(9999)), Some(1));
        assert_eq!(idx("[2001:db8::1]", None), Some(3));
        assert_eq!(idx("[::ffff:203.0.113.20]", None), Some(0));
        assert_eq!(idx("unknown.example.com", None), None);
        assert_eq!(idx("203.0.113.21", None), None);
    }

    /// A flow is a trusted server's when both its address and its transport are.
    #[test]
    fn server_at_a_flow_matches_address_and_transport() {
        let t = table();
        let at = |transport, addr: &str| {
            let flow = FlowKey {
                transport,
                remote: addr.parse().unwrap(),
            };
            t.at(&flow).map(|s| (s.port, s.transport))
        };
        assert_eq!(
            at(Transport::Wss, "203.0.113.110:5060"),
            Some((5060, Transport::Wss))
        );
        assert_eq!(
            at(Transport::Udp, "203.0.113.110:5080"),
            Some((5080, Transport::Udp))
        );
        assert_eq!(at(Transport::Udp, "203.0.113.110:5060"), None);
        assert_eq!(at(Transport::Tcp, "203.0.113.20:5070"), None);
    }
}

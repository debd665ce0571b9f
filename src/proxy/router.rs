//! Where a message goes: pure decisions from (message, source flow, tables) to an action.
//! The rules and their order are those of ROUNDABOUT.md "Request routing" and "Responses".

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ClientRanges, Config, TrustedServer, TrustedServers};
use crate::sip::uri::parse_host_ip;
use crate::sip::{HeaderName, Message, Method, ParseError, Scheme, Transport, Uri, Via};
use crate::transport::{Destination, FlowKey};

use super::branch::{Branch, BranchInput, BranchKey, PreviousHop, Responder, BRANCH_PREFIX};
use super::clients::{ClientCache, ClientLookup};
use super::rewrite::OwnText;
use super::token::{self, ContactToken, TokenKey};

/// A final response the proxy sends itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

impl Status {
    pub const TRYING: Status = Status::new(100, "Trying");
    pub const OK: Status = Status::new(200, "OK");
    pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
    pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
    pub const BAD_EXTENSION: Status = Status::new(420, "Bad Extension");
    pub const FORBIDDEN: Status = Status::new(403, "Forbidden");
    pub const NOT_FOUND: Status = Status::new(404, "Not Found");
    pub const TEMPORARILY_UNAVAILABLE: Status = Status::new(480, "Temporarily Unavailable");
    pub const LOOP_DETECTED: Status = Status::new(482, "Loop Detected");
    pub const TOO_MANY_HOPS: Status = Status::new(483, "Too Many Hops");
    pub const SERVER_ERROR: Status = Status::new(500, "Server Internal Error");
    pub const SERVICE_UNAVAILABLE: Status = Status::new(503, "Service Unavailable");
    /// A REGISTER the client cache could not keep (answered with a Retry-After).
    pub const CLIENT_CACHE_FULL: Status =
        Status::new(503, "Service Unavailable (client cache full)");

    #[must_use]
    pub const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }
}

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

/// Host names a request may find to name Roundabout before it is answered 482: more than a
/// request naming Roundabout by a name and its next hop by another needs, few enough that no
/// request makes Roundabout resolve a long list of names.
pub const MAX_SELF_NAMES: usize = 4;

/// Host names (with the port asked for) found, while one request was routed, to resolve to
/// Roundabout's own listening addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfNames(Vec<(String, u16)>);

/// How the Request-URI changes on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewRequestUri {
    /// Restored from a contact token or a client binding.
    Replace(Vec<u8>),
    /// `-default-sip-server`: host and port become the server's (index into the table).
    ServerHost(usize),
}

/// Where a forwarded request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    Flow(Destination),
    /// A host name that is not a trusted server (only without `-strict-host`).
    Resolve(Lookup),
}

/// A host name to resolve, and how to reach what it resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub next: NextHop,
    /// Used when `next` is a stream flow that is gone and may not be dialled again.
    pub fallback: Option<Destination>,
    pub request_uri: Option<NewRequestUri>,
    /// How many Routes on top name Roundabout (RFC 3261 §16.4): they are removed.
    pub pop_routes: usize,
    /// Push this trusted server's route-list as Route headers.
    pub push_routes: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAction {
    Forward(Forward),
    Reply(Status),
    Drop(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    Forward(Destination),
    /// Not for Roundabout, or nowhere to go.
    Drop(&'static str),
    /// Claims to answer a request of Roundabout's but does not: a forged or misdirected
    /// response, counted and warned about.
    Forged(&'static str),
}

/// The routing tables and switches; immutable after start.
#[derive(Clone, Debug)]
pub struct Router {
    pub identity: Identity,
    pub servers: TrustedServers,
    client_ranges: ClientRanges,
    strict_host: bool,
    strict_client: bool,
    ack_ruri: bool,
    default_network: Transport,
    default_sip_server: Option<usize>,
    pub tokens: TokenKey,
    /// Authenticates Roundabout's Via branches and To tags.
    pub branches: BranchKey,
    pub clients: Arc<ClientCache>,
    pub(super) own: OwnText,
}

impl Router {
    #[must_use]
    pub fn new(config: &Config, ports: Vec<(Transport, u16)>) -> Router {
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
            token_key,
            limits,
            ports: _,
            tls: _,
            tls_ca: _,
            drain_timeout: _,
            ws_path: _,
            sip_timers: _,
            transaction_limits: _,
        } = config;
        let identity = Identity {
            ip: *local_ip,
            fqdn: local_fqdn.clone(),
            bind_ip: *bind_ip,
            ports,
            contact_uses_fqdn: *contact_header_fqdn,
            host_ips: Vec::new(),
        };
        Router {
            own: OwnText::new(&identity),
            identity,
            servers: trusted_servers.clone(),
            client_ranges: trusted_clients.clone(),
            strict_host: *strict_host,
            strict_client: *strict_client,
            ack_ruri: *ack_ruri,
            default_network: *default_network,
            default_sip_server: *default_sip_server,
            tokens: TokenKey::new(token_key),
            branches: BranchKey::new(token_key),
            clients: Arc::new(ClientCache::new(limits.client_cache_size)),
        }
    }

    /// With a wildcard `-bind-ip`: the addresses of the host's interfaces, which then name
    /// Roundabout too (read by the caller, so routing stays free of I/O).
    #[must_use]
    pub fn with_host_addresses(mut self, host_ips: Vec<IpAddr>) -> Router {
        self.identity.host_ips = host_ips;
        self
    }

    /// Decides what happens to a request that parsed and validated.
    #[must_use]
    pub fn route_request(&self, msg: &Message, source: &FlowKey, now: Instant) -> RequestAction {
        self.route_knowing(msg, source, now, &SelfNames::default())
    }

    /// The host name of the next hop resolved to one of Roundabout's own listening
    /// addresses: the name (at the port routing asked for) is Roundabout's, as its addresses are,
    /// and the request is routed again knowing it. A Route naming it is removed, an R-URI naming
    /// it goes by rule 5; the request is never sent to Roundabout itself. `self_names` carries
    /// what earlier resolutions of the same request found, so a request naming Roundabout by
    /// several names ends; past [`MAX_SELF_NAMES`] it is answered 482 (RFC 3261 §16.3 step 4).
    #[must_use]
    pub fn route_as_self(
        &self,
        msg: &Message,
        source: &FlowKey,
        now: Instant,
        lookup: &Lookup,
        self_names: &mut SelfNames,
    ) -> RequestAction {
        if self_names.0.len() >= MAX_SELF_NAMES {
            return RequestAction::Reply(Status::LOOP_DETECTED);
        }
        self_names.0.push((lookup.host.clone(), lookup.port));
        self.route_knowing(msg, source, now, self_names)
    }

    fn route_knowing(
        &self,
        msg: &Message,
        source: &FlowKey,
        now: Instant,
        self_names: &SelfNames,
    ) -> RequestAction {
        match self.try_route_request(msg, source, now, self_names) {
            Ok(action) => action,
            Err(_) => RequestAction::Reply(Status::BAD_REQUEST),
        }
    }

    /// Whether a URI names Roundabout: by its own addresses and names, or by a host name found
    /// to resolve to them while this request was routed.
    fn names_us(&self, uri: &Uri, self_names: &SelfNames) -> bool {
        self.identity.is_self(uri)
            || (!self_names.0.is_empty() && uri.is_sip() && {
                let port = self.direct_transport_port(uri).1;
                self_names
                    .0
                    .iter()
                    .any(|(name, p)| *p == port && name.as_bytes().eq_ignore_ascii_case(uri.host()))
            })
    }

    fn try_route_request(
        &self,
        msg: &Message,
        source: &FlowKey,
        now: Instant,
        self_names: &SelfNames,
    ) -> Result<RequestAction, ParseError> {
        let buf = msg.bytes();
        let method = msg.method();
        // Rule 1: RFC 3261 §16.3 step 3; an ACK cannot be answered.
        if msg.max_forwards()? == Some(0) {
            return Ok(match method {
                Some(Method::Ack) => RequestAction::Drop("ACK with Max-Forwards 0"),
                _ => RequestAction::Reply(Status::TOO_MANY_HOPS),
            });
        }
        // RFC 3261 §16.3 step 5: Roundabout understands no extension a proxy must support.
        if method != Some(Method::Ack) && !proxy_require(msg).is_empty() {
            return Ok(RequestAction::Reply(Status::BAD_EXTENSION));
        }
        // Rule 2: access.
        if method == Some(Method::Register)
            && self.strict_client
            && !self.client_ranges.contains(source.remote.ip())
        {
            return Ok(RequestAction::Reply(Status::FORBIDDEN));
        }
        // Rule 3: loose routing, RFC 3261 §16.4. Every Route on top that names Roundabout goes:
        // sending the request on to the next of them would only bring it back here.
        let mut routes = msg.routes();
        let mut pop_routes = 0;
        let mut next_route = routes.next().transpose()?;
        while let Some(route) = next_route {
            if !self.names_us(&route.parsed_uri(buf)?, self_names) {
                break;
            }
            pop_routes += 1;
            next_route = routes.next().transpose()?;
        }
        if let Some(route) = next_route {
            let uri = route.parsed_uri(buf)?;
            return Ok(self.to_uri_host(&uri, pop_routes));
        }
        let span = msg.request_uri().ok_or(ParseError::BadStartLine)?;
        let request_uri = Uri::parse(buf, span)?;
        // RFC 3261 §19.1.5: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        if request_uri.is_sip() && request_uri.params.end() < span.end() {
            return Ok(RequestAction::Reply(Status::new(
                400,
                "Bad Request (headers in Request-URI)",
            )));
        }
        // Rule 4 (and 8: an ACK with a token is always routed by it). A token that does not
        // verify is never used as an address.
        if let Some(token) = request_uri
            .param_value(token::PARAM)
            .and_then(|t| self.tokens.decode(t))
        {
            return Ok(self.to_token(token, pop_routes));
        }
        // Rule 8: without -ack-ruri, ACK goes by its To host, as in the original.
        let to;
        let routing_uri = if method == Some(Method::Ack) && !self.ack_ruri {
            to = msg.to()?;
            to.parsed_uri(buf)?
        } else {
            request_uri
        };
        if !routing_uri.is_sip() {
            return Ok(RequestAction::Reply(Status::new(
                416,
                "Unsupported URI Scheme",
            )));
        }
        // Rule 5.
        if self.names_us(&routing_uri, self_names) {
            return Ok(self.to_self(&routing_uri, pop_routes, now));
        }
        // Rules 6 and 7.
        Ok(self.to_uri_host(&routing_uri, pop_routes))
    }

    fn to_token(&self, token: ContactToken, pop_routes: usize) -> RequestAction {
        let server = self
            .servers
            .servers
            .iter()
            .find(|s| s.addr() == token.flow.remote);
        let may_connect = token.may_connect || token.flow.transport == Transport::Udp;
        // A stream client's connection cannot be dialled back; a server named by the original
        // URI can still be reached through the table.
        let fallback = if may_connect {
            None
        } else {
            let buf = &token.original_uri[..];
            Uri::parse(buf, crate::sip::Span::new(0, buf.len()))
                .ok()
                .and_then(|uri| self.servers.find(uri.host(), uri.port))
                .map(|(_, s)| server_destination(s))
        };
        RequestAction::Forward(Forward {
            next: NextHop::Flow(Destination {
                flow: token.flow,
                // A connection the client opened: only that one (a new one from its address
                // and port may be someone else's).
                connection: token.connection.filter(|_| !may_connect),
                server_name: server.and_then(server_name),
                may_connect,
            }),
            fallback,
            request_uri: Some(NewRequestUri::Replace(token.original_uri)),
            pop_routes,
            push_routes: None,
        })
    }

    fn to_self(&self, uri: &Uri, pop_routes: usize, now: Instant) -> RequestAction {
        let lookup = uri
            .user()
            .map_or(ClientLookup::Unknown, |user| self.clients.lookup(user, now));
        match lookup {
            ClientLookup::Bound(binding) => RequestAction::Forward(Forward {
                next: NextHop::Flow(Destination {
                    flow: binding.flow,
                    connection: binding.connection,
                    server_name: None,
                    may_connect: binding.flow.transport == Transport::Udp,
                }),
                fallback: None,
                request_uri: Some(NewRequestUri::Replace(binding.contact.to_vec())),
                pop_routes,
                push_routes: None,
            }),
            ClientLookup::Expired => RequestAction::Reply(Status::TEMPORARILY_UNAVAILABLE),
            ClientLookup::Unknown => match self.default_sip_server {
                Some(index) => {
                    let server = &self.servers.servers[index];
                    RequestAction::Forward(Forward {
                        next: NextHop::Flow(server_destination(server)),
                        fallback: None,
                        request_uri: Some(NewRequestUri::ServerHost(index)),
                        pop_routes,
                        push_routes: None,
                    })
                }
                None => RequestAction::Reply(Status::NOT_FOUND),
            },
        }
    }

    /// Rules 6 and 7 for an R-URI, a To URI or a Route URI.
    fn to_uri_host(&self, uri: &Uri, pop_routes: usize) -> RequestAction {
        if let Some((index, server)) = self.servers.find(uri.host(), uri.port) {
            let Some(first_hop) = server.routes.first() else {
                return RequestAction::Forward(Forward {
                    next: NextHop::Flow(server_destination(server)),
                    fallback: None,
                    request_uri: None,
                    pop_routes,
                    push_routes: None,
                });
            };
            let Some((ip, hop_server)) = self.servers.hop_address(first_hop) else {
                return RequestAction::Reply(Status::SERVER_ERROR);
            };
            let via = hop_server.unwrap_or(server);
            return RequestAction::Forward(Forward {
                next: NextHop::Flow(Destination {
                    flow: FlowKey {
                        transport: via.transport,
                        remote: SocketAddr::new(ip, via.port),
                    },
                    connection: None,
                    server_name: hop_server.and_then(server_name),
                    may_connect: true,
                }),
                fallback: None,
                request_uri: None,
                pop_routes,
                push_routes: Some(index),
            });
        }
        if self.strict_host {
            return RequestAction::Reply(Status::FORBIDDEN);
        }
        let (transport, port) = self.direct_transport_port(uri);
        let next = match uri.host_ip() {
            Some(ip) if !is_unicast(ip) => return RequestAction::Reply(Status::FORBIDDEN),
            Some(ip) => NextHop::Flow(Destination {
                flow: FlowKey {
                    transport,
                    remote: SocketAddr::new(ip, port),
                },
                connection: None,
                server_name: None,
                may_connect: true,
            }),
            None => NextHop::Resolve(Lookup {
                host: String::from_utf8_lossy(uri.host()).into_owned(),
                port,
                transport,
            }),
        };
        RequestAction::Forward(Forward {
            next,
            fallback: None,
            request_uri: None,
            pop_routes,
            push_routes: None,
        })
    }

    /// Rule 7: how a host that is not a trusted server is reached.
    fn direct_transport_port(&self, uri: &Uri) -> (Transport, u16) {
        let transport = uri_transport(uri).unwrap_or(self.default_network);
        (transport, uri.port.unwrap_or(transport.default_port()))
    }

    /// Responses follow the Via chain: ours must be on top, its branch must be the one
    /// Roundabout minted for this request and the address `source` it comes from, and the next
    /// Via says where the request came from (RFC 3261 §16.7 step 3, §18.2.2).
    #[must_use]
    pub fn route_response(&self, msg: &Message, source: &FlowKey) -> ResponseAction {
        let buf = msg.bytes();
        let branch = match msg.top_via() {
            Ok(top) if self.is_our_via(buf, &top) => top.branch(buf).and_then(Branch::parse),
            _ => return ResponseAction::Drop("top Via is not Roundabout's"),
        };
        let Some(branch) = branch else {
            return ResponseAction::Forged("branch not minted by Roundabout");
        };
        let Some(Ok(next)) = msg.lower_vias().next() else {
            return ResponseAction::Drop("no Via below Roundabout's");
        };
        let Some(transport) = Transport::from_token(&buf[next.transport.range()]) else {
            return ResponseAction::Drop("unknown transport in Via");
        };
        // Roundabout writes received and rport on every request it forwards, and the branch
        // covers them: they are where the response goes.
        let ip = next
            .param(buf, "received")
            .and_then(|p| p.value)
            .and_then(|v| parse_host_ip(&buf[v.range()]));
        let port = next
            .param(buf, "rport")
            .and_then(|p| p.value)
            .and_then(|v| crate::sip::lex::parse_u32(&buf[v.range()]))
            .and_then(|p| u16::try_from(p).ok());
        let (Some(ip), Some(port)) = (ip, port) else {
            return ResponseAction::Forged("no received/rport below Roundabout's Via");
        };
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return ResponseAction::Drop("no Call-ID or CSeq");
        };
        let previous = PreviousHop {
            transport: Some(transport),
            branch: next.branch(buf).unwrap_or_default(),
            ip,
            port,
        };
        let expected = self.branches.branch(&BranchInput {
            previous,
            call_id,
            cseq: cseq.number,
            method: cseq.method,
            responder: self.responder(source),
            stateful: branch.is_stateful(),
        });
        if expected != branch {
            return ResponseAction::Forged("branch does not match the response or its source");
        }
        // RFC 4475 §3.3.10: a response is never sent to a broadcast or multicast address.
        if !is_unicast(ip) {
            return ResponseAction::Drop("Via names no unicast address");
        }
        ResponseAction::Forward(Destination {
            flow: FlowKey {
                transport,
                remote: SocketAddr::new(ip, port),
            },
            connection: None,
            server_name: None,
            may_connect: false,
        })
    }

    /// Who may answer a request sent to `flow` (and, for a response, who sent it): a trusted
    /// server's address stands for every trusted server, any other address for itself.
    #[must_use]
    pub fn responder(&self, flow: &FlowKey) -> Responder {
        if self.servers.is_server_ip(flow.remote.ip()) {
            Responder::TrustedServer
        } else {
            Responder::Exactly(*flow)
        }
    }

    /// Roundabout's branch in the top Via of a response, unverified.
    #[must_use]
    pub fn our_branch(&self, msg: &Message) -> Option<Branch> {
        let buf = msg.bytes();
        let top = msg.top_via().ok()?;
        if !self.is_our_via(buf, &top) {
            return None;
        }
        Branch::parse(top.branch(buf)?)
    }

    /// The hop a request came from, as the Via Roundabout stamps records it.
    pub fn previous_hop<'m>(
        msg: &'m Message,
        source: &FlowKey,
    ) -> Result<PreviousHop<'m>, ParseError> {
        let buf = msg.bytes();
        let top = msg.top_via()?;
        Ok(PreviousHop {
            transport: Transport::from_token(&buf[top.transport.range()]),
            branch: top.branch(buf).unwrap_or_default(),
            ip: source.remote.ip(),
            port: source.remote.port(),
        })
    }

    /// The server-transaction identity of a request (RFC 3261 §17.2.3).
    #[must_use]
    pub fn server_transaction(&self, msg: &Message, source: &FlowKey) -> Option<u64> {
        let previous = Router::previous_hop(msg, source).ok()?;
        let cseq = msg.cseq().ok()?;
        Some(
            self.branches
                .server_transaction(&previous, msg.call_id().ok()?, cseq.number),
        )
    }

    /// Whether a request's To tag is one Roundabout gave an answer of its own: the ACK of
    /// such an answer ends there (RFC 3261 §17.2.1), it is not forwarded anywhere.
    #[must_use]
    pub fn answered_by_us(&self, msg: &Message) -> bool {
        let buf = msg.bytes();
        let (Ok(to), Ok(call_id), Ok(cseq)) = (msg.to(), msg.call_id(), msg.cseq()) else {
            return false;
        };
        to.param(buf, "tag")
            .and_then(|p| p.value)
            .is_some_and(|tag| {
                self.branches
                    .is_own_to_tag(&buf[tag.range()], call_id, cseq.number)
            })
    }

    #[must_use]
    pub fn is_our_via(&self, buf: &[u8], via: &Via) -> bool {
        via.branch(buf)
            .is_some_and(|b| b.starts_with(BRANCH_PREFIX.as_bytes()))
            && self.identity.names_host(&buf[via.host.range()])
    }
}

/// The option tags of every `Proxy-Require` header (RFC 3261 §20.29), as written.
#[must_use]
pub fn proxy_require(msg: &Message) -> Vec<&[u8]> {
    let buf = msg.bytes();
    msg.headers()
        .iter()
        .filter(|h| h.name == HeaderName::Other)
        .filter(|h| {
            let line = &buf[h.line.start()..h.value.start()];
            line.split(|&b| b == b':')
                .next()
                .is_some_and(|name| name.trim_ascii().eq_ignore_ascii_case(b"proxy-require"))
        })
        .flat_map(|h| buf[h.value.range()].split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|tag| !tag.is_empty())
        .collect()
}

/// Whether `ip` names one host: not a broadcast, multicast or unspecified address.
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// The transport a URI asks for: `;transport=`, or TLS for `sips:` (RFC 3261 §26.2.2).
fn uri_transport(uri: &Uri) -> Option<Transport> {
    let asked = uri.param_value("transport").and_then(Transport::from_token);
    match (uri.scheme, asked) {
        (Scheme::Sips, Some(Transport::Ws | Transport::Wss)) => Some(Transport::Wss),
        (Scheme::Sips, _) => Some(Transport::Tls),
        (_, asked) => asked,
    }
}

fn server_name(server: &TrustedServer) -> Option<Arc<str>> {
    server.fqdns.first().map(|n| Arc::from(n.as_str()))
}

fn server_destination(server: &TrustedServer) -> Destination {
    Destination {
        flow: FlowKey {
            transport: server.transport,
            remote: server.addr(),
        },
        connection: None,
        server_name: server_name(server),
        may_connect: true,
    }
}

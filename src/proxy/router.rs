//! Where a message goes: pure decisions from (message, source flow, tables) to an action.
//! The rules, their order and their numbers are those of docs/routing.md (responses:
//! docs/responses.md).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ClientRanges, Config, TrustedServer, TrustedServers};
use crate::dns::{asked_transport, Query};
use crate::sip::{HeaderName, Message, Method, ParseError, Scheme, Transport, Uri, Via};
use crate::transport::{Destination, FlowKey};
use tracing::debug;

use super::action::{
    answer_destination, Forward, Lookup, NewRequestUri, NextHop, RequestAction, ResponseAction,
};
use super::branch::{
    Branch, BranchInput, BranchKey, NoPreviousHop, PreviousHop, Responder, BRANCH_PREFIX,
};
use super::clients::{ClientCache, ClientLookup};
use super::identity::Identity;
use super::rewrite::Rewriter;
use super::status::Status;
use super::token::{self, ContactToken, TokenKey};

/// Host names a request may find to name Roundabout before it is answered 482: more than a
/// request naming Roundabout by a name and its next hop by another needs, few enough that no
/// request makes Roundabout resolve a long list of names.
pub const MAX_SELF_NAMES: usize = 4;

/// Host names (with the port asked for) found, while one request was routed, to resolve to
/// Roundabout's own listening addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfNames(Vec<(String, u16)>);

/// The routing tables and switches, fixed at start, and the client cache, which the 2xx
/// answers to REGISTER change while Roundabout runs.
#[derive(Clone, Debug)]
pub struct Router {
    identity: Identity,
    servers: TrustedServers,
    client_ranges: ClientRanges,
    strict_host: bool,
    strict_client: bool,
    ack_ruri: bool,
    default_network: Transport,
    default_sip_server: Option<usize>,
    tokens: TokenKey,
    /// Authenticates Roundabout's Via branches and To tags.
    branches: BranchKey,
    clients: Arc<ClientCache>,
    /// Request-URI tokens that did not verify (forged, damaged, or minted with another key).
    token_failures: Arc<AtomicU64>,
    /// `-udp-mtu`, for the rewriter.
    udp_mtu: Option<u16>,
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
            mutual_tls: _,
            drain_timeout: _,
            metrics_addr: _,
            hep: _,
            rtpengine: _,
            dns_server: _,
            udp_mtu,
            ws_path: _,
            proxy_protocol_from: _,
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
            token_failures: Arc::default(),
            udp_mtu: *udp_mtu,
        }
    }

    /// With a wildcard `-bind-ip`: the addresses of the host's interfaces, which then name
    /// Roundabout too (read by the caller, so routing stays free of I/O).
    #[must_use]
    pub fn with_host_addresses(mut self, host_ips: Vec<IpAddr>) -> Router {
        self.identity.host_ips = host_ips;
        self
    }

    /// The rewriter that carries out this router's decisions: the same identity, keys and
    /// trusted servers, so the branches it mints verify here and its tokens decode here.
    #[must_use]
    pub fn rewriter(&self) -> Rewriter {
        Rewriter::new(
            &self.identity,
            self.servers.clone(),
            self.tokens.clone(),
            self.branches.clone(),
            self.udp_mtu,
        )
    }

    /// The cache of registered clients that rule 5 looks in and REGISTER answers fill.
    #[must_use]
    pub fn clients(&self) -> &ClientCache {
        &self.clients
    }

    /// Request-URI tokens that did not verify, since start.
    #[must_use]
    pub fn token_failures(&self) -> u64 {
        self.token_failures.load(Ordering::Relaxed)
    }

    /// Whether `flow` is a trusted server's own address and transport: a flow Roundabout may
    /// dial again, exempt from the per-source rate limit.
    #[must_use]
    pub fn is_server_address(&self, flow: &FlowKey) -> bool {
        self.servers.is_server_address(flow)
    }

    /// Whether an address a host name resolved to is one of Roundabout's listening addresses
    /// (see [`Identity::is_own_address`]).
    #[must_use]
    pub fn is_own_address(&self, addr: SocketAddr) -> bool {
        self.identity.is_own_address(addr)
    }

    /// The To tag of Roundabout's own answers to the request with this Call-ID and CSeq
    /// number, the one [`Router::answered_by_us`] recognises in its ACK.
    #[must_use]
    pub fn to_tag(&self, call_id: &[u8], cseq: u32) -> String {
        self.branches.to_tag_text(call_id, cseq)
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
        self_names.0.push((lookup.query.host.clone(), lookup.port));
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
        if let Some(param) = request_uri.param_value(token::PARAM) {
            match self.tokens.decode(param) {
                Some(token) => return Ok(self.to_token(token, pop_routes)),
                None => {
                    debug!("token in the Request-URI does not verify: routed without it");
                    self.token_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
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
        let server = self.servers.at(&token.flow);
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
            push_routes: Vec::new(),
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
                push_routes: Vec::new(),
            }),
            ClientLookup::Expired => RequestAction::Reply(Status::TEMPORARILY_UNAVAILABLE),
            ClientLookup::Unknown => match self
                .default_sip_server
                .and_then(|index| self.servers.get(index))
            {
                Some(server) => RequestAction::Forward(Forward {
                    next: NextHop::Flow(server_destination(server)),
                    fallback: None,
                    request_uri: Some(NewRequestUri::ServerHost {
                        host: server.uri_host(),
                        port: server.port,
                    }),
                    pop_routes,
                    push_routes: Vec::new(),
                }),
                None => RequestAction::Reply(Status::NOT_FOUND),
            },
        }
    }

    /// Rules 6 and 7 for an R-URI, a To URI or a Route URI.
    fn to_uri_host(&self, uri: &Uri, pop_routes: usize) -> RequestAction {
        if let Some((_, server)) = self.servers.find(uri.host(), uri.port) {
            let Some(first_hop) = server.routes.first() else {
                return RequestAction::Forward(Forward {
                    next: NextHop::Flow(server_destination(server)),
                    fallback: None,
                    request_uri: None,
                    pop_routes,
                    push_routes: Vec::new(),
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
                push_routes: server.routes.clone(),
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
                query: Query::of(uri),
                port,
            }),
        };
        RequestAction::Forward(Forward {
            next,
            fallback: None,
            request_uri: None,
            pop_routes,
            push_routes: Vec::new(),
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
        // Roundabout writes received and rport on every request it forwards, and the branch
        // covers them: they are where the response goes.
        let (previous, transport) = match PreviousHop::below_ours(msg) {
            Ok(previous) => previous,
            Err(NoPreviousHop::NoVia) => return ResponseAction::Drop("no Via below Roundabout's"),
            Err(NoPreviousHop::UnknownTransport) => {
                return ResponseAction::Drop("unknown transport in Via")
            }
            Err(NoPreviousHop::NoSource) => {
                return ResponseAction::Forged("no received/rport below Roundabout's Via")
            }
        };
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return ResponseAction::Drop("no Call-ID or CSeq");
        };
        let (ip, port) = (previous.ip, previous.port);
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
        ResponseAction::Forward(answer_destination(FlowKey {
            transport,
            remote: SocketAddr::new(ip, port),
        }))
    }

    /// Who may answer a request sent to `flow` (and, for a response, who sent it); see
    /// [`TrustedServers::responder`].
    #[must_use]
    pub fn responder(&self, flow: &FlowKey) -> Responder {
        self.servers.responder(flow)
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

    /// The server-transaction identity of a request (RFC 3261 §17.2.3).
    #[must_use]
    pub fn server_transaction(&self, msg: &Message, source: &FlowKey) -> Option<u64> {
        let previous = PreviousHop::of_request(msg, source).ok()?;
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

/// The transport a URI asks for (the one rule, [`asked_transport`]).
fn uri_transport(uri: &Uri) -> Option<Transport> {
    asked_transport(
        uri.scheme == Scheme::Sips,
        uri.param_value("transport").and_then(Transport::from_token),
    )
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

//! The one entry point every transport feeds: parse, route, rewrite, send. Never blocks; the
//! only work moved off the listener's task is resolving a host name, and the transaction
//! timers run on a task of their own.
//!
//! The stateful path (docs/transactions.md) is in `stateful`, Roundabout's own answers in
//! `replies`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tracing::debug;

use crate::dns::{Resolver, Target};
use crate::sip::{Encoded, HeaderName, Message, Method, ParseError, Transport};
use crate::transport::{ConnectionId, Destination, FlowKey, Handler, Inbound, Outbound, SendError};
use crate::warn_limited;

use super::action::{Forward, Lookup, NextHop, RequestAction, ResponseAction};
use super::clients::ClientCache;
use super::decisions::{Counting, Dropped, Path, Refused, Undelivered};
use super::flood::{OverloadGuard, SourceLimiter};
use super::media::{self, CallIds, MediaFailure, MediaRelay, Step};
use super::moved::MovedInvites;

/// Whether a request went on, or Roundabout answered it itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    Elsewhere,
    Here,
}
use super::rewrite::{OwnVia, Registration, Rewriter, MOVED_OFF_UDP};
use super::router::{Router, SelfNames};
use super::status::Status;
use super::transaction::{self, Key, Kind, Transactions};

mod replies;
mod stateful;

/// Host names being resolved at once; beyond this, requests to unknown names get 503.
const MAX_PENDING_RESOLVES: usize = 64;

/// Cheap-clone handle to the proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router,
    rewriter: Rewriter,
    outbound: Arc<dyn Outbound>,
    limiter: SourceLimiter,
    overload: OverloadGuard,
    transactions: Transactions,
    draining: AtomicBool,
    resolves: Arc<Semaphore>,
    counting: Counting,
    resolver: Resolver,
    /// `-rtpengine`: the media relay for calls between a WebSocket leg and another.
    media: Option<Arc<MediaRelay>>,
    /// With `-udp-mtu`: the INVITEs moved off UDP, which their CANCEL and ACK follow.
    moved: Option<MovedInvites>,
}

/// What the proxy asks outside itself, each on a task of its own.
pub struct Services {
    /// Host names that are not trusted servers (without `-strict-host`), RFC 3263.
    pub resolver: Resolver,
    /// `-rtpengine`: the media relay for calls between a WebSocket leg and another.
    pub media: Option<Arc<MediaRelay>>,
}

impl Proxy {
    #[must_use]
    pub fn new(
        router: Router,
        outbound: Arc<dyn Outbound>,
        limiter: SourceLimiter,
        overload: OverloadGuard,
        transactions: Transactions,
        counting: Counting,
        Services { resolver, media }: Services,
    ) -> Proxy {
        let rewriter = router.rewriter();
        Proxy {
            inner: Arc::new(Inner {
                moved: rewriter.moves_any().then(MovedInvites::default),
                rewriter,
                router,
                outbound,
                limiter,
                overload,
                transactions,
                draining: AtomicBool::new(false),
                resolves: Arc::new(Semaphore::new(MAX_PENDING_RESOLVES)),
                counting,
                resolver,
                media,
            }),
        }
    }

    /// Shutting down: new out-of-dialog requests get 503; responses, ACKs, CANCELs and
    /// in-dialog requests still go through so calls in progress complete.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Forgets flood buckets that have refilled.
    pub fn sweep_flood_limits(&self, now: Instant) {
        self.inner.limiter.sweep(now);
    }

    #[must_use]
    pub fn clients(&self) -> &ClientCache {
        self.inner.router.clients()
    }

    #[must_use]
    pub fn transactions(&self) -> &Transactions {
        &self.inner.transactions
    }

    /// Request-URI tokens that did not verify, since start.
    #[must_use]
    pub fn token_failures(&self) -> u64 {
        self.inner.router.token_failures()
    }

    /// With `-rtpengine`, the media relay.
    #[must_use]
    pub fn media(&self) -> Option<&MediaRelay> {
        self.inner.media.as_deref()
    }

    fn request(
        &self,
        msg: Message,
        source: FlowKey,
        connection: Option<ConnectionId>,
        now: Instant,
    ) {
        let method = msg.method();
        if let Err(error) = msg.validate_request() {
            debug!(flow = %source, %error, "invalid request");
            if method != Some(Method::Ack) {
                self.reply(&msg, &source, Status::new(400, bad_request_reason(error)));
            }
            return;
        }
        if method == Some(Method::Ack) && self.inner.router.answered_by_us(&msg) {
            debug!(flow = %source, "ACK of Roundabout's own answer absorbed");
            return;
        }
        if source.transport.is_stream()
            && matches!(method, Some(Method::Ack | Method::Cancel))
            && !self.inner.transactions.is_empty()
            && self.in_server_transaction(&msg, &source)
        {
            return;
        }
        if starts_new_work(&msg) {
            if self.inner.draining.load(Ordering::Relaxed) {
                self.refuse(
                    &msg,
                    &source,
                    Refused::Draining,
                    Status::SERVICE_UNAVAILABLE,
                );
                return;
            }
            if !self.inner.overload.admit(now) {
                warn_limited!("overload: new requests over -max-new-requests refused with 503");
                self.refuse(
                    &msg,
                    &source,
                    Refused::Overload,
                    Status::SERVICE_UNAVAILABLE,
                );
                return;
            }
        }
        if method == Some(Method::Register) && !self.clients().admit_register(&msg, now) {
            self.refuse(
                &msg,
                &source,
                Refused::ClientCacheFull,
                Status::CLIENT_CACHE_FULL,
            );
            return;
        }
        let action = self.inner.router.route_request(&msg, &source, now);
        self.dispatch(msg, (source, connection), action, SelfNames::default());
    }

    /// Carries out a routing decision; `self_names` as routing found them (see
    /// [`Router::route_as_self`]).
    fn dispatch(
        &self,
        msg: Message,
        (source, connection): (FlowKey, Option<ConnectionId>),
        action: RequestAction,
        self_names: SelfNames,
    ) {
        match action {
            RequestAction::Reply(status) => {
                debug!(flow = %source, code = status.code, "request answered by the proxy");
                self.reply(&msg, &source, status);
            }
            RequestAction::Drop(reason) => {
                debug!(flow = %source, reason, "request dropped");
                self.inner.counting.dropped(Dropped::Unroutable);
            }
            RequestAction::Forward(forward) => match forward.next.clone() {
                NextHop::Flow(dest) => {
                    self.send_request(&msg, (&source, connection), &forward, &dest);
                }
                NextHop::Resolve(lookup) => {
                    self.resolve_then_send(msg, (source, connection), forward, lookup, self_names);
                }
            },
        }
    }

    /// Sends a routed request on, its SDP first rewritten by the media relay when it goes
    /// between a WebSocket leg and another (`proxy::media`).
    fn send_request(
        &self,
        msg: &Message,
        (source, connection): (&FlowKey, Option<ConnectionId>),
        forward: &Forward,
        dest: &Destination,
    ) {
        let Some(relay) = self.inner.media.as_ref() else {
            self.send_request_now(msg, (source, connection), forward, dest, b"");
            return;
        };
        let (from, to) = (source.transport, dest.flow.transport);
        let via_params = media::via_params(msg, from, to);
        match media::request_step(msg, from, to) {
            None => {
                self.send_request_now(msg, (source, connection), forward, dest, via_params);
            }
            Some(Step::EndCall) => {
                self.end_media(relay, msg);
                self.send_request_now(msg, (source, connection), forward, dest, via_params);
            }
            Some(Step::Rewrite(rewrite)) => {
                let (relay, proxy) = (Arc::clone(relay), self.clone());
                let (msg, source, forward, dest) =
                    (msg.clone(), *source, forward.clone(), dest.clone());
                tokio::spawn(async move {
                    let ids = CallIds::of(&msg);
                    let sdp = msg.body();
                    let relayed = match ids.clone() {
                        Some(ids) => relay.rewrite(ids, sdp, rewrite).await,
                        None => Err(MediaFailure::NoCallIds),
                    };
                    let answered = match relayed.and_then(|sdp| media::with_sdp(&msg, sdp)) {
                        Ok(relayed) => {
                            debug!(from = %source, "SDP rewritten by the media relay");
                            let sent = (&source, connection);
                            proxy.send_request_now(&relayed, sent, &forward, &dest, via_params)
                        }
                        Err(failure) => {
                            warn_limited!(from = %source, %failure, "request's media not relayed: answered with an error");
                            proxy.reply(&msg, &source, failure.status());
                            Answered::Here
                        }
                    };
                    // A call Roundabout refused itself after (or while) rtpengine took its
                    // offer must not stay half set up there; an established call's media stays,
                    // whatever became of a re-INVITE.
                    if let (Answered::Here, Some(ids)) = (answered, ids) {
                        if ids.starts_call() {
                            relay.end(ids).await;
                        }
                    }
                });
            }
        }
    }

    /// Rewrites and sends a request on (with `via_params` in Roundabout's Via); whether it went
    /// on or Roundabout answered it itself.
    fn send_request_now(
        &self,
        msg: &Message,
        (source, connection): (&FlowKey, Option<ConnectionId>),
        forward: &Forward,
        dest: &Destination,
        via_params: &[u8],
    ) -> Answered {
        let method = msg.method();
        let follows_moved = self.follows_moved_invite(msg, source, dest);
        if follows_moved {
            let sent = (source, connection);
            if let Some(answered) = self.send_off_udp(msg, sent, forward, dest, via_params) {
                return answered;
            }
        }
        // Over UDP after all, a moved INVITE's CANCEL and ACK go statelessly, as the INVITE
        // went when it fell back: with the same branch.
        let stateful = !follows_moved
            && transaction::needs_transaction(method, source.transport, dest.flow.transport);
        let rewritten = self.inner.rewriter.rewrite_request(
            msg,
            source,
            connection,
            forward,
            &dest.flow,
            OwnVia {
                stateful,
                params: via_params,
            },
        );
        let (out, branch) = match rewritten {
            Ok(rewritten) => rewritten,
            Err(error) => {
                debug!(flow = %source, %error, "request cannot be rewritten");
                self.reply(msg, source, Status::new(400, bad_request_reason(error)));
                return Answered::Here;
            }
        };
        if !follows_moved && self.inner.rewriter.moves_off_udp(dest.flow.transport, &out) {
            let sent = (source, connection);
            if let Some(answered) = self.send_off_udp(msg, sent, forward, dest, via_params) {
                return answered;
            }
        }
        if stateful {
            return self.send_stateful(msg, (source, connection), dest, out, branch);
        }
        // A CANCEL never opens a connection: with none open to where its INVITE went, that
        // INVITE is not pending there (often Roundabout answered it itself, 503 when it could
        // not connect), and dialling again only to cancel would repeat the failure.
        let cancel_dest;
        let dest = if method == Some(Method::Cancel) && dest.may_connect {
            cancel_dest = Destination {
                may_connect: false,
                ..dest.clone()
            };
            &cancel_dest
        } else {
            dest
        };
        match self.inner.outbound.send(dest, out) {
            Ok(()) => {
                debug!(from = %source, to = %dest.flow, "request forwarded");
                self.inner.counting.forwarded(Path::Stateless);
                return Answered::Elsewhere;
            }
            Err(SendError::NoFlow) => match &forward.fallback {
                Some(fallback) => {
                    let forward = Forward {
                        fallback: None,
                        ..forward.clone()
                    };
                    let sent = (source, connection);
                    return self.send_request_now(msg, sent, &forward, fallback, via_params);
                }
                None if method == Some(Method::Cancel) => {
                    debug!(from = %source, to = %dest.flow, "CANCEL for no open flow answered 481");
                    self.reply(
                        msg,
                        source,
                        Status::new(481, "Call/Transaction Does Not Exist"),
                    );
                }
                None => {
                    debug!(from = %source, to = %dest.flow, "flow gone");
                    self.inner.counting.undelivered(Undelivered::FlowGone);
                    self.reply(msg, source, Status::TEMPORARILY_UNAVAILABLE);
                }
            },
            Err(error) => {
                warn_limited!(to = %dest.flow, %error, "request not sent");
                self.inner.counting.undelivered(Undelivered::NotSent);
                self.reply(msg, source, Status::SERVICE_UNAVAILABLE);
            }
        }
        Answered::Here
    }

    /// With `-udp-mtu`, whether `msg` is the CANCEL or ACK of an INVITE moved off UDP to
    /// where it was going (`proxy::moved`): it follows the INVITE.
    fn follows_moved_invite(&self, msg: &Message, source: &FlowKey, dest: &Destination) -> bool {
        let Some(moved) = &self.inner.moved else {
            return false;
        };
        dest.flow.transport == Transport::Udp
            && matches!(msg.method(), Some(Method::Cancel | Method::Ack))
            && self
                .inner
                .router
                .server_transaction(msg, source)
                .is_some_and(|key| moved.contains(key, Instant::now()))
    }

    /// RFC 3261 §18.1.1: a request larger than `-udp-mtu` whose next hop is UDP goes over TCP
    /// to the same address and port instead, rewritten for TCP (no transaction: the egress is
    /// reliable) with its Via marked, so that `undelivered` sends it over UDP after all if the
    /// connection cannot be opened. A moved INVITE is remembered; its CANCEL or ACK comes here
    /// too, and never opens a connection (as no CANCEL does). `None` when TCP did not take the
    /// request: it goes on over UDP.
    fn send_off_udp(
        &self,
        msg: &Message,
        (source, connection): (&FlowKey, Option<ConnectionId>),
        forward: &Forward,
        dest: &Destination,
        via_params: &[u8],
    ) -> Option<Answered> {
        let method = msg.method();
        let invite = method == Some(Method::Invite);
        let tcp = Destination {
            flow: FlowKey {
                transport: Transport::Tcp,
                remote: dest.flow.remote,
            },
            connection: None,
            server_name: dest.server_name.clone(),
            may_connect: !matches!(method, Some(Method::Cancel | Method::Ack)),
        };
        let params = [via_params, MOVED_OFF_UDP].concat();
        let own_via = OwnVia {
            stateful: false,
            params: &params,
        };
        let rewritten = self
            .inner
            .rewriter
            .rewrite_request(msg, source, connection, forward, &tcp.flow, own_via);
        let (out, _) = rewritten.ok()?;
        match self.inner.outbound.send(&tcp, out) {
            Ok(()) => {
                debug!(from = %source, to = %tcp.flow, "request off UDP (-udp-mtu) forwarded over TCP");
                if let (true, Some(moved)) = (invite, &self.inner.moved) {
                    if let Some(key) = self.inner.router.server_transaction(msg, source) {
                        moved.remember(key, Instant::now());
                    }
                }
                self.inner.counting.forwarded(Path::Stateless);
                Some(Answered::Elsewhere)
            }
            // A CANCEL or ACK finds no connection where its INVITE fell back to UDP.
            Err(SendError::NoFlow) => {
                debug!(to = %tcp.flow, "no TCP connection for the CANCEL or ACK of a moved INVITE: sent over UDP");
                None
            }
            Err(error) => {
                warn_limited!(to = %tcp.flow, %error, "request over -udp-mtu not sent over TCP: sent over UDP");
                None
            }
        }
    }

    /// A request moved off UDP for `-udp-mtu` whose TCP connection could not be opened goes
    /// over UDP after all, to the same address and port; whether it was one.
    fn fall_back_to_udp(&self, request: &Message, flow: FlowKey) -> bool {
        let udp = FlowKey {
            transport: Transport::Udp,
            remote: flow.remote,
        };
        let Some(out) = self.inner.rewriter.back_to_udp(request, &udp) else {
            return false;
        };
        let dest = Destination {
            flow: udp,
            connection: None,
            server_name: None,
            may_connect: false,
        };
        match self.inner.outbound.send(&dest, out) {
            Ok(()) => {
                warn_limited!(to = %flow, "request over -udp-mtu: no TCP connection, sent over UDP");
                true
            }
            // Not sent either way: answered as any request that could not be sent.
            Err(error) => {
                debug!(to = %udp, %error, "request over -udp-mtu not sent over UDP either");
                false
            }
        }
    }

    /// Unknown host names (only without `-strict-host`) are resolved (RFC 3263, docs/dns.md)
    /// off the listener's task, and the request goes to the first target. A name with a target
    /// at one of Roundabout's own listening addresses (among any others) names Roundabout: the
    /// request is routed again as for Roundabout itself, never sent to it, where it would come
    /// back again and again until Max-Forwards ran out.
    fn resolve_then_send(
        &self,
        msg: Message,
        (source, connection): (FlowKey, Option<ConnectionId>),
        forward: Forward,
        lookup: Lookup,
        mut self_names: SelfNames,
    ) {
        let Ok(permit) = Arc::clone(&self.inner.resolves).try_acquire_owned() else {
            warn_limited!(host = %lookup.query.host, "too many host names being resolved");
            self.refuse(
                &msg,
                &source,
                Refused::ResolveLimit,
                Status::SERVICE_UNAVAILABLE,
            );
            return;
        };
        let proxy = self.clone();
        tokio::spawn(async move {
            let targets = proxy.inner.resolver.resolve(&lookup.query).await;
            drop(permit);
            let host = &lookup.query.host;
            let router = &proxy.inner.router;
            if targets
                .iter()
                .any(|target| router.is_own_address(target.addr))
            {
                debug!(%host, port = lookup.port, "host name resolves to Roundabout itself");
                let now = Instant::now();
                let action = router.route_as_self(&msg, &source, now, &lookup, &mut self_names);
                proxy.dispatch(msg, (source, connection), action, self_names);
                return;
            }
            match targets.into_iter().next() {
                Some(Target {
                    transport,
                    addr,
                    name,
                }) => {
                    debug!(%host, %transport, %addr, "host name resolved");
                    let dest = Destination {
                        flow: FlowKey {
                            transport,
                            remote: addr,
                        },
                        connection: None,
                        server_name: Some(name),
                        may_connect: true,
                    };
                    proxy.send_request(&msg, (&source, connection), &forward, &dest);
                }
                None => {
                    debug!(%host, "host name does not resolve");
                    proxy.reply(&msg, &source, Status::new(404, "Not Found (host unknown)"));
                }
            }
        });
    }

    fn response(&self, msg: Message, source: FlowKey, connection: Option<ConnectionId>) {
        // With no transaction, a stateless response costs no look at its branch here.
        let stateful = || {
            self.inner
                .router
                .our_branch(&msg)
                .filter(|b| b.is_stateful())
        };
        if let Some(branch) = (!self.inner.transactions.is_empty())
            .then(stateful)
            .flatten()
        {
            if let Ok(cseq) = msg.cseq() {
                let key = Key {
                    branch,
                    kind: Kind::of(Method::from_token(cseq.method)),
                };
                if self.transaction_response(&msg, (&source, connection), key) {
                    return;
                }
            }
        }
        match self.inner.router.route_response(&msg, &source) {
            ResponseAction::Forward(dest) => {
                let _ = self.forward_response(&msg, &source, connection, &dest);
            }
            ResponseAction::Drop(reason) => {
                debug!(flow = %source, reason, "response dropped");
                self.inner.counting.dropped(Dropped::Unroutable);
            }
            ResponseAction::Forged(reason) => self.forged(&source, reason),
        }
    }

    fn forged(&self, source: &FlowKey, reason: &'static str) {
        self.inner.counting.dropped(Dropped::Forged);
        warn_limited!(flow = %source, reason, "forged response dropped");
    }

    /// Sends a response on to `dest`, its SDP first rewritten by the media relay when it goes
    /// between a WebSocket leg and another (`proxy::media`). A response that waits for the
    /// relay counts as sent.
    fn forward_response(
        &self,
        msg: &Message,
        source: &FlowKey,
        connection: Option<ConnectionId>,
        dest: &Destination,
    ) -> Result<(), SendError> {
        let step = self.inner.media.as_ref().and_then(|relay| {
            let step = media::response_step(msg, source.transport, dest.flow.transport)?;
            Some((relay, step))
        });
        match step {
            None => self.forward_response_now(msg, source, connection, dest),
            Some((relay, Step::EndCall)) => {
                self.end_media(relay, msg);
                self.forward_response_now(msg, source, connection, dest)
            }
            Some((relay, Step::Rewrite(rewrite))) => {
                let (relay, proxy) = (Arc::clone(relay), self.clone());
                let (msg, source, dest) = (msg.clone(), *source, dest.clone());
                tokio::spawn(async move {
                    let ids = CallIds::of(&msg);
                    let sdp = msg.body();
                    let relayed = match ids {
                        Some(ids) => relay.rewrite(ids, sdp, rewrite).await,
                        None => Err(MediaFailure::NoCallIds),
                    };
                    let relayed = match relayed.and_then(|sdp| media::with_sdp(&msg, sdp)) {
                        Ok(relayed) => relayed,
                        // A provisional is dropped: a later response, or its final, goes on.
                        Err(failure) if msg.status_code().is_some_and(|code| code < 200) => {
                            warn_limited!(from = %source, %failure, "provisional response's media not relayed: dropped");
                            return;
                        }
                        Err(failure) => {
                            warn_limited!(from = %source, %failure, "response's media not relayed: an error goes upstream instead");
                            let tag = proxy.to_tag(&msg);
                            match replies::in_place_of(&msg, failure.status(), &tag) {
                                Some(error) => error,
                                None => return,
                            }
                        }
                    };
                    let _ = proxy.forward_response_now(&relayed, &source, connection, &dest);
                });
                Ok(())
            }
        }
    }

    /// Tells the media relay that `msg` ends its call, without waiting for it.
    fn end_media(&self, relay: &Arc<MediaRelay>, msg: &Message) {
        if let Some(ids) = CallIds::of(msg) {
            let relay = Arc::clone(relay);
            tokio::spawn(async move { relay.end(ids).await });
        }
    }

    /// Sends a response on to `dest` with Roundabout's Via popped, and learns the bindings a
    /// REGISTER 2xx carries.
    fn forward_response_now(
        &self,
        msg: &Message,
        source: &FlowKey,
        connection: Option<ConnectionId>,
        dest: &Destination,
    ) -> Result<(), SendError> {
        let rewritten = self
            .inner
            .rewriter
            .rewrite_response(msg, source, connection, &dest.flow);
        let (out, registrations) = match rewritten {
            Ok(rewritten) => rewritten,
            Err(error) => {
                warn_limited!(flow = %source, %error, "malformed response dropped");
                self.inner.counting.dropped(Dropped::Malformed);
                return Ok(());
            }
        };
        self.update_clients(registrations);
        let peer = self.peer_connection(dest);
        let dest = peer.as_ref().unwrap_or(dest);
        let sent = self.inner.outbound.send(dest, out);
        match &sent {
            Ok(()) => debug!(from = %source, to = %dest.flow, "response forwarded"),
            Err(error) => {
                debug!(to = %dest.flow, %error, "response not sent");
                self.inner.counting.dropped(Dropped::NotSent);
            }
        }
        sent
    }

    /// A response goes back to the peer at the address its Via names, on the stream connection
    /// from that address whatever stream transport the Via names: that is only the peer's claim
    /// (WebSocket clients write WSS over plain WS). The one place this is decided; a
    /// destination that names its connection (a transaction's upstream) keeps it.
    fn peer_connection(&self, dest: &Destination) -> Option<Destination> {
        if dest.connection.is_some() || !dest.flow.transport.is_stream() {
            return None;
        }
        let (flow, connection) = self
            .inner
            .outbound
            .connection_at(dest.flow.remote, dest.flow.transport)?;
        Some(Destination {
            flow,
            connection: Some(connection),
            ..dest.clone()
        })
    }

    fn update_clients(&self, registrations: Vec<Registration>) {
        let now = Instant::now();
        for Registration {
            user,
            flow,
            connection,
            contact,
            expires,
        } in registrations
        {
            if expires.is_zero() {
                if self.clients().remove_at(&user, flow.remote) {
                    debug!(user = %String::from_utf8_lossy(&user), "client unregistered");
                }
            } else if let Err(error) = self
                .clients()
                .bind(&user, flow, connection, contact, expires, now)
            {
                warn_limited!(%error, "client binding not stored");
            } else {
                debug!(user = %String::from_utf8_lossy(&user), %flow, ?expires, "client registered");
            }
        }
    }
}

impl Handler for Proxy {
    fn handle(&self, inbound: Inbound) {
        let Inbound {
            data,
            flow,
            connection,
        } = inbound;
        // One clock read per message serves the flood limits and the client cache.
        let now = Instant::now();
        if !self.inner.router.is_server_address(&flow)
            && !self.inner.limiter.allow(flow.remote.ip(), now)
        {
            // Dropped before parsing: a flood costs as little as possible and gets no answer.
            warn_limited!(source = %flow.remote.ip(), "flood: messages over -rate-limit dropped");
            self.inner.counting.dropped(Dropped::RateLimited);
            return;
        }
        match Message::parse(data.clone()) {
            Ok(msg) if msg.is_request() => self.request(msg, flow, connection, now),
            Ok(msg) => self.response(msg, flow, connection),
            Err(error) => self.malformed(&data, flow, error),
        }
    }

    fn connection_closed(&self, flow: FlowKey, connection: ConnectionId) {
        let transactions = &self.inner.transactions;
        if !transactions.is_empty() {
            let sends = transactions.upstream_closed(connection, tokio::time::Instant::now());
            if !sends.is_empty() {
                debug!(%flow, "connection closed: its pending INVITEs are cancelled");
            }
            self.execute(sends);
        }
    }

    /// RFC 3261 §16.9: a request that could not be sent is answered as if the next hop had
    /// sent 503. The 503 is built from the request as forwarded (our Via on top) and then takes
    /// the path of any response, back to the sender.
    fn undelivered(&self, msg: Encoded, flow: FlowKey) {
        let Ok(request) = Message::parse_own(msg.to_contiguous()) else {
            return;
        };
        if flow.transport == Transport::Tcp
            && request.is_request()
            && self.fall_back_to_udp(&request, flow)
        {
            return;
        }
        if !request.is_request() || request.method() == Some(Method::Ack) {
            return;
        }
        if let Some(response) = self.next_hop_answer(&request, Status::SERVICE_UNAVAILABLE) {
            debug!(to = %flow, "request not delivered: answered 503");
            self.inner.counting.undelivered(Undelivered::NotSent);
            self.response(response, flow, None);
        }
    }
}

/// An out-of-dialog request other than ACK and CANCEL (no To tag): what draining refuses.
fn starts_new_work(msg: &Message) -> bool {
    !matches!(msg.method(), Some(Method::Ack | Method::Cancel))
        && msg
            .to()
            .is_ok_and(|to| to.param(msg.bytes(), "tag").is_none())
}

/// The reason phrase of a 400 says what was wrong (RFC 3261 §21.4.1).
fn bad_request_reason(error: ParseError) -> &'static str {
    use HeaderName::{CSeq, CallId, ContentLength, From, MaxForwards, To, Via};
    match error {
        ParseError::MissingHeader(Via) => "Bad Request (missing Via)",
        ParseError::MissingHeader(CSeq) | ParseError::BadHeaderValue(CSeq) => {
            "Bad Request (bad CSeq)"
        }
        ParseError::MissingHeader(CallId) => "Bad Request (missing Call-ID)",
        ParseError::MissingHeader(From | To) => "Bad Request (missing From or To)",
        ParseError::BadHeaderValue(MaxForwards) => "Bad Request (bad Max-Forwards)",
        ParseError::BadHeaderValue(ContentLength) | ParseError::BodyTruncated => {
            "Bad Request (bad Content-Length)"
        }
        ParseError::BadUri => "Bad Request (bad URI)",
        ParseError::RepeatedHeader(_) => "Bad Request (repeated header)",
        _ => "Bad Request",
    }
}

//! What changes in a message on its way through: Via, Max-Forwards, Route, Request-URI,
//! Contact. Pure functions over the parsed message; everything else is copied as it is.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::config::{RouteHop, TrustedServers};
use crate::sip::text::{put_decimal, put_hex_u64, put_host_ip};
use crate::sip::{
    Editor, Encoded, HeaderName, Message, Method, NameAddr, ParseError, Span, Transport, Uri,
};
use crate::transport::{ConnectionId, FlowKey};

use super::action::{Forward, NewRequestUri};
use super::branch::{Branch, BranchInput, BranchKey, PreviousHop};
use super::identity::{Identity, OwnText};
use super::token::{self, TokenKey};

/// Default registration lifetime when neither the Contact nor the response says (RFC 3261 §10.2.1.1).
const DEFAULT_EXPIRES: u32 = 3600;

/// A client binding learnt from a 2xx to REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub user: Bytes,
    pub flow: FlowKey,
    pub connection: Option<ConnectionId>,
    pub contact: Bytes,
    /// Zero removes the binding (if it is still to the same client).
    pub expires: Duration,
}

/// Marks Roundabout's Via on a request moved off UDP for `-udp-mtu`: if its TCP connection
/// cannot be opened, [`Rewriter::back_to_udp`] finds it so. Last in the Via, never elsewhere.
pub const MOVED_OFF_UDP: &[u8] = b";rbmtu";

/// RFC 3261 §18.1.1: a request of `len` bytes leaving on `egress` goes over TCP instead when
/// it would leave over UDP and is larger than `-udp-mtu` (off: never).
#[must_use]
pub fn moves_off_udp(udp_mtu: Option<u16>, egress: Transport, len: usize) -> bool {
    udp_mtu.is_some_and(|mtu| egress == Transport::Udp && len > usize::from(mtu))
}

/// Carries out the router's decisions on a message: what Roundabout writes about itself, the
/// keys its tokens and branches are made with, and the trusted servers (which Contacts it may
/// dial back, who may answer). Made by [`Router::rewriter`](super::router::Router::rewriter),
/// so both use the same identity, keys and table.
#[derive(Clone, Debug)]
pub struct Rewriter {
    own: OwnText,
    servers: TrustedServers,
    tokens: TokenKey,
    branches: BranchKey,
    /// `-udp-mtu`.
    udp_mtu: Option<u16>,
}

/// Roundabout's own Via on a forwarded request.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnVia<'a> {
    /// The branch marks a request forwarded with a transaction.
    pub stateful: bool,
    /// Parameters after the branch, each with its `;`, to come back in the responses
    /// (RFC 3261 §8.2.6.2).
    pub params: &'a [u8],
}

impl Rewriter {
    pub(super) fn new(
        identity: &Identity,
        servers: TrustedServers,
        tokens: TokenKey,
        branches: BranchKey,
        udp_mtu: Option<u16>,
    ) -> Rewriter {
        Rewriter {
            own: OwnText::new(identity),
            servers,
            tokens,
            branches,
            udp_mtu,
        }
    }

    /// Whether `-udp-mtu` moves any request off UDP.
    #[must_use]
    pub fn moves_any(&self) -> bool {
        self.udp_mtu.is_some()
    }

    /// Whether `out`, a request rewritten to leave on `egress`, goes over TCP instead
    /// ([`moves_off_udp`]).
    #[must_use]
    pub fn moves_off_udp(&self, egress: Transport, out: &Encoded) -> bool {
        moves_off_udp(self.udp_mtu, egress, out.len())
    }

    /// A request moved off UDP (its Via marked [`MOVED_OFF_UDP`]) as it leaves over UDP after
    /// all, to `dest`, when its TCP connection could not be opened: Roundabout's Via and
    /// Contacts name UDP, without the mark, and the branch is minted for `dest` (who may answer
    /// depends on the transport for a peer that is not a trusted server). The client's Via
    /// below says everything the branch covers. `None` for a request not moved so.
    #[must_use]
    pub fn back_to_udp(&self, msg: &Message, dest: &FlowKey) -> Option<Encoded> {
        let buf = msg.bytes();
        let top = msg.top_via().ok()?;
        if !buf[top.span.range()].starts_with(self.own.via(Transport::Tcp)) {
            return None;
        }
        let old_branch = top.param(buf, "branch")?.value?;
        let params = buf[old_branch.end()..top.span.end()].strip_suffix(MOVED_OFF_UDP)?;
        let (previous, _) = PreviousHop::below_ours(msg).ok()?;
        let cseq = msg.cseq().ok()?;
        let branch = self.branches.branch(&BranchInput {
            previous,
            call_id: msg.call_id().ok()?,
            cseq: cseq.number,
            method: cseq.method,
            responder: self.servers.responder(dest),
            // Moved, it was forwarded statelessly, and falls back so.
            stateful: false,
        });
        let mut ed = Editor::new(msg);
        ed.replace_with(top.span, |o| {
            self.put_via(o, Transport::Udp, branch, params)
        });
        let (tcp, udp) = (
            self.own.contact(Transport::Tcp),
            self.own.contact(Transport::Udp),
        );
        for contact in msg.contacts() {
            let uri = contact.ok()?.uri;
            let found = buf[uri.range()].windows(tcp.len()).position(|w| w == tcp);
            if let Some(at) = found {
                let start = uri.start() + at;
                ed.replace(Span::new(start, start + tcp.len()), udp);
            }
        }
        Some(ed.finish())
    }

    /// Roundabout's Via value for `transport`: its address, `branch`, then `params`.
    fn put_via(&self, out: &mut BytesMut, transport: Transport, branch: Branch, params: &[u8]) {
        out.extend_from_slice(self.own.via(transport));
        put_hex_u64(out, branch.0);
        out.extend_from_slice(params);
    }

    /// The request as it leaves for `dest` (RFC 3261 §16.6) with `via` pushed on it, and the
    /// branch of that Via.
    pub fn rewrite_request(
        &self,
        msg: &Message,
        source: &FlowKey,
        connection: Option<ConnectionId>,
        forward: &Forward,
        dest: &FlowKey,
        via: OwnVia<'_>,
    ) -> Result<(Encoded, Branch), ParseError> {
        let OwnVia { stateful, params } = via;
        let egress = dest.transport;
        let buf = msg.bytes();
        let mut ed = Editor::new(msg);
        let top = msg.top_via()?;
        ed.set_via_source(&top, source.remote.ip(), source.remote.port());
        // Step 3: decrement, or add with 70.
        let hops = msg.max_forwards()?.map_or(70, |n| n.saturating_sub(1));
        ed.set_max_forwards(hops);
        ed.pop_routes(forward.pop_routes)?;
        match &forward.request_uri {
            None => {}
            Some(NewRequestUri::Replace(uri)) => {
                ed.set_request_uri(|o| o.extend_from_slice(uri))?
            }
            Some(NewRequestUri::ServerHost { host, port }) => {
                let span = msg.request_uri().ok_or(ParseError::BadStartLine)?;
                let uri = Uri::parse(buf, span)?;
                // Host and port become the server's; user and parameters stay.
                ed.replace_with(Span::new(uri.host.start(), uri.params.start()), |o| {
                    o.extend_from_slice(host.as_bytes());
                    o.extend_from_slice(b":");
                    put_decimal(o, u32::from(*port));
                });
            }
        }
        for hop in &forward.push_routes {
            ed.insert_header(HeaderName::Route, "Route", |o| {
                o.extend_from_slice(b"<sip:");
                match hop {
                    RouteHop::Ip(ip) => put_host_ip(o, *ip),
                    RouteHop::Name(name) => o.extend_from_slice(name.as_bytes()),
                }
                o.extend_from_slice(b";lr>");
            });
        }
        let cseq = msg.cseq()?;
        let branch = self.branches.branch(&BranchInput {
            previous: PreviousHop::of_request(msg, source)?,
            call_id: msg.call_id()?,
            cseq: cseq.number,
            method: cseq.method,
            responder: self.servers.responder(dest),
            stateful,
        });
        ed.push_via(|o| self.put_via(o, egress, branch, params));
        self.rewrite_contacts(&mut ed, source, connection, egress)?;
        if egress.is_stream() {
            ed.ensure_content_length();
        }
        Ok((ed.finish(), branch))
    }

    /// The response as it goes back to `dest`: our Via popped, Contact rewritten for 1xx/2xx
    /// (a REGISTER 2xx instead gets the client's own contacts back).
    pub fn rewrite_response(
        &self,
        msg: &Message,
        source: &FlowKey,
        connection: Option<ConnectionId>,
        dest: &FlowKey,
    ) -> Result<(Encoded, Vec<Registration>), ParseError> {
        let egress = dest.transport;
        let mut ed = Editor::new(msg);
        ed.pop_via()?;
        let code = msg.status_code().unwrap_or(0);
        let cseq = msg.cseq()?;
        let mut registrations = Vec::new();
        if Method::from_token(cseq.method) == Method::Register && (200..300).contains(&code) {
            registrations = self.restore_registered_contacts(&mut ed, dest)?;
        } else if code < 300 {
            self.rewrite_contacts(&mut ed, source, connection, egress)?;
        }
        if egress.is_stream() {
            ed.ensure_content_length();
        }
        Ok((ed.finish(), registrations))
    }

    /// Every Contact becomes `sip:user@us:port;transport=egress;rbt=token`, where the token keeps
    /// the original URI and the flow it came from (for a connection the peer opened, that very
    /// connection). A Contact already carrying a valid token of ours (a hairpin) stays as it is.
    fn rewrite_contacts(
        &self,
        ed: &mut Editor<'_>,
        source: &FlowKey,
        connection: Option<ConnectionId>,
        egress: Transport,
    ) -> Result<(), ParseError> {
        let msg = ed.message();
        let buf = msg.bytes();
        let may_connect = self.servers.is_server_address(source);
        // A server Roundabout may dial is reached on any connection to it.
        let connection = connection.filter(|_| !may_connect);
        for contact in msg.contacts() {
            let contact: NameAddr = contact?;
            let uri = contact.parsed_uri(buf)?;
            if uri
                .param_value(token::PARAM)
                .is_some_and(|t| self.tokens.decode(t).is_some())
            {
                continue;
            }
            let original = &buf[contact.uri.range()];
            let mut failed = false;
            ed.replace_name_addr_uri(&contact, |o| {
                o.extend_from_slice(b"sip:");
                if let Some(user) = uri.user() {
                    o.extend_from_slice(user);
                    o.extend_from_slice(b"@");
                }
                o.extend_from_slice(self.own.contact(egress));
                failed = self
                    .tokens
                    .encode_into(o, *source, connection, may_connect, original)
                    .is_err();
            });
            if failed {
                return Err(ParseError::BadHeaderValue(HeaderName::Contact));
            }
        }
        Ok(())
    }

    /// REGISTER 2xx on its way back to the client at `dest`: each Contact we rewrote is turned
    /// back into what its client wrote. The bindings of the client the response goes to are
    /// reported so the client cache can follow them; the registrar may list other devices of
    /// the same user too, which must not take this client's place. When none of the listed
    /// contacts is this client's, it has unregistered (RFC 3261 §10.3 step 8: the 2xx lists the
    /// bindings that remain), and its binding is reported with expiry zero.
    fn restore_registered_contacts(
        &self,
        ed: &mut Editor<'_>,
        dest: &FlowKey,
    ) -> Result<Vec<Registration>, ParseError> {
        let msg = ed.message();
        let buf = msg.bytes();
        let user = msg
            .to()?
            .parsed_uri(buf)?
            .user()
            .map(Bytes::copy_from_slice);
        let default_expires = msg.expires().unwrap_or(DEFAULT_EXPIRES);
        let mut registrations = Vec::new();
        for contact in msg.contacts() {
            let contact = contact?;
            let uri = contact.parsed_uri(buf)?;
            let Some(token) = uri
                .param_value(token::PARAM)
                .and_then(|t| self.tokens.decode(t))
            else {
                continue;
            };
            let expires = contact.expires(buf).unwrap_or(default_expires);
            ed.replace(contact.uri, &token.original_uri);
            // By address alone, as the response is sent (`Proxy::peer_connection`).
            if let Some(user) = user.as_ref().filter(|_| token.flow.remote == dest.remote) {
                registrations.push(Registration {
                    user: user.clone(),
                    flow: token.flow,
                    connection: token.connection,
                    contact: Bytes::from(token.original_uri),
                    expires: Duration::from_secs(u64::from(expires)),
                });
            }
        }
        if let (Some(user), true) = (user, registrations.is_empty()) {
            registrations.push(Registration {
                user,
                flow: *dest,
                connection: None,
                contact: Bytes::new(),
                expires: Duration::ZERO,
            });
        }
        Ok(registrations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_over_the_mtu_leaving_over_udp_moves() {
        let cases = [
            (None, Transport::Udp, 65_535, false),
            (Some(1300), Transport::Udp, 1300, false),
            (Some(1300), Transport::Udp, 1301, true),
            (Some(1300), Transport::Tcp, 4096, false),
            (Some(1300), Transport::Tls, 4096, false),
            (Some(1300), Transport::Ws, 4096, false),
            (Some(200), Transport::Udp, 201, true),
            (Some(65_535), Transport::Udp, 65_535, false),
        ];
        for (mtu, egress, len, moves) in cases {
            assert_eq!(
                moves_off_udp(mtu, egress, len),
                moves,
                "{mtu:?} {egress} {len}"
            );
        }
    }
}

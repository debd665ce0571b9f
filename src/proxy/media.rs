//! WebRTC media through rtpengine (`-rtpengine`, docs/media.md). A browser's SDP offers ICE,
//! DTLS-SRTP, `UDP/TLS/RTP/SAVPF` and rtcp-mux; a phone or server on UDP or TCP speaks plain
//! RTP. When one leg of a message is a WebSocket flow and the other is not, the SDP it carries is
//! handed to rtpengine, which answers with the SDP rewritten for the leg it goes to, the media
//! then flowing through rtpengine and converted there. Between two browsers, or two plain
//! endpoints, nothing is touched.
//!
//! Roundabout keeps no media or dialog state: rtpengine keys its calls by Call-ID and tags, which
//! every message of a dialog carries; which INVITE started a call comes back in its responses
//! (the call-start mark in Roundabout's Via).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tracing::debug;

use crate::media::{
    AnswerRequest, DeleteRequest, Dtls, Ice, IceLite, MediaError, MediaOptions, NgClient,
    OfferRequest, Replace, RtcpMux, TransportProtocol,
};
use crate::sip::{Editor, Message, Method, Transport};
use crate::warn_limited;

use super::status::Status;

/// The kind of media a leg speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// A WebSocket flow: a browser (RFC 7118), so WebRTC media (RFC 8827, RFC 8829).
    WebRtc,
    /// Anything else: plain RTP/AVP.
    Plain,
}

impl Leg {
    #[must_use]
    pub fn of(transport: Transport) -> Leg {
        match transport {
            Transport::Ws | Transport::Wss => Leg::WebRtc,
            _ => Leg::Plain,
        }
    }
}

/// What rtpengine is asked about a message that goes from one kind of leg to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The SDP is rewritten; the message waits for it.
    Rewrite(Rewrite),
    /// The call ends (BYE, CANCEL, a final non-2xx to the INVITE that started it): rtpengine
    /// forgets it. The message does not wait.
    EndCall,
}

/// An SDP rewritten for the leg it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// A request's SDP offers (INVITE, re-INVITE, UPDATE).
    Offer(Leg),
    /// A 18x's or 2xx's SDP answers the offer of its request; if rtpengine has none (the
    /// INVITE had no SDP: a late offer, RFC 3261 §13.2.1), it is the offer.
    Answer(Leg),
    /// An ACK's SDP answers the offer of a late-offer 2xx.
    AckAnswer(Leg),
}

/// The parameter of Roundabout's Via on an INVITE that starts a call (no To tag) whose media
/// the relay may handle. It comes back in the INVITE's responses (RFC 3261 §8.2.6.2), so that a
/// final non-2xx to it ends the call's media, and one to a re-INVITE (unmarked) does not,
/// without Roundabout keeping any call state. It is not covered by the branch's MAC: all a
/// next hop could do by adding or removing it is end, or keep, its own call's media.
const CALL_START_PARAM: &str = "rb-call-start";

/// What follows the branch in Roundabout's Via on `msg` going from `from` to `to`: the
/// call-start mark, or nothing.
#[must_use]
pub fn via_params(msg: &Message, from: Transport, to: Transport) -> &'static [u8] {
    let starts_call = Leg::of(from) != Leg::of(to)
        && msg.method() == Some(Method::Invite)
        && CallIds::of(msg).is_some_and(|ids| ids.starts_call());
    if starts_call {
        b";rb-call-start"
    } else {
        b""
    }
}

/// What a message's body is, as far as the media relay is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    None,
    Sdp,
    /// `multipart/*`: passed through unchanged (its SDP part, if any, is not rewritten).
    Multipart,
    Other,
}

fn body(msg: &Message) -> Body {
    if msg.body().is_empty() {
        return Body::None;
    }
    let Some(span) = msg.other_header("content-type", b'c') else {
        return Body::Other;
    };
    let value = msg.slice(span);
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    let media_type = media_type.trim_ascii();
    if media_type.eq_ignore_ascii_case(b"application/sdp") {
        Body::Sdp
    } else if media_type.len() > 10 && media_type[..10].eq_ignore_ascii_case(b"multipart/") {
        Body::Multipart
    } else {
        Body::Other
    }
}

/// Whether the SDP of `msg` is one rtpengine can be asked about; a multipart body is said to
/// be passed through.
fn has_sdp(msg: &Message) -> bool {
    match body(msg) {
        Body::Sdp => true,
        Body::Multipart => {
            debug!("multipart body passed through unchanged: only a whole SDP body is relayed");
            false
        }
        Body::None | Body::Other => false,
    }
}

/// What a request from `from` to `to` asks of rtpengine, if anything.
#[must_use]
pub fn request_step(msg: &Message, from: Transport, to: Transport) -> Option<Step> {
    let toward = Leg::of(to);
    if Leg::of(from) == toward {
        return None;
    }
    match msg.method()? {
        Method::Invite | Method::Update if has_sdp(msg) => {
            Some(Step::Rewrite(Rewrite::Offer(toward)))
        }
        Method::Ack if has_sdp(msg) => Some(Step::Rewrite(Rewrite::AckAnswer(toward))),
        Method::Bye | Method::Cancel => Some(Step::EndCall),
        _ => None,
    }
}

/// What a response from `from` to `to` asks of rtpengine, if anything.
#[must_use]
pub fn response_step(msg: &Message, from: Transport, to: Transport) -> Option<Step> {
    let toward = Leg::of(to);
    if Leg::of(from) == toward {
        return None;
    }
    let method = Method::from_token(msg.cseq().ok()?.method);
    match (method, msg.status_code()?) {
        (Method::Invite | Method::Update, 101..=299) if has_sdp(msg) => {
            Some(Step::Rewrite(Rewrite::Answer(toward)))
        }
        (Method::Invite, 300..) if marks_call_start(msg) => Some(Step::EndCall),
        _ => None,
    }
}

/// Whether the response's top Via (Roundabout's) carries the call-start mark.
fn marks_call_start(msg: &Message) -> bool {
    msg.top_via()
        .is_ok_and(|via| via.param(msg.bytes(), CALL_START_PARAM).is_some())
}

/// What rtpengine is told to do with an SDP going to a leg of `toward`: to a browser ICE,
/// DTLS-SRTP (Roundabout's side passive: the browser connects, RFC 8842) and rtcp-mux; to a
/// plain endpoint RTP/AVP with neither ICE nor DTLS, and RTCP on its own port.
///
/// Toward the browser rtpengine is an ICE-lite agent (RFC 8445 §2.5), set in the offer for the
/// call: the browser's checks pick the pair and rtpengine sends where they come from, which is
/// where the browser listens even when its checks leave from an address it never offered (a
/// NAT's, or another interface of its host) — checks of rtpengine's own toward the offered
/// candidates could settle on a pair the browser does not use.
#[must_use]
pub fn options(toward: Leg, offer: bool) -> MediaOptions {
    let replace = vec![Replace::Origin, Replace::SessionConnection];
    match toward {
        Leg::Plain => MediaOptions {
            transport_protocol: Some(TransportProtocol::RtpAvp),
            ice: Some(Ice::Remove),
            // The browser sent the offer.
            ice_lite: offer.then_some(IceLite::Backward),
            dtls: Some(Dtls::Off),
            rtcp_mux: vec![RtcpMux::Demux],
            replace,
            flags: Vec::new(),
        },
        Leg::WebRtc => MediaOptions {
            transport_protocol: Some(TransportProtocol::UdpTlsRtpSavpf),
            ice: Some(Ice::Force),
            ice_lite: offer.then_some(IceLite::Forward),
            dtls: Some(Dtls::Passive),
            rtcp_mux: if offer {
                vec![RtcpMux::Offer]
            } else {
                Vec::new()
            },
            replace,
            // A browser needs no SDES keys (RFC 8827 §6.5: DTLS-SRTP only); an offer to it
            // needs a=mid, which BUNDLE and JSEP expect (RFC 8829 §5.2.1).
            flags: if offer {
                vec![
                    Bytes::from_static(b"SDES-off"),
                    Bytes::from_static(b"generate-mid"),
                ]
            } else {
                vec![Bytes::from_static(b"SDES-off")]
            },
        },
    }
}

/// The identifiers rtpengine keys a call by, read from a message (owned, so that a task
/// waiting for rtpengine holds no borrow of the message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallIds {
    call_id: Bytes,
    from_tag: Bytes,
    to_tag: Option<Bytes>,
}

impl CallIds {
    /// Whether the message starts a call: it has no To tag yet (RFC 3261 §12.1).
    #[must_use]
    pub fn starts_call(&self) -> bool {
        self.to_tag.is_none()
    }

    #[must_use]
    pub fn of(msg: &Message) -> Option<CallIds> {
        let buf = msg.bytes();
        let tag = |name_addr: Option<crate::sip::NameAddr>| {
            let value = name_addr?.param(buf, "tag")?.value?;
            Some(buf.slice(value.range()))
        };
        let call_id = msg.call_id().ok()?;
        Some(CallIds {
            call_id: Bytes::copy_from_slice(call_id),
            from_tag: tag(msg.from().ok())?,
            to_tag: tag(msg.to().ok()),
        })
    }
}

/// Why a message's media could not be relayed, and what answers it.
#[derive(Debug, thiserror::Error)]
pub enum MediaFailure {
    #[error("the message has no Call-ID or From tag for the media relay")]
    NoCallIds,
    #[error("the rewritten SDP does not make a message: {0}")]
    Rebuilt(#[from] crate::sip::ParseError),
    #[error(transparent)]
    Relay(#[from] MediaError),
}

impl MediaFailure {
    /// What a request whose media failed is answered with, and what replaces a response
    /// whose media failed: 503 when rtpengine could not be reached (try again later, or
    /// elsewhere), 500 when it refused or garbled the SDP.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            MediaFailure::Relay(
                MediaError::Timeout { .. }
                | MediaError::Busy(_)
                | MediaError::Closed
                | MediaError::NoServer
                | MediaError::Random,
            ) => Status::new(503, "Service Unavailable (media relay unavailable)"),
            _ => Status::new(500, "Server Internal Error (media relay failed)"),
        }
    }
}

/// The ng commands Roundabout sends, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Offer,
    Answer,
    Delete,
}

impl Command {
    pub const ALL: [Command; 3] = [Command::Offer, Command::Answer, Command::Delete];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
        }
    }
}

/// The media relay: the ng client, and counts of what was asked of it.
pub struct MediaRelay {
    client: NgClient,
    requests: [AtomicU64; Command::ALL.len()],
    failures: [AtomicU64; Command::ALL.len()],
}

impl std::fmt::Debug for MediaRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRelay").finish_non_exhaustive()
    }
}

impl MediaRelay {
    #[must_use]
    pub fn new(client: NgClient) -> MediaRelay {
        MediaRelay {
            client,
            requests: Default::default(),
            failures: Default::default(),
        }
    }

    /// ng requests sent with `command` since start (each once, however often it was tried).
    #[must_use]
    pub fn requests(&self, command: Command) -> u64 {
        self.requests[command as usize].load(Ordering::Relaxed)
    }

    /// Those of them that failed: no answer, or an error (an unknown call for `delete` is
    /// no failure: the call is gone either way).
    #[must_use]
    pub fn failures(&self, command: Command) -> u64 {
        self.failures[command as usize].load(Ordering::Relaxed)
    }

    /// Counts a request and its outcome.
    fn counted<T>(&self, command: Command, result: Result<T, MediaError>) -> Result<T, MediaError> {
        self.requests[command as usize].fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.failures[command as usize].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The SDP of the message `ids` identifies, rewritten by rtpengine.
    ///
    /// # Errors
    /// rtpengine did not answer or refused, or an answer has no To tag to go by.
    pub async fn rewrite(
        &self,
        ids: CallIds,
        sdp: Bytes,
        rewrite: Rewrite,
    ) -> Result<Bytes, MediaFailure> {
        let rewritten = match rewrite {
            Rewrite::Offer(toward) => self.offer(ids, sdp, toward).await?,
            Rewrite::Answer(toward) => match ids.to_tag.clone() {
                Some(to_tag) => self.answer_or_late_offer(ids, to_tag, sdp, toward).await?,
                None => return Err(MediaFailure::NoCallIds),
            },
            // The offer was the 2xx's, made by the party the To names (see below).
            Rewrite::AckAnswer(toward) => match ids.to_tag.clone() {
                Some(offerer) => {
                    let answer = AnswerRequest {
                        call_id: ids.call_id,
                        from_tag: offerer,
                        to_tag: ids.from_tag,
                        via_branch: None,
                        sdp,
                        options: options(toward, false),
                    };
                    let answered = self.client.answer(answer).await;
                    self.counted(Command::Answer, answered)?
                }
                None => return Err(MediaFailure::NoCallIds),
            },
        };
        Ok(rewritten)
    }

    async fn offer(&self, ids: CallIds, sdp: Bytes, toward: Leg) -> Result<Bytes, MediaError> {
        let offer = OfferRequest {
            call_id: ids.call_id,
            from_tag: ids.from_tag,
            to_tag: ids.to_tag,
            via_branch: None,
            sdp,
            options: options(toward, true),
        };
        let offered = self.client.offer(offer).await;
        self.counted(Command::Offer, offered)
    }

    /// A 18x/2xx's SDP: the answer to its INVITE's offer, or, when rtpengine has no offer
    /// for the call (the INVITE had none), itself the offer, made by the party the To names.
    async fn answer_or_late_offer(
        &self,
        ids: CallIds,
        to_tag: Bytes,
        sdp: Bytes,
        toward: Leg,
    ) -> Result<Bytes, MediaError> {
        let answer = AnswerRequest {
            call_id: ids.call_id.clone(),
            from_tag: ids.from_tag.clone(),
            to_tag: to_tag.clone(),
            via_branch: None,
            sdp: sdp.clone(),
            options: options(toward, false),
        };
        let answered = self.client.answer(answer).await;
        match self.counted(Command::Answer, answered) {
            Err(MediaError::Refused(reason)) if is_unknown_call(&reason) => {
                debug!(
                    "no offer for this call in the media relay: the response's SDP is a late offer"
                );
                let late = CallIds {
                    call_id: ids.call_id,
                    from_tag: to_tag,
                    to_tag: Some(ids.from_tag),
                };
                self.offer(late, sdp, toward).await
            }
            other => other,
        }
    }

    /// Ends the call's media. Problems are logged, never answered: the message goes on
    /// either way, and rtpengine's own timeout ends a call it was not told of.
    pub async fn end(&self, ids: CallIds) {
        let delete = DeleteRequest {
            call_id: ids.call_id,
            from_tag: ids.from_tag,
            to_tag: None,
            via_branch: None,
        };
        let deleted = self.client.delete(delete).await;
        match self.counted(Command::Delete, deleted) {
            Ok(()) => debug!("media relay forgot the call"),
            Err(error) => warn_limited!(%error, "media relay did not end a call"),
        }
    }
}

/// `msg` with `sdp` for its body.
///
/// # Errors
/// The result does not parse (it cannot: only the body and Content-Length change).
pub fn with_sdp(msg: &Message, sdp: Bytes) -> Result<Message, MediaFailure> {
    let mut editor = Editor::new(msg);
    editor.replace_body(sdp);
    Ok(Message::parse_own(editor.finish().to_contiguous())?)
}

/// rtpengine's reason for a call it does not have (`Unknown call-id`, any case).
fn is_unknown_call(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("unknown call")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn request(method: &str, content_type: Option<&str>, body: &str) -> Message {
        let content_type = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
        parse(&format!(
            "{method} sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/WSS a.invalid;branch=z9hG4bK1\r\n\
             From: <sip:alice@a.invalid>;tag=a1\r\nTo: <sip:bob@b.invalid>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn response(code: u16, method: &str, body: &str) -> Message {
        marked_response(code, method, body, "")
    }

    /// A response whose top Via (Roundabout's) has `params` after its branch.
    fn marked_response(code: u16, method: &str, body: &str, params: &str) -> Message {
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        parse(&format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKrb1{params}\r\n\
             From: <sip:alice@a.invalid>;tag=a1\r\nTo: <sip:bob@b.invalid>;tag=b1\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    use Transport::{Tcp, Udp, Ws, Wss};

    /// (what, message, from, to, the step): the media relay is asked only between a WebSocket
    /// leg and another, and only about what changes the media.
    #[test]
    fn steps_by_message_and_leg_pair() {
        let sdp = Some("application/sdp");
        let cases = [
            (
                "INVITE with SDP, browser to UDP",
                request("INVITE", sdp, SDP),
                Wss,
                Udp,
                Some(Step::Rewrite(Rewrite::Offer(Leg::Plain))),
            ),
            (
                "INVITE with SDP, TCP to WS",
                request("INVITE", sdp, SDP),
                Tcp,
                Ws,
                Some(Step::Rewrite(Rewrite::Offer(Leg::WebRtc))),
            ),
            (
                "INVITE between two browsers",
                request("INVITE", sdp, SDP),
                Wss,
                Ws,
                None,
            ),
            (
                "INVITE between two plain legs",
                request("INVITE", sdp, SDP),
                Udp,
                Tcp,
                None,
            ),
            (
                "INVITE without SDP (late offer)",
                request("INVITE", None, ""),
                Wss,
                Udp,
                None,
            ),
            (
                "INVITE with SDP; parameters, any case",
                request("INVITE", Some("Application/SDP; charset=x"), SDP),
                Wss,
                Udp,
                Some(Step::Rewrite(Rewrite::Offer(Leg::Plain))),
            ),
            (
                "INVITE with a multipart body",
                request("INVITE", Some("multipart/mixed;boundary=x"), SDP),
                Wss,
                Udp,
                None,
            ),
            (
                "UPDATE with SDP",
                request("UPDATE", sdp, SDP),
                Udp,
                Wss,
                Some(Step::Rewrite(Rewrite::Offer(Leg::WebRtc))),
            ),
            (
                "ACK with SDP (late offer's answer)",
                request("ACK", sdp, SDP),
                Wss,
                Udp,
                Some(Step::Rewrite(Rewrite::AckAnswer(Leg::Plain))),
            ),
            ("ACK without SDP", request("ACK", None, ""), Wss, Udp, None),
            (
                "BYE",
                request("BYE", None, ""),
                Udp,
                Wss,
                Some(Step::EndCall),
            ),
            (
                "CANCEL",
                request("CANCEL", None, ""),
                Wss,
                Udp,
                Some(Step::EndCall),
            ),
            (
                "BYE between two plain legs",
                request("BYE", None, ""),
                Udp,
                Tcp,
                None,
            ),
            (
                "MESSAGE with a body",
                request("MESSAGE", Some("text/plain"), "hi"),
                Wss,
                Udp,
                None,
            ),
            (
                "183 with SDP",
                response(183, "INVITE", SDP),
                Udp,
                Wss,
                Some(Step::Rewrite(Rewrite::Answer(Leg::WebRtc))),
            ),
            (
                "200 to INVITE with SDP",
                response(200, "INVITE", SDP),
                Wss,
                Udp,
                Some(Step::Rewrite(Rewrite::Answer(Leg::Plain))),
            ),
            (
                "180 without SDP",
                response(180, "INVITE", ""),
                Udp,
                Wss,
                None,
            ),
            ("100 Trying", response(100, "INVITE", ""), Udp, Wss, None),
            (
                "200 to UPDATE with SDP",
                response(200, "UPDATE", SDP),
                Udp,
                Wss,
                Some(Step::Rewrite(Rewrite::Answer(Leg::WebRtc))),
            ),
            (
                "486 to the INVITE that started the call",
                marked_response(486, "INVITE", "", ";rb-call-start"),
                Udp,
                Wss,
                Some(Step::EndCall),
            ),
            (
                "487 after early media, to the INVITE that started the call",
                marked_response(487, "INVITE", "", ";rb-call-start;received=192.0.2.1"),
                Udp,
                Wss,
                Some(Step::EndCall),
            ),
            (
                "486 to a re-INVITE (unmarked: the call stays)",
                response(486, "INVITE", ""),
                Udp,
                Wss,
                None,
            ),
            (
                "488 to UPDATE (the call stays)",
                response(488, "UPDATE", ""),
                Udp,
                Wss,
                None,
            ),
            ("200 to BYE", response(200, "BYE", ""), Udp, Wss, None),
            (
                "486 between two plain legs",
                response(486, "INVITE", ""),
                Udp,
                Tcp,
                None,
            ),
        ];
        for (what, msg, from, to, expected) in cases {
            let step = if msg.is_request() {
                request_step(&msg, from, to)
            } else {
                response_step(&msg, from, to)
            };
            assert_eq!(step, expected, "{what}");
        }
    }

    /// Roundabout's Via on an INVITE that starts a call between a WebSocket leg and another
    /// carries the call-start mark; on a re-INVITE, another request, or a call between legs of
    /// one kind, nothing.
    #[test]
    fn the_call_start_mark_goes_on_initial_invites_between_leg_kinds() {
        let sdp = Some("application/sdp");
        let initial = request("INVITE", sdp, SDP);
        let reinvite = parse(
            &request("INVITE", sdp, SDP)
                .bytes()
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .replace("To: <sip:bob@b.invalid>", "To: <sip:bob@b.invalid>;tag=b1"),
        );
        let mark: &[u8] = b";rb-call-start";
        assert_eq!(via_params(&initial, Wss, Udp), mark);
        assert_eq!(via_params(&initial, Udp, Ws), mark);
        assert_eq!(via_params(&initial, Udp, Tcp), b"");
        assert_eq!(via_params(&reinvite, Wss, Udp), b"");
        assert_eq!(via_params(&request("MESSAGE", None, ""), Wss, Udp), b"");
    }

    #[test]
    fn options_per_leg() {
        let plain = options(Leg::Plain, true);
        assert_eq!(plain.transport_protocol, Some(TransportProtocol::RtpAvp));
        assert_eq!(
            (plain.ice, plain.dtls),
            (Some(Ice::Remove), Some(Dtls::Off))
        );
        assert_eq!(plain.rtcp_mux, [RtcpMux::Demux]);
        let offer = options(Leg::WebRtc, true);
        assert_eq!(
            offer.transport_protocol,
            Some(TransportProtocol::UdpTlsRtpSavpf)
        );
        assert_eq!(
            (offer.ice, offer.dtls),
            (Some(Ice::Force), Some(Dtls::Passive))
        );
        assert_eq!(offer.rtcp_mux, [RtcpMux::Offer]);
        assert!(options(Leg::WebRtc, false).rtcp_mux.is_empty());
    }

    #[test]
    fn a_call_is_identified_by_call_id_and_tags() {
        let ids = CallIds::of(&response(200, "INVITE", "")).unwrap();
        assert_eq!(
            ids,
            CallIds {
                call_id: Bytes::from_static(b"c1"),
                from_tag: Bytes::from_static(b"a1"),
                to_tag: Some(Bytes::from_static(b"b1")),
            }
        );
        assert_eq!(
            CallIds::of(&request("INVITE", None, "")).unwrap().to_tag,
            None
        );
    }

    #[test]
    fn relay_failures_answer_503_when_unreachable_and_500_otherwise() {
        let timeout = MediaFailure::Relay(MediaError::Timeout {
            tries: 3,
            timeout: std::time::Duration::from_secs(1),
            addresses: Vec::new(),
        });
        assert_eq!(timeout.status().code, 503);
        assert!(timeout.status().reason.contains("media relay"));
        let refused = MediaFailure::Relay(MediaError::Refused("no".into()));
        assert_eq!(refused.status().code, 500);
        assert!(refused.status().reason.contains("media relay"));
    }
}

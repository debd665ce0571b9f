//! Answers of Roundabout's own: to requests it refuses or answers itself, and to malformed
//! ones it can still answer (RFC 3261 §8.2.6, §16.3).

use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::sip::text::put_decimal;
use crate::sip::{reply, Editor, Encoded, Message, Method, ParseError, Transport};
use crate::transport::FlowKey;
use crate::warn_limited;

use super::{bad_request_reason, Proxy};
use crate::proxy::action::answer_destination;
use crate::proxy::clients::CACHE_FULL_RETRY_AFTER;
use crate::proxy::decisions::{Dropped, Refused};
use crate::proxy::router::proxy_require;
use crate::proxy::status::Status;

impl Proxy {
    /// Sends a response of the proxy's own on the flow the request came in on. To an unverified
    /// UDP source nothing larger than the request goes back, so replies cannot amplify a flood.
    pub(super) fn reply(&self, request: &Message, source: &FlowKey, status: Status) {
        if request.method() == Some(Method::Ack) {
            return;
        }
        let tag = self.to_tag(request);
        let extra = extra_header(request, status);
        let extra = extra.as_ref().map(|(name, value)| (*name, &value[..]));
        let bare = status.reason.split(" (").next().unwrap_or(status.reason);
        // The detail in a reason phrase, then received/rport, are courtesies that give way
        // when the answer would otherwise be larger than the request (see `amplifies`).
        // received/rport need a top Via to go on.
        let stampable = request.top_via().is_ok();
        let candidates = [(true, status.reason), (true, bare), (false, bare)];
        let fitting = candidates
            .into_iter()
            .filter(|&(stamped, _)| stampable || !stamped)
            .map(|(stamped, reason)| {
                let answer = reply::Response {
                    code: status.code,
                    reason,
                    to_tag: &tag,
                    via_source: stamped.then_some(source.remote),
                    headers: extra.as_slice(),
                };
                reply::build(request, &answer)
            })
            .find(|out| !self.amplifies(request.bytes(), source, out));
        match fitting {
            Some(out) => self.send_reply(request.bytes(), source, status.code, out),
            None => {
                debug!(flow = %source, "reply larger than the request not sent to a UDP source");
                self.inner.counting.dropped(Dropped::Amplifying);
            }
        }
    }

    /// Answers a request refused before it was routed, and counts why.
    pub(super) fn refuse(
        &self,
        request: &Message,
        source: &FlowKey,
        reason: Refused,
        status: Status,
    ) {
        self.inner.counting.refused(reason);
        self.reply(request, source, status);
    }

    /// Whether a reply to an unverified UDP source would be larger than its request.
    fn amplifies(&self, request: &Bytes, source: &FlowKey, out: &Encoded) -> bool {
        source.transport == Transport::Udp
            && out.len() > request.len()
            && !self.inner.router.is_server_address(source)
    }

    pub(super) fn malformed(&self, data: &Bytes, source: FlowKey, error: ParseError) {
        match reply::salvage_bad_request(data, bad_request_reason(error)) {
            Some(out) => {
                debug!(flow = %source, %error, "malformed request answered");
                self.send_reply(data, &source, Status::BAD_REQUEST.code, out);
            }
            None => {
                warn_limited!(flow = %source, %error, "malformed message dropped");
                self.inner.counting.dropped(Dropped::Malformed);
            }
        }
    }

    fn send_reply(&self, request: &Bytes, source: &FlowKey, code: u16, out: Encoded) {
        let counting = &self.inner.counting;
        if self.amplifies(request, source, &out) {
            debug!(flow = %source, "reply larger than the request not sent to a UDP source");
            counting.dropped(Dropped::Amplifying);
            return;
        }
        match self.inner.outbound.send(&answer_destination(*source), out) {
            Ok(()) => counting.answered(code),
            Err(error) => {
                debug!(flow = %source, %error, "reply not sent");
                counting.dropped(Dropped::NotSent);
            }
        }
    }

    /// The To tag of Roundabout's own answers to `request`.
    pub(super) fn to_tag(&self, request: &Message) -> String {
        let cseq = request.cseq().map_or(0, |c| c.number);
        self.inner
            .router
            .to_tag(request.call_id().unwrap_or_default(), cseq)
    }
}

/// The header a status carries besides those copied from the request.
fn extra_header(request: &Message, status: Status) -> Option<(&'static str, BytesMut)> {
    let mut value = BytesMut::new();
    match status {
        // RFC 3261 §16.3 step 5, §20.40: a 420 names the extensions it refuses.
        Status::BAD_EXTENSION => {
            value.extend_from_slice(&proxy_require(request).join(&b", "[..]));
            Some(("Unsupported", value))
        }
        // RFC 3261 §21.5.4: when the client may try again.
        Status::CLIENT_CACHE_FULL => {
            put_decimal(&mut value, CACHE_FULL_RETRY_AFTER);
            Some(("Retry-After", value))
        }
        _ => None,
    }
}

/// `response` with its status line replaced by `status`, Roundabout's own To tag (`to_tag`)
/// and no body: what goes upstream in its place when its SDP could not be rewritten, so the
/// caller gets an answer that says why instead of an SDP it cannot use. With Roundabout's tag,
/// the caller's ACK of it ends here (it is Roundabout's answer) and never reaches the UAS as
/// the ACK of its 2xx: the UAS, whose 2xx is never acknowledged, ends the call itself
/// (RFC 3261 §13.3.1.4).
pub(super) fn in_place_of(response: &Message, status: Status, to_tag: &str) -> Option<Message> {
    let buf = response.bytes();
    let to = response.to().ok()?;
    let mut editor = Editor::new(response);
    // The start line's span ends after its line end, which the new one must write too.
    editor.replace_with(response.start_line(), |out| {
        out.extend_from_slice(b"SIP/2.0 ");
        put_decimal(out, u32::from(status.code));
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    let tag = |out: &mut BytesMut| out.extend_from_slice(to_tag.as_bytes());
    match to.param(buf, "tag").and_then(|param| param.value) {
        Some(value) => editor.replace_with(value, tag),
        None => editor.insert_with(to.span.end(), |out| {
            out.extend_from_slice(b";tag=");
            tag(out);
        }),
    }
    editor.replace_body(Bytes::new());
    Message::parse_own(editor.finish().to_contiguous()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error that replaces a 200 whose SDP could not be rewritten: a whole response with
    /// every Via still in place, Roundabout's To tag, and no body.
    #[test]
    fn an_error_in_place_of_a_response_keeps_its_vias_and_takes_our_tag() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrb1\r\n\
                  Via: SIP/2.0/WSS a.invalid;branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=f\r\n\
                  To: <sip:b@y>;tag=uas\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                  Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";
        let ok = Message::parse(Bytes::from_static(ok.as_bytes())).unwrap();
        let status = Status::new(503, "Service Unavailable (media relay unavailable)");
        let error = in_place_of(&ok, status, "rb1234").unwrap();
        let text = String::from_utf8(error.bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 503 Service Unavailable (media relay unavailable)\r\n\
             Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrb1\r\n\
             Via: SIP/2.0/WSS a.invalid;branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=f\r\n\
             To: <sip:b@y>;tag=rb1234\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(error.vias().count(), 2);
        let untagged = Message::parse(Bytes::from(text.replace(";tag=rb1234", ""))).unwrap();
        let tagged = in_place_of(&untagged, status, "rb9").unwrap();
        assert!(String::from_utf8_lossy(tagged.bytes()).contains("To: <sip:b@y>;tag=rb9\r\n"));
    }
}

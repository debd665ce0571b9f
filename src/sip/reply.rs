//! Responses the proxy sends itself (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied
//! from the request, a To tag added, no body.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use super::edit::{put_via_source, via_source_params};
use super::header::HeaderName;
use super::header::Via;
use super::lines::{self, HeaderLines};
use super::message::Message;
use super::{Encoded, Span};

/// The header lines a response copies from its request.
fn is_copied(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// What a response of the proxy's own adds to what it copies from its request.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    pub code: u16,
    pub reason: &'a str,
    /// Added when the To header has none; a 100 (Trying) gets none (RFC 3261 §8.2.6.1: it is
    /// hop by hop, not a dialog's).
    pub to_tag: &'a str,
    /// Where the request came from, written into the top Via as `received` and `rport` (RFC
    /// 3261 §18.2.1, RFC 3581 §4) so the answer carries it back; ignored when the top Via
    /// cannot be read.
    pub via_source: Option<SocketAddr>,
    /// Header lines after the copied ones, as (name, value): a 420's `Unsupported`, a
    /// `Retry-After`.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Builds a response to `request` with nothing but the copied headers and a To tag.
#[must_use]
pub fn response(request: &Message, code: u16, reason: &str, to_tag: &str) -> Encoded {
    build(
        request,
        &Response {
            code,
            reason,
            to_tag,
            via_source: None,
            headers: &[],
        },
    )
}

/// Builds `response` to `request`, in one pass over the request's header lines.
#[must_use]
pub fn build(request: &Message, response: &Response<'_>) -> Encoded {
    let Response {
        code,
        reason,
        to_tag,
        via_source,
        headers,
    } = *response;
    let buf = request.bytes();
    let stamp = via_source.and_then(|at| Some((request.top_via().ok()?, at)));
    let mut out = BytesMut::with_capacity(256);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for field in request.headers().iter().filter(|h| is_copied(h.name)) {
        if field.name == HeaderName::To
            && code > 100
            && request.to().is_ok_and(|to| to.param(buf, "tag").is_none())
        {
            // RFC 3261 §8.2.6.2: a UAS adds a To tag to its final responses.
            out.extend_from_slice(&buf[field.line.start()..field.value.end()]);
            let _ = write!(out, ";tag={to_tag}\r\n");
        } else if let Some((top, at)) = stamp.filter(|(top, _)| {
            field.line.start() <= top.span.start() && top.span.end() <= field.line.end()
        }) {
            copy_with_via_source(&mut out, buf, field.line, &top, at);
        } else {
            out.extend_from_slice(&buf[field.line.range()]);
        }
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Encoded {
        head: out.freeze(),
        body: Bytes::new(),
    }
}

/// Copies the Via `line` holding `top` with `received`/`rport` recorded on `top`, as
/// [`super::Editor::set_via_source`] records them on a request.
fn copy_with_via_source(out: &mut BytesMut, buf: &[u8], line: Span, top: &Via, at: SocketAddr) {
    let mut pos = line.start();
    for replaced in via_source_params(buf, top).into_iter().flatten() {
        out.extend_from_slice(&buf[pos..replaced.start()]);
        pos = replaced.end();
    }
    out.extend_from_slice(&buf[pos..top.span.end()]);
    put_via_source(out, at.ip(), at.port());
    out.extend_from_slice(&buf[top.span.end()..line.end()]);
}

/// The ACK a client transaction sends for a non-2xx final response to `invite` (RFC 3261
/// §17.1.1.3): the INVITE's Request-URI, its top Via only, From, Call-ID and Route headers,
/// the response's To (with the tag the answerer added), and CSeq number with method ACK.
#[must_use]
pub fn ack_for(invite: &Message, response: &Message) -> Encoded {
    let to = response
        .first(HeaderName::To)
        .map(|h| &response.bytes()[h.value.range()]);
    in_transaction_request(invite, "ACK", to)
}

/// The CANCEL for a pending `request` (RFC 3261 §9.1): its Request-URI, top Via, From, To,
/// Call-ID and Route headers, and CSeq number with method CANCEL.
#[must_use]
pub fn cancel_for(request: &Message) -> Encoded {
    in_transaction_request(request, "CANCEL", None)
}

/// A request within the client transaction of `request`: same branch, so the next hop matches
/// it to that transaction. `to` replaces the request's To value when given.
fn in_transaction_request(request: &Message, method: &str, to: Option<&[u8]>) -> Encoded {
    let buf = request.bytes();
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b" ");
    if let Some(uri) = request.request_uri() {
        out.extend_from_slice(&buf[uri.range()]);
    }
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Ok(top) = request.top_via() {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(&buf[top.span.range()]);
        out.extend_from_slice(b"\r\n");
    }
    for field in request.headers() {
        let line = &buf[field.line.range()];
        match field.name {
            HeaderName::From | HeaderName::CallId | HeaderName::Route => {
                out.extend_from_slice(line);
            }
            HeaderName::To => match to {
                Some(value) => {
                    out.extend_from_slice(b"To: ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(line),
            },
            HeaderName::CSeq => {
                let number = request.cseq().map_or(0, |c| c.number);
                let _ = write!(out, "CSeq: {number} {method}\r\n");
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    Encoded {
        head: out.freeze(),
        body: Bytes::new(),
    }
}

/// For a request too broken to parse whole: when its request line and a Via can still be read,
/// an answer carrying the lines a response needs (RFC 3261 §8.2.6.2); `None` otherwise (the
/// caller drops it). The answer is a `400` with `reason`, or a `505 Version Not Supported` when
/// the request line names a SIP version other than 2.0 (RFC 3261 §21.5.6, RFC 4475 §3.1.2.16).
///
/// Header lines are read as `Message::parse` reads them (`lines`), up to the end of `data` if no
/// blank line comes first: folded continuation lines are joined to their header by one SP
/// (RFC 3261 §7.3.1); a line without a colon on its first line is not copied. The top Via value
/// must parse, else nobody could match the answer (RFC 3261 §18.1.2) and it is not sent; what
/// is sent parses as a response.
#[must_use]
pub fn salvage_bad_request(data: &[u8], reason: &str) -> Option<Encoded> {
    let start = lines::skip_leading_line_ends(data);
    let (request_line_end, after_request_line) = lines::line_end(data, start)?;
    let request_line = &data[start..request_line_end];
    let mut words = request_line.split(|&b| b == b' ');
    let (method, uri, version) = (words.next()?, words.next()?, words.next()?);
    if method.is_empty()
        || !method.iter().all(|&b| super::lex::is_token_char(b))
        || uri.is_empty()
        || words.next().is_some()
        || method == b"ACK"
    {
        return None;
    }
    let (code, reason) = if version == b"SIP/2.0" {
        (400, reason)
    } else if is_sip_version(version) {
        (505, "Version Not Supported")
    } else {
        return None;
    };
    let mut out = BytesMut::with_capacity(256);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    let mut top_via = None;
    for header in HeaderLines::to_end_of(data, after_request_line) {
        if header.is_orphan_continuation(data) {
            continue;
        }
        let Some((name, colon)) = header.name(data) else {
            continue;
        };
        if !is_copied(name) {
            continue;
        }
        let line = header.joined(data, header.start);
        let colon = colon - header.start;
        let printable = line
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
        if name == HeaderName::Via && top_via.is_none() {
            // The first value of the first Via line is the top Via (an empty line has none).
            let value = Span::new(colon + 1, line.len());
            top_via = Some(
                printable
                    && super::lex::split_list(&line, value)
                        .next()
                        .is_some_and(|v| Via::parse(&line, v).is_ok()),
            );
        }
        if printable {
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
    }
    if top_via != Some(true) {
        return None;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Encoded {
        head: out.freeze(),
        body: Bytes::new(),
    })
}

/// RFC 3261 §7.1: `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`.
fn is_sip_version(text: &[u8]) -> bool {
    let Some(number) = text.strip_prefix(b"SIP/") else {
        return false;
    };
    let mut parts = number.split(|&b| b == b'.');
    let digits =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_copies_dialog_headers_and_tags_to() {
        let req = Message::parse(Bytes::from_static(
            b"INVITE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv: SIP/2.0/UDP g\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
              Contact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let r = response(&req, 404, "Not Found", "rb1");
        assert_eq!(
            &r.head[..],
            &b"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv: SIP/2.0/UDP g\r\n\
               From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=rb1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
               Content-Length: 0\r\n\r\n"[..]
        );
    }

    /// RFC 3261 §18.2.1, RFC 3581 §4: the answer carries received/rport on the top Via as a
    /// request forwarded with them would, the rest of its line and the values already there
    /// replaced; extra headers come after the copied ones.
    #[test]
    fn build_records_the_source_and_adds_headers() {
        let req = Message::parse(Bytes::from_static(
            b"OPTIONS sip:b@c SIP/2.0\r\nv: SIP/2.0/UDP h;rport=1;branch=z9hG4bK1;received=192.0.2.9, \
              SIP/2.0/UDP g\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\n\
              CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let source: SocketAddr = "[2001:db8::5]:5062".parse().unwrap();
        let answer = Response {
            code: 420,
            reason: "Bad Extension",
            to_tag: "t",
            via_source: Some(source),
            headers: &[("Unsupported", b"foo, bar"), ("Retry-After", b"5")],
        };
        let built = build(&req, &answer);
        assert_eq!(
            &built.head[..],
            &b"SIP/2.0 420 Bad Extension\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\
               ;received=2001:db8::5;rport=5062, SIP/2.0/UDP g\r\nFrom: <sip:a@b>;tag=1\r\n\
               To: <sip:b@c>;tag=t\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nUnsupported: foo, bar\r\n\
               Retry-After: 5\r\nContent-Length: 0\r\n\r\n"[..]
        );
        // The same as recording the source on the request first, as a forwarded request has it.
        let mut ed = super::super::Editor::new(&req);
        ed.set_via_source(&req.top_via().unwrap(), source.ip(), source.port());
        let stamped = Message::parse(ed.finish().to_contiguous()).unwrap();
        let plain = Response {
            via_source: None,
            headers: &[],
            ..answer
        };
        let via_line = |e: &Encoded| e.head.split(|&b| b == b'\n').nth(1).map(<[u8]>::to_vec);
        assert_eq!(via_line(&build(&stamped, &plain)), via_line(&built));
    }

    const INVITE: &[u8] = b"INVITE sip:b@192.0.2.9:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKrb1, SIP/2.0/TCP 192.0.2.1;rport=5\r\n\
        Route: <sip:hop.example.com;lr>\r\nMax-Forwards: 69\r\nFrom: <sip:a@x>;tag=f\r\n\
        To: <sip:b@y>\r\nCall-ID: c9\r\nCSeq: 4 INVITE\r\nContact: <sip:a@192.0.2.1>\r\n\
        Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0";

    /// RFC 3261 §17.1.1.3 and §9.1: the ACK of a non-2xx and a CANCEL carry the request's
    /// top Via alone, its Route set, and the numbers that match them to its transaction.
    #[test]
    fn ack_and_cancel_belong_to_the_transaction() {
        let invite = Message::parse(Bytes::from_static(INVITE)).unwrap();
        let answer = response(&invite, 486, "Busy Here", "t1");
        let answer = Message::parse(answer.to_contiguous()).unwrap();
        let ack = ack_for(&invite, &answer);
        assert_eq!(
            &ack.head[..],
            &b"ACK sip:b@192.0.2.9:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKrb1\r\n\
               Route: <sip:hop.example.com;lr>\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:b@y>;tag=t1\r\n\
               Call-ID: c9\r\nCSeq: 4 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"[..]
        );
        let cancel = cancel_for(&invite);
        assert_eq!(
            &cancel.head[..],
            &b"CANCEL sip:b@192.0.2.9:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKrb1\r\n\
               Route: <sip:hop.example.com;lr>\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:b@y>\r\n\
               Call-ID: c9\r\nCSeq: 4 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"[..]
        );
        for built in [ack, cancel] {
            let parsed = Message::parse(built.to_contiguous()).unwrap();
            parsed.validate_request().unwrap();
        }
        let trying = response(&invite, 100, "Trying", "t1");
        assert!(!String::from_utf8_lossy(&trying.head).contains("tag=t1"));
    }

    #[test]
    fn salvage_needs_a_request_line_and_a_via() {
        let bad = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\nbroken line\r\n\r\n";
        let r = salvage_bad_request(bad, "Bad Request").unwrap();
        assert_eq!(
            &r.head[..],
            &b"SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\nContent-Length: 0\r\n\r\n"[..]
        );
        for hopeless in [
            &b"\x00\x01garbage"[..],
            // The Via must parse (the fuzzed inputs in tests/torture/crashes/).
            b"E v SIP/2.0\nV:\n",
            b"R \x00 SIP/2.0\n V:\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: ,\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\xff\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"OPTIONS sip:a@b HTTP/1.1\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
            b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        ] {
            assert!(
                salvage_bad_request(hopeless, "Bad Request").is_none(),
                "{}",
                String::from_utf8_lossy(hopeless)
            );
        }
    }

    /// What is salvaged must itself parse as the answer it is, with a readable top Via.
    fn salvaged(data: &[u8], code: u16) -> Message {
        let answer = salvage_bad_request(data, "Bad Request").unwrap();
        let parsed = Message::parse(answer.to_contiguous()).unwrap();
        assert_eq!(parsed.status_code(), Some(code));
        assert!(parsed.top_via().is_ok());
        parsed
    }

    /// RFC 3261 §7.3.1: a folded header is one header; its continuation is joined with one SP,
    /// not cut off nor copied as a header line of its own.
    #[test]
    fn salvage_joins_folded_lines() {
        let folded = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP\r\n 192.0.2.1;branch=z9hG4bK1\r\n\
                       Subject: x\r\n\t folded subject\r\nCSeq: 1\r\n\tOPTIONS\r\nbroken\r\n\r\n";
        let r = salvaged(folded, 400);
        assert_eq!(
            &r.bytes()[..],
            &b"SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
               CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"[..]
        );
        // Bare LF line ends and CRLFs before the request line.
        let r = salvaged(
            b"\r\nOPTIONS sip:a@b SIP/2.0\nv: SIP/2.0/TCP h:5070\n ;branch=z9hG4bK2\n\n",
            400,
        );
        let via = r.top_via().unwrap();
        assert_eq!(via.branch(r.bytes()), Some(&b"z9hG4bK2"[..]));
    }

    /// RFC 3261 §21.5.6, RFC 4475 §3.1.2.16 (badvers): another SIP version is answered 505,
    /// whatever reason the caller had in mind for a 400.
    #[test]
    fn salvage_answers_505_to_another_sip_version() {
        let badvers = b"OPTIONS sip:t.watson@example.org SIP/7.0\r\n\
            Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\nMax-Forwards:     70\r\n\
            CSeq:    1 OPTIONS\r\nl: 0\r\n\r\n";
        let r = salvaged(badvers, 505);
        assert!(r
            .bytes()
            .starts_with(b"SIP/2.0 505 Version Not Supported\r\n"));
        assert!(is_sip_version(b"SIP/10.01"));
        for not in [
            &b"SIP/2"[..],
            b"SIP/.0",
            b"SIP/2.0.1",
            b"SIP/a.b",
            b"sip/2.0",
            b"SIP/2.0 ",
        ] {
            assert!(!is_sip_version(not), "{}", String::from_utf8_lossy(not));
        }
    }
}

//! Responses the proxy sends itself (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied
//! from the request, a To tag added, no body.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::message::{HeaderName, Message};
use super::Encoded;

/// The header lines a response copies from its request.
fn is_copied(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// Builds a final response to `request`. `to_tag` is added when the To header has none.
#[must_use]
pub fn response(request: &Message, code: u16, reason: &str, to_tag: &str) -> Encoded {
    let buf = request.bytes();
    let mut out = BytesMut::with_capacity(256);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for field in request.headers().iter().filter(|h| is_copied(h.name)) {
        if field.name == HeaderName::To
            && request.to().is_ok_and(|to| to.param(buf, "tag").is_none())
        {
            // RFC 3261 §8.2.6.2: a UAS adds a To tag to its final responses.
            out.extend_from_slice(&buf[field.line.start()..field.value.end()]);
            let _ = write!(out, ";tag={to_tag}\r\n");
        } else {
            out.extend_from_slice(&buf[field.line.range()]);
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Encoded {
        head: out.freeze(),
        body: Bytes::new(),
    }
}

/// For a request too broken to parse whole: when its request line and a Via can still be read,
/// a `400` carrying the lines a response needs; `None` otherwise (the caller drops it).
#[must_use]
pub fn salvage_bad_request(data: &[u8], reason: &str) -> Option<Encoded> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let mut words = request_line.split(|&b| b == b' ');
    let (method, uri, version) = (words.next()?, words.next()?, words.next()?);
    if method.is_empty()
        || !method.iter().all(|&b| super::header::is_token_char(b))
        || uri.is_empty()
        || version != b"SIP/2.0"
        || words.next().is_some()
        || method == b"ACK"
    {
        return None;
    }
    let mut out = BytesMut::with_capacity(256);
    let _ = write!(out, "SIP/2.0 400 {reason}\r\n");
    let mut has_via = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::classify(line[..colon].trim_ascii());
        if is_copied(name) && line.is_ascii() && !line.iter().any(u8::is_ascii_control) {
            has_via |= name == HeaderName::Via;
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !has_via {
        return None;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Encoded {
        head: out.freeze(),
        body: Bytes::new(),
    })
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
            b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
            b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        ] {
            assert!(salvage_bad_request(hopeless, "Bad Request").is_none());
        }
    }
}

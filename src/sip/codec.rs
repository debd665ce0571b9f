//! Stream framing (TCP, TLS): one SIP message at a time out of a byte stream, by
//! Content-Length (RFC 3261 §18.3), with the CRLF keep-alives of RFC 5626 §3.5.1.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use super::header::HeaderName;
use super::lex::parse_u32;
use super::lines::{self, HeaderLines};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Bytes),
    /// A double CRLF: the peer asks for a single CRLF back.
    Ping,
    /// A lone CRLF: the answer to our ping, or padding; nothing to do.
    Pong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("message on a stream without Content-Length")]
    MissingContentLength,
    #[error("malformed Content-Length")]
    BadContentLength,
}

/// Takes the next frame off the front of `buf`; `Ok(None)` when more bytes are needed. The size
/// cap is checked before more is buffered, so a peer cannot make a connection hold more than
/// `max` bytes of one message.
pub fn frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.starts_with(b"\r\n\r\n") {
        buf.advance(4);
        return Ok(Some(Frame::Ping));
    }
    if buf.starts_with(b"\r\n") {
        if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            // Could still become a ping.
            return Ok(None);
        }
        buf.advance(2);
        return Ok(Some(Frame::Pong));
    }
    let Some(head_end) = memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > max {
            Err(FrameError::TooLarge(max))
        } else {
            Ok(None)
        };
    };
    let body_start = head_end + 4;
    let length = content_length(&buf[..body_start])?.ok_or(FrameError::MissingContentLength)?;
    let total = body_start + length;
    if total > max {
        return Err(FrameError::TooLarge(max));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame::Message(buf.split_to(total).freeze())))
}

/// Reads `Content-Length` (or compact `l`) from a head (up to and including its blank line),
/// whose lines are read as `Message::parse` reads them (`lines`). As `Message::content_length`
/// decides: the same value repeated is one length, different values are a framing error
/// (RFC 3261 §7.3.1: Content-Length is not a list; RFC 4475 §3.3.9: over a stream the
/// connection is closed), never the first one picked. Other lines are not checked here: that
/// is the parser's work.
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some((_, after_start_line)) = lines::line_end(head, lines::skip_leading_line_ends(head))
    else {
        return Ok(None);
    };
    let mut found = None;
    for line in HeaderLines::new(head, after_start_line) {
        if line.is_orphan_continuation(head) {
            continue;
        }
        let Some((HeaderName::ContentLength, colon)) = line.name(head) else {
            continue;
        };
        let length =
            parse_u32(&line.joined(head, colon + 1)).ok_or(FrameError::BadContentLength)?;
        if found.is_some_and(|first| first != length) {
            return Err(FrameError::BadContentLength);
        }
        found = Some(length);
    }
    Ok(found.map(|n| n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;
    use proptest::prelude::*;

    const A: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";
    const B: &[u8] = b"SIP/2.0 200 OK\r\ncontent-LENGTH :\r\n 0\r\n\r\n";

    fn all(mut buf: BytesMut) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = frame(&mut buf, 1000)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn messages_and_keepalives() {
        let mut input = BytesMut::new();
        input.extend_from_slice(b"\r\n\r\n");
        input.extend_from_slice(A);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(B);
        assert_eq!(
            all(input).unwrap(),
            vec![
                Frame::Ping,
                Frame::Message(Bytes::from_static(A)),
                Frame::Pong,
                Frame::Message(Bytes::from_static(B)),
            ]
        );
    }

    #[test]
    fn incomplete_input_waits() {
        for cut in 0..A.len() {
            let mut buf = BytesMut::from(&A[..cut]);
            assert_eq!(frame(&mut buf, 1000), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn errors() {
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"[..]);
        assert_eq!(frame(&mut buf, 1000), Err(FrameError::MissingContentLength));
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(frame(&mut buf, 1000), Err(FrameError::BadContentLength));
        let mut buf =
            BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2000\r\n\r\n"[..]);
        assert_eq!(frame(&mut buf, 1000), Err(FrameError::TooLarge(1000)));
        let mut buf = BytesMut::from(&vec![b'x'; 1001][..]);
        assert_eq!(frame(&mut buf, 1000), Err(FrameError::TooLarge(1000)));
    }

    /// RFC 4475 §3.3.9 (mcl01): conflicting Content-Length values are a framing error; the
    /// same value twice is one length.
    #[test]
    fn repeated_content_length() {
        let head =
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nMax-Forwards: 60\r\nl: 5\r\n\r\n";
        let mut buf = BytesMut::from(format!("{head}There's no way").as_bytes());
        assert_eq!(frame(&mut buf, 1000), Err(FrameError::BadContentLength));
        let msg = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl:\r\n 3\r\n\r\nabc";
        let mut buf = BytesMut::from(msg.as_bytes());
        assert_eq!(
            frame(&mut buf, 1000),
            Ok(Some(Frame::Message(Bytes::from_static(msg.as_bytes()))))
        );
    }

    /// A continuation line (RFC 3261 §7.3.1) belongs to the header above it: ` l: 9` folded
    /// into a Subject is no Content-Length, as `Message::parse` reads it.
    #[test]
    fn folded_lines_are_not_headers() {
        let msg = "OPTIONS sip:a@b SIP/2.0\r\nSubject: x\r\n l: 9\r\nContent-Length: 3\r\n\r\nabc";
        let mut buf = BytesMut::from(msg.as_bytes());
        assert_eq!(
            frame(&mut buf, 1000),
            Ok(Some(Frame::Message(Bytes::from_static(msg.as_bytes()))))
        );
    }

    proptest! {
        #[test]
        fn any_split_frames_the_same(split in 0usize..(A.len() + B.len())) {
            let stream = [A, B].concat();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = frame(&mut buf, 1000).unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, vec![Frame::Message(Bytes::from_static(A)), Frame::Message(Bytes::from_static(B))]);
        }

        /// The framer and the parser read the same lines (`lines`): when the parser finds a
        /// Content-Length in a framed message, it is the length the framer cut at.
        #[test]
        fn framer_and_parser_agree_on_the_length(
            lines in proptest::collection::vec(proptest::sample::select(vec![
                "l: 3\r\n", "Content-Length: 3\r\n", "content-length :\r\n 3\r\n",
                "l: 1\r\n", "L:\r\n\t1\r\n", "l: 1\r\n 2\r\n", "Subject: x\r\n",
                " l: 9\r\n", "\tfolded\r\n", "Content-Length\r\n : 3\r\n", "broken\r\n",
                "\n", "X: y\n",
            ]), 0..6),
        ) {
            let message = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\nabcdef", lines.concat());
            let mut buf = BytesMut::from(message.as_bytes());
            if let Ok(Some(Frame::Message(framed))) = frame(&mut buf, 1000) {
                let body_start = memmem::find(&framed, b"\r\n\r\n").unwrap_or_default() + 4;
                if let Ok(parsed) = Message::parse(framed.clone()) {
                    if parsed.has_content_length() && parsed.body_start() == body_start {
                        prop_assert_eq!(parsed.body_start() + parsed.body().len(), framed.len());
                    }
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = all(BytesMut::from(&bytes[..]));
        }
    }
}

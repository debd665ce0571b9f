//! Editing a parsed message: edits are recorded as replacements of spans of the original head
//! and applied in one pass into a new head; the body is shared, never copied.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::HeaderName;
use super::header::{NameAddr, Via};
use super::lex::split_list;
use super::message::Message;
use super::text::{put_decimal, put_ip};
use super::{Encoded, ParseError, Span};

/// The `received` and `rport` parameters of `via` (each with its `;`), which recording where a
/// message came from replaces; in the order they are written.
pub(super) fn via_source_params(buf: &[u8], via: &Via) -> [Option<Span>; 2] {
    let [received, rport] = ["received", "rport"].map(|name| via.param(buf, name).map(|p| p.span));
    match (received, rport) {
        (Some(a), Some(b)) if b.start() < a.start() => [rport, received],
        _ => [received, rport],
    }
}

/// Writes the Via parameters that record where a message came from (RFC 3261 §18.2.1,
/// RFC 3581 §4). `received` holds a bare address, IPv6 without brackets (RFC 3261 §20.42,
/// RFC 5118 §4.5).
pub(super) fn put_via_source(out: &mut BytesMut, ip: IpAddr, port: u16) {
    out.extend_from_slice(b";received=");
    put_ip(out, ip);
    out.extend_from_slice(b";rport=");
    put_decimal(out, u32::from(port));
}

#[derive(Clone, Copy, Debug)]
struct Edit {
    start: usize,
    end: usize,
    /// Replacement text: a range of `Editor::text`.
    text_start: usize,
    text_end: usize,
}

/// Collects edits to one message and writes the result with [`Editor::finish`].
pub struct Editor<'m> {
    msg: &'m Message,
    edits: Vec<Edit>,
    text: BytesMut,
    /// A new body ([`Editor::replace_body`]); `None` keeps the message's.
    body: Option<Bytes>,
}

impl<'m> Editor<'m> {
    #[must_use]
    pub fn new(msg: &'m Message) -> Editor<'m> {
        Editor {
            msg,
            edits: Vec::with_capacity(8),
            text: BytesMut::with_capacity(512),
            body: None,
        }
    }

    #[must_use]
    pub fn message(&self) -> &'m Message {
        self.msg
    }

    /// Replaces `span` with what `write` appends to the buffer it is given.
    pub fn replace_with(&mut self, span: Span, write: impl FnOnce(&mut BytesMut)) {
        let text_start = self.text.len();
        write(&mut self.text);
        self.edits.push(Edit {
            start: span.start(),
            end: span.end(),
            text_start,
            text_end: self.text.len(),
        });
    }

    pub fn replace(&mut self, span: Span, bytes: &[u8]) {
        self.replace_with(span, |out| out.extend_from_slice(bytes));
    }

    pub fn insert_with(&mut self, at: usize, write: impl FnOnce(&mut BytesMut)) {
        self.replace_with(Span::new(at, at), write);
    }

    pub fn remove(&mut self, span: Span) {
        self.replace(span, b"");
    }

    /// Adds a header line before the first line of `before` (or at the end of the head).
    pub fn insert_header(
        &mut self,
        before: HeaderName,
        name: &str,
        write_value: impl FnOnce(&mut BytesMut),
    ) {
        let at = self
            .msg
            .first(before)
            .map_or(self.msg.head_end(), |h| h.line.start());
        self.insert_with(at, |out| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            write_value(out);
            out.extend_from_slice(b"\r\n");
        });
    }

    /// Pushes a Via on top (RFC 3261 §16.6 step 8). `write_value` writes the value only.
    pub fn push_via(&mut self, write_value: impl FnOnce(&mut BytesMut)) {
        self.insert_header(HeaderName::Via, "Via", write_value);
    }

    /// Removes the top Via value: its whole line, or just it when the line holds more values.
    pub fn pop_via(&mut self) -> Result<(), ParseError> {
        self.msg.top_via()?;
        self.pop_values(HeaderName::Via, 1)
    }

    /// Records where a request came from in its top Via (RFC 3261 §18.2.1, RFC 3581 §4): sets
    /// `received` and fills `rport`, replacing values already there. `rport` is filled even when
    /// the client did not ask (as Kamailio's `force_rport`), so that responses find NATed clients
    /// and the exact connection of stream clients.
    pub fn set_via_source(&mut self, via: &Via, ip: IpAddr, port: u16) {
        for span in via_source_params(self.msg.bytes(), via)
            .into_iter()
            .flatten()
        {
            self.remove(span);
        }
        self.insert_with(via.span.end(), |out| put_via_source(out, ip, port));
    }

    /// Sets Max-Forwards, adding the header when missing (RFC 3261 §16.6 step 3).
    pub fn set_max_forwards(&mut self, value: u32) {
        match self.msg.first(HeaderName::MaxForwards) {
            Some(h) => {
                let span = h.value;
                self.replace_with(span, |out| put_decimal(out, value));
            }
            None => self.insert_with(self.msg.head_end(), |out| {
                out.extend_from_slice(b"Max-Forwards: ");
                put_decimal(out, value);
                out.extend_from_slice(b"\r\n");
            }),
        }
    }

    /// Adds `Content-Length` when a datagram without one goes onto a stream (RFC 3261 §18.3).
    pub fn ensure_content_length(&mut self) {
        if !self.msg.has_content_length() {
            // Bodies are bounded by -max-message, far below 4 GiB.
            let length = u32::try_from(self.msg.body().len()).unwrap_or(u32::MAX);
            self.insert_with(self.msg.head_end(), |out| {
                out.extend_from_slice(b"Content-Length: ");
                put_decimal(out, length);
                out.extend_from_slice(b"\r\n");
            });
        }
    }

    /// Replaces the body, and the Content-Length with its length (RFC 3261 §20.14): an SDP
    /// rewritten by the media relay. The Content-Type stays: the new body is of the same type.
    pub fn replace_body(&mut self, body: Bytes) {
        // Bodies are bounded by -max-message and by what the media relay sends, far below 4 GiB.
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        match self.msg.first(HeaderName::ContentLength) {
            Some(field) => self.replace_with(field.value, |out| put_decimal(out, length)),
            None => self.insert_with(self.msg.head_end(), |out| {
                out.extend_from_slice(b"Content-Length: ");
                put_decimal(out, length);
                out.extend_from_slice(b"\r\n");
            }),
        }
        self.body = Some(body);
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<(), ParseError> {
        let span = self.msg.request_uri().ok_or(ParseError::BadStartLine)?;
        self.replace_with(span, write);
        Ok(())
    }

    /// Replaces the URI of a Contact/Route value. An `addr-spec` without `<>` gets them, because
    /// the new URI may carry parameters that would otherwise read as header parameters
    /// (RFC 3261 §20.10).
    pub fn replace_name_addr_uri(&mut self, value: &NameAddr, write: impl FnOnce(&mut BytesMut)) {
        let bracketed = value.bracketed;
        self.replace_with(value.uri, |out| {
            if !bracketed {
                out.put_u8(b'<');
            }
            write(out);
            if !bracketed {
                out.put_u8(b'>');
            }
        });
    }

    /// Removes the first `count` Route values (RFC 3261 §16.4: each names this proxy).
    pub fn pop_routes(&mut self, count: usize) -> Result<(), ParseError> {
        self.pop_values(HeaderName::Route, count)
    }

    /// Removes the first `count` values of a list header (RFC 3261 §7.3.1): each line whose
    /// values all go, and on the line where one stays, everything up to it. Lines with no value
    /// (`Via:`) are skipped, as `Message::values` skips them, so no line other than the ones
    /// that hold the values goes.
    fn pop_values(&mut self, name: HeaderName, count: usize) -> Result<(), ParseError> {
        let buf = self.msg.bytes();
        let mut left = count;
        for field in self.msg.fields(name) {
            if left == 0 {
                break;
            }
            let in_line = split_list(buf, field.value).count();
            if in_line <= left {
                if in_line > 0 {
                    self.remove(field.line);
                }
                left -= in_line;
                continue;
            }
            let mut values = split_list(buf, field.value);
            if let (Some(first), Some(stays)) = (values.next(), values.nth(left - 1)) {
                self.remove(Span::new(first.start(), stays.start()));
            }
            left = 0;
        }
        if left > 0 {
            return Err(ParseError::MissingHeader(name));
        }
        Ok(())
    }

    /// Writes the edited head; the body is shared with the original buffer.
    #[must_use]
    pub fn finish(mut self) -> Encoded {
        let buf = self.msg.bytes();
        let head_start = self.msg.start_line().start();
        let body = self.body.take().unwrap_or_else(|| self.msg.body());
        let body_start = self.msg.body_start();
        // By start, then end: insertions at an offset come before a replacement or removal that
        // starts there (a route-list pushed where the Route naming us is popped, RFC 3261 §16.4
        // and §16.6 step 6), so they are written and the removal then skips what it covers. The
        // sort is stable: insertions at one offset keep the order they were made in.
        self.edits.sort_by_key(|e| (e.start, e.end));
        let mut out = BytesMut::with_capacity(body_start - head_start + self.text.len());
        let mut pos = head_start;
        for edit in &self.edits {
            // Edits made by the proxy never overlap; should one reach into what an earlier one
            // replaced, only the rest of its span is replaced. No input may make this panic.
            if edit.start > pos {
                out.extend_from_slice(&buf[pos..edit.start]);
            }
            out.extend_from_slice(&self.text[edit.text_start..edit.text_end]);
            pos = pos.max(edit.end);
        }
        out.extend_from_slice(&buf[pos..body_start]);
        Encoded {
            head: out.freeze(),
            body,
        }
    }
}

//! One pass over a message records the start line and every header line as spans into the
//! original buffer; typed values are read from those spans only when asked for.

use std::cell::OnceCell;

use bytes::Bytes;
use memchr::memchr;

use super::header::{CSeq, HeaderName, NameAddr, Via};
use super::lex;
use super::lines::{self, HeaderLines, LogicalLine};
use super::{ParseError, Span};

/// Upper bound on header lines; keeps the work per message bounded whatever a peer sends.
const MAX_HEADERS: usize = 256;

/// A header line: its name, its (trimmed) value and the whole line including the line end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderField {
    pub name: HeaderName,
    pub value: Span,
    pub line: Span,
}

/// The request methods the proxy treats specially; the rest are forwarded as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Message,
    /// RFC 3311: changes a session's media before or after it is answered.
    Update,
    Other,
}

impl Method {
    #[must_use]
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            _ => Method::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
    },
    Response {
        code: u16,
    },
}

/// A parsed SIP message over a shared buffer. Cloning is cheap (the buffer is reference counted).
#[derive(Clone, Debug)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    /// The start line including its line end.
    start_line: Span,
    headers: Vec<HeaderField>,
    /// Offset of the blank line that ends the head.
    head_end: usize,
    body: Span,
    has_content_length: bool,
    /// Validation, routing and rewriting each need the top Via: it is read once.
    top_via: OnceCell<Result<Via, ParseError>>,
    /// Likewise the CSeq (number, method): validation, the branch, response routing.
    cseq: OnceCell<Result<(u32, Span), ParseError>>,
}

impl Message {
    /// Parses one message. Leading CRLFs are skipped (RFC 3261 §7.5). For datagrams the body is
    /// `Content-Length` bytes (extra bytes dropped, RFC 3261 §18.3) or, without the header, the
    /// rest of the datagram.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        Message::parse_with::<MAX_HEADERS>(buf)
    }

    /// Parses a message Roundabout wrote itself (a request as it forwarded it, to retransmit,
    /// ACK, CANCEL or answer for): without the cap on header lines, which would count the Via,
    /// Max-Forwards and Routes Roundabout added against the sender, and make a request with
    /// exactly as many lines as allowed impossible to ACK or cancel.
    pub fn parse_own(buf: Bytes) -> Result<Message, ParseError> {
        Message::parse_with::<{ usize::MAX }>(buf)
    }

    fn parse_with<const MAX_LINES: usize>(buf: Bytes) -> Result<Message, ParseError> {
        let bytes = &buf[..];
        let pos = lines::skip_leading_line_ends(bytes);
        let (start_end, next) = lines::line_end(bytes, pos).ok_or(ParseError::Truncated)?;
        let start_line = Span::new(pos, next);
        let start = parse_start_line(bytes, Span::new(pos, start_end))?;

        let mut headers: Vec<HeaderField> = Vec::with_capacity(16);
        let mut lines = HeaderLines::new(bytes, next);
        for line in lines.by_ref() {
            // A continuation line before any header (RFC 3261 §7.3.1) is no header line either:
            // it starts with white space, not a name, and `parse_header_line` refuses it.
            if headers.len() == MAX_LINES {
                return Err(ParseError::TooManyHeaders);
            }
            headers.push(parse_header_line(bytes, line)?);
        }
        let (head_end, body_start) = lines.head_end().ok_or(ParseError::Truncated)?;

        let mut message = Message {
            buf,
            start,
            start_line,
            headers,
            head_end,
            body: Span::new(body_start, body_start),
            has_content_length: false,
            top_via: OnceCell::new(),
            cseq: OnceCell::new(),
        };
        let available = message.buf.len() - body_start;
        let body_len = match message.content_length()? {
            Some(length) if length > available => return Err(ParseError::BodyTruncated),
            Some(length) => {
                message.has_content_length = true;
                length
            }
            None => available,
        };
        message.body = Span::new(body_start, body_start + body_len);
        Ok(message)
    }

    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The bytes a span covers.
    #[must_use]
    pub fn slice(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    #[must_use]
    pub fn start(&self) -> StartLine {
        self.start
    }

    #[must_use]
    pub fn start_line(&self) -> Span {
        self.start_line
    }

    #[must_use]
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    #[must_use]
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The method token as written (requests only).
    #[must_use]
    pub fn method_token(&self) -> &[u8] {
        match self.start {
            StartLine::Request { method_span, .. } => self.slice(method_span),
            StartLine::Response { .. } => b"",
        }
    }

    #[must_use]
    pub fn request_uri(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    #[must_use]
    pub fn status_code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    #[must_use]
    pub fn headers(&self) -> &[HeaderField] {
        &self.headers
    }

    /// Offset where the blank line ending the head starts (new header lines go here).
    #[must_use]
    pub fn head_end(&self) -> usize {
        self.head_end
    }

    #[must_use]
    pub fn body(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }

    /// Offset of the first body byte (just after the blank line).
    #[must_use]
    pub fn body_start(&self) -> usize {
        self.body.start()
    }

    #[must_use]
    pub fn has_content_length(&self) -> bool {
        self.has_content_length
    }

    pub fn fields(&self, name: HeaderName) -> impl Iterator<Item = &HeaderField> + '_ {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The value of the first header named `full` or `compact` (RFC 3261 §7.3.3), among those
    /// the proxy does not classify (`Content-Type`, say): a scan of the header lines, for the
    /// paths that need one, never the forwarding path.
    #[must_use]
    pub fn other_header(&self, full: &str, compact: u8) -> Option<Span> {
        self.headers
            .iter()
            .filter(|field| field.name == HeaderName::Other)
            .find(|field| {
                let line = &self.buf[field.line.range()];
                let name_end = line
                    .iter()
                    .position(|&b| !lex::is_token_char(b))
                    .unwrap_or(line.len());
                let name = &line[..name_end];
                name.eq_ignore_ascii_case(full.as_bytes())
                    || (name.len() == 1 && name[0].eq_ignore_ascii_case(&compact))
            })
            .map(|field| field.value)
    }

    #[must_use]
    pub fn first(&self, name: HeaderName) -> Option<&HeaderField> {
        self.fields(name).next()
    }

    /// Every value of a comma-separated header, in order, across all its lines (RFC 3261 §7.3.1).
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = Span> + '_ {
        self.fields(name)
            .flat_map(move |h| lex::split_list(&self.buf, h.value))
    }

    /// The Via values, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via, ParseError>> + '_ {
        self.values(HeaderName::Via)
            .map(move |span| Via::parse(&self.buf, span))
    }

    pub fn top_via(&self) -> Result<Via, ParseError> {
        *self.top_via.get_or_init(|| {
            self.vias()
                .next()
                .ok_or(ParseError::MissingHeader(HeaderName::Via))?
        })
    }

    /// The Via values below the top one, in order. The top one is skipped unread: it is
    /// `top_via`'s, read once.
    pub fn lower_vias(&self) -> impl Iterator<Item = Result<Via, ParseError>> + '_ {
        self.values(HeaderName::Via)
            .skip(1)
            .map(move |span| Via::parse(&self.buf, span))
    }

    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.first(HeaderName::MaxForwards) {
            None => Ok(None),
            Some(h) => lex::parse_u32(self.slice(h.value))
                .map(Some)
                .ok_or(ParseError::BadHeaderValue(HeaderName::MaxForwards)),
        }
    }

    /// The Content-Length. Content-Length is not a list (RFC 3261 §7.3.1, §20.14): when it
    /// appears more than once with different values the message has no one length, so it is
    /// malformed (RFC 4475 §3.3.9). Repeats of the same value are tolerated, as HTTP does
    /// (RFC 9110 §8.6), and the framer (`codec`) decides the same way.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let bad = ParseError::BadHeaderValue(HeaderName::ContentLength);
        let mut length = None;
        for h in self.fields(HeaderName::ContentLength) {
            let n = lex::parse_u32(self.slice(h.value)).ok_or(bad)?;
            if length.is_some_and(|first| first != n) {
                return Err(bad);
            }
            length = Some(n);
        }
        Ok(length.map(|n| n as usize))
    }

    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        let (number, method) = (*self.cseq.get_or_init(|| {
            let h = self
                .first(HeaderName::CSeq)
                .ok_or(ParseError::MissingHeader(HeaderName::CSeq))?;
            CSeq::parse_spans(&self.buf, h.value)
        }))?;
        Ok(CSeq {
            number,
            method: self.slice(method),
        })
    }

    pub fn call_id(&self) -> Result<&[u8], ParseError> {
        self.first(HeaderName::CallId)
            .map(|h| self.slice(h.value))
            .filter(|v| !v.is_empty())
            .ok_or(ParseError::MissingHeader(HeaderName::CallId))
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        let h = self
            .first(HeaderName::To)
            .ok_or(ParseError::MissingHeader(HeaderName::To))?;
        NameAddr::parse(&self.buf, h.value, HeaderName::To)
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        let h = self
            .first(HeaderName::From)
            .ok_or(ParseError::MissingHeader(HeaderName::From))?;
        NameAddr::parse(&self.buf, h.value, HeaderName::From)
    }

    /// Contact values, except the `*` of a REGISTER that removes every binding.
    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr, ParseError>> + '_ {
        self.values(HeaderName::Contact)
            .filter(move |span| self.slice(*span) != b"*")
            .map(move |span| NameAddr::parse(&self.buf, span, HeaderName::Contact))
    }

    /// `Contact: *` (RFC 3261 §10.2.2).
    #[must_use]
    pub fn has_wildcard_contact(&self) -> bool {
        self.values(HeaderName::Contact)
            .any(|span| self.slice(span) == b"*")
    }

    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr, ParseError>> + '_ {
        self.values(HeaderName::Route)
            .map(move |span| NameAddr::parse(&self.buf, span, HeaderName::Route))
    }

    pub fn expires(&self) -> Option<u32> {
        self.first(HeaderName::Expires)
            .and_then(|h| lex::parse_u32(self.slice(h.value)))
    }

    /// Checks the headers every request needs before it is forwarded (RFC 3261 §8.1.1, §16.3
    /// step 1): every Via value readable, exactly one Call-ID, CSeq, From and To, at most one
    /// Max-Forwards (none of them is a list, RFC 3261 §7.3.1; RFC 4475 §3.1.2.1, §3.3.8).
    pub fn validate_request(&self) -> Result<(), ParseError> {
        // Responses travel back along every Via (RFC 3261 §18.2.2, §16.7 step 3), so a broken
        // one further down is as fatal as a broken top one. Each names SIP/2.0 (§8.1.1.7).
        for via in std::iter::once(self.top_via()).chain(self.lower_vias()) {
            if !via?.is_sip_2_0(&self.buf) {
                return Err(ParseError::BadHeaderValue(HeaderName::Via));
            }
        }
        self.call_id()?;
        self.at_most_one(HeaderName::CallId)?;
        let cseq = self.cseq()?;
        self.at_most_one(HeaderName::CSeq)?;
        if cseq.method != self.method_token() {
            return Err(ParseError::BadHeaderValue(HeaderName::CSeq));
        }
        self.from()?;
        self.at_most_one(HeaderName::From)?;
        self.to()?;
        self.at_most_one(HeaderName::To)?;
        self.max_forwards()?;
        self.at_most_one(HeaderName::MaxForwards)?;
        Ok(())
    }

    fn at_most_one(&self, name: HeaderName) -> Result<(), ParseError> {
        match self.fields(name).nth(1) {
            Some(_) => Err(ParseError::RepeatedHeader(name)),
            None => Ok(()),
        }
    }
}

fn trim_end(bytes: &[u8], span: Span) -> Span {
    let mut end = span.end();
    while end > span.start() && matches!(bytes[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    Span::new(span.start(), end)
}

fn parse_start_line(bytes: &[u8], line: Span) -> Result<StartLine, ParseError> {
    let text = &bytes[line.range()];
    if let Some(rest) = text.strip_prefix(b"SIP/2.0 ") {
        let code = rest
            .get(..3)
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .filter(|_| rest.len() == 3 || rest[3] == b' ')
            .and_then(lex::parse_u32)
            .filter(|c| (100..700).contains(c))
            .ok_or(ParseError::BadStartLine)?;
        return Ok(StartLine::Response { code: code as u16 });
    }
    let sp1 = memchr(b' ', text).ok_or(ParseError::BadStartLine)?;
    let sp2 = sp1 + 1 + memchr(b' ', &text[sp1 + 1..]).ok_or(ParseError::BadStartLine)?;
    let method = &text[..sp1];
    if method.is_empty() || !method.iter().all(|&b| lex::is_token_char(b)) {
        return Err(ParseError::BadStartLine);
    }
    if &text[sp2 + 1..] != b"SIP/2.0" || sp2 == sp1 + 1 {
        return Err(ParseError::BadStartLine);
    }
    let base = line.start();
    Ok(StartLine::Request {
        method: Method::from_token(method),
        method_span: Span::new(base, base + sp1),
        uri: Span::new(base + sp1 + 1, base + sp2),
    })
}

/// A header line: a token name, optional whitespace, the colon, the value (trimmed, across its
/// continuation lines).
fn parse_header_line(bytes: &[u8], line: LogicalLine) -> Result<HeaderField, ParseError> {
    let (start, end) = (line.start, line.first_end);
    let text = &bytes[start..end];
    // The name is a token, then optional whitespace, then the colon.
    let name_end = text
        .iter()
        .position(|&b| !lex::is_token_char(b))
        .ok_or(ParseError::BadHeader)?;
    let colon = name_end
        + text[name_end..]
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t'))
            .ok_or(ParseError::BadHeader)?;
    if name_end == 0 || text[colon] != b':' {
        return Err(ParseError::BadHeader);
    }
    let name = &text[..name_end];
    let mut value_start = start + colon + 1;
    while value_start < end && matches!(bytes[value_start], b' ' | b'\t') {
        value_start += 1;
    }
    Ok(HeaderField {
        name: HeaderName::classify(name),
        value: trim_end(bytes, Span::new(value_start, line.end)),
        line: Span::new(start, line.next),
    })
}

//! Typed views of the header values the proxy reads: Via, name-addr (Contact, Route, To, From),
//! CSeq, and the helpers they share (list splitting, parameters, numbers).

use memchr::{memchr, memchr2, memchr3};

use super::uri::Uri;
use super::{ParseError, Span};

/// RFC 3261 §25.1 `token` characters, as a table: this runs for every byte of every header name.
static TOKEN_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    table
};

#[must_use]
pub fn is_token_char(b: u8) -> bool {
    TOKEN_CHARS[usize::from(b)]
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses a decimal number of at most 10 digits (Max-Forwards, Content-Length, CSeq, Expires).
#[must_use]
pub fn parse_u32(text: &[u8]) -> Option<u32> {
    let text = trim(text);
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

fn trim(mut text: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = text {
        if !is_lws(*first) {
            break;
        }
        text = rest;
    }
    while let [rest @ .., last] = text {
        if !is_lws(*last) {
            break;
        }
        text = rest;
    }
    text
}

/// Shrinks a span past surrounding whitespace (including folded line ends).
#[must_use]
pub fn trim_span(buf: &[u8], span: Span) -> Span {
    let (mut start, mut end) = (span.start(), span.end());
    while start < end && is_lws(buf[start]) {
        start += 1;
    }
    while end > start && is_lws(buf[end - 1]) {
        end -= 1;
    }
    Span::new(start, end)
}

/// Splits a header value on the commas that separate values (RFC 3261 §7.3.1), ignoring commas
/// inside quoted strings and `<…>`. Empty elements are skipped.
///
/// A `"` inside `<…>` is part of the URI, not the start of a quoted string: in RFC 3261 §25.1
/// quoted strings occur only outside the URI (`display-name`, parameter values), and
/// [`NameAddr::parse`] ends the URI at the first `>` whatever precedes it. Both must agree on
/// where a value ends, or a comma hidden by a stray quote would make one Contact of two.
pub fn split_list(buf: &[u8], value: Span) -> impl Iterator<Item = Span> + '_ {
    let mut pos = value.start();
    let end = value.end();
    std::iter::from_fn(move || {
        while pos < end {
            let start = pos;
            pos = element_end(&buf[..end], pos);
            let element = trim_span(buf, Span::new(start, pos));
            pos += 1;
            if !element.is_empty() {
                return Some(element);
            }
        }
        None
    })
}

/// Where the list element starting at `pos` ends: the next comma outside a quoted string and
/// outside `<…>`, or the end of `buf`. Jumps between the bytes that matter.
fn element_end(buf: &[u8], mut pos: usize) -> usize {
    while let Some(found) = memchr3(b',', b'"', b'<', &buf[pos..]) {
        pos += found;
        pos = match buf[pos] {
            b',' => return pos,
            b'"' => quoted_end(buf, pos + 1),
            _ => memchr(b'>', &buf[pos..]).map_or(buf.len(), |i| pos + i + 1),
        };
    }
    buf.len()
}

/// The offset just past the `"` that closes a quoted string whose content starts at `pos`
/// (`\` escapes the next byte, RFC 3261 §25.1 `quoted-pair`), or the end of `buf`.
fn quoted_end(buf: &[u8], mut pos: usize) -> usize {
    while let Some(found) = memchr2(b'"', b'\\', buf.get(pos..).unwrap_or_default()) {
        pos += found;
        if buf[pos] == b'"' {
            return pos + 1;
        }
        pos += 2;
    }
    buf.len()
}

/// A `;name[=value]` parameter, as spans into the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The whole parameter including its leading `;`.
    pub span: Span,
    pub name: Span,
    pub value: Option<Span>,
}

/// Iterates the parameters in `span`, which starts at a `;` (or is empty).
pub fn params(buf: &[u8], span: Span) -> impl Iterator<Item = Param> + '_ {
    let buf = &buf[..span.end()];
    let mut pos = span.start();
    std::iter::from_fn(move || {
        if buf.get(pos) != Some(&b';') {
            pos += memchr(b';', buf.get(pos..).unwrap_or_default())?;
        }
        let start = pos;
        pos += 1;
        // The parameter ends at the next `;` outside a quoted string (RFC 3261 §25.1 `gen-value`).
        // Names are short and looked at byte by byte; values (a contact token is 130 bytes)
        // are skipped with `memchr`.
        let mut eq = None;
        loop {
            let next = match eq {
                None => buf[pos..]
                    .iter()
                    .position(|&b| matches!(b, b'=' | b';' | b'"')),
                Some(_) => memchr2(b';', b'"', &buf[pos..]),
            };
            let Some(found) = next else {
                pos = buf.len();
                break;
            };
            pos += found;
            match buf[pos] {
                b';' => break,
                b'"' => pos = quoted_end(buf, pos + 1),
                _ => {
                    eq = Some(pos);
                    pos += 1;
                }
            }
        }
        let stop = pos;
        let (name, value) = match eq {
            Some(eq) => (
                trim_span(buf, Span::new(start + 1, eq)),
                Some(trim_span(buf, Span::new(eq + 1, stop))),
            ),
            None => (trim_span(buf, Span::new(start + 1, stop)), None),
        };
        Some(Param {
            span: Span::new(start, stop),
            name,
            value,
        })
    })
}

/// Finds a parameter by name, case-insensitively.
#[must_use]
pub fn find_param(buf: &[u8], span: Span, name: &str) -> Option<Param> {
    params(buf, span).find(|p| buf[p.name.range()].eq_ignore_ascii_case(name.as_bytes()))
}

/// One Via value: `SIP/2.0/UDP host:port;branch=…` (RFC 3261 §20.42).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via {
    pub span: Span,
    /// The protocol version (`2.0`) as written.
    pub version: Span,
    /// The transport token (`UDP`, `WSS`, …) as written.
    pub transport: Span,
    /// The sent-by host, brackets kept for IPv6.
    pub host: Span,
    pub port: Option<u16>,
    /// From the first `;` to the end of the value.
    pub params: Span,
    /// The first of each of `READ_VIA_PARAMS`, found in the one pass that parses the Via.
    read_params: [Option<Param>; READ_VIA_PARAMS.len()],
}

/// The Via parameters the proxy reads for every message it forwards.
const READ_VIA_PARAMS: [&str; 3] = ["branch", "received", "rport"];

fn read_via_param(name: &[u8]) -> Option<usize> {
    READ_VIA_PARAMS
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known.as_bytes()))
}

impl Via {
    pub fn parse(buf: &[u8], span: Span) -> Result<Via, ParseError> {
        let bad = ParseError::BadHeaderValue("Via");
        let end = span.end();
        let mut pos = span.start();
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, LWS allowed.
        let mut fields = [Span::new(pos, pos); 3];
        for (i, field) in fields.iter_mut().enumerate() {
            while pos < end && is_lws(buf[pos]) {
                pos += 1;
            }
            let start = pos;
            while pos < end && is_token_char(buf[pos]) {
                pos += 1;
            }
            *field = Span::new(start, pos);
            while pos < end && is_lws(buf[pos]) {
                pos += 1;
            }
            if i < 2 {
                if pos >= end || buf[pos] != b'/' {
                    return Err(bad);
                }
                pos += 1;
            }
        }
        // RFC 3261 §25.1: `protocol-version = token`. The version is not checked here: a request
        // of another SIP version is answered 505 with its Via copied (RFC 3261 §21.5.6, RFC 4475
        // §3.1.2.16, `reply::salvage_bad_request`), and that Via must still be readable.
        // `Message::validate_request` holds SIP/2.0 requests to `2.0` (RFC 3261 §8.1.1.7).
        if !buf[fields[0].range()].eq_ignore_ascii_case(b"SIP")
            || fields[1].is_empty()
            || fields[2].is_empty()
        {
            return Err(bad);
        }
        let params_start = buf[pos..end]
            .iter()
            .position(|&b| b == b';')
            .map_or(end, |i| pos + i);
        let sent_by = trim_span(buf, Span::new(pos, params_start));
        let (host, port) = split_host_port(buf, sent_by).ok_or(bad)?;
        let mut via = Via {
            span,
            version: fields[1],
            transport: fields[2],
            host,
            port,
            params: Span::new(params_start, end),
            read_params: [None; READ_VIA_PARAMS.len()],
        };
        for param in params(buf, via.params) {
            if let Some(i) = read_via_param(&buf[param.name.range()]) {
                // The first of a name counts, as in `find_param`.
                via.read_params[i].get_or_insert(param);
            }
        }
        Ok(via)
    }

    #[must_use]
    pub fn param(&self, buf: &[u8], name: &str) -> Option<Param> {
        match read_via_param(name.as_bytes()) {
            Some(i) => self.read_params[i],
            None => find_param(buf, self.params, name),
        }
    }

    /// Whether the sent-protocol is `SIP/2.0/…`, as RFC 3261 §8.1.1.7 requires of a SIP/2.0
    /// request's Vias.
    #[must_use]
    pub fn is_sip_2_0(&self, buf: &[u8]) -> bool {
        &buf[self.version.range()] == b"2.0"
    }

    /// The `branch` parameter's value.
    #[must_use]
    pub fn branch<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.param(buf, "branch")
            .and_then(|p| p.value)
            .map(|v| &buf[v.range()])
    }
}

/// Splits `host[:port]` where host may be an IPv6 reference in brackets.
pub fn split_host_port(buf: &[u8], span: Span) -> Option<(Span, Option<u16>)> {
    let text = &buf[span.range()];
    let host_len = if text.first() == Some(&b'[') {
        text.iter().position(|&b| b == b']')? + 1
    } else {
        text.iter().position(|&b| b == b':').unwrap_or(text.len())
    };
    let host = Span::new(span.start(), span.start() + host_len);
    if host.is_empty() || !is_valid_host(&buf[host.range()]) {
        return None;
    }
    let rest = &text[host_len..];
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => Some(
            parse_u32(digits)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)?,
        ),
        _ => return None,
    };
    Some((host, port))
}

/// A host name, an IPv4 address or a bracketed IPv6 reference (RFC 3261 §25.1 `host`).
#[must_use]
pub fn is_valid_host(host: &[u8]) -> bool {
    match host {
        [b'[', inner @ .., b']'] => std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some(),
        _ => {
            !host.is_empty()
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    }
}

/// A `name-addr` or `addr-spec` value with parameters: Contact, Route, Record-Route, To, From.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub span: Span,
    pub uri: Span,
    /// Whether the URI was written in `<…>`; without them, parameters belong to the header.
    pub bracketed: bool,
    /// Header parameters (`;tag=…`, `;expires=…`), from the first `;` after the URI.
    pub params: Span,
}

impl NameAddr {
    pub fn parse(buf: &[u8], span: Span) -> Result<NameAddr, ParseError> {
        let bad = ParseError::BadHeaderValue("name-addr");
        let end = span.end();
        let mut pos = span.start();
        while pos < end && is_lws(buf[pos]) {
            pos += 1;
        }
        if pos < end && buf[pos] == b'"' {
            pos += 1;
            while pos < end && buf[pos] != b'"' {
                pos += if buf[pos] == b'\\' { 2 } else { 1 };
            }
            if pos >= end {
                return Err(bad);
            }
            pos += 1;
        }
        let open = buf[pos..end].iter().position(|&b| b == b'<');
        let (uri, bracketed, after) = match open {
            Some(i) => {
                let open = pos + i;
                let close = buf[open..end]
                    .iter()
                    .position(|&b| b == b'>')
                    .map(|j| open + j)
                    .ok_or(bad)?;
                (Span::new(open + 1, close), true, close + 1)
            }
            None => {
                let stop = buf[pos..end]
                    .iter()
                    .position(|&b| b == b';' || is_lws(b))
                    .map_or(end, |j| pos + j);
                (Span::new(pos, stop), false, stop)
            }
        };
        let uri = trim_span(buf, uri);
        if uri.is_empty() {
            return Err(bad);
        }
        Ok(NameAddr {
            span,
            uri,
            bracketed,
            params: Span::new(after, end),
        })
    }

    pub fn parsed_uri<'b>(&self, buf: &'b [u8]) -> Result<Uri<'b>, ParseError> {
        Uri::parse(buf, self.uri)
    }

    #[must_use]
    pub fn param(&self, buf: &[u8], name: &str) -> Option<Param> {
        find_param(buf, self.params, name)
    }

    /// A Contact's `expires` parameter in seconds (RFC 3261 §20.10), when it is a number.
    #[must_use]
    pub fn expires(&self, buf: &[u8]) -> Option<u32> {
        self.param(buf, "expires")
            .and_then(|p| p.value)
            .and_then(|v| parse_u32(&buf[v.range()]))
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'b> {
    pub number: u32,
    pub method: &'b [u8],
}

impl<'b> CSeq<'b> {
    pub fn parse(buf: &'b [u8], span: Span) -> Result<CSeq<'b>, ParseError> {
        let (number, method) = CSeq::parse_spans(buf, span)?;
        Ok(CSeq {
            number,
            method: &buf[method.range()],
        })
    }

    /// The number and where the method is, so a message can keep them without a borrow.
    pub(super) fn parse_spans(buf: &[u8], span: Span) -> Result<(u32, Span), ParseError> {
        let bad = ParseError::BadHeaderValue("CSeq");
        let text = &buf[span.range()];
        let split = text.iter().position(|&b| is_lws(b)).ok_or(bad)?;
        let number = parse_u32(&text[..split]).ok_or(bad)?;
        let rest = &text[split..];
        let method = trim(rest);
        if method.is_empty() || !method.iter().all(|&b| is_token_char(b)) {
            return Err(bad);
        }
        let start = span.start() + split + rest.iter().take_while(|&&b| is_lws(b)).count();
        Ok((number, Span::new(start, start + method.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Span {
        Span::new(0, text.len())
    }

    fn texts(buf: &[u8], spans: impl Iterator<Item = Span>) -> Vec<&str> {
        spans
            .map(|s| std::str::from_utf8(&buf[s.range()]).unwrap())
            .collect()
    }

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v = r#""Doe, John" <sip:a@b;x=1,2>;q=1 , <sip:c@d>,,sip:e@f"#;
        assert_eq!(
            texts(v.as_bytes(), split_list(v.as_bytes(), whole(v))),
            [r#""Doe, John" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>", "sip:e@f"]
        );
    }

    /// RFC 4475 §3.1.2.1 (badinv01) and the fuzzed `<s:x">,<sip:evil@h>`: a quote inside `<…>`
    /// does not hide the comma after the `>`, so both Contacts are seen (and both rewritten).
    #[test]
    fn quote_inside_angle_brackets_does_not_hide_a_comma() {
        let v = r#"<s:x">,<sip:evil@h>"#;
        let values = texts(v.as_bytes(), split_list(v.as_bytes(), whole(v)));
        assert_eq!(values, [r#"<s:x">"#, "<sip:evil@h>"]);
        for value in split_list(v.as_bytes(), whole(v)) {
            let na = NameAddr::parse(v.as_bytes(), value).unwrap();
            assert!(na.span.end() <= value.end());
        }
        let v = r#"<sip:a@b;x="1,2>, "Bob, Jr" <sip:c@d>;p="<,>",sip:e@f"#;
        assert_eq!(
            texts(v.as_bytes(), split_list(v.as_bytes(), whole(v))),
            [
                r#"<sip:a@b;x="1,2>"#,
                r#""Bob, Jr" <sip:c@d>;p="<,>""#,
                "sip:e@f"
            ]
        );
    }

    /// RFC 3261 §25.1: `sent-protocol = protocol-name SLASH protocol-version SLASH transport`,
    /// `protocol-version = token`: another version is still a readable Via (RFC 4475 §3.1.2.16).
    #[test]
    fn via_of_another_sip_version_is_readable() {
        let v = "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw";
        let via = Via::parse(v.as_bytes(), whole(v)).unwrap();
        assert_eq!(&v.as_bytes()[via.host.range()], b"c.example.com");
        assert!(!via.is_sip_2_0(v.as_bytes()));
        let v = "SIP / 2.0 / UDP c.example.com";
        assert!(Via::parse(v.as_bytes(), whole(v))
            .unwrap()
            .is_sip_2_0(v.as_bytes()));
    }

    #[test]
    fn via_with_odd_whitespace_and_ipv6() {
        let v = "SIP / 2.0 / UDP [2001:db8::9]:5070 ;branch=z9hG4bKx;rport";
        let via = Via::parse(v.as_bytes(), whole(v)).unwrap();
        let b = v.as_bytes();
        assert_eq!(&b[via.transport.range()], b"UDP");
        assert_eq!(&b[via.host.range()], b"[2001:db8::9]");
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.branch(b), Some(&b"z9hG4bKx"[..]));
        let rport = via.param(b, "RPORT").unwrap();
        assert_eq!(rport.value, None);
    }

    #[test]
    fn via_rejects_garbage() {
        for v in [
            "SIP/2.0 UDP host",
            "SIP//UDP host",
            "HTTP/1.1/TCP host",
            "SIP/2.0/ host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP ho st",
            "SIP/2.0/UDP [::1",
        ] {
            assert!(Via::parse(v.as_bytes(), whole(v)).is_err(), "{v}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let v = r#""A <b>" <sip:alice@example.com;transport=tcp>;tag=88"#;
        let na = NameAddr::parse(v.as_bytes(), whole(v)).unwrap();
        let b = v.as_bytes();
        assert_eq!(&b[na.uri.range()], b"sip:alice@example.com;transport=tcp");
        assert!(na.bracketed);
        assert_eq!(
            na.param(b, "tag")
                .and_then(|p| p.value)
                .map(|s| &b[s.range()]),
            Some(&b"88"[..])
        );
        let v = "sip:bob@example.com;expires=60";
        let na = NameAddr::parse(v.as_bytes(), whole(v)).unwrap();
        assert_eq!(&v.as_bytes()[na.uri.range()], b"sip:bob@example.com");
        assert!(!na.bracketed);
        assert!(na.param(v.as_bytes(), "expires").is_some());
        for bad in ["<sip:a@b", "\"unterminated <sip:a@b>", "<>"] {
            assert!(
                NameAddr::parse(bad.as_bytes(), whole(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_and_cseq() {
        assert_eq!(parse_u32(b" 70 "), Some(70));
        assert_eq!(parse_u32(b"99999999999"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
        let v = "4711  INVITE";
        let c = CSeq::parse(v.as_bytes(), whole(v)).unwrap();
        assert_eq!((c.number, c.method), (4711, &b"INVITE"[..]));
        assert!(CSeq::parse(b"INVITE", Span::new(0, 6)).is_err());
    }
}

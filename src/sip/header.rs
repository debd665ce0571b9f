//! Typed views of the header values the proxy reads: Via, name-addr (Contact, Route, To, From),
//! CSeq. Their lexical pieces (parameters, numbers, host and port) come from `lex`.

use super::lex::{
    find_param, is_lws, is_token_char, params, parse_u32, split_host_port, trim, trim_span, Param,
};
use super::uri::Uri;
use super::{ParseError, Span};

/// The headers the proxy reads or edits, recognised by full and compact name (RFC 3261 §7.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    Route,
    RecordRoute,
    Expires,
    Other,
}

impl HeaderName {
    pub(super) fn classify(name: &[u8]) -> HeaderName {
        let is = |full: &str| name.eq_ignore_ascii_case(full.as_bytes());
        // By length first: most header lines of a call are ones the proxy does not read.
        match name.len() {
            1 => match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                _ => HeaderName::Other,
            },
            2 if is("to") => HeaderName::To,
            3 if is("via") => HeaderName::Via,
            4 if is("from") => HeaderName::From,
            4 if is("cseq") => HeaderName::CSeq,
            5 if is("route") => HeaderName::Route,
            7 if is("call-id") => HeaderName::CallId,
            7 if is("contact") => HeaderName::Contact,
            7 if is("expires") => HeaderName::Expires,
            12 if is("max-forwards") => HeaderName::MaxForwards,
            12 if is("record-route") => HeaderName::RecordRoute,
            14 if is("content-length") => HeaderName::ContentLength,
            _ => HeaderName::Other,
        }
    }
}

/// The name as RFC 3261 §20 writes it, for error messages.
impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Expires => "Expires",
            HeaderName::Other => "other",
        })
    }
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
        let bad = ParseError::BadHeaderValue(HeaderName::Via);
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
    /// Reads the value of a `header` (From, To, Contact, Route…), which names it in the error.
    pub fn parse(buf: &[u8], span: Span, header: HeaderName) -> Result<NameAddr, ParseError> {
        let bad = ParseError::BadHeaderValue(header);
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
        let bad = ParseError::BadHeaderValue(HeaderName::CSeq);
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
    use crate::sip::lex::split_list;

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
            let na = NameAddr::parse(v.as_bytes(), value, HeaderName::Contact).unwrap();
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
        let na = NameAddr::parse(v.as_bytes(), whole(v), HeaderName::To).unwrap();
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
        let na = NameAddr::parse(v.as_bytes(), whole(v), HeaderName::To).unwrap();
        assert_eq!(&v.as_bytes()[na.uri.range()], b"sip:bob@example.com");
        assert!(!na.bracketed);
        assert!(na.param(v.as_bytes(), "expires").is_some());
        for bad in ["<sip:a@b", "\"unterminated <sip:a@b>", "<>"] {
            assert!(
                NameAddr::parse(bad.as_bytes(), whole(bad), HeaderName::To).is_err(),
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

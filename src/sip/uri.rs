//! SIP and SIPS URIs (RFC 3261 §19.1) as a borrowed view: the parts the router needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use memchr::memchr;

use super::lex::{self, Param};
use super::{ParseError, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A parsed URI. Spans are absolute offsets into `buf`.
#[derive(Clone, Copy, Debug)]
pub struct Uri<'b> {
    buf: &'b [u8],
    pub span: Span,
    pub scheme: Scheme,
    /// `user[:password]` before `@`, without the `@`.
    pub userinfo: Option<Span>,
    /// Host as written; IPv6 keeps its brackets.
    pub host: Span,
    pub port: Option<u16>,
    /// URI parameters, from the first `;` after the host up to `?` or the end.
    pub params: Span,
}

impl<'b> Uri<'b> {
    pub fn parse(buf: &'b [u8], span: Span) -> Result<Uri<'b>, ParseError> {
        let text = &buf[span.range()];
        // Without an early exit the check vectorises; token-carrying URIs are long.
        if !text.iter().fold(true, |ok, &b| ok & is_uri_char(b)) {
            return Err(ParseError::BadUri);
        }
        let colon = memchr(b':', text).ok_or(ParseError::BadUri)?;
        let scheme_text = &text[..colon];
        let scheme = if scheme_text.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_text.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_text.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else if is_scheme(scheme_text) {
            Scheme::Other
        } else {
            return Err(ParseError::BadUri);
        };
        let base = span.start() + colon + 1;
        let rest = &text[colon + 1..];
        if !matches!(scheme, Scheme::Sip | Scheme::Sips) {
            // Only SIP URIs are routed; others are carried as opaque text.
            return Ok(Uri {
                buf,
                span,
                scheme,
                userinfo: None,
                host: Span::new(base, base),
                port: None,
                params: Span::new(span.end(), span.end()),
            });
        }
        // '@' may not appear unescaped anywhere else in a SIP URI (RFC 3261 §25.1: it is in
        // none of user, password, hostport, uri-parameters or headers), so the first one ends
        // the userinfo. It is looked for before '?': the user part may contain '?'
        // (user-unreserved), as RFC 4475 §3.1.1.2 exercises.
        let (userinfo, host_start) = match memchr(b'@', rest) {
            Some(at) => {
                // user = 1*( unreserved / escaped / user-unreserved ): never empty, with or
                // without a password (`sip:@host`, `sip::pw@host`).
                let user_len = memchr(b':', &rest[..at]).unwrap_or(at);
                if user_len == 0 {
                    return Err(ParseError::BadUri);
                }
                (Some(Span::new(base, base + at)), at + 1)
            }
            None => (None, 0),
        };
        // Headers start at the first '?' after the userinfo (RFC 3261 §19.1.1).
        let headers_at = memchr(b'?', &rest[host_start..]).map_or(rest.len(), |i| host_start + i);
        let before_headers = &rest[..headers_at];
        let hostport_len = if before_headers.get(host_start) == Some(&b'[') {
            let close = before_headers[host_start..]
                .iter()
                .position(|&b| b == b']')
                .ok_or(ParseError::BadUri)?;
            let after = host_start + close + 1;
            after
                + before_headers[after..]
                    .iter()
                    .position(|&b| b == b';')
                    .unwrap_or(before_headers.len() - after)
        } else {
            memchr(b';', &before_headers[host_start..])
                .map_or(before_headers.len(), |i| host_start + i)
        };
        let hostport = Span::new(base + host_start, base + hostport_len);
        let (host, port) = lex::split_host_port(buf, hostport).ok_or(ParseError::BadUri)?;
        Ok(Uri {
            buf,
            span,
            scheme,
            userinfo,
            host,
            port,
            params: Span::new(base + hostport_len, base + headers_at),
        })
    }

    /// The user part, without a password.
    #[must_use]
    pub fn user(&self) -> Option<&'b [u8]> {
        let info = &self.buf[self.userinfo?.range()];
        Some(info.split(|&b| b == b':').next().unwrap_or(info))
    }

    #[must_use]
    pub fn host(&self) -> &'b [u8] {
        &self.buf[self.host.range()]
    }

    /// The host as an IP address when it is one. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is reduced
    /// to IPv4 so that an address cannot dodge a table lookup by changing its spelling.
    #[must_use]
    pub fn host_ip(&self) -> Option<IpAddr> {
        parse_host_ip(self.host())
    }

    #[must_use]
    pub fn param(&self, name: &str) -> Option<Param> {
        lex::find_param(self.buf, self.params, name)
    }

    #[must_use]
    pub fn param_value(&self, name: &str) -> Option<&'b [u8]> {
        self.param(name)
            .and_then(|p| p.value)
            .map(|v| &self.buf[v.range()])
    }

    #[must_use]
    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    #[must_use]
    pub fn as_bytes(&self) -> &'b [u8] {
        &self.buf[self.span.range()]
    }

    #[must_use]
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

/// Bytes accepted in a URI. RFC 3986 §2 and RFC 3261 §25.1 allow a narrower set (the rest must
/// be %-escaped); this is more lenient (real user parts carry `#` and the like) but refuses
/// what never belongs to a URI and delimits one in a header (RFC 3261 §20.10): controls, SP,
/// DEL, `<`, `>` and `"`. A URI holding one would be read differently once it is replaced:
/// `>` ends the `<…>` a rewritten Contact is put in, and a `"` in an `addr-spec` opens a quoted
/// string for `lex::split_list` that hides the commas after it.
fn is_uri_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'<' | b'>' | b'"')
}

/// RFC 3986 §3.1: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3261 §25.1 uses
/// the same rule).
fn is_scheme(text: &[u8]) -> bool {
    match text {
        [first, rest @ ..] => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }
        [] => false,
    }
}

/// Parses `1.2.3.4`, `[2001:db8::1]` (and bare IPv6), mapping IPv4-mapped IPv6 to IPv4.
#[must_use]
pub fn parse_host_ip(host: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(host) {
        return Some(IpAddr::V4(v4));
    }
    // Anything else that is an address is IPv6: it has a colon (host names have none).
    memchr(b':', host)?;
    let text = std::str::from_utf8(host).ok()?;
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let v6: Ipv6Addr = text.parse().ok()?;
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

/// Dotted-quad IPv4 as `Ipv4Addr::from_str` reads it (four decimal octets, no leading zeros),
/// without going through `str`: every message's Via and Contact hosts come through here.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let digits = parts.next()?;
        if digits.is_empty()
            || digits.len() > 3
            || (digits.len() > 1 && digits[0] == b'0')
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ipv4_reads_as_std_does(text in "[0-9.]{0,17}") {
            prop_assert_eq!(parse_ipv4(text.as_bytes()), text.parse::<Ipv4Addr>().ok());
        }
    }

    #[test]
    fn host_ips() {
        for (host, ip) in [
            ("192.0.2.1", Some("192.0.2.1")),
            ("255.255.255.255", Some("255.255.255.255")),
            ("256.1.1.1", None),
            ("01.2.3.4", None),
            ("1.2.3", None),
            ("1.2.3.4.", None),
            ("example.com", None),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[::ffff:192.0.2.1]", Some("192.0.2.1")),
            ("[2001:db8::1", None),
        ] {
            assert_eq!(
                parse_host_ip(host.as_bytes()),
                ip.map(|ip| ip.parse::<IpAddr>().unwrap()),
                "{host}"
            );
        }
    }

    fn uri(text: &str) -> Uri<'_> {
        Uri::parse(text.as_bytes(), Span::new(0, text.len())).unwrap()
    }

    #[test]
    fn full_sip_uri() {
        let u = uri("sip:alice:secret@Example.COM:5070;transport=TCP;lr?subject=hi");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user(), Some(&b"alice"[..]));
        assert_eq!(u.host(), b"Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param_value("transport"), Some(&b"TCP"[..]));
        assert!(u.has_param("lr"));
        assert!(!u.has_param("subject"));
    }

    #[test]
    fn ipv6_hosts() {
        let u = uri("sips:[2001:db8::10]:5061;maddr=x");
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host(), b"[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.host_ip(), Some("2001:db8::10".parse().unwrap()));
        assert!(u.has_param("maddr"));
        let u = uri("sip:u@[::ffff:192.0.2.1]");
        assert_eq!(u.host_ip(), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn user_with_params_and_no_port() {
        let u = uri("sip:+1555;npdi@gw.example.net;user=phone");
        assert_eq!(u.user(), Some(&b"+1555;npdi"[..]));
        assert_eq!(u.host(), b"gw.example.net");
        assert_eq!(u.port, None);
        assert_eq!(u.param_value("user"), Some(&b"phone"[..]));
    }

    #[test]
    fn other_schemes_are_opaque() {
        assert_eq!(uri("tel:+15551234").scheme, Scheme::Tel);
        assert!(!uri("tel:+15551234").is_sip());
    }

    /// RFC 3261 §25.1 allows '?' in the user part (user-unreserved); headers begin at the first
    /// '?' after the host (RFC 4475 §3.1.1.2, intmeth).
    #[test]
    fn question_mark_in_user_part() {
        let u = uri("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user(),
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(u.host(), b"example.com");
        assert_eq!(u.port, None);
        assert!(u.params.is_empty());
        assert_eq!(u.params.end(), u.span.end(), "no headers");
        // Headers still start at a '?' after the host.
        let text = "sip:a?b@example.com:5070;lr?subject=x";
        let u = uri(text);
        assert_eq!(u.user(), Some(&b"a?b"[..]));
        assert_eq!(u.host(), b"example.com");
        assert_eq!(u.port, Some(5070));
        assert!(u.has_param("lr"));
        assert_eq!(&text.as_bytes()[u.params.end()..], b"?subject=x");
        let u = uri("sip:example.com?subject=x");
        assert_eq!((u.user(), u.host()), (None, &b"example.com"[..]));
    }

    /// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 4475 §3.3.3, novelsc).
    #[test]
    fn schemes_with_plus_minus_and_dot() {
        for other in [
            "soap.beep://192.0.2.103:3002",
            "a+b-c.d:x",
            "im:user@example.com",
            "x1:y",
        ] {
            let u = uri(other);
            assert_eq!(u.scheme, Scheme::Other, "{other}");
            assert!(!u.is_sip());
        }
        for bad in ["1ab:x", "+x:y", ".x:y", "a_b:x", "a b:x", ":x"] {
            assert!(
                Uri::parse(bad.as_bytes(), Span::new(0, bad.len())).is_err(),
                "{bad}"
            );
        }
    }

    /// RFC 3261 §25.1: `user` is `1*(…)`, so `@` needs a non-empty user before it, even with
    /// a password. Such a URI would otherwise be rewritten into `sip:@us…`.
    #[test]
    fn empty_user_is_rejected() {
        for bad in [
            "sip::@host",
            "sip::pw@host",
            "Sip::@l",
            "sips:@host",
            "sip::@[::1]",
        ] {
            assert!(
                Uri::parse(bad.as_bytes(), Span::new(0, bad.len())).is_err(),
                "{bad}"
            );
        }
        let u = uri("sip:a:@host");
        assert_eq!(u.user(), Some(&b"a"[..]));
    }

    /// A user part with `>` (the fuzzed `proxy_rewrite-gt-in-contact-user.bin`: Contact
    /// `sip:>@0`) would end the `<…>` its rewritten Contact is put in, and a `"` in an addr-spec
    /// Contact (`proxy_rewrite-quote-in-addr-spec.bin`: `p:" ,x`) hides the commas after it
    /// until the URI is replaced; such bytes are in no URI (RFC 3986 §2), escaped they are.
    #[test]
    fn delimiters_in_uris_are_rejected() {
        for bad in [
            "p:\"",
            "sip:a@h?x\"",
            "sip:a@h;p=\"1\"",
            "sip:a@h;p=>",
            "tel:+1 555",
            "sip:>@0",
            "sip:a<b@host",
            "sip:a\"b@host",
            "sip:a b@host",
            "sip:a\tb@host",
            "sip:a:p>w@host",
            "sip:a\x7f@host",
        ] {
            assert!(
                Uri::parse(bad.as_bytes(), Span::new(0, bad.len())).is_err(),
                "{bad}"
            );
        }
        assert_eq!(uri("sip:%3E@0").user(), Some(&b"%3E"[..]));
        assert_eq!(uri("sip:*21#@pbx").user(), Some(&b"*21#"[..]));
    }

    #[test]
    fn bad_uris() {
        for bad in [
            "sip:",
            "nocolon",
            "sip:@host",
            "sip:[::1",
            "sip:host:port",
            "sip:ho^st",
            "s p:x",
        ] {
            assert!(
                Uri::parse(bad.as_bytes(), Span::new(0, bad.len())).is_err(),
                "{bad}"
            );
        }
    }
}

//! The lexical rules of RFC 3261 §25.1 that header values and URIs share: token characters,
//! linear white space, numbers, quoted strings, comma-separated lists, `;name=value`
//! parameters and `host[:port]`. Below both `header` and `uri`, so that a URI can be read
//! without the header views and a header view can hold a URI.

use memchr::{memchr, memchr2, memchr3};

use super::host::is_wire_host;
use super::Span;

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

pub(super) fn is_lws(b: u8) -> bool {
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

pub(super) fn trim(mut text: &[u8]) -> &[u8] {
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
/// [`super::NameAddr::parse`] ends the URI at the first `>` whatever precedes it. Both must agree on
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

/// Splits `host[:port]` where host may be an IPv6 reference in brackets.
pub fn split_host_port(buf: &[u8], span: Span) -> Option<(Span, Option<u16>)> {
    let text = &buf[span.range()];
    let host_len = if text.first() == Some(&b'[') {
        text.iter().position(|&b| b == b']')? + 1
    } else {
        text.iter().position(|&b| b == b':').unwrap_or(text.len())
    };
    let host = Span::new(span.start(), span.start() + host_len);
    if host.is_empty() || !is_wire_host(&buf[host.range()]) {
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

//! Parser and editor tests over whole messages.

use bytes::Bytes;

use super::*;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Subject: keep me\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn parse(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
}

fn text(msg: &Message, span: Span) -> &str {
    std::str::from_utf8(msg.slice(span)).unwrap()
}

fn wire(e: &Encoded) -> String {
    String::from_utf8([&e.head[..], &e.body[..]].concat()).unwrap()
}

#[test]
fn parses_a_request() {
    let m = parse(INVITE);
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(
        text(&m, m.request_uri().unwrap()),
        "sip:bob@biloxi.example.com;transport=tcp"
    );
    assert_eq!(m.max_forwards(), Ok(Some(70)));
    let via = m.top_via().unwrap();
    assert_eq!(text(&m, via.transport), "UDP");
    assert_eq!(text(&m, via.host), "pc33.atlanta.example.com");
    assert_eq!(via.port, Some(5066));
    assert_eq!(m.cseq().unwrap().number, 314_159);
    assert_eq!(
        m.call_id().unwrap(),
        b"a84b4c76e66710@pc33.atlanta.example.com"
    );
    let to = m.to().unwrap();
    assert_eq!(
        to.parsed_uri(m.bytes()).unwrap().host(),
        b"biloxi.example.com"
    );
    assert_eq!(&m.body()[..], b"v=0\n");
    assert!(m.validate_request().is_ok());
}

#[test]
fn parses_a_response() {
    let m = parse("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nl: 0\r\n\r\n");
    assert_eq!(m.status_code(), Some(180));
    assert!(!m.is_request());
    assert_eq!(m.content_length(), Ok(Some(0)));
}

#[test]
fn compact_forms_folding_and_case() {
    let m = parse(
        "\r\nOPTIONS sip:x@example.com SIP/2.0\r\n\
         v: SIP/2.0/TCP a.example.com;branch=z9hG4bK1,\r\n  SIP/2.0/UDP b.example.com:5070;branch=z9hG4bK2\r\n\
         VIA : SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK3\r\n\
         f: <sip:a@example.com>;tag=1\r\nt: sip:x@example.com\r\ni: abc\r\nCSEQ: 1\r\n OPTIONS\r\n\
         m: <sip:a@[2001:db8::1]:5070>\r\nl: 0\r\n\r\n",
    );
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(text(&m, vias[1].host), "b.example.com");
    assert_eq!(vias[1].port, Some(5070));
    assert_eq!(text(&m, vias[2].transport), "WSS");
    assert_eq!(m.cseq().unwrap().method, b"OPTIONS");
    assert_eq!(m.call_id().unwrap(), b"abc");
    let contact = m.contacts().next().unwrap().unwrap();
    let uri = contact.parsed_uri(m.bytes()).unwrap();
    assert_eq!(uri.host_ip(), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(uri.port, Some(5070));
    assert!(m.validate_request().is_ok());
}

#[test]
fn datagram_body_without_content_length_and_extra_bytes() {
    let m = parse("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nhello");
    assert_eq!(&m.body()[..], b"hello");
    assert!(!m.has_content_length());
    let m = parse("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhello");
    assert_eq!(&m.body()[..], b"he");
}

#[test]
fn malformed_messages_are_typed_errors() {
    let cases: &[(&str, ParseError)] = &[
        ("", ParseError::Truncated),
        ("INVITE sip:a@b SIP/2.0\r\nVia: x", ParseError::Truncated),
        ("INVITE sip:a@b SIP/2.0\r\n\r", ParseError::Truncated),
        ("INVITE sip:a@b SIP/1.0\r\n\r\n", ParseError::BadStartLine),
        ("INVITE  SIP/2.0\r\n\r\n", ParseError::BadStartLine),
        ("SIP/2.0 99 Low\r\n\r\n", ParseError::BadStartLine),
        ("SIP/2.0 2000 Big\r\n\r\n", ParseError::BadStartLine),
        (
            "INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
            ParseError::BadHeader,
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\n folded-first\r\n\r\n",
            ParseError::BadHeader,
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
            ParseError::BodyTruncated,
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
            ParseError::BadHeaderValue(HeaderName::ContentLength),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            Message::parse(Bytes::copy_from_slice(input.as_bytes())).err(),
            Some(*expected),
            "{input:?}"
        );
    }
    let m = parse("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 BYE\r\nCall-ID: x\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n\r\n");
    assert_eq!(
        m.validate_request(),
        Err(ParseError::BadHeaderValue(HeaderName::CSeq))
    );
    let m = parse("INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n");
    assert_eq!(
        m.validate_request(),
        Err(ParseError::MissingHeader(HeaderName::Via))
    );
}

#[test]
fn header_count_is_bounded() {
    let mut text = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
    for i in 0..300 {
        text.push_str(&format!("X-{i}: y\r\n"));
    }
    text.push_str("\r\n");
    assert_eq!(
        Message::parse(Bytes::from(text)).err(),
        Some(ParseError::TooManyHeaders)
    );
}

#[test]
fn untouched_message_is_forwarded_byte_for_byte() {
    let m = parse(INVITE);
    let out = Editor::new(&m).finish();
    assert_eq!(wire(&out), INVITE);
    // The body is a slice of the received buffer, not a copy.
    assert_eq!(out.body.as_ptr(), m.bytes()[m.body_start()..].as_ptr());
}

#[test]
fn proxy_edits_change_only_their_headers() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    let via = m.top_via().unwrap();
    ed.set_via_source(&via, "192.0.2.7".parse().unwrap(), 40_000);
    ed.push_via(|o| o.extend_from_slice(b"SIP/2.0/TCP 198.51.100.1:5060;branch=z9hG4bKrb1"));
    ed.set_max_forwards(69);
    ed.set_request_uri(|o| o.extend_from_slice(b"sip:bob@203.0.113.9"))
        .unwrap();
    let contact = m.contacts().next().unwrap().unwrap();
    ed.replace_name_addr_uri(&contact, |o| {
        o.extend_from_slice(b"sip:alice@198.51.100.1;transport=tcp")
    });
    let out = wire(&ed.finish());
    let expected = INVITE
        .replace("sip:bob@biloxi.example.com;transport=tcp SIP", "sip:bob@203.0.113.9 SIP")
        .replace(
            "Via: SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport\r\n",
            "Via: SIP/2.0/TCP 198.51.100.1:5060;branch=z9hG4bKrb1\r\n\
             Via: SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.7;rport=40000\r\n",
        )
        .replace("Max-Forwards: 70", "Max-Forwards: 69")
        .replace(
            "<sip:alice@pc33.atlanta.example.com>",
            "<sip:alice@198.51.100.1;transport=tcp>",
        );
    assert_eq!(out, expected);
}

/// A body rewritten by the media relay: the Content-Length follows it, written where it was or
/// added when there was none; nothing else changes.
#[test]
fn a_replaced_body_gets_its_content_length() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    ed.replace_body(Bytes::from_static(b"v=0\r\ns=-\r\n"));
    let expected = INVITE
        .replace("Content-Length: 4\r\n", "Content-Length: 10\r\n")
        .replace("\r\n\r\nv=0\n", "\r\n\r\nv=0\r\ns=-\r\n");
    assert_eq!(wire(&ed.finish()), expected);
    let datagram = parse("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\nhi");
    let mut ed = Editor::new(&datagram);
    ed.replace_body(Bytes::from_static(b"hello"));
    assert_eq!(
        wire(&ed.finish()),
        "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello"
    );
}

#[test]
fn other_headers_are_found_by_full_or_compact_name() {
    let m = parse(INVITE);
    let content_type = m.other_header("content-type", b'c').unwrap();
    assert_eq!(text(&m, content_type), "application/sdp");
    assert_eq!(m.other_header("supported", b'k'), None);
    let compact = parse("MESSAGE sip:a@b SIP/2.0\r\nc : text/plain\r\nl: 0\r\n\r\n");
    let content_type = compact.other_header("Content-Type", b'c').unwrap();
    assert_eq!(text(&compact, content_type), "text/plain");
}

#[test]
fn via_source_replaces_existing_values_and_ipv6_is_bare() {
    let m = parse("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;rport=1;received=10.0.0.1;branch=z9hG4bK1\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.set_via_source(&m.top_via().unwrap(), "2001:db8::5".parse().unwrap(), 5062);
    let out = wire(&ed.finish());
    assert!(
        out.contains("Via: SIP/2.0/UDP h;branch=z9hG4bK1;received=2001:db8::5;rport=5062\r\n"),
        "{out}"
    );
}

#[test]
fn pop_via_from_own_line_and_from_a_combined_line() {
    let m = parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP rb;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.pop_via().unwrap();
    assert_eq!(
        wire(&ed.finish()),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n"
    );
    let m = parse("SIP/2.0 200 OK\r\nv: SIP/2.0/UDP rb;branch=z9hG4bKa , SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.pop_via().unwrap();
    assert_eq!(
        wire(&ed.finish()),
        "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n"
    );
}

/// A line of the name without a value (`Via:`, `Route:`) is no top value: the line popped is
/// the one holding the value that names us (the fuzzed
/// `proxy_rewrite-pop-via-after-empty-line.bin`: the empty line went, our Via stayed).
#[test]
fn pop_skips_lines_without_values() {
    let m = parse("SIP/2.0 200 OK\r\nV:\r\nVia: SIP/2.0/UDP rb;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.pop_via().unwrap();
    assert_eq!(
        wire(&ed.finish()),
        "SIP/2.0 200 OK\r\nV:\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKb\r\nl: 0\r\n\r\n"
    );
    let m = parse("SIP/2.0 200 OK\r\nVia: ,\r\nVia: , SIP/2.0/UDP rb;branch=z9hG4bKa, SIP/2.0/UDP c\r\nl: 0\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.pop_via().unwrap();
    assert_eq!(
        wire(&ed.finish()),
        "SIP/2.0 200 OK\r\nVia: ,\r\nVia: , SIP/2.0/UDP c\r\nl: 0\r\n\r\n"
    );
    let m = parse("BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nRoute:\r\nRoute: <sip:rb;lr>\r\nRoute: <sip:next;lr>\r\n\r\n");
    let mut ed = Editor::new(&m);
    ed.pop_routes(1).unwrap();
    assert_eq!(
        wire(&ed.finish()),
        "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nRoute:\r\nRoute: <sip:next;lr>\r\n\r\n"
    );
}

#[test]
fn routes_and_missing_headers_are_added() {
    let m = parse(
        "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nRoute: <sip:rb;lr>, <sip:next;lr>\r\n\r\n",
    );
    let mut ed = Editor::new(&m);
    ed.pop_routes(1).unwrap();
    ed.set_max_forwards(70);
    ed.ensure_content_length();
    assert_eq!(
        wire(&ed.finish()),
        "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nRoute: <sip:next;lr>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
}

/// Several Routes naming us popped at once, across and within lines: (count, what is left).
#[test]
fn leading_routes_are_popped_across_lines() {
    let m = parse("BYE sip:a@b SIP/2.0\r\nRoute: <sip:r1;lr>, <sip:r2;lr>\r\nRoute:\r\nRoute: <sip:r3;lr>, <sip:r4;lr>\r\nl: 0\r\n\r\n");
    let cases = [
        (
            0,
            Some(
                "Route: <sip:r1;lr>, <sip:r2;lr>\r\nRoute:\r\nRoute: <sip:r3;lr>, <sip:r4;lr>\r\n",
            ),
        ),
        (
            1,
            Some("Route: <sip:r2;lr>\r\nRoute:\r\nRoute: <sip:r3;lr>, <sip:r4;lr>\r\n"),
        ),
        (2, Some("Route:\r\nRoute: <sip:r3;lr>, <sip:r4;lr>\r\n")),
        (3, Some("Route:\r\nRoute: <sip:r4;lr>\r\n")),
        (4, Some("Route:\r\n")),
        (5, None),
    ];
    for (count, left) in cases {
        let mut ed = Editor::new(&m);
        match (ed.pop_routes(count), left) {
            (Ok(()), Some(left)) => assert_eq!(
                wire(&ed.finish()),
                format!("BYE sip:a@b SIP/2.0\r\n{left}l: 0\r\n\r\n"),
                "{count}"
            ),
            (Err(_), None) => {}
            (result, _) => panic!("{count}: {result:?}"),
        }
    }
}

/// A Route naming us popped and a route-list pushed where it was (RFC 3261 §16.4, §16.6 step
/// 6): the insertions share the removal's start and must come out before it, in the order made,
/// whatever order the edits were recorded in (the fuzzed `ws_message-route-pop-and-push.bin`).
#[test]
fn route_pop_and_pushes_at_the_same_offset() {
    let m = parse("REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nRoute: <sip:rb;lr>\r\nCSeq: 4 REGISTER\r\n\r\n");
    let expected = "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\
                    Route: <sip:r1;lr>\r\nRoute: <sip:r2;lr>\r\nCSeq: 4 REGISTER\r\n\r\n";
    for pop_first in [true, false] {
        let mut ed = Editor::new(&m);
        if pop_first {
            ed.pop_routes(1).unwrap();
        }
        for hop in ["r1", "r2"] {
            ed.insert_header(HeaderName::Route, "Route", |o| {
                o.extend_from_slice(format!("<sip:{hop};lr>").as_bytes());
            });
        }
        if !pop_first {
            ed.pop_routes(1).unwrap();
        }
        assert_eq!(wire(&ed.finish()), expected, "pop first: {pop_first}");
    }
}

/// Overlapping edits are a bug of the caller, but never a panic: the later one replaces what
/// is left of its span.
#[test]
fn overlapping_edits_do_not_panic() {
    let m = parse("OPTIONS sip:a@b SIP/2.0\r\nSubject: abcdef\r\n\r\n");
    let subject = m.headers()[0].value;
    let mut ed = Editor::new(&m);
    ed.replace(Span::new(subject.start(), subject.start() + 4), b"X");
    ed.replace(Span::new(subject.start() + 2, subject.end()), b"Y");
    assert_eq!(
        wire(&ed.finish()),
        "OPTIONS sip:a@b SIP/2.0\r\nSubject: XY\r\n\r\n"
    );
}

/// RFC 3261 §7.3.1, RFC 4475 §3.3.9 (mcl01): different Content-Length values leave the
/// message without a length; the same value twice is one length.
#[test]
fn repeated_content_length() {
    let mcl = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 13\r\nl: 5\r\n\r\nThere's no way to know";
    assert_eq!(
        Message::parse(Bytes::from(mcl)).err(),
        Some(ParseError::BadHeaderValue(HeaderName::ContentLength))
    );
    let same = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabcdef";
    let m = parse(same);
    assert_eq!(m.content_length(), Ok(Some(3)));
    assert_eq!(&m.body()[..], b"abc");
    let bad_second = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: x\r\n\r\nabc";
    assert!(Message::parse(Bytes::from(bad_second)).is_err());
}

/// RFC 4475 §3.3.8 (multi01): Call-ID, CSeq, From and To exactly once, Max-Forwards at most
/// once (RFC 3261 §7.3.1: none of them is a list).
#[test]
fn repeated_single_value_headers_do_not_validate() {
    assert!(parse(INVITE).validate_request().is_ok());
    for (extra, name) in [
        ("i: other@example.com\r\n", HeaderName::CallId),
        ("Call-ID: other@example.com\r\n", HeaderName::CallId),
        ("CSeq: 314159 INVITE\r\n", HeaderName::CSeq),
        ("f: <sip:eve@example.com>;tag=2\r\n", HeaderName::From),
        ("To: <sip:carol@example.com>\r\n", HeaderName::To),
        ("Max-Forwards: 5\r\n", HeaderName::MaxForwards),
    ] {
        let text = INVITE.replacen("Subject:", &format!("{extra}Subject:"), 1);
        assert_eq!(
            parse(&text).validate_request(),
            Err(ParseError::RepeatedHeader(name)),
            "{extra}"
        );
    }
}

/// RFC 4475 §3.1.2.1 (badinv01): every Via value must be readable, not only the top one.
#[test]
fn every_via_value_must_parse() {
    for (vias, ok) in [
        ("Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n", false),
        (
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP\r\n",
            false,
        ),
        ("Via: SIP/2.0/UDP a;branch=z9hG4bK1, garbage\r\n", false),
        (
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/3.0/UDP b\r\n",
            false,
        ),
        ("Via: SIP/7.0/UDP a;branch=z9hG4bK1\r\n", false),
        (
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n SIP/2.0/TCP b:5070\r\n",
            true,
        ),
    ] {
        let text = INVITE.replacen(
            "Via: SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport\r\n",
            vias,
            1,
        );
        let m = parse(&text);
        assert_eq!(
            m.validate_request().is_ok(),
            ok,
            "{vias}: {:?}",
            m.validate_request()
        );
        if !ok {
            assert_eq!(
                m.validate_request(),
                Err(ParseError::BadHeaderValue(HeaderName::Via))
            );
        }
    }
}

#[test]
fn addr_spec_contact_gets_brackets() {
    let m = parse("REGISTER sip:r SIP/2.0\r\nContact: sip:u@10.0.0.1;expires=60\r\n\r\n");
    let mut ed = Editor::new(&m);
    let c = m.contacts().next().unwrap().unwrap();
    ed.replace_name_addr_uri(&c, |o| o.extend_from_slice(b"sip:u@rb;transport=ws"));
    assert_eq!(
        wire(&ed.finish()),
        "REGISTER sip:r SIP/2.0\r\nContact: <sip:u@rb;transport=ws>;expires=60\r\n\r\n"
    );
}

#[test]
fn wildcard_contact() {
    let m = parse("REGISTER sip:r SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n");
    assert!(m.has_wildcard_contact());
    assert_eq!(m.contacts().count(), 0);
    assert_eq!(m.expires(), Some(0));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = Message::parse(Bytes::from(bytes)) {
                let _ = m.validate_request();
                let _ = m.contacts().count();
                let _ = m.routes().count();
                let mut ed = Editor::new(&m);
                if let Ok(via) = m.top_via() {
                    ed.set_via_source(&via, "192.0.2.1".parse().unwrap(), 1);
                }
                let _ = ed.pop_routes(1);
                let _ = ed.finish();
            }
        }

        #[test]
        fn mutated_invites_never_panic(pos in 0usize..INVITE.len(), byte in any::<u8>()) {
            let mut bytes = INVITE.as_bytes().to_vec();
            bytes[pos] = byte;
            if let Ok(m) = Message::parse(Bytes::from(bytes)) {
                let _ = m.validate_request();
                let _ = m.vias().count();
            }
        }
    }
}

//! The ng client against a real rtpengine (Debian's `rtpengine-daemon`, userspace only): ping;
//! a WebRTC offer (ICE, DTLS-SRTP fingerprint, UDP/TLS/RTP/SAVPF, rtcp-mux) rewritten for a
//! plain RTP leg, and the plain answer rewritten back for WebRTC; delete, after which `list`
//! has no call; a stopped rtpengine is a timeout within the client's bound; and rtpengine's
//! cookie cache, which makes a retry under the same cookie harmless.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roundabout::media::ng::{self, Request};
use roundabout::media::{
    AnswerRequest, DeleteRequest, Dtls, Ice, MediaError, MediaOptions, NgClient, OfferRequest,
    RtcpMux, Settings, TransportProtocol,
};
use tokio::net::UdpSocket;

use common::require;
use common::rtpengine::{Rtpengine, WEBRTC_OFFER};

/// What a SIP phone answers: plain RTP.
const PLAIN_ANSWER: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 40002 RTP/AVP 0\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=sendrecv\r\n";

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn rtpengine() -> Option<Rtpengine> {
    require("rtpengine").then(Rtpengine::start)
}

async fn client(servers: &[SocketAddr], settings: Settings) -> NgClient {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    NgClient::new(socket, servers.to_vec(), settings).unwrap()
}

/// The WebRTC offer, to be rewritten for a plain RTP leg.
fn offer(call_id: &str) -> OfferRequest {
    OfferRequest {
        call_id: b(call_id),
        from_tag: b("webrtc-tag"),
        to_tag: None,
        via_branch: Some(b("z9hG4bK-offer")),
        sdp: b(WEBRTC_OFFER),
        options: MediaOptions {
            transport_protocol: Some(TransportProtocol::RtpAvp),
            ice: Some(Ice::Remove),
            dtls: Some(Dtls::Off),
            rtcp_mux: vec![RtcpMux::Demux],
            ..MediaOptions::default()
        },
    }
}

fn media_line(sdp: &str) -> &str {
    sdp.lines()
        .find(|line| line.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no m=audio line in\n{sdp}"))
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let Some(rtpengine) = rtpengine() else { return };
    let ng = client(&[rtpengine.ng], Settings::default()).await;
    ng.ping()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rtpengine.logs()));
}

#[tokio::test]
async fn webrtc_offer_and_plain_answer_are_rewritten_then_deleted() {
    let Some(rtpengine) = rtpengine() else { return };
    let ng = client(&[rtpengine.ng], Settings::default()).await;
    let call_id = "call-webrtc-1";

    let sdp = ng
        .offer(offer(call_id))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rtpengine.logs()));
    let sdp = String::from_utf8(sdp.to_vec()).unwrap();
    let m = media_line(&sdp);
    assert!(m.contains(" RTP/AVP "), "{m}\n{sdp}");
    assert!(!m.contains(" 40000 "), "rtpengine's own port in\n{sdp}");
    for gone in ["a=candidate", "a=fingerprint", "a=ice-ufrag", "a=rtcp-mux"] {
        assert!(!sdp.contains(gone), "{gone} in\n{sdp}");
    }

    let answer = AnswerRequest {
        call_id: b(call_id),
        from_tag: b("webrtc-tag"),
        to_tag: b("phone-tag"),
        via_branch: Some(b("z9hG4bK-offer")),
        sdp: b(PLAIN_ANSWER),
        options: MediaOptions {
            transport_protocol: Some(TransportProtocol::UdpTlsRtpSavpf),
            ice: Some(Ice::Force),
            ..MediaOptions::default()
        },
    };
    let sdp = ng
        .answer(answer)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rtpengine.logs()));
    let sdp = String::from_utf8(sdp.to_vec()).unwrap();
    let m = media_line(&sdp);
    assert!(m.contains(" UDP/TLS/RTP/SAVPF "), "{m}\n{sdp}");
    for there in ["a=candidate", "a=ice-ufrag", "a=fingerprint", "a=rtcp-mux"] {
        assert!(sdp.contains(there), "no {there} in\n{sdp}");
    }

    let calls = ng.list(None).await.unwrap();
    assert!(calls.contains(&b(call_id)), "{calls:?}");
    ng.delete(DeleteRequest {
        call_id: b(call_id),
        from_tag: b("webrtc-tag"),
        to_tag: None,
        via_branch: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rtpengine.logs()));
    let calls = ng.list(None).await.unwrap();
    assert!(calls.is_empty(), "{calls:?}\n{}", rtpengine.logs());
}

/// A UDP client retransmits its INVITE, and each copy is offered again (under a new cookie):
/// rtpengine keeps one call with the same media port, so the copies change nothing.
#[tokio::test]
async fn a_repeated_offer_keeps_one_call_and_its_port() {
    let Some(rtpengine) = rtpengine() else { return };
    let ng = client(&[rtpengine.ng], Settings::default()).await;
    let call_id = "call-repeated";
    let first = ng.offer(offer(call_id)).await.unwrap();
    let again = ng.offer(offer(call_id)).await.unwrap();
    let port = |sdp: &Bytes| media_line(std::str::from_utf8(sdp).unwrap()).to_owned();
    assert_eq!(port(&first), port(&again));
    assert_eq!(ng.list(None).await.unwrap(), [b(call_id)]);
}

#[tokio::test]
async fn an_answer_for_an_unknown_call_is_refused_with_rtpengines_reason() {
    let Some(rtpengine) = rtpengine() else { return };
    let ng = client(&[rtpengine.ng], Settings::default()).await;
    let answer = AnswerRequest {
        call_id: b("no-such-call"),
        from_tag: b("a"),
        to_tag: b("b"),
        via_branch: None,
        sdp: b(PLAIN_ANSWER),
        options: MediaOptions::default(),
    };
    let error = ng.answer(answer).await.unwrap_err();
    let MediaError::Refused(reason) = &error else {
        panic!("{error}\n{}", rtpengine.logs());
    };
    assert!(!reason.is_empty(), "{error}");
}

#[tokio::test]
async fn a_stopped_rtpengine_is_a_timeout_within_the_bound() {
    let Some(rtpengine) = rtpengine() else { return };
    let addr = rtpengine.ng;
    drop(rtpengine);
    let settings = Settings {
        timeout: Duration::from_millis(200),
        tries: NonZeroU32::new(2).unwrap(),
        ..Settings::default()
    };
    let ng = client(&[addr], settings).await;
    let start = Instant::now();
    let error = ng.ping().await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(&error, MediaError::Timeout { tries: 2, addresses, .. } if addresses == &[addr]),
        "{error}"
    );
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1400)).contains(&elapsed),
        "{error} after {elapsed:?}"
    );
}

/// What the client's retries rely on: a repeated cookie gets the cached answer and is not
/// acted on again, even when the request under it has changed (here: another call id).
#[test]
fn a_retried_offer_gets_the_cached_answer_and_makes_one_call() {
    let Some(rtpengine) = rtpengine() else { return };
    let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ask = |cookie: &[u8], request: &Request| {
        let datagram = ng::encode_request(cookie, request).unwrap();
        socket.send_to(&datagram, rtpengine.ng).unwrap();
        let mut buf = vec![0; 65_536];
        let len = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}\n{}", rtpengine.logs()));
        Bytes::copy_from_slice(&buf[..len])
    };
    let first = ask(b"retried-1", &Request::Offer(offer("call-retried")));
    let again = ask(b"retried-1", &Request::Offer(offer("call-other")));
    assert_eq!(first, again);
    let (_, dict) = ng::split_cookie(&first).unwrap();
    assert!(ng::decode_reply(&dict).unwrap().sdp().is_ok());

    let listed = ask(b"list-1", &Request::List { limit: None });
    let (_, dict) = ng::split_cookie(&listed).unwrap();
    let calls = ng::decode_reply(&dict).unwrap().calls().unwrap();
    assert_eq!(calls, vec![b("call-retried")], "{}", rtpengine.logs());
}

//! The ng control protocol's messages: `COOKIE SP BENCODED-DICT` in one UDP datagram, the
//! requests Roundabout sends (`ping`, `offer`, `answer`, `delete`, `list`) with the keys
//! rtpengine reads, and its answers (`result` = `ok`, `pong` or `error` with
//! `error-reason`). Key and value spellings are those of rtpengine's
//! docs/ng_control_protocol.md, in the forms rtpengine 10.5 (Debian 12) accepts.

use bytes::Bytes;
use thiserror::Error;

use super::bencode::{self, BencodeError, Dict, Value};

/// `transport-protocol`: the protocol written into the rewritten SDP's m= lines, which
/// rtpengine then speaks on that side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportProtocol {
    RtpAvp,
    RtpAvpf,
    RtpSavp,
    RtpSavpf,
    /// DTLS-SRTP, as WebRTC offers it (RFC 5764).
    UdpTlsRtpSavp,
    UdpTlsRtpSavpf,
}

impl TransportProtocol {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::RtpAvp => "RTP/AVP",
            TransportProtocol::RtpAvpf => "RTP/AVPF",
            TransportProtocol::RtpSavp => "RTP/SAVP",
            TransportProtocol::RtpSavpf => "RTP/SAVPF",
            TransportProtocol::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            TransportProtocol::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
        }
    }
}

/// `ICE`: what happens to ICE attributes (one string; rtpengine 10.5 reads no list here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ice {
    /// Strip them.
    Remove,
    /// Strip them and offer rtpengine as the only candidate.
    Force,
    /// Force when the SDP had ICE, else add none.
    Default,
    ForceRelay,
    Optional,
}

impl Ice {
    fn as_str(self) -> &'static str {
        match self {
            Ice::Remove => "remove",
            Ice::Force => "force",
            Ice::Default => "default",
            Ice::ForceRelay => "force-relay",
            Ice::Optional => "optional",
        }
    }
}

/// `ICE-lite`: toward which side of an offer rtpengine is an ICE-lite agent (RFC 8445 §2.5),
/// answering the peer's checks and sending where they come from instead of checking itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceLite {
    /// Toward the party the offer goes to.
    Forward,
    /// Toward the party that sent the offer.
    Backward,
}

impl IceLite {
    fn as_str(self) -> &'static str {
        match self {
            IceLite::Forward => "forward",
            IceLite::Backward => "backward",
        }
    }
}

/// `DTLS`: DTLS-SRTP's use and role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtls {
    /// Neither offer nor accept DTLS-SRTP.
    Off,
    Passive,
    Active,
}

impl Dtls {
    fn as_str(self) -> &'static str {
        match self {
            Dtls::Off => "off",
            Dtls::Passive => "passive",
            Dtls::Active => "active",
        }
    }
}

/// An entry of `rtcp-mux` (RFC 5761).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpMux {
    Offer,
    Require,
    /// Accept it from the offerer, do not offer it on.
    Demux,
    Accept,
    Reject,
}

impl RtcpMux {
    fn as_str(self) -> &'static str {
        match self {
            RtcpMux::Offer => "offer",
            RtcpMux::Require => "require",
            RtcpMux::Demux => "demux",
            RtcpMux::Accept => "accept",
            RtcpMux::Reject => "reject",
        }
    }
}

/// An entry of `replace`: which parts of the SDP rtpengine rewrites besides the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    Origin,
    SessionConnection,
    SessionName,
    SdpVersion,
    Username,
    ZeroAddress,
}

impl Replace {
    fn as_str(self) -> &'static str {
        match self {
            Replace::Origin => "origin",
            Replace::SessionConnection => "session-connection",
            Replace::SessionName => "session-name",
            Replace::SdpVersion => "SDP-version",
            Replace::Username => "username",
            Replace::ZeroAddress => "zero-address",
        }
    }
}

/// How rtpengine rewrites an SDP, for `offer` and `answer` alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaOptions {
    pub transport_protocol: Option<TransportProtocol>,
    pub ice: Option<Ice>,
    /// Only in an offer: it sets the mode for the whole call.
    pub ice_lite: Option<IceLite>,
    pub dtls: Option<Dtls>,
    pub rtcp_mux: Vec<RtcpMux>,
    pub replace: Vec<Replace>,
    /// Entries of `flags` as rtpengine spells them (`trust-address`, `strict-source`, …):
    /// there are too many, changing between versions, to type them all.
    pub flags: Vec<Bytes>,
}

/// `offer`: the SDP of a dialog-creating request, rewritten for the side it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferRequest {
    pub call_id: Bytes,
    /// The tag of the party that offers.
    pub from_tag: Bytes,
    /// The other party's, once known: a re-INVITE's, or the caller's in a late offer.
    pub to_tag: Option<Bytes>,
    pub via_branch: Option<Bytes>,
    pub sdp: Bytes,
    pub options: MediaOptions,
}

/// `answer`: the SDP answering an offer; the `to-tag` is what sets it apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRequest {
    pub call_id: Bytes,
    pub from_tag: Bytes,
    pub to_tag: Bytes,
    pub via_branch: Option<Bytes>,
    pub sdp: Bytes,
    pub options: MediaOptions,
}

/// `delete`: the end of a call, or of one branch or side of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub call_id: Bytes,
    pub from_tag: Bytes,
    pub to_tag: Option<Bytes>,
    pub via_branch: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Ping,
    Offer(OfferRequest),
    Answer(AnswerRequest),
    Delete(DeleteRequest),
    /// The call ids rtpengine holds, at most `limit` of them (rtpengine's default is 32).
    List {
        limit: Option<u32>,
    },
}

impl Request {
    #[must_use]
    pub fn command(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Offer(_) => "offer",
            Request::Answer(_) => "answer",
            Request::Delete(_) => "delete",
            Request::List { .. } => "list",
        }
    }

    fn dict(&self) -> Dict {
        let mut dict = Dict::new();
        let mut put = |key: &'static str, value: Value| {
            dict.insert(Bytes::from_static(key.as_bytes()), value);
        };
        put("command", self.command().into());
        match self {
            Request::Ping => {}
            Request::Offer(offer) => {
                put("call-id", offer.call_id.clone().into());
                put("from-tag", offer.from_tag.clone().into());
                put_some(&mut put, "to-tag", offer.to_tag.as_ref());
                put_some(&mut put, "via-branch", offer.via_branch.as_ref());
                put("sdp", offer.sdp.clone().into());
                put_options(&mut put, &offer.options);
            }
            Request::Answer(answer) => {
                put("call-id", answer.call_id.clone().into());
                put("from-tag", answer.from_tag.clone().into());
                put("to-tag", answer.to_tag.clone().into());
                put_some(&mut put, "via-branch", answer.via_branch.as_ref());
                put("sdp", answer.sdp.clone().into());
                put_options(&mut put, &answer.options);
            }
            Request::Delete(delete) => {
                put("call-id", delete.call_id.clone().into());
                put("from-tag", delete.from_tag.clone().into());
                put_some(&mut put, "to-tag", delete.to_tag.as_ref());
                put_some(&mut put, "via-branch", delete.via_branch.as_ref());
            }
            Request::List { limit } => {
                if let Some(limit) = limit {
                    put("limit", Value::Int(i64::from(*limit)));
                }
            }
        }
        dict
    }
}

fn put_some(put: &mut impl FnMut(&'static str, Value), key: &'static str, value: Option<&Bytes>) {
    if let Some(value) = value {
        put(key, value.clone().into());
    }
}

fn put_options(put: &mut impl FnMut(&'static str, Value), options: &MediaOptions) {
    let MediaOptions {
        transport_protocol,
        ice,
        ice_lite,
        dtls,
        rtcp_mux,
        replace,
        flags,
    } = options;
    let words =
        |words: Vec<&'static str>| Value::List(words.into_iter().map(Value::from).collect());
    if let Some(protocol) = transport_protocol {
        put("transport-protocol", protocol.as_str().into());
    }
    if let Some(ice) = ice {
        put("ICE", ice.as_str().into());
    }
    if let Some(ice_lite) = ice_lite {
        put("ICE-lite", ice_lite.as_str().into());
    }
    if let Some(dtls) = dtls {
        put("DTLS", dtls.as_str().into());
    }
    if !rtcp_mux.is_empty() {
        put(
            "rtcp-mux",
            words(rtcp_mux.iter().map(|m| m.as_str()).collect()),
        );
    }
    if !replace.is_empty() {
        put(
            "replace",
            words(replace.iter().map(|r| r.as_str()).collect()),
        );
    }
    if !flags.is_empty() {
        put(
            "flags",
            Value::List(flags.iter().cloned().map(Value::Bytes).collect()),
        );
    }
}

/// What makes an answer unusable.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MalformedAnswer {
    #[error("no space after the cookie")]
    NoCookie,
    #[error("{0}")]
    Bencode(#[from] BencodeError),
    #[error("not a dictionary")]
    NotADictionary,
    #[error("no result")]
    NoResult,
    #[error("result {0:?} where {1} was expected")]
    UnexpectedResult(String, &'static str),
    #[error("no {0} in the answer, or not of its type")]
    Missing(&'static str),
}

/// An answer's `result`: `error` answers are the caller's error, with their reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Pong,
    /// `ok`, with the whole dictionary (`sdp`, `calls`, `warning`, statistics).
    Ok(Dict),
    Error {
        reason: Bytes,
    },
}

impl Reply {
    /// `pong`, the only answer to `ping`.
    ///
    /// # Errors
    /// It is not.
    pub fn pong(self) -> Result<(), MalformedAnswer> {
        match self {
            Reply::Pong => Ok(()),
            other => Err(other.unexpected("pong")),
        }
    }

    /// An `ok` answer's dictionary.
    ///
    /// # Errors
    /// It is not `ok`.
    pub fn ok(self) -> Result<Dict, MalformedAnswer> {
        match self {
            Reply::Ok(dict) => Ok(dict),
            other => Err(other.unexpected("ok")),
        }
    }

    /// The rewritten SDP of an `ok` answer to `offer` or `answer`.
    ///
    /// # Errors
    /// It is not `ok`, or has no `sdp` string.
    pub fn sdp(self) -> Result<Bytes, MalformedAnswer> {
        let dict = self.ok()?;
        dict.get(&b"sdp"[..])
            .and_then(Value::as_bytes)
            .cloned()
            .ok_or(MalformedAnswer::Missing("sdp"))
    }

    /// The call ids of an `ok` answer to `list`.
    ///
    /// # Errors
    /// It is not `ok`, or `calls` is not a list of strings.
    pub fn calls(self) -> Result<Vec<Bytes>, MalformedAnswer> {
        let dict = self.ok()?;
        let calls = dict
            .get(&b"calls"[..])
            .and_then(Value::as_list)
            .ok_or(MalformedAnswer::Missing("calls"))?;
        calls
            .iter()
            .map(|call| call.as_bytes().cloned())
            .collect::<Option<_>>()
            .ok_or(MalformedAnswer::Missing("calls"))
    }

    /// An `ok` answer's `warning`, rtpengine's word for a problem it went on despite.
    #[must_use]
    pub fn warning(&self) -> Option<&Bytes> {
        match self {
            Reply::Ok(dict) => dict.get(&b"warning"[..]).and_then(Value::as_bytes),
            _ => None,
        }
    }

    fn unexpected(&self, expected: &'static str) -> MalformedAnswer {
        let result = match self {
            Reply::Pong => "pong",
            Reply::Ok(_) => "ok",
            Reply::Error { .. } => "error",
        };
        MalformedAnswer::UnexpectedResult(result.to_owned(), expected)
    }
}

/// The datagram of `request` under `cookie`.
///
/// # Errors
/// The request is too long for a datagram (an SDP of tens of kilobytes).
pub fn encode_request(cookie: &[u8], request: &Request) -> Result<Vec<u8>, BencodeError> {
    let mut datagram = Vec::with_capacity(cookie.len() + 1 + 512);
    datagram.extend_from_slice(cookie);
    datagram.push(b' ');
    bencode::encode(&Value::Dict(request.dict()), &mut datagram)?;
    if datagram.len() > bencode::MAX_LEN {
        return Err(BencodeError::TooLong);
    }
    Ok(datagram)
}

/// A datagram's cookie and the dictionary after it, still encoded: the cookie finds who waits
/// for the answer, and the dictionary is decoded by that waiter with [`decode_reply`].
///
/// # Errors
/// The datagram has no space.
pub fn split_cookie(datagram: &Bytes) -> Result<(Bytes, Bytes), MalformedAnswer> {
    let space = memchr::memchr(b' ', datagram).ok_or(MalformedAnswer::NoCookie)?;
    Ok((datagram.slice(..space), datagram.slice(space + 1..)))
}

/// The answer in a dictionary from [`split_cookie`].
///
/// # Errors
/// It is no bencoded dictionary with a known `result`.
pub fn decode_reply(dict: &Bytes) -> Result<Reply, MalformedAnswer> {
    let Value::Dict(mut dict) = bencode::decode(dict)? else {
        return Err(MalformedAnswer::NotADictionary);
    };
    let result = dict
        .get(&b"result"[..])
        .and_then(Value::as_bytes)
        .ok_or(MalformedAnswer::NoResult)?;
    match &result[..] {
        b"pong" => Ok(Reply::Pong),
        b"ok" => Ok(Reply::Ok(dict)),
        b"error" => {
            let reason = match dict.remove(&b"error-reason"[..]) {
                Some(Value::Bytes(reason)) => reason,
                _ => Bytes::new(),
            };
            Ok(Reply::Error { reason })
        }
        other => Err(MalformedAnswer::UnexpectedResult(
            String::from_utf8_lossy(other).into_owned(),
            "ok, pong or error",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn reply(text: &'static str) -> Result<Reply, MalformedAnswer> {
        decode_reply(&b(text))
    }

    #[test]
    fn ping_is_the_documented_datagram() {
        let datagram = encode_request(b"5323_1", &Request::Ping).unwrap();
        assert_eq!(datagram, b"5323_1 d7:command4:pinge");
    }

    #[test]
    fn an_offer_carries_every_option_under_rtpengines_keys() {
        let offer = Request::Offer(OfferRequest {
            call_id: b("c1"),
            from_tag: b("f1"),
            to_tag: None,
            via_branch: Some(b("z9hG4bK1")),
            sdp: b("v=0\r\n"),
            options: MediaOptions {
                transport_protocol: Some(TransportProtocol::RtpAvp),
                ice: Some(Ice::Remove),
                ice_lite: Some(IceLite::Backward),
                dtls: Some(Dtls::Off),
                rtcp_mux: vec![RtcpMux::Demux],
                replace: vec![Replace::Origin, Replace::SessionConnection],
                flags: vec![b("trust-address")],
            },
        });
        let datagram = encode_request(b"k", &offer).unwrap();
        let expected = concat!(
            "k d",
            "4:DTLS3:off",
            "3:ICE6:remove",
            "8:ICE-lite8:backward",
            "7:call-id2:c1",
            "7:command5:offer",
            "5:flagsl13:trust-addresse",
            "8:from-tag2:f1",
            "7:replacel6:origin18:session-connectione",
            "8:rtcp-muxl5:demuxe",
            "3:sdp5:v=0\r\n",
            "18:transport-protocol7:RTP/AVP",
            "10:via-branch8:z9hG4bK1",
            "e"
        );
        assert_eq!(String::from_utf8_lossy(&datagram), expected);
    }

    #[test]
    fn absent_options_are_left_out() {
        let answer = Request::Answer(AnswerRequest {
            call_id: b("c"),
            from_tag: b("f"),
            to_tag: b("t"),
            via_branch: None,
            sdp: b("v=0"),
            options: MediaOptions::default(),
        });
        let datagram = encode_request(b"k", &answer).unwrap();
        assert_eq!(
            datagram,
            b"k d7:call-id1:c7:command6:answer8:from-tag1:f3:sdp3:v=06:to-tag1:te"
        );
        let list = encode_request(b"k", &Request::List { limit: Some(5) }).unwrap();
        assert_eq!(list, b"k d7:command4:list5:limiti5ee");
    }

    #[test]
    fn a_request_too_long_for_a_datagram_is_refused() {
        let offer = Request::Offer(OfferRequest {
            call_id: b("c"),
            from_tag: b("f"),
            to_tag: None,
            via_branch: None,
            sdp: Bytes::from(vec![b'a'; 65_500]),
            options: MediaOptions::default(),
        });
        assert_eq!(
            encode_request(b"cookie", &offer),
            Err(BencodeError::TooLong)
        );
    }

    #[test]
    fn the_cookie_ends_at_the_first_space() {
        let (cookie, dict) = split_cookie(&b("abc d6:result4:ponge")).unwrap();
        assert_eq!(
            (&cookie[..], &dict[..]),
            (&b"abc"[..], &b"d6:result4:ponge"[..])
        );
        assert_eq!(split_cookie(&b("nospace")), Err(MalformedAnswer::NoCookie));
    }

    #[test]
    fn answers_by_result() {
        assert_eq!(reply("d6:result4:ponge").unwrap().pong(), Ok(()));
        assert_eq!(
            reply("d6:result2:ok3:sdp3:v=0e").unwrap().sdp(),
            Ok(b("v=0"))
        );
        assert_eq!(
            reply("d6:result2:ok5:callsl2:c12:c2ee").unwrap().calls(),
            Ok(vec![b("c1"), b("c2")])
        );
        assert_eq!(
            reply("d6:result5:error12:error-reason7:no calle").unwrap(),
            Reply::Error {
                reason: b("no call")
            }
        );
        let warned = reply("d6:result2:ok7:warning4:hmm.e").unwrap();
        assert_eq!(warned.warning(), Some(&b("hmm.")));
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        use MalformedAnswer::*;
        let cases = [
            ("le", NotADictionary),
            ("de", NoResult),
            ("d6:resulti1ee", NoResult),
            (
                "d6:result5:maybee",
                UnexpectedResult("maybe".into(), "ok, pong or error"),
            ),
            ("d6:result", Bencode(BencodeError::Truncated)),
        ];
        for (text, error) in cases {
            assert_eq!(reply(text), Err(error), "{text}");
        }
        assert_eq!(reply("d6:result2:oke").unwrap().sdp(), Err(Missing("sdp")));
        assert_eq!(
            reply("d6:result2:ok5:callsli1eee").unwrap().calls(),
            Err(Missing("calls"))
        );
        assert_eq!(
            reply("d6:result2:oke").unwrap().pong(),
            Err(UnexpectedResult("ok".into(), "pong"))
        );
    }
}

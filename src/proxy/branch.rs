//! Roundabout's Via branch and To tag: keyed MACs (SipHash-2-4, with a key derived from the
//! `-token-key`) instead of plain hashes, so a response is accepted only when it answers a
//! request Roundabout really sent, and only from where it went.
//!
//! The branch is a function of what identifies the forwarded request — the previous hop's
//! branch and transport, the address it came from (which Roundabout writes into the Via as
//! `received`/`rport`), Call-ID, CSeq number and method — and of where it went. So it stays
//! deterministic: a retransmission, its CANCEL and the ACK of a non-2xx get the same branch
//! (RFC 3261 §16.11), on every build and every instance sharing the key. Every one of those
//! values comes back in the response, so the branch is checked without any state: a forged
//! response, a copied Via or a response from another address does not verify.

use std::hash::Hasher as _;
use std::net::IpAddr;

use ring::hmac;
use siphasher::sip::SipHasher24;

use crate::sip::lex::parse_u32;
use crate::sip::text::hex_digits;
use crate::sip::uri::parse_host_ip;
use crate::sip::{Message, ParseError, Transport};
use crate::transport::FlowKey;

/// Every branch Roundabout writes starts with this (RFC 3261 magic cookie + our mark), so a
/// response's top Via can be recognised as ours. The MAC follows as 16 lower-case hex digits.
pub const BRANCH_PREFIX: &str = "z9hG4bKrb";
/// Length of the hex MAC after the prefix.
const BRANCH_DIGITS: usize = 16;
/// The lowest bit of a branch says whether the request is forwarded transaction-statefully,
/// so a response to a stateless request never costs a look into the transaction table.
const STATEFUL_BIT: u64 = 1;
/// The To tag of Roundabout's own answers: this prefix and 8 hex digits of a MAC.
const TO_TAG_PREFIX: &str = "rb";

/// Who may answer a request: exactly the address it went to, or, for a request sent to a
/// trusted server, any trusted server (a server that answers from another address of its
/// own must have that address in the table too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder {
    TrustedServer,
    Exactly(FlowKey),
}

/// The hop a request came from, as its Via records it once Roundabout has stamped it.
#[derive(Clone, Copy, Debug)]
pub struct PreviousHop<'a> {
    /// The Via's transport token, case-insensitively (unknown tokens count as one value).
    pub transport: Option<Transport>,
    /// The Via's `branch` value, empty for an RFC 2543 peer without one.
    pub branch: &'a [u8],
    /// `received` and `rport`: where the request came from and the response goes back to.
    pub ip: IpAddr,
    pub port: u16,
}

impl<'m> PreviousHop<'m> {
    /// The hop `msg` came from over `source`, as the Via Roundabout stamps records it.
    ///
    /// # Errors
    /// The request has no readable top Via.
    pub fn of_request(msg: &'m Message, source: &FlowKey) -> Result<PreviousHop<'m>, ParseError> {
        let buf = msg.bytes();
        let top = msg.top_via()?;
        Ok(PreviousHop {
            transport: Transport::from_token(&buf[top.transport.range()]),
            branch: top.branch(buf).unwrap_or_default(),
            ip: source.remote.ip(),
            port: source.remote.port(),
        })
    }
}

/// Why the hop below Roundabout's Via of a forwarded message cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPreviousHop {
    NoVia,
    UnknownTransport,
    /// No `received` and `rport`, which Roundabout writes on every request it forwards.
    NoSource,
}

impl<'m> PreviousHop<'m> {
    /// The hop a message Roundabout forwarded (or a response to it) came from, as the Via
    /// below Roundabout's records it: the same values [`PreviousHop::of_request`] read, and
    /// the transport that Via names.
    ///
    /// # Errors
    /// No Via below the top one, an unknown transport in it, or no `received`/`rport`.
    pub fn below_ours(msg: &'m Message) -> Result<(PreviousHop<'m>, Transport), NoPreviousHop> {
        let buf = msg.bytes();
        let Some(Ok(next)) = msg.lower_vias().next() else {
            return Err(NoPreviousHop::NoVia);
        };
        let transport = Transport::from_token(&buf[next.transport.range()])
            .ok_or(NoPreviousHop::UnknownTransport)?;
        let ip = next
            .param(buf, "received")
            .and_then(|p| p.value)
            .and_then(|v| parse_host_ip(&buf[v.range()]));
        let port = next
            .param(buf, "rport")
            .and_then(|p| p.value)
            .and_then(|v| parse_u32(&buf[v.range()]))
            .and_then(|p| u16::try_from(p).ok());
        let (Some(ip), Some(port)) = (ip, port) else {
            return Err(NoPreviousHop::NoSource);
        };
        let previous = PreviousHop {
            transport: Some(transport),
            branch: next.branch(buf).unwrap_or_default(),
            ip,
            port,
        };
        Ok((previous, transport))
    }
}

/// What a branch is computed over: one forwarded request and its next hop.
#[derive(Clone, Copy, Debug)]
pub struct BranchInput<'a> {
    pub previous: PreviousHop<'a>,
    pub call_id: &'a [u8],
    pub cseq: u32,
    /// The CSeq method as written.
    pub method: &'a [u8],
    pub responder: Responder,
    pub stateful: bool,
}

/// Roundabout's branch value as read back from a Via (ordered only to key the timer heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Branch(pub u64);

impl Branch {
    #[must_use]
    pub fn is_stateful(self) -> bool {
        self.0 & STATEFUL_BIT != 0
    }

    /// Reads `z9hG4bKrb<16 hex>`; `None` for anything else.
    #[must_use]
    pub fn parse(value: &[u8]) -> Option<Branch> {
        let digits = value.strip_prefix(BRANCH_PREFIX.as_bytes())?;
        if digits.len() != BRANCH_DIGITS {
            return None;
        }
        digits
            .iter()
            .try_fold(0u64, |acc, &d| {
                let nibble = match d {
                    b'0'..=b'9' => d - b'0',
                    b'a'..=b'f' => d - b'a' + 10,
                    _ => return None,
                };
                Some(acc << 4 | u64::from(nibble))
            })
            .map(Branch)
    }
}

/// The MAC key. Derived from the token key, so instances that share `-token-key` accept each
/// other's responses, and a new key invalidates every branch in flight with the tokens.
#[derive(Clone)]
pub struct BranchKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BranchKey(..)")
    }
}

/// Separates the MACs made with one key, so a value of one kind is never valid as another.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Domain {
    Branch = 1,
    ToTag = 2,
    ServerTransaction = 3,
}

/// A SipHash key of its own derived from the token key for `purpose`, so the token key is
/// never used with two algorithms and each use of SipHash has its own key.
pub(super) fn sip_key(token_key: &[u8; 32], purpose: &[u8]) -> (u64, u64) {
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, token_key), purpose);
    let half = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&derived.as_ref()[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    (half(0), half(8))
}

impl BranchKey {
    #[must_use]
    pub fn new(token_key: &[u8; 32]) -> BranchKey {
        let (k0, k1) = sip_key(token_key, b"roundabout via branch v1");
        BranchKey { k0, k1 }
    }

    /// The MAC of `fixed` (which gets the lengths of the variable fields) and `variable`. The
    /// fixed-size values go to the hasher in one write: a write per small value costs more in
    /// the hasher's buffering than the hashing itself.
    fn mac(&self, mut fixed: Fixed, variable: &[&[u8]]) -> u64 {
        for field in variable {
            fixed.put(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes());
        }
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(fixed.bytes());
        for field in variable {
            h.write(field);
        }
        h.finish()
    }

    /// The branch for a forwarded request (or the one its response must carry).
    #[must_use]
    pub fn branch(&self, input: &BranchInput<'_>) -> Branch {
        let previous = &input.previous;
        let mut fixed = Fixed::new(Domain::Branch);
        // The stateful bit is an input too: flipping it in a response breaks the MAC.
        fixed.put(&[u8::from(input.stateful)]);
        fixed.put(&[previous.transport.map_or(u8::MAX, |t| t as u8)]);
        fixed.address(previous.ip, previous.port);
        fixed.put(&input.cseq.to_le_bytes());
        match input.responder {
            Responder::TrustedServer => fixed.put(&[0]),
            Responder::Exactly(flow) => {
                fixed.put(&[1 + flow.transport as u8]);
                fixed.address(flow.remote.ip(), flow.remote.port());
            }
        }
        // ACK (of a non-2xx) and CANCEL share the branch of the INVITE they belong to.
        let variable = [previous.branch, input.call_id, method_class(input.method)];
        let mac = self.mac(fixed, &variable) & !STATEFUL_BIT;
        Branch(if input.stateful {
            mac | STATEFUL_BIT
        } else {
            mac
        })
    }

    /// The To tag of an answer Roundabout sends itself: the same for retransmissions of the
    /// request, so the ACK that follows can be recognised without state (RFC 3261 §17.2.1).
    #[must_use]
    pub fn to_tag(&self, call_id: &[u8], cseq: u32) -> u32 {
        let mut fixed = Fixed::new(Domain::ToTag);
        fixed.put(&cseq.to_le_bytes());
        // 32 bits tell Roundabout's answers apart within one Call-ID, and a short tag keeps
        // small answers under the size of their request (see the handler's `amplifies`).
        (self.mac(fixed, &[call_id]) >> 32) as u32
    }

    /// Whether `tag` is one `to_tag` made for this Call-ID and CSeq number.
    #[must_use]
    pub fn is_own_to_tag(&self, tag: &[u8], call_id: &[u8], cseq: u32) -> bool {
        let Some(hex) = tag.strip_prefix(TO_TAG_PREFIX.as_bytes()) else {
            return false;
        };
        hex == hex_digits::<8>(u64::from(self.to_tag(call_id, cseq)))
    }

    /// The To tag text for an answer.
    #[must_use]
    pub fn to_tag_text(&self, call_id: &[u8], cseq: u32) -> String {
        let digits = hex_digits::<8>(u64::from(self.to_tag(call_id, cseq)));
        let mut tag = String::with_capacity(TO_TAG_PREFIX.len() + digits.len());
        tag.push_str(TO_TAG_PREFIX);
        tag.extend(digits.iter().map(|&d| char::from(d)));
        tag
    }

    /// Identifies the request a server transaction holds, as RFC 3261 §17.2.3 matches one
    /// (branch of the top Via, where it came from, method class), so a CANCEL or the ACK of a
    /// non-2xx finds its INVITE whatever its routing would say now.
    #[must_use]
    pub fn server_transaction(&self, previous: &PreviousHop<'_>, call_id: &[u8], cseq: u32) -> u64 {
        let mut fixed = Fixed::new(Domain::ServerTransaction);
        fixed.address(previous.ip, previous.port);
        fixed.put(&cseq.to_le_bytes());
        self.mac(fixed, &[previous.branch, call_id])
    }
}

/// The fixed-size part of a MAC's input: first the domain, so that no input of one kind is
/// the input of another, then at most two addresses with their ports, a few one-byte codes, a
/// CSeq number and three lengths (58 bytes).
struct Fixed {
    bytes: [u8; 64],
    len: usize,
}

impl Fixed {
    fn new(domain: Domain) -> Fixed {
        let mut fixed = Fixed {
            bytes: [0; 64],
            len: 0,
        };
        fixed.put(&[domain as u8]);
        fixed
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// One form per address: an IPv4-mapped IPv6 source and the IPv4 text of `received` agree.
    fn address(&mut self, ip: IpAddr, port: u16) {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                self.put(&[4]);
                self.put(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.put(&[6]);
                self.put(&v6.octets());
            }
        }
        self.put(&port.to_le_bytes());
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn method_class(method: &[u8]) -> &[u8] {
    match method {
        b"ACK" | b"CANCEL" => b"INVITE",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(branch: &'a [u8], method: &'a [u8], responder: Responder) -> BranchInput<'a> {
        BranchInput {
            previous: PreviousHop {
                transport: Some(Transport::Udp),
                branch,
                ip: "192.0.2.1".parse().unwrap(),
                port: 5060,
            },
            call_id: b"call-1",
            cseq: 7,
            method,
            responder,
            stateful: false,
        }
    }

    fn server() -> Responder {
        Responder::Exactly(FlowKey {
            transport: Transport::Udp,
            remote: "203.0.113.9:5060".parse().unwrap(),
        })
    }

    #[test]
    fn invite_cancel_and_ack_share_a_branch_other_requests_do_not() {
        let key = BranchKey::new(&[1; 32]);
        let invite = key.branch(&input(b"z9hG4bK1", b"INVITE", server()));
        assert_eq!(invite, key.branch(&input(b"z9hG4bK1", b"CANCEL", server())));
        assert_eq!(invite, key.branch(&input(b"z9hG4bK1", b"ACK", server())));
        assert_ne!(
            invite,
            key.branch(&input(b"z9hG4bK1", b"REGISTER", server()))
        );
        assert_ne!(invite, key.branch(&input(b"z9hG4bK2", b"INVITE", server())));
        assert_ne!(
            invite,
            key.branch(&input(b"z9hG4bK1", b"INVITE", Responder::TrustedServer))
        );
        let other_key = BranchKey::new(&[2; 32]);
        assert_ne!(
            invite,
            other_key.branch(&input(b"z9hG4bK1", b"INVITE", server()))
        );
    }

    #[test]
    fn the_stateful_bit_is_part_of_the_branch_and_read_back() {
        let key = BranchKey::new(&[1; 32]);
        let mut stateful = input(b"z9hG4bK1", b"MESSAGE", server());
        stateful.stateful = true;
        let with = key.branch(&stateful);
        let without = key.branch(&input(b"z9hG4bK1", b"MESSAGE", server()));
        assert!(with.is_stateful());
        assert!(!without.is_stateful());
        assert_ne!(
            with.0 & !1,
            without.0 & !1,
            "the bit is authenticated: flipping it does not give the other branch"
        );
        let text = format!("{BRANCH_PREFIX}{:016x}", with.0);
        assert_eq!(Branch::parse(text.as_bytes()), Some(with));
        for bad in [
            &b"z9hG4bKrb0123"[..],
            b"z9hG4bKrb0123456789ABCDEF",
            b"z9hG4bKrb0123456789abcdef0",
            b"z9hG4bK-0123456789abcdef",
        ] {
            assert_eq!(Branch::parse(bad), None);
        }
    }

    #[test]
    fn own_to_tags_are_recognised_for_their_request_only() {
        let key = BranchKey::new(&[1; 32]);
        let tag = key.to_tag_text(b"c1", 1);
        assert_eq!(tag.len(), 10);
        assert!(key.is_own_to_tag(tag.as_bytes(), b"c1", 1));
        assert!(!key.is_own_to_tag(tag.as_bytes(), b"c1", 2));
        assert!(!key.is_own_to_tag(tag.as_bytes(), b"c2", 1));
        assert!(!BranchKey::new(&[3; 32]).is_own_to_tag(tag.as_bytes(), b"c1", 1));
        assert!(!key.is_own_to_tag(b"rb", b"c1", 1));
    }

    #[test]
    fn mapped_and_plain_ipv4_sources_agree() {
        let key = BranchKey::new(&[1; 32]);
        let plain = input(b"z9hG4bK1", b"INVITE", server());
        let mut mapped = plain;
        mapped.previous.ip = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key.branch(&plain), key.branch(&mapped));
    }

    /// The domain comes first: a To tag input crafted to be the bytes of a branch input (a
    /// Call-ID and CSeq of the sender's choosing) is not, so a To tag tells nothing of a
    /// branch. With the domain after the fixed fields, this crafted pair collided.
    #[test]
    fn a_to_tag_input_is_never_a_branch_input() {
        let key = BranchKey::new(&[9; 32]);
        let (ip, port, cseq) = ([198u8, 51, 2, 77], 1u16, 256u32);
        let (b, m): (&[u8], &[u8]) = (b"z9hG4bK-abcdefghijkl", b"REGISTER");
        let n = usize::from(ip[3]) + 256 * usize::from(port);
        let cid = vec![b'c'; n - 17 - b.len() - m.len()];
        let branch = key.branch(&BranchInput {
            previous: PreviousHop {
                transport: Some(Transport::Udp),
                branch: b,
                ip: IpAddr::from(ip),
                port,
            },
            call_id: &cid,
            cseq,
            method: m,
            responder: Responder::TrustedServer,
            stateful: false,
        });
        let tag_cseq = u32::from_le_bytes([Transport::Udp as u8, 4, ip[0], ip[1]]);
        let mut tag_call_id = cseq.to_le_bytes()[1..].to_vec();
        tag_call_id.extend_from_slice(&[0, Domain::Branch as u8]);
        for field in [b, &cid[..], m] {
            tag_call_id.extend_from_slice(&u32::try_from(field.len()).unwrap().to_le_bytes());
        }
        for field in [b, &cid[..], m] {
            tag_call_id.extend_from_slice(field);
        }
        assert_ne!(key.to_tag(&tag_call_id, tag_cseq), (branch.0 >> 32) as u32);
    }
}

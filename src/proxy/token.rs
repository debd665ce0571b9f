//! Contact tokens: Roundabout writes its own address into every Contact it forwards and keeps
//! the original in a URI parameter, authenticated so it can only ever route where a real
//! message came from (the idea of OverSIP's signed `ov-ob` parameter).
//!
//! Layout before base64url: `version | transport | flags | family | addr | port | [connection]
//! | uri | mac`. Version 2 (written): `connection` is the 8-byte id of the client's connection
//! when the flag says so, and `mac` is SipHash-2-4-128 over everything before it, keyed with a
//! key derived from `-token-key`, truncated to 12 bytes. Version 1 (still read, so tokens held
//! by registrars and dialogs survive an upgrade): no connection, HMAC-SHA256 truncated to 12.

use std::hash::Hasher as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use ring::hmac;
use siphasher::sip128::{Hasher128 as _, SipHasher24};

use crate::sip::Transport;
use crate::transport::{ConnectionId, FlowKey};

/// The URI parameter carrying the token.
pub const PARAM: &str = "rbt";

const VERSION_HMAC: u8 = 1;
const VERSION: u8 = 2;
const MAC_LEN: usize = 12;
/// Largest original URI a token carries; longer Contacts are refused rather than grown without bound.
pub const MAX_URI_LEN: usize = 1024;
const FLAG_MAY_CONNECT: u8 = 1;
const FLAG_CONNECTION: u8 = 2;
/// version, transport, flags, family, an IPv6 address, port, connection id.
const MAX_HEAD: usize = 4 + 16 + 2 + 8;

/// What a token says: where the original contact lives and the URI to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactToken {
    pub flow: FlowKey,
    /// The client's connection, for a stream flow the client opened: only it will do (a new
    /// connection from the same address and port is someone else's).
    pub connection: Option<ConnectionId>,
    /// Whether Roundabout may dial the flow again if it is gone (it dialled it in the first place).
    pub may_connect: bool,
    pub original_uri: Vec<u8>,
}

/// Signs and verifies tokens with the `-token-key`.
#[derive(Clone)]
pub struct TokenKey {
    sip: (u64, u64),
    /// For version 1 tokens.
    hmac: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("contact URI longer than {MAX_URI_LEN} bytes")]
    UriTooLong,
}

impl TokenKey {
    #[must_use]
    pub fn new(secret: &[u8; 32]) -> TokenKey {
        TokenKey {
            sip: super::branch::sip_key(secret, b"roundabout contact token v2"),
            hmac: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The MAC of a version 2 token: SipHash-2-4-128, a fraction of HMAC-SHA256's cost for
    /// the short input of a token, which every forwarded Contact pays.
    fn mac(&self, signed: &[u8]) -> [u8; 16] {
        let mut hasher = SipHasher24::new_with_keys(self.sip.0, self.sip.1);
        hasher.write(signed);
        hasher.finish128().as_bytes()
    }

    /// Appends the base64url token for `flow` (and its `connection`) and `original_uri`.
    pub fn encode_into(
        &self,
        out: &mut BytesMut,
        flow: FlowKey,
        connection: Option<ConnectionId>,
        may_connect: bool,
        original_uri: &[u8],
    ) -> Result<(), TokenError> {
        if original_uri.len() > MAX_URI_LEN {
            return Err(TokenError::UriTooLong);
        }
        let mut raw = [0u8; MAX_HEAD + MAX_URI_LEN + MAC_LEN];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            raw[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        let mut flags = if may_connect { FLAG_MAY_CONNECT } else { 0 };
        if connection.is_some() {
            flags |= FLAG_CONNECTION;
        }
        put(&[VERSION, transport_code(flow.transport), flags]);
        match flow.remote.ip() {
            IpAddr::V4(ip) => {
                put(&[4]);
                put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                put(&[6]);
                put(&ip.octets());
            }
        }
        put(&flow.remote.port().to_be_bytes());
        if let Some(ConnectionId(id)) = connection {
            put(&id.to_be_bytes());
        }
        put(original_uri);
        let tag = self.mac(&raw[..len]);
        raw[len..len + MAC_LEN].copy_from_slice(&tag[..MAC_LEN]);
        len += MAC_LEN;
        let start = out.len();
        let encoded_len = base64::encoded_len(len, false).unwrap_or(0);
        out.resize(start + encoded_len, 0);
        let written = URL_SAFE_NO_PAD
            .encode_slice(&raw[..len], &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        Ok(())
    }

    /// Decodes and authenticates a token; `None` for anything forged, truncated or stale.
    #[must_use]
    pub fn decode(&self, token: &[u8]) -> Option<ContactToken> {
        if token.len() > base64::encoded_len(MAX_HEAD + MAX_URI_LEN + MAC_LEN, false)? {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (signed, mac) = raw.split_at(raw.len().checked_sub(MAC_LEN)?);
        let expected: [u8; MAC_LEN] = match *signed.first()? {
            VERSION => self.mac(signed)[..MAC_LEN].try_into().ok()?,
            VERSION_HMAC => hmac::sign(&self.hmac, signed).as_ref()[..MAC_LEN]
                .try_into()
                .ok()?,
            _ => return None,
        };
        // Compare the truncated tag without an early exit, so timing tells nothing about it.
        let difference = expected
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return None;
        }
        let (&[version, transport, flags, family], rest) = signed.split_first_chunk::<4>()?;
        let transport = transport_from_code(transport)?;
        let (ip, rest) = match family {
            4 => {
                let (octets, rest) = rest.split_first_chunk::<4>()?;
                (IpAddr::V4(Ipv4Addr::from(*octets)), rest)
            }
            6 => {
                let (octets, rest) = rest.split_first_chunk::<16>()?;
                (IpAddr::V6(Ipv6Addr::from(*octets)), rest)
            }
            _ => return None,
        };
        let (port, mut uri) = rest.split_first_chunk::<2>()?;
        let mut connection = None;
        if version == VERSION && flags & FLAG_CONNECTION != 0 {
            let (id, rest) = uri.split_first_chunk::<8>()?;
            connection = Some(ConnectionId(u64::from_be_bytes(*id)));
            uri = rest;
        }
        Some(ContactToken {
            flow: FlowKey {
                transport,
                remote: SocketAddr::new(ip, u16::from_be_bytes(*port)),
            },
            connection,
            may_connect: flags & FLAG_MAY_CONNECT != 0,
            original_uri: uri.to_vec(),
        })
    }
}

fn transport_code(transport: Transport) -> u8 {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

fn transport_from_code(code: u8) -> Option<Transport> {
    Transport::ALL
        .into_iter()
        .find(|&t| transport_code(t) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(transport: Transport, addr: &str) -> FlowKey {
        FlowKey {
            transport,
            remote: addr.parse().unwrap(),
        }
    }

    fn encode(key: &TokenKey, f: FlowKey, uri: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        key.encode_into(&mut out, f, None, true, uri).unwrap();
        out.to_vec()
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let key = TokenKey::new(&[7; 32]);
        for f in [
            flow(Transport::Wss, "192.0.2.10:50123"),
            flow(Transport::Udp, "[2001:db8::1]:5060"),
        ] {
            let token = encode(&key, f, b"sip:abc@df7jal23ls0d.invalid;transport=ws");
            assert!(token
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
            let decoded = key.decode(&token).unwrap();
            assert_eq!(decoded.flow, f);
            assert!(decoded.may_connect);
            assert_eq!(
                decoded.original_uri,
                b"sip:abc@df7jal23ls0d.invalid;transport=ws"
            );
        }
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let key = TokenKey::new(&[7; 32]);
        let other = TokenKey::new(&[8; 32]);
        let token = encode(&key, flow(Transport::Tcp, "192.0.2.1:5060"), b"sip:a@b");
        assert!(other.decode(&token).is_none());
        let mut flipped = token.clone();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        assert!(key.decode(&flipped).is_none());
        assert!(key.decode(&token[..token.len() - 2]).is_none());
        assert!(key.decode(b"").is_none());
        assert!(key.decode(b"!!notbase64!!").is_none());
        assert!(key.decode(&vec![b'A'; 5000]).is_none());
    }

    #[test]
    fn overlong_uris_are_refused() {
        let key = TokenKey::new(&[1; 32]);
        let uri = vec![b'a'; MAX_URI_LEN + 1];
        assert_eq!(
            key.encode_into(
                &mut BytesMut::new(),
                flow(Transport::Udp, "192.0.2.1:1"),
                None,
                false,
                &uri
            ),
            Err(TokenError::UriTooLong)
        );
    }

    #[test]
    fn a_connection_is_named_and_authenticated() {
        let key = TokenKey::new(&[7; 32]);
        let f = flow(Transport::Ws, "192.0.2.10:50123");
        let mut out = BytesMut::new();
        key.encode_into(
            &mut out,
            f,
            Some(ConnectionId(0xdead_beef_0042)),
            false,
            b"sip:a@b",
        )
        .unwrap();
        let decoded = key.decode(&out).unwrap();
        assert_eq!(decoded.connection, Some(ConnectionId(0xdead_beef_0042)));
        assert_eq!(decoded.flow, f);
        assert!(!decoded.may_connect);
        assert_eq!(decoded.original_uri, b"sip:a@b");
    }

    /// A token written by an earlier build (version 1, HMAC-SHA256) is still honoured.
    #[test]
    fn version_1_tokens_still_decode() {
        let secret = [7; 32];
        let key = TokenKey::new(&secret);
        let mut raw = vec![
            VERSION_HMAC,
            transport_code(Transport::Udp),
            FLAG_MAY_CONNECT,
            4,
        ];
        raw.extend_from_slice(&[192, 0, 2, 1]);
        raw.extend_from_slice(&5060u16.to_be_bytes());
        raw.extend_from_slice(b"sip:old@192.0.2.1");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), &raw);
        raw.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
        let token = URL_SAFE_NO_PAD.encode(&raw);
        let decoded = key.decode(token.as_bytes()).unwrap();
        assert_eq!(decoded.flow, flow(Transport::Udp, "192.0.2.1:5060"));
        assert_eq!(decoded.connection, None);
        assert_eq!(decoded.original_uri, b"sip:old@192.0.2.1");
        // Its HMAC does not make a valid version 2 token.
        raw[0] = VERSION;
        assert!(key
            .decode(URL_SAFE_NO_PAD.encode(&raw).as_bytes())
            .is_none());
    }
}

//! Contact tokens: Roundabout writes its own address into every Contact it forwards and keeps
//! the original in a URI parameter, authenticated so it can only ever route where a real
//! message came from (the idea of OverSIP's signed `ov-ob` parameter).
//!
//! Layout before base64url: `version | transport | flags | family | addr | port | uri | mac`,
//! where `mac` is HMAC-SHA256 over everything before it, truncated to 12 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use ring::hmac;

use crate::transport::{FlowKey, Transport};

/// The URI parameter carrying the token.
pub const PARAM: &str = "rbt";

const VERSION: u8 = 1;
const MAC_LEN: usize = 12;
/// Largest original URI a token carries; longer Contacts are refused rather than grown without bound.
pub const MAX_URI_LEN: usize = 1024;
const FLAG_MAY_CONNECT: u8 = 1;

/// What a token says: where the original contact lives and the URI to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactToken {
    pub flow: FlowKey,
    /// Whether Roundabout may dial the flow again if it is gone (it dialled it in the first place).
    pub may_connect: bool,
    pub original_uri: Vec<u8>,
}

/// Signs and verifies tokens with the `-token-key`.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
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
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Appends the base64url token for `flow` and `original_uri` to `out`.
    pub fn encode_into(
        &self,
        out: &mut BytesMut,
        flow: FlowKey,
        may_connect: bool,
        original_uri: &[u8],
    ) -> Result<(), TokenError> {
        if original_uri.len() > MAX_URI_LEN {
            return Err(TokenError::UriTooLong);
        }
        let mut raw = [0u8; 4 + 16 + 2 + MAX_URI_LEN + MAC_LEN];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            raw[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(&[
            VERSION,
            transport_code(flow.transport),
            if may_connect { FLAG_MAY_CONNECT } else { 0 },
        ]);
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
        put(original_uri);
        let tag = hmac::sign(&self.key, &raw[..len]);
        raw[len..len + MAC_LEN].copy_from_slice(&tag.as_ref()[..MAC_LEN]);
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
        if token.len() > base64::encoded_len(4 + 16 + 2 + MAX_URI_LEN + MAC_LEN, false)? {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (signed, mac) = raw.split_at(raw.len().checked_sub(MAC_LEN)?);
        let expected = hmac::sign(&self.key, signed);
        // Compare the truncated tag without an early exit, so timing tells nothing about it.
        let difference = expected.as_ref()[..MAC_LEN]
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return None;
        }
        let (&[version, transport, flags, family], rest) = signed.split_first_chunk::<4>()?;
        if version != VERSION {
            return None;
        }
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
        let (port, uri) = rest.split_first_chunk::<2>()?;
        Some(ContactToken {
            flow: FlowKey {
                transport,
                remote: SocketAddr::new(ip, u16::from_be_bytes(*port)),
            },
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
        key.encode_into(&mut out, f, true, uri).unwrap();
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
                false,
                &uri
            ),
            Err(TokenError::UriTooLong)
        );
    }
}

//! The HEPv3 packet: "HEP3", the total length, then chunks, each a vendor id, a type id and
//! its own length (all big-endian, lengths counting their 6-byte chunk header), then the
//! value. Chunk types are those of the generic vendor (0) in the sipcapture HEP spec.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

/// What one captured message becomes: the 5-tuple, the time, the agent and the SIP bytes.
#[derive(Debug)]
pub struct Packet<'a> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub ip_protocol: u8,
    /// Since the Unix epoch.
    pub time: Duration,
    pub agent_id: u32,
    /// The message in pieces (head and body), sent as one payload chunk.
    pub payload: &'a [&'a [u8]],
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const PROTOCOL_SIP: u8 = 1;
const CHUNK_HEADER: usize = 6;

/// The packet would not fit the 16-bit total length.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a HEP packet of {0} bytes exceeds 65535")]
pub struct TooLong(pub usize);

/// Writes `packet` into `out` (cleared first).
///
/// # Errors
/// [`TooLong`] when the payload makes the packet longer than the 16-bit length allows.
pub fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), TooLong> {
    out.clear();
    out.extend_from_slice(b"HEP3\0\0");
    // Both ends of one family: a v4 remote with a v6 wildcard local shows as 0.0.0.0.
    let (source, destination) = same_family(packet.source.ip(), packet.destination.ip());
    match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            chunk(out, 1, &[AF_INET]);
            chunk(out, 2, &[packet.ip_protocol]);
            chunk(out, 3, &source.octets());
            chunk(out, 4, &destination.octets());
        }
        (source, destination) => {
            chunk(out, 1, &[AF_INET6]);
            chunk(out, 2, &[packet.ip_protocol]);
            chunk(out, 5, &v6(source).octets());
            chunk(out, 6, &v6(destination).octets());
        }
    }
    chunk(out, 7, &packet.source.port().to_be_bytes());
    chunk(out, 8, &packet.destination.port().to_be_bytes());
    let seconds = u32::try_from(packet.time.as_secs()).unwrap_or(u32::MAX);
    chunk(out, 9, &seconds.to_be_bytes());
    chunk(out, 10, &packet.time.subsec_micros().to_be_bytes());
    chunk(out, 11, &[PROTOCOL_SIP]);
    chunk(out, 12, &packet.agent_id.to_be_bytes());
    let payload_len: usize = packet.payload.iter().map(|piece| piece.len()).sum();
    let total = out.len() + CHUNK_HEADER + payload_len;
    let (Ok(total16), Ok(chunk16)) = (
        u16::try_from(total),
        u16::try_from(CHUNK_HEADER + payload_len),
    ) else {
        return Err(TooLong(total));
    };
    chunk_header(out, 15, chunk16);
    for piece in packet.payload {
        out.extend_from_slice(piece);
    }
    out[4..6].copy_from_slice(&total16.to_be_bytes());
    Ok(())
}

/// The current time as [`Packet::time`] wants it.
#[must_use]
pub fn now() -> Duration {
    UNIX_EPOCH.elapsed().unwrap_or_default()
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // Values here are at most 16 bytes: the length always fits.
    chunk_header(out, kind, (CHUNK_HEADER + value.len()) as u16);
    out.extend_from_slice(value);
}

fn chunk_header(out: &mut Vec<u8>, kind: u16, len: u16) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

/// The two addresses in one family: IPv4 if both are (or are v4-mapped), else both IPv6; an
/// unspecified address takes the other's family.
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V6(six)) if six.is_unspecified() => {
            (a, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        }
        (IpAddr::V6(six), IpAddr::V4(_)) if six.is_unspecified() => {
            (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), b)
        }
        _ => (a, b),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(four) => four.to_ipv6_mapped(),
        IpAddr::V6(six) => six,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet<'a>(source: &str, destination: &str, payload: &'a [&'a [u8]]) -> Packet<'a> {
        Packet {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            ip_protocol: IPPROTO_UDP,
            time: Duration::new(0x6543_2100, 123_456_789),
            agent_id: 2001,
            payload,
        }
    }

    #[test]
    fn an_ipv4_packet_has_the_spec_layout() {
        let mut out = Vec::new();
        let payload: [&[u8]; 2] = [b"OPTIONS sip:a SIP/2.0\r\n\r\n", b"hi"];
        encode(
            &packet("192.0.2.1:5060", "198.51.100.2:5080", &payload),
            &mut out,
        )
        .unwrap();
        let mut expected: Vec<u8> = b"HEP3".to_vec();
        expected.extend_from_slice(&[0, 0]); // patched below
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 7, 2]); // family AF_INET
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 7, 17]); // protocol UDP
        expected.extend_from_slice(&[0, 0, 0, 3, 0, 10, 192, 0, 2, 1]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 10, 198, 51, 100, 2]);
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 8, 0x13, 0xc4]); // 5060
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 8, 0x13, 0xd8]); // 5080
        expected.extend_from_slice(&[0, 0, 0, 9, 0, 10, 0x65, 0x43, 0x21, 0x00]);
        expected.extend_from_slice(&[0, 0, 0, 10, 0, 10, 0, 1, 0xe2, 0x40]); // 123456 µs
        expected.extend_from_slice(&[0, 0, 0, 11, 0, 7, 1]); // SIP
        expected.extend_from_slice(&[0, 0, 0, 12, 0, 10, 0, 0, 0x07, 0xd1]); // 2001
        expected.extend_from_slice(&[0, 0, 0, 15, 0, 33]);
        expected.extend_from_slice(b"OPTIONS sip:a SIP/2.0\r\n\r\nhi");
        let total = u16::try_from(expected.len()).unwrap().to_be_bytes();
        expected[4..6].copy_from_slice(&total);
        assert_eq!(out, expected);
    }

    #[test]
    fn an_ipv6_packet_carries_16_byte_addresses() {
        let mut out = Vec::new();
        let payload: [&[u8]; 1] = [b"x"];
        encode(
            &packet("[2001:db8::1]:5060", "[::]:5061", &payload),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[6..13], &[0, 0, 0, 1, 0, 7, 10]);
        assert_eq!(&out[20..26], &[0, 0, 0, 5, 0, 22]);
        let source: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(&out[26..42], &source);
        assert_eq!(&out[42..48], &[0, 0, 0, 6, 0, 22]);
        assert_eq!(&out[48..64], &[0; 16]);
        assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
    }

    #[test]
    fn a_v4_remote_with_a_wildcard_v6_local_is_ipv4() {
        let mut out = Vec::new();
        let payload: [&[u8]; 1] = [b"x"];
        encode(&packet("192.0.2.1:5060", "[::]:5060", &payload), &mut out).unwrap();
        assert_eq!(&out[6..13], &[0, 0, 0, 1, 0, 7, 2]);
        assert_eq!(&out[36..40], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_payload_beyond_the_16_bit_length_is_refused() {
        let mut out = Vec::new();
        let big = vec![b'a'; 65_500];
        let payload: [&[u8]; 1] = [&big];
        assert!(matches!(
            encode(&packet("192.0.2.1:1", "192.0.2.2:2", &payload), &mut out),
            Err(TooLong(_))
        ));
    }
}

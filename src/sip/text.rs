//! Numbers and addresses written into messages. Every forwarded message gets a few of them
//! (Via `received`/`rport`, Max-Forwards, our host and port, the branch), and going through
//! `core::fmt` for each cost more than the rest of the rewrite together.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use bytes::{BufMut, BytesMut};

/// Appends `n` in decimal.
pub fn put_decimal(out: &mut BytesMut, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        // `rest % 10` is below 10, so the cast is exact.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `n` as 16 lower-case hex digits.
pub fn put_hex_u64(out: &mut BytesMut, n: u64) {
    out.extend_from_slice(&hex_digits::<16>(n));
}

/// The lowest `N` nibbles of `n` as lower-case hex digits, most significant first.
#[must_use]
pub fn hex_digits<const N: usize>(n: u64) -> [u8; N] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; N];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((n >> (4 * (N - 1 - i))) & 0xf) as usize];
    }
    digits
}

/// Appends an address as a Via `received` value holds it: IPv6 without brackets
/// (RFC 3261 §20.42, RFC 5118 §4.5).
pub fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => put_ipv4(out, v4),
        // Rare enough for `core::fmt`, whose IPv6 form (zero compression) is the canonical one.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends an address as a URI or sent-by host holds it: IPv6 in brackets (RFC 3261 §25.1).
pub fn put_host_ip(out: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => put_ipv4(out, v4),
        IpAddr::V6(_) => {
            out.put_u8(b'[');
            put_ip(out, ip);
            out.put_u8(b']');
        }
    }
}

fn put_ipv4(out: &mut BytesMut, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b'.');
        }
        put_decimal(out, u32::from(octet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl FnOnce(&mut BytesMut)) -> String {
        let mut out = BytesMut::new();
        write(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn decimals_match_display() {
        for n in [0, 7, 10, 69, 70, 255, 5060, 65_535, 1_000_000, u32::MAX] {
            assert_eq!(written(|o| put_decimal(o, n)), n.to_string());
        }
    }

    #[test]
    fn hex_is_zero_padded() {
        assert_eq!(written(|o| put_hex_u64(o, 0xab)), "00000000000000ab");
        assert_eq!(written(|o| put_hex_u64(o, u64::MAX)), "ffffffffffffffff");
        let n = 0x0123_4567_89ab_cdef;
        assert_eq!(written(|o| put_hex_u64(o, n)), format!("{n:016x}"));
        assert_eq!(&hex_digits::<8>(0xdead_beef), b"deadbeef");
    }

    #[test]
    fn addresses_match_display() {
        for text in ["0.0.0.0", "127.0.0.1", "192.0.2.255", "10.20.30.40"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(written(|o| put_ip(o, ip)), text);
            assert_eq!(written(|o| put_host_ip(o, ip)), text);
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(written(|o| put_ip(o, v6)), "2001:db8::1");
        assert_eq!(written(|o| put_host_ip(o, v6)), "[2001:db8::1]");
    }
}

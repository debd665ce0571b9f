//! Host names: one label rule for the names on the wire and the names an operator gives.
//!
//! A label is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen
//! (RFC 1123 §2.1, which lets a label start with a digit where RFC 3261 §25.1 `toplabel`
//! wants a letter), and a name is at most 253 characters (RFC 1035 §2.3.4's 255 octets less
//! the length and root bytes), not counting a trailing dot. The two readings differ only where
//! the wire must take what RFC 3261 allows:
//!
//! - [`is_host_name`], for operator input (local FQDN, trusted-server names, certificate
//!   names): no trailing dot, and a last label that is not all digits, so that a mistyped IPv4
//!   address (`192.0.2.300`) is refused rather than taken for a name (RFC 3696 §2);
//! - [`is_wire_host`], for the host of a URI or Via (RFC 3261 §25.1 `host`): also a trailing
//!   dot (`hostname = *( domainlabel "." ) toplabel [ "." ]`) and all-digit labels, since
//!   `IPv4address` has that shape; a dotted number that is no address is then a name no one
//!   has, not a malformed message. Or an IPv6 reference in brackets.

/// RFC 1035 §2.3.4, written as text without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// RFC 1035 §2.3.4.
const MAX_LABEL_LEN: usize = 63;

/// Why a name is not a host name, in the order the checks find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostNameError {
    TooLong,
    EmptyLabel,
    LabelTooLong,
    BadCharacter,
    HyphenAtLabelEdge,
    NumericLastLabel,
}

impl HostNameError {
    /// The reason as a phrase about the name ("… is not a valid IP address").
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            HostNameError::TooLong => "longer than 253 characters",
            HostNameError::EmptyLabel => "has an empty label (a stray dot?)",
            HostNameError::LabelTooLong => "has a label longer than 63 characters",
            HostNameError::BadCharacter => {
                "is neither an IP address nor a DNS name (letters, digits, - and .)"
            }
            HostNameError::HyphenAtLabelEdge => "has a label that starts or ends with -",
            // No top-level domain is all digits, so this is a mistyped address, not a name.
            HostNameError::NumericLastLabel => "is not a valid IP address",
        }
    }
}

/// The label rule, for a label whose bytes were already looked at: `bad_char` says whether one
/// is not a letter, digit or hyphen. The checks come in a fixed order, so a label with several
/// faults is reported for the first.
fn check_label(label: &[u8], bad_char: bool) -> Result<(), HostNameError> {
    if label.is_empty() {
        return Err(HostNameError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(HostNameError::LabelTooLong);
    }
    if bad_char {
        return Err(HostNameError::BadCharacter);
    }
    if label.starts_with(b"-") || label.ends_with(b"-") {
        return Err(HostNameError::HyphenAtLabelEdge);
    }
    Ok(())
}

/// Where the scan of a name stands: at a label's start (the name's, or after a dot), after a
/// letter or digit, after a hyphen, or past a fault.
const AT_START: u8 = 0;
const AFTER_ALNUM: u8 = 1;
const AFTER_HYPHEN: u8 = 2;
const FAULT: u8 = 3;

/// The classes of a host name's bytes, for [`NEXT`]: a letter or digit, a hyphen, a dot,
/// anything else.
const ALNUM: u8 = 0;
const HYPHEN: u8 = 1;
const DOT: u8 = 2;
const OTHER: u8 = 3;

static CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            table[b] = ALNUM;
        } else if c == b'-' {
            table[b] = HYPHEN;
        } else if c == b'.' {
            table[b] = DOT;
        }
        b += 1;
    }
    table
};

/// `NEXT[state * 4 + class]`: a label starts with a letter or digit, a hyphen is only inside
/// one, a dot ends a label that does not end with a hyphen.
#[rustfmt::skip]
static NEXT: [u8; 16] = [
    // ALNUM       HYPHEN        DOT       OTHER
    AFTER_ALNUM, FAULT,        FAULT,    FAULT, // at a label's start
    AFTER_ALNUM, AFTER_HYPHEN, AT_START, FAULT, // after a letter or digit
    AFTER_ALNUM, AFTER_HYPHEN, FAULT,    FAULT, // after a hyphen
    FAULT,       FAULT,        FAULT,    FAULT, // past a fault
];

/// The length and label rules both readings share, as a yes or no; `name` has no trailing
/// dot. A table walk without a branch per byte: every host of every message goes through it.
/// [`explain_labels`] says why a name fails, and a property test keeps the two in agreement.
fn labels_ok(name: &[u8]) -> bool {
    if name.len() > MAX_NAME_LEN {
        return false;
    }
    let end = name.iter().fold(AT_START, |state, &b| {
        NEXT[usize::from(state) * 4 + usize::from(CLASS[usize::from(b)])]
    });
    // Only a name longer than a label can hold a label that is too long.
    end == AFTER_ALNUM
        && (name.len() <= MAX_LABEL_LEN
            || name
                .split(|&b| b == b'.')
                .all(|label| label.len() <= MAX_LABEL_LEN))
}

/// The length and label rules both readings share; `name` has no trailing dot.
fn check_labels(name: &[u8]) -> Result<(), HostNameError> {
    if labels_ok(name) {
        return Ok(());
    }
    explain_labels(name)
}

/// Why `name` fails the label rules: the first fault, the checks in a fixed order.
fn explain_labels(name: &[u8]) -> Result<(), HostNameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(HostNameError::TooLong);
    }
    let (mut start, mut bad_char) = (0, false);
    for (i, &b) in name.iter().enumerate() {
        match CLASS[usize::from(b)] {
            ALNUM | HYPHEN => {}
            DOT => {
                check_label(&name[start..i], bad_char)?;
                (start, bad_char) = (i + 1, false);
            }
            _ => bad_char = true,
        }
    }
    check_label(&name[start..], bad_char)
}

/// A host name an operator gives (see the module documentation), or why it is not one.
pub fn check_host_name(name: &[u8]) -> Result<(), HostNameError> {
    check_labels(name)?;
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    if last.iter().all(u8::is_ascii_digit) {
        return Err(HostNameError::NumericLastLabel);
    }
    Ok(())
}

/// Whether `name` is a host name an operator may give (see the module documentation).
#[must_use]
pub fn is_host_name(name: &str) -> bool {
    check_host_name(name.as_bytes()).is_ok()
}

/// A host as a message may carry it (RFC 3261 §25.1 `host`, see the module documentation): a
/// host name (a trailing dot allowed), an IPv4 address or a bracketed IPv6 reference.
#[must_use]
pub fn is_wire_host(host: &[u8]) -> bool {
    match host {
        [b'[', inner @ .., b']'] => std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some(),
        _ => labels_ok(host.strip_suffix(b".").unwrap_or(host)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The fast pass and the explained one are the same rule.
        #[test]
        fn the_fast_pass_agrees_with_the_explained_one(
            name in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'7', b'-', b'.', b'_']), 0..80),
            long_label in 60usize..70,
        ) {
            let mut with_long = vec![b'a'; long_label];
            with_long.extend_from_slice(&name);
            for name in [&name, &with_long] {
                prop_assert_eq!(labels_ok(name), explain_labels(name).is_ok(), "{:?}", name);
            }
        }
    }

    #[test]
    fn labels_and_lengths() {
        let label_63 = "a".repeat(63);
        let name_253 = [label_63.as_str(); 4].join(".")[..253].to_owned();
        for good in [
            "a",
            "pbx.example.com",
            "x-1.example",
            "123.example.com",
            "a1-b",
        ] {
            assert!(is_host_name(good), "{good}");
            assert!(is_wire_host(good.as_bytes()), "{good}");
        }
        for name in [&label_63, &name_253] {
            assert!(is_host_name(name) && is_wire_host(name.as_bytes()));
        }
        let label_64 = "a".repeat(64);
        let name_254 = format!("b{name_253}");
        for (bad, why) in [
            ("", HostNameError::EmptyLabel),
            (".", HostNameError::EmptyLabel),
            ("a..b", HostNameError::EmptyLabel),
            (".a", HostNameError::EmptyLabel),
            ("a_b", HostNameError::BadCharacter),
            ("é.example", HostNameError::BadCharacter),
            ("-a", HostNameError::HyphenAtLabelEdge),
            ("a.b-", HostNameError::HyphenAtLabelEdge),
            (&label_64, HostNameError::LabelTooLong),
            (&name_254, HostNameError::TooLong),
        ] {
            assert_eq!(check_host_name(bad.as_bytes()), Err(why), "{bad}");
            assert!(!is_wire_host(bad.as_bytes()), "{bad}");
        }
    }

    /// Where the wire is more lenient than operator input: a trailing dot, all-digit labels.
    #[test]
    fn wire_hosts() {
        for (host, operator) in [
            ("example.com.", Err(HostNameError::EmptyLabel)),
            ("192.0.2.1", Err(HostNameError::NumericLastLabel)),
            ("192.0.2.300", Err(HostNameError::NumericLastLabel)),
            ("10.example", Ok(())),
        ] {
            assert!(is_wire_host(host.as_bytes()), "{host}");
            assert_eq!(check_host_name(host.as_bytes()), operator, "{host}");
        }
        assert!(is_wire_host(b"[2001:db8::1]"));
        for bad in [
            &b"[2001:db8::g]"[..],
            b"[192.0.2.1]",
            b"2001:db8::1",
            b"a..",
            b".",
        ] {
            assert!(!is_wire_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}

//! `roundabout csr`: a certificate signing request (PKCS#10, RFC 2986) from an existing key.
//!
//! The key is a PEM file in any of the forms OpenSSL writes: PKCS#1 (`openssl genrsa
//! -traditional`), PKCS#8 (`openssl genpkey`, and `openssl genrsa` since OpenSSL 3) or SEC1
//! (`openssl ecparam -genkey`, whose `EC PARAMETERS` block before the key is skipped). rcgen,
//! built on ring, loads only PKCS#8, so PKCS#1 and SEC1 keys are wrapped in a PKCS#8
//! `PrivateKeyInfo` first; the key bytes themselves are carried over untouched. RSA keys of 2048
//! bits or more, ECDSA P-256 and P-384 and Ed25519 keys can sign; anything else (weak RSA, P-521,
//! encrypted PEM, other algorithms) is refused with an error that names the file and the reason.
//!
//! The subject holds exactly the given C, ST, L, O, OU and CN; the subject alternative names are
//! the `--san` entries (IP addresses as IP SANs, the rest as DNS SANs) or, when none is given, the
//! common name. The PEM CSR goes to `--out` (only once it is fully built, through a temporary file
//! renamed into place) or stdout; a summary of what was requested goes to stderr.

use std::borrow::Cow;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::sip::host::{self, HostNameError};

mod key;

use key::load_key;
pub use key::{KeyFormat, KeyKind, KeyProblem};

/// What to put in the CSR, from either spelling of the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrRequest {
    /// PEM private key (PKCS#1, PKCS#8 or SEC1); default `./key.pem`.
    pub key: PathBuf,
    pub common_name: String,
    /// DNS names and IP addresses (IPs become IP SANs).
    pub sans: Vec<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub locality: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    /// Where the PEM CSR goes; `None` is stdout.
    pub out: Option<PathBuf>,
}

/// Why no CSR was written.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("cannot read key file {}: {source}", .path.display())]
    ReadKey { path: PathBuf, source: io::Error },
    #[error("key file {}: {problem}", .path.display())]
    Key { path: PathBuf, problem: KeyProblem },
    #[error("subject {field} \"{value}\": {reason}")]
    Subject {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("subject {field} is longer than the {max} characters RFC 5280 allows")]
    SubjectTooLong { field: &'static str, max: usize },
    #[error("subject alternative name \"{value}\": {reason}")]
    San { value: String, reason: &'static str },
    #[error(
        "no --san given and the common name \"{0}\" is neither a DNS name nor an IP address, \
         so it cannot be the subject alternative name; give the names with --san"
    )]
    NoSan(String),
    #[error("cannot build the CSR: {0}")]
    Build(rcgen::Error),
    #[error("refusing to write the CSR over the key file {}", .0.display())]
    OutIsKey(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the CSR to stdout: {0}")]
    Stdout(io::Error),
}

/// Writes the CSR `request` describes and a summary of it on stderr.
///
/// # Errors
/// An unreadable or unusable key file, a subject field or SAN that cannot go in a certificate, or
/// a failed write. Nothing is written to `--out` unless the whole CSR was built.
pub fn run(request: &CsrRequest) -> Result<(), CsrError> {
    // Check the names before touching the key: they are the cheaper mistakes to report.
    let subject = subject(request)?;
    let (sans, sans_from_cn) = if request.sans.is_empty() {
        let san = classify_san(&request.common_name)
            .map_err(|_| CsrError::NoSan(request.common_name.clone()))?;
        (vec![san], true)
    } else {
        (classify_sans(&request.sans)?, false)
    };

    let key = load_key(&request.key)?;
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(key.pkcs8.as_slice()),
        key.kind.algorithm(),
    )
    .map_err(|error| CsrError::Key {
        path: request.key.clone(),
        problem: KeyProblem::Rejected {
            kind: key.kind,
            detail: error.to_string(),
        },
    })?;

    let mut params = CertificateParams::default();
    // Replaces rcgen's default `CN=rcgen self signed cert` entirely.
    params.distinguished_name = subject;
    // rcgen puts the SANs in an extensionRequest attribute (RFC 2985 section 5.4.2), the
    // attribute RFC 2986 section 4.1 leaves room for and CAs copy extensions from.
    params.subject_alt_names = sans;
    let pem = params
        .serialize_request(&key_pair)
        .and_then(|csr| csr.pem())
        .map_err(CsrError::Build)?;

    match &request.out {
        Some(out) => write_out(out, &request.key, pem.as_bytes())?,
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(pem.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(CsrError::Stdout)?;
        }
    }

    eprintln!(
        "roundabout csr: subject {}",
        describe_subject(&params.distinguished_name)
    );
    let san_list = params
        .subject_alt_names
        .iter()
        .map(describe_san)
        .collect::<Vec<_>>()
        .join(", ");
    if sans_from_cn {
        eprintln!(
            "roundabout csr: subject alternative name {san_list} (the common name; no --san given)"
        );
    } else {
        eprintln!("roundabout csr: subject alternative names {san_list}");
    }
    eprintln!(
        "roundabout csr: signed with the {} key in {} ({})",
        key.kind,
        request.key.display(),
        key.format
    );
    if let Some(out) = &request.out {
        eprintln!("roundabout csr: wrote {}", out.display());
    }
    Ok(())
}

/// The subject in the conventional C, ST, L, O, OU, CN order. Empty optional fields are left out.
fn subject(request: &CsrRequest) -> Result<DistinguishedName, CsrError> {
    let mut dn = DistinguishedName::new();
    if let Some(country) = request.country.as_deref().filter(|c| !c.is_empty()) {
        // RFC 5280 appendix A: X520countryName ::= PrintableString (SIZE (2)), an ISO 3166
        // alpha-2 code.
        let printable = (country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| rcgen::string::PrintableString::try_from(country).ok())
            .flatten()
            .ok_or_else(|| CsrError::Subject {
                field: "country (C)",
                value: country.to_owned(),
                reason: "must be a two-letter ISO 3166 code such as US",
            })?;
        dn.push(DnType::CountryName, DnValue::PrintableString(printable));
    }
    // Upper bounds from RFC 5280 appendix A (ub-state-name, ub-locality-name, ...); CAs refuse
    // longer values.
    let fields: [(&Option<String>, DnType, &'static str, usize); 4] = [
        (
            &request.state,
            DnType::StateOrProvinceName,
            "state (ST)",
            128,
        ),
        (&request.locality, DnType::LocalityName, "locality (L)", 128),
        (
            &request.organization,
            DnType::OrganizationName,
            "organisation (O)",
            64,
        ),
        (
            &request.organizational_unit,
            DnType::OrganizationalUnitName,
            "organisational unit (OU)",
            64,
        ),
    ];
    for (value, ty, field, max) in fields {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            dn.push(ty, checked_text(field, value, max)?);
        }
    }
    if request.common_name.is_empty() {
        return Err(CsrError::Subject {
            field: "common name (CN)",
            value: String::new(),
            reason: "must not be empty",
        });
    }
    dn.push(
        DnType::CommonName,
        checked_text("common name (CN)", &request.common_name, 64)?,
    );
    Ok(dn)
}

/// A subject attribute as a UTF8String (RFC 5280 section 4.1.2.4), within its length bound.
fn checked_text(field: &'static str, value: &str, max: usize) -> Result<DnValue, CsrError> {
    if value.chars().count() > max {
        return Err(CsrError::SubjectTooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(CsrError::Subject {
            field,
            value: value.to_owned(),
            reason: "contains a control character",
        });
    }
    Ok(DnValue::Utf8String(value.to_owned()))
}

/// The `--san` entries as SANs, in order, without repeats; blanks around entries are ignored.
fn classify_sans(entries: &[String]) -> Result<Vec<SanType>, CsrError> {
    let mut sans: Vec<SanType> = Vec::new();
    for entry in entries.iter().map(|e| e.trim()) {
        if entry.is_empty() {
            return Err(CsrError::San {
                value: String::new(),
                reason: "empty entry (a stray or trailing comma?)",
            });
        }
        let san = classify_san(entry).map_err(|reason| CsrError::San {
            value: entry.to_owned(),
            reason,
        })?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// One SAN: an IP address becomes an iPAddress SAN, anything else must be a DNS name
/// (RFC 5280 section 4.2.1.6). DNS names are lower-cased, as they compare case-insensitively.
fn classify_san(entry: &str) -> Result<SanType, &'static str> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    check_dns_name(entry)?;
    rcgen::string::Ia5String::try_from(entry.to_ascii_lowercase())
        .map(SanType::DnsName)
        .map_err(|_| "not an ASCII DNS name")
}

/// RFC 5280 section 4.2.1.6 wants DNS names in the RFC 1034 "preferred name syntax" (as relaxed
/// by RFC 1123 to allow leading digits, `sip::host`'s rule for operator input), with
/// internationalised names as A-labels (`xn--`); a single `*` leftmost label is the usual
/// wildcard.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if !name.is_ascii() {
        return Err("not ASCII; write internationalised names in their xn-- form");
    }
    // The wildcard stands for one label, and counts as one towards the length: it is checked
    // as a label of one letter. `*.com` (a whole top-level domain) is no wildcard.
    let checked = match name.strip_prefix("*.") {
        Some(rest) if rest.contains('.') => Cow::Owned(format!("x.{rest}")),
        _ => Cow::Borrowed(name),
    };
    host::check_host_name(checked.as_bytes()).map_err(HostNameError::reason)
}

fn describe_san(san: &SanType) -> String {
    match san {
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
        other => format!("{other:?}"),
    }
}

fn describe_subject(dn: &DistinguishedName) -> String {
    dn.iter()
        .map(|(ty, value)| {
            let key = match ty {
                DnType::CountryName => "C",
                DnType::StateOrProvinceName => "ST",
                DnType::LocalityName => "L",
                DnType::OrganizationName => "O",
                DnType::OrganizationalUnitName => "OU",
                DnType::CommonName => "CN",
                _ => "?",
            };
            let value = match value {
                DnValue::Utf8String(text) => text.clone(),
                DnValue::PrintableString(text) => text.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `contents` to `out` through a temporary file in the same directory and a rename, so
/// `out` is either the old file or the complete CSR, never a partial one.
fn write_out(out: &Path, key: &Path, contents: &[u8]) -> Result<(), CsrError> {
    // A slip like `--out key.pem` would otherwise destroy the private key.
    if let (Ok(out_real), Ok(key_real)) = (fs::canonicalize(out), fs::canonicalize(key)) {
        if out_real == key_real {
            return Err(CsrError::OutIsKey(out.to_owned()));
        }
    }
    let write_error = |source| CsrError::Write {
        path: out.to_owned(),
        source,
    };
    let Some(name) = out.file_name() else {
        return Err(write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = out.with_file_name(temp_name);
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, out));
    if let Err(source) = result {
        // Best effort: the temporary file may not exist if creating it was what failed.
        let _ = fs::remove_file(&temp);
        return Err(write_error(source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sans_are_classified() {
        let sans = classify_sans(&[
            "proxya.example.com".into(),
            " 203.0.113.5".into(),
            "2001:db8::1".into(),
            "*.Example.com".into(),
            "PROXYA.example.com".into(),
            "10.example".into(),
        ])
        .unwrap();
        let described: Vec<String> = sans.iter().map(describe_san).collect();
        assert_eq!(
            described,
            [
                "DNS:proxya.example.com",
                "IP:203.0.113.5",
                "IP:2001:db8::1",
                "DNS:*.example.com",
                "DNS:10.example"
            ]
        );
        for bad in [
            "",
            "a..b",
            "a_b.example",
            "-a.example",
            "192.0.2.300",
            "1.2.3",
            "*.com",
            "a.*.example",
            "é.example",
            "two words",
            "[2001:db8::1]",
        ] {
            assert!(
                classify_sans(&[bad.to_owned()]).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    fn request() -> CsrRequest {
        CsrRequest {
            key: "key.pem".into(),
            common_name: "proxya.example.com".into(),
            country: Some("US".into()),
            state: Some("California".into()),
            locality: Some("Mountain View".into()),
            organization: Some("The Firm".into()),
            organizational_unit: Some("Development".into()),
            ..CsrRequest::default()
        }
    }

    #[test]
    fn subject_holds_exactly_the_given_fields_in_order() {
        let dn = subject(&request()).unwrap();
        assert_eq!(
            describe_subject(&dn),
            "C=US, ST=California, L=Mountain View, O=The Firm, OU=Development, CN=proxya.example.com"
        );
        let only_cn = CsrRequest {
            common_name: "a.example".into(),
            organization: Some(String::new()),
            ..CsrRequest::default()
        };
        assert_eq!(
            describe_subject(&subject(&only_cn).unwrap()),
            "CN=a.example"
        );
    }

    #[test]
    fn bad_subject_fields_are_refused() {
        for bad in [
            CsrRequest {
                country: Some("USA".into()),
                ..request()
            },
            CsrRequest {
                common_name: String::new(),
                ..request()
            },
            CsrRequest {
                common_name: "x".repeat(65),
                ..request()
            },
            CsrRequest {
                organization: Some("a\nb".into()),
                ..request()
            },
        ] {
            assert!(subject(&bad).is_err(), "{bad:?}");
        }
    }
}

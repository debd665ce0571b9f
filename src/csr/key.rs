//! Private keys for `roundabout csr`: PEM in PKCS#1, PKCS#8 or SEC1 form, checked (RSA of 2048
//! bits or more, ECDSA P-256/P-384, Ed25519) and turned into PKCS#8, the only form rcgen on ring
//! loads. The key bytes themselves are carried over untouched.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use pkcs8::der::asn1::{AnyRef, UintRef};
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::der::{Decode, Encode, Header, SliceReader, Tag};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};

use super::CsrError;

/// What is wrong with the contents of a key file (the file name is added by [`CsrError::Key`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("larger than any key file (over 1 MiB); is this the right file?")]
    TooLarge,
    #[error("not a PEM file (expected a \"-----BEGIN ... PRIVATE KEY-----\" block)")]
    NotPem,
    #[error("no private key in it (found: {})", .0.join(", "))]
    NoPrivateKey(Vec<String>),
    #[error("holds more than one private key; keep only the one to sign with")]
    SeveralKeys,
    #[error(
        "the private key is encrypted; write a decrypted copy first \
         (openssl pkey -in KEY -out PLAIN) and use that"
    )]
    Encrypted,
    #[error("the {label} block is not valid PEM: {detail}")]
    BadPem { label: String, detail: String },
    #[error("the {label} block is not a valid {format} key: {detail}")]
    BadDer {
        label: String,
        format: KeyFormat,
        detail: String,
    },
    #[error("the RSA key has only {0} bits, which is too weak; use at least 2048")]
    WeakRsa(usize),
    #[error("ECDSA on {0} is not supported (ring cannot sign with it); use a P-256 or P-384 key")]
    UnsupportedCurve(String),
    #[error("the EC key does not name its curve")]
    NoCurve,
    #[error("{0} keys are not supported; use an RSA, ECDSA P-256/P-384 or Ed25519 key")]
    UnsupportedAlgorithm(String),
    #[error("the {kind} key was rejected: {detail}")]
    Rejected { kind: KeyKind, detail: String },
}

/// The PEM encoding a key arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `RSA PRIVATE KEY`: an RFC 8017 `RSAPrivateKey`.
    Pkcs1,
    /// `PRIVATE KEY`: an RFC 5208/5958 `PrivateKeyInfo`.
    Pkcs8,
    /// `EC PRIVATE KEY`: an RFC 5915 `ECPrivateKey`.
    Sec1,
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pkcs1 => "PKCS#1",
            Self::Pkcs8 => "PKCS#8",
            Self::Sec1 => "SEC1",
        })
    }
}

/// The key types this command can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyKind {
    /// The CSR signature algorithm: SHA-256 for RSA (the common choice CAs accept) and the hash
    /// that matches the curve size for ECDSA.
    pub(super) fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A key ready for rcgen: PKCS#8 DER plus what it is.
pub(super) struct LoadedKey {
    pub(super) pkcs8: Zeroizing<Vec<u8>>,
    pub(super) kind: KeyKind,
    pub(super) format: KeyFormat,
}

/// `rsaEncryption` (RFC 8017 appendix A.1; RFC 3279 section 2.3.1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey` (RFC 5480 section 2.1.1).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `id-Ed25519` (RFC 8410 section 3).
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// `secp256r1` / P-256 (RFC 5480 section 2.1.1.1).
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` / P-384.
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `secp521r1` / P-521: valid, but ring cannot sign with it.
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Far above any PEM key file (a 16384-bit RSA key is about 12 KiB).
const MAX_KEY_FILE: u64 = 1 << 20;

/// Below this an RSA key is refused: NIST SP 800-57 retired 1024-bit RSA, CAs reject it and ring
/// will not sign with it.
const MIN_RSA_BITS: usize = 2048;

/// Reads `path` and turns the private key in it into PKCS#8 for rcgen.
pub(super) fn load_key(path: &Path) -> Result<LoadedKey, CsrError> {
    let read_error = |source| CsrError::ReadKey {
        path: path.to_owned(),
        source,
    };
    let mut text = Zeroizing::new(Vec::new());
    // Bounded, so a wrong path such as /dev/zero or a disk image fails instead of filling memory.
    fs::File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE + 1).read_to_end(&mut text))
        .map_err(read_error)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(CsrError::Key {
            path: path.to_owned(),
            problem: KeyProblem::TooLarge,
        });
    }
    key_from_pem(&text).map_err(|problem| CsrError::Key {
        path: path.to_owned(),
        problem,
    })
}

/// The single private key in a PEM file, as PKCS#8.
fn key_from_pem(text: &[u8]) -> Result<LoadedKey, KeyProblem> {
    let text = std::str::from_utf8(text).map_err(|_| KeyProblem::NotPem)?;
    let blocks = pem_blocks(text);
    if blocks.is_empty() {
        return Err(KeyProblem::NotPem);
    }
    let mut keys = blocks.iter().filter(|block| {
        matches!(
            block.label,
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY"
        )
    });
    let Some(block) = keys.next() else {
        return Err(KeyProblem::NoPrivateKey(
            blocks.iter().map(|b| b.label.to_owned()).collect(),
        ));
    };
    if keys.next().is_some() {
        return Err(KeyProblem::SeveralKeys);
    }
    // PKCS#8 encryption (RFC 5958 EncryptedPrivateKeyInfo) has its own label; OpenSSL's legacy
    // encryption keeps the plain label and adds RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`).
    if block.label == "ENCRYPTED PRIVATE KEY" || block.text.contains("Proc-Type:") {
        return Err(KeyProblem::Encrypted);
    }
    let (_, der) =
        pkcs8::der::pem::decode_vec(block.text.as_bytes()).map_err(|e| KeyProblem::BadPem {
            label: block.label.to_owned(),
            detail: e.to_string(),
        })?;
    let der = Zeroizing::new(der);
    let bad_der = |format, detail: String| KeyProblem::BadDer {
        label: block.label.to_owned(),
        format,
        detail,
    };
    match block.label {
        "RSA PRIVATE KEY" => {
            let bits =
                rsa_modulus_bits(&der).map_err(|e| bad_der(KeyFormat::Pkcs1, e.to_string()))?;
            check_rsa_bits(bits)?;
            let pkcs8 = wrap_pkcs1(&der).map_err(|e| bad_der(KeyFormat::Pkcs1, e.to_string()))?;
            Ok(LoadedKey {
                pkcs8,
                kind: KeyKind::Rsa { bits },
                format: KeyFormat::Pkcs1,
            })
        }
        "EC PRIVATE KEY" => {
            let (pkcs8, kind) = wrap_sec1(&der).map_err(|problem| match problem {
                WrapProblem::Der(e) => bad_der(KeyFormat::Sec1, e.to_string()),
                WrapProblem::Key(problem) => problem,
            })?;
            Ok(LoadedKey {
                pkcs8,
                kind,
                format: KeyFormat::Sec1,
            })
        }
        _ => {
            let kind = pkcs8_kind(&der).map_err(|problem| match problem {
                WrapProblem::Der(e) => bad_der(KeyFormat::Pkcs8, e.to_string()),
                WrapProblem::Key(problem) => problem,
            })?;
            Ok(LoadedKey {
                pkcs8: der,
                kind,
                format: KeyFormat::Pkcs8,
            })
        }
    }
}

/// One `-----BEGIN label-----` … `-----END label-----` block, boundaries included.
struct PemBlock<'a> {
    label: &'a str,
    text: Zeroizing<String>,
}

/// The PEM blocks in `text`, in order; text around them (OpenSSL's `-text` dumps, comments) is
/// skipped, as RFC 7468 section 5.2 allows. A block without its END line (a truncated copy) is
/// left out, which shows up as "not PEM" or a missing key.
fn pem_blocks(text: &str) -> Vec<PemBlock<'_>> {
    let mut blocks = Vec::new();
    let mut open: Option<PemBlock<'_>> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        {
            // A BEGIN inside an open block abandons the open one.
            open = Some(PemBlock {
                label,
                text: Zeroizing::new(String::new()),
            });
        }
        let Some(block) = open.as_mut() else {
            continue;
        };
        block.text.push_str(line);
        block.text.push('\n');
        if line
            .strip_prefix("-----END ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label == block.label)
        {
            blocks.extend(open.take());
        }
    }
    blocks
}

/// Why a key could not be wrapped or classified: broken DER, or a well-formed key we refuse.
#[derive(Debug)]
enum WrapProblem {
    Der(pkcs8::der::Error),
    Key(KeyProblem),
}

impl From<pkcs8::der::Error> for WrapProblem {
    fn from(error: pkcs8::der::Error) -> Self {
        Self::Der(error)
    }
}

impl From<KeyProblem> for WrapProblem {
    fn from(problem: KeyProblem) -> Self {
        Self::Key(problem)
    }
}

/// The size of an RFC 8017 `RSAPrivateKey`'s modulus in bits. Only the version and modulus are
/// read; ring checks the rest when it loads the key.
fn rsa_modulus_bits(pkcs1: &[u8]) -> pkcs8::der::Result<usize> {
    let mut reader = SliceReader::new(pkcs1)?;
    Header::decode(&mut reader)?.tag.assert_eq(Tag::Sequence)?;
    let _version = UintRef::decode(&mut reader)?;
    // UintRef strips the sign byte, so the first byte is the most significant non-zero one.
    let modulus = UintRef::decode(&mut reader)?.as_bytes();
    Ok(match modulus.first() {
        Some(&top) => modulus.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    })
}

fn check_rsa_bits(bits: usize) -> Result<(), KeyProblem> {
    if bits < MIN_RSA_BITS {
        return Err(KeyProblem::WeakRsa(bits));
    }
    Ok(())
}

/// Wraps an RFC 8017 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (RFC 5208 section 5): algorithm
/// `rsaEncryption` with NULL parameters (RFC 3279 section 2.3.1), the key as the octet string.
fn wrap_pkcs1(pkcs1: &[u8]) -> pkcs8::der::Result<Zeroizing<Vec<u8>>> {
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        pkcs1,
    );
    info.to_der().map(Zeroizing::new)
}

/// Wraps an RFC 5915 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo`: algorithm `id-ecPublicKey`
/// with the key's named curve as parameters (RFC 5480 section 2.1.1; RFC 5915 section 3), the
/// `ECPrivateKey` itself, unchanged, as the octet string.
fn wrap_sec1(sec1: &[u8]) -> Result<(Zeroizing<Vec<u8>>, KeyKind), WrapProblem> {
    let key = sec1::EcPrivateKey::from_der(sec1)?;
    let curve = key
        .parameters
        .and_then(sec1::EcParameters::named_curve)
        .ok_or(KeyProblem::NoCurve)?;
    let kind = ec_kind(curve)?;
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&curve)),
        },
        sec1,
    );
    Ok((Zeroizing::new(info.to_der()?), kind))
}

/// What a PKCS#8 key is, refusing the kinds this command cannot sign with.
fn pkcs8_kind(der: &[u8]) -> Result<KeyKind, WrapProblem> {
    let info = PrivateKeyInfo::from_der(der)?;
    let oid = info.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        let bits = rsa_modulus_bits(info.private_key)?;
        check_rsa_bits(bits)?;
        Ok(KeyKind::Rsa { bits })
    } else if oid == EC_PUBLIC_KEY {
        // The curve is normally in the AlgorithmIdentifier; fall back to the inner ECPrivateKey.
        let curve = match info.algorithm.parameters {
            Some(parameters) => Some(ObjectIdentifier::try_from(parameters)?),
            None => sec1::EcPrivateKey::from_der(info.private_key)?
                .parameters
                .and_then(sec1::EcParameters::named_curve),
        };
        Ok(ec_kind(curve.ok_or(KeyProblem::NoCurve)?)?)
    } else if oid == ED25519 {
        Ok(KeyKind::Ed25519)
    } else {
        let name = match oid.to_string().as_str() {
            "1.2.840.113549.1.1.10" => "RSA-PSS".to_owned(),
            "1.3.101.113" => "Ed448".to_owned(),
            "1.3.101.110" => "X25519".to_owned(),
            "1.3.101.111" => "X448".to_owned(),
            "1.2.840.10040.4.1" => "DSA".to_owned(),
            "1.2.840.10046.2.1" => "DH".to_owned(),
            other => format!("algorithm {other}"),
        };
        Err(KeyProblem::UnsupportedAlgorithm(name).into())
    }
}

fn ec_kind(curve: ObjectIdentifier) -> Result<KeyKind, KeyProblem> {
    if curve == SECP256R1 {
        Ok(KeyKind::EcdsaP256)
    } else if curve == SECP384R1 {
        Ok(KeyKind::EcdsaP384)
    } else if curve == SECP521R1 {
        Err(KeyProblem::UnsupportedCurve("P-521".to_owned()))
    } else {
        Err(KeyProblem::UnsupportedCurve(format!("curve {curve}")))
    }
}

#[cfg(test)]
mod tests;

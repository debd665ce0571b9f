#![allow(clippy::unwrap_used)]

use super::*;
use rcgen::KeyPair;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;

fn pem(label: &str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, pkcs8::LineEnding::LF, der).unwrap()
}

/// A SEC1 key as `openssl ecparam -genkey` writes it, from a ring-generated PKCS#8 key
/// (ring leaves the curve out of the inner ECPrivateKey; OpenSSL puts it in).
fn sec1_from_ring(
    alg: &'static signature::EcdsaSigningAlgorithm,
    curve: ObjectIdentifier,
) -> Vec<u8> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
    let info = PrivateKeyInfo::from_der(pkcs8.as_ref()).unwrap();
    let mut key = sec1::EcPrivateKey::from_der(info.private_key).unwrap();
    key.parameters = Some(curve.into());
    key.to_der().unwrap()
}

/// A minimal `RSAPrivateKey` whose modulus has exactly `bits` bits (the other fields are
/// dummies: only the wrapping and the size check look at it).
fn fake_pkcs1(bits: usize) -> Vec<u8> {
    let mut modulus = vec![0xff_u8; bits.div_ceil(8)];
    modulus[0] = 0xff >> ((8 - bits % 8) % 8);
    let mut body = Vec::new();
    UintRef::new(&[0])
        .unwrap()
        .encode_to_vec(&mut body)
        .unwrap();
    UintRef::new(&modulus)
        .unwrap()
        .encode_to_vec(&mut body)
        .unwrap();
    UintRef::new(&[1, 0, 1])
        .unwrap()
        .encode_to_vec(&mut body)
        .unwrap();
    let mut der = Vec::new();
    Header::new(Tag::Sequence, body.len())
        .unwrap()
        .encode_to_vec(&mut der)
        .unwrap();
    der.extend_from_slice(&body);
    der
}

#[test]
fn rsa_modulus_size() {
    for bits in [1024, 2047, 2048, 3072, 4096] {
        assert_eq!(rsa_modulus_bits(&fake_pkcs1(bits)).unwrap(), bits);
    }
    assert!(rsa_modulus_bits(b"\x30\x03\x02\x01").is_err());
}

#[test]
fn pkcs1_is_wrapped_with_rsa_encryption_and_null_parameters() {
    let pkcs1 = fake_pkcs1(2048);
    let wrapped = wrap_pkcs1(&pkcs1).unwrap();
    let info = PrivateKeyInfo::from_der(&wrapped).unwrap();
    assert_eq!(info.algorithm.oid, RSA_ENCRYPTION);
    assert_eq!(info.algorithm.parameters, Some(AnyRef::NULL));
    assert_eq!(info.private_key, pkcs1.as_slice());
    assert_eq!(info.public_key, None);

    let key = key_from_pem(pem("RSA PRIVATE KEY", &pkcs1).as_bytes()).unwrap();
    assert_eq!(key.kind, KeyKind::Rsa { bits: 2048 });
    assert_eq!(key.format, KeyFormat::Pkcs1);
    assert_eq!(key.pkcs8.as_slice(), wrapped.as_slice());
}

#[test]
fn weak_rsa_is_refused_in_either_format() {
    let pkcs1 = fake_pkcs1(1024);
    assert_eq!(
        key_from_pem(pem("RSA PRIVATE KEY", &pkcs1).as_bytes()).err(),
        Some(KeyProblem::WeakRsa(1024))
    );
    let pkcs8 = wrap_pkcs1(&pkcs1).unwrap();
    assert_eq!(
        key_from_pem(pem("PRIVATE KEY", &pkcs8).as_bytes()).err(),
        Some(KeyProblem::WeakRsa(1024))
    );
}

#[test]
fn sec1_is_wrapped_with_its_curve_and_loads_in_rcgen() {
    for (alg, curve, kind, rcgen_alg) in [
        (
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            SECP256R1,
            KeyKind::EcdsaP256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        (
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            SECP384R1,
            KeyKind::EcdsaP384,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ),
    ] {
        let sec1 = sec1_from_ring(alg, curve);
        let (wrapped, wrapped_kind) = wrap_sec1(&sec1).unwrap();
        assert_eq!(wrapped_kind, kind);
        let info = PrivateKeyInfo::from_der(&wrapped).unwrap();
        assert_eq!(info.algorithm.oid, EC_PUBLIC_KEY);
        assert_eq!(info.algorithm.parameters_oid().unwrap(), curve);
        assert_eq!(info.private_key, sec1.as_slice());

        // As OpenSSL writes it: curve parameters first, then the key.
        let text = format!(
            "{}{}",
            pem("EC PARAMETERS", &curve.to_der().unwrap()),
            pem("EC PRIVATE KEY", &sec1)
        );
        let key = key_from_pem(text.as_bytes()).unwrap();
        assert_eq!((key.kind, key.format), (kind, KeyFormat::Sec1));
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key.pkcs8.as_slice()),
            kind.algorithm(),
        )
        .unwrap();
        assert_eq!(pair.algorithm(), rcgen_alg);
    }
}

#[test]
fn sec1_without_a_curve_or_on_p521_is_refused() {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &SystemRandom::new(),
    )
    .unwrap();
    let info = PrivateKeyInfo::from_der(pkcs8.as_ref()).unwrap();
    let mut key = sec1::EcPrivateKey::from_der(info.private_key).unwrap();
    key.parameters = None;
    assert!(matches!(
        wrap_sec1(&key.to_der().unwrap()),
        Err(WrapProblem::Key(KeyProblem::NoCurve))
    ));
    key.parameters = Some(SECP521R1.into());
    assert_eq!(
        key_from_pem(pem("EC PRIVATE KEY", &key.to_der().unwrap()).as_bytes()).err(),
        Some(KeyProblem::UnsupportedCurve("P-521".into()))
    );
}

#[test]
fn pkcs8_keys_pass_through() {
    let rng = SystemRandom::new();
    let ec =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let key = key_from_pem(pem("PRIVATE KEY", ec.as_ref()).as_bytes()).unwrap();
    assert_eq!(
        (key.kind, key.format),
        (KeyKind::EcdsaP384, KeyFormat::Pkcs8)
    );
    assert_eq!(key.pkcs8.as_slice(), ec.as_ref());

    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = key_from_pem(pem("PRIVATE KEY", ed.as_ref()).as_bytes()).unwrap();
    assert_eq!(key.kind, KeyKind::Ed25519);
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(key.pkcs8.as_slice()),
        key.kind.algorithm(),
    )
    .unwrap();
}

#[test]
fn pem_problems() {
    assert_eq!(
        key_from_pem(b"\x30\x82\x01\x00").err(),
        Some(KeyProblem::NotPem)
    );
    assert_eq!(key_from_pem(b"hello\n").err(), Some(KeyProblem::NotPem));
    assert_eq!(
        key_from_pem(pem("CERTIFICATE", b"\x30\x00").as_bytes()).err(),
        Some(KeyProblem::NoPrivateKey(vec!["CERTIFICATE".into()]))
    );
    assert_eq!(
        key_from_pem(pem("ENCRYPTED PRIVATE KEY", b"\x30\x00").as_bytes()).err(),
        Some(KeyProblem::Encrypted)
    );
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                  DEK-Info: AES-256-CBC,D3C806FDAA7F28ACF3372715C535390E\n\nAAAA\n\
                  -----END RSA PRIVATE KEY-----\n";
    assert_eq!(
        key_from_pem(legacy.as_bytes()).err(),
        Some(KeyProblem::Encrypted)
    );
    let two = format!(
        "{}{}",
        pem("PRIVATE KEY", b"\x30\x00"),
        pem("PRIVATE KEY", b"\x30\x00")
    );
    assert_eq!(
        key_from_pem(two.as_bytes()).err(),
        Some(KeyProblem::SeveralKeys)
    );
    assert!(matches!(
        key_from_pem(b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n").err(),
        Some(KeyProblem::BadPem { .. })
    ));
    assert!(matches!(
        key_from_pem(pem("PRIVATE KEY", b"\x30\x00").as_bytes()).err(),
        Some(KeyProblem::BadDer {
            format: KeyFormat::Pkcs8,
            ..
        })
    ));
    // An unterminated block is no block, and does not swallow the blocks after it.
    assert_eq!(
        key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n").err(),
        Some(KeyProblem::NotPem)
    );
    let truncated = format!(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n{}",
        pem("CERTIFICATE", b"\x30\x00").replace('\n', "\r\n")
    );
    assert_eq!(
        key_from_pem(truncated.as_bytes()).err(),
        Some(KeyProblem::NoPrivateKey(vec!["CERTIFICATE".into()]))
    );
}

#[test]
fn other_pkcs8_algorithms_are_named() {
    let ed448 = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: ObjectIdentifier::new_unwrap("1.3.101.113"),
            parameters: None,
        },
        &[4, 0],
    )
    .to_der()
    .unwrap();
    assert_eq!(
        key_from_pem(pem("PRIVATE KEY", &ed448).as_bytes()).err(),
        Some(KeyProblem::UnsupportedAlgorithm("Ed448".into()))
    );
}

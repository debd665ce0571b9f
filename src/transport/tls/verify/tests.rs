//! The verifiers on certificates made here with rcgen: pinned, CA-signed, foreign, expired.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier as _;

use super::*;
use crate::config::{TrustedServer, TrustedServers, VerifyClient};
use crate::sip::Transport;

/// What a certificate is made with.
struct Spec<'a> {
    cn: &'a str,
    dns: &'a [&'a str],
    ips: &'a [&'a str],
    ca: bool,
    /// Years of notBefore and notAfter.
    valid: (i32, i32),
}

const NOW_YEARS: (i32, i32) = (2000, 2999);

fn params(spec: &Spec<'_>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, spec.cn);
    params.subject_alt_names = spec
        .dns
        .iter()
        .map(|name| SanType::DnsName((*name).try_into().unwrap()))
        .chain(
            spec.ips
                .iter()
                .map(|ip| SanType::IpAddress(ip.parse().unwrap())),
        )
        .collect();
    if spec.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.not_before = rcgen::date_time_ymd(spec.valid.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(spec.valid.1, 1, 1);
    params
}

fn self_signed(spec: &Spec<'_>) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    params(spec).self_signed(&key).unwrap().der().clone()
}

/// A CA certificate and what signs with it.
struct TestCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let spec = Spec {
            cn,
            dns: &[],
            ips: &[],
            ca: true,
            valid: NOW_YEARS,
        };
        let params = params(&spec);
        let cert = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, spec: &Spec<'_>) -> CertificateDer<'static> {
        self.sign(&params(spec))
    }

    fn sign(&self, params: &CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &self.issuer).unwrap().der().clone()
    }
}

fn leaf_spec<'a>(dns: &'a [&'a str], ips: &'a [&'a str]) -> Spec<'a> {
    Spec {
        cn: "peer",
        dns,
        ips,
        ca: false,
        valid: NOW_YEARS,
    }
}

const CA_FILE: &str = "/etc/roundabout/peers.pem";

fn trust(ca: &[CertificateDer<'static>]) -> Arc<Trust> {
    Arc::new(Trust::new(ca.to_vec(), Some(PathBuf::from(CA_FILE))))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server verifier whose only roots are `ca` (no system roots: the tests are hermetic).
fn server_verifier(ca: &[CertificateDer<'static>]) -> ServerVerifier {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(ca.iter().cloned());
    ServerVerifier::new(trust(ca), roots, &provider())
}

fn client_verifier(ca: &[CertificateDer<'static>], mode: VerifyClient) -> ClientVerifier {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(ca.iter().cloned());
    let webpki =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    ClientVerifier::new(trust(ca), webpki, mode)
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

fn ip(addr: &str) -> ServerName<'static> {
    ServerName::IpAddress(addr.parse::<IpAddr>().unwrap().into())
}

/// The refusal a verifier returned, and its words.
fn refusal(error: rustls::Error) -> (Refusal, String) {
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
    let refusal = refusal_in(&io).expect("a refusal").clone();
    let words = refusal.to_string();
    (refusal, words)
}

fn verify_server(
    verifier: &ServerVerifier,
    cert: &CertificateDer<'_>,
    name: &ServerName<'_>,
) -> Result<(), (Refusal, String)> {
    verifier
        .verify_server_cert(cert, &[], name, &[], now())
        .map(drop)
        .map_err(refusal)
}

#[test]
fn a_pinned_self_signed_ca_certificate_is_accepted_for_its_name() {
    // What `openssl req -x509` makes by default: self-signed, CA:TRUE, the name only in a SAN.
    let pbx = self_signed(&Spec {
        cn: "pbx.example.com",
        dns: &["pbx.example.com"],
        ips: &[],
        ca: true,
        valid: NOW_YEARS,
    });
    let verifier = server_verifier(std::slice::from_ref(&pbx));
    assert!(verify_server(&verifier, &pbx, &dns("pbx.example.com")).is_ok());
    // An IP trusted server without FQDN: the pin identifies the peer.
    assert!(verify_server(&verifier, &pbx, &ip("10.0.0.5")).is_ok());
    let (refused, words) = verify_server(&verifier, &pbx, &dns("sip.example.com")).unwrap_err();
    assert!(matches!(refused, Refusal::NotNamed { .. }), "{refused:?}");
    assert!(
        words.starts_with("certificate for pbx.example.com does not name sip.example.com"),
        "{words}"
    );
}

#[test]
fn a_pinned_certificate_must_still_be_within_its_validity_period() {
    let old = self_signed(&Spec {
        cn: "old.example.com",
        dns: &["old.example.com"],
        ips: &[],
        ca: true,
        valid: (2001, 2002),
    });
    let verifier = server_verifier(std::slice::from_ref(&old));
    let (refused, words) = verify_server(&verifier, &old, &dns("old.example.com")).unwrap_err();
    assert!(matches!(refused, Refusal::Expired { .. }), "{refused:?}");
    assert!(
        words.contains("expired on") && words.contains("2002"),
        "{words}"
    );
    let future = self_signed(&Spec {
        valid: (2990, 2995),
        ..leaf_spec(&["new.example.com"], &[])
    });
    let verifier = server_verifier(std::slice::from_ref(&future));
    let (refused, _) = verify_server(&verifier, &future, &ip("10.0.0.5")).unwrap_err();
    assert!(
        matches!(refused, Refusal::NotYetValid { .. }),
        "{refused:?}"
    );
}

#[test]
fn a_self_signed_certificate_not_in_tls_ca_is_refused_with_the_fix() {
    let pinned = self_signed(&leaf_spec(&["a.example.com"], &[]));
    let other = self_signed(&Spec {
        ca: true,
        ..leaf_spec(&["b.example.com"], &[])
    });
    let verifier = server_verifier(&[pinned]);
    let (refused, words) = verify_server(&verifier, &other, &dns("b.example.com")).unwrap_err();
    assert!(matches!(refused, Refusal::SelfSigned { .. }), "{refused:?}");
    assert_eq!(
        words,
        format!(
            "self-signed certificate for b.example.com not in -tls-ca {CA_FILE}: \
             add it to -tls-ca to pin it"
        )
    );
}

#[test]
fn ca_signed_certificates_get_full_verification() {
    let ca = TestCa::new("Private CA");
    let verifier = server_verifier(std::slice::from_ref(&ca.cert));
    let sip = ca.leaf(&leaf_spec(&["sip.example.com"], &["10.0.0.7"]));
    assert!(verify_server(&verifier, &sip, &dns("sip.example.com")).is_ok());
    assert!(verify_server(&verifier, &sip, &ip("10.0.0.7")).is_ok());
    // Not pinned: an IP trusted server is matched by IP SAN only.
    let (refused, words) = verify_server(&verifier, &sip, &ip("10.0.0.5")).unwrap_err();
    assert!(matches!(refused, Refusal::NotNamed { .. }), "{refused:?}");
    assert!(
        words.starts_with("certificate for sip.example.com, 10.0.0.7 does not name 10.0.0.5"),
        "{words}"
    );
    let mut client_only = params(&leaf_spec(&["phone.example.com"], &[]));
    client_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let phone = ca.sign(&client_only);
    let (refused, words) = verify_server(&verifier, &phone, &dns("phone.example.com")).unwrap_err();
    assert!(
        matches!(refused, Refusal::WrongPurpose { .. }),
        "{refused:?}"
    );
    assert!(
        words.starts_with("certificate for phone.example.com is not for TLS servers"),
        "{words}"
    );
    let foreign = TestCa::new("Foreign CA").leaf(&leaf_spec(&["sip.example.com"], &[]));
    let (refused, words) = verify_server(&verifier, &foreign, &dns("sip.example.com")).unwrap_err();
    assert!(
        matches!(refused, Refusal::UnknownIssuer { .. }),
        "{refused:?}"
    );
    assert!(
        words.contains("issued by \"CN=Foreign CA\", neither a system root nor in -tls-ca")
            && words.contains(CA_FILE),
        "{words}"
    );
}

#[test]
fn client_certificates_pinned_or_signed_by_tls_ca_pass() {
    let ca = TestCa::new("Client CA");
    let pbx = self_signed(&Spec {
        ca: true,
        ..leaf_spec(&["pbx.example.com"], &[])
    });
    let verifier = client_verifier(&[ca.cert.clone(), pbx.clone()], VerifyClient::Required);
    assert!(verifier.client_auth_mandatory());
    assert!(verifier.verify_client_cert(&pbx, &[], now()).is_ok());
    let phone = ca.leaf(&leaf_spec(&["phone.example.com"], &[]));
    assert!(verifier.verify_client_cert(&phone, &[], now()).is_ok());
    let stranger = self_signed(&leaf_spec(&["stranger.example.com"], &[]));
    let (refused, _) = refusal(
        verifier
            .verify_client_cert(&stranger, &[], now())
            .unwrap_err(),
    );
    assert!(matches!(refused, Refusal::SelfSigned { .. }), "{refused:?}");
    let foreign = TestCa::new("Foreign CA").leaf(&leaf_spec(&["x.example.com"], &[]));
    let (_, words) = refusal(
        verifier
            .verify_client_cert(&foreign, &[], now())
            .unwrap_err(),
    );
    assert!(
        words.contains(&format!("not in -tls-ca {CA_FILE}")),
        "{words}"
    );
    assert!(!client_verifier(&[ca.cert], VerifyClient::Optional).client_auth_mandatory());
}

fn trusted(ip: &str, fqdns: &[&str]) -> TrustedServer {
    TrustedServer {
        ip: ip.parse().unwrap(),
        fqdns: fqdns.iter().map(|n| (*n).to_owned()).collect(),
        port: 5061,
        transport: Transport::Tls,
        routes: Vec::new(),
    }
}

fn identities(mode: VerifyClient, ca: &[CertificateDer<'static>]) -> ClientIdentities {
    let servers = TrustedServers {
        servers: vec![
            trusted(
                "203.0.113.20",
                &["sip.carrier.example", "sip2.carrier.example"],
            ),
            trusted("203.0.113.30", &[]),
        ],
    };
    ClientIdentities::new(mode, trust(ca), &servers)
}

#[test]
fn a_trusted_server_connecting_in_must_be_named_by_its_certificate() {
    let ca = TestCa::new("Carrier CA");
    let pbx = self_signed(&leaf_spec(&["pbx.example.com"], &[]));
    let check = identities(
        VerifyClient::TrustedServers,
        &[ca.cert.clone(), pbx.clone()],
    );
    let carrier: IpAddr = "203.0.113.20".parse().unwrap();
    let second = ca.leaf(&leaf_spec(&["sip2.carrier.example"], &[]));
    assert_eq!(
        check
            .check(carrier, Some(std::slice::from_ref(&second)))
            .unwrap(),
        Some("sip2.carrier.example".to_owned())
    );
    let wrong = ca.leaf(&leaf_spec(&["other.example"], &[]));
    let refused = check
        .check(carrier, Some(std::slice::from_ref(&wrong)))
        .unwrap_err();
    assert!(
        refused.to_string().starts_with(
            "certificate for other.example does not name sip.carrier.example or sip2.carrier.example"
        ),
        "{refused}"
    );
    assert!(matches!(
        check.check(carrier, None),
        Err(Refusal::NoCertificate)
    ));
    // Known by address only: an IP SAN, or the pin.
    let by_ip: IpAddr = "203.0.113.30".parse().unwrap();
    assert!(check.check(by_ip, Some(std::slice::from_ref(&pbx))).is_ok());
    assert!(check
        .check(by_ip, Some(std::slice::from_ref(&wrong)))
        .is_err());
    let with_ip = ca.leaf(&leaf_spec(&[], &["203.0.113.30"]));
    assert!(check
        .check(by_ip, Some(std::slice::from_ref(&with_ip)))
        .is_ok());
    // Anyone else need not present a certificate.
    let phone: IpAddr = "192.0.2.44".parse().unwrap();
    assert_eq!(check.check(phone, None).unwrap(), None);
    assert!(check
        .check(phone, Some(std::slice::from_ref(&wrong)))
        .is_ok());
}

#[test]
fn under_optional_a_trusted_server_may_come_without_a_certificate_but_not_a_wrong_one() {
    let ca = TestCa::new("Carrier CA");
    let check = identities(VerifyClient::Optional, std::slice::from_ref(&ca.cert));
    let carrier: IpAddr = "203.0.113.20".parse().unwrap();
    assert_eq!(check.check(carrier, None).unwrap(), None);
    let wrong = ca.leaf(&leaf_spec(&["other.example"], &[]));
    assert!(check
        .check(carrier, Some(std::slice::from_ref(&wrong)))
        .is_err());
    let off = identities(VerifyClient::Off, std::slice::from_ref(&ca.cert));
    assert_eq!(off.check(carrier, Some(&[wrong])).unwrap(), None);
}

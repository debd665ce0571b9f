//! How the certificates of TLS peers are checked (docs/tls.md has the rules for operators).
//!
//! A certificate that is itself one of the `-tls-ca` certificates (same DER) is *pinned*: it is
//! its own trust anchor, self-signed or CA:TRUE alike (as OpenSSL, and so Kamailio or Asterisk,
//! accept a trusted certificate presented as the peer's own); its validity period and the name
//! rule still apply. Every other certificate gets webpki's full verification. A refusal carries
//! a [`Refusal`], which says why in an operator's words and what file would fix it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::config::{TrustedServers, VerifyClient};

/// The `-tls-ca` certificates, each of which a peer may present as its own.
#[derive(Debug)]
pub(super) struct Trust {
    pins: Vec<CertificateDer<'static>>,
    ca: CaFile,
}

impl Trust {
    pub(super) fn new(pins: Vec<CertificateDer<'static>>, ca: Option<PathBuf>) -> Trust {
        Trust {
            pins,
            ca: CaFile(ca),
        }
    }

    fn is_pinned(&self, cert: &CertificateDer<'_>) -> bool {
        self.pins.iter().any(|pin| pin.as_ref() == cert.as_ref())
    }

    /// A pinned certificate's own checks: only its validity period (its name is the caller's).
    fn check_pinned(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Refusal> {
        let parsed = parse(cert)?;
        let validity = parsed.validity();
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now > validity.not_after.timestamp() {
            return Err(Refusal::Expired {
                names: names_of(&parsed),
                not_after: validity.not_after.to_string(),
            });
        }
        if now < validity.not_before.timestamp() {
            return Err(Refusal::NotYetValid {
                names: names_of(&parsed),
                not_before: validity.not_before.to_string(),
            });
        }
        Ok(())
    }

    /// What webpki's refusal of `cert` means, for a peer verified as `side`.
    fn explain(&self, error: &rustls::Error, cert: &CertificateDer<'_>, side: Side) -> Refusal {
        let Ok(parsed) = parse(cert) else {
            return Refusal::Unreadable;
        };
        let names = names_of(&parsed);
        // Not pinned, a self-signed certificate cannot pass, whatever webpki tripped over first
        // (an anchor with the same subject gives BadSignature, say).
        if parsed.subject() == parsed.issuer() {
            return Refusal::SelfSigned {
                names,
                ca: self.ca.clone(),
            };
        }
        let rustls::Error::InvalidCertificate(error) = error else {
            return Refusal::Unusable {
                names,
                reason: error.to_string(),
            };
        };
        match error {
            // BadSignature: the issuer's name is among the roots, but another key signed it.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                Refusal::UnknownIssuer {
                    names,
                    issuer: parsed.issuer().to_string(),
                    roots: Roots(side, self.ca.clone()),
                }
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Refusal::Expired {
                    names,
                    not_after: parsed.validity().not_after.to_string(),
                }
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Refusal::NotYetValid {
                    names,
                    not_before: parsed.validity().not_before.to_string(),
                }
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Refusal::NotNamed {
                    names,
                    expected: side.expected(),
                }
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Refusal::WrongPurpose { names, side }
            }
            other => Refusal::Unusable {
                names,
                reason: other.to_string(),
            },
        }
    }
}

/// Whose certificate is checked: a server Roundabout dials (as this name) or a client.
#[derive(Clone, Debug)]
pub(crate) enum Side {
    Server(String),
    Client,
}

impl Side {
    fn expected(&self) -> String {
        match self {
            Side::Server(name) => name.clone(),
            Side::Client => "the client".to_owned(),
        }
    }
}

/// `-tls-ca FILE`, or that none was given.
#[derive(Clone, Debug)]
pub(crate) struct CaFile(Option<PathBuf>);

impl fmt::Display for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => write!(f, "-tls-ca {}", path.display()),
            None => f.write_str("-tls-ca (none given)"),
        }
    }
}

/// The roots a peer's certificate must chain to: servers the system's and `-tls-ca`, clients
/// `-tls-ca` only.
#[derive(Clone, Debug)]
pub(crate) struct Roots(Side, CaFile);

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Side::Server(_) => write!(f, "neither a system root nor in {}", self.1),
            Side::Client => write!(f, "not in {}", self.1),
        }
    }
}

/// Why a peer's certificate was refused, as the log says it.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "certificate for {names} does not name {expected}: the peer needs a certificate that \
         does, or its -trusted-server entry one of the certificate's names (docs/tls.md)"
    )]
    NotNamed { names: String, expected: String },
    #[error("self-signed certificate for {names} not in {ca}: add it to -tls-ca to pin it")]
    SelfSigned { names: String, ca: CaFile },
    #[error(
        "certificate for {names} issued by \"{issuer}\", {roots}: add that CA's certificate \
         (or the peer's own, to pin it) to -tls-ca"
    )]
    UnknownIssuer {
        names: String,
        issuer: String,
        roots: Roots,
    },
    #[error("certificate for {names} expired on {not_after}: the peer must renew it")]
    Expired { names: String, not_after: String },
    #[error("certificate for {names} is not valid before {not_before}: check the clocks")]
    NotYetValid { names: String, not_before: String },
    #[error(
        "certificate for {names} is not for TLS {} (its extended key usage): the peer needs \
         one that is",
        match .side { Side::Server(_) => "servers", Side::Client => "clients" }
    )]
    WrongPurpose { names: String, side: Side },
    #[error("certificate for {names} refused: {reason}")]
    Unusable { names: String, reason: String },
    #[error("the certificate is not a readable X.509 certificate")]
    Unreadable,
    #[error(
        "no client certificate: -tls-verify-client trusted-servers requires one of trusted servers"
    )]
    NoCertificate,
}

impl From<Refusal> for rustls::Error {
    fn from(refusal: Refusal) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal))))
    }
}

/// The refusal inside a failed handshake's error, if a verifier here refused the certificate.
pub(super) fn refusal_in(error: &std::io::Error) -> Option<&Refusal> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            other.downcast_ref::<Refusal>()
        }
        _ => None,
    }
}

fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, Refusal> {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, parsed)| parsed)
        .map_err(|_| Refusal::Unreadable)
}

/// The names a certificate is for: its subjectAltName DNS names and IP addresses, else its
/// subject.
fn names_of(cert: &X509Certificate<'_>) -> String {
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return format!("\"{}\" (no subjectAltName)", cert.subject());
    }
    names.join(", ")
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The name rule (docs/tls.md): a peer with FQDNs must be named by one in a DNS subjectAltName;
/// a peer known by its address only must be named by it in an IP subjectAltName, unless the
/// certificate is pinned, when the pin itself identifies it.
fn check_name(
    cert: &CertificateDer<'_>,
    names: &[ServerName<'_>],
    pinned: bool,
) -> Result<(), Refusal> {
    let parsed = ParsedCertificate::try_from(cert).map_err(|_| Refusal::Unreadable)?;
    let by_address_only = names.iter().all(|n| matches!(n, ServerName::IpAddress(_)));
    if (pinned && by_address_only) || names.iter().any(|n| verify_server_name(&parsed, n).is_ok()) {
        return Ok(());
    }
    Err(Refusal::NotNamed {
        names: parse(cert).map(|c| names_of(&c))?,
        expected: names
            .iter()
            .map(|n| n.to_str().into_owned())
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

/// Verifies the servers Roundabout dials: pinned certificates by [`Trust`], the rest by webpki
/// (system roots and `-tls-ca`).
#[derive(Debug)]
pub(super) struct ServerVerifier {
    trust: Arc<Trust>,
    /// `None` when there is no root at all: only pinned certificates can pass.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    pub(super) fn new(
        trust: Arc<Trust>,
        roots: rustls::RootCertStore,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> ServerVerifier {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .build()
                .ok();
        ServerVerifier {
            trust,
            webpki,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.trust.is_pinned(end_entity) {
            Trust::check_pinned(end_entity, now)?;
            check_name(end_entity, std::slice::from_ref(server_name), true)?;
            return Ok(ServerCertVerified::assertion());
        }
        let verified = match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(CertificateError::UnknownIssuer.into()),
        };
        verified.map_err(|error| {
            let side = Side::Server(server_name.to_str().into_owned());
            self.trust.explain(&error, end_entity, side).into()
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies client certificates on the TLS and WSS listeners (`-tls-verify-client`): pinned
/// ones by [`Trust`], the rest by webpki against `-tls-ca` only.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    trust: Arc<Trust>,
    webpki: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
}

impl ClientVerifier {
    pub(super) fn new(
        trust: Arc<Trust>,
        webpki: Arc<dyn ClientCertVerifier>,
        mode: VerifyClient,
    ) -> ClientVerifier {
        ClientVerifier {
            trust,
            webpki,
            mandatory: mode == VerifyClient::Required,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.trust.is_pinned(end_entity) {
            Trust::check_pinned(end_entity, now)?;
            return Ok(ClientCertVerified::assertion());
        }
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|error| self.trust.explain(&error, end_entity, Side::Client).into())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// After a verified handshake on a listener: a client connecting from a trusted server's
/// address must be that server by the name rule, and under `trusted-servers` must present a
/// certificate at all.
#[derive(Debug)]
pub(super) struct ClientIdentities {
    mode: VerifyClient,
    trust: Arc<Trust>,
    /// The names each trusted server's certificate may carry: its FQDNs, else its address.
    servers: HashMap<IpAddr, Vec<ServerName<'static>>>,
}

impl ClientIdentities {
    pub(super) fn new(
        mode: VerifyClient,
        trust: Arc<Trust>,
        servers: &TrustedServers,
    ) -> ClientIdentities {
        let mut names: HashMap<IpAddr, Vec<ServerName<'static>>> = HashMap::new();
        for server in &servers.servers {
            let entry = names.entry(server.ip).or_default();
            entry.extend(
                server
                    .fqdns
                    .iter()
                    .filter_map(|fqdn| ServerName::try_from(fqdn.clone()).ok()),
            );
        }
        for (ip, entry) in &mut names {
            if entry.is_empty() {
                entry.push(ServerName::IpAddress((*ip).into()));
            }
        }
        ClientIdentities {
            mode,
            trust,
            servers: names,
        }
    }

    /// Whether the client at `remote` with `chain` (as verified in the handshake) may stay;
    /// `Ok` holds the names of its certificate, if it presented one.
    pub(super) fn check(
        &self,
        remote: IpAddr,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<Option<String>, Refusal> {
        if self.mode == VerifyClient::Off {
            return Ok(None);
        }
        let cert = chain.and_then(<[_]>::first);
        match (self.servers.get(&remote), cert) {
            (Some(names), Some(cert)) => check_name(cert, names, self.trust.is_pinned(cert))?,
            (Some(_), None) if self.mode == VerifyClient::TrustedServers => {
                return Err(Refusal::NoCertificate)
            }
            _ => {}
        }
        Ok(match cert {
            Some(cert) => Some(names_of(&parse(cert)?)),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests;

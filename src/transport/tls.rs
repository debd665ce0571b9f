//! TLS (rustls, ring provider): the server certificate for the TLS and WSS listeners, reloadable
//! without dropping connections, and the client side for outbound TLS and WSS. Both sides can
//! be mutual (`-tls-client-cert`, `-tls-verify-client`); `verify` checks peers' certificates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use crate::config::{MutualTls, TlsFiles, TrustedServers, VerifyClient};
use crate::warn_limited;

use super::FlowKey;

mod verify;

use verify::{ClientIdentities, ClientVerifier, ServerVerifier, Trust};

/// A certificate and key pair's flags, for the errors that name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPair {
    /// `-tls-cert`/`-tls-key`: the listeners' (and by default the client) certificate.
    Listener,
    /// `-tls-client-cert`/`-tls-client-key`.
    Client,
}

impl KeyPair {
    fn cert_flag(self) -> &'static str {
        match self {
            KeyPair::Listener => "-tls-cert",
            KeyPair::Client => "-tls-client-cert",
        }
    }

    fn key_flag(self) -> &'static str {
        match self {
            KeyPair::Listener => "-tls-key",
            KeyPair::Client => "-tls-client-key",
        }
    }
}

/// Why TLS material could not be loaded. Each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{} {path}: {source}", .pair.cert_flag())]
    Certificate {
        pair: KeyPair,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} {path}: unusable certificate: {source}", .pair.cert_flag())]
    BadCertificate {
        pair: KeyPair,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} {path}: no certificate in the file", .pair.cert_flag())]
    NoCertificate { pair: KeyPair, path: PathBuf },
    #[error("{} {path}: {source}", .pair.key_flag())]
    KeyFile {
        pair: KeyPair,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} {path}: unusable key: {source}", .pair.key_flag())]
    Key {
        pair: KeyPair,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "{} {key} does not belong to the certificate in {} {cert}",
        .pair.key_flag(),
        .pair.cert_flag()
    )]
    Mismatch {
        pair: KeyPair,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error("-tls-ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// Server and client TLS configuration shared by the TLS and WSS transports.
pub(crate) struct TlsContext {
    /// `None` without `-tls-cert`/`-tls-key`: no TLS or WSS listener.
    server: Option<(TlsAcceptor, Arc<CertStore>, TlsFiles)>,
    /// What a client connecting from a trusted server's address must prove (`-tls-verify-client`).
    clients: ClientIdentities,
    connector: TlsConnector,
    /// `-tls-client-cert`/`-tls-client-key`, reloaded with the listeners' certificate.
    client_identity: Option<(Arc<CertStore>, TlsFiles)>,
}

impl TlsContext {
    /// Loads the certificate and key (when given), the roots for outbound connections and for
    /// client certificates, and the client identity; `servers` are the trusted servers whose
    /// connections must name them.
    pub(crate) fn load(
        files: Option<&TlsFiles>,
        ca: Option<&Path>,
        mutual: &MutualTls,
        servers: &TrustedServers,
    ) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_certs = match ca {
            Some(path) => load_ca(path)?,
            None => Vec::new(),
        };
        let trust = Arc::new(Trust::new(ca_certs.clone(), ca.map(Path::to_path_buf)));
        let server = match files {
            Some(files) => {
                let store = Arc::new(CertStore::load(files, KeyPair::Listener)?);
                let builder = rustls::ServerConfig::builder();
                let builder = match (mutual.verify_client, ca) {
                    (VerifyClient::Off, _) | (_, None) => builder.with_no_client_auth(),
                    (mode, Some(path)) => {
                        let mut roots = rustls::RootCertStore::empty();
                        roots.add_parsable_certificates(ca_certs.iter().cloned());
                        let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots),
                            Arc::clone(&provider),
                        )
                        .build()
                        .map_err(|e| TlsError::Ca {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        })?;
                        let verifier = ClientVerifier::new(Arc::clone(&trust), webpki, mode);
                        builder.with_client_cert_verifier(Arc::new(verifier))
                    }
                };
                let config =
                    builder.with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
                Some((TlsAcceptor::from(Arc::new(config)), store, files.clone()))
            }
            None => None,
        };
        let client_identity = match &mutual.client_identity {
            Some(files) => Some((
                Arc::new(CertStore::load(files, KeyPair::Client)?),
                files.clone(),
            )),
            None => None,
        };
        let verifier = ServerVerifier::new(Arc::clone(&trust), roots(&ca_certs), &provider);
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        // RFC 5922 §7.2 asks for mutual TLS between proxies; what a server does not ask for is
        // not sent.
        let presented = client_identity
            .as_ref()
            .map(|(store, _)| store)
            .or(server.as_ref().map(|(_, store, _)| store));
        let config = match presented {
            Some(store) => {
                builder.with_client_cert_resolver(Arc::clone(store) as Arc<dyn ResolvesClientCert>)
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsContext {
            server,
            clients: ClientIdentities::new(mutual.verify_client, trust, servers),
            connector: TlsConnector::from(Arc::new(config)),
            client_identity,
        })
    }

    /// The server side of a handshake on an accepted connection, within `limit`, and the check
    /// of the client's identity. A failure is logged (rate-limited) and gives `None`; so does a
    /// context without a certificate.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: S,
        key: FlowKey,
        limit: Duration,
    ) -> Option<server::TlsStream<S>> {
        let (acceptor, _, _) = self.server.as_ref()?;
        let tls = match tokio::time::timeout(limit, acceptor.accept(socket)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                let error = explained(error);
                warn_limited!(flow = %key, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                warn_limited!(flow = %key, "TLS handshake timed out");
                return None;
            }
        };
        let chain = tls.get_ref().1.peer_certificates();
        match self.clients.check(key.remote.ip(), chain) {
            Ok(Some(identity)) => debug!(flow = %key, %identity, "TLS client certificate verified"),
            Ok(None) => {}
            Err(refusal) => {
                warn_limited!(flow = %key, error = %refusal, "TLS client refused");
                return None;
            }
        }
        Some(tls)
    }

    /// Rereads the certificates and keys (the listeners' and `-tls-client-cert`'s); new
    /// handshakes use them, open connections keep theirs. A bad new file leaves the old
    /// certificates in place.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let listener = match &self.server {
            Some((_, store, files)) => Some((store, load_certified_key(files, KeyPair::Listener)?)),
            None => None,
        };
        let client = match &self.client_identity {
            Some((store, files)) => Some((store, load_certified_key(files, KeyPair::Client)?)),
            None => None,
        };
        for (store, key) in listener.into_iter().chain(client) {
            store.replace(key);
        }
        if let Some((_, _, files)) = &self.server {
            info!(cert = %files.cert.display(), "TLS certificate reloaded");
        }
        if let Some((_, files)) = &self.client_identity {
            info!(cert = %files.cert.display(), "TLS client certificate reloaded");
        }
        Ok(())
    }

    /// Opens a TLS session on `socket`, verifying the peer as `name` (its FQDN, else its IP).
    pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: S,
        name: Option<&str>,
        ip: IpAddr,
    ) -> std::io::Result<client::TlsStream<S>> {
        let server_name = match name {
            Some(name) => ServerName::try_from(name.to_owned())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            None => ServerName::IpAddress(ip.into()),
        };
        self.connector
            .connect(server_name, socket)
            .await
            .map_err(explained)
    }
}

/// A handshake error whose certificate a verifier here refused, reworded as that refusal
/// (rustls would show it as `Other(OtherError(…))`).
fn explained(error: std::io::Error) -> std::io::Error {
    match verify::refusal_in(&error) {
        Some(refusal) => {
            std::io::Error::new(error.kind(), format!("invalid peer certificate: {refusal}"))
        }
        None => error,
    }
}

/// A certificate and key (the listeners', or the client identity), swapped whole on reload.
#[derive(Debug)]
struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    fn load(files: &TlsFiles, pair: KeyPair) -> Result<CertStore, TlsError> {
        Ok(CertStore(RwLock::new(load_certified_key(files, pair)?)))
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| Arc::clone(&key))
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.0.write() {
            *current = key;
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn load_certified_key(files: &TlsFiles, pair: KeyPair) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Certificate {
            pair,
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            pair,
            path: files.cert.clone(),
        });
    }
    // PKCS#1, PKCS#8 and SEC1 keys; an `EC PARAMETERS` block before the key is skipped.
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::KeyFile {
        pair,
        path: files.key.clone(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                pair,
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            source @ rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
                pair,
                path: files.cert.clone(),
                source,
            },
            source => TlsError::Key {
                pair,
                path: files.key.clone(),
                source,
            },
        })?;
    Ok(Arc::new(certified))
}

/// The `-tls-ca` certificates: roots, and the certificates peers may present pinned.
fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let ca_error = |reason: String| TlsError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| ca_error(e.to_string()))?;
    let mut usable = rustls::RootCertStore::empty();
    let (valid, invalid) = usable.add_parsable_certificates(certs.iter().cloned());
    if valid == 0 {
        return Err(ca_error(format!(
            "no usable CA certificate ({invalid} unusable)"
        )));
    }
    info!(ca = %path.display(), certificates = valid, "extra TLS roots");
    Ok(certs)
}

/// The system's roots plus `-tls-ca`, for the servers Roundabout dials. Unreadable system roots
/// are a warning (a private CA in `-tls-ca` may be all that is needed).
fn roots(ca: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if let Some(error) = native.errors.first() {
        warn!(%error, "some system root certificates could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(ca.iter().cloned());
    if roots.is_empty() {
        warn!(
            system = added,
            "no TLS root certificates: outbound TLS and WSS will fail to verify"
        );
    }
    roots
}

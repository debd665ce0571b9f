//! TLS (rustls, ring provider): the server certificate for the TLS and WSS listeners, reloadable
//! without dropping connections, and the client side for outbound TLS and WSS.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use crate::config::TlsFiles;
use crate::warn_limited;

use super::FlowKey;

/// Why TLS material could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("-tls-cert {path}: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("-tls-cert {path}: unusable certificate: {source}")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("-tls-cert {0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("-tls-key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("-tls-key {path}: unusable key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("-tls-key {key} does not belong to the certificate in -tls-cert {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("-tls-ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// Server and client TLS configuration shared by the TLS and WSS transports.
pub(crate) struct TlsContext {
    /// `None` without `-tls-cert`/`-tls-key`: no TLS or WSS listener.
    server: Option<(TlsAcceptor, Arc<CertStore>, TlsFiles)>,
    connector: TlsConnector,
}

impl TlsContext {
    /// Loads the certificate and key (when given) and the roots for outbound connections.
    pub(crate) fn load(
        files: Option<&TlsFiles>,
        ca: Option<&Path>,
    ) -> Result<TlsContext, TlsError> {
        let server = match files {
            Some(files) => {
                let store = Arc::new(CertStore(RwLock::new(load_certified_key(files)?)));
                let config = rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
                Some((TlsAcceptor::from(Arc::new(config)), store, files.clone()))
            }
            None => None,
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth();
        Ok(TlsContext {
            server,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The server side of a handshake on an accepted connection, within `limit`. A failure is
    /// logged (rate-limited) and gives `None`; so does a context without a certificate.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: S,
        key: FlowKey,
        limit: Duration,
    ) -> Option<server::TlsStream<S>> {
        let (acceptor, _, _) = self.server.as_ref()?;
        match tokio::time::timeout(limit, acceptor.accept(socket)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                warn_limited!(flow = %key, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                warn_limited!(flow = %key, "TLS handshake timed out");
                None
            }
        }
    }

    /// Rereads the certificate and key; new handshakes use them, open connections keep theirs.
    /// A bad new file leaves the old certificate in place.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let Some((_, store, files)) = &self.server else {
            return Ok(());
        };
        let key = load_certified_key(files)?;
        if let Ok(mut current) = store.0.write() {
            *current = key;
        }
        info!(cert = %files.cert.display(), "TLS certificate reloaded");
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
        self.connector.connect(server_name, socket).await
    }
}

/// The listeners' certificate, swapped whole on reload.
#[derive(Debug)]
struct CertStore(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| Arc::clone(&key))
    }
}

fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Certificate {
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    // PKCS#1, PKCS#8 and SEC1 keys; an `EC PARAMETERS` block before the key is skipped.
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::KeyFile {
        path: files.key.clone(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            source @ rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
                path: files.cert.clone(),
                source,
            },
            source => TlsError::Key {
                path: files.key.clone(),
                source,
            },
        })?;
    Ok(Arc::new(certified))
}

/// The system's roots plus `-tls-ca`. Unreadable system roots are a warning (a private CA in
/// `-tls-ca` may be all that is needed); an unusable `-tls-ca` is an error.
fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if let Some(error) = native.errors.first() {
        warn!(%error, "some system root certificates could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let ca_error = |reason: String| TlsError::Ca {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| ca_error(e.to_string()))?;
        let (valid, invalid) = roots.add_parsable_certificates(certs);
        if valid == 0 {
            return Err(ca_error(format!(
                "no usable CA certificate ({invalid} unusable)"
            )));
        }
        info!(ca = %path.display(), certificates = valid, "extra TLS roots");
    }
    if roots.is_empty() {
        warn!(
            system = added,
            "no TLS root certificates: outbound TLS and WSS will fail to verify"
        );
    }
    Ok(roots)
}

//! `roundabout csr`: a certificate signing request from an existing RSA or ECDSA key.

use std::path::PathBuf;

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

/// Placeholder on the `config` branch so the binary builds; the real command replaces it.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the csr command is not part of this build")]
    NotBuilt,
}

/// Placeholder on the `config` branch; always fails with [`CsrError::NotBuilt`].
///
/// # Errors
/// Always.
pub fn run(_request: &CsrRequest) -> Result<(), CsrError> {
    Err(CsrError::NotBuilt)
}

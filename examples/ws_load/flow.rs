//! Where the flows go and how one is opened: `--url` taken apart, TCP from a chosen source
//! address, TLS for `wss://`, and the WebSocket handshake that must agree on `sip`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Connecting one flow (TCP, TLS, WebSocket handshake) must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of `--url` the generator needs.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub url: String,
}

pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(format!("--url {url}: must start with ws:// or wss://"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--url {url}: unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| format!("--url {url}: bad port {port}"))?,
        None if secure => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("--url {url}: no host"));
    }
    let url = if authority.len() == rest.len() {
        format!("{url}/")
    } else {
        url.to_owned()
    };
    Ok(Endpoint {
        secure,
        host: host.to_owned(),
        port,
        url,
    })
}

impl Endpoint {
    /// The Via transport token of a request sent on it.
    pub fn via_transport(&self) -> &'static str {
        if self.secure {
            "WSS"
        } else {
            "WS"
        }
    }

    /// Its scheme, as the `RESULT` line names the transport.
    pub fn transport(&self) -> &'static str {
        if self.secure {
            "wss"
        } else {
            "ws"
        }
    }
}

/// The stream under a WebSocket: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connected WebSocket flow (plain or over TLS).
pub type Flow = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Everything a flow needs to connect, shared by all of them: one resolved address, one rustls
/// `ClientConfig` (10,000 TLS clients in one process).
pub struct Target {
    pub endpoint: Endpoint,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    sources: u8,
}

impl Target {
    /// Resolves `endpoint` and, for `wss://`, loads the roots (`ca`, else the system's); flows
    /// connect from 127.0.1.1..127.0.1.`sources` (0: the kernel's choice).
    pub async fn new(
        endpoint: Endpoint,
        ca: Option<&PathBuf>,
        sources: u8,
    ) -> Result<Target, String> {
        let remote = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("{}: {e}", endpoint.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", endpoint.host))?;
        let tls = endpoint.secure.then(|| tls_connector(ca)).transpose()?;
        Ok(Target {
            endpoint,
            remote,
            tls,
            sources,
        })
    }

    /// Flow `index`: TCP (from 127.0.1.x with `--sources`), TLS for wss, then the WebSocket
    /// handshake offering `sip`, all within [`CONNECT_TIMEOUT`]; fails unless the server echoes
    /// `sip`.
    pub async fn connect(&self, index: usize) -> Result<Flow, String> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.handshake(index))
            .await
            .unwrap_or_else(|_| Err("connect timed out after 10 s".into()))
    }

    async fn handshake(&self, index: usize) -> Result<Flow, String> {
        let socket = match self.remote {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if self.sources > 0 {
            let host = u8::try_from(index % usize::from(self.sources)).unwrap_or(0) + 1;
            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)), 0);
            socket
                .bind(local)
                .map_err(|e| format!("bind {local}: {e}"))?;
        }
        let tcp: TcpStream = socket
            .connect(self.remote)
            .await
            .map_err(|e| format!("connect {}: {e}", self.remote))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match self.tls.clone() {
            Some(connector) => {
                let name = ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| format!("server name {}: {e}", self.endpoint.host))?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS handshake: {e}"))?,
                )
            }
            None => Box::new(tcp),
        };
        let mut request = self
            .endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("url: {e}"))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
        // Small read buffers: tungstenite's default (128 KiB) times 1000+ flows adds up.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let echoed = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if !echoed.is_some_and(|v| v.trim().eq_ignore_ascii_case("sip")) {
            return Err(format!(
                "server did not accept the sip subprotocol (Sec-WebSocket-Protocol: {echoed:?})"
            ));
        }
        Ok(ws)
    }
}

fn tls_connector(ca: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

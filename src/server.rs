//! Binds every listener from the [`Config`], runs the proxy, and stops on a signal: SIGTERM or
//! SIGINT drain and exit, SIGHUP reloads the TLS certificate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::proxy::flood::{OverloadGuard, SourceLimiter};
use crate::proxy::router::Router;
use crate::proxy::Proxy;
use crate::transport::{Transport, TransportError, Transports};

/// After the drain, how long connections may take to write what is queued.
const FLUSH: Duration = Duration::from_secs(1);
/// How often expired client bindings are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Runs until SIGTERM or SIGINT, then drains for at most `config.drain_timeout`.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;

    let transports = Transports::bind(&config).await?;
    let senders = transports.senders();
    let ports = Transport::ALL
        .into_iter()
        .filter_map(|t| senders.local_addr(t).map(|addr| (t, addr.port())))
        .collect();
    let limiter = SourceLimiter::new(config.limits.rate_limit);
    let overload = OverloadGuard::new(config.limits.max_new_requests);
    let router = Router::new(&config, ports).with_host_addresses(host_addresses(&config));
    let proxy = Proxy::new(router, senders, limiter, overload);
    let shutdown = CancellationToken::new();
    let drain = config.drain_timeout;

    let sweeper = {
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let now = std::time::Instant::now();
                        let gone = proxy.clients().sweep(now);
                        if gone > 0 {
                            tracing::debug!(gone, "expired client bindings swept");
                        }
                        proxy.sweep_flood_limits(now);
                    }
                }
            }
        })
    };
    let reloads = {
        let (senders, shutdown) = (proxy.senders().clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = hangup.recv() => {
                        if let Err(error) = senders.reload_tls() {
                            warn!(%error, "TLS certificate not reloaded; the old one stays in use");
                        }
                    }
                }
            }
        })
    };
    let signals = {
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            info!(drain_secs = drain.as_secs_f32(), "shutting down: draining");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            proxy.start_draining();
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            shutdown.cancel();
        })
    };

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!("ready");
    transports
        .run(Arc::new(proxy), shutdown.clone(), FLUSH)
        .await;
    shutdown.cancel();
    let _ = tokio::join!(sweeper, reloads, signals);
    info!("stopped");
    Ok(())
}

/// With a wildcard `-bind-ip`, the addresses of this host's interfaces: the listeners take what
/// is sent to any of them, so requests naming them are for Roundabout itself. Read once at
/// start; an address added later is not known (its loopback addresses always are).
fn host_addresses(config: &Config) -> Vec<IpAddr> {
    if !config.bind_ip.is_unspecified() {
        return Vec::new();
    }
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => {
            let ips: Vec<IpAddr> = interfaces.iter().map(if_addrs::Interface::ip).collect();
            info!(addresses = ?ips, "wildcard bind: these addresses name Roundabout");
            ips
        }
        Err(error) => {
            warn!(%error, "interface addresses unreadable: only loopback and -local-ip name Roundabout");
            Vec::new()
        }
    }
}

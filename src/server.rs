//! Binds every listener from the [`Config`], runs the proxy, and stops on a signal: SIGTERM or
//! SIGINT drain and exit, SIGHUP reloads the TLS certificate. [`Server`] is the same without
//! the signals, so tests bind it on port 0 and run it in-process.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dns::{DnsError, Resolver, Usable};
use crate::hep::Capture;
use crate::media::{NgClient, Settings};
use crate::metrics::{Collected, Messages};
use crate::proxy::decisions::{Counting, Decisions};
use crate::proxy::flood::{OverloadGuard, SourceLimiter};
use crate::proxy::media::MediaRelay;
use crate::proxy::router::Router;
use crate::proxy::transaction::Transactions;
use crate::proxy::{Proxy, Services};
use crate::sip::Transport;
use crate::transport::{Handler, Outbound, Senders, Tapped, TransportError, Transports};

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
    #[error("cannot send to -hep-addr {addr}: {source}")]
    Hep {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on -metrics-addr {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the socket for -rtpengine: {0}")]
    Rtpengine(#[source] std::io::Error),
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// Runs until SIGTERM or SIGINT, then drains for at most `config.drain_timeout`.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;
    let server = Server::bind(&config).await?;
    let control = Control::default();
    let reloads = {
        let (senders, stopped) = (server.senders.clone(), control.stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
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
        let control = control.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = control.stop.cancelled() => return,
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            control.drain.cancel();
            // A second signal during the drain ends it at once.
            tokio::select! {
                () = control.stop.cancelled() => {}
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            control.stop.cancel();
        })
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!("ready");
    server.serve(control.clone()).await;
    control.stop.cancel();
    let _ = tokio::join!(reloads, signals);
    info!("stopped");
    Ok(())
}

/// How a running [`Server`] is told to stop.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Start draining: new out-of-dialog requests get 503 for `-drain-timeout`, then stop.
    pub drain: CancellationToken,
    /// Stop now (also ends a drain early).
    pub stop: CancellationToken,
}

/// Every listener bound and the proxy built, not yet serving.
pub struct Server {
    transports: Transports,
    senders: Senders,
    proxy: Proxy,
    drain_timeout: Duration,
    metrics: Option<MetricsListener>,
    /// `-hep-addr`: the capture the taps queue into, and the side that sends the queue.
    hep: Option<(Capture, crate::hep::Sender)>,
}

/// `-metrics-addr`: its listener, bound with the SIP ones, and the message counts it shows.
struct MetricsListener {
    listener: tokio::net::TcpListener,
    messages: Arc<Messages>,
    decisions: Arc<Decisions>,
}

impl Server {
    /// Loads the TLS material and binds every listener (port 0 picks a free one).
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        let transports = Transports::bind(config).await?;
        let senders = transports.senders();
        let metrics = match config.metrics_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Metrics { addr, source })?;
                info!(%addr, "metrics listening");
                Some(MetricsListener {
                    listener,
                    messages: Arc::default(),
                    decisions: Arc::default(),
                })
            }
            None => None,
        };
        let hep = match config.hep {
            Some(hep) => {
                let bound = crate::hep::bind(hep.addr, hep.agent_id, &senders)
                    .await
                    .map_err(|source| ServerError::Hep {
                        addr: hep.addr,
                        source,
                    })?;
                info!(addr = %hep.addr, agent_id = hep.agent_id, "HEP capture on");
                Some(bound)
            }
            None => None,
        };
        let outbound: Arc<dyn Outbound> = match taps(&metrics, &hep) {
            Some(taps) => Arc::new(Tapped::new(senders.clone(), taps)),
            None => Arc::new(senders.clone()),
        };
        let ports = Transport::ALL
            .into_iter()
            .filter_map(|t| senders.local_addr(t).map(|addr| (t, addr.port())))
            .collect();
        let proxy = Proxy::new(
            Router::new(config, ports).with_host_addresses(host_addresses(config)),
            outbound,
            SourceLimiter::new(config.limits.rate_limit),
            OverloadGuard::new(config.limits.max_new_requests),
            Transactions::new(config.sip_timers, config.transaction_limits),
            metrics.as_ref().map_or(Counting::Off, |metrics| {
                Counting::On(Arc::clone(&metrics.decisions))
            }),
            Services {
                resolver: resolver(config, &senders)?,
                media: media_relay(config).await?,
            },
        );
        Ok(Server {
            transports,
            senders,
            proxy,
            drain_timeout: config.drain_timeout,
            metrics,
            hep,
        })
    }

    /// The address the listener of `transport` is bound to, if it listens.
    #[must_use]
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.senders.local_addr(transport)
    }

    #[must_use]
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Serves until `control.stop`, or until the drain `control.drain` started has run out.
    pub async fn serve(self, control: Control) {
        let Server {
            transports,
            senders,
            proxy,
            drain_timeout,
            metrics,
            hep,
        } = self;
        let shutdown = CancellationToken::new();
        // Stopped once the transports are, so that what they send to the last is captured.
        let hep_stop = CancellationToken::new();
        let handler: Arc<dyn Handler> = match taps(&metrics, &hep) {
            Some(taps) => Arc::new(Tapped::new(proxy.clone(), taps)),
            None => Arc::new(proxy.clone()),
        };
        let hep_dropped = hep.as_ref().map(|(capture, _)| capture.dropped());
        if let Some(MetricsListener {
            listener,
            messages,
            decisions,
        }) = metrics
        {
            let mut collected = Collected::new(messages, decisions, proxy.clone(), senders);
            if let Some(dropped) = hep_dropped {
                collected = collected.with_hep_dropped(dropped);
            }
            tokio::spawn(crate::metrics::serve(
                listener,
                collected,
                control.drain.clone(),
                shutdown.clone(),
            ));
        }
        let hep_sender = hep.map(|(_, sender)| tokio::spawn(sender.run(hep_stop.clone())));
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
        // Stopped before the transports, so that what the drain answers still goes out.
        let timers_stop = CancellationToken::new();
        let timers = {
            let (proxy, stop) = (proxy.clone(), timers_stop.clone());
            tokio::spawn(async move { proxy.run_transaction_timers(stop).await })
        };
        let stopping = {
            let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = control.stop.cancelled() => {}
                    () = control.drain.cancelled() => {
                        info!(drain_secs = drain_timeout.as_secs_f32(), "shutting down: draining");
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        proxy.start_draining();
                        tokio::select! {
                            () = tokio::time::sleep(drain_timeout) => {}
                            () = control.stop.cancelled() => {}
                        }
                    }
                }
                timers_stop.cancel();
                let _ = timers.await;
                shutdown.cancel();
            })
        };
        transports.run(handler, shutdown.clone(), FLUSH).await;
        shutdown.cancel();
        hep_stop.cancel();
        if let Some(hep_sender) = hep_sender {
            let _ = hep_sender.await;
        }
        let _ = tokio::join!(sweeper, stopping);
    }
}

/// The resolver of host names that are not trusted servers, through `-dns-server` or the
/// system's resolvers; it looks for UDP targets only when there is a UDP socket to send from.
fn resolver(config: &Config, senders: &Senders) -> Result<Resolver, DnsError> {
    let usable = Usable {
        udp: senders.local_addr(Transport::Udp).is_some(),
    };
    Resolver::new(config.dns_server, config.default_network, usable)
}

/// `-rtpengine`: the media relay, its ng client on a socket of its own (of the first address's
/// family, any port).
async fn media_relay(config: &Config) -> Result<Option<Arc<MediaRelay>>, ServerError> {
    let Some(first) = config.rtpengine.first() else {
        return Ok(None);
    };
    let any: SocketAddr = if first.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(ServerError::Rtpengine)?;
    let client = NgClient::new(socket, config.rtpengine.clone(), Settings::default())
        .map_err(|error| ServerError::Rtpengine(std::io::Error::other(error)))?;
    info!(rtpengine = ?config.rtpengine, "media relay on");
    Ok(Some(Arc::new(MediaRelay::new(client))))
}

/// What watches the messages between the transports and the proxy: the metrics' counts and the
/// HEP capture, each only when configured; `None` when neither is, and then the proxy and the
/// transports talk directly, with nothing counted or captured.
fn taps(
    metrics: &Option<MetricsListener>,
    hep: &Option<(Capture, crate::hep::Sender)>,
) -> Option<(Option<Arc<Messages>>, Option<Capture>)> {
    let counts = metrics
        .as_ref()
        .map(|metrics| Arc::clone(&metrics.messages));
    let capture = hep.as_ref().map(|(capture, _)| capture.clone());
    (counts.is_some() || capture.is_some()).then_some((counts, capture))
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

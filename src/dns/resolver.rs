//! RFC 3263 resolution over hickory: NAPTR, SRV and A/AAAA lookups in the order `order`
//! plans, through the system's resolvers or `-dns-server`, with hickory's cache (which honours
//! each answer's TTL) bounded in size.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use thiserror::Error;
use tracing::{debug, warn};

use crate::sip::Transport;

use super::order::{self, Naptr, Plan, Srv, SrvPlan, XorShift};
use super::{Query, Target, Usable};

/// DNS answers kept at most (hickory counts answers, one per name and record type).
const CACHE_ENTRIES: u64 = 4096;
/// SRV names looked up for one URI at most (NAPTR records can name any number).
const MAX_SRV_NAMES: usize = 4;
/// SRV targets whose addresses are looked up for one URI at most.
const MAX_SRV_TARGETS: usize = 8;
/// Addresses taken from one name's A/AAAA answers at most.
const MAX_ADDRESSES: usize = 8;
/// How long one URI's resolution may take, every step together; past it, the URI is taken to
/// resolve to nothing.
const RESOLVE_TIME: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum DnsError {
    #[error("cannot set up the DNS resolver: {0}")]
    Build(#[source] NetError),
}

/// Resolves SIP URIs' host names (RFC 3263 §4) to ordered targets.
pub struct Resolver {
    dns: TokioResolver,
    /// `-default-network`: the transport of a URI that asks for none.
    default: Transport,
    usable: Usable,
}

impl Resolver {
    /// Through `server` (`-dns-server`), else the system's resolvers (`/etc/resolv.conf`).
    /// Without a readable system configuration, only `/etc/hosts` answers: a proxy that
    /// resolves nothing (`-strict-host`) must not fail to start for it.
    ///
    /// # Errors
    /// hickory cannot build the resolver.
    pub fn new(
        server: Option<SocketAddr>,
        default: Transport,
        usable: Usable,
    ) -> Result<Resolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = addr.port();
                        connection
                    })
                    .collect();
                let server = NameServerConfig::new(addr.ip(), true, connections);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider.clone()).unwrap_or_else(|error| {
                warn!(%error, "no DNS servers: the system's configuration cannot be read");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(Vec::new()),
                    provider,
                )
            }),
        };
        let options = builder.options_mut();
        options.cache_size = CACHE_ENTRIES;
        // Both families asked at once, IPv4 first: most SIP servers and Roundabout's own
        // listeners are IPv4.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Resolver {
            dns: builder.build().map_err(DnsError::Build)?,
            default,
            usable,
        })
    }

    /// Where a request for `query` may go, best first; empty when the name resolves to
    /// nothing usable (or not within [`RESOLVE_TIME`]).
    pub async fn resolve(&self, query: &Query) -> Vec<Target> {
        tokio::time::timeout(RESOLVE_TIME, self.resolve_now(query))
            .await
            .unwrap_or_else(|_| {
                debug!(host = %query.host, "DNS resolution timed out");
                Vec::new()
            })
    }

    async fn resolve_now(&self, query: &Query) -> Vec<Target> {
        let name: Arc<str> = Arc::from(query.host.as_str());
        match order::plan(query, self.default, self.usable) {
            Plan::Address { transport, addr } => vec![Target {
                transport,
                addr,
                name,
            }],
            Plan::Addresses { transport, port } => {
                self.addresses(&query.host, transport, port, &name).await
            }
            Plan::Naptr { srv } => {
                let names = self.naptr(&query.host, query.secure).await;
                let srv = if names.is_empty() {
                    srv
                } else {
                    SrvPlan { names, ..srv }
                };
                self.srv(&query.host, srv, &name).await
            }
            Plan::Srv(srv) => self.srv(&query.host, srv, &name).await,
        }
    }

    /// The SRV names a domain's NAPTR records lead to, best first (RFC 3263 §4.1).
    async fn naptr(&self, host: &str, secure: bool) -> Vec<(String, Transport)> {
        let lookup = match self.dns.lookup(host, RecordType::NAPTR).await {
            Ok(lookup) => lookup,
            Err(error) => {
                debug!(host, %error, "no NAPTR records");
                return Vec::new();
            }
        };
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::NAPTR(naptr) => Some(Naptr {
                    order: naptr.order,
                    preference: naptr.preference,
                    flags: &naptr.flags,
                    services: &naptr.services,
                    replacement: naptr.replacement.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        order::naptr_targets(records, secure, self.usable)
    }

    /// SRV lookups of the plan's names (RFC 3263 §4.2), their targets in RFC 2782 order and
    /// then their addresses; the host itself at the transport's default port when no name has
    /// a record.
    async fn srv(&self, host: &str, plan: SrvPlan, name: &Arc<str>) -> Vec<Target> {
        let found = join_all(plan.names.iter().take(MAX_SRV_NAMES).map(
            |(srv_name, transport)| async move { (self.srv_records(srv_name).await, *transport) },
        ))
        .await;
        // A fresh seed per resolution (every RandomState draws keys of its own): the draws of
        // successive requests, and of separate instances, are independent.
        let mut pick = XorShift::new(RandomState::new().build_hasher().finish());
        let ordered: Vec<(Srv, Transport)> = found
            .into_iter()
            .flat_map(|(records, transport)| {
                order::order_srv(records, &mut pick)
                    .into_iter()
                    .map(move |record| (record, transport))
            })
            .take(MAX_SRV_TARGETS)
            .collect();
        if ordered.is_empty() {
            let fallback = plan.fallback;
            return self
                .addresses(host, fallback, fallback.default_port(), name)
                .await;
        }
        join_all(ordered.iter().map(|(record, transport)| {
            self.addresses(&record.target, *transport, record.port, name)
        }))
        .await
        .into_iter()
        .flatten()
        .collect()
    }

    async fn srv_records(&self, srv_name: &str) -> Vec<Srv> {
        match self.dns.lookup(srv_name, RecordType::SRV).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(Srv {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                    }),
                    _ => None,
                })
                .collect(),
            Err(error) => {
                debug!(srv_name, %error, "no SRV records");
                Vec::new()
            }
        }
    }

    /// A/AAAA of `host` (RFC 3263 §4.2), each address at `port`.
    async fn addresses(
        &self,
        host: &str,
        transport: Transport,
        port: u16,
        name: &Arc<str>,
    ) -> Vec<Target> {
        match self.dns.lookup_ip(host).await {
            Ok(lookup) => lookup
                .iter()
                .take(MAX_ADDRESSES)
                .map(|ip| Target {
                    transport,
                    addr: SocketAddr::new(ip, port),
                    name: Arc::clone(name),
                })
                .collect(),
            Err(error) => {
                debug!(host, %error, "no addresses");
                Vec::new()
            }
        }
    }
}

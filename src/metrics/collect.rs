//! Everything `/metrics` shows, read at each scrape and encoded in the OpenMetrics text format
//! by `prometheus-client`. The names, their labels and their meaning are listed in README.md.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::process::Usage;
use super::{MessageCounts, Messages, CLASSES, METHODS};
use crate::proxy::Proxy;
use crate::sip::Transport;
use crate::transport::{ConnectionCounts, Senders};

/// What a scrape reads: the message counts, the proxy and the transports.
pub struct Collected {
    messages: Arc<Messages>,
    proxy: Proxy,
    senders: Senders,
    /// With `-hep-addr`: messages the capture dropped.
    hep_dropped: Option<Arc<AtomicU64>>,
}

impl Collected {
    #[must_use]
    pub fn new(messages: Arc<Messages>, proxy: Proxy, senders: Senders) -> Collected {
        Collected {
            messages,
            proxy,
            senders,
            hep_dropped: None,
        }
    }

    /// Shows `roundabout_hep_dropped_total` too, read from `dropped`.
    #[must_use]
    pub fn with_hep_dropped(self, dropped: Arc<AtomicU64>) -> Collected {
        Collected {
            hep_dropped: Some(dropped),
            ..self
        }
    }
}

impl fmt::Debug for Collected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected").finish_non_exhaustive()
    }
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let directions = [
            ("received", "received from peers", &self.messages.received),
            ("sent", "handed to a transport to send", &self.messages.sent),
        ];
        for (direction, what, counts) in directions {
            sip_messages(&mut encoder, direction, what, counts)?;
        }
        let connections: Vec<(Transport, ConnectionCounts)> = Transport::ALL
            .into_iter()
            .filter(|transport| transport.is_stream())
            .map(|transport| (transport, self.senders.connections(transport)))
            .collect();
        by_transport(
            &mut encoder,
            "roundabout_connections_open",
            "Stream connections open now, accepted or dialled.",
            MetricType::Gauge,
            connections.iter().map(|(t, counts)| (*t, counts.open)),
        )?;
        by_transport(
            &mut encoder,
            "roundabout_connections_accepted",
            "Stream connections accepted from peers.",
            MetricType::Counter,
            connections.iter().map(|(t, counts)| (*t, counts.accepted)),
        )?;
        by_transport(
            &mut encoder,
            "roundabout_connections_refused",
            "Stream connections refused on accept: a connection limit or a PROXY protocol header.",
            MetricType::Counter,
            connections.iter().map(|(t, counts)| (*t, counts.refused)),
        )?;
        gauge(
            &mut encoder,
            "roundabout_client_cache_entries",
            "Client bindings in the client cache.",
            self.proxy.clients().len() as u64,
        )?;
        gauge(
            &mut encoder,
            "roundabout_transactions_active",
            "Transactions Roundabout keeps now (reliable transport to UDP).",
            self.proxy.transactions().len() as u64,
        )?;
        counter(
            &mut encoder,
            "roundabout_forged_responses_dropped",
            "Responses dropped because they answer nothing Roundabout sent.",
            self.proxy.forged_responses(),
        )?;
        if let Some(dropped) = &self.hep_dropped {
            counter(
                &mut encoder,
                "roundabout_hep_dropped",
                "SIP messages not captured to -hep-addr: the capture queue was full, or the message too long for HEP.",
                dropped.load(Ordering::Relaxed),
            )?;
        }
        process(&mut encoder, Usage::read())
    }
}

/// One direction's SIP messages: requests by method, responses by class, both by transport.
fn sip_messages(
    encoder: &mut DescriptorEncoder<'_>,
    direction: &str,
    what: &str,
    counts: &MessageCounts,
) -> fmt::Result {
    let name = format!("roundabout_sip_requests_{direction}");
    let help = format!("SIP requests {what}, by transport and method.");
    let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
    for transport in Transport::ALL {
        for (index, method) in METHODS.into_iter().enumerate() {
            let labels = [("transport", transport.as_str()), ("method", method)];
            ConstCounter::new(counts.requests(transport, index))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    let name = format!("roundabout_sip_responses_{direction}");
    let help = format!("SIP responses {what}, by transport and status class.");
    let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
    for transport in Transport::ALL {
        for (index, class) in CLASSES.into_iter().enumerate() {
            let labels = [("transport", transport.as_str()), ("class", class)];
            ConstCounter::new(counts.responses(transport, index))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The process's resources, under the names every Prometheus client library uses for them.
fn process(encoder: &mut DescriptorEncoder<'_>, usage: Usage) -> fmt::Result {
    if let Some(bytes) = usage.resident_bytes {
        gauge(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            bytes,
        )?;
    }
    if let Some(fds) = usage.open_fds {
        gauge(
            encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            fds,
        )?;
    }
    if let Some(seconds) = usage.cpu_seconds {
        counter(
            encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            seconds,
        )?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// A metric with one value per transport, labelled `transport`.
fn by_transport(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    values: impl Iterator<Item = (Transport, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (transport, value) in values {
        let labels = [("transport", transport.as_str())];
        let sample = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

fn counter<N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

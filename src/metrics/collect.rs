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
use crate::proxy::decisions::{Decisions, Dropped, Path, Refused, Undelivered, ANSWER_CODES};
use crate::proxy::media::Command;
use crate::proxy::Proxy;
use crate::sip::Transport;
use crate::transport::{ConnectionCounts, Handshake, Senders};

/// What a scrape reads: the message counts, the proxy's decisions, the proxy and the
/// transports.
pub struct Collected {
    messages: Arc<Messages>,
    decisions: Arc<Decisions>,
    proxy: Proxy,
    senders: Senders,
    /// With `-hep-addr`: messages the capture dropped.
    hep_dropped: Option<Arc<AtomicU64>>,
}

impl Collected {
    #[must_use]
    pub fn new(
        messages: Arc<Messages>,
        decisions: Arc<Decisions>,
        proxy: Proxy,
        senders: Senders,
    ) -> Collected {
        Collected {
            messages,
            decisions,
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
        let (sum, count, buckets) = self.messages.forwarding.read();
        encoder
            .encode_descriptor(
                "roundabout_forwarding_seconds",
                "Time from receiving a message to handing a message it causes to a transport, while the proxy handles it.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        decisions(&mut encoder, &self.decisions)?;
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
        handshakes(&mut encoder, &connections)?;
        by_transport(
            &mut encoder,
            "roundabout_send_queue_full",
            "Messages not sent because their connection's send queue was full.",
            MetricType::Counter,
            connections
                .iter()
                .map(|(t, counts)| (*t, counts.queue_full)),
        )?;
        gauge(
            &mut encoder,
            "roundabout_transactions_active",
            "Transactions Roundabout keeps now (reliable transport to UDP).",
            self.proxy.transactions().len() as u64,
        )?;
        registrations(&mut encoder, &self.proxy)?;
        counter(
            &mut encoder,
            "roundabout_token_failures",
            "Request-URI tokens that did not verify: forged, damaged, or minted with another -token-key.",
            self.proxy.token_failures(),
        )?;
        counter(
            &mut encoder,
            "roundabout_transactions_timed_out",
            "Client transactions that ended with no final response (RFC 3261 Timers B, F and C).",
            self.proxy.transactions().timed_out(),
        )?;
        if let Some(relay) = self.proxy.media() {
            let commands = Command::ALL;
            labelled(
                &mut encoder,
                "roundabout_rtpengine_requests",
                "ng requests sent to rtpengine (each once, however often tried), by command.",
                commands.map(|c| ([("command", c.as_str())], relay.requests(c))),
            )?;
            labelled(
                &mut encoder,
                "roundabout_rtpengine_failures",
                "ng requests rtpengine did not answer, or answered with an error, by command.",
                commands.map(|c| ([("command", c.as_str())], relay.failures(c))),
            )?;
        }
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

/// What the proxy decided: requests forwarded, answered, refused and undelivered, and
/// messages dropped.
fn decisions(encoder: &mut DescriptorEncoder<'_>, decisions: &Decisions) -> fmt::Result {
    let forwarded = Path::ALL.map(|path| ([("path", path.as_str())], decisions.forwarded(path)));
    labelled(
        encoder,
        "roundabout_requests_forwarded",
        "SIP requests forwarded, statelessly or with a client transaction.",
        forwarded,
    )?;
    // In the order of `Decisions::answered`'s indices: the codes counted, then any other.
    let codes: Vec<String> = ANSWER_CODES
        .iter()
        .map(u16::to_string)
        .chain(["other".to_owned()])
        .collect();
    let answered = codes
        .iter()
        .enumerate()
        .map(|(index, code)| ([("code", code.as_str())], decisions.answered(index)));
    labelled(
        encoder,
        "roundabout_requests_answered",
        "SIP requests Roundabout answered itself, by status code.",
        answered,
    )?;
    let refused = Refused::ALL.map(|why| ([("reason", why.as_str())], decisions.refused(why)));
    labelled(
        encoder,
        "roundabout_requests_refused",
        "New SIP requests refused with 503 before they were forwarded, by reason.",
        refused,
    )?;
    let codes = Undelivered::ALL.map(|why| why.code().to_string());
    let undelivered = Undelivered::ALL
        .iter()
        .zip(&codes)
        .map(|(&why, code)| ([("code", code.as_str())], decisions.undelivered(why)));
    labelled(
        encoder,
        "roundabout_requests_undelivered",
        "SIP requests that could not be delivered to their next hop, by the status that answered them: 480 the client's flow is gone, 503 not sent.",
        undelivered,
    )?;
    let dropped = Dropped::ALL.map(|why| ([("reason", why.as_str())], decisions.dropped(why)));
    labelled(
        encoder,
        "roundabout_messages_dropped",
        "SIP messages dropped with no answer, by reason.",
        dropped,
    )
}

/// TLS and WebSocket handshakes by transport, direction and outcome.
fn handshakes(
    encoder: &mut DescriptorEncoder<'_>,
    connections: &[(Transport, ConnectionCounts)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "roundabout_handshakes",
        "TLS and WebSocket handshakes of connections accepted (in) and dialled (out); for a dialled one, connecting counts as part of it.",
        None,
        MetricType::Counter,
    )?;
    let handshaking = connections.iter().filter(|(t, _)| *t != Transport::Tcp);
    for (transport, counts) in handshaking {
        for handshake in Handshake::ALL {
            let labels = [
                ("transport", transport.as_str()),
                ("direction", if handshake.dialled { "out" } else { "in" }),
                ("result", if handshake.ok { "ok" } else { "failed" }),
            ];
            ConstCounter::new(counts.handshakes[handshake.index()])
                .encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The client cache's bindings: how many now, and what happened to them.
fn registrations(encoder: &mut DescriptorEncoder<'_>, proxy: &Proxy) -> fmt::Result {
    let clients = proxy.clients();
    gauge(
        encoder,
        "roundabout_client_cache_entries",
        "Client bindings in the client cache.",
        clients.len() as u64,
    )?;
    let counts = clients.counts();
    let events = [
        ("bound", counts.bound),
        ("removed", counts.removed),
        ("expired", counts.expired),
        ("refused", counts.refused),
    ];
    labelled(
        encoder,
        "roundabout_registrations",
        "Client bindings stored or refreshed by a REGISTER's 2xx (bound), removed by an un-REGISTER (removed), run out (expired), and REGISTERs refused with the cache full (refused).",
        events.map(|(event, n)| ([("event", event)], n)),
    )
}

/// A counter with one value per label set.
fn labelled<'a, const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = ([(&'a str, &'a str); N], u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
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

//! The call of `hot_path` (the seven messages of a SIPp bench call, UDP in and out) through the
//! whole handler, `Proxy::handle`: the flood check, parse, route, rewrite, the decisions and the
//! send into an outbound that drops what it gets. Without the metrics, and with them
//! (`-metrics-addr`'s taps, counts and timing): what turning them on costs.
//! `cargo bench --bench handler`. For instruction counts, `HOT_PATH_CALLS=N` skips criterion and
//! runs the call N times through the handler, with the metrics when `HOT_PATH_MODE=metrics`.

#![allow(clippy::unwrap_used)] // a benchmark of fixed inputs: a failure is a bug to see at once
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, Criterion, Throughput};
use roundabout::dns::{Resolver, Usable};
use roundabout::metrics::Messages;
use roundabout::proxy::decisions::Counting;
use roundabout::proxy::flood::{OverloadGuard, SourceLimiter};
use roundabout::proxy::transaction::Transactions;
use roundabout::proxy::{Proxy, Services};
use roundabout::sip::{Encoded, Transport};
use roundabout::transport::{
    ConnectionId, Destination, FlowKey, Handler, Inbound, Outbound, SendError, Tapped,
};

mod common;
use common::{router, Call};

/// An outbound that takes every message and drops it (counting them): the handler's work
/// without the sending.
struct Discard(Arc<AtomicUsize>);

impl Outbound for Discard {
    fn send(&self, _: &Destination, msg: Encoded) -> Result<(), SendError> {
        black_box(msg);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn connection_at(&self, _: SocketAddr, _: Transport) -> Option<(FlowKey, ConnectionId)> {
        None
    }
}

/// The proxy as the transports see it, with the metrics' taps and counts when `metrics`
/// (as the server builds it with `-metrics-addr`). Its router has the bench router's keys,
/// so the call's branches and tokens verify: checked by sending the call once.
fn handler(call: &Call, metrics: bool) -> Box<dyn Handler> {
    let messages = Arc::new(Messages::default());
    let sent = Arc::new(AtomicUsize::new(0));
    let discard = Discard(Arc::clone(&sent));
    let outbound: Arc<dyn Outbound> = if metrics {
        Arc::new(Tapped::new(discard, Arc::clone(&messages)))
    } else {
        Arc::new(discard)
    };
    let counting = if metrics {
        Counting::On(Arc::default())
    } else {
        Counting::Off
    };
    let proxy = Proxy::new(
        router(Transport::Udp),
        outbound,
        SourceLimiter::new(0),
        OverloadGuard::new(0),
        Transactions::new(
            roundabout::config::SipTimers::RFC_3261,
            roundabout::config::TransactionLimits::DEFAULT,
        ),
        counting,
        Services {
            resolver: Resolver::new(None, Transport::Tcp, Usable { udp: true }).unwrap(),
            media: None,
        },
    );
    let handler: Box<dyn Handler> = if metrics {
        Box::new(Tapped::new(proxy, messages))
    } else {
        Box::new(proxy)
    };
    handle_all(call, &*handler);
    assert_eq!(
        sent.load(Ordering::Relaxed),
        call.messages.len(),
        "all forwarded"
    );
    handler
}

fn handle_all(call: &Call, handler: &dyn Handler) {
    for (data, source) in &call.messages {
        handler.handle(Inbound {
            data: black_box(data.clone()),
            flow: *source,
            connection: None,
        });
    }
}

fn benches(c: &mut Criterion) {
    let call = Call::new();
    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(call.messages.len() as u64));
    for metrics in [false, true] {
        let handler = handler(&call, metrics);
        let name = if metrics {
            "udp_to_udp_metrics"
        } else {
            "udp_to_udp"
        };
        group.bench_function(name, |b| b.iter(|| handle_all(&call, &*handler)));
    }
    group.finish();
}

criterion_group!(handler_benches, benches);

fn main() {
    if let Some(calls) = std::env::var("HOT_PATH_CALLS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let call = Call::new();
        let metrics = std::env::var("HOT_PATH_MODE").is_ok_and(|mode| mode == "metrics");
        let handler = handler(&call, metrics);
        for _ in 0..calls {
            handle_all(&call, &*handler);
        }
        return;
    }
    handler_benches();
    Criterion::default().configure_from_args().final_summary();
}

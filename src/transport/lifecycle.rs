//! A stream flow's connection from its place in the flow table to its release, the same for
//! every stream transport: TCP and TLS (`stream`), WS and WSS (`ws`), accepted or dialled.
//! Each step of taking a connection down is tied to a value that does it on drop, so a panic
//! in a reader, or a task dropped at exit, cannot leave a flow in the table, a writer running
//! or a connection slot taken.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::flows::{Admission, ConnectionEvent, Handshake, Listed};
use super::queue::{send_queue, QueueLimits, QueueReceiver, QueueSender};
use super::{ConnectionId, FlowKey, Shared, Transport};

/// A flow registered in the table before its connection is up, so that messages sent
/// meanwhile queue behind the first instead of dialling again. It leaves the table when this
/// (or the connection served with it) is dropped.
pub(crate) struct Registered {
    listed: Listed,
    pub(crate) tx: QueueSender,
    rx: QueueReceiver,
}

impl Registered {
    pub(crate) fn new(key: FlowKey, shared: &Shared) -> Registered {
        let limits = QueueLimits {
            messages: shared.limits.send_queue,
            bytes: shared.limits.send_queue_bytes,
        };
        let (tx, rx) = send_queue(limits, Arc::clone(&shared.send_budget));
        let listed = shared.flows.list(key, tx.clone());
        Registered { listed, tx, rx }
    }

    /// The connection never came up: the flow leaves the table and its queue takes no more.
    /// What it holds was never sent.
    pub(crate) fn unserved(self) -> QueueReceiver {
        let Registered { listed, tx, mut rx } = self;
        drop((listed, tx));
        rx.close();
        rx
    }
}

/// Serves a registered flow's connection until it ends, then takes it down: the flow leaves
/// the table (nothing more queues for it), the writer gets `-write-timeout` to send what is
/// queued and is stopped, and the connection slot is released.
///
/// `writing` drains the queue on a task of its own (see [`Writer`]); `reading` runs here until
/// it ends, or until the writer does first. Both stop when their token is cancelled. Should
/// this future be dropped before the end (a panic in `reading`, or exit), the same happens at
/// once, the writer aborted instead of waited for.
pub(crate) async fn serve<W, R>(
    flow: Registered,
    shared: Arc<Shared>,
    admission: Admission,
    writing: impl FnOnce(QueueReceiver, FlowKey, CancellationToken) -> W,
    reading: impl FnOnce((FlowKey, ConnectionId), Arc<Shared>, CancellationToken) -> R,
) where
    W: Future<Output = &'static str> + Send + 'static,
    R: Future<Output = &'static str>,
{
    // The key is logged from `flow`, and read again after the reader: a local borrowed, or used
    // on both sides of an `.await`, keeps its space beside the reader's state for as long as
    // the flow lives.
    debug!(flow = %flow.listed.key, "{} open", kind(flow.listed.key.transport));
    let (key, id) = (flow.listed.key, flow.listed.id);
    let closing = shared.shutdown.child_token();
    let mut writer = Writer::spawn(writing(flow.rx, key, closing.clone()));
    let reading = reading((key, id), Arc::clone(&shared), closing.clone());
    let reason = writer.or_reader(reading).await;
    let key = flow.listed.key;
    drop((flow.listed, flow.tx));
    // What came in on this connection and waits for an answer can be given up on.
    if let Some(handler) = shared.handler.get() {
        handler.connection_closed(key, id);
    }
    closing.cancel();
    writer.stop(shared.limits.write_timeout).await;
    drop(admission);
    debug!(flow = %key, reason, "{} closed", kind(key.transport));
}

/// What the log calls a connection of `transport`. Found again each time rather than kept: a
/// string in the serving future would cost every idle flow 16 bytes.
fn kind(transport: Transport) -> &'static str {
    match transport {
        Transport::Ws | Transport::Wss => "WebSocket",
        _ => "connection",
    }
}

/// Serves an accepted connection once `handshake` has turned its socket into the transport's
/// stream (`None`: refused or failed, and logged), with `serve` (`stream::serve`, `ws::serve`).
///
/// The handshake runs in a box, freed before the flow is served. A task is as large as the
/// largest state of its future for as long as it lives: awaited inline, the TLS and WebSocket
/// handshake state (about 12 KiB) would stay allocated for every idle flow. For the same
/// reason the stream goes into `serve` in a `let` of its own: a value still in scope at an
/// `.await` keeps its space in the future even after it was moved out (1.5 KiB per WSS flow).
pub(crate) fn after_handshake<S, H, F>(
    handshake: H,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
    serve: impl FnOnce(S, Registered, Arc<Shared>, Admission) -> F + Send,
) -> impl Future<Output = ()> + Send
where
    H: Future<Output = Option<S>> + Send,
    F: Future<Output = ()> + Send,
{
    // Boxed here, before the returned future exists, so that it holds only the pointer.
    let handshake = Box::pin(handshake);
    async move {
        let served = match handshake.await {
            Some(stream) => {
                count_handshake(&shared, key.transport, false, true);
                serve(stream, Registered::new(key, &shared), shared, admission)
            }
            None => return count_handshake(&shared, key.transport, false, false),
        };
        served.await;
    }
}

/// Counts a TLS or WebSocket handshake; plain TCP has none to count (its PROXY protocol
/// header, when one is expected, fails as a refused connection).
pub(crate) fn count_handshake(shared: &Shared, transport: Transport, dialled: bool, ok: bool) {
    if transport != Transport::Tcp {
        let handshake = Handshake { dialled, ok };
        shared
            .flows
            .count(transport, ConnectionEvent::Handshake(handshake));
    }
}

/// A connection's writer, on a task of its own: the reader, which decides when the connection
/// ends, must never wait for the peer to read. Dropped before it was stopped, it aborts the
/// task, which frees the queue and the socket's write half.
struct Writer(Option<JoinHandle<&'static str>>);

impl Writer {
    /// Starts `writing`, which gives why it stopped.
    fn spawn<F>(writing: F) -> Writer
    where
        F: Future<Output = &'static str> + Send + 'static,
    {
        Writer(Some(tokio::spawn(writing)))
    }

    /// Runs `reader` until it ends, or the writer does first (the peer stopped reading, or a
    /// write failed); why the connection ends.
    async fn or_reader(&mut self, reader: impl Future<Output = &'static str>) -> &'static str {
        let Some(task) = &mut self.0 else {
            return reader.await;
        };
        let written = tokio::select! {
            biased;
            reason = reader => return reason,
            written = task => written,
        };
        // A finished task must not be awaited again.
        self.0 = None;
        written.unwrap_or("writer failed")
    }

    /// Lets the writer send what is still queued for at most `limit`, then stops it (which
    /// frees the queue).
    async fn stop(mut self, limit: Duration) {
        let Some(mut task) = self.0.take() else {
            return;
        };
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
            debug!("writer stopped: still writing at -write-timeout");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

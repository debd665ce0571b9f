//! One byte-stream connection (TCP, or TLS over it): a reader that frames messages for the
//! handler and a writer that drains the flow's queue. Used for accepted and dialled connections.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::sip::codec::{self, Frame};
use crate::warn_limited;

use super::flows::Admission;
use super::lifecycle::{self, Registered};
use super::queue::{QueueReceiver, QueueSender};
use super::{ConnectionId, Encoded, FlowKey, Shared, MAX_WRITE_BATCH};

/// Bytes read per call; the buffer grows only as far as one message needs.
const READ_CHUNK: usize = 4096;

/// A connected byte stream: plain TCP or TLS over it.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// Serves a registered flow's connection until it closes, idles out or shutdown. The stream is
/// split before the serving future exists, so that future, which lives as long as the flow, keeps
/// no room for the whole stream (a TLS session is over a kilobyte) beside the halves.
pub(crate) fn serve<S>(
    stream: S,
    flow: Registered,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let pong = flow.tx.clone();
    lifecycle::serve(
        flow,
        shared,
        admission,
        |queue, key, closing| write_loop(writer, queue, key, closing),
        |flow, shared, closing| read_loop(reader, flow, pong, shared, closing),
    )
}

/// Why the writer stopped on `error`, logged: a peer that stopped taking data is worth a
/// warning, a reset is not.
pub(crate) fn write_failed(key: FlowKey, error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::TimedOut {
        warn_limited!(flow = %key, "connection closed: the peer took no data for -write-timeout");
        "write timeout"
    } else {
        debug!(flow = %key, %error, "write error");
        "write error"
    }
}

async fn read_loop<R: AsyncRead>(
    reader: R,
    (key, id): (FlowKey, ConnectionId),
    pong: QueueSender,
    shared: Arc<Shared>,
    closing: CancellationToken,
) -> &'static str {
    tokio::pin!(reader);
    let limits = &shared.limits;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let closed = closing.cancelled();
    tokio::pin!(closed);
    loop {
        loop {
            match codec::frame(&mut buf, limits.max_message) {
                Ok(Some(Frame::Message(data))) => {
                    if let Some(handler) = shared.handler.get() {
                        handler.handle(super::Inbound {
                            data,
                            flow: key,
                            connection: Some(id),
                        });
                    }
                }
                // RFC 5626 §3.5.1: answer a double CRLF with a single one.
                Ok(Some(Frame::Ping)) => {
                    let _ = pong.try_send(Encoded {
                        head: Bytes::from_static(b"\r\n"),
                        body: Bytes::new(),
                    });
                }
                Ok(Some(Frame::Pong)) => {}
                Ok(None) => break,
                Err(error) => {
                    warn_limited!(flow = %key, %error, "stream closed: cannot frame");
                    return "framing error";
                }
            }
        }
        // Silence between messages is bounded by the idle timeout; a message once started
        // must complete within the read timeout (slowloris).
        let wait = if buf.is_empty() {
            limits.idle_timeout
        } else {
            limits.read_timeout.min(limits.idle_timeout)
        };
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            () = &mut closed => return "shutdown",
            read = tokio::time::timeout(wait, reader.read_buf(&mut buf)) => read,
        };
        match read {
            Err(_) if buf.is_empty() => return "idle timeout",
            Err(_) => {
                warn_limited!(flow = %key, "stream closed: message incomplete at read timeout");
                return "read timeout";
            }
            Ok(Ok(0)) => return "closed by peer",
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                debug!(flow = %key, %error, "read error");
                return "read error";
            }
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    writer: W,
    mut queue: QueueReceiver,
    key: FlowKey,
    closing: CancellationToken,
) -> &'static str {
    tokio::pin!(writer);
    let mut batch = Vec::with_capacity(MAX_WRITE_BATCH);
    let reason = loop {
        let next = tokio::select! {
            biased;
            next = queue.recv() => next,
            () = closing.cancelled() => {
                // Flush what is already queued, then stop.
                queue.close();
                queue.recv().await
            }
        };
        let Some(msg) = next else { break "closed" };
        // What queued meanwhile goes out in the same write: one syscall for a burst.
        batch.push(msg);
        while batch.len() < MAX_WRITE_BATCH {
            match queue.try_recv() {
                Some(msg) => batch.push(msg),
                None => break,
            }
        }
        let written = write_batch(&mut writer, &batch).await;
        batch.clear();
        queue.written();
        if let Err(error) = written {
            break write_failed(key, &error);
        }
    };
    let _ = writer.shutdown().await;
    reason
}

/// Writes the messages of `batch` (each whole in its head, as the queue gives them) with
/// vectored writes.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &[Encoded],
) -> std::io::Result<()> {
    let mut slices = [IoSlice::new(&[]); MAX_WRITE_BATCH];
    for (slice, msg) in slices.iter_mut().zip(batch) {
        *slice = IoSlice::new(&msg.head);
    }
    let mut unwritten = &mut slices[..batch.len().min(MAX_WRITE_BATCH)];
    while !unwritten.is_empty() {
        let n = writer.write_vectored(unwritten).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut unwritten, n);
    }
    writer.flush().await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::{timeout, Instant};
    use tokio_util::task::TaskTracker;

    use super::super::deadline::WriteDeadline;
    use super::super::flows::FlowTable;
    use super::super::queue::{QueueError, SendBudget};
    use super::super::tls::TlsContext;
    use super::super::{Handler, Inbound};
    use super::*;
    use crate::config::Limits;
    use crate::sip::Transport;

    const KEY: FlowKey = FlowKey {
        transport: Transport::Tcp,
        remote: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::new(192, 0, 2, 1),
            50000,
        )),
    };

    struct Collect(mpsc::UnboundedSender<Bytes>);

    impl Handler for Collect {
        fn handle(&self, inbound: Inbound) {
            let _ = self.0.send(inbound.data);
        }

        fn undelivered(&self, _: Encoded, _: FlowKey) {}

        fn connection_closed(&self, _: FlowKey, _: ConnectionId) {}
    }

    /// What a served in-memory connection shares, within `limits` (the connection limits
    /// included), and the messages its handler is handed.
    pub(crate) fn shared(limits: Limits) -> (Arc<Shared>, mpsc::UnboundedReceiver<Bytes>) {
        let (handled, inbound) = mpsc::unbounded_channel();
        (handled_by(limits, Arc::new(Collect(handled))), inbound)
    }

    /// What a served in-memory connection shares, its messages handed to `handler`.
    fn handled_by(limits: Limits, handler: Arc<dyn Handler>) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            limits,
            flows: Arc::new(FlowTable::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            )),
            send_budget: Arc::new(SendBudget::new(limits.send_buffer_total)),
            handler: OnceLock::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tls: TlsContext::load(None, None, &Default::default(), &Default::default()).unwrap(),
            ws_path: None,
            balancers: crate::config::ClientRanges::default(),
            udp: None,
            local: Vec::new(),
        });
        let _ = shared.handler.set(handler);
        shared
    }

    /// Queues messages for `key` until the writer, whose peer reads nothing, must be stuck:
    /// more than the in-memory pipe holds.
    pub(crate) fn fill(shared: &Shared, key: &FlowKey, pipe: usize) {
        let queue = shared.flows.queue(key, None).unwrap();
        let message = Encoded {
            head: Bytes::from(vec![b'x'; 1000]),
            body: Bytes::new(),
        };
        for _ in 0..=pipe / 1000 + 4 {
            queue.try_send(message.clone()).unwrap();
        }
    }

    /// Checks that a connection ended in full: out of the flow table, its queue refusing and
    /// its bytes given back, its slot free again (`-max-connections-per-ip 1` in the tests).
    pub(crate) fn gone(shared: &Arc<Shared>, key: &FlowKey, queue: &QueueSender) {
        assert!(!shared.flows.contains(key));
        assert_eq!(queue.try_send(Encoded::default()), Err(QueueError::Closed));
        assert_eq!(shared.send_budget.used(), 0);
        assert!(shared.flows.admit(key.remote.ip()).is_ok());
    }

    /// Bytes the in-memory pipes of the tests hold each way.
    pub(crate) const PIPE: usize = 4096;

    /// One connection per address, so that `gone` can tell the slot was freed.
    pub(crate) fn limits() -> Limits {
        Limits {
            max_connections_per_ip: 1,
            write_timeout: Duration::from_secs(2),
            ..Limits::DEFAULT
        }
    }

    /// Waits for a served connection to end; how long after `started` it did.
    pub(crate) async fn ended(served: JoinHandle<()>, started: Instant) -> Duration {
        timeout(Duration::from_secs(60), served)
            .await
            .unwrap()
            .unwrap();
        started.elapsed()
    }

    /// Serves `stream` as the flow `KEY`; the flow's queue and the serving task.
    fn start<S>(stream: S, shared: &Arc<Shared>) -> (QueueSender, JoinHandle<()>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let admission = shared.flows.admit(KEY.remote.ip()).unwrap();
        let flow = Registered::new(KEY, shared);
        let queue = flow.tx.clone();
        let served = tokio::spawn(serve(stream, flow, Arc::clone(shared), admission));
        (queue, served)
    }

    /// A handler with a bug: it panics on the listener's task.
    struct Panics;

    impl Handler for Panics {
        fn handle(&self, _: Inbound) {
            panic!("the handler failed");
        }

        fn undelivered(&self, _: Encoded, _: FlowKey) {}

        fn connection_closed(&self, _: FlowKey, _: ConnectionId) {}
    }

    #[tokio::test]
    async fn a_panic_in_the_reader_still_takes_the_connection_down() {
        let shared = handled_by(limits(), Arc::new(Panics));
        let (ours, mut theirs) = tokio::io::duplex(PIPE);
        let (queue, served) = start(ours, &shared);
        theirs
            .write_all(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let panicked = timeout(Duration::from_secs(60), served).await.unwrap();
        assert!(panicked.unwrap_err().is_panic());
        // The writer was aborted, not waited for: the socket closes once the runtime drops it.
        let mut rest = Vec::new();
        timeout(Duration::from_secs(5), theirs.read_to_end(&mut rest))
            .await
            .expect("the writer outlived its connection")
            .unwrap();
        gone(&shared, &KEY, &queue);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_closed_at_the_write_timeout() {
        let (shared, _) = shared(limits());
        let (ours, _theirs) = tokio::io::duplex(PIPE);
        let started = Instant::now();
        let (queue, served) = start(
            WriteDeadline::new(ours, shared.limits.write_timeout),
            &shared,
        );
        fill(&shared, &KEY, PIPE);
        assert_eq!(ended(served, started).await, shared.limits.write_timeout);
        gone(&shared, &KEY, &queue);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_ends_a_connection_whose_writer_is_stuck() {
        let limits = Limits {
            idle_timeout: Duration::from_secs(5),
            ..limits()
        };
        let (shared, _) = shared(limits);
        // No write deadline under it: only the reader can end this connection.
        let (ours, _theirs) = tokio::io::duplex(PIPE);
        let started = Instant::now();
        let (queue, served) = start(ours, &shared);
        fill(&shared, &KEY, PIPE);
        // The writer had -write-timeout to send what was queued.
        assert_eq!(
            ended(served, started).await,
            limits.idle_timeout + limits.write_timeout
        );
        gone(&shared, &KEY, &queue);
    }
}

//! One byte-stream connection (TCP, or TLS over it): a reader that frames messages for the
//! handler and a writer that drains the flow's queue. Used for accepted and dialled connections.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::sip::codec::{self, Frame};
use crate::warn_limited;

use super::flows::{Admission, FlowHandle};
use super::queue::{send_queue, QueueLimits, QueueReceiver, QueueSender};
use super::{Encoded, FlowKey, Shared, MAX_WRITE_BATCH};

/// Bytes read per call; the buffer grows only as far as one message needs.
const READ_CHUNK: usize = 4096;

/// A connected byte stream: plain TCP or TLS over it.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// A flow registered in the table before its connection is up, so that messages sent
/// meanwhile queue behind the first instead of dialling again.
pub(crate) struct Registered {
    pub(crate) key: FlowKey,
    pub(crate) id: u64,
    pub(crate) tx: QueueSender,
    pub(crate) rx: QueueReceiver,
}

impl Registered {
    pub(crate) fn new(key: FlowKey, shared: &Shared) -> Registered {
        let limits = QueueLimits {
            messages: shared.limits.send_queue,
            bytes: shared.limits.send_queue_bytes,
        };
        let (tx, rx) = send_queue(limits, Arc::clone(&shared.send_budget));
        let id = shared.flows.next_id();
        shared.flows.insert(
            key,
            FlowHandle {
                queue: tx.clone(),
                id,
            },
        );
        Registered { key, id, tx, rx }
    }
}

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
    serve_split(reader, writer, flow, shared, admission)
}

async fn serve_split<S>(
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    flow: Registered,
    shared: Arc<Shared>,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Registered { key, id, tx, rx } = flow;
    debug!(flow = %key, "connection open");
    let closing = shared.shutdown.child_token();
    let writer = tokio::spawn(write_loop(writer, rx, closing.clone()));
    let reason = read_loop(reader, key, &tx, &shared, &closing).await;
    shared.flows.remove(&key, id);
    drop(tx);
    closing.cancel();
    let _ = writer.await;
    drop(admission);
    debug!(flow = %key, reason, "connection closed");
}

async fn read_loop<R: AsyncRead>(
    reader: R,
    key: FlowKey,
    pong: &QueueSender,
    shared: &Shared,
    closing: &CancellationToken,
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
                        handler.handle(super::Inbound { data, flow: key });
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
    closing: CancellationToken,
) {
    tokio::pin!(writer);
    let mut batch = Vec::with_capacity(MAX_WRITE_BATCH);
    loop {
        let next = tokio::select! {
            biased;
            next = queue.recv() => next,
            () = closing.cancelled() => {
                // Flush what is already queued, then stop.
                queue.close();
                queue.recv().await
            }
        };
        let Some(msg) = next else { break };
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
        if written.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
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

//! WebSocket (RFC 7118) over TCP or TLS, as server and as client: the `sip` subprotocol is
//! required and echoed, each text or binary frame carries one SIP message, pings are answered,
//! and silent flows are pinged so NATs and load balancers keep them open. A flow that carries
//! no message either way for `-idle-timeout` is closed, however well it answers pings.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::warn_limited;

use super::flows::Admission;
use super::lifecycle::{self, Registered};
use super::queue::QueueReceiver;
use super::stream::{self, ByteStream};
use super::tcp::Connection;
use super::{ConnectionId, Encoded, FlowKey, Inbound, Shared, MAX_WRITE_BATCH};
use crate::sip::Transport;

/// The WebSocket subprotocol for SIP (RFC 7118 §4.1).
const SUBPROTOCOL: &str = "sip";
/// Per-connection read buffer. tungstenite's default (128 KiB) would cost more per idle browser
/// than the rest of the flow. It is only the initial size and the most read per call: a frame's
/// header makes tungstenite reserve its whole length (up to `max_frame_size`), so a large
/// message still arrives whole, while an idle flow keeps 1 KiB instead of 4 (2 KiB less per
/// flow in bench/idle.sh).
const READ_BUFFER: usize = 1024;
/// Frames collect in the write buffer up to this size until the batch is flushed.
const WRITE_BUFFER: usize = 16 * 1024;

fn config(shared: &Shared) -> WebSocketConfig {
    let max = shared.limits.max_message;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Serves an accepted WS connection: handshake, then frames.
pub(crate) fn serve_plain(
    socket: Connection,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let handshake = {
        let shared = Arc::clone(&shared);
        async move { accept(socket, key, &shared).await }
    };
    lifecycle::after_handshake(handshake, key, shared, admission, serve)
}

/// Serves an accepted WSS connection: TLS handshake, WebSocket handshake, then frames.
pub(crate) fn serve_secure(
    socket: Connection,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let handshakes = {
        let shared = Arc::clone(&shared);
        async move {
            let limit = shared.limits.handshake_timeout;
            let tls = shared.tls.accept(socket, key, limit).await?;
            accept(tls, key, &shared).await
        }
    };
    lifecycle::after_handshake(handshakes, key, shared, admission, serve)
}

/// The server side of the WebSocket handshake, within the handshake timeout. A refusal or a
/// failure is logged (rate-limited) and gives `None`.
async fn accept<S>(stream: S, key: FlowKey, shared: &Shared) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = shared.ws_path.clone();
    #[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
    let check = move |request: &Request, response: Response| {
        check_request(request, response, path.as_deref())
    };
    let limit = shared.limits.handshake_timeout;
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(shared)));
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(ws)) => return Some(ws),
        Ok(Err(WsError::Http(response))) => {
            let reason = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            warn_limited!(flow = %key, status = response.status().as_u16(), %reason, "WebSocket handshake refused");
        }
        Ok(Err(error)) => warn_limited!(flow = %key, %error, "WebSocket handshake failed"),
        Err(_) => warn_limited!(flow = %key, "WebSocket handshake timed out"),
    }
    None
}

// tungstenite's callback signature fixes the error type; it is built once per refused handshake.
#[allow(clippy::result_large_err)]
/// RFC 7118 §4.1: the client must offer `sip`, and the server echoes it. With `-ws-path`, the
/// request path must match.
fn check_request(
    request: &Request,
    mut response: Response,
    path: Option<&str>,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut refusal = ErrorResponse::new(Some(why.to_owned()));
        *refusal.status_mut() = status;
        refusal
    };
    if let Some(path) = path {
        if request.uri().path() != path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "no SIP WebSocket service at this path",
            ));
        }
    }
    let offers_sip = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_sip {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the sip WebSocket subprotocol (RFC 7118) is required",
        ));
    }
    response.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// Opens a WS or WSS connection to a server, offering `sip`; the server must accept it.
pub(crate) async fn connect(
    key: FlowKey,
    name: Option<&str>,
    shared: &Shared,
) -> std::io::Result<WebSocketStream<Box<dyn ByteStream>>> {
    // Boxed like an accepted handshake (`lifecycle::after_handshake`): the dialling task goes
    // on to serve the flow.
    Box::pin(open(key, name, shared)).await
}

async fn open(
    key: FlowKey,
    name: Option<&str>,
    shared: &Shared,
) -> std::io::Result<WebSocketStream<Box<dyn ByteStream>>> {
    let stream = super::tcp::connect(key, name, shared).await?;
    let scheme = if key.transport == Transport::Wss {
        "wss"
    } else {
        "ws"
    };
    let host = match (name, key.remote.ip()) {
        (Some(name), _) => name.to_owned(),
        (None, IpAddr::V4(ip)) => ip.to_string(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
    };
    let mut request = format!("{scheme}://{host}:{}/", key.remote.port())
        .into_client_request()
        .map_err(std::io::Error::other)?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // tungstenite fails the handshake when the server does not accept the offered `sip`.
    let handshake =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config(shared)));
    match tokio::time::timeout(shared.limits.handshake_timeout, handshake).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(error)) => Err(std::io::Error::other(error)),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Serves a WebSocket flow until it closes, misses its pongs or shutdown.
///
/// The stream is split before the returned future exists, so the future holds the two halves
/// (pointers to the shared stream) rather than a copy of the stream itself for its lifetime.
pub(crate) fn serve<S>(
    ws: WebSocketStream<S>,
    flow: Registered,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (control, control_rx) = control_slot();
    lifecycle::serve(
        flow,
        shared,
        admission,
        |queue, key, closing| write_loop(sink, queue, control_rx, key, closing),
        |flow, shared, closing| read_loop(stream, flow, control, shared, closing),
    )
}

/// Frames messages for the handler until the flow ends; `control` goes with it, which lets
/// the writer finish.
async fn read_loop<R>(
    mut stream: R,
    (key, id): (FlowKey, ConnectionId),
    control: ControlSender,
    shared: Arc<Shared>,
    closing: CancellationToken,
) -> &'static str
where
    R: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let (interval, idle) = (shared.limits.ws_ping_interval, shared.limits.idle_timeout);
    // Any frame from the peer, pongs too, shows it is there; only messages, either way, show
    // the flow is in use.
    let mut heard = Instant::now();
    let mut used = heard;
    let mut ping_outstanding = false;
    let closed = closing.cancelled();
    tokio::pin!(closed);
    loop {
        let (ping_at, idle_at) = (heard + interval, used + idle);
        let next = tokio::select! {
            () = &mut closed => {
                control.send(close(CloseCode::Away, "shutting down"));
                return "shutdown";
            }
            next = tokio::time::timeout_at(ping_at.min(idle_at), stream.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                let now = Instant::now();
                if now >= idle_at {
                    used = control.last_sent().map_or(used, |sent| sent.max(used));
                    if now >= used + idle {
                        control.send(close(CloseCode::Away, "idle"));
                        return "idle timeout";
                    }
                }
                if now >= ping_at {
                    // Silence: ping once; a peer that stays silent one more interval is gone.
                    if ping_outstanding {
                        return "no pong";
                    }
                    ping_outstanding = true;
                    heard = now;
                    control.send(Message::Ping(Bytes::new()));
                }
                continue;
            }
            Ok(None) => return "closed by peer",
            Ok(Some(Err(WsError::Capacity(error)))) => {
                warn_limited!(flow = %key, %error, "WebSocket closed: message too big");
                control.send(close(CloseCode::Size, "message too big"));
                return "message too big";
            }
            Ok(Some(Err(error))) => {
                debug!(flow = %key, %error, "WebSocket read error");
                return "read error";
            }
            Ok(Some(Ok(frame))) => frame,
        };
        heard = Instant::now();
        ping_outstanding = false;
        let (data, text) = match frame {
            Message::Text(text) => (Bytes::from(text), true),
            Message::Binary(data) => (data, false),
            Message::Close(_) => return "closed by peer",
            // tungstenite answers pings itself; pongs only prove the peer is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        used = heard;
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            // RFC 5626 §3.5.1 over a WebSocket: browsers cannot send WebSocket pings, so SIP.js
            // and JsSIP-based phones send a double CRLF, answered with a single CRLF in a frame
            // of the same kind; a lone CRLF (a pong, or padding) gets nothing.
            if data.windows(4).any(|w| w == b"\r\n\r\n") {
                control.send(if text {
                    Message::text("\r\n")
                } else {
                    Message::binary(Bytes::from_static(b"\r\n"))
                });
            }
            continue;
        }
        if let Some(handler) = shared.handler.get() {
            handler.handle(Inbound {
                data,
                flow: key,
                connection: Some(id),
            });
        }
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn write_loop<W>(
    mut sink: W,
    mut queue: QueueReceiver,
    control: ControlReceiver,
    key: FlowKey,
    closing: CancellationToken,
) -> &'static str
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let reason = loop {
        let (frame, mut messages) = tokio::select! {
            biased;
            frame = control.recv() => match frame {
                Some(frame) => (frame, false),
                None => break "closed",
            },
            msg = queue.recv() => match msg {
                Some(msg) => (sip_frame(msg), true),
                None => break "closed",
            },
            () = closing.cancelled() => {
                // Flush what is already queued, then say goodbye.
                queue.close();
                while let Some(msg) = queue.recv().await {
                    let sent = sink.send(sip_frame(msg)).await;
                    queue.written();
                    if let Err(error) = sent {
                        return write_failed(key, &error);
                    }
                }
                if let Some(frame) = control.try_recv() {
                    let _ = sink.send(frame).await;
                }
                break "shutdown";
            }
        };
        if matches!(frame, Message::Close(_)) {
            let _ = sink.send(frame).await;
            break "closed";
        }
        // Whatever else is already queued goes out with it: one write (one TLS record) for a
        // burst instead of one per message.
        let mut batch = Ok(());
        let mut next = Some(frame);
        let mut batched = 0;
        while let Some(frame) = next.take() {
            batch = sink.feed(frame).await;
            batched += 1;
            if batch.is_err() || batched == MAX_WRITE_BATCH {
                break;
            }
            next = queue.try_recv().map(sip_frame);
            messages |= next.is_some();
        }
        let flushed = match batch {
            Ok(()) => sink.flush().await,
            Err(error) => Err(error),
        };
        queue.written();
        if let Err(error) = flushed {
            break write_failed(key, &error);
        }
        if messages {
            control.sent(Instant::now());
        }
    };
    let _ = sink.close().await;
    reason
}

/// Why the writer stopped on `error`, logged (see [`stream::write_failed`]).
fn write_failed(key: FlowKey, error: &WsError) -> &'static str {
    match error {
        WsError::Io(error) => stream::write_failed(key, error),
        error => {
            debug!(flow = %key, %error, "WebSocket write error");
            "write error"
        }
    }
}

/// RFC 7118 §5.1: a text frame when the message is UTF-8, else binary. The queue gives each
/// message whole in its head.
fn sip_frame(msg: Encoded) -> Message {
    let data = msg.head;
    // Cloning `Bytes` shares the buffer; only the UTF-8 check reads it.
    match data.clone().try_into() {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(data),
    }
}

/// The one control frame the reader has for the writer: a ping on silence, the CRLF answer to a
/// keep-alive, or a close. A tokio mpsc channel would allocate a block of 32 messages (about
/// 2 KiB) per connection up front; one slot is all the reader needs, since after a ping it hears
/// from the peer or gives up, a keep-alive is answered before the next one comes, and after a
/// close it stops. WebSocket pongs are not sent through it: tungstenite queues them itself.
#[derive(Default)]
struct Control {
    slot: Mutex<ControlSlot>,
    posted: Notify,
}

#[derive(Default)]
struct ControlSlot {
    frame: Option<Message>,
    /// The reader is gone: the writer stops once the slot is empty.
    hung_up: bool,
    /// When the writer last wrote a message (not a ping): the flow is in use.
    sent: Option<Instant>,
}

impl Control {
    /// The slot holds no borrowed state across a panic, so a poisoned lock is still usable.
    fn slot(&self) -> MutexGuard<'_, ControlSlot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reader's end; dropping it (however the reader ends) lets the writer finish.
struct ControlSender(Arc<Control>);

/// The writer's end.
struct ControlReceiver(Arc<Control>);

fn control_slot() -> (ControlSender, ControlReceiver) {
    let control = Arc::new(Control::default());
    (
        ControlSender(Arc::clone(&control)),
        ControlReceiver(control),
    )
}

impl ControlSender {
    /// When the writer last wrote a message.
    fn last_sent(&self) -> Option<Instant> {
        self.0.slot().sent
    }

    /// Posts `frame` for the writer. A close replaces a ping not yet sent: the peer is being
    /// dropped either way.
    fn send(&self, frame: Message) {
        let mut slot = self.0.slot();
        if slot.frame.is_none() || matches!(frame, Message::Close(_)) {
            slot.frame = Some(frame);
        }
        drop(slot);
        // One waiter at most; with none, the permit is kept for the writer's next wait.
        self.0.posted.notify_one();
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        self.0.slot().hung_up = true;
        self.0.posted.notify_one();
    }
}

impl ControlReceiver {
    /// Messages went out at `now`.
    fn sent(&self, now: Instant) {
        self.0.slot().sent = Some(now);
    }

    /// The posted frame, waiting for one; `None` once the reader is gone and nothing is left.
    async fn recv(&self) -> Option<Message> {
        loop {
            {
                let mut slot = self.0.slot();
                if let Some(frame) = slot.frame.take() {
                    return Some(frame);
                }
                if slot.hung_up {
                    return None;
                }
            }
            self.0.posted.notified().await;
        }
    }

    fn try_recv(&self) -> Option<Message> {
        self.0.slot().frame.take()
    }
}

#[cfg(test)]
mod tests;

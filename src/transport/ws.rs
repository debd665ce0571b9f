//! WebSocket (RFC 7118) over TCP or TLS, as server and as client: the `sip` subprotocol is
//! required and echoed, each text or binary frame carries one SIP message, pings are answered,
//! and idle flows are pinged so NATs and load balancers keep them open.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
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
use super::stream::{ByteStream, Registered};
use super::{Encoded, FlowKey, Inbound, Shared, Transport, MAX_WRITE_BATCH};

/// The WebSocket subprotocol for SIP (RFC 7118 §4.1).
const SUBPROTOCOL: &str = "sip";
/// Per-connection read buffer. tungstenite's default (128 KiB) would cost more per idle browser
/// than the rest of the flow; SIP messages are small and frames are reassembled anyway.
const READ_BUFFER: usize = 4096;
/// Frames the reader asks the writer to send (pongs are queued by tungstenite itself).
const CONTROL_QUEUE: usize = 4;
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
pub(crate) async fn serve_plain(
    socket: TcpStream,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) {
    accept(socket, key, shared, admission).await;
}

/// Serves an accepted WSS connection: TLS handshake, WebSocket handshake, then frames.
pub(crate) async fn serve_secure(
    socket: TcpStream,
    key: FlowKey,
    shared: Arc<Shared>,
    admission: Admission,
) {
    let limit = shared.limits.handshake_timeout;
    if let Some(tls) = shared.tls.accept(socket, key, limit).await {
        accept(tls, key, shared, admission).await;
    }
}

async fn accept<S>(stream: S, key: FlowKey, shared: Arc<Shared>, admission: Admission)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let path = shared.ws_path.clone();
    #[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
    let check = move |request: &Request, response: Response| {
        check_request(request, response, path.as_deref())
    };
    let limit = shared.limits.handshake_timeout;
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(&shared)));
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(ws)) => {
            let flow = Registered::new(key, &shared);
            serve(ws, flow, shared, admission).await;
        }
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
pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    flow: Registered,
    shared: Arc<Shared>,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Registered { key, id, tx, rx } = flow;
    debug!(flow = %key, "WebSocket open");
    let (sink, stream) = ws.split();
    let closing = shared.shutdown.child_token();
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let writer = tokio::spawn(write_loop(sink, rx, control_rx, closing.clone()));
    let reason = read_loop(stream, key, &control, &shared, &closing).await;
    shared.flows.remove(&key, id);
    drop((tx, control));
    closing.cancel();
    let _ = writer.await;
    drop(admission);
    debug!(flow = %key, reason, "WebSocket closed");
}

async fn read_loop<R>(
    mut stream: R,
    key: FlowKey,
    control: &mpsc::Sender<Message>,
    shared: &Shared,
    closing: &CancellationToken,
) -> &'static str
where
    R: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let interval = shared.limits.ws_ping_interval;
    let mut ping_outstanding = false;
    let closed = closing.cancelled();
    tokio::pin!(closed);
    loop {
        let next = tokio::select! {
            () = &mut closed => {
                let _ = control.try_send(close(CloseCode::Away, "shutting down"));
                return "shutdown";
            }
            next = tokio::time::timeout(interval, stream.next()) => next,
        };
        let frame = match next {
            // Silence: ping once; a peer that stays silent one more interval is gone.
            Err(_) if ping_outstanding => return "no pong",
            Err(_) => {
                ping_outstanding = true;
                let _ = control.try_send(Message::Ping(Bytes::new()));
                continue;
            }
            Ok(None) => return "closed by peer",
            Ok(Some(Err(WsError::Capacity(error)))) => {
                warn_limited!(flow = %key, %error, "WebSocket closed: message too big");
                let _ = control.try_send(close(CloseCode::Size, "message too big"));
                return "message too big";
            }
            Ok(Some(Err(error))) => {
                debug!(flow = %key, %error, "WebSocket read error");
                return "read error";
            }
            Ok(Some(Ok(frame))) => frame,
        };
        ping_outstanding = false;
        let data = match frame {
            Message::Text(text) => Bytes::from(text),
            Message::Binary(data) => data,
            Message::Close(_) => return "closed by peer",
            // tungstenite answers pings itself; pongs only prove the peer is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            // A CRLF keep-alive inside a frame: nothing to hand on.
            continue;
        }
        if let Some(handler) = shared.handler.get() {
            handler.handle(Inbound { data, flow: key });
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
    mut queue: mpsc::Receiver<Encoded>,
    mut control: mpsc::Receiver<Message>,
    closing: CancellationToken,
) where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let frame = tokio::select! {
            biased;
            frame = control.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
            msg = queue.recv() => match msg {
                Some(msg) => sip_frame(&msg),
                None => break,
            },
            () = closing.cancelled() => {
                // Flush what is already queued, then say goodbye.
                queue.close();
                while let Some(msg) = queue.recv().await {
                    if sink.send(sip_frame(&msg)).await.is_err() {
                        return;
                    }
                }
                while let Ok(frame) = control.try_recv() {
                    let _ = sink.send(frame).await;
                }
                break;
            }
        };
        if matches!(frame, Message::Close(_)) {
            let _ = sink.send(frame).await;
            break;
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
            next = queue.try_recv().ok().map(|msg| sip_frame(&msg));
        }
        if batch.is_err() || sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// RFC 7118 §5.1: a text frame when the message is UTF-8, else binary.
fn sip_frame(msg: &Encoded) -> Message {
    let data = msg.to_contiguous();
    // Cloning `Bytes` shares the buffer; only the UTF-8 check reads it.
    match data.clone().try_into() {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(data),
    }
}

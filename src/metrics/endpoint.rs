//! The HTTP side of `-metrics-addr`, HTTP/1.1 served by hyper: `GET /metrics` (the OpenMetrics
//! text that Prometheus scrapes) and `GET /health` (200, or 503 once draining has begun); any
//! other path is 404. It runs only once every SIP listener is bound, so a 200 means ready.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Collected;
use crate::warn_limited;

/// Connections served at once: a scraper or two and a health checker need no more, and a
/// client that opens many gets no more than this of Roundabout.
const MAX_CONNECTIONS: usize = 16;
/// How long a request's head may take to arrive.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What `prometheus-client` writes (OpenMetrics 1.0), as Prometheus asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the requests are answered from.
struct Endpoint {
    registry: Registry,
    /// Cancelled when the drain starts.
    draining: CancellationToken,
}

/// Serves `listener` until `shutdown`, with the metrics `collected` reads.
pub async fn serve(
    listener: TcpListener,
    collected: Collected,
    draining: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collected));
    let endpoint = Arc::new(Endpoint { registry, draining });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: the SIP side goes on; retry soon.
                warn_limited!(%error, "metrics connection not accepted");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics connection closed: {MAX_CONNECTIONS} already open");
            continue;
        };
        let (endpoint, shutdown) = (Arc::clone(&endpoint), shutdown.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| {
                let response = endpoint.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = connection => {
                    if let Err(error) = served {
                        debug!(%error, "metrics connection failed");
                    }
                }
                () = shutdown.cancelled() => {}
            }
            drop(slot);
        });
    }
}

impl Endpoint {
    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/health") if self.draining.is_cancelled() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            (&Method::GET, "/health") => text(StatusCode::OK, "ok\n"),
            (_, "/metrics" | "/health") => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics and /health are\n",
            ),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut body = String::new();
        if prometheus_client::encoding::text::encode(&mut body, &self.registry).is_err() {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics not encoded\n");
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(endpoint: &Endpoint, method: Method, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        endpoint.answer(&request).status()
    }

    #[test]
    fn each_path_is_answered_as_documented() {
        let endpoint = Endpoint {
            registry: Registry::default(),
            draining: CancellationToken::new(),
        };
        assert_eq!(status(&endpoint, Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(
            status(&endpoint, Method::GET, "/metrics?x=1"),
            StatusCode::OK
        );
        assert_eq!(status(&endpoint, Method::GET, "/health"), StatusCode::OK);
        assert_eq!(
            status(&endpoint, Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(&endpoint, Method::GET, "/metrics/"),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status(&endpoint, Method::GET, "/"), StatusCode::NOT_FOUND);
        endpoint.draining.cancel();
        assert_eq!(
            status(&endpoint, Method::GET, "/health"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

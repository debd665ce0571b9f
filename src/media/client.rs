//! The ng client: one UDP socket to one or more rtpengines, one task receiving the answers.
//! A request gets a fresh random cookie and waits for the answer carrying it; a try that gets
//! no answer in time is sent again, under the same cookie, to the next address. rtpengine
//! keeps the answers of recent cookies and sends a repeated cookie the cached answer, so a
//! retry of an `offer` whose answer was lost does not make a second call leg — on the same
//! rtpengine; another one has not seen the cookie and acts on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error};

use super::ng::{self, AnswerRequest, DeleteRequest, OfferRequest, Reply, Request};
use super::MediaError;
use crate::transport::is_transient;
use crate::warn_limited;

/// Random bytes in a cookie: enough that two proxies sharing an rtpengine never pick the same
/// one within its cookie cache's lifetime.
const COOKIE_BYTES: usize = 12;

/// How the client waits and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long one try waits for its answer.
    pub timeout: Duration,
    /// Tries of one request, the first included; each after a timeout goes to the next address.
    pub tries: NonZeroU32,
    /// Requests waiting for answers at once; one more is refused (`Busy`), not queued, so a
    /// dead rtpengine cannot pile up memory behind it.
    pub max_pending: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(1),
            // Three: one loss, and one rtpengine down, are both survived.
            tries: NonZeroU32::MIN.saturating_add(2),
            max_pending: 1024,
        }
    }
}

/// A cheap-clone handle; the receiving task stops with the last clone.
#[derive(Clone, Debug)]
pub struct NgClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    settings: Settings,
    random: SystemRandom,
    _receiving: DropGuard,
}

/// What the requests and the receiving task share.
#[derive(Debug)]
struct Shared {
    socket: UdpSocket,
    servers: Vec<SocketAddr>,
    pending: Mutex<Pending>,
    /// The index of the server that answered last: requests start there.
    preferred: AtomicUsize,
}

#[derive(Debug, Default)]
struct Pending {
    /// Who waits for the answer to which cookie.
    waiting: HashMap<Bytes, oneshot::Sender<Bytes>>,
    /// The socket failed: no answer will come.
    closed: bool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cookie's place in [`Pending`], given up when the request ends however it ends (answered,
/// timed out, or its future dropped).
struct Waiting<'a> {
    shared: &'a Shared,
    cookie: Bytes,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.pending().waiting.remove(&self.cookie);
    }
}

impl NgClient {
    /// A client sending from `socket` (bound by the caller) to `servers`, the first preferred.
    /// Starts the task that receives the answers, so it must be called within a Tokio runtime.
    ///
    /// # Errors
    /// `servers` is empty.
    pub fn new(
        socket: UdpSocket,
        servers: Vec<SocketAddr>,
        settings: Settings,
    ) -> Result<NgClient, MediaError> {
        if servers.is_empty() {
            return Err(MediaError::NoServer);
        }
        let shared = Arc::new(Shared {
            socket,
            servers,
            pending: Mutex::default(),
            preferred: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(receive(Arc::clone(&shared), stop.clone()));
        let inner = Inner {
            shared,
            settings,
            random: SystemRandom::new(),
            _receiving: stop.drop_guard(),
        };
        Ok(NgClient {
            inner: Arc::new(inner),
        })
    }

    /// Whether rtpengine answers.
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn ping(&self) -> Result<(), MediaError> {
        Ok(self.request(&Request::Ping).await?.pong()?)
    }

    /// The offer's SDP as rtpengine rewrote it.
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn offer(&self, offer: OfferRequest) -> Result<Bytes, MediaError> {
        Ok(self.request(&Request::Offer(offer)).await?.sdp()?)
    }

    /// The answer's SDP as rtpengine rewrote it.
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn answer(&self, answer: AnswerRequest) -> Result<Bytes, MediaError> {
        Ok(self.request(&Request::Answer(answer)).await?.sdp()?)
    }

    /// Ends the call, or the part of it `delete` names. An unknown call is only a warning in
    /// rtpengine's answer (logged), not an error.
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn delete(&self, delete: DeleteRequest) -> Result<(), MediaError> {
        self.request(&Request::Delete(delete)).await?.ok()?;
        Ok(())
    }

    /// The call ids the preferred rtpengine holds, at most `limit` (its default: 32).
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn list(&self, limit: Option<u32>) -> Result<Vec<Bytes>, MediaError> {
        Ok(self.request(&Request::List { limit }).await?.calls()?)
    }

    async fn request(&self, request: &Request) -> Result<Reply, MediaError> {
        let Inner {
            shared, settings, ..
        } = &*self.inner;
        let cookie = self.cookie()?;
        let datagram =
            ng::encode_request(cookie.as_bytes(), request).map_err(MediaError::Request)?;
        let (waiter, mut answer) = oneshot::channel();
        let _waiting = wait_for(shared, settings.max_pending, cookie.clone().into(), waiter)?;
        let command = request.command();
        let start = shared.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for n in 0..settings.tries.get() {
            let server = shared.servers[(start + n as usize) % shared.servers.len()];
            if !tried.contains(&server) {
                tried.push(server);
            }
            debug!(command, %cookie, %server, attempt = n + 1, "ng request sent");
            if let Err(error) = shared.socket.send_to(&datagram, server).await {
                // Nothing went out, so nothing can answer: on to the next try at once.
                warn_limited!(command, %server, %error, "ng request not sent");
                continue;
            }
            match tokio::time::timeout(settings.timeout, &mut answer).await {
                Ok(Ok(dict)) => {
                    debug!(command, %cookie, attempt = n + 1, "ng answer received");
                    return reply(command, &dict);
                }
                Ok(Err(_)) => return Err(MediaError::Closed),
                Err(_) => {
                    debug!(command, %cookie, %server, attempt = n + 1, "no ng answer in time")
                }
            }
        }
        warn_limited!(command, addresses = ?tried, "rtpengine did not answer");
        Err(MediaError::Timeout {
            tries: settings.tries.get(),
            timeout: settings.timeout,
            addresses: tried,
        })
    }

    fn cookie(&self) -> Result<String, MediaError> {
        let mut random = [0; COOKIE_BYTES];
        self.inner
            .random
            .fill(&mut random)
            .map_err(|_| MediaError::Random)?;
        // base64url has no space, which ends the cookie.
        Ok(URL_SAFE_NO_PAD.encode(random))
    }
}

/// Registers `waiter` for `cookie`'s answer, unless `max` already wait.
fn wait_for(
    shared: &Shared,
    max: usize,
    cookie: Bytes,
    waiter: oneshot::Sender<Bytes>,
) -> Result<Waiting<'_>, MediaError> {
    let mut pending = shared.pending();
    if pending.closed {
        return Err(MediaError::Closed);
    }
    if pending.waiting.len() >= max {
        warn_limited!(max, "ng request refused: too many wait for rtpengine");
        return Err(MediaError::Busy(pending.waiting.len()));
    }
    pending.waiting.insert(cookie.clone(), waiter);
    Ok(Waiting { shared, cookie })
}

/// The answer in `dict`; rtpengine's `error` becomes [`MediaError::Refused`].
fn reply(command: &'static str, dict: &Bytes) -> Result<Reply, MediaError> {
    let reply = ng::decode_reply(dict).inspect_err(|error| {
        warn_limited!(command, %error, "malformed ng answer");
    })?;
    if let Some(warning) = reply.warning() {
        warn_limited!(command, warning = %String::from_utf8_lossy(warning), "rtpengine warns");
    }
    match reply {
        Reply::Error { reason } => {
            let reason = String::from_utf8_lossy(&reason).into_owned();
            warn_limited!(command, %reason, "rtpengine refused an ng request");
            Err(MediaError::Refused(reason))
        }
        reply => Ok(reply),
    }
}

/// Hands each answer to the request waiting for its cookie, until `stop` or a socket error.
async fn receive(shared: Arc<Shared>, stop: CancellationToken) {
    // A datagram cannot be longer; one buffer for the life of the loop.
    let mut buf = vec![0; super::bencode::MAX_LEN];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = shared.socket.recv_from(&mut buf) => received,
        };
        let (len, from) = match received {
            Ok(received) => received,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                error!(error = %e, "ng socket receive failed; no more rtpengine answers");
                let mut pending = shared.pending();
                pending.closed = true;
                // Their senders dropped, the waiting requests end with `Closed` at once.
                pending.waiting.clear();
                return;
            }
        };
        let Some(server) = shared.servers.iter().position(|&s| s == from) else {
            warn_limited!(%from, "ng datagram from no rtpengine dropped");
            continue;
        };
        let datagram = Bytes::copy_from_slice(&buf[..len]);
        let (cookie, dict) = match ng::split_cookie(&datagram) {
            Ok(split) => split,
            Err(error) => {
                warn_limited!(%from, %error, "ng answer dropped");
                continue;
            }
        };
        let waiter = shared.pending().waiting.remove(&cookie);
        match waiter {
            Some(waiter) => {
                shared.preferred.store(server, Ordering::Relaxed);
                // The request may have given up just now; then nobody needs the answer.
                let _ = waiter.send(dict);
            }
            // rtpengine answers a retry from its cache too: the second answer finds nobody.
            None => debug!(
                %from,
                cookie = %String::from_utf8_lossy(&cookie),
                "ng answer for no waiting request dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bencode::{self, Value};
    use std::io::ErrorKind;
    use tokio::time::Instant;

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// A local socket playing rtpengine.
    struct Fake {
        socket: UdpSocket,
    }

    /// One request as the fake received it.
    struct Received {
        cookie: Bytes,
        dict: bencode::Dict,
        from: SocketAddr,
    }

    impl Received {
        fn command(&self) -> &[u8] {
            self.dict
                .get(&b"command"[..])
                .and_then(Value::as_bytes)
                .unwrap()
        }
    }

    impl Fake {
        async fn new() -> Fake {
            Fake {
                socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        async fn receive(&self) -> Received {
            let mut buf = vec![0; 65_536];
            let (len, from) = self.socket.recv_from(&mut buf).await.unwrap();
            let datagram = Bytes::copy_from_slice(&buf[..len]);
            let (cookie, dict) = ng::split_cookie(&datagram).unwrap();
            let Value::Dict(dict) = bencode::decode(&dict).unwrap() else {
                panic!("not a dictionary");
            };
            Received { cookie, dict, from }
        }

        async fn send(&self, to: SocketAddr, cookie: &[u8], dict: &str) {
            let datagram = [cookie, b" ", dict.as_bytes()].concat();
            self.socket.send_to(&datagram, to).await.unwrap();
        }

        async fn answer(&self, request: &Received, dict: &str) {
            self.send(request.from, &request.cookie, dict).await;
        }

        /// Nothing more was sent to the fake.
        fn received_nothing_more(&self) -> bool {
            let mut buf = [0; 16];
            matches!(self.socket.try_recv_from(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
        }
    }

    fn client(servers: &[&Fake], tries: u32, max_pending: usize) -> NgClient {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let settings = Settings {
            timeout: TIMEOUT,
            tries: NonZeroU32::new(tries).unwrap(),
            max_pending,
        };
        let servers = servers.iter().map(|fake| fake.addr()).collect();
        NgClient::new(UdpSocket::from_std(socket).unwrap(), servers, settings).unwrap()
    }

    const PONG: &str = "d6:result4:ponge";

    #[tokio::test(start_paused = true)]
    async fn a_silent_rtpengine_times_out_after_every_try_under_one_cookie() {
        let rtpengine = Fake::new().await;
        let ng = client(&[&rtpengine], 3, 8);
        let start = Instant::now();
        let ping = tokio::spawn(async move { ng.ping().await });
        let first = rtpengine.receive().await;
        assert_eq!(first.command(), b"ping");
        for _ in 0..2 {
            assert_eq!(rtpengine.receive().await.cookie, first.cookie);
        }
        let error = ping.await.unwrap().unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            (3 * TIMEOUT..4 * TIMEOUT).contains(&elapsed),
            "gave up after {elapsed:?}"
        );
        let MediaError::Timeout {
            tries, addresses, ..
        } = &error
        else {
            panic!("{error}");
        };
        assert_eq!((*tries, &addresses[..]), (3, &[rtpengine.addr()][..]));
        assert!(error.to_string().contains(&rtpengine.addr().to_string()));
        assert!(rtpengine.received_nothing_more());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_carries_the_same_cookie_and_its_answer_is_taken() {
        let rtpengine = Fake::new().await;
        let ng = client(&[&rtpengine], 3, 8);
        let start = Instant::now();
        let ping = tokio::spawn(async move { ng.ping().await });
        let lost = rtpengine.receive().await;
        let retry = rtpengine.receive().await;
        assert_eq!(retry.cookie, lost.cookie);
        rtpengine.answer(&retry, PONG).await;
        ping.await.unwrap().unwrap();
        assert!(start.elapsed() >= TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_timeout_the_next_address_is_tried_and_then_preferred() {
        let dead = Fake::new().await;
        let alive = Fake::new().await;
        let ng = client(&[&dead, &alive], 2, 8);
        let first = tokio::spawn({
            let ng = ng.clone();
            async move { ng.ping().await }
        });
        let to_dead = dead.receive().await;
        let to_alive = alive.receive().await;
        assert_eq!(to_alive.cookie, to_dead.cookie);
        alive.answer(&to_alive, PONG).await;
        first.await.unwrap().unwrap();

        let second = tokio::spawn(async move { ng.ping().await });
        let next = alive.receive().await;
        assert_ne!(next.cookie, to_alive.cookie, "a fresh cookie per request");
        alive.answer(&next, PONG).await;
        second.await.unwrap().unwrap();
        assert!(dead.received_nothing_more());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_under_other_cookies_or_from_other_addresses_are_dropped() {
        let rtpengine = Fake::new().await;
        let stranger = Fake::new().await;
        let ng = client(&[&rtpengine], 1, 8);
        let ping = tokio::spawn(async move { ng.ping().await });
        let request = rtpengine.receive().await;
        rtpengine.send(request.from, b"other", PONG).await;
        rtpengine.send(request.from, b"", "no cookie").await;
        stranger.send(request.from, &request.cookie, PONG).await;
        rtpengine
            .answer(&request, "d6:result5:error12:error-reason7:no calle")
            .await;
        let error = ping.await.unwrap().unwrap_err();
        assert!(
            matches!(&error, MediaError::Refused(reason) if reason == "no call"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_offer_gets_the_rewritten_sdp_and_a_broken_answer_is_malformed() {
        let rtpengine = Fake::new().await;
        let ng = client(&[&rtpengine], 1, 8);
        let offer = OfferRequest {
            call_id: Bytes::from_static(b"c1"),
            from_tag: Bytes::from_static(b"f1"),
            to_tag: None,
            via_branch: None,
            sdp: Bytes::from_static(b"v=0 in"),
            options: ng::MediaOptions::default(),
        };
        let sent = tokio::spawn({
            let (ng, offer) = (ng.clone(), offer.clone());
            async move { ng.offer(offer).await }
        });
        let request = rtpengine.receive().await;
        assert_eq!(request.command(), b"offer");
        assert_eq!(request.dict.get(&b"sdp"[..]), Some(&Value::from("v=0 in")));
        rtpengine
            .answer(&request, "d6:result2:ok3:sdp7:v=0 oute")
            .await;
        assert_eq!(&sent.await.unwrap().unwrap()[..], b"v=0 out");

        let sent = tokio::spawn(async move { ng.offer(offer).await });
        let request = rtpengine.receive().await;
        rtpengine.answer(&request, "d6:result2:ok").await;
        let error = sent.await.unwrap().unwrap_err();
        assert!(matches!(error, MediaError::Malformed(_)), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_are_bounded_and_a_dropped_one_frees_its_place() {
        let rtpengine = Fake::new().await;
        let ng = client(&[&rtpengine], 1, 1);
        let waiting = tokio::spawn({
            let ng = ng.clone();
            async move { ng.ping().await }
        });
        rtpengine.receive().await;
        let refused = ng.ping().await.unwrap_err();
        assert!(matches!(refused, MediaError::Busy(1)), "{refused}");
        waiting.abort();
        let _ = waiting.await;

        let ping = tokio::spawn(async move { ng.ping().await });
        let request = rtpengine.receive().await;
        rtpengine.answer(&request, PONG).await;
        ping.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn no_address_is_an_error() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let error = NgClient::new(socket, Vec::new(), Settings::default()).unwrap_err();
        assert!(matches!(error, MediaError::NoServer));
    }
}

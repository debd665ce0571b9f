//! Write deadlines: a stream whose writes fail once they have made no progress for a while, so a
//! peer that stops reading cannot hold a connection's writer, its queue and its slot forever. It
//! sits right on the TCP socket, under TLS and WebSocket, where progress means bytes the kernel
//! took; a slow reader that still takes some within each interval is never cut.

use std::future::Future as _;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner` with every write, flush and shutdown bounded by `limit` without progress. Once the
/// deadline has passed, every later write fails at once, so closing the connection cannot block.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits; kept between waits, so only a peer that is slow to read costs
    /// the allocation.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    expired: bool,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            limit,
            timer: None,
            waiting: false,
            expired: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Passes on what the inner stream did; a wait arms the deadline, any result disarms it.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.waiting = false;
            return poll;
        }
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let elapsed = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if elapsed {
            self.expired = true;
            return Poll::Ready(Err(timed_out()));
        }
        Poll::Pending
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no write progress within -write-timeout",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const LIMIT: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_at_the_deadline() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(ours, LIMIT);
        let started = Instant::now();
        let error = stream.write_all(&[0; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMIT);
        // Later writes, and the shutdown, fail at once.
        assert!(stream.write_all(b"x").await.is_err());
        assert!(stream.shutdown().await.is_err());
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_data_is_not_cut() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(ours, LIMIT);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(LIMIT / 2).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            total
        });
        // 8 KiB through a 1 KiB pipe read 512 bytes per half deadline: far longer than the
        // deadline in all, never that long without progress.
        let started = Instant::now();
        stream.write_all(&[0; 8192]).await.unwrap();
        assert!(started.elapsed() > 4 * LIMIT);
        assert_eq!(reader.await.unwrap(), 8192);
    }
}

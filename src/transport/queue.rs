//! A connection's send queue: bounded, any number of senders, one writer. It allocates nothing
//! until a message is queued; a tokio mpsc channel allocates a block of 32 slots (about 2.3 KiB)
//! per connection up front, which every idle flow would pay for nothing.
//!
//! It is bounded in messages (`-send-queue`) and in bytes, per connection (`-send-queue-bytes`)
//! and over all connections (`-send-buffer-total`). A message's bytes count from the moment it
//! is queued until the writer reports it written or the queue is dropped, so what a writer holds
//! while its peer does not read counts too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::warn_limited;

use super::Encoded;

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("queue full")]
    Full,
    #[error("queue closed")]
    Closed,
}

/// The bytes queued over all connections, against `-send-buffer-total`.
#[derive(Debug)]
pub(crate) struct SendBudget {
    used: AtomicUsize,
    limit: usize,
}

impl SendBudget {
    pub(crate) fn new(limit: usize) -> SendBudget {
        SendBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `n` bytes if they fit under the limit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What one connection's queue may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    /// `-send-queue`: messages waiting for the writer.
    pub(crate) messages: usize,
    /// `-send-queue-bytes`: bytes queued or taken by the writer and not yet written.
    pub(crate) bytes: usize,
}

struct Queue {
    state: Mutex<State>,
    limits: QueueLimits,
    total: Arc<SendBudget>,
    /// Wakes the writer: a message was queued, or the last sender went.
    posted: Notify,
}

struct State {
    messages: VecDeque<Encoded>,
    /// Bytes of the queued messages and of those the writer took and has not reported written.
    bytes: usize,
    /// The part of `bytes` the writer has taken.
    taken: usize,
    senders: usize,
    /// The writer takes no more messages (closing, or gone).
    closed: bool,
}

impl Queue {
    /// The state holds no borrowed data across a panic, so a poisoned lock is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue within `limits`, its bytes also counted against `total`.
pub(crate) fn send_queue(
    limits: QueueLimits,
    total: Arc<SendBudget>,
) -> (QueueSender, QueueReceiver) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            messages: VecDeque::new(),
            bytes: 0,
            taken: 0,
            senders: 1,
            closed: false,
        }),
        limits,
        total,
        posted: Notify::new(),
    });
    (QueueSender(Arc::clone(&queue)), QueueReceiver(queue))
}

pub(crate) struct QueueSender(Arc<Queue>);

impl QueueSender {
    /// Queues `msg` without waiting, as a copy in an allocation of its own.
    pub(crate) fn try_send(&self, msg: Encoded) -> Result<(), QueueError> {
        // A message may wait here for as long as its peer is slow to read. A slice would keep
        // the whole buffer it was cut from alive with it (a UDP receive block is 1 MiB), and
        // `Bytes` does not tell how large that buffer is.
        let msg = owned(&msg);
        let len = msg.len();
        let queue = &*self.0;
        let mut state = queue.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.messages.len() >= queue.limits.messages {
            return Err(QueueError::Full);
        }
        if state.bytes + len > queue.limits.bytes {
            let queued = state.bytes;
            drop(state);
            warn_limited!(
                queued,
                len,
                limit = queue.limits.bytes,
                "send refused: the connection's -send-queue-bytes is reached"
            );
            return Err(QueueError::Full);
        }
        if !queue.total.take(len) {
            drop(state);
            warn_limited!(
                len,
                limit = queue.total.limit,
                "send refused: -send-buffer-total over all connections is reached"
            );
            return Err(QueueError::Full);
        }
        state.bytes += len;
        state.messages.push_back(msg);
        drop(state);
        // One waiter at most; with none, the permit is kept for the writer's next wait.
        self.0.posted.notify_one();
        Ok(())
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> QueueSender {
        self.0.state().senders += 1;
        QueueSender(Arc::clone(&self.0))
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.posted.notify_one();
        }
    }
}

impl std::fmt::Debug for QueueSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueSender(..)")
    }
}

pub(crate) struct QueueReceiver(Arc<Queue>);

impl QueueReceiver {
    /// The next message, whole in its head (no body), waiting for one; `None` once the queue
    /// is closed or every sender is gone, and nothing is left. Cancel-safe: a message is never
    /// lost to a dropped wait. Its bytes stay counted until [`written`](Self::written).
    pub(crate) async fn recv(&mut self) -> Option<Encoded> {
        loop {
            {
                let mut state = self.0.state();
                if let Some(msg) = state.take() {
                    return Some(msg);
                }
                if state.closed || state.senders == 0 {
                    return None;
                }
            }
            self.0.posted.notified().await;
        }
    }

    /// The next message if one is queued; counted like one from [`recv`](Self::recv).
    pub(crate) fn try_recv(&mut self) -> Option<Encoded> {
        self.0.state().take()
    }

    /// Every message taken so far is written (or given up): its bytes leave the budgets.
    pub(crate) fn written(&mut self) {
        let mut state = self.0.state();
        let taken = std::mem::take(&mut state.taken);
        state.bytes -= taken;
        drop(state);
        self.0.total.give(taken);
    }

    /// Refuses further messages; those already queued can still be received.
    pub(crate) fn close(&mut self) {
        self.0.state().closed = true;
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.closed = true;
        // Senders may outlive the writer (in the flow table, briefly): free the messages now.
        state.messages = VecDeque::new();
        state.taken = 0;
        let bytes = std::mem::take(&mut state.bytes);
        drop(state);
        self.0.total.give(bytes);
    }
}

impl State {
    fn take(&mut self) -> Option<Encoded> {
        let msg = self.messages.pop_front()?;
        self.taken += msg.len();
        Some(msg)
    }
}

/// `msg` as one buffer of its own size (the head; no body).
fn owned(msg: &Encoded) -> Encoded {
    let mut all = BytesMut::with_capacity(msg.len());
    all.extend_from_slice(&msg.head);
    all.extend_from_slice(&msg.body);
    Encoded {
        head: all.freeze(),
        body: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &'static str) -> Encoded {
        Encoded {
            head: Bytes::from_static(text.as_bytes()),
            body: Bytes::new(),
        }
    }

    /// A queue of at most `messages` messages and `bytes` bytes, and the total it counts in.
    fn limited(
        messages: usize,
        bytes: usize,
        total: usize,
    ) -> (QueueSender, QueueReceiver, Arc<SendBudget>) {
        let total = Arc::new(SendBudget::new(total));
        let (tx, rx) = send_queue(QueueLimits { messages, bytes }, Arc::clone(&total));
        (tx, rx, total)
    }

    fn queue(messages: usize) -> (QueueSender, QueueReceiver) {
        let (tx, rx, _) = limited(messages, usize::MAX, usize::MAX);
        (tx, rx)
    }

    #[tokio::test]
    async fn bounded_and_in_order() {
        let (tx, mut rx) = queue(2);
        tx.try_send(msg("a")).unwrap();
        tx.try_send(msg("b")).unwrap();
        assert_eq!(tx.try_send(msg("c")), Err(QueueError::Full));
        assert_eq!(rx.recv().await.unwrap().head, "a");
        assert_eq!(rx.try_recv().unwrap().head, "b");
        assert!(rx.try_recv().is_none());
        tx.try_send(msg("c")).unwrap();
        assert_eq!(rx.recv().await.unwrap().head, "c");
    }

    #[tokio::test]
    async fn closed_queue_drains_then_ends() {
        let (tx, mut rx) = queue(4);
        tx.try_send(msg("a")).unwrap();
        rx.close();
        assert_eq!(tx.try_send(msg("b")), Err(QueueError::Closed));
        assert_eq!(rx.recv().await.unwrap().head, "a");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn ends_when_the_last_sender_goes() {
        let (tx, mut rx) = queue(4);
        let other = tx.clone();
        tx.try_send(msg("a")).unwrap();
        drop(tx);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.map(|m| m.head);
            (first, rx.recv().await.is_none())
        });
        tokio::task::yield_now().await;
        drop(other);
        let (first, ended) = waiter.await.unwrap();
        assert_eq!(first.unwrap(), "a");
        assert!(ended);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_on_send() {
        let (tx, mut rx) = queue(4);
        let waiter = tokio::spawn(async move { rx.recv().await.map(|m| m.head) });
        tokio::task::yield_now().await;
        tx.try_send(msg("late")).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), "late");
    }

    #[test]
    fn senders_see_a_dropped_writer() {
        let (tx, rx) = queue(4);
        drop(rx);
        assert_eq!(tx.try_send(msg("a")), Err(QueueError::Closed));
    }

    #[test]
    fn a_connection_holds_its_bytes_until_they_are_written() {
        let (tx, mut rx, total) = limited(100, 10, 100);
        tx.try_send(msg("aaaa")).unwrap();
        tx.try_send(msg("bbbb")).unwrap();
        assert_eq!(tx.try_send(msg("ccc")), Err(QueueError::Full));
        tx.try_send(msg("cc")).unwrap();
        assert_eq!(total.used(), 10);
        // Taken by the writer is not yet written: still counted.
        assert_eq!(rx.try_recv().unwrap().head, "aaaa");
        assert_eq!(tx.try_send(msg("d")), Err(QueueError::Full));
        rx.written();
        assert_eq!(total.used(), 6);
        tx.try_send(msg("dddd")).unwrap();
        assert_eq!(tx.try_send(msg("e")), Err(QueueError::Full));
        while rx.try_recv().is_some() {}
        rx.written();
        assert_eq!(total.used(), 0);
        tx.try_send(msg("eeeeeeeeee")).unwrap();
    }

    #[test]
    fn connections_share_the_total() {
        let total = Arc::new(SendBudget::new(10));
        let limits = QueueLimits {
            messages: 100,
            bytes: 8,
        };
        let (first, first_rx) = send_queue(limits, Arc::clone(&total));
        let (second, mut second_rx) = send_queue(limits, Arc::clone(&total));
        first.try_send(msg("aaaaaaaa")).unwrap();
        assert_eq!(second.try_send(msg("bbb")), Err(QueueError::Full));
        second.try_send(msg("bb")).unwrap();
        assert_eq!(total.used(), 10);
        // A refusal takes nothing, from either budget.
        assert_eq!(first.try_send(msg("a")), Err(QueueError::Full));
        assert_eq!(total.used(), 10);
        // The first connection goes with its message unsent: its bytes are free again.
        drop(first_rx);
        assert_eq!(total.used(), 2);
        second.try_send(msg("bbbbbb")).unwrap();
        assert_eq!(second.try_send(msg("b")), Err(QueueError::Full));
        assert!(second_rx.try_recv().is_some());
        drop(second_rx);
        assert_eq!(total.used(), 0);
    }

    #[tokio::test]
    async fn every_path_gives_the_bytes_back() {
        let (tx, mut rx, total) = limited(100, 100, 100);
        // Written.
        tx.try_send(msg("sent")).unwrap();
        rx.recv().await.unwrap();
        rx.written();
        assert_eq!(total.used(), 0);
        // Closed: queued ones still count until received and written, refused ones never.
        tx.try_send(msg("queued")).unwrap();
        rx.close();
        assert_eq!(tx.try_send(msg("late")), Err(QueueError::Closed));
        assert_eq!(total.used(), 6);
        rx.recv().await.unwrap();
        rx.written();
        assert_eq!(total.used(), 0);
        // Dropped with one message taken and another still queued.
        let (tx, mut rx, total) = limited(100, 100, 100);
        tx.try_send(msg("taken")).unwrap();
        tx.try_send(msg("waiting")).unwrap();
        rx.try_recv().unwrap();
        drop(rx);
        assert_eq!(total.used(), 0);
        drop(tx);
        assert_eq!(total.used(), 0);
    }

    #[test]
    fn a_queued_message_does_not_keep_the_buffer_it_was_cut_from() {
        let (tx, mut rx) = queue(4);
        let block = Bytes::from(vec![b'x'; 1 << 20]);
        tx.try_send(Encoded {
            head: Bytes::from_static(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n"),
            body: block.slice(..5),
        })
        .unwrap();
        assert!(block.is_unique(), "the queue holds a slice of the block");
        let queued = rx.try_recv().unwrap();
        assert_eq!(queued.head, "MESSAGE sip:a@b SIP/2.0\r\n\r\nxxxxx");
        assert!(queued.body.is_empty());
    }
}

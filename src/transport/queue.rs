//! A connection's send queue: bounded, any number of senders, one writer. It allocates nothing
//! until a message is queued; a tokio mpsc channel allocates a block of 32 slots (about 2.3 KiB)
//! per connection up front, which every idle flow would pay for nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::Encoded;

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("queue full")]
    Full,
    #[error("queue closed")]
    Closed,
}

struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer: a message was queued, or the last sender went.
    posted: Notify,
}

struct State {
    messages: VecDeque<Encoded>,
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

/// A queue holding at most `capacity` messages.
pub(crate) fn send_queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            messages: VecDeque::new(),
            senders: 1,
            closed: false,
        }),
        capacity,
        posted: Notify::new(),
    });
    (QueueSender(Arc::clone(&queue)), QueueReceiver(queue))
}

pub(crate) struct QueueSender(Arc<Queue>);

impl QueueSender {
    /// Queues `msg` without waiting.
    pub(crate) fn try_send(&self, msg: Encoded) -> Result<(), QueueError> {
        let mut state = self.0.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.messages.len() >= self.0.capacity {
            return Err(QueueError::Full);
        }
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
    /// The next message, waiting for one; `None` once the queue is closed or every sender is
    /// gone, and nothing is left. Cancel-safe: a message is never lost to a dropped wait.
    pub(crate) async fn recv(&mut self) -> Option<Encoded> {
        loop {
            {
                let mut state = self.0.state();
                if let Some(msg) = state.messages.pop_front() {
                    return Some(msg);
                }
                if state.closed || state.senders == 0 {
                    return None;
                }
            }
            self.0.posted.notified().await;
        }
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Encoded> {
        self.0.state().messages.pop_front()
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(text: &'static str) -> Encoded {
        Encoded {
            head: Bytes::from_static(text.as_bytes()),
            body: Bytes::new(),
        }
    }

    #[tokio::test]
    async fn bounded_and_in_order() {
        let (tx, mut rx) = send_queue(2);
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
        let (tx, mut rx) = send_queue(4);
        tx.try_send(msg("a")).unwrap();
        rx.close();
        assert_eq!(tx.try_send(msg("b")), Err(QueueError::Closed));
        assert_eq!(rx.recv().await.unwrap().head, "a");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn ends_when_the_last_sender_goes() {
        let (tx, mut rx) = send_queue(4);
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
        let (tx, mut rx) = send_queue(4);
        let waiter = tokio::spawn(async move { rx.recv().await.map(|m| m.head) });
        tokio::task::yield_now().await;
        tx.try_send(msg("late")).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), "late");
    }

    #[test]
    fn senders_see_a_dropped_writer() {
        let (tx, rx) = send_queue(4);
        drop(rx);
        assert_eq!(tx.try_send(msg("a")), Err(QueueError::Closed));
    }
}

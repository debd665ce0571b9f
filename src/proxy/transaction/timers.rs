//! The transactions' timers (RFC 3261 §17.1.1.2, §17.1.2.2, §16.8): a heap of wake-ups with
//! lazy deletion, served by one task, and what each timer does when it fires.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::proxy::status::Status;

use super::{Cancelling, Key, Kind, Origin, Send, State, Table, Transactions};

impl Transactions {
    /// Puts the entry's next wake-up on the heap; older ones for it become stale.
    pub(super) fn schedule(&self, table: &mut Table, key: Key) {
        table.generation += 1;
        let generation = table.generation;
        let Some(entry) = table.entries.get_mut(&key) else {
            return;
        };
        entry.generation = generation;
        let wake = entry.wake();
        let earliest = table.wakeups.peek().map(|Reverse((at, ..))| *at);
        table.wakeups.push(Reverse((wake, key, generation)));
        if earliest.is_none_or(|at| wake < at) {
            self.earlier.notify_one();
        }
        // Stale wake-ups wait for their time in the heap; when they outnumber the live ones,
        // rebuild it so churn cannot grow it without bound.
        if table.wakeups.len() > 2 * table.entries.len() + 1024 {
            let live = table
                .entries
                .iter()
                .map(|(key, entry)| Reverse((entry.wake(), *key, entry.generation)))
                .collect();
            table.wakeups = live;
        }
    }

    /// The earliest wake-up scheduled (possibly a stale one: waking early is harmless).
    #[must_use]
    pub fn next_wake(&self) -> Option<Instant> {
        self.table().wakeups.peek().map(|Reverse((at, ..))| *at)
    }

    /// Resolves when a wake-up earlier than every other one has been scheduled.
    pub async fn earlier_wake(&self) {
        self.earlier.notified().await;
    }

    /// Runs every timer due at `now`: retransmissions (Timers A and E), timeouts (B, F, and C
    /// with the CANCEL it sends), and the end of completed transactions (D, K).
    pub fn expire(&self, now: Instant) -> Vec<Send> {
        let mut table = self.table();
        let mut send = Vec::new();
        while let Some(&Reverse((at, key, generation))) = table.wakeups.peek() {
            if at > now {
                break;
            }
            table.wakeups.pop();
            if table
                .entries
                .get(&key)
                .is_none_or(|entry| entry.generation != generation)
            {
                continue;
            }
            self.fire(&mut table, key, now, &mut send);
        }
        send
    }

    fn fire(&self, table: &mut Table, key: Key, now: Instant, send: &mut Vec<Send>) {
        let timers = self.timers;
        let Some(entry) = table.entries.get_mut(&key) else {
            return;
        };
        if let (Some(at), Some(request)) = (entry.retransmit_at, &entry.request) {
            if at <= now {
                send.push(Send::Downstream(entry.dest.clone(), request.clone()));
                // Timer A doubles without bound, Timer E up to T2 and then stays there
                // (RFC 3261 §17.1.1.2, §17.1.2.2). From the due time, not from now, so the
                // schedule does not drift when the timer task runs late.
                entry.interval = match (entry.kind, entry.state) {
                    (Kind::Invite, _) => entry.interval * 2,
                    (_, State::Proceeding) => timers.t2,
                    _ => (entry.interval * 2).min(timers.t2),
                };
                entry.retransmit_at = Some(at + entry.interval);
            }
        }
        if entry.deadline > now {
            self.schedule(table, key);
            return;
        }
        // Timer C (RFC 3261 §16.8): a provisional came, so the branch is cancelled and gets
        // 64·T1 more to end with the 487.
        let timer_c = entry.kind == Kind::Invite
            && entry.state == State::Proceeding
            && entry.cancelling != Cancelling::Sent;
        if timer_c && self.send_cancel(table, key, now, send) {
            return;
        }
        // Timers B and F, or no final after the CANCEL: the next hop is taken to have answered
        // 408 (RFC 3261 §16.7 step 2, §16.8).
        if let Some(entry) = table.entries.get(&key) {
            if entry.state != State::Completed {
                self.timed_out.fetch_add(1, Ordering::Relaxed);
                if entry.origin == Origin::Upstream {
                    send.extend(entry.answer(Status::REQUEST_TIMEOUT));
                }
            }
        }
        self.remove_entry(table, key);
    }
}

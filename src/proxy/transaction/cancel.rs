//! Cancelling INVITEs (RFC 3261 §9.1, §16.10): for the caller, when the caller's flow is gone,
//! and at shutdown.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::proxy::status::Status;
use crate::transport::ConnectionId;

use super::{Cancelling, Key, Kind, Origin, Send, State, Table, Transactions};

impl Transactions {
    /// Sends Roundabout's CANCEL for the INVITE transaction `key` as a transaction of its own,
    /// and gives the INVITE 64·T1 to end with a final response (RFC 3261 §9.1).
    ///
    /// Whether the INVITE is being cancelled now; not when its CANCEL could not be built.
    pub(super) fn send_cancel(
        &self,
        table: &mut Table,
        key: Key,
        now: Instant,
        send: &mut Vec<Send>,
    ) -> bool {
        let Some(invite) = table.entries.get_mut(&key) else {
            return false;
        };
        let Some(cancel) = invite.cancel_request() else {
            return false;
        };
        invite.cancelling = Cancelling::Sent;
        invite.deadline = now + self.timers.timeout();
        let (dest, upstream) = (invite.dest.clone(), invite.upstream.clone());
        self.schedule(table, key);
        let cancel_key = Key {
            branch: key.branch,
            kind: Kind::Cancel,
        };
        if !table.entries.contains_key(&cancel_key) {
            send.push(Send::Downstream(dest.clone(), cancel.clone()));
            let entry = self.entry(Kind::Cancel, Origin::Own, cancel, dest, upstream, now);
            self.insert(table, cancel_key, entry);
        }
        true
    }

    /// A CANCEL from upstream for a stateful INVITE (RFC 3261 §16.10): `None` when it matches
    /// none; else what to send downstream (the caller answers the CANCEL 200 itself). Without
    /// a provisional response yet, the CANCEL waits for one (§9.1); after a final it is moot.
    pub fn cancel(&self, server_key: u64, now: Instant) -> Option<Vec<Send>> {
        let mut table = self.table();
        let key = *table.by_server.get(&server_key)?;
        let entry = table.entries.get_mut(&key)?;
        let mut send = Vec::new();
        match (entry.state, entry.cancelling) {
            (State::Calling, Cancelling::No) => entry.cancelling = Cancelling::Pending,
            (State::Proceeding, Cancelling::No) => {
                self.send_cancel(&mut table, key, now, &mut send);
            }
            _ => {}
        }
        Some(send)
    }

    /// The upstream flow of `key` is gone: a pending INVITE is cancelled, since its answer
    /// cannot reach the caller any more (the callee would ring for nobody until Timer C).
    pub fn upstream_gone(&self, key: Key, now: Instant) -> Vec<Send> {
        let mut table = self.table();
        let mut send = Vec::new();
        self.cancel_orphan(&mut table, key, now, &mut send);
        send
    }

    /// The connection `connection` has closed: every INVITE that came in on it is cancelled.
    pub fn upstream_closed(&self, connection: ConnectionId, now: Instant) -> Vec<Send> {
        let mut table = self.table();
        let mut send = Vec::new();
        for key in table.by_upstream.remove(&connection).unwrap_or_default() {
            self.cancel_orphan(&mut table, key, now, &mut send);
        }
        send
    }

    fn cancel_orphan(&self, table: &mut Table, key: Key, now: Instant, send: &mut Vec<Send>) {
        let Some(entry) = table.entries.get_mut(&key) else {
            return;
        };
        match (entry.kind, entry.state, entry.cancelling) {
            (Kind::Invite, State::Calling, Cancelling::No) => {
                entry.cancelling = Cancelling::Pending;
            }
            (Kind::Invite, State::Proceeding, Cancelling::No) => {
                self.send_cancel(table, key, now, send);
            }
            _ => {}
        }
    }

    /// Shutdown: every transaction still waiting for its answer is answered 503 upstream, and a
    /// ringing INVITE is cancelled downstream; then the table is empty.
    pub fn drain(&self) -> Vec<Send> {
        let mut table = self.table();
        let mut send = Vec::new();
        for entry in table.entries.values() {
            if entry.state == State::Completed || entry.origin == Origin::Own {
                continue;
            }
            let Some(answer) = entry.answer(Status::SERVICE_UNAVAILABLE) else {
                continue;
            };
            if entry.kind == Kind::Invite
                && entry.state == State::Proceeding
                && entry.cancelling == Cancelling::No
            {
                if let Some(cancel) = entry.cancel_request() {
                    send.push(Send::Downstream(entry.dest.clone(), cancel));
                }
            }
            send.push(answer);
        }
        *table = Table::default();
        self.len.store(0, Ordering::Relaxed);
        send
    }
}

//! The stateful path (docs/transactions.md): requests that leave a reliable transport for UDP
//! get a client transaction, the responses to them go through it, and the timer task sends
//! what the transactions ask for.

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::sip::{reply, Encoded, Message, Method};
use crate::transport::{ConnectionId, Destination, FlowKey, SendError};
use crate::warn_limited;

use super::{Answered, Proxy};
use crate::proxy::action::answer_destination;
use crate::proxy::branch::Branch;
use crate::proxy::decisions::{Path, Refused, Undelivered};
use crate::proxy::status::Status;
use crate::proxy::transaction::{Key, Kind, ResponseMatch, Send, Start};

impl Proxy {
    /// Serves the transaction timers until `stop`; then answers what is still pending (503)
    /// so that no caller waits for an answer that will never come.
    pub async fn run_transaction_timers(&self, stop: CancellationToken) {
        let transactions = &self.inner.transactions;
        loop {
            let wake = transactions.next_wake();
            let due = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = transactions.earlier_wake() => continue,
                () = due => {}
            }
            self.execute(transactions.expire(tokio::time::Instant::now()));
        }
        self.execute(transactions.drain());
    }

    /// Sends what the transaction table asks for.
    pub(super) fn execute(&self, sends: Vec<Send>) {
        for send in sends {
            match send {
                Send::Downstream(dest, msg) => match self.inner.outbound.send(&dest, msg) {
                    Ok(()) => debug!(to = %dest.flow, "transaction message sent"),
                    Err(error) => debug!(to = %dest.flow, %error, "transaction message not sent"),
                },
                Send::Answer {
                    request,
                    from,
                    upstream,
                    status,
                } => self.answer_for_next_hop(&request, from, upstream, status),
            }
        }
    }

    /// Answers upstream as if the next hop at `from` had sent `status` to `request` (as it was
    /// forwarded): the answer takes the path of a response from there (RFC 3261 §16.7, §16.9).
    fn answer_for_next_hop(
        &self,
        request: &Encoded,
        from: FlowKey,
        upstream: Destination,
        status: Status,
    ) {
        let Some(response) = Message::parse_own(request.to_contiguous())
            .ok()
            .and_then(|request| self.next_hop_answer(&request, status))
        else {
            return;
        };
        debug!(to = %upstream.flow, code = status.code, "answered for the next hop");
        let _ = self.forward_response(&response, &from, None, &upstream);
    }

    /// The answer `status` to `request` as forwarded (Roundabout's Via on top), as if the next
    /// hop had sent it. It is read as a received response is, because it takes the same path:
    /// its transaction, Roundabout's Via popped, the Via below it followed.
    pub(super) fn next_hop_answer(&self, request: &Message, status: Status) -> Option<Message> {
        let answer = reply::response(request, status.code, status.reason, &self.to_tag(request));
        Message::parse_own(answer.to_contiguous()).ok()
    }

    /// An ACK or CANCEL from upstream that belongs to a stateful INVITE (RFC 3261 §17.2.3):
    /// the ACK of a non-2xx Roundabout has ACKed itself is absorbed; a CANCEL is answered 200
    /// here and sent on by the INVITE's transaction (§16.10). Whether it was taken.
    pub(super) fn in_server_transaction(&self, msg: &Message, source: &FlowKey) -> bool {
        let transactions = &self.inner.transactions;
        let Some(server_key) = self.inner.router.server_transaction(msg, source) else {
            return false;
        };
        if msg.method() == Some(Method::Ack) {
            let absorbed = transactions.absorbs_ack(server_key);
            if absorbed {
                debug!(flow = %source, "ACK of a non-2xx absorbed: acknowledged downstream already");
            }
            return absorbed;
        }
        match transactions.cancel(server_key, tokio::time::Instant::now()) {
            Some(sends) => {
                debug!(flow = %source, "CANCEL answered; the INVITE's transaction cancels downstream");
                self.reply(msg, source, Status::OK);
                self.execute(sends);
                true
            }
            None => false,
        }
    }

    /// A request from a reliable transport leaving over UDP: its client transaction retransmits
    /// it and answers for the next hop if it never does.
    pub(super) fn send_stateful(
        &self,
        msg: &Message,
        (source, connection): (&FlowKey, Option<ConnectionId>),
        dest: &Destination,
        out: Encoded,
        branch: Branch,
    ) -> Answered {
        let method = msg.method().unwrap_or(Method::Other);
        let key = Key {
            branch,
            kind: Kind::of(method),
        };
        let server_key = match method {
            Method::Invite => self.inner.router.server_transaction(msg, source),
            _ => None,
        };
        let now = tokio::time::Instant::now();
        let transactions = &self.inner.transactions;
        let upstream = Destination {
            connection,
            ..answer_destination(*source)
        };
        match transactions.start(key, out.clone(), dest.clone(), upstream, server_key, now) {
            Start::Started => {}
            Start::Retransmission => {
                debug!(flow = %source, "retransmission absorbed: its transaction retransmits");
                return Answered::Elsewhere;
            }
            Start::CancelledAlready => {
                debug!(flow = %source, "CANCEL answered: Roundabout cancelled the INVITE already");
                self.reply(msg, source, Status::OK);
                return Answered::Here;
            }
            Start::Full => {
                warn_limited!(
                    active = transactions.len(),
                    "transaction limit (-max-transactions) reached: request refused with 503"
                );
                let refused = Refused::TransactionLimit;
                self.refuse(msg, source, refused, Status::SERVICE_UNAVAILABLE);
                return Answered::Here;
            }
        }
        if method == Method::Invite {
            // RFC 3261 §16.2, §17.2.1: the INVITE's server transaction says it is being handled.
            self.reply(msg, source, Status::TRYING);
        }
        match self.inner.outbound.send(dest, out) {
            Ok(()) => {
                debug!(from = %source, to = %dest.flow, "request forwarded statefully");
                self.inner.counting.forwarded(Path::Stateful);
                Answered::Elsewhere
            }
            Err(error) => {
                transactions.remove(key);
                warn_limited!(to = %dest.flow, %error, "request not sent");
                self.inner.counting.undelivered(Undelivered::NotSent);
                self.reply(msg, source, Status::SERVICE_UNAVAILABLE);
                Answered::Here
            }
        }
    }

    /// A response to a stateful request goes through its transaction; whether it was taken
    /// (without a transaction it is handled statelessly, as any other).
    pub(super) fn transaction_response(
        &self,
        msg: &Message,
        (source, connection): (&FlowKey, Option<ConnectionId>),
        key: Key,
    ) -> bool {
        let router = &self.inner.router;
        let responder = router.responder(source);
        let now = tokio::time::Instant::now();
        let transactions = &self.inner.transactions;
        let matched =
            match transactions.on_response(key, msg, |to| router.responder(to) == responder, now) {
                ResponseMatch::NoTransaction => return false,
                ResponseMatch::WrongSource => {
                    self.forged(source, "response to a transaction from another address");
                    return true;
                }
                ResponseMatch::Matched(matched) => matched,
            };
        self.execute(matched.send);
        match matched.forward_to {
            Some(upstream) => {
                if let Err(SendError::NoFlow) =
                    self.forward_response(msg, source, connection, &upstream)
                {
                    self.execute(transactions.upstream_gone(key, now));
                }
            }
            None => debug!(flow = %source, "response absorbed by its transaction"),
        }
        true
    }
}

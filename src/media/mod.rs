//! Media through rtpengine: the client of its ng control protocol, which hands rtpengine an
//! SDP and gets back the SDP rewritten so the media flows through it (WebRTC's DTLS-SRTP and
//! ICE on one side, plain RTP on the other). `bencode` is the dictionary format, `ng` the
//! messages, `client` the UDP socket with its retries, failover and matching by cookie.
//! docs/media.md describes what the client does.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

pub mod bencode;
mod client;
pub mod ng;

pub use client::{NgClient, Settings};
pub use ng::{
    AnswerRequest, DeleteRequest, Dtls, Ice, IceLite, MediaOptions, OfferRequest, Replace, RtcpMux,
    TransportProtocol,
};

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("no rtpengine address to send ng requests to")]
    NoServer,
    #[error("{0} ng requests already wait for rtpengine")]
    Busy(usize),
    #[error("no random bytes from the system for an ng cookie")]
    Random,
    #[error("ng request not sent: {0}")]
    Request(#[source] bencode::BencodeError),
    #[error(
        "no answer from rtpengine after {tries} tries of {timeout:?} to {}",
        Addresses(.addresses)
    )]
    Timeout {
        tries: u32,
        timeout: Duration,
        addresses: Vec<SocketAddr>,
    },
    /// rtpengine answered `error`, with its `error-reason`.
    #[error("rtpengine refused: {0}")]
    Refused(String),
    #[error("malformed answer from rtpengine: {0}")]
    Malformed(#[from] ng::MalformedAnswer),
    #[error("the ng socket failed, no answer can arrive")]
    Closed,
}

/// `a, b` for the addresses a request went to.
struct Addresses<'a>(&'a [SocketAddr]);

impl fmt::Display for Addresses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, addr) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

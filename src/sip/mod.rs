//! The SIP message model: lazy, zero-copy parsing over [`bytes::Bytes`] and editing that
//! produces a new head while the body is shared, never copied. No I/O.

pub mod codec;
mod edit;
pub mod header;
pub mod host;
pub mod lex;
mod lines;
mod message;
pub mod reply;
pub mod text;
mod transport;
pub mod uri;

use std::ops::Range;

use bytes::Bytes;

pub use edit::Editor;
pub use header::{CSeq, HeaderName, NameAddr, Via};
pub use lex::Param;
pub use message::{HeaderField, Message, Method, StartLine};
pub use transport::Transport;
pub use uri::{Scheme, Uri};

/// A byte range of a message buffer. `u32` offsets keep header tables small; messages are
/// capped far below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    #[must_use]
    pub fn new(start: usize, end: usize) -> Span {
        debug_assert!(start <= end);
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    #[must_use]
    pub fn start(self) -> usize {
        self.start as usize
    }

    #[must_use]
    pub fn end(self) -> usize {
        self.end as usize
    }

    #[must_use]
    pub fn range(self) -> Range<usize> {
        self.start()..self.end()
    }

    #[must_use]
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Why a message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message ends before its head is complete")]
    Truncated,
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header line")]
    BadHeader,
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("missing {0} header")]
    MissingHeader(HeaderName),
    #[error("malformed {0} header")]
    BadHeaderValue(HeaderName),
    /// A header that is not a list appears on more than one line (RFC 3261 §7.3.1).
    #[error("more than one {0} header")]
    RepeatedHeader(HeaderName),
    #[error("malformed URI")]
    BadUri,
}

/// A message ready for the wire: the (possibly rewritten) start line and headers, and the
/// untouched body. Senders write both parts; datagram senders use vectored I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub head: Bytes,
    pub body: Bytes,
}

impl Encoded {
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.body.is_empty()
    }

    /// The message as one contiguous buffer (for WebSocket frames); copies only when a body exists.
    #[must_use]
    pub fn to_contiguous(&self) -> Bytes {
        if self.body.is_empty() {
            return self.head.clone();
        }
        let mut all = bytes::BytesMut::with_capacity(self.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(&self.body);
        all.freeze()
    }
}

#[cfg(test)]
mod tests;

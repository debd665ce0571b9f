//! The SIP message model: lazy, zero-copy parsing over [`bytes::Bytes`] and editing that
//! produces a new head while the body is shared, never copied. No I/O.

use bytes::Bytes;

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

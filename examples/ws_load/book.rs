//! The bookkeeping of one run: when each request went, what answered it and how fast.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

/// Per-request bookkeeping, indexed by sequence number. One thread touches it, so the atomics
/// are uncontended; they only make the shared tables `Sync` for `tokio::spawn`.
pub struct Book {
    t0: Instant,
    pub run: u32,
    /// Nanoseconds from `t0` to the send, plus one; 0: not sent.
    pub sent_ns: Vec<AtomicU64>,
    /// Send→final response in µs, plus one; 0: no final response (yet).
    pub latency_us: Vec<AtomicU32>,
    /// Final status code; 0: none yet.
    pub status: Vec<AtomicU16>,
    timeout_ns: u64,
    /// Final responses that came after the timeout (counted as lost).
    pub late: AtomicU64,
    /// Frames that are not responses to our requests.
    pub unmatched: AtomicU64,
    /// Flows that closed or failed while the run was going.
    pub flows_closed: AtomicU64,
}

impl Book {
    /// A book for `slots` requests, its Call-IDs marked with a run id of this process and time.
    pub fn new(slots: usize, timeout_ms: u64) -> Book {
        let run = (std::process::id() << 12)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        Book {
            t0: Instant::now(),
            run,
            sent_ns: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            latency_us: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            status: (0..slots).map(|_| AtomicU16::new(0)).collect(),
            timeout_ns: timeout_ms.saturating_mul(1_000_000),
            late: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            flows_closed: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a frame received on a flow: a final response to one of our requests, or noise.
    pub fn on_frame(&self, data: &[u8]) {
        let Some((code, seq)) = self.parse_response(data) else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if code < 200 {
            return;
        }
        let Some(sent) = self.sent_ns.get(seq).map(|s| s.load(Ordering::Relaxed)) else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if sent == 0 {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let elapsed = self.now_ns().saturating_sub(sent - 1);
        if elapsed > self.timeout_ns {
            self.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The first final response wins; a retransmitted one changes nothing.
        if self.status[seq]
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let us = u32::try_from(elapsed / 1000).unwrap_or(u32::MAX - 1);
            self.latency_us[seq].store(us + 1, Ordering::Relaxed);
        }
    }

    /// Records a WebSocket message received on a flow; false for a Close frame.
    pub fn on_message(&self, message: &Message) -> bool {
        match message {
            Message::Text(text) => self.on_frame(text.as_bytes()),
            Message::Binary(data) => self.on_frame(data),
            Message::Close(_) => return false,
            _ => {}
        }
        true
    }

    /// `SIP/2.0 <code> ...` with our Call-ID → (code, sequence number).
    fn parse_response(&self, data: &[u8]) -> Option<(u16, usize)> {
        let code = data.strip_prefix(b"SIP/2.0 ")?.get(..3)?;
        let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
        let call_id = header(data, b"call-id", b"i")?;
        let rest = call_id.strip_prefix(b"wl")?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let run = u32::from_str_radix(std::str::from_utf8(&rest[..dot]).ok()?, 16).ok()?;
        if run != self.run {
            return None;
        }
        let digits = &rest[dot + 1..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        let seq = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        Some((code, seq))
    }
}

/// The trimmed value of the first header named `long` or `compact` (case-insensitive).
fn header<'a>(data: &'a [u8], long: &[u8], compact: &[u8]) -> Option<&'a [u8]> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    for line in data[..head_end].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(compact) {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// The `p`th percentile of `sorted` (nearest rank); 0 for none.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

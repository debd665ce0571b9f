//! The answers the proxy gives itself: a status code and its reason phrase.

/// A final response the proxy sends itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

impl Status {
    pub const TRYING: Status = Status::new(100, "Trying");
    pub const OK: Status = Status::new(200, "OK");
    pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
    pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
    pub const BAD_EXTENSION: Status = Status::new(420, "Bad Extension");
    pub const FORBIDDEN: Status = Status::new(403, "Forbidden");
    pub const NOT_FOUND: Status = Status::new(404, "Not Found");
    pub const TEMPORARILY_UNAVAILABLE: Status = Status::new(480, "Temporarily Unavailable");
    pub const LOOP_DETECTED: Status = Status::new(482, "Loop Detected");
    pub const TOO_MANY_HOPS: Status = Status::new(483, "Too Many Hops");
    pub const SERVER_ERROR: Status = Status::new(500, "Server Internal Error");
    pub const SERVICE_UNAVAILABLE: Status = Status::new(503, "Service Unavailable");
    /// A REGISTER the client cache could not keep (answered with a Retry-After).
    pub const CLIENT_CACHE_FULL: Status =
        Status::new(503, "Service Unavailable (client cache full)");

    #[must_use]
    pub const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }
}

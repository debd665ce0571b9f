//! Roundabout: a SIP proxy that carries SIP between UDP, TCP, TLS, WS and WSS endpoints.
//!
//! `config` turns flags into a validated [`config::Config`]; `sip` parses and edits messages
//! (no I/O); `transport` frames bytes on sockets into messages and sends them; `proxy` decides
//! where each message goes (`proxy::router` is pure) and glues the rest; `csr` is the once-off
//! certificate signing request command; `metrics` serves `-metrics-addr`; `hep` sends `-hep-addr` captures; `media` is the client of rtpengine's ng control protocol; `dns` locates SIP servers (RFC 3263). `docs/architecture.md` is the module map: which layer
//! may import which (checked by `tests/layers.rs`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod csr;
pub mod dns;
pub mod hep;
pub mod media;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod sip;
pub mod transport;

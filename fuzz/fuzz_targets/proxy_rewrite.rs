//! The router and the rewrite: parse, validate, route, rewrite for an egress transport.
//! Input: one control byte (source flow, egress transport), then the message.
//! Checks: `roundabout_fuzz::oracles::proxy_rewrite`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roundabout_fuzz::oracles::proxy_rewrite(data));

//! The WebSocket message path into the real `Proxy` handler (listeners off, so nothing is
//! sent).
//! Checks: `roundabout_fuzz::oracles::ws_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roundabout_fuzz::oracles::ws_message(data));

//! `codec::frame` (TCP/TLS framing) on an arbitrary stream cut into arbitrary reads, with a
//! small size cap. Input: one control byte, then the stream.
//! Checks: `roundabout_fuzz::oracles::stream_framer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roundabout_fuzz::oracles::stream_framer(data));

//! `Message::parse` on arbitrary bytes, every lazy accessor, `validate_request`, and the
//! answers Roundabout builds itself (`reply::response`, `reply::salvage_bad_request`).
//! Checks: `roundabout_fuzz::oracles::parse_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roundabout_fuzz::oracles::parse_message(data));

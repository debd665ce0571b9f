//! Nothing is lost under load: SIPp calls through Roundabout at a steady rate, every call
//! completes at both ends. Bounded by default (2000 calls at 200 calls/s over UDP → TCP); set
//! `ROUNDABOUT_LOAD_RATE` and `ROUNDABOUT_LOAD_CALLS` for the full-size run described in
//! SECURITY.md (run with `cargo test --release --test load`).

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{free_port, require, Roundabout, Sipp};

fn setting(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_call_completes_at_both_ends_under_steady_load() {
    if !require("sipp") {
        return;
    }
    let rate = setting("ROUNDABOUT_LOAD_RATE", 200);
    let calls = setting("ROUNDABOUT_LOAD_CALLS", 2000);
    let uas_port = free_port("127.0.10.2");
    let trusted = format!("127.0.10.2::{uas_port}:tcp:");
    let rb = Roundabout::start(&[
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &trusted,
        "-log-level",
        "info",
    ]);
    let mut uas = Sipp::run("uas.xml", "127.0.10.2", uas_port, "tcp")
        .calls(calls)
        .spawn();
    let mut uac = Sipp::run("uac.xml", "127.0.10.3", free_port("127.0.10.3"), "udp")
        .to(format!("127.0.10.2:{uas_port}"))
        .via(rb.addr("udp"))
        .key("uas_transport", "tcp")
        .calls(calls)
        .rate(rate)
        .arg("-l", 2000)
        .spawn();
    let limit = Duration::from_secs(u64::from(calls / rate.max(1)) + 30);
    let uac_code = uac.wait(limit);
    let uas_code = uas.wait(Duration::from_secs(15));
    assert_eq!(
        (uac_code, uas_code),
        (Some(0), Some(0)),
        "{calls} calls at {rate}/s did not all complete\nUAC errors:\n{}\nUAS errors:\n{}\nproxy log:\n{}",
        uac.errors(),
        uas.errors(),
        rb.logs()
    );
    // Both ends saw every call: as many INVITEs reached the UAS as the UAC sent.
    let sent = uac
        .sent()
        .iter()
        .filter(|m| m.starts_with("INVITE "))
        .count();
    let received = uas
        .received()
        .iter()
        .filter(|m| m.starts_with("INVITE "))
        .count();
    assert_eq!(
        sent, received,
        "INVITEs sent by the UAC and received by the UAS"
    );
    assert!(received >= calls as usize);
}

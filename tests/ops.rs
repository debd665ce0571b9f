//! Operations: the shipped systemd unit verifies, and SIGTERM drains — a response to a request
//! already forwarded still reaches its client, new requests get 503, and the exit code is 0.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{header, ok_for, require, Roundabout, UdpPeer};

#[test]
fn systemd_unit_verifies() {
    if !require("systemd-analyze") {
        return;
    }
    // The unit as shipped, pointed at this build and an empty environment file, since
    // `verify` checks that the programs and files it names exist.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/roundabout.service"
    ))
    .unwrap();
    let env = dir.path().join("roundabout.env");
    std::fs::write(&env, "").unwrap();
    let unit = unit
        .replace("/usr/local/bin/roundabout", common::BIN)
        .replace("/etc/roundabout/roundabout.env", &env.display().to_string());
    let path = dir.path().join("roundabout.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

fn options(ruri: &str, from: &UdpPeer, call: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK-{call};rport\r\n\
         From: <sip:ops@example.com>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: {call}@ops\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        addr = from.addr(),
    )
}

#[test]
fn sigterm_drains_in_flight_work_and_exits_zero() {
    let server = UdpPeer::bind("127.0.0.2");
    // The helper starts it with -drain-timeout 1.
    let mut rb = Roundabout::serving(&server, "", &[]);
    let proxy = rb.addr("udp");
    let client = UdpPeer::bind("127.0.0.3");
    let ruri = format!("sip:ops@{}", server.addr());

    // A request is forwarded; its response is still on its way when SIGTERM arrives.
    client.send(proxy, &options(&ruri, &client, "inflight"));
    let forwarded = server.recv().expect("request forwarded");
    rb.signal("TERM");
    assert!(
        rb.wait_for_log("shutting down: draining", Duration::from_secs(3)),
        "{}",
        rb.logs()
    );

    // New work is refused while draining...
    client.send(proxy, &options(&ruri, &client, "late"));
    let refused = client.recv().expect("503 while draining");
    assert!(refused.starts_with("SIP/2.0 503 "), "{refused}");
    assert_eq!(header(&refused, "Call-ID"), Some("late@ops"));

    // ...but the response to the accepted request still gets through.
    server.send(proxy, &ok_for(&forwarded, "uas", &[]));
    let answer = client.recv().expect("response delivered during the drain");
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(header(&answer, "Call-ID"), Some("inflight@ops"));

    assert_eq!(
        rb.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        rb.logs()
    );
    assert!(rb.logs().contains("stopped"), "{}", rb.logs());
}

//! TLS with a real TLS peer. Debian's SIPp has no TLS, so Kamailio (its tls module) is the
//! other end of every TLS hop, and SIPp drives calls over UDP on both sides of the pair:
//!
//! - **UDP → TLS**: SIPp UAC —UDP→ Roundabout —TLS→ Kamailio —UDP→ SIPp UAS. The UAS is a trusted
//!   server whose route-list names Kamailio by FQDN
//!   (`127.0.1.2::UAS:udp:kamailio.test`, `127.0.1.4:kamailio.test:PORT:tls:`), the real use of a
//!   route-list: the R-URI stays the UAS's, Roundabout pushes `Route: <sip:kamailio.test;lr>` and
//!   dials Kamailio over TLS, verifying its certificate as `kamailio.test` (the certificate has no
//!   IP SAN for 127.0.1.4, so only the FQDN can verify) against the test CA from `-tls-ca`.
//!   Kamailio knows `kamailio.test` as an alias, so `loose_route()` removes that Route, and it
//!   forwards statelessly by the R-URI to the UAS over UDP. In-dialog ACK and BYE reach
//!   Roundabout through the Contact it rewrote; its token sends them back on the same TLS
//!   connection with the UAS's Contact restored as R-URI, and Kamailio forwards them by R-URI.
//! - **TLS → UDP**: SIPp UAC —UDP→ Kamailio —TLS→ Roundabout —UDP→ SIPp UAS. Kamailio uses
//!   Roundabout as its outbound proxy (`$du` = Roundabout's TLS listener; R-URI untouched), as a
//!   TLS client that verifies Roundabout's certificate against the test CA.
//!
//! Kamailio is stateless in both (`forward()`, replies along the Via chain) and calls
//! `force_rport()`, so its replies to Roundabout go back on the connection Roundabout opened. Its
//! `xlog` lines (`KREQ <method> proto=<$pr> …`) show on which transport each request arrived.
//!
//! Also: start-up errors for bad certificate files, SIGHUP reloading the certificate without
//! dropping connections (checked with a rustls client), and handshakes failing on untrusted
//! certificates in both directions while other flows keep working, the refusals logged in an
//! operator's words (foreign CA, wrong name).
//!
//! Trunk-grade TLS (docs/tls.md): Kamailio with a self-signed certificate pinned through
//! `-tls-ca`, dialled by Roundabout and dialling in under `-tls-verify-client required`; Kamailio
//! requiring a client certificate and accepting Roundabout's `-tls-cert` or `-tls-client-cert`;
//! openssl `s_client` without a certificate refused under `required`, accepted under `optional`;
//! and under `trusted-servers`, a trusted server's address refused without a certificate naming
//! one of its FQDNs (a rustls client bound to that address).

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{Leaf, TestCa};
use common::kamailio::{Kamailio, KamailioConfig};
use common::process::run_to_exit;
use common::{
    first, free_port, header, ok_for, ok_to_invite, uri_of, vias, Roundabout, Sipp, UdpPeer,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CALLS: usize = 2;

/// Kamailio as TLS server: logs each request, drops the Route naming itself and forwards by
/// R-URI (UDP to the UAS); replies follow the Via chain back over the TLS connection.
const RELAY_BY_RURI: &str = r#"
request_route {
	xlog("L_NOTICE", "KREQ $rm proto=$pr src=$si:$sp sni=$tls_peer_server_name route=$hdr(Route) ruri=$ru client=$tls_peer_subject_cn verified=$tls_peer_verified\n");
	force_rport();
	loose_route();
	forward();
	exit;
}

onreply_route {
	xlog("L_NOTICE", "KREPLY $rs $rm proto=$pr src=$si:$sp\n");
}
"#;

/// Kamailio with Roundabout as outbound proxy over TLS: every request goes to `@ROUNDABOUT@`
/// (Roundabout's TLS listener) with its R-URI untouched.
const RELAY_TO_ROUNDABOUT: &str = r#"
request_route {
	xlog("L_NOTICE", "KREQ $rm proto=$pr src=$si:$sp ruri=$ru\n");
	force_rport();
	$du = "sip:@ROUNDABOUT@;transport=tls";
	forward();
	exit;
}

onreply_route {
	xlog("L_NOTICE", "KREPLY $rs $rm proto=$pr src=$si:$sp\n");
}
"#;

fn available() -> bool {
    common::require("sipp") && common::require("openssl") && Kamailio::available(&["tls"])
}

/// Roundabout with `leaf` on ephemeral TLS and WSS ports, `-strict-host -ack-ruri`, the servers
/// `trusted`, the servers it dials verified against `ca` when given (`-tls-ca`), and `extra`.
fn start_roundabout(leaf: &Leaf, ca: Option<&Path>, trusted: &str, extra: &[&str]) -> Roundabout {
    let (cert, key) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
    );
    let mut args = vec![
        "-tls-cert",
        &cert,
        "-tls-key",
        &key,
        "-tls-port",
        "0",
        "-wss-port",
        "0",
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        trusted,
    ];
    let ca = ca.map(|ca| ca.display().to_string());
    if let Some(ca) = &ca {
        args.extend(["-tls-ca", ca]);
    }
    args.extend(extra);
    Roundabout::start(&args)
}

/// Two distinct ports free on `ip` (for UDP and TCP each).
fn two_ports(ip: &str) -> (u16, u16) {
    let first = free_port(ip);
    loop {
        let second = free_port(ip);
        if second != first {
            return (first, second);
        }
    }
}

/// Kamailio on `ip` (UDP and TLS) presenting `leaf` as `name`, relaying by R-URI, verifying the
/// servers it dials against `ca`.
fn kamailio_tls_server(ip: &str, name: &str, leaf: &Leaf, ca: &Path) -> KamailioConfig {
    let (udp, tls) = two_ports(ip);
    KamailioConfig::new(RELAY_BY_RURI)
        .global(&format!("alias=\"{name}\""))
        .listen("udp", ip, udp)
        .listen("tls", ip, tls)
        .tls(&leaf.cert, &leaf.key, Some(ca))
}

/// The trusted servers of a UDP → TLS call: `kamailio` on TLS as kamailio.test, and the UAS
/// whose route-list sends its requests there.
fn through_kamailio(kamailio: &Kamailio, uas_ip: &str, uas_port: u16) -> String {
    let k_tls = kamailio.addr("tls");
    format!(
        "{}:kamailio.test:{}:tls:,{uas_ip}::{uas_port}:udp:kamailio.test",
        k_tls.ip(),
        k_tls.port()
    )
}

/// The loopback addresses of one test, so that tests running in parallel never compete for a
/// port.
struct Hosts {
    uas: &'static str,
    uac: &'static str,
    kamailio: &'static str,
}

/// Runs `CALLS` calls from a SIPp UAC (UDP, on `hosts.uac`) that sends everything to `proxy`,
/// to a SIPp UAS (UDP) on `hosts.uas:uas_port`; both must finish successfully.
fn calls(
    hosts: &Hosts,
    proxy: SocketAddr,
    uas_port: u16,
    diagnostics: &dyn Fn() -> String,
) -> (Sipp, Sipp) {
    let mut uas = Sipp::run("uas.xml", hosts.uas, uas_port, "udp")
        .calls(CALLS)
        .spawn();
    let mut uac = Sipp::run("uac.xml", hosts.uac, free_port(hosts.uac), "udp")
        .to(format!("{}:{uas_port}", hosts.uas))
        .via(proxy)
        .key("uas_transport", "udp")
        .calls(CALLS)
        .rate(10)
        .spawn();
    let uac_code = uac.wait(Duration::from_secs(30));
    let uas_code = uas.wait(Duration::from_secs(10));
    assert_eq!(
        (uac_code, uas_code),
        (Some(0), Some(0)),
        "calls failed\nUAC errors:\n{}\nUAS errors:\n{}\n{}",
        uac.errors(),
        uas.errors(),
        diagnostics()
    );
    (uac, uas)
}

fn count(msgs: &[String], start: &str) -> usize {
    msgs.iter().filter(|m| m.starts_with(start)).count()
}

/// The dialog crossed Roundabout both ways: the 200 the UAC got names Roundabout on
/// `towards_uac` (the transport of its side) with a token, and the in-dialog ACKs and BYEs
/// reached the UAS (which `received` them), the ACK with the UAS's own Contact as R-URI; that
/// ACK.
fn check_dialog<'a>(
    rb: &Roundabout,
    uac: &Sipp,
    uas: &Sipp,
    received: &'a [String],
    towards_uac: &str,
) -> &'a str {
    let contact = header(ok_to_invite(&uac.received()), "Contact")
        .unwrap()
        .to_string();
    assert!(
        contact.starts_with(&format!(
            "<sip:127.0.0.1:{};transport={towards_uac};rbt=",
            rb.port(towards_uac)
        )),
        "{contact}"
    );
    let sent = uas.sent();
    let uas_uri = uri_of(header(ok_to_invite(&sent), "Contact").unwrap());
    let ack = first(received, "ACK ");
    assert!(
        ack.starts_with(&format!("ACK {uas_uri} SIP/2.0\r\n")),
        "{ack}"
    );
    assert!(count(received, "ACK ") >= CALLS, "{received:#?}");
    assert!(count(received, "BYE ") >= CALLS, "{received:#?}");
    ack
}

/// `src=127.0.0.1:40123` in a Kamailio log line.
fn src_of(line: &str) -> &str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("src="))
        .unwrap()
}

#[test]
fn call_from_udp_to_tls_kamailio() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.1.2",
        uac: "127.0.1.3",
        kamailio: "127.0.1.4",
    };
    let (uas_ip, uac_ip) = (hosts.uas, hosts.uac);
    let ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let k_leaf = ca.leaf("kamailio.test");
    let kamailio = kamailio_tls_server(hosts.kamailio, "kamailio.test", &k_leaf, &ca.cert).start();
    let uas_port = free_port(uas_ip);
    let trusted = through_kamailio(&kamailio, uas_ip, uas_port);
    let rb = start_roundabout(&rb_leaf, Some(&ca.cert), &trusted, &[]);
    let diagnostics = || logs_of(&rb, &kamailio);
    let (uac, uas) = calls(&hosts, rb.addr("udp"), uas_port, &diagnostics);

    // Every request reached Kamailio over TLS from Roundabout, with the SNI Roundabout verified
    // the certificate for, and all on one connection (the flow is reused, not re-dialled).
    // (Counts are lower bounds: a UDP retransmission under load is legitimate.)
    let requests = kamailio.log_lines("KREQ ");
    for line in &requests {
        assert!(
            line.contains(" proto=tls src=127.0.0.1:") && line.contains(" sni=kamailio.test "),
            "{line}\n{}",
            diagnostics()
        );
    }
    let src = src_of(&requests[0]);
    assert!(requests.iter().all(|l| src_of(l) == src), "{requests:#?}");
    for method in ["INVITE", "ACK", "BYE"] {
        let n = requests
            .iter()
            .filter(|l| l.contains(&format!("KREQ {method} ")))
            .count();
        assert!(n >= CALLS, "{method}: {requests:#?}");
    }
    // Each INVITE carried the route-list hop, which Kamailio took as its own and removed; the
    // in-dialog requests (routed by token to the same flow) carried none.
    for line in &requests {
        let route = if line.contains("KREQ INVITE ") {
            "route=<sip:kamailio.test;lr> "
        } else {
            "route=<null> "
        };
        assert!(line.contains(route), "{line}");
    }
    // The UAS's replies passed through Kamailio (stateless, along the Via chain).
    assert!(
        kamailio.log_lines("KREPLY 200 INVITE proto=udp").len() >= CALLS,
        "{}",
        diagnostics()
    );

    // What the UAS got: Kamailio's Via on top, Roundabout's TLS Via below it, then the UAC's.
    let received = uas.received();
    let invite = first(&received, "INVITE ");
    let v = vias(invite);
    assert_eq!(v.len(), 3, "{invite}");
    assert!(
        v[0].starts_with(&format!("Via: SIP/2.0/UDP {};", kamailio.addr("udp"))),
        "{invite}"
    );
    // (Kamailio's force_rport() put the port of Roundabout's connection into it.)
    let rb_port = src_of(&requests[0]).rsplit(':').next().unwrap();
    assert!(
        v[1].starts_with(&format!("Via: SIP/2.0/TLS 127.0.0.1:{};", rb.port("tls")))
            && v[1].contains(&format!(";rport={rb_port};"))
            && v[1].contains(";branch=z9hG4bKrb"),
        "{invite}"
    );
    assert!(
        v[2].starts_with(&format!("Via: SIP/2.0/UDP {uac_ip}:"))
            && v[2].contains(&format!(";received={uac_ip};rport=")),
        "{invite}"
    );
    assert_eq!(header(invite, "Route"), None, "{invite}");
    assert!(
        invite.starts_with(&format!(
            "INVITE sip:service@{uas_ip}:{uas_port};transport=udp SIP/2.0\r\n"
        )),
        "{invite}"
    );
    // The Contact names Roundabout on TLS, the transport it used towards Kamailio.
    let contact = header(invite, "Contact").unwrap();
    assert!(
        contact.starts_with(&format!(
            "<sip:sipp@127.0.0.1:{};transport=tls;rbt=",
            rb.port("tls")
        )),
        "{contact}"
    );
    // The UAC's 200 names Roundabout on UDP; the ACK and BYE sent there came back through
    // Roundabout and Kamailio to the UAS with its own Contact as R-URI.
    let ack = check_dialog(&rb, &uac, &uas, &received, "udp");
    assert!(
        vias(ack)[1].starts_with("Via: SIP/2.0/TLS 127.0.0.1:"),
        "{ack}"
    );
    assert!(count(&uac.received(), "SIP/2.0 200 OK") >= 2 * CALLS);
}

#[test]
fn call_from_tls_kamailio_to_udp() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.2.2",
        uac: "127.0.2.3",
        kamailio: "127.0.2.5",
    };
    let (uas_ip, uac_ip) = (hosts.uas, hosts.uac);
    let ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let k_leaf = ca.leaf("kamailio.test");
    let uas_port = free_port(uas_ip);
    let trusted = format!("{uas_ip}::{uas_port}:udp:");
    let rb = start_roundabout(&rb_leaf, None, &trusted, &[]);
    let (k_udp, k_tls) = two_ports(hosts.kamailio);
    // Kamailio verifies Roundabout's certificate against the test CA.
    let kamailio = KamailioConfig::new(RELAY_TO_ROUNDABOUT)
        .listen("udp", hosts.kamailio, k_udp)
        .listen("tls", hosts.kamailio, k_tls)
        .tls(&k_leaf.cert, &k_leaf.key, Some(&ca.cert))
        .var("ROUNDABOUT", rb.addr("tls"))
        .start();
    let diagnostics = || logs_of(&rb, &kamailio);
    let (uac, uas) = calls(&hosts, kamailio.addr("udp"), uas_port, &diagnostics);

    // Roundabout's UDP Via on top, then Kamailio's TLS Via marked with the connection's source.
    let received = uas.received();
    let invite = first(&received, "INVITE ");
    let v = vias(invite);
    assert_eq!(v.len(), 3, "{invite}");
    assert!(
        v[0].starts_with(&format!(
            "Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKrb",
            rb.port("udp")
        )),
        "{invite}"
    );
    // Kamailio dials from an unbound source address: received/rport name that connection.
    assert!(
        v[1].starts_with(&format!("Via: SIP/2.0/TLS {}:{k_tls};", hosts.kamailio))
            && v[1].contains(";received=127.0.0.1;rport="),
        "{invite}"
    );
    let kamailio_flow = format!("tls:127.0.0.1:{}", v[1].rsplit(";rport=").next().unwrap());
    assert!(
        v[2].starts_with(&format!("Via: SIP/2.0/UDP {uac_ip}:")),
        "{invite}"
    );
    let contact = header(invite, "Contact").unwrap();
    assert!(
        contact.starts_with(&format!(
            "<sip:sipp@127.0.0.1:{};transport=udp;rbt=",
            rb.port("udp")
        )),
        "{contact}"
    );
    // Roundabout took every request from Kamailio's TLS connection.
    let logs = rb.logs();
    let forwarded: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request forwarded"))
        .collect();
    assert!(forwarded.len() >= 3 * CALLS, "{}", diagnostics());
    assert!(
        forwarded
            .iter()
            .all(|l| l.contains(&format!("from={kamailio_flow} "))
                && l.contains(&format!("to=udp:{uas_ip}:{uas_port}"))),
        "{forwarded:#?}"
    );
    // The UAC's 200 (through Kamailio) names Roundabout's TLS listener; the ACK and BYE sent
    // there reached the UAS with its own Contact restored.
    let ack = check_dialog(&rb, &uac, &uas, &received, "tls");
    assert!(
        vias(ack)[0].starts_with(&format!("Via: SIP/2.0/UDP 127.0.0.1:{}", rb.port("udp"))),
        "{ack}"
    );
    assert!(
        vias(ack)[1].starts_with(&format!("Via: SIP/2.0/TLS {}:", hosts.kamailio)),
        "{ack}"
    );
    // Kamailio got the requests on UDP and every reply from Roundabout on TLS.
    let k_requests = kamailio.log_lines("KREQ ");
    assert!(
        k_requests
            .iter()
            .all(|l| l.contains(&format!(" proto=udp src={uac_ip}:"))),
        "{k_requests:#?}"
    );
    for method in ["INVITE", "ACK", "BYE"] {
        let n = kamailio.log_lines(&format!("KREQ {method} ")).len();
        assert!(n >= CALLS, "{method}\n{}", diagnostics());
    }
    let k_replies = kamailio.log_lines("KREPLY ");
    assert!(
        k_replies
            .iter()
            .all(|l| l.contains(&format!(" proto=tls src={}:", rb.addr("tls").ip()))),
        "{k_replies:#?}"
    );
    for reply in ["KREPLY 200 INVITE ", "KREPLY 200 BYE "] {
        let n = kamailio.log_lines(reply).len();
        assert!(n >= CALLS, "{reply}\n{}", diagnostics());
    }
}

/// Runs the binary with `cert` and `key`; returns its exit code and stderr once it exits (at
/// most 10 s; killed and `None` after that).
fn start_with(cert: &Path, key: &Path) -> (Option<i32>, String, Duration) {
    let state = tempfile::tempdir().unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let args = [
        "-tls-port",
        "0",
        "-wss-port",
        "0",
        "-tls-cert",
        &cert,
        "-tls-key",
        &key,
    ];
    let started = Instant::now();
    let run = run_to_exit(
        &mut Roundabout::command(&args, state.path()),
        Duration::from_secs(10),
    );
    let elapsed = started.elapsed();
    match run {
        Ok(run) => (run.status.code(), run.stderr, elapsed),
        Err(error) => (None, error, elapsed),
    }
}

#[test]
fn start_up_refuses_bad_tls_files() {
    if !common::require("openssl") {
        return;
    }
    let ca = TestCa::new();
    let a = ca.leaf("rb-a.test");
    let b = ca.leaf("rb-b.test");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let garbage = dir.path().join("garbage-cert.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let broken_pem = dir.path().join("broken-pem-cert.pem");
    std::fs::write(
        &broken_pem,
        "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // (case, -tls-cert, -tls-key, the file the error must name, and what it must say)
    let cases: [(&str, &Path, &Path, &Path, &str); 4] = [
        (
            "missing certificate",
            &missing,
            &a.key,
            &missing,
            "-tls-cert",
        ),
        (
            "key of another certificate",
            &a.cert,
            &b.key,
            &b.key,
            "does not belong",
        ),
        (
            "garbage certificate file",
            &garbage,
            &a.key,
            &garbage,
            "-tls-cert",
        ),
        (
            "broken PEM certificate",
            &broken_pem,
            &a.key,
            &broken_pem,
            "-tls-cert",
        ),
    ];
    for (case, cert, key, named, says) in cases {
        let (code, stderr, elapsed) = start_with(cert, key);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{case}: exit {code:?}\n{stderr}"
        );
        assert!(elapsed < Duration::from_secs(5), "{case}: took {elapsed:?}");
        let name = named.file_name().unwrap().to_str().unwrap();
        assert!(
            stderr.contains(name) && stderr.contains(says),
            "{case}: {name} / {says:?} not in:\n{stderr}"
        );
        assert!(
            !stderr.contains("listening"),
            "{case}: a listener started:\n{stderr}"
        );
    }
}

/// A PEM block whose base64 is fine but whose DER is not a certificate must be reported as a
/// certificate error naming `-tls-cert`. Fixed: every error of `CertifiedKey::from_der` other
/// than `InconsistentKeys` was taken for a key error, so this start failed with
/// `-tls-key …: unusable key: invalid peer certificate: BadEncoding`, blaming the key file.
#[test]
fn malformed_certificate_is_blamed_on_the_certificate_file() {
    if !common::require("openssl") {
        return;
    }
    let ca = TestCa::new();
    let a = ca.leaf("rb-a.test");
    let dir = tempfile::tempdir().unwrap();
    let bad_der = dir.path().join("bad-der-cert.pem");
    // "Z2FyYmFnZQ==" is base64 for "garbage".
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (code, stderr, _) = start_with(&bad_der, &a.key);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{stderr}");
    assert!(
        stderr.contains("-tls-cert") && stderr.contains("bad-der-cert.pem"),
        "{stderr}"
    );
}

/// A blocking rustls client on Roundabout's TLS listener.
struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake, trusting only `ca`; the server is verified as
    /// 127.0.0.1 (the test leaves carry that IP SAN).
    fn connect(addr: SocketAddr, ca: &Path) -> std::io::Result<TlsClient> {
        TlsClient::connect_as(addr, ca, None, None)
    }

    /// [`TlsClient::connect`] from the address `from` (any port) when given, presenting
    /// `identity` as client certificate when given.
    fn connect_as(
        addr: SocketAddr,
        ca: &Path,
        from: Option<&str>,
        identity: Option<&Leaf>,
    ) -> std::io::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some(leaf) => {
                let chain = CertificateDer::pem_file_iter(&leaf.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
                config.with_client_auth_cert(chain, key).unwrap()
            }
            None => config.with_no_client_auth(),
        };
        let mut tcp = match from {
            Some(ip) => common::tcp_from(SocketAddr::new(ip.parse().unwrap(), 0), addr, None),
            None => TcpStream::connect_timeout(&addr, Duration::from_secs(3))?,
        };
        tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::IpAddress(addr.ip().into()),
        )
        .unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(TlsClient {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        })
    }

    /// Whether a CRLFCRLF keep-alive gets its CRLF back (RFC 5626 §3.5.1); false when the
    /// server closed the connection instead.
    fn pongs(&mut self) -> bool {
        let mut answer = [0u8; 2];
        self.tls.write_all(b"\r\n\r\n").is_ok()
            && self.tls.flush().is_ok()
            && self.tls.read_exact(&mut answer).is_ok()
            && &answer == b"\r\n"
    }

    fn local_addr(&self) -> SocketAddr {
        self.tls.sock.local_addr().unwrap()
    }

    /// The certificate the server presented.
    fn peer_certificate(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.tls.read(&mut chunk).expect("read within the timeout");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next `n` bytes.
    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    /// The next SIP message (framed by Content-Length).
    fn read_message(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let length: usize =
                    header(&head, "Content-Length").map_or(0, |v| v.parse().unwrap());
                let total = end + 4 + length;
                if self.buf.len() >= total {
                    let msg = self.buf.drain(..total).collect::<Vec<u8>>();
                    return String::from_utf8(msg).unwrap();
                }
            }
            self.fill();
        }
    }
}

fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

/// An OPTIONS to `server` sent by a TLS client at `from`.
fn options_over_tls(server: SocketAddr, from: SocketAddr, n: u32) -> String {
    format!(
        "OPTIONS sip:ping@{server} SIP/2.0\r\nVia: SIP/2.0/TLS {from};branch=z9hG4bK-reload-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=c{n}\r\nTo: <sip:ping@{server}>\r\n\
         Call-ID: reload-{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends an OPTIONS over `client` through Roundabout to the UDP `server`, answers it there and
/// expects the 200 back on `client`.
fn round_trip(rb: &Roundabout, client: &mut TlsClient, server: &UdpPeer, n: u32) {
    client.send(options_over_tls(server.addr(), client.local_addr(), n).as_bytes());
    let relayed = server
        .recv()
        .unwrap_or_else(|| panic!("OPTIONS {n} not relayed:\n{}", rb.logs()));
    assert!(relayed.starts_with("OPTIONS "), "{relayed}");
    assert!(
        vias(&relayed)[1].contains(&format!(
            "SIP/2.0/TLS {};branch=z9hG4bK-reload-{n};received=127.0.0.1;rport={}",
            client.local_addr(),
            client.local_addr().port()
        )),
        "{relayed}"
    );
    server.send(rb.addr("udp"), &ok_for(&relayed, "peer", &[]));
    let answer = client.read_message();
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(
        header(&answer, "Call-ID"),
        Some(format!("reload-{n}@test").as_str())
    );
}

/// Repeats `attempt` until Roundabout has logged `needle`: its warnings are rate-limited to one
/// a second per kind, so a refusal right after another shows only on a later attempt.
fn until_logged(rb: &Roundabout, needle: &str, mut attempt: impl FnMut(u32)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    while !rb.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle} not logged:\n{}",
            rb.logs()
        );
        attempts += 1;
        attempt(attempts);
        rb.wait_for_log(needle, Duration::from_millis(500));
    }
}

/// An OPTIONS for `ruri` from the UDP client at `from`; `id` makes its branch, tag and Call-ID.
fn options_to(ruri: &str, from: SocketAddr, id: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag={id}\r\nTo: <{ruri}>\r\n\
         Call-ID: {id}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Whether `openssl s_client` on the TLS listener at `addr`, verifying it against `ca` and
/// presenting `identity` when given, gets the CRLF answer to a CRLFCRLF keep-alive.
fn s_client_pongs(addr: SocketAddr, ca: &Path, identity: Option<&Leaf>) -> bool {
    let mut command = std::process::Command::new("openssl");
    command
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca);
    if let Some(leaf) = identity {
        command
            .arg("-cert")
            .arg(&leaf.cert)
            .arg("-key")
            .arg(&leaf.key);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client runs");
    let _ = child.stdin.as_mut().unwrap().write_all(b"\r\n\r\n");
    let mut stdout = child.stdout.take().unwrap();
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pong = [0u8; 2];
        let _ = answered.send(stdout.read_exact(&mut pong).is_ok() && &pong == b"\r\n");
    });
    let pong = answer
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    pong
}

/// RFC 5626 §3.5.1: CRLFCRLF is answered with CRLF.
fn keep_alive(client: &mut TlsClient) {
    client.send(b"\r\n\r\n");
    assert_eq!(client.read_exact(2), b"\r\n");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    if !common::require("openssl") {
        return;
    }
    let ca = TestCa::new();
    let a = ca.leaf("rb-a.test");
    let b = ca.leaf("rb-b.test");
    let (der_a, der_b) = (der(&a.cert), der(&b.cert));
    assert_ne!(der_a, der_b);
    let live = tempfile::tempdir().unwrap();
    let (cert, key): (PathBuf, PathBuf) = (live.path().join("rb.pem"), live.path().join("rb.key"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let server = UdpPeer::bind("127.0.4.8");
    let rb = Roundabout::serving(
        &server,
        "",
        &[
            "-strict-host",
            "-tls-cert",
            cert.to_str().unwrap(),
            "-tls-key",
            key.to_str().unwrap(),
            "-tls-port",
            "0",
            "-wss-port",
            "0",
        ],
    );
    let tls = rb.addr("tls");

    let mut old = TlsClient::connect(tls, &ca.cert).unwrap();
    assert_eq!(old.peer_certificate(), der_a);
    round_trip(&rb, &mut old, &server, 1);

    // New files, SIGHUP: new handshakes get B, the open connection keeps working.
    std::fs::copy(&b.cert, &cert).unwrap();
    std::fs::copy(&b.key, &key).unwrap();
    rb.signal("HUP");
    assert!(
        rb.wait_for_log("TLS certificate reloaded", Duration::from_secs(5)),
        "{}",
        rb.logs()
    );
    let mut new = TlsClient::connect(tls, &ca.cert).unwrap();
    assert_eq!(new.peer_certificate(), der_b);
    assert_eq!(old.peer_certificate(), der_a);
    round_trip(&rb, &mut old, &server, 2);
    keep_alive(&mut old);
    round_trip(&rb, &mut new, &server, 3);

    // A broken certificate file on SIGHUP: a warning naming it, and B stays in use.
    std::fs::write(&cert, "this is not a certificate\n").unwrap();
    rb.signal("HUP");
    assert!(
        rb.wait_for_log("not reloaded", Duration::from_secs(5)),
        "{}",
        rb.logs()
    );
    let warning = rb
        .logs()
        .lines()
        .find(|l| l.contains("not reloaded"))
        .unwrap()
        .to_string();
    assert!(
        warning.contains("WARN") && warning.contains("rb.pem"),
        "{warning}"
    );
    let newest = TlsClient::connect(tls, &ca.cert).unwrap();
    assert_eq!(newest.peer_certificate(), der_b);
    keep_alive(&mut old);
    round_trip(&rb, &mut old, &server, 4);
    keep_alive(&mut new);
}

#[test]
fn untrusted_certificates_fail_the_handshake_but_not_other_flows() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.5.2",
        uac: "127.0.5.3",
        kamailio: "127.0.5.6",
    };
    let (uas_ip, uac_ip, rogue_ip, misnamed_ip) = (hosts.uas, hosts.uac, "127.0.5.7", "127.0.5.8");
    let ca = TestCa::new();
    let rogue_ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let good = kamailio_tls_server(
        hosts.kamailio,
        "kamailio.test",
        &ca.leaf("kamailio.test"),
        &ca.cert,
    )
    .start();
    // A certificate from a CA Roundabout does not trust, although that CA has the same name as
    // the trusted one (so the chain is refused on its signature, not on a missing issuer).
    let rogue = kamailio_tls_server(
        rogue_ip,
        "rogue.test",
        &rogue_ca.leaf("rogue.test"),
        &rogue_ca.cert,
    )
    .start();
    // A certificate from the trusted CA, but for another name than the trusted server's FQDN.
    let misnamed =
        kamailio_tls_server(misnamed_ip, "other.test", &ca.leaf("other.test"), &ca.cert).start();
    let uas_port = free_port(uas_ip);
    let trusted = format!(
        "{rogue_ip}:rogue.test:{}:tls:,{misnamed_ip}:misnamed.test:{}:tls:,{}",
        rogue.addr("tls").port(),
        misnamed.addr("tls").port(),
        through_kamailio(&good, uas_ip, uas_port),
    );
    let rb = start_roundabout(&rb_leaf, Some(&ca.cert), &trusted, &[]);
    let diagnostics = || {
        format!(
            "proxy log:\n{}\ngood kamailio log:\n{}\nrogue kamailio log:\n{}",
            rb.logs(),
            good.logs(),
            rogue.logs()
        )
    };

    // Roundabout dials the rogue server: the handshake fails on its certificate, nothing is
    // relayed and nothing succeeds.
    let client = UdpPeer::bind(uac_ip);
    client
        .socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let ruri = format!("sip:x@rogue.test:{}", rogue.addr("tls").port());
    client.send(rb.addr("udp"), &options_to(&ruri, client.addr(), "rogue"));
    assert!(
        rb.wait_for_log("cannot connect", Duration::from_secs(5)),
        "{}",
        diagnostics()
    );
    let logs = rb.logs();
    let warning = logs.lines().find(|l| l.contains("cannot connect")).unwrap();
    // The rogue CA has the trusted CA's name: the refusal names the issuer and the fix.
    assert!(
        warning.contains("WARN")
            && warning.contains(&format!("flow=tls:{}", rogue.addr("tls")))
            && warning.contains(
                "invalid peer certificate: certificate for rogue.test, 127.0.0.1 issued by \
                 \"CN=Roundabout test CA\", neither a system root nor in -tls-ca "
            )
            && warning.contains(&ca.cert.display().to_string()),
        "{warning}"
    );
    // A certificate for the wrong name (the warning is rate-limited: ask until it shows).
    let ruri = format!("sip:x@misnamed.test:{}", misnamed.addr("tls").port());
    let expected = "invalid peer certificate: certificate for other.test, 127.0.0.1 does not \
                    name misnamed.test";
    until_logged(&rb, expected, |attempt| {
        let id = format!("misnamed-{attempt}");
        client.send(rb.addr("udp"), &options_to(&ruri, client.addr(), &id));
    });
    assert!(misnamed.log_lines("KREQ ").is_empty(), "{}", diagnostics());
    if let Some(answer) = client.recv() {
        assert!(!answer.starts_with("SIP/2.0 2"), "{answer}");
    }
    assert!(rogue.log_lines("KREQ ").is_empty(), "{}", diagnostics());

    // A client that does not trust Roundabout's certificate: its handshake fails, Roundabout
    // says so and goes on.
    let refused = TlsClient::connect(rb.addr("tls"), &rogue_ca.cert);
    let error = refused.err().expect("handshake refused by the client");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    assert!(
        rb.wait_for_log("TLS handshake failed", Duration::from_secs(5)),
        "{}",
        diagnostics()
    );

    // Other flows keep working: a full call through the trusted Kamailio over TLS.
    let (_uac, uas) = calls(&hosts, rb.addr("udp"), uas_port, &diagnostics);
    assert!(count(&uas.received(), "BYE ") >= CALLS);
    assert!(
        good.log_lines("KREQ INVITE proto=tls").len() >= CALLS,
        "{}",
        diagnostics()
    );
    assert!(rogue.log_lines("KREQ ").is_empty(), "{}", diagnostics());
}

/// The Kamailio requests that arrived on TLS with `client`'s verified client certificate: at
/// least `CALLS` INVITEs, and no request on another.
fn assert_client_certificate(kamailio: &Kamailio, client: &str, diagnostics: &dyn Fn() -> String) {
    let requests = kamailio.log_lines("KREQ ");
    let expected = format!(" client={client} verified=1");
    assert!(
        requests
            .iter()
            .all(|l| l.contains(" proto=tls ") && l.contains(&expected)),
        "{expected}: {requests:#?}\n{}",
        diagnostics()
    );
    let invites = requests
        .iter()
        .filter(|l| l.contains("KREQ INVITE "))
        .count();
    assert!(invites >= CALLS, "{requests:#?}\n{}", diagnostics());
}

/// Both ends self-signed, each pinned by the other: Roundabout dials Kamailio, whose certificate
/// is its own `-tls-ca`, and Kamailio requires a client certificate and accepts Roundabout's
/// `-tls-cert`, which is its `ca_list`.
#[test]
fn pinned_self_signed_kamailio_requires_and_accepts_roundabouts_certificate() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.6.2",
        uac: "127.0.6.3",
        kamailio: "127.0.6.4",
    };
    let ca = TestCa::new();
    let k_self = ca.self_signed("kamailio.test");
    let rb_self = ca.self_signed("roundabout.test");
    let kamailio = kamailio_tls_server(hosts.kamailio, "kamailio.test", &k_self, &rb_self.cert)
        .require_client_certificate(&rb_self.cert)
        .start();
    let uas_port = free_port(hosts.uas);
    let trusted = through_kamailio(&kamailio, hosts.uas, uas_port);
    let rb = start_roundabout(&rb_self, Some(&k_self.cert), &trusted, &[]);
    let diagnostics = || logs_of(&rb, &kamailio);
    let (_uac, uas) = calls(&hosts, rb.addr("udp"), uas_port, &diagnostics);
    assert!(count(&uas.received(), "BYE ") >= CALLS);
    assert_client_certificate(&kamailio, "roundabout.test", &diagnostics);
}

/// `-tls-client-cert`/`-tls-client-key` is what Roundabout presents when dialling, not its
/// listener's `-tls-cert` (here from a CA Kamailio does not trust).
#[test]
fn tls_client_cert_is_the_identity_presented_when_dialling() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.7.2",
        uac: "127.0.7.3",
        kamailio: "127.0.7.4",
    };
    let ca = TestCa::new();
    let untrusted_ca = TestCa::new();
    let listener = untrusted_ca.leaf("roundabout.test");
    let client = ca.leaf("roundabout-client.test");
    let kamailio = kamailio_tls_server(
        hosts.kamailio,
        "kamailio.test",
        &ca.leaf("kamailio.test"),
        &ca.cert,
    )
    .require_client_certificate(&ca.cert)
    .start();
    let uas_port = free_port(hosts.uas);
    let trusted = through_kamailio(&kamailio, hosts.uas, uas_port);
    let (cert, key) = (client.cert.to_str().unwrap(), client.key.to_str().unwrap());
    let rb = start_roundabout(
        &listener,
        Some(&ca.cert),
        &trusted,
        &["-tls-client-cert", cert, "-tls-client-key", key],
    );
    let diagnostics = || logs_of(&rb, &kamailio);
    calls(&hosts, rb.addr("udp"), uas_port, &diagnostics);
    assert_client_certificate(&kamailio, "roundabout-client.test", &diagnostics);
}

/// Kamailio dials in as a trusted server presenting its self-signed certificate, pinned by
/// Roundabout's `-tls-ca`, under `-tls-verify-client required`; the identity is logged per flow.
#[test]
fn pinned_self_signed_kamailio_dials_in_under_required_client_certificates() {
    if !available() {
        return;
    }
    let hosts = Hosts {
        uas: "127.0.8.2",
        uac: "127.0.8.3",
        kamailio: "127.0.8.5",
    };
    let ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let k_self = ca.self_signed("kamailio.test");
    let uas_port = free_port(hosts.uas);
    let (k_udp, k_tls) = two_ports(hosts.kamailio);
    let trusted = format!(
        "{}::{uas_port}:udp:,{}:kamailio.test:{k_tls}:tls:",
        hosts.uas, hosts.kamailio
    );
    let rb = start_roundabout(
        &rb_leaf,
        Some(&k_self.cert),
        &trusted,
        &["-tls-verify-client", "required", "-log-level", "debug"],
    );
    // Kamailio dials from its own address, the trusted server's.
    let kamailio = KamailioConfig::new(RELAY_TO_ROUNDABOUT)
        .global(&format!("tcp_source_ipv4={}", hosts.kamailio))
        .listen("udp", hosts.kamailio, k_udp)
        .listen("tls", hosts.kamailio, k_tls)
        .tls(&k_self.cert, &k_self.key, Some(&ca.cert))
        .var("ROUNDABOUT", rb.addr("tls"))
        .start();
    let diagnostics = || logs_of(&rb, &kamailio);
    let (_uac, uas) = calls(&hosts, kamailio.addr("udp"), uas_port, &diagnostics);
    assert!(count(&uas.received(), "BYE ") >= CALLS);
    let logs = rb.logs();
    let verified: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("TLS client certificate verified"))
        .collect();
    assert!(
        !verified.is_empty()
            && verified
                .iter()
                .all(|l| l.contains(&format!("flow=tls:{}:", hosts.kamailio))
                    && l.contains("identity=kamailio.test, 127.0.0.1")),
        "{verified:#?}\n{}",
        diagnostics()
    );
}

/// Roundabout with TLS and WSS listeners whose clients are verified against `ca` under `mode`.
fn verifying_clients(leaf: &Leaf, ca: &Path, mode: &str, trusted: &str) -> Roundabout {
    let (cert, key, ca) = (
        leaf.cert.to_str().unwrap(),
        leaf.key.to_str().unwrap(),
        ca.to_str().unwrap(),
    );
    let mut args = vec!["-tls-cert", cert, "-tls-key", key, "-tls-ca", ca];
    args.extend([
        "-tls-port",
        "0",
        "-wss-port",
        "0",
        "-tls-verify-client",
        mode,
    ]);
    if !trusted.is_empty() {
        args.extend(["-trusted-server", trusted]);
    }
    Roundabout::start(&args)
}

/// openssl s_client without a certificate: refused under `required` (on TLS and WSS), accepted
/// under `optional`; with one from `-tls-ca`'s CA, accepted under `required`.
#[test]
fn s_client_without_a_certificate_is_refused_only_when_one_is_required() {
    if !common::require("openssl") {
        return;
    }
    let ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let client = ca.leaf("client.test");
    let required = verifying_clients(&rb_leaf, &ca.cert, "required", "");
    assert!(
        !s_client_pongs(required.addr("tls"), &ca.cert, None),
        "{}",
        required.logs()
    );
    assert!(
        required.wait_for_log("peer sent no certificates", Duration::from_secs(5)),
        "{}",
        required.logs()
    );
    assert!(
        s_client_pongs(required.addr("tls"), &ca.cert, Some(&client)),
        "{}",
        required.logs()
    );
    // A self-signed certificate that is not in -tls-ca: refused, and the log says how to pin it.
    let stranger = ca.self_signed("stranger.test");
    until_logged(
        &required,
        "self-signed certificate for stranger.test, 127.0.0.1 not in -tls-ca",
        |_| {
            assert!(!s_client_pongs(
                required.addr("tls"),
                &ca.cert,
                Some(&stranger)
            ))
        },
    );
    // The WSS listener asks the same.
    let wss = required.addr("wss");
    until_logged(&required, &format!("flow=wss:{}", wss.ip()), |_| {
        assert!(!s_client_pongs(wss, &ca.cert, None));
    });
    let logs = required.logs();
    let refusal = logs.lines().find(|l| l.contains("flow=wss:")).unwrap();
    assert!(
        refusal.contains("TLS handshake failed") && refusal.contains("peer sent no certificates"),
        "{refusal}"
    );

    let optional = verifying_clients(&rb_leaf, &ca.cert, "optional", "");
    assert!(
        s_client_pongs(optional.addr("tls"), &ca.cert, None),
        "{}",
        optional.logs()
    );
    assert!(s_client_pongs(
        optional.addr("tls"),
        &ca.cert,
        Some(&client)
    ));
}

/// Under `trusted-servers`, a connection from a trusted server's address must present a
/// certificate naming one of its FQDNs; anyone else need not present one.
#[test]
fn a_trusted_server_must_present_a_certificate_naming_it() {
    if !common::require("openssl") {
        return;
    }
    let (carrier_ip, phone_ip) = ("127.0.9.7", "127.0.9.8");
    let ca = TestCa::new();
    let rb_leaf = ca.leaf("roundabout.test");
    let carrier = ca.leaf("sip.carrier.test");
    let impostor = ca.leaf("other.test");
    let trusted = format!("{carrier_ip}:pstn.carrier.test/sip.carrier.test:5061:tls:");
    let rb = verifying_clients(&rb_leaf, &ca.cert, "trusted-servers", &trusted);
    let tls = rb.addr("tls");
    let connect = |from, identity| TlsClient::connect_as(tls, &ca.cert, Some(from), identity);

    assert!(
        connect(carrier_ip, Some(&carrier)).unwrap().pongs(),
        "{}",
        rb.logs()
    );
    // Refused after the handshake: the connection is closed without an answer.
    let refused = |identity, says: &str| {
        until_logged(&rb, says, |_| {
            if let Ok(mut client) = connect(carrier_ip, identity) {
                assert!(!client.pongs(), "{says}: {}", rb.logs());
            }
        });
    };
    refused(
        Some(&impostor),
        "certificate for other.test, 127.0.0.1 does not name pstn.carrier.test or sip.carrier.test",
    );
    refused(
        None,
        "no client certificate: -tls-verify-client trusted-servers",
    );
    assert!(connect(phone_ip, None).unwrap().pongs(), "{}", rb.logs());
    assert!(
        connect(phone_ip, Some(&impostor)).unwrap().pongs(),
        "{}",
        rb.logs()
    );
}

/// What Roundabout and Kamailio logged, for a failed assertion.
fn logs_of(rb: &Roundabout, kamailio: &Kamailio) -> String {
    format!(
        "proxy log:\n{}\nkamailio log:\n{}",
        rb.logs(),
        kamailio.logs()
    )
}

//! The whole server in-process: bound on port 0 from a command line, served without signals,
//! stopped through its `Control`, as a test that needs the real proxy without a process does.

// Test code: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::time::Duration;

use roundabout::cli::{self, Action};
use roundabout::config::{Config, Validated};
use roundabout::server::{Control, Server};
use roundabout::sip::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

fn config(args: &[&str]) -> Config {
    let argv = std::iter::once("roundabout")
        .chain(args.iter().copied())
        .map(OsString::from);
    let Action::Run(run) = cli::parse(argv).unwrap().into_action().unwrap() else {
        panic!("not a run")
    };
    let Validated { config, skipped } = Config::from_args(&run).unwrap();
    assert!(skipped.is_empty());
    config
}

/// A MESSAGE over TCP reaches a UDP server through the in-process server and its 200 comes
/// back; the server then stops when told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_in_process_on_ephemeral_ports() {
    let state = tempfile::tempdir().unwrap();
    let server_peer = UdpSocket::bind("127.0.41.2:0").await.unwrap();
    let trusted = format!(
        "127.0.41.2::{}:udp:",
        server_peer.local_addr().unwrap().port()
    );
    let config = config(&[
        "-local-ip",
        "127.0.0.1",
        "-udp-port",
        "0",
        "-tcp-port",
        "0",
        "-ws-port",
        "off",
        "-strict-host",
        "-trusted-server",
        &trusted,
        "-state-dir",
        state.path().to_str().unwrap(),
    ]);
    let server = Server::bind(&config).await.unwrap();
    let tcp = server.local_addr(Transport::Tcp).unwrap();
    assert_ne!(tcp.port(), 0, "an ephemeral port was picked");
    let control = Control::default();
    let serving = tokio::spawn(server.serve(control.clone()));

    let mut client = TcpStream::connect(tcp).await.unwrap();
    let local = client.local_addr().unwrap();
    let message = format!(
        "MESSAGE sip:bob@127.0.41.2 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-in-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@127.0.41.2>\r\n\
         Call-ID: in-process@test\r\nCSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi"
    );
    client.write_all(message.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = timeout(STEP, server_peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(forwarded.starts_with("MESSAGE sip:bob@127.0.41.2 SIP/2.0\r\n"));
    // Answer with every Via, as a UAS does (RFC 3261 §8.2.6.2).
    let vias: String = forwarded
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{vias}From: <sip:alice@example.com>;tag=a\r\n\
         To: <sip:bob@127.0.41.2>;tag=b\r\nCall-ID: in-process@test\r\nCSeq: 1 MESSAGE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    server_peer.send_to(ok.as_bytes(), from).await.unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = timeout(STEP, client.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("SIP/2.0 200 OK\r\n"));

    control.stop.cancel();
    timeout(STEP, serving).await.unwrap().unwrap();
}

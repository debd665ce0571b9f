//! The PROXY protocol (HAProxy's specification, the v1 text line and the v2 binary block) at
//! the start of a stream connection from a load balancer: which client the balancer is
//! carrying. Only connections from `-proxy-protocol-from` may start with a header, and they
//! must; with the flag unset nothing here runs.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Command, Protocol};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted: a v1 line is at most 107 bytes; a v2 block is 16 bytes and
/// the addresses (36 for IPv6) plus whatever TLVs the balancer adds, which Roundabout reads
/// past but does not use.
const MAX_HEADER: usize = 1024;

/// How a v1 line and a v2 block begin; a connection from anyone else that begins so is refused.
const V1_START: &[u8] = b"PROXY ";
const V2_START: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection was refused before anything in it was read as SIP, TLS or HTTP.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no PROXY protocol header from a -proxy-protocol-from address")]
    Missing,
    #[error("PROXY protocol header from an address not in -proxy-protocol-from")]
    Unlisted,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("PROXY protocol header over {MAX_HEADER} bytes")]
    TooLong,
    #[error("PROXY protocol header for a datagram or UNIX socket connection")]
    NotStream,
    #[error("no whole PROXY protocol header within the handshake timeout")]
    Timeout,
    #[error("closed before the PROXY protocol header ended")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the header at the start of `socket`, a connection from a balancer at `remote`, within
/// `limit`, and gives the client's address: the header's source, or `remote` itself for the
/// balancer's own connections (v2 LOCAL, v1 UNKNOWN: health checks). Exactly the header is
/// consumed; what follows stays in the socket for TLS, WebSocket or SIP.
pub(crate) async fn read_client(
    socket: &mut TcpStream,
    remote: SocketAddr,
    limit: Duration,
) -> Result<SocketAddr, Refused> {
    tokio::time::timeout(limit, read_header(socket, remote))
        .await
        .unwrap_or(Err(Refused::Timeout))
}

async fn read_header(socket: &mut TcpStream, remote: SocketAddr) -> Result<SocketAddr, Refused> {
    let mut header = Vec::new();
    let mut peeked = [0u8; MAX_HEADER];
    loop {
        let room = MAX_HEADER - header.len();
        if room == 0 {
            return Err(Refused::TooLong);
        }
        // Peeked, not read: bytes past the header's end belong to what follows it.
        let n = socket.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(Refused::Closed);
        }
        let before = header.len();
        header.extend_from_slice(&peeked[..n]);
        let parsed = HeaderResult::parse(&header);
        if parsed.is_incomplete() {
            // Every byte so far is the header's: take them, so the next peek waits for more.
            socket.read_exact(&mut peeked[..n]).await?;
            continue;
        }
        let (length, client) = match parsed {
            HeaderResult::V1(Ok(line)) => (line.header.len(), v1_client(&line, remote)),
            HeaderResult::V2(Ok(block)) => (block.len(), v2_client(&block, remote)?),
            _ if !starts_like_header(&header) => return Err(Refused::Missing),
            _ => return Err(Refused::Malformed),
        };
        let unread = length.checked_sub(before).ok_or(Refused::Malformed)?;
        socket.read_exact(&mut peeked[..unread]).await?;
        return Ok(client);
    }
}

fn v1_client(line: &v1::Header<'_>, remote: SocketAddr) -> SocketAddr {
    match line.addresses {
        v1::Addresses::Tcp4(ip) => SocketAddr::new(ip.source_address.into(), ip.source_port),
        v1::Addresses::Tcp6(ip) => SocketAddr::new(ip.source_address.into(), ip.source_port),
        v1::Addresses::Unknown => remote,
    }
}

fn v2_client(block: &v2::Header<'_>, remote: SocketAddr) -> Result<SocketAddr, Refused> {
    if block.command == Command::Local {
        return Ok(remote);
    }
    if block.protocol != Protocol::Stream {
        return Err(Refused::NotStream);
    }
    match block.addresses {
        v2::Addresses::IPv4(ip) => Ok(SocketAddr::new(ip.source_address.into(), ip.source_port)),
        v2::Addresses::IPv6(ip) => Ok(SocketAddr::new(ip.source_address.into(), ip.source_port)),
        v2::Addresses::Unspecified => Ok(remote),
        v2::Addresses::Unix(_) => Err(Refused::NotStream),
    }
}

/// Refuses a connection from an address that is not a balancer if its first bytes are a PROXY
/// header, which would otherwise be taken for a SIP message, a TLS record or HTTP. Looks at
/// what the first segment holds (a balancer writes the header whole, before anything else);
/// a connection that sends nothing within `limit` is served as it is.
pub(crate) async fn refuse_header(socket: &TcpStream, limit: Duration) -> Result<(), Refused> {
    let mut first = [0u8; V2_START.len()];
    let n = match tokio::time::timeout(limit, socket.peek(&mut first)).await {
        Ok(peeked) => peeked?,
        Err(_) => return Ok(()),
    };
    let first = &first[..n];
    if first.starts_with(V1_START) || first == V2_START {
        return Err(Refused::Unlisted);
    }
    Ok(())
}

/// Whether `data` begins as a v1 line or a v2 block would (as far as it goes).
fn starts_like_header(data: &[u8]) -> bool {
    [V1_START, V2_START].iter().any(|start| {
        let common = data.len().min(start.len());
        data[..common] == start[..common]
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    /// A connection on which the peer wrote `chunks` (each a write of its own), accepted.
    async fn connection(chunks: Vec<Vec<u8>>) -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                peer.write_all(&chunk).await.unwrap();
                peer.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Keep the connection open until the test is done with it.
            tokio::time::sleep(LIMIT).await;
        });
        let (socket, remote) = listener.accept().await.unwrap();
        (socket, remote)
    }

    async fn rest(socket: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut rest = vec![0u8; len];
        socket.read_exact(&mut rest).await.unwrap();
        rest
    }

    fn v2_block(command: u8, source: SocketAddr) -> Vec<u8> {
        let mut block = V2_START.to_vec();
        block.push(0x20 | command);
        match source {
            SocketAddr::V4(source) => {
                block.extend([0x11, 0, 12]);
                block.extend(source.ip().octets());
                block.extend(Ipv4Addr::new(192, 0, 2, 1).octets());
                block.extend(source.port().to_be_bytes());
                block.extend(5060u16.to_be_bytes());
            }
            SocketAddr::V6(source) => {
                block.extend([0x21, 0, 36]);
                block.extend(source.ip().octets());
                block.extend(Ipv6Addr::LOCALHOST.octets());
                block.extend(source.port().to_be_bytes());
                block.extend(5060u16.to_be_bytes());
            }
        }
        block
    }

    #[tokio::test]
    async fn a_v1_line_gives_the_client_and_leaves_what_follows() {
        let sent = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 5060\r\nOPTIONS".to_vec();
        let (mut socket, remote) = connection(vec![sent]).await;
        let client = read_client(&mut socket, remote, LIMIT).await.unwrap();
        assert_eq!(client, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(rest(&mut socket, 7).await, b"OPTIONS");
    }

    #[tokio::test]
    async fn a_header_split_over_writes_is_read_whole() {
        let line = b"PROXY TCP6 2001:db8::5 2001:db8::1 40001 5061\r\n";
        let (head, tail) = line.split_at(9);
        let mut tail = tail.to_vec();
        tail.extend_from_slice(b"\x16\x03\x01");
        let (mut socket, remote) = connection(vec![head.to_vec(), tail]).await;
        let client = read_client(&mut socket, remote, LIMIT).await.unwrap();
        assert_eq!(client, "[2001:db8::5]:40001".parse().unwrap());
        assert_eq!(rest(&mut socket, 3).await, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn a_v2_block_gives_the_client_and_local_means_the_balancer() {
        for source in ["203.0.113.9:1234", "[2001:db8::9]:4321"] {
            let source: SocketAddr = source.parse().unwrap();
            let mut sent = v2_block(1, source);
            sent.extend_from_slice(b"GET /");
            let (mut socket, remote) = connection(vec![sent]).await;
            assert_eq!(
                read_client(&mut socket, remote, LIMIT).await.unwrap(),
                source
            );
            assert_eq!(rest(&mut socket, 5).await, b"GET /");
        }
        let (mut socket, remote) =
            connection(vec![v2_block(0, "203.0.113.9:1234".parse().unwrap())]).await;
        assert_eq!(
            read_client(&mut socket, remote, LIMIT).await.unwrap(),
            remote
        );
    }

    #[tokio::test]
    async fn a_balancer_connection_without_a_good_header_is_refused() {
        let cases: [(&[u8], &str); 4] = [
            (b"OPTIONS sip:a SIP/2.0\r\n", "Missing"),
            (b"PROXY TCP4 banana 192.0.2.1 1 2\r\n", "Malformed"),
            (b"\r\n\r\n\0\r\nQUIT\n\x99\x11\0\x0c", "Malformed"),
            (b"PROXY TCP4 198.51.100.7", "Timeout"),
        ];
        for (sent, expected) in cases {
            let (mut socket, remote) = connection(vec![sent.to_vec()]).await;
            let refused = read_client(&mut socket, remote, Duration::from_millis(300))
                .await
                .unwrap_err();
            assert_eq!(format!("{refused:?}"), expected, "{sent:?}");
        }
    }

    #[tokio::test]
    async fn anyone_else_may_not_send_a_header() {
        let v2 = v2_block(1, "203.0.113.9:1234".parse().unwrap());
        for sent in [b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), v2] {
            let (socket, _) = connection(vec![sent]).await;
            assert!(matches!(
                refuse_header(&socket, LIMIT).await,
                Err(Refused::Unlisted)
            ));
        }
        for sent in [b"OPTIONS sip:a SIP/2.0\r\n".to_vec(), b"\r\n\r\n".to_vec()] {
            let (socket, _) = connection(vec![sent]).await;
            assert!(refuse_header(&socket, LIMIT).await.is_ok());
        }
    }
}

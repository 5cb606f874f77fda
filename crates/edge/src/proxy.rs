//! The PROXY protocol (HAProxy's text v1 and binary v2 headers): behind a
//! TCP load balancer every connection comes from the balancer, and the
//! header it writes before the client's first byte is the only place the
//! client's own address is. The server reads it from a trusted proxy
//! (`COURTSIDE_TRUSTED_PROXIES`) only, so the rate limits, the
//! per-address connection cap and the logs count the real client.
//!
//! - From a trusted proxy, a header is read when there is one, and its
//!   source address becomes the connection's peer. A connection without a
//!   header is the proxy's own (its health checks), as is a v2 `LOCAL` or a
//!   v1 `UNKNOWN` header.
//! - From anyone else, a header is refused with a `400` whose JSON body
//!   says why: a client must not be able to name its own address.
//! - A trusted proxy's malformed or oversized header is refused alike.
//!
//! The header is found by peeking, so a connection without one is served
//! from its first byte as before. Parsing is the `ppp` crate's.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::error::{ErrorBody, ErrorDetail};

/// What starts every v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// What starts every v2 header; its 16-byte fixed part ends with the length
/// of the rest.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
/// The longest v1 header, by the specification.
const V1_MAX: usize = 107;
/// The longest v2 header accepted: the addresses (216 bytes at most, for
/// UNIX sockets) and the TLVs a balancer adds (ALPN, unique id, SSL
/// details). A longer one is refused rather than buffered.
const V2_MAX: usize = V2_FIXED + 1024;
/// How long to wait for more of a header that arrived in pieces.
const PIECE_WAIT: Duration = Duration::from_millis(10);
/// How long a refused connection stays open after its answer, reading and
/// dropping what the client still sends: closing a socket with unread data
/// sends a reset, which can destroy the answer before the client reads it.
const REFUSED_LINGER: Duration = Duration::from_secs(1);
/// What a refused connection may still send during the linger.
const REFUSED_DRAIN_BYTES: usize = 64 * 1024;

/// What the connection's first bytes said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preface {
    /// No PROXY header: the peer is the client.
    None,
    /// A trusted proxy's header, read and consumed: the client's address
    /// (the proxy's own for its health checks).
    Client(SocketAddr),
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("a PROXY protocol header is accepted only from a trusted proxy (COURTSIDE_TRUSTED_PROXIES)")]
    Untrusted,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
}

impl Refusal {
    fn code(&self) -> &'static str {
        match self {
            Self::Untrusted => "proxy_header_not_trusted",
            Self::Invalid(_) => "invalid_proxy_header",
        }
    }

    /// The metric label of the outcome.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Untrusted => "refused_untrusted",
            Self::Invalid(_) => "refused_invalid",
        }
    }
}

/// Which header a connection starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    V1,
    V2,
}

/// Reads the PROXY header `tcp` starts with, if any: consumed and parsed
/// from a `trusted` peer, refused from anyone else. Bytes that are not a
/// header are left unread. The caller bounds the time it may take.
pub(crate) async fn read_preface(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: bool,
) -> io::Result<Result<Preface, Refusal>> {
    // Most connections carry no header: their first peek needs no more.
    let mut fixed = [0u8; V2_FIXED];
    let Some(kind) = header_kind(tcp, &mut fixed).await? else {
        return Ok(Ok(Preface::None));
    };
    if !trusted {
        return Ok(Err(Refusal::Untrusted));
    }
    let mut buf = vec![0u8; V2_MAX];
    buf[..V2_FIXED].copy_from_slice(&fixed);
    let length = match kind {
        Kind::V1 => v1_length(tcp, &mut buf).await?,
        Kind::V2 => v2_length(tcp, &mut buf).await?,
    };
    let length = match length {
        Ok(length) => length,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let client = match parse(kind, &buf[..length], peer) {
        Ok(client) => client,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Only now consumed: the bytes are all there, so this does not wait.
    tcp.read_exact(&mut buf[..length]).await?;
    Ok(Ok(Preface::Client(client)))
}

/// Whether the connection starts with a v1 or a v2 header, peeking until
/// its first bytes say (a v2 header's fixed part, with its length, is
/// awaited whole). `None` for anything else, and for a connection that
/// closes first.
async fn header_kind(tcp: &TcpStream, buf: &mut [u8; V2_FIXED]) -> io::Result<Option<Kind>> {
    loop {
        let seen = tcp.peek(buf).await?;
        if seen == 0 {
            return Ok(None);
        }
        let could_be = |prefix: &[u8]| {
            let n = seen.min(prefix.len());
            buf[..n] == prefix[..n]
        };
        match (could_be(V1_PREFIX), could_be(V2_SIGNATURE)) {
            (false, false) => return Ok(None),
            (true, _) if seen >= V1_PREFIX.len() => return Ok(Some(Kind::V1)),
            (_, true) if seen >= V2_FIXED => return Ok(Some(Kind::V2)),
            // The start of a header, or of a request that shares its first
            // letters (`P` of `POST`): wait for more.
            _ => tokio::time::sleep(PIECE_WAIT).await,
        }
    }
}

/// The length of a v1 header, through its CRLF, once all of it has arrived.
async fn v1_length(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<Result<usize, Refusal>> {
    loop {
        let seen = tcp.peek(&mut buf[..V1_MAX]).await?;
        if let Some(end) = buf[..seen].windows(2).position(|pair| pair == b"\r\n") {
            return Ok(Ok(end + 2));
        }
        if seen >= V1_MAX {
            return Ok(Err(Refusal::Invalid(format!("no line end within {V1_MAX} bytes"))));
        }
        if seen == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        tokio::time::sleep(PIECE_WAIT).await;
    }
}

/// The length of a v2 header, once all of it has arrived.
async fn v2_length(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<Result<usize, Refusal>> {
    let length = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX {
        return Ok(Err(Refusal::Invalid(format!("{length} bytes, more than the {V2_MAX} accepted"))));
    }
    loop {
        let seen = tcp.peek(&mut buf[..length]).await?;
        if seen >= length {
            return Ok(Ok(length));
        }
        if seen == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        tokio::time::sleep(PIECE_WAIT).await;
    }
}

/// The client a whole header names: its source address, or `peer` for a
/// header that names none (a proxy's own connection).
fn parse(kind: Kind, header: &[u8], peer: SocketAddr) -> Result<SocketAddr, Refusal> {
    match kind {
        Kind::V1 => {
            use ppp::v1::{Addresses, Header};
            let header = Header::try_from(header).map_err(|err| Refusal::Invalid(err.to_string()))?;
            Ok(match header.addresses {
                Addresses::Tcp4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
                Addresses::Tcp6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
                Addresses::Unknown => peer,
            })
        }
        Kind::V2 => {
            use ppp::v2::{Addresses, Command, Header};
            let header = Header::try_from(header).map_err(|err| Refusal::Invalid(err.to_string()))?;
            Ok(match (header.command, header.addresses) {
                (Command::Proxy, Addresses::IPv4(ip)) => {
                    SocketAddr::from((ip.source_address, ip.source_port))
                }
                (Command::Proxy, Addresses::IPv6(ip)) => {
                    SocketAddr::from((ip.source_address, ip.source_port))
                }
                // LOCAL (the proxy's health check), or an address family
                // that names no IP client.
                _ => peer,
            })
        }
    }
}

/// Answers a refused header with a `400` in the edge's error shape, then
/// closes, after reading what the client still sends for a moment (see
/// [`REFUSED_LINGER`]).
pub(crate) async fn refuse(mut tcp: TcpStream, refusal: &Refusal) {
    let body = ErrorBody { error: ErrorDetail { code: refusal.code(), message: refusal.to_string() } };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let linger = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSED_DRAIN_BYTES {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSED_LINGER, linger).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: what the client writes, and the server's end.
    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        (client, server, peer)
    }

    async fn preface_of(bytes: &[u8], trusted: bool) -> (Result<Preface, Refusal>, Vec<u8>, SocketAddr) {
        let (mut client, mut server, peer) = pair().await;
        client.write_all(bytes).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let preface = tokio::time::timeout(Duration::from_secs(5), read_preface(&mut server, peer, trusted))
            .await
            .expect("in time")
            .expect("io");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("rest");
        (preface, rest, peer)
    }

    fn v2(command: u8, addresses: (SocketAddr, SocketAddr)) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(0x20 | command, ppp::v2::Protocol::Stream, addresses)
            .build()
            .expect("header")
    }

    #[tokio::test]
    async fn a_trusted_proxys_v1_header_names_the_client_and_is_consumed() {
        let (preface, rest, _) =
            preface_of(b"PROXY TCP4 203.0.113.7 10.0.0.1 40123 8080\r\nGET / HTTP/1.1\r\n\r\n", true).await;
        assert_eq!(preface, Ok(Preface::Client("203.0.113.7:40123".parse().expect("addr"))));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let (preface, _, _) =
            preface_of(b"PROXY TCP6 2001:db8::9 2001:db8::1 5000 80\r\nGET / HTTP/1.1\r\n\r\n", true).await;
        assert_eq!(preface, Ok(Preface::Client("[2001:db8::9]:5000".parse().expect("addr"))));
    }

    #[tokio::test]
    async fn a_trusted_proxys_v2_header_names_the_client_and_local_names_the_proxy() {
        let addresses = ("198.51.100.4:1234".parse().expect("addr"), "10.0.0.1:8080".parse().expect("addr"));
        let mut bytes = v2(0x01, addresses);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (preface, rest, _) = preface_of(&bytes, true).await;
        assert_eq!(preface, Ok(Preface::Client(addresses.0)));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let (preface, _, peer) = preface_of(&v2(0x00, addresses), true).await;
        assert_eq!(preface, Ok(Preface::Client(peer)), "a health check of the proxy's own");
    }

    #[tokio::test]
    async fn a_header_from_anyone_else_is_refused_and_plain_requests_pass_untouched() {
        let addresses = ("198.51.100.4:1234".parse().expect("addr"), "10.0.0.1:8080".parse().expect("addr"));
        for header in [&b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n"[..], &v2(0x01, addresses)] {
            let (preface, _, _) = preface_of(header, false).await;
            assert_eq!(preface, Err(Refusal::Untrusted));
        }
        for request in [
            &b"POST /v1/events HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            for trusted in [true, false] {
                let (preface, rest, _) = preface_of(request, trusted).await;
                assert_eq!(preface, Ok(Preface::None), "{request:?}");
                assert_eq!(rest, request, "nothing consumed");
            }
        }
    }

    #[tokio::test]
    async fn a_malformed_or_oversized_header_is_refused_even_from_a_trusted_proxy() {
        let garbage = b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n";
        assert!(matches!(preface_of(garbage, true).await.0, Err(Refusal::Invalid(_))));
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(preface_of(&endless, true).await.0, Err(Refusal::Invalid(_))));
        let mut huge =
            v2(0x01, ("198.51.100.4:1".parse().expect("addr"), "10.0.0.1:2".parse().expect("addr")));
        huge[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(matches!(preface_of(&huge, true).await.0, Err(Refusal::Invalid(_))));
    }

    #[tokio::test]
    async fn a_header_sent_in_pieces_is_read_whole() {
        let (mut client, mut server, peer) = pair().await;
        // A signature's start alone is waited on until more arrives.
        let writer = tokio::spawn(async move {
            for piece in [&b"PRO"[..], b"XY TCP4 203.0.113.7 ", b"10.0.0.1 40123 8080\r", b"\nGET"] {
                client.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            client
        });
        let preface = read_preface(&mut server, peer, true).await.expect("io");
        assert_eq!(preface, Ok(Preface::Client("203.0.113.7:40123".parse().expect("addr"))));
        drop(writer.await.expect("writer"));
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("rest");
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn a_refusal_is_a_400_with_a_json_body() {
        let (mut client, server, _) = pair().await;
        client
            .write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        refuse(server, &Refusal::Untrusted).await;
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        let body: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
        assert_eq!(body["error"]["code"], "proxy_header_not_trusted");
    }
}

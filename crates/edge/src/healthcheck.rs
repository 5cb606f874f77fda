//! The `healthcheck` subcommand: one plain HTTP/1.1 request to `/healthz`.
//! Container healthchecks call the binary itself, so the runtime image needs
//! no curl, and this needs no HTTP client library.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Succeeds when the gateway at `addr` answers `/healthz` with 200 within a
/// few seconds.
pub async fn healthcheck(addr: SocketAddr) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream =
            TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.context("cannot send the request")?;
        let mut head = [0u8; 32];
        let read = stream.read(&mut head).await.context("cannot read the response")?;
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&head[..read]).into_owned())
    };
    let head =
        tokio::time::timeout(Duration::from_secs(3), exchange).await.context("no answer within 3 s")??;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.starts_with("HTTP/1.1 200") { Ok(()) } else { bail!("unexpected answer: {status_line:?}") }
}

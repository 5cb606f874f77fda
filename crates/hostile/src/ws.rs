//! A WebSocket client that lays frames out byte by byte as RFC 6455 draws
//! them, so a case can send what a well-behaved library never would: an
//! unmasked frame, reserved bits, an unknown opcode, an oversized or
//! fragmented control frame, a text frame that is not UTF-8.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
};

use crate::http::{self, Conn, Request, Response};

/// How long a case waits for a reply or a close.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Frames this client reads at most.
const MAX_FRAME: u64 = 1 << 20;
/// Any fixed key will do: masking exists to confuse proxies, not to hide.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// A frame as the client writes it.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    /// RSV1..3 as the three bits below FIN.
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) masked: bool,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// A final, masked frame: what a conforming client sends.
    pub(crate) fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self { fin: true, rsv: 0, opcode, masked: true, payload: payload.into() }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![(u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0xF)];
        let mask_bit = u8::from(self.masked) << 7;
        let len = self.payload.len();
        match len {
            0..=125 => bytes.push(mask_bit | len as u8),
            126..=0xFFFF => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                bytes.push(mask_bit | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if self.masked {
            bytes.extend_from_slice(&MASK);
            bytes.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            bytes.extend_from_slice(&self.payload);
        }
        bytes
    }
}

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code, if it carried one.
    Close(Option<u16>),
    Other(u8),
}

/// An upgraded connection to `/v1/live`.
#[derive(Debug)]
pub(crate) struct Ws {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Ws {
    /// Opens the WebSocket at `target` (path and query).
    pub(crate) async fn connect(addr: SocketAddr, target: &str) -> anyhow::Result<Self> {
        match Self::upgrade(addr, target).await? {
            Ok(ws) => Ok(ws),
            Err(response) => {
                bail!("upgrade refused: {} {}", response.status(), http::clip(&response.text(), 120))
            }
        }
    }

    /// Asks for the upgrade; the server's answer if it refused.
    pub(crate) async fn upgrade(addr: SocketAddr, target: &str) -> anyhow::Result<Result<Self, Response>> {
        let mut conn = Conn::open(addr).await?;
        let request = Request::get(target)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13");
        conn.write(&request.to_bytes(&addr.to_string())).await?;
        let head = conn.head_within(WAIT).await?;
        if head.status != 101 {
            // A refusal is an ordinary response; read its body as one.
            let (mut reader, _) = conn.into_parts();
            let mut body = Vec::new();
            if let Some(length) = head.header("content-length").and_then(|l| l.parse::<u64>().ok()) {
                (&mut reader).take(length).read_to_end(&mut body).await.context("refusal body")?;
            }
            return Ok(Err(Response { head, body }));
        }
        ensure!(
            head.header("sec-websocket-accept") == Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept: {:?}",
            head.header("sec-websocket-accept")
        );
        let (reader, writer) = conn.into_parts();
        Ok(Ok(Self { reader, writer }))
    }

    pub(crate) async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        self.writer.write_all(&frame.to_bytes()).await.context("write frame")?;
        self.writer.flush().await.context("flush")
    }

    pub(crate) async fn text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(&Frame::new(TEXT, text.as_bytes())).await
    }

    pub(crate) async fn json(&mut self, value: &Value) -> anyhow::Result<()> {
        self.text(&value.to_string()).await
    }

    /// The next frame within `limit`; `None` when the connection ended
    /// without a close frame.
    pub(crate) async fn next(&mut self, limit: Duration) -> anyhow::Result<Option<Incoming>> {
        match tokio::time::timeout(limit, read_frame(&mut self.reader)).await {
            Err(_) => bail!("nothing from the server within {} ms", limit.as_millis()),
            Ok(frame) => frame,
        }
    }

    /// The next text message as JSON, skipping pings.
    pub(crate) async fn reply(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.next(WAIT).await? {
                Some(Incoming::Text(text)) => {
                    return serde_json::from_str(&text).with_context(|| format!("reply is not JSON: {text}"));
                }
                Some(Incoming::Ping(_) | Incoming::Pong(_)) => {}
                Some(other) => bail!("expected a text reply, got {other:?}"),
                None => bail!("connection ended instead of a reply"),
            }
        }
    }

    /// Reads until the server's close frame and returns its code; `None` if
    /// the connection ended without one (a reset, or a bare TCP close).
    pub(crate) async fn close_code(&mut self, limit: Duration) -> anyhow::Result<Option<u16>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(Some(Incoming::Close(code))) => return Ok(code),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                // A reset after the close frame was lost counts as no frame.
                Err(err) if err.downcast_ref::<std::io::Error>().is_some() => return Ok(None),
                Err(err) => return Err(err),
            }
        }
    }
}

async fn read_frame(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Option<Incoming>> {
    let mut first = [0u8; 2];
    match reader.read_exact(&mut first).await {
        Ok(_) => {}
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    }
    let opcode = first[0] & 0xF;
    let masked = first[1] & 0x80 != 0;
    let len = match first[1] & 0x7F {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        short => u64::from(short),
    };
    ensure!(len <= MAX_FRAME, "server frame of {len} bytes");
    let mask = if masked {
        let mut key = [0u8; 4];
        reader.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    let mut payload = vec![0u8; usize::try_from(len)?];
    reader.read_exact(&mut payload).await?;
    if let Some(key) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Ok(Some(match opcode {
        TEXT => Incoming::Text(String::from_utf8_lossy(&payload).into_owned()),
        BINARY => Incoming::Binary(payload),
        PING => Incoming::Ping(payload),
        PONG => Incoming::Pong(payload),
        CLOSE => Incoming::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
        other => Incoming::Other(other),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_laid_out_as_rfc_6455_draws_them() {
        // The RFC's own example (section 5.7): a masked "Hello".
        let hello = Frame { masked: true, ..Frame::new(TEXT, "Hello") }.to_bytes();
        assert_eq!(&hello[..2], &[0x81, 0x85]);
        assert_eq!(hello.len(), 2 + 4 + 5);
        let unmasked = Frame { masked: false, ..Frame::new(TEXT, "Hello") }.to_bytes();
        assert_eq!(unmasked, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        let long = Frame::new(BINARY, vec![0u8; 300]).to_bytes();
        assert_eq!(&long[..4], &[0x82, 0xFE, 0x01, 0x2C]);
        let odd = Frame { fin: false, rsv: 0b100, ..Frame::new(PING, "") }.to_bytes();
        assert_eq!(odd[0], 0x49);
    }
}

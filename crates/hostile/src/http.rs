//! A small HTTP/1.1 client on a plain TCP stream. It sends exactly the bytes
//! a case asks for (made-up methods, raw bytes in the request line,
//! half-sent headers, pipelined requests) and parses what comes back without
//! normalising anything, which is why it is not a client library: those
//! refuse to send most of what this suite sends.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        TcpSocket, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

tokio::task_local! {
    /// The local address connections of the current case are made from,
    /// when the runner gives each case an address of its own.
    static SOURCE: Option<IpAddr>;
}

/// Runs `future` with its connections made from `source`.
pub(crate) async fn from_source<F: Future>(source: Option<IpAddr>, future: F) -> F::Output {
    SOURCE.scope(source, future).await
}

/// The address the current case connects from, if it has one of its own.
pub(crate) fn source() -> Option<IpAddr> {
    SOURCE.try_with(|source| *source).ok().flatten()
}

/// How long one response may take before a case counts the server as stuck.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest response head this client reads.
const MAX_HEAD: usize = 64 * 1024;
/// The largest response body this client reads.
const MAX_BODY: usize = 16 << 20;

/// A request, written out byte for byte by [`Request::to_bytes`].
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: String,
    target: String,
    version: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
    host: bool,
}

impl Request {
    pub(crate) fn new(method: &str, target: impl Into<String>) -> Self {
        Self {
            method: method.to_owned(),
            target: target.into(),
            version: "HTTP/1.1",
            headers: Vec::new(),
            body: Vec::new(),
            keep_alive: false,
            host: true,
        }
    }

    pub(crate) fn get(target: impl Into<String>) -> Self {
        Self::new("GET", target)
    }

    pub(crate) fn post(target: impl Into<String>) -> Self {
        Self::new("POST", target)
    }

    pub(crate) fn with_target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }

    pub(crate) fn with_method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    pub(crate) fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        self.body = body.into();
        self
    }

    /// Leaves the connection open after the response (no `Connection:
    /// close`), for cases that send several requests on one connection.
    pub(crate) fn keep_alive(mut self) -> Self {
        self.keep_alive = true;
        self
    }

    pub(crate) fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self
    }

    /// Sends no `Host` header (HTTP/1.0 clients need none).
    pub(crate) fn without_host(mut self) -> Self {
        self.host = false;
        self
    }

    /// The `Authorization` header's value, if the request has one.
    pub(crate) fn authorization(&self) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The request as it goes on the wire. `Host`, `Content-Length` and
    /// `Connection: close` are added unless the case set them (or asked
    /// for their absence).
    pub(crate) fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        if self.host && !self.has("host") {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let sends_body = !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if sends_body && !self.has("content-length") && !self.has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if !self.keep_alive && !self.has("connection") && self.version == "HTTP/1.1" {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A status line and headers.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) version: String,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) head: Head,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn status(&self) -> u16 {
        self.head.status
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, with the content type JSON promises.
    pub(crate) fn json(&self) -> anyhow::Result<Value> {
        let content_type = self.header("content-type").unwrap_or_default();
        ensure!(
            content_type.starts_with("application/json"),
            "{} with content-type {content_type:?}, not JSON: {}",
            self.status(),
            clip(&self.text(), 120)
        );
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{}: body is not JSON: {}", self.status(), clip(&self.text(), 120)))
    }

    /// Checks the status and, for a success, that the body is JSON.
    pub(crate) fn expect_ok_json(&self) -> anyhow::Result<Value> {
        ensure!(self.status() == 200, "expected 200, got {}: {}", self.status(), clip(&self.text(), 160));
        self.json()
    }

    /// Checks the gateway's error contract: `status`, a JSON content type,
    /// and a body that is exactly `{"error":{"code":<code>,"message":...}}`.
    /// Returns the message.
    pub(crate) fn expect_error(&self, status: u16, code: &str) -> anyhow::Result<String> {
        ensure!(
            self.status() == status,
            "expected {status} {code}, got {}: {}",
            self.status(),
            clip(&self.text(), 160)
        );
        let body = self.json()?;
        let error = body.get("error").context("no `error` object in the body")?;
        ensure!(body.as_object().is_some_and(|o| o.len() == 1), "fields beside `error`: {body}");
        let got = error.get("code").and_then(Value::as_str).context("`error.code` is not a string")?;
        ensure!(got == code, "expected code {code}, got {got}: {body}");
        let message =
            error.get("message").and_then(Value::as_str).context("`error.message` is not a string")?;
        Ok(message.to_owned())
    }
}

/// One TCP connection to the gateway.
#[derive(Debug)]
pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    host: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let connect = async {
            match source() {
                Some(local) => {
                    let socket = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                    socket.bind(SocketAddr::new(local, 0))?;
                    socket.connect(addr).await
                }
                None => TcpStream::connect(addr).await,
            }
        };
        let stream = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .with_context(|| format!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        let (read, writer) = stream.into_split();
        Ok(Self { reader: BufReader::with_capacity(16 * 1024, read), writer, host: addr.to_string() })
    }

    /// Writes raw bytes.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await.context("write")?;
        self.writer.flush().await.context("flush")
    }

    /// Ends the client's half of the connection (a body cut short).
    pub(crate) async fn shutdown_write(&mut self) -> anyhow::Result<()> {
        self.writer.shutdown().await.context("shutdown")
    }

    /// Sends a request and reads its response.
    pub(crate) async fn request(&mut self, request: &Request) -> anyhow::Result<Response> {
        let bytes = request.to_bytes(&self.host);
        self.exchange(&bytes).await
    }

    /// Writes `bytes` while reading the response, so a server that answers
    /// before taking the whole body (413, 401) is heard even when it stops
    /// reading: the write is dropped once the response is in.
    pub(crate) async fn exchange(&mut self, bytes: &[u8]) -> anyhow::Result<Response> {
        let write = self.writer.write_all(bytes);
        let read = tokio::time::timeout(RESPONSE_TIMEOUT, read_response(&mut self.reader));
        tokio::pin!(write, read);
        let mut written = false;
        loop {
            tokio::select! {
                response = &mut read => {
                    return response.with_context(|| format!("no response within {} s", RESPONSE_TIMEOUT.as_secs()))?;
                }
                // A write error means the server closed early; its answer,
                // if any, is still read.
                _ = &mut write, if !written => written = true,
            }
        }
    }

    /// Reads one response (after the request was written some other way).
    pub(crate) async fn response(&mut self) -> anyhow::Result<Response> {
        tokio::time::timeout(RESPONSE_TIMEOUT, read_response(&mut self.reader))
            .await
            .with_context(|| format!("no response within {} s", RESPONSE_TIMEOUT.as_secs()))?
    }

    /// Reads a response's head only, within `limit` (streams, interim
    /// responses, answers that must come before the body is sent).
    pub(crate) async fn head_within(&mut self, limit: Duration) -> anyhow::Result<Head> {
        tokio::time::timeout(limit, read_head(&mut self.reader))
            .await
            .with_context(|| format!("no response head within {} ms", limit.as_millis()))?
    }

    /// The next chunk of a chunked body (`None` at its end).
    pub(crate) async fn chunk_within(&mut self, limit: Duration) -> anyhow::Result<Option<Vec<u8>>> {
        tokio::time::timeout(limit, read_chunk(&mut self.reader))
            .await
            .with_context(|| format!("no chunk within {} ms", limit.as_millis()))?
    }

    /// Waits until the server closes the connection, discarding whatever it
    /// sends; how long it took, or an error if it stayed open past `limit`.
    pub(crate) async fn closed_within(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut sink = vec![0u8; 8 * 1024];
        loop {
            let left = limit.checked_sub(started.elapsed()).unwrap_or_default();
            match tokio::time::timeout(left, self.reader.read(&mut sink)).await {
                Err(_) => bail!("still open after {} ms", limit.as_millis()),
                Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    pub(crate) fn into_parts(self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        (self.reader, self.writer)
    }
}

/// Opens a connection, sends one request, reads its response.
pub(crate) async fn send(addr: SocketAddr, request: &Request) -> anyhow::Result<Response> {
    Conn::open(addr).await?.request(request).await
}

pub(crate) async fn read_head(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Head> {
    let status_line = read_line(reader).await?.context("connection closed before a response")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    ensure!(version.starts_with("HTTP/"), "not an HTTP status line: {}", clip(&status_line, 80));
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("no status code in {}", clip(&status_line, 80)))?;
    let mut headers = Vec::new();
    let mut size = status_line.len();
    loop {
        let line = read_line(reader).await?.context("connection closed inside the response head")?;
        if line.is_empty() {
            break;
        }
        size += line.len();
        ensure!(size <= MAX_HEAD, "response head longer than {MAX_HEAD} bytes");
        let (name, value) = line.split_once(':').with_context(|| format!("malformed header {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Head { version, status, headers })
}

async fn read_response(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Response> {
    let head = read_head(reader).await?;
    let body = if (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
        Vec::new()
    } else if head.is_chunked() {
        let mut body = Vec::new();
        while let Some(chunk) = read_chunk(reader).await? {
            body.extend_from_slice(&chunk);
            ensure!(body.len() <= MAX_BODY, "response body over {MAX_BODY} bytes");
        }
        body
    } else if let Some(length) = head.header("content-length") {
        let length: usize = length.parse().with_context(|| format!("bad content-length {length:?}"))?;
        ensure!(length <= MAX_BODY, "response body of {length} bytes");
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await.context("response body cut short")?;
        body
    } else {
        // Delimited by the end of the connection (HTTP/1.0).
        let mut body = Vec::new();
        (&mut *reader).take(MAX_BODY as u64).read_to_end(&mut body).await.context("read body")?;
        body
    };
    Ok(Response { head, body })
}

async fn read_chunk(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Option<Vec<u8>>> {
    let line = read_line(reader).await?.context("connection closed inside a chunked body")?;
    let size = line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size, 16).with_context(|| format!("bad chunk size {size:?}"))?;
    if size == 0 {
        // Trailers, up to the empty line.
        while read_line(reader).await?.is_some_and(|l| !l.is_empty()) {}
        return Ok(None);
    }
    ensure!(size <= MAX_BODY, "chunk of {size} bytes");
    let mut chunk = vec![0u8; size + 2];
    reader.read_exact(&mut chunk).await.context("chunk cut short")?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

/// One line without its CRLF; `None` at the end of the stream.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Option<String>> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_HEAD as u64).read_until(b'\n', &mut line).await.context("read")?;
    if read == 0 {
        return Ok(None);
    }
    ensure!(line.ends_with(b"\n"), "line longer than {MAX_HEAD} bytes or cut short");
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// At most `max` characters of `text`, on one line.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}...", one_line.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_host_length_and_close_unless_told_otherwise() {
        let plain = Request::post("/v1/events").body("application/json", "{}").to_bytes("h:1");
        assert_eq!(
            String::from_utf8(plain).expect("ascii"),
            "POST /v1/events HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        let bare = Request::get("/healthz").version("HTTP/1.0").without_host().to_bytes("h:1");
        assert_eq!(String::from_utf8(bare).expect("ascii"), "GET /healthz HTTP/1.0\r\n\r\n");
    }

    #[tokio::test]
    async fn chunked_and_length_delimited_bodies_are_read_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 47\r\n\r\n{\"error\":{\"code\":\"not_found\",\"message\":\"gone\"}}",
                )
                .await
                .expect("write");
        });
        let mut conn = Conn::open(addr).await.expect("connect");
        let first = conn.response().await.expect("first");
        assert_eq!((first.status(), first.body.as_slice()), (200, &b"abcde"[..]));
        let second = conn.response().await.expect("second");
        assert_eq!(second.expect_error(404, "not_found").expect("error shape"), "gone");
    }
}

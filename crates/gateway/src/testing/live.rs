//! Test support for the live feed: event builders, a publisher, and small
//! WebSocket and SSE clients. They panic on anything unexpected: they are
//! for tests.

#![allow(clippy::missing_panics_doc, missing_debug_implementations)]

use std::{net::SocketAddr, time::Duration};

use crate::config::TEST_PUBLISH_TOKEN;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub const WAIT: Duration = Duration::from_secs(5);

pub fn kickoff(match_id: &str) -> Value {
    json!({
        "match_id": match_id, "seq": 1, "kind": "kickoff", "minute": 0,
        "home": {"id": 1, "name": "Rovers"}, "away": {"id": 2, "name": "United"}
    })
}

pub fn pass(match_id: &str, seq: u64) -> Value {
    json!({
        "match_id": match_id, "seq": seq, "kind": "pass", "minute": 3, "team": 1, "player": 7,
        "start": {"x": 40.0, "y": 30.0}, "end": {"x": 60.5, "y": 20.0}, "success": true
    })
}

pub fn goal(match_id: &str, seq: u64, team: u32) -> Value {
    json!({"match_id": match_id, "seq": seq, "kind": "goal", "minute": 12, "team": team, "player": 9})
}

/// Posts `body` to `POST /v1/events` with the test token.
pub async fn publish(client: &reqwest::Client, addr: SocketAddr, body: &Value) -> reqwest::Response {
    client
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

/// Publishes and insists on success.
pub async fn publish_ok(client: &reqwest::Client, addr: SocketAddr, body: &Value) -> Value {
    let response = publish(client, addr, body).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "publish failed: {status} {body}");
    body
}

/// Publishes as a well-behaved publisher does while a dependency is down:
/// on `503` it waits and sends the same event again (appends are
/// idempotent), for up to `within`. Returns how many `503`s it met; panics
/// on any other failure, on a `503` without `Retry-After`, or past `within`.
pub async fn publish_retrying(
    client: &reqwest::Client,
    addr: SocketAddr,
    body: &Value,
    within: Duration,
) -> u32 {
    let deadline = tokio::time::Instant::now() + within;
    let mut unavailable = 0;
    loop {
        let response = publish(client, addr, body).await;
        match response.status() {
            reqwest::StatusCode::OK => return unavailable,
            reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key("retry-after"), "503 without Retry-After");
                unavailable += 1;
                assert!(tokio::time::Instant::now() < deadline, "still 503 after {within:?}: {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
}

/// A kickoff followed by passes up to `last_seq`.
pub async fn start_match(client: &reqwest::Client, addr: SocketAddr, match_id: &str, last_seq: u64) {
    publish_ok(client, addr, &kickoff(match_id)).await;
    for seq in 2..=last_seq {
        publish_ok(client, addr, &pass(match_id, seq)).await;
    }
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live")).await.expect("websocket");
        Self { socket }
    }

    /// A client whose connection comes from `source`, a loopback address
    /// other than 127.0.0.1 (Linux routes all of 127/8 to lo), to be
    /// another client to the gateway's per-address limits.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Self {
        Self::try_connect_from(addr, source).await.expect("websocket")
    }

    /// As [`WsClient::connect_from`], with the upgrade's refusal (an HTTP
    /// answer) as the error.
    pub async fn try_connect_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(source, 0)).expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect");
        let (socket, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/v1/live"), MaybeTlsStream::Plain(stream))
                .await?;
        Ok(Self { socket })
    }

    /// A client whose socket buffers only a few KiB, so a server writing to
    /// it while it does not read fills it fast.
    pub async fn connect_with_small_receive_buffer(addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4 * 1024).expect("buffer size");
        let stream = socket.connect(addr).await.expect("connect");
        let (socket, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/v1/live"), MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket");
        Self { socket }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.expect("send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.socket.send(Message::text(text.to_owned())).await.expect("send");
    }

    /// The next JSON message; pings are answered by the library.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a message in time")
                .expect("socket open")
                .expect("valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("json message"),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message if one arrives within a short while.
    pub async fn recv_or_none(&mut self) -> Option<Value> {
        match tokio::time::timeout(Duration::from_millis(300), self.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => Some(serde_json::from_str(&text).expect("json")),
            _ => None,
        }
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, match_id: &str, since: Option<u64>) -> Value {
        let mut command = json!({"op": "subscribe", "match": match_id});
        if let Some(since) = since {
            command["since"] = json!(since);
        }
        self.send(command).await;
        self.recv().await
    }

    /// Reads until the server closes, returning the close code (if any).
    pub async fn until_closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.socket.next()).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Reads SSE events (`event`, `id`, parsed `data`) from a streaming response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl SseClient {
    pub async fn connect(client: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("sse response");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        Self { response, buffer: String::new() }
    }

    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { event: "message".into(), id: None, data: Value::Null };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                event.data = serde_json::from_str(&data).expect("json data");
                return event;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("sse data in time")
                .expect("stream ok")
                .expect("stream open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

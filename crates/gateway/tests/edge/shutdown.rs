//! Shutdown as load balancers and orchestrators expect it, and the limits a
//! client meets before any handler runs: header-read timeout, idle
//! keep-alive connections, the cap on open HTTP connections.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::helpers::{
    live::{WsClient, start_match},
    spawn_app_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_readiness_fails_at_once_and_every_websocket_gets_1001() {
    let mut app = spawn_app_with(
        |_| {},
        |gateway, _| {
            gateway.edge.drain_delay_secs = 1;
            gateway.edge.shutdown_grace_secs = 10;
        },
    )
    .await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "closing", 1).await;
    let mut subscribers = Vec::new();
    for _ in 0..200 {
        let mut ws = WsClient::connect(addr).await;
        ws.subscribe("closing", None).await;
        subscribers.push(ws);
    }
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    let signalled = Instant::now();
    app.gateway.signal_stop();
    // Readiness fails from the first moment, while requests are still
    // served for the drain delay.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "draining");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "still serving while draining");

    let live = app.gateway.live.clone();
    let closes = tokio::spawn(async move {
        join_all(subscribers.iter_mut().map(|ws| ws.until_closed(Duration::from_secs(10)))).await
    });
    app.gateway.wait().await.expect("the gateway stops cleanly");
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(1), "the drain delay was skipped: {took:?}");
    // The gateway returned only once every WebSocket had been closed: a
    // process exiting here would have sent every close frame.
    assert_eq!(live.open_connections(), 0, "live connections still open when the gateway returned");
    let codes = closes.await.expect("clients");
    let going_away = codes.iter().filter(|code| **code == Some(1001)).count();
    assert_eq!(going_away, codes.len(), "close codes: {codes:?}");
}

/// Reads until the server closes the connection; fails the test if it is
/// still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!("the connection is still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn half_sent_headers_and_idle_keep_alive_connections_are_closed() {
    let app = spawn_app_with(|_| {}, |gateway, _| gateway.edge.header_read_timeout_ms = 300).await;
    let addr = app.gateway.addr;

    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: courtside\r\n").await.expect("write");
    closed_within(&mut half, Duration::from_secs(5)).await;

    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: courtside\r\n\r\n").await.expect("write");
    let mut response = [0u8; 1024];
    let read = idle.read(&mut response).await.expect("response");
    assert!(
        response[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response[..read])
    );
    closed_within(&mut idle, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_only_the_start_of_the_http2_preface_is_closed() {
    let app = spawn_app_with(|_| {}, |gateway, _| gateway.edge.header_read_timeout_ms = 300).await;
    let addr = app.gateway.addr;

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    closed_within(&mut silent, Duration::from_secs(5)).await;

    let mut preface = TcpStream::connect(addr).await.expect("connect");
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    closed_within(&mut preface, Duration::from_secs(5)).await;

    // Both kinds of client still get served when they do speak.
    let mut http2 = TcpStream::connect(addr).await.expect("connect");
    http2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("write");
    let mut settings = [0u8; 9];
    http2.read_exact(&mut settings).await.expect("the server's SETTINGS frame");
    assert_eq!(settings[3], 0x04, "a SETTINGS frame: {settings:?}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_served_again_below_it() {
    let app = spawn_app_with(|_| {}, |gateway, _| gateway.edge.max_http_connections = 2).await;
    let addr = app.gateway.addr;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: courtside\r\n\r\n").await.expect("write");
        let mut response = [0u8; 1024];
        assert!(stream.read(&mut response).await.expect("response") > 0);
        held.push(stream);
    }
    let mut refused = TcpStream::connect(addr).await.expect("the kernel accepts");
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: courtside\r\n\r\n").await;
    closed_within(&mut refused, Duration::from_secs(2)).await;

    drop(held.pop());
    let served = super::helpers::eventually_async(Duration::from_secs(5), || async {
        reqwest::get(format!("http://{addr}/healthz")).await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(served, "a slot freed by a closed connection is not reused");
}

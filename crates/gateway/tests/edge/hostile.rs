//! What an anonymous, hostile client can make the gateway hold: each case
//! once grew its memory without bound or buffered data before the token
//! check. Each test fails on the old behaviour.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::helpers::{live::WsClient, spawn_app};

#[tokio::test]
async fn made_up_methods_share_one_label_and_one_monitor() {
    let app = spawn_app().await;
    for i in 0..300 {
        let method = Method::from_bytes(format!("XYZ{i:03}").as_bytes()).expect("a token");
        let response = app.client.request(method, app.url("/healthz")).send().await.expect("answer");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let report: Value = app.get("/v1/debug/runtime-fit").await.json().await.expect("json");
    let healthz: Vec<&Value> =
        report["routes"].as_array().expect("routes").iter().filter(|r| r["path"] == "/healthz").collect();
    assert_eq!(healthz.len(), 1, "one monitor for every unknown method: {healthz:?}");
    assert_eq!(healthz[0]["method"], "_OTHER");
    assert_eq!(healthz[0]["requests"], 300);
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(!metrics.contains("XYZ"), "a client's method became a label");
}

#[tokio::test]
async fn subscribes_to_unknown_matches_keep_nothing_and_end_the_connection() {
    let app = spawn_app().await;
    let hub = std::sync::Arc::clone(&app.gateway.live.subscriptions.hub);
    let mut ws = WsClient::connect(app.gateway.addr).await;
    for i in 0..63 {
        let reply = ws.subscribe(&format!("nosuch{i}"), None).await;
        assert_eq!(reply["code"], "unknown_match", "{reply}");
    }
    assert_eq!(hub.channel_count(), 0, "a failed subscribe left a channel behind");
    ws.send(json!({"op": "subscribe", "match": "nosuch63"})).await;
    assert_eq!(ws.until_closed(Duration::from_secs(5)).await, Some(1008));

    for i in 0..50 {
        let response = app.get(&format!("/v1/matches/missing{i}/live")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(hub.channel_count(), 0, "an SSE 404 left a channel behind");
}

#[tokio::test]
async fn an_anonymous_publish_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.gateway.addr).await.expect("connect");
    // Announce a near-limit body, send a sliver of it, and wait: the answer
    // must come without the rest.
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: courtside\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[{\"match_id\":",
        )
        .await
        .expect("write");
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut response))
        .await
        .expect("answered before the body was sent")
        .expect("read");
    let head = String::from_utf8_lossy(&response[..read]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

#[tokio::test]
async fn every_refusal_is_the_json_error_shape() {
    let app = spawn_app().await;
    super::helpers::live::start_match(&app.client, app.gateway.addr, "shape", 1).await;
    for (method, path, status) in [
        ("GET", "/v1/matches/shape/impact?top=lots", StatusCode::BAD_REQUEST),
        ("GET", "/v1/matches/shape/win-probability?samples=-1", StatusCode::BAD_REQUEST),
        ("GET", "/v1/matches/shape/live?since=soon", StatusCode::BAD_REQUEST),
        ("GET", "/v1/matches/%FF%FE", StatusCode::BAD_REQUEST),
        ("GET", "/v1/players/%C3%28/impact", StatusCode::BAD_REQUEST),
        ("DELETE", "/v1/matches", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/no/such/route", StatusCode::NOT_FOUND),
    ] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app.client.request(method, app.url(path)).send().await.expect("answer");
        assert_eq!(response.status(), status, "{path}");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(content_type.as_deref(), Some("application/json"), "{path}");
        let body: Value = response.json().await.expect("json body");
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn events_are_objects_only_as_the_schema_says() {
    use super::helpers::live::{kickoff, publish, publish_ok};
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    publish_ok(&app.client, addr, &kickoff("shapes")).await;
    let positional_point = json!({
        "match_id": "shapes", "seq": 2, "kind": "pass", "minute": 3, "team": 1, "player": 7,
        "start": [40.0, 30.0], "end": {"x": 60.5, "y": 20.0}, "success": true
    });
    let positional_event = json!([[
        "shapes", 2, 3, null, "pass", 1, 7, {"x": 40.0, "y": 30.0}, {"x": 60.5, "y": 20.0},
        true, null, null, null, null, null, null, null
    ]]);
    for body in [positional_point, positional_event] {
        let response = publish(&app.client, addr, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let (code, message) = super::helpers::error_of(response).await;
        assert_eq!(code, "invalid_event");
        assert!(message.contains("object"), "{message}");
    }
    let state: Value = app.get("/v1/matches/shapes").await.json().await.expect("json");
    assert_eq!(state["seq"], 1, "nothing applied");
}

#[tokio::test]
async fn every_state_the_feed_accepts_has_a_win_probability() {
    use super::helpers::live::{goal, kickoff, publish, publish_ok};
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    publish_ok(&app.client, addr, &kickoff("rout")).await;
    let mut seq = 2;
    for _ in 0..50 {
        publish_ok(&app.client, addr, &goal("rout", seq, 1)).await;
        seq += 1;
    }
    let refused = publish(&app.client, addr, &goal("rout", seq, 1)).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(super::helpers::error_of(refused).await.0, "too_many_goals");
    let late = json!({"match_id": "rout", "seq": seq, "kind": "foul", "minute": 150, "team": 2, "player": 4});
    publish_ok(&app.client, addr, &late).await;

    let response = app.get("/v1/matches/rout/win-probability").await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
}

#[tokio::test]
async fn bench_routes_can_be_put_behind_the_read_token_or_turned_off() {
    use gateway::config::BenchRoutes;
    const READER: &str = "reader-token-0123456789";
    let guarded = super::helpers::spawn_app_with(
        |_| {},
        |gateway, _| {
            gateway.bench_routes = BenchRoutes::ReadToken;
            gateway.edge.read_tokens = READER.into();
        },
    )
    .await;
    assert_eq!(guarded.get("/v1/bench/compute?n=10").await.status(), StatusCode::UNAUTHORIZED);
    let allowed = guarded.get(&format!("/v1/bench/compute?n=10&token={READER}")).await;
    assert_eq!(allowed.status(), StatusCode::OK);

    let off =
        super::helpers::spawn_app_with(|_| {}, |gateway, _| gateway.bench_routes = BenchRoutes::Off).await;
    assert_eq!(off.get("/v1/bench/slow").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_websocket_message_over_the_limit_is_closed_with_1009() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(app.gateway.addr).await;
    let huge = format!("{{\"op\":\"subscribe\",\"match\":\"{}\"}}", "x".repeat(8 * 1024));
    ws.send_raw(&huge).await;
    assert_eq!(ws.until_closed(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn a_percent_encoded_read_token_opens_guarded_bench_routes() {
    use gateway::config::BenchRoutes;
    let app = super::helpers::spawn_app_with(
        |_| {},
        |gateway, _| {
            gateway.bench_routes = BenchRoutes::ReadToken;
            gateway.edge.read_tokens = "reader+token/0123456789".into();
        },
    )
    .await;
    let allowed = app.get("/v1/bench/slow?token=reader%2Btoken%2F0123456789").await;
    assert_eq!(allowed.status(), StatusCode::OK);
}

/// Opens `/v1/live` by hand, so the test can write frames no WebSocket
/// library would send.
async fn raw_websocket(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"GET /v1/live HTTP/1.1\r\nHost: courtside\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("handshake answer"));
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// The code of the server's close frame, skipping anything before it;
/// `None` if the connection ends without one.
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut head = [0u8; 2];
            stream.read_exact(&mut head).await.ok()?;
            let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
            stream.read_exact(&mut payload).await.ok()?;
            if head[0] & 0x0F == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    })
    .await
    .expect("an answer within 5 s")
}

#[tokio::test]
async fn a_client_close_is_answered_and_text_that_is_not_utf8_closes_with_1007() {
    let app = spawn_app().await;
    // Masked with an all-zero key, so the payload reads as sent.
    let mut closing = raw_websocket(app.gateway.addr).await;
    closing.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).await.expect("close 1000");
    assert_eq!(close_code(&mut closing).await, Some(1000), "the close was not answered");

    let mut garbled = raw_websocket(app.gateway.addr).await;
    garbled.write_all(&[0x81, 0x84, 0, 0, 0, 0, b'{', 0xFF, 0xFE, b'}']).await.expect("text frame");
    assert_eq!(close_code(&mut garbled).await, Some(1007));
}

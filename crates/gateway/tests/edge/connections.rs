//! Who a connection belongs to, and how much one client may hold: the PROXY
//! protocol from a trusted balancer (and only from one), the cap on live
//! connections per client address, and the close of a WebSocket that
//! subscribes to nothing.
//!
//! Loopback gives every test client 127.0.0.1; a "balancer" or a second
//! client binds another 127/8 source address (Linux routes all of it to lo).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use gateway::config::TEST_PUBLISH_TOKEN;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite;

use super::helpers::{
    error_of, eventually_async,
    live::{WsClient, kickoff, pass, publish_ok},
    spawn_app_with, spawn_limited,
};

const BALANCER: [u8; 4] = [127, 0, 0, 2];
const OTHER_CLIENT: [u8; 4] = [127, 0, 0, 3];

/// Sends `preface` then one HTTP/1.1 request from `source`, as a balancer
/// relays a client's, and returns the status and JSON body of the answer.
async fn relay(addr: SocketAddr, source: [u8; 4], preface: &[u8], request: &str) -> (u16, Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::from(source), 0)).expect("bind the source address");
    let mut tcp = socket.connect(addr).await.expect("connect");
    tcp.write_all(preface).await.expect("preface");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A publish of `match_id`'s kickoff, closing the connection after it.
fn publish_request(addr: SocketAddr, match_id: &str) -> String {
    let body = kickoff(match_id).to_string();
    format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TEST_PUBLISH_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n").into_bytes()
}

fn v2(client: &str) -> Vec<u8> {
    let source: SocketAddr = format!("{client}:40000").parse().expect("address");
    let destination: SocketAddr = "127.0.0.1:8080".parse().expect("address");
    ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (source, destination))
        .build()
        .expect("a v2 header")
}

#[tokio::test]
async fn a_trusted_balancers_proxy_header_names_the_client_the_rate_limits_count() {
    let app = spawn_limited(|config| {
        config.edge.rate_limit_ingest = "1/h".parse().expect("rate");
        config.edge.trusted_proxies = "127.0.0.2/32".parse().expect("valid");
    })
    .await;
    let addr = app.gateway.addr;
    let publish = |id: &str| publish_request(addr, id);

    // Two clients behind the balancer, each with its own bucket, over both
    // header versions.
    assert_eq!(relay(addr, BALANCER, &v1("203.0.113.1"), &publish("proxy-a")).await.0, 200);
    assert_eq!(relay(addr, BALANCER, &v2("203.0.113.2"), &publish("proxy-b")).await.0, 200);
    let (status, body) = relay(addr, BALANCER, &v2("203.0.113.1"), &publish("proxy-c")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    // The balancer's own requests (its health checks) count as the balancer.
    assert_eq!(relay(addr, BALANCER, b"", &publish("proxy-d")).await.0, 200);

    // Anyone else's header is refused, saying why; its bucket is untouched.
    for header in [v1("203.0.113.9"), v2("203.0.113.9")] {
        let (status, body) = relay(addr, OTHER_CLIENT, &header, &publish("proxy-e")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("proxy_header_not_trusted")),
            "{body}"
        );
    }
    assert_eq!(relay(addr, OTHER_CLIENT, b"", &publish("proxy-e")).await.0, 200);

    // A trusted balancer's garbage is refused too.
    let (status, body) = relay(addr, BALANCER, b"PROXY TCP4 nonsense\r\n", &publish("proxy-f")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_proxy_header")), "{body}");

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    for outcome in ["accepted", "refused_untrusted", "refused_invalid"] {
        assert!(
            metrics
                .lines()
                .any(|line| line
                    .starts_with(&format!("courtside_proxy_headers_total{{outcome=\"{outcome}\"}}"))),
            "no {outcome} series"
        );
    }
}

/// A WebSocket upgrade from `source`: the connection, or the refusal's
/// status, `Retry-After` and JSON body.
async fn ws_from(addr: SocketAddr, source: [u8; 4]) -> Result<WsClient, (StatusCode, Option<String>, Value)> {
    match WsClient::try_connect_from(addr, IpAddr::from(source)).await {
        Ok(client) => Ok(client),
        Err(tungstenite::Error::Http(response)) => {
            let retry_after =
                response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap_or(Value::Null);
            Err((response.status(), retry_after, body))
        }
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

#[tokio::test]
async fn one_address_holds_its_share_of_live_connections_and_no_more() {
    let app = spawn_limited(|config| config.edge.max_connections_per_address = 4).await;
    let addr = app.gateway.addr;
    publish_ok(&app.client, addr, &kickoff("capped")).await;

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(ws_from(addr, [127, 0, 0, 1]).await.expect("within the share"));
    }

    // The fifth, over either transport, is refused before anything is read.
    let (status, retry_after, body) = ws_from(addr, [127, 0, 0, 1]).await.err().expect("over the share");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "too_many_connections_from_address", "{body}");
    assert!(retry_after.is_some(), "a Retry-After");
    let sse = app.get("/v1/matches/capped/live").await;
    assert_eq!(sse.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_of(sse).await.0, "too_many_connections_from_address");

    // Another address is not affected.
    let mut other = ws_from(addr, OTHER_CLIENT).await.expect("another address has its own share");
    assert_eq!(other.subscribe("capped", None).await["type"], "subscribed");

    // A closed connection gives its slot back, and the held ones still serve.
    drop(held.pop());
    let reopened =
        eventually_async(Duration::from_secs(5), || async { ws_from(addr, [127, 0, 0, 1]).await.is_ok() })
            .await;
    assert!(reopened, "the slot of a closed connection was not given back");
    assert_eq!(held[0].subscribe("capped", None).await["type"], "subscribed");

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("courtside_live_connections_refused_total{reason=\"address_cap\"}"),
        "the refusals are counted"
    );
}

#[tokio::test]
async fn a_websocket_that_subscribes_to_nothing_is_closed_after_the_grace() {
    let app = spawn_app_with(|_| {}, |config, _| config.subscribe_grace_secs = 1).await;
    let addr = app.gateway.addr;
    publish_ok(&app.client, addr, &kickoff("grace")).await;

    let mut idle = WsClient::connect(addr).await;
    let mut subscribed = WsClient::connect(addr).await;
    let mut left = WsClient::connect(addr).await;
    assert_eq!(subscribed.subscribe("grace", None).await["type"], "subscribed");
    assert_eq!(left.subscribe("grace", None).await["type"], "subscribed");
    left.send(json!({"op": "unsubscribe", "match": "grace"})).await;
    assert_eq!(left.recv().await["type"], "unsubscribed");

    assert_eq!(idle.until_closed(Duration::from_secs(10)).await, Some(livefeed::ws::CLOSE_NO_SUBSCRIPTION));
    // The grace starts again when the last subscription goes.
    assert_eq!(left.until_closed(Duration::from_secs(10)).await, Some(livefeed::ws::CLOSE_NO_SUBSCRIPTION));

    // A subscriber stays, past several graces, and still gets its updates.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish_ok(&app.client, addr, &pass("grace", 2)).await;
    assert_eq!(subscribed.recv().await["seq"], 2);

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let closed: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("courtside_live_unsubscribed_closes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the closes are counted");
    assert!(closed >= 2.0, "{closed}");
}

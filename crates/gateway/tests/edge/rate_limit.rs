//! Rate limits at the edge, black-box: each lane (ingest, subscribe,
//! compute) answers 429 with `Retry-After` and the JSON error once a
//! client's burst is spent, other clients are unaffected, a spent bucket
//! refills, and `X-Forwarded-For` counts only from a trusted proxy.
//!
//! Loopback gives every test client 127.0.0.1, so a second client binds
//! 127.0.0.2 as its source address (Linux routes all of 127/8 to lo).
//! Each test turns the limits on with rates of its own: the other tests'
//! gateways run with them off (`GatewayConfig::for_tests`). Rates are per
//! hour where a test must not see a bucket refill however slowly it runs,
//! and per second where it waits for one.

use std::{net::IpAddr, ops::RangeInclusive, time::Duration};

use super::helpers::{
    TestApp, error_of,
    live::{SseClient, WsClient, kickoff, publish_ok},
    spawn_limited,
};
use edge::limits::Rate;
use gateway::config::TEST_PUBLISH_TOKEN;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const OTHER_ADDRESS: [u8; 4] = [127, 0, 0, 2];
const SECOND_TOKEN: &str = "second-publisher-token-abcdefgh";

fn rate(text: &str) -> Rate {
    text.parse().expect("a valid rate")
}

/// An HTTP client whose connections come from `address`.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from(address)).build().expect("client")
}

/// Checks a 429: `Retry-After` in `retry_after` seconds and the JSON error
/// with code `rate_limited`. Returns the message.
async fn assert_rate_limited(response: reqwest::Response, retry_after: RangeInclusive<u64>) -> String {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = response.headers().get("retry-after").expect("a Retry-After header");
    let seconds: u64 = header.to_str().expect("ascii").parse().expect("whole seconds");
    assert!(retry_after.contains(&seconds), "Retry-After {seconds}, expected {retry_after:?}");
    let (code, message) = error_of(response).await;
    assert_eq!(code, "rate_limited");
    message
}

async fn publish_as(client: &reqwest::Client, app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    client.post(app.url("/v1/events")).bearer_auth(token).json(body).send().await.expect("gateway answers")
}

#[tokio::test]
async fn ingest_is_limited_per_address_before_the_token_is_checked() {
    let app = spawn_limited(|config| config.edge.rate_limit_ingest = rate("3/h")).await;

    // Wrong tokens spend the address's bucket too: the rate is taken before
    // the token is checked, so guessing is limited as well.
    for _ in 0..3 {
        let response = publish_as(&app.client, &app, "not-the-token-0123456789", &kickoff("ingest")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = publish_as(&app.client, &app, TEST_PUBLISH_TOKEN, &kickoff("ingest")).await;
    // Three an hour: one comes back every 20 minutes.
    let message = assert_rate_limited(refused, 1..=1200).await;
    assert!(message.contains("from this address"), "{message}");
    let bulk = app
        .client
        .post(app.url("/v1/events/bulk"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(kickoff("ingest").to_string())
        .send()
        .await
        .expect("gateway answers");
    assert_rate_limited(bulk, 1..=1200).await;
    // Nothing was applied.
    assert_eq!(app.get("/v1/matches/ingest").await.status(), StatusCode::NOT_FOUND);

    // Another address has its own bucket; reads are not limited.
    publish_ok(&client_from(OTHER_ADDRESS), app.gateway.addr, &kickoff("ingest")).await;
    assert_eq!(app.get("/v1/matches/ingest").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_publish_token_is_limited_from_whatever_address_it_comes() {
    let app = spawn_limited(|config| {
        config.edge.publish_tokens = format!("{TEST_PUBLISH_TOKEN},{SECOND_TOKEN}").into();
        config.edge.rate_limit_per_token = rate("2/h");
    })
    .await;
    let elsewhere = client_from(OTHER_ADDRESS);

    publish_ok(&app.client, app.gateway.addr, &kickoff("first")).await;
    publish_ok(&elsewhere, app.gateway.addr, &kickoff("second")).await;
    let refused = publish_as(&elsewhere, &app, TEST_PUBLISH_TOKEN, &kickoff("third")).await;
    let message = assert_rate_limited(refused, 1..=1800).await;
    assert!(message.contains("publish token"), "{message}");
    // A job start takes a publish token too, and spends from the same one.
    let job = app
        .client
        .post(app.url("/v1/analytics/jobs"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .send()
        .await
        .expect("gateway answers");
    assert_rate_limited(job, 1..=1800).await;

    // The other token has its own bucket.
    let response = publish_as(&app.client, &app, SECOND_TOKEN, &kickoff("third")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn subscribes_are_limited_per_address_over_websocket_and_sse() {
    let app = spawn_limited(|config| config.edge.rate_limit_subscribe = rate("3/h")).await;
    let addr = app.gateway.addr;
    for id in ["one", "two", "three"] {
        publish_ok(&app.client, addr, &kickoff(id)).await;
    }

    // The upgrade spends one, each subscribe one more.
    let mut ws = WsClient::connect(addr).await;
    assert_eq!(ws.subscribe("one", None).await["type"], "subscribed");
    assert_eq!(ws.subscribe("two", None).await["type"], "subscribed");
    let refused = ws.subscribe("three", None).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["match"], "three", "{refused}");
    let retry_after = refused["retry_after"].as_u64().expect("retry_after in seconds");
    assert!((1..=1200).contains(&retry_after), "{refused}");
    // The connection stays open and keeps its subscriptions.
    ws.send(json!({"op": "unsubscribe", "match": "one"})).await;
    assert_eq!(ws.recv().await["type"], "unsubscribed");

    // A new connection from the same address is refused at the upgrade.
    match tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"));
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("a json body");
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        other => panic!("expected a 429 at the upgrade, got {:?}", other.map(|(_, response)| response)),
    }
    // So is the SSE feed.
    assert_rate_limited(app.get("/v1/matches/three/live").await, 1..=1200).await;

    // Another address subscribes as it likes, over both.
    let mut sse =
        SseClient::connect(&client_from(OTHER_ADDRESS), &app.url("/v1/matches/three/live"), None).await;
    assert_eq!(sse.next().await.event, "subscribed");
    let mut other = WsClient::connect_from(addr, IpAddr::from(OTHER_ADDRESS)).await;
    assert_eq!(other.subscribe("three", None).await["type"], "subscribed");
}

#[tokio::test]
async fn compute_routes_share_one_lane() {
    let app = spawn_limited(|config| config.edge.rate_limit_compute = rate("2/h")).await;
    publish_ok(&app.client, app.gateway.addr, &kickoff("busy")).await;

    assert_eq!(app.get("/v1/bench/compute?n=1000").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/matches/busy/win-probability").await.status(), StatusCode::OK);
    for path in [
        "/v1/bench/compute?n=1000",
        "/v1/matches/busy/win-probability",
        "/v1/matches/busy/impact",
        "/v1/players/9/impact",
        "/v1/analytics/jobs/some-job",
    ] {
        assert_rate_limited(app.get(path).await, 1..=1800).await;
    }
    // Other lanes and unlimited routes are untouched.
    assert_eq!(app.get("/v1/matches/busy").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/bench/slow").await.status(), StatusCode::OK);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    // Another address has its own bucket.
    let response = client_from(OTHER_ADDRESS).get(app.url("/v1/bench/compute?n=1000")).send().await;
    assert_eq!(response.expect("answer").status(), StatusCode::OK);

    let metrics = app.get("/metrics").await.text().await.expect("text");
    let series = metrics
        .lines()
        .find(|line| {
            line.starts_with("courtside_http_rate_limited_total{")
                && line.contains(r#"route="/v1/bench/compute""#)
                && line.contains(r#"lane="compute""#)
        })
        .unwrap_or_else(|| panic!("no rate-limit series for the compute route in:\n{metrics}"));
    let count: f64 = series.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a value");
    assert!(count >= 1.0, "{series}");
}

#[tokio::test]
async fn a_spent_bucket_refills_after_its_period() {
    // Two at once, then one every 500 ms.
    let app = spawn_limited(|config| config.edge.rate_limit_compute = rate("2/s")).await;
    let compute = || app.get("/v1/bench/compute?n=1000");

    // Spend the burst (a slow machine may see a refill meanwhile, hence
    // until refused rather than exactly two).
    let mut accepted = 0;
    let refused = loop {
        let response = compute().await;
        if response.status() != StatusCode::OK {
            break response;
        }
        accepted += 1;
        assert!(accepted <= 10, "never refused");
    };
    assert!(accepted >= 2, "refused within the burst");
    assert_rate_limited(refused, 1..=1).await;

    // Within the period a request is accepted again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = compute().await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(tokio::time::Instant::now() < deadline, "still refused after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let forwarded = |app: &TestApp, from: &'static str| {
        app.client
            .post(app.url("/v1/events"))
            .bearer_auth(TEST_PUBLISH_TOKEN)
            .header("x-forwarded-for", from)
            .json(&kickoff("forwarded"))
            .send()
    };

    // Without trusted proxies the header is the client's own claim: both
    // requests count against the connection's address.
    let app = spawn_limited(|config| config.edge.rate_limit_ingest = rate("1/h")).await;
    assert_eq!(forwarded(&app, "203.0.113.1").await.expect("answer").status(), StatusCode::OK);
    assert_rate_limited(forwarded(&app, "203.0.113.2").await.expect("answer"), 1..=3600).await;

    // Behind a trusted proxy (here, loopback itself), each forwarded client
    // has its own bucket.
    let app = spawn_limited(|config| {
        config.edge.rate_limit_ingest = rate("1/h");
        config.edge.trusted_proxies = "127.0.0.0/8".parse().expect("valid");
    })
    .await;
    assert_eq!(forwarded(&app, "203.0.113.1").await.expect("answer").status(), StatusCode::OK);
    // A replay of the same event: acknowledged, not refused.
    assert_eq!(forwarded(&app, "203.0.113.2").await.expect("answer").status(), StatusCode::OK);
    assert_rate_limited(forwarded(&app, "203.0.113.1").await.expect("answer"), 1..=3600).await;
    // What a client wrote to the left of the address the proxy saw is not
    // believed.
    assert_rate_limited(forwarded(&app, "198.51.100.7, 203.0.113.2").await.expect("answer"), 1..=3600).await;
}

#[tokio::test]
async fn the_openapi_document_gives_every_limited_route_its_429() {
    let app = spawn_limited(|_| {}).await;
    let document: Value = app.get("/openapi.json").await.json().await.expect("json");
    for (method, path) in [
        ("post", "/v1/events"),
        ("post", "/v1/events/bulk"),
        ("get", "/v1/live"),
        ("get", "/v1/matches/{id}/live"),
        ("get", "/v1/matches/{id}/impact"),
        ("get", "/v1/players/{id}/impact"),
        ("get", "/v1/matches/{id}/win-probability"),
        ("post", "/v1/analytics/jobs"),
        ("get", "/v1/analytics/jobs/{id}"),
        ("get", "/v1/bench/compute"),
    ] {
        let response = &document["paths"][path][method]["responses"]["429"];
        assert!(response.is_object(), "{method} {path} documents no 429");
        assert!(response["headers"]["retry-after"].is_object(), "{method} {path}: no Retry-After");
    }
}

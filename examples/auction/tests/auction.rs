//! The auction end to end over HTTP, served through the edge as its binary
//! serves it: publish, subscribe, resume, and the rules of bidding; in
//! process, and on Redis across two replicas.

use std::{sync::Arc, time::Duration};

use edge::config::TEST_PUBLISH_TOKEN;
use futures::StreamExt as _;
use serde_json::{Value, json};
use store::{MemoryStore, RedisStore, StateStore};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Serves the auction through the edge on a free port until `stop`;
/// returns its base URL.
async fn serve(store: Arc<dyn StateStore>, stop: &CancellationToken) -> String {
    let server = edge::Server::bind(edge::EdgeConfig::for_tests()).expect("binds a free port");
    let addr = server.local_addr();
    let app = auction::App::new(store, server.edge());
    let checks = app.checks();
    tokio::spawn(server.serve(app.router(), checks, stop.clone().cancelled_owned()));
    format!("http://{addr}")
}

async fn post(base: &str, event: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/events"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .json(&event)
        .send()
        .await
        .expect("sent");
    (response.status().as_u16(), response.json().await.expect("a JSON body"))
}

/// Reads a lot's SSE stream as `(event name, id, data)`.
struct Follower {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Follower {
    async fn open(base: &str, lot: &str, last_event_id: Option<u64>) -> Self {
        let mut request = reqwest::Client::new().get(format!("{base}/lots/{lot}/live"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("subscribed");
        assert_eq!(response.status(), 200);
        Self { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    async fn next(&mut self) -> (String, u64, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    message
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or_default()
                        .to_owned()
                };
                let data = serde_json::from_str(&field("data:")).expect("JSON data");
                return (field("event:"), field("id:").parse().expect("a sequence number"), data);
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next()).await.expect("a message in time");
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("open").expect("read")).expect("utf-8"));
        }
    }
}

fn bid(seq: u64, bidder: &str, amount: u64) -> Value {
    json!({"lot": "l1", "seq": seq, "kind": "bid", "bidder": bidder, "amount": amount})
}

/// Publishes on `publisher`, follows and resumes on `reader` (the same
/// process, or another replica sharing the store).
async fn publish_subscribe_resume(publisher: &str, reader: &str) {
    let open = json!({"lot": "l1", "seq": 1, "kind": "open", "item": "signed ball", "reserve": 100});
    assert_eq!(post(publisher, open.clone()).await, (200, json!({"status": "applied", "seq": 1})));
    assert_eq!(post(publisher, open).await.1["status"], "duplicate");

    let mut follower = Follower::open(reader, "l1", None).await;
    let (kind, seq, subscribed) = follower.next().await;
    assert_eq!((kind.as_str(), seq, subscribed["lot"].as_str()), ("subscribed", 1, Some("l1")));
    assert_eq!(subscribed["state"]["item"], "signed ball");

    assert_eq!(post(publisher, bid(2, "ann", 90)).await.0, 200);
    let (kind, seq, update) = follower.next().await;
    assert_eq!((kind.as_str(), seq), ("event", 2));
    assert_eq!(update["event"], json!({"kind": "bid", "bidder": "ann", "amount": 90}));
    assert_eq!(update["state"]["leading"], json!({"bidder": "ann", "amount": 90}));
    drop(follower);

    // Missed while away: one bid and the close.
    assert_eq!(post(publisher, bid(3, "bob", 120)).await.0, 200);
    assert_eq!(post(publisher, json!({"lot": "l1", "seq": 4, "kind": "close"})).await.0, 200);
    let mut resumed = Follower::open(reader, "l1", Some(2)).await;
    let (kind, seq, subscribed) = resumed.next().await;
    assert_eq!((kind.as_str(), seq), ("subscribed", 4));
    assert_eq!((subscribed["since"].as_u64(), subscribed["recovered"].as_bool()), (Some(2), Some(true)));
    assert_eq!(subscribed["replayed"], 2);
    let (_, seq, replayed) = resumed.next().await;
    assert_eq!((seq, replayed["event"]["bidder"].as_str()), (3, Some("bob")));
    let (_, seq, closed) = resumed.next().await;
    assert_eq!((seq, &closed["state"]["sold"], &closed["state"]["closed"]), (4, &json!(true), &json!(true)));
}

#[tokio::test]
async fn publish_subscribe_and_resume_in_process() {
    let stop = CancellationToken::new();
    let base = serve(Arc::new(MemoryStore::new()), &stop).await;
    publish_subscribe_resume(&base, &base).await;
    stop.cancel();
}

#[tokio::test]
async fn a_bid_that_breaks_the_rules_is_refused_with_its_reason_and_changes_nothing() {
    let stop = CancellationToken::new();
    let base = serve(Arc::new(MemoryStore::new()), &stop).await;
    let (status, body) = post(&base, bid(1, "ann", 10)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("lot_not_open")));
    post(&base, json!({"lot": "l1", "seq": 1, "kind": "open", "item": "print", "reserve": 5})).await;
    post(&base, bid(2, "ann", 50)).await;
    let (status, body) = post(&base, bid(3, "bob", 50)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("bid_too_low")));
    let (status, body) = post(&base, bid(5, "bob", 60)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("sequence_gap")));
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("lot l1")), "{body}");
    let (status, _) = post(&base, json!({"lot": "l1", "seq": 3, "kind": "bid"})).await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &base,
        json!({"lot": "l1", "seq": 3, "kind": "bid", "bidder": "bob", "amount": 70, "amuont": 7}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_event")), "{body}");

    let lot: Value = reqwest::get(format!("{base}/lots/l1")).await.expect("read").json().await.expect("JSON");
    assert_eq!((lot["leading"]["amount"].as_u64(), lot["bids"].as_u64()), (Some(50), Some(1)));
    let missing = reqwest::get(format!("{base}/lots/nope/live")).await.expect("sent");
    assert_eq!(missing.status(), 404);
    stop.cancel();
}

#[tokio::test]
async fn a_publisher_needs_its_token_before_the_body_is_read() {
    let stop = CancellationToken::new();
    let base = serve(Arc::new(MemoryStore::new()), &stop).await;
    let client = reqwest::Client::new();
    let anonymous = client.post(format!("{base}/events")).body("{}").send().await.expect("sent");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let (code, _) = error_of(anonymous).await;
    assert_eq!(code, "unauthorized");
    let not_json = client
        .post(format!("{base}/events"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(not_json.status(), 415);
    stop.cancel();
}

#[tokio::test]
async fn every_refusal_has_the_json_shape_and_a_request_id() {
    let stop = CancellationToken::new();
    let base = serve(Arc::new(MemoryStore::new()), &stop).await;
    let long_id = "l".repeat(65);
    for (path, status, code) in [
        ("/nowhere", 404, "not_found"),
        ("/lots/Not%20A%20Lot", 400, "invalid_parameter"),
        (&format!("/lots/{long_id}/live") as &str, 400, "invalid_parameter"),
        ("/lots/l9", 404, "unknown_lot"),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.expect("sent");
        assert_eq!(response.status(), status, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
        assert_eq!(error_of(response).await.0, code, "{path}");
    }
    let wrong_method = reqwest::Client::new().delete(format!("{base}/events")).send().await.expect("sent");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(error_of(wrong_method).await.0, "method_not_allowed");
    let ready = reqwest::get(format!("{base}/readyz")).await.expect("sent");
    let ready: Value = ready.json().await.expect("JSON");
    assert_eq!(
        (ready["status"].as_str(), ready["checks"]["store"]["backend"].as_str()),
        (Some("ready"), Some("memory"))
    );
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("sent").text().await.expect("text");
    assert!(metrics.contains("http_server_request_duration_seconds"), "{metrics}");
    stop.cancel();
}

async fn error_of(response: reqwest::Response) -> (String, String) {
    let body: Value = response.json().await.expect("a JSON error body");
    let field = |name: &str| body["error"][name].as_str().expect("error.code and error.message").to_owned();
    (field("code"), field("message"))
}

#[tokio::test]
async fn two_replicas_on_redis_share_lots_and_fan_out() {
    let Some(config) = store::testing::redis_config().await else {
        return;
    };
    let stop = CancellationToken::new();
    let first = serve(Arc::new(RedisStore::connect_lazy(&config).expect("redis")), &stop).await;
    let second = serve(Arc::new(RedisStore::connect_lazy(&config).expect("redis")), &stop).await;
    // Let both bridges subscribe before anything is published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_subscribe_resume(&first, &second).await;
    stop.cancel();
    store::testing::delete_keys(&config).await;
}

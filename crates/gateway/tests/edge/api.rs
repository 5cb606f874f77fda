//! Black-box tests of the gateway's HTTP API, each against a real gateway
//! and a real analytics worker on loopback.

use super::helpers;

use std::time::{Duration, Instant};

use domain::compute::{ComputeSize, sum_of_square_roots};
use gateway::{
    GatewayConfig,
    testing::{
        RunningGateway,
        stand_in::{StandInConfig, StandInWorker},
    },
};
use helpers::{error_of, spawn_app, spawn_app_with, spawn_app_without_worker};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn slow_waits_about_200_ms_and_reports_the_time() {
    let app = spawn_app().await;
    let started = Instant::now();
    let response = app.get("/v1/bench/slow").await;
    let elapsed = started.elapsed();

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert!(body["t"].as_u64().expect("t is a number") > 1_700_000_000_000, "{body}");
    // A lower bound only: the wait is a timer, so it can never be shorter.
    assert!(elapsed >= Duration::from_millis(200), "answered after {elapsed:?}");
}

#[tokio::test]
async fn compute_returns_the_workers_result() {
    let app = spawn_app().await;
    let response = app.get("/v1/bench/compute?n=100000").await;
    assert_eq!(response.status(), StatusCode::OK);

    let body: Value = response.json().await.expect("json");
    let expected = sum_of_square_roots(ComputeSize::new(100_000, u64::MAX).expect("size"));
    assert_eq!(body["n"], 100_000);
    assert_eq!(body["result"].as_f64(), Some(expected));
    assert!(body["run_micros"].is_u64(), "{body}");
}

#[tokio::test]
async fn bad_n_is_a_400_with_a_json_error_naming_the_problem() {
    let app = spawn_app_with(|worker| worker.compute_max_n = 1_000, |_, _| {}).await;
    for (query, expected) in [
        ("", "query parameter `n` is required"),
        ("?n=-5", "`n` must be a non-negative integer, got \"-5\""),
        ("?n=lots", "`n` must be a non-negative integer, got \"lots\""),
        ("?n=1.5", "`n` must be a non-negative integer, got \"1.5\""),
        ("?n=99999999999999999999999", "`n` must be a non-negative integer"),
        ("?n=1001", "`n` must be at most 1000, got 1001"),
    ] {
        let response = app.get(&format!("/v1/bench/compute{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "query {query:?}");
        let (code, message) = error_of(response).await;
        assert_eq!(code, "invalid_parameter", "query {query:?}");
        assert!(message.starts_with(expected), "query {query:?}: {message}");
    }
}

#[tokio::test]
async fn unreachable_worker_is_a_503_and_everything_else_keeps_working() {
    let app = spawn_app_without_worker().await;

    let response = app.get("/v1/bench/compute?n=10").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let (code, message) = error_of(response).await;
    assert_eq!(code, "worker_unavailable");
    assert_eq!(message, "analytics worker unavailable, retry later");

    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/bench/slow").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_worker_deadline_exceeded_is_a_504() {
    // 1 ms is far less than 200 million square roots take.
    let app = spawn_app_with(|_| {}, |gateway, _| gateway.worker_deadline_ms = 1).await;
    let response = app.get("/v1/bench/compute?n=200000000").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let (code, message) = error_of(response).await;
    assert_eq!(code, "worker_timeout");
    assert_eq!(message, "analytics worker did not answer within 1 ms");
}

#[tokio::test]
async fn a_request_outliving_the_timeout_is_a_504() {
    let app = spawn_app_with(|_| {}, |gateway, _| gateway.edge.request_timeout_ms = 50).await;
    let response = app.get("/v1/bench/slow").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let (code, _) = error_of(response).await;
    assert_eq!(code, "request_timeout");
}

/// Log lines written to memory, for the test below.
#[derive(Clone, Default)]
struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// At the default level the request span is neither created nor logged
/// (it costs a fifth of a request), so a failure's line must name the
/// request itself: its id, method and route template.
#[tokio::test]
async fn a_failed_request_is_logged_with_its_id_method_and_route() {
    let lines = LogLines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime is single-threaded: the gateway's tasks log here.
    let _logs = tracing::subscriber::set_default(subscriber);

    let app = spawn_app_without_worker().await;
    let response = app
        .client
        .get(app.url("/v1/bench/compute?n=1000"))
        .header("x-request-id", "failing-request-7")
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    let text = String::from_utf8(lines.0.lock().expect("log lock").clone()).expect("utf-8 logs");
    let failed: Vec<&str> = text.lines().filter(|line| line.contains("request failed")).collect();
    assert_eq!(failed.len(), 1, "one failure line: {text}");
    // The duration is the route's, measured once by the metrics layer.
    for part in ["failing-request-7", "GET", "/v1/bench/compute", "status=503", "latency_ms="] {
        assert!(failed[0].contains(part), "{part:?} missing from {:?}", failed[0]);
    }
    assert!(!text.contains("http.server"), "the request span is not logged at info: {text}");
    assert!(!text.contains("request done"), "successes are logged at debug only: {text}");
}

#[tokio::test]
async fn readiness_reports_each_dependency() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"]["backend"], "memory");
    assert_eq!(body["checks"]["worker"]["status"], "ok");
}

#[tokio::test]
async fn a_worker_outage_degrades_the_analytics_routes_and_keeps_the_gateway_in_rotation() {
    let app = spawn_app_without_worker().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK, "the live feed needs only the store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["store"]["status"], "ok");
    assert_eq!(body["checks"]["worker"]["status"], "error");
    assert!(body["checks"]["worker"]["reason"].is_string(), "{body}");

    // What needs the worker says so, retryably; what does not still works.
    let analytics = app.get("/v1/bench/compute?n=1000").await;
    assert_eq!(analytics.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(analytics.headers().contains_key("retry-after"), "{:?}", analytics.headers());
    assert_eq!(error_of(analytics).await.0, "worker_unavailable");
    assert_eq!(app.get("/v1/matches").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn calls_spread_over_worker_replicas_and_go_on_when_one_dies() {
    let first = StandInWorker::spawn(StandInConfig::default()).await;
    let second = StandInWorker::spawn(StandInConfig::default()).await;
    let urls = format!("{},{}", first.url(), second.url());
    let gateway =
        RunningGateway::spawn(GatewayConfig::for_tests(urls), std::sync::Arc::new(store::MemoryStore::new()))
            .await;
    let client = reqwest::Client::new();
    let compute = async || {
        let url = format!("http://{}/v1/bench/compute?n=1000", gateway.addr);
        client.get(url).send().await.expect("the gateway answers").status()
    };

    for _ in 0..200 {
        assert_eq!(compute().await, StatusCode::OK);
    }
    let (a, b) = (first.computes(), second.computes());
    assert_eq!(a + b, 200);
    assert!(a >= 40 && b >= 40, "calls did not spread: {a} and {b}");

    // A replica goes away: every call still succeeds, on the other.
    first.stop().await;
    for _ in 0..50 {
        assert_eq!(compute().await, StatusCode::OK, "a call was lost with the replica");
    }
    assert_eq!(second.computes(), b + 50);
    gateway.stop().await.expect("the gateway stops");
}

#[tokio::test]
async fn with_an_admin_listener_metrics_and_debug_leave_the_public_port() {
    let app =
        spawn_app_with(|_| {}, |gateway, _| gateway.edge.admin_addr = Some(([127, 0, 0, 1], 0).into())).await;
    let admin = app.gateway.admin_addr.expect("an admin listener");
    for path in ["/metrics", "/v1/debug/runtime-fit"] {
        let public = app.get(path).await;
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path} is still public");
        let private = app.client.get(format!("http://{admin}{path}")).send().await.expect("admin answers");
        assert_eq!(private.status(), StatusCode::OK, "{path} on the admin listener");
    }
    let metrics = app.client.get(format!("http://{admin}/metrics")).send().await.expect("admin answers");
    assert!(metrics.text().await.expect("text").contains("http_server_request_duration_seconds"));
    // The public document no longer offers them; the probes stay public.
    let document: Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(document["paths"].get("/metrics").is_none(), "the public document lists /metrics");
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let unknown = app.client.get(format!("http://{admin}/v1/matches")).send().await.expect("admin answers");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "the admin listener serves only what operators read");
}

#[tokio::test]
async fn readiness_checks_a_real_redis_when_configured() {
    let Some(redis) = store::testing::redis_config().await else { return };
    let app = spawn_app_with(
        |_| {},
        |_, store| {
            store.redis_url = Some(redis.url.clone().into());
            store.redis_prefix = redis.key_prefix.clone();
        },
    )
    .await;
    let body: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(body["checks"]["store"]["backend"], "redis");
    assert_eq!(body["checks"]["store"]["status"], "ok");
}

#[tokio::test]
async fn readiness_is_503_when_redis_is_unreachable() {
    let app = spawn_app_with(|_| {}, |_, store| store.redis_url = Some("redis://127.0.0.1:1".into())).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["checks"]["store"]["backend"], "redis");
    assert_eq!(body["checks"]["store"]["status"], "error");
    assert_eq!(body["checks"]["worker"]["status"], "ok");
}

#[tokio::test]
async fn request_ids_are_set_when_missing_and_echoed_when_given() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;
    let generated = response.headers().get("x-request-id").expect("id set").to_str().expect("ascii");
    assert_eq!(generated.len(), 36, "a uuid: {generated}");

    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers().get("x-request-id").map(|v| v.as_bytes()), Some(&b"client-chosen-42"[..]));
}

#[tokio::test]
async fn unknown_routes_are_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/v1/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (code, message) = error_of(response).await;
    assert_eq!(code, "not_found");
    assert_eq!(message, "no route for /v1/nope");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let mut app = spawn_app().await;
    let in_flight = tokio::spawn({
        let request = app.client.get(app.url("/v1/bench/slow"));
        async move { request.send().await }
    });
    // Let the request reach the handler before stopping.
    tokio::time::sleep(Duration::from_millis(50)).await;

    app.gateway.signal_stop();
    let response = in_flight.await.expect("task").expect("in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);
    app.gateway.wait().await.expect("gateway stops cleanly");
}

#[tokio::test]
async fn the_openapi_document_covers_every_public_route() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("json");

    let mut documented: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    documented.sort();
    let mut expected = vec![
        "GET /",
        "GET /dashboard/app.js",
        "GET /dashboard/style.css",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/analytics/jobs/{id}",
        "GET /v1/bench/compute",
        "GET /v1/bench/slow",
        "GET /v1/debug/runtime-fit",
        "GET /v1/live",
        "GET /v1/matches",
        "GET /v1/matches/{id}",
        "GET /v1/matches/{id}/impact",
        "GET /v1/matches/{id}/live",
        "GET /v1/matches/{id}/win-probability",
        "GET /v1/players/{id}/impact",
        "POST /v1/analytics/jobs",
        "POST /v1/events",
        "POST /v1/events/bulk",
        // The dashboard's other views, and what they read.
        "GET /matches/{id}",
        "GET /ops",
        "GET /season",
        "GET /v1/views/matches",
        "GET /v1/views/matches/{id}/win-probability",
        "GET /v1/views/ops",
        "GET /v1/views/season",
        "GET /v1/views/xt-grid",
    ];
    expected.sort();
    assert_eq!(documented, expected);
    assert!(document["components"]["schemas"]["EventBody"].is_object(), "request schemas are included");
    assert!(
        document["components"]["securitySchemes"]["bearer"].is_object(),
        "publishing needs a bearer token"
    );

    // Every documented route without parameters is served (not the 404
    // fallback).
    for route in
        expected.iter().filter(|r| r.starts_with("GET ") && !r.contains('{') && !r.ends_with("/live"))
    {
        let path = &route["GET ".len()..];
        let status = app.get(path).await.status();
        assert_ne!(status, StatusCode::NOT_FOUND, "{route} is documented but not served");
    }
}

#[tokio::test]
async fn a_worker_that_vanishes_mid_call_is_a_retryable_503() {
    // A "worker" that takes the connection and the call, then resets the
    // connection, as a worker killed mid-call does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    loop {
                        if matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {
                            break;
                        }
                    }
                })
                .await;
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            });
        }
    });
    let app =
        helpers::spawn_app_with(|_| {}, |gateway, _| gateway.worker_url = format!("http://{addr}")).await;
    let response = app.get("/v1/bench/compute?n=10").await;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").is_some();
    let (code, message) = error_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{code}: {message}");
    assert!(retry_after);
    assert_eq!(code, "worker_unavailable");
}

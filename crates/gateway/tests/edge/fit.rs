//! The runtime-fit report: its verdict flips for a route that blocks the
//! event loop, and stays "edge" for one that waits.

use std::time::Duration;

use axum::{Router, routing::get};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_fit_says_move_to_worker_for_a_route_that_blocks_the_event_loop() {
    let config = gateway::GatewayConfig::for_tests("http://127.0.0.1:1");
    let test_routes = Router::new()
        .route(
            "/test/waits",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "waited"
            }),
        )
        .route(
            "/test/blocks",
            get(|| async {
                // The anti-pattern: CPU (or a blocking call) on the event loop.
                std::thread::sleep(Duration::from_millis(30));
                "blocked"
            }),
        );
    let gateway =
        gateway::Application::build(config, store::open(&store::StoreArgs::default()).expect("store"))
            .await
            .expect("gateway")
            .with_routes(test_routes);
    let addr = gateway.local_addr();
    tokio::spawn(gateway.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    let report = || async {
        let report: Value = client
            .get(format!("http://{addr}/v1/debug/runtime-fit"))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("json");
        report
    };
    let line = |report: &Value, route: &str| {
        report["routes"].as_array().expect("routes").iter().find(|r| r["route"] == route).cloned()
    };

    for _ in 0..3 {
        client.get(format!("http://{addr}/test/waits")).send().await.expect("waits");
    }
    let before = report().await;
    let waits = line(&before, "GET /test/waits").expect("waiting route reported");
    assert_eq!(waits["requests"], 3);
    assert_eq!(waits["verdict"], "edge", "{before}");
    assert_eq!(waits["slow_polls"], 0);
    assert!(waits["wall_p50_ms"].as_f64().expect("p50") >= 30.0, "{waits}");
    assert!(line(&before, "GET /test/blocks").is_none());

    for _ in 0..3 {
        client.get(format!("http://{addr}/test/blocks")).send().await.expect("blocks");
    }
    let after = report().await;
    let blocks = line(&after, "GET /test/blocks").expect("blocking route reported");
    assert_eq!(blocks["verdict"], "move to worker", "{after}");
    assert_eq!(blocks["slow_polls"], 3, "{blocks}");
    assert!(blocks["cpu_share"].as_f64().expect("share") > 0.8, "{blocks}");
    assert_eq!(after["routes"][0]["route"], "GET /test/blocks", "busiest first: {after}");
    assert_eq!(line(&after, "GET /test/waits").expect("still there")["verdict"], "edge");
    assert_eq!(after["slow_poll_threshold_ms"], 10.0);
}

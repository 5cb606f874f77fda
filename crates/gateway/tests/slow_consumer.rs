//! A subscriber that never reads is cut off, the others are not held back,
//! and the gateway's memory stays bounded meanwhile (against a real Redis).
//!
//! Alone in its test binary: it reads this process's resident memory, which
//! other tests running in parallel would disturb.

#[path = "edge/helpers.rs"]
mod helpers;

use std::time::Duration;

use gateway::config::TEST_PUBLISH_TOKEN;
use helpers::{
    eventually,
    live::{WAIT, WsClient, pass, start_match},
};
use reqwest::StatusCode;

#[tokio::test]
async fn a_subscriber_that_never_reads_is_cut_off_and_released() {
    // Redis holds the state and the durable stream, so what this process
    // gains in memory is the gateway's (and the test clients') alone: with
    // the in-process store the never-trimmed stream would grow it too.
    let Some(redis) = store::testing::redis_config().await else { return };
    let app = helpers::spawn_app_with(
        |_| {},
        |gateway, store| {
            gateway.write_timeout_ms = 300;
            gateway.edge.socket_send_buffer_bytes = 16 * 1024;
            store.redis_url = Some(redis.url.clone().into());
            store.redis_prefix = redis.key_prefix.clone();
        },
    )
    .await;
    let addr = app.gateway.addr;
    let live = app.gateway.live.clone();
    start_match(&app.client, addr, "flood", 1).await;

    let mut stalled = WsClient::connect_with_small_receive_buffer(addr).await;
    stalled.subscribe("flood", None).await;
    let mut healthy = WsClient::connect(addr).await;
    healthy.subscribe("flood", None).await;
    assert!(eventually(WAIT, || live.open_connections() == 2).await);
    let rss_before = resident_kib();

    // About 12 MB of updates, far more than the stalled client's socket
    // buffers hold, in bursts the healthy subscriber keeps up with: it is
    // never held back by the stalled one.
    for burst in 0..150u64 {
        let first = 2 + burst * 200;
        let events: Vec<String> = (first..first + 200).map(|seq| pass("flood", seq).to_string()).collect();
        let response = app
            .client
            .post(app.url("/v1/events/bulk"))
            .bearer_auth(TEST_PUBLISH_TOKEN)
            .header("content-type", "application/x-ndjson")
            .body(events.join("\n"))
            .send()
            .await
            .expect("bulk");
        assert_eq!(response.status(), StatusCode::OK);
        let mut last = 0;
        while last < first + 199 {
            last = healthy.recv().await["seq"].as_u64().expect("seq");
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || live.open_connections() == 1).await,
        "the stalled subscriber was not disconnected"
    );
    // 12 MB went out while the stalled client read nothing; what the
    // gateway held for it is bounded by its socket buffer and the shared
    // broadcast ring, not by what it missed. The whole test process (client
    // included) grew by far less than the updates' total.
    let grown = resident_kib().saturating_sub(rss_before);
    assert!(grown < 4 * 1024, "resident memory grew by {grown} KiB");
    assert_eq!(live.subscriptions.hub.subscriber_count(), 1, "its subscription was released");
    // Counted and logged as a slow consumer, not dropped silently.
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let disconnects = metrics
        .lines()
        .find(|line| {
            line.starts_with("courtside_live_slow_consumer_disconnects_total{transport=\"websocket\"}")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(disconnects >= 1.0, "slow-consumer disconnects not counted:\n{metrics}");
    // What it was sent and never got is counted apart from what was written.
    let dropped = metrics
        .lines()
        .find(|line| line.starts_with("courtside_live_messages_dropped_total{transport=\"websocket\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "the updates queued for it and dropped are not counted:\n{metrics}");
}

/// This process's resident set size, in KiB (the gateway runs in process).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

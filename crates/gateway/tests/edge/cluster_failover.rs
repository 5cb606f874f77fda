//! Acknowledged events survive a Redis Cluster failover, and the live feed
//! resumes by itself.
//!
//! The test runs a six-node cluster of its own. A publisher sends a match's
//! events one by one, retrying on 503 as `Retry-After` asks; a WebSocket
//! subscriber follows the match. Midway, the master serving the match's
//! partition is killed (SIGKILL) and its replica takes over after the node
//! timeout. The gateway waits for one replica per append
//! (`COURTSIDE_REDIS_WAIT_REPLICAS=1`), so every event it acknowledged is on
//! the replica that takes over. Nothing restarts the gateway or the
//! subscriber: ingest and the feed must come back on their own.

use super::helpers;

use std::time::Duration;

use helpers::live::{WsClient, kickoff, pass, publish_retrying};
use store::{ClusterConfig, ClusterStore, StateStore as _, testing::ThrowawayCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_ingest_loses_no_acknowledged_event_and_the_feed_resumes() {
    let Some(mut cluster) = ThrowawayCluster::start() else { return };
    let config = ClusterConfig {
        wait_replicas: 1,
        timeout: Duration::from_millis(500),
        ..ClusterConfig::from_settings(&cluster.urls(), "failover:", 4).expect("valid")
    };
    let urls = cluster.urls();
    let app = helpers::spawn_app_with(
        |_| {},
        |_, store| {
            store.redis_url = Some(urls.into());
            store.redis_cluster = true;
            store.redis_prefix = config.key_prefix.clone();
            store.redis_partitions = config.partitions;
            store.redis_wait_replicas = config.wait_replicas;
        },
    )
    .await;
    let direct = ClusterStore::connect_lazy(&config).expect("config");
    let doomed = cluster
        .master_of(&format!("failover:{{p{}}}events", direct.partition_of("final")))
        .expect("a master serves the match's partition");

    let total = 120u64;
    // A fresh cluster's replica may still be syncing: until it holds the
    // append, the gateway refuses it as retryable (503), and a client
    // retries, as this one does (it panics on anything but 200 in the end).
    publish_retrying(&app.client, app.gateway.addr, &kickoff("final"), Duration::from_secs(5)).await;
    let mut subscriber = WsClient::connect(app.gateway.addr).await;
    assert_eq!(subscriber.subscribe("final", None).await["seq"], 1);
    let follower = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.last() != Some(&total) {
            let message = subscriber.recv().await;
            if message["type"] == "event" {
                seen.push(message["seq"].as_u64().expect("seq"));
            }
        }
        seen
    });

    let mut unavailable_answers = 0;
    for seq in 2..=total {
        if seq == 40 {
            cluster.kill(doomed);
        }
        unavailable_answers +=
            publish_retrying(&app.client, app.gateway.addr, &pass("final", seq), Duration::from_secs(60))
                .await;
    }
    eprintln!("503 answers during the failover: {unavailable_answers}");
    let now_serving = cluster.master_of(&format!("failover:{{p{}}}events", direct.partition_of("final")));
    assert!(now_serving.is_some_and(|port| port != doomed), "no replica took over: {now_serving:?}");

    let (head, _) = direct.log_state("final").await.expect("state").expect("match exists");
    assert_eq!(head, total, "the stored head covers every acknowledged event");
    let history = direct.read_log("final", 0, 1_000).await.expect("history");
    let stored: Vec<u64> = history.entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        stored,
        (1..=total).collect::<Vec<_>>(),
        "every acknowledged event is in history, once, in order"
    );
    assert_eq!(direct.stream_len().await.expect("feed"), total, "and in the durable stream exactly once");

    let seen = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the subscriber caught up")
        .expect("the follower did not panic");
    assert_eq!(seen, (2..=total).collect::<Vec<_>>(), "the subscriber saw every event once, in order");
}

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
//!
//! After the failover the promoted master has no replica. Publishing to it
//! goes on without waiting for the replica it does not have, and readiness,
//! asked all along, never leaves 200: the gateway can serve throughout.

use super::helpers;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use helpers::live::{WsClient, kickoff, pass, publish, publish_retrying};
use store::{
    ClusterConfig, RedisStore, StateStore as _,
    testing::{self, ThrowawayCluster},
};

/// A gateway on `cluster`, with the store settings of `config`.
async fn spawn_on(cluster: &ThrowawayCluster, config: &ClusterConfig) -> helpers::TestApp {
    let urls = cluster.urls();
    helpers::spawn_app_with(
        |_| {},
        |_, store| {
            store.redis_url = Some(urls.into());
            store.redis_cluster = true;
            store.redis_prefix = config.key_prefix.clone();
            store.redis_partitions = config.partitions;
            store.redis_wait_replicas = config.wait_replicas;
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_ingest_loses_no_acknowledged_event_and_the_feed_resumes() {
    let Some(mut cluster) = ThrowawayCluster::start() else { return };
    // A slot without a master stops only its own keys, as the deploy docs
    // advise: the rest of the cluster, and the gateway, keep serving.
    cluster.config_set("cluster-require-full-coverage", "no");
    let config = ClusterConfig {
        wait_replicas: 1,
        timeout: Duration::from_millis(500),
        ..ClusterConfig::from_settings(&cluster.urls(), "failover:", 4).expect("valid")
    };
    let app = spawn_on(&cluster, &config).await;
    let direct = RedisStore::connect_cluster_lazy(&config).expect("config");
    let doomed = cluster
        .master_of(&format!("failover:{{p{}}}events", direct.partition_of("final")))
        .expect("a master serves the match's partition");

    // Readiness, asked all along as a load balancer would.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (client, url) = (app.client.clone(), format!("http://{}/readyz", app.gateway.addr));
        let watching = Arc::clone(&watching);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while watching.load(Ordering::Relaxed) {
                if let Ok(response) = client.get(&url).send().await {
                    answers.push(response.status().as_u16());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        })
    };

    let killed_at = 40u64;
    let failed_over = 120u64;
    let total = 220u64;
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
    for seq in 2..=failed_over {
        if seq == killed_at {
            cluster.kill(doomed);
        }
        unavailable_answers +=
            publish_retrying(&app.client, app.gateway.addr, &pass("final", seq), Duration::from_secs(60))
                .await;
    }
    eprintln!("503 answers during the failover: {unavailable_answers}");
    let now_serving = cluster.master_of(&format!("failover:{{p{}}}events", direct.partition_of("final")));
    let promoted = now_serving.filter(|port| *port != doomed).expect("no replica took over");

    // The promoted master has no replica: its writes go on without waiting
    // for one (at most the first learns that it is alone).
    let waits_before = cluster.calls(promoted, "WAIT");
    let mut latencies = Vec::new();
    for seq in failed_over + 1..=total {
        let started = Instant::now();
        publish_retrying(&app.client, app.gateway.addr, &pass("final", seq), Duration::from_secs(10)).await;
        latencies.push(started.elapsed());
    }
    let waits = cluster.calls(promoted, "WAIT") - waits_before;
    latencies.sort_unstable();
    eprintln!(
        "publishes to the shard without a replica: p50 {:?}, p99 {:?}, max {:?}; WAITs sent {waits}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1],
    );
    assert!(waits <= 1, "{waits} WAITs sent to a master without a replica");

    let (head, _) = direct.log_state("final").await.expect("state").expect("match exists");
    assert_eq!(head, total, "the stored head covers every acknowledged event");
    let history = direct.read_log("final", 0, 1_000).await.expect("history");
    let stored: Vec<u64> = history.entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        stored,
        (1..=total).collect::<Vec<_>>(),
        "every acknowledged event is in history, once, in order"
    );
    assert_eq!(direct.stream_len().await.expect("stream"), total, "and in the durable stream exactly once");

    let seen = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the subscriber caught up")
        .expect("the follower did not panic");
    assert_eq!(seen, (2..=total).collect::<Vec<_>>(), "the subscriber saw every event once, in order");

    // Readiness says what is missing, and never left 200.
    let degraded = testing::eventually(Duration::from_secs(10), || async {
        let body: serde_json::Value = app.get("/readyz").await.json().await.expect("json");
        body["checks"]["store"]["reason"].as_str().is_some_and(|r| r.ends_with("have no replica"))
    })
    .await;
    assert!(degraded, "readiness never said that a partition has no replica");
    watching.store(false, Ordering::Relaxed);
    let answers = watcher.await.expect("the watcher did not panic");
    assert!(answers.len() > 20, "readiness was asked {} times", answers.len());
    assert!(
        answers.iter().all(|status| *status == 200),
        "readiness left 200 while the gateway could serve: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_down_leaves_the_gateway_ready_and_degraded_while_other_matches_are_served() {
    let Some(cluster) = ThrowawayCluster::start() else { return };
    // Without it, a whole cluster refuses every key once one slot has no
    // node: the outage stays one partition's, as the deploy docs advise.
    cluster.config_set("cluster-require-full-coverage", "no");
    let config = ClusterConfig {
        timeout: Duration::from_millis(500),
        ..ClusterConfig::from_settings(&cluster.urls(), "partial:", 8).expect("valid")
    };
    let app = spawn_on(&cluster, &config).await;
    let readiness = async || {
        let response = app.get("/readyz").await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        (status, body)
    };
    let (status, body) = readiness().await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    // A partition other than the live channel's (partition 0), and a match
    // on a partition another master serves.
    let direct = RedisStore::connect_cluster_lazy(&config).expect("config");
    let master_of_part = |k: usize| cluster.master_of(&format!("partial:{{p{k}}}events"));
    let live_master = master_of_part(0).expect("a master serves partition 0");
    let doomed = (1..usize::from(config.partitions))
        .filter_map(master_of_part)
        .find(|port| *port != live_master)
        .expect("another master serves some partition");
    let replica = cluster.replica_of(doomed).expect("the master has a replica");
    let served_match = (0..1_000)
        .map(|i| format!("m{i}"))
        .find(|id| master_of_part(direct.partition_of(id)) != Some(doomed))
        .expect("a match on a healthy partition");
    let stranded = (0..1_000)
        .map(|i| format!("s{i}"))
        .find(|id| master_of_part(direct.partition_of(id)) == Some(doomed))
        .expect("a match on the partition that goes down");
    cluster.pause(doomed);
    cluster.pause(replica);

    // Within a few probes it says so, in rotation all along.
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let degraded = loop {
        let (status, body) = readiness().await;
        answers.push(status);
        if body["status"] == "degraded" {
            break body;
        }
        assert!(Instant::now() < deadline, "never said degraded: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(degraded["checks"]["store"]["status"], "degraded", "{degraded}");
    let reason = degraded["checks"]["store"]["reason"].as_str().expect("a reason");
    assert!(reason.ends_with("of 9 store partitions do not answer"), "{reason}");

    // A publisher to a match on the partition that is down is told to
    // retry, at once rather than after a hang.
    let asked = Instant::now();
    let refused = publish(&app.client, app.gateway.addr, &kickoff(&stranded)).await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    assert!(asked.elapsed() < Duration::from_secs(5), "the refusal took {:?}", asked.elapsed());

    // Matches elsewhere are served meanwhile, and readiness stays 200.
    publish_retrying(&app.client, app.gateway.addr, &kickoff(&served_match), Duration::from_secs(5)).await;
    for seq in 2..=5 {
        publish_retrying(&app.client, app.gateway.addr, &pass(&served_match, seq), Duration::from_secs(5))
            .await;
        answers.push(readiness().await.0);
    }
    for _ in 0..20 {
        answers.push(readiness().await.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers.iter().all(|status| *status == reqwest::StatusCode::OK),
        "readiness left 200 while the gateway could serve: {answers:?}"
    );

    // Back: ready again within a few probes.
    cluster.resume(replica);
    cluster.resume(doomed);
    let back = Instant::now();
    loop {
        let (status, body) = readiness().await;
        if status == reqwest::StatusCode::OK && body["status"] == "ready" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready again {} ms after the nodes came back", back.elapsed().as_millis());
}

//! Acknowledged events survive Redis going down and coming back.
//!
//! A publisher sends a match's events one by one, retrying on 503 as
//! `Retry-After` asks. Midway, the test kills its own throwaway Redis
//! (SIGKILL: no chance to flush anything) and restarts it on the same port
//! and data directory. Every event the gateway acknowledged must be in the
//! match's state and history afterwards. The shared Redis is never touched.

use super::helpers;

use std::time::Duration;

use helpers::live::{kickoff, pass, publish_retrying};
use reqwest::StatusCode;
use store::{RedisConfig, RedisStore, StateStore as _, testing::ThrowawayRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_when_redis_restarts_mid_ingest() {
    let Some(mut redis) =
        ThrowawayRedis::start(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let config = RedisConfig { timeout: Duration::from_millis(500), ..RedisConfig::new(redis.url()) };
    let direct = RedisStore::connect_lazy(&config).expect("config");
    assert!(
        helpers::eventually_async(Duration::from_secs(5), || async { direct.ping().await.is_ok() }).await,
        "throwaway redis did not come up"
    );

    let app = helpers::spawn_app_with(|_| {}, |_, store| store.redis_url = Some(redis.url().into())).await;
    let total = 150u64;
    let mut unavailable_answers = 0;
    for seq in 1..=total {
        if seq == 60 {
            redis.kill_and_restart();
        }
        let event = if seq == 1 { kickoff("resilient") } else { pass("resilient", seq) };
        unavailable_answers +=
            publish_retrying(&app.client, app.gateway.addr, &event, Duration::from_secs(60)).await;
    }
    // publish_retrying returned: the gateway acknowledged every event.
    let acknowledged: Vec<u64> = (1..=total).collect();

    eprintln!("503 answers while redis was down: {unavailable_answers}");
    // A fresh connection: the one above died with the old server.
    let direct = RedisStore::connect_lazy(&config).expect("config");
    let (head, _) = direct.log_state("resilient").await.expect("state").expect("match exists");
    assert_eq!(head, total, "the stored head covers every acknowledged event");
    let history = direct.read_log("resilient", 0, 1_000).await.expect("history");
    let stored: Vec<u64> = history.entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(stored, acknowledged, "every acknowledged event is in history, once, in order");
    assert_eq!(direct.stream_len().await.expect("feed"), total, "and in the durable stream exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_still_loading_its_data_is_a_retryable_503() {
    let Some(mut redis) = ThrowawayRedis::start(&["--save", "", "--appendonly", "no"]) else { return };
    let config = RedisConfig { timeout: Duration::from_millis(500), ..RedisConfig::new(redis.url()) };
    let direct = RedisStore::connect_lazy(&config).expect("config");
    assert!(
        helpers::eventually_async(Duration::from_secs(5), || async { direct.ping().await.is_ok() }).await,
        "throwaway redis did not come up"
    );
    // Enough keys, each loaded slowly, for seconds of LOADING; events are
    // processed often enough during loading that commands are answered
    // (with LOADING) instead of timing out.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let mut fill = redis::pipe();
    for i in 0..40_000 {
        fill.set(format!("filler:{i}"), i).ignore();
    }
    let () = fill.query_async(&mut connection).await.expect("fill");
    let () = redis::cmd("SAVE").query_async(&mut connection).await.expect("save");
    redis.kill_and_restart_with(&[
        "--key-load-delay",
        "100",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);

    let app = helpers::spawn_app_with(|_| {}, |_, store| store.redis_url = Some(redis.url().into())).await;
    // Polled until Redis has loaded: every answer meanwhile is a 503 with
    // Retry-After naming the store, never a 500.
    let mut unavailable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "still failing after 30 s");
        let response = app.get("/v1/matches").await;
        match response.status() {
            StatusCode::OK => break,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().get("retry-after").is_some(), "a 503 without Retry-After");
                assert_eq!(helpers::error_of(response).await.0, "store_unavailable");
                unavailable += 1;
            }
            other => {
                panic!("answered {other} while redis was loading: {:?}", helpers::error_of(response).await)
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(unavailable > 0, "redis finished loading before the first request");
}

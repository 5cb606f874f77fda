//! Both tiers together: the analytics routes at the edge, with leaderboards
//! read from the shared store (kept current by the worker's stream
//! consumer), win probability and batch jobs forwarded to the real worker
//! over gRPC.

mod helpers;

use std::time::Duration;

use gateway::config::TEST_PUBLISH_TOKEN;
use helpers::{
    error_of, eventually_async,
    live::{goal, kickoff, pass, publish_ok, start_match},
    spawn_tiers, spawn_tiers_with, test_redis,
};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn win_probability_is_computed_by_the_worker_for_the_current_score() {
    let app = spawn_tiers().await;
    let addr = app.gateway.addr;
    publish_ok(&app.client, addr, &kickoff("wp")).await;
    publish_ok(&app.client, addr, &goal("wp", 2, 1)).await;

    let response = app.get("/v1/matches/wp/win-probability?samples=20000").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["score"]["home"], 1);
    let closed = &body["closed_form"];
    let sum = closed["home_win"].as_f64().unwrap_or(0.0)
        + closed["draw"].as_f64().unwrap_or(0.0)
        + closed["away_win"].as_f64().unwrap_or(0.0);
    assert!((sum - 1.0).abs() < 1e-9, "{body}");
    assert!(
        closed["home_win"].as_f64() > closed["away_win"].as_f64(),
        "a goal up favours the home side: {body}"
    );
    assert_eq!(body["samples"], 20000);
    let mc_home = body["monte_carlo"]["home_win"].as_f64().expect("monte carlo");
    assert!((mc_home - closed["home_win"].as_f64().expect("closed")).abs() < 0.03, "{body}");

    let missing = app.get("/v1/matches/nosuch/win-probability").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(missing).await.0, "unknown_match");
}

#[tokio::test]
async fn a_batch_job_needs_a_token_and_reports_progress() {
    let app = spawn_tiers().await;
    let url = app.url("/v1/analytics/jobs");

    let refused = app.client.post(&url).send().await.expect("answer");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let started = app.client.post(&url).bearer_auth(TEST_PUBLISH_TOKEN).send().await.expect("answer");
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let job: Value = started.json().await.expect("json");
    let id = job["id"].as_str().expect("job id").to_owned();
    assert_eq!(location.as_deref(), Some(format!("/v1/analytics/jobs/{id}").as_str()));
    assert_eq!(job["kind"], "recompute");

    let finished = eventually_async(Duration::from_secs(30), || {
        let app = &app;
        let id = id.clone();
        async move {
            let status: Value =
                app.get(&format!("/v1/analytics/jobs/{id}")).await.json().await.unwrap_or_default();
            status["state"] == "succeeded"
        }
    })
    .await;
    assert!(finished, "the recompute did not finish");

    let unknown = app.get("/v1/analytics/jobs/no-such-job").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn leaderboards_fill_from_the_event_stream() {
    // Gateway and worker must share the store for the worker to consume
    // what the gateway ingests: here a real Redis.
    let Some(shared) = test_redis().await else { return };
    let tiers = spawn_tiers_with(shared, |_| {}, |_| {}).await;
    let (gateway, client) = (&tiers.gateway, tiers.client.clone());

    start_match(&client, gateway.addr, "rated", 1).await;
    for seq in 2..=30 {
        publish_ok(&client, gateway.addr, &pass("rated", seq)).await;
    }
    // Player 9 scores at minute 12 from 0-0 (see `goal`).
    publish_ok(&client, gateway.addr, &goal("rated", 31, 1)).await;
    let base = format!("http://{}", gateway.addr);
    let rated = eventually_async(Duration::from_secs(20), || {
        let (client, base) = (&client, &base);
        async move {
            let Ok(response) = client.get(format!("{base}/v1/matches/rated/impact")).send().await else {
                return false;
            };
            let board: Value = response.json().await.unwrap_or_default();
            board["players"].as_array().is_some_and(|players| !players.is_empty())
                && board["goals"].as_array().is_some_and(|goals| goals.len() == 1)
        }
    })
    .await;
    assert!(rated, "the worker never rated the match's moves");

    // The test passes are all by player 7.
    let player: Value = client
        .get(format!("{base}/v1/players/7/impact"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(player["player"], 7);
    assert!(player["season_xt"].is_number(), "{player}");

    let scorer: Value = client
        .get(format!("{base}/v1/players/9/impact"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(scorer["season_wpa"].as_f64().is_some_and(|wpa| wpa > 0.0), "{scorer}");

    let nobody = client.get(format!("{base}/v1/players/424242/impact")).send().await.expect("get");
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
    let bad = client.get(format!("{base}/v1/players/abc/impact")).send().await.expect("get");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

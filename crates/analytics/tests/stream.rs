//! The stream consumer and the batch recompute against a real Redis: events
//! written to the durable stream as the gateway writes them end up on the
//! leaderboards exactly once, even when a consumer dies mid-batch, and a
//! recompute swaps rebuilt boards in while reporting its progress.

mod helpers;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use analytics::{
    WorkerConfig,
    consumer::GROUP,
    model::{MODEL_KEY, ModelSource, RatingModel},
    stream,
};
use contracts::v1::{ComputeImpactRequest, GetJobRequest, JobKind, JobState, RunJobRequest};
use domain::boards;
use domain::xt::{Action, ActionResult, ActionType, FitConfig, PlayerId, Point, XtModel, XtTally};
use helpers::{append, bootstrap_model, eventually, pass, spawn_worker};
use store::{RedisStore, ScoreApply, ScoreIncrement, StateStore, testing};

async fn redis() -> Option<Arc<dyn StateStore>> {
    let config = testing::redis_config().await?;
    Some(Arc::new(RedisStore::connect_lazy(&config).expect("valid test config")))
}

/// Each player's expected season total: the sum of their passes' ratings.
fn expected_totals(model: &RatingModel, passes: &[(&str, u64, u32)]) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for &(match_id, seq, player) in passes {
        let entry = store::StreamEntry {
            id: "0-0".into(),
            log: match_id.into(),
            seq,
            entry: bytes::Bytes::from(pass(match_id, seq, player)),
        };
        let stream::StreamDetail::Move(action) = stream::decode(&entry).expect("decodes").detail else {
            panic!("a pass is a move")
        };
        *totals.entry(player.to_string()).or_insert(0.0) += model.rate(&action).expect("rated");
    }
    totals
}

async fn season_board(store: &dyn StateStore) -> BTreeMap<String, f64> {
    store
        .leaderboard(boards::SEASON_XT, 1_000)
        .await
        .expect("board")
        .into_iter()
        .map(|r| (r.member, r.score))
        .collect()
}

fn close(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && (va - vb).abs() < 1e-9)
}

/// Waits until the season board holds `expected` and nothing is left
/// pending: every entry counted, and acknowledged.
async fn assert_counted(store: &dyn StateStore, expected: &BTreeMap<String, f64>) {
    let done = eventually(Duration::from_secs(20), || async move {
        store.stream_backlog(GROUP).await.map_or(u64::MAX, |b| b.pending) == 0
            && close(&season_board(store).await, expected)
    })
    .await;
    assert!(done, "board {:?}, expected {expected:?}", season_board(store).await);
}

#[tokio::test]
async fn the_consumer_puts_each_event_on_the_leaderboards() {
    let Some(store) = redis().await else { return };
    the_consumer_counts_each_event(store).await;
}

#[tokio::test]
async fn on_a_redis_cluster_the_consumer_puts_each_event_on_the_leaderboards() {
    let Some(store) = cluster().await else { return };
    the_consumer_counts_each_event(store).await;
}

async fn the_consumer_counts_each_event(store: Arc<dyn StateStore>) {
    let passes = [("m1", 1, 7), ("m1", 2, 8), ("m1", 3, 7), ("m2", 1, 7)];
    for &(match_id, seq, player) in &passes {
        append(store.as_ref(), match_id, seq, pass(match_id, seq, player)).await;
    }
    // Entries no decoder understands are acknowledged, not retried forever.
    append(store.as_ref(), "m2", 2, vec![0xff, 0xff, 0xff]).await;

    let config = WorkerConfig::for_tests();
    let expected = expected_totals(&bootstrap_model(&config), &passes);
    let worker = spawn_worker(config, Arc::clone(&store)).await;

    assert_counted(store.as_ref(), &expected).await;

    let m2 = store.leaderboard(&boards::match_xt("m2"), 10).await.expect("board");
    assert_eq!(m2.len(), 1);
    assert_eq!(m2[0].member, "7");
    assert!(
        (m2[0].score - expected_totals(&bootstrap_model(&WorkerConfig::for_tests()), &[("m2", 1, 7)])["7"])
            .abs()
            < 1e-12
    );

    // New events keep flowing in while the worker runs.
    append(store.as_ref(), "m2", 3, pass("m2", 3, 9)).await;
    let store_ref = store.as_ref();
    let more = eventually(Duration::from_secs(20), || async move {
        store_ref.leaderboard_score(boards::SEASON_XT, "9").await.ok().flatten().is_some()
    })
    .await;
    assert!(more, "a later event never reached the board");
    worker.stop().await.expect("stops");
}

async fn cluster() -> Option<Arc<dyn StateStore>> {
    let config = testing::cluster_config().await?;
    Some(Arc::new(store::RedisStore::connect_cluster_lazy(&config).expect("valid test config")))
}

#[tokio::test]
async fn entries_of_a_consumer_that_died_mid_batch_are_claimed_and_counted_once() {
    let Some(store) = redis().await else { return };
    a_dead_consumers_entries_are_claimed_and_counted_once(store).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_dead_consumers_entries_are_claimed_and_counted_once() {
    let Some(store) = cluster().await else { return };
    a_dead_consumers_entries_are_claimed_and_counted_once(store).await;
}

async fn a_dead_consumers_entries_are_claimed_and_counted_once(store: Arc<dyn StateStore>) {
    let passes: Vec<(&str, u64, u32)> = (1..=40).map(|seq| ("dead", seq, 1 + (seq % 5) as u32)).collect();
    for &(match_id, seq, player) in &passes {
        append(store.as_ref(), match_id, seq, pass(match_id, seq, player)).await;
    }

    // A consumer reads a batch and dies before applying or acknowledging it.
    store.stream_group_create(GROUP).await.expect("group");
    let taken = store.stream_read_group(GROUP, "died", 25, Duration::ZERO).await.expect("read");
    assert_eq!(taken.len(), 25);
    // It had even applied one entry before dying: that one must not count
    // twice when its batch is claimed.
    let config = WorkerConfig { claim_idle_ms: 300, ..WorkerConfig::for_tests() };
    let model = bootstrap_model(&config);
    let first = &taken[0];
    let stream::StreamDetail::Move(action) = stream::decode(first).expect("decodes").detail else {
        panic!("a move")
    };
    let rating = model.rate(&action).expect("rated");
    let member = action.player().get().to_string();
    store
        .apply_once(
            GROUP,
            &[ScoreApply {
                entry_id: first.id.clone(),
                scope: first.log.clone(),
                token: first.seq.to_string(),
                increments: vec![
                    ScoreIncrement { board: boards::SEASON_XT.into(), member: member.clone(), delta: rating },
                    ScoreIncrement { board: boards::match_xt("dead"), member, delta: rating },
                ],
            }],
        )
        .await
        .expect("apply");
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 24);

    // A live worker takes the 15 unread entries at once and claims the 24
    // pending ones once they have been idle for the claim timeout.
    let expected = expected_totals(&model, &passes);
    let worker = spawn_worker(config, Arc::clone(&store)).await;
    assert_counted(store.as_ref(), &expected).await;
    worker.stop().await.expect("stops");

    // Delivered once more (a second claim, a replay): still counted once.
    let outcomes = store
        .apply_once(
            GROUP,
            &[ScoreApply {
                entry_id: first.id.clone(),
                scope: first.log.clone(),
                token: first.seq.to_string(),
                increments: vec![ScoreIncrement {
                    board: boards::SEASON_XT.into(),
                    member: "1".into(),
                    delta: 100.0,
                }],
            }],
        )
        .await
        .expect("apply");
    assert_eq!(outcomes, vec![store::ApplyOutcome::Duplicate]);
    assert!(close(&season_board(store.as_ref()).await, &expected));
}

#[tokio::test]
async fn a_worker_retries_its_own_pending_entries_without_waiting_for_the_claim_timeout() {
    let Some(store) = redis().await else { return };
    own_pending_entries_are_retried_at_once(store).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_worker_retries_its_own_pending_entries_at_once() {
    let Some(store) = cluster().await else { return };
    own_pending_entries_are_retried_at_once(store).await;
}

async fn own_pending_entries_are_retried_at_once(store: Arc<dyn StateStore>) {
    let passes: Vec<(&str, u64, u32)> = (1..=12).map(|seq| ("own", seq, 1 + (seq % 3) as u32)).collect();
    for &(match_id, seq, player) in &passes {
        append(store.as_ref(), match_id, seq, pass(match_id, seq, player)).await;
    }
    // A round of this worker's read a batch and failed before applying it
    // (the store was failing over): the entries are pending for it.
    store.stream_group_create(GROUP).await.expect("group");
    let taken = store.stream_read_group(GROUP, "steady", 8, Duration::ZERO).await.expect("read");
    assert_eq!(taken.len(), 8);

    // Its next round retries them itself: nobody waits out a claim timeout
    // meant for workers that are gone (ten minutes here).
    let config = WorkerConfig {
        claim_idle_ms: 600_000,
        consumer_name: Some("steady".into()),
        ..WorkerConfig::for_tests()
    };
    let expected = expected_totals(&bootstrap_model(&config), &passes);
    let worker = spawn_worker(config, Arc::clone(&store)).await;
    assert_counted(store.as_ref(), &expected).await;
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn a_recompute_refits_on_the_stream_and_swaps_the_boards_in() {
    let Some(store) = redis().await else { return };
    a_recompute_refits_and_swaps(store).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_recompute_refits_on_the_stream_and_swaps_the_boards_in() {
    let Some(store) = cluster().await else { return };
    a_recompute_refits_and_swaps(store).await;
}

async fn a_recompute_refits_and_swaps(store: Arc<dyn StateStore>) {
    // Two matches with moves, shots and goals, so there is a model to fit.
    let mut actions = Vec::new();
    let point = |x: f64, y: f64| Point::new(x, y).expect("on the pitch");
    for (match_id, scorer) in [("r1", 10), ("r2", 20)] {
        let mut seq = 0;
        for i in 0..30u64 {
            seq += 1;
            let player = scorer + (i % 3) as u32;
            append(store.as_ref(), match_id, seq, pass(match_id, seq, player)).await;
            let x = 5.0 + (seq % 13) as f64 * 7.0;
            let y = 4.0 + (seq % 7) as f64 * 9.0;
            actions.push(Action::new(
                ActionType::Pass,
                ActionResult::Success,
                point(x, y),
                point((x + 15.0).min(104.0), (y + 3.0).min(67.0)),
                PlayerId::new(player),
            ));
            if i % 5 == 4 {
                seq += 1;
                append(
                    store.as_ref(),
                    match_id,
                    seq,
                    stream::encode_shot(match_id, seq, 1, scorer, (95.0, 30.0)),
                )
                .await;
                let scored = i % 10 == 9;
                actions.push(Action::new(
                    ActionType::Shot,
                    if scored { ActionResult::Success } else { ActionResult::Fail },
                    point(95.0, 30.0),
                    point(95.0, 30.0),
                    PlayerId::new(scorer),
                ));
                if scored {
                    seq += 1;
                    append(store.as_ref(), match_id, seq, stream::encode_goal(match_id, seq, 1, scorer))
                        .await;
                }
            }
        }
    }
    // A stale member from an earlier model, which the rebuild must drop.
    store.stream_group_create("seed").await.expect("group");
    let stale = store.stream_read_group("seed", "x", 1, Duration::ZERO).await.expect("read");
    store
        .apply_once(
            "seed",
            &[ScoreApply {
                entry_id: stale[0].id.clone(),
                scope: "seed".into(),
                token: "1".into(),
                increments: vec![ScoreIncrement {
                    board: boards::SEASON_XT.into(),
                    member: "999".into(),
                    delta: 5.0,
                }],
            }],
        )
        .await
        .expect("apply");

    // The reference: xT fitted by the domain crate on the same actions.
    let tally = XtTally::from_actions(&actions);
    let (_, impacts) = tally.evaluate(FitConfig::default(), &BTreeMap::new()).expect("fits");
    let expected: BTreeMap<String, f64> =
        impacts.iter().map(|i| (i.player().get().to_string(), i.xt())).collect();
    let reference = XtModel::fit(tally.counts(), FitConfig::default()).expect("fits");

    let config = WorkerConfig { consume: false, ..WorkerConfig::for_tests() };
    let worker = spawn_worker(config, Arc::clone(&store)).await;
    let mut client = worker.client().await;
    let mut stream =
        client.run_job(RunJobRequest { kind: JobKind::Recompute as i32 }).await.expect("starts").into_inner();
    let mut updates = Vec::new();
    while let Some(update) = stream.message().await.expect("progress") {
        updates.push(update.progress.expect("progress set"));
    }
    let last = updates.last().expect("at least one update").clone();
    assert_eq!(last.state(), JobState::Succeeded, "{last:?}");
    let phases: Vec<&str> = updates.iter().map(|p| p.phase.as_str()).collect();
    println!("progress phases: {phases:?}");
    assert!(phases.contains(&"done"), "{phases:?}");
    // Updates may be coalesced, but the first shows the job running and the
    // last the swap complete: three boards (r1, r2, the season).
    assert_eq!(updates[0].state(), JobState::Running, "{updates:?}");
    assert_eq!((last.unit.as_str(), last.done, last.total), ("boards", 3, 3), "{last:?}");
    assert!(last.finished_ms >= last.started_ms && last.started_ms > 0, "{last:?}");

    // The rebuilt season board: exactly the reference totals, the stale
    // member gone.
    let board = season_board(store.as_ref()).await;
    assert!(close(&board, &expected), "board {board:?}, expected {expected:?}");
    let r1: Vec<String> = store
        .leaderboard(&boards::match_xt("r1"), 10)
        .await
        .expect("board")
        .into_iter()
        .map(|r| r.member)
        .collect();
    assert!(r1.iter().all(|m| ["10", "11", "12"].contains(&m.as_str())), "{r1:?}");

    // The refitted model is stored and used from now on.
    let stored = store.get(MODEL_KEY).await.expect("get").expect("model stored");
    let model = RatingModel::decode(&stored).expect("decodes");
    assert_eq!(model.source(), ModelSource::Feed);
    assert_eq!(model.rate(&actions[0]), reference.rate(&actions[0]));
    let impact = client
        .compute_impact(ComputeImpactRequest { match_id: "r1".into(), ..Default::default() })
        .await
        .expect("impact")
        .into_inner();
    assert_eq!(impact.model_source, "feed");

    // The job stays visible after it ended.
    let got =
        client.get_job(GetJobRequest { job_id: last.job_id.clone() }).await.expect("known").into_inner();
    assert_eq!(got.progress.expect("set").state(), JobState::Succeeded);
    let err = client.get_job(GetJobRequest { job_id: "nope".into() }).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn goals_credit_their_scorers_with_the_win_probability_they_added() {
    let Some(store) = redis().await else { return };
    // 0-0 at minute 80, then the home side scores: a big swing. Then 1-0 at
    // minute 85 and the away side equalises.
    append(store.as_ref(), "wpa", 1, stream::encode_goal_in_context("wpa", 1, 1, 9, 80, (0, 0))).await;
    append(store.as_ref(), "wpa", 2, stream::encode_goal_in_context("wpa", 2, 2, 21, 85, (1, 0))).await;
    // Without context (an older entry) a goal credits nothing, and breaks
    // nothing.
    append(store.as_ref(), "wpa", 3, stream::encode_goal("wpa", 3, 1, 9)).await;

    let context = |minute, home, away, home_scores| stream::GoalContext {
        minute,
        home_goals: home,
        away_goals: away,
        home_red_cards: 0,
        away_red_cards: 0,
        scored_by_home: home_scores,
    };
    let first = analytics::valuation::win_probability_added(&context(80, 0, 0, true)).expect("in range");
    let second = analytics::valuation::win_probability_added(&context(85, 1, 0, false)).expect("in range");
    // A late winner swings the win probability far more than a late
    // equaliser, which mostly turns a defeat into a draw.
    assert!(first > 0.3 && second > 0.0 && second < first, "{first} {second}");

    let worker = spawn_worker(WorkerConfig::for_tests(), Arc::clone(&store)).await;
    let store_ref = store.as_ref();
    let credited = eventually(Duration::from_secs(20), || async move {
        store_ref.stream_backlog(GROUP).await.map_or(u64::MAX, |b| b.pending) == 0
            && store_ref.leaderboard(&boards::match_wpa("wpa"), 10).await.map(|b| b.len()).unwrap_or(0) == 2
    })
    .await;
    assert!(credited, "the goals were not credited");
    let scorer = store.leaderboard_score(boards::SEASON_WPA, "9").await.expect("score").expect("credited");
    let equaliser =
        store.leaderboard_score(boards::SEASON_WPA, "21").await.expect("score").expect("credited");
    assert!((scorer - first).abs() < 1e-12, "{scorer} vs {first}");
    assert!((equaliser - second).abs() < 1e-12, "{equaliser} vs {second}");

    // A recompute rebuilds the same boards from the stream.
    let mut client = worker.client().await;
    let mut progress =
        client.run_job(RunJobRequest { kind: JobKind::Recompute as i32 }).await.expect("job").into_inner();
    while let Some(update) = progress.message().await.expect("progress") {
        if update.progress.as_ref().is_some_and(|p| p.state() != JobState::Running) {
            assert_eq!(update.progress.map(|p| p.state()), Some(JobState::Succeeded));
            break;
        }
    }
    let rebuilt = store.leaderboard_score(boards::SEASON_WPA, "9").await.expect("score").expect("rebuilt");
    assert!((rebuilt - first).abs() < 1e-12, "{rebuilt} vs {first}");
}

/// Runs a recompute on `worker` and returns its last progress report.
async fn run_recompute(worker: &helpers::Worker) -> contracts::v1::JobProgress {
    let mut client = worker.client().await;
    let mut stream =
        client.run_job(RunJobRequest { kind: JobKind::Recompute as i32 }).await.expect("starts").into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.expect("progress") {
        last = update.progress;
    }
    last.expect("at least one report")
}

#[tokio::test]
async fn two_workers_recompute_in_turn_under_the_lease() {
    let Some(store) = redis().await else { return };
    append(store.as_ref(), "lease", 1, pass("lease", 1, 7)).await;
    let named = |name: &str| WorkerConfig {
        consume: false,
        consumer_name: Some(name.into()),
        ..WorkerConfig::for_tests()
    };
    let a = spawn_worker(named("worker-a"), Arc::clone(&store)).await;
    let b = spawn_worker(named("worker-b"), Arc::clone(&store)).await;
    let lease = analytics::jobs::RECOMPUTE_LEASE;

    // A third replica is mid-recompute: neither starts another.
    let held =
        store.acquire_lease(lease, "worker-c", Duration::from_secs(30)).await.expect("store").expect("free");
    for worker in [&a, &b] {
        let last = run_recompute(worker).await;
        assert_eq!(last.state(), JobState::Failed, "{last:?}");
        assert!(last.error.contains("another worker replica"), "{last:?}");
    }

    // Once it is done, each takes the lease in turn, with a new token each.
    store.release_lease(lease, "worker-c").await.expect("store");
    for worker in [&a, &b] {
        let last = run_recompute(worker).await;
        assert_eq!(last.state(), JobState::Succeeded, "{last:?}");
    }
    let probe =
        store.acquire_lease(lease, "probe", Duration::from_secs(1)).await.expect("store").expect("released");
    assert_eq!(probe, held + 3, "a and b each took the lease once, then gave it up");

    // A holder that lost the lease cannot swap over a newer holder's boards.
    let stale = store::LeaderboardReplace {
        boards: vec![(boards::SEASON_XT.to_owned(), vec![("stale".into(), 1.0)])],
        through: None,
        fence: Some(store::Fence { lease: lease.into(), token: held }),
    };
    assert!(!store.replace_leaderboards(&stale).await.expect("store"), "a stale token swapped");
    assert!(!season_board(store.as_ref()).await.contains_key("stale"));
    a.stop().await.expect("stops");
    b.stop().await.expect("stops");
}

/// Every backend: a job is known to every replica, and one whose worker
/// died reads as failed instead of running forever.
async fn any_replica_answers_for_any_job(store: Arc<dyn StateStore>) {
    append(store.as_ref(), "jobs", 1, pass("jobs", 1, 7)).await;
    let named = |name: &str| WorkerConfig {
        consume: false,
        consumer_name: Some(name.into()),
        ..WorkerConfig::for_tests()
    };
    let a = spawn_worker(named("worker-a"), Arc::clone(&store)).await;
    let b = spawn_worker(named("worker-b"), Arc::clone(&store)).await;

    let done = run_recompute(&a).await;
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    let mut other = b.client().await;
    let seen = other.get_job(GetJobRequest { job_id: done.job_id.clone() }).await.expect("b knows a's job");
    let seen = seen.into_inner().progress.expect("set");
    assert_eq!(
        (seen.state(), seen.phase.as_str(), seen.started_ms),
        (JobState::Succeeded, "done", done.started_ms)
    );
    let mut watched = other
        .watch_job(contracts::v1::WatchJobRequest { job_id: done.job_id.clone() })
        .await
        .expect("b streams a's job")
        .into_inner();
    let last = watched.message().await.expect("a report").expect("one").progress.expect("set");
    assert_eq!(last.state(), JobState::Succeeded);
    assert!(watched.message().await.expect("ends").is_none(), "the stream ends with the job");

    // A worker died mid-job a minute ago: its record stopped being rewritten.
    let record = serde_json::json!({
        "id": "recompute-1-dead", "state": "running", "phase": "reading", "done": 5, "total": 9,
        "unit": "events", "error": null, "started_ms": 1, "finished_ms": 0,
        "updated_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64 - 60_000,
    });
    store.set("jobs:recompute-1-dead", bytes::Bytes::from(record.to_string())).await.expect("store");
    let dead = other.get_job(GetJobRequest { job_id: "recompute-1-dead".into() }).await.expect("known");
    let dead = dead.into_inner().progress.expect("set");
    assert_eq!(dead.state(), JobState::Failed, "{dead:?}");
    assert!(dead.error.contains("stopped answering"), "{dead:?}");

    // Client text that is no job id never becomes a store key.
    let err = other.get_job(GetJobRequest { job_id: "../jobs:*".into() }).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    a.stop().await.expect("stops");
    b.stop().await.expect("stops");
}

#[tokio::test]
async fn any_replica_answers_for_any_job_in_process() {
    any_replica_answers_for_any_job(Arc::new(store::MemoryStore::new())).await;
}

#[tokio::test]
async fn any_replica_answers_for_any_job_on_redis() {
    let Some(store) = redis().await else { return };
    any_replica_answers_for_any_job(store).await;
}

/// A pass written as another release would: `format` set to the given
/// value (0 is a release from before the field existed).
fn pass_in_format(match_id: &str, seq: u64, player: u32, format: u32) -> Vec<u8> {
    use prost::Message as _;
    let mut event =
        contracts::v1::MatchEvent::decode(pass(match_id, seq, player).as_slice()).expect("decodes");
    event.format = format;
    event.encode_to_vec()
}

#[tokio::test]
async fn entries_of_the_previous_format_count_and_newer_ones_wait_for_a_newer_worker() {
    let Some(store) = redis().await else { return };
    let current = contracts::STREAM_ENTRY_FORMAT;
    append(store.as_ref(), "mixed", 1, pass_in_format("mixed", 1, 7, current)).await;
    append(store.as_ref(), "mixed", 2, pass_in_format("mixed", 2, 8, 0)).await;
    append(store.as_ref(), "mixed", 3, pass_in_format("mixed", 3, 9, current + 1)).await;

    let config = WorkerConfig::for_tests();
    let expected = expected_totals(&bootstrap_model(&config), &[("mixed", 1, 7), ("mixed", 2, 8)]);
    let worker = spawn_worker(config, Arc::clone(&store)).await;
    let store_ref = store.as_ref();
    let expected_ref = &expected;
    let counted =
        eventually(
            Duration::from_secs(20),
            || async move { close(&season_board(store_ref).await, expected_ref) },
        )
        .await;
    assert!(counted, "board {:?}, expected {expected:?}", season_board(store.as_ref()).await);
    // The newer entry is neither counted nor acknowledged: it stays pending
    // for a replica that reads its format.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stream_backlog(GROUP).await.expect("backlog").pending, 1);
    assert_eq!(store.leaderboard_score(boards::SEASON_XT, "9").await.expect("score"), None);

    // A recompute would mark the newer entry as counted: it refuses instead.
    let last = run_recompute(&worker).await;
    assert_eq!(last.state(), JobState::Failed, "{last:?}");
    assert!(last.error.contains("newer format"), "{last:?}");
    assert!(close(&season_board(store.as_ref()).await, &expected), "a failed recompute changed the board");
    worker.stop().await.expect("stops");
}

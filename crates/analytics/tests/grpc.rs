//! The worker's RPCs over real gRPC on a free port: impact and win
//! probability answers, admission control, deadlines, cancellation, and a
//! health service that stays responsive while the pool is saturated.

mod helpers;

use std::{sync::Arc, time::Duration};

use analytics::WorkerConfig;
use contracts::v1::{ComputeImpactRequest, ComputeRequest, WinProbabilityRequest};
use domain::xt::{Action, ActionResult, ActionType, PlayerId, Point};
use helpers::{append, bootstrap_model, pass, spawn_worker};
use store::MemoryStore;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn quiet_config() -> WorkerConfig {
    WorkerConfig {
        consume: false,
        winprob_max_samples: domain::winprob::MAX_SAMPLES,
        ..WorkerConfig::for_tests()
    }
}

/// The rating the test model gives the pass `helpers::pass` builds.
fn rating_of(config: &WorkerConfig, seq: u64) -> f64 {
    let x = 5.0 + (seq % 13) as f64 * 7.0;
    let y = 4.0 + (seq % 7) as f64 * 9.0;
    let point = |x: f64, y: f64| Point::new(x, y).expect("on the pitch");
    let action = Action::new(
        ActionType::Pass,
        ActionResult::Success,
        point(x, y),
        point((x + 15.0).min(104.0), (y + 3.0).min(67.0)),
        PlayerId::new(0),
    );
    bootstrap_model(config).rate(&action).expect("a successful move is rated")
}

#[tokio::test]
async fn compute_impact_rates_one_match_or_a_set_of_players() {
    let store = Arc::new(MemoryStore::new());
    // Match a: player 7 makes passes 1 and 2, player 8 pass 3. Match b:
    // player 7 makes pass 1.
    for (seq, player) in [(1, 7), (2, 7), (3, 8)] {
        append(store.as_ref(), "a", seq, pass("a", seq, player)).await;
    }
    append(store.as_ref(), "b", 1, pass("b", 1, 7)).await;
    let config = quiet_config();
    let worker = spawn_worker(config.clone(), store.clone()).await;
    let mut client = worker.client().await;

    let by_match = client
        .compute_impact(ComputeImpactRequest { match_id: "a".into(), ..Default::default() })
        .await
        .expect("impact of a match")
        .into_inner();
    assert_eq!(by_match.events_scanned, 4);
    assert_eq!(by_match.moves_rated, 3);
    assert_eq!(by_match.model_source, "synthetic");
    let mut players: Vec<(u32, u64, f64)> =
        by_match.players.iter().map(|p| (p.player_id, p.moves, p.xt)).collect();
    players.sort_by_key(|p| p.0);
    assert_eq!((players[0].0, players[0].1), (7, 2));
    assert!((players[0].2 - (rating_of(&config, 1) + rating_of(&config, 2))).abs() < 1e-12, "{players:?}");
    assert_eq!((players[1].0, players[1].1), (8, 1));
    assert!((players[1].2 - rating_of(&config, 3)).abs() < 1e-12, "{players:?}");

    let by_player = client
        .compute_impact(ComputeImpactRequest { player_ids: vec![7], ..Default::default() })
        .await
        .expect("impact of a player")
        .into_inner();
    assert_eq!(by_player.players.len(), 1);
    assert_eq!(by_player.players[0].moves, 3, "both matches count");

    let err = client
        .compute_impact(ComputeImpactRequest { match_id: "a".into(), player_ids: vec![7], top: 0 })
        .await
        .expect_err("both scopes");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("exactly one"), "{}", err.message());
    let err = client
        .compute_impact(ComputeImpactRequest { match_id: "Not A Slug!".into(), ..Default::default() })
        .await
        .expect_err("bad match id");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn win_probability_gives_both_estimates_reproducibly() {
    let worker = spawn_worker(quiet_config(), Arc::new(MemoryStore::new())).await;
    let mut client = worker.client().await;
    let request =
        WinProbabilityRequest { minute: 80, home_goals: 1, samples: 400_000, seed: 7, ..Default::default() };

    let answer = client.win_probability(request).await.expect("answers").into_inner();
    let closed = answer.closed_form.expect("closed form");
    let simulated = answer.monte_carlo.expect("monte carlo");
    assert_eq!(answer.samples, 400_000);
    assert!((closed.home_win + closed.draw + closed.away_win - 1.0).abs() < 1e-9, "{closed:?}");
    assert!(closed.home_win > 0.7, "a late lead usually holds: {closed:?}");
    for (a, b) in [
        (closed.home_win, simulated.home_win),
        (closed.draw, simulated.draw),
        (closed.away_win, simulated.away_win),
    ] {
        // Four standard errors at 400,000 samples is under 0.004.
        assert!((a - b).abs() < 0.005, "closed {closed:?} vs simulated {simulated:?}");
    }
    let again = client.win_probability(request).await.expect("answers").into_inner();
    assert_eq!(again.monte_carlo, Some(simulated), "the same seed gives the same answer");

    let default_samples = client
        .win_probability(WinProbabilityRequest { samples: 0, ..request })
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(default_samples.samples, WorkerConfig::for_tests().winprob_samples);

    for (bad, what) in [
        (WinProbabilityRequest { minute: 200, ..request }, "minute"),
        (WinProbabilityRequest { home_red_cards: 9, ..request }, "red cards"),
        (WinProbabilityRequest { samples: domain::winprob::MAX_SAMPLES + 1, ..request }, "samples"),
    ] {
        let err = client.win_probability(bad).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    worker.stop().await.expect("stops");
}

/// A win probability request that would hold its pool thread for minutes
/// unless cancelled.
fn endless() -> WinProbabilityRequest {
    WinProbabilityRequest { samples: domain::winprob::MAX_SAMPLES, seed: 1, ..Default::default() }
}

#[tokio::test]
async fn health_answers_and_new_work_is_refused_while_the_pool_is_saturated() {
    // Two threads, no queue: two jobs fill the pool.
    // The backlog budget is out of the way: this is about the job count.
    let config = WorkerConfig { pool_queue: 0, pool_backlog_ms: 600_000, ..quiet_config() };
    let worker = spawn_worker(config, Arc::new(MemoryStore::new())).await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut client = worker.client().await;
        holders.push(tokio::spawn(async move { client.win_probability(endless()).await }));
    }

    // Once both are admitted, the next job is refused at once.
    let mut client = worker.client().await;
    let refused = helpers::eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            matches!(client.compute(ComputeRequest { n: 1 }).await, Err(status) if status.code() == Code::ResourceExhausted)
        }
    })
    .await;
    assert!(refused, "the pool never reported saturation");
    let status = client.compute(ComputeRequest { n: 1 }).await.expect_err("still saturated");
    assert!(status.message().contains("retry later"), "{}", status.message());

    let mut health = HealthClient::new(worker.channel().await);
    let started = std::time::Instant::now();
    let answer = health.check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
    let latency = started.elapsed();
    println!("health check latency with the pool saturated: {latency:?}");
    assert_eq!(answer.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    assert!(latency < Duration::from_millis(500), "health took {latency:?} while the pool was busy");

    // Callers that give up cancel their jobs: the pool frees up long before
    // a billion samples could have been simulated.
    for holder in &holders {
        holder.abort();
    }
    let freed = helpers::eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move { client.compute(ComputeRequest { n: 10 }).await.is_ok() }
    })
    .await;
    assert!(freed, "cancelled jobs kept the pool busy");
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn work_whose_deadline_passed_in_the_queue_is_dropped() {
    // One thread: a holder occupies it, the next job waits in the queue.
    let config = WorkerConfig {
        pool_threads: std::num::NonZeroUsize::new(1),
        pool_queue: 4,
        pool_backlog_ms: 600_000,
        compute_max_n: 1_000_000_000,
        ..quiet_config()
    };
    let worker = spawn_worker(config.clone(), Arc::new(MemoryStore::new())).await;
    let holder = {
        let mut client = worker.client().await;
        tokio::spawn(async move { client.win_probability(endless()).await })
    };
    let mut client = worker.client().await;
    // Wait until the holder runs: a tiny probe with a short deadline then
    // cannot finish.
    let busy = helpers::eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let mut probe = tonic::Request::new(ComputeRequest { n: 1 });
            probe.set_timeout(Duration::from_millis(50));
            client.compute(probe).await.is_err()
        }
    })
    .await;
    assert!(busy, "the holder never occupied the pool");

    // A long job whose deadline passes while it waits in the queue.
    let mut queued = tonic::Request::new(ComputeRequest { n: config.compute_max_n });
    queued.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = client.compute(queued).await.expect_err("the deadline passes in the queue");
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not honoured");

    // Free the thread. Had the expired job (a billion square roots, seconds
    // of work) run anyway, the next job would wait behind it.
    holder.abort();
    let next = client.compute(ComputeRequest { n: 10 }).await.expect("runs").into_inner();
    println!("queue wait after the expired job: {} us", next.queue_micros);
    assert!(next.queue_micros < 1_000_000, "waited {} us: the expired job ran", next.queue_micros);
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn heavy_requests_are_refused_at_once_instead_of_queueing_past_their_deadline() {
    // Two threads, half a second of estimated work each.
    let config = WorkerConfig { pool_backlog_ms: 500, ..quiet_config() };
    let worker = spawn_worker(config, Arc::new(MemoryStore::new())).await;
    let holder = {
        let mut client = worker.client().await;
        tokio::spawn(async move { client.win_probability(endless()).await })
    };
    let mut client = worker.client().await;
    let held = helpers::eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            matches!(client.compute(ComputeRequest { n: 1 }).await, Err(status) if status.code() == Code::ResourceExhausted)
        }
    })
    .await;
    assert!(held, "the holder's work never filled the backlog");

    // Requests like those that once waited out their deadline behind each
    // other: each is told to retry, at once.
    for _ in 0..4 {
        let mut heavy = tonic::Request::new(WinProbabilityRequest {
            samples: 100_000_000,
            seed: 1,
            ..Default::default()
        });
        heavy.set_timeout(Duration::from_secs(3));
        let status = client.win_probability(heavy).await.expect_err("no room for it");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("ms of work"), "{}", status.message());
    }

    holder.abort();
    let freed = helpers::eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move { client.compute(ComputeRequest { n: 10 }).await.is_ok() }
    })
    .await;
    assert!(freed, "the cancelled holder kept its share of the backlog");
    worker.stop().await.expect("stops");
}

#[tokio::test]
async fn on_shutdown_health_says_not_serving_while_calls_are_still_answered() {
    let config = WorkerConfig { drain_delay_secs: 2, ..quiet_config() };
    let mut worker = spawn_worker(config, Arc::new(MemoryStore::new())).await;
    let channel = worker.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let status_of = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .expect("health answers")
                .into_inner()
                .status
        }
    };
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    assert_eq!(status_of("").await, SERVING);
    assert_eq!(status_of("courtside.v1.AnalyticsService").await, SERVING);

    worker.signal_stop();
    let flipped = helpers::eventually(Duration::from_secs(2), || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok_and(|r| r.into_inner().status == NOT_SERVING)
        }
    })
    .await;
    assert!(flipped, "the empty service name (what probes ask about) never said NOT_SERVING");
    assert_eq!(status_of("courtside.v1.AnalyticsService").await, NOT_SERVING);
    // Still serving calls during the drain delay.
    let mut client = contracts::v1::analytics_service_client::AnalyticsServiceClient::new(channel);
    client.compute(ComputeRequest { n: 1_000 }).await.expect("answered while draining");
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health still answers");
    worker.stop().await.expect("stops cleanly");
}

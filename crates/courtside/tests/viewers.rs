//! Dashboard viewers share the worker's win-probability computations: fifty
//! clients behaving like the live page (`crates/gateway/src/dashboard/app.js`:
//! subscribe to every match, ask for the win probability when a match's
//! score line changes, after a debounce) cause at most one computation per
//! match state, counted in the worker's own metrics. The full-size run (2,000
//! viewers for a minute) is `courtside-loadtest viewers`.
//!
//! In a binary of its own: the worker's counters live in the process's one
//! metrics registry, and other tests' traffic would add to them.

mod helpers;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use helpers::live::{WsClient, kickoff, publish_ok};
use serde_json::{Value, json};
use tokio::time::Instant;

const VIEWERS: usize = 50;
const MATCHES: [&str; 2] = ["viewers-a", "viewers-b"];
const DEBOUNCE: Duration = Duration::from_millis(400);

#[test]
fn the_operators_view_reads_the_workers_series_by_their_names() {
    use analytics::metrics as worker;
    use gateway::routes::views::worker_series as seen;
    assert_eq!(seen::POOL_THREADS, worker::POOL_THREADS);
    assert_eq!(seen::POOL_QUEUE_DEPTH, worker::POOL_QUEUE_DEPTH);
    assert_eq!(seen::POOL_RUN, worker::POOL_RUN);
    assert_eq!(seen::POOL_BUSY, worker::POOL_BUSY);
    assert_eq!(seen::POOL_REJECTIONS, worker::POOL_REJECTIONS);
    assert_eq!(seen::POOL_DEADLINE_DROPS, worker::POOL_DEADLINE_DROPS);
    assert_eq!(seen::CONSUMER_LAG, worker::CONSUMER_LAG);
    assert_eq!(seen::CONSUMER_PENDING, worker::CONSUMER_PENDING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_viewers_cause_at_most_one_win_probability_computation_per_match_state() {
    // Arrange: both tiers, two matches under way.
    let tiers = helpers::spawn_tiers().await;
    let addr = tiers.gateway.addr;
    let client = tiers.client.clone();
    let metrics = format!("http://{}/metrics", tiers.worker_metrics.expect("the test worker serves metrics"));
    for id in MATCHES {
        publish_ok(&client, addr, &kickoff(id)).await;
    }
    let before = win_probability_runs(&client, &metrics).await;

    // Act: viewers for ten seconds; events for the first eight, so every
    // state published is seen before the viewers leave.
    let states = Arc::new(Mutex::new(HashSet::new()));
    let requests = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(10);
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let (states, requests, client) = (Arc::clone(&states), Arc::clone(&requests), client.clone());
            tokio::spawn(async move { viewer(addr, &client, until, &states, &requests).await })
        })
        .collect();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let stop = Instant::now() + Duration::from_secs(8);
            let mut seq = 1;
            let mut minute = 0;
            while Instant::now() < stop {
                seq += 1;
                minute += 1;
                for (index, id) in MATCHES.iter().enumerate() {
                    let event = if seq % 4 == 0 {
                        json!({"match_id": id, "seq": seq, "kind": "goal", "minute": minute, "team": 1 + index % 2, "player": 9})
                    } else {
                        json!({"match_id": id, "seq": seq, "kind": "pass", "minute": minute, "team": 1, "player": 7,
                               "start": {"x": 40.0, "y": 30.0}, "end": {"x": 60.5, "y": 20.0}, "success": true})
                    };
                    publish_ok(&client, addr, &event).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    publisher.await.expect("publisher finishes");
    for viewer in viewers {
        viewer.await.expect("viewer finishes");
    }
    // A computation still running is counted when it ends.
    let seen = states.lock().expect("states").len() as u64;
    let asked = requests.load(Ordering::Relaxed);
    let mut computations = 0;
    for _ in 0..20 {
        computations = win_probability_runs(&client, &metrics).await - before;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Assert: one computation per state at most, however many viewers asked.
    assert!(seen >= 10, "the viewers saw {seen} match states");
    assert!(asked >= VIEWERS as u64 * seen / 2, "{asked} requests for {seen} states");
    assert!(computations >= 1, "the worker computed nothing");
    assert!(
        computations <= seen,
        "{computations} worker computations for {seen} match states ({asked} requests)"
    );
}

/// One viewer until `until`: the page's scores view, minus the drawing.
async fn viewer(
    addr: std::net::SocketAddr,
    client: &reqwest::Client,
    until: Instant,
    states: &Mutex<HashSet<(String, String)>>,
    requests: &AtomicU64,
) {
    let mut ws = WsClient::connect(addr).await;
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut seen = |message: &Value, due: &mut HashMap<String, Instant>| {
        let (Some(id), Some(key)) = (message["match"].as_str(), line_key(&message["state"])) else { return };
        if keys.get(id) != Some(&key) {
            keys.insert(id.to_owned(), key.clone());
            states.lock().expect("states").insert((id.to_owned(), key));
            due.insert(id.to_owned(), Instant::now() + DEBOUNCE);
        }
    };
    for id in MATCHES {
        let subscribed = ws.subscribe(id, None).await;
        seen(&subscribed, &mut due);
    }
    while Instant::now() < until {
        if let Some(message) = ws.recv_or_none().await {
            seen(&message, &mut due);
        }
        let now = Instant::now();
        let fire: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
        for id in fire {
            due.remove(&id);
            requests.fetch_add(1, Ordering::Relaxed);
            let url = format!("http://{addr}/v1/views/matches/{id}/win-probability");
            let response = client.get(url).send().await.expect("request reaches the gateway");
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    }
}

fn line_key(state: &Value) -> Option<String> {
    let n = |a: &str, b: Option<&str>| {
        let value = &state[a];
        b.map_or(value, |b| &value[b]).as_u64()
    };
    Some(format!(
        "{}:{}:{}:{}:{}",
        n("minute", None)?,
        n("score", Some("home"))?,
        n("score", Some("away"))?,
        n("red_cards", Some("home"))?,
        n("red_cards", Some("away"))?
    ))
}

async fn win_probability_runs(client: &reqwest::Client, url: &str) -> u64 {
    let text = client.get(url).send().await.expect("scrape").text().await.expect("text");
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("courtside_pool_task_duration_seconds_count{task=\"win probability\"}")
        })
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

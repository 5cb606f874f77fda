//! The dashboard-viewers scenario: many clients behaving like the live page,
//! against one gateway, counting how many win-probability computations the
//! worker ran for them.
//!
//! Each viewer does what `crates/gateway/src/dashboard/app.js` does on the
//! scores view: reads the match ids once, subscribes to every match over
//! one WebSocket, and when a match's score line changes (a goal, a red card,
//! or five more minutes on the clock), asks `GET /v1/views/matches/{id}/win-probability` after the
//! page's debounce (400 ms plus up to 200 ms of jitter). Every 30 s (±25%)
//! it looks for new matches.
//!
//! The figure: the worker's `courtside_pool_task_duration_seconds_count
//! {task="win probability"}` before and after, against the distinct match
//! states of the run (each `(match, score line)` once: the states at the
//! start and after every event published during the run, read back from
//! the matches' history at the end, so a viewer that fell behind does not
//! shrink the count). The gateway's shared cache should make the first at
//! most the second: one computation per match per state change, not one
//! per viewer.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// The worker's series that counts win-probability computations.
const WIN_PROBABILITY_RUNS: &str = "courtside_pool_task_duration_seconds_count{task=\"win probability\"}";
const DEBOUNCE: Duration = Duration::from_millis(400);
const DISCOVERY: Duration = Duration::from_secs(30);
/// The page subscribes to at most this many matches (the gateway's limit
/// per connection).
const MAX_MATCHES: usize = 64;

/// Settings of one viewers run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ViewersArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// Where the worker's metrics are scraped: the gateway's `/metrics` in
    /// the all-in-one binary (the default), the worker's own listener
    /// (`http://127.0.0.1:9464/metrics`) when the tiers run apart.
    #[arg(long)]
    pub(crate) metrics: Option<String>,
    /// Read token, when the gateway needs one.
    #[arg(long, default_value = "")]
    pub(crate) token: String,
    #[arg(long, default_value_t = 2000)]
    pub(crate) viewers: usize,
    /// Seconds the viewers stay.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Viewers connecting per second while ramping up.
    #[arg(long, default_value_t = 500)]
    pub(crate) ramp_per_second: u64,
}

/// What the viewers saw and did, together.
#[derive(Debug, Default)]
struct Tally {
    /// Every `(match, score line)` any viewer saw.
    states: Mutex<HashSet<(String, String)>>,
    requests: AtomicU64,
    failures: AtomicU64,
    messages: AtomicU64,
    connected: AtomicU64,
    disconnects: AtomicU64,
}

pub(crate) async fn run(args: ViewersArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let metrics_url = args.metrics.clone().unwrap_or_else(|| format!("{base}/metrics"));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let start =
        get_json(&http, &format!("{base}/v1/matches"), &args.token).await.context("list the matches")?;
    let start: Vec<(String, u64)> = start["matches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["id"].as_str()?.to_owned(), m["seq"].as_u64()?)))
        .collect();
    let before = worker_runs(&http, &metrics_url).await.context("scrape the worker's metrics before")?;

    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(args.duration);
    let pause = Duration::from_secs_f64(1.0 / args.ramp_per_second.max(1) as f64);
    let mut viewers = Vec::with_capacity(args.viewers);
    for _ in 0..args.viewers {
        let (http, base, token, tally) = (http.clone(), base.clone(), args.token.clone(), Arc::clone(&tally));
        viewers.push(tokio::spawn(async move { viewer(&http, &base, &token, until, &tally).await }));
        tokio::time::sleep(pause).await;
    }
    let mut errors = 0u64;
    for viewer in viewers {
        if !matches!(viewer.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    // A computation started by the last requests is counted when it ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = worker_runs(&http, &metrics_url).await.context("scrape the worker's metrics after")?;

    let seen = tally.states.lock().await.len();
    let states = run_states(&http, &base, &args.token, &start).await.context("read the matches' history")?;
    let computations = after - before;
    let requests = tally.requests.load(Ordering::Relaxed);
    println!(
        "{{\"scenario\":\"viewers\",\"system\":\"courtside\",\"x\":{},\"duration_s\":{},\"connected\":{},\
         \"match_states\":{states},\"states_seen\":{seen},\"win_probability_requests\":{requests},\"worker_computations\":{computations},\
         \"computations_per_state\":{:.3},\"requests_per_computation\":{:.1},\"messages\":{},\"disconnects\":{},\
         \"failed_requests\":{},\"errors\":{errors}}}",
        args.viewers,
        args.duration,
        tally.connected.load(Ordering::Relaxed),
        computations as f64 / states.max(1) as f64,
        requests as f64 / computations.max(1) as f64,
        tally.messages.load(Ordering::Relaxed),
        tally.disconnects.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        computations <= states as u64,
        "{computations} worker computations for {states} match states: the cache is not shared"
    );
    Ok(())
}

/// The distinct `(match, score line)` states from `start` (each match's
/// sequence number then) to now: the state at `start` and after each later
/// event, replayed from the matches' history. Matches that began during
/// the run count from their kickoff.
async fn run_states(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    start: &[(String, u64)],
) -> anyhow::Result<usize> {
    use futures::SinkExt as _;
    let ids = get_json(http, &format!("{base}/v1/views/matches"), token).await?;
    let mut from: HashMap<String, u64> = start.iter().cloned().collect();
    for id in ids["matches"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        from.entry(id.to_owned()).or_insert(0);
    }
    let ws_url = format!(
        "{}/v1/live{}",
        base.replacen("http", "ws", 1),
        if token.is_empty() { String::new() } else { format!("?token={token}") }
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.context("websocket")?;
    let mut states = HashSet::new();
    for (id, since) in from {
        let command = serde_json::json!({"op": "subscribe", "match": id, "since": since.saturating_sub(1)});
        socket.send(Message::text(command.to_string())).await?;
        // `subscribed` (the head state), then the replayed events, each
        // with the state after it.
        let mut replayed = None;
        let mut received = 0u64;
        while replayed.is_none_or(|n| received < n) {
            let Some(message) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await? else {
                anyhow::bail!("the gateway closed the connection");
            };
            let Message::Text(text) = message? else { continue };
            let value: Value = serde_json::from_str(&text)?;
            if value["match"].as_str() != Some(id.as_str()) {
                continue;
            }
            match value["type"].as_str() {
                Some("subscribed") => {
                    anyhow::ensure!(value["recovered"] != false, "history of {id} no longer covers the run");
                    replayed = value["replayed"].as_u64().or(Some(0));
                }
                Some("event") if replayed.is_some() => received += 1,
                _ => continue,
            }
            if let Some(key) = line_key(&value["state"]) {
                states.insert((id.clone(), key));
            }
        }
        let command = serde_json::json!({"op": "unsubscribe", "match": id});
        socket.send(Message::text(command.to_string())).await?;
    }
    Ok(states.len())
}

/// The worker's win-probability computations so far (0 before the first).
async fn worker_runs(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let text = http.get(url).send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix(WIN_PROBABILITY_RUNS))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .sum())
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let mut request = http.get(url);
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?.error_for_status()?.json().await?)
}

fn line_key(state: &Value) -> Option<String> {
    let n = |path: &[&str]| path.iter().try_fold(state, |v, key| v.get(key)).and_then(Value::as_u64);
    Some(format!(
        "{}:{}:{}:{}:{}",
        n(&["minute"])?,
        n(&["score", "home"])?,
        n(&["score", "away"])?,
        n(&["red_cards", "home"])?,
        n(&["red_cards", "away"])?
    ))
}

/// When the page asks again: a goal, a red card, or five more minutes on
/// the clock (as `lineKey` in the page's script).
fn page_key(state: &Value) -> Option<String> {
    let n = |path: &[&str]| path.iter().try_fold(state, |v, key| v.get(key)).and_then(Value::as_u64);
    Some(format!(
        "{}:{}:{}:{}:{}",
        n(&["minute"])? / 5,
        n(&["score", "home"])?,
        n(&["score", "away"])?,
        n(&["red_cards", "home"])?,
        n(&["red_cards", "away"])?
    ))
}

/// One viewer until `until`: the page's scores view, minus the drawing.
async fn viewer(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    until: Instant,
    tally: &Tally,
) -> anyhow::Result<()> {
    let ids_url = format!("{base}/v1/views/matches");
    let ws_url = format!(
        "{}/v1/live{}",
        base.replacen("http", "ws", 1),
        if token.is_empty() { String::new() } else { format!("?token={token}") }
    );
    let (socket, _) = tokio_tungstenite::connect_async(&ws_url).await.context("websocket")?;
    tally.connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    use futures::SinkExt as _;

    let mut subscribed: HashSet<String> = HashSet::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    // Match → when its debounced request is due.
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut next_discovery = Instant::now();

    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if now >= next_discovery {
            let ids = get_json(http, &ids_url, token).await?;
            for id in ids["matches"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if subscribed.len() < MAX_MATCHES && subscribed.insert(id.to_owned()) {
                    let command = serde_json::json!({"op": "subscribe", "match": id}).to_string();
                    sink.send(Message::text(command)).await?;
                }
            }
            next_discovery = now + DISCOVERY.mul_f64(0.75 + fastrand_unit() / 2.0);
        }
        let fire = due.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect::<Vec<_>>();
        for id in fire {
            due.remove(&id);
            tally.requests.fetch_add(1, Ordering::Relaxed);
            let url = format!("{base}/v1/views/matches/{id}/win-probability");
            if get_json(http, &url, token).await.is_err() {
                tally.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wake = due.values().copied().chain([next_discovery, until]).min().unwrap_or(until);
        let message = match tokio::time::timeout_at(wake.into(), stream.next()).await {
            Err(_) => continue,
            Ok(None) | Ok(Some(Err(_))) => {
                tally.disconnects.fetch_add(1, Ordering::Relaxed);
                anyhow::bail!("the gateway closed the connection");
            }
            Ok(Some(Ok(message))) => message,
        };
        let Message::Text(text) = message else { continue };
        tally.messages.fetch_add(1, Ordering::Relaxed);
        let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
        let (Some(id), Some(state)) = (value["match"].as_str(), value.get("state")) else { continue };
        let (Some(key), Some(trigger)) = (line_key(state), page_key(state)) else { continue };
        tally.states.lock().await.insert((id.to_owned(), key));
        if keys.get(id) != Some(&trigger) {
            keys.insert(id.to_owned(), trigger);
            let jitter = Duration::from_millis((fastrand_unit() * 200.0) as u64);
            due.insert(id.to_owned(), Instant::now() + DEBOUNCE + jitter);
        }
    }
    Ok(())
}

/// A number in [0, 1), good enough to spread timers.
fn fastrand_unit() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

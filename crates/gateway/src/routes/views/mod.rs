//! What the dashboard's views read, shaped for a page that many people open
//! at once.
//!
//! - `GET /v1/views/matches/{id}/win-probability`: win probability of a
//!   match's current state (or the state after event `seq`), through a
//!   short-lived shared cache. When a goal goes in, every viewer's page asks
//!   within the same second; the first request calls the worker and the
//!   others wait for its answer (a single flight per key), so the worker
//!   computes once per match state, not once per viewer.
//! - `GET /v1/views/matches`: the ids of the matches there are, shared by
//!   every viewer for a few seconds. The page learns each match's state
//!   from its WebSocket subscription; this only tells it which matches to
//!   subscribe to, so asking now and then for new ones costs the store one
//!   read per gateway however many viewers ask.
//! - `GET /v1/views/xt-grid`: the Expected Threat surface the worker rates
//!   moves with, for the season heatmap (cached for a few seconds).
//! - `GET /v1/views/season`: the season leaderboards (xT added, win
//!   probability added), read from the store like `/v1/matches/{id}/impact`.
//! - `GET /v1/views/ops`: the operators' figures in one document: the
//!   runtime-fit report, live connections by transport, each runtime's
//!   event-loop lag and busy share, the worker pool and the stream consumer.
//!
//! All of them are reads: public unless read tokens are configured.

use std::sync::Arc;

use axum::{Json, extract::State, http::HeaderMap};
use domain::boards;
use domain::live::MatchId;
use serde::{Deserialize, Serialize};
use store::StateStore;
use utoipa_axum::{router::OpenApiRouter, routes};

use edge::{
    auth::{Auth, TokenQuery},
    extract::{Path, Query},
    fit::{Report, RuntimeFit},
};

use crate::{
    error::ApiError,
    live::{
        LiveState,
        wire::{MatchView, Score},
    },
    routes::impact::{PlayerWpa, PlayerXt},
    state::AppState,
    worker::{Outcome, ScoreLine, WorkerClient, XtGrid},
};

use self::cache::ViewCaches;

pub mod cache;

/// Match ids listed; the page subscribes to at most 64 anyway.
const MAX_MATCH_IDS: usize = 1_000;
/// Players per season leaderboard when the caller does not say.
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 100;

/// The routes of this module with their OpenAPI descriptions.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(match_ids))
        .routes(routes!(win_probability))
        .routes(routes!(xt_grid))
        .routes(routes!(season))
        .routes(routes!(ops))
}

/// The matches there are, by id, sorted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchIds {
    pub matches: Vec<String>,
}

/// The ids of the matches there are (see the module documentation).
#[utoipa::path(get, path = "/v1/views/matches", tag = "dashboard",
    responses(
        (status = 200, description = "match ids, sorted (at most 1000)", body = MatchIds),
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 503, description = "state store unavailable", body = edge::error::ErrorBody),
    ))]
pub async fn match_ids(
    State(store): State<Arc<dyn StateStore>>,
    State(auth): State<Arc<Auth>>,
    State(views): State<Arc<ViewCaches>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Json<MatchIds>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let ids = views
        .match_ids
        .get((), async {
            let mut matches: Vec<String> = store.log_states().await?.into_iter().map(|(id, _)| id).collect();
            matches.sort_unstable();
            matches.truncate(MAX_MATCH_IDS);
            Ok(Arc::new(matches))
        })
        .await?;
    Ok(Json(MatchIds { matches: ids.to_vec() }))
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    /// The state after this event; the current state when absent.
    pub seq: Option<u64>,
    /// Read token, when reads need one.
    pub token: Option<String>,
}

/// A match state's win probability, as the dashboard shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateWinProbability {
    #[serde(rename = "match")]
    pub match_id: String,
    /// The event after which the state stood.
    pub seq: u64,
    pub minute: u16,
    pub score: Score,
    pub red_cards: Score,
    /// The exact answer of the Poisson model: what the bar shows.
    pub closed_form: Outcome,
    pub monte_carlo: Outcome,
    pub samples: u64,
}

/// Win probability of a match state, computed by the worker once per state
/// however many viewers ask (see the module documentation).
#[utoipa::path(get, path = "/v1/views/matches/{id}/win-probability", tag = "dashboard",
    params(
        ("id" = String, Path, description = "match id"),
        ("seq" = Option<u64>, Query, description = "the state after this event (default: the current state)"),
    ),
    responses(
        (status = 200, description = "win probability of the state", body = StateWinProbability),
        (status = 400, description = "invalid id, or `seq` beyond the match or no longer in its history", body = edge::error::ErrorBody),
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 404, description = "no such match", body = edge::error::ErrorBody),
        (status = 503, description = "worker busy or unavailable; see Retry-After", body = edge::error::ErrorBody),
    ))]
pub async fn win_probability(
    State(live): State<Arc<LiveState>>,
    State(worker): State<WorkerClient>,
    State(auth): State<Arc<Auth>>,
    State(views): State<Arc<ViewCaches>>,
    Path(match_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<StateQuery>,
) -> Result<Json<StateWinProbability>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let id = MatchId::parse(&match_id).map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let (seq, view) = match_state(&live, &id, query.seq).await?;
    let line = ScoreLine {
        minute: view.minute,
        home_goals: view.score.home,
        away_goals: view.score.away,
        home_red_cards: view.red_cards.home,
        away_red_cards: view.red_cards.away,
    };
    // The key holds the match id only now that the match is known to exist.
    let probabilities = views
        .win_probability
        .get((id.to_string(), line), async { worker.win_probability(line, 0).await.map(Arc::new) })
        .await?;
    Ok(Json(StateWinProbability {
        match_id: id.to_string(),
        seq,
        minute: view.minute,
        score: view.score,
        red_cards: view.red_cards,
        closed_form: probabilities.closed_form,
        monte_carlo: probabilities.monte_carlo,
        samples: probabilities.samples,
    }))
}

/// One entry of a match's history: the update as it was published. Only
/// the state is read here.
#[derive(Debug, Deserialize)]
struct HistoryEntry {
    state: MatchView,
}

/// The match's state after event `seq` (its current state when `None`),
/// with the sequence number it stood at.
async fn match_state(live: &LiveState, id: &MatchId, seq: Option<u64>) -> Result<(u64, MatchView), ApiError> {
    let corrupt = |err: serde_json::Error| {
        ApiError::Unexpected(anyhow::anyhow!("stored match state is not valid json: {err}"))
    };
    let store = &live.subscriptions.store;
    let current = match live.subscriptions.hub.cached_state(id.as_str()) {
        Some(cached) => Some(cached),
        None => store.log_state(id.as_str()).await?.map(|(_, state)| state),
    };
    let current = current.ok_or_else(|| ApiError::UnknownMatch(id.to_string()))?;
    let current: MatchView = serde_json::from_slice(&current).map_err(corrupt)?;
    let Some(seq) = seq.filter(|&seq| seq != current.seq) else {
        return Ok((current.seq, current));
    };
    if seq == 0 || seq > current.seq {
        return Err(ApiError::invalid_parameter(format!(
            "seq must be between 1 and the match's last event ({}), got {seq}",
            current.seq
        )));
    }
    let slice = store.read_log(id.as_str(), seq - 1, 1).await?;
    match slice.entries.into_iter().next() {
        Some((found, entry)) if found == seq => {
            let entry: HistoryEntry = serde_json::from_slice(&entry).map_err(corrupt)?;
            Ok((seq, entry.state))
        }
        _ => {
            Err(ApiError::invalid_parameter(format!("event {seq} of match {id} is no longer in its history")))
        }
    }
}

/// The Expected Threat surface the worker rates moves with.
#[utoipa::path(get, path = "/v1/views/xt-grid", tag = "dashboard",
    responses(
        (status = 200, description = "the grid, row 0 at the top of the pitch", body = XtGrid),
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 503, description = "worker unavailable; see Retry-After", body = edge::error::ErrorBody),
    ))]
pub async fn xt_grid(
    State(worker): State<WorkerClient>,
    State(auth): State<Arc<Auth>>,
    State(views): State<Arc<ViewCaches>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Json<XtGrid>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let grid = views.xt_grid.get((), async { worker.xt_grid().await.map(Arc::new) }).await?;
    Ok(Json(XtGrid::clone(&grid)))
}

#[derive(Debug, Deserialize)]
pub struct SeasonQuery {
    /// Players per leaderboard (default 10, at most 100).
    pub top: Option<usize>,
    /// Read token, when reads need one.
    pub token: Option<String>,
}

/// The season's leaderboards.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeasonView {
    /// By Expected Threat added over every match, best first.
    pub xt: Vec<PlayerXt>,
    /// Scorers by win probability added over every match, best first.
    pub wpa: Vec<PlayerWpa>,
}

/// The season leaderboards the worker's stream consumer keeps current.
#[utoipa::path(get, path = "/v1/views/season", tag = "dashboard",
    params(("top" = Option<usize>, Query, description = "players per leaderboard")),
    responses(
        (status = 200, description = "the leaderboards (empty until the worker has rated moves)", body = SeasonView),
        (status = 400, description = "invalid `top`", body = edge::error::ErrorBody),
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 503, description = "state store unavailable", body = edge::error::ErrorBody),
    ))]
pub async fn season(
    State(store): State<Arc<dyn StateStore>>,
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(query): Query<SeasonQuery>,
) -> Result<Json<SeasonView>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let top = match query.top {
        None => DEFAULT_TOP,
        Some(n) if (1..=MAX_TOP).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid_parameter(format!(
                "`top` must be between 1 and {MAX_TOP}, got {n}"
            )));
        }
    };
    let xt = store.leaderboard(boards::SEASON_XT, top).await?;
    let wpa = store.leaderboard(boards::SEASON_WPA, top).await?;
    Ok(Json(SeasonView {
        xt: xt.into_iter().map(|r| PlayerXt { player: r.member, xt: r.score }).collect(),
        wpa: wpa.into_iter().map(|r| PlayerWpa { player: r.member, wpa: r.score }).collect(),
    }))
}

/// Everything the operators' view shows, at one instant. Counters are
/// totals since start: the page turns two snapshots into rates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpsView {
    /// Per route: requests, p50/p99, CPU share on the event loop, verdict.
    pub fit: Report,
    /// Open connections by transport: `websocket`, `sse`, and `http`
    /// (plain HTTP connections; upgraded WebSockets leave that count).
    pub connections: Vec<Labelled>,
    /// Messages written to live subscribers since start.
    pub delivered: u64,
    /// Each tokio runtime of this process (`gateway`, and `worker` when the
    /// worker shares the process).
    pub runtimes: Vec<RuntimeView>,
    /// The worker's CPU pool; absent when the worker runs in another
    /// process (its `/metrics` has it).
    pub pool: Option<PoolView>,
    /// The worker's stream consumer; absent as `pool` is.
    pub consumer: Option<ConsumerView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Labelled {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuntimeView {
    pub runtime: String,
    pub workers: Option<f64>,
    /// Share of the last second its threads spent polling tasks (0..1).
    pub busy_ratio: Option<f64>,
    pub alive_tasks: Option<f64>,
    /// How late a task waking every 100 ms ran, since start.
    pub event_loop_lag: HistogramView,
}

/// A cumulative histogram: `buckets` are (upper bound, count at or below).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct HistogramView {
    pub count: f64,
    pub sum: f64,
    pub buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub threads: f64,
    /// Jobs admitted and waiting for a thread.
    pub queue_depth: f64,
    /// Seconds the threads spent running jobs since start: over two
    /// snapshots, `Δbusy / (Δt × threads)` is the utilisation.
    pub busy_seconds: f64,
    /// Jobs refused because the queue was full.
    pub rejections: f64,
    /// Jobs skipped because their caller had stopped waiting.
    pub deadline_drops: f64,
    /// Jobs run, by task (`win probability`, `rate stream batch`, ...).
    pub tasks: Vec<Labelled>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerView {
    /// Stream entries not yet delivered to the consumer group.
    pub lag_entries: f64,
    /// Entries delivered and not yet acknowledged.
    pub pending_entries: f64,
}

/// The operators' figures (see [`OpsView`]). Read-protected like the other
/// reads: it names matches' traffic, if not their data.
#[utoipa::path(get, path = "/v1/views/ops", tag = "ops",
    responses(
        (status = 200, description = "the figures now", body = OpsView),
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
    ))]
pub async fn ops(
    State(fit): State<Arc<RuntimeFit>>,
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Json<OpsView>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    // The process's own exposition: the worker's series are in it when the
    // worker shares the process (the all-in-one binary), as on `/metrics`.
    let text = telemetry::metrics::render();
    Ok(Json(ops_view(fit.report(), live.delivered(), &Exposition::parse(&text))))
}

/// Series names of the worker (`analytics::metrics`), which the gateway
/// does not link; `crates/courtside/tests` checks that they still match.
pub mod worker_series {
    pub const POOL_THREADS: &str = "courtside_pool_threads";
    pub const POOL_QUEUE_DEPTH: &str = "courtside_pool_queue_depth";
    pub const POOL_RUN: &str = "courtside_pool_task_duration_seconds";
    pub const POOL_BUSY: &str = "courtside_pool_busy_seconds_total";
    pub const POOL_REJECTIONS: &str = "courtside_pool_rejections_total";
    pub const POOL_DEADLINE_DROPS: &str = "courtside_pool_deadline_drops_total";
    pub const CONSUMER_LAG: &str = "courtside_consumer_lag_entries";
    pub const CONSUMER_PENDING: &str = "courtside_consumer_pending_entries";
}

fn ops_view(fit: Report, delivered: u64, metrics: &Exposition<'_>) -> OpsView {
    use telemetry::metrics::{EVENT_LOOP_LAG, TOKIO_ALIVE_TASKS, TOKIO_BUSY_RATIO, TOKIO_WORKERS};
    use worker_series::*;

    let mut connections: Vec<Labelled> = metrics
        .samples(livefeed::metrics::CONNECTIONS)
        .filter_map(|s| Some(Labelled { label: s.label("transport")?.to_owned(), value: s.value }))
        .collect();
    if let Some(http) = metrics.value(edge::metrics::HTTP_CONNECTIONS) {
        connections.push(Labelled { label: "http".into(), value: http });
    }

    let mut names: Vec<&str> =
        metrics.samples(&format!("{EVENT_LOOP_LAG}_count")).filter_map(|s| s.label("runtime")).collect();
    names.sort_unstable();
    names.dedup();
    let runtimes = names
        .into_iter()
        .map(|runtime| {
            let of = |name: &str| {
                metrics.samples(name).find(|s| s.label("runtime") == Some(runtime)).map(|s| s.value)
            };
            RuntimeView {
                runtime: runtime.to_owned(),
                workers: of(TOKIO_WORKERS),
                busy_ratio: of(TOKIO_BUSY_RATIO),
                alive_tasks: of(TOKIO_ALIVE_TASKS),
                event_loop_lag: metrics.histogram(EVENT_LOOP_LAG, ("runtime", runtime)),
            }
        })
        .collect();

    let pool = metrics.value(POOL_THREADS).map(|threads| {
        let mut tasks: Vec<Labelled> = metrics
            .samples(&format!("{POOL_RUN}_count"))
            .filter_map(|s| Some(Labelled { label: s.label("task")?.to_owned(), value: s.value }))
            .collect();
        tasks.sort_by(|a, b| b.value.total_cmp(&a.value));
        PoolView {
            threads,
            queue_depth: metrics.value(POOL_QUEUE_DEPTH).unwrap_or(0.0),
            busy_seconds: metrics.value(POOL_BUSY).unwrap_or(0.0),
            rejections: metrics.value(POOL_REJECTIONS).unwrap_or(0.0),
            deadline_drops: metrics.value(POOL_DEADLINE_DROPS).unwrap_or(0.0),
            tasks,
        }
    });
    let consumer = metrics.value(CONSUMER_LAG).map(|lag_entries| ConsumerView {
        lag_entries,
        pending_entries: metrics.value(CONSUMER_PENDING).unwrap_or(0.0),
    });
    OpsView { fit, connections, delivered, runtimes, pool, consumer }
}

/// Samples of a Prometheus text exposition, borrowed from it.
struct Exposition<'a> {
    samples: Vec<Sample<'a>>,
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<'a> Exposition<'a> {
    /// Reads `name{k="v",...} value` lines; comments and anything else are
    /// skipped. Our own label values never contain `"` or `,`, which keeps
    /// the label split simple.
    fn parse(text: &'a str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                let labels = labels
                    .split(',')
                    .filter_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        Some((key, value.trim_matches('"')))
                    })
                    .collect();
                Some(Sample { name, labels, value })
            })
            .collect();
        Self { samples }
    }

    fn samples<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Sample<'a>> + 's {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum over every label set of `name` (one series, usually).
    fn value(&self, name: &str) -> Option<f64> {
        let mut samples = self.samples(name).peekable();
        samples.peek()?;
        Some(samples.map(|s| s.value).sum())
    }

    fn histogram(&self, name: &str, (key, value): (&str, &str)) -> HistogramView {
        let matching = |suffix: &str| {
            let series = format!("{name}{suffix}");
            self.samples
                .iter()
                .filter(move |s| s.name == series && s.label(key) == Some(value))
                .collect::<Vec<_>>()
        };
        let mut buckets: Vec<(f64, f64)> = matching("_bucket")
            .into_iter()
            .filter_map(|s| {
                let le = s.label("le")?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, s.value))
            })
            .filter(|(bound, _)| bound.is_finite())
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        HistogramView {
            count: matching("_count").first().map_or(0.0, |s| s.value),
            sum: matching("_sum").first().map_or(0.0, |s| s.value),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_exposition_is_read_into_the_ops_view() {
        let text = "# TYPE courtside_live_connections gauge\n\
            courtside_live_connections{transport=\"websocket\"} 3\n\
            courtside_live_connections{transport=\"sse\"} 1\n\
            courtside_http_connections 2\n\
            courtside_runtime_event_loop_lag_seconds_bucket{runtime=\"gateway\",le=\"0.001\"} 9\n\
            courtside_runtime_event_loop_lag_seconds_bucket{runtime=\"gateway\",le=\"+Inf\"} 10\n\
            courtside_runtime_event_loop_lag_seconds_sum{runtime=\"gateway\"} 0.02\n\
            courtside_runtime_event_loop_lag_seconds_count{runtime=\"gateway\"} 10\n\
            tokio_worker_busy_ratio{runtime=\"gateway\"} 0.25\n\
            courtside_pool_threads 2\n\
            courtside_pool_task_duration_seconds_count{task=\"win probability\"} 4\n";
        let fit = RuntimeFit::new(Duration::from_millis(10)).report();
        let view = ops_view(fit, 5, &Exposition::parse(text));
        let connections: Vec<(&str, f64)> =
            view.connections.iter().map(|c| (c.label.as_str(), c.value)).collect();
        assert_eq!(connections, [("websocket", 3.0), ("sse", 1.0), ("http", 2.0)]);
        assert_eq!(view.runtimes.len(), 1);
        assert_eq!(view.runtimes[0].busy_ratio, Some(0.25));
        assert_eq!(view.runtimes[0].event_loop_lag.count, 10.0);
        assert_eq!(view.runtimes[0].event_loop_lag.buckets, [(0.001, 9.0)]);
        let pool = view.pool.expect("the pool is in the exposition");
        assert_eq!(
            (pool.threads, pool.tasks[0].label.as_str(), pool.tasks[0].value),
            (2.0, "win probability", 4.0)
        );
        assert!(view.consumer.is_none());
    }
}

//! Liveness, readiness and what operators read, as every service on the
//! edge serves them.
//!
//! `/healthz` says the process is alive and its runtime answers; it touches
//! nothing else, so a dependency's outage never gets a healthy process
//! restarted. `/readyz` says whether the service can do its job right now,
//! and reports each dependency the service named ([`Checks`]): a
//! **required** one that does not answer makes it `not_ready` (503); one
//! that answers in part (a Redis Cluster with a partition down) or an
//! **optional** one that does not answer leave it in rotation, `degraded`
//! (200), since taking every replica out for what only some requests need
//! would turn a partial outage into a total one. Once shutdown begins it
//! answers `draining` (503) without checking anything.
//!
//! Readiness does no I/O on the request path. Each dependency is probed in
//! the background, every [`CHECK_INTERVAL`] (with jitter, so replicas do
//! not probe in step), and `/readyz` answers from the last results within
//! microseconds, however slow a dependency is. A dependency is marked down
//! after [`FALL`] failed probes in a row and up again after [`RISE`]
//! answers in a row, so one slow answer does not take a replica out and a
//! recovering dependency does not flap it in and out; only the very first
//! probe decides at once, so a service starts ready or not as its
//! dependencies are.
//!
//! `/metrics` and `/v1/debug/runtime-fit` need no token: they name routes
//! and counts, never data. Expose them to your monitoring network, not the
//! internet (or move them to the admin listener).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Once},
    time::Duration,
};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::{Serialize, ser::SerializeMap as _};

use lifecycle::Shutdown;
use tokio::{sync::watch, time::Instant};

use crate::fit::{Report, RuntimeFit};

/// How long a probe may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often each dependency is probed (give or take a tenth, at random).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Failed probes in a row that mark a dependency down.
pub const FALL: u32 = 2;
/// Answers in a row that mark a down dependency up again.
pub const RISE: u32 = 2;

/// What a probe found when the dependency answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// All of it answers.
    Ok,
    /// Part of it answers (a partition of a cluster does not): the service
    /// still serves most requests and says `degraded`, with the reason.
    Partial(String),
}

impl From<()> for Answer {
    fn from((): ()) -> Self {
        Answer::Ok
    }
}

type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Answer>> + Send>> + Send + Sync>;

/// The dependencies `/readyz` asks, in the order they are reported.
#[derive(Clone, Default)]
pub struct Checks(Vec<Dependency>);

#[derive(Clone)]
struct Dependency {
    name: &'static str,
    /// Which implementation answers (`redis`, `memory`), reported as is.
    backend: Option<&'static str>,
    required: bool,
    probe: Probe,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|dependency| dependency.name)).finish()
    }
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A dependency every route needs: when it does not answer, the service
    /// is not ready.
    pub fn required<F, Fut, T>(self, name: &'static str, backend: Option<&'static str>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Into<Answer>,
    {
        self.with(name, backend, true, probe)
    }

    /// A dependency only some routes need: when it does not answer, the
    /// service stays ready and says `degraded`.
    pub fn optional<F, Fut, T>(self, name: &'static str, backend: Option<&'static str>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Into<Answer>,
    {
        self.with(name, backend, false, probe)
    }

    fn with<F, Fut, T>(
        mut self,
        name: &'static str,
        backend: Option<&'static str>,
        required: bool,
        probe: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Into<Answer>,
    {
        let probe: Probe = Arc::new(move || {
            let answer = probe();
            Box::pin(async move { answer.await.map(Into::into) })
        });
        self.0.push(Dependency { name, backend, required, probe });
        self
    }
}

/// What `/readyz` reads: the last result of each dependency's background
/// probe, and whether the service drains.
#[derive(Debug, Clone)]
pub struct Readiness {
    watched: Arc<Watched>,
    shutdown: Shutdown,
}

impl Readiness {
    /// The dependencies, not probed yet: [`Readiness::start`] starts the
    /// probes (the server does as it starts serving; else the first
    /// `/readyz` does).
    pub fn new(checks: Checks, shutdown: Shutdown) -> Self {
        let watched = Arc::new(Watched {
            dependencies: checks
                .0
                .into_iter()
                .map(|dependency| {
                    let (state, _) = watch::channel(None);
                    (dependency, state)
                })
                .collect(),
            started: Once::new(),
        });
        Self { watched, shutdown }
    }

    /// Starts probing each dependency in the background, once; the probes
    /// stop at closing. Needs a Tokio runtime.
    pub fn start(&self) {
        self.watched.started.call_once(|| {
            for (dependency, state) in &self.watched.dependencies {
                let (probe, state) = (Arc::clone(&dependency.probe), state.clone());
                self.shutdown.spawn(watch_dependency(probe, state));
            }
        });
    }
}

/// The dependencies and each one's last state.
struct Watched {
    dependencies: Vec<(Dependency, watch::Sender<Option<Found>>)>,
    started: Once,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.dependencies.iter().map(|(dependency, _)| dependency.name)).finish()
    }
}

/// A dependency as its probes have found it, after hysteresis.
#[derive(Debug, Clone)]
struct Found {
    /// `Err` while marked down, with the reason of the last failure.
    marked: Result<Answer, String>,
    /// Failed probes in a row (while not yet marked down, the warning).
    failures: u32,
    /// When the last probe ended.
    checked: Instant,
}

/// A probe's outcome, before hysteresis.
fn outcome(result: Result<anyhow::Result<Answer>, tokio::time::error::Elapsed>) -> Result<Answer, String> {
    // A category only: the probe is anonymous, and a dependency's own error
    // text (addresses, versions) is for the log, not the caller.
    match result {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "readiness check failed");
            Err("unavailable".to_owned())
        }
        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    }
}

/// The next state from the last one and a probe's outcome: down after
/// [`FALL`] failures in a row, up after [`RISE`] answers in a row; the
/// first probe decides at once.
fn next(
    last: Option<&Found>,
    found: Result<Answer, String>,
    answers_in_a_row: u32,
    checked: Instant,
) -> Found {
    let Some(last) = last else {
        let failures = u32::from(found.is_err());
        return Found { marked: found, failures, checked };
    };
    match found {
        Err(reason) => {
            let failures = last.failures.saturating_add(1);
            let marked =
                if failures >= FALL || last.marked.is_err() { Err(reason) } else { last.marked.clone() };
            Found { marked, failures, checked }
        }
        Ok(answer) => {
            let marked = if last.marked.is_err() && answers_in_a_row < RISE {
                last.marked.clone()
            } else {
                Ok(answer)
            };
            Found { marked, failures: 0, checked }
        }
    }
}

/// Probes one dependency for as long as the service runs.
async fn watch_dependency(probe: Probe, state: watch::Sender<Option<Found>>) {
    use rand::Rng as _;
    let mut answers_in_a_row = 0u32;
    loop {
        let found = outcome(tokio::time::timeout(CHECK_TIMEOUT, probe()).await);
        answers_in_a_row = if found.is_ok() { answers_in_a_row.saturating_add(1) } else { 0 };
        let checked = Instant::now();
        state
            .send_modify(|current| *current = Some(next(current.as_ref(), found, answers_in_a_row, checked)));
        // ±10 %, so that replicas started together do not probe in step.
        let jitter = rand::rng().random_range(0.9..=1.1);
        tokio::time::sleep(CHECK_INTERVAL.mul_f64(jitter)).await;
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers. Touches no dependency.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    /// `"ready"`; `"degraded"` (still `200`) when an optional dependency is
    /// down or a required one answers in part; `"not_ready"` when a
    /// required one is down; `"draining"` once shutdown has begun.
    pub status: &'static str,
    /// Each dependency by name, in the service's order.
    #[schema(value_type = std::collections::BTreeMap<String, Check>)]
    pub checks: Named,
}

/// The checks as a JSON object, in the order the service named them.
#[derive(Debug)]
pub struct Named(Vec<(&'static str, Check)>);

impl Serialize for Named {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, check) in &self.0 {
            map.serialize_entry(name, check)?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `"ok"`; `"degraded"` when it answers in part; `"error"` when marked
    /// down (or its first probe has not answered yet); `"skipped"` while
    /// draining.
    pub status: &'static str,
    /// Which backend answers, where the service says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// Why it is degraded or down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failed probes in a row, when the last one failed: a dependency that
    /// is failing but not yet marked down (after 2) shows here first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How long ago the last probe ended, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_ms_ago: Option<u64>,
}

impl Check {
    fn of(state: Option<&Found>, backend: Option<&'static str>) -> Self {
        let Some(state) = state else {
            return Self {
                status: "error",
                backend,
                reason: Some("no answer yet".to_owned()),
                failures: None,
                checked_ms_ago: None,
            };
        };
        let (status, reason) = match &state.marked {
            Ok(Answer::Ok) => ("ok", None),
            Ok(Answer::Partial(reason)) => ("degraded", Some(reason.clone())),
            Err(reason) => ("error", Some(reason.clone())),
        };
        Self {
            status,
            backend,
            reason,
            failures: (state.failures > 0).then_some(state.failures),
            checked_ms_ago: Some(u64::try_from(state.checked.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Readiness, from the last result of each dependency's background probe:
/// no I/O here. Required dependencies down make it `not_ready`; a
/// dependency that answers in part, or an optional one down, `degraded`.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready, or degraded: an optional dependency (the analytics worker) is down, or a required one answers in part (a Redis Cluster partition); the routes that need what is missing say 503 with Retry-After meanwhile; the body says which", body = ReadinessReport),
        (status = 503, description = "a required dependency (the state store) is down, or the service is draining; the body says which and why", body = ReadinessReport),
    ))]
pub async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<ReadinessReport>) {
    let dependencies = &readiness.watched.dependencies;
    if readiness.shutdown.is_draining() {
        let checks = dependencies
            .iter()
            .map(|(dependency, _)| {
                let skipped = Check {
                    status: "skipped",
                    backend: None,
                    reason: None,
                    failures: None,
                    checked_ms_ago: None,
                };
                (dependency.name, skipped)
            })
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadinessReport { status: "draining", checks: Named(checks) }),
        );
    }
    readiness.start();
    let (mut required_down, mut degraded) = (false, false);
    let mut checks = Vec::with_capacity(dependencies.len());
    for (dependency, state) in dependencies {
        // Only before a dependency's first probe has answered (the service
        // just started) is there anything to wait for, and never longer
        // than a probe may take.
        let mut state = state.subscribe();
        if state.borrow().is_none() {
            let _ = tokio::time::timeout(CHECK_TIMEOUT, state.wait_for(Option::is_some)).await;
        }
        let check = Check::of(state.borrow().as_ref(), dependency.backend);
        match check.status {
            "ok" => {}
            "error" if dependency.required => required_down = true,
            _ => degraded = true,
        }
        checks.push((dependency.name, check));
    }
    let (code, status) = match (required_down, degraded) {
        (false, false) => (StatusCode::OK, "ready"),
        (false, true) => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    (code, Json(ReadinessReport { status, checks: Named(checks) }))
}

/// Prometheus text exposition of the process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(fit): State<Arc<RuntimeFit>>) -> impl IntoResponse {
    fit.report().export_gauges();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], telemetry::metrics::render())
}

/// Per route: requests, wall time, time polled on the event loop, and
/// whether the route belongs on the edge or on the worker.
#[utoipa::path(get, path = "/v1/debug/runtime-fit", tag = "ops",
    responses((status = 200, description = "the runtime-fit report, busiest route first", body = Report)))]
pub async fn runtime_fit(State(fit): State<Arc<RuntimeFit>>) -> Json<Report> {
    Json(fit.report())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// A dependency whose next answers the test decides, counting probes.
    #[derive(Clone, Default)]
    struct Scripted {
        answer: Arc<Mutex<Option<Result<Answer, ()>>>>,
        probes: Arc<AtomicU32>,
    }

    impl Scripted {
        fn answer(&self, answer: Result<Answer, ()>) {
            *self.answer.lock().expect("lock") = Some(answer);
        }

        fn hang(&self) {
            *self.answer.lock().expect("lock") = None;
        }

        fn probe(&self) -> impl Future<Output = anyhow::Result<Answer>> + Send + use<> {
            let (answer, probes) = (self.answer.lock().expect("lock").clone(), Arc::clone(&self.probes));
            async move {
                let Some(answer) = answer else {
                    // Never answers: the probe's timeout decides.
                    std::future::pending::<()>().await;
                    unreachable!("pending never resolves")
                };
                probes.fetch_add(1, Ordering::SeqCst);
                answer.map_err(|()| anyhow::anyhow!("refused"))
            }
        }

        /// Waits (in paused time) until `n` probes have answered; the
        /// state they found is published before the next await.
        async fn answered(&self, n: u32) {
            while self.probes.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn readiness(required: &Scripted, optional: &Scripted) -> Readiness {
        readiness_until(required, optional, Shutdown::new())
    }

    fn readiness_until(required: &Scripted, optional: &Scripted, shutdown: Shutdown) -> Readiness {
        let (required, optional) = (required.clone(), optional.clone());
        let checks = Checks::new().required("store", Some("redis"), move || required.probe()).optional(
            "worker",
            None,
            move || optional.probe(),
        );
        Readiness::new(checks, shutdown)
    }

    async fn ask(readiness: &Readiness) -> (StatusCode, serde_json::Value) {
        let (code, Json(report)) = readyz(State(readiness.clone())).await;
        (code, serde_json::to_value(report).expect("serializes"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_goes_down_after_two_failures_and_up_after_two_answers() {
        let (store, worker) = (Scripted::default(), Scripted::default());
        store.answer(Ok(Answer::Ok));
        worker.answer(Ok(Answer::Ok));
        let readiness = readiness(&store, &worker);
        let (code, body) = ask(&readiness).await;
        assert_eq!((code, body["status"].as_str()), (StatusCode::OK, Some("ready")), "{body}");

        store.answer(Err(()));
        let seen = store.probes.load(Ordering::SeqCst);
        store.answered(seen + 1).await;
        let (code, body) = ask(&readiness).await;
        assert_eq!(code, StatusCode::OK, "one failure is not an outage: {body}");
        assert_eq!(body["checks"]["store"]["status"], "ok");
        assert_eq!(body["checks"]["store"]["failures"], 1, "{body}");

        store.answered(seen + 2).await;
        let (code, body) = ask(&readiness).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["checks"]["store"]["status"], "error");
        assert_eq!(body["checks"]["store"]["reason"], "unavailable");

        store.answer(Ok(Answer::Ok));
        store.answered(seen + 3).await;
        let (code, body) = ask(&readiness).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "one answer does not bring it back: {body}");
        assert!(body["checks"]["store"].get("failures").is_none(), "the last probe answered: {body}");

        store.answered(seen + 4).await;
        let (code, body) = ask(&readiness).await;
        assert_eq!((code, body["status"].as_str()), (StatusCode::OK, Some("ready")), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn readyz_answers_from_the_last_results_without_probing() {
        let (store, worker) = (Scripted::default(), Scripted::default());
        store.answer(Ok(Answer::Ok));
        worker.answer(Ok(Answer::Ok));
        let readiness = readiness(&store, &worker);
        ask(&readiness).await;
        let probes = store.probes.load(Ordering::SeqCst);
        for _ in 0..100 {
            let (code, _) = ask(&readiness).await;
            assert_eq!(code, StatusCode::OK);
        }
        assert_eq!(store.probes.load(Ordering::SeqCst), probes, "a request to /readyz probed the store");

        // A store that stops answering altogether: /readyz still answers at
        // once, and says so once two probes have timed out.
        store.hang();
        let started = Instant::now();
        let (code, _) = ask(&readiness).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(started.elapsed(), Duration::ZERO, "readyz waited for a probe");
        tokio::time::sleep(2 * (CHECK_INTERVAL + CHECK_TIMEOUT) + CHECK_INTERVAL).await;
        let (code, body) = ask(&readiness).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["store"]["reason"], "no answer within 1000 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_answer_or_an_optional_outage_is_degraded_not_unready() {
        let (store, worker) = (Scripted::default(), Scripted::default());
        store.answer(Ok(Answer::Partial("1 of 3 partitions unreachable".to_owned())));
        worker.answer(Err(()));
        let readiness = readiness(&store, &worker);
        let (code, body) = ask(&readiness).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["checks"]["store"]["status"], "degraded");
        assert_eq!(body["checks"]["store"]["reason"], "1 of 3 partitions unreachable");
        assert_eq!(body["checks"]["worker"]["status"], "error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_probe_decides_at_once() {
        let (store, worker) = (Scripted::default(), Scripted::default());
        store.answer(Err(()));
        worker.answer(Ok(Answer::Ok));
        let readiness = readiness(&store, &worker);
        let (code, body) = ask(&readiness).await;
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "a service starts unready when its store is down: {body}"
        );
    }

    #[tokio::test]
    async fn draining_is_503_without_asking_anything() {
        let (store, worker) = (Scripted::default(), Scripted::default());
        store.answer(Ok(Answer::Ok));
        worker.answer(Ok(Answer::Ok));
        let shutdown = Shutdown::new();
        let readiness = readiness_until(&store, &worker, shutdown.clone());
        shutdown.begin_drain();
        let (code, body) = ask(&readiness).await;
        assert_eq!((code, body["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("draining")));
        assert_eq!(body["checks"]["store"]["status"], "skipped");
    }
}

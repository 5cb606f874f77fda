//! Liveness, readiness and what operators read, as every service on the
//! edge serves them.
//!
//! `/healthz` says the process is alive and its runtime answers; it touches
//! nothing else, so a dependency's outage never gets a healthy process
//! restarted. `/readyz` says whether the service can do its job right now,
//! and reports each dependency the service named ([`Checks`]): a
//! **required** one that does not answer makes it `not_ready` (503); an
//! **optional** one leaves it in rotation, `degraded` (200), since taking
//! every replica out for a dependency only some routes need would turn a
//! partial outage into a total one. Once shutdown begins it answers
//! `draining` (503) without checking anything.
//!
//! `/metrics` and `/v1/debug/runtime-fit` need no token: they name routes
//! and counts, never data. Expose them to your monitoring network, not the
//! internet (or move them to the admin listener).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::{Serialize, ser::SerializeMap as _};

use lifecycle::Shutdown;

use crate::fit::{Report, RuntimeFit};

/// How long readiness waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

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
    pub fn required<F, Fut>(self, name: &'static str, backend: Option<&'static str>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.with(name, backend, true, probe)
    }

    /// A dependency only some routes need: when it does not answer, the
    /// service stays ready and says `degraded`.
    pub fn optional<F, Fut>(self, name: &'static str, backend: Option<&'static str>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.with(name, backend, false, probe)
    }

    fn with<F, Fut>(
        mut self,
        name: &'static str,
        backend: Option<&'static str>,
        required: bool,
        probe: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || Box::pin(probe()));
        self.0.push(Dependency { name, backend, required, probe });
        self
    }
}

/// What `/readyz` reads: the service's dependencies and whether it drains.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub checks: Checks,
    pub shutdown: Shutdown,
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
    /// `"ready"`; `"degraded"` (still `200`) when only an optional
    /// dependency does not answer; `"not_ready"` when a required one does
    /// not; `"draining"` once shutdown has begun.
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
    /// `"ok"`, `"error"`, or `"skipped"` while draining.
    pub status: &'static str,
    /// Which backend answers, where the service says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// Why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    fn from_result(result: Result<anyhow::Result<()>, tokio::time::error::Elapsed>) -> Self {
        // A category only: the probe is anonymous, and a dependency's own
        // error text (addresses, versions) is for the log, not the caller.
        let reason = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => {
                tracing::warn!(error = %format!("{err:#}"), "readiness check failed");
                Some("unavailable".to_owned())
            }
            Err(_) => Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        };
        Self { status: if reason.is_none() { "ok" } else { "error" }, backend: None, reason }
    }
}

/// Readiness: every required dependency answers; the optional ones are
/// reported, not required.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready, or degraded: an optional dependency (the analytics worker) does not answer and the routes that need it say 503 meanwhile; the body says which", body = ReadinessReport),
        (status = 503, description = "a required dependency (the state store) does not answer, or the service is draining; the body says which and why", body = ReadinessReport),
    ))]
pub async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<ReadinessReport>) {
    let dependencies = &readiness.checks.0;
    if readiness.shutdown.is_draining() {
        let checks = dependencies
            .iter()
            .map(|dependency| (dependency.name, Check { status: "skipped", backend: None, reason: None }))
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadinessReport { status: "draining", checks: Named(checks) }),
        );
    }
    let answers = futures::future::join_all(
        dependencies.iter().map(|dependency| tokio::time::timeout(CHECK_TIMEOUT, (dependency.probe)())),
    )
    .await;
    let (mut required_down, mut optional_down) = (false, false);
    let checks = dependencies
        .iter()
        .zip(answers)
        .map(|(dependency, answer)| {
            let check = Check { backend: dependency.backend, ..Check::from_result(answer) };
            if check.reason.is_some() {
                if dependency.required { required_down = true } else { optional_down = true }
            }
            (dependency.name, check)
        })
        .collect();
    let (code, status) = match (required_down, optional_down) {
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

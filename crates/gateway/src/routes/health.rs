//! Liveness and readiness, as orchestrators probe them.
//!
//! `/healthz` says the process is alive and its runtime answers; it touches
//! nothing else, so a Redis outage never gets a healthy gateway restarted.
//! `/readyz` says whether the gateway can do its job right now, and reports
//! each dependency. Load balancers route on it, so it fails only for what
//! every route needs: the state store. A worker outage leaves the gateway in
//! rotation, `degraded`: the live feed needs only the store, and the
//! analytics routes answer `503` with `Retry-After` until the worker is
//! back. Taking every gateway out of rotation for it would turn an analytics
//! outage into a total one.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use store::StateStore;

use crate::{state::Draining, worker::WorkerClient};

/// How long readiness waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

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
pub struct Readiness {
    /// `"ready"`; `"degraded"` (still `200`) when only the worker does not
    /// answer; `"not_ready"` when the store does not; `"draining"` once
    /// shutdown has begun.
    pub status: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checks {
    pub store: Check,
    pub worker: Check,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `"ok"`, `"error"`, or `"skipped"` while draining.
    pub status: &'static str,
    /// Which backend, for the store check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// Why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    /// Not checked: the gateway is shutting down.
    fn skipped() -> Self {
        Self { status: "skipped", backend: None, reason: None }
    }

    fn from_result<E: std::fmt::Display>(result: Result<Result<(), E>, tokio::time::error::Elapsed>) -> Self {
        // A category only: the probe is anonymous, and a dependency's own
        // error text (addresses, versions) is for the log, not the caller.
        let reason = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness check failed");
                Some("unavailable".to_owned())
            }
            Err(_) => Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        };
        Self { status: if reason.is_none() { "ok" } else { "error" }, backend: None, reason }
    }
}

/// Readiness: the state store answers; the worker is reported, not required.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready, or degraded: the worker does not answer and the analytics routes say 503 meanwhile; the body says which", body = Readiness),
        (status = 503, description = "the state store does not answer, or the gateway is draining; the body says which and why", body = Readiness),
    ))]
pub async fn readyz(
    State(store): State<Arc<dyn StateStore>>,
    State(worker): State<WorkerClient>,
    State(Draining(draining)): State<Draining>,
) -> (StatusCode, Json<Readiness>) {
    if draining.is_cancelled() {
        let checks = Checks { store: Check::skipped(), worker: Check::skipped() };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "draining", checks }));
    }
    let backend = store.backend();
    let (store, worker) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, store.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, worker.check_health()),
    );
    let store = Check { backend: Some(backend), ..Check::from_result(store) };
    let worker = Check::from_result(worker);

    let (code, status) = match (store.reason.is_none(), worker.reason.is_none()) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    (code, Json(Readiness { status, checks: Checks { store, worker } }))
}

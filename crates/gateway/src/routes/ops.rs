//! What operators read: Prometheus metrics and the runtime-fit report.
//!
//! Like `/healthz`, these need no token: they name routes and counts, never
//! match data. Expose them to your monitoring network, not the internet.

use std::sync::Arc;

use axum::{Json, extract::State, http::header, response::IntoResponse};

use crate::fit::{Report, RuntimeFit};

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

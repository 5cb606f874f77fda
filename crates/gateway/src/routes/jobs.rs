//! Batch jobs on the worker: start the recompute, and follow a job's
//! progress as JSON or as Server-Sent Events. The gateway only forwards.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt as _;

use edge::{
    auth::{Auth, TokenQuery},
    extract::{Path, Query},
    limits::{Lane, Limits},
};

use crate::{
    error::ApiError,
    worker::{JobStatus, WorkerClient},
};

/// Starts the batch recompute (xT refit on the whole event stream,
/// leaderboards rebuilt and swapped in atomically), or joins the one
/// running. Needs a publish token.
#[utoipa::path(post, path = "/v1/analytics/jobs", tag = "analytics",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "started (or already running): its first progress report", body = JobStatus),
        (status = 401, description = "missing or invalid bearer token", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address or this publish token; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "worker busy or unavailable", body = edge::error::ErrorBody),
    ))]
pub async fn start_job(
    State(worker): State<WorkerClient>,
    State(auth): State<Arc<Auth>>,
    State(limits): State<Arc<Limits>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let publisher = auth.authorize_publisher(&headers)?;
    limits.check_publisher(Lane::Compute, publisher)?;
    let status = worker.start_recompute().await?;
    let location = format!("/v1/analytics/jobs/{}", status.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(status)).into_response())
}

/// A job's progress; with `Accept: text/event-stream`, every report until it
/// ends, as Server-Sent Events.
#[utoipa::path(get, path = "/v1/analytics/jobs/{id}", tag = "analytics",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "the latest report (JSON), or reports as they come (SSE)", body = JobStatus),
        (status = 404, description = "the worker knows no such job", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
    ))]
pub async fn job(
    State(worker): State<WorkerClient>,
    State(auth): State<Arc<Auth>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if !wants_stream {
        return Ok(Json(worker.job(&id).await?).into_response());
    }
    let reports = worker.watch_job(&id).await?;
    let events = reports.map(|status| {
        let data = serde_json::to_string(&status).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event("progress").data(data))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

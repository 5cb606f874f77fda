//! The two endpoints of the Node.js-vs-Python argument that courtside
//! reproduces, so the load-test harness can compare like with like.
//!
//! - `/v1/bench/slow`: I/O-bound. Waits 200 ms without blocking (a timer,
//!   like the argument's `setTimeout` and `asyncio.sleep`), then answers.
//! - `/v1/bench/compute?n=`: CPU-bound. The gateway only validates `n` and
//!   forwards the work to the analytics worker over gRPC; the loop never runs
//!   on the gateway's runtime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use domain::compute::ComputeSize;
use serde::{Deserialize, Serialize};

use crate::{error::ApiError, worker::WorkerClient};

/// The simulated I/O wait of `/v1/bench/slow`.
pub const SLOW_IO: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlowResponse {
    pub status: &'static str,
    /// Milliseconds since the Unix epoch when the wait ended.
    pub t: u128,
}

/// The I/O-bound benchmark: waits 200 ms on a timer, then answers.
#[utoipa::path(get, path = "/v1/bench/slow", tag = "bench",
    responses((status = 200, description = "the wait is over", body = SlowResponse)))]
pub async fn slow() -> Json<SlowResponse> {
    tokio::time::sleep(SLOW_IO).await;
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Json(SlowResponse { status: "ok", t })
}

#[derive(Debug, Deserialize)]
pub struct ComputeQuery {
    /// Kept as text so every malformed value gets our own precise message.
    pub n: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ComputeResponse {
    pub n: u64,
    /// The sum of sqrt(i) for 0 <= i < n, computed by the worker.
    pub result: f64,
    /// Time the job waited for a pool thread in the worker.
    pub queue_micros: u128,
    /// Time the job ran on the pool.
    pub run_micros: u128,
}

/// The CPU-bound benchmark, run on the analytics worker's pool.
#[utoipa::path(get, path = "/v1/bench/compute", tag = "bench",
    params(("n" = u64, Query, description = "terms to sum; at most the worker's COURTSIDE_COMPUTE_MAX_N")),
    responses(
        (status = 200, description = "the worker's result", body = ComputeResponse),
        (status = 400, description = "`n` missing, not a non-negative integer, or too large", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "worker unavailable or busy; see Retry-After", body = edge::error::ErrorBody),
        (status = 504, description = "worker deadline or request timeout exceeded", body = edge::error::ErrorBody),
    ))]
pub async fn compute(
    State(worker): State<WorkerClient>,
    query: Result<Query<ComputeQuery>, QueryRejection>,
) -> Result<Json<ComputeResponse>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid_parameter(rejection.body_text()))?;
    // The worker owns the upper bound (it protects its own pool), so the
    // gateway checks only that `n` is a non-negative integer.
    let n = ComputeSize::parse(query.n.as_deref(), u64::MAX)
        .map_err(|err| ApiError::invalid_parameter(err.to_string()))?;

    let outcome = worker.compute(n).await?;

    Ok(Json(ComputeResponse {
        n: n.get(),
        result: outcome.result,
        queue_micros: outcome.queue.as_micros(),
        run_micros: outcome.run.as_micros(),
    }))
}

//! `courtside.v1.AnalyticsService`: the gRPC edge of the worker.
//!
//! Each handler converts the request into domain types (rejecting what does
//! not parse), hands the CPU work to the pool, and converts the result back.
//! Generated types go no further than this file.

use contracts::v1::{ComputeRequest, ComputeResponse, analytics_service_server::AnalyticsService};
use domain::compute::{ComputeSize, ComputeSizeError, sum_of_square_roots};
use tonic::{Request, Response, Status};

use crate::pool::{CpuPool, PoolError};

/// Everything a handler can fail with, mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    InvalidSize(#[from] ComputeSizeError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl From<RpcError> for Status {
    fn from(err: RpcError) -> Self {
        match &err {
            RpcError::InvalidSize(_) => Status::invalid_argument(err.to_string()),
            RpcError::Pool(PoolError::Saturated { .. }) => {
                Status::resource_exhausted(format!("{err}; retry later"))
            }
            RpcError::Pool(PoolError::Panicked) => Status::internal("analytics job failed"),
        }
    }
}

/// The service, holding what its handlers share.
#[derive(Debug, Clone)]
pub struct Analytics {
    pool: CpuPool,
    compute_max_n: u64,
}

impl Analytics {
    pub fn new(pool: CpuPool, compute_max_n: u64) -> Self {
        Self { pool, compute_max_n }
    }
}

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    async fn compute(&self, request: Request<ComputeRequest>) -> Result<Response<ComputeResponse>, Status> {
        let n = ComputeSize::new(request.into_inner().n, self.compute_max_n).map_err(RpcError::from)?;
        let timed = self.pool.run("compute", move || sum_of_square_roots(n)).await.map_err(RpcError::from)?;
        Ok(Response::new(ComputeResponse {
            result: timed.value,
            queue_micros: micros(timed.queued),
            run_micros: micros(timed.ran),
        }))
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

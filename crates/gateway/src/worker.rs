//! The gateway's client for the analytics worker.
//!
//! Each call runs in a `grpc.client` span whose context is injected into the
//! request metadata, so the worker's spans join the caller's trace. Each call
//! carries a deadline (sent as `grpc-timeout`, so the worker can drop work
//! nobody waits for) and is also bounded here, so a hung connection cannot
//! hold a request forever. gRPC statuses become [`WorkerError`]s; generated
//! types go no further than this module.

use std::time::Duration;

use anyhow::Context as _;
use contracts::v1::{ComputeRequest, analytics_service_client::AnalyticsServiceClient};
use domain::compute::ComputeSize;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument as _;

/// How long connecting to the worker may take; past it the call fails fast
/// with 503 instead of waiting for the full deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a worker call failed, in terms the HTTP layer can map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The worker rejected the input.
    #[error("{0}")]
    InvalidArgument(String),
    /// The worker cannot be reached.
    #[error("analytics worker unavailable, retry later")]
    Unavailable(String),
    /// The worker's pool is full.
    #[error("analytics worker is busy, retry later")]
    Busy(String),
    #[error("analytics worker did not answer within {0} ms")]
    DeadlineExceeded(u64),
    #[error("analytics worker failed")]
    Failed(String),
}

/// What the worker returned for a compute call.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeOutcome {
    pub result: f64,
    pub queue: Duration,
    pub run: Duration,
}

/// A cheap-to-clone handle on the worker. Connects lazily, so the gateway
/// starts (and serves everything else) while the worker is down.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    analytics: AnalyticsServiceClient<Channel>,
    health: HealthClient<Channel>,
    deadline: Duration,
}

impl WorkerClient {
    pub fn connect_lazy(url: &str, deadline: Duration) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid worker url {url:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            analytics: AnalyticsServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            deadline,
        })
    }

    /// Runs the compute benchmark on the worker.
    pub async fn compute(&self, n: ComputeSize) -> Result<ComputeOutcome, WorkerError> {
        let mut client = self.analytics.clone();
        let request = tonic::Request::new(ComputeRequest { n: n.get() });
        let response = self
            .call("courtside.v1.AnalyticsService/Compute", request, async move |request| {
                client.compute(request).await
            })
            .await?;
        Ok(ComputeOutcome {
            result: response.result,
            queue: Duration::from_micros(response.queue_micros),
            run: Duration::from_micros(response.run_micros),
        })
    }

    /// Asks the worker's health service whether it serves.
    pub async fn check_health(&self) -> Result<(), WorkerError> {
        let mut client = self.health.clone();
        let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        let response = self
            .call("grpc.health.v1.Health/Check", request, async move |request| client.check(request).await)
            .await?;
        match response.status() {
            ServingStatus::Serving => Ok(()),
            other => Err(WorkerError::Unavailable(format!("worker reports {}", other.as_str_name()))),
        }
    }

    /// The shared part of every call (`path` is `package.Service/Method`):
    /// span, context propagation, deadline, status mapping.
    async fn call<Req, Resp>(
        &self,
        path: &'static str,
        mut request: tonic::Request<Req>,
        send: impl AsyncFnOnce(tonic::Request<Req>) -> Result<tonic::Response<Resp>, Status>,
    ) -> Result<Resp, WorkerError> {
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = path,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let deadline = self.deadline;
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        request.set_timeout(deadline);
        telemetry::propagation::inject_into_metadata(&span, request.metadata_mut());

        async move {
            let outcome = tokio::time::timeout(deadline, send(request)).await;
            let result = match outcome {
                Err(_elapsed) => Err(WorkerError::DeadlineExceeded(deadline_ms)),
                Ok(Ok(response)) => {
                    tracing::Span::current().record("rpc.grpc.status_code", 0);
                    Ok(response.into_inner())
                }
                Ok(Err(status)) => {
                    tracing::Span::current().record("rpc.grpc.status_code", status.code() as i32);
                    Err(map_status(status, deadline_ms))
                }
            };
            if let Err(err) = &result {
                tracing::warn!(%err, "worker call failed");
            }
            result
        }
        .instrument(span)
        .await
    }
}

fn map_status(status: Status, deadline_ms: u64) -> WorkerError {
    match status.code() {
        Code::InvalidArgument => WorkerError::InvalidArgument(status.message().to_owned()),
        Code::ResourceExhausted => WorkerError::Busy(status.message().to_owned()),
        // tonic reports a server-side `grpc-timeout` expiry as Cancelled.
        Code::DeadlineExceeded | Code::Cancelled => WorkerError::DeadlineExceeded(deadline_ms),
        Code::Unavailable => WorkerError::Unavailable(status.message().to_owned()),
        _ => WorkerError::Failed(format!("{}: {}", status.code(), status.message())),
    }
}

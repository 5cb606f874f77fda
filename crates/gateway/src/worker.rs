//! The gateway's client for the analytics worker.
//!
//! Each call runs in a `grpc.client` span whose context is injected into the
//! request metadata, so the worker's spans join the caller's trace. Each call
//! carries a deadline (sent as `grpc-timeout`, so the worker can drop work
//! nobody waits for) and is also bounded here, so a hung connection cannot
//! hold a request forever. gRPC statuses become [`WorkerError`]s; generated
//! types go no further than this module.
//!
//! Calls are spread over every replica of the worker ([`balance`]); one
//! that finds its replica unavailable is tried once more on another.

mod balance;

use std::{sync::Arc, time::Duration};

use contracts::v1::{
    self as pb, ComputeRequest, GetJobRequest, JobKind, RunJobRequest, WatchJobRequest,
    WinProbabilityRequest, XtGridRequest, analytics_service_client::AnalyticsServiceClient,
};
use domain::compute::ComputeSize;
use futures::{Stream, StreamExt as _};
use serde::Serialize;
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
    /// The worker does not know what was asked for (a job id).
    #[error("{0}")]
    NotFound(String),
}

/// What the worker returned for a compute call.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeOutcome {
    pub result: f64,
    pub queue: Duration,
    pub run: Duration,
}

/// The parts of a match state win probability depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScoreLine {
    pub minute: u16,
    pub home_goals: u16,
    pub away_goals: u16,
    pub home_red_cards: u16,
    pub away_red_cards: u16,
}

/// Home win / draw / away win, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub home_win: f64,
    pub draw: f64,
    pub away_win: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WinProbabilities {
    pub closed_form: Outcome,
    /// Seeded simulation of the rest of the match.
    pub monte_carlo: Outcome,
    /// Simulated matches behind `monte_carlo`.
    pub samples: u64,
    /// Time the simulation ran on the worker's pool.
    pub run_micros: u64,
}

/// The Expected Threat surface the worker rates moves with.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct XtGrid {
    /// Cells along the pitch's length, column 0 at the own goal line.
    pub columns: u32,
    /// Cells across its width, row 0 at the top of the pitch (high y).
    pub rows: u32,
    /// `rows` rows of `columns` values: (row r, column c) is at
    /// `r * columns + c`.
    pub values: Vec<f64>,
    /// `synthetic` (the start-up fit) or `feed` (refitted on the stream).
    pub model_source: String,
    /// Actions the fit counted.
    pub trained_on: u64,
}

/// A batch job's progress.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    /// `recompute`.
    pub kind: &'static str,
    /// `running`, `succeeded` or `failed`.
    pub state: &'static str,
    pub phase: String,
    pub done: u64,
    pub total: u64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
}

impl From<pb::JobProgress> for JobStatus {
    fn from(progress: pb::JobProgress) -> Self {
        Self {
            kind: match progress.kind() {
                JobKind::Recompute => "recompute",
                JobKind::Unspecified => "unknown",
            },
            state: match progress.state() {
                pb::JobState::Running => "running",
                pb::JobState::Succeeded => "succeeded",
                pb::JobState::Failed => "failed",
                pb::JobState::Unspecified => "unknown",
            },
            error: (!progress.error.is_empty()).then_some(progress.error),
            finished_ms: (progress.finished_ms > 0).then_some(progress.finished_ms),
            id: progress.job_id,
            phase: progress.phase,
            done: progress.done,
            total: progress.total,
            unit: progress.unit,
            started_ms: progress.started_ms,
        }
    }
}

/// A cheap-to-clone handle on the worker's replicas. Connects lazily, so
/// the gateway starts (and serves everything else) while the worker is
/// down.
///
/// The replicas sit behind an `Arc`, and a call clones only its replica's
/// channel: every request clones the gateway's state (which holds this) a
/// few times on its way through the middleware, whether it calls the worker
/// or not.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    replicas: Arc<balance::Replicas>,
    deadline: Duration,
}

impl WorkerClient {
    /// `urls`: one worker URL, or several separated by commas. A host name
    /// is resolved to every address it has (a Kubernetes headless Service's
    /// name, to every ready pod), again every few seconds.
    pub fn connect_lazy(urls: &str, deadline: Duration) -> anyhow::Result<Self> {
        let replicas = balance::Replicas::new(urls, CONNECT_TIMEOUT)?;
        if replicas.has_names() {
            replicas.spawn_refresh();
        }
        Ok(Self { replicas, deadline })
    }

    /// The worker addresses calls are spread over, as last resolved.
    pub fn replica_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.replicas.addrs()
    }

    /// Runs the compute benchmark on the worker.
    pub async fn compute(&self, n: ComputeSize) -> Result<ComputeOutcome, WorkerError> {
        let request = ComputeRequest { n: n.get() };
        let response = self
            .call("courtside.v1.AnalyticsService/Compute", request, async |channel, request| {
                AnalyticsServiceClient::new(channel).compute(request).await
            })
            .await?;
        Ok(ComputeOutcome {
            result: response.result,
            queue: Duration::from_micros(response.queue_micros),
            run: Duration::from_micros(response.run_micros),
        })
    }

    /// Win probabilities for a match state, closed form and Monte Carlo;
    /// `samples` 0 means the worker's default.
    pub async fn win_probability(
        &self,
        state: ScoreLine,
        samples: u64,
    ) -> Result<WinProbabilities, WorkerError> {
        let request = WinProbabilityRequest {
            minute: u32::from(state.minute),
            home_goals: u32::from(state.home_goals),
            away_goals: u32::from(state.away_goals),
            home_red_cards: u32::from(state.home_red_cards),
            away_red_cards: u32::from(state.away_red_cards),
            samples,
            seed: 0,
        };
        let response = self
            .call("courtside.v1.AnalyticsService/WinProbability", request, async |channel, request| {
                AnalyticsServiceClient::new(channel).win_probability(request).await
            })
            .await?;
        let outcome = |o: Option<pb::Outcome>| {
            let o = o.unwrap_or_default();
            Outcome { home_win: o.home_win, draw: o.draw, away_win: o.away_win }
        };
        Ok(WinProbabilities {
            closed_form: outcome(response.closed_form),
            monte_carlo: outcome(response.monte_carlo),
            samples: response.samples,
            run_micros: response.run_micros,
        })
    }

    /// The current xT surface. Checked for shape here, so callers can index
    /// it without looking.
    pub async fn xt_grid(&self) -> Result<XtGrid, WorkerError> {
        let response = self
            .call("courtside.v1.AnalyticsService/XtGrid", XtGridRequest {}, async |channel, request| {
                AnalyticsServiceClient::new(channel).xt_grid(request).await
            })
            .await?;
        let cells = u64::from(response.columns) * u64::from(response.rows);
        if cells == 0
            || response.values.len() as u64 != cells
            || response.values.iter().any(|v| !v.is_finite())
        {
            return Err(WorkerError::Failed(format!(
                "xt grid of {} values for {} x {} cells",
                response.values.len(),
                response.rows,
                response.columns
            )));
        }
        Ok(XtGrid {
            columns: response.columns,
            rows: response.rows,
            values: response.values,
            model_source: response.model_source,
            trained_on: response.trained_on,
        })
    }

    /// Starts the batch recompute (or joins the one running) and returns its
    /// first progress report; the job goes on without us.
    pub async fn start_recompute(&self) -> Result<JobStatus, WorkerError> {
        let request = RunJobRequest { kind: JobKind::Recompute as i32 };
        // Safe to send twice: it starts the recompute or joins the running one.
        let first = self
            .call("courtside.v1.AnalyticsService/RunJob", request, async |channel, request| {
                let mut stream = AnalyticsServiceClient::new(channel).run_job(request).await?.into_inner();
                match stream.message().await? {
                    Some(first) => Ok(tonic::Response::new(first)),
                    None => Err(Status::internal("the job stream ended before its first report")),
                }
            })
            .await?;
        Ok(JobStatus::from(first.progress.unwrap_or_default()))
    }

    /// The latest progress of a job.
    pub async fn job(&self, id: &str) -> Result<JobStatus, WorkerError> {
        let request = GetJobRequest { job_id: id.to_owned() };
        let response = self
            .call("courtside.v1.AnalyticsService/GetJob", request, async |channel, request| {
                AnalyticsServiceClient::new(channel).get_job(request).await
            })
            .await?;
        Ok(JobStatus::from(response.progress.unwrap_or_default()))
    }

    /// Progress reports of a job until it ends. Not bounded by the call
    /// deadline: a recompute may take minutes, and the stream says so as it
    /// goes.
    pub async fn watch_job(&self, id: &str) -> Result<impl Stream<Item = JobStatus> + use<>, WorkerError> {
        let unavailable = || WorkerError::Unavailable("no worker address resolved".into());
        let replica = self.replicas.pick(None).await.ok_or_else(unavailable)?;
        let mut client = AnalyticsServiceClient::new(replica.0.channel.clone());
        let mut request = tonic::Request::new(WatchJobRequest { job_id: id.to_owned() });
        telemetry::propagation::inject_into_metadata(&tracing::Span::current(), request.metadata_mut());
        let stream = client
            .watch_job(request)
            .await
            .map_err(|status| {
                map_status(status, u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX))
            })?
            .into_inner();
        Ok(stream.filter_map(|item| async move { item.ok().and_then(|r| r.progress).map(JobStatus::from) }))
    }

    /// Asks the worker's health service whether it serves.
    pub async fn check_health(&self) -> Result<(), WorkerError> {
        let request = HealthCheckRequest { service: String::new() };
        let response = self
            .call("grpc.health.v1.Health/Check", request, async |channel, request| {
                HealthClient::new(channel).check(request).await
            })
            .await?;
        match response.status() {
            ServingStatus::Serving => Ok(()),
            other => Err(WorkerError::Unavailable(format!("worker reports {}", other.as_str_name()))),
        }
    }

    /// The shared part of every call (`path` is `package.Service/Method`):
    /// a replica, span, context propagation, deadline, status mapping, and
    /// one more try on another replica when the first is unavailable. Every
    /// call sent through here must be safe to send twice.
    async fn call<Req: Clone, Resp>(
        &self,
        path: &'static str,
        message: Req,
        send: impl AsyncFn(Channel, tonic::Request<Req>) -> Result<tonic::Response<Resp>, Status>,
    ) -> Result<Resp, WorkerError> {
        let started = std::time::Instant::now();
        let first = self.replicas.pick(None).await;
        let Some(first) = first else {
            return Err(WorkerError::Unavailable("no worker address resolved".into()));
        };
        let failed = first.0.addr;
        let result = self.attempt(path, message.clone(), first, self.deadline, &send).await;
        if !matches!(result, Err(WorkerError::Unavailable(_))) {
            return result;
        }
        let left = self.deadline.saturating_sub(started.elapsed());
        match self.replicas.pick(Some(failed)).await {
            Some(second) if !left.is_zero() => self.attempt(path, message, second, left, &send).await,
            _ => result,
        }
    }

    /// One try of a call on one replica, within `deadline`.
    async fn attempt<Req, Resp>(
        &self,
        path: &'static str,
        message: Req,
        replica: balance::InFlight,
        deadline: Duration,
        send: &impl AsyncFn(Channel, tonic::Request<Req>) -> Result<tonic::Response<Resp>, Status>,
    ) -> Result<Resp, WorkerError> {
        let mut request = tonic::Request::new(message);
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        // Inside an unsampled request no span is opened: the call still
        // carries the request's trace, with the sampled flag off.
        let span = if telemetry::propagation::unsampled_request().is_some() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc.client",
                otel.name = path,
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
                server.address = %replica.0.addr,
            )
        };
        let deadline_ms = u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX);
        request.set_timeout(deadline);
        telemetry::propagation::inject_into_metadata(&span, request.metadata_mut());

        async move {
            let started = std::time::Instant::now();
            let outcome = tokio::time::timeout(deadline, send(replica.0.channel.clone(), request)).await;
            let code = match &outcome {
                Err(_elapsed) => tonic::Code::DeadlineExceeded,
                Ok(Ok(_)) => tonic::Code::Ok,
                Ok(Err(status)) => status.code(),
            };
            metrics::histogram!(
                crate::metrics::RPC_CLIENT_DURATION,
                "rpc_method" => path,
                "rpc_grpc_status_code" => (code as i32).to_string(),
            )
            .record(started.elapsed().as_secs_f64());
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
                if matches!(err, WorkerError::Unavailable(_)) {
                    replica.0.bench();
                }
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
        // A status the client made from a transport failure (the worker
        // reset the connection mid-call, or died) rather than one the worker
        // sent: the next call may reach a healthy worker.
        Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
            WorkerError::Unavailable(status.message().to_owned())
        }
        Code::NotFound => WorkerError::NotFound(status.message().to_owned()),
        _ => WorkerError::Failed(format!("{}: {}", status.code(), status.message())),
    }
}

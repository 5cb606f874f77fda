//! `courtside.v1.AnalyticsService`: the gRPC edge of the worker.
//!
//! Each handler converts the request into domain types (rejecting what does
//! not parse), hands the CPU work to the pool, and converts the result back.
//! Generated types go no further than this file (and `stream`, the edge of the
//! event stream).

use std::{collections::BTreeSet, pin::Pin, sync::Arc};

use contracts::v1::{
    self as pb, ComputeImpactRequest, ComputeImpactResponse, ComputeRequest, ComputeResponse, GetJobRequest,
    GetJobResponse, RunJobRequest, RunJobResponse, WatchJobRequest, WatchJobResponse, WinProbabilityRequest,
    WinProbabilityResponse, XtGridRequest, XtGridResponse, analytics_service_server::AnalyticsService,
};
use domain::{
    compute::{ComputeSize, ComputeSizeError, sum_of_square_roots},
    live::MatchId,
    winprob::{MonteCarlo, Outcome, ScoreState, SimulationCounts, WinProbError, WinProbModel},
    xt::{GRID_LENGTH, GRID_WIDTH, PlayerId},
};
use rayon::prelude::*;
use store::{StateStore, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    impact::{self, ImpactError, ImpactScope},
    jobs::{JobKind, JobProgress, JobState, Jobs},
    model::ModelHandle,
    pool::{Cost, CpuPool, PoolError},
};

/// Players one impact request may name.
pub const MAX_PLAYERS: usize = 1_000;
/// Monte Carlo blocks per parallel task: each task checks for cancellation
/// before starting, so a cancelled run stops within one task's time.
const BLOCKS_PER_TASK: u64 = 4;

/// Everything a handler can fail with, mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    InvalidSize(#[from] ComputeSizeError),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("invalid match state: {0}")]
    WinProb(#[from] WinProbError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("shared state unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("the job was cancelled because its caller stopped waiting")]
    Cancelled,
    #[error("no job {0:?}")]
    JobNotFound(String),
}

impl From<RpcError> for Status {
    fn from(err: RpcError) -> Self {
        match &err {
            RpcError::InvalidSize(_) | RpcError::InvalidArgument(_) | RpcError::WinProb(_) => {
                Status::invalid_argument(err.to_string())
            }
            RpcError::Pool(PoolError::Saturated { .. } | PoolError::Backlogged { .. }) => {
                Status::resource_exhausted(format!("{err}; retry later"))
            }
            RpcError::Pool(PoolError::Panicked) => Status::internal("analytics job failed"),
            RpcError::Store(_) => Status::unavailable("shared state is unavailable; retry later"),
            RpcError::Cancelled => Status::cancelled(err.to_string()),
            RpcError::JobNotFound(_) => Status::not_found(err.to_string()),
        }
    }
}

impl From<ImpactError> for RpcError {
    fn from(err: ImpactError) -> Self {
        match err {
            ImpactError::Store(err) => Self::Store(err),
            ImpactError::Pool(err) => Self::Pool(err),
            ImpactError::Cancelled => Self::Cancelled,
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Analytics {
    pool: CpuPool,
    compute_max_n: u64,
    store: Arc<dyn StateStore>,
    model: ModelHandle,
    jobs: Jobs,
    winprob: WinProbModel,
    default_samples: u64,
    max_samples: u64,
}

/// The settings of [`Analytics`] that are plain numbers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub compute_max_n: u64,
    pub default_samples: u64,
    pub max_samples: u64,
}

impl Analytics {
    pub fn new(
        pool: CpuPool,
        store: Arc<dyn StateStore>,
        model: ModelHandle,
        jobs: Jobs,
        limits: Limits,
    ) -> Self {
        Self {
            pool,
            compute_max_n: limits.compute_max_n,
            store,
            model,
            jobs,
            winprob: WinProbModel::default(),
            default_samples: limits.default_samples,
            max_samples: limits.max_samples,
        }
    }
}

type ProgressStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    async fn compute(&self, request: Request<ComputeRequest>) -> Result<Response<ComputeResponse>, Status> {
        let n = ComputeSize::new(request.into_inner().n, self.compute_max_n).map_err(RpcError::from)?;
        let timed = self
            .pool
            .run("compute", compute_cost(n), move || sum_of_square_roots(n))
            .await
            .map_err(RpcError::from)?;
        Ok(Response::new(ComputeResponse {
            result: timed.value,
            queue_micros: micros(timed.queued),
            run_micros: micros(timed.ran),
        }))
    }

    async fn compute_impact(
        &self,
        request: Request<ComputeImpactRequest>,
    ) -> Result<Response<ComputeImpactResponse>, Status> {
        let request = request.into_inner();
        let scope = impact_scope(&request)?;
        let top = usize::try_from(request.top).unwrap_or(usize::MAX);
        let report = impact::compute(self.store.as_ref(), &self.pool, &self.model, scope, top)
            .await
            .map_err(RpcError::from)?;
        Ok(Response::new(ComputeImpactResponse {
            players: report
                .impacts
                .iter()
                .map(|i| pb::PlayerImpact { player_id: i.player.get(), xt: i.xt, moves: i.moves })
                .collect(),
            events_scanned: report.events_scanned,
            moves_rated: report.moves_rated,
            model_source: report.source.as_str().to_owned(),
            queue_micros: micros(report.queued),
            run_micros: micros(report.ran),
        }))
    }

    async fn win_probability(
        &self,
        request: Request<WinProbabilityRequest>,
    ) -> Result<Response<WinProbabilityResponse>, Status> {
        let request = request.into_inner();
        let state = score_state(&request)?;
        let samples = if request.samples == 0 { self.default_samples } else { request.samples };
        if samples > self.max_samples {
            return Err(RpcError::InvalidArgument(format!(
                "samples must be at most {}, got {samples}",
                self.max_samples
            ))
            .into());
        }
        let run = MonteCarlo::new(samples, request.seed).map_err(RpcError::from)?;
        let model = self.winprob;
        let timed = self
            .pool
            .run_cancellable("win probability", win_probability_cost(samples), move |cancel| {
                let closed = model.closed_form(&state);
                let tasks = run.blocks().div_ceil(BLOCKS_PER_TASK);
                let counts = (0..tasks)
                    .into_par_iter()
                    .map(|task| {
                        if cancel.is_cancelled() {
                            return None;
                        }
                        let first = task * BLOCKS_PER_TASK;
                        Some(model.simulate_blocks(&state, run, first..first + BLOCKS_PER_TASK))
                    })
                    .reduce(|| Some(SimulationCounts::default()), |a, b| Some(a?.merge(b?)));
                counts.map(|counts| (closed, counts.outcome()))
            })
            .await
            .map_err(RpcError::from)?;
        let (closed, simulated) = timed.value.ok_or(RpcError::Cancelled)?;
        Ok(Response::new(WinProbabilityResponse {
            closed_form: Some(outcome(&closed)),
            monte_carlo: Some(outcome(&simulated)),
            samples,
            queue_micros: micros(timed.queued),
            run_micros: micros(timed.ran),
        }))
    }

    type RunJobStream = ProgressStream<RunJobResponse>;

    async fn run_job(&self, request: Request<RunJobRequest>) -> Result<Response<Self::RunJobStream>, Status> {
        let kind = match request.into_inner().kind() {
            pb::JobKind::Recompute => JobKind::Recompute,
            pb::JobKind::Unspecified => {
                return Err(RpcError::InvalidArgument(
                    "kind must name a job, e.g. JOB_KIND_RECOMPUTE".into(),
                )
                .into());
            }
        };
        let progress = self.jobs.start(kind);
        Ok(Response::new(progress_stream(progress, |p| RunJobResponse { progress: Some(p) })))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        let id = request.into_inner().job_id;
        let progress = self.jobs.get(&id).await.map_err(RpcError::Store)?.ok_or(RpcError::JobNotFound(id))?;
        Ok(Response::new(GetJobResponse { progress: Some(job_progress(&progress)) }))
    }

    type WatchJobStream = ProgressStream<WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().job_id;
        let progress =
            self.jobs.watch(&id).await.map_err(RpcError::Store)?.ok_or(RpcError::JobNotFound(id))?;
        Ok(Response::new(progress_stream(progress, |p| WatchJobResponse { progress: Some(p) })))
    }

    async fn xt_grid(&self, _: Request<XtGridRequest>) -> Result<Response<XtGridResponse>, Status> {
        // A copy of 192 numbers: no work for the pool.
        let model = self.model.current();
        Ok(Response::new(XtGridResponse {
            columns: GRID_LENGTH as u32,
            rows: GRID_WIDTH as u32,
            values: model.values().to_vec(),
            model_source: model.source().as_str().to_owned(),
            trained_on: model.trained_on(),
        }))
    }
}

/// About 2.5 ns a term on one core: the loop is one dependent chain of
/// additions (20 million terms take 50 ms in the load-test report).
fn compute_cost(n: ComputeSize) -> Cost {
    Cost::from_micros(n.get() / 400)
}

/// About 40 ns a simulated match on one core (a million samples take some
/// 24 ms on two threads in the load-test report).
fn win_probability_cost(samples: u64) -> Cost {
    Cost::from_micros(samples / 25)
}

/// Exactly one of a match id and a player set.
fn impact_scope(request: &ComputeImpactRequest) -> Result<ImpactScope, RpcError> {
    match (request.match_id.is_empty(), request.player_ids.is_empty()) {
        (false, true) => MatchId::parse(&request.match_id)
            .map(ImpactScope::Match)
            .map_err(|err| RpcError::InvalidArgument(err.to_string())),
        (true, false) if request.player_ids.len() <= MAX_PLAYERS => Ok(ImpactScope::Players(
            request.player_ids.iter().copied().map(PlayerId::new).collect::<BTreeSet<_>>(),
        )),
        (true, false) => {
            Err(RpcError::InvalidArgument(format!("at most {MAX_PLAYERS} player_ids per request")))
        }
        _ => Err(RpcError::InvalidArgument("set exactly one of match_id and player_ids".into())),
    }
}

fn score_state(request: &WinProbabilityRequest) -> Result<ScoreState, RpcError> {
    let small = |value: u32, field: &str| {
        u16::try_from(value)
            .map_err(|_| RpcError::InvalidArgument(format!("{field} is out of range: {value}")))
    };
    let cards = |value: u32, field: &str| {
        u8::try_from(value)
            .map_err(|_| RpcError::InvalidArgument(format!("{field} is out of range: {value}")))
    };
    Ok(ScoreState::new(
        small(request.minute, "minute")?,
        small(request.home_goals, "home_goals")?,
        small(request.away_goals, "away_goals")?,
        cards(request.home_red_cards, "home_red_cards")?,
        cards(request.away_red_cards, "away_red_cards")?,
    )?)
}

fn outcome(outcome: &Outcome) -> pb::Outcome {
    pb::Outcome { home_win: outcome.home_win(), draw: outcome.draw(), away_win: outcome.away_win() }
}

/// Streams a job's progress until it ends (including the final state).
fn progress_stream<T: Send + 'static>(
    mut progress: watch::Receiver<JobProgress>,
    wrap: fn(pb::JobProgress) -> T,
) -> ProgressStream<T> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let snapshot = progress.borrow_and_update().clone();
            if tx.send(Ok(wrap(job_progress(&snapshot)))).await.is_err() {
                return; // The caller went away; the job goes on.
            }
            if snapshot.state != JobState::Running || progress.changed().await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn job_progress(progress: &JobProgress) -> pb::JobProgress {
    pb::JobProgress {
        job_id: progress.id.clone(),
        kind: match progress.kind {
            JobKind::Recompute => pb::JobKind::Recompute,
        } as i32,
        state: match progress.state {
            JobState::Running => pb::JobState::Running,
            JobState::Succeeded => pb::JobState::Succeeded,
            JobState::Failed => pb::JobState::Failed,
        } as i32,
        phase: progress.phase.to_owned(),
        done: progress.done,
        total: progress.total,
        unit: progress.unit.to_owned(),
        error: progress.error.clone().unwrap_or_default(),
        started_ms: progress.started_ms,
        finished_ms: progress.finished_ms,
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_MAX_COMPUTE_N, DEFAULT_POOL_BACKLOG_MS, DEFAULT_WINPROB_MAX_SAMPLES};

    #[test]
    fn the_largest_request_the_defaults_allow_is_a_small_share_of_the_backlog() {
        // An anonymous client may send the largest request the defaults
        // allow, many times: each must be a small share of what one thread
        // admits, or a few of them hold the pool past callers' deadlines.
        let share = DEFAULT_POOL_BACKLOG_MS * 1_000 / 4;
        let samples = win_probability_cost(DEFAULT_WINPROB_MAX_SAMPLES);
        assert!(samples.micros() <= share, "{samples:?} of a {share} us share");
        let n = compute_cost(ComputeSize::new(DEFAULT_MAX_COMPUTE_N, DEFAULT_MAX_COMPUTE_N).expect("valid"));
        assert!(n.micros() <= share, "{n:?} of a {share} us share");
    }
}

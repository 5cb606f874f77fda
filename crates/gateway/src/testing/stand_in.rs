//! A stand-in analytics worker: a real tonic server on a free port that
//! speaks the `courtside.v1.AnalyticsService` contract, so the gateway can
//! be tested without the real worker. It computes `Compute` and
//! `WinProbability` with the same `domain` functions the worker uses (the
//! Monte Carlo estimate is the closed form here), reports itself serving
//! on the gRPC health service, serves an xT grid fitted on a small seeded
//! synthetic season (as the worker's start-up model is, only smaller), and
//! answers `UNIMPLEMENTED` to the rest.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use contracts::v1::{
    self as pb,
    analytics_service_server::{AnalyticsService, AnalyticsServiceServer},
};
use domain::{
    compute::{ComputeSize, sum_of_square_roots},
    season::{Season, SeasonConfig},
    winprob::{ScoreState, WinProbModel},
    xt::{FitConfig, GRID_LENGTH, GRID_WIDTH, XtModel, XtTally},
};
use futures::Stream;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// What the stand-in is told to do.
#[derive(Debug, Clone, Copy)]
pub struct StandInConfig {
    /// Largest `n` accepted by `Compute`, as the worker's
    /// `COURTSIDE_COMPUTE_MAX_N`.
    pub compute_max_n: u64,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self { compute_max_n: 1_000_000_000 }
    }
}

/// A running stand-in worker; stops when dropped or stopped.
#[derive(Debug)]
pub struct StandInWorker {
    pub addr: SocketAddr,
    computes: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl StandInWorker {
    pub async fn spawn(config: StandInConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
        let addr = listener.local_addr().expect("local address");
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AnalyticsServiceServer<StandIn>>().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let computes = Arc::new(AtomicU64::new(0));
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(AnalyticsServiceServer::new(StandIn {
                config,
                grid: Arc::default(),
                computes: Arc::clone(&computes),
            }))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                eprintln!("stand-in worker stopped: {err}");
            }
        });
        Self { addr, computes, stop: Some(stop), task }
    }

    /// `Compute` calls served so far: which replica a call reached.
    pub fn computes(&self) -> u64 {
        self.computes.load(Ordering::Relaxed)
    }

    /// The URL the gateway's `COURTSIDE_WORKER_URL` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for StandInWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct StandIn {
    config: StandInConfig,
    computes: Arc<AtomicU64>,
    /// The xT grid, fitted on first use.
    grid: Arc<OnceLock<Result<pb::XtGridResponse, String>>>,
}

/// An xT surface fitted on a small seeded synthetic season: the real
/// worker's start-up model in miniature, so pictures of it look right.
fn fit_grid() -> Result<pb::XtGridResponse, String> {
    let season = SeasonConfig::new(4, 4, 2_000, 7).map_err(|err| err.to_string())?;
    let record = Season::new(season).play_all();
    let model = XtModel::fit(XtTally::from_actions(&record.actions).counts(), FitConfig::default())
        .map_err(|err| err.to_string())?;
    Ok(pb::XtGridResponse {
        columns: GRID_LENGTH as u32,
        rows: GRID_WIDTH as u32,
        values: model.grid().iter().flat_map(|row| row.iter().copied()).collect(),
        model_source: "synthetic".into(),
        trained_on: record.actions.len() as u64,
    })
}

type ProgressStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl AnalyticsService for StandIn {
    async fn compute(
        &self,
        request: Request<pb::ComputeRequest>,
    ) -> Result<Response<pb::ComputeResponse>, Status> {
        self.computes.fetch_add(1, Ordering::Relaxed);
        let n = ComputeSize::new(request.into_inner().n, self.config.compute_max_n)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let started = Instant::now();
        // Off the runtime's threads, as the worker's pool does.
        let result = tokio::task::spawn_blocking(move || sum_of_square_roots(n))
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(pb::ComputeResponse { result, queue_micros: 0, run_micros: micros(started) }))
    }

    async fn compute_impact(
        &self,
        _: Request<pb::ComputeImpactRequest>,
    ) -> Result<Response<pb::ComputeImpactResponse>, Status> {
        Err(Status::unimplemented("the stand-in worker does not rate players"))
    }

    async fn win_probability(
        &self,
        request: Request<pb::WinProbabilityRequest>,
    ) -> Result<Response<pb::WinProbabilityResponse>, Status> {
        let request = request.into_inner();
        let field = |value: u32, name: &str| {
            u16::try_from(value)
                .map_err(|_| Status::invalid_argument(format!("{name} is out of range: {value}")))
        };
        let cards = |value: u32, name: &str| {
            u8::try_from(value)
                .map_err(|_| Status::invalid_argument(format!("{name} is out of range: {value}")))
        };
        let state = ScoreState::new(
            field(request.minute, "minute")?,
            field(request.home_goals, "home_goals")?,
            field(request.away_goals, "away_goals")?,
            cards(request.home_red_cards, "home_red_cards")?,
            cards(request.away_red_cards, "away_red_cards")?,
        )
        .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let closed = WinProbModel::default().closed_form(&state);
        let outcome =
            pb::Outcome { home_win: closed.home_win(), draw: closed.draw(), away_win: closed.away_win() };
        Ok(Response::new(pb::WinProbabilityResponse {
            closed_form: Some(outcome),
            monte_carlo: Some(outcome),
            samples: 0,
            queue_micros: 0,
            run_micros: 0,
        }))
    }

    type RunJobStream = ProgressStream<pb::RunJobResponse>;

    async fn run_job(&self, _: Request<pb::RunJobRequest>) -> Result<Response<Self::RunJobStream>, Status> {
        Err(Status::unimplemented("the stand-in worker runs no jobs"))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(Status::not_found(format!("no job {}", request.into_inner().job_id)))
    }

    type WatchJobStream = ProgressStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        Err(Status::not_found(format!("no job {}", request.into_inner().job_id)))
    }

    async fn xt_grid(&self, _: Request<pb::XtGridRequest>) -> Result<Response<pb::XtGridResponse>, Status> {
        let grid = Arc::clone(&self.grid);
        // Fitting is CPU work: off the runtime's threads, as on the worker.
        let fitted = tokio::task::spawn_blocking(move || grid.get_or_init(fit_grid).clone())
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        fitted.map(Response::new).map_err(Status::internal)
    }
}

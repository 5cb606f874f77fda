//! Builds and runs the worker: binds the listener, assembles the gRPC server
//! (health, reflection, the analytics service) and drains it on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use contracts::v1::{FILE_DESCRIPTOR_SET, analytics_service_server::AnalyticsServiceServer};
use store::StateStore;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::{
    config::WorkerConfig,
    consumer::{self, Consumer, ConsumerConfig},
    jobs::Jobs,
    model::{MODEL_KEY, ModelHandle, RatingModel},
    pool::{CpuPool, PoolLimits},
    service::{Analytics, Limits},
};

/// Stream entries read per consumer batch.
const CONSUMER_BATCH: usize = 256;
/// How long one consumer read waits for new entries (at most half the
/// claim idle time: claims are looked for between reads).
const CONSUMER_BLOCK: Duration = Duration::from_secs(5);
/// How often a worker checks the stored xt model for a refit done by
/// another replica.
const MODEL_FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// A worker that has bound its port and is ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    config: WorkerConfig,
    pool: CpuPool,
    store: Arc<dyn StateStore>,
}

impl Application {
    /// Starts the CPU pool and binds the listener. Binding here rather than
    /// in [`Application::run_until_stopped`] lets callers (tests, the
    /// all-in-one binary) learn the real port when they asked for port 0.
    ///
    /// `store` holds the event stream the gateway appends to, the
    /// leaderboards and the model ([`store::open`] picks it from the
    /// settings; the all-in-one passes the gateway's).
    pub async fn build(config: WorkerConfig, store: Arc<dyn StateStore>) -> anyhow::Result<Self> {
        // Before any metric handle is taken: handles taken earlier go nowhere.
        telemetry::metrics::install();
        crate::metrics::describe();
        let pool = CpuPool::new(PoolLimits {
            threads: config.pool_threads(),
            queue: config.pool_queue,
            backlog: config.pool_backlog(),
        })?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("failed to bind the gRPC listener on {}", config.listen_addr))?;
        let local_addr = listener.local_addr().context("listener has no local address")?;
        let metrics_listener = match config.metrics_addr.0 {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to bind the metrics listener on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { listener, local_addr, metrics_listener, config, pool, store })
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The stored xT model, or one fitted on a synthetic season when none
    /// is stored (or the store cannot be read: the worker should serve
    /// anyway, and the next recompute stores a model).
    async fn load_model(&self) -> anyhow::Result<RatingModel> {
        match self.store.get(MODEL_KEY).await {
            Ok(Some(bytes)) => match RatingModel::decode(&bytes) {
                Ok(model) => {
                    tracing::info!(
                        source = model.source().as_str(),
                        trained_on = model.trained_on(),
                        "xt model loaded"
                    );
                    return Ok(model);
                }
                Err(err) => tracing::warn!(error = %err, "ignoring the stored xt model"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the stored xt model"),
        }
        let season =
            RatingModel::bootstrap_season(self.config.xt_bootstrap_matches, self.config.xt_bootstrap_seed)
                .context("invalid bootstrap season")?;
        let fitted =
            self.pool.run_background("bootstrap xt", move |_| RatingModel::bootstrap(season)).await?.value?;
        tracing::info!(trained_on = fitted.trained_on(), "xt model fitted on a synthetic season");
        Ok(fitted)
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish
    /// within the configured grace period.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<AnalyticsServiceServer<Analytics>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build the reflection service")?;
        let model = ModelHandle::new(self.load_model().await?);
        // One shutdown, as the edge's: draining (health NOT_SERVING), then
        // closing (the listener). Background work (the stream consumer,
        // scheduled and running jobs, the model follower) is tracked by it
        // and stops once the server has drained, on its own token: an
        // in-flight call may still need it while it drains.
        let shutdown = lifecycle::Shutdown::new();
        let background = CancellationToken::new();
        let jobs = Jobs::new(
            Arc::clone(&self.store),
            self.pool.clone(),
            model.clone(),
            self.config.consumer_name(),
            background.clone(),
        );
        tokio::spawn(
            shutdown.track(jobs.clone().run_schedule(self.config.batch_interval(), background.clone())),
        );
        // Another replica's recompute refits the model: take it up.
        tokio::spawn(shutdown.track(model.clone().follow(
            Arc::clone(&self.store),
            MODEL_FOLLOW_EVERY,
            background.clone(),
        )));
        if self.config.consume {
            let consumer = Consumer::new(
                Arc::clone(&self.store),
                self.pool.clone(),
                model.clone(),
                ConsumerConfig {
                    group: consumer::GROUP.into(),
                    name: self.config.consumer_name(),
                    batch: CONSUMER_BATCH,
                    block: CONSUMER_BLOCK,
                    claim_idle: self.config.claim_idle(),
                },
            );
            tokio::spawn(shutdown.track(consumer.run(background.clone())));
        }
        let analytics = Analytics::new(
            self.pool.clone(),
            Arc::clone(&self.store),
            model,
            jobs,
            Limits {
                compute_max_n: self.config.compute_max_n,
                default_samples: self.config.winprob_samples,
                max_samples: self.config.winprob_max_samples,
            },
        );

        tracing::info!(
            addr = %self.local_addr,
            pool_threads = self.pool.threads(),
            pool_queue = self.config.pool_queue,
            store = self.store.backend(),
            consume = self.config.consume,
            "analytics worker listening"
        );

        let probe = telemetry::metrics::spawn_runtime_probe("worker");
        let metrics = self.metrics_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics at /metrics");
            tokio::spawn(crate::metrics::serve(listener, background.clone().cancelled_owned()))
        });
        let server = Server::builder()
            .trace_fn(server_span)
            .layer(crate::metrics::GrpcMetricsLayer)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AnalyticsServiceServer::new(analytics))
            .serve_with_incoming_shutdown(
                incoming(self.listener),
                shutdown.closing().clone().cancelled_owned(),
            );

        let drain_delay = self.config.drain_delay();
        let signal = async {
            signal.await;
            shutdown.begin_drain();
            // Tell load balancers and health probes first (the service's
            // name and the empty name, which container healthchecks and
            // the gateway's readiness check ask about), then stop accepting.
            health_reporter.set_not_serving::<AnalyticsServiceServer<Analytics>>().await;
            health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            if !drain_delay.is_zero() {
                tracing::info!(
                    delay_secs = drain_delay.as_secs(),
                    "draining: health says not serving, still serving"
                );
                tokio::time::sleep(drain_delay).await;
            }
            shutdown.close();
        };
        let served = lifecycle::run_with_grace(server, signal, self.config.shutdown_grace()).await;
        background.cancel();
        probe.abort();
        if let Some(metrics) = metrics
            && let Ok(Err(err)) = metrics.await
        {
            tracing::warn!(error = %err, "metrics listener failed");
        }
        shutdown.tasks_ended().await;
        served.context("grpc server failed")?;
        tracing::info!("analytics worker stopped");
        Ok(())
    }
}

/// Accepted connections, with Nagle's algorithm off. tonic sets
/// `TCP_NODELAY` only on sockets it binds itself; on ours, a small reply
/// written in two segments waited out the client's delayed ACK, 40 ms,
/// which turned a 0.2 ms `Compute` into a 40 ms one at the tail.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// The server span of one gRPC call, named and attributed as the
/// OpenTelemetry RPC conventions ask, and parented to the caller's span when
/// the request carries W3C trace context.
fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    telemetry::propagation::set_remote_parent(&span, request.headers());
    span
}

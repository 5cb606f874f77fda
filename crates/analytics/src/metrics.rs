//! The worker's Prometheus series, the gRPC layer that records call
//! durations, and the small HTTP listener that serves `/metrics`.
//!
//! The listener is plain HTTP on a port of its own (9464, the
//! OpenTelemetry Prometheus exporter's), so Prometheus scrapes it as it
//! scrapes anything else and the gRPC port stays gRPC only.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use anyhow::Context as _;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tokio::net::TcpListener;

pub const RPC_DURATION: &str = "rpc_server_call_duration_seconds";
pub const RPC_ACTIVE: &str = "rpc_server_active_calls";
pub const POOL_THREADS: &str = "courtside_pool_threads";
pub const POOL_QUEUE_DEPTH: &str = "courtside_pool_queue_depth";
pub const POOL_QUEUE_WAIT: &str = "courtside_pool_queue_wait_seconds";
pub const POOL_RUN: &str = "courtside_pool_task_duration_seconds";
pub const POOL_BUSY: &str = "courtside_pool_busy_seconds_total";
pub const POOL_REJECTIONS: &str = "courtside_pool_rejections_total";
pub const POOL_BACKLOG: &str = "courtside_pool_backlog_seconds";
pub const POOL_DEADLINE_DROPS: &str = "courtside_pool_deadline_drops_total";
pub const CONSUMER_LAG: &str = "courtside_consumer_lag_entries";
pub const CONSUMER_PENDING: &str = "courtside_consumer_pending_entries";
pub const CONSUMER_APPLIED: &str = "courtside_consumer_entries_total";
pub const JOB_DURATION: &str = "courtside_job_duration_seconds";

/// Adds help text and units to the worker's series. Idempotent.
pub fn describe() {
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "duration of gRPC calls until the response head (for streams: until the stream opens)"
    );
    describe_gauge!(RPC_ACTIVE, "gRPC calls being handled, all methods together");
    describe_gauge!(POOL_THREADS, "threads of the CPU pool");
    describe_gauge!(POOL_QUEUE_DEPTH, "CPU jobs admitted and waiting for a pool thread");
    describe_histogram!(POOL_QUEUE_WAIT, Unit::Seconds, "time a CPU job waited for a pool thread");
    describe_histogram!(POOL_RUN, Unit::Seconds, "time a CPU job ran on a pool thread");
    describe_gauge!(
        POOL_BUSY,
        Unit::Seconds,
        "seconds pool threads spent running jobs; rate() over threads is the pool's utilisation"
    );
    describe_counter!(
        POOL_REJECTIONS,
        "requests refused because the pool was full (RESOURCE_EXHAUSTED), by reason: too many jobs or too much work"
    );
    describe_gauge!(
        POOL_BACKLOG,
        Unit::Seconds,
        "estimated thread time of the requests admitted to the pool and not finished"
    );
    describe_counter!(
        POOL_DEADLINE_DROPS,
        "queued CPU jobs skipped because their caller had stopped waiting"
    );
    describe_gauge!(CONSUMER_LAG, "stream entries not yet delivered to the consumer group");
    describe_gauge!(CONSUMER_PENDING, "stream entries delivered to the group and not yet acknowledged");
    describe_counter!(CONSUMER_APPLIED, "stream entries processed by this worker, by outcome");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "duration of batch jobs, by kind and outcome");
    describe_histogram!(store::DB_DURATION, Unit::Seconds, "duration of Redis commands");
    // Registered now, so dashboards show zero rather than no data until the
    // first occurrence.
    for reason in ["jobs", "backlog"] {
        let _ = metrics::counter!(POOL_REJECTIONS, "reason" => reason);
    }
    let _ = gauge!(POOL_BACKLOG);
    let _ = metrics::counter!(POOL_DEADLINE_DROPS);
    let _ = gauge!(POOL_QUEUE_DEPTH);
    let _ = gauge!(POOL_BUSY);
}

/// Serves `/metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                telemetry::metrics::render(),
            )
        }),
    );
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(stop)
        .await
        .context("metrics listener failed")
}

/// Records every gRPC call: in-flight gauge and a duration histogram by
/// method and status code.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        // No method label: the path is the client's to choose, and a label
        // taken before the call is known to exist would let any client add
        // series at will.
        let active = telemetry::metrics::InFlight::start(gauge!(RPC_ACTIVE));
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            drop(active);
            // Errors travel in the response head ("trailers-only"); a
            // success's status comes in trailers, after the head.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => tonic::Code::Unknown as i32,
            };
            // Paths nobody serves stay out of the label set: a client could
            // otherwise make up a new series with each request.
            let method =
                if code == tonic::Code::Unimplemented as i32 { "unknown".to_owned() } else { method };
            histogram!(RPC_DURATION, "rpc_method" => method, "rpc_grpc_status_code" => code.to_string())
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

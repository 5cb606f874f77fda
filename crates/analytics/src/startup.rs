//! Builds and runs the worker: binds the listener, assembles the gRPC server
//! (health, reflection, the analytics service) and drains it on shutdown.

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use contracts::v1::{FILE_DESCRIPTOR_SET, analytics_service_server::AnalyticsServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::{config::WorkerConfig, pool::CpuPool, service::Analytics};

/// A worker that has bound its port and is ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: WorkerConfig,
    pool: CpuPool,
}

impl Application {
    /// Starts the CPU pool and binds the listener. Binding here rather than
    /// in [`Application::run_until_stopped`] lets callers (tests, the
    /// all-in-one binary) learn the real port when they asked for port 0.
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool = CpuPool::new(config.pool_threads(), config.pool_queue)?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("failed to bind the gRPC listener on {}", config.listen_addr))?;
        let local_addr = listener.local_addr().context("listener has no local address")?;
        Ok(Self { listener, local_addr, config, pool })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish
    /// within the configured grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<AnalyticsServiceServer<Analytics>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build the reflection service")?;
        let analytics = Analytics::new(self.pool.clone(), self.config.compute_max_n);

        tracing::info!(
            addr = %self.local_addr,
            pool_threads = self.pool.threads(),
            pool_queue = self.config.pool_queue,
            "analytics worker listening"
        );

        let stop = CancellationToken::new();
        let server = Server::builder()
            .trace_fn(server_span)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AnalyticsServiceServer::new(analytics))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.listener),
                stop.clone().cancelled_owned(),
            );

        let signal = async {
            shutdown.await;
            // Tell load balancers first, then stop accepting.
            health_reporter.set_not_serving::<AnalyticsServiceServer<Analytics>>().await;
            stop.cancel();
        };
        lifecycle::run_with_grace(server, signal, self.config.shutdown_grace())
            .await
            .context("grpc server failed")?;
        tracing::info!("analytics worker stopped");
        Ok(())
    }
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

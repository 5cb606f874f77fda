//! Builds and runs the gateway: football's shared parts on the edge's
//! server, and the dependencies readiness asks.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::Router;
use edge::{Checks, Server};
use store::StateStore;

use crate::{
    config::GatewayConfig,
    live::{self, LiveState},
    router,
    state::{AppState, Shared},
    worker::WorkerClient,
};

/// A gateway that has bound its port and is ready to serve.
#[derive(Debug)]
pub struct Application {
    server: Server,
    state: AppState,
    config: GatewayConfig,
    extra_routes: Router<AppState>,
}

impl Application {
    /// Connects (lazily) to the worker and binds the listener. The store is
    /// the caller's ([`store::open`] picks it from the settings), so one
    /// process can share it between tiers.
    pub async fn build(config: GatewayConfig, store: Arc<dyn StateStore>) -> anyhow::Result<Self> {
        // First: it installs the metrics recorder the handles below go to.
        let server = Server::bind(config.edge.clone())?;
        crate::metrics::describe();
        let edge = server.edge().clone();
        let worker = WorkerClient::connect_lazy(&config.worker_url, config.worker_deadline())?;
        let live = LiveState::new(Arc::clone(&store), live::settings(&config), &edge);
        let state = AppState::new(Shared {
            store,
            worker,
            live,
            edge,
            views: Arc::default(),
            bench_routes: config.bench_routes,
            max_line_bytes: usize::try_from(config.max_line_bytes).unwrap_or(usize::MAX),
        });
        Ok(Self { server, state, config, extra_routes: Router::new() })
    }

    /// Adds routes of your own, served behind the same middleware (request
    /// ids, traces, metrics, runtime fit) as the built-in ones.
    pub fn with_routes(mut self, routes: Router<AppState>) -> Self {
        self.extra_routes = self.extra_routes.merge(routes);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.admin_addr()
    }

    /// The whole HTTP surface with its middleware, as
    /// [`Application::run_until_stopped`] serves it: for benchmarks and
    /// tests that drive it without a socket.
    pub fn router(&self) -> Router {
        self.server.router(self.routes(), self.checks())
    }

    fn routes(&self) -> Router {
        router::routes(self.state.clone(), self.extra_routes.clone(), self.server.ops_routes())
    }

    /// What readiness asks: the state store, which every route needs, and
    /// the worker, which only the analytics routes need (they answer 503
    /// with `Retry-After` while it is away, and the live feed goes on).
    fn checks(&self) -> Checks {
        let worker = self.state.worker.clone();
        self.state.live.checks().optional("worker", None, move || {
            let worker = worker.clone();
            async move { Ok(worker.check_health().await?) }
        })
    }

    /// The live feed's shared state, for tests and the all-in-one binary.
    pub fn live(&self) -> Arc<LiveState> {
        Arc::clone(&self.state.live)
    }

    /// Serves until `shutdown` resolves, then drains as [`Server::serve`]
    /// says; the live feed's bridge from the store stops with the live
    /// connections.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.state.live.start_bridge();
        let (routes, checks) = (self.routes(), self.checks());
        tracing::info!(addr = %self.local_addr(), worker = %self.config.worker_url, "gateway listening");
        self.server.serve(routes, checks, shutdown).await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

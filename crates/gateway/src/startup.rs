//! Builds and runs the gateway: the shared parts, the listener, and the
//! drain on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::Router;
use store::StateStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::GatewayConfig,
    fit::RuntimeFit,
    limits::{Limits, Rate},
    live::{LiveConfig, LiveState},
    router::{OpsRoutes, admin_router, router_with},
    server::{self, ServerLimits},
    state::{AppState, Shared},
    worker::WorkerClient,
};

/// A gateway that has bound its port and is ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The admin listener, when configured: `/metrics` and `/v1/debug/*`
    /// move there.
    admin: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    config: GatewayConfig,
    extra_routes: Router<AppState>,
}

impl Application {
    /// Connects (lazily) to the worker and binds the listener. The store is
    /// the caller's ([`store::open`] picks it from the settings), so one
    /// process can share it between tiers.
    pub async fn build(config: GatewayConfig, store: Arc<dyn StateStore>) -> anyhow::Result<Self> {
        // Before any metric handle is taken: handles taken earlier go nowhere.
        telemetry::metrics::install();
        crate::metrics::describe();
        let auth = config.auth().map_err(anyhow::Error::msg)?;
        if auth.publish.is_empty() {
            tracing::warn!("no publish tokens configured (COURTSIDE_PUBLISH_TOKENS): publishing is disabled");
        }
        let limits = Limits::new(&config.limits(), auth.publish.len());
        log_limits(&config);
        let worker = WorkerClient::connect_lazy(&config.worker_url, config.worker_deadline())?;
        let live_config = LiveConfig::from_config(&config);
        let live = Arc::new(LiveState::new(Arc::clone(&store), live_config, CancellationToken::new()));
        let state = AppState::new(Shared {
            store,
            worker,
            live,
            auth: Arc::new(auth),
            limits: Arc::new(limits),
            fit: Arc::new(RuntimeFit::new(config.slow_poll_threshold())),
            views: Arc::default(),
            request_timeout: config.request_timeout(),
            body_limit: config.body_limit(),
            bench_routes: config.bench_routes,
            draining: CancellationToken::new(),
        });

        let listener = bind(config.listen_addr)
            .with_context(|| format!("failed to bind the http listener on {}", config.listen_addr))?;
        let local_addr = listener.local_addr().context("listener has no local address")?;
        let admin = match config.admin_addr {
            None => None,
            Some(addr) => {
                let admin =
                    bind(addr).with_context(|| format!("failed to bind the admin listener on {addr}"))?;
                let admin_addr = admin.local_addr().context("admin listener has no local address")?;
                Some((admin, admin_addr))
            }
        };
        Ok(Self { listener, local_addr, admin, state, config, extra_routes: Router::new() })
    }

    /// Adds routes of your own, served behind the same middleware (request
    /// ids, traces, metrics, runtime fit) as the built-in ones.
    pub fn with_routes(mut self, routes: Router<AppState>) -> Self {
        self.extra_routes = self.extra_routes.merge(routes);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    fn ops_routes(&self) -> OpsRoutes {
        if self.admin.is_some() { OpsRoutes::Admin } else { OpsRoutes::Public }
    }

    /// The whole HTTP surface with its middleware, as
    /// [`Application::run_until_stopped`] serves it: for benchmarks and
    /// tests that drive it without a socket.
    pub fn router(&self) -> Router {
        router_with(self.state.clone(), self.extra_routes.clone(), self.ops_routes())
    }

    /// The live feed's shared state, for tests and the all-in-one binary.
    pub fn live(&self) -> Arc<LiveState> {
        Arc::clone(&self.state.live)
    }

    /// Serves until `shutdown` resolves, then stops in the order load
    /// balancers and orchestrators expect: `/readyz` fails at once while
    /// requests are still served for the drain delay; then the listener
    /// closes, live connections are closed (WebSockets with 1001), and
    /// in-flight requests and those closes get at most the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let live = Arc::clone(&self.state.live);
        let draining = self.state.draining.clone();
        let bridge = tokio::spawn(livefeed::run_bridge(
            Arc::clone(&live.subscriptions.hub),
            Arc::clone(&self.state.store),
            live.stop.clone(),
        ));
        let probe = telemetry::metrics::spawn_runtime_probe("gateway");
        let sweeper = tokio::spawn(Arc::clone(&self.state.limits).sweep_periodically());
        let ops = self.ops_routes();
        let admin = self.admin.map(|(listener, addr)| {
            tracing::info!(%addr, "admin listener: /metrics and /v1/debug/* are served here only");
            let limits = ServerLimits {
                max_connections: 64,
                header_read_timeout: self.config.header_read_timeout(),
                send_buffer_bytes: 64 * 1024,
            };
            tokio::spawn(server::serve(listener, admin_router(self.state.clone()), limits, live.stop.clone()))
        });
        let app = router_with(self.state, self.extra_routes, ops);
        tracing::info!(addr = %self.local_addr, worker = %self.config.worker_url, "gateway listening");

        let stop = CancellationToken::new();
        let limits = ServerLimits {
            max_connections: usize::try_from(self.config.max_http_connections).unwrap_or(usize::MAX),
            header_read_timeout: self.config.header_read_timeout(),
            send_buffer_bytes: usize::try_from(self.config.socket_send_buffer_bytes).unwrap_or(usize::MAX),
        };
        let server = {
            let live = Arc::clone(&live);
            let http = server::serve(self.listener, app, limits, stop.clone());
            async move {
                http.await?;
                // Upgraded WebSockets are no longer HTTP connections: wait
                // for them too, so each gets its close frame.
                live.upgraded.close();
                live.upgraded.wait().await;
                Ok::<(), std::io::Error>(())
            }
        };
        let drain_delay = self.config.drain_delay();
        let signal = async {
            shutdown.await;
            draining.cancel();
            if !drain_delay.is_zero() {
                tracing::info!(
                    delay_secs = drain_delay.as_secs(),
                    "draining: readiness fails, still serving"
                );
                tokio::time::sleep(drain_delay).await;
            }
            stop.cancel();
            // Long-lived feeds would hold the drain open: close them now.
            live.stop.cancel();
        };
        let served = lifecycle::run_with_grace(server, signal, self.config.shutdown_grace()).await;
        live.stop.cancel();
        let _ = bridge.await;
        if let Some(admin) = admin {
            // It stopped with the live feed: monitoring could still scrape
            // during the drain.
            let _ = admin.await;
        }
        probe.abort();
        sweeper.abort();
        served.context("http server failed")?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Says which rate limits apply, once at start: a gateway behind a load
/// balancer without trusted proxies counts every client as the balancer.
fn log_limits(config: &GatewayConfig) {
    let limits = config.limits();
    let rates = [limits.ingest, limits.subscribe, limits.compute, limits.per_token];
    if rates.iter().all(|rate| *rate == Rate::Off) {
        tracing::info!("rate limits are off (COURTSIDE_RATE_LIMIT)");
        return;
    }
    tracing::info!(
        ingest = %limits.ingest,
        subscribe = %limits.subscribe,
        compute = %limits.compute,
        per_token = %limits.per_token,
        trusted_proxies = %limits.trusted_proxies,
        "rate limits per client address (ingest, subscribe, compute) and per publish token"
    );
}

/// Pending connections the kernel queues for us. tokio's default (1024)
/// overflows when thousands of clients connect at once (a stadium's worth of
/// phones when a match starts), and an overflowing queue drops SYNs that
/// clients only retry after a second.
const ACCEPT_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

//! The hardened HTTP edge every courtside service stands on, knowing no
//! domain: give it a router and the dependencies readiness should ask, and
//! it serves them the way the gateway is served.
//!
//! ```no_run
//! # async fn example(config: edge::EdgeConfig, app: axum::Router) -> anyhow::Result<()> {
//! let server = edge::Server::bind(config)?;
//! server.serve(app, edge::Checks::new(), lifecycle::shutdown_signal()).await
//! # }
//! ```
//!
//! What a service gets, without a line of its own:
//! - the accept loop ([`server`]): a cap on open HTTP connections, the
//!   header-read timeout (slow-loris, idle keep-alives), HTTP/1 and HTTP/2,
//!   the PROXY protocol from trusted load balancers ([`proxy`]), and the
//!   connection's socket for a transport that writes to it itself after an
//!   upgrade ([`socket`]);
//! - request tracking ([`middleware`]): a request id, the trace context and
//!   span, per-route Prometheus series and the runtime-fit report ([`fit`]),
//!   the `x-trace-id` header, and a capped body;
//! - one JSON error shape with stable codes ([`error`]), also for unknown
//!   routes and methods, and the extractors that keep it ([`extract`]);
//! - `/healthz`, `/readyz` with the service's dependency checks, `/metrics`
//!   and `/v1/debug/runtime-fit`, on the public or the admin listener
//!   ([`health`]);
//! - one drain on shutdown ([`Shutdown`]).
//!
//! And the pieces a service puts on its own routes: bearer tokens
//! ([`auth`]), rate limits per client address and per token in three lanes
//! ([`limits`], [`middleware::rate_limit`]), the request timeout
//! ([`middleware::TimeoutLayer`]), and a slot per long-lived connection
//! under the server's and the client address's caps ([`streams`]). They are all in [`Edge`], which the server hands out.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod fit;
pub mod health;
pub mod healthcheck;
pub mod limits;
pub mod metrics;
pub mod middleware;
mod proxy;
pub mod server;
pub mod socket;
pub mod streams;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, extract::DefaultBodyLimit, extract::FromRef, routing::get};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, SetRequestIdLayer};

use crate::{
    auth::Auth,
    fit::RuntimeFit,
    health::Readiness,
    limits::{Lane, Limits, Rate, TrustedProxies},
    middleware::{
        LaneLimit, REQUEST_ID, TimeoutLayer, TraceLayer, TrackLayer, method_not_allowed, not_found,
    },
    server::ServerLimits,
    streams::Streams,
};
pub use crate::{
    config::EdgeConfig,
    error::{ApiErrorKind, EdgeError},
    health::{Answer, Checks},
};
/// The service's shutdown: one cancellation tree and task tracker
/// ([`lifecycle::Shutdown`]).
pub use lifecycle::Shutdown;

/// What a service's handlers and routes use of the edge. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Edge {
    pub auth: Arc<Auth>,
    /// Rate limits per client address and per publish token.
    pub limits: Arc<Limits>,
    pub fit: Arc<RuntimeFit>,
    pub shutdown: Shutdown,
    /// Long-lived connections (WebSocket, SSE): one slot each, taken after
    /// the token check, under the server's cap and the client address's.
    pub streams: Arc<Streams>,
    /// How long an ordinary request may take ([`Edge::timeout`]).
    pub request_timeout: Duration,
    /// The largest request body read whole, in bytes.
    pub body_limit: usize,
}

impl Edge {
    /// The state of [`middleware::rate_limit`] for a route that spends from
    /// `lane`: `route_layer(from_fn_with_state(edge.lane(Lane::Ingest), rate_limit))`.
    pub fn lane(&self, lane: Lane) -> LaneLimit {
        LaneLimit { limits: Arc::clone(&self.limits), lane }
    }

    /// The request timeout as a layer, for ordinary (not streaming) routes.
    pub fn timeout(&self) -> TimeoutLayer {
        TimeoutLayer::new(self.request_timeout)
    }
}

/// Where the operators' routes (`/metrics`, `/v1/debug/*`) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsRoutes {
    /// On the public listener, beside everything else.
    Public,
    /// On the admin listener only.
    Admin,
}

/// A service's listeners, bound, with the edge it serves through.
#[derive(Debug)]
pub struct Server {
    edge: Edge,
    config: EdgeConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The admin listener, when configured: `/metrics` and `/v1/debug/*`
    /// move there.
    admin: Option<(TcpListener, SocketAddr)>,
}

impl Server {
    /// Checks the settings, installs the metrics recorder and binds the
    /// listeners. Call it inside a tokio runtime, before the service takes
    /// any metric handle of its own (handles taken earlier go nowhere).
    pub fn bind(config: EdgeConfig) -> anyhow::Result<Self> {
        telemetry::metrics::install();
        metrics::describe();
        let auth = config.auth().map_err(anyhow::Error::msg)?;
        if auth.publish.is_empty() {
            tracing::warn!("no publish tokens configured (COURTSIDE_PUBLISH_TOKENS): publishing is disabled");
        }
        let limits = Limits::new(&config.limits(), auth.publish.len());
        log_limits(&config);
        let edge = Edge {
            auth: Arc::new(auth),
            limits: Arc::new(limits),
            fit: Arc::new(RuntimeFit::new(config.slow_poll_threshold())),
            shutdown: Shutdown::new(),
            streams: Streams::new(config.max_streams(), config.max_streams_per_address()),
            request_timeout: config.request_timeout(),
            body_limit: config.body_limit(),
        };

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
        Ok(Self { edge, config, listener, local_addr, admin })
    }

    /// What the service's routes and handlers use.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Where `/metrics` and `/v1/debug/*` are served.
    pub fn ops_routes(&self) -> OpsRoutes {
        if self.admin.is_some() { OpsRoutes::Admin } else { OpsRoutes::Public }
    }

    /// The whole HTTP surface as [`Server::serve`] serves it: `app` plus the
    /// edge's own routes, behind the edge's middleware. For tests and
    /// benchmarks that drive it without a socket.
    ///
    /// Its readiness probes start at the first `/readyz`, not here: a
    /// benchmark driving the router pays for requests only.
    pub fn router(&self, app: Router, checks: Checks) -> Router {
        self.router_with(app, Readiness::new(checks, self.edge.shutdown.clone()))
    }

    fn router_with(&self, app: Router, readiness: Readiness) -> Router {
        let ops = EdgeRoutes { readiness, fit: Arc::clone(&self.edge.fit) };
        let mut own =
            Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
        if self.ops_routes() == OpsRoutes::Public {
            own = own
                .route("/metrics", get(health::metrics))
                .route("/v1/debug/runtime-fit", get(health::runtime_fit));
        }
        let edge = &self.edge;
        // Middleware, outermost first: the request id is set (or kept, if
        // the client sent one) and the trace is decided, the request span
        // opening with it (none for an unsampled request), and the id is
        // copied onto the response; the request is measured (metrics, runtime fit)
        // and given the trace id header, and request bodies read whole are
        // capped. One `layer` call: each call wraps every route again, and
        // each wrapping boxes the request's future, on the heap, per request.
        app.merge(own.with_state(ops))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(
                ServiceBuilder::new()
                    .layer(TraceLayer)
                    .layer(TrackLayer::new(Arc::clone(&edge.fit)))
                    .layer(DefaultBodyLimit::max(edge.body_limit)),
            )
    }

    /// The admin listener's routes: what operators read, and liveness. No
    /// rate limits and no request timeout: it is reached from the monitoring
    /// network only.
    fn admin_router(&self) -> Router {
        let readiness = Readiness::new(Checks::new(), self.edge.shutdown.clone());
        Router::new()
            .route("/healthz", get(health::healthz))
            .route("/metrics", get(health::metrics))
            .route("/v1/debug/runtime-fit", get(health::runtime_fit))
            .with_state(EdgeRoutes { readiness, fit: Arc::clone(&self.edge.fit) })
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    }

    /// Serves `app` until `signal` resolves, then stops in the order load
    /// balancers and orchestrators expect: `/readyz` fails at once while
    /// requests are still served for the drain delay; then the listener
    /// closes, long-lived connections are closed (WebSockets with 1001),
    /// and in-flight requests and those closes get at most the grace period.
    pub async fn serve(
        self,
        app: Router,
        checks: Checks,
        signal: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let readiness = Readiness::new(checks, self.edge.shutdown.clone());
        // Probing from the start, so the first `/readyz` finds results.
        readiness.start();
        let app = self.router_with(app, readiness);
        let shutdown = self.edge.shutdown.clone();
        // The edge's runtime is labelled `gateway`, as the dashboards read it.
        let probe = telemetry::metrics::spawn_runtime_probe("gateway");
        shutdown.spawn(Arc::clone(&self.edge.limits).sweep_periodically());
        // Trusted proxies named by host: looked up before the first
        // connection is accepted, then kept current.
        if tokio::time::timeout(Duration::from_secs(2), self.config.trusted_proxies.resolve()).await.is_err()
        {
            tracing::warn!(
                "the trusted proxies' names did not resolve within 2 s; retrying in the background"
            );
        }
        shutdown.spawn(self.config.trusted_proxies.clone().keep_resolved());
        let admin = self.admin_router();
        let Self { config, listener, local_addr, admin: admin_listener, .. } = self;
        let admin = admin_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "admin listener: /metrics and /v1/debug/* are served here only");
            let limits = ServerLimits {
                max_connections: 64,
                header_read_timeout: config.header_read_timeout(),
                send_buffer_bytes: 64 * 1024,
                // Reached from the monitoring network, never through the
                // balancer: a PROXY header there is refused.
                trusted_proxies: TrustedProxies::default(),
            };
            // It stops with the long-lived connections: monitoring can still
            // scrape during the drain.
            tokio::spawn(server::serve(listener, admin, limits, shutdown.closing().clone()))
        });
        tracing::info!(addr = %local_addr, "listening");

        let limits = ServerLimits {
            max_connections: usize::try_from(config.max_http_connections).unwrap_or(usize::MAX),
            header_read_timeout: config.header_read_timeout(),
            send_buffer_bytes: usize::try_from(config.socket_send_buffer_bytes).unwrap_or(usize::MAX),
            // Whether or not the rate limits are on: the balancer's header
            // says who the client is for the logs and the caps too.
            trusted_proxies: config.trusted_proxies.clone(),
        };
        let served = {
            let shutdown = shutdown.clone();
            let http = server::serve(listener, app, limits, shutdown.closing().clone());
            async move {
                http.await?;
                // Upgraded WebSockets are no longer HTTP connections: wait
                // for them too, so each gets its close frame.
                shutdown.tasks_ended().await;
                Ok::<(), std::io::Error>(())
            }
        };
        let drain_delay = config.drain_delay();
        let stopping = {
            let shutdown = shutdown.clone();
            async move {
                signal.await;
                shutdown.begin_drain();
                if !drain_delay.is_zero() {
                    tracing::info!(
                        delay_secs = drain_delay.as_secs(),
                        "draining: readiness fails, still serving"
                    );
                    tokio::time::sleep(drain_delay).await;
                }
                shutdown.close();
            }
        };
        let served = lifecycle::run_with_grace(served, stopping, config.shutdown_grace()).await;
        // Also when the server stopped by itself.
        shutdown.close();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        probe.abort();
        served.context("http server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The state of the edge's own routes.
#[derive(Debug, Clone)]
struct EdgeRoutes {
    readiness: Readiness,
    fit: Arc<RuntimeFit>,
}

impl FromRef<EdgeRoutes> for Readiness {
    fn from_ref(routes: &EdgeRoutes) -> Self {
        routes.readiness.clone()
    }
}

impl FromRef<EdgeRoutes> for Arc<RuntimeFit> {
    fn from_ref(routes: &EdgeRoutes) -> Self {
        Arc::clone(&routes.fit)
    }
}

/// The OpenAPI description of the edge's own routes, to merge into a
/// service's document.
pub fn openapi(ops: OpsRoutes) -> utoipa::openapi::OpenApi {
    use utoipa_axum::{router::OpenApiRouter, routes};
    let own =
        OpenApiRouter::<EdgeRoutes>::new().routes(routes!(health::healthz)).routes(routes!(health::readyz));
    let own = match ops {
        OpsRoutes::Public => own.routes(routes!(health::metrics)).routes(routes!(health::runtime_fit)),
        OpsRoutes::Admin => own,
    };
    own.split_for_parts().1
}

/// Says which rate limits apply, once at start: a service behind a load
/// balancer without trusted proxies counts every client as the balancer.
fn log_limits(config: &EdgeConfig) {
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
        live_connections_per_address = config.max_connections_per_address,
        trusted_proxies = %limits.trusted_proxies,
        "rate limits per client address (ingest, subscribe, compute), live connections per address, and per publish token"
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

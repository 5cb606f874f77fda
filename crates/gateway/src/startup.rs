//! Builds and runs the gateway: shared state, the router with its
//! middleware, the listener, and the drain on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::DefaultBodyLimit,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, Response, Uri},
    middleware::{self, Next},
    response::IntoResponse,
    routing::get,
    serve::ListenerExt as _,
};
use store::{MemoryStore, RedisStore, StateStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::{Span, field::Empty};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    config::GatewayConfig,
    error::ApiError,
    fit::RuntimeFit,
    live::{self, LiveState},
    routes::{analytics, bench, dashboard, health, ops},
    worker::WorkerClient,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. One `Arc`: the middleware and the
/// extractors clone it a few times per request, so a clone must be a single
/// reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn StateStore>,
    pub worker: WorkerClient,
    pub live: Arc<LiveState>,
    pub fit: Arc<RuntimeFit>,
    pub request_timeout: Duration,
    pub body_limit: usize,
}

/// A gateway that has bound its port and is ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    config: GatewayConfig,
    extra_routes: Router<AppState>,
}

impl Application {
    /// Connects (lazily) to the store and the worker and binds the listener.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        // Before any metric handle is taken: handles taken earlier go nowhere.
        telemetry::metrics::install();
        crate::metrics::describe();
        let store: Arc<dyn StateStore> = match config.redis_config().map_err(anyhow::Error::msg)? {
            Some(redis) => {
                tracing::info!(url = %redis.redacted_url(), prefix = %redis.key_prefix, "state store: redis");
                Arc::new(RedisStore::connect_lazy(&redis).context("failed to set up the redis store")?)
            }
            None => {
                tracing::info!("state store: in process (set COURTSIDE_REDIS_URL to share state)");
                Arc::new(MemoryStore::new())
            }
        };
        let worker = WorkerClient::connect_lazy(&config.worker_url, config.worker_deadline())?;
        let live_config = config.live_config().map_err(anyhow::Error::msg)?;
        if live_config.publish_tokens.is_empty() {
            tracing::warn!("no publish tokens configured (COURTSIDE_PUBLISH_TOKENS): publishing is disabled");
        }
        let live = Arc::new(LiveState::new(Arc::clone(&store), live_config, CancellationToken::new()));
        let state = AppState(Arc::new(Shared {
            store,
            worker,
            live,
            fit: Arc::new(RuntimeFit::new(config.slow_poll_threshold())),
            request_timeout: config.request_timeout(),
            body_limit: config.body_limit(),
        }));

        let listener = bind(config.listen_addr)
            .with_context(|| format!("failed to bind the http listener on {}", config.listen_addr))?;
        let local_addr = listener.local_addr().context("listener has no local address")?;
        Ok(Self { listener, local_addr, state, config, extra_routes: Router::new() })
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

    /// The live feed's shared state, for tests and the all-in-one binary.
    pub fn live(&self) -> Arc<LiveState> {
        Arc::clone(&self.state.live)
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// within the configured grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let live = Arc::clone(&self.state.live);
        let bridge = tokio::spawn(live::hub::run_bridge(
            Arc::clone(&live.feed.hub),
            Arc::clone(&self.state.store),
            live.stop.clone(),
        ));
        let probe = telemetry::metrics::spawn_runtime_probe("gateway");
        let app = router_with(self.state, self.extra_routes);
        tracing::info!(addr = %self.local_addr, worker = %self.config.worker_url, "gateway listening");

        let stop = CancellationToken::new();
        let send_buffer = usize::try_from(self.config.socket_send_buffer_bytes).unwrap_or(usize::MAX);
        let listener = self.listener.tap_io(move |tcp| {
            // Small responses and live updates: send them at once.
            let _ = tcp.set_nodelay(true);
            if let Err(err) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                tracing::debug!(%err, "cannot set the socket send buffer");
            }
        });
        // `into_make_service` hands each connection a clone of this router (an
        // Arc). Serving the router itself would rebuild its whole route table
        // for every connection: 64 KB per open connection here, and a cold
        // table per connection for the CPU caches.
        let server = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        let signal = async {
            shutdown.await;
            stop.cancel();
            // Long-lived feeds would hold the drain open: close them now.
            live.stop.cancel();
        };
        let served = lifecycle::run_with_grace(server, signal, self.config.shutdown_grace()).await;
        live.stop.cancel();
        let _ = bridge.await;
        probe.abort();
        served.context("http server failed")?;
        tracing::info!("gateway stopped");
        Ok(())
    }
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

/// The whole HTTP surface. Public so tests can drive it without a socket.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The HTTP surface plus `extra` routes, all behind the same middleware.
///
/// Middleware, outermost first: a request id is set (or kept, if the client
/// sent one), the request span opens with it, the id is copied onto the
/// response, the request is measured (metrics, runtime fit), and request
/// bodies read whole are capped. Ordinary requests get the request timeout;
/// streams (bulk ingest, WebSocket, SSE) do not, as they are meant to last.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (routes, openapi) = documented_routes(state.clone()).split_for_parts();
    // Rendered once: the document never changes while the process runs.
    let document = bytes::Bytes::from(openapi.to_json().unwrap_or_else(|_| "{}".into()));
    routes
        .route(
            "/openapi.json",
            get(move || {
                std::future::ready(([(http::header::CONTENT_TYPE, "application/json")], document.clone()))
            }),
        )
        .merge(extra)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(http_span).on_response(record_status))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::map_response(trace_id_header)),
        )
        .with_state(state)
}

/// Every public route with its OpenAPI description.
fn documented_routes(state: AppState) -> OpenApiRouter<AppState> {
    let requests = OpenApiRouter::new()
        .routes(routes!(bench::slow))
        .routes(routes!(bench::compute))
        .routes(routes!(live::routes::publish))
        .routes(routes!(live::routes::list_matches))
        .routes(routes!(live::routes::get_match))
        .routes(routes!(analytics::match_impact))
        .routes(routes!(analytics::player_impact))
        .routes(routes!(analytics::win_probability))
        .routes(routes!(analytics::start_job))
        .route_layer(middleware::from_fn_with_state(state, request_timeout));
    let streams = OpenApiRouter::new()
        .routes(routes!(live::routes::publish_bulk))
        .routes(routes!(live::ws::live_ws))
        .routes(routes!(live::sse::live_sse))
        // A job's progress may be streamed for as long as the job runs.
        .routes(routes!(analytics::job));

    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::style_css))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::runtime_fit))
        .merge(requests)
        .merge(streams)
}

const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Tells the client which trace its request is in, so a bug report can
/// point straight at it. Runs inside the request span; absent when the
/// request is not traced.
async fn trace_id_header(mut response: Response<Body>) -> Response<Body> {
    if let Some(id) = telemetry::propagation::trace_id(&Span::current())
        && let Ok(value) = http::HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(TRACE_ID, value);
    }
    response
}

/// Answers 504 with a JSON body when a request outlives the timeout.
async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response<Body> {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let ms = u64::try_from(state.request_timeout.as_millis()).unwrap_or(u64::MAX);
            ApiError::RequestTimeout(ms).into_response()
        }
    }
}

/// The server span of one request, named and attributed as the
/// OpenTelemetry HTTP conventions ask (`GET /v1/bench/compute`, route
/// template rather than raw path), and parented to the caller's span when the
/// request carries W3C trace context.
fn http_span(request: &Request<Body>) -> Span {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {}", route.unwrap_or("unmatched")),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route.unwrap_or_default(),
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
        request_id = %request_id,
        error.message = Empty,
    );
    telemetry::propagation::set_remote_parent(&span, request.headers());
    span
}

fn record_status<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(status = status.as_u16(), latency_ms = latency.as_millis(), "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms = latency.as_millis(), "request done");
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

//! The whole HTTP surface: every route, each with its OpenAPI description,
//! behind the middleware of [`crate::middleware`].

use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    config::BenchRoutes,
    limits::Lane,
    live,
    middleware::{
        LaneLimit, REQUEST_ID, TimeoutLayer, TrackLayer, http_span, method_not_allowed, not_found,
        rate_limit, record_status, require_reader,
    },
    routes::{bench, dashboard, health, impact, jobs, matches, ops, views},
    state::AppState,
};

/// Where the operators' routes (`/metrics`, `/v1/debug/*`) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsRoutes {
    /// On the public listener, beside everything else.
    Public,
    /// On the admin listener only ([`admin_router`]).
    Admin,
}

/// The whole HTTP surface. Public so tests can drive it without a socket.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new(), OpsRoutes::Public)
}

/// The admin listener's routes: what operators read, and the probes. No
/// rate limits and no request timeout: it is reached from the monitoring
/// network only.
pub fn admin_router(state: AppState) -> Router {
    let (routes, _) = OpenApiRouter::<AppState>::new()
        .routes(routes!(health::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::runtime_fit))
        .split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The HTTP surface plus `extra` routes, all behind the same middleware.
///
/// Middleware, outermost first: a request id is set (or kept, if the client
/// sent one), the request span opens with it, the id is copied onto the
/// response, the request is measured (metrics, runtime fit) and given the
/// trace id header, and request bodies read whole are capped. Ordinary requests get the request timeout;
/// streams (bulk ingest, WebSocket, SSE) do not, as they are meant to last.
pub fn router_with(state: AppState, extra: Router<AppState>, ops: OpsRoutes) -> Router {
    let (routes, openapi) = documented_routes(state.clone(), ops).split_for_parts();
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
        .method_not_allowed_fallback(method_not_allowed)
        // One `layer` call: each call wraps every route again, and each
        // wrapping boxes the request's future, on the heap, per request.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(http_span).on_response(record_status))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(TrackLayer::new(std::sync::Arc::clone(&state.fit)))
                .layer(DefaultBodyLimit::max(state.body_limit)),
        )
        .with_state(state)
}

/// Every public route with its OpenAPI description.
///
/// The routes that cost something per request spend from a rate-limit lane
/// (a route layer, so it runs before the handler's token check and body
/// read): ingest, subscribe (the WebSocket and SSE feeds) and compute (the
/// analytics routes and the compute benchmark).
fn documented_routes(state: AppState, ops_routes: OpsRoutes) -> OpenApiRouter<AppState> {
    let limited = |lane: Lane| {
        middleware::from_fn_with_state(
            LaneLimit { limits: std::sync::Arc::clone(&state.limits), lane },
            rate_limit,
        )
    };
    let reader = || middleware::from_fn_with_state(state.clone(), require_reader);
    let slow = OpenApiRouter::new().routes(routes!(bench::slow));
    let compute = OpenApiRouter::new().routes(routes!(bench::compute));
    let bench = match state.bench_routes {
        BenchRoutes::Public => slow.merge(compute.route_layer(limited(Lane::Compute))),
        // The rate limit outside the token check: a client over its rate
        // does not get its guesses checked.
        BenchRoutes::ReadToken => slow
            .route_layer(reader())
            .merge(compute.route_layer(reader()).route_layer(limited(Lane::Compute))),
        BenchRoutes::Off => OpenApiRouter::new(),
    };
    let analytics = OpenApiRouter::new()
        .routes(routes!(impact::match_impact))
        .routes(routes!(impact::player_impact))
        .routes(routes!(impact::win_probability))
        .routes(routes!(jobs::start_job))
        .route_layer(limited(Lane::Compute));
    let requests = OpenApiRouter::new()
        .merge(bench)
        .merge(OpenApiRouter::new().routes(routes!(matches::publish)).route_layer(limited(Lane::Ingest)))
        .merge(analytics)
        .routes(routes!(matches::list_matches))
        .routes(routes!(matches::get_match))
        .merge(views::documented())
        .route_layer(TimeoutLayer::new(state.request_timeout));
    let streams = OpenApiRouter::new()
        .merge(OpenApiRouter::new().routes(routes!(matches::publish_bulk)).route_layer(limited(Lane::Ingest)))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(live::ws::live_ws))
                .routes(routes!(live::sse::live_sse))
                .route_layer(limited(Lane::Subscribe)),
        )
        // A job's progress may be streamed for as long as the job runs.
        .merge(OpenApiRouter::new().routes(routes!(jobs::job)).route_layer(limited(Lane::Compute)));

    let ops = match ops_routes {
        OpsRoutes::Public => {
            OpenApiRouter::new().routes(routes!(ops::metrics)).routes(routes!(ops::runtime_fit))
        }
        OpsRoutes::Admin => OpenApiRouter::new(),
    };
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::style_css))
        .merge(dashboard::pages())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .merge(ops)
        .merge(requests)
        .merge(streams)
}

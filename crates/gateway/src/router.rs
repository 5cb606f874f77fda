//! The gateway's HTTP surface: every football route, each with its OpenAPI
//! description. The edge adds its own (`/healthz`, `/readyz`, `/metrics`,
//! `/v1/debug/runtime-fit`) and the middleware every request passes.

use axum::{Router, middleware, routing::get};
use edge::{
    OpsRoutes,
    limits::Lane,
    middleware::{rate_limit, require_reader},
};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    config::BenchRoutes,
    live,
    routes::{bench, dashboard, impact, jobs, matches, views},
    state::AppState,
};

/// The gateway's routes, each with its OpenAPI description, and the
/// document itself at `/openapi.json`, ready for [`edge::Server`] to serve
/// behind its middleware. `extra` routes are served beside them.
pub(crate) fn routes(state: AppState, extra: Router<AppState>, ops: OpsRoutes) -> Router {
    let (routes, openapi) = documented_routes(state.clone()).split_for_parts();
    let mut openapi = openapi;
    openapi.merge(edge::openapi(ops));
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
        .with_state(state)
}

/// Every public route with its OpenAPI description.
///
/// The routes that cost something per request spend from a rate-limit lane
/// (a route layer, so it runs before the handler's token check and body
/// read): ingest, subscribe (the WebSocket and SSE feeds) and compute (the
/// analytics routes and the compute benchmark).
fn documented_routes(state: AppState) -> OpenApiRouter<AppState> {
    let limited = |lane: Lane| middleware::from_fn_with_state(state.edge.lane(lane), rate_limit);
    let reader = || middleware::from_fn_with_state(std::sync::Arc::clone(&state.edge.auth), require_reader);
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
        .route_layer(state.edge.timeout());
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

    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::style_css))
        .merge(dashboard::pages())
        .merge(requests)
        .merge(streams)
}

//! The middleware every request passes through, outermost first: a request
//! id is set (or kept, if the client sent one), the request span opens with
//! it, the request is measured (metrics, runtime fit) and its response gets
//! the trace id, and ordinary requests get the request timeout.
//! [`crate::router`] stacks them; each is a plain function here.

use std::{sync::Arc, time::Duration, time::Instant};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, Method, Response, Uri},
    middleware::Next,
    response::IntoResponse as _,
};
use tower_http::request_id::RequestId;
use tracing::{Span, field::Empty};

use crate::{
    auth::Auth,
    error::{ApiError, ErrorCause, RateLimitedIn},
    fit::RuntimeFit,
    limits::{ClientKey, Lane, Limits},
    metrics::RouteSeries,
    state::RequestTimeout,
};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// The method as a label: one of the standard methods, or `_OTHER` (as the
/// OpenTelemetry HTTP conventions spell it). A client can send any token as
/// a method; labels and map keys taken from it unchecked would let it grow
/// the gateway's memory one made-up method at a time.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Measures every routed request: in-flight gauge, duration histogram by
/// route template and status, and the route's runtime-fit monitor around
/// the handler's future. Requests that matched no route are not measured
/// per route: their path is the client's, not ours.
pub async fn track(State(fit): State<Arc<RuntimeFit>>, request: Request, next: Next) -> Response<Body> {
    let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
        return with_trace_id(next.run(request).await);
    };
    let method = method_label(request.method());
    let route = fit.route(method, path.as_str());
    let series = Arc::clone(route.series.get_or_init(|| Arc::new(RouteSeries::new(method, path.as_str()))));

    let _active = telemetry::metrics::InFlight::start(series.active());
    let started = Instant::now();
    let response = RuntimeFit::monitor(&route).instrument(next.run(request)).await;
    let wall = started.elapsed();
    fit.finished(&route, wall);
    series.duration(response.status().as_u16()).record(wall.as_secs_f64());
    if let Some(RateLimitedIn(lane)) = response.extensions().get() {
        crate::metrics::count_rate_limited(path.as_str(), *lane);
    }
    with_trace_id(response)
}

/// The state of [`rate_limit`]: the limits and the lane a route spends.
#[derive(Debug, Clone)]
pub struct LaneLimit {
    pub limits: Arc<Limits>,
    pub lane: Lane,
}

/// Takes one request from the client's bucket in the route's lane, or
/// answers 429 with `Retry-After`. Runs before the handler, so before its
/// token check and before any body is read: a client over its rate costs
/// a map lookup. The client's key is left in the request's extensions for
/// handlers that count more against it (WebSocket subscribes).
pub async fn rate_limit(
    State(LaneLimit { limits, lane }): State<LaneLimit>,
    mut request: Request,
    next: Next,
) -> Response<Body> {
    if !limits.is_on(lane) {
        return next.run(request).await;
    }
    let client = ClientKey::of(&limits, &request);
    request.extensions_mut().insert(client);
    match limits.check(lane, client) {
        Ok(()) => next.run(request).await,
        Err(limited) => ApiError::from(limited).into_response(),
    }
}

/// Answers 504 with a JSON body when a request outlives the timeout.
pub async fn request_timeout(
    State(RequestTimeout(timeout)): State<RequestTimeout>,
    request: Request,
    next: Next,
) -> Response<Body> {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            ApiError::RequestTimeout(ms).into_response()
        }
    }
}

/// Tells the client which trace its request is in, so a bug report can
/// point straight at it. Called from [`track`], inside the request span
/// (a layer of its own cost a boxed future and a service clone per
/// request); absent when the request is not traced.
fn with_trace_id(mut response: Response<Body>) -> Response<Body> {
    if let Some(id) = telemetry::propagation::trace_id(&Span::current())
        && let Ok(value) = http::HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(TRACE_ID, value);
    }
    response
}

/// The server span of one request, named and attributed as the
/// OpenTelemetry HTTP conventions ask (`GET /v1/bench/compute`, route
/// template rather than raw path), and parented to the caller's span when the
/// request carries W3C trace context.
pub fn http_span(request: &Request<Body>) -> Span {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %SpanName { method, route },
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

/// `GET /v1/matches/{id}`: the span's name as the conventions spell it,
/// written only when a layer reads it (no string built per request when no
/// exporter is on).
struct SpanName<'a> {
    method: &'static str,
    route: Option<&'a str>,
}

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method)?;
        f.write_str(" ")?;
        f.write_str(self.route.unwrap_or("unmatched"))
    }
}

pub fn record_status<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        let cause = response.extensions().get::<ErrorCause>().map_or("", |cause| cause.0.as_str());
        tracing::warn!(status = status.as_u16(), latency_ms = latency.as_millis(), cause, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms = latency.as_millis(), "request done");
    }
}

/// Lets through only readers (a read or publish token, header or `?token=`)
/// when read tokens are configured.
pub async fn require_reader(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response<Body> {
    // Decoded as every handler's `?token=` is, so a token with reserved
    // characters works here too.
    let query = axum::extract::Query::<crate::auth::TokenQuery>::try_from_uri(request.uri()).ok();
    let query_token = query.as_ref().and_then(|query| query.0.token.as_deref());
    match auth.authorize_read(request.headers(), query_token) {
        Ok(()) => next.run(request).await,
        Err(err) => ApiError::from(err).into_response(),
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method_label(&method), path: uri.path().to_owned() }
}

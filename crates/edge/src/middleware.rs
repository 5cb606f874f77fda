//! The middleware every request passes through, outermost first: the
//! request gets its id (the client's, or a new one) and its trace is
//! decided and its span opens (or, unsampled, none: [`TraceLayer`]), the
//! request is measured (metrics, runtime fit) and its response gets the
//! trace id, and ordinary requests get the request timeout.
//! [`crate::Server`] stacks them. The ones every ordinary request passes
//! (tracing, tracking, the timeout) are tower services; the route-specific
//! ones are plain functions.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderName, Method, Response, Uri},
    middleware::Next,
    response::IntoResponse as _,
};
use tracing::{Span, field::Empty};

use crate::{
    auth::Auth,
    error::{EdgeError, ErrorCause, RateLimitedIn},
    fit::RuntimeFit,
    limits::{ClientKey, Lane, Limits, count_rate_limited},
    metrics::RouteSeries,
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
/// the handler's future; and gives its response the trace id header.
/// Requests that matched no route are not measured per route: their path is
/// the client's, not ours.
///
/// A tower layer rather than `axum::middleware::from_fn`: every request
/// passes here, and a function middleware costs a boxed service clone and a
/// boxed future per request (about 2,500 instructions, a sixth of what bare
/// axum spends on a whole request).
#[derive(Debug, Clone)]
pub struct TrackLayer {
    fit: Arc<RuntimeFit>,
}

impl TrackLayer {
    pub fn new(fit: Arc<RuntimeFit>) -> Self {
        Self { fit }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner, fit: Arc::clone(&self.fit) }
    }
}

/// The service of [`TrackLayer`].
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
    fit: Arc<RuntimeFit>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
            return TrackFuture::Unmatched { inner: self.inner.call(request) };
        };
        let method = method_label(request.method());
        let route = self.fit.route(method, path.as_str());
        let series =
            Arc::clone(route.series.get_or_init(|| Arc::new(RouteSeries::new(method, path.as_str()))));
        let started = Instant::now();
        let inner = route.timed(self.inner.call(request), started);
        let measured = Measured {
            _active: telemetry::metrics::InFlight::start(series.active()),
            series,
            fit: Arc::clone(&self.fit),
            route,
            method,
            path,
            started,
        };
        TrackFuture::Matched { inner, measured: Some(measured) }
    }
}

/// What [`Track`] records once the response is ready.
struct Measured {
    /// Held while the request is in flight: the gauge goes down on drop,
    /// also when the request is cancelled.
    _active: telemetry::metrics::InFlight,
    series: Arc<RouteSeries>,
    fit: Arc<RuntimeFit>,
    route: Arc<crate::fit::RouteFit>,
    method: &'static str,
    path: MatchedPath,
    started: Instant,
}

impl Measured {
    fn record(self, response: &mut Response<Body>, ended: Instant) {
        let wall = ended.saturating_duration_since(self.started);
        self.fit.finished(&self.route, wall);
        self.series.duration(response.status().as_u16()).record(wall.as_secs_f64());
        if let Some(RateLimitedIn(lane)) = response.extensions().get() {
            count_rate_limited(self.path.as_str(), *lane);
        }
        // For the failure's log line (`record_status`): the request span,
        // which would name the route, is not logged at the default level.
        if response.status().is_server_error() {
            response.extensions_mut().insert(Served { method: self.method, route: self.path, wall });
        }
    }
}

/// The method, route template and duration of a request that failed on
/// our side.
#[derive(Debug, Clone)]
struct Served {
    method: &'static str,
    route: MatchedPath,
    wall: Duration,
}

pin_project_lite::pin_project! {
    /// The response future of [`Track`].
    #[project = TrackProjection]
    pub enum TrackFuture<F> {
        Unmatched { #[pin] inner: F },
        Matched { #[pin] inner: crate::fit::Timed<F>, measured: Option<Measured> },
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match self.project() {
            TrackProjection::Unmatched { inner } => ready!(inner.poll(cx))?,
            TrackProjection::Matched { inner, measured } => {
                let (response, ended) = ready!(inner.poll(cx));
                let mut response = response?;
                if let Some(measured) = measured.take() {
                    measured.record(&mut response, ended);
                }
                response
            }
        };
        with_trace_id(&mut response);
        Poll::Ready(Ok(response))
    }
}

/// Gives each request its id and decides its trace before any span exists
/// ([`telemetry::sampling`]): a sampled request (or any, without an
/// exporter) is served inside its span ([`http_span`]); an unsampled one
/// opens none and is served inside its trace's context, which gives its
/// response, its log lines and its calls to the worker the trace id. Either
/// way the response gets the request id and is logged by [`record_status`].
///
/// The request id is the client's `x-request-id` when it sent one, else a
/// fresh UUID; it is set on the request (handlers and the span read it
/// there) and copied onto the response.
///
/// Its own tower layer rather than tower-http's `TraceLayer`, which opens a
/// span for every request: a span costs its creation, an enter and an exit
/// on every poll, and its close, whether or not it is kept. And the request
/// id is set here rather than by two tower-http layers (set, propagate):
/// every layer wraps every request's future once more.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Trace<S>
where
    S: tower::Service<Request, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        use telemetry::sampling::Decision;
        let request_id = request_id(&mut request);
        // A request's duration is measured by `Track` for the routes; this
        // clock read only serves the debug line of every request.
        let logged = request_spans_logged();
        let started = logged.then(Instant::now);
        let (trace_id, unsampled) = match telemetry::sampling::decide(request.headers()) {
            // A span only the logs would read: when they do not
            // (`RUST_LOG=...,request=debug`), none at all.
            Decision::NotSampled(context) if !logged => {
                let inner = {
                    let _attached = context.clone().attach();
                    self.inner.call(request)
                };
                return TraceFuture::Unsampled { inner, context, request_id: Some(request_id), started };
            }
            Decision::NotSampled(context) => (None, Some(context)),
            Decision::Sampled { trace_id } => (trace_id, None),
            Decision::Span => (None, None),
        };
        // Started at once, so the SDK draws the trace id the decision was
        // made on (it starts a span lazily, possibly on another thread).
        let span = telemetry::sampling::with_trace_id(trace_id, || {
            let span = http_span(&request);
            telemetry::propagation::is_sampled(&span);
            span
        });
        if let Some(context) = unsampled {
            // Logged, not exported: the unsampled parent makes the SDK drop it.
            telemetry::propagation::set_parent(&span, context);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TraceFuture::Spanned { inner, span, request_id: Some(request_id), started }
    }
}

/// The request's `x-request-id`: the client's, or a new UUID set on it.
fn request_id(request: &mut Request) -> http::HeaderValue {
    if let Some(id) = request.headers().get(REQUEST_ID) {
        return id.clone();
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let id = http::HeaderValue::from_str(text).expect("a UUID is a valid header value");
    request.headers_mut().insert(REQUEST_ID, id.clone());
    id
}

/// Whether the logs show request spans (`RUST_LOG=...,request=debug`).
fn request_spans_logged() -> bool {
    tracing::enabled!(target: telemetry::REQUEST_SPAN_TARGET, tracing::Level::DEBUG)
}

pin_project_lite::pin_project! {
    /// The response future of [`Trace`].
    #[project = TraceProjection]
    pub enum TraceFuture<F> {
        Spanned {
            #[pin] inner: F,
            span: Span,
            request_id: Option<http::HeaderValue>,
            started: Option<Instant>,
        },
        Unsampled {
            #[pin] inner: F,
            context: opentelemetry::Context,
            request_id: Option<http::HeaderValue>,
            started: Option<Instant>,
        },
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TraceProjection::Spanned { inner, span, request_id, started } => {
                let _entered = span.enter();
                let mut response = ready!(inner.poll(cx))?;
                with_request_id(&mut response, request_id.take());
                record_status(&response, *started, span);
                Poll::Ready(Ok(response))
            }
            TraceProjection::Unsampled { inner, context, request_id, started } => {
                let _attached = context.clone().attach();
                let mut response = ready!(inner.poll(cx))?;
                with_request_id(&mut response, request_id.take());
                record_status(&response, *started, &Span::none());
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// Copies the request id onto the response, unless a handler set its own.
fn with_request_id(response: &mut Response<Body>, id: Option<http::HeaderValue>) {
    if let Some(id) = id
        && let http::header::Entry::Vacant(entry) = response.headers_mut().entry(REQUEST_ID)
    {
        entry.insert(id);
    }
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
        Err(limited) => EdgeError::from(limited).into_response(),
    }
}

/// Answers 504 with a JSON body when a request outlives the timeout. A
/// tower layer for the reason [`TrackLayer`] is one: every ordinary request
/// passes here.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, timeout: self.timeout }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<Request> for Timeout<S>
where
    S: tower::Service<Request, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        TimeoutFuture {
            inner: tokio::time::timeout(self.timeout, self.inner.call(request)),
            timeout: self.timeout,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        timeout: Duration,
    }
}

impl<F, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(response) => Poll::Ready(response),
            Err(_elapsed) => {
                let ms = u64::try_from(this.timeout.as_millis()).unwrap_or(u64::MAX);
                Poll::Ready(Ok(EdgeError::RequestTimeout(ms).into_response()))
            }
        }
    }
}

/// Tells the client which trace its request is in, so a bug report can
/// point straight at it. Called from [`Track`], inside the request span;
/// absent when the request is not traced.
fn with_trace_id(response: &mut Response<Body>) {
    if let Some(value) = telemetry::propagation::trace_id_header(&Span::current()) {
        response.headers_mut().insert(TRACE_ID, value);
    }
}

/// The server span of one request, named and attributed as the
/// OpenTelemetry HTTP conventions ask (`GET /v1/bench/compute`, route
/// template rather than raw path), and parented to the caller's span when the
/// request carries W3C trace context.
///
/// At DEBUG under [`telemetry::REQUEST_SPAN_TARGET`]: exported whenever
/// traces are, logged only when asked (`RUST_LOG=info,request=debug`), and
/// not created at all at the default level without export. A failure's log
/// line names its request itself ([`record_status`]).
pub fn http_span(request: &Request<Body>) -> Span {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let span = tracing::debug_span!(
        target: telemetry::REQUEST_SPAN_TARGET,
        "http.server",
        otel.name = %SpanName { method, route },
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = Empty,
        http.route = Empty,
        url.path = Empty,
        client.address = Empty,
        http.response.status_code = Empty,
        request_id = Empty,
        error.message = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    telemetry::propagation::set_remote_parent(&span, request.headers());
    // The attributes only for a span someone keeps: the sampler's (asked
    // here, once the parent is known) or the logs'. At 10 % sampling the
    // other nine requests in ten would pay for attributes that are dropped.
    let logged = tracing::enabled!(target: telemetry::REQUEST_SPAN_TARGET, tracing::Level::DEBUG);
    if logged || telemetry::propagation::is_sampled(&span) {
        let request_id =
            request.headers().get(REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or_default();
        span.record("http.request.method", method);
        span.record("http.route", route.unwrap_or_default());
        span.record("url.path", request.uri().path());
        span.record("request_id", request_id);
        // The client's own address: behind a trusted balancer, the one its
        // PROXY header named.
        if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
            span.record("client.address", tracing::field::display(peer.ip()));
        }
    }
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

/// Closes a request's span with its status, and logs the request: a warning
/// when it failed on our side, naming the request (id, method, route,
/// duration) since the request span is not on the line at the default
/// level; a debug line otherwise. `started` is there when the debug lines
/// are logged; a failed routed request's duration comes from `Track`.
pub fn record_status<B>(response: &Response<B>, started: Option<Instant>, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        let cause = response.extensions().get::<ErrorCause>().map_or("", |cause| cause.0.as_str());
        let request_id =
            response.headers().get(REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or_default();
        let served = response.extensions().get::<Served>();
        let (method, route) = served.map_or(("", ""), |served| (served.method, served.route.as_str()));
        let latency = served.map(|served| served.wall).or_else(|| started.map(|started| started.elapsed()));
        tracing::warn!(
            target: telemetry::REQUEST_SPAN_TARGET,
            status = status.as_u16(),
            latency_ms = latency.map(|latency| latency.as_millis()),
            cause,
            request_id,
            method,
            route,
            "request failed"
        );
    } else {
        tracing::debug!(
            target: telemetry::REQUEST_SPAN_TARGET,
            status = status.as_u16(),
            latency_ms = started.map(|started| started.elapsed().as_millis()),
            "request done"
        );
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
        Err(err) => EdgeError::from(err).into_response(),
    }
}

pub async fn not_found(uri: Uri) -> EdgeError {
    EdgeError::NotFound(uri.path().to_owned())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> EdgeError {
    EdgeError::MethodNotAllowed { method: method_label(&method), path: uri.path().to_owned() }
}

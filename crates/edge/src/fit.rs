//! The runtime-fit report: for each route, how much of a request's wall
//! time its future spends being polled on the event loop.
//!
//! The seed's rule of thumb, measured instead of guessed: "if CPU is under
//! 10–20% the event loop shines". A route that waits (on a timer, Redis, the
//! worker) is polled for microseconds of a request lasting milliseconds; a
//! route that computes is polled for most of it, and while it is, every
//! other connection on that thread waits. Each route's future is wrapped in
//! [`Timed`], which adds up poll time and counts polls over the slow-poll
//! threshold in three atomics, and whose last poll's end is the request's
//! end: two clock reads per poll, shared with the request's metrics.
//!
//! Verdicts: "edge" under 10% CPU share, "review" from 10% to 20%, "move to
//! worker" over 20% or when polls exceed the slow-poll threshold (a 50 ms
//! poll stalls a thread's other connections for 50 ms). A route's first
//! crossing into "move to worker" is logged once. Two refinements keep the
//! verdict about blocking rather than about arithmetic:
//! - a route that never waits (`/healthz`, a cached read) is all CPU share
//!   but blocks nobody: under [`CHEAP_REQUEST`] of poll time per request it
//!   stays "edge";
//! - poll times are wall-clock times, so on an oversubscribed machine a
//!   thread preempted mid-poll turns a 50 µs poll into a 15 ms one. Slow
//!   polls count once they are at least 1% of the route's requests (so a
//!   route that blocks on every request flips at its first), not at one
//!   preemption in a hundred thousand requests.
//!
//! Poll time counts while the handler and the middleware inside this layer
//! run (routing included: the first poll is timed from the request's
//! start); a streamed response body (SSE, bulk ingest's reply, a WebSocket
//! after the upgrade) is polled by the connection task, outside it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// CPU share below which a route belongs on the event loop.
pub const REVIEW_SHARE: f64 = 0.10;
/// CPU share above which a route belongs on the worker.
pub const MOVE_SHARE: f64 = 0.20;
/// Poll time per request below which a route blocks nobody, whatever its
/// share.
pub const CHEAP_REQUEST: Duration = Duration::from_millis(1);
/// Share of requests with a slow poll from which slow polls decide.
pub const SLOW_POLL_SHARE: f64 = 0.01;

/// Where a route belongs, judged by its CPU share and slowest polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum Verdict {
    #[serde(rename = "edge")]
    Edge,
    #[serde(rename = "review")]
    Review,
    #[serde(rename = "move to worker")]
    MoveToWorker,
}

/// Measurements of every route served so far.
#[derive(Debug)]
pub struct RuntimeFit {
    slow_poll: Duration,
    /// By route template, then method: looked up on every request, by
    /// borrowed `&str`, so the hot path allocates nothing.
    routes: RwLock<HashMap<String, Vec<Arc<RouteFit>>>>,
}

/// One route's poll times and running totals.
pub struct RouteFit {
    route: String,
    method: String,
    path: String,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    slow_polls: AtomicU64,
    slow_poll_ns: u64,
    /// The route's HTTP metric handles, looked up once.
    pub(crate) series: OnceLock<Arc<crate::metrics::RouteSeries>>,
    /// Wall time per request, in microseconds.
    wall: Mutex<Histogram<u32>>,
    wall_total_us: AtomicU64,
    warned: AtomicBool,
}

impl std::fmt::Debug for RouteFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteFit").field("route", &self.route).finish_non_exhaustive()
    }
}

/// One route's line of the report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteReport {
    /// Method and route template, e.g. `GET /v1/bench/slow`.
    pub route: String,
    pub method: String,
    pub path: String,
    pub requests: u64,
    pub wall_p50_ms: f64,
    pub wall_p99_ms: f64,
    /// Mean time of one poll of the route's future.
    pub mean_poll_us: f64,
    /// Mean poll time of one request, all its polls together.
    pub busy_per_request_us: f64,
    /// Poll time over wall time, summed over every request (0..1).
    pub cpu_share: f64,
    /// Polls longer than the slow-poll threshold.
    pub slow_polls: u64,
    pub verdict: Verdict,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub slow_poll_threshold_ms: f64,
    /// CPU share from which a route is reviewed, and from which it should move.
    pub review_share: f64,
    pub move_share: f64,
    pub routes: Vec<RouteReport>,
}

impl Report {
    /// Copies the figures into gauges, so dashboards can chart what
    /// `/v1/debug/runtime-fit` reports. Called on each scrape.
    pub fn export_gauges(&self) {
        use crate::metrics::{ROUTE_CPU_SHARE, ROUTE_SLOW_POLLS};
        for line in &self.routes {
            let labels = [("http_request_method", line.method.clone()), ("http_route", line.path.clone())];
            metrics::gauge!(ROUTE_CPU_SHARE, &labels).set(line.cpu_share);
            metrics::gauge!(ROUTE_SLOW_POLLS, &labels).set(line.slow_polls as f64);
        }
    }
}

impl RuntimeFit {
    pub fn new(slow_poll: Duration) -> Self {
        Self { slow_poll, routes: RwLock::new(HashMap::new()) }
    }

    /// The monitor of a route template, created on first use. Routes come
    /// from the router's templates and methods from a closed set
    /// ([`crate::middleware::method_label`]), so the map stays small.
    pub fn route(&self, method: &str, path: &str) -> Arc<RouteFit> {
        let of_method = |fits: &Vec<Arc<RouteFit>>| fits.iter().find(|fit| fit.method == method).cloned();
        if let Some(fit) =
            self.routes.read().unwrap_or_else(PoisonError::into_inner).get(path).and_then(of_method)
        {
            return fit;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let fits = routes.entry(path.to_owned()).or_default();
        if let Some(fit) = of_method(fits) {
            return fit;
        }
        let fit = Arc::new(RouteFit {
            route: format!("{method} {path}"),
            method: method.to_owned(),
            path: path.to_owned(),
            series: OnceLock::new(),
            polls: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            slow_polls: AtomicU64::new(0),
            slow_poll_ns: u64::try_from(self.slow_poll.as_nanos()).unwrap_or(u64::MAX),
            // 1 µs to 10 minutes at 2 significant digits (1% resolution,
            // plenty for p50 and p99), 32-bit counts: about 12 KB per method
            // and route, and both come from closed sets. Longer requests
            // saturate at the top bucket.
            wall: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds")),
            wall_total_us: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        });
        fits.push(Arc::clone(&fit));
        fit
    }

    /// Records one finished request and logs, once per route, its crossing
    /// into "move to worker".
    pub fn finished(&self, fit: &RouteFit, wall: Duration) {
        let micros = u64::try_from(wall.as_micros()).unwrap_or(u64::MAX).max(1);
        fit.wall_total_us.fetch_add(micros, Ordering::Relaxed);
        let requests = {
            let mut histogram = fit.wall.lock().unwrap_or_else(PoisonError::into_inner);
            histogram.saturating_record(micros);
            histogram.len()
        };
        if fit.warned.load(Ordering::Relaxed) {
            return;
        }
        // Judged on every request until the warning is out: a handful of
        // atomic loads, no percentiles.
        let judged = self.fit_of(fit, requests);
        if verdict(judged) == Verdict::MoveToWorker && !fit.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                route = %fit.route,
                cpu_share = judged.cpu_share,
                slow_polls = judged.slow_polls,
                slow_poll_ms = self.slow_poll.as_millis(),
                "route does cpu work on the event loop: move it to the worker"
            );
        }
    }

    fn fit_of(&self, fit: &RouteFit, requests: u64) -> Fit {
        let wall_total = fit.wall_total_us.load(Ordering::Relaxed) as f64 / 1e6;
        let busy = fit.busy().as_secs_f64();
        Fit {
            cpu_share: if wall_total > 0.0 { (busy / wall_total).min(1.0) } else { 0.0 },
            busy_per_request: Duration::from_secs_f64(if requests > 0 {
                busy / requests as f64
            } else {
                0.0
            }),
            slow_polls: fit.slow_polls.load(Ordering::Relaxed),
            requests,
        }
    }

    /// Every route seen so far, busiest event-loop user first.
    pub fn report(&self) -> Report {
        let routes: Vec<Arc<RouteFit>> =
            self.routes.read().unwrap_or_else(PoisonError::into_inner).values().flatten().cloned().collect();
        let mut lines: Vec<RouteReport> = routes.iter().map(|fit| self.report_of(fit)).collect();
        lines.sort_by(|a, b| b.cpu_share.total_cmp(&a.cpu_share).then_with(|| a.route.cmp(&b.route)));
        Report {
            slow_poll_threshold_ms: self.slow_poll.as_secs_f64() * 1e3,
            review_share: REVIEW_SHARE,
            move_share: MOVE_SHARE,
            routes: lines,
        }
    }

    fn report_of(&self, fit: &RouteFit) -> RouteReport {
        let (requests, p50, p99) = {
            let wall = fit.wall.lock().unwrap_or_else(PoisonError::into_inner);
            (wall.len(), wall.value_at_quantile(0.5), wall.value_at_quantile(0.99))
        };
        let judged = self.fit_of(fit, requests);
        let polls = fit.polls.load(Ordering::Relaxed);
        let mean_poll_us = if polls > 0 { fit.busy().as_secs_f64() * 1e6 / polls as f64 } else { 0.0 };
        RouteReport {
            route: fit.route.clone(),
            method: fit.method.clone(),
            path: fit.path.clone(),
            requests,
            wall_p50_ms: p50 as f64 / 1e3,
            wall_p99_ms: p99 as f64 / 1e3,
            mean_poll_us,
            busy_per_request_us: judged.busy_per_request.as_secs_f64() * 1e6,
            cpu_share: judged.cpu_share,
            slow_polls: judged.slow_polls,
            verdict: verdict(judged),
        }
    }
}

impl RouteFit {
    /// `inner`, a request to this route that started at `started`, with its
    /// polls timed.
    pub fn timed<F>(self: &Arc<Self>, inner: F, started: Instant) -> Timed<F> {
        Timed { inner, fit: Arc::clone(self), next_poll: Some(started) }
    }

    fn polled(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.busy_ns.fetch_add(nanos, Ordering::Relaxed);
        if nanos >= self.slow_poll_ns {
            self.slow_polls.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }
}

pin_project_lite::pin_project! {
    /// A route's future with every poll timed into its [`RouteFit`]. Yields
    /// the future's output and when its last poll ended: the request's end,
    /// read once for the metrics and the report alike.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        fit: Arc<RouteFit>,
        // The first poll is timed from the request's start, read once by
        // the caller: one clock read fewer per request.
        next_poll: Option<Instant>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Instant);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let start = this.next_poll.take().unwrap_or_else(Instant::now);
        let polled = this.inner.poll(cx);
        let end = Instant::now();
        this.fit.polled(end.saturating_duration_since(start));
        polled.map(|output| (output, end))
    }
}

/// What a verdict is judged on.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    pub cpu_share: f64,
    pub busy_per_request: Duration,
    pub slow_polls: u64,
    pub requests: u64,
}

/// Where a route measured so belongs.
pub fn verdict(fit: Fit) -> Verdict {
    let blocking = fit.slow_polls > 0 && fit.slow_polls as f64 >= SLOW_POLL_SHARE * fit.requests as f64;
    if blocking {
        Verdict::MoveToWorker
    } else if fit.busy_per_request < CHEAP_REQUEST || fit.cpu_share < REVIEW_SHARE {
        Verdict::Edge
    } else if fit.cpu_share <= MOVE_SHARE {
        Verdict::Review
    } else {
        Verdict::MoveToWorker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(cpu_share: f64, busy_ms: u64, slow_polls: u64, requests: u64) -> Verdict {
        verdict(Fit { cpu_share, busy_per_request: Duration::from_millis(busy_ms), slow_polls, requests })
    }

    #[test]
    fn each_method_of_a_route_template_has_its_own_monitor() {
        let fit = RuntimeFit::new(Duration::from_millis(10));
        let get = fit.route("GET", "/v1/items/{id}");
        let post = fit.route("POST", "/v1/items/{id}");
        assert!(!Arc::ptr_eq(&get, &post));
        assert!(Arc::ptr_eq(&get, &fit.route("GET", "/v1/items/{id}")), "looked up, not made again");
        let mut routes: Vec<String> = fit.report().routes.into_iter().map(|line| line.route).collect();
        routes.sort();
        assert_eq!(routes, ["GET /v1/items/{id}", "POST /v1/items/{id}"]);
    }

    #[test]
    fn a_route_monitor_costs_kilobytes_not_hundreds() {
        let fit = RuntimeFit::new(Duration::from_millis(10));
        let route = fit.route("GET", "/healthz");
        let counts = route.wall.lock().unwrap_or_else(PoisonError::into_inner).distinct_values();
        let bytes = counts * std::mem::size_of::<u32>();
        assert!(bytes < 16 * 1024, "{bytes} bytes of counts per route");
    }

    #[test]
    fn verdict_follows_the_cpu_share_bands_and_slow_polls() {
        assert_eq!(judged(0.0, 5, 0, 10), Verdict::Edge);
        assert_eq!(judged(0.099, 5, 0, 10), Verdict::Edge);
        assert_eq!(judged(0.10, 5, 0, 10), Verdict::Review);
        assert_eq!(judged(0.20, 5, 0, 10), Verdict::Review);
        assert_eq!(judged(0.21, 5, 0, 10), Verdict::MoveToWorker);
        assert_eq!(judged(0.01, 0, 1, 10), Verdict::MoveToWorker, "a slow poll in 10 requests");
    }

    #[test]
    fn cheap_routes_and_rare_preemptions_stay_edge() {
        assert_eq!(judged(0.97, 0, 0, 1_000), Verdict::Edge, "never waits, but costs microseconds");
        assert_eq!(judged(0.01, 0, 1, 100_000), Verdict::Edge, "one slow poll in 100,000 requests");
        assert_eq!(judged(0.01, 0, 1_000, 100_000), Verdict::MoveToWorker, "1% of requests");
    }

    /// Counts warnings, to check the crossing is logged once.
    #[derive(Clone, Default)]
    struct Warnings(Arc<AtomicU64>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[tokio::test]
    async fn waiting_is_edge_and_computing_is_move_to_worker_logged_once() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let warnings = Warnings::default();
        // A current-thread test runtime: the scoped subscriber sees everything.
        let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
        let fit = RuntimeFit::new(Duration::from_millis(10));
        let waits = fit.route("GET", "/waits");
        let started = Instant::now();
        let ((), ended) = waits.timed(tokio::time::sleep(Duration::from_millis(30)), started).await;
        fit.finished(&waits, ended - started);

        let computes = fit.route("GET", "/computes");
        for _ in 0..2 {
            let started = Instant::now();
            let ((), ended) =
                computes.timed(async { std::thread::sleep(Duration::from_millis(30)) }, started).await;
            fit.finished(&computes, ended - started);
        }
        assert_eq!(warnings.0.load(Ordering::Relaxed), 1, "the crossing is logged once");

        let report = fit.report();
        let line = |route: &str| report.routes.iter().find(|r| r.route == route).expect("route reported");
        assert_eq!(line("GET /waits").verdict, Verdict::Edge, "{report:?}");
        assert_eq!(line("GET /computes").verdict, Verdict::MoveToWorker, "{report:?}");
        assert_eq!(line("GET /computes").slow_polls, 2);
        assert_eq!(line("GET /waits").slow_polls, 0, "{report:?}");
        assert!(line("GET /waits").mean_poll_us < 10_000.0, "two short polls: {report:?}");
        assert!(line("GET /computes").cpu_share > 0.9, "{report:?}");
        assert_eq!(report.routes[0].route, "GET /computes", "busiest first");
    }
}

//! The edge's Prometheus series: HTTP requests and connections, rate
//! limits, and the runtime-fit gauges. A service adds its own series beside
//! them; these are the ones every service on the edge has.
//!
//! Names follow the OpenTelemetry semantic conventions where they exist
//! (`http.server.request.duration`, `http.server.active_requests`), as
//! Prometheus spells them; the rest are `courtside_*`. Every name is a
//! constant here, so a dashboard query can be checked against the list.

use std::sync::{Mutex, PoisonError};

use metrics::{
    Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
pub const HTTP_ACTIVE: &str = "http_server_active_requests";
pub const ROUTE_CPU_SHARE: &str = "courtside_route_cpu_share";
pub const ROUTE_SLOW_POLLS: &str = "courtside_route_slow_polls";
pub const HTTP_CONNECTIONS: &str = "courtside_http_connections";
pub const HTTP_CONNECTIONS_REFUSED: &str = "courtside_http_connections_refused_total";
pub const RATE_LIMITED: &str = "courtside_http_rate_limited_total";
pub const RATE_LIMIT_TRACKED: &str = "courtside_rate_limit_tracked_addresses";
pub const STREAMS_REFUSED: &str = "courtside_live_connections_refused_total";
pub const STREAM_ADDRESSES: &str = "courtside_live_connection_addresses";
pub const PROXY_HEADERS: &str = "courtside_proxy_headers_total";

/// Adds help text and units to the edge's series. Idempotent.
pub fn describe() {
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "duration of HTTP requests until the response head");
    describe_gauge!(HTTP_ACTIVE, "HTTP requests being handled");
    describe_gauge!(ROUTE_CPU_SHARE, "share of a route's wall time spent polled on the event loop (0..1)");
    describe_gauge!(ROUTE_SLOW_POLLS, "polls of a route's futures longer than the slow-poll threshold");
    describe_gauge!(HTTP_CONNECTIONS, "open HTTP connections (upgraded WebSockets leave this count)");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "connections closed at accept: the HTTP connection limit was reached"
    );
    describe_counter!(
        RATE_LIMITED,
        "requests and WebSocket subscribes refused for going over a rate limit, by route template and lane"
    );
    describe_counter!(
        STREAMS_REFUSED,
        "WebSocket and SSE connections refused by reason: server_cap (503), address_cap (429, one client address's share)"
    );
    describe_gauge!(STREAM_ADDRESSES, "client addresses holding a WebSocket or SSE connection");
    describe_counter!(
        PROXY_HEADERS,
        "PROXY protocol headers by outcome: accepted (from a trusted proxy), refused_untrusted, refused_invalid"
    );
    describe_gauge!(
        RATE_LIMIT_TRACKED,
        "client addresses a rate-limit lane holds a bucket for, at the last sweep"
    );
}

/// Per-route handles, so a request costs no metric lookup by name. Both
/// labels come from closed sets: the route template and a standard method
/// (or `_OTHER`).
#[derive(Debug)]
pub(crate) struct RouteSeries {
    method: &'static str,
    route: String,
    active: Gauge,
    /// One histogram per status code seen, few per route.
    durations: Mutex<Vec<(u16, Histogram)>>,
}

impl RouteSeries {
    pub(crate) fn new(method: &'static str, route: &str) -> Self {
        Self {
            method,
            route: route.to_owned(),
            active: gauge!(HTTP_ACTIVE, "http_request_method" => method, "http_route" => route.to_owned()),
            durations: Mutex::new(Vec::new()),
        }
    }

    /// The route's in-flight gauge.
    pub(crate) fn active(&self) -> Gauge {
        self.active.clone()
    }

    /// The route's duration histogram for one status code.
    pub(crate) fn duration(&self, status: u16) -> Histogram {
        let mut durations = self.durations.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, histogram)) = durations.iter().find(|(code, _)| *code == status) {
            return histogram.clone();
        }
        let histogram = histogram!(
            HTTP_DURATION,
            "http_request_method" => self.method,
            "http_route" => self.route.clone(),
            "http_response_status_code" => status.to_string(),
        );
        durations.push((status, histogram.clone()));
        histogram
    }
}

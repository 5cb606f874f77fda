//! The gateway's Prometheus series and the middleware that feeds the HTTP
//! ones and the runtime-fit report.
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
pub const RPC_CLIENT_DURATION: &str = "rpc_client_call_duration_seconds";
pub const LIVE_CONNECTIONS: &str = "courtside_live_connections";
pub const LIVE_DELIVERED: &str = "courtside_live_messages_delivered_total";
pub const LIVE_SLOW_DISCONNECTS: &str = "courtside_live_slow_consumer_disconnects_total";
pub const LIVE_DELIVERY_LAG: &str = "courtside_live_delivery_lag_seconds";
pub use livefeed::metrics::{RECOVERIES as LIVE_RECOVERIES, UPDATES as LIVE_UPDATES};
pub const INGEST_EVENTS: &str = "courtside_ingest_events_total";
pub const ROUTE_CPU_SHARE: &str = "courtside_route_cpu_share";
pub const ROUTE_SLOW_POLLS: &str = "courtside_route_slow_polls";
pub const HTTP_CONNECTIONS: &str = "courtside_http_connections";
pub const HTTP_CONNECTIONS_REFUSED: &str = "courtside_http_connections_refused_total";
pub const RATE_LIMITED: &str = "courtside_http_rate_limited_total";
pub const RATE_LIMIT_TRACKED: &str = "courtside_rate_limit_tracked_addresses";

/// Adds help text and units to the gateway's series. Idempotent.
pub fn describe() {
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "duration of HTTP requests until the response head");
    describe_gauge!(HTTP_ACTIVE, "HTTP requests being handled");
    describe_histogram!(RPC_CLIENT_DURATION, Unit::Seconds, "duration of gRPC calls to the analytics worker");
    describe_gauge!(LIVE_CONNECTIONS, "open WebSocket and SSE connections");
    describe_counter!(LIVE_DELIVERED, "messages written to live subscribers");
    describe_counter!(LIVE_SLOW_DISCONNECTS, "live subscribers disconnected for falling behind");
    describe_histogram!(
        LIVE_DELIVERY_LAG,
        Unit::Seconds,
        "from an update's arrival on this gateway's pub/sub subscription to its write to one subscriber"
    );
    describe_counter!(LIVE_UPDATES, "updates received from the store's live channel");
    describe_counter!(
        LIVE_RECOVERIES,
        "resumes and gap fills by outcome: recovered, reset (history too short), gap_filled, resync"
    );
    describe_counter!(INGEST_EVENTS, "events published, by outcome and rejection reason");
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
    describe_gauge!(
        RATE_LIMIT_TRACKED,
        "client addresses a rate-limit lane holds a bucket for, at the last sweep"
    );
    describe_histogram!(store::DB_DURATION, Unit::Seconds, "duration of Redis commands");
}

/// Counts one refusal by a rate limit. `route` is a route template and
/// `lane` a lane's label: both from closed sets.
pub fn count_rate_limited(route: &str, lane: crate::limits::Lane) {
    metrics::counter!(RATE_LIMITED, "route" => route.to_owned(), "lane" => lane.label()).increment(1);
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

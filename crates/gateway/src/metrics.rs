//! The gateway's own Prometheus series: the live feed, ingest, and its calls
//! to the worker. The edge's (HTTP requests and connections, rate limits,
//! runtime fit) are in `edge::metrics`.
//!
//! Names follow the OpenTelemetry semantic conventions where they exist
//! (`rpc.client.call.duration`), as Prometheus spells them; the rest are
//! `courtside_*`. Every name is a constant here, so a dashboard query can be
//! checked against the list.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub(crate) const RPC_CLIENT_DURATION: &str = "rpc_client_call_duration_seconds";
pub(crate) const LIVE_CONNECTIONS: &str = "courtside_live_connections";
pub(crate) const LIVE_DELIVERED: &str = "courtside_live_messages_delivered_total";
pub(crate) const LIVE_SLOW_DISCONNECTS: &str = "courtside_live_slow_consumer_disconnects_total";
pub(crate) const LIVE_DELIVERY_LAG: &str = "courtside_live_delivery_lag_seconds";
pub(crate) use livefeed::metrics::{RECOVERIES as LIVE_RECOVERIES, UPDATES as LIVE_UPDATES};
pub(crate) const INGEST_EVENTS: &str = "courtside_ingest_events_total";

/// Adds help text and units to the gateway's series. Idempotent.
pub(crate) fn describe() {
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
    describe_histogram!(store::DB_DURATION, Unit::Seconds, "duration of Redis commands");
}

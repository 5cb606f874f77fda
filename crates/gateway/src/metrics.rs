//! The gateway's own Prometheus series: ingest, and its calls to the
//! worker. The edge's (HTTP requests and connections, rate limits, runtime
//! fit) are in `edge::metrics`, the live feed's in `livefeed::metrics`.
//!
//! Names follow the OpenTelemetry semantic conventions where they exist
//! (`rpc.client.call.duration`), as Prometheus spells them; the rest are
//! `courtside_*`. Every name is a constant here, so a dashboard query can be
//! checked against the list.

use metrics::{Unit, describe_counter, describe_histogram};

pub(crate) const RPC_CLIENT_DURATION: &str = "rpc_client_call_duration_seconds";
pub(crate) const INGEST_EVENTS: &str = "courtside_ingest_events_total";

/// Adds help text and units to the gateway's series. Idempotent.
pub(crate) fn describe() {
    describe_histogram!(RPC_CLIENT_DURATION, Unit::Seconds, "duration of gRPC calls to the analytics worker");
    describe_counter!(INGEST_EVENTS, "events published, by outcome and rejection reason");
    describe_histogram!(store::DB_DURATION, Unit::Seconds, "duration of Redis commands");
}

//! The live-feed engine: sequenced events on topics, each topic's state and
//! bounded history, fan-out to any number of subscribers across replicas,
//! resume from a sequence number, and slow-consumer cut-off.
//!
//! It knows nothing of the events it carries. A [`Domain`] says what an
//! event is, which topic it belongs to, and how it folds into the topic's
//! state; the engine does the rest on top of a [`store::StateStore`]:
//!
//! - [`Ingestor`]: events → atomic, sequence-checked appends (state,
//!   history, durable stream, live publication), acknowledged only once
//!   stored.
//! - [`Hub`]: one store subscription per process, fanned out in process as
//!   shared frames, each WebSocket frame encoded once and written to every
//!   subscriber's socket in one loop; the bounded cache of each topic's
//!   latest state.
//! - [`Subscriptions`]: a subscriber's snapshot or replay, gap filling, and
//!   the slow-consumer limit, for any transport.
//! - [`ws`], [`sse`]: the two transports, served through the edge's tokens,
//!   rate limits, connection cap and shutdown.
//! - [`Engine`]: all of it for one domain, with the transports as routes a
//!   service mounts where it likes.
//!
//! The football feed (`gateway::live`) and the auction in
//! `examples/auction` are two domains on this engine.
//!
//! # On the wire
//! Every update the engine stores and publishes is one JSON object:
//! `{"type":"event","<topic>":"<id>","seq":N,"event":{..},"state":{..}}`,
//! where `<topic>` is [`Domain::TOPIC`] and `event` and `state` are what the
//! domain renders. Subscribers first receive
//! `{"type":"subscribed","<topic>":"<id>","seq":N,"replayed":K,"state":{..}}`
//! (`resync` when history can no longer fill a gap).

mod domain;
pub mod engine;
pub mod hub;
pub mod ingest;
mod outlet;
mod routes;
pub mod sse;
mod states;
pub mod subscription;
pub mod ws;

pub use domain::{Domain, NewerFormat};
pub use engine::{Engine, Settings};
pub use hub::{Hub, run_bridge};
pub use ingest::{Accepted, Committed, IngestFailure, Ingestor, Prepared, Rejected, Session};
pub use subscription::{Cursor, Disconnect, Opened, Outgoing, SubscribeError, Subscriptions};

/// The metrics the engine records.
pub mod metrics {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    /// Updates received from the store's live channel.
    pub const UPDATES: &str = "courtside_live_updates_received_total";
    /// Resumes and gaps met live, by `outcome`: `recovered`, `reset`,
    /// `gap_filled`, `resync`.
    pub const RECOVERIES: &str = "courtside_live_recoveries_total";
    /// Open WebSocket and SSE connections, by `transport`.
    pub const CONNECTIONS: &str = "courtside_live_connections";
    /// Messages written to subscribers, or queued for a WebSocket
    /// subscriber whose socket was full, by `transport`.
    pub const DELIVERED: &str = "courtside_live_messages_delivered_total";
    /// Messages queued for a WebSocket subscriber and never written: dropped
    /// when it was cut off as a slow consumer, or still queued when its
    /// connection ended. Delivered minus dropped is what was written.
    pub const DROPPED: &str = "courtside_live_messages_dropped_total";
    /// Subscribers cut off for falling behind or not reading, by `transport`.
    pub const SLOW_DISCONNECTS: &str = "courtside_live_slow_consumer_disconnects_total";
    /// WebSocket connections closed for holding no subscription for the
    /// grace.
    pub const UNSUBSCRIBED_CLOSES: &str = "courtside_live_unsubscribed_closes_total";
    /// From an update's arrival on this process's pub/sub subscription to
    /// its write to one subscriber, by `transport`.
    pub const DELIVERY_LAG: &str = "courtside_live_delivery_lag_seconds";

    /// Adds help text and units to the engine's series. Idempotent.
    pub fn describe() {
        describe_gauge!(CONNECTIONS, "open WebSocket and SSE connections");
        describe_counter!(DELIVERED, "messages written to live subscribers, or queued for a full socket");
        describe_counter!(
            DROPPED,
            "messages queued for a live subscriber and never written (cut off, or gone)"
        );
        describe_counter!(SLOW_DISCONNECTS, "live subscribers disconnected for falling behind");
        describe_counter!(
            UNSUBSCRIBED_CLOSES,
            "WebSocket connections closed (4001) for holding no subscription for the grace"
        );
        describe_histogram!(
            DELIVERY_LAG,
            Unit::Seconds,
            "from an update's arrival on this gateway's pub/sub subscription to its write to one subscriber"
        );
        describe_counter!(UPDATES, "updates received from the store's live channel");
        describe_counter!(
            RECOVERIES,
            "resumes and gap fills by outcome: recovered, reset (history too short), gap_filled, resync"
        );
    }
}

//! The live score feed: football on the live-feed engine, delivered over
//! WebSocket and SSE.
//!
//! # Layout
//! - [`wire`]: the JSON shapes in and out, conversions to and from `domain`,
//!   the stored state's format; `strict`: the serde rules they keep.
//! - [`football`]: [`Football`], the engine's domain, and football's codes
//!   for what the engine refuses; `stream_entry`: the protobuf entry of the
//!   durable stream.
//! - [`ndjson`]: a bulk body cut into bounded, numbered lines.
//! - [`ws`], [`sse`]: the two transports' routes as the API documents them;
//!   the engine serves them.
//!
//! The engine ([`livefeed`]) does the rest, knowing nothing of football:
//! ingest (events → atomic appends to the shared state), the hub (one store
//! subscription per gateway, fanned out in process), subscriptions
//! (snapshot, replay from `since`, gap filling, slow-consumer detection),
//! and both transports.
//!
//! The plain HTTP handlers for publishing and reading matches are in
//! [`crate::routes::matches`].

pub mod football;
pub mod ndjson;
pub mod sse;
mod stream_entry;
mod strict;
pub mod wire;
pub mod ws;

pub use football::Football;
pub use livefeed::{Hub, Subscriptions, hub, subscription};

/// The live feed of football: the engine's ingest, hub, subscriptions and
/// transports, for matches.
pub type LiveState = livefeed::Engine<Football>;
/// The engine's ingest, for football.
pub type Ingestor = livefeed::Ingestor<Football>;
/// What one request has learnt of the matches it publishes to.
pub type Session = livefeed::Session<Football>;
/// What a commit did to each event of a chunk.
pub type Committed = livefeed::Committed<Football>;
/// Why one event was not applied.
pub type Rejected = livefeed::Rejected<domain::live::ApplyError>;
pub use livefeed::{Accepted, IngestFailure, SubscribeError};

use std::time::Duration;

use store::HistoryLimits;

use crate::config::GatewayConfig;

/// The live feed's settings, taken from the gateway's configuration.
pub fn settings(config: &GatewayConfig) -> livefeed::Settings {
    livefeed::Settings {
        max_lag_bytes: config.subscriber_max_lag_bytes,
        ping_interval: Duration::from_secs(config.ping_interval_secs),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
        subscribe_grace: Duration::from_secs(config.subscribe_grace_secs),
        history: HistoryLimits {
            max_entries: usize::try_from(config.history_events).unwrap_or(usize::MAX),
            max_idle: Duration::from_secs(config.history_idle_secs),
        },
        ..livefeed::Settings::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use domain::live::MatchEvent;
    use livefeed::Domain as _;
    use serde_json::json;
    use store::MemoryStore;

    use super::*;
    use crate::live::{
        Accepted,
        wire::{EventBody, MatchView},
    };

    fn event(body: serde_json::Value) -> MatchEvent {
        let body: EventBody = serde_json::from_value(body).expect("an event body");
        MatchEvent::parse(body.into(), 0).expect("a valid event")
    }

    fn cached_seq(hub: &Hub, id: &str) -> Option<u64> {
        let state = hub.cached_state(id)?;
        Some(serde_json::from_slice::<MatchView>(&state).expect("a cached state").seq)
    }

    #[tokio::test]
    async fn the_state_cache_learns_each_applied_state_before_the_acknowledgement() {
        // No update stream runs here: only the ingest itself can fill the
        // cache, as when the stream is slower than the client's next read.
        let hub = Arc::new(Hub::new(Football::TOPIC, 16, 100));
        let ingestor =
            Ingestor::new(Arc::new(MemoryStore::new()), HistoryLimits::default(), Arc::clone(&hub));
        let kickoff = json!({
            "match_id": "ryw", "seq": 1, "kind": "kickoff", "minute": 0,
            "home": {"id": 1, "name": "Rovers"}, "away": {"id": 2, "name": "United"}
        });
        let results = ingestor.ingest(&[event(kickoff)]).await.expect("stored");
        assert!(matches!(results[..], [Ok(Accepted::Applied)]), "{results:?}");
        assert_eq!(cached_seq(&hub, "ryw"), Some(1));
        for seq in 2..=3 {
            let pass = json!({
                "match_id": "ryw", "seq": seq, "kind": "pass", "minute": 3, "team": 1, "player": 7,
                "start": {"x": 40.0, "y": 30.0}, "end": {"x": 60.5, "y": 20.0}, "success": true
            });
            ingestor.ingest(&[event(pass)]).await.expect("stored");
            assert_eq!(cached_seq(&hub, "ryw"), Some(seq), "the cache missed the write it acknowledged");
        }

        // The update stream delivers an older state late: the cache keeps
        // the newer one.
        let late = json!({"type": "event", "match": "ryw", "seq": 2, "state": {}});
        hub.dispatch(&Bytes::from(late.to_string()));
        assert_eq!(cached_seq(&hub, "ryw"), Some(3));
    }
}

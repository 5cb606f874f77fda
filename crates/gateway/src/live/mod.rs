//! The live score feed: football on the live-feed engine, delivered over
//! WebSocket and SSE.
//!
//! # Layout
//! - [`wire`]: the JSON shapes, conversions to and from `domain`, and
//!   [`Football`], the engine's domain.
//! - [`ndjson`]: a bulk body cut into bounded, numbered lines.
//! - [`ws`], [`sse`]: the two transports.
//!
//! The engine ([`livefeed`]) does the rest, knowing nothing of football:
//! ingest (events → atomic appends to the shared state), the hub (one store
//! subscription per gateway, fanned out in process), and subscriptions
//! (snapshot, replay from `since`, gap filling, slow-consumer detection).
//!
//! The plain HTTP handlers for publishing and reading matches are in
//! [`crate::routes::matches`].

pub mod ndjson;
pub mod sse;
pub mod wire;
pub mod ws;

pub use livefeed::{Hub, Subscriptions, hub, subscription};
pub use wire::Football;

/// The engine's ingest, for football.
pub type Ingestor = livefeed::Ingestor<Football>;
/// What one request has learnt of the matches it publishes to.
pub type Session = livefeed::Session<Football>;
/// What a commit did to each event of a chunk.
pub type Committed = livefeed::Committed<Football>;
/// Why one event was not applied.
pub type Rejected = livefeed::Rejected<domain::live::ApplyError>;
pub use livefeed::{Accepted, IngestFailure, SubscribeError};

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use livefeed::Domain as _;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use store::{HistoryLimits, StateStore};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;

/// Settings of the live feed, taken from the gateway's configuration.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Open WebSocket and SSE connections this gateway accepts.
    pub max_connections: usize,
    /// How far (bytes) a subscriber may fall behind before it is cut off.
    pub max_lag_bytes: u64,
    pub ping_interval: Duration,
    /// How long one send to a client may take before it counts as stuck.
    pub write_timeout: Duration,
    pub history: HistoryLimits,
    /// Updates each match channel keeps for subscribers that are behind.
    pub ring_capacity: usize,
    /// Match states kept in the read cache.
    pub cached_matches: u64,
    /// Longest NDJSON line accepted by bulk ingest.
    pub max_line_bytes: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_lag_bytes: 256 * 1024,
            ping_interval: Duration::from_secs(25),
            write_timeout: Duration::from_secs(10),
            history: HistoryLimits::default(),
            ring_capacity: 1024,
            cached_matches: 10_000,
            max_line_bytes: 64 * 1024,
        }
    }
}

impl LiveConfig {
    /// The live feed's settings from the gateway's.
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            max_connections: config.edge.max_streams(),
            max_lag_bytes: config.subscriber_max_lag_bytes,
            ping_interval: Duration::from_secs(config.ping_interval_secs),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            history: HistoryLimits {
                max_entries: usize::try_from(config.history_events).unwrap_or(usize::MAX),
                max_idle: Duration::from_secs(config.history_idle_secs),
            },
            max_line_bytes: usize::try_from(config.max_line_bytes).unwrap_or(usize::MAX),
            ..Self::default()
        }
    }
}

/// What the live handlers share.
#[derive(Debug)]
pub struct LiveState {
    pub subscriptions: Subscriptions,
    pub ingestor: Ingestor,
    pub connections: Arc<Semaphore>,
    pub config: LiveConfig,
    /// Fires on shutdown so long-lived connections close promptly instead of
    /// holding the drain open (the edge's closing).
    pub stop: CancellationToken,
    /// The edge's shutdown: an upgraded WebSocket, which the HTTP server no
    /// longer sees, holds it until its close frame is sent.
    pub shutdown: edge::Shutdown,
    open_connections: AtomicI64,
    delivered: AtomicU64,
    websocket: TransportMetrics,
    sse: TransportMetrics,
}

/// The two ways subscribers are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

/// One transport's metric handles, looked up once.
#[derive(Debug)]
struct TransportMetrics {
    connections: Gauge,
    delivered: Counter,
    slow_disconnects: Counter,
    lag: Histogram,
}

impl TransportMetrics {
    fn new(transport: Transport) -> Self {
        use crate::metrics::{LIVE_CONNECTIONS, LIVE_DELIVERED, LIVE_DELIVERY_LAG, LIVE_SLOW_DISCONNECTS};
        let label = transport.label();
        Self {
            connections: gauge!(LIVE_CONNECTIONS, "transport" => label),
            delivered: counter!(LIVE_DELIVERED, "transport" => label),
            slow_disconnects: counter!(LIVE_SLOW_DISCONNECTS, "transport" => label),
            lag: histogram!(LIVE_DELIVERY_LAG, "transport" => label),
        }
    }
}

impl LiveState {
    /// The live feed on `store`, its connections counted and closed by
    /// `edge`.
    pub fn new(store: Arc<dyn StateStore>, config: LiveConfig, edge: &edge::Edge) -> Self {
        let hub = Arc::new(Hub::new(Football::TOPIC, config.ring_capacity, config.cached_matches));
        Self {
            ingestor: Ingestor::new(Arc::clone(&store), config.history, Arc::clone(&hub)),
            subscriptions: Subscriptions {
                topic_key: Football::TOPIC,
                hub,
                store: Arc::clone(&store),
                limits: config.history,
                max_lag_bytes: config.max_lag_bytes,
            },
            connections: Arc::clone(&edge.streams),
            config,
            stop: edge.shutdown.closing().clone(),
            shutdown: edge.shutdown.clone(),
            open_connections: AtomicI64::new(0),
            delivered: AtomicU64::new(0),
            websocket: TransportMetrics::new(Transport::WebSocket),
            sse: TransportMetrics::new(Transport::Sse),
        }
    }

    fn metrics_of(&self, transport: Transport) -> &TransportMetrics {
        match transport {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
        }
    }

    fn metrics_connections(&self, transport: Transport, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
        self.metrics_of(transport).connections.increment(delta as f64);
    }

    /// Counts one message written to a subscriber and, for a live update,
    /// how long it took from this gateway's pub/sub subscription to here.
    fn metrics_delivered(&self, transport: Transport, message: &subscription::Outgoing) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let metrics = self.metrics_of(transport);
        metrics.delivered.increment(1);
        if let Some(received) = message.received {
            metrics.lag.record(received.elapsed().as_secs_f64());
        }
    }

    fn metrics_slow_disconnect(&self, transport: Transport) {
        self.metrics_of(transport).slow_disconnects.increment(1);
    }

    /// Open WebSocket and SSE connections.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Messages sent to subscribers since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use domain::live::MatchEvent;
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
        hub.dispatch(Bytes::from(late.to_string()));
        assert_eq!(cached_seq(&hub, "ryw"), Some(3));
    }
}

//! [`Engine`]: one domain's live feed, whole: ingest, the hub and its
//! bridge from the store, subscriptions, and both transports (WebSocket and
//! SSE) with their metrics, served through the edge's limits and shutdown.
//!
//! A service builds one per domain and mounts its transports on its own
//! routes:
//!
//! ```text
//! let engine = Engine::<Auction>::new(store, Settings::default(), server.edge());
//! engine.start_bridge();
//! Router::new().route("/lots/{id}/live", engine.sse()).route("/live", engine.websocket())
//! ```

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use axum::http::StatusCode;
use edge::{ApiErrorKind, Edge, EdgeError};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use store::{HistoryLimits, StateStore, StoreError};

use crate::{
    Domain, Hub, Ingestor, Subscriptions, metrics as names,
    subscription::{Outgoing, SubscribeError},
};

/// How the live feed treats its subscribers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How far (bytes) a subscriber may fall behind before it is cut off.
    pub max_lag_bytes: u64,
    /// Between server pings on WebSocket connections.
    pub ping_interval: Duration,
    /// How long one send to a client may take before it counts as stuck.
    pub write_timeout: Duration,
    pub history: HistoryLimits,
    /// Updates each topic channel keeps for subscribers that are behind.
    pub ring_capacity: usize,
    /// Topic states kept in the read cache.
    pub cached_topics: u64,
    /// How long a WebSocket may hold no subscription before it is closed.
    pub subscribe_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_lag_bytes: 256 * 1024,
            ping_interval: Duration::from_secs(25),
            write_timeout: Duration::from_secs(10),
            history: HistoryLimits::default(),
            ring_capacity: 1024,
            cached_topics: 10_000,
            subscribe_grace: Duration::from_secs(30),
        }
    }
}

/// One domain's live feed. Shared as `Arc<Engine<D>>`.
pub struct Engine<D: Domain> {
    pub ingestor: Ingestor<D>,
    pub subscriptions: Subscriptions,
    pub settings: Settings,
    /// Tokens, the subscribe lane, the permit per connection, and the
    /// shutdown that closes every connection with its close frame.
    pub(crate) edge: Edge,
    open_connections: AtomicI64,
    websocket: TransportMetrics,
    sse: TransportMetrics,
    unsubscribed_closes: Counter,
}

impl<D: Domain> fmt::Debug for Engine<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("topic", &D::TOPIC)
            .field("settings", &self.settings)
            .field("open_connections", &self.open_connections())
            .finish_non_exhaustive()
    }
}

impl<D: Domain> Engine<D> {
    /// The feed of `D` on `store`, its connections counted, limited and
    /// closed by `edge`. The bridge from the store starts with
    /// [`Engine::start_bridge`].
    pub fn new(store: Arc<dyn StateStore>, settings: Settings, edge: &Edge) -> Arc<Self> {
        names::describe();
        let hub = Arc::new(
            Hub::new(D::TOPIC, settings.ring_capacity, settings.cached_topics)
                .with_max_lag_bytes(settings.max_lag_bytes),
        );
        Arc::new(Self {
            ingestor: Ingestor::new(Arc::clone(&store), settings.history, Arc::clone(&hub)),
            subscriptions: Subscriptions {
                topic_key: D::TOPIC,
                hub,
                store,
                limits: settings.history,
                max_lag_bytes: settings.max_lag_bytes,
            },
            settings,
            edge: edge.clone(),
            open_connections: AtomicI64::new(0),
            websocket: TransportMetrics::new(Transport::WebSocket),
            sse: TransportMetrics::new(Transport::Sse),
            unsubscribed_closes: counter!(names::UNSUBSCRIBED_CLOSES),
        })
    }

    /// Starts the process's one subscription to the store's live channel,
    /// which fans updates out to this process's subscribers, until the
    /// edge closes.
    pub fn start_bridge(&self) {
        let shutdown = &self.edge.shutdown;
        shutdown.spawn(crate::run_bridge(
            Arc::clone(&self.subscriptions.hub),
            Arc::clone(&self.subscriptions.store),
            shutdown.closing().clone(),
        ));
    }

    /// What readiness asks on the feed's behalf: the store, which every
    /// route of the feed needs. A store that answers in part (a cluster
    /// with a partition down) or without the replicas it was asked to keep
    /// leaves the service ready and `degraded`: most topics are still
    /// served. Add the service's own dependencies to
    /// what this returns.
    pub fn checks(&self) -> edge::Checks {
        let store = Arc::clone(&self.subscriptions.store);
        edge::Checks::new().required("store", Some(store.backend()), move || {
            let store = Arc::clone(&store);
            async move {
                Ok(match store.reach().await? {
                    store::Reach::All => edge::Answer::Ok,
                    degraded => edge::Answer::Partial(degraded.to_string()),
                })
            }
        })
    }

    /// Open WebSocket and SSE connections.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Messages sent to subscribers since start.
    pub fn delivered(&self) -> u64 {
        self.subscriptions.hub.delivered()
    }

    fn metrics_of(&self, transport: Transport) -> &TransportMetrics {
        match transport {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
        }
    }

    pub(crate) fn count_connection(&self, transport: Transport, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
        self.metrics_of(transport).connections.increment(delta as f64);
    }

    /// Counts one message written to a subscriber and, for a live update,
    /// how long it took from this process's pub/sub subscription to here.
    pub(crate) fn count_delivered(&self, transport: Transport, message: &Outgoing) {
        self.subscriptions.hub.count_delivered(1);
        let metrics = self.metrics_of(transport);
        metrics.delivered.increment(1);
        if let Some(received) = message.received {
            metrics.lag.record(received.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn count_slow_disconnect(&self, transport: Transport) {
        self.metrics_of(transport).slow_disconnects.increment(1);
    }

    pub(crate) fn count_unsubscribed_close(&self) {
        self.unsubscribed_closes.increment(1);
    }
}

/// The two ways subscribers are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    fn label(self) -> &'static str {
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
        let label = transport.label();
        Self {
            connections: gauge!(names::CONNECTIONS, "transport" => label),
            delivered: counter!(names::DELIVERED, "transport" => label),
            slow_disconnects: counter!(names::SLOW_DISCONNECTS, "transport" => label),
            lag: histogram!(names::DELIVERY_LAG, "transport" => label),
        }
    }
}

/// Why a feed request was refused, in the edge's error shape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// A subscription the engine refused, with its domain's code.
    #[error("{error}")]
    Subscribe { code: &'static str, error: SubscribeError },
}

impl FeedError {
    pub(crate) fn subscribe<D: Domain>(error: SubscribeError) -> Self {
        Self::Subscribe { code: error.code::<D>(), error }
    }
}

impl ApiErrorKind for FeedError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Edge(err) => err.status(),
            Self::Subscribe { error, .. } => match error {
                SubscribeError::UnknownTopic { .. } => StatusCode::NOT_FOUND,
                SubscribeError::SinceBeyondHead { .. } => StatusCode::BAD_REQUEST,
                SubscribeError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                SubscribeError::Store(_) | SubscribeError::CorruptState(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Edge(err) => err.code(),
            Self::Subscribe { code, .. } => code,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Subscribe { error: SubscribeError::Store(StoreError::Unavailable(_)), .. } => {
                "state store unavailable, retry later".to_owned()
            }
            // Server-side failures keep their details in the span and the log.
            Self::Subscribe { error: SubscribeError::Store(_) | SubscribeError::CorruptState(_), .. } => {
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl axum::response::IntoResponse for FeedError {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Edge(err) => err.into_response(),
            other => edge::error::respond(&other),
        }
    }
}

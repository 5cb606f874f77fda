//! Shared state for the gateway replicas and the analytics worker.
//!
//! # Layout
//! - [`StateStore`]: the one interface both tiers program against.
//! - [`RedisStore`]: the deployed backend; every replica sees the same state.
//! - [`MemoryStore`]: an in-process backend, the default for a one-process
//!   run. It passes the same conformance suite (`tests/conformance.rs`), so
//!   code written against it behaves the same on Redis.
//! - [`log`]: the event log of each match: an atomic, sequenced append that
//!   updates the match state, keeps a bounded history for subscribers that
//!   resume, feeds the durable event stream and publishes on [`LIVE_CHANNEL`],
//!   all in one step or not at all.
//!
//! # Delivery guarantees of publish/subscribe
//! Both backends deliver a published message to each subscription that
//! existed when it was published, in publish order, at most once. A
//! subscriber that falls too far behind loses messages (Redis disconnects it,
//! the memory backend skips ahead); callers that need every message read the
//! durable history, not the channel.

pub mod log;
mod memory;
mod redis_store;

use std::{fmt, pin::Pin};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
pub use log::{AppendOutcome, HistoryLimits, LIVE_CHANNEL, LogAppend, LogSlice};

pub use memory::MemoryStore;
pub use redis_store::{RedisConfig, RedisStore};

/// What went wrong talking to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now; retrying later may work.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("state store error: {0}")]
    Backend(String),
}

/// The shared state. Keys and channels are plain strings; a backend may add
/// a namespace prefix of its own, invisible to callers.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and readiness reports: `"memory"` or `"redis"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError>;

    /// Removes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Sends `payload` to the current subscribers of `channel`; returns how
    /// many subscriptions received it.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError>;

    /// Subscribes to `channel`. Messages published after this returns are
    /// delivered to the subscription.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError>;

    /// Appends one event to its log, atomically with everything it implies
    /// (see [`LogAppend`]). Either all of it happens or none of it does.
    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError>;

    /// Appends events in order, in as few round trips as the backend allows.
    /// Each append is atomic on its own; an error means the ones before it
    /// may have been applied, so callers retry the batch (appends are
    /// idempotent by sequence number).
    async fn append_batch(
        &self,
        appends: &[LogAppend],
        limits: HistoryLimits,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            outcomes.push(self.append(append, limits).await?);
        }
        Ok(outcomes)
    }

    /// The current state of a log (what the last append stored), with the
    /// sequence number it is at.
    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError>;

    /// The current state of every log, in no particular order.
    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError>;

    /// Up to `limit` history entries after sequence number `after`, oldest
    /// first, and the log's head.
    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError>;

    /// Number of entries in the durable event stream.
    async fn feed_len(&self) -> Result<u64, StoreError>;
}

/// A live subscription to one channel. Dropping it unsubscribes.
pub struct Subscription {
    messages: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
}

impl Subscription {
    fn new(messages: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Self { messages: Box::pin(messages) }
    }

    /// The next message, or `None` once the subscription has ended (the
    /// backend closed it).
    pub async fn next(&mut self) -> Option<Bytes> {
        self.messages.next().await
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

#[cfg(feature = "testing")]
pub mod testing;

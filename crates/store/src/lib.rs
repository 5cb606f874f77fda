//! Shared state for the gateway replicas and the analytics worker.
//!
//! # Layout
//! - [`StateStore`]: the one interface both tiers program against;
//!   [`open`] picks its backend from [`StoreArgs`].
//! - [`RedisStore`]: the deployed backend, on one Redis server or a Redis
//!   Cluster; every replica sees the same state. On a cluster every atomic
//!   step stays in one hash slot (`redis/layout.rs` explains the key
//!   layout); one server is laid out as a cluster of one partition, so the
//!   code is the same.
//! - [`MemoryStore`]: an in-process backend, the default for a one-process
//!   run. It passes the same conformance suite (`tests/conformance.rs`), so
//!   code written against it behaves the same on Redis.
//! - [`log`]: the event log of each topic (a match): an atomic, sequenced append that
//!   updates the match state, keeps a bounded history for subscribers that
//!   resume, appends to the durable event stream and publishes on [`LIVE_CHANNEL`],
//!   all in one step or not at all.
//! - [`stream`]: consuming the durable event stream through consumer groups,
//!   and the leaderboards built from it: increments applied at most once and
//!   acknowledged in the same step, and rebuilt boards swapped in atomically.
//!
//! # Delivery guarantees of publish/subscribe
//! Both backends deliver a published message to each subscription that
//! existed when it was published, in publish order, at most once. A
//! subscriber that falls too far behind loses messages (Redis disconnects it,
//! the memory backend skips ahead); callers that need every message read the
//! durable history, not the channel.

mod args;
pub mod log;
mod memory;
mod observed;
mod redis;
pub mod stream;

use std::{fmt, pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
pub use log::{AppendOutcome, HistoryLimits, LIVE_CHANNEL, LogAppend, LogSlice, WriteFormat, live_entries};
pub use stream::{
    ApplyOutcome, Backlog, Fence, LeaderboardReplace, Ranked, ScoreApply, ScoreIncrement, StreamEntry,
    StreamPage,
};

pub use args::{DEFAULT_PARTITIONS, RedisSettings, StoreArgs, open};
pub use memory::MemoryStore;
pub use observed::DB_DURATION;
pub use redis::{APPENDS_WITHOUT_REPLICA, ClusterConfig, RedisConfig, RedisStore};

/// How much of the store answers: all of it, or (a Redis Cluster with a
/// partition's master down and no replica promoted yet) part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    All,
    /// `unreachable` of the store's `of` independent parts do not answer;
    /// requests to the others are served.
    Partial {
        unreachable: usize,
        of: usize,
    },
    /// Every part answers, but replicas were asked for
    /// (`COURTSIDE_REDIS_WAIT_REPLICAS`) and the masters of `partitions` of
    /// `of` partitions have none: writes there are held by one node until a
    /// replica is back.
    Unreplicated {
        partitions: usize,
        of: usize,
    },
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::All => f.write_str("all of the store answers"),
            Reach::Partial { unreachable, of } => {
                write!(f, "{unreachable} of {of} store partitions do not answer")
            }
            Reach::Unreplicated { partitions, of } => {
                write!(f, "{partitions} of {of} store partitions have no replica")
            }
        }
    }
}

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
    /// A short name for logs and readiness reports: `"memory"`, `"redis"`
    /// or `"redis-cluster"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How much of the backend answers, for readiness: an error when none
    /// of it does. A single server is all or nothing; a cluster asks each
    /// of its parts.
    async fn reach(&self) -> Result<Reach, StoreError> {
        self.ping().await.map(|()| Reach::All)
    }

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
    /// (see [`LogAppend`]). Either all of it happens or none of it does. An
    /// entry holding a newline is refused, writing nothing.
    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError>;

    /// Appends events in as few round trips as the backend allows, each
    /// log's appends in their order; appends of different logs may be
    /// stored in another order than given (Redis groups them by log). The
    /// outcomes come back in the order given. Each append is atomic on its
    /// own; an error means some may have been applied, so callers retry the
    /// batch (appends are idempotent by sequence number).
    async fn append_batch(
        &self,
        appends: &[LogAppend],
        limits: HistoryLimits,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        log::check_one_line(appends)?;
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            outcomes.push(self.append(append, limits).await?);
        }
        Ok(outcomes)
    }

    /// The current state of a log (what the last append stored), with the
    /// sequence number it is at.
    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError>;

    /// [`StateStore::log_state`] of several logs, in one round trip where
    /// the backend allows; results in the order of `logs`.
    async fn log_states_of(&self, logs: &[String]) -> Result<Vec<Option<(u64, Bytes)>>, StoreError> {
        let mut states = Vec::with_capacity(logs.len());
        for log in logs {
            states.push(self.log_state(log).await?);
        }
        Ok(states)
    }

    /// The current state of every log, in no particular order.
    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError>;

    /// Up to `limit` history entries after sequence number `after`, oldest
    /// first, and the log's head.
    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError>;

    /// Number of entries in the durable event stream: appends, or on Redis
    /// from format 3 fewer, a run of appends stored together counting once
    /// (see [`StreamEntry::id`]).
    async fn stream_len(&self) -> Result<u64, StoreError>;

    /// Up to `count` entries of the durable event stream after position
    /// `after` (from the start when `None`): a page of a full scan. Each
    /// log's entries come in order; fewer than `count` means the scan is
    /// done. The page's position resumes the scan, and as a rebuild's
    /// [`LeaderboardReplace::through`] it covers everything read so far.
    async fn read_stream(&self, after: Option<&str>, count: usize) -> Result<StreamPage, StoreError>;

    /// Creates consumer group `group` on the event stream, reading from its
    /// first entry. Does nothing if the group exists.
    async fn stream_group_create(&self, group: &str) -> Result<(), StoreError>;

    /// Up to `count` entries never delivered to `group` before, now pending
    /// for `consumer`. Waits up to `block` (at most [`stream::MAX_BLOCK`]) for
    /// one to arrive; empty if none did.
    async fn stream_read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StoreError>;

    /// Up to `count` entries delivered to `consumer` of `group` before and
    /// not acknowledged since: what a consumer retries after a failed round,
    /// without waiting for them to be claimed as a dead consumer's.
    async fn stream_read_pending(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError>;

    /// Acknowledges entries of `group`; returns how many were pending.
    async fn stream_ack(&self, group: &str, ids: &[String]) -> Result<u64, StoreError>;

    /// Moves up to `count` entries pending in `group` for at least `min_idle`
    /// (their consumer is presumed dead) to `consumer`, and returns them.
    /// Entries deleted from the stream meanwhile are dropped from the group.
    async fn stream_claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError>;

    /// How far `group` is behind the stream, and how much it holds
    /// delivered but unacknowledged.
    async fn stream_backlog(&self, group: &str) -> Result<Backlog, StoreError>;

    /// For each apply, in order and each atomically: applies its increments
    /// unless its token was seen before or the last leaderboard rebuild
    /// covers its entry; then acknowledges the entries in `group`.
    async fn apply_once(&self, group: &str, applies: &[ScoreApply]) -> Result<Vec<ApplyOutcome>, StoreError>;

    /// The top `limit` members of `board`, highest score first (ties in
    /// reverse member order, as ZREVRANGE gives them).
    async fn leaderboard(&self, board: &str, limit: usize) -> Result<Vec<Ranked>, StoreError>;

    /// `member`'s score on `board`, if it has one.
    async fn leaderboard_score(&self, board: &str, member: &str) -> Result<Option<f64>, StoreError>;

    /// Replaces leaderboards atomically; see [`LeaderboardReplace`] and the
    /// [`stream`] module for what else happens in the same step. Readers see
    /// either every old board or every new one. Returns `false`, and changes
    /// nothing, when the replace carries a [`Fence`] older than one already
    /// used: a later holder of its lease has written since.
    async fn replace_leaderboards(&self, replace: &LeaderboardReplace) -> Result<bool, StoreError>;

    /// Takes lease `name` for `holder` for `ttl`, or extends it when
    /// `holder` has it already. Returns the lease's fencing token while
    /// `holder` holds it (the same one on every extension, a larger one for
    /// each new holder), or `None` when another holder has it. A holder that
    /// stops extending loses the lease when `ttl` runs out.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration)
    -> Result<Option<u64>, StoreError>;

    /// Gives lease `name` up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
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

//! Consuming the durable event stream, and the leaderboards built from it.
//!
//! The stream is read through consumer groups: each entry goes to one
//! consumer of a group, stays pending until acknowledged, and is claimed by
//! another consumer when its owner has been silent too long (a crashed
//! process). That gives at-least-once delivery; exactly-once effects come
//! from [`ScoreApply`]: the leaderboard increments of one entry, applied only
//! if the entry's idempotency token is new (a Lua script on Redis, one lock
//! in memory), then acknowledged. A crash between reading and applying
//! leaves the entry pending; so does a crash between applying and
//! acknowledging, and the entry delivered again is then known by its token
//! and only acknowledged.
//!
//! Leaderboards are sorted sets. A batch recompute rebuilds them and swaps
//! them in with [`LeaderboardReplace`], atomically with two pieces of
//! bookkeeping that keep the stream consumers' work from being lost or
//! counted twice:
//! - the stream position the rebuild covers (`through`): entries at or before it are
//!   acknowledged without increments from then on, since the rebuild counted
//!   them;
//! - the increments applied after `through` while the rebuild ran: every
//!   apply also writes a journal record, and the swap replays the records
//!   newer than `through` onto the new boards and drops the older ones.

use std::time::Duration;

use bytes::Bytes;

/// Journal records kept at most (approximately) when no rebuild trims them:
/// about a day of a busy deployment. Beyond it the oldest are dropped, so a
/// rebuild that runs less often than that may miss increments applied while
/// it ran.
pub const JOURNAL_MAX_LEN: usize = 1_000_000;

/// Longest a blocking read waits; longer requests are shortened to it.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

/// One entry of the durable event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The stream id, opaque to callers, and never decreasing along the
    /// stream: appends stored together (one run of a log in one Redis
    /// call, format 3) share it, and each is read, applied and rebuilt
    /// through with the others. Acknowledging it acknowledges them all, so
    /// a consumer applies the entries it reads together.
    pub id: String,
    /// The log (match id) the entry belongs to.
    pub log: String,
    /// Its sequence number in that log.
    pub seq: u64,
    /// The stream entry as appended ([`crate::LogAppend::stream_entry`]).
    pub entry: Bytes,
}

/// One page of a full scan of the stream ([`crate::StateStore::read_stream`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPage {
    pub entries: Vec<StreamEntry>,
    /// Where the scan stands after this page: pass it as `after` for the
    /// next page, or as a rebuild's `through`. Opaque; `None` only while
    /// nothing has been read.
    pub position: Option<String>,
}

/// How far a consumer group is behind ([`crate::StateStore::stream_backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Entries of the stream not yet delivered to the group.
    pub lag: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
}

/// Add `delta` to `member`'s score on `board`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreIncrement {
    pub board: String,
    pub member: String,
    pub delta: f64,
}

/// The effect of one stream entry, to apply at most once and acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreApply {
    /// The stream entry to acknowledge.
    pub entry_id: String,
    /// The idempotency key is `(scope, token)`: scope names a set of tokens
    /// (e.g. a match id), token is unique within it (e.g. a sequence number).
    pub scope: String,
    pub token: String,
    /// May be empty: the entry is then only marked and acknowledged.
    pub increments: Vec<ScoreIncrement>,
}

/// What [`crate::StateStore::apply_once`] did with one [`ScoreApply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Increments applied, entry acknowledged.
    Applied,
    /// The token was seen before: entry acknowledged, nothing else changed.
    Duplicate,
    /// The entry is covered by the last rebuild: acknowledged, not applied.
    Rebuilt,
}

/// New contents for a set of leaderboards, swapped in atomically.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaderboardReplace {
    /// Each board's full new contents; an empty list deletes the board.
    pub boards: Vec<(String, Vec<(String, f64)>)>,
    /// The part of the stream the new contents account for, if any: a
    /// [`StreamPage::position`], or an entry id (that entry and those before
    /// it in its log's part of the stream).
    pub through: Option<String>,
    /// The lease the rebuild ran under, if any: a replace whose token is
    /// older than one the store has seen for the lease is refused, so a
    /// holder that lost its lease (paused, partitioned) cannot overwrite a
    /// newer holder's boards.
    pub fence: Option<Fence>,
}

/// A lease's fencing token ([`crate::StateStore::acquire_lease`]), carried
/// by a write made under the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

/// One leaderboard row.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub member: String,
    pub score: f64,
}

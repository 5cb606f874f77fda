//! The event log of each match, as the store keeps it.
//!
//! One append does five things atomically (a Lua script on Redis, one lock
//! in memory), so no reader ever sees one without the others:
//!
//! 1. checks the sequence number against the log's head: a replay is
//!    acknowledged as a duplicate, a gap is refused, a conflict (the state
//!    was computed from another head) is refused;
//! 2. stores the new state of the match;
//! 3. appends the entry to the match's history, bounded in length and
//!    expiring when the match goes quiet;
//! 4. appends the stream entry to the durable event stream, which the
//!    analytics worker consumes and which is never trimmed;
//! 5. publishes the entry on [`LIVE_CHANNEL`] for the gateways' fan-out.
//!
//! The store knows nothing of matches or events: logs are named by string,
//! entries and states are opaque bytes.

use std::time::Duration;

use bytes::Bytes;

/// The pub/sub channel every append publishes its entry on.
pub const LIVE_CHANNEL: &str = "live";

/// One entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    /// The log's name (a match id).
    pub log: String,
    /// Must be the head + 1.
    pub seq: u64,
    /// The entry kept in history and published live.
    pub entry: Bytes,
    /// The state after this entry, computed from the state at `seq - 1`.
    pub state: Bytes,
    /// The entry of the durable event stream (its own encoding).
    pub stream_entry: Bytes,
}

/// How much history a log keeps for subscribers that resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Entries kept per log; older ones are dropped.
    pub max_entries: usize,
    /// A log's history is dropped this long after its last append.
    pub max_idle: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { max_entries: 1_000, max_idle: Duration::from_secs(6 * 3600) }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored, fed and published.
    Applied,
    /// `seq` was at or below the head: nothing changed.
    Duplicate { head: u64 },
    /// `seq` was beyond head + 1: nothing changed.
    Gap { head: u64 },
}

/// A slice of a log's history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSlice {
    /// `(seq, entry)`, oldest first, all after the requested sequence number.
    pub entries: Vec<(u64, Bytes)>,
    /// The log's last sequence number (0 if it has none).
    pub head: u64,
    /// The oldest sequence number still in history, if any.
    pub oldest: Option<u64>,
}

impl LogSlice {
    /// Whether the slice holds every entry after `after` up to the head, so
    /// a subscriber resuming from `after` missed nothing.
    pub fn is_complete_after(&self, after: u64) -> bool {
        if self.head <= after {
            return true;
        }
        self.entries.first().is_some_and(|(seq, _)| *seq == after + 1)
            && self.entries.last().is_some_and(|(seq, _)| *seq == self.head)
    }
}

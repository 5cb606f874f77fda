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
//! 5. publishes the entry on [`LIVE_CHANNEL`] for the gateways' fan-out
//!    (several entries of one call may share a message: [`live_entries`]).
//!
//! The store knows nothing of matches or events: logs are named by string,
//! entries and states are opaque bytes.

use std::time::Duration;

use bytes::Bytes;

/// The pub/sub channel every append publishes its entry on.
pub const LIVE_CHANNEL: &str = "live";

/// What a store writes for readers in other processes, numbered so a fleet
/// moves to a new format one replica at a time: a release reads every
/// format up to its own and writes the one it is told to. Upgrading: run
/// the new release with the old format until no older replica is left,
/// then switch (see README.md, "Upgrading").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum WriteFormat {
    /// One message on the live channel per append: read by every release.
    V1,
    /// The entries of one store call in one live message, joined by
    /// newlines (entries hold none), so Redis sends one message per call
    /// instead of one per append. Read by this release and later ones.
    V2,
    /// On Redis a call's consecutive entries of one log (a run) are one
    /// history entry and one event stream entry instead of one each, and
    /// one live message, joined by newlines as in format 2: a few commands
    /// per match and call instead of per event in bulk ingest, where a call
    /// holds several events of each match. Read by this release and later
    /// ones.
    #[default]
    V3,
}

impl WriteFormat {
    /// The format's number, as configured and as the scripts read it.
    pub fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The format numbered `n`, if this release knows it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }
}

/// The entries in one message from the live channel, oldest first: one, or
/// several joined by newlines (format 2 of [`WriteFormat`]). Empty pieces
/// are skipped.
pub fn live_entries(message: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let ends = memchr::memchr_iter(b'\n', message).chain(std::iter::once(message.len()));
    let mut start = 0;
    ends.filter_map(move |end| {
        let piece = (end > start).then(|| message.slice(start..end));
        start = end + 1;
        piece
    })
}

/// Refuses a batch in which an entry holds a newline, before anything is
/// written: readers of the live channel split messages on newlines.
pub(crate) fn check_one_line(appends: &[LogAppend]) -> Result<(), crate::StoreError> {
    match appends.iter().find(|a| memchr::memchr(b'\n', &a.entry).is_some()) {
        Some(append) => Err(crate::StoreError::Backend(format!(
            "the entry at seq {} of log {:?} holds a newline; entries are one line each",
            append.seq, append.log
        ))),
        None => Ok(()),
    }
}

/// One entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    /// The log's name (a match id).
    pub log: String,
    /// Must be the head + 1.
    pub seq: u64,
    /// The entry kept in history and published live. One line: it holds
    /// no newline byte (see [`live_entries`]), as JSON written compactly.
    pub entry: Bytes,
    /// The state after this entry, computed from the state at `seq - 1`.
    /// Often the tail of `entry` (an update closing around its state): the
    /// Redis store then sends those bytes once.
    pub state: Bytes,
    /// The entry of the durable event stream (its own encoding).
    pub stream_entry: Bytes,
}

/// How much history a log keeps for subscribers that resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Entries kept per log; older ones are dropped. At least this many:
    /// the Redis store keeps a call's entries of one log together (format
    /// 3), so a few more may stay until the next append.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(message: &'static [u8]) -> Vec<Bytes> {
        live_entries(&Bytes::from_static(message)).collect()
    }

    #[test]
    fn a_live_message_holds_one_entry_or_several_lines() {
        assert_eq!(
            entries(b"{\"seq\":1}"),
            [Bytes::from_static(b"{\"seq\":1}")],
            "format 1: the message is the entry"
        );
        assert_eq!(entries(b"a\nbb\nc"), ["a", "bb", "c"].map(Bytes::from));
        assert_eq!(entries(b"\na\n\nb\n"), ["a", "b"].map(Bytes::from), "empty lines are skipped");
        assert!(entries(b"").is_empty());
    }

    #[test]
    fn a_batch_with_a_two_line_entry_is_refused() {
        let append = |entry: &'static [u8]| LogAppend {
            log: "m".into(),
            seq: 7,
            entry: Bytes::from_static(entry),
            state: Bytes::new(),
            stream_entry: Bytes::new(),
        };
        assert!(check_one_line(&[append(b"one"), append(b"two")]).is_ok());
        let err = check_one_line(&[append(b"one"), append(b"t\nwo")]).expect_err("two lines");
        assert!(err.to_string().contains("seq 7 of log \"m\""), "{err}");
    }
}

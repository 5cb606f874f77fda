//! Where the Redis store keeps things: key names, hash tags and the ids of
//! stream entries, for one server and for a cluster.
//!
//! A single server is laid out as a cluster of one partition without hash
//! tags, so everything else in the store is written once. The key names on
//! one server are those of every earlier release (`<prefix>log-heads`,
//! `<prefix>events`, `<prefix>log:<match>`, ...): an existing deployment
//! keeps its data.
//!
//! # On a cluster
//! Keys carry a hash tag (the part in braces decides the slot):
//! - `{p<k>}`: partition `k` of the logs. A log (match) belongs to partition
//!   `fnv1a(log) % partitions`; its head and state (two hashes per
//!   partition), its history, the partition's part of the durable event
//!   stream and its live channel all share the tag, so one append (see
//!   `log.rs`) is still one script. The live channel is a *sharded* channel
//!   (`SPUBLISH`): a message goes to the subscribers on the slot's node
//!   only, not to every node.
//! - `{b}`: the leaderboards with everything that must change with them
//!   atomically: the idempotency tokens, the rebuilt-through marker, the
//!   journal and the fencing tokens. Every board lives in one slot, so a
//!   rebuild still swaps all of them at once; the price is that board
//!   writes go to one node, which the consumer's batching keeps small.
//! - `{lease:<name>}`: a lease and its token counter.
//! - Plain keys (`get`/`set`) and other channels are hashed as they are.
//!
//! # Stream entry ids and positions
//! On a cluster an entry id is `<partition>/<stream id>`; on one server it is
//! the stream id. A full scan reads partition after partition; its position
//! (`scan:<next partition>:<id0>,<id1>,..`) holds how far it read in each,
//! so a rebuild's `through` covers exactly the entries it counted, whatever
//! arrived meanwhile in other partitions. On one server the position is the
//! last id read.

use crate::{LIVE_CHANNEL, StoreError};

/// Key names and ids of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
    /// `None` on a single server: one partition, no hash tags.
    partitions: Option<u16>,
}

/// A hash of `log` that never changes between releases: partitions are
/// part of the data layout.
fn fnv1a(log: &str) -> u32 {
    log.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

impl Layout {
    pub(crate) fn single(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), partitions: None }
    }

    pub(crate) fn cluster(prefix: &str, partitions: u16) -> Self {
        Self { prefix: prefix.to_owned(), partitions: Some(partitions.max(1)) }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.partitions.is_some()
    }

    pub(crate) fn partitions(&self) -> usize {
        self.partitions.map_or(1, usize::from)
    }

    /// The partition of `log`.
    pub(crate) fn partition_of(&self, log: &str) -> usize {
        fnv1a(log) as usize % self.partitions()
    }

    /// A key (or channel) outside the partitions, as named.
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key of partition `k`.
    pub(crate) fn part_key(&self, k: usize, key: &str) -> String {
        match self.partitions {
            None => self.key(key),
            Some(_) => format!("{}{{p{k}}}{key}", self.prefix),
        }
    }

    pub(crate) fn stream(&self, k: usize) -> String {
        self.part_key(k, "events")
    }

    pub(crate) fn heads(&self, k: usize) -> String {
        self.part_key(k, "log-heads")
    }

    pub(crate) fn states(&self, k: usize) -> String {
        self.part_key(k, "log-states")
    }

    /// Which attempt wrote each log's head (see `APPEND_SCRIPT`).
    pub(crate) fn attempts(&self, k: usize) -> String {
        self.part_key(k, "log-attempts")
    }

    /// The history of `log`, in `log`'s partition.
    pub(crate) fn history(&self, log: &str) -> String {
        self.part_key(self.partition_of(log), &format!("log:{log}"))
    }

    pub(crate) fn live_channel(&self, k: usize) -> String {
        self.part_key(k, LIVE_CHANNEL)
    }

    /// A key of the leaderboards' slot.
    pub(crate) fn board_key(&self, key: &str) -> String {
        match self.partitions {
            None => self.key(key),
            Some(_) => format!("{}{{b}}{key}", self.prefix),
        }
    }

    /// A lease and its token counter.
    pub(crate) fn lease_keys(&self, name: &str) -> (String, String) {
        match self.partitions {
            None => (self.key(&format!("lease:{name}")), self.key(&format!("lease-token:{name}"))),
            Some(_) => {
                let tag = format!("{}{{lease:{name}}}", self.prefix);
                (format!("{tag}held"), format!("{tag}token"))
            }
        }
    }

    /// `PUBLISH` on one server, `SPUBLISH` (the channel's slot only) on a
    /// cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// The entry id a caller sees for stream id `id` of partition `k`.
    pub(crate) fn entry_id(&self, k: usize, id: &str) -> String {
        match self.partitions {
            None => id.to_owned(),
            Some(_) => format!("{k}/{id}"),
        }
    }

    /// `(partition, stream id)` of an entry id.
    pub(crate) fn split_id<'a>(&self, id: &'a str) -> Result<(usize, &'a str), StoreError> {
        let bad = || StoreError::Backend(format!("{id:?} is not an entry id of this stream"));
        match self.partitions {
            None if is_stream_id(id) => Ok((0, id)),
            None => Err(bad()),
            Some(_) => id
                .split_once('/')
                .and_then(|(k, rest)| Some((k.parse::<usize>().ok()?, rest)))
                .filter(|(k, rest)| *k < self.partitions() && is_stream_id(rest))
                .ok_or_else(bad),
        }
    }

    /// The position of a scan that goes on with partition `next`, having
    /// read each partition up to its id in `ids`.
    pub(crate) fn position(&self, next: usize, ids: &[String]) -> String {
        match self.partitions {
            None => ids.first().cloned().unwrap_or_else(|| "0-0".into()),
            Some(_) => format!("scan:{next}:{}", ids.join(",")),
        }
    }

    /// The next partition and each partition's last id read, of a position.
    pub(crate) fn parse_position(&self, position: &str) -> Result<(usize, Vec<String>), StoreError> {
        let bad = || StoreError::Backend(format!("{position:?} is not a position of this stream"));
        if self.partitions.is_none() {
            return if is_stream_id(position) { Ok((0, vec![position.to_owned()])) } else { Err(bad()) };
        }
        let rest = position.strip_prefix("scan:").ok_or_else(bad)?;
        let (next, ids) = rest.split_once(':').ok_or_else(bad)?;
        let next: usize = next.parse().map_err(|_| bad())?;
        let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
        if ids.len() != self.partitions()
            || next > self.partitions()
            || !ids.iter().all(|id| is_stream_id(id))
        {
            return Err(bad());
        }
        Ok((next, ids))
    }
}

/// Whether `id` is a Redis stream id, `<ms>-<seq>`.
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_never_change_for_a_log() {
        // Part of the data layout: a change here moves every match.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(fnv1a("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn one_server_keeps_the_key_names_of_earlier_releases() {
        let layout = Layout::single("courtside:");
        assert_eq!(layout.partition_of("arsenal-chelsea"), 0);
        assert_eq!(layout.heads(0), "courtside:log-heads");
        assert_eq!(layout.states(0), "courtside:log-states");
        assert_eq!(layout.stream(0), "courtside:events");
        assert_eq!(layout.history("m1"), "courtside:log:m1");
        assert_eq!(layout.live_channel(0), "courtside:live");
        assert_eq!(layout.board_key("journal"), "courtside:journal");
        assert_eq!(
            layout.lease_keys("recompute"),
            ("courtside:lease:recompute".into(), "courtside:lease-token:recompute".into())
        );
        assert_eq!(layout.publish_command(), "PUBLISH");
    }

    #[test]
    fn on_a_cluster_keys_of_one_step_share_a_hash_tag() {
        let layout = Layout::cluster("demo:", 8);
        let k = layout.partition_of("arsenal-chelsea");
        assert!(k < 8);
        for key in
            [layout.heads(k), layout.stream(k), layout.live_channel(k), layout.history("arsenal-chelsea")]
        {
            assert!(key.starts_with(&format!("demo:{{p{k}}}")), "{key}");
        }
        assert_eq!(layout.board_key("score:total"), "demo:{b}score:total");
        assert_eq!(
            layout.lease_keys("recompute"),
            ("demo:{lease:recompute}held".into(), "demo:{lease:recompute}token".into())
        );
        assert_eq!(layout.publish_command(), "SPUBLISH");
    }

    #[test]
    fn entry_ids_and_positions_round_trip() {
        let cluster = Layout::cluster("x:", 3);
        assert_eq!(cluster.split_id("2/17-0").expect("valid"), (2, "17-0"));
        assert!(cluster.split_id("3/17-0").is_err(), "no partition 3");
        assert!(cluster.split_id("17-0").is_err());
        let (next, ids) = cluster.parse_position("scan:1:5-0,0-0,0-0").expect("valid");
        assert_eq!((next, ids.len()), (1, 3));
        assert_eq!(cluster.position(next, &ids), "scan:1:5-0,0-0,0-0");
        assert!(cluster.parse_position("scan:1:5-0,0-0").is_err(), "one id per partition");
        assert!(cluster.parse_position("5-0").is_err());

        let single = Layout::single("x:");
        assert_eq!(single.entry_id(0, "17-0"), "17-0");
        assert_eq!(single.split_id("17-0").expect("valid"), (0, "17-0"));
        assert!(single.split_id("0/17-0").is_err());
        let (next, ids) = single.parse_position("5-0").expect("valid");
        assert_eq!(single.position(next, &ids), "5-0");
        assert!(single.parse_position("scan:0:5-0").is_err());
    }
}

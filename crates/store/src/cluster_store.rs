//! The Redis Cluster backend: the state of [`crate::RedisStore`], laid out so
//! that every atomic step stays inside one hash slot, which is all a cluster
//! can run atomically.
//!
//! # Key layout
//! Keys carry a hash tag (the part in braces decides the slot):
//! - `{p<k>}`: partition `k` of the logs. A log (match) belongs to partition
//!   `fnv1a(log) % partitions`; its head and state (two hashes per
//!   partition), its history, the partition's part of the durable event
//!   stream and its live channel all share the tag, so one append (see
//!   `log.rs`) is still one script. The live channel is a *sharded* channel
//!   (`SPUBLISH`), published from the append script itself: a message goes
//!   to the subscribers on the slot's node only, not to every node.
//! - `{b}`: the leaderboards with everything that must change with them
//!   atomically: the idempotency tokens, the rebuilt-through marker, the
//!   journal and the fencing tokens. Every board lives in one slot, so a
//!   rebuild still swaps all of them at once; the price is that board
//!   writes go to one node, which the consumer's batching keeps small.
//! - `{lease:<name>}`: a lease and its token counter.
//! - Plain keys (`get`/`set`) and other channels are hashed as they are.
//!
//! # Exactly-once across slots
//! A stream entry lives in its partition's slot, its board increments in
//! `{b}`. The apply script checks the entry's token and applies the
//! increments in `{b}`, atomically; the entry is acknowledged after, in its
//! own slot. A crash between the two leaves the entry pending: it is
//! delivered again, its token is known, and it is only acknowledged then.
//! So effects stay exactly-once; only the acknowledgement moved.
//!
//! # Stream positions
//! Entry ids are `<partition>/<stream id>`. A full scan reads partition
//! after partition; its position (`scan:<next partition>:<id0>,<id1>,..`)
//! holds how far it read in each, so a rebuild's `through` covers exactly
//! the entries it counted, whatever arrived meanwhile in other partitions.
//!
//! Consumer group reads sweep the partitions without blocking and wait
//! [`POLL`] between empty sweeps: a blocking read holds its node's
//! connection, and one per partition would hold them all.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::try_join_all;
use redis::{
    Cmd, FromRedisValue, Pipeline, PushInfo, PushKind, RedisError,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply},
};
use tokio::sync::OnceCell;

use crate::{
    AppendOutcome, ApplyOutcome, FeedPage, HistoryLimits, LIVE_CHANNEL, LeaderboardReplace, LogAppend,
    LogSlice, Ranked, Reach, ScoreApply, StateStore, StoreError, StreamEntry, Subscription,
    observed::{command_name, observe},
    redis_store::{
        self, APPEND_SCRIPT, APPLY_BODY, AppendTarget, LEASE_SCRIPT, RELEASE_SCRIPT, SWAP_BODY, ZADD_CHUNK,
        append_outcomes, history_entry, map_error, push_appends, redact_url, value_int, value_text,
    },
    stream::{JOURNAL_MAX_LEN, MAX_BLOCK},
};

/// Pause between consumer-group sweeps that found nothing.
const POLL: Duration = Duration::from_millis(50);

/// Messages a subscription buffers before it drops new ones (a subscriber
/// that far behind resyncs from history, as after any lost message).
const SUBSCRIPTION_BUFFER: usize = 16_384;

/// Stream-id comparison for partitioned ids: whether entry `a`
/// (`<k>/<ms>-<seq>`) is covered by `b`, a scan position or an entry id.
const COVERED_BY: &str = r#"
local function at_or_before(a, b)
  local part, ams, aseq = string.match(a, '^(%d+)/(%d+)-(%d+)$')
  if not part then return false end
  local bid
  local ids = string.match(b, '^scan:%d+:(.*)$')
  if ids then
    local i = 0
    for id in string.gmatch(ids, '[^,]+') do
      if i == tonumber(part) then bid = id break end
      i = i + 1
    end
  else
    local bpart, rest = string.match(b, '^(%d+)/(.*)$')
    if bpart == part then bid = rest end
  end
  if not bid then return false end
  local bms, bseq = string.match(bid, '^(%d+)-(%d+)$')
  if not bms then return false end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  if ams ~= bms then return ams < bms end
  return aseq <= bseq
end
"#;

/// Heads and states of some logs of one partition, read together. A
/// script rather than MULTI: a transaction redirected mid-failover aborts
/// as a whole, and the client follows redirects for plain commands only.
/// Keys: heads, states. Args: the logs.
const READ_STATES_SCRIPT: &str = r#"
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('HMGET', KEYS[2], unpack(ARGV))}
"#;

/// A log's head and a page of its history (see `read_log`), read together.
/// Keys: heads, the history. Args: log, exclusive start id, count.
const READ_LOG_SCRIPT: &str = r#"
local head = redis.call('HGET', KEYS[1], ARGV[1])
local entries = redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
return {head, entries, oldest}
"#;

/// The single-node acknowledgement inside the apply script; on a cluster
/// the entry is acknowledged in its own slot afterwards.
const APPLY_ACK: &str = "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n";

/// How to reach a Redis Cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Seed nodes, `redis://[user:password@]host:port` each; the client
    /// discovers the rest. May carry a password: never printed.
    pub nodes: Vec<String>,
    /// Prepended to every key and channel (before the hash tag).
    pub key_prefix: String,
    /// Partitions of the logs, the event stream and the live channel.
    /// Fixed for a deployment's life: a log's partition follows from it.
    pub partitions: u16,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// Replicas that must hold an append before it is acknowledged (see
    /// [`ClusterStore`]); 0 acknowledges on the master's word alone.
    pub wait_replicas: u8,
}

impl ClusterConfig {
    /// Settings from a comma-separated list of seed node URLs. The error is
    /// one line and never echoes a URL.
    pub fn from_settings(urls: &str, key_prefix: &str, partitions: u16) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for (i, url) in urls.split(',').map(str::trim).filter(|u| !u.is_empty()).enumerate() {
            let parsed = url::Url::parse(url).map_err(|e| format!("node {}: not a url: {e}", i + 1))?;
            match parsed.scheme() {
                "redis" | "rediss" if parsed.host().is_some() => nodes.push(url.to_owned()),
                "redis" | "rediss" => return Err(format!("node {}: the url has no host", i + 1)),
                other => {
                    return Err(format!("node {}: scheme must be redis or rediss, got {other:?}", i + 1));
                }
            }
        }
        if nodes.is_empty() {
            return Err("a cluster needs at least one node url".into());
        }
        if key_prefix.contains(['{', '}']) {
            return Err("on a cluster the key prefix may not contain braces (they pick the hash slot)".into());
        }
        if partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        Ok(Self {
            nodes,
            key_prefix: key_prefix.to_owned(),
            partitions,
            timeout: Duration::from_secs(1),
            wait_replicas: 0,
        })
    }

    /// The seed nodes with passwords replaced by `***`, safe to log.
    pub fn redacted_nodes(&self) -> String {
        self.nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>().join(",")
    }

    fn client(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.nodes.clone())
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            // Retries follow MOVED and ride out a failover; the overall
            // bound keeps a request's wait for them short.
            .retries(4)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .overall_response_timeout(Some(self.timeout * 3))
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nodes", &self.redacted_nodes())
            .field("key_prefix", &self.key_prefix)
            .field("partitions", &self.partitions)
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// The Redis Cluster [`StateStore`]. Cheap to clone; clones share the
/// connection.
///
/// # Durability
/// A cluster replicates asynchronously: a master acknowledges a write
/// before its replicas have it, and if it dies in that window the replica
/// promoted in its place never had the write. With
/// [`ClusterConfig::wait_replicas`] set, each batch of appends is followed
/// by `WAIT` on the same node, and the appends are acknowledged only once
/// that many replicas hold them (or every replica the master has, when it
/// has fewer: a shard that just failed over keeps taking writes with the
/// durability it has). A `WAIT` that times out is a retryable error; the
/// caller's retry finds the appends done (they are idempotent) and waits
/// again. `WAIT` narrows the window, it is not consensus: a master that
/// loses its replicas between the two steps, or a partition that promotes
/// a lagging replica, can still lose writes, as Redis documents.
#[derive(Clone)]
pub struct ClusterStore {
    config: Arc<ClusterConfig>,
    client: ClusterClient,
    /// Connected on first use, so a process starts while the cluster is
    /// down; the connection then follows the cluster's topology by itself.
    connection: Arc<OnceCell<ClusterConnection>>,
    scripts: Arc<Scripts>,
    /// Where the next consumer-group sweep starts, so no partition is
    /// always served last.
    sweep: Arc<AtomicUsize>,
}

struct Scripts {
    append: String,
    append_sha: String,
    apply: String,
    apply_sha: String,
    swap: redis::Script,
    read_states: redis::Script,
    read_log: redis::Script,
}

impl fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStore").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A hash of `log` that never changes between releases: partitions are
/// part of the data layout.
fn fnv1a(log: &str) -> u32 {
    log.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

impl ClusterStore {
    /// Checks the settings and prepares the client without connecting.
    pub fn connect_lazy(config: &ClusterConfig) -> Result<Self, StoreError> {
        let client = config
            .client()
            .build()
            .map_err(|e| StoreError::Backend(format!("invalid redis cluster settings: {e}")))?;
        let append = APPEND_SCRIPT.replace("'PUBLISH'", "'SPUBLISH'");
        let apply = format!("{COVERED_BY}{}", APPLY_BODY.replace(APPLY_ACK, ""));
        Ok(Self {
            config: Arc::new(config.clone()),
            client,
            connection: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts {
                append_sha: redis::Script::new(&append).get_hash().to_owned(),
                append,
                apply_sha: redis::Script::new(&apply).get_hash().to_owned(),
                apply,
                swap: redis::Script::new(&format!("{COVERED_BY}{SWAP_BODY}")),
                read_states: redis::Script::new(READ_STATES_SCRIPT),
                read_log: redis::Script::new(READ_LOG_SCRIPT),
            }),
            sweep: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn partitions(&self) -> usize {
        usize::from(self.config.partitions)
    }

    /// The partition of `log`.
    pub fn partition_of(&self, log: &str) -> usize {
        fnv1a(log) as usize % self.partitions()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.config.key_prefix)
    }

    /// A key of partition `k`.
    fn part_key(&self, k: usize, key: &str) -> String {
        format!("{}{{p{k}}}{key}", self.config.key_prefix)
    }

    fn stream(&self, k: usize) -> String {
        self.part_key(k, "events")
    }

    /// A key of the leaderboards' slot.
    fn board_key(&self, key: &str) -> String {
        format!("{}{{b}}{key}", self.config.key_prefix)
    }

    fn lease_keys(&self, name: &str) -> (String, String) {
        let tag = format!("{}{{lease:{name}}}", self.config.key_prefix);
        (format!("{tag}held"), format!("{tag}token"))
    }

    async fn conn(&self) -> Result<ClusterConnection, StoreError> {
        let connect = || async {
            tokio::time::timeout(self.config.timeout, self.client.get_async_connection())
                .await
                .map_err(|_| StoreError::Unavailable("timed out connecting to the redis cluster".into()))?
                .map_err(map_error)
        };
        self.connection.get_or_try_init(connect).await.cloned()
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        observe(command_name(cmd), 1, cmd.query_async(&mut conn)).await.map_err(map_error)
    }

    /// Runs a script (loading it first where the node lacks it, as a
    /// replica promoted since may).
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        observe("EVALSHA", 1, invocation.invoke_async(&mut conn)).await.map_err(map_error)
    }

    /// Sends a pipeline whose commands all live in one slot.
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let name = pipe.cmd_iter().last().map_or("OTHER", command_name);
        observe(name, pipe.len(), pipe.query_async(&mut conn)).await.map_err(map_error)
    }

    /// The entry id a caller sees for stream id `id` of partition `k`.
    fn entry_id(k: usize, id: &str) -> String {
        format!("{k}/{id}")
    }

    /// `(partition, stream id)` of an entry id.
    fn split_id(&self, id: &str) -> Result<(usize, String), StoreError> {
        id.split_once('/')
            .and_then(|(k, rest)| Some((k.parse::<usize>().ok()?, rest.to_owned())))
            .filter(|(k, _)| *k < self.partitions())
            .ok_or_else(|| StoreError::Backend(format!("{id:?} is not an entry id of this stream")))
    }

    fn stream_entry(k: usize, id: &StreamId) -> Option<StreamEntry> {
        redis_store::stream_entry(id).map(|entry| StreamEntry { id: Self::entry_id(k, &entry.id), ..entry })
    }

    /// Indexes of `logs` grouped by partition, each group in input order.
    fn by_partition<'a>(&self, logs: impl Iterator<Item = &'a str>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, log) in logs.enumerate() {
            groups.entry(self.partition_of(log)).or_default().push(i);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|(k, _)| *k);
        groups
    }

    /// Parses a scan position into the next partition and each partition's
    /// last id read.
    fn parse_position(&self, position: &str) -> Result<(usize, Vec<String>), StoreError> {
        let bad = || StoreError::Backend(format!("{position:?} is not a position of this stream"));
        let rest = position.strip_prefix("scan:").ok_or_else(bad)?;
        let (next, ids) = rest.split_once(':').ok_or_else(bad)?;
        let next: usize = next.parse().map_err(|_| bad())?;
        let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
        if ids.len() != self.partitions() || next > self.partitions() {
            return Err(bad());
        }
        Ok((next, ids))
    }

    /// One sweep over the partitions for `group`, without blocking.
    async fn sweep_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let n = self.partitions();
        let start = self.sweep.fetch_add(1, Ordering::Relaxed) % n;
        let mut entries = Vec::new();
        for k in (start..n).chain(0..start) {
            if entries.len() >= count {
                break;
            }
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count - entries.len())
                .arg("STREAMS")
                .arg(self.stream(k))
                .arg(">");
            let reply: Option<StreamReadReply> = self.query(&cmd).await?;
            if let Some(reply) = reply {
                entries.extend(
                    reply
                        .keys
                        .iter()
                        .flat_map(|key| key.ids.iter().filter_map(|id| Self::stream_entry(k, id))),
                );
            }
        }
        Ok(entries)
    }
}

/// The longest an append waits for its replicas.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// How long [`ClusterStore::reach`] waits for each part: under readiness's
/// own probe timeout, so a dead master reads as one part down, not as no
/// answer at all.
const REACH_TIMEOUT: Duration = Duration::from_millis(500);

/// Replicas connected to a master, from its `ROLE` reply
/// (`["master", offset, [[ip, port, offset], ..]]`); 0 for anything else.
fn connected_replicas(role: &redis::Value) -> u64 {
    let Ok(parts) = redis::from_redis_value_ref::<Vec<redis::Value>>(role) else { return 0 };
    match parts.as_slice() {
        [kind, _, replicas, ..] if value_text(kind).as_deref() == Some("master") => {
            redis::from_redis_value_ref::<Vec<redis::Value>>(replicas).map_or(0, |r| r.len() as u64)
        }
        _ => 0,
    }
}

#[async_trait::async_trait]
impl StateStore for ClusterStore {
    fn backend(&self) -> &'static str {
        "redis-cluster"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<()>(&redis::cmd("PING")).await
    }

    /// Asks the master of every part (each partition's slot and the
    /// leaderboards') at once; a part that does not answer within
    /// [`REACH_TIMEOUT`] counts as down, so one dead master cannot make the
    /// whole answer late.
    async fn reach(&self) -> Result<Reach, StoreError> {
        let parts: Vec<String> = (0..usize::from(self.config.partitions))
            .map(|k| self.part_key(k, "reach"))
            .chain(std::iter::once(self.board_key("reach")))
            .collect();
        let answers = futures::future::join_all(parts.iter().map(|key| async move {
            match tokio::time::timeout(REACH_TIMEOUT, self.query::<usize>(redis::cmd("EXISTS").arg(key)))
                .await
            {
                Ok(answer) => answer.map(|_| ()),
                Err(_) => Err(StoreError::Unavailable("no answer in time".into())),
            }
        }))
        .await;
        let of = answers.len();
        let mut failed = answers.into_iter().filter_map(Result::err).peekable();
        let Some(first) = failed.peek().cloned() else { return Ok(Reach::All) };
        match failed.count() {
            unreachable if unreachable == of => Err(first),
            unreachable => Ok(Reach::Partial { unreachable, of }),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.key(key))).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.query(redis::cmd("SET").arg(self.key(key)).arg(value.as_ref())).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let removed: usize = self.query(redis::cmd("DEL").arg(self.key(key))).await?;
        Ok(removed > 0)
    }

    /// A direct publish on the live channel goes to its first partition;
    /// appends publish on their log's partition.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError> {
        let channel =
            if channel == LIVE_CHANNEL { self.part_key(0, LIVE_CHANNEL) } else { self.key(channel) };
        self.query(redis::cmd("SPUBLISH").arg(channel).arg(payload.as_ref())).await
    }

    /// The live channel is every partition's channel, merged; each keeps
    /// its own order, which is each log's order.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let channels: Vec<String> = if channel == LIVE_CHANNEL {
            (0..self.partitions()).map(|k| self.part_key(k, LIVE_CHANNEL)).collect()
        } else {
            vec![self.key(channel)]
        };
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(SUBSCRIPTION_BUFFER);
        // A node connection dropped (a failover, a restart): end the
        // subscription, so its owner subscribes again, to whichever node
        // serves each partition now, and fills what it missed from history.
        let lost = Arc::new(tokio::sync::Notify::new());
        let lost_in_push = Arc::clone(&lost);
        let push = move |info: PushInfo| -> Result<(), ()> {
            match info.kind {
                PushKind::SMessage => {
                    if let Some(payload) = info.data.get(1)
                        && let Ok(bytes) = redis::from_redis_value_ref::<Vec<u8>>(payload)
                    {
                        // Full: dropped, as Redis drops a client that far behind.
                        let _ = sender.try_send(Bytes::from(bytes));
                    }
                }
                PushKind::Disconnection | PushKind::SUnsubscribe => lost_in_push.notify_one(),
                _ => {}
            }
            Ok(())
        };
        // A connection of its own: its pushes go to this subscription only,
        // and dropping the subscription closes it.
        let client = self
            .config
            .client()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push)
            .build()
            .map_err(map_error)?;
        let subscribe = async {
            let mut conn = client.get_async_connection().await?;
            for channel in &channels {
                conn.ssubscribe(channel).await?;
            }
            Ok::<_, RedisError>(conn)
        };
        let conn = tokio::time::timeout(self.config.timeout * 2, subscribe)
            .await
            .map_err(|_| StoreError::Unavailable("timed out subscribing".into()))?
            .map_err(map_error)?;
        // The stream owns the connection: it stays subscribed while read.
        let messages =
            futures::stream::unfold((receiver, conn, lost), |(mut receiver, conn, lost)| async move {
                tokio::select! {
                    biased;
                    message = receiver.recv() => message.map(|message| (message, (receiver, conn, lost))),
                    () = lost.notified() => None,
                }
            });
        Ok(Subscription::new(messages))
    }

    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError> {
        let outcomes = self.append_batch(std::slice::from_ref(append), limits).await?;
        outcomes.into_iter().next().ok_or_else(|| StoreError::Backend("empty reply to an append".into()))
    }

    /// One pipeline per partition, all at once: each is one slot, and its
    /// `WAIT` runs on the node that took its appends.
    async fn append_batch(
        &self,
        appends: &[LogAppend],
        limits: HistoryLimits,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let groups = self.by_partition(appends.iter().map(|a| a.log.as_str()));
        let wait = self.config.wait_replicas;
        let wait_ms = u64::try_from((self.config.timeout / 2).min(MAX_WAIT).as_millis()).unwrap_or(0).max(1);
        let replies = try_join_all(groups.iter().map(|(k, indexes)| {
            let k = *k;
            let mut pipe = redis::pipe();
            pipe.cmd("SCRIPT").arg("LOAD").arg(&self.scripts.append).ignore();
            let (heads, states, channel) = (
                self.part_key(k, "log-heads"),
                self.part_key(k, "log-states"),
                self.part_key(k, LIVE_CHANNEL),
            );
            let feed = self.stream(k);
            let target = AppendTarget { heads: &heads, states: &states, feed: &feed, channel: &channel };
            let history = |log: &str| self.part_key(k, &format!("log:{log}"));
            let ours = indexes.iter().map(|&i| &appends[i]);
            push_appends(&mut pipe, &self.scripts.append_sha, &target, history, ours, limits);
            if wait > 0 {
                pipe.cmd("ROLE").cmd("WAIT").arg(wait).arg(wait_ms);
            }
            async move {
                let mut values: Vec<redis::Value> = self.query_pipe(&pipe).await?;
                if wait > 0 {
                    let acked = values.pop().and_then(|v| value_int(&v)).unwrap_or(0);
                    let replicas = values.pop().map_or(0, |role| connected_replicas(&role));
                    let needed = u64::from(wait).min(replicas);
                    if acked < needed {
                        return Err(StoreError::Unavailable(format!(
                            "an append reached {acked} of {needed} replicas within {wait_ms} ms"
                        )));
                    }
                }
                let replies = values
                    .iter()
                    .map(|v| {
                        redis::from_redis_value_ref::<Vec<i64>>(v)
                            .map_err(|e| StoreError::Backend(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                append_outcomes(replies, indexes.len())
            }
        }))
        .await?;
        let mut outcomes = vec![AppendOutcome::Gap { head: 0 }; appends.len()];
        for ((_, indexes), replies) in groups.iter().zip(replies) {
            for (&i, outcome) in indexes.iter().zip(replies) {
                outcomes[i] = outcome;
            }
        }
        Ok(outcomes)
    }

    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
        let states = self.log_states_of(&[log.to_owned()]).await?;
        Ok(states.into_iter().next().flatten())
    }

    async fn log_states_of(&self, logs: &[String]) -> Result<Vec<Option<(u64, Bytes)>>, StoreError> {
        let groups = self.by_partition(logs.iter().map(String::as_str));
        let replies = try_join_all(groups.iter().map(|(k, indexes)| {
            // Heads and states agree: both read in one script.
            let mut invocation = self.scripts.read_states.key(self.part_key(*k, "log-heads"));
            invocation.key(self.part_key(*k, "log-states"));
            for &i in indexes {
                invocation.arg(&logs[i]);
            }
            async move { self.invoke::<(Vec<Option<u64>>, Vec<Option<Vec<u8>>>)>(&invocation).await }
        }))
        .await?;
        let mut states = vec![None; logs.len()];
        for ((_, indexes), (heads, values)) in groups.iter().zip(replies) {
            for ((&i, head), value) in indexes.iter().zip(heads).zip(values) {
                states[i] = head.zip(value).map(|(h, v)| (h, Bytes::from(v)));
            }
        }
        Ok(states)
    }

    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
        let parts = try_join_all((0..self.partitions()).map(|k| async move {
            self.query::<Vec<(String, Vec<u8>)>>(redis::cmd("HGETALL").arg(self.part_key(k, "log-states")))
                .await
        }))
        .await?;
        Ok(parts.into_iter().flatten().map(|(log, state)| (log, Bytes::from(state))).collect())
    }

    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let k = self.partition_of(log);
        let mut invocation = self.scripts.read_log.key(self.part_key(k, "log-heads"));
        invocation
            .key(self.part_key(k, &format!("log:{log}")))
            .arg(log)
            .arg(format!("({after}-1"))
            .arg(limit.max(1));
        let (head, entries, oldest): (Option<u64>, StreamRangeReply, StreamRangeReply) =
            self.invoke(&invocation).await?;
        let entries =
            if limit == 0 { Vec::new() } else { entries.ids.iter().filter_map(history_entry).collect() };
        Ok(LogSlice {
            entries,
            head: head.unwrap_or(0),
            oldest: oldest.ids.first().and_then(history_entry).map(|(seq, _)| seq),
        })
    }

    async fn stream_len(&self) -> Result<u64, StoreError> {
        let lens = try_join_all(
            (0..self.partitions())
                .map(|k| async move { self.query::<u64>(redis::cmd("XLEN").arg(self.stream(k))).await }),
        )
        .await?;
        Ok(lens.into_iter().sum())
    }

    async fn read_feed(&self, after: Option<&str>, count: usize) -> Result<FeedPage, StoreError> {
        let n = self.partitions();
        let (mut next, mut ids) = match after {
            Some(position) => self.parse_position(position)?,
            None => (0, vec!["0-0".to_owned(); n]),
        };
        let mut entries = Vec::new();
        while next < n && entries.len() < count {
            let want = count - entries.len();
            let reply: StreamRangeReply = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(self.stream(next))
                        .arg(format!("({}", ids[next]))
                        .arg("+")
                        .arg("COUNT")
                        .arg(want),
                )
                .await?;
            if let Some(last) = reply.ids.last() {
                ids[next].clone_from(&last.id);
            }
            let got = reply.ids.len();
            entries.extend(reply.ids.iter().filter_map(|id| Self::stream_entry(next, id)));
            if got < want {
                next += 1;
            }
        }
        Ok(FeedPage { entries, position: Some(format!("scan:{next}:{}", ids.join(","))) })
    }

    async fn feed_group_create(&self, group: &str) -> Result<(), StoreError> {
        try_join_all((0..self.partitions()).map(|k| async move {
            let created = self
                .query::<()>(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(self.stream(k))
                        .arg(group)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
                .await;
            match created {
                Err(StoreError::Backend(message)) if message.contains("BUSYGROUP") => Ok(()),
                other => other,
            }
        }))
        .await?;
        Ok(())
    }

    async fn feed_read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let count = count.max(1);
        let deadline = tokio::time::Instant::now() + block.min(MAX_BLOCK);
        loop {
            let entries = self.sweep_group(group, consumer, count).await?;
            if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    async fn feed_ack(&self, group: &str, ids: &[String]) -> Result<u64, StoreError> {
        let mut by_partition: HashMap<usize, Vec<String>> = HashMap::new();
        for id in ids {
            let (k, stream_id) = self.split_id(id)?;
            by_partition.entry(k).or_default().push(stream_id);
        }
        let acked = try_join_all(by_partition.iter().map(|(k, ids)| async move {
            self.query::<u64>(redis::cmd("XACK").arg(self.stream(*k)).arg(group).arg(ids)).await
        }))
        .await?;
        Ok(acked.into_iter().sum())
    }

    async fn feed_claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let count = count.max(1);
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claimed = Vec::new();
        for k in 0..self.partitions() {
            let mut cursor = "0-0".to_owned();
            // XAUTOCLAIM scans a bounded part of the pending list per call.
            while claimed.len() < count {
                let reply: StreamAutoClaimReply = self
                    .query(
                        redis::cmd("XAUTOCLAIM")
                            .arg(self.stream(k))
                            .arg(group)
                            .arg(consumer)
                            .arg(min_idle_ms)
                            .arg(&cursor)
                            .arg("COUNT")
                            .arg(count - claimed.len()),
                    )
                    .await?;
                claimed.extend(reply.claimed.iter().filter_map(|id| Self::stream_entry(k, id)));
                cursor = reply.next_stream_id;
                if cursor == "0-0" {
                    break;
                }
            }
        }
        Ok(claimed)
    }

    async fn feed_pending(&self, group: &str) -> Result<u64, StoreError> {
        let counts = try_join_all((0..self.partitions()).map(|k| async move {
            // The summary form: [count, smallest id, greatest id, consumers].
            let (count, _, _, _): (u64, Option<String>, Option<String>, redis::Value) =
                self.query(redis::cmd("XPENDING").arg(self.stream(k)).arg(group)).await?;
            Ok::<_, StoreError>(count)
        }))
        .await?;
        Ok(counts.into_iter().sum())
    }

    async fn stream_lag(&self, group: &str) -> Result<u64, StoreError> {
        let lags = try_join_all((0..self.partitions()).map(|k| async move {
            let groups: Vec<HashMap<String, redis::Value>> =
                self.query(redis::cmd("XINFO").arg("GROUPS").arg(self.stream(k))).await?;
            let info = groups
                .iter()
                .find(|info| matches!(info.get("name"), Some(name) if value_text(name).as_deref() == Some(group)))
                .ok_or_else(|| StoreError::Backend(format!("no consumer group {group}")))?;
            match info.get("lag").and_then(value_int) {
                Some(lag) => Ok(lag),
                None => {
                    let read = info.get("entries-read").and_then(value_int).unwrap_or(0);
                    let len: u64 = self.query(redis::cmd("XLEN").arg(self.stream(k))).await?;
                    Ok(len.saturating_sub(read))
                }
            }
        }))
        .await?;
        Ok(lags.into_iter().sum())
    }

    /// The increments in the boards' slot, then the acknowledgements in
    /// each entry's own slot (see the module docs).
    async fn apply_once(&self, group: &str, applies: &[ScoreApply]) -> Result<Vec<ApplyOutcome>, StoreError> {
        if applies.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(&self.scripts.apply).ignore();
        let through = self.board_key("rebuilt-through");
        for apply in applies {
            let boards: Vec<String> = apply.increments.iter().map(|i| self.board_key(&i.board)).collect();
            let mut journal = String::new();
            for (board, increment) in boards.iter().zip(&apply.increments) {
                journal.push_str(&format!("{board}\t{}\t{}\n", increment.member, increment.delta));
            }
            // KEYS[1] is the stream on one node; here it is unused, and a
            // key of the boards' slot keeps the script in one slot.
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(&self.scripts.apply_sha)
                .arg(4 + boards.len())
                .arg(&through)
                .arg(self.board_key(&format!("applied:{}", apply.scope)))
                .arg(&through)
                .arg(self.board_key("journal"))
                .arg(&boards)
                .arg(group)
                .arg(&apply.entry_id)
                .arg(&apply.token)
                .arg(journal);
            for increment in &apply.increments {
                cmd.arg(&increment.member).arg(increment.delta);
            }
            cmd.arg(JOURNAL_MAX_LEN);
        }
        let codes: Vec<i64> = self.query_pipe(&pipe).await?;
        let ids: Vec<String> = applies.iter().map(|a| a.entry_id.clone()).collect();
        self.feed_ack(group, &ids).await?;
        Ok(codes
            .into_iter()
            .map(|code| match code {
                1 => ApplyOutcome::Applied,
                2 => ApplyOutcome::Rebuilt,
                _ => ApplyOutcome::Duplicate,
            })
            .collect())
    }

    async fn leaderboard(&self, board: &str, limit: usize) -> Result<Vec<Ranked>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let rows: Vec<(String, f64)> = self
            .query(redis::cmd("ZREVRANGE").arg(self.board_key(board)).arg(0).arg(stop).arg("WITHSCORES"))
            .await?;
        Ok(rows.into_iter().map(|(member, score)| Ranked { member, score }).collect())
    }

    async fn leaderboard_score(&self, board: &str, member: &str) -> Result<Option<f64>, StoreError> {
        self.query(redis::cmd("ZSCORE").arg(self.board_key(board)).arg(member)).await
    }

    async fn replace_leaderboards(&self, replace: &LeaderboardReplace) -> Result<bool, StoreError> {
        let nonce: u64 = self.query(redis::cmd("INCR").arg(self.board_key("rebuild-nonce"))).await?;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut fill = redis::pipe();
        for (board, rows) in &replace.boards {
            if !seen.insert(board.as_str()) {
                return Err(StoreError::Backend(format!("board {board:?} given twice")));
            }
            let temporary = self.board_key(&format!("rebuild:{nonce}:{board}"));
            fill.del(&temporary).ignore();
            for chunk in rows.chunks(ZADD_CHUNK) {
                let members: Vec<(f64, &str)> = chunk.iter().map(|(m, s)| (*s, m.as_str())).collect();
                fill.zadd_multiple(&temporary, &members).ignore();
            }
            fill.expire(&temporary, 3600).ignore();
            keys.push(self.board_key(board));
            keys.push(temporary);
        }
        if !keys.is_empty() {
            self.query_pipe::<()>(&fill).await?;
        }
        let mut invocation = self.scripts.swap.prepare_invoke();
        let fence = replace.fence.as_ref().map_or("", |f| f.lease.as_str());
        invocation
            .key(self.board_key("rebuilt-through"))
            .key(self.board_key("journal"))
            .key(self.board_key(&format!("lease-fence:{fence}")));
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg(replace.through.as_deref().unwrap_or(""));
        invocation.arg(replace.fence.as_ref().map_or(String::new(), |f| f.token.to_string()));
        let swapped: i64 = self.invoke(&invocation).await?;
        Ok(swapped >= 0)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let (held, token) = self.lease_keys(name);
        let script = redis::Script::new(LEASE_SCRIPT);
        let mut invocation = script.key(held);
        invocation.key(token).arg(holder).arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let token: i64 = self.invoke(&invocation).await?;
        Ok(u64::try_from(token).ok())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (held, _) = self.lease_keys(name);
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = script.key(held);
        invocation.arg(holder);
        self.invoke::<i64>(&invocation).await?;
        Ok(())
    }
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
    fn the_cluster_scripts_are_the_single_node_ones_with_their_slot_changes() {
        let store = ClusterStore::connect_lazy(
            &ClusterConfig::from_settings("redis://127.0.0.1:7000", "x:", 4).expect("valid"),
        )
        .expect("builds");
        assert!(store.scripts.append.contains("'SPUBLISH'") && !store.scripts.append.contains("'PUBLISH'"));
        assert!(APPLY_BODY.contains(APPLY_ACK), "the single-node apply acknowledges inside the script");
        assert!(!store.scripts.apply.contains("XACK"));
    }

    #[test]
    fn keys_of_one_step_share_a_hash_tag() {
        let store = ClusterStore::connect_lazy(
            &ClusterConfig::from_settings("redis://127.0.0.1:7000", "demo:", 8).expect("valid"),
        )
        .expect("builds");
        let k = store.partition_of("arsenal-chelsea");
        assert!(k < 8);
        for key in [store.part_key(k, "log-heads"), store.stream(k), store.part_key(k, "live")] {
            assert!(key.starts_with(&format!("demo:{{p{k}}}")), "{key}");
        }
        assert_eq!(store.board_key("score:total"), "demo:{b}score:total");
        let (held, token) = store.lease_keys("recompute");
        assert_eq!(
            (held.as_str(), token.as_str()),
            ("demo:{lease:recompute}held", "demo:{lease:recompute}token")
        );
    }

    #[test]
    fn settings_are_checked_without_echoing_urls() {
        let config = ClusterConfig::from_settings("redis://a:7000, redis://user:hunter2@b:7001", "x:", 16)
            .expect("valid");
        assert_eq!(config.nodes.len(), 2);
        assert!(!format!("{config:?}").contains("hunter2"));
        let err =
            ClusterConfig::from_settings("redis://a:7000,http://user:hunter2@b", "x:", 16).expect_err("bad");
        assert!(err.contains("node 2") && !err.contains("hunter2"), "{err}");
        assert!(ClusterConfig::from_settings("", "x:", 16).is_err());
        assert!(ClusterConfig::from_settings("redis://a:7000", "{x}:", 16).is_err());
        assert!(ClusterConfig::from_settings("redis://a:7000", "x:", 0).is_err());
    }

    #[test]
    fn replicas_are_counted_from_a_masters_role_only() {
        use redis::Value;
        let text = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let replica = Value::Array(vec![text("127.0.0.1"), text("7001"), text("42")]);
        let master =
            Value::Array(vec![text("master"), Value::Int(42), Value::Array(vec![replica.clone(), replica])]);
        assert_eq!(connected_replicas(&master), 2);
        let alone = Value::Array(vec![text("master"), Value::Int(42), Value::Array(vec![])]);
        assert_eq!(connected_replicas(&alone), 0);
        let a_replica = Value::Array(vec![text("slave"), text("127.0.0.1"), Value::Int(7000)]);
        assert_eq!(connected_replicas(&a_replica), 0);
    }

    #[test]
    fn entry_ids_and_positions_round_trip() {
        let store = ClusterStore::connect_lazy(
            &ClusterConfig::from_settings("redis://a:7000", "x:", 3).expect("valid"),
        )
        .expect("builds");
        assert_eq!(store.split_id("2/17-0").expect("valid"), (2, "17-0".to_owned()));
        assert!(store.split_id("3/17-0").is_err(), "no partition 3");
        assert!(store.split_id("17-0").is_err());
        let (next, ids) = store.parse_position("scan:1:5-0,0-0,0-0").expect("valid");
        assert_eq!((next, ids.len()), (1, 3));
        assert!(store.parse_position("scan:1:5-0,0-0").is_err(), "one id per partition");
        assert!(store.parse_position("5-0").is_err());
    }
}

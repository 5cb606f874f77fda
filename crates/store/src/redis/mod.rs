//! The Redis backend, for one server and for a Redis Cluster, written once.
//!
//! What differs between the two is small and lives in two places:
//! [`layout`] names the keys (hash tags and partitions on a cluster, the
//! names of earlier releases on one server) and [`connection`] reaches
//! Redis (a connection manager, or the cluster client). Everything else,
//! every command and script, is the same code: a single server is a
//! cluster of one partition.
//!
//! # Durability
//! Redis replicates asynchronously: a master acknowledges a write before
//! its replicas have it, and if it dies in that window the replica promoted
//! in its place never had the write. With `wait_replicas` set, each batch of
//! appends is followed by `WAIT` on the same node, and the appends are
//! acknowledged only once that many replicas hold them, or every replica
//! the master has when it has fewer: a shard that lost its replica keeps
//! taking writes with the durability it has. Such writes are counted in
//! [`APPENDS_WITHOUT_REPLICA`], and readiness says which partitions have no
//! replica. `WAIT` is not even sent to a master whose last answer said it
//! has no replica, so a write never waits out a timeout it knows is
//! hopeless; the master's `ROLE`, asked with every batch and by every
//! readiness probe, says when a replica is back.
//!
//! A `WAIT` that times out is a retryable error, though the appends are
//! stored; the caller's retry finds them done (they are idempotent) and
//! waits again. `WAIT` narrows the window, it is not consensus: a master
//! that loses its replicas between the two steps, or a partition that
//! promotes a lagging replica, can still lose writes, as Redis documents.

mod config;
mod connection;
mod error;
mod layout;
mod scripts;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _, future::try_join_all};
use redis::{
    Cmd, FromRedisValue, Pipeline, Script, Value,
    streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply},
};

pub use config::{ClusterConfig, RedisConfig};
use connection::{Conn, Connection};
use error::map_error;
use layout::Layout;

use crate::{
    AppendOutcome, ApplyOutcome, HistoryLimits, LIVE_CHANNEL, LeaderboardReplace, LogAppend, LogSlice,
    Ranked, Reach, ScoreApply, StateStore, StoreError, StreamEntry, StreamPage, Subscription, WriteFormat,
    stream::{JOURNAL_MAX_LEN, MAX_BLOCK},
};

/// Appends stored by a master that had no replica to copy them to while
/// `wait_replicas` asked for one.
pub const APPENDS_WITHOUT_REPLICA: &str = "courtside_store_appends_without_replica_total";

/// Appends per call of the append script. A call runs alone on its Redis,
/// delaying every other client by some 11 µs per append (about 0.7 ms for a
/// full call); a smaller call pays the call's own cost more often.
const APPENDS_PER_CALL: usize = 64;

/// Appends per pipeline, about: a log's appends are never split between
/// pipelines.
const APPENDS_PER_PIPELINE: usize = 512;

/// Pipelines of appends on their way to one partition at once: enough to
/// keep Redis busy while the answers come back, few enough that their bytes
/// stay small.
const PIPELINES_IN_FLIGHT: usize = 4;

/// Rows written per ZADD while filling a temporary board.
const ZADD_CHUNK: usize = 1_000;

/// The longest an append waits for its replicas.
const MAX_WAIT: Duration = Duration::from_millis(250);

/// How long [`RedisStore::reach`] waits for each part: under readiness's
/// own probe timeout, so a dead master reads as one part down, not as no
/// answer at all.
const REACH_TIMEOUT: Duration = Duration::from_millis(500);

/// On a cluster, where reads cannot block: the first pause between
/// consumer-group sweeps that found nothing.
const POLL: Duration = Duration::from_millis(50);

/// On a cluster, the longest pause between idle sweeps while the doorbell
/// (a subscription to the live channels, which every append publishes on)
/// is up: it rings when something arrives, so the sweeps are a safety net
/// for a lost message, and an idle consumer costs a command per partition
/// every few seconds instead of twenty a second.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Full batches in a row after which a cluster consumer lets the doorbell
/// go: it reads without waiting while it is that busy, and the subscription
/// would only bring it every event's payload a second time. It subscribes
/// again when a sweep finds nothing.
const BUSY_SWEEPS: u32 = 8;

/// A replica count not known yet: wait as configured.
const UNKNOWN: u64 = u64::MAX;

/// The Redis [`StateStore`], on one server or a cluster. Cheap to clone;
/// clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    layout: Arc<Layout>,
    connection: Connection,
    scripts: Arc<Scripts>,
    wait_replicas: u8,
    write_format: WriteFormat,
    /// Replicas of each partition's master at its last `ROLE` answer, or
    /// [`UNKNOWN`].
    replicas: Arc<[AtomicU64]>,
    /// Where the next consumer-group sweep starts, so no partition is
    /// always served last.
    sweep: Arc<AtomicUsize>,
    /// Wakes idle consumer-group reads on a cluster; see [`IDLE_POLL`].
    doorbell: Arc<tokio::sync::Mutex<Option<Subscription>>>,
    /// Sweeps in a row that filled their batch; see [`BUSY_SWEEPS`].
    full_sweeps: Arc<AtomicU32>,
}

struct Scripts {
    append: Script,
    append_text: String,
    apply: Script,
    apply_text: String,
    swap: Script,
    lease: Script,
    release: Script,
    read_states: Script,
    read_log: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("layout", &self.layout)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on one Redis server. Checks the URL and prepares the
    /// connection without connecting, so a service can start while Redis
    /// is still coming up; readiness reports whether it answers.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, StoreError> {
        let connection = Connection::single(config)?;
        Ok(Self::new(
            Layout::single(&config.key_prefix),
            connection,
            config.wait_replicas,
            config.write_format,
        ))
    }

    /// A store on a Redis Cluster. Checks the settings and prepares the
    /// client without connecting.
    pub fn connect_cluster_lazy(config: &ClusterConfig) -> Result<Self, StoreError> {
        let connection = Connection::cluster(config)?;
        Ok(Self::new(
            Layout::cluster(&config.key_prefix, config.partitions),
            connection,
            config.wait_replicas,
            config.write_format,
        ))
    }

    fn new(layout: Layout, connection: Connection, wait_replicas: u8, write_format: WriteFormat) -> Self {
        let append_text = scripts::append_script(layout.publish_command());
        let apply_text = scripts::apply_script();
        let scripts = Scripts {
            append: Script::new(&append_text),
            append_text,
            apply: Script::new(&apply_text),
            apply_text,
            swap: Script::new(&scripts::swap_script()),
            lease: Script::new(scripts::LEASE_SCRIPT),
            release: Script::new(scripts::RELEASE_SCRIPT),
            read_states: Script::new(scripts::READ_STATES_SCRIPT),
            read_log: Script::new(scripts::READ_LOG_SCRIPT),
        };
        Self {
            replicas: (0..layout.partitions()).map(|_| AtomicU64::new(UNKNOWN)).collect(),
            layout: Arc::new(layout),
            connection,
            scripts: Arc::new(scripts),
            wait_replicas,
            write_format,
            sweep: Arc::new(AtomicUsize::new(0)),
            doorbell: Arc::new(tokio::sync::Mutex::new(None)),
            full_sweeps: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The partition of `log` (always 0 on one server).
    pub fn partition_of(&self, log: &str) -> usize {
        self.layout.partition_of(log)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection.get().await?;
        cmd.query_async(&mut conn).await.map_err(map_error)
    }

    /// Sends a pipeline whose commands all live in one slot.
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.connection.get().await?;
        pipe.query_async(&mut conn).await.map_err(map_error)
    }

    /// Runs a script, loading it first where the node lacks it (a Redis that
    /// restarted, a replica promoted since).
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection.get().await?;
        invocation.invoke_async(&mut conn).await.map_err(map_error)
    }

    /// The appends an event stream entry holds: one up to format 2, a
    /// run's from format 3, all under the entry's id (see
    /// [`StreamEntry::id`]). An entry that does not decode yields nothing.
    fn stream_entries(&self, k: usize, id: &StreamId) -> Vec<StreamEntry> {
        let (Some(log), Some(seq)) = (id.get::<String>("log"), id.get::<u64>("seq")) else {
            return Vec::new();
        };
        let entry_id = self.layout.entry_id(k, &id.id);
        if let Some(entry) = id.get::<Vec<u8>>("e") {
            return vec![StreamEntry { id: entry_id, log, seq, entry: Bytes::from(entry) }];
        }
        let (Some(n), Some(run)) = (id.get::<usize>("n"), id.get::<Vec<u8>>("r")) else { return Vec::new() };
        match unframe(Bytes::from(run)) {
            Some(entries) if entries.len() == n => (seq..)
                .zip(entries)
                .map(|(seq, entry)| StreamEntry { id: entry_id.clone(), log: log.clone(), seq, entry })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Indexes of `logs` grouped by partition, each group in input order.
    fn by_partition<'a>(&self, logs: impl Iterator<Item = &'a str>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, log) in logs.enumerate() {
            groups.entry(self.layout.partition_of(log)).or_default().push(i);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|(k, _)| *k);
        groups
    }

    /// Runs `each` for every partition at once; the results in partition
    /// order.
    async fn each_partition<'a, T, F>(&'a self, each: impl Fn(usize) -> F) -> Result<Vec<T>, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + 'a,
    {
        try_join_all((0..self.layout.partitions()).map(each)).await
    }

    /// Adds the calls of the append script for `appends` (all of partition
    /// `k`, grouped by log) to `pipe`: the appends cut into runs (see
    /// [`runs`]), about [`APPENDS_PER_CALL`] appends per call, a run never
    /// split between calls. Returns the runs in call order.
    fn push_appends<'a>(
        &self,
        pipe: &mut Pipeline,
        k: usize,
        appends: &[&'a LogAppend],
        limits: HistoryLimits,
        attempt: &str,
    ) -> Vec<Vec<&'a LogAppend>> {
        let max_idle_ms = u64::try_from(limits.max_idle.as_millis()).unwrap_or(u64::MAX).max(1);
        let channel = self.layout.live_channel(k);
        let all = runs(appends, self.write_format);
        let mut calls: Vec<&[Vec<&LogAppend>]> = Vec::new();
        let (mut start, mut held) = (0, 0);
        for (n, run) in all.iter().enumerate() {
            held += run.len();
            if held >= APPENDS_PER_CALL || n + 1 == all.len() {
                calls.push(&all[start..=n]);
                (start, held) = (n + 1, 0);
            }
        }
        for call in calls {
            // Each log's history key once, runs pointing at it by index.
            let mut slots: HashMap<&str, usize> = HashMap::with_capacity(call.len());
            let mut keys = vec![
                self.layout.heads(k),
                self.layout.states(k),
                self.layout.stream(k),
                self.layout.attempts(k),
            ];
            let cmd = pipe.cmd("EVALSHA").arg(self.scripts.append.get_hash());
            let mut args: Vec<(usize, &Vec<&LogAppend>)> = Vec::with_capacity(call.len());
            for run in call {
                let log = run[0].log.as_str();
                let slot = *slots.entry(log).or_insert_with(|| {
                    keys.push(self.layout.history(log));
                    keys.len()
                });
                args.push((slot, run));
            }
            cmd.arg(keys.len()).arg(&keys);
            cmd.arg(limits.max_entries)
                .arg(max_idle_ms)
                .arg(&channel)
                .arg(attempt)
                .arg(self.write_format.number());
            for (slot, run) in args {
                let slot = i64::try_from(slot).unwrap_or(i64::MAX);
                let (first, last) = (run[0], run[run.len() - 1]);
                let state = state_within(last);
                cmd.arg(if state.is_some() { -slot } else { slot })
                    .arg(&first.log)
                    .arg(first.seq)
                    .arg(run.len())
                    .arg(joined_entries(run).as_slice());
                match state {
                    // The state travels once, inside the entry.
                    Some(len) => cmd.arg(len),
                    None => cmd.arg(last.state.as_ref()),
                };
                match self.write_format {
                    WriteFormat::V1 | WriteFormat::V2 => cmd.arg(first.stream_entry.as_ref()),
                    WriteFormat::V3 => cmd.arg(framed_stream_entries(run).as_slice()),
                };
            }
        }
        all
    }

    /// The appends of partition `k` (grouped by log), in pipelines of about
    /// [`APPENDS_PER_PIPELINE`] appends, a few on their way at once; then,
    /// when replicas are asked for, `ROLE` and `WAIT`.
    ///
    /// A log's appends are all in one pipeline, so the pipelines do not
    /// depend on each other, and arrive in any order. Only a few are built
    /// at a time: a bulk request's chunk encoded whole would hold its bytes
    /// three times over (the commands, the packed pipeline, the connection's
    /// buffer), which was most of a 1 GiB ingest's memory.
    async fn append_partition(
        &self,
        k: usize,
        appends: &[&LogAppend],
        limits: HistoryLimits,
        attempt: &str,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut pieces: Vec<&[&LogAppend]> = Vec::new();
        let mut start = 0;
        for end in 1..=appends.len() {
            let log_ends = end == appends.len() || appends[end].log != appends[end - 1].log;
            if log_ends && (end - start >= APPENDS_PER_PIPELINE || end == appends.len()) {
                pieces.push(&appends[start..end]);
                start = end;
            }
        }
        // Futures do nothing until polled: a pipeline is built when
        // `buffered` gets to it.
        let pipelines: Vec<_> =
            pieces.into_iter().map(|piece| self.append_pipeline(k, piece, limits, attempt)).collect();
        let outcomes: Vec<Vec<AppendOutcome>> =
            futures::stream::iter(pipelines).buffered(PIPELINES_IN_FLIGHT).try_collect().await?;
        self.wait_for_replicas(k, appends.len()).await?;
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// One pipeline of appends: the script load, then the calls.
    async fn append_pipeline(
        &self,
        k: usize,
        appends: &[&LogAppend],
        limits: HistoryLimits,
        attempt: &str,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(&self.scripts.append_text).ignore();
        let runs = self.push_appends(&mut pipe, k, appends, limits, attempt);
        let values: Vec<Value> = self.query_pipe(&pipe).await?;
        drop(pipe);
        let mut replies = Vec::with_capacity(runs.len());
        for value in &values {
            let reply: Vec<u64> =
                redis::from_redis_value_ref(value).map_err(|e| StoreError::Backend(e.to_string()))?;
            for pair in reply.chunks(2) {
                let &[head, retry] = pair else {
                    return Err(StoreError::Backend("odd-length reply to an append".into()));
                };
                replies.push((head, retry == 1));
            }
        }
        if replies.len() != runs.len() {
            return Err(StoreError::Backend(format!(
                "{} answers in the reply to {} runs of appends",
                replies.len(),
                runs.len()
            )));
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for (run, (head, retry)) in runs.iter().zip(replies) {
            outcomes.extend(run_outcomes(run, head, retry));
        }
        Ok(outcomes)
    }

    /// With `wait_replicas` set, waits until that many of partition `k`'s
    /// replicas (or all it has, when fewer) hold the writes sent before on
    /// this connection: the `count` appends just stored among them. The
    /// heads key is only there to route the pipeline to the partition's
    /// master.
    async fn wait_for_replicas(&self, k: usize, count: usize) -> Result<(), StoreError> {
        let wanted = u64::from(self.wait_replicas);
        if wanted == 0 {
            return Ok(());
        }
        let wait_ms =
            u64::try_from((self.connection.timeout() / 2).min(MAX_WAIT).as_millis()).unwrap_or(0).max(1);
        // Only where the master had a replica at its last answer.
        let waits = self.replicas[k].load(Ordering::Relaxed) > 0;
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.layout.heads(k)).ignore();
        pipe.cmd("ROLE");
        if waits {
            pipe.cmd("WAIT").arg(wanted).arg(wait_ms);
        }
        let mut values: Vec<Value> = self.query_pipe(&pipe).await?;
        let acked = if waits { values.pop().and_then(|v| value_int(&v)).unwrap_or(0) } else { 0 };
        let replicas = values.pop().map_or(0, |role| connected_replicas(&role));
        self.replicas[k].store(replicas, Ordering::Relaxed);
        if replicas == 0 {
            metrics::counter!(APPENDS_WITHOUT_REPLICA).increment(count as u64);
        }
        let needed = wanted.min(replicas);
        if acked < needed {
            return Err(StoreError::Unavailable(format!(
                "the appends are stored but reached {acked} of {needed} replicas within {wait_ms} ms"
            )));
        }
        Ok(())
    }

    /// One sweep over the partitions for `group`, without blocking.
    async fn sweep_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let n = self.layout.partitions();
        let start = self.sweep.fetch_add(1, Ordering::Relaxed) % n;
        let mut entries = Vec::new();
        for k in (start..n).chain(0..start) {
            if entries.len() >= count {
                break;
            }
            entries.extend(self.read_group_at(k, group, consumer, count - entries.len(), ">").await?);
        }
        Ok(entries)
    }

    /// `XREADGROUP` on partition `k` from `from` (`>`: new entries; `0`:
    /// the consumer's own pending ones), without blocking.
    async fn read_group_at(
        &self,
        k: usize,
        group: &str,
        consumer: &str,
        count: usize,
        from: &str,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count).arg("STREAMS");
        cmd.arg(self.layout.stream(k)).arg(from);
        let reply: Option<StreamReadReply> = self.query(&cmd).await?;
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .iter()
                    .flat_map(|key| key.ids.iter().flat_map(|id| self.stream_entries(k, id)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// One server: a read that blocks on a connection of its own.
    async fn read_group_blocking(
        &self,
        mut conn: Conn,
        group: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count).arg("BLOCK").arg(block_ms);
        cmd.arg("STREAMS").arg(self.layout.stream(0)).arg(">");
        let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await.map_err(map_error)?;
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .iter()
                    .flat_map(|key| key.ids.iter().flat_map(|id| self.stream_entries(0, id)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether the doorbell is up, for the tests.
    #[cfg(feature = "testing")]
    pub async fn doorbell_is_up(&self) -> bool {
        self.doorbell.lock().await.is_some()
    }

    /// Forgets rings that came while nobody waited: the sweep that follows
    /// reads what they announced.
    async fn drain_doorbell(&self) {
        let Ok(mut doorbell) = self.doorbell.try_lock() else { return };
        if let Some(subscription) = doorbell.as_mut() {
            loop {
                match subscription.next().now_or_never() {
                    Some(Some(_)) => {}
                    Some(None) => {
                        *doorbell = None;
                        return;
                    }
                    None => return,
                }
            }
        }
    }

    /// Waits until something is appended (the doorbell rings), `pause`
    /// passes, or `deadline`, whichever comes first. Without a doorbell
    /// (it cannot subscribe, or another read holds it) waits `fallback`.
    /// Returns whether to sweep again: not when the deadline came and
    /// nothing rang, so an idle read sweeps once, not twice.
    async fn wait_for_appends(
        &self,
        pause: Duration,
        fallback: Duration,
        deadline: tokio::time::Instant,
    ) -> bool {
        let until = |wait: Duration| deadline.min(tokio::time::Instant::now() + wait);
        let sleep = |wait: Duration| async move {
            let until = until(wait);
            tokio::time::sleep_until(until).await;
            until < deadline
        };
        let Ok(mut doorbell) = self.doorbell.try_lock() else { return sleep(fallback).await };
        if doorbell.is_none() {
            let channels = (0..self.layout.partitions()).map(|k| self.layout.live_channel(k)).collect();
            *doorbell = self.connection.subscribe(channels).await.ok();
        }
        let Some(subscription) = doorbell.as_mut() else {
            drop(doorbell);
            return sleep(fallback).await;
        };
        tokio::select! {
            rung = subscription.next() => {
                if rung.is_none() {
                    *doorbell = None;
                }
                true
            }
            poll = sleep(pause) => poll,
        }
    }

    /// Asks one part (a partition, or on a cluster the leaderboards' slot)
    /// whether it answers and, when replicas are asked for, how many its
    /// master has. `ROLE` only then: some managed Redis services refuse it,
    /// and a store that never waits for replicas must not look down there.
    async fn reach_part(&self, key: String) -> Result<Option<u64>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(key);
        if self.wait_replicas > 0 {
            pipe.cmd("ROLE");
        }
        let answer = tokio::time::timeout(REACH_TIMEOUT, self.query_pipe::<Vec<Value>>(&pipe)).await;
        match answer {
            Ok(Ok(values)) => Ok(values.get(1).map(connected_replicas)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(StoreError::Unavailable("no answer in time".into())),
        }
    }
}

/// Replicas connected to a master, from its `ROLE` reply
/// (`["master", offset, [[ip, port, offset], ..]]`); 0 for anything else.
fn connected_replicas(role: &Value) -> u64 {
    let Ok(parts) = redis::from_redis_value_ref::<Vec<Value>>(role) else { return 0 };
    match parts.as_slice() {
        [kind, _, replicas, ..] if value_text(kind).as_deref() == Some("master") => {
            redis::from_redis_value_ref::<Vec<Value>>(replicas).map_or(0, |r| r.len() as u64)
        }
        _ => 0,
    }
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        if self.layout.is_cluster() { "redis-cluster" } else { "redis" }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<()>(&redis::cmd("PING")).await
    }

    /// Asks the master of every part (each partition's slot and, on a
    /// cluster, the leaderboards') at once; a part that does not answer
    /// within [`REACH_TIMEOUT`] counts as down, so one dead master cannot
    /// make the whole answer late. With replicas asked for, also learns
    /// which masters have none.
    async fn reach(&self) -> Result<Reach, StoreError> {
        let partitions = self.layout.partitions();
        let mut parts: Vec<String> = (0..partitions).map(|k| self.layout.part_key(k, "reach")).collect();
        if self.layout.is_cluster() {
            parts.push(self.layout.board_key("reach"));
        }
        let answers = futures::future::join_all(parts.into_iter().map(|key| self.reach_part(key))).await;
        let of = answers.len();
        let mut unreplicated = 0;
        for (k, answer) in answers.iter().enumerate().take(partitions) {
            if let Ok(Some(replicas)) = answer {
                self.replicas[k].store(*replicas, Ordering::Relaxed);
                unreplicated += usize::from(*replicas == 0);
            }
        }
        let mut failed = answers.into_iter().filter_map(Result::err).peekable();
        if let Some(first) = failed.peek().cloned() {
            return match failed.count() {
                unreachable if unreachable == of => Err(first),
                unreachable => Ok(Reach::Partial { unreachable, of }),
            };
        }
        if self.wait_replicas > 0 && unreplicated > 0 {
            return Ok(Reach::Unreplicated { partitions: unreplicated, of: partitions });
        }
        Ok(Reach::All)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.layout.key(key))).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.query(redis::cmd("SET").arg(self.layout.key(key)).arg(value.as_ref())).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let removed: usize = self.query(redis::cmd("DEL").arg(self.layout.key(key))).await?;
        Ok(removed > 0)
    }

    /// A direct publish on the live channel goes to its first partition;
    /// appends publish on their log's partition.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError> {
        let channel =
            if channel == LIVE_CHANNEL { self.layout.live_channel(0) } else { self.layout.key(channel) };
        self.query(redis::cmd(self.layout.publish_command()).arg(channel).arg(payload.as_ref())).await
    }

    /// The live channel is every partition's channel, merged; each keeps
    /// its own order, which is each log's order.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let channels: Vec<String> = if channel == LIVE_CHANNEL {
            (0..self.layout.partitions()).map(|k| self.layout.live_channel(k)).collect()
        } else {
            vec![self.layout.key(channel)]
        };
        self.connection.subscribe(channels).await
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
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        crate::log::check_one_line(appends)?;
        // The same for every try of this call: the client library's own
        // retries send the same bytes.
        let attempt = format!("{:016x}", rand::random::<u64>());
        let mut groups = self.by_partition(appends.iter().map(|a| a.log.as_str()));
        for (_, indexes) in &mut groups {
            by_log(indexes, appends);
        }
        let replies = try_join_all(groups.iter().map(|(k, indexes)| {
            let ours: Vec<&LogAppend> = indexes.iter().map(|&i| &appends[i]).collect();
            let attempt = attempt.as_str();
            async move { self.append_partition(*k, &ours, limits, attempt).await }
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
        if logs.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.by_partition(logs.iter().map(String::as_str));
        let replies = try_join_all(groups.iter().map(|(k, indexes)| {
            // Heads and states agree: both read in one script.
            let mut invocation = self.scripts.read_states.key(self.layout.heads(*k));
            invocation.key(self.layout.states(*k));
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
        let parts = self
            .each_partition(|k| async move {
                self.query::<Vec<(String, Vec<u8>)>>(redis::cmd("HGETALL").arg(self.layout.states(k))).await
            })
            .await?;
        Ok(parts.into_iter().flatten().map(|(log, state)| (log, Bytes::from(state))).collect())
    }

    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let k = self.layout.partition_of(log);
        let mut invocation = self.scripts.read_log.key(self.layout.heads(k));
        // Entries whose last sequence number is past `after`; a run's entry
        // may start at or before it, and holds at least one append, so
        // `limit` entries hold at least `limit` appends.
        let start = format!("{}-0", after.saturating_add(1));
        invocation.key(self.layout.history(log)).arg(log).arg(start).arg(limit.max(1));
        let (head, entries, oldest): (Option<u64>, StreamRangeReply, StreamRangeReply) =
            self.invoke(&invocation).await?;
        let entries = entries
            .ids
            .iter()
            .flat_map(history_entries)
            .filter(|(seq, _)| *seq > after)
            .take(limit)
            .collect();
        Ok(LogSlice { entries, head: head.unwrap_or(0), oldest: oldest.ids.first().and_then(history_first) })
    }

    async fn stream_len(&self) -> Result<u64, StoreError> {
        let lens = self
            .each_partition(|k| async move {
                self.query::<u64>(redis::cmd("XLEN").arg(self.layout.stream(k))).await
            })
            .await?;
        Ok(lens.into_iter().sum())
    }

    async fn read_stream(&self, after: Option<&str>, count: usize) -> Result<StreamPage, StoreError> {
        let n = self.layout.partitions();
        let (mut next, mut ids) = match after {
            Some(position) => self.layout.parse_position(position)?,
            None => (0, vec!["0-0".to_owned(); n]),
        };
        let mut entries = Vec::new();
        while next < n && entries.len() < count {
            let want = count - entries.len();
            let reply: StreamRangeReply = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(self.layout.stream(next))
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
            entries.extend(reply.ids.iter().flat_map(|id| self.stream_entries(next, id)));
            if got < want {
                next += 1;
            }
        }
        let position = (after.is_some() || !entries.is_empty()).then(|| self.layout.position(next, &ids));
        Ok(StreamPage { entries, position })
    }

    async fn stream_group_create(&self, group: &str) -> Result<(), StoreError> {
        self.each_partition(|k| async move {
            let created = self
                .query::<()>(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(self.layout.stream(k))
                        .arg(group)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
                .await;
            match created {
                Err(StoreError::Backend(message)) if message.contains("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await?;
        Ok(())
    }

    /// On one server a blocking read; on a cluster sweeps over the
    /// partitions, waiting between empty ones for the doorbell.
    async fn stream_read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let count = count.max(1);
        let block = block.min(MAX_BLOCK);
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(0);
        // BLOCK 0 would mean "forever"; no block means "do not wait".
        if let Some(conn) = self.connection.blocking().filter(|_| block_ms > 0) {
            return self.read_group_blocking(conn, group, consumer, count, block_ms).await;
        }
        let deadline = tokio::time::Instant::now() + block;
        let mut pause = POLL;
        loop {
            self.drain_doorbell().await;
            let entries = self.sweep_group(group, consumer, count).await?;
            if entries.len() < count {
                self.full_sweeps.store(0, Ordering::Relaxed);
            } else if self.full_sweeps.fetch_add(1, Ordering::Relaxed) + 1 >= BUSY_SWEEPS
                && let Ok(mut doorbell) = self.doorbell.try_lock()
            {
                *doorbell = None;
            }
            if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            if !self.wait_for_appends(IDLE_POLL, pause, deadline).await {
                return Ok(Vec::new());
            }
            pause = (pause * 2).min(IDLE_POLL);
        }
    }

    async fn stream_read_pending(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let count = count.max(1);
        let mut entries = Vec::new();
        for k in 0..self.layout.partitions() {
            if entries.len() >= count {
                break;
            }
            entries.extend(self.read_group_at(k, group, consumer, count - entries.len(), "0").await?);
        }
        Ok(entries)
    }

    async fn stream_ack(&self, group: &str, ids: &[String]) -> Result<u64, StoreError> {
        let mut by_partition: HashMap<usize, Vec<&str>> = HashMap::new();
        for id in ids {
            let (k, stream_id) = self.layout.split_id(id)?;
            by_partition.entry(k).or_default().push(stream_id);
        }
        let acked = try_join_all(by_partition.iter().map(|(k, ids)| async move {
            self.query::<u64>(redis::cmd("XACK").arg(self.layout.stream(*k)).arg(group).arg(ids)).await
        }))
        .await?;
        Ok(acked.into_iter().sum())
    }

    async fn stream_claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let count = count.max(1);
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claimed = Vec::new();
        for k in 0..self.layout.partitions() {
            let mut cursor = "0-0".to_owned();
            // XAUTOCLAIM scans a bounded part of the pending list per call
            // and returns where to go on.
            while claimed.len() < count {
                let reply: StreamAutoClaimReply = self
                    .query(
                        redis::cmd("XAUTOCLAIM")
                            .arg(self.layout.stream(k))
                            .arg(group)
                            .arg(consumer)
                            .arg(min_idle_ms)
                            .arg(&cursor)
                            .arg("COUNT")
                            .arg(count - claimed.len()),
                    )
                    .await?;
                claimed.extend(reply.claimed.iter().flat_map(|id| self.stream_entries(k, id)));
                cursor = reply.next_stream_id;
                if cursor == "0-0" {
                    break;
                }
            }
        }
        Ok(claimed)
    }

    /// One `XINFO GROUPS` per partition gives both figures.
    async fn stream_backlog(&self, group: &str) -> Result<crate::Backlog, StoreError> {
        let parts = self
            .each_partition(|k| async move {
                let groups: Vec<HashMap<String, Value>> =
                    self.query(redis::cmd("XINFO").arg("GROUPS").arg(self.layout.stream(k))).await?;
                let info = groups
                    .iter()
                    .find(|info| matches!(info.get("name"), Some(name) if value_text(name).as_deref() == Some(group)))
                    .ok_or_else(|| StoreError::Backend(format!("no consumer group {group}")))?;
                let pending = info.get("pending").and_then(value_int).unwrap_or(0);
                let lag = match info.get("lag").and_then(value_int) {
                    Some(lag) => lag,
                    // Redis cannot tell after some deletions; the stream's
                    // length less what the group has read is the same figure.
                    None => {
                        let read = info.get("entries-read").and_then(value_int).unwrap_or(0);
                        let len: u64 = self.query(redis::cmd("XLEN").arg(self.layout.stream(k))).await?;
                        len.saturating_sub(read)
                    }
                };
                Ok(crate::Backlog { lag, pending })
            })
            .await?;
        Ok(parts.into_iter().fold(crate::Backlog::default(), |sum, part| crate::Backlog {
            lag: sum.lag + part.lag,
            pending: sum.pending + part.pending,
        }))
    }

    /// The increments in the boards' slot, then the acknowledgements in
    /// each entry's own slot (see `APPLY_BODY`).
    async fn apply_once(&self, group: &str, applies: &[ScoreApply]) -> Result<Vec<ApplyOutcome>, StoreError> {
        if applies.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(&self.scripts.apply_text).ignore();
        let through = self.layout.board_key("rebuilt-through");
        let journal_key = self.layout.board_key("journal");
        for apply in applies {
            let boards: Vec<String> =
                apply.increments.iter().map(|i| self.layout.board_key(&i.board)).collect();
            let mut journal = String::new();
            for (board, increment) in boards.iter().zip(&apply.increments) {
                journal.push_str(&format!("{board}\t{}\t{}\n", increment.member, increment.delta));
            }
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.scripts.apply.get_hash())
                .arg(3 + boards.len())
                .arg(self.layout.board_key(&format!("applied:{}", apply.scope)))
                .arg(&through)
                .arg(&journal_key)
                .arg(&boards)
                .arg(&apply.entry_id)
                .arg(&apply.token)
                .arg(journal);
            for increment in &apply.increments {
                cmd.arg(&increment.member).arg(increment.delta);
            }
            cmd.arg(JOURNAL_MAX_LEN);
        }
        let codes: Vec<i64> = self.query_pipe(&pipe).await?;
        // The appends of a run share their entry's id: each acknowledged once.
        let mut ids: Vec<String> = applies.iter().map(|a| a.entry_id.clone()).collect();
        ids.dedup();
        self.stream_ack(group, &ids).await?;
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
            .query(
                redis::cmd("ZREVRANGE").arg(self.layout.board_key(board)).arg(0).arg(stop).arg("WITHSCORES"),
            )
            .await?;
        Ok(rows.into_iter().map(|(member, score)| Ranked { member, score }).collect())
    }

    async fn leaderboard_score(&self, board: &str, member: &str) -> Result<Option<f64>, StoreError> {
        self.query(redis::cmd("ZSCORE").arg(self.layout.board_key(board)).arg(member)).await
    }

    async fn replace_leaderboards(&self, replace: &LeaderboardReplace) -> Result<bool, StoreError> {
        // A name of this swap's own for the temporary boards, so two
        // rebuilds running at once cannot fill each other's.
        let nonce: u64 = self.query(redis::cmd("INCR").arg(self.layout.board_key("rebuild-nonce"))).await?;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut fill = redis::pipe();
        for (board, rows) in &replace.boards {
            if !seen.insert(board.as_str()) {
                return Err(StoreError::Backend(format!("board {board:?} given twice")));
            }
            let temporary = self.layout.board_key(&format!("rebuild:{nonce}:{board}"));
            fill.del(&temporary).ignore();
            for chunk in rows.chunks(ZADD_CHUNK) {
                let members: Vec<(f64, &str)> = chunk.iter().map(|(m, s)| (*s, m.as_str())).collect();
                fill.zadd_multiple(&temporary, &members).ignore();
            }
            // Left behind only if the swap below never runs.
            fill.expire(&temporary, 3600).ignore();
            keys.push(self.layout.board_key(board));
            keys.push(temporary);
        }
        if !keys.is_empty() {
            self.query_pipe::<()>(&fill).await?;
        }
        let mut invocation = self.scripts.swap.prepare_invoke();
        let fence = replace.fence.as_ref().map_or("", |f| f.lease.as_str());
        invocation
            .key(self.layout.board_key("rebuilt-through"))
            .key(self.layout.board_key("journal"))
            .key(self.layout.board_key(&format!("lease-fence:{fence}")));
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
        let (held, token) = self.layout.lease_keys(name);
        let mut invocation = self.scripts.lease.key(held);
        invocation.key(token).arg(holder).arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let token: i64 = self.invoke(&invocation).await?;
        Ok(u64::try_from(token).ok())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (held, _) = self.layout.lease_keys(name);
        let mut invocation = self.scripts.release.key(held);
        invocation.arg(holder);
        self.invoke::<i64>(&invocation).await?;
        Ok(())
    }
}

fn value_text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(value).ok()
}

fn value_int(value: &Value) -> Option<u64> {
    redis::from_redis_value_ref::<u64>(value).ok()
}

/// Puts each log's appends next to each other, in their order, logs in the
/// order of their first append: appends of different logs are independent,
/// and what a call pays per log (history expiry, state, head) it then pays
/// once for several appends.
fn by_log(indexes: &mut [usize], appends: &[LogAppend]) {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(indexes.len());
    // Each append's key looked up once, not at every comparison.
    let mut keyed: Vec<(usize, usize)> = indexes
        .iter()
        .enumerate()
        .map(|(n, &i)| (*first.entry(appends[i].log.as_str()).or_insert(n), i))
        .collect();
    keyed.sort_by_key(|&(key, _)| key);
    for (index, (_, i)) in indexes.iter_mut().zip(keyed) {
        *index = i;
    }
}

/// The length of the append's state when the entry ends with it and one
/// more byte (an update that closes around its state), so the script can
/// cut it out instead of receiving it twice.
fn state_within(append: &LogAppend) -> Option<usize> {
    let (entry, state) = (append.entry.as_ref(), append.state.as_ref());
    let end = entry.len().checked_sub(1)?;
    let start = end.checked_sub(state.len())?;
    (&entry[start..end] == state).then_some(state.len())
}

/// Cuts appends (grouped by log) into the runs the append script takes:
/// consecutive appends of one log with consecutive sequence numbers, one
/// append each up to format 2, whose history holds an entry per append. A
/// run holds [`APPENDS_PER_CALL`] appends at most, so an event stream entry
/// (one per run) stays small for its readers.
fn runs<'a>(appends: &[&'a LogAppend], format: WriteFormat) -> Vec<Vec<&'a LogAppend>> {
    let mut runs: Vec<Vec<&LogAppend>> = Vec::new();
    for &append in appends {
        match runs.last_mut() {
            Some(run)
                if format >= WriteFormat::V3
                    && run.len() < APPENDS_PER_CALL
                    && run[run.len() - 1].log == append.log
                    && run[run.len() - 1].seq.checked_add(1) == Some(append.seq) =>
            {
                run.push(append);
            }
            _ => runs.push(vec![append]),
        }
    }
    runs
}

/// A run's entries joined by newlines, as the script stores and publishes
/// them.
fn joined_entries(run: &[&LogAppend]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(run.iter().map(|a| a.entry.len() + 1).sum());
    for (n, append) in run.iter().enumerate() {
        if n > 0 {
            joined.push(b'\n');
        }
        joined.extend_from_slice(&append.entry);
    }
    joined
}

/// A run's stream entries as the script stores them from format 3: each
/// framed by its length in 4 big-endian bytes.
fn framed_stream_entries(run: &[&LogAppend]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(run.iter().map(|a| a.stream_entry.len() + 4).sum());
    for append in run {
        let len = u32::try_from(append.stream_entry.len()).unwrap_or(u32::MAX);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&append.stream_entry);
    }
    framed
}

/// The entries framed by [`framed_stream_entries`], or `None` when the
/// frames do not add up to the whole.
fn unframe(mut framed: Bytes) -> Option<Vec<Bytes>> {
    let mut entries = Vec::new();
    while !framed.is_empty() {
        let len = u32::from_be_bytes(framed.get(..4)?.try_into().ok()?) as usize;
        let end = len.checked_add(4).filter(|&end| end <= framed.len())?;
        entries.push(framed.slice(4..end));
        framed = framed.slice(end..);
    }
    Some(entries)
}

/// What the script did with each append of a run, from the log's head
/// before the run and whether this attempt wrote that head: appends at or
/// below the head are duplicates (the head itself applied on a retry of
/// the attempt that wrote it), a run starting beyond head + 1 is a gap, and
/// the rest was applied.
fn run_outcomes<'a>(
    run: &'a [&'a LogAppend],
    head: u64,
    retry: bool,
) -> impl Iterator<Item = AppendOutcome> + 'a {
    let gap = run[0].seq > head.saturating_add(1);
    run.iter().map(move |append| match append.seq {
        _ if gap => AppendOutcome::Gap { head },
        seq if seq == head && retry => AppendOutcome::Applied,
        seq if seq <= head => AppendOutcome::Duplicate { head },
        _ => AppendOutcome::Applied,
    })
}

/// The `(seq, entry)` pairs of a history stream entry: one for an entry of
/// format 1 or 2 (id `<seq>-1`, field `e`), a run's for format 3 (id
/// `<last>-<first>`, field `b`, newline-joined). An entry whose lines do not
/// match its id yields nothing, so a read that meets one is incomplete.
fn history_entries(id: &StreamId) -> Vec<(u64, Bytes)> {
    let Some((last, first)) = id.id.split_once('-') else { return Vec::new() };
    let Ok(last) = last.parse::<u64>() else { return Vec::new() };
    if let Some(entry) = id.get::<Vec<u8>>("e") {
        return vec![(last, Bytes::from(entry))];
    }
    let (Ok(first), Some(run)) = (first.parse::<u64>(), id.get::<Vec<u8>>("b")) else { return Vec::new() };
    let run = Bytes::from(run);
    let lines: Vec<Bytes> = crate::live_entries(&run).collect();
    if first > last || lines.len() as u64 != last - first + 1 {
        return Vec::new();
    }
    (first..=last).zip(lines).collect()
}

/// The oldest sequence number a history stream entry holds.
fn history_first(id: &StreamId) -> Option<u64> {
    let (last, first) = id.id.split_once('-')?;
    if id.map.contains_key("b") { first.parse().ok() } else { last.parse().ok() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &str, entry: &'static [u8], state: &'static [u8]) -> LogAppend {
        LogAppend {
            log: log.into(),
            seq: 1,
            entry: Bytes::from_static(entry),
            state: Bytes::from_static(state),
            stream_entry: Bytes::new(),
        }
    }

    #[test]
    fn appends_are_grouped_by_log_keeping_each_logs_order() {
        let appends: Vec<LogAppend> =
            ["a", "b", "a", "c", "b", "a"].iter().map(|log| append(log, b"e", b"")).collect();
        let mut indexes = vec![0, 1, 2, 3, 4, 5];
        by_log(&mut indexes, &appends);
        assert_eq!(indexes, [0, 2, 5, 1, 4, 3]);
        // A partition's subset, out of input order, groups the same way.
        let mut some = vec![4, 3, 1];
        by_log(&mut some, &appends);
        assert_eq!(some, [4, 1, 3]);
    }

    #[test]
    fn runs_are_consecutive_appends_of_one_log_from_format_3() {
        let at = |log: &str, seq: u64| LogAppend { seq, ..append(log, b"e", b"") };
        let appends = [at("a", 1), at("a", 2), at("a", 4), at("a", 5), at("b", 6), at("b", 6), at("b", 7)];
        let refs: Vec<&LogAppend> = appends.iter().collect();
        let shape = |format| -> Vec<Vec<u64>> {
            runs(&refs, format).iter().map(|run| run.iter().map(|a| a.seq).collect()).collect()
        };
        assert_eq!(shape(WriteFormat::V3), [vec![1, 2], vec![4, 5], vec![6], vec![6, 7]]);
        assert_eq!(shape(WriteFormat::V2), (appends.iter().map(|a| vec![a.seq])).collect::<Vec<_>>());
        assert_eq!(joined_entries(&refs[..3]), b"e\ne\ne");
    }

    #[test]
    fn a_runs_outcomes_follow_from_the_head_before_it() {
        let at = |seq: u64| LogAppend { seq, ..append("a", b"e", b"") };
        let run = [at(4), at(5), at(6)];
        let refs: Vec<&LogAppend> = run.iter().collect();
        let outcomes = |head, retry| run_outcomes(&refs, head, retry).collect::<Vec<_>>();
        use AppendOutcome::{Applied, Duplicate, Gap};
        assert_eq!(outcomes(3, false), [Applied; 3]);
        assert_eq!(outcomes(5, false), [Duplicate { head: 5 }, Duplicate { head: 5 }, Applied]);
        assert_eq!(
            outcomes(5, true),
            [Duplicate { head: 5 }, Applied, Applied],
            "the head this attempt wrote"
        );
        assert_eq!(outcomes(9, false), [Duplicate { head: 9 }; 3]);
        assert_eq!(outcomes(2, false), [Gap { head: 2 }; 3]);
    }

    #[test]
    fn a_state_is_found_only_as_the_entry_tail_before_its_last_byte() {
        assert_eq!(state_within(&append("m", br#"{"state":{"n":1}}"#, br#"{"n":1}"#)), Some(7));
        assert_eq!(state_within(&append("m", b"xs}", b"")), Some(0));
        assert_eq!(state_within(&append("m", b"xs}", b"s}")), None, "the last byte is not the state's");
        assert_eq!(state_within(&append("m", b"s}", b"s}")), None, "no byte left to close it");
        assert_eq!(state_within(&append("m", b"", b"")), None);
        assert_eq!(state_within(&append("m", b"abc}", b"abd")), None);
    }

    #[tokio::test]
    async fn a_retry_of_an_attempt_that_was_stored_is_answered_applied() {
        let Some(config) = crate::testing::redis_config().await else { return };
        let store = RedisStore::connect_lazy(&config).expect("config");
        let append = LogAppend {
            log: "m1".into(),
            seq: 1,
            entry: Bytes::from_static(b"entry"),
            state: Bytes::from_static(b"state"),
            stream_entry: Bytes::from_static(b"stream"),
        };
        let limits = HistoryLimits::default();
        let first = store.append_partition(0, &[&append], limits, "attempt-a").await;
        assert_eq!(first, Ok(vec![AppendOutcome::Applied]));
        // The client library sends the same call again (its connection
        // dropped before the answer came): the publisher hears "applied".
        let resent = store.append_partition(0, &[&append], limits, "attempt-a").await;
        assert_eq!(resent, Ok(vec![AppendOutcome::Applied]));
        // Another attempt (the publisher's own retry) is a duplicate.
        let retried = store.append_partition(0, &[&append], limits, "attempt-b").await;
        assert_eq!(retried, Ok(vec![AppendOutcome::Duplicate { head: 1 }]));
        // Within one call, the second of the same event is a duplicate too.
        let next = LogAppend { seq: 2, ..append };
        let twice = store.append_partition(0, &[&next, &next], limits, "attempt-c").await;
        assert_eq!(twice, Ok(vec![AppendOutcome::Applied, AppendOutcome::Duplicate { head: 2 }]));
        assert_eq!(store.stream_len().await, Ok(2), "each event stored once");
        crate::testing::delete_keys(&config).await;
    }

    #[test]
    fn replicas_are_counted_from_a_masters_role_only() {
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
}

//! The Redis backend: one multiplexed connection (a `ConnectionManager` that
//! reconnects on its own) for commands, and a dedicated connection per
//! subscription, as Redis requires.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt as _;
use redis::{
    AsyncCommands as _, Client, RedisError,
    aio::ConnectionManagerConfig,
    streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply},
};

use crate::{
    AppendOutcome, ApplyOutcome, FeedPage, HistoryLimits, LIVE_CHANNEL, LeaderboardReplace, LogAppend,
    LogSlice, Ranked, ScoreApply, StateStore, StoreError, StreamEntry, Subscription,
    observed::Observed,
    stream::{JOURNAL_MAX_LEN, MAX_BLOCK},
};

/// The atomic appends described in `log.rs`, several per call. Keys: heads
/// hash, states hash, the feed stream, then the history stream of each log
/// the call touches. Args: history length cap, idle expiry in ms, the live
/// channel, then six per append: the index of its history key in KEYS, log,
/// seq, entry, state, feed entry. History entries use the sequence number
/// as their stream id (`<seq>-1`), so a range read by sequence number is a
/// plain XRANGE. Returns `code, head` per append: 1 applied, 0 duplicate,
/// 2 gap.
///
/// Each append is checked against the head its predecessors in the call
/// left. The heads are read in one HMGET and the new heads and states
/// written in one HSET each at the end of the call. Nobody sees the call
/// half done (a script runs alone); if a write is refused midway (a key of
/// the wrong type), the heads and states of the appends before it are
/// still written before the error is returned, and the refused one wrote
/// nothing, so every append is whole or absent.
///
/// Measured (`INFO commandstats`, 64 appends of 64 matches per call): the
/// commands take about 4.6 µs of Redis's CPU per append, the two XADDs 3.4
/// of it; the script as a whole about 11 µs. Most of the rest is the Lua
/// interpreter (some 40% of Redis's samples in `perf`), where each argument
/// and reply becomes a Lua string. Reading and writing the heads and states
/// once per call instead of once per append saved about 0.5 µs; fewer and
/// smaller arguments per append would save more.
pub(crate) const APPEND_SCRIPT: &str = r#"
local maxlen, idle, channel = ARGV[1], ARGV[2], ARGV[3]
local logs, seen = {}, {}
for i = 4, #ARGV, 6 do
  local log = ARGV[i + 1]
  if not seen[log] then
    seen[log] = true
    logs[#logs + 1] = log
  end
end
local heads, stored = {}, redis.call('HMGET', KEYS[1], unpack(logs))
for n, log in ipairs(logs) do
  heads[log] = tonumber(stored[n] or '0')
end

local changed, new_head, new_state, expiring, out = {}, {}, {}, {}, {}
local function write(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return reply end
end
local failed
for i = 4, #ARGV, 6 do
  local history, log, seq = KEYS[tonumber(ARGV[i])], ARGV[i + 1], tonumber(ARGV[i + 2])
  local head = heads[log]
  if seq <= head then
    out[#out + 1] = 0
  elseif seq ~= head + 1 then
    out[#out + 1] = 2
  else
    -- The history's explicit id is the write that can be refused: first,
    -- so a refused append leaves nothing.
    failed = write('XADD', history, 'MAXLEN', maxlen, ARGV[i + 2] .. '-1', 'e', ARGV[i + 3])
    if failed then break end
    if not new_head[log] then changed[#changed + 1] = log end
    new_head[log], new_state[log], head = ARGV[i + 2], ARGV[i + 4], seq
    if not expiring[history] then
      expiring[history] = true
      failed = write('PEXPIRE', history, idle)
    end
    failed = failed
      or write('XADD', KEYS[3], '*', 'log', log, 'seq', ARGV[i + 2], 'e', ARGV[i + 5])
      or write('PUBLISH', channel, ARGV[i + 3])
    if failed then break end
    out[#out + 1] = 1
  end
  out[#out + 1] = head
  heads[log] = head
end

if #changed > 0 then
  local h, s = {}, {}
  for n, log in ipairs(changed) do
    h[2 * n - 1], h[2 * n] = log, new_head[log]
    s[2 * n - 1], s[2 * n] = log, new_state[log]
  end
  redis.call('HSET', KEYS[1], unpack(h))
  redis.call('HSET', KEYS[2], unpack(s))
end
return failed or out
"#;

/// Appends per call of [`APPEND_SCRIPT`]. A call runs alone on its Redis,
/// delaying every other client by some 11 µs per append (about 0.7 ms for a
/// full call); a smaller call pays the call's own cost more often.
const APPENDS_PER_CALL: usize = 64;

/// Where the appends of one call go: the keys and channel every append of
/// it writes (one Redis, or one slot of a cluster).
pub(crate) struct AppendTarget<'a> {
    pub(crate) heads: &'a str,
    pub(crate) states: &'a str,
    pub(crate) feed: &'a str,
    pub(crate) channel: &'a str,
}

/// Adds calls of the append script (`sha`) for `appends`, in order, to
/// `pipe`, [`APPENDS_PER_CALL`] at most per call; `history` names a log's
/// history key.
pub(crate) fn push_appends<'a>(
    pipe: &mut redis::Pipeline,
    sha: &str,
    target: &AppendTarget<'_>,
    history: impl Fn(&str) -> String,
    appends: impl Iterator<Item = &'a LogAppend>,
    limits: HistoryLimits,
) {
    let max_idle_ms = u64::try_from(limits.max_idle.as_millis()).unwrap_or(u64::MAX).max(1);
    let appends: Vec<&LogAppend> = appends.collect();
    for call in appends.chunks(APPENDS_PER_CALL) {
        // Each log's history key once, appends pointing at it by index.
        let mut slots: HashMap<&str, usize> = HashMap::with_capacity(call.len());
        let mut keys = vec![target.heads.to_owned(), target.states.to_owned(), target.feed.to_owned()];
        let mut args = Vec::with_capacity(call.len());
        for append in call {
            let slot = *slots.entry(append.log.as_str()).or_insert_with(|| {
                keys.push(history(&append.log));
                keys.len()
            });
            args.push((slot, append));
        }
        let cmd = pipe.cmd("EVALSHA").arg(sha).arg(keys.len()).arg(&keys);
        cmd.arg(limits.max_entries).arg(max_idle_ms).arg(target.channel);
        for (slot, append) in args {
            cmd.arg(slot)
                .arg(&append.log)
                .arg(append.seq)
                .arg(append.entry.as_ref())
                .arg(append.state.as_ref())
                .arg(append.stream_entry.as_ref());
        }
    }
}

/// The outcomes in the replies of [`push_appends`]' calls, in order.
pub(crate) fn append_outcomes(
    replies: impl IntoIterator<Item = Vec<i64>>,
    expected: usize,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(expected);
    for reply in replies {
        for pair in reply.chunks(2) {
            let &[code, head] = pair else {
                return Err(StoreError::Backend("odd-length reply to an append".into()));
            };
            outcomes.push(outcome((code, u64::try_from(head).unwrap_or(0))));
        }
    }
    if outcomes.len() != expected {
        return Err(StoreError::Backend(format!(
            "{} outcomes in the reply to {expected} appends",
            outcomes.len()
        )));
    }
    Ok(outcomes)
}

/// Compares two stream ids (`<ms>-<seq>`): whether `a` is at or before
/// `b`. Shared by the scripts below.
const ID_AT_OR_BEFORE: &str = r#"
local function at_or_before(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  if ams ~= bms then return ams < bms end
  return aseq <= bseq
end
"#;

/// Applies one feed entry's leaderboard increments at most once and
/// acknowledges the entry, atomically (see `feed.rs`). Keys: the feed, the
/// scope's token set, the rebuilt-through marker, the journal, then one
/// board per increment. Args: group, entry id, token, journal record, then
/// member and delta per increment, and the journal's length cap. Returns 1
/// applied, 0 duplicate, 2 covered by the last rebuild.
pub(crate) const APPLY_BODY: &str = r#"
local added = redis.call('SADD', KEYS[2], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if added == 0 then return 0 end
local through = redis.call('GET', KEYS[3])
if through and at_or_before(ARGV[2], through) then return 2 end
for i = 5, #KEYS do
  redis.call('ZINCRBY', KEYS[i], ARGV[2 * i - 4], ARGV[2 * i - 5])
end
if #KEYS >= 5 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[#ARGV], '*', 'id', ARGV[2], 'i', ARGV[4])
end
return 1
"#;

/// Swaps rebuilt leaderboards in (see `feed.rs`). Keys: the rebuilt-through
/// marker, the journal, the fence's highest token seen, then (live,
/// temporary) per board. Args: the feed id the rebuild covers, or '' for
/// none; the fencing token, or '' for none. Returns -1, changing nothing,
/// for a token below the highest seen. A journal record is lines of
/// `board TAB member TAB delta`, boards as full key names.
pub(crate) const SWAP_BODY: &str = r#"
if ARGV[2] ~= '' then
  local seen = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[2]) < seen then return -1 end
  redis.call('SET', KEYS[3], ARGV[2])
end
local replaced = {}
for i = 4, #KEYS, 2 do
  replaced[KEYS[i]] = true
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
  else
    redis.call('DEL', KEYS[i])
  end
end
if ARGV[1] == '' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
local replayed = 0
for _, record in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  local fields, feed_id, increments = record[2], nil, ''
  for j = 1, #fields, 2 do
    if fields[j] == 'id' then feed_id = fields[j + 1] elseif fields[j] == 'i' then increments = fields[j + 1] end
  end
  if feed_id == nil or at_or_before(feed_id, ARGV[1]) then
    redis.call('XDEL', KEYS[2], record[1])
  else
    for board, member, delta in string.gmatch(increments, '([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\n') do
      if replaced[board] then
        redis.call('ZINCRBY', board, delta, member)
        replayed = replayed + 1
      end
    end
  end
end
return replayed
"#;

/// Takes or extends a lease. Keys: the lease, its token counter. Args:
/// holder, ttl in ms. The lease's value is `<token>:<holder>`. Returns the
/// token, or -1 when another holder has the lease.
pub(crate) const LEASE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local token, holder = string.match(current, '^(%d+):(.*)$')
  if holder ~= ARGV[1] then return -1 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"#;

/// Gives a lease up if its holder is the caller. Keys: the lease. Args:
/// holder.
pub(crate) const RELEASE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Rows written per ZADD while filling a temporary board.
pub(crate) const ZADD_CHUNK: usize = 1_000;

/// How to reach Redis and how long to wait for it.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. May carry a password, so it
    /// is never printed: see the `Debug` impl and [`RedisConfig::redacted_url`].
    pub url: String,
    /// Prepended to every key and channel, so several deployments (or
    /// parallel tests) can share one Redis without seeing each other.
    pub key_prefix: String,
    /// Bound on connecting and on each command. While Redis is down every
    /// command waits this long before failing, so keep it short.
    pub timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), key_prefix: "courtside:".into(), timeout: Duration::from_secs(1) }
    }

    /// Settings from a configured URL and key prefix. The URL must be
    /// `redis://` or `rediss://` with a host. The error is one line and never
    /// echoes the URL, which may carry a password.
    pub fn from_settings(url: &str, key_prefix: &str) -> Result<Self, String> {
        // The url crate's errors never quote their input.
        let parsed = url::Url::parse(url).map_err(|e| format!("not a url: {e}"))?;
        match parsed.scheme() {
            "redis" | "rediss" if parsed.host().is_some() => {}
            "redis" | "rediss" => return Err("the url has no host".into()),
            other => return Err(format!("scheme must be redis or rediss, got {other:?}")),
        }
        Ok(Self { key_prefix: key_prefix.to_owned(), ..Self::new(url) })
    }

    /// The URL with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The Redis [`StateStore`]. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    commands: Observed,
    /// A connection of its own for blocking reads: a blocked command holds
    /// up everything behind it on its connection, and `commands` serves
    /// requests that must stay fast.
    blocking: Observed,
    prefix: String,
    timeout: Duration,
    append_script: redis::Script,
    apply_script: redis::Script,
    swap_script: redis::Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the URL and prepares the connection without connecting, so a
    /// service can start while Redis is still coming up; readiness reports
    /// whether it answers.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| StoreError::Backend(format!("invalid redis url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let commands = Observed::new_lazy(client.clone(), manager_config.clone()).map_err(map_error)?;
        // A blocking read may take its block time plus the usual answer time.
        let blocking_config = manager_config.set_response_timeout(Some(config.timeout + MAX_BLOCK));
        let blocking = Observed::new_lazy(client.clone(), blocking_config).map_err(map_error)?;
        Ok(Self {
            client,
            commands,
            blocking,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            append_script: redis::Script::new(APPEND_SCRIPT),
            apply_script: redis::Script::new(&format!("{ID_AT_OR_BEFORE}{APPLY_BODY}")),
            swap_script: redis::Script::new(&format!("{ID_AT_OR_BEFORE}{SWAP_BODY}")),
        })
    }

    /// The name of the durable event stream that the analytics worker reads.
    pub fn stream_key(&self) -> String {
        self.key("events")
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Adds one EVALSHA of the apply script to `pipe`.
    fn push_apply(&self, pipe: &mut redis::Pipeline, group: &str, apply: &ScoreApply) {
        let boards: Vec<String> = apply.increments.iter().map(|i| self.key(&i.board)).collect();
        let mut journal = String::new();
        for (board, increment) in boards.iter().zip(&apply.increments) {
            journal.push_str(&format!("{board}\t{}\t{}\n", increment.member, increment.delta));
        }
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(self.apply_script.get_hash())
            .arg(4 + boards.len())
            .arg(self.stream_key())
            .arg(self.key(&format!("applied:{}", apply.scope)))
            .arg(self.key("rebuilt-through"))
            .arg(self.key("journal"))
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
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(map_error)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let mut conn = self.commands.clone();
        let value: Option<Vec<u8>> = conn.get(self.key(key)).await.map_err(map_error)?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        conn.set::<_, _, ()>(self.key(key), value.as_ref()).await.map_err(map_error)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.commands.clone();
        let removed: usize = conn.del(self.key(key)).await.map_err(map_error)?;
        Ok(removed > 0)
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError> {
        let mut conn = self.commands.clone();
        conn.publish(self.key(channel), payload.as_ref()).await.map_err(map_error)
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            // Returns once Redis has confirmed the subscription, so nothing
            // published after this call is missed.
            pubsub.subscribe(self.key(channel)).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(self.timeout, subscribe)
            .await
            .map_err(|_| StoreError::Unavailable("timed out subscribing".into()))?
            .map_err(map_error)?;
        let messages = pubsub.into_on_message().map(|msg| Bytes::copy_from_slice(msg.get_payload_bytes()));
        Ok(Subscription::new(messages))
    }

    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError> {
        let outcomes = self.append_batch(std::slice::from_ref(append), limits).await?;
        outcomes.into_iter().next().ok_or_else(|| StoreError::Backend("empty reply to an append".into()))
    }

    async fn append_batch(
        &self,
        appends: &[LogAppend],
        limits: HistoryLimits,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip: load the script (a no-op when cached, and a cure
        // for a Redis that restarted and forgot it), then the appends.
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(APPEND_SCRIPT).ignore();
        let (heads, states, feed, channel) =
            (self.key("log-heads"), self.key("log-states"), self.stream_key(), self.key(LIVE_CHANNEL));
        let target = AppendTarget { heads: &heads, states: &states, feed: &feed, channel: &channel };
        let history = |log: &str| self.key(&format!("log:{log}"));
        push_appends(&mut pipe, self.append_script.get_hash(), &target, history, appends.iter(), limits);
        let mut conn = self.commands.clone();
        let replies: Vec<Vec<i64>> = pipe.query_async(&mut conn).await.map_err(map_error)?;
        append_outcomes(replies, appends.len())
    }

    async fn log_states_of(&self, logs: &[String]) -> Result<Vec<Option<(u64, Bytes)>>, StoreError> {
        if logs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.commands.clone();
        // Two HMGETs in one atomic round trip: heads and states agree.
        let (heads, states): (Vec<Option<u64>>, Vec<Option<Vec<u8>>>) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(self.key("log-heads"))
            .arg(logs)
            .cmd("HMGET")
            .arg(self.key("log-states"))
            .arg(logs)
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        Ok(heads
            .into_iter()
            .zip(states)
            .map(|(head, state)| head.zip(state).map(|(h, s)| (h, Bytes::from(s))))
            .collect())
    }

    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
        let mut conn = self.commands.clone();
        let (head, state): (Option<u64>, Option<Vec<u8>>) = redis::pipe()
            .atomic()
            .hget(self.key("log-heads"), log)
            .hget(self.key("log-states"), log)
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        Ok(head.zip(state).map(|(head, state)| (head, Bytes::from(state))))
    }

    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
        let mut conn = self.commands.clone();
        let states: Vec<(String, Vec<u8>)> = conn.hgetall(self.key("log-states")).await.map_err(map_error)?;
        Ok(states.into_iter().map(|(log, state)| (log, Bytes::from(state))).collect())
    }

    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let mut conn = self.commands.clone();
        let history = self.key(&format!("log:{log}"));
        let (head, entries, oldest): (Option<u64>, StreamRangeReply, StreamRangeReply) = redis::pipe()
            .atomic()
            .hget(self.key("log-heads"), log)
            .cmd("XRANGE")
            .arg(&history)
            .arg(format!("({after}-1"))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .cmd("XRANGE")
            .arg(&history)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        let entries =
            if limit == 0 { Vec::new() } else { entries.ids.iter().filter_map(history_entry).collect() };
        Ok(LogSlice {
            entries,
            head: head.unwrap_or(0),
            oldest: oldest.ids.first().and_then(history_entry).map(|(seq, _)| seq),
        })
    }

    async fn stream_len(&self) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        conn.xlen(self.stream_key()).await.map_err(map_error)
    }

    async fn read_feed(&self, after: Option<&str>, count: usize) -> Result<FeedPage, StoreError> {
        let position = |entries: &[StreamEntry]| {
            entries.last().map(|e| e.id.clone()).or_else(|| after.map(str::to_owned))
        };
        if count == 0 {
            return Ok(FeedPage { entries: Vec::new(), position: position(&[]) });
        }
        let mut conn = self.commands.clone();
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream_key())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        let entries: Vec<StreamEntry> = reply.ids.iter().filter_map(stream_entry).collect();
        Ok(FeedPage { position: position(&entries), entries })
    }

    async fn feed_group_create(&self, group: &str) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream_key())
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(map_error),
        }
    }

    async fn feed_read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let block_ms = u64::try_from(block.min(MAX_BLOCK).as_millis()).unwrap_or(0);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count.max(1));
        // BLOCK 0 would mean "forever"; no block means "do not wait".
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS").arg(self.stream_key()).arg(">");
        let mut conn = if block_ms > 0 { self.blocking.clone() } else { self.commands.clone() };
        let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await.map_err(map_error)?;
        Ok(reply
            .map(|reply| reply.keys.iter().flat_map(|key| key.ids.iter().filter_map(stream_entry)).collect())
            .unwrap_or_default())
    }

    async fn feed_ack(&self, group: &str, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.commands.clone();
        conn.xack(self.stream_key(), group, ids).await.map_err(map_error)
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
        let mut conn = self.commands.clone();
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_owned();
        // XAUTOCLAIM scans a bounded part of the pending list per call and
        // returns where to go on; stop at the end of the list or when full.
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(self.stream_key())
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count - claimed.len())
                .query_async(&mut conn)
                .await
                .map_err(map_error)?;
            claimed.extend(reply.claimed.iter().filter_map(stream_entry));
            cursor = reply.next_stream_id;
            if cursor == "0-0" || claimed.len() >= count {
                return Ok(claimed);
            }
        }
    }

    async fn feed_pending(&self, group: &str) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        // The summary form: [count, smallest id, greatest id, consumers].
        let (count, _, _, _): (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
            .arg(self.stream_key())
            .arg(group)
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        Ok(count)
    }

    async fn stream_lag(&self, group: &str) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.stream_key())
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        let info = groups
            .iter()
            .find(|info| matches!(info.get("name"), Some(name) if value_text(name).as_deref() == Some(group)))
            .ok_or_else(|| StoreError::Backend(format!("no consumer group {group}")))?;
        match info.get("lag").and_then(value_int) {
            Some(lag) => Ok(lag),
            // Redis cannot tell after some deletions; the stream's length
            // less what the group has read is the same figure.
            None => {
                let read = info.get("entries-read").and_then(value_int).unwrap_or(0);
                Ok(self.stream_len().await?.saturating_sub(read))
            }
        }
    }

    async fn apply_once(&self, group: &str, applies: &[ScoreApply]) -> Result<Vec<ApplyOutcome>, StoreError> {
        if applies.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(format!("{ID_AT_OR_BEFORE}{APPLY_BODY}")).ignore();
        for apply in applies {
            self.push_apply(&mut pipe, group, apply);
        }
        let mut conn = self.commands.clone();
        let codes: Vec<i64> = pipe.query_async(&mut conn).await.map_err(map_error)?;
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
        let mut conn = self.commands.clone();
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let rows: Vec<(String, f64)> =
            conn.zrevrange_withscores(self.key(board), 0, stop).await.map_err(map_error)?;
        Ok(rows.into_iter().map(|(member, score)| Ranked { member, score }).collect())
    }

    async fn leaderboard_score(&self, board: &str, member: &str) -> Result<Option<f64>, StoreError> {
        let mut conn = self.commands.clone();
        conn.zscore(self.key(board), member).await.map_err(map_error)
    }

    async fn replace_leaderboards(&self, replace: &LeaderboardReplace) -> Result<bool, StoreError> {
        let mut conn = self.commands.clone();
        // A name of this swap's own for the temporary boards, so two
        // rebuilds running at once cannot fill each other's.
        let nonce: u64 = redis::cmd("INCR")
            .arg(self.key("rebuild-nonce"))
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut fill = redis::pipe();
        for (board, rows) in &replace.boards {
            if !seen.insert(board.as_str()) {
                return Err(StoreError::Backend(format!("board {board:?} given twice")));
            }
            let live = self.key(board);
            let temporary = self.key(&format!("rebuild:{nonce}:{board}"));
            fill.del(&temporary).ignore();
            for chunk in rows.chunks(ZADD_CHUNK) {
                let members: Vec<(f64, &str)> = chunk.iter().map(|(m, s)| (*s, m.as_str())).collect();
                fill.zadd_multiple(&temporary, &members).ignore();
            }
            // Left behind only if the swap below never runs.
            fill.expire(&temporary, 3600).ignore();
            keys.push(live);
            keys.push(temporary);
        }
        if !keys.is_empty() {
            fill.query_async::<()>(&mut conn).await.map_err(map_error)?;
        }

        let mut invocation = self.swap_script.prepare_invoke();
        let fence_key =
            self.key(&format!("lease-fence:{}", replace.fence.as_ref().map_or("", |f| f.lease.as_str())));
        invocation.key(self.key("rebuilt-through")).key(self.key("journal")).key(fence_key);
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg(replace.through.as_deref().unwrap_or(""));
        invocation.arg(replace.fence.as_ref().map_or(String::new(), |f| f.token.to_string()));
        let swapped = invocation.invoke_async::<i64>(&mut conn).await.map_err(map_error)?;
        Ok(swapped >= 0)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.commands.clone();
        let token: i64 = redis::Script::new(LEASE_SCRIPT)
            .key(self.key(&format!("lease:{name}")))
            .key(self.key(&format!("lease-token:{name}")))
            .arg(holder)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(map_error)?;
        Ok(u64::try_from(token).ok())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        redis::Script::new(RELEASE_SCRIPT)
            .key(self.key(&format!("lease:{name}")))
            .arg(holder)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

/// A feed entry from its stream entry; `None` if a field is missing.
pub(crate) fn stream_entry(id: &StreamId) -> Option<StreamEntry> {
    let log: String = id.get("log")?;
    let seq: u64 = id.get("seq")?;
    let entry: Vec<u8> = id.get("e")?;
    Some(StreamEntry { id: id.id.clone(), log, seq, entry: Bytes::from(entry) })
}

pub(crate) fn value_text(value: &redis::Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(value).ok()
}

pub(crate) fn value_int(value: &redis::Value) -> Option<u64> {
    redis::from_redis_value_ref::<u64>(value).ok()
}

pub(crate) fn outcome((code, head): (i64, u64)) -> AppendOutcome {
    match code {
        1 => AppendOutcome::Applied,
        0 => AppendOutcome::Duplicate { head },
        _ => AppendOutcome::Gap { head },
    }
}

/// `(seq, entry)` of a history stream entry whose id is `<seq>-1`.
pub(crate) fn history_entry(id: &redis::streams::StreamId) -> Option<(u64, Bytes)> {
    let seq = id.id.split_once('-')?.0.parse().ok()?;
    let entry: Vec<u8> = id.get("e")?;
    Some((seq, Bytes::from(entry)))
}

/// Server error codes that mean "not now" rather than "never": the server
/// is loading its data, is a replica, lost its master, runs a long script,
/// is out of memory, cannot persist, is mid-failover or resharding, or does
/// not (yet) accept our credentials. Retrying later may work, so callers
/// answer 503 with `Retry-After`, not 500.
const RETRYABLE_CODES: &[&str] = &[
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOAUTH",
    "WRONGPASS",
];

pub(crate) fn map_error(err: RedisError) -> StoreError {
    let retryable_code = err.code().is_some_and(|code| RETRYABLE_CODES.contains(&code));
    // On a cluster: a slot moving or without a master (mid-failover), or
    // no connection to the node that serves it yet.
    // A transaction aborts as a whole when one of its commands was
    // redirected (redis-rs follows redirects for plain commands only).
    let cluster_in_flux = err.is_cluster_error()
        || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || (err.code() == Some("EXECABORT")
            && ["Moved", "Ask", "TryAgain", "ClusterDown"].iter().any(|kind| err.to_string().contains(kind)));
    if retryable_code
        || cluster_in_flux
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
    {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(err.to_string())
    }
}

/// Replaces the password of a URL, if any, with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Cannot fail: the URL already has a password, so it has a host.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_debug_output() {
        let config = RedisConfig::new("redis://user:hunter2@cache:6379/0");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis://user:***@cache:6379/0"), "{printed}");
    }

    #[test]
    fn configured_urls_are_checked_without_echoing_them() {
        let config = RedisConfig::from_settings("redis://cache:6379/2", "demo:").expect("valid");
        assert_eq!((config.url.as_str(), config.key_prefix.as_str()), ("redis://cache:6379/2", "demo:"));
        let err =
            RedisConfig::from_settings("http://user:hunter2@cache:6379", "x:").expect_err("wrong scheme");
        assert_eq!(err, "scheme must be redis or rediss, got \"http\"");
        assert!(RedisConfig::from_settings("redis://", "x:").is_err());
        assert!(RedisConfig::from_settings("not a url hunter2", "x:").is_err_and(|e| !e.contains("hunter2")));
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

//! The Redis backend: one multiplexed connection (a `ConnectionManager` that
//! reconnects on its own) for commands, and a dedicated connection per
//! subscription, as Redis requires.

use std::{fmt, time::Duration};

use bytes::Bytes;
use futures::StreamExt as _;
use redis::{
    AsyncCommands as _, Client, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::StreamRangeReply,
};

use crate::{
    AppendOutcome, HistoryLimits, LIVE_CHANNEL, LogAppend, LogSlice, StateStore, StoreError, Subscription,
};

/// The atomic append described in `log.rs`. Keys: heads hash, states hash,
/// the log's history stream, the feed stream. History entries use the
/// sequence number as their stream id (`<seq>-1`), so a range read by
/// sequence number is a plain XRANGE.
const APPEND_SCRIPT: &str = r#"
local head = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= head then return {0, head} end
if seq ~= head + 1 then return {2, head} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], ARGV[2] .. '-1', 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('XADD', KEYS[4], '*', 'log', ARGV[1], 'seq', ARGV[2], 'e', ARGV[5])
redis.call('PUBLISH', ARGV[8], ARGV[3])
return {1, seq}
"#;

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
    commands: ConnectionManager,
    prefix: String,
    timeout: Duration,
    append_script: redis::Script,
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
        let commands =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config).map_err(map_error)?;
        Ok(Self {
            client,
            commands,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            append_script: redis::Script::new(APPEND_SCRIPT),
        })
    }

    /// The name of the durable event stream that the analytics worker reads.
    pub fn feed_key(&self) -> String {
        self.key("events")
    }

    /// Adds one EVALSHA of the append script to `pipe`.
    fn push_append(&self, pipe: &mut redis::Pipeline, append: &LogAppend, limits: HistoryLimits) {
        let max_idle_ms = u64::try_from(limits.max_idle.as_millis()).unwrap_or(u64::MAX).max(1);
        pipe.cmd("EVALSHA")
            .arg(self.append_script.get_hash())
            .arg(4)
            .arg(self.key("log-heads"))
            .arg(self.key("log-states"))
            .arg(self.key(&format!("log:{}", append.log)))
            .arg(self.feed_key())
            .arg(&append.log)
            .arg(append.seq)
            .arg(append.entry.as_ref())
            .arg(append.state.as_ref())
            .arg(append.feed_entry.as_ref())
            .arg(limits.max_entries)
            .arg(max_idle_ms)
            .arg(self.key(LIVE_CHANNEL));
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
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
        // for a Redis that restarted and forgot it), then every append.
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(APPEND_SCRIPT).ignore();
        for append in appends {
            self.push_append(&mut pipe, append, limits);
        }
        let mut conn = self.commands.clone();
        let replies: Vec<(i64, u64)> = pipe.query_async(&mut conn).await.map_err(map_error)?;
        Ok(replies.into_iter().map(outcome).collect())
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

    async fn feed_len(&self) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        conn.xlen(self.feed_key()).await.map_err(map_error)
    }
}

fn outcome((code, head): (i64, u64)) -> AppendOutcome {
    match code {
        1 => AppendOutcome::Applied,
        0 => AppendOutcome::Duplicate { head },
        _ => AppendOutcome::Gap { head },
    }
}

/// `(seq, entry)` of a history stream entry whose id is `<seq>-1`.
fn history_entry(id: &redis::streams::StreamId) -> Option<(u64, Bytes)> {
    let seq = id.id.split_once('-')?.0.parse().ok()?;
    let entry: Vec<u8> = id.get("e")?;
    Some((seq, Bytes::from(entry)))
}

fn map_error(err: RedisError) -> StoreError {
    if err.is_io_error()
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
fn redact_url(url: &str) -> String {
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
    fn urls_without_password_are_unchanged() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

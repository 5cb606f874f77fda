//! The Redis backend: one multiplexed connection (a `ConnectionManager` that
//! reconnects on its own) for commands, and a dedicated connection per
//! subscription, as Redis requires.

use std::{fmt, time::Duration};

use bytes::Bytes;
use futures::StreamExt as _;
use redis::{
    AsyncCommands as _, Client, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::{StateStore, StoreError, Subscription};

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
        Ok(Self { client, commands, prefix: config.key_prefix.clone(), timeout: config.timeout })
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

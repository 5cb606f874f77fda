//! Test support shared by every crate whose tests need a real Redis.
//!
//! Tests talk to the server named by `COURTSIDE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), each under a key prefix of its own so tests can
//! run in parallel against one server. When no Redis answers, the test fails
//! if `CI` is set and is skipped with a notice otherwise.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{RedisConfig, RedisStore, StateStore as _};

/// Where tests find Redis.
pub const ENV_TEST_REDIS_URL: &str = "COURTSIDE_TEST_REDIS_URL";

const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis configuration with a fresh key prefix, or `None` (after printing
/// why) when Redis is unreachable outside CI.
///
/// # Panics
/// When Redis is unreachable and the `CI` variable is set: CI must exercise
/// the Redis backend, never skip it silently.
pub async fn redis_config() -> Option<RedisConfig> {
    let url = std::env::var(ENV_TEST_REDIS_URL).unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.into());
    let config = RedisConfig { url, key_prefix: unique_prefix(), timeout: Duration::from_secs(2) };
    let reachable = match RedisStore::connect_lazy(&config) {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match reachable {
        Ok(()) => Some(config),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but Redis at {} is unreachable: {reason}", config.redacted_url())
        }
        Err(reason) => {
            eprintln!(
                "note: skipping the Redis backend, {} is unreachable ({reason}); set {ENV_TEST_REDIS_URL} to test it",
                config.redacted_url()
            );
            None
        }
    }
}

/// A prefix no other test in this or any concurrent test process uses.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("courtside-test:{}:{nanos}:{}:", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Polls an async `check` until it holds or `within` runs out; for tests
/// that wait on something happening elsewhere (a consumer, a subscriber)
/// without sleeping a fixed time.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

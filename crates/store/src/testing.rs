//! Test support shared by every crate whose tests need a real Redis.
//!
//! Tests talk to the server named by `COURTSIDE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), each under a key prefix of its own so tests can
//! run in parallel against one server. When no Redis answers, the test fails
//! if `CI` is set and is skipped with a notice otherwise. The Redis Cluster
//! tests do the same with `COURTSIDE_TEST_REDIS_CLUSTER_URL`, a list of seed
//! nodes (`.ci/redis-cluster start DIR` starts a cluster and prints it).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{ClusterConfig, ClusterStore, RedisConfig, RedisStore, StateStore as _};

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

/// Where tests find a Redis Cluster: seed node URLs, comma-separated.
pub const ENV_TEST_REDIS_CLUSTER_URL: &str = "COURTSIDE_TEST_REDIS_CLUSTER_URL";

/// Partitions the cluster tests use: more than the cluster has masters, so
/// the logs of a test spread over every node.
pub const TEST_PARTITIONS: u16 = 4;

/// A Redis Cluster configuration with a fresh key prefix, or `None` (after
/// printing why) when no cluster is configured or answers outside CI.
///
/// # Panics
/// When no cluster is configured or answers and the `CI` variable is set.
pub async fn cluster_config() -> Option<ClusterConfig> {
    let skip = |reason: String| {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the Redis Cluster tests cannot run: {reason}");
        }
        eprintln!("note: skipping the Redis Cluster backend: {reason}");
        None
    };
    let Ok(urls) = std::env::var(ENV_TEST_REDIS_CLUSTER_URL) else {
        return skip(format!(
            "{ENV_TEST_REDIS_CLUSTER_URL} is not set (`.ci/redis-cluster start DIR` starts one)"
        ));
    };
    let mut config = match ClusterConfig::from_settings(&urls, &unique_prefix(), TEST_PARTITIONS) {
        Ok(config) => config,
        Err(reason) => return skip(format!("{ENV_TEST_REDIS_CLUSTER_URL}: {reason}")),
    };
    config.timeout = Duration::from_secs(2);
    let reachable = match ClusterStore::connect_lazy(&config) {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match reachable {
        Ok(()) => Some(config),
        Err(reason) => skip(format!("{} is unreachable ({reason})", config.redacted_nodes())),
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

/// A `redis-server` of the test's own, on a free port with a data folder of
/// its own, for tests that stop, restart or reconfigure Redis: the shared
/// server is never touched. Killed and its folder removed on drop.
#[derive(Debug)]
pub struct ThrowawayRedis {
    port: u16,
    dir: std::path::PathBuf,
    args: Vec<String>,
    child: std::process::Child,
}

impl ThrowawayRedis {
    /// Starts one with `args` added to the command line. `None` (with a
    /// notice) when `redis-server` cannot start outside CI.
    ///
    /// # Panics
    /// When it cannot start and `CI` is set.
    pub fn start(args: &[&str]) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        match spawn_redis(port, &dir, &args) {
            Ok(child) => Some(Self { port, dir, args, child }),
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but redis-server cannot start: {err}")
            }
            Err(err) => {
                eprintln!("note: skipping a throwaway-Redis test, redis-server cannot start: {err}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then the same server again on the same port and folder;
    /// `extra` arguments are added to this start only.
    ///
    /// # Panics
    /// When the server cannot be killed or started again.
    pub fn kill_and_restart_with(&mut self, extra: &[&str]) {
        self.child.kill().expect("kill redis");
        self.child.wait().expect("reap redis");
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        self.child = spawn_redis(self.port, &self.dir, &args).expect("restart redis");
    }

    /// SIGKILL, then the same server again.
    pub fn kill_and_restart(&mut self) {
        self.kill_and_restart_with(&[]);
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path, args: &[String]) -> std::io::Result<std::process::Child> {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
}

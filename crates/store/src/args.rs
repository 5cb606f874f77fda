//! Choosing the backend: [`StoreArgs`], the flags every binary flattens into
//! its own, and [`open`], the one place a backend is picked. The gateway, the
//! worker and the all-in-one all go through here, so they cannot disagree
//! on what a setting means.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};

use crate::{ClusterConfig, MemoryStore, RedisConfig, RedisStore, StateStore, WriteFormat};

/// Where shared state lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Redis for shared state, e.g. redis://127.0.0.1:6379. Without it state
    /// is kept in process (fine for one process, lost on exit). Prefer the
    /// variable to the flag when the URL has a password: flags show up in
    /// process listings. Never logged.
    ///
    /// Checked by [`StoreArgs::redis_config`] rather than by clap, whose
    /// error message would echo the value, password included.
    #[arg(long, env = "COURTSIDE_REDIS_URL", hide_env_values = true, value_parser = secret)]
    pub redis_url: Option<SecretString>,

    /// Prefix for every Redis key and channel this deployment uses.
    #[arg(long, env = "COURTSIDE_REDIS_PREFIX", default_value = "courtside:")]
    pub redis_prefix: String,

    /// The Redis is a Redis Cluster: the URL is then a comma-separated list
    /// of seed nodes (`redis://a:6379,redis://b:6379`; one is enough, the
    /// client discovers the rest).
    #[arg(long, env = "COURTSIDE_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// On a cluster: partitions of the matches, the event stream and the
    /// live channel (each partition is one hash slot). Fixed for the life
    /// of a deployment's data: a match's partition follows from it.
    #[arg(long, env = "COURTSIDE_REDIS_PARTITIONS", default_value_t = DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub redis_partitions: u16,

    /// Replicas that must hold an event before its ingest is acknowledged
    /// (Redis `WAIT`). A master with fewer replicas (one that lost its
    /// replica, or a shard just failed over) is waited for only as far as
    /// it has them: its writes go on at full speed, are counted in
    /// `courtside_store_appends_without_replica_total`, and readiness says
    /// `degraded` with the partitions concerned. 0 takes the master's
    /// word, as Redis does by default: a failover can then lose the last
    /// acknowledged events.
    #[arg(long, env = "COURTSIDE_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u8,

    /// The format appends are written in for other processes to read (1 to
    /// 3; see README.md, "Upgrading"). Set it to the running release's
    /// format while replicas of an older release are still up.
    #[arg(long, env = "COURTSIDE_STORE_WRITE_FORMAT", default_value_t = WriteFormat::default().number(),
          value_parser = clap::value_parser!(u8).range(1..=3))]
    pub store_write_format: u8,
}

/// Partitions on a cluster unless configured: a few per master of a
/// typical 3 to 6 master cluster, so the load spreads.
pub const DEFAULT_PARTITIONS: u16 = 16;

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_prefix: "courtside:".into(),
            redis_cluster: false,
            redis_partitions: DEFAULT_PARTITIONS,
            redis_wait_replicas: 0,
            store_write_format: WriteFormat::default().number(),
        }
    }
}

/// Which Redis the settings name.
#[derive(Debug, Clone)]
pub enum RedisSettings {
    Single(RedisConfig),
    Cluster(ClusterConfig),
}

impl StoreArgs {
    /// The Redis settings, if Redis is configured. The error is one line,
    /// safe to print: it never echoes the URL.
    pub fn redis_config(&self) -> Result<Option<RedisConfig>, String> {
        let Some(url) = &self.redis_url else { return Ok(None) };
        RedisConfig::from_settings(url.expose_secret(), &self.redis_prefix)
            .map(Some)
            .map_err(|reason| format!("invalid --redis-url / COURTSIDE_REDIS_URL: {reason}"))
    }

    /// The Redis settings, single server or cluster, if Redis is
    /// configured. The error is one line and never echoes a URL.
    pub fn redis_settings(&self) -> Result<Option<RedisSettings>, String> {
        if !self.redis_cluster {
            let config = self.redis_config()?;
            return Ok(config.map(|config| {
                RedisSettings::Single(RedisConfig {
                    wait_replicas: self.redis_wait_replicas,
                    write_format: self.write_format(),
                    ..config
                })
            }));
        }
        let Some(urls) = &self.redis_url else {
            return Err("COURTSIDE_REDIS_CLUSTER is set but no COURTSIDE_REDIS_URL names its nodes".into());
        };
        ClusterConfig::from_settings(urls.expose_secret(), &self.redis_prefix, self.redis_partitions)
            .map(|config| {
                Some(RedisSettings::Cluster(ClusterConfig {
                    wait_replicas: self.redis_wait_replicas,
                    write_format: self.write_format(),
                    ..config
                }))
            })
            .map_err(|reason| format!("invalid --redis-url / COURTSIDE_REDIS_URL for a cluster: {reason}"))
    }

    fn write_format(&self) -> WriteFormat {
        WriteFormat::from_number(self.store_write_format).unwrap_or_default()
    }

    /// Checks the settings without connecting; call it before starting
    /// anything.
    pub fn validate(&self) -> Result<(), String> {
        self.redis_settings().map(|_| ())
    }
}

/// A secret as clap reads it: `Debug` prints `[REDACTED]`.
fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// The store these settings name: Redis (connected lazily, so a process
/// starts while Redis is down) or the in-process backend.
pub fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn StateStore>> {
    match args.redis_settings().map_err(anyhow::Error::msg)? {
        Some(RedisSettings::Single(redis)) => {
            tracing::info!(url = %redis.redacted_url(), prefix = %redis.key_prefix, "state store: redis");
            Ok(Arc::new(RedisStore::connect_lazy(&redis).context("failed to set up the redis store")?))
        }
        Some(RedisSettings::Cluster(cluster)) => {
            tracing::info!(
                nodes = %cluster.redacted_nodes(),
                prefix = %cluster.key_prefix,
                partitions = cluster.partitions,
                "state store: redis cluster"
            );
            Ok(Arc::new(
                RedisStore::connect_cluster_lazy(&cluster)
                    .context("failed to set up the redis cluster store")?,
            ))
        }
        None => {
            tracing::info!(
                "state store: in process (set COURTSIDE_REDIS_URL to share state between processes)"
            );
            Ok(Arc::new(MemoryStore::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    #[test]
    fn a_bad_redis_url_is_rejected_without_echoing_its_password() {
        let cli = Cli::try_parse_from(["x", "--redis-url", "http://user:hunter2@cache:6379"])
            .expect("clap accepts any text");
        let err = cli.store.validate().expect_err("wrong scheme");
        assert!(err.contains("--redis-url"), "{err}");
        assert!(err.contains("scheme must be redis"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!format!("{cli:?}").contains("hunter2"), "Debug shows the password");
    }

    #[test]
    fn a_good_redis_url_becomes_a_prefixed_store_config() {
        let cli =
            Cli::try_parse_from(["x", "--redis-url", "redis://cache:6379/2", "--redis-prefix", "demo:"])
                .expect("parses");
        let config = cli.store.redis_config().expect("valid").expect("configured");
        assert_eq!(config.key_prefix, "demo:");
        assert_eq!(config.url, "redis://cache:6379/2");
    }

    #[test]
    fn a_cluster_takes_a_list_of_seed_nodes() {
        let cli = Cli::try_parse_from([
            "x",
            "--redis-cluster",
            "--redis-url",
            "redis://a:7000,redis://b:7001",
            "--redis-partitions",
            "8",
        ])
        .expect("parses");
        let Some(RedisSettings::Cluster(config)) = cli.store.redis_settings().expect("valid") else {
            panic!("not a cluster")
        };
        assert_eq!((config.nodes.len(), config.partitions), (2, 8));
        let no_nodes = Cli::try_parse_from(["x", "--redis-cluster"]).expect("parses");
        assert!(no_nodes.store.validate().expect_err("no nodes").contains("COURTSIDE_REDIS_URL"));
        assert!(Cli::try_parse_from(["x", "--redis-partitions", "0"]).is_err());
        let single_waiting =
            Cli::try_parse_from(["x", "--redis-url", "redis://a:6379", "--redis-wait-replicas", "1"])
                .expect("parses");
        let Some(RedisSettings::Single(config)) = single_waiting.store.redis_settings().expect("valid")
        else {
            panic!("not a single server")
        };
        assert_eq!(config.wait_replicas, 1, "one server may have replicas too");
    }

    #[tokio::test]
    async fn a_cluster_opens_without_connecting() {
        let cli = Cli::try_parse_from(["x", "--redis-cluster", "--redis-url", "redis://127.0.0.1:1"])
            .expect("parses");
        let store = open(&cli.store).expect("opens lazily");
        assert_eq!(store.backend(), "redis-cluster");
    }

    #[tokio::test]
    async fn no_url_opens_the_in_process_store() {
        let store = open(&StoreArgs::default()).expect("opens");
        assert_eq!(store.backend(), "memory");
    }
}

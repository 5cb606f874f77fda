//! How to reach Redis: one server ([`RedisConfig`]) or a cluster
//! ([`ClusterConfig`]), checked up front and never printed with a password.

use std::{fmt, time::Duration};

use crate::WriteFormat;

/// How to reach one Redis server and how long to wait for it.
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
    /// Replicas that must hold an append before it is acknowledged (see
    /// [`crate::RedisStore`]'s durability); 0 takes the master's word.
    pub wait_replicas: u8,
    /// What appends write for other processes to read; see [`WriteFormat`].
    pub write_format: WriteFormat,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "courtside:".into(),
            timeout: Duration::from_secs(1),
            wait_replicas: 0,
            write_format: WriteFormat::default(),
        }
    }

    /// Settings from a configured URL and key prefix. The URL must be
    /// `redis://` or `rediss://` with a host. The error is one line and never
    /// echoes the URL, which may carry a password.
    pub fn from_settings(url: &str, key_prefix: &str) -> Result<Self, String> {
        check_url(url)?;
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
            .field("wait_replicas", &self.wait_replicas)
            .field("write_format", &self.write_format)
            .finish()
    }
}

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
    /// [`crate::RedisStore`]'s durability); 0 takes the master's word.
    pub wait_replicas: u8,
    /// What appends write for other processes to read; see [`WriteFormat`].
    pub write_format: WriteFormat,
}

impl ClusterConfig {
    /// Settings from a comma-separated list of seed node URLs. The error is
    /// one line and never echoes a URL.
    pub fn from_settings(urls: &str, key_prefix: &str, partitions: u16) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for (i, url) in urls.split(',').map(str::trim).filter(|u| !u.is_empty()).enumerate() {
            check_url(url).map_err(|reason| format!("node {}: {reason}", i + 1))?;
            nodes.push(url.to_owned());
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
            write_format: WriteFormat::default(),
        })
    }

    /// The seed nodes with passwords replaced by `***`, safe to log.
    pub fn redacted_nodes(&self) -> String {
        self.nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>().join(",")
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
            .field("write_format", &self.write_format)
            .finish()
    }
}

/// A `redis://` or `rediss://` URL with a host; the error never quotes it.
fn check_url(url: &str) -> Result<(), String> {
    // The url crate's errors never quote their input.
    let parsed = url::Url::parse(url).map_err(|e| format!("not a url: {e}"))?;
    match parsed.scheme() {
        "redis" | "rediss" if parsed.host().is_some() => Ok(()),
        "redis" | "rediss" => Err("the url has no host".into()),
        other => Err(format!("scheme must be redis or rediss, got {other:?}")),
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

    #[test]
    fn cluster_settings_are_checked_without_echoing_urls() {
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
}

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

use crate::{ClusterConfig, RedisConfig, RedisStore, StateStore as _};

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
    let config =
        RedisConfig { key_prefix: unique_prefix(), timeout: Duration::from_secs(2), ..RedisConfig::new(url) };
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
    let reachable = match RedisStore::connect_cluster_lazy(&config) {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match reachable {
        Ok(()) => Some(config),
        Err(reason) => skip(format!("{} is unreachable ({reason})", config.redacted_nodes())),
    }
}

/// Deletes every key under `config`'s prefix: what a test leaves behind on
/// the shared server. Best effort: a test that cannot clean up has already
/// checked what it came for.
pub async fn delete_keys(config: &RedisConfig) {
    let Ok(client) = redis::Client::open(config.url.as_str()) else { return };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else { return };
    let pattern = format!("{}*", config.key_prefix);
    let mut cursor = 0u64;
    loop {
        let scanned: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await;
        let Ok((next, keys)) = scanned else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
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
        let port = server_port()?;
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

/// A Redis Cluster of the test's own (three masters, three replicas on free
/// ports, a one-second node timeout so a failover takes a few seconds), for
/// tests that kill a node: the shared cluster is never touched. Needs
/// `redis-server` and `redis-cli`. Killed and its folder removed on drop.
#[derive(Debug)]
pub struct ThrowawayCluster {
    nodes: Vec<ClusterNode>,
    dir: std::path::PathBuf,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    child: Option<std::process::Child>,
}

impl ThrowawayCluster {
    /// Starts and joins the six servers. `None` (with a notice) when they
    /// cannot start outside CI.
    ///
    /// # Panics
    /// When they cannot start and `CI` is set.
    pub fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(cluster) => Some(cluster),
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but a cluster cannot start: {err}")
            }
            Err(err) => {
                eprintln!("note: skipping a throwaway-cluster test: {err}");
                None
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cluster = Self { nodes: Vec::new(), dir };
        while cluster.nodes.len() < 6 {
            let port = server_port().ok_or("no free port")?;
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let child =
                spawn_redis(port, &node_dir, &cluster_args()).map_err(|e| format!("redis-server: {e}"))?;
            cluster.nodes.push(ClusterNode { port, child: Some(child) });
        }
        for node in &cluster.nodes {
            wait_until(Duration::from_secs(5), || {
                redis_cli(node.port, &["ping"]).is_ok_and(|r| r.contains("PONG"))
            })
            .then_some(())
            .ok_or_else(|| format!("node {} did not start", node.port))?;
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let output = std::process::Command::new("redis-cli")
            .args(&create)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        if !cluster.wait_ok(Duration::from_secs(20)) {
            return Err("the cluster did not reach cluster_state:ok".into());
        }
        // A replica attaches after the slots are assigned: wait for every
        // link, or the first writes would have no replica to wait for.
        let linked = wait_until(Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                redis_cli(n.port, &["info", "replication"]).is_ok_and(|info| {
                    info.contains("connected_slaves:1") || info.contains("master_link_status:up")
                })
            })
        });
        if !linked {
            return Err("the replicas did not attach to their masters".into());
        }
        Ok(cluster)
    }

    /// Seed node URLs, comma-separated, as `COURTSIDE_REDIS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) -> bool {
        wait_until(within, || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                redis_cli(n.port, &["cluster", "info"]).is_ok_and(|info| info.contains("cluster_state:ok"))
            })
        })
    }

    /// The port of the master serving `key`, as a running node sees it.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let node = self.nodes.iter().find(|n| n.child.is_some())?;
        let slot: u16 = redis_cli(node.port, &["cluster", "keyslot", key]).ok()?.trim().parse().ok()?;
        let nodes = redis_cli(node.port, &["cluster", "nodes"]).ok()?;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| match range.split_once('-') {
                Some((lo, hi)) => {
                    lo.parse::<u16>().is_ok_and(|lo| lo <= slot)
                        && hi.parse::<u16>().is_ok_and(|hi| slot <= hi)
                }
                None => range.parse::<u16>().is_ok_and(|one| one == slot),
            });
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            serves.then_some(port)
        })
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let node = self.nodes.iter().find(|n| n.child.is_some())?;
        let nodes = redis_cli(node.port, &["cluster", "nodes"]).ok()?;
        let port_of =
            |line: &str| line.split_whitespace().nth(1)?.split(['@', ':']).nth(1)?.parse::<u16>().ok();
        let master_id =
            nodes.lines().find(|l| port_of(l) == Some(master))?.split_whitespace().next()?.to_owned();
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2)?.contains("slave") && *fields.get(3)? == master_id)
                .then(|| port_of(line))
                .flatten()
        })
    }

    /// How many times the node on `port` has run `command` (its `INFO
    /// commandstats`), e.g. to check that a command was not sent.
    ///
    /// # Panics
    /// When the node does not answer.
    pub fn calls(&self, port: u16, command: &str) -> u64 {
        let stats = redis_cli(port, &["info", "commandstats"]).expect("the node answers");
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        stats
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    /// SIGSTOP (`resume`: SIGCONT) the node on `port`: it holds its
    /// connections but answers nothing, as a node stuck in a long pause.
    ///
    /// # Panics
    /// When no running node has that port.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// `CONFIG SET parameter value` on every running node.
    ///
    /// # Panics
    /// When a node refuses it.
    pub fn config_set(&self, parameter: &str, value: &str) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let output = std::process::Command::new("redis-cli")
                .args(["-p", &node.port.to_string(), "CONFIG", "SET", parameter, value])
                .output()
                .expect("redis-cli runs");
            let answer = String::from_utf8_lossy(&output.stdout);
            assert!(answer.trim() == "OK", "CONFIG SET {parameter} on {}: {answer}", node.port);
        }
    }

    /// See [`ThrowawayCluster::pause`].
    ///
    /// # Panics
    /// When no running node has that port.
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let node = self.nodes.iter().find(|n| n.port == port).expect("a node");
        let pid = node.child.as_ref().expect("running").id().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGKILL the node on `port`: no chance to hand anything over.
    ///
    /// # Panics
    /// When no running node has that port.
    pub fn kill(&mut self, port: u16) {
        let node =
            self.nodes.iter_mut().find(|n| n.port == port && n.child.is_some()).expect("a running node");
        let mut child = node.child.take().expect("running");
        child.kill().expect("kill redis");
        child.wait().expect("reap redis");
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster_args() -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

/// A free port for a throwaway server, with port + 10000 free too (a
/// cluster node's bus), both below the kernel's ephemeral range. Tests bind
/// their own servers to port 0, and one that restarts on its address
/// leaves the port free for a moment: a port picked the same way could be
/// that one, taken for good by a server started meanwhile.
fn server_port() -> Option<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (from, to) = (1_024u16, ephemeral_from.saturating_sub(10_000));
    if to <= from + 1_000 {
        return std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port());
    }
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos().into())
        ^ u64::from(std::process::id()).rotate_left(20);
    (0..500).find_map(|attempt| {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) + attempt;
        let port = from
            + u16::try_from((seed.wrapping_add(step.wrapping_mul(7_919))) % u64::from(to - from)).ok()?;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        (free(port) && free(port + 10_000)).then_some(port)
    })
}

fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! Worker settings: each one a flag and a `COURTSIDE_*` variable, with a
//! default that works on a laptop. clap validates types and ranges while
//! parsing, so a bad value stops the process with a one-line error before
//! anything binds.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

use clap::Args;
use telemetry::LogFormat;

/// Largest `n` the compute benchmark accepts by default: about 125 ms of one
/// core, so an anonymous request cannot hold a pool thread for long (the
/// load tests use at most 20 million).
pub const DEFAULT_MAX_COMPUTE_N: u64 = 50_000_000;

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Address the gRPC server listens on.
    #[arg(
        id = "analytics_addr",
        long = "analytics-addr",
        env = "COURTSIDE_ANALYTICS_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen_addr: SocketAddr,

    /// Address of the plain-HTTP listener serving Prometheus metrics at
    /// `/metrics`, or `off`. gRPC clients never see it.
    #[arg(long, env = "COURTSIDE_ANALYTICS_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: MetricsAddr,

    /// Threads in the CPU pool; defaults to the number of cores.
    #[arg(long, env = "COURTSIDE_POOL_THREADS")]
    pub pool_threads: Option<NonZeroUsize>,

    /// Jobs that may wait for a pool thread; beyond that the worker answers
    /// RESOURCE_EXHAUSTED at once instead of queueing without bound.
    #[arg(long, env = "COURTSIDE_POOL_QUEUE", default_value_t = 64)]
    pub pool_queue: usize,

    /// Milliseconds of estimated work the pool admits per thread: requests
    /// beyond it are refused at once (RESOURCE_EXHAUSTED, a 503 at the
    /// gateway) rather than queued past their deadline.
    #[arg(long, env = "COURTSIDE_POOL_BACKLOG_MS", default_value_t = DEFAULT_POOL_BACKLOG_MS, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub pool_backlog_ms: u64,

    /// Largest `n` the compute benchmark accepts.
    #[arg(long, env = "COURTSIDE_COMPUTE_MAX_N", default_value_t = DEFAULT_MAX_COMPUTE_N)]
    pub compute_max_n: u64,

    /// Seconds between a shutdown signal and closing the listener: health
    /// reports NOT_SERVING at once while calls are still served, so the
    /// gateways' balancers stop sending first.
    #[arg(id = "analytics_drain_delay", long = "analytics-drain-delay", env = "COURTSIDE_ANALYTICS_DRAIN_DELAY_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub drain_delay_secs: u64,

    /// Seconds in-flight calls may take to finish once the listener is
    /// closed.
    #[arg(id = "analytics_shutdown_grace", long = "analytics-shutdown-grace", env = "COURTSIDE_ANALYTICS_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_secs: u64,

    /// Consume the event stream into the impact leaderboards.
    #[arg(long = "analytics-consume", env = "COURTSIDE_ANALYTICS_CONSUME", default_value_t = true, action = clap::ArgAction::Set)]
    pub consume: bool,

    /// This worker's name in the stream's consumer group; unique among live
    /// workers. Defaults to `<hostname>-<pid>`.
    #[arg(id = "analytics_consumer", long = "analytics-consumer", env = "COURTSIDE_ANALYTICS_CONSUMER")]
    pub consumer_name: Option<String>,

    /// Milliseconds a stream entry may stay unacknowledged before another
    /// worker presumes its consumer dead and claims it; workers look every
    /// half of it, so a dead worker's entries are applied within 1.5 times
    /// this. A batch takes milliseconds, so a living worker is never close;
    /// its own entries of a failed round it retries at once.
    #[arg(long, env = "COURTSIDE_CLAIM_IDLE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub claim_idle_ms: u64,

    /// Seconds between batch recomputes (xT refit and leaderboard rebuild);
    /// 0 runs them only on request.
    #[arg(long, env = "COURTSIDE_BATCH_INTERVAL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=(366 * 86_400)))]
    pub batch_interval_secs: u64,

    /// Monte Carlo samples of a win probability request that names none.
    #[arg(long, env = "COURTSIDE_WINPROB_SAMPLES", default_value_t = DEFAULT_WINPROB_SAMPLES, value_parser = clap::value_parser!(u64).range(1..=domain::winprob::MAX_SAMPLES))]
    pub winprob_samples: u64,

    /// Largest Monte Carlo sample count a request may ask for.
    #[arg(long, env = "COURTSIDE_WINPROB_MAX_SAMPLES", default_value_t = DEFAULT_WINPROB_MAX_SAMPLES, value_parser = clap::value_parser!(u64).range(1..=domain::winprob::MAX_SAMPLES))]
    pub winprob_max_samples: u64,

    /// Matches of the synthetic season the start-up xT model is fitted on,
    /// when no model is stored yet.
    #[arg(long, env = "COURTSIDE_XT_BOOTSTRAP_MATCHES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub xt_bootstrap_matches: u32,

    /// Seed of that synthetic season.
    #[arg(long, env = "COURTSIDE_XT_BOOTSTRAP_SEED", default_value_t = 2024)]
    pub xt_bootstrap_seed: u64,
}

/// Where the metrics listener binds, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|err| format!("{err}: expected host:port or \"off\"")),
        }
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Default Monte Carlo samples: about 40 ms of one core.
pub const DEFAULT_WINPROB_SAMPLES: u64 = 1_000_000;
/// Default backlog per pool thread: admitted requests start within about
/// two seconds, well inside the gateway's default ten-second deadline.
pub const DEFAULT_POOL_BACKLOG_MS: u64 = 2_000;
/// Default cap on requested samples: about 400 ms of one core, half that on
/// two.
pub const DEFAULT_WINPROB_MAX_SAMPLES: u64 = 10_000_000;

impl WorkerConfig {
    /// Pool size after applying the default.
    pub fn pool_threads(&self) -> NonZeroUsize {
        self.pool_threads.or_else(|| std::thread::available_parallelism().ok()).unwrap_or(NonZeroUsize::MIN)
    }

    pub fn pool_backlog(&self) -> Duration {
        Duration::from_millis(self.pool_backlog_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }

    /// Zero when scheduled recomputes are off.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_secs(self.batch_interval_secs)
    }

    /// The consumer name after applying the default.
    pub fn consumer_name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// A configuration for tests: any free loopback port, small pool.
    pub fn for_tests() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: MetricsAddr(Some(SocketAddr::from(([127, 0, 0, 1], 0)))),
            pool_threads: NonZeroUsize::new(2),
            pool_queue: 16,
            pool_backlog_ms: DEFAULT_POOL_BACKLOG_MS,
            compute_max_n: DEFAULT_MAX_COMPUTE_N,
            drain_delay_secs: 0,
            shutdown_grace_secs: 5,
            consume: true,
            consumer_name: None,
            claim_idle_ms: 5_000,
            batch_interval_secs: 0,
            winprob_samples: 100_000,
            winprob_max_samples: DEFAULT_WINPROB_MAX_SAMPLES,
            // Small: a test worker starts in milliseconds, even unoptimised.
            xt_bootstrap_matches: 4,
            xt_bootstrap_seed: 2024,
        }
    }
}

/// Options for the standalone worker binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "courtside-analytics",
    version,
    about = "courtside analytics worker: gRPC in front of a CPU pool"
)]
pub struct Cli {
    #[command(flatten)]
    pub worker: WorkerConfig,

    #[command(flatten)]
    pub store: store::StoreArgs,

    /// Log line format: "pretty" or "json".
    #[arg(long, env = "COURTSIDE_LOG_FORMAT", default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Asks a running worker's gRPC health service whether it serves; exits
    /// 0 if so. Used as the container healthcheck, so the image needs no
    /// extra tools.
    Healthcheck {
        /// Worker to ask.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        url: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_work_without_any_setting() {
        let cli = Cli::try_parse_from(["courtside-analytics"]).expect("defaults parse");
        assert_eq!(cli.worker.listen_addr, SocketAddr::from(([127, 0, 0, 1], 50051)));
        assert_eq!(cli.worker.pool_queue, 64);
        assert!(cli.worker.pool_threads().get() >= 1);
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        let err =
            Cli::try_parse_from(["courtside-analytics", "--pool-threads", "0"]).expect_err("zero threads");
        assert!(err.to_string().contains("--pool-threads"), "{err}");

        let err = Cli::try_parse_from(["courtside-analytics", "--analytics-addr", "nowhere"])
            .expect_err("not an address");
        assert!(err.to_string().contains("--analytics-addr"), "{err}");

        let err = Cli::try_parse_from(["courtside-analytics", "--analytics-shutdown-grace", "9000"])
            .expect_err("grace out of range");
        assert!(err.to_string().contains("--analytics-shutdown-grace"), "{err}");

        let err =
            Cli::try_parse_from(["courtside-analytics", "--claim-idle-ms", "0"]).expect_err("too short");
        assert!(err.to_string().contains("--claim-idle-ms"), "{err}");
    }

    #[test]
    fn the_flags_do_not_collide() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn stream_and_batch_defaults() {
        let cli = Cli::try_parse_from(["courtside-analytics"]).expect("defaults parse");
        assert!(cli.worker.consume);
        assert_eq!(cli.worker.batch_interval(), Duration::from_secs(86_400));
        assert_eq!(cli.worker.claim_idle(), Duration::from_secs(5));
        assert!(cli.worker.consumer_name().ends_with(&format!("-{}", std::process::id())));
    }
}

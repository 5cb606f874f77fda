//! Worker settings: each one a flag and a `COURTSIDE_*` variable, with a
//! default that works on a laptop. clap validates types and ranges while
//! parsing, so a bad value stops the process with a one-line error before
//! anything binds.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

use clap::Args;
use telemetry::LogFormat;

/// Largest accepted default for the compute benchmark: about a few seconds of
/// one core, so a single request cannot hold a pool thread for minutes.
pub const DEFAULT_MAX_COMPUTE_N: u64 = 1_000_000_000;

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

    /// Threads in the CPU pool; defaults to the number of cores.
    #[arg(long, env = "COURTSIDE_POOL_THREADS")]
    pub pool_threads: Option<NonZeroUsize>,

    /// Jobs that may wait for a pool thread; beyond that the worker answers
    /// RESOURCE_EXHAUSTED at once instead of queueing without bound.
    #[arg(long, env = "COURTSIDE_POOL_QUEUE", default_value_t = 64)]
    pub pool_queue: usize,

    /// Largest `n` the compute benchmark accepts.
    #[arg(long, env = "COURTSIDE_COMPUTE_MAX_N", default_value_t = DEFAULT_MAX_COMPUTE_N)]
    pub compute_max_n: u64,

    /// Seconds in-flight calls may take to finish after a shutdown signal.
    #[arg(id = "analytics_shutdown_grace", long = "analytics-shutdown-grace", env = "COURTSIDE_ANALYTICS_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_secs: u64,
}

impl WorkerConfig {
    /// Pool size after applying the default.
    pub fn pool_threads(&self) -> NonZeroUsize {
        self.pool_threads.or_else(|| std::thread::available_parallelism().ok()).unwrap_or(NonZeroUsize::MIN)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// A configuration for tests: any free loopback port, small pool.
    pub fn for_tests() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pool_threads: NonZeroUsize::new(2),
            pool_queue: 16,
            compute_max_n: DEFAULT_MAX_COMPUTE_N,
            shutdown_grace_secs: 5,
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
    }
}

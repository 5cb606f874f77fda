//! Gateway settings: the edge's ([`EdgeConfig`]) and the gateway's own
//! (the worker, the live feed, the benchmark routes), each one a flag and a
//! `COURTSIDE_*` variable, with a default that works on a laptop. Everything
//! is checked while parsing, so a bad value stops the process with a
//! one-line error before anything binds.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
pub use edge::{EdgeConfig, config::RateLimiting};
use telemetry::LogFormat;

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// The HTTP edge: listeners, limits, tokens, timeouts, drain.
    #[command(flatten)]
    pub edge: EdgeConfig,

    /// gRPC address of the analytics worker; several, comma-separated, for
    /// replicas at fixed addresses. A host name is resolved to every address
    /// it has (a Kubernetes headless Service: every ready pod) and calls are
    /// spread over them.
    #[arg(long, env = "COURTSIDE_WORKER_URL", default_value = "http://127.0.0.1:50051", value_parser = parse_worker_url)]
    pub worker_url: String,

    /// Milliseconds the gateway waits for the worker on one call (the gRPC
    /// deadline) before answering 504.
    #[arg(long, env = "COURTSIDE_WORKER_DEADLINE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub worker_deadline_ms: u64,

    /// Bytes a subscriber may fall behind the live feed before it is
    /// disconnected as a slow consumer.
    #[arg(long, env = "COURTSIDE_SUBSCRIBER_MAX_LAG_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1024..=(64 << 20)))]
    pub subscriber_max_lag_bytes: u64,

    /// Events of history kept per match for subscribers that resume.
    #[arg(long, env = "COURTSIDE_HISTORY_EVENTS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub history_events: u64,

    /// Seconds a match's history is kept after its last event.
    #[arg(long, env = "COURTSIDE_HISTORY_IDLE_SECS", default_value_t = 6 * 3600, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub history_idle_secs: u64,

    /// Seconds between server pings on WebSocket connections.
    #[arg(long, env = "COURTSIDE_PING_INTERVAL_SECS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ping_interval_secs: u64,

    /// Seconds a WebSocket connection may hold no subscription (from its
    /// opening or its last unsubscribe) before it is closed with 4001.
    #[arg(long, env = "COURTSIDE_LIVE_SUBSCRIBE_GRACE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub subscribe_grace_secs: u64,

    /// Milliseconds one send to a live subscriber may take; a client whose
    /// socket stays full that long is disconnected.
    #[arg(long, env = "COURTSIDE_WRITE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub write_timeout_ms: u64,

    /// Longest NDJSON line bulk ingest accepts, in bytes.
    #[arg(long, env = "COURTSIDE_MAX_LINE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(64..=(16 << 20)))]
    pub max_line_bytes: u64,

    /// Who may call `/v1/bench/*`, the argument's two endpoints: `public`
    /// (the load-test harness and local runs), `read-token` (a read or
    /// publish token, once read tokens are configured), or `off`. Production
    /// deployments turn them off: `compute` spends the worker's CPU on
    /// request.
    #[arg(long, env = "COURTSIDE_BENCH_ROUTES", value_enum, default_value_t = BenchRoutes::Public)]
    pub bench_routes: BenchRoutes,
}

impl GatewayConfig {
    /// Checks what clap cannot check without printing secrets. Call it
    /// before starting anything; the error is one line, safe to print.
    pub fn validate(&self) -> Result<(), String> {
        self.edge.validate()
    }

    pub fn worker_deadline(&self) -> Duration {
        Duration::from_millis(self.worker_deadline_ms)
    }

    /// A configuration for tests: any free loopback port and a worker at
    /// `worker_url`; the edge as [`EdgeConfig::for_tests`] sets it.
    pub fn for_tests(worker_url: impl Into<String>) -> Self {
        Self {
            edge: EdgeConfig::for_tests(),
            worker_url: worker_url.into(),
            worker_deadline_ms: 10_000,
            subscriber_max_lag_bytes: 256 * 1024,
            history_events: 1_000,
            history_idle_secs: 3600,
            ping_interval_secs: 25,
            subscribe_grace_secs: 30,
            write_timeout_ms: 10_000,
            max_line_bytes: 64 * 1024,
            bench_routes: BenchRoutes::Public,
        }
    }
}

/// The publish token [`GatewayConfig::for_tests`] configures.
pub use edge::config::TEST_PUBLISH_TOKEN;

/// Options for the standalone gateway binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "courtside-gateway",
    version,
    about = "courtside edge gateway: HTTP/JSON in, gRPC to the analytics worker"
)]
pub struct Cli {
    #[command(flatten)]
    pub gateway: GatewayConfig,

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
    /// Asks a running gateway's /healthz; exits 0 if it answers 200. Used as
    /// the container healthcheck, so the image needs no curl.
    Healthcheck {
        /// Gateway address to ask.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
    },
}

/// Who may call the benchmark routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchRoutes {
    Public,
    ReadToken,
    Off,
}

/// One worker URL, or several separated by commas (static replicas).
fn parse_worker_url(raw: &str) -> Result<String, String> {
    let urls: Vec<&str> = raw.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Err("no url given".into());
    }
    for one in urls {
        let url = url::Url::parse(one).map_err(|e| format!("{one:?} is not a url: {e}"))?;
        match url.scheme() {
            "http" | "https" if url.host().is_some() => {}
            "http" | "https" => return Err(format!("{one:?} has no host")),
            other => return Err(format!("scheme must be http or https, got {other:?}")),
        }
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("courtside-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_work_without_any_setting() {
        let cli = parse(&[]).expect("defaults parse");
        assert_eq!(cli.gateway.edge.listen_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(cli.store.redis_url.is_none());
        assert_eq!(cli.gateway.worker_deadline(), Duration::from_secs(10));
    }

    #[test]
    fn each_bad_value_is_rejected_naming_its_flag() {
        for (args, flag) in [
            (&["--gateway-addr", "localhost"][..], "--gateway-addr"),
            (&["--worker-url", "grpc://x:1"], "--worker-url"),
            (&["--request-timeout-ms", "0"], "--request-timeout-ms"),
            (&["--history-events", "0"], "--history-events"),
            (&["--rate-limit-ingest", "100/day"], "--rate-limit-ingest"),
        ] {
            let err = parse(args).expect_err("bad value");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn short_tokens_are_rejected_naming_their_flag() {
        let cli = parse(&["--read-tokens", "short"]).expect("clap accepts any text");
        let err = cli.gateway.validate().expect_err("too short");
        assert!(err.contains("--read-tokens"), "{err}");
    }
}

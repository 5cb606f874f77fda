//! The edge's settings: each one a flag and a `COURTSIDE_*` variable, with a
//! default that works on a laptop. A service flattens [`EdgeConfig`] into
//! its own settings, so every service on the edge is configured alike.
//! Everything is checked while parsing, so a bad value stops the process
//! with a one-line error before anything binds.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    auth::{Auth, Tokens},
    limits::{self, Rate, TrustedProxies},
};

#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// Address the HTTP server listens on.
    #[arg(
        id = "gateway_addr",
        long = "gateway-addr",
        env = "COURTSIDE_GATEWAY_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: SocketAddr,

    /// Address of the admin listener, which then serves `/metrics` and
    /// `/v1/debug/*` in place of the public one (the Kubernetes manifests
    /// set `0.0.0.0:9090` and expose it to Prometheus only). Unset: they are
    /// on the public address, as a one-machine run expects.
    #[arg(long, env = "COURTSIDE_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Milliseconds a request may take before the service answers 504.
    #[arg(long, env = "COURTSIDE_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "COURTSIDE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    pub body_limit_bytes: u64,

    /// Bearer tokens that may publish events, comma-separated (16+
    /// characters each). Without any, publishing is disabled. Never logged.
    #[arg(long, env = "COURTSIDE_PUBLISH_TOKENS", hide_env_values = true, default_value = "", value_parser = secret)]
    pub publish_tokens: SecretString,

    /// Bearer tokens for reads and subscriptions, comma-separated. Without
    /// any, reads are public.
    #[arg(long, env = "COURTSIDE_READ_TOKENS", hide_env_values = true, default_value = "", value_parser = secret)]
    pub read_tokens: SecretString,

    /// Open HTTP connections accepted; past it, a new connection is closed
    /// at once. Keep it plus `--max-connections` below the process's file
    /// descriptor limit.
    #[arg(long, env = "COURTSIDE_MAX_HTTP_CONNECTIONS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_http_connections: u64,

    /// Milliseconds a client has to send a request's headers; an HTTP/1
    /// keep-alive connection idle that long is closed.
    #[arg(long, env = "COURTSIDE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,

    /// Open WebSocket and SSE connections accepted; past it, 503.
    #[arg(long, env = "COURTSIDE_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// WebSocket and SSE connections one client address may hold (IPv6:
    /// per /64); past it, 429. Behind a load balancer, the address is the
    /// client's own only with the PROXY protocol or `X-Forwarded-For` from
    /// `--trusted-proxies`. `--rate-limit off` turns it off.
    #[arg(long, env = "COURTSIDE_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = crate::streams::DEFAULT_PER_ADDRESS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_address: u64,

    /// Kernel send buffer of each client connection, in bytes. Bounds the
    /// kernel memory a client that stops reading can pin (autotuning would
    /// let it grow to megabytes) and makes such a client visible sooner.
    #[arg(long, env = "COURTSIDE_SOCKET_SEND_BUFFER_BYTES", default_value_t = 128 * 1024, value_parser = clap::value_parser!(u64).range(4096..=(16 << 20)))]
    pub socket_send_buffer_bytes: u64,

    /// Milliseconds one poll of a request's future may take on the event
    /// loop before the runtime-fit report says the route belongs on the
    /// worker (`GET /v1/debug/runtime-fit`).
    #[arg(long, env = "COURTSIDE_SLOW_POLL_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub slow_poll_ms: u64,

    /// Rate limits per client (`on` or `off`). `off` turns every limit below
    /// off; meant for load tests driving many requests from one address.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT", value_enum, default_value_t = RateLimiting::On)]
    pub rate_limit: RateLimiting,

    /// Ingest requests (`POST /v1/events`, `/v1/events/bulk`) per client
    /// address: `COUNT/s`, `COUNT/min` or `COUNT/h` (bursts of COUNT,
    /// refilled evenly over the window), or `off`.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT_INGEST", default_value_t = limits::DEFAULT_INGEST)]
    pub rate_limit_ingest: Rate,

    /// Subscribes per client address: WebSocket connections, each
    /// `subscribe` message on them, and SSE feeds. Same form as
    /// `--rate-limit-ingest`.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT_SUBSCRIBE", default_value_t = limits::DEFAULT_SUBSCRIBE)]
    pub rate_limit_subscribe: Rate,

    /// Requests to the analytics routes (impact, win probability, jobs) and
    /// `/v1/bench/compute` per client address. Same form as
    /// `--rate-limit-ingest`.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT_COMPUTE", default_value_t = limits::DEFAULT_COMPUTE)]
    pub rate_limit_compute: Rate,

    /// Requests per publish token, over every route that takes one (on top
    /// of the per-address limits). Same form as `--rate-limit-ingest`.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT_PER_TOKEN", default_value_t = limits::DEFAULT_PER_TOKEN)]
    pub rate_limit_per_token: Rate,

    /// Proxies (addresses, CIDR ranges or host names, comma-separated)
    /// whose PROXY protocol header (v1 or v2) or `X-Forwarded-For` names the
    /// client a connection or request counts against. A host name (a compose
    /// service, a Kubernetes Service) is looked up every 5 s. Empty: a PROXY header is
    /// refused, `X-Forwarded-For` ignored, and the connection's address
    /// counts. Set it behind a load balancer, or every client shares its
    /// address.
    #[arg(long, env = "COURTSIDE_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Seconds between a shutdown signal and closing the listener: `/readyz`
    /// answers 503 at once while requests are still served, so load
    /// balancers stop sending before connections are refused.
    #[arg(id = "gateway_drain_delay", long = "gateway-drain-delay", env = "COURTSIDE_GATEWAY_DRAIN_DELAY_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub drain_delay_secs: u64,

    /// Seconds in-flight requests and open live connections may take to
    /// finish once the listener is closed.
    #[arg(id = "gateway_shutdown_grace", long = "gateway-shutdown-grace", env = "COURTSIDE_GATEWAY_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_secs: u64,
}

impl EdgeConfig {
    /// Checks what clap cannot check without printing secrets. Call it
    /// before starting anything; the error is one line, safe to print.
    pub fn validate(&self) -> Result<(), String> {
        self.auth().map(|_| ())
    }

    /// Who may publish and who may read.
    pub fn auth(&self) -> Result<Auth, String> {
        let publish = Tokens::parse(self.publish_tokens.expose_secret())
            .map_err(|reason| format!("invalid --publish-tokens / COURTSIDE_PUBLISH_TOKENS: {reason}"))?;
        let read = Tokens::parse(self.read_tokens.expose_secret())
            .map_err(|reason| format!("invalid --read-tokens / COURTSIDE_READ_TOKENS: {reason}"))?;
        Ok(Auth { publish, read })
    }

    /// The rate limits as configured; every lane off with `--rate-limit off`.
    pub fn limits(&self) -> limits::Settings {
        match self.rate_limit {
            RateLimiting::Off => limits::Settings::off(),
            RateLimiting::On => limits::Settings {
                ingest: self.rate_limit_ingest,
                subscribe: self.rate_limit_subscribe,
                compute: self.rate_limit_compute,
                per_token: self.rate_limit_per_token,
                trusted_proxies: self.trusted_proxies.clone(),
            },
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn slow_poll_threshold(&self) -> Duration {
        Duration::from_millis(self.slow_poll_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn body_limit(&self) -> usize {
        // The parser caps the value at 1 GiB, which fits any usize we run on.
        usize::try_from(self.body_limit_bytes).unwrap_or(usize::MAX)
    }

    /// Open WebSocket and SSE connections accepted.
    pub fn max_streams(&self) -> usize {
        usize::try_from(self.max_connections).unwrap_or(usize::MAX)
    }

    /// WebSocket and SSE connections one client address may hold; `None`
    /// with `--rate-limit off`, like every other per-client limit.
    pub fn max_streams_per_address(&self) -> Option<usize> {
        match self.rate_limit {
            RateLimiting::Off => None,
            RateLimiting::On => Some(usize::try_from(self.max_connections_per_address).unwrap_or(usize::MAX)),
        }
    }

    /// A configuration for tests: any free loopback port, the test publish
    /// token. Rate limits are off: a test drives many requests from one
    /// address, and the tests of the limits turn them on with their own
    /// rates.
    pub fn for_tests() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            request_timeout_ms: 30_000,
            body_limit_bytes: 1024 * 1024,
            publish_tokens: TEST_PUBLISH_TOKEN.into(),
            read_tokens: SecretString::default(),
            max_http_connections: 16_384,
            header_read_timeout_ms: 10_000,
            max_connections: 20_000,
            max_connections_per_address: crate::streams::DEFAULT_PER_ADDRESS as u64,
            socket_send_buffer_bytes: 128 * 1024,
            slow_poll_ms: 10,
            rate_limit: RateLimiting::Off,
            rate_limit_ingest: limits::DEFAULT_INGEST,
            rate_limit_subscribe: limits::DEFAULT_SUBSCRIBE,
            rate_limit_compute: limits::DEFAULT_COMPUTE,
            rate_limit_per_token: limits::DEFAULT_PER_TOKEN,
            trusted_proxies: TrustedProxies::default(),
            drain_delay_secs: 0,
            shutdown_grace_secs: 5,
        }
    }
}

/// The publish token [`EdgeConfig::for_tests`] configures.
pub const TEST_PUBLISH_TOKEN: &str = "test-publisher-token-0123456789";

/// Whether the rate limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimiting {
    On,
    Off,
}

/// A secret as clap reads it; its `Debug` prints `[REDACTED]`, so logging
/// the configuration cannot leak a token.
fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        edge: EdgeConfig,
    }

    fn parse(args: &[&str]) -> Result<EdgeConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("service").chain(args.iter().copied())).map(|cli| cli.edge)
    }

    #[test]
    fn defaults_work_without_any_setting() {
        let edge = parse(&[]).expect("defaults parse");
        assert_eq!(edge.listen_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(edge.request_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn each_bad_value_is_rejected_naming_its_flag() {
        for (args, flag) in [
            (&["--gateway-addr", "localhost"][..], "--gateway-addr"),
            (&["--request-timeout-ms", "0"], "--request-timeout-ms"),
            (&["--body-limit-bytes", "lots"], "--body-limit-bytes"),
            (&["--rate-limit", "sometimes"], "--rate-limit"),
            (&["--rate-limit-ingest", "100/day"], "--rate-limit-ingest"),
            (&["--rate-limit-compute", "0/s"], "--rate-limit-compute"),
            (&["--trusted-proxies", "10.0.0.0/8,lb_internal"], "--trusted-proxies"),
            (&["--max-connections-per-address", "0"], "--max-connections-per-address"),
        ] {
            let err = parse(args).expect_err("bad value");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn rate_limits_are_on_by_default_and_off_turns_every_lane_off() {
        let defaults = parse(&[]).expect("defaults parse").limits();
        assert_eq!(defaults.ingest, limits::DEFAULT_INGEST);
        assert_eq!(defaults.subscribe, limits::DEFAULT_SUBSCRIBE);
        assert_eq!(defaults.compute, limits::DEFAULT_COMPUTE);
        assert_eq!(defaults.per_token, limits::DEFAULT_PER_TOKEN);
        assert!(defaults.trusted_proxies.is_empty());

        let set = parse(&["--rate-limit-ingest", "5/s", "--rate-limit-compute", "off"]).expect("parses");
        assert_eq!(set.limits().ingest, Rate::limited(5, limits::Per::Second));
        assert_eq!(set.limits().compute, Rate::Off);

        let off = parse(&["--rate-limit", "off", "--rate-limit-ingest", "5/s"]).expect("parses").limits();
        for rate in [off.ingest, off.subscribe, off.compute, off.per_token] {
            assert_eq!(rate, Rate::Off);
        }
        let parsed = |args: &[&str]| parse(args).expect("parses").max_streams_per_address();
        assert_eq!(parsed(&[]), Some(crate::streams::DEFAULT_PER_ADDRESS));
        assert_eq!(parsed(&["--max-connections-per-address", "7"]), Some(7));
        assert_eq!(parsed(&["--rate-limit", "off", "--max-connections-per-address", "7"]), None);
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let edge = parse(&["--publish-tokens", "publisher-token-0123456789"]).expect("parses");
        let printed = format!("{edge:?}");
        assert!(!printed.contains("publisher-token"), "{printed}");
        assert!(edge.auth().expect("valid").publish.accepts("publisher-token-0123456789"));
    }

    #[test]
    fn short_tokens_are_rejected_naming_their_flag() {
        let edge = parse(&["--read-tokens", "short"]).expect("clap accepts any text");
        let err = edge.validate().expect_err("too short");
        assert!(err.contains("--read-tokens"), "{err}");
    }
}

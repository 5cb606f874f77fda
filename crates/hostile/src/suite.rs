//! The runner: the settings, the context every case gets, how a case
//! reports (a one-line reason, passed or failed, or why it was skipped), and
//! the loop that runs the cases in order and prints one line each, then the
//! total.

use std::{
    future::Future,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::{
    events,
    http::{self, Request, Response},
};

/// How the gateway under attack was configured, as far as the cases need to
/// know. Defaults are the gateway's own.
#[derive(Debug, clap::Args)]
pub(crate) struct Settings {
    /// The gateway, `host:port` (plain HTTP).
    #[arg(long, env = "COURTSIDE_HOSTILE_ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) addr: String,

    /// A publish token the gateway accepts (one of its
    /// COURTSIDE_PUBLISH_TOKENS). Never printed.
    #[arg(
        long,
        env = "COURTSIDE_HOSTILE_PUBLISH_TOKEN",
        hide_env_values = true,
        required_unless_present = "list"
    )]
    pub(crate) publish_token: Option<SecretString>,

    /// A read token, when the gateway has COURTSIDE_READ_TOKENS; without it
    /// reads are sent anonymously and the read-token cases are skipped.
    #[arg(long, env = "COURTSIDE_HOSTILE_READ_TOKEN", hide_env_values = true)]
    pub(crate) read_token: Option<SecretString>,

    /// The gateway's COURTSIDE_HEADER_READ_TIMEOUT_MS: half-sent headers and
    /// idle keep-alive connections must be closed within it.
    #[arg(long, env = "COURTSIDE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) header_read_timeout_ms: u64,

    /// The gateway's COURTSIDE_BODY_LIMIT_BYTES.
    #[arg(long, env = "COURTSIDE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub(crate) body_limit_bytes: usize,

    /// The gateway's COURTSIDE_MAX_LINE_BYTES (longest NDJSON line).
    #[arg(long, env = "COURTSIDE_MAX_LINE_BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_line_bytes: usize,

    /// The gateway's process id, when it runs on this machine: its resident
    /// memory and open descriptors are then read from /proc before and after
    /// the attack.
    #[arg(long)]
    pub(crate) pid: Option<u32>,

    /// How much the gateway's resident memory may grow over the whole run,
    /// in MiB (checked only with --pid).
    #[arg(long, default_value_t = 64)]
    pub(crate) max_rss_growth_mib: u64,

    /// The gateway's COURTSIDE_RATE_LIMIT: `on` or `off`.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT", default_value = "on")]
    pub(crate) rate_limit: String,

    /// The gateway's COURTSIDE_RATE_LIMIT_INGEST (`COUNT/s`, `/min`, `/h`
    /// or `off`), and so on for the other lanes.
    #[arg(long, env = "COURTSIDE_RATE_LIMIT_INGEST", default_value = "100/s")]
    pub(crate) rate_limit_ingest: Rate,

    #[arg(long, env = "COURTSIDE_RATE_LIMIT_SUBSCRIBE", default_value = "3000/min")]
    pub(crate) rate_limit_subscribe: Rate,

    #[arg(long, env = "COURTSIDE_RATE_LIMIT_COMPUTE", default_value = "300/min")]
    pub(crate) rate_limit_compute: Rate,

    #[arg(long, env = "COURTSIDE_RATE_LIMIT_PER_TOKEN", default_value = "200/s")]
    pub(crate) rate_limit_per_token: Rate,

    /// The gateway's COURTSIDE_MAX_CONNECTIONS_PER_ADDRESS: live connections
    /// (WebSocket and SSE) one client address may hold.
    #[arg(long, env = "COURTSIDE_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1_000)]
    pub(crate) max_connections_per_address: usize,

    /// The gateway's COURTSIDE_LIVE_SUBSCRIBE_GRACE_SECS: how long a
    /// WebSocket may hold no subscription.
    #[arg(long, env = "COURTSIDE_LIVE_SUBSCRIBE_GRACE_SECS", default_value_t = 30)]
    pub(crate) subscribe_grace_secs: u64,

    /// A source address of this machine the gateway trusts as a proxy (in
    /// its COURTSIDE_TRUSTED_PROXIES): the PROXY protocol cases speak from
    /// it as a load balancer would. Without it they only check that
    /// anyone else's header is refused.
    #[arg(long, env = "COURTSIDE_HOSTILE_PROXY_SOURCE")]
    pub(crate) proxy_source: Option<IpAddr>,

    /// Gives each case a loopback source address of its own
    /// (127.77.x.y), so the per-address rate limits see each case as one
    /// client and the cases that exhaust a lane on purpose disturb no
    /// other. On by default when the gateway is on a loopback address.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) spread_sources: Option<bool>,

    /// Runs only the cases whose name contains this text.
    #[arg(long)]
    pub(crate) only: Option<String>,

    #[command(flatten)]
    pub(crate) surface: Surface,
}

/// The routes and events the cases use, as the service under attack names
/// them. The defaults are the gateway's; with `--edge-only` the suite runs
/// the cases every service on the edge must pass, against any such service
/// whose routes are given here.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Surface {
    /// Runs only the domain-free cases (routing, connections, tokens,
    /// limits, rate limits, SSE abuse, footprint): the promises of the edge
    /// and the live-feed engine, which a service built on them keeps
    /// without code of its own.
    #[arg(long, env = "COURTSIDE_HOSTILE_EDGE_ONLY", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) edge_only: bool,

    /// The domain's word for a topic (`match`, `lot`): error codes say
    /// `unknown_<topic>`, and a bad id's message names it.
    #[arg(long, env = "COURTSIDE_HOSTILE_TOPIC", default_value = "match")]
    pub(crate) topic: String,

    /// Where a publisher posts one JSON event with its publish token.
    #[arg(long, env = "COURTSIDE_HOSTILE_PUBLISH_PATH", default_value = "/v1/events")]
    pub(crate) publish_path: String,

    /// A topic's state, `{id}` standing for its id.
    #[arg(long, env = "COURTSIDE_HOSTILE_TOPIC_PATH", default_value = "/v1/matches/{id}")]
    pub(crate) topic_path: String,

    /// A topic's live feed as Server-Sent Events, `{id}` standing for its id.
    #[arg(long, env = "COURTSIDE_HOSTILE_SSE_PATH", default_value = "/v1/matches/{id}/live")]
    pub(crate) sse_path: String,

    /// The first event of a new topic, a JSON object with `{id}` standing
    /// for the topic's id. Default: a football kickoff.
    #[arg(long, env = "COURTSIDE_HOSTILE_FIRST_EVENT")]
    pub(crate) first_event: Option<String>,

    /// A valid event at sequence number `{seq}` of topic `{id}`, after the
    /// first. Default: a football foul.
    #[arg(long, env = "COURTSIDE_HOSTILE_NEXT_EVENT")]
    pub(crate) next_event: Option<String>,
}

/// A case that cannot run against this gateway (no read token given, no
/// pid, benchmark routes turned off): neither passed nor failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Skip(pub(crate) String);

/// What a case returns: a one-line account of what it saw when the
/// gateway kept its promise, an error saying how it did not, or [`Skip`].
pub(crate) type Check<'a> = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send + 'a>>;

/// One named check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) run: for<'a> fn(&'a Ctx) -> Check<'a>,
}

/// A rate as the gateway takes it: a burst of `count`, refilled evenly
/// over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    Off,
    Limited { count: u32, window: Duration },
}

impl Rate {
    /// Requests per second once the burst is spent.
    pub(crate) fn per_second(self) -> Option<f64> {
        match self {
            Self::Off => None,
            Self::Limited { count, window } => Some(f64::from(count) / window.as_secs_f64()),
        }
    }

    /// How long an empty bucket takes to fill again.
    pub(crate) fn refill(self) -> Duration {
        match self {
            Self::Off => Duration::ZERO,
            Self::Limited { window, .. } => window,
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        let expected = || format!("expected COUNT/s, COUNT/min, COUNT/h or off, got {raw:?}");
        let (count, per) = raw.split_once('/').ok_or_else(expected)?;
        let window = match per.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        match count.trim().parse::<u32>().map_err(|_| expected())? {
            0 => Ok(Self::Off),
            count => Ok(Self::Limited { count, window }),
        }
    }
}

/// The gateway's rates, lane by lane (all off when its limits are off).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) ingest: Rate,
    pub(crate) subscribe: Rate,
    pub(crate) compute: Rate,
    pub(crate) per_token: Rate,
}

/// A match this run created, and its head as far as the run knows.
#[derive(Debug)]
pub(crate) struct Match {
    pub(crate) id: String,
    pub(crate) head: u64,
}

/// The gateway process's footprint, read from /proc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) rss_kib: u64,
    pub(crate) fds: usize,
}

/// Everything a case may use.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) addr: SocketAddr,
    publish_token: SecretString,
    read_token: Option<SecretString>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_limit: usize,
    pub(crate) max_line_bytes: usize,
    /// Live connections one address may hold; `None` when the gateway's
    /// per-client limits are off.
    pub(crate) max_connections_per_address: Option<usize>,
    pub(crate) subscribe_grace: Duration,
    /// Where the PROXY protocol cases speak from as a trusted balancer.
    pub(crate) proxy_source: Option<IpAddr>,
    pub(crate) pid: Option<u32>,
    pub(crate) max_rss_growth_kib: u64,
    /// Prefix of every match id this run creates, so runs never collide.
    pub(crate) run: String,
    /// The footprint before the first case.
    pub(crate) baseline: Option<Usage>,
    pub(crate) rates: Rates,
    /// Whether each case connects from a source address of its own.
    pub(crate) spread: bool,
    /// When the next request carrying the publish token may go: the run
    /// keeps its token below the gateway's per-token rate, as a publisher
    /// should, so only the cases meant to exceed it are refused.
    next_publish: tokio::sync::Mutex<tokio::time::Instant>,
    publish_spacing: Duration,
    pub(crate) surface: Surface,
}

/// How a run went.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) skipped: usize,
}

impl Ctx {
    pub(crate) async fn new(settings: Settings) -> anyhow::Result<Self> {
        let addr = tokio::net::lookup_host(&settings.addr)
            .await
            .with_context(|| format!("cannot resolve {}", settings.addr))?
            .next()
            .with_context(|| format!("{} resolves to no address", settings.addr))?;
        let millis =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let pid = settings.pid;
        let limits_off = settings.rate_limit.trim().eq_ignore_ascii_case("off");
        let rates = if limits_off {
            Rates { ingest: Rate::Off, subscribe: Rate::Off, compute: Rate::Off, per_token: Rate::Off }
        } else {
            Rates {
                ingest: settings.rate_limit_ingest,
                subscribe: settings.rate_limit_subscribe,
                compute: settings.rate_limit_compute,
                per_token: settings.rate_limit_per_token,
            }
        };
        let spread = settings.spread_sources.unwrap_or(addr.ip().is_loopback() && addr.is_ipv4());
        // Below the token's rate and, when all cases share one address,
        // below that address's ingest rate too; with a margin for the
        // gateway's clock and ours disagreeing.
        let sustained = [Some(rates.per_token), (!spread).then_some(rates.ingest)]
            .into_iter()
            .flatten()
            .filter_map(Rate::per_second)
            .fold(f64::INFINITY, f64::min);
        let publish_spacing = if sustained.is_finite() {
            Duration::from_secs_f64(1.0 / (sustained * 0.8))
        } else {
            Duration::ZERO
        };
        let publish_token = settings.publish_token.context("a publish token is needed (--publish-token)")?;
        for (flag, template) in
            [("--first-event", &settings.surface.first_event), ("--next-event", &settings.surface.next_event)]
        {
            if let Some(template) = template {
                let filled = fill(template, "x", 2);
                serde_json::from_str::<Value>(&filled)
                    .with_context(|| format!("{flag} is not a JSON object once filled in: {filled}"))?;
            }
        }
        Ok(Self {
            addr,
            publish_token,
            read_token: settings.read_token.filter(|t| !t.expose_secret().is_empty()),
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
            body_limit: settings.body_limit_bytes,
            max_line_bytes: settings.max_line_bytes,
            max_connections_per_address: (!limits_off).then_some(settings.max_connections_per_address),
            subscribe_grace: Duration::from_secs(settings.subscribe_grace_secs),
            proxy_source: settings.proxy_source,
            pid,
            max_rss_growth_kib: settings.max_rss_growth_mib * 1024,
            run: format!("hostile-{millis}-{}", std::process::id()),
            baseline: pid.and_then(usage),
            rates,
            spread,
            next_publish: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            publish_spacing,
            surface: settings.surface,
        })
    }

    /// The source address of case number `index`, when cases get their own.
    pub(crate) fn source_of(&self, index: usize) -> Option<IpAddr> {
        self.spread.then(|| IpAddr::V4(Ipv4Addr::new(127, 77, (index / 250) as u8, (index % 250 + 1) as u8)))
    }

    /// Waits until the run may send another request with its publish token.
    pub(crate) async fn pace_publisher(&self) {
        if self.publish_spacing.is_zero() {
            return;
        }
        let mut next = self.next_publish.lock().await;
        let now = tokio::time::Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + self.publish_spacing;
    }

    pub(crate) fn publish_token(&self) -> &str {
        self.publish_token.expose_secret()
    }

    pub(crate) fn read_token(&self) -> Option<&str> {
        self.read_token.as_ref().map(|t| t.expose_secret())
    }

    /// The read token, or a skip for cases that need one.
    pub(crate) fn require_read_token(&self) -> anyhow::Result<&str> {
        self.read_token().ok_or_else(|| Skip("no --read-token given".into()).into())
    }

    /// A GET as a reader sends it: with the read token, if there is one.
    pub(crate) fn read(&self, target: &str) -> Request {
        match self.read_token() {
            Some(token) => Request::get(target).bearer(token),
            None => Request::get(target),
        }
    }

    /// `target` with the read token in the query string, as browsers send
    /// it on WebSocket and EventSource requests.
    pub(crate) fn with_token(&self, target: &str) -> String {
        match self.read_token() {
            Some(token) => {
                let separator = if target.contains('?') { '&' } else { '?' };
                format!("{target}{separator}token={}", percent_encode(token))
            }
            None => target.to_owned(),
        }
    }

    /// Sends `request` on a connection of its own; one carrying the
    /// publish token waits its turn (see [`Ctx::pace_publisher`]).
    pub(crate) async fn send(&self, request: &Request) -> anyhow::Result<Response> {
        if request.authorization().is_some_and(|value| value.ends_with(self.publish_token())) {
            self.pace_publisher().await;
        }
        http::send(self.addr, request).await
    }

    pub(crate) async fn get(&self, target: &str) -> anyhow::Result<Response> {
        self.send(&self.read(target)).await
    }

    /// Where a publisher posts one event (`/v1/events` on the gateway).
    pub(crate) fn publish_path(&self) -> &str {
        &self.surface.publish_path
    }

    /// Topic `id`'s state (`/v1/matches/{id}` on the gateway).
    pub(crate) fn topic_path(&self, id: &str) -> String {
        self.surface.topic_path.replace("{id}", id)
    }

    /// Topic `id`'s SSE feed (`/v1/matches/{id}/live` on the gateway).
    pub(crate) fn sse_path(&self, id: &str) -> String {
        self.surface.sse_path.replace("{id}", id)
    }

    /// The code of a refusal for a topic that does not exist.
    pub(crate) fn unknown_topic_code(&self) -> String {
        format!("unknown_{}", self.surface.topic)
    }

    /// The first event of topic `id` (a football kickoff by default).
    pub(crate) fn first_event(&self, id: &str) -> Value {
        match &self.surface.first_event {
            Some(template) => serde_json::from_str(&fill(template, id, 1)).unwrap_or(Value::Null),
            None => events::kickoff(id),
        }
    }

    /// A valid event at `seq` of topic `id`, after the first (a football
    /// foul by default).
    pub(crate) fn next_event(&self, id: &str, seq: u64) -> Value {
        match &self.surface.next_event {
            Some(template) => serde_json::from_str(&fill(template, id, seq)).unwrap_or(Value::Null),
            None => events::foul(id, seq),
        }
    }

    /// A POST to the publish route with the publish token.
    pub(crate) fn publisher(&self, body: &[u8], content_type: &str) -> Request {
        Request::post(self.publish_path()).bearer(self.publish_token()).body(content_type, body.to_vec())
    }

    pub(crate) async fn publish(&self, body: &Value) -> anyhow::Result<Response> {
        self.send(&self.publisher(body.to_string().as_bytes(), "application/json")).await
    }

    pub(crate) async fn publish_ok(&self, body: &Value) -> anyhow::Result<Value> {
        let response = self.publish(body).await?;
        response.expect_ok_json().context("publishing a valid event")
    }

    /// A match id of this run.
    pub(crate) fn match_id(&self, tag: &str) -> String {
        format!("{}-{tag}", self.run)
    }

    /// Starts a match (a topic) of this run with its first event, seq 1.
    pub(crate) async fn new_match(&self, tag: &str) -> anyhow::Result<Match> {
        let id = self.match_id(tag);
        let ack = self.publish_ok(&self.first_event(&id)).await?;
        ensure!(ack["status"] == "applied", "kickoff of {id}: {ack}");
        Ok(Match { id, head: 1 })
    }

    /// Proves that the match's head is exactly `m.head`, through the
    /// store's own sequencing rule rather than a read that a cache might
    /// answer: the event at `head + 1` must be applied now (a `duplicate`
    /// means something was applied behind the run's back, a gap that less
    /// was). Advances the head by one.
    pub(crate) async fn expect_head(&self, m: &mut Match) -> anyhow::Result<()> {
        let probe = m.head + 1;
        let response = self.publish(&self.next_event(&m.id, probe)).await?;
        let body = response.json().unwrap_or(Value::Null);
        if response.status() == 200 && body["status"] == "applied" {
            m.head = probe;
            return Ok(());
        }
        if body["status"] == "duplicate" {
            bail!("something was applied: seq {probe} of {} already existed", m.id);
        }
        bail!("head of {} is not {}: seq {probe} answered {} {body}", m.id, m.head, response.status())
    }
}

/// `template` with `{id}` and `{seq}` filled in.
fn fill(template: &str, id: &str, seq: u64) -> String {
    template.replace("{id}", id).replace("{seq}", &seq.to_string())
}

/// The process's resident memory and open descriptors.
pub(crate) fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib =
        status.lines().find(|line| line.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage { rss_kib, fds })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs `cases` in order, printing one line each; the caller prints the
/// total.
pub(crate) async fn run(ctx: &Ctx, cases: &[Case], only: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    // Long enough for the cases that wait out the header-read timeout.
    let limit = Duration::from_secs(60) + ctx.header_read_timeout * 3;
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for (index, case) in
        cases.iter().enumerate().filter(|(_, c)| only.is_none_or(|text| c.name.contains(text)))
    {
        let started = Instant::now();
        let attempt = http::from_source(ctx.source_of(index), tokio::time::timeout(limit, (case.run)(ctx)));
        let outcome = match attempt.await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("no verdict within {} s", limit.as_secs())),
        };
        let millis = started.elapsed().as_millis();
        let (word, reason) = match outcome {
            Ok(detail) => {
                tally.passed += 1;
                ("pass", detail)
            }
            Err(err) if err.downcast_ref::<Skip>().is_some() => {
                tally.skipped += 1;
                ("skip", err.to_string())
            }
            Err(err) => {
                tally.failed += 1;
                ("FAIL", format!("{err:#}"))
            }
        };
        println!("{word}  {:<width$}  {} ({millis} ms)", case.name, http::clip(&reason, 240));
        std::io::stdout().flush().ok();
    }
    tally
}

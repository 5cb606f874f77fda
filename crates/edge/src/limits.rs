//! Rate limits at the edge: how often one client may knock on the routes
//! that cost the gateway, the store or the worker something, before any of
//! that cost is paid.
//!
//! Three lanes, each with its own rate per client address:
//! - [`Lane::Ingest`]: `POST /v1/events` and `POST /v1/events/bulk`;
//! - [`Lane::Subscribe`]: the WebSocket upgrade, each `subscribe` message on
//!   it, and the SSE feed;
//! - [`Lane::Compute`]: the analytics routes (impact, win probability, jobs)
//!   and `/v1/bench/compute`.
//!
//! Publishers are also limited per publish token, over every route that
//! takes one, so a token used from many addresses cannot multiply its rate.
//!
//! The algorithm is `governor`'s GCRA: a rate of `N/min` lets a client send
//! up to `N` requests at once and then one every `1/N` minute. A refused
//! request is answered `429` with `Retry-After`: the seconds until the
//! client's next request would be accepted.
//!
//! The key space is bounded. A client address is what the socket says (a
//! proxy's `X-Forwarded-For` is believed only from the configured trusted
//! proxies); IPv6 addresses count per /64, the block one subscriber is
//! usually given. Each lane tracks at most [`MAX_TRACKED_ADDRESSES`]
//! addresses; addresses that arrive while the table is full share one
//! bucket until the sweep ([`Limits::sweep`], every [`SWEEP_INTERVAL`])
//! drops the addresses whose bucket has filled up again, which are
//! indistinguishable from new ones. Tokens are counted by their position in
//! the configured list, never by the text a client sent.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{Extensions, HeaderMap, HeaderName, Request, request::Parts},
};
use governor::{
    DefaultDirectRateLimiter, NotUntil, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
    nanos::Nanos,
    state::{
        InMemoryState, NotKeyed, StateStore,
        keyed::{DashMapStateStore, ShrinkableKeyedStateStore},
    },
};
use ipnet::IpNet;

use crate::auth::Publisher;

/// Ingest requests per client address, by default: a publisher sending
/// events one by one as they happen stays far below it, and a backlog goes
/// in arrays or bulk NDJSON, one request each.
pub const DEFAULT_INGEST: Rate = Rate::limited(100, Per::Second);
/// Subscribes (connections and `subscribe` messages) per client address, by
/// default. A dashboard page costs one connection plus one subscribe per
/// match it shows (at most 64); a burst of 3,000 lets a few hundred viewers
/// behind one NAT address open it at once.
pub const DEFAULT_SUBSCRIBE: Rate = Rate::limited(3_000, Per::Minute);
/// Requests to the analytics and compute routes per client address, by
/// default: bursts of 300, then five a second. Each may cost the worker's
/// pool tens of milliseconds; the dashboard reads its win probabilities
/// through a shared cache instead (`/v1/views/*`, not limited).
pub const DEFAULT_COMPUTE: Rate = Rate::limited(300, Per::Minute);
/// Requests per publish token, by default, over every route that takes one.
pub const DEFAULT_PER_TOKEN: Rate = Rate::limited(200, Per::Second);

/// Client addresses each lane tracks at most: about 3 MiB per lane.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;
/// How often addresses whose bucket has filled up again are forgotten.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The largest count a rate may have.
const MAX_COUNT: u32 = 1_000_000;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What a request spends: each lane has its own rate and its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Ingest,
    Subscribe,
    Compute,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Ingest, Lane::Subscribe, Lane::Compute];

    /// The lane as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Subscribe => "subscribe",
            Self::Compute => "compute",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Ingest => 0,
            Self::Subscribe => 1,
            Self::Compute => 2,
        }
    }
}

/// The window a rate is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn suffix(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "min",
            Self::Hour => "h",
        }
    }
}

/// A rate as configured: at most `count` requests at once, refilled evenly
/// over `per` (`100/s`, `3000/min`, `10/h`), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Off,
    Limited { count: NonZeroU32, per: Per },
}

impl Rate {
    /// `count` per `per`; a count of zero means off.
    pub const fn limited(count: u32, per: Per) -> Self {
        match NonZeroU32::new(count) {
            Some(count) => Self::Limited { count, per },
            None => Self::Off,
        }
    }

    fn quota(self) -> Option<Quota> {
        match self {
            Self::Off => None,
            Self::Limited { count, per: Per::Second } => Some(Quota::per_second(count)),
            Self::Limited { count, per: Per::Minute } => Some(Quota::per_minute(count)),
            Self::Limited { count, per: Per::Hour } => Some(Quota::per_hour(count)),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Limited { count, per } => write!(f, "{count}/{}", per.suffix()),
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
        let per = match per.trim() {
            "s" => Per::Second,
            "min" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(expected()),
        };
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(format!("the count must be between 1 and {MAX_COUNT}, got {count}"));
        }
        Ok(Self::limited(count, per))
    }
}

/// The proxies whose PROXY protocol header and `X-Forwarded-For` are
/// believed: addresses, CIDR ranges, or host names (a compose service or a
/// Kubernetes Service whose addresses change), which
/// [`TrustedProxies::keep_resolved`] resolves every
/// [`PROXY_RESOLVE_INTERVAL`]. Empty by default, so a client cannot pick
/// its own key by sending either. Clones share the resolved addresses.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
    /// The addresses each host name had at its last successful lookup.
    resolved: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

/// How often host names among the trusted proxies are looked up again.
pub const PROXY_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

impl PartialEq for TrustedProxies {
    fn eq(&self, other: &Self) -> bool {
        self.nets == other.nets && self.hosts == other.hosts
    }
}

impl Eq for TrustedProxies {}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.hosts.is_empty()
    }

    /// Whether `ip` is one of the proxies (IPv4-mapped IPv6 as IPv4): in a
    /// range, or an address a host name had at its last lookup.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.nets.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !self.hosts.is_empty()
            && self
                .resolved
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|addresses| addresses.contains(&ip))
    }

    /// Looks every host name up once; a name that does not resolve now
    /// keeps the addresses it had (a balancer restarting), and one never
    /// resolved trusts nothing yet.
    pub async fn resolve(&self) {
        for host in &self.hosts {
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => {
                    let addresses: Vec<IpAddr> = found.map(|addr| canonical(addr.ip())).collect();
                    self.resolved
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(host.clone(), addresses);
                }
                Err(err) => tracing::debug!(%host, %err, "a trusted proxy's name does not resolve"),
            }
        }
    }

    /// Resolves the host names now and then every
    /// [`PROXY_RESOLVE_INTERVAL`], forever (spawn it on the shutdown).
    /// Returns at once when there are none.
    pub async fn keep_resolved(self) {
        if self.hosts.is_empty() {
            return;
        }
        let mut every = tokio::time::interval(PROXY_RESOLVE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.resolve().await;
        }
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> =
            self.nets.iter().map(ToString::to_string).chain(self.hosts.iter().cloned()).collect();
        f.write_str(&entries.join(","))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let mut proxies = Self::default();
        for entry in raw.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from)) {
                proxies.nets.push(net.trunc());
            } else if is_host_name(entry) {
                proxies.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!("{entry:?} is neither an IP address, a CIDR range nor a host name"));
            }
        }
        Ok(proxies)
    }
}

/// A DNS name as RFC 1123 allows it: dot-separated labels of letters,
/// digits and inner hyphens, with at least one letter somewhere (so a
/// mistyped address is not taken for a name). A trailing dot makes it
/// absolute (`haproxy.`): no search domain of the host is tried, so a name
/// that is not on the container network resolves to nothing rather than to
/// some machine of the host's domain.
fn is_host_name(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    text.len() <= 253
        && text.bytes().any(|byte| byte.is_ascii_alphabetic())
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// Every rate the gateway applies, as configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ingest: Rate,
    pub subscribe: Rate,
    pub compute: Rate,
    /// Per publish token, over every route that takes one.
    pub per_token: Rate,
    pub trusted_proxies: TrustedProxies,
}

impl Settings {
    /// Every lane off.
    pub fn off() -> Self {
        Self {
            ingest: Rate::Off,
            subscribe: Rate::Off,
            compute: Rate::Off,
            per_token: Rate::Off,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    fn rate(&self, lane: Lane) -> Rate {
        match lane {
            Lane::Ingest => self.ingest,
            Lane::Subscribe => self.subscribe,
            Lane::Compute => self.compute,
        }
    }
}

/// The client a request counts against: its address, IPv4-mapped IPv6
/// addresses as IPv4, and IPv6 cut to its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// Requests whose peer is unknown (a router driven without a socket)
    /// share one key: unknown is not unlimited.
    pub const UNKNOWN: ClientKey = ClientKey(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

    pub fn from_ip(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64)))),
        }
    }

    /// The client `request` counts against: the key [`crate::middleware::rate_limit`]
    /// already found, or else the peer the server recorded
    /// (`ConnectInfo`), through trusted proxies.
    pub fn of<B>(limits: &Limits, request: &Request<B>) -> Self {
        Self::from_parts(limits, request.extensions(), request.headers())
    }

    fn from_parts(limits: &Limits, extensions: &Extensions, headers: &HeaderMap) -> Self {
        if let Some(key) = extensions.get::<ClientKey>() {
            return *key;
        }
        let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer);
        limits.client(peer, headers)
    }
}

/// As an extractor: handlers that count more than the request itself
/// against the client (a WebSocket's subscribes) take it this way.
impl<S> FromRequestParts<S> for ClientKey
where
    S: Send + Sync,
    std::sync::Arc<Limits>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let limits = std::sync::Arc::<Limits>::from_ref(state);
        Ok(Self::from_parts(&limits, &parts.extensions, &parts.headers))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request refused for going over a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub lane: Lane,
    pub scope: Scope,
    /// Until the next request would be accepted.
    pub retry_after: Duration,
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    Token,
}

impl Scope {
    fn describe(self) -> &'static str {
        match self {
            Self::Address => "from this address",
            Self::Token => "with this publish token",
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "too many requests {}; retry in {} s", self.scope.describe(), self.retry_after_secs())
    }
}

impl std::error::Error for RateLimited {}

impl RateLimited {
    /// `Retry-After` in whole seconds, rounded up and at least 1, so a
    /// client that waits that long is accepted.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The gateway's rate limiters, one per lane and one per publish token.
pub struct Limits {
    /// Indexed by [`Lane::index`]; `None` where the lane is off.
    lanes: [Option<AddressLimiter>; 3],
    /// One per configured publish token, by position; empty when off.
    tokens: Vec<DefaultDirectRateLimiter>,
    trusted_proxies: TrustedProxies,
    clock: DefaultClock,
}

type AddressLimiter = RateLimiter<ClientKey, BoundedStore, DefaultClock>;

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lanes: Vec<_> =
            Lane::ALL.iter().map(|lane| (lane.label(), self.lanes[lane.index()].is_some())).collect();
        f.debug_struct("Limits")
            .field("lanes_on", &lanes)
            .field("tokens", &self.tokens.len())
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Limits {
    /// The limiters for `settings`, with a bucket for each of the
    /// `publish_tokens` configured tokens.
    pub fn new(settings: &Settings, publish_tokens: usize) -> Self {
        Self::with_capacity(settings, publish_tokens, MAX_TRACKED_ADDRESSES)
    }

    fn with_capacity(settings: &Settings, publish_tokens: usize, capacity: usize) -> Self {
        let clock = DefaultClock::default();
        let lanes = Lane::ALL.map(|lane| {
            settings
                .rate(lane)
                .quota()
                .map(|quota| RateLimiter::new(quota, BoundedStore::new(capacity), clock.clone()))
        });
        let tokens = match settings.per_token.quota() {
            Some(quota) => (0..publish_tokens).map(|_| RateLimiter::direct(quota)).collect(),
            None => Vec::new(),
        };
        Self { lanes, tokens, trusted_proxies: settings.trusted_proxies.clone(), clock }
    }

    /// No limit anywhere.
    pub fn off() -> Self {
        Self::new(&Settings::off(), 0)
    }

    pub fn is_on(&self, lane: Lane) -> bool {
        self.lanes[lane.index()].is_some()
    }

    /// The client a request counts against: the peer's address, or, when
    /// the peer is a trusted proxy, the last address in `X-Forwarded-For`
    /// that is not one of the trusted proxies (the one the outermost
    /// trusted proxy received the request from; addresses further left
    /// were written by the client and prove nothing).
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> ClientKey {
        let Some(peer) = peer.map(|peer| peer.ip()) else {
            return ClientKey::UNKNOWN;
        };
        if self.trusted_proxies.is_empty() || !self.trusted_proxies.contains(peer) {
            return ClientKey::from_ip(peer);
        }
        let mut client = peer;
        for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(value) = value.to_str() else { break };
            for hop in value.rsplit(',') {
                let Ok(hop) = hop.trim().parse::<IpAddr>() else {
                    return ClientKey::from_ip(client);
                };
                client = hop;
                if !self.trusted_proxies.contains(hop) {
                    return ClientKey::from_ip(hop);
                }
            }
        }
        ClientKey::from_ip(client)
    }

    /// Takes one request from `client`'s bucket in `lane`.
    pub fn check(&self, lane: Lane, client: ClientKey) -> Result<(), RateLimited> {
        let Some(limiter) = &self.lanes[lane.index()] else {
            return Ok(());
        };
        limiter.check_key(&client).map_err(|refused| self.refused(lane, Scope::Address, &refused))
    }

    /// Takes one request from `publisher`'s token bucket; the lane is where
    /// the request would have gone, for the metric.
    pub fn check_publisher(&self, lane: Lane, publisher: Publisher) -> Result<(), RateLimited> {
        let Some(limiter) = self.tokens.get(publisher.index()) else {
            return Ok(());
        };
        limiter.check().map_err(|refused| self.refused(lane, Scope::Token, &refused))
    }

    fn refused(
        &self,
        lane: Lane,
        scope: Scope,
        refused: &NotUntil<<DefaultClock as governor::clock::Clock>::Instant>,
    ) -> RateLimited {
        RateLimited { lane, scope, retry_after: refused.wait_time_from(self.clock.now()) }
    }

    /// Forgets the addresses whose bucket has filled up again (to the
    /// limiter they are new clients) and returns the memory; reports how
    /// many each lane still tracks.
    pub fn sweep(&self) {
        for lane in Lane::ALL {
            if let Some(limiter) = &self.lanes[lane.index()] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                let tracked = limiter.len();
                metrics::gauge!(crate::metrics::RATE_LIMIT_TRACKED, "lane" => lane.label())
                    .set(tracked as f64);
            }
        }
    }

    /// Sweeps every [`SWEEP_INTERVAL`], for as long as the task runs.
    pub async fn sweep_periodically(self: std::sync::Arc<Self>) {
        if Lane::ALL.iter().all(|lane| !self.is_on(*lane)) {
            return;
        }
        let mut every = tokio::time::interval(SWEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.sweep();
        }
    }

    #[cfg(test)]
    fn tracked(&self, lane: Lane) -> usize {
        self.lanes[lane.index()].as_ref().map_or(0, AddressLimiter::len)
    }
}

/// Counts one refusal by a rate limit. `route` is a route template and
/// `lane` a lane's label: both from closed sets.
pub fn count_rate_limited(route: &str, lane: Lane) {
    metrics::counter!(crate::metrics::RATE_LIMITED, "route" => route.to_owned(), "lane" => lane.label())
        .increment(1);
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack listener
/// reports IPv4 peers) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `governor`'s map of buckets with a ceiling: once it holds `capacity`
/// addresses, addresses it does not know share the `overflow` bucket, so a
/// flood of distinct addresses costs a bounded amount of memory and is
/// still limited as a whole.
struct BoundedStore {
    buckets: DashMapStateStore<ClientKey>,
    capacity: usize,
    overflow: InMemoryState,
}

impl BoundedStore {
    fn new(capacity: usize) -> Self {
        Self { buckets: DashMapStateStore::default(), capacity, overflow: InMemoryState::default() }
    }
}

impl StateStore for BoundedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Counting the map visits every shard, so it is done only for an
        // address the map does not hold yet. Two new addresses at once may
        // both get in at the ceiling: it is exceeded by at most the number
        // of requests in flight.
        if self.buckets.contains_key(key) || self.buckets.len() < self.capacity {
            self.buckets.measure_and_replace(key, f)
        } else {
            self.overflow.measure_and_replace(&NotKeyed::NonKey, f)
        }
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.buckets.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.buckets);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.buckets)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn settings(ingest: &str) -> Settings {
        Settings { ingest: ingest.parse().expect("valid rate"), ..Settings::off() }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip(text), 40_000))
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).expect("ascii"));
        }
        headers
    }

    #[test]
    fn rates_parse_and_print_back() {
        for text in ["100/s", "3000/min", "10/h", "off"] {
            let rate: Rate = text.parse().expect("valid");
            assert_eq!(rate.to_string(), text);
        }
        assert_eq!(" 5 / s ".parse::<Rate>(), Ok(Rate::limited(5, Per::Second)));
        for bad in ["", "100", "100/d", "0/s", "-1/s", "x/s", "1000001/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should be refused");
        }
        for default in [DEFAULT_INGEST, DEFAULT_SUBSCRIBE, DEFAULT_COMPUTE, DEFAULT_PER_TOKEN] {
            assert_eq!(default.to_string().parse::<Rate>(), Ok(default));
        }
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_delay() {
        let limits = Limits::new(&settings("3/min"), 0);
        let client = ClientKey::from_ip(ip("192.0.2.1"));
        for _ in 0..3 {
            assert_eq!(limits.check(Lane::Ingest, client), Ok(()));
        }
        let refused = limits.check(Lane::Ingest, client).expect_err("over the burst");
        assert_eq!((refused.lane, refused.scope), (Lane::Ingest, Scope::Address));
        // One request comes back every 20 s.
        assert!((19..=20).contains(&refused.retry_after_secs()), "{refused:?}");
        assert_eq!(limits.check(Lane::Ingest, ClientKey::from_ip(ip("192.0.2.2"))), Ok(()));
        // Lanes that are off never refuse.
        for _ in 0..10 {
            assert_eq!(limits.check(Lane::Compute, client), Ok(()));
        }
    }

    #[test]
    fn publishers_are_limited_per_token() {
        let settings = Settings { per_token: "2/min".parse().expect("valid"), ..Settings::off() };
        let limits = Limits::new(&settings, 2);
        let (first, second) = (Publisher::at(0), Publisher::at(1));
        assert_eq!(limits.check_publisher(Lane::Ingest, first), Ok(()));
        assert_eq!(limits.check_publisher(Lane::Compute, first), Ok(()));
        let refused = limits.check_publisher(Lane::Ingest, first).expect_err("third of two");
        assert_eq!(refused.scope, Scope::Token);
        assert_eq!(limits.check_publisher(Lane::Ingest, second), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientKey::from_ip(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::from_ip(ip("2001:db8:1:2::ffff"))
        );
        assert_ne!(ClientKey::from_ip(ip("2001:db8:1:2::1")), ClientKey::from_ip(ip("2001:db8:1:3::1")));
        assert_eq!(ClientKey::from_ip(ip("::ffff:192.0.2.7")), ClientKey::from_ip(ip("192.0.2.7")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let untrusted = Limits::off();
        let spoofed = forwarded(&["203.0.113.9"]);
        assert_eq!(untrusted.client(peer("192.0.2.1"), &spoofed), ClientKey::from_ip(ip("192.0.2.1")));

        let settings =
            Settings { trusted_proxies: "10.0.0.0/8, 192.0.2.50".parse().expect("valid"), ..Settings::off() };
        let limits = Limits::new(&settings, 0);
        // Not from a proxy: the header is the client's own claim.
        assert_eq!(limits.client(peer("192.0.2.1"), &spoofed), ClientKey::from_ip(ip("192.0.2.1")));
        // From a proxy: the rightmost address that is not a proxy of ours;
        // what the client wrote further left is ignored.
        let chain = forwarded(&["198.51.100.1, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(limits.client(peer("10.0.0.1"), &chain), ClientKey::from_ip(ip("203.0.113.9")));
        assert_eq!(limits.client(peer("::ffff:192.0.2.50"), &chain), ClientKey::from_ip(ip("203.0.113.9")));
        // A malformed hop stops the walk at the last address we can vouch for.
        let garbled = forwarded(&["198.51.100.1, not-an-address, 10.9.9.9"]);
        assert_eq!(limits.client(peer("10.0.0.1"), &garbled), ClientKey::from_ip(ip("10.9.9.9")));
        // No header: the proxy itself.
        assert_eq!(limits.client(peer("10.0.0.1"), &HeaderMap::new()), ClientKey::from_ip(ip("10.0.0.1")));
        assert_eq!(limits.client(None, &HeaderMap::new()), ClientKey::UNKNOWN);
        for bad in ["10.0.0.0/33", "10.0.0.300", "lb_internal", "-lb", "lb..internal"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_proxy_named_by_host_is_trusted_at_the_addresses_it_resolves_to() {
        assert!("haproxy.".parse::<TrustedProxies>().is_ok(), "an absolute name");
        let proxies: TrustedProxies = "192.0.2.50, localhost".parse().expect("valid");
        let shared = proxies.clone();
        assert_eq!(proxies.to_string(), "192.0.2.50/32,localhost");
        assert!(!proxies.contains(ip("127.0.0.1")), "nothing trusted before the lookup");
        shared.resolve().await;
        assert!(proxies.contains(ip("127.0.0.1")), "a clone shares the lookup");
        assert!(proxies.contains(ip("192.0.2.50")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        let limits = Limits::new(&Settings { trusted_proxies: proxies, ..Settings::off() }, 0);
        let chain = forwarded(&["203.0.113.9"]);
        assert_eq!(limits.client(peer("127.0.0.1"), &chain), ClientKey::from_ip(ip("203.0.113.9")));
    }

    #[test]
    fn the_address_table_is_bounded() {
        let limits = Limits::with_capacity(&settings("2/min"), 0, 4);
        let key = |last: u8| ClientKey::from_ip(IpAddr::from([192, 0, 2, last]));
        for last in 0..4 {
            assert_eq!(limits.check(Lane::Ingest, key(last)), Ok(()));
        }
        // Full: new addresses share one bucket instead of growing the table.
        let accepted = (10..20).filter(|last| limits.check(Lane::Ingest, key(*last)).is_ok()).count();
        assert_eq!(accepted, 2, "the overflow bucket holds one address's burst");
        assert_eq!(limits.tracked(Lane::Ingest), 4);
        // Known addresses keep their own bucket.
        assert_eq!(limits.check(Lane::Ingest, key(0)), Ok(()));
    }

    #[test]
    fn the_sweep_forgets_addresses_whose_bucket_has_refilled() {
        // One request each: refilled a millisecond later.
        let limits = Limits::new(&settings("1000/s"), 0);
        for last in 0..4u8 {
            assert_eq!(
                limits.check(Lane::Ingest, ClientKey::from_ip(IpAddr::from([192, 0, 2, last]))),
                Ok(())
            );
        }
        assert_eq!(limits.tracked(Lane::Ingest), 4);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            limits.sweep();
            if limits.tracked(Lane::Ingest) == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still tracked: {}", limits.tracked(Lane::Ingest));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

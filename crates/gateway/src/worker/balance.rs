//! Client-side balancing over the worker's replicas.
//!
//! gRPC keeps one long-lived HTTP/2 connection per endpoint, so a load
//! balancer in front of the workers (a Kubernetes ClusterIP Service) would
//! pin each gateway to one pod. Instead the gateway resolves the worker's
//! host itself, keeps a lazily connected channel per address, and picks one
//! per call by power of two choices: of two replicas drawn at random, the
//! one with fewer calls in flight. A headless Service's name resolves to
//! every ready pod; names are resolved again every [`REFRESH`], so replicas
//! that come and go are followed.
//!
//! A replica that fails a call with `Unavailable` (refused, reset, gone) is
//! benched for [`BENCH`]: calls avoid it while any other replica is usable.
//! Without the bench, power of two choices would favour a dead replica,
//! whose calls fail fast and so never look busy.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};

/// How often host names are resolved again.
pub(super) const REFRESH: Duration = Duration::from_secs(10);
/// How long a replica that failed with `Unavailable` is avoided.
pub(super) const BENCH: Duration = Duration::from_secs(2);

/// One address the worker answers on.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) addr: SocketAddr,
    pub(super) channel: Channel,
    in_flight: AtomicUsize,
    benched_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn benched(&self, now: Instant) -> bool {
        self.benched_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|until| until > now)
    }

    /// Avoids this replica for [`BENCH`].
    pub(super) fn bench(&self) {
        *self.benched_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BENCH);
    }
}

/// Counts a call in flight on a replica while it lives.
#[derive(Debug)]
pub(super) struct InFlight(pub(super) Arc<Replica>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the worker is: `scheme://host:port`, one or more.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

/// Every replica of the worker, and how to find them again.
#[derive(Debug)]
pub(super) struct Replicas {
    targets: Vec<Target>,
    connect_timeout: Duration,
    current: RwLock<Arc<[Arc<Replica>]>>,
    draws: AtomicU64,
}

impl Replicas {
    /// From the worker URL setting: one URL, or several separated by
    /// commas. Resolves nothing yet; IP addresses are used as they are.
    pub(super) fn new(urls: &str, connect_timeout: Duration) -> anyhow::Result<Arc<Self>> {
        let mut targets = Vec::new();
        for raw in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let url = url::Url::parse(raw).with_context(|| format!("invalid worker url {raw:?}"))?;
            let host = url.host_str().with_context(|| format!("worker url {raw:?} has no host"))?;
            let port =
                url.port_or_known_default().with_context(|| format!("worker url {raw:?} has no port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            targets.push(Target { scheme: url.scheme().to_owned(), host, port });
        }
        anyhow::ensure!(!targets.is_empty(), "no worker url given");
        let replicas = Arc::new(Self {
            targets,
            connect_timeout,
            current: RwLock::new(Arc::from([])),
            draws: AtomicU64::new(1),
        });
        // Addresses given as IPs need no lookup: usable at once.
        let literal: Vec<(String, SocketAddr)> = replicas
            .targets
            .iter()
            .filter_map(|t| t.host.parse().ok().map(|ip| (t.scheme.clone(), SocketAddr::new(ip, t.port))))
            .collect();
        if literal.len() == replicas.targets.len() {
            replicas.replace(literal)?;
        }
        Ok(replicas)
    }

    /// Whether any target is a name to look up (and so worth refreshing).
    pub(super) fn has_names(&self) -> bool {
        self.targets.iter().any(|t| t.host.parse::<std::net::IpAddr>().is_err())
    }

    fn snapshot(&self) -> Arc<[Arc<Replica>]> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets the replicas to `found`, keeping the channel (and its
    /// connection) of every address that stays.
    fn replace(&self, found: Vec<(String, SocketAddr)>) -> anyhow::Result<()> {
        let old = self.snapshot();
        let mut next: Vec<Arc<Replica>> = Vec::with_capacity(found.len());
        for (scheme, addr) in found {
            if next.iter().any(|r| r.addr == addr) {
                continue;
            }
            let replica = match old.iter().find(|r| r.addr == addr) {
                Some(kept) => Arc::clone(kept),
                None => Arc::new(Replica {
                    addr,
                    channel: Endpoint::from_shared(format!("{scheme}://{addr}"))
                        .context("worker endpoint")?
                        .connect_timeout(self.connect_timeout)
                        .tcp_nodelay(true)
                        .connect_lazy(),
                    in_flight: AtomicUsize::new(0),
                    benched_until: Mutex::new(None),
                }),
            };
            next.push(replica);
        }
        if next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| a.addr != b.addr) {
            let addrs: Vec<String> = next.iter().map(|r| r.addr.to_string()).collect();
            tracing::info!(replicas = %addrs.join(","), "worker replicas");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(next);
        Ok(())
    }

    /// Looks every target up again. A failed or empty lookup keeps what was
    /// known: a DNS hiccup must not empty the list.
    pub(super) async fn refresh(&self) {
        let mut found = Vec::new();
        for target in &self.targets {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addrs) => found.extend(addrs.map(|addr| (target.scheme.clone(), addr))),
                Err(err) => {
                    tracing::warn!(host = %target.host, %err, "cannot resolve the worker's address; keeping the last known");
                    return;
                }
            }
        }
        if found.is_empty() {
            return;
        }
        if let Err(err) = self.replace(found) {
            tracing::warn!(%err, "cannot use the worker's addresses");
        }
    }

    /// Resolves names again every [`REFRESH`] for as long as the replicas
    /// are in use.
    pub(super) fn spawn_refresh(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(replicas) = weak.upgrade() else { return };
                replicas.refresh().await;
                drop(replicas);
                tokio::time::sleep(REFRESH).await;
            }
        });
    }

    /// A replica for the next call, other than `avoid`: of two drawn at
    /// random among those not benched, the one with fewer calls in flight.
    /// If every other replica is benched, one of them anyway: a benched
    /// replica may be back, and the call fails fast if not.
    pub(super) async fn pick(&self, avoid: Option<SocketAddr>) -> Option<InFlight> {
        if self.snapshot().is_empty() {
            self.refresh().await;
        }
        let all = self.snapshot();
        let now = Instant::now();
        let others: Vec<&Arc<Replica>> = all.iter().filter(|r| Some(r.addr) != avoid).collect();
        let usable: Vec<&Arc<Replica>> = others.iter().copied().filter(|r| !r.benched(now)).collect();
        let from = if usable.is_empty() { others } else { usable };
        let chosen = match from.len() {
            0 => return None,
            1 => from[0],
            n => {
                let (a, b) = self.two_of(n);
                let (a, b) = (from[a], from[b]);
                if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) { b } else { a }
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(Arc::clone(chosen)))
    }

    /// Two different indexes below `n` (≥ 2), drawn from a shared
    /// splitmix64 sequence: cheap, and even enough for choosing replicas.
    fn two_of(&self, n: usize) -> (usize, usize) {
        let mut z = self.draws.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let n64 = n as u64;
        let a = (z % n64) as usize;
        let mut b = ((z >> 32) % (n64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        (a, b)
    }

    /// The replicas' addresses, for tests and logs.
    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        self.snapshot().iter().map(|r| r.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_spread_over_replicas_and_avoid_a_benched_one() {
        let replicas = Replicas::new(
            "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3",
            Duration::from_secs(1),
        )
        .expect("valid urls");
        assert_eq!(replicas.addrs().len(), 3, "IP addresses are usable without a lookup");

        let mut picked = std::collections::HashMap::<SocketAddr, usize>::new();
        for _ in 0..3000 {
            let call = replicas.pick(None).await.expect("a replica");
            *picked.entry(call.0.addr).or_default() += 1;
        }
        assert_eq!(picked.len(), 3, "{picked:?}");
        assert!(picked.values().all(|&n| n > 700), "uneven spread: {picked:?}");

        // Calls in flight weigh: with one replica busy, the two others
        // take every call that draws it against them.
        let busy: Vec<InFlight> = (0..50).map(|_| InFlight(Arc::clone(&replicas.snapshot()[0]))).collect();
        for call in &busy {
            call.0.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        for _ in 0..300 {
            let call = replicas.pick(None).await.expect("a replica");
            assert_ne!(call.0.addr, busy[0].0.addr, "picked the busy replica");
        }
        drop(busy);

        let first = replicas.snapshot()[1].addr;
        replicas.snapshot()[1].bench();
        for _ in 0..300 {
            let call = replicas.pick(None).await.expect("a replica");
            assert_ne!(call.0.addr, first, "picked a benched replica");
        }
        let retry = replicas.pick(Some(replicas.snapshot()[0].addr)).await.expect("a replica");
        assert_eq!(retry.0.addr, replicas.snapshot()[2].addr, "the retry avoids the failed and the benched");
    }

    #[test]
    fn a_url_list_needs_at_least_one_valid_url() {
        assert!(Replicas::new("", Duration::from_secs(1)).is_err());
        assert!(Replicas::new("http://", Duration::from_secs(1)).is_err());
        assert!(Replicas::new("not a url", Duration::from_secs(1)).is_err());
    }
}

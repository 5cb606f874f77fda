//! Every case, in the order they run: the request surface first (routing,
//! ingest, auth, limits), then the live feed, then the connection layer,
//! then the rate limits, exceeded on purpose, then the footprint cases,
//! which multiply the cheap attacks and compare the gateway's memory and
//! descriptors with what it had before the first case, and last whether the
//! gateway is still healthy.

mod auth;
mod connection;
mod footprint;
mod ingest;
mod limits;
mod live;
mod ratelimit;
mod routing;

use crate::suite::Case;

/// The cases that name no domain: what the edge and the live-feed engine
/// promise any service built on them (`--edge-only`). They reach the
/// service through its publish, topic and SSE routes, given as settings.
const EDGE: &[&str] = &[
    "routing/",
    "conn/",
    "auth/publish-",
    "auth/refused-before-the-body-is-read",
    "auth/expect-100-continue-gets-401-not-100",
    "auth/reads-need-a-read-token",
    "auth/live-feed-needs-a-read-token",
    "auth/health-and-metrics-are-public",
    "limits/oversized-",
    "limits/body-cut-short-is-refused",
    "limits/non-utf8-path-segment-is-400-json",
    "limits/match-id-not-a-slug-is-400-json",
    "limits/since-not-a-number-is-400-json",
    "limits/last-event-id-garbage-is-400-json",
    "limits/live-connections-per-address-are-capped",
    "sse/",
    "ratelimit/ingest-burst-then-429-json",
    "ratelimit/x-forwarded-for-is-not-believed",
    "ratelimit/subscribe-burst-then-rate_limited",
    "ratelimit/one-token-across-addresses-is-429",
    "health/",
    "footprint/a-thousand-made-up-methods",
    "footprint/three-hundred-sse-404s",
    "footprint/anonymous-bodies-are-not-buffered",
    "footprint/idle-connections-are-closed",
    "footprint/memory-growth-is-bounded",
    "footprint/descriptors-are-released",
];

/// The cases to run: all of them, or with `edge_only` the domain-free ones,
/// in the same order.
pub(crate) fn selected(edge_only: bool) -> Vec<Case> {
    all()
        .into_iter()
        .filter(|case| !edge_only || EDGE.iter().any(|name| case.name.starts_with(name)))
        .collect()
}

pub(crate) fn all() -> Vec<Case> {
    [
        routing::CASES,
        ingest::CASES,
        auth::CASES,
        limits::CASES,
        live::CASES,
        connection::CASES,
        ratelimit::CASES,
        footprint::CASES,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    #[test]
    fn case_names_are_unique_and_grouped() {
        let cases = super::all();
        let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        assert!(names.iter().all(|n| n.contains('/') && !n.contains(' ')), "{names:?}");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
    }

    #[test]
    fn every_edge_entry_names_a_case() {
        let cases = super::all();
        for name in super::EDGE {
            assert!(cases.iter().any(|case| case.name.starts_with(name)), "{name} names no case");
        }
        assert!(super::selected(true).len() < cases.len());
        assert_eq!(super::selected(false).len(), cases.len());
    }
}

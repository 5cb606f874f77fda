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
}

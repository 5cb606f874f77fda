//! Redis errors as the store reports them: "not now" (retryable, a 503 with
//! `Retry-After` to a client) or "never".

use redis::RedisError;

use crate::StoreError;

/// Server error codes that mean "not now" rather than "never": the server
/// is loading its data, is a replica, lost its master, runs a long script,
/// is out of memory, cannot persist, is mid-failover or resharding, or does
/// not (yet) accept our credentials. Retrying later may work, so callers
/// answer 503 with `Retry-After`, not 500.
const RETRYABLE_CODES: &[&str] = &[
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOAUTH",
    "WRONGPASS",
];

pub(crate) fn map_error(err: RedisError) -> StoreError {
    let retryable_code = err.code().is_some_and(|code| RETRYABLE_CODES.contains(&code));
    // On a cluster: a slot moving or without a master (mid-failover), or
    // no connection to the node that serves it yet. A transaction aborts
    // as a whole when one of its commands was redirected (redis-rs follows
    // redirects for plain commands only).
    let cluster_in_flux = err.is_cluster_error()
        || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || (err.code() == Some("EXECABORT")
            && ["Moved", "Ask", "TryAgain", "ClusterDown"].iter().any(|kind| err.to_string().contains(kind)));
    if retryable_code
        || cluster_in_flux
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
    {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(err.to_string())
    }
}

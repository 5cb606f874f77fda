//! The gateway's own tests, in one binary: a real gateway on a free port in
//! front of a stand-in worker that speaks the real gRPC contract
//! (`gateway::testing::stand_in`), so the edge is tested without the
//! analytics worker. Tests that need both tiers live in
//! `crates/courtside/tests`.

mod edge {
    mod api;
    mod cluster_failover;
    mod connections;
    mod dashboard_browser;
    mod fit;
    mod helpers;
    mod hostile;
    mod live;
    mod rate_limit;
    mod redis_restart;
    mod shutdown;
}

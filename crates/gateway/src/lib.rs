//! The edge gateway: axum on tokio. It speaks HTTP/JSON to the world and
//! gRPC to the analytics worker, and never does CPU-heavy work itself.
//!
//! # Layout
//! - [`config`]: settings from `COURTSIDE_*` variables and flags.
//! - [`startup`]: [`Application`] (bind, serve, drain).
//! - [`router`]: the whole HTTP surface; [`middleware`]: what every request
//!   passes through; [`state`]: what handlers share, in parts they can take
//!   one by one.
//! - [`routes`]: the plain HTTP handlers, one module per group.
//! - [`live`]: the live feed: ingest, fan-out, and the WebSocket and SSE
//!   transports.
//! - [`auth`]: bearer tokens for publishers and readers.
//! - [`limits`]: rate limits per client address and per publish token, in
//!   three lanes (ingest, subscribe, compute).
//! - [`worker`]: the gRPC client for the analytics worker. Generated protobuf
//!   types stop there.
//! - [`error`]: [`error::ApiError`], the one mapping from failures to HTTP
//!   responses with a JSON body.
//! - [`health`]: the `healthcheck` subcommand used by container healthchecks.
//! - [`metrics`]: the Prometheus series and the middleware that records them;
//!   [`fit`]: the per-route runtime-fit report it feeds.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod fit;
pub mod health;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use config::GatewayConfig;
pub use router::{router, router_with};
pub use startup::Application;
pub use state::AppState;

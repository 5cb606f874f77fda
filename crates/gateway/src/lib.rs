//! The edge gateway: axum on tokio. It speaks HTTP/JSON to the world and
//! gRPC to the analytics worker, and never does CPU-heavy work itself.
//!
//! # Layout
//! - [`config`]: settings from `COURTSIDE_*` variables and flags.
//! - [`startup`]: [`Application`] (bind, serve, drain) and [`startup::router`],
//!   the whole HTTP surface with its middleware.
//! - [`routes`]: one module per group of handlers.
//! - [`worker`]: the gRPC client for the analytics worker. Generated protobuf
//!   types stop there.
//! - [`error`]: [`error::ApiError`], the one mapping from failures to HTTP
//!   responses with a JSON body.
//! - [`health`]: the `healthcheck` subcommand used by container healthchecks.
//! - [`metrics`]: the Prometheus series and the middleware that records them;
//!   [`fit`]: the per-route runtime-fit report it feeds.

pub mod config;
pub mod error;
pub mod fit;
pub mod health;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod worker;

pub use config::GatewayConfig;
pub use startup::Application;

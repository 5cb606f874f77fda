//! The edge gateway: football on the edge. It speaks HTTP/JSON to the
//! world and gRPC to the analytics worker, and never does CPU-heavy work
//! itself. What every service needs of an edge (the accept loop, limits,
//! tokens, request tracking, errors, health, drain) is the `edge` crate's;
//! this crate is the football routes and their wiring.
//!
//! # Layout
//! - [`config`]: settings from `COURTSIDE_*` variables and flags (the
//!   edge's, flattened in, and the gateway's own).
//! - [`startup`]: [`Application`] (build, serve, drain).
//! - `router`: the gateway's routes; `state`: what handlers share, in parts
//!   they can take one by one.
//! - `routes`: the plain HTTP handlers, one module per group.
//! - [`live`]: the live feed: football on the live-feed engine, ingest,
//!   fan-out, and the WebSocket and SSE transports.
//! - `worker`: the gRPC client for the analytics worker. Generated protobuf
//!   types stop there.
//! - `error`: `ApiError`, football's failures and their codes, answered in
//!   the edge's one error shape.
//! - `metrics`: the gateway's own Prometheus series.

pub mod config;
mod error;
pub mod live;
mod metrics;
mod openapi;
mod router;
pub mod routes;
pub mod startup;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use config::GatewayConfig;
pub use edge::healthcheck;
pub use startup::Application;

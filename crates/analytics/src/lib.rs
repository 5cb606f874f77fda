//! The analytics worker: tonic gRPC in front of a rayon CPU pool.
//!
//! # Layout
//! - [`config`]: settings from `COURTSIDE_*` variables and flags, validated
//!   before anything starts.
//! - [`pool`]: the CPU pool. Every CPU-heavy job runs there, admitted through
//!   a bounded queue; the tokio runtime only moves bytes.
//! - [`service`]: the `courtside.v1.AnalyticsService` implementation. It is
//!   the only module that sees generated protobuf types: it converts them to
//!   `domain` types on the way in and back on the way out.
//! - [`startup`]: [`Application`], which binds, serves health, reflection and
//!   the service, runs the stream consumer and the batch schedule, and
//!   drains on shutdown.
//! - [`stream`]: the edge of the event stream: decodes its protobuf entries.
//! - [`model`]: the xT surface the worker rates with, and exact per-player
//!   tallies of successful moves.
//! - [`impact`]: the map-reduce from stream entries to player impact.
//! - [`consumer`]: the stream consumer that keeps the impact leaderboards
//!   current, each event counted exactly once; [`valuation`]: what an
//!   event is worth (win probability added), shared with the recompute.
//! - [`jobs`]: the batch recompute (xT refit, leaderboards rebuilt and
//!   swapped atomically) and its progress.
//! - [`metrics`]: the worker's Prometheus series, the gRPC layer recording
//!   call durations, and the `/metrics` listener.

pub mod config;
pub mod consumer;
pub mod health;
pub mod impact;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod service;
pub mod startup;
pub mod stream;
pub mod valuation;

pub use config::WorkerConfig;
pub use startup::Application;

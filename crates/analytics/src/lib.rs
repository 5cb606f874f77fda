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
//!   the service, and drains on shutdown.

pub mod config;
pub mod health;
pub mod pool;
pub mod service;
pub mod startup;

pub use config::WorkerConfig;
pub use startup::Application;

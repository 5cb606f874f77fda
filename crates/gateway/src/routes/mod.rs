//! The gateway's handlers, one module per group of routes.

pub mod analytics;
pub mod bench;
pub mod dashboard;
pub mod health;
pub mod ops;

//! The gateway's handlers, one module per group of routes.

pub mod bench;
pub mod dashboard;
pub mod impact;
pub mod jobs;
pub mod matches;
pub mod views;

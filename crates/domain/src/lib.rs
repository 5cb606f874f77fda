//! courtside's domain: the types and models both tiers share.
//!
//! # Layout
//! - [`boards`]: the names of the leaderboards in the shared store, which
//!   the worker writes and the gateway reads.
//! - [`compute`]: the reference CPU benchmark (sum of square roots) and its
//!   validated input size.
//! - [`live`]: matches and their events, parsed at the boundary, and the
//!   pure fold of an event into a match's state.
//! - [`rng`]: a small seeded xoshiro256++ generator, stable across releases.
//! - [`season`]: a seeded synthetic season of SPADL actions and minutes.
//! - [`winprob`]: win probability from a match state and win probability added per goal.
//! - [`xt`]: Expected Threat, exactly as socceraction 1.5.3 computes it, split for map-reduce.
//!
//! # Invariant
//! This crate does no I/O and knows no framework: no tokio, no HTTP, no
//! protobuf. Inputs are parsed into types whose constructors reject invalid
//! values, so code that holds one of these types never checks it again.

pub mod boards;
pub mod compute;
pub mod live;
pub mod rng;
pub mod season;
pub mod winprob;
pub mod xt;

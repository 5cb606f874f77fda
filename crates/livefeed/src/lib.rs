//! The live-feed engine: sequenced events on topics, each topic's state and
//! bounded history, fan-out to any number of subscribers across replicas,
//! resume from a sequence number, and slow-consumer cut-off.
//!
//! It knows nothing of the events it carries. A [`Domain`] says what an
//! event is, which topic it belongs to, and how it folds into the topic's
//! state; the engine does the rest on top of a [`store::StateStore`]:
//!
//! - [`Ingestor`]: events → atomic, sequence-checked appends (state,
//!   history, durable stream, live publication), acknowledged only once
//!   stored.
//! - [`Hub`]: one store subscription per process, fanned out in process as
//!   shared frames; the bounded cache of each topic's latest state.
//! - [`Subscriptions`]: a subscriber's snapshot or replay, gap filling, and
//!   the slow-consumer limit, for any transport.
//!
//! The football feed (`gateway::live`) and the auction in
//! `examples/auction` are two domains on this engine.
//!
//! # On the wire
//! Every update the engine stores and publishes is one JSON object:
//! `{"type":"event","<topic>":"<id>","seq":N,"event":{..},"state":{..}}`,
//! where `<topic>` is [`Domain::TOPIC`] and `event` and `state` are what the
//! domain renders. Subscribers first receive
//! `{"type":"subscribed","<topic>":"<id>","seq":N,"replayed":K,"state":{..}}`
//! (`resync` when history can no longer fill a gap).

mod domain;
pub mod hub;
pub mod ingest;
mod states;
pub mod subscription;

pub use domain::{Domain, NewerFormat};
pub use hub::{Hub, run_bridge};
pub use ingest::{Accepted, Committed, IngestFailure, Ingestor, Prepared, Rejected, Session};
pub use subscription::{Cursor, Disconnect, Opened, Outgoing, SubscribeError, Subscriptions};

/// The metrics the engine records.
pub mod metrics {
    /// Updates received from the store's live channel.
    pub const UPDATES: &str = "courtside_live_updates_received_total";
    /// Resumes and gaps met live, by `outcome`: `recovered`, `reset`,
    /// `gap_filled`, `resync`.
    pub const RECOVERIES: &str = "courtside_live_recoveries_total";
}

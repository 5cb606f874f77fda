//! What a domain tells the engine: its events, its state, and how one
//! folds into the other.

use bytes::Bytes;

/// A kind of live feed: football matches, auction lots, deliveries.
///
/// Each event belongs to one topic (a match, a lot) and carries that topic's
/// next sequence number, starting at 1. The engine checks the sequence,
/// folds the event into the topic's state with [`Domain::start`] or
/// [`Domain::apply`], and stores and publishes what [`Domain::event_json`]
/// and [`Domain::state_json`] render.
///
/// Parsing a publisher's request is not here: it belongs to the HTTP side,
/// which owns the request's shape and its error messages.
pub trait Domain: Send + Sync + 'static {
    /// An accepted event.
    type Event: Send + Sync + 'static;
    /// A topic's state after its latest event.
    type State: Clone + Send + Sync + 'static;
    /// Why an event does not apply to a state; the client sees its message.
    type Rejection: std::error::Error + Send + Sync + 'static;

    /// What a topic is called on the wire and in messages: `"match"`,
    /// `"lot"`.
    const TOPIC: &'static str;

    /// The code of a refusal for a topic that does not exist:
    /// `unknown_match`, `unknown_lot`.
    const UNKNOWN_TOPIC: &'static str = "unknown_topic";

    /// Checks a topic id a client sent (in a path, a subscribe message)
    /// before anything is looked up or allocated for it; the error says what
    /// a valid id is. The default takes 1 to 64 characters of `a-z`, `0-9`,
    /// `-` and `_`: safe in URLs, store keys and log lines without escaping.
    fn check_topic(raw: &str) -> Result<(), String> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(valid_char) {
            let shown: String = raw.chars().take(64).collect();
            return Err(format!(
                "{} id must be 1 to 64 characters of a-z, 0-9, '-' or '_', got {shown:?}",
                Self::TOPIC
            ));
        }
        Ok(())
    }

    /// The topic `event` belongs to.
    fn topic(event: &Self::Event) -> &str;

    /// `event`'s sequence number within its topic.
    fn seq(event: &Self::Event) -> u64;

    /// A topic's first state, from its first event (sequence number 1).
    fn start(event: &Self::Event) -> Result<Self::State, Self::Rejection>;

    /// The state after `event`.
    fn apply(state: &Self::State, event: &Self::Event) -> Result<Self::State, Self::Rejection>;

    /// The event as subscribers see it: a JSON object.
    fn event_json(event: &Self::Event) -> serde_json::Result<Vec<u8>>;

    /// The state as readers and subscribers see it, and as the store keeps
    /// it: a JSON object.
    fn state_json(state: &Self::State) -> serde_json::Result<Vec<u8>>;

    /// A state back from what [`Domain::state_json`] wrote.
    fn state_from_json(json: &[u8]) -> anyhow::Result<Self::State>;

    /// The event's entry in the durable event stream, in whatever encoding
    /// that stream's consumers read. `before` is the topic's state before
    /// the event (none for its first). `traceparent` continues the
    /// publisher's trace in the consumer.
    fn stream_entry(event: &Self::Event, before: Option<&Self::State>, traceparent: &str) -> Bytes;
}

/// A stored state (or entry) written by a newer release than this one, as
/// during a rolling deploy. [`Domain::state_from_json`] returns it (inside
/// its `anyhow::Error`) instead of guessing at fields it does not know;
/// ingest then answers with a retryable `503`, for a replica that reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored {what} has format {format}, newer than this release reads ({known})")]
pub struct NewerFormat {
    pub what: &'static str,
    pub format: u32,
    pub known: u32,
}

/// A domain for the engine's own tests: lots counting their events.
#[cfg(test)]
pub(crate) struct Lots;

#[cfg(test)]
impl Domain for Lots {
    type Event = (String, u64);
    type State = u64;
    type Rejection = std::io::Error;

    const TOPIC: &'static str = "lot";

    fn topic(event: &(String, u64)) -> &str {
        &event.0
    }

    fn seq(event: &(String, u64)) -> u64 {
        event.1
    }

    fn start(_: &(String, u64)) -> Result<u64, std::io::Error> {
        Ok(1)
    }

    fn apply(state: &u64, _: &(String, u64)) -> Result<u64, std::io::Error> {
        Ok(state + 1)
    }

    fn event_json(_: &(String, u64)) -> serde_json::Result<Vec<u8>> {
        Ok(b"{}".to_vec())
    }

    fn state_json(state: &u64) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(state)
    }

    fn state_from_json(json: &[u8]) -> anyhow::Result<u64> {
        Ok(serde_json::from_slice(json)?)
    }

    fn stream_entry(_: &(String, u64), _: Option<&u64>, _: &str) -> Bytes {
        Bytes::new()
    }
}

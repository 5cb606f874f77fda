//! [`Football`]: football on the live-feed engine, and football's client
//! error codes for what the engine refuses.

use anyhow::Context as _;
use domain::live::{ApplyError, MatchEvent, MatchId, MatchState};

use super::{
    stream_entry::stream_entry,
    wire::{EventView, MatchView},
};

/// Football on the live-feed engine: a topic is a match, an event is a
/// [`MatchEvent`], and its state is the [`MatchState`] readers see as a
/// [`MatchView`]. This is the one place the engine learns about football.
#[derive(Debug, Clone, Copy)]
pub struct Football;

impl livefeed::Domain for Football {
    type Event = MatchEvent;
    type State = MatchState;
    type Rejection = ApplyError;

    const TOPIC: &'static str = "match";
    const UNKNOWN_TOPIC: &'static str = "unknown_match";

    fn check_topic(raw: &str) -> Result<(), String> {
        MatchId::parse(raw).map(drop).map_err(|err| err.to_string())
    }

    fn topic(event: &MatchEvent) -> &str {
        event.match_id().as_str()
    }

    fn seq(event: &MatchEvent) -> u64 {
        event.seq()
    }

    fn start(event: &MatchEvent) -> Result<MatchState, ApplyError> {
        MatchState::kickoff(event)
    }

    fn apply(state: &MatchState, event: &MatchEvent) -> Result<MatchState, ApplyError> {
        state.apply(event)
    }

    fn event_json(event: &MatchEvent) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&EventView::from(event))
    }

    fn state_json(state: &MatchState) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&MatchView::from(state))
    }

    fn state_from_json(json: &[u8]) -> anyhow::Result<MatchState> {
        let view: MatchView = serde_json::from_slice(json).context("stored match state is not valid json")?;
        MatchState::try_from(view)
    }

    fn stream_entry(event: &MatchEvent, before: Option<&MatchState>, traceparent: &str) -> bytes::Bytes {
        use prost::Message as _;
        bytes::Bytes::from(stream_entry(event, before, traceparent.to_owned()).encode_to_vec())
    }
}

/// The stable code clients get for an event that does not apply.
pub fn rejection_code(rejected: &livefeed::Rejected<ApplyError>) -> &'static str {
    use livefeed::Rejected;
    match rejected {
        Rejected::Gap { .. } => "sequence_gap",
        Rejected::Apply(ApplyError::NotStarted(_)) => "match_not_started",
        Rejected::Apply(ApplyError::AlreadyStarted(_)) => "match_already_started",
        Rejected::Apply(ApplyError::Finished(_)) => "match_finished",
        Rejected::Apply(ApplyError::UnknownTeam { .. }) => "unknown_team",
        Rejected::Apply(ApplyError::TooManyGoals { .. }) => "too_many_goals",
        Rejected::Apply(ApplyError::TooManyRedCards { .. }) => "too_many_red_cards",
        Rejected::Conflict { .. } => "conflict",
    }
}

/// The stable code clients get for a subscription refused: the engine's,
/// with football's word for a topic.
pub fn subscribe_code(err: &livefeed::SubscribeError) -> &'static str {
    err.code::<Football>()
}

//! Turning published events into stored, fanned-out updates.
//!
//! For each event: parse it, read its match's state, check its sequence
//! number (see [`domain::live::Sequencing`]), fold it into the state, and
//! hand the store one atomic append (state, history entry, durable stream
//! entry, live publication). The event is acknowledged only after the append
//! returns. Batches keep the running state of each match in memory and send
//! their appends in one pipelined round trip per chunk.

use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use bytes::Bytes;
use domain::live::{ApplyError, MatchEvent, MatchId, MatchState, Sequencing};
use prost::Message as _;
use store::{AppendOutcome, HistoryLimits, LogAppend, StateStore, StoreError};

use super::wire::{EventView, MatchView, UpdateFrame, feed_entry};

/// What happened to one accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and published now.
    Applied,
    /// Already stored earlier: acknowledged, not applied again.
    Duplicate,
}

/// Why one event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error(
        "sequence gap in match {match_id}: expected seq {expected}, got {got}; send the missing events first"
    )]
    Gap { match_id: String, expected: u64, got: u64 },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("another publisher wrote match {0} at the same time; retry")]
    Conflict(String),
}

impl Rejected {
    /// Stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gap { .. } => "sequence_gap",
            Self::Apply(ApplyError::NotStarted(_)) => "match_not_started",
            Self::Apply(ApplyError::AlreadyStarted(_)) => "match_already_started",
            Self::Apply(ApplyError::Finished(_)) => "match_finished",
            Self::Apply(ApplyError::UnknownTeam { .. }) => "unknown_team",
            Self::Conflict(_) => "conflict",
        }
    }
}

/// A failure that stops a whole request, not just one event.
#[derive(Debug, thiserror::Error)]
pub enum IngestFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Applies events to the shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    store: Arc<dyn StateStore>,
    limits: HistoryLimits,
}

impl Ingestor {
    pub fn new(store: Arc<dyn StateStore>, limits: HistoryLimits) -> Self {
        Self { store, limits }
    }

    /// Applies `events` in order. Each result says what happened to the
    /// event at the same index; an `Err` of the whole call means the store
    /// failed and some of the batch may have been applied (retrying it is
    /// safe: replays are acknowledged as duplicates).
    pub async fn ingest(
        &self,
        events: &[MatchEvent],
    ) -> Result<Vec<Result<Accepted, Rejected>>, IngestFailure> {
        let traceparent = telemetry::propagation::traceparent(&tracing::Span::current());
        let mut states: HashMap<MatchId, Option<MatchState>> = HashMap::new();
        let mut results: Vec<Option<Result<Accepted, Rejected>>> = Vec::with_capacity(events.len());
        let mut appends = Vec::new();
        let mut appended_at = Vec::new();

        for (index, event) in events.iter().enumerate() {
            let state = match states.get(event.match_id()) {
                Some(state) => state.clone(),
                None => {
                    let loaded = self.load_state(event.match_id()).await?;
                    states.insert(event.match_id().clone(), loaded.clone());
                    loaded
                }
            };
            let head = state.as_ref().map_or(0, |s| s.seq);
            let result = match Sequencing::of(event.seq(), head) {
                Sequencing::Duplicate => Some(Ok(Accepted::Duplicate)),
                Sequencing::Gap { expected } => Some(Err(Rejected::Gap {
                    match_id: event.match_id().to_string(),
                    expected,
                    got: event.seq(),
                })),
                Sequencing::Next => {
                    let next = match &state {
                        None => MatchState::kickoff(event),
                        Some(state) => state.apply(event),
                    };
                    match next {
                        Err(err) => Some(Err(err.into())),
                        Ok(next) => {
                            appends.push(self.build_append(event, &next, &traceparent)?);
                            appended_at.push(index);
                            states.insert(event.match_id().clone(), Some(next));
                            None
                        }
                    }
                }
            };
            results.push(result);
        }

        let outcomes = self.store.append_batch(&appends, self.limits).await?;
        for ((index, outcome), append) in appended_at.into_iter().zip(outcomes).zip(&appends) {
            results[index] = Some(match outcome {
                AppendOutcome::Applied => Ok(Accepted::Applied),
                // Another publisher stored this sequence number between our
                // read and our append.
                AppendOutcome::Duplicate { .. } => Ok(Accepted::Duplicate),
                AppendOutcome::Gap { .. } => Err(Rejected::Conflict(append.log.clone())),
            });
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(Err(Rejected::Conflict(String::new())))).collect())
    }

    async fn load_state(&self, id: &MatchId) -> Result<Option<MatchState>, IngestFailure> {
        let Some((_, bytes)) = self.store.log_state(id.as_str()).await? else { return Ok(None) };
        let view: MatchView =
            serde_json::from_slice(&bytes).context("stored match state is not valid json")?;
        Ok(Some(MatchState::try_from(view).context("stored match state is invalid")?))
    }

    fn build_append(
        &self,
        event: &MatchEvent,
        next: &MatchState,
        traceparent: &str,
    ) -> anyhow::Result<LogAppend> {
        let view = MatchView::from(next);
        let frame = UpdateFrame {
            kind: "event",
            match_id: event.match_id().as_str(),
            seq: event.seq(),
            event: EventView::from(event),
            state: &view,
        };
        Ok(LogAppend {
            log: event.match_id().to_string(),
            seq: event.seq(),
            entry: Bytes::from(serde_json::to_vec(&frame).context("cannot encode the update")?),
            state: Bytes::from(serde_json::to_vec(&view).context("cannot encode the match state")?),
            feed_entry: Bytes::from(feed_entry(event, traceparent.to_owned()).encode_to_vec()),
        })
    }
}

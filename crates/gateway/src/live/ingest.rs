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

use super::{
    hub::Hub,
    wire::{EventView, MatchView, UpdateFrame, stream_entry},
};

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
            Self::Apply(ApplyError::TooManyGoals { .. }) => "too_many_goals",
            Self::Apply(ApplyError::TooManyRedCards { .. }) => "too_many_red_cards",
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

/// What one request has learnt of the matches it publishes to.
#[derive(Debug, Default)]
pub struct Session {
    states: HashMap<MatchId, Option<MatchState>>,
}

impl Session {
    /// Forgets what a commit showed to be stale: matches another publisher
    /// wrote meanwhile, or everything when the store failed (some appends
    /// may have landed).
    pub fn settle(&mut self, committed: &Result<Committed, IngestFailure>) {
        match committed {
            Ok(committed) => {
                for id in &committed.stale {
                    self.states.remove(id);
                }
            }
            Err(_) => self.states.clear(),
        }
    }
}

/// Events checked, folded and encoded, ready for one store round trip.
#[derive(Debug)]
pub struct Prepared {
    results: Vec<Option<Result<Accepted, Rejected>>>,
    appends: Vec<LogAppend>,
    appended_at: Vec<usize>,
}

/// What a commit did to each event of its chunk.
#[derive(Debug)]
pub struct Committed {
    pub results: Vec<Result<Accepted, Rejected>>,
    stale: Vec<MatchId>,
}

/// Applies events to the shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    store: Arc<dyn StateStore>,
    limits: HistoryLimits,
    /// Whose state cache learns each applied state from the append itself,
    /// before the acknowledgement: a read from this gateway after a `200`
    /// sees the write, without waiting for the update stream to bring it.
    hub: Arc<Hub>,
}

impl Ingestor {
    pub fn new(store: Arc<dyn StateStore>, limits: HistoryLimits, hub: Arc<Hub>) -> Self {
        Self { store, limits, hub }
    }

    /// Applies `events` in order. Each result says what happened to the
    /// event at the same index; an `Err` of the whole call means the store
    /// failed and some of the batch may have been applied (retrying it is
    /// safe: replays are acknowledged as duplicates).
    pub async fn ingest(
        &self,
        events: &[MatchEvent],
    ) -> Result<Vec<Result<Accepted, Rejected>>, IngestFailure> {
        self.ingest_in(&mut Session::default(), events).await
    }

    /// [`Ingestor::ingest`] within a session: a request that ingests in
    /// chunks (bulk NDJSON) keeps the running state of each match between
    /// chunks instead of reading it back from the store every time. A
    /// concurrent publisher of the same match is still caught: the store
    /// refuses an append whose sequence number is not the head's next, and
    /// the session forgets that match.
    pub async fn ingest_in(
        &self,
        session: &mut Session,
        events: &[MatchEvent],
    ) -> Result<Vec<Result<Accepted, Rejected>>, IngestFailure> {
        let prepared = self.prepare(session, events).await?;
        let committed = self.commit(prepared).await;
        session.settle(&committed);
        committed.map(|c| c.results)
    }

    /// The CPU half of ingesting: checks sequence numbers, folds each event
    /// into its match's running state and encodes the appends. The session
    /// moves ahead as if they will all be stored; [`Session::settle`] puts it
    /// right when they are not.
    pub async fn prepare(
        &self,
        session: &mut Session,
        events: &[MatchEvent],
    ) -> Result<Prepared, IngestFailure> {
        let traceparent = telemetry::propagation::traceparent(&tracing::Span::current());
        self.load_missing(session, events).await?;
        let mut prepared = Prepared {
            results: Vec::with_capacity(events.len()),
            appends: Vec::new(),
            appended_at: Vec::new(),
        };
        for (index, event) in events.iter().enumerate() {
            let state = session.states.get(event.match_id()).cloned().flatten();
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
                            prepared.appends.push(self.build_append(
                                event,
                                state.as_ref(),
                                &next,
                                &traceparent,
                            )?);
                            prepared.appended_at.push(index);
                            session.states.insert(event.match_id().clone(), Some(next));
                            None
                        }
                    }
                }
            };
            prepared.results.push(result);
        }
        Ok(prepared)
    }

    /// The I/O half: one pipelined round trip to the store. Owns its input,
    /// so a caller can prepare the next chunk while this one is in flight;
    /// commits of one request must still complete in order.
    pub async fn commit(&self, prepared: Prepared) -> Result<Committed, IngestFailure> {
        let Prepared { mut results, appends, appended_at } = prepared;
        let outcomes = self.store.append_batch(&appends, self.limits).await?;
        let mut stale = Vec::new();
        for ((index, outcome), append) in appended_at.into_iter().zip(outcomes).zip(&appends) {
            results[index] = Some(match outcome {
                AppendOutcome::Applied => {
                    self.hub.cache_state(&append.log, append.seq, append.state.clone());
                    Ok(Accepted::Applied)
                }
                // Another publisher stored this sequence number between our
                // read and our append.
                AppendOutcome::Duplicate { .. } => Ok(Accepted::Duplicate),
                AppendOutcome::Gap { .. } => Err(Rejected::Conflict(append.log.clone())),
            });
            if !matches!(outcome, AppendOutcome::Applied)
                && let Ok(id) = MatchId::parse(&append.log)
            {
                stale.push(id);
            }
        }
        let results =
            results.into_iter().map(|r| r.unwrap_or(Err(Rejected::Conflict(String::new())))).collect();
        Ok(Committed { results, stale })
    }

    /// Reads, in one round trip, the state of every match of `events` the
    /// session does not know yet.
    async fn load_missing(&self, session: &mut Session, events: &[MatchEvent]) -> Result<(), IngestFailure> {
        let mut missing: Vec<MatchId> = Vec::new();
        for event in events {
            if !session.states.contains_key(event.match_id()) && !missing.contains(event.match_id()) {
                missing.push(event.match_id().clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        let loaded = self.store.log_states_of(&names).await?;
        for (id, stored) in missing.into_iter().zip(loaded) {
            let state = match stored {
                None => None,
                Some((_, bytes)) => {
                    let view: MatchView =
                        serde_json::from_slice(&bytes).context("stored match state is not valid json")?;
                    Some(MatchState::try_from(view).context("stored match state is invalid")?)
                }
            };
            session.states.insert(id, state);
        }
        Ok(())
    }

    fn build_append(
        &self,
        event: &MatchEvent,
        before: Option<&MatchState>,
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
            stream_entry: Bytes::from(stream_entry(event, before, traceparent.to_owned()).encode_to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use store::MemoryStore;

    use super::*;
    use crate::live::wire::EventBody;

    fn event(body: serde_json::Value) -> MatchEvent {
        let body: EventBody = serde_json::from_value(body).expect("an event body");
        MatchEvent::parse(body.into(), 0).expect("a valid event")
    }

    fn cached_seq(hub: &Hub, id: &str) -> Option<u64> {
        let state = hub.cached_state(id)?;
        Some(serde_json::from_slice::<MatchView>(&state).expect("a cached state").seq)
    }

    #[tokio::test]
    async fn the_state_cache_learns_each_applied_state_before_the_acknowledgement() {
        // No update stream runs here: only the ingest itself can fill the
        // cache, as when the stream is slower than the client's next read.
        let hub = Arc::new(Hub::new(16, 100));
        let ingestor =
            Ingestor::new(Arc::new(MemoryStore::new()), HistoryLimits::default(), Arc::clone(&hub));
        let kickoff = json!({
            "match_id": "ryw", "seq": 1, "kind": "kickoff", "minute": 0,
            "home": {"id": 1, "name": "Rovers"}, "away": {"id": 2, "name": "United"}
        });
        let results = ingestor.ingest(&[event(kickoff)]).await.expect("stored");
        assert!(matches!(results[..], [Ok(Accepted::Applied)]), "{results:?}");
        assert_eq!(cached_seq(&hub, "ryw"), Some(1));
        for seq in 2..=3 {
            let pass = json!({
                "match_id": "ryw", "seq": seq, "kind": "pass", "minute": 3, "team": 1, "player": 7,
                "start": {"x": 40.0, "y": 30.0}, "end": {"x": 60.5, "y": 20.0}, "success": true
            });
            ingestor.ingest(&[event(pass)]).await.expect("stored");
            assert_eq!(cached_seq(&hub, "ryw"), Some(seq), "the cache missed the write it acknowledged");
        }

        // The update stream delivers an older state late: the cache keeps
        // the newer one.
        let late = json!({"type": "event", "match": "ryw", "seq": 2, "state": {}});
        hub.dispatch(Bytes::from(late.to_string()));
        assert_eq!(cached_seq(&hub, "ryw"), Some(3));
    }
}

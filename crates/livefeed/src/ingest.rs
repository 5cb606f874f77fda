//! Turning published events into stored, fanned-out updates.
//!
//! For each event: read its topic's state, check its sequence number, fold
//! it into the state ([`Domain::start`], [`Domain::apply`]), and hand the
//! store one atomic append (state, history entry, durable stream entry, live
//! publication). The event is acknowledged only after the append returns.
//! Batches keep the running state of each topic in memory and send their
//! appends to the store together, one call per chunk.

use std::{collections::HashMap, fmt, sync::Arc};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use store::{AppendOutcome, HistoryLimits, LogAppend, StateStore, StoreError};

use crate::{Domain, hub::Hub};

/// The ordering rule for a topic's events, given the last applied sequence
/// number (`head`, 0 before the first event):
///
/// - `seq <= head`: a replay. Acknowledged, not applied again.
/// - `seq == head + 1`: the next event. Applied.
/// - `seq > head + 1`: a gap. Rejected, nothing applied; the publisher must
///   send the missing events first.
///
/// Refusing gaps keeps every topic's history gapless, which is what lets a
/// subscriber resume from any sequence number and know it missed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequencing {
    Duplicate,
    Next,
    Gap { expected: u64 },
}

impl Sequencing {
    fn of(seq: u64, head: u64) -> Self {
        if seq <= head {
            Self::Duplicate
        } else if seq == head + 1 {
            Self::Next
        } else {
            Self::Gap { expected: head + 1 }
        }
    }
}

/// What happened to one accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and published now.
    Applied,
    /// Already stored earlier: acknowledged, not applied again.
    Duplicate,
}

/// Why one event was not applied. `R` is the domain's
/// [`Domain::Rejection`]; `topic` the domain's word for a topic.
#[derive(Debug, thiserror::Error)]
pub enum Rejected<R: std::error::Error + 'static> {
    #[error(
        "sequence gap in {topic} {id}: expected seq {expected}, got {got}; send the missing events first"
    )]
    Gap { topic: &'static str, id: String, expected: u64, got: u64 },
    #[error(transparent)]
    Apply(R),
    #[error("another publisher wrote {topic} {id} at the same time; retry")]
    Conflict { topic: &'static str, id: String },
}

/// A failure that stops a whole request, not just one event.
#[derive(Debug, thiserror::Error)]
pub enum IngestFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What one request has learnt of the topics it publishes to.
pub struct Session<D: Domain> {
    /// Each topic's head and state; `None` for a topic that does not exist
    /// yet.
    states: HashMap<String, Option<(u64, D::State)>>,
}

impl<D: Domain> Default for Session<D> {
    fn default() -> Self {
        Self { states: HashMap::new() }
    }
}

impl<D: Domain> fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("topics", &self.states.len()).finish()
    }
}

impl<D: Domain> Session<D> {
    /// Forgets what a commit showed to be stale: topics another publisher
    /// wrote meanwhile, or everything when the store failed (some appends
    /// may have landed).
    pub fn settle(&mut self, committed: &Result<Committed<D>, IngestFailure>) {
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

/// What happened to each event, at its index.
pub type Results<D> = Vec<Result<Accepted, Rejected<<D as Domain>::Rejection>>>;

/// Events checked, folded and encoded, ready for one call of the store.
#[derive(Debug)]
pub struct Prepared<D: Domain> {
    results: Vec<Option<Result<Accepted, Rejected<D::Rejection>>>>,
    appends: Vec<LogAppend>,
    appended_at: Vec<usize>,
}

/// What a commit did to each event of its chunk.
#[derive(Debug)]
pub struct Committed<D: Domain> {
    pub results: Results<D>,
    stale: Vec<String>,
}

/// Applies events to the shared state. Cheap to clone.
pub struct Ingestor<D> {
    store: Arc<dyn StateStore>,
    limits: HistoryLimits,
    /// Whose state cache learns each applied state from the append itself,
    /// before the acknowledgement: a read from this process after a `200`
    /// sees the write, without waiting for the update stream to bring it.
    hub: Arc<Hub>,
    domain: std::marker::PhantomData<fn() -> D>,
}

impl<D> Clone for Ingestor<D> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            limits: self.limits,
            hub: Arc::clone(&self.hub),
            domain: self.domain,
        }
    }
}

impl<D> fmt::Debug for Ingestor<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingestor")
            .field("store", &self.store.backend())
            .field("limits", &self.limits)
            .finish()
    }
}

impl<D: Domain> Ingestor<D> {
    pub fn new(store: Arc<dyn StateStore>, limits: HistoryLimits, hub: Arc<Hub>) -> Self {
        Self { store, limits, hub, domain: std::marker::PhantomData }
    }

    /// Applies `events` in order. Each result says what happened to the
    /// event at the same index; an `Err` of the whole call means the store
    /// failed and some of the batch may have been applied (retrying it is
    /// safe: replays are acknowledged as duplicates).
    pub async fn ingest(&self, events: &[D::Event]) -> Result<Results<D>, IngestFailure> {
        self.ingest_in(&mut Session::default(), events).await
    }

    /// [`Ingestor::ingest`] within a session: a request that ingests in
    /// chunks (bulk NDJSON) keeps the running state of each topic between
    /// chunks instead of reading it back from the store every time. A
    /// concurrent publisher of the same topic is still caught: the store
    /// refuses an append whose sequence number is not the head's next, and
    /// the session forgets that topic.
    pub async fn ingest_in(
        &self,
        session: &mut Session<D>,
        events: &[D::Event],
    ) -> Result<Results<D>, IngestFailure> {
        let prepared = self.prepare(session, events).await?;
        let committed = self.commit(prepared).await;
        session.settle(&committed);
        committed.map(|c| c.results)
    }

    /// The CPU half of ingesting: checks sequence numbers, folds each event
    /// into its topic's running state and encodes the appends. The session
    /// moves ahead as if they will all be stored; [`Session::settle`] puts it
    /// right when they are not.
    pub async fn prepare(
        &self,
        session: &mut Session<D>,
        events: &[D::Event],
    ) -> Result<Prepared<D>, IngestFailure> {
        let traceparent = telemetry::propagation::traceparent(&tracing::Span::current());
        self.load_missing(session, events).await?;
        let mut prepared = Prepared {
            results: Vec::with_capacity(events.len()),
            appends: Vec::with_capacity(events.len()),
            appended_at: Vec::with_capacity(events.len()),
        };
        let mut arena = BytesMut::new();
        for (index, event) in events.iter().enumerate() {
            let (topic, seq) = (D::topic(event), D::seq(event));
            let known = session.states.get(topic).and_then(Option::as_ref);
            let head = known.map_or(0, |(head, _)| *head);
            let result = match Sequencing::of(seq, head) {
                Sequencing::Duplicate => Some(Ok(Accepted::Duplicate)),
                Sequencing::Gap { expected } => {
                    Some(Err(Rejected::Gap { topic: D::TOPIC, id: topic.to_owned(), expected, got: seq }))
                }
                Sequencing::Next => {
                    // The state before is only borrowed: the append is built
                    // from it before the session moves on.
                    let before = known.map(|(_, state)| state);
                    let next = match before {
                        None => D::start(event),
                        Some(state) => D::apply(state, event),
                    };
                    match next {
                        Err(err) => Some(Err(Rejected::Apply(err))),
                        Ok(next) => {
                            prepared.appends.push(self.build_append(
                                &mut arena,
                                events.len() - index,
                                event,
                                before,
                                &next,
                                &traceparent,
                            )?);
                            prepared.appended_at.push(index);
                            session.states.insert(topic.to_owned(), Some((seq, next)));
                            None
                        }
                    }
                }
            };
            prepared.results.push(result);
        }
        Ok(prepared)
    }

    /// The I/O half: one call of the store (pipelined by it). Owns its input,
    /// so a caller can prepare the next chunk while this one is in flight;
    /// commits of one request must still complete in order.
    pub async fn commit(&self, prepared: Prepared<D>) -> Result<Committed<D>, IngestFailure> {
        self.commit_after(prepared, None).await
    }

    /// [`Ingestor::commit`] for a chunk sent while the chunk before it may
    /// still be on its way: `previous` resolves (its sender is dropped) once
    /// that commit is over. The store keeps one connection's requests in
    /// order, but a reconnection or a cluster client's retry can let this
    /// chunk overtake the previous one; its appends then find a gap before
    /// them, and are sent once more after `previous`, when the events
    /// they follow are stored. A gap that remains is a real conflict.
    pub async fn commit_after(
        &self,
        prepared: Prepared<D>,
        previous: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<Committed<D>, IngestFailure> {
        let Prepared { mut results, appends, appended_at } = prepared;
        let mut outcomes = self.store.append_batch(&appends, self.limits).await?;
        let overtaken: Vec<usize> =
            (0..outcomes.len()).filter(|&i| matches!(outcomes[i], AppendOutcome::Gap { .. })).collect();
        if let Some(previous) = previous
            && !overtaken.is_empty()
        {
            let _over = previous.await;
            let again: Vec<LogAppend> = overtaken.iter().map(|&i| appends[i].clone()).collect();
            let retried = self.store.append_batch(&again, self.limits).await?;
            for (&i, outcome) in overtaken.iter().zip(retried) {
                outcomes[i] = outcome;
            }
        }
        let mut stale = Vec::new();
        for ((index, outcome), append) in appended_at.into_iter().zip(outcomes).zip(&appends) {
            results[index] = Some(match outcome {
                AppendOutcome::Applied => {
                    // A copy: a slice would keep the block of updates it
                    // was written in alive as long as the cache keeps it.
                    self.hub.cache_state(&append.log, append.seq, Bytes::copy_from_slice(&append.state));
                    Ok(Accepted::Applied)
                }
                // Another publisher stored this sequence number between our
                // read and our append.
                AppendOutcome::Duplicate { .. } => Ok(Accepted::Duplicate),
                AppendOutcome::Gap { .. } => {
                    Err(Rejected::Conflict { topic: D::TOPIC, id: append.log.clone() })
                }
            });
            if !matches!(outcome, AppendOutcome::Applied) {
                stale.push(append.log.clone());
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Rejected::Conflict { topic: D::TOPIC, id: String::new() })))
            .collect();
        Ok(Committed { results, stale })
    }

    /// Reads, in one round trip, the state of every topic of `events` the
    /// session does not know yet.
    async fn load_missing(&self, session: &mut Session<D>, events: &[D::Event]) -> Result<(), IngestFailure> {
        let mut missing: Vec<String> = Vec::new();
        for event in events {
            let topic = D::topic(event);
            if !session.states.contains_key(topic) && !missing.iter().any(|m| m == topic) {
                missing.push(topic.to_owned());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let loaded = self.store.log_states_of(&missing).await?;
        for (id, stored) in missing.into_iter().zip(loaded) {
            let state = match stored {
                None => None,
                Some((head, bytes)) => {
                    Some((head, D::state_from_json(&bytes).map_err(|err| unreadable::<D>(err))?))
                }
            };
            session.states.insert(id, state);
        }
        Ok(())
    }

    /// The append of `event`, its update written into `arena`: a chunk's
    /// updates share a few blocks instead of an allocation each, so a bulk
    /// request's memory is what its updates hold, not what the allocator
    /// makes of thousands of them freed in another order.
    fn build_append(
        &self,
        arena: &mut BytesMut,
        remaining: usize,
        event: &D::Event,
        before: Option<&D::State>,
        next: &D::State,
        traceparent: &str,
    ) -> anyhow::Result<LogAppend> {
        let state = D::state_json(next).with_context(|| format!("cannot encode the {} state", D::TOPIC))?;
        let rendered = D::event_json(event).context("cannot encode the event")?;
        let state_at = update(arena, remaining, D::TOPIC, D::topic(event), D::seq(event), &rendered, &state)?;
        // One buffer holds both, and the store sends the state's bytes once,
        // inside the entry.
        let entry = arena.split().freeze();
        let state = entry.slice(state_at);
        Ok(LogAppend {
            log: D::topic(event).to_owned(),
            seq: D::seq(event),
            entry,
            state,
            stream_entry: D::stream_entry(event, before, traceparent),
        })
    }
}

/// Why a stored state cannot be built on: written by a newer release (a
/// retryable 503: a replica of that release can) or corrupt.
fn unreadable<D: Domain>(err: anyhow::Error) -> IngestFailure {
    if let Some(newer) = err.downcast_ref::<crate::NewerFormat>() {
        return IngestFailure::Store(StoreError::Unavailable(newer.to_string()));
    }
    IngestFailure::Unexpected(err.context(format!("stored {} state is invalid", D::TOPIC)))
}

/// Updates are written into blocks of up to this size, so a chunk of them
/// is a few allocations; a block is sized for the updates still to come, so
/// a single event takes what it needs.
const ARENA_BLOCK: usize = 64 * 1024;

/// One update on the live feed, `{"type":"event","<topic_key>":"<topic>",
/// "seq":N,"event":{..},"state":{..}}`: the event and the topic's state
/// after it. Written once per event at ingest, stored in history, published
/// to every process, and forwarded to subscribers byte for byte. `event` and
/// `state` are the domain's JSON, pasted in as written. The update is
/// written at the end of `out` (empty on entry, its capacity reused while it
/// lasts; `remaining` updates, this one included, are still to be written);
/// returns where the state sits in it.
fn update(
    out: &mut BytesMut,
    remaining: usize,
    topic_key: &str,
    topic: &str,
    seq: u64,
    event: &[u8],
    state: &[u8],
) -> anyhow::Result<std::ops::Range<usize>> {
    use bytes::BufMut as _;
    use std::io::Write as _;
    // The fixed text, the sequence number's digits and the two quoted
    // names: every byte but the names' escapes.
    let size = 72 + topic_key.len() + topic.len() + event.len() + state.len();
    if out.capacity() < size {
        *out = BytesMut::with_capacity(size.saturating_mul(remaining).clamp(size, ARENA_BLOCK.max(size)));
    }
    let mut writer = out.writer();
    writer.write_all(b"{\"type\":\"event\",")?;
    serde_json::to_writer(&mut writer, topic_key)?;
    writer.write_all(b":")?;
    serde_json::to_writer(&mut writer, topic)?;
    write!(writer, ",\"seq\":{seq},\"event\":")?;
    writer.write_all(event)?;
    writer.write_all(b",\"state\":")?;
    let out = writer.into_inner();
    let state_at = out.len()..out.len() + state.len();
    out.put_slice(state);
    out.put_u8(b'}');
    Ok(state_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lots;

    #[test]
    fn an_update_carries_the_domains_json_under_its_topic_key() {
        let mut arena = BytesMut::new();
        let state_at =
            update(&mut arena, 1, "lot", "l\"1", 7, br#"{"bid":5}"#, br#"{"leading":5}"#).expect("an update");
        let entry = arena.split().to_vec();
        assert_eq!(&entry[state_at], br#"{"leading":5}"#);
        let value: serde_json::Value = serde_json::from_slice(&entry).expect("valid json");
        assert_eq!(
            value,
            serde_json::json!({"type": "event", "lot": "l\"1", "seq": 7, "event": {"bid": 5}, "state": {"leading": 5}})
        );
        let text = String::from_utf8(entry).expect("utf-8");
        assert!(text.starts_with(r#"{"type":"event","lot":"#), "the field order changed: {text}");
    }

    #[test]
    fn a_sequence_number_is_next_a_duplicate_or_beyond_a_gap() {
        assert_eq!(Sequencing::of(1, 0), Sequencing::Next);
        assert_eq!(Sequencing::of(5, 5), Sequencing::Duplicate);
        assert_eq!(Sequencing::of(3, 5), Sequencing::Duplicate);
        assert_eq!(Sequencing::of(8, 5), Sequencing::Gap { expected: 6 });
    }

    fn in_memory() -> (Arc<dyn StateStore>, Ingestor<Lots>, Session<Lots>) {
        let store: Arc<dyn StateStore> = Arc::new(store::MemoryStore::new());
        let hub = Arc::new(Hub::new("lot", 8, 10));
        (Arc::clone(&store), Ingestor::new(store, HistoryLimits::default(), hub), Session::default())
    }

    fn events(topic: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
        seqs.map(|seq| (topic.to_owned(), seq)).collect()
    }

    #[tokio::test]
    async fn a_chunk_that_overtakes_the_one_before_it_is_stored_after_it() {
        let (store, ingestor, mut session) = in_memory();
        let first = ingestor.prepare(&mut session, &events("l1", 1..=3)).await.expect("prepare");
        let second = ingestor.prepare(&mut session, &events("l1", 4..=6)).await.expect("prepare");

        // The second reaches the store first.
        let (first_done, after_first) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let ingestor = ingestor.clone();
            async move { ingestor.commit_after(second, Some(after_first)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the overtaking chunk waits for the one before it");
        let first = ingestor.commit_after(first, None).await.expect("commit");
        drop(first_done);
        let second = second.await.expect("task").expect("commit");

        for result in first.results.iter().chain(&second.results) {
            assert!(matches!(result, Ok(Accepted::Applied)), "{result:?}");
        }
        assert_eq!(store.log_state("l1").await.expect("state").map(|(head, _)| head), Some(6));
        let seqs: Vec<u64> =
            store.read_log("l1", 0, 10).await.expect("read").entries.iter().map(|e| e.0).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn a_gap_that_the_chunk_before_does_not_fill_is_a_conflict() {
        let (store, ingestor, mut session) = in_memory();
        let _never_sent = ingestor.prepare(&mut session, &events("l1", 1..=3)).await.expect("prepare");
        let second = ingestor.prepare(&mut session, &events("l1", 4..=5)).await.expect("prepare");
        let (first_done, after_first) = tokio::sync::oneshot::channel::<()>();
        drop(first_done);
        let second = ingestor.commit_after(second, Some(after_first)).await.expect("commit");
        assert!(
            second.results.iter().all(|r| matches!(r, Err(Rejected::Conflict { .. }))),
            "{:?}",
            second.results
        );
        assert_eq!(store.log_state("l1").await.expect("state"), None);
    }
}

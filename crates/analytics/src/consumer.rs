//! The stream consumer: reads the durable event stream through a consumer
//! group, rates each successful move with the current xT model, and adds
//! the ratings to the season and per-match leaderboards.
//!
//! Delivery is at least once (an entry stays pending until acknowledged,
//! and entries of a consumer that died are claimed by another after
//! `claim_idle`); effects are exactly once, because each entry's increments
//! are applied only if its match id and sequence number were not applied
//! before (`StateStore::apply_once`).
//!
//! A consumer whose round failed (the store was failing over, the pool
//! refused) retries its own pending entries first in its next round: they
//! need not wait `claim_idle`, which is for consumers that are gone.
//!
//! Rating one event is a few memory reads, so entries are read in batches
//! and each batch is rated as one job on the CPU pool.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use domain::boards;
use store::{ApplyOutcome, ScoreApply, ScoreIncrement, StateStore, StoreError, StreamEntry};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    metrics::{CONSUMER_APPLIED, CONSUMER_LAG, CONSUMER_PENDING},
    model::{ModelHandle, RatingModel},
    pool::{CpuPool, PoolError},
    stream::{self, StreamDetail},
    valuation,
};

/// The consumer group every worker joins.
pub const GROUP: &str = "analytics";

/// How the consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group (shared by every worker).
    pub group: String,
    /// This consumer's name, unique among live consumers of the group.
    pub name: String,
    /// Entries read per batch.
    pub batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Entries pending this long belong to a consumer presumed dead and are
    /// claimed.
    pub claim_idle: Duration,
}

/// Why one round of consuming failed. The entries involved stay pending and
/// are retried.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// How often the backlog gauges are refreshed: a few commands per
/// partition of a cluster each time, so not every second.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// What the consumer has done so far.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Entries whose increments were applied.
    pub applied: AtomicU64,
    /// Entries delivered again after they were applied (not counted twice).
    pub duplicates: AtomicU64,
    /// Entries a leaderboard rebuild had already counted.
    pub rebuilt: AtomicU64,
    /// Entries that could not be decoded (acknowledged, not counted).
    pub undecodable: AtomicU64,
    /// Entries claimed from dead consumers.
    pub claimed: AtomicU64,
    /// Entries in a format newer than this worker reads: left pending, for
    /// a newer replica to claim (see `stream::EntryError::NewerFormat`).
    pub newer: AtomicU64,
}

/// A consumer of the event stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Consumer {
    store: Arc<dyn StateStore>,
    pool: CpuPool,
    model: ModelHandle,
    config: ConsumerConfig,
    stats: Arc<ConsumerStats>,
}

impl Consumer {
    pub fn new(
        store: Arc<dyn StateStore>,
        pool: CpuPool,
        model: ModelHandle,
        config: ConsumerConfig,
    ) -> Self {
        Self { store, pool, model, config, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `stop` fires. Failures are logged and retried with
    /// backoff; nothing here ends the loop but `stop`.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(group = %self.config.group, consumer = %self.config.name, "stream consumer started");
        let mut group_ready = false;
        // A consumer of this name may have left entries pending (a restart
        // under a configured name): look once at the start, and after every
        // failed round.
        let mut retry_own = true;
        let mut backoff = Duration::from_millis(100);
        let claim_every = (self.config.claim_idle / 2).max(Duration::from_millis(50));
        let mut next_claim = tokio::time::Instant::now();
        let mut next_gauge = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            let round = async {
                if !group_ready {
                    self.store.stream_group_create(&self.config.group).await?;
                    group_ready = true;
                }
                if retry_own {
                    self.retry_own().await?;
                    retry_own = false;
                }
                if tokio::time::Instant::now() >= next_claim {
                    next_claim = tokio::time::Instant::now() + claim_every;
                    self.claim_stale().await?;
                }
                self.read_new(self.config.block.min(claim_every)).await
            };
            let outcome = tokio::select! {
                outcome = round => outcome,
                () = stop.cancelled() => break,
            };
            match outcome {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    if tokio::time::Instant::now() >= next_gauge {
                        next_gauge = tokio::time::Instant::now() + GAUGE_EVERY;
                        self.export_backlog().await;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "stream consumer round failed");
                    // The group may be gone (a flushed Redis): make sure of it.
                    group_ready = false;
                    retry_own = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!(consumer = %self.config.name, "stream consumer stopped");
    }

    /// Publishes how far the group is behind the stream and how much it
    /// holds unacknowledged. Best effort: a failed read skips one sample.
    async fn export_backlog(&self) {
        if let Ok(backlog) = self.store.stream_backlog(&self.config.group).await {
            metrics::gauge!(CONSUMER_LAG).set(backlog.lag as f64);
            metrics::gauge!(CONSUMER_PENDING).set(backlog.pending as f64);
        }
    }

    /// Reads up to one batch of new entries (waiting up to `block`) and
    /// applies them; returns how many were read.
    pub async fn read_new(&self, block: Duration) -> Result<usize, ConsumerError> {
        let entries = self
            .store
            .stream_read_group(&self.config.group, &self.config.name, self.config.batch, block)
            .await?;
        let read = entries.len();
        self.process(entries).await?;
        Ok(read)
    }

    /// Applies a batch of this consumer's own pending entries (delivered,
    /// not acknowledged: a round that failed midway); returns how many.
    /// One batch: entries left pending on purpose (a newer format) must not
    /// keep the consumer here.
    pub async fn retry_own(&self) -> Result<usize, ConsumerError> {
        let entries =
            self.store.stream_read_pending(&self.config.group, &self.config.name, self.config.batch).await?;
        let retried = entries.len();
        if retried > 0 {
            tracing::info!(retried, "retrying entries a failed round left pending");
        }
        self.process(entries).await?;
        Ok(retried)
    }

    /// Claims entries left pending by dead consumers and applies them;
    /// returns how many were claimed.
    pub async fn claim_stale(&self) -> Result<usize, ConsumerError> {
        let mut total = 0;
        loop {
            let entries = self
                .store
                .stream_claim(
                    &self.config.group,
                    &self.config.name,
                    self.config.claim_idle,
                    self.config.batch,
                )
                .await?;
            if entries.is_empty() {
                return Ok(total);
            }
            total += entries.len();
            self.stats.claimed.fetch_add(entries.len() as u64, Ordering::Relaxed);
            tracing::info!(claimed = entries.len(), "claimed entries of a dead consumer");
            self.process(entries).await?;
        }
    }

    /// Rates a batch on the pool, then applies and acknowledges it.
    async fn process(&self, entries: Vec<StreamEntry>) -> Result<(), ConsumerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let span = tracing::info_span!(
            "stream.batch",
            otel.name = "consume events",
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.batch.message_count = entries.len(),
        );
        // Each event was ingested by some request's trace: link to them all,
        // so a trace shows an event from `POST /v1/events` to its leaderboard
        // update.
        for entry in &entries {
            if let Some(traceparent) = stream::traceparent(entry) {
                telemetry::propagation::link_to_traceparent(&span, &traceparent);
            }
        }
        self.process_batch(entries).instrument(span).await
    }

    async fn process_batch(&self, entries: Vec<StreamEntry>) -> Result<(), ConsumerError> {
        let model = self.model.current();
        // Background work: it waits for a background thread, so requests
        // are served first and the stream catches up after.
        let applies =
            self.pool.run_background("rate stream batch", move |_| rate_batch(&entries, &model)).await?.value;
        let Rated { applies, undecodable, newer } = applies;
        self.stats.undecodable.fetch_add(undecodable, Ordering::Relaxed);
        metrics::counter!(CONSUMER_APPLIED, "outcome" => "undecodable").increment(undecodable);
        self.stats.newer.fetch_add(newer, Ordering::Relaxed);
        metrics::counter!(CONSUMER_APPLIED, "outcome" => "newer_format").increment(newer);
        let outcomes = self.store.apply_once(&self.config.group, &applies).await?;
        for outcome in outcomes {
            let (counter, label) = match outcome {
                ApplyOutcome::Applied => (&self.stats.applied, "applied"),
                ApplyOutcome::Duplicate => (&self.stats.duplicates, "duplicate"),
                ApplyOutcome::Rebuilt => (&self.stats.rebuilt, "rebuilt"),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(CONSUMER_APPLIED, "outcome" => label).increment(1);
        }
        Ok(())
    }
}

/// What rating a batch gave.
struct Rated {
    /// One per entry to acknowledge.
    applies: Vec<ScoreApply>,
    /// Entries that could not be decoded: acknowledged without increments,
    /// since retrying cannot fix them and they must not block the stream.
    undecodable: u64,
    /// Entries written by a newer release: left out of `applies`, so they
    /// stay pending until a replica that reads them claims them.
    newer: u64,
}

/// The leaderboard increments of each entry. Every entry read is applied
/// (undecodable ones with no increments) or, written by a newer release,
/// left pending: appends stored together share an entry id and are
/// acknowledged together (`store::StreamEntry::id`), and since one release
/// wrote them all, they are all left or all applied.
fn rate_batch(entries: &[StreamEntry], model: &RatingModel) -> Rated {
    let mut undecodable = 0;
    let mut newer = 0;
    let applies = entries
        .iter()
        .filter_map(|entry| {
            let increments = match stream::decode(entry) {
                Ok(event) => match event.detail {
                    StreamDetail::Move(action) => model
                        .rate(&action)
                        .map(|rating| {
                            let member = action.player().get().to_string();
                            vec![
                                ScoreIncrement {
                                    board: boards::SEASON_XT.into(),
                                    member: member.clone(),
                                    delta: rating,
                                },
                                ScoreIncrement { board: boards::match_xt(&entry.log), member, delta: rating },
                            ]
                        })
                        .unwrap_or_default(),
                    StreamDetail::Goal { scorer: Some(scorer), before: Some(before) } => {
                        valuation::win_probability_added(&before)
                            .map(|added| {
                                let member = scorer.get().to_string();
                                vec![
                                    ScoreIncrement {
                                        board: boards::SEASON_WPA.into(),
                                        member: member.clone(),
                                        delta: added,
                                    },
                                    ScoreIncrement {
                                        board: boards::match_wpa(&entry.log),
                                        member,
                                        delta: added,
                                    },
                                ]
                            })
                            .unwrap_or_default()
                    }
                    _ => Vec::new(),
                },
                Err(err @ stream::EntryError::NewerFormat { .. }) => {
                    tracing::warn!(error = %err, "leaving a stream entry for a newer worker");
                    newer += 1;
                    return None;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an undecodable stream entry");
                    undecodable += 1;
                    Vec::new()
                }
            };
            Some(ScoreApply {
                entry_id: entry.id.clone(),
                scope: entry.log.clone(),
                token: entry.seq.to_string(),
                increments,
            })
        })
        .collect();
    Rated { applies, undecodable, newer }
}

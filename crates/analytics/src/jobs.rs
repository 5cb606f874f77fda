//! Batch jobs: the recompute that refits xT on the whole event stream and
//! rebuilds every leaderboard, run on a schedule and on request, with its
//! progress observable while it runs.
//!
//! One recompute runs at a time per worker: asking for another while one
//! runs joins it. Across worker replicas, a recompute runs under the
//! `recompute` lease in the shared store, extended while it runs: a replica
//! that finds another holding it does not start one (a scheduled run skips
//! its turn, a requested one fails saying so), and a replica that dies
//! mid-job lets another take over once the lease runs out. The new
//! leaderboards are built aside and swapped in atomically
//! (`StateStore::replace_leaderboards`) under the lease's fencing token, so
//! a holder that lost its lease while paused cannot overwrite a newer
//! holder's boards; the same step keeps the stream consumers' concurrent
//! increments from being lost or counted twice.
//!
//! Every job's progress is also kept in the shared store (`jobs:<id>`), so
//! any replica answers `GetJob` and `WatchJob` for any job. A running job's
//! record is rewritten at least every [`HEARTBEAT`]; one not rewritten for
//! [`LEASE_TTL`] belonged to a worker that died, and is reported failed.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use domain::xt::{FitConfig, FitError, XtModel};
use store::{Fence, LeaderboardReplace, StateStore, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    impact::{self, PAGE, StreamTally},
    model::{ImpactTally, MODEL_KEY, ModelHandle, ModelSource, RatingModel},
    pool::{Cancel, CpuPool, PoolError},
    stream::ActionBuilder,
};

/// Finished jobs remembered for `GetJob` and `WatchJob`.
const KEEP_JOBS: usize = 32;

/// The lease a recompute runs under, across worker replicas.
pub const RECOMPUTE_LEASE: &str = "recompute";
/// How long the lease lasts without being extended: how soon another
/// replica takes over from one that died mid-job.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a running recompute extends its lease.
const LEASE_EXTEND: Duration = Duration::from_secs(10);
/// How often a running job's record in the store is rewritten, changed or
/// not: proof that its worker is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Least time between two writes of a job's record while it runs.
const RECORD_EVERY: Duration = Duration::from_millis(500);
/// How often a replica watching another's job reads its record.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Recompute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A snapshot of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// "starting", "reading", "fitting", "rating", "swapping", "done".
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
    pub unit: &'static str,
    pub error: Option<String>,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// Why a recompute failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("reading or writing shared state failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("fitting xt failed: {0}")]
    Fit(#[from] FitError),
    #[error("the worker is shutting down")]
    Stopped,
    #[error("another worker replica is running the recompute; retry when it ends")]
    LeaseHeld,
    #[error("this worker lost the recompute lease to another replica; its results were discarded")]
    LeaseLost,
    /// Rebuilt boards mark every entry they cover as counted, so boards
    /// that skipped entries this worker cannot read would lose them for good.
    #[error(
        "the stream holds {0} entries in a newer format than this worker reads; a newer replica must run the recompute"
    )]
    NewerEntries(u64),
}

/// A job's progress as the store keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    id: String,
    state: String,
    phase: String,
    done: u64,
    total: u64,
    unit: String,
    error: Option<String>,
    started_ms: i64,
    finished_ms: i64,
    /// When the worker running it last wrote this record.
    updated_ms: i64,
}

impl Record {
    fn of(p: &JobProgress) -> Self {
        Self {
            id: p.id.clone(),
            state: match p.state {
                JobState::Running => "running",
                JobState::Succeeded => "succeeded",
                JobState::Failed => "failed",
            }
            .into(),
            phase: p.phase.into(),
            done: p.done,
            total: p.total,
            unit: p.unit.into(),
            error: p.error.clone(),
            started_ms: p.started_ms,
            finished_ms: p.finished_ms,
            updated_ms: now_ms(),
        }
    }

    /// The progress this record says, or that its worker died if a running
    /// job's record is older than the lease.
    fn progress(self) -> JobProgress {
        // The labels are a closed set; anything else reads as "unknown".
        let label = |text: &str, known: &[&'static str]| known.iter().find(|k| **k == text).copied();
        let mut progress = JobProgress {
            id: self.id,
            kind: JobKind::Recompute,
            state: match self.state.as_str() {
                "succeeded" => JobState::Succeeded,
                "failed" => JobState::Failed,
                _ => JobState::Running,
            },
            phase: label(&self.phase, &["starting", "reading", "fitting", "rating", "swapping", "done"])
                .unwrap_or("unknown"),
            done: self.done,
            total: self.total,
            unit: label(&self.unit, &["", "events", "matches", "boards"]).unwrap_or(""),
            error: self.error,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
        };
        let silent_ms = now_ms().saturating_sub(self.updated_ms);
        if progress.state == JobState::Running && silent_ms > LEASE_TTL.as_millis() as i64 {
            progress.state = JobState::Failed;
            progress.error = Some(format!(
                "the worker running it stopped answering {} s ago; start the job again",
                silent_ms / 1000
            ));
            progress.finished_ms = self.updated_ms;
        }
        progress
    }
}

fn record_key(id: &str) -> String {
    format!("jobs:{id}")
}

/// Whether `id` has the shape this worker gives job ids, so a client's
/// text never becomes a store key unchecked.
fn valid_job_id(id: &str) -> bool {
    id.len() <= 64
        && id.strip_prefix("recompute-").is_some_and(|rest| {
            !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        })
}

/// The worker's jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn StateStore>,
    pool: CpuPool,
    model: ModelHandle,
    /// This worker's name as a lease holder (its stream consumer name).
    holder: String,
    /// Fires on shutdown; a running job stops between pages.
    stop: CancellationToken,
    registry: Mutex<Registry>,
    counter: AtomicU64,
}

#[derive(Debug, Default)]
struct Registry {
    /// Newest last.
    jobs: VecDeque<(String, watch::Sender<JobProgress>)>,
    running: Option<watch::Receiver<JobProgress>>,
}

impl Jobs {
    pub fn new(
        store: Arc<dyn StateStore>,
        pool: CpuPool,
        model: ModelHandle,
        holder: String,
        stop: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                pool,
                model,
                holder,
                stop,
                registry: Mutex::default(),
                counter: AtomicU64::new(0),
            }),
        }
    }

    /// Starts a job of `kind`, or joins the one already running, and
    /// returns its progress.
    pub fn start(&self, kind: JobKind) -> watch::Receiver<JobProgress> {
        let mut registry = self.registry();
        if let Some(running) = &registry.running
            && running.borrow().state == JobState::Running
        {
            return running.clone();
        }
        let started_ms = now_ms();
        // Unique across replicas: the holder's name and a counter, hashed.
        use std::hash::BuildHasher as _;
        let unique = std::collections::hash_map::RandomState::new()
            .hash_one((&self.inner.holder, self.inner.counter.fetch_add(1, Ordering::Relaxed)))
            as u32;
        let id = format!("recompute-{started_ms}-{unique:08x}");
        let (progress, watcher) = watch::channel(JobProgress {
            id: id.clone(),
            kind,
            state: JobState::Running,
            phase: "starting",
            done: 0,
            total: 0,
            unit: "",
            error: None,
            started_ms,
            finished_ms: 0,
        });
        registry.jobs.push_back((id, progress.clone()));
        let mut forgotten = Vec::new();
        while registry.jobs.len() > KEEP_JOBS {
            forgotten.extend(registry.jobs.pop_front().map(|(id, _)| id));
        }
        registry.running = Some(watcher.clone());
        drop(registry);

        let recorder = tokio::spawn(keep_record(Arc::clone(&self.inner.store), watcher.clone(), forgotten));
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = recompute(&inner, &progress).await;
            metrics::histogram!(
                crate::metrics::JOB_DURATION,
                "kind" => "recompute",
                "outcome" => if outcome.is_ok() { "succeeded" } else { "failed" },
            )
            .record(started.elapsed().as_secs_f64());
            let mut last = progress.borrow().clone();
            last.finished_ms = now_ms();
            match outcome {
                Ok(()) => {
                    last.state = JobState::Succeeded;
                    last.phase = "done";
                }
                Err(err) => {
                    tracing::error!(job = %last.id, error = %err, "batch job failed");
                    last.state = JobState::Failed;
                    last.error = Some(err.to_string());
                }
            }
            // The store learns the end before anyone here is told of it, so a
            // client who saw it end here sees it ended on every replica; and
            // the recorder is stopped first, so no older snapshot of its can
            // land after the last one.
            recorder.abort();
            let _ = recorder.await;
            write_record(inner.store.as_ref(), &last).await;
            progress.send_replace(last);
        });
        watcher
    }

    /// The latest progress of a job, this worker's or another replica's.
    pub async fn get(&self, id: &str) -> Result<Option<JobProgress>, StoreError> {
        if let Some(local) = self.local(id) {
            return Ok(Some(local.borrow().clone()));
        }
        self.stored(id).await
    }

    /// Progress updates of a job, this worker's or another replica's (read
    /// from the store every [`POLL_EVERY`] until it ends).
    pub async fn watch(&self, id: &str) -> Result<Option<watch::Receiver<JobProgress>>, StoreError> {
        if let Some(local) = self.local(id) {
            return Ok(Some(local));
        }
        let Some(first) = self.stored(id).await? else { return Ok(None) };
        let (sender, receiver) = watch::channel(first);
        let (jobs, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            while sender.borrow().state == JobState::Running && !sender.is_closed() {
                tokio::time::sleep(POLL_EVERY).await;
                match jobs.stored(&id).await {
                    Ok(Some(progress)) => {
                        sender.send_if_modified(|p| {
                            let changed = *p != progress;
                            *p = progress;
                            changed
                        });
                    }
                    Ok(None) => return,
                    Err(err) => tracing::debug!(%err, job = %id, "cannot read a job's record; retrying"),
                }
            }
        });
        Ok(Some(receiver))
    }

    fn local(&self, id: &str) -> Option<watch::Receiver<JobProgress>> {
        self.registry().jobs.iter().find(|(job, _)| job == id).map(|(_, sender)| sender.subscribe())
    }

    async fn stored(&self, id: &str) -> Result<Option<JobProgress>, StoreError> {
        if !valid_job_id(id) {
            return Ok(None);
        }
        let Some(bytes) = self.inner.store.get(&record_key(id)).await? else { return Ok(None) };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(record) => Ok(Some(record.progress())),
            Err(err) => {
                tracing::warn!(%err, job = %id, "a job record in the store is unreadable");
                Ok(None)
            }
        }
    }

    /// Starts a recompute every `interval` until `stop` fires. The first
    /// runs one interval after start-up. A turn on which another replica
    /// holds the recompute lease is skipped: that replica is doing it.
    pub async fn run_schedule(self, interval: Duration, stop: CancellationToken) {
        if interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            let mut progress = self.start(JobKind::Recompute);
            let id = progress.borrow().id.clone();
            let finished = progress.wait_for(|p| p.state != JobState::Running).await.map(|p| p.error.clone());
            match finished {
                Ok(Some(error)) if error == JobError::LeaseHeld.to_string() => {
                    tracing::info!(job = %id, "scheduled recompute skipped: another replica is running it");
                }
                _ => tracing::info!(job = %id, "scheduled recompute ran"),
            }
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every critical section is a few pushes and pops that cannot leave
        // the registry inconsistent, so a poisoned lock is still usable.
        self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Mirrors a job's progress into the store while it runs: on change (at
/// most every [`RECORD_EVERY`]) and every [`HEARTBEAT`] regardless. Deletes
/// the records of `forgotten`, jobs this worker no longer remembers, so the
/// store keeps about as many as the registries do.
async fn keep_record(
    store: Arc<dyn StateStore>,
    mut progress: watch::Receiver<JobProgress>,
    forgotten: Vec<String>,
) {
    for id in forgotten {
        let _ = store.delete(&record_key(&id)).await;
    }
    loop {
        let snapshot = progress.borrow_and_update().clone();
        write_record(store.as_ref(), &snapshot).await;
        tokio::time::sleep(RECORD_EVERY).await;
        // A change or the heartbeat, whichever first; the job's task stops
        // this one before it writes the end.
        let _ = tokio::time::timeout(HEARTBEAT, progress.changed()).await;
    }
}

async fn write_record(store: &dyn StateStore, progress: &JobProgress) {
    let record = serde_json::to_vec(&Record::of(progress)).unwrap_or_default();
    if let Err(err) = store.set(&record_key(&progress.id), Bytes::from(record)).await {
        tracing::warn!(%err, job = %progress.id, "cannot write the job's record; other replicas see it late");
    }
}

/// Runs the recompute under the recompute lease: takes it (or fails at
/// once if another replica has it), extends it while the job runs, and
/// gives it up at the end.
async fn recompute(inner: &Inner, progress: &watch::Sender<JobProgress>) -> Result<(), JobError> {
    let store = inner.store.as_ref();
    let token =
        store.acquire_lease(RECOMPUTE_LEASE, &inner.holder, LEASE_TTL).await?.ok_or(JobError::LeaseHeld)?;
    // Returns only when the lease is lost.
    let keep_lease = async {
        loop {
            tokio::time::sleep(LEASE_EXTEND).await;
            match store.acquire_lease(RECOMPUTE_LEASE, &inner.holder, LEASE_TTL).await {
                Ok(Some(still)) if still == token => {}
                // Another holder, or a new token: it ran out meanwhile.
                Ok(_) => return,
                // The store is down: keep trying; should the lease run out
                // meanwhile, the fence refuses the swap.
                Err(err) => tracing::warn!(%err, "cannot extend the recompute lease"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = rebuild(inner, progress, token) => outcome,
        () = keep_lease => Err(JobError::LeaseLost),
    };
    if let Err(err) = store.release_lease(RECOMPUTE_LEASE, &inner.holder).await {
        tracing::warn!(%err, "cannot release the recompute lease; it runs out by itself");
    }
    outcome
}

/// Refits xT on the whole stream and rebuilds every leaderboard.
async fn rebuild(inner: &Inner, progress: &watch::Sender<JobProgress>, token: u64) -> Result<(), JobError> {
    let store = inner.store.as_ref();
    let total = store.stream_len().await?;
    progress.send_modify(|p| {
        p.phase = "reading";
        p.unit = "events";
        p.total = total;
    });

    // Map-reduce over the stream, one pool job per page.
    let mut tally = StreamTally::default();
    let mut wpa = impact::WpaTally::default();
    let mut builder = ActionBuilder::default();
    let mut through: Option<String> = None;
    let mut done = 0;
    loop {
        if inner.stop.is_cancelled() {
            return Err(JobError::Stopped);
        }
        let store::StreamPage { entries: page, position } =
            store.read_stream(through.as_deref(), PAGE).await?;
        if page.is_empty() {
            break;
        }
        through = position;
        let read = page.len();
        let (returned, page_tally, page_wpa) = run_on_pool(inner, "recompute page", move |cancel| {
            let tally = impact::tally_page(&page, &mut builder, cancel);
            let wpa = impact::WpaTally::of_page(&page);
            (builder, tally, wpa)
        })
        .await?;
        builder = returned;
        tally.absorb(page_tally.ok_or(JobError::Stopped)?);
        wpa.absorb(page_wpa);
        done += read as u64;
        progress.send_modify(|p| {
            p.done = done;
            p.total = p.total.max(done);
        });
        if read < PAGE {
            break;
        }
    }
    tally.absorb(impact::finish(builder));
    if tally.newer > 0 {
        return Err(JobError::NewerEntries(tally.newer));
    }
    if tally.undecodable > 0 {
        tracing::warn!(undecodable = tally.undecodable, "recompute skipped undecodable stream entries");
    }

    progress.send_modify(|p| {
        p.phase = "fitting";
        p.unit = "";
        p.done = 0;
        p.total = 0;
    });
    let StreamTally { counts, matches, .. } = tally;
    // Without a goal in the stream the surface would be all zeros; keep
    // rating with the current model until there is something to learn from.
    let model = if counts.goal_count() == 0 {
        tracing::info!("no goals in the stream yet: keeping the current xt model");
        None
    } else {
        let trained_on = counts.move_count() + counts.shot_count();
        let fitted =
            run_on_pool(inner, "recompute fit", move |_| XtModel::fit(&counts, FitConfig::default()))
                .await??;
        Some(RatingModel::from_fit(&fitted, ModelSource::Feed, trained_on))
    };
    let rating = model.clone().map_or_else(|| inner.model.current(), Arc::new);

    progress.send_modify(|p| {
        p.phase = "rating";
        p.unit = "matches";
        p.total = matches.len() as u64;
    });
    let boards = run_on_pool(inner, "recompute boards", move |_| {
        let mut season = ImpactTally::default();
        let mut boards = Vec::with_capacity(matches.len() + 1);
        let mut matches: Vec<(String, ImpactTally)> = matches.into_iter().collect();
        matches.sort_by(|a, b| a.0.cmp(&b.0));
        for (match_id, tally) in matches {
            boards.push((domain::boards::match_xt(&match_id), rows(&tally, &rating)));
            season.absorb(tally);
        }
        boards.push((domain::boards::SEASON_XT.to_owned(), rows(&season, &rating)));
        // Win probability added by goals: rebuilt with the rest, so the
        // consumer's skip of entries the rebuild covers loses nothing.
        let members = |players: &std::collections::BTreeMap<u32, f64>| {
            players.iter().map(|(player, added)| (player.to_string(), *added)).collect::<Vec<_>>()
        };
        for (match_id, players) in &wpa.matches {
            boards.push((domain::boards::match_wpa(match_id), members(players)));
        }
        if !wpa.season.is_empty() {
            boards.push((domain::boards::SEASON_WPA.to_owned(), members(&wpa.season)));
        }
        boards
    })
    .await?;
    progress.send_modify(|p| p.done = p.total);

    progress.send_modify(|p| {
        p.phase = "swapping";
        p.unit = "boards";
        p.done = 0;
        p.total = boards.len() as u64;
    });
    let board_count = boards.len() as u64;
    let fence = Some(Fence { lease: RECOMPUTE_LEASE.to_owned(), token });
    if !store.replace_leaderboards(&LeaderboardReplace { boards, through, fence }).await? {
        return Err(JobError::LeaseLost);
    }
    if let Some(model) = model {
        store.set(MODEL_KEY, Bytes::from(model.encode())).await?;
        inner.model.replace(model);
    }
    progress.send_modify(|p| p.done = board_count);
    Ok(())
}

fn rows(tally: &ImpactTally, model: &RatingModel) -> Vec<(String, f64)> {
    tally.totals(model).into_iter().map(|impact| (impact.player.get().to_string(), impact.xt)).collect()
}

/// Runs a step of a batch job on the pool's background lane: it waits for
/// a background thread rather than failing, and gives up when the worker
/// stops.
async fn run_on_pool<T, F>(inner: &Inner, name: &'static str, job: F) -> Result<T, JobError>
where
    F: FnOnce(&Cancel) -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::select! {
        outcome = inner.pool.run_background(name, job) => Ok(outcome?.value),
        () = inner.stop.cancelled() => Err(JobError::Stopped),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_the_workers_own_shape_reach_the_store() {
        assert!(valid_job_id("recompute-1764806400000-0a1b2c3d"));
        for hostile in [
            "",
            "recompute-",
            "jobs:x",
            "recompute-1-*",
            "recompute-1-G",
            &format!("recompute-{}", "1".repeat(80)),
        ] {
            assert!(!valid_job_id(hostile), "{hostile:?} passed");
        }
    }

    #[test]
    fn a_running_job_whose_record_went_quiet_reads_as_failed() {
        let running = JobProgress {
            id: "recompute-1-ab".into(),
            kind: JobKind::Recompute,
            state: JobState::Running,
            phase: "rating",
            done: 3,
            total: 9,
            unit: "matches",
            error: None,
            started_ms: 1,
            finished_ms: 0,
        };
        let fresh = Record::of(&running);
        assert_eq!(fresh.progress(), running, "a fresh record reads back as written");

        let quiet =
            Record { updated_ms: now_ms() - 2 * LEASE_TTL.as_millis() as i64, ..Record::of(&running) };
        let read = quiet.progress();
        assert_eq!(read.state, JobState::Failed);
        assert!(read.error.as_deref().is_some_and(|e| e.contains("stopped answering")), "{read:?}");

        let odd = Record { phase: "<script>".into(), unit: "x".repeat(9), ..Record::of(&running) };
        let odd = odd.progress();
        assert_eq!((odd.phase, odd.unit), ("unknown", ""));
    }
}

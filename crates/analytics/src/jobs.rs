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
        let id = format!("recompute-{started_ms}-{}", self.inner.counter.fetch_add(1, Ordering::Relaxed));
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
        while registry.jobs.len() > KEEP_JOBS {
            registry.jobs.pop_front();
        }
        registry.running = Some(watcher.clone());
        drop(registry);

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
            progress.send_modify(|p| {
                p.finished_ms = now_ms();
                match outcome {
                    Ok(()) => {
                        p.state = JobState::Succeeded;
                        p.phase = "done";
                    }
                    Err(err) => {
                        tracing::error!(job = %p.id, error = %err, "batch job failed");
                        p.state = JobState::Failed;
                        p.error = Some(err.to_string());
                    }
                }
            });
        });
        watcher
    }

    /// The latest progress of a job this worker remembers.
    pub fn get(&self, id: &str) -> Option<JobProgress> {
        self.watch(id).map(|w| w.borrow().clone())
    }

    /// Progress updates of a job this worker remembers.
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<JobProgress>> {
        self.registry().jobs.iter().find(|(job, _)| job == id).map(|(_, sender)| sender.subscribe())
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
        let page = store.read_feed(through.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        through = Some(last.id.clone());
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
            boards.push((store::boards::match_xt(&match_id), rows(&tally, &rating)));
            season.absorb(tally);
        }
        boards.push((store::boards::SEASON_XT.to_owned(), rows(&season, &rating)));
        // Win probability added by goals: rebuilt with the rest, so the
        // consumer's skip of entries the rebuild covers loses nothing.
        let members = |players: &std::collections::BTreeMap<u32, f64>| {
            players.iter().map(|(player, added)| (player.to_string(), *added)).collect::<Vec<_>>()
        };
        for (match_id, players) in &wpa.matches {
            boards.push((store::boards::match_wpa(match_id), members(players)));
        }
        if !wpa.season.is_empty() {
            boards.push((store::boards::SEASON_WPA.to_owned(), members(&wpa.season)));
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

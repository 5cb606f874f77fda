//! The CPU pool: a dedicated rayon thread pool behind an admission gate
//! with two lanes.
//!
//! Why a separate pool: tokio's worker threads must stay free to poll
//! sockets. A job that burns a core for 30 ms on a tokio thread delays every
//! connection that thread owns; on the rayon pool it delays nothing but other
//! CPU jobs.
//!
//! Why two lanes: a request (compute, win probability, impact) has a caller
//! waiting for it; background work (the stream consumer, batch jobs, the
//! start-up fit) has not. Background jobs may hold at most `threads - 1`
//! threads (the one thread of a one-thread pool), and they wait for their
//! turn here, in the async world, not in rayon's queue: a request therefore
//! never queues behind a backlog of background work, at worst behind one
//! chunk of it.
//!
//! Why admission by cost: a count of jobs says nothing about how long they
//! take. Four requests for a hundred million samples each fill two threads
//! for seconds, and a gate that only counts jobs lets every cheap call queue
//! behind them until its deadline passes. Each request states its estimated
//! [`Cost`]; the gate admits it while the work admitted and not yet finished
//! fits the backlog budget (`threads × backlog`), so an admitted request
//! starts within about `backlog`. The next caller is told "busy" at once and
//! can retry elsewhere or later. The cap on the number of admitted jobs
//! stays, for jobs too cheap to count.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{counter, gauge, histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument as _;

use crate::metrics::{
    POOL_BACKLOG, POOL_BUSY, POOL_DEADLINE_DROPS, POOL_QUEUE_DEPTH, POOL_QUEUE_WAIT, POOL_REJECTIONS,
    POOL_RUN, POOL_THREADS,
};

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("cpu pool is saturated: {capacity} jobs already admitted")]
    Saturated { capacity: usize },
    #[error("cpu pool is saturated: about {backlog_ms} ms of work already admitted")]
    Backlogged { backlog_ms: u64 },
    #[error("cpu job panicked")]
    Panicked,
}

/// A job's estimated time on one pool thread. Admission needs the right
/// order of magnitude, not precision: the estimates come from the
/// workloads' measured throughput (see the callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cost(u64);

impl Cost {
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }
}

/// Set when nobody waits for a job's result any more (the caller's deadline
/// passed, its client went away). Long jobs check it between chunks of work
/// and stop early; what they return then is thrown away.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Cancels its job when dropped: when the future awaiting the job is
/// dropped, so is this guard.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A finished job's result and where its time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed<T> {
    pub value: T,
    /// From admission until a pool thread picked the job up.
    pub queued: Duration,
    /// On the pool thread.
    pub ran: Duration,
}

/// The worker's CPU pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
    /// Requests admitted and not finished, at most `capacity`.
    admission: Arc<Semaphore>,
    capacity: usize,
    /// Estimated microseconds of work admitted on the request lane and not
    /// finished, at most `budget` (unless one job alone is larger).
    backlog: Arc<AtomicU64>,
    budget: u64,
    /// Threads background work may hold.
    background: Arc<Semaphore>,
}

/// How much the pool admits.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub threads: NonZeroUsize,
    /// Requests that may wait for a thread beyond one per thread.
    pub queue: usize,
    /// How long, at most, admitted requests should take to drain: the
    /// request lane admits `threads × backlog` of estimated work.
    pub backlog: Duration,
}

/// What a job holds while admitted; dropping it gives the room back.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    _backlog: Option<Reserved>,
}

/// A request's share of the backlog budget.
struct Reserved {
    backlog: Arc<AtomicU64>,
    micros: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let left = self.backlog.fetch_sub(self.micros, Ordering::AcqRel) - self.micros;
        gauge!(POOL_BACKLOG).set(left as f64 / 1e6);
    }
}

impl CpuPool {
    pub fn new(limits: PoolLimits) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let threads = limits.threads.get();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cpu-pool-{i}"))
            .build()
            .context("failed to start the cpu pool")?;
        let capacity = threads + limits.queue;
        let budget =
            u64::try_from(limits.backlog.as_micros()).unwrap_or(u64::MAX).saturating_mul(threads as u64);
        gauge!(POOL_THREADS).set(threads as f64);
        Ok(Self {
            pool: Arc::new(pool),
            admission: Arc::new(Semaphore::new(capacity)),
            capacity,
            backlog: Arc::new(AtomicU64::new(0)),
            budget,
            background: Arc::new(Semaphore::new(threads.saturating_sub(1).max(1))),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Requests that may be admitted right now before the pool is saturated.
    pub fn available(&self) -> usize {
        self.admission.available_permits()
    }

    /// Runs a request's `job` on the pool and waits for it without blocking
    /// the async runtime, or refuses it at once when the pool already holds
    /// as much work as it may (see the module comment). The job runs inside
    /// a `pool.task` span, a child of the caller's current span, so traces
    /// show queue wait and run time.
    ///
    /// If the caller stops waiting (its deadline passed, its client went
    /// away) before a thread picks the job up, the job is skipped.
    pub async fn run<T, F>(&self, name: &'static str, cost: Cost, job: F) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self.admit(cost)?;
        self.execute(name, admitted, job).await
    }

    /// Like [`CpuPool::run`], for long jobs that split their work into
    /// chunks: the job gets a [`Cancel`] that is set as soon as the caller
    /// stops waiting, and should check it between chunks.
    pub async fn run_cancellable<T, F>(
        &self,
        name: &'static str,
        cost: Cost,
        job: F,
    ) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce(&Cancel) -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self.admit(cost)?;
        let cancel = Cancel::new();
        let guard = CancelOnDrop(cancel.clone());
        let result = self.execute(name, admitted, move || job(&cancel)).await;
        drop(guard);
        result
    }

    /// Runs background work: it waits (here, not in the pool's queue) until
    /// a background thread is free, and is never refused. The job gets a
    /// [`Cancel`] set when the caller stops waiting.
    pub async fn run_background<T, F>(&self, name: &'static str, job: F) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce(&Cancel) -> T + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed.
        let slot = Arc::clone(&self.background).acquire_owned().await.map_err(|_| PoolError::Panicked)?;
        let cancel = Cancel::new();
        let guard = CancelOnDrop(cancel.clone());
        let result = self.execute(name, Admitted { _slot: slot, _backlog: None }, move || job(&cancel)).await;
        drop(guard);
        result
    }

    /// Takes a job slot and the job's share of the backlog budget, or says
    /// why not.
    fn admit(&self, cost: Cost) -> Result<Admitted, PoolError> {
        let slot = Arc::clone(&self.admission).try_acquire_owned().map_err(|_| {
            counter!(POOL_REJECTIONS, "reason" => "jobs").increment(1);
            PoolError::Saturated { capacity: self.capacity }
        })?;
        let micros = cost.micros();
        let mut current = self.backlog.load(Ordering::Acquire);
        loop {
            // An idle pool takes any one job, however large: its size was
            // checked against the configured maximum before it came here.
            if current > 0 && current.saturating_add(micros) > self.budget {
                counter!(POOL_REJECTIONS, "reason" => "backlog").increment(1);
                return Err(PoolError::Backlogged { backlog_ms: current / 1_000 });
            }
            match self.backlog.compare_exchange_weak(
                current,
                current.saturating_add(micros),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        gauge!(POOL_BACKLOG).set(current.saturating_add(micros) as f64 / 1e6);
        Ok(Admitted { _slot: slot, _backlog: Some(Reserved { backlog: Arc::clone(&self.backlog), micros }) })
    }

    async fn execute<T, F>(
        &self,
        name: &'static str,
        admitted: Admitted,
        job: F,
    ) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let depth = gauge!(POOL_QUEUE_DEPTH);
        depth.increment(1.0);

        let span = tracing::info_span!(
            "pool.task",
            otel.name = format!("pool {name}"),
            job = name,
            queue_micros = tracing::field::Empty,
            run_micros = tracing::field::Empty,
        );
        let (tx, rx) = oneshot::channel();
        let start = Instant::now();
        let task_span = span.clone();
        self.pool.spawn(move || {
            depth.decrement(1.0);
            if tx.is_closed() {
                counter!(POOL_DEADLINE_DROPS).increment(1);
                return;
            }
            let _entered = task_span.enter();
            let queued = start.elapsed();
            let started = Instant::now();
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let ran = started.elapsed();
            task_span.record("queue_micros", micros(queued));
            task_span.record("run_micros", micros(ran));
            histogram!(POOL_QUEUE_WAIT, "task" => name).record(queued.as_secs_f64());
            histogram!(POOL_RUN, "task" => name).record(ran.as_secs_f64());
            gauge!(POOL_BUSY).increment(ran.as_secs_f64());
            // Free the room before answering, so a caller that submits again
            // as soon as it has the result is not refused.
            drop(admitted);
            // The receiver may have gone away meanwhile; nobody is left to tell.
            let _ = tx.send(value.map(|value| Timed { value, queued, ran }));
        });

        match rx.instrument(span).await {
            Ok(Ok(timed)) => Ok(timed),
            Ok(Err(_panic)) => Err(PoolError::Panicked),
            // The sender is dropped without sending only if the job panicked
            // outside catch_unwind, which cannot happen; treat it the same.
            Err(_) => Err(PoolError::Panicked),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    const FREE: Cost = Cost::from_micros(0);

    fn pool(threads: usize, queue: usize) -> CpuPool {
        pool_with_backlog(threads, queue, Duration::from_secs(3_600))
    }

    fn pool_with_backlog(threads: usize, queue: usize, backlog: Duration) -> CpuPool {
        let threads = NonZeroUsize::new(threads).expect("non-zero");
        CpuPool::new(PoolLimits { threads, queue, backlog }).expect("pool starts")
    }

    /// Holds a pool thread until the returned sender is used or dropped.
    fn holder() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (release, blocked) = mpsc::channel::<()>();
        (release, move || {
            let _ = blocked.recv();
        })
    }

    #[tokio::test]
    async fn work_beyond_the_backlog_is_refused_at_once_and_room_comes_back() {
        // Two threads, 100 ms of work each: a 200 ms budget.
        let pool = pool_with_backlog(2, 16, Duration::from_millis(100));
        let (release, hold) = holder();
        let held = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run("hold", Cost::from_micros(150_000), hold).await })
        };
        while pool.backlog.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }

        // 150 ms admitted: 40 ms more fits, 60 ms does not, however many
        // job slots are free.
        assert_eq!(
            pool.run("too much", Cost::from_micros(60_000), || ()).await,
            Err(PoolError::Backlogged { backlog_ms: 150 })
        );
        assert!(pool.run("fits", Cost::from_micros(40_000), || ()).await.is_ok());

        release.send(()).expect("release");
        held.await.expect("task").expect("held job completes");
        assert_eq!(pool.backlog.load(Ordering::Acquire), 0, "finished work still counted");
        assert!(pool.run("room again", Cost::from_micros(60_000), || ()).await.is_ok());
    }

    #[tokio::test]
    async fn an_idle_pool_takes_one_job_larger_than_its_whole_budget() {
        let pool = pool_with_backlog(1, 4, Duration::from_millis(1));
        let big = Cost::from_micros(10_000_000);
        let (release, hold) = holder();
        let held = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run("big", big, hold).await })
        };
        while pool.backlog.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // A second one must wait for the first: refused, not queued.
        assert!(matches!(pool.run("second", big, || ()).await, Err(PoolError::Backlogged { .. })));
        release.send(()).expect("release");
        held.await.expect("task").expect("the large job ran");
    }

    #[tokio::test]
    async fn background_work_leaves_a_thread_to_requests() {
        let pool = pool(2, 0);
        // Two background jobs that never end by themselves: only one may
        // run; the other waits for a background thread.
        let (release_first, first) = holder();
        let (release_second, second) = holder();
        let started = Arc::new(AtomicU64::new(0));
        let mut background = Vec::new();
        for job in [Box::new(first) as Box<dyn FnOnce() + Send>, Box::new(second)] {
            let pool = pool.clone();
            let started = Arc::clone(&started);
            background.push(tokio::spawn(async move {
                pool.run_background("background", move |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    job();
                })
                .await
            }));
        }
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }

        // A request runs at once on the thread background work left free.
        let answered = tokio::time::timeout(Duration::from_secs(5), pool.run("request", FREE, || 42)).await;
        assert_eq!(answered.expect("the request was not starved").map(|t| t.value), Ok(42));
        assert_eq!(started.load(Ordering::SeqCst), 1, "background work took every thread");

        release_first.send(()).expect("release");
        release_second.send(()).expect("release");
        for job in background {
            job.await.expect("task").expect("background job completes");
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "the waiting background job never ran");
    }

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_threads() {
        let pool = pool(1, 0);
        let timed = pool.run("probe", FREE, || std::thread::current().name().map(str::to_owned)).await;
        assert_eq!(timed.expect("job runs").value.as_deref(), Some("cpu-pool-0"));
    }

    #[tokio::test]
    async fn rejects_at_once_when_every_slot_is_taken() {
        let pool = pool(1, 1);
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(std::sync::Mutex::new(blocked));

        // Two jobs fill the pool: one runs, one waits in the queue.
        let mut held = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            let blocked = Arc::clone(&blocked);
            held.push(tokio::spawn(async move {
                pool.run("hold", FREE, move || {
                    let _ = blocked.lock().map(|rx| rx.recv());
                })
                .await
            }));
        }
        // Wait until both are admitted.
        while pool.admission.available_permits() > 0 {
            tokio::task::yield_now().await;
        }

        let third = pool.run("rejected", FREE, || ()).await;
        assert_eq!(third, Err(PoolError::Saturated { capacity: 2 }));

        release.send(()).expect("release first");
        release.send(()).expect("release second");
        for job in held {
            job.await.expect("task").expect("held job completes");
        }
        // Capacity is back once the jobs are done.
        assert!(pool.run("after", FREE, || ()).await.is_ok());
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_before_it_started_is_skipped() {
        let pool = pool(1, 1);
        let (release, blocked) = mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run("hold", FREE, move || {
                    let _ = blocked.recv();
                })
                .await
            })
        };
        while pool.admission.available_permits() > 1 {
            tokio::task::yield_now().await;
        }

        // Queued behind the holder; its caller stops waiting at once.
        let ran = Arc::new(AtomicBool::new(false));
        let queued = {
            let ran = Arc::clone(&ran);
            pool.run("queued", FREE, move || ran.store(true, Ordering::SeqCst))
        };
        let waited = tokio::time::timeout(Duration::from_millis(20), queued).await;
        assert!(waited.is_err(), "the queued job cannot finish while the pool is held");

        release.send(()).expect("release");
        holder.await.expect("task").expect("holder completes");
        // Once the holder is done the queue drains; the abandoned job must
        // have been skipped, not run.
        assert!(pool.run("after", FREE, || ()).await.is_ok());
        while pool.admission.available_permits() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!ran.load(Ordering::SeqCst), "a job nobody waits for ran anyway");
    }

    #[tokio::test]
    async fn a_running_job_sees_cancellation_when_its_caller_gives_up() {
        let pool = pool(1, 0);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, seen_rx) = mpsc::channel::<bool>();
        let mut job = Box::pin(pool.run_cancellable("long", FREE, move |cancel| {
            let _ = started_tx.send(());
            // Chunks of work, checking the flag between them.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !cancel.is_cancelled() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = seen_tx.send(cancel.is_cancelled());
        }));
        tokio::select! {
            _ = &mut job => panic!("the job cannot finish before it is cancelled"),
            _ = started_rx => {}
        }
        drop(job);
        let seen = tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .expect("task");
        assert_eq!(seen, Ok(true), "the job stopped because it saw the flag");
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_frees_its_slot() {
        let pool = pool(1, 0);
        let result = pool.run("boom", FREE, || -> u8 { panic!("job failed") }).await;
        assert_eq!(result, Err(PoolError::Panicked));
        assert_eq!(pool.run("next", FREE, || 7).await.map(|t| t.value), Ok(7));
    }
}

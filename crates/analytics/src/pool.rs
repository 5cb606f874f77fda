//! The CPU pool: a dedicated rayon thread pool behind an admission gate.
//!
//! Why a separate pool: tokio's worker threads must stay free to poll
//! sockets. A job that burns a core for 30 ms on a tokio thread delays every
//! connection that thread owns; on the rayon pool it delays nothing but other
//! CPU jobs.
//!
//! Why an admission gate: without one, a burst of requests queues without
//! bound and each waits longer than its caller will. The gate admits at most
//! `threads + queue` jobs; the next caller is told "busy" at once and can
//! retry elsewhere or later.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{counter, gauge, histogram};
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument as _;

use crate::metrics::{
    POOL_BUSY, POOL_DEADLINE_DROPS, POOL_QUEUE_DEPTH, POOL_QUEUE_WAIT, POOL_REJECTIONS, POOL_RUN,
    POOL_THREADS,
};

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("cpu pool is saturated: {capacity} jobs already admitted")]
    Saturated { capacity: usize },
    #[error("cpu job panicked")]
    Panicked,
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
    admission: Arc<Semaphore>,
    capacity: usize,
}

impl CpuPool {
    /// A pool of `threads` threads that admits `threads + queue` jobs.
    pub fn new(threads: NonZeroUsize, queue: usize) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.get())
            .thread_name(|i| format!("cpu-pool-{i}"))
            .build()
            .context("failed to start the cpu pool")?;
        let capacity = threads.get() + queue;
        gauge!(POOL_THREADS).set(threads.get() as f64);
        Ok(Self { pool: Arc::new(pool), admission: Arc::new(Semaphore::new(capacity)), capacity })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Jobs that may be admitted right now before the pool is saturated.
    pub fn available(&self) -> usize {
        self.admission.available_permits()
    }

    /// Like [`CpuPool::run`], for long jobs that split their work into
    /// chunks: the job gets a [`Cancel`] that is set as soon as the caller
    /// stops waiting, and should check it between chunks.
    pub async fn run_cancellable<T, F>(&self, name: &'static str, job: F) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce(&Cancel) -> T + Send + 'static,
        T: Send + 'static,
    {
        let cancel = Cancel::new();
        let guard = CancelOnDrop(cancel.clone());
        let result = self.run(name, move || job(&cancel)).await;
        drop(guard);
        result
    }

    /// Runs `job` on the pool and waits for it without blocking the async
    /// runtime. The job runs inside a `pool.task` span, a child of the
    /// caller's current span, so traces show queue wait and run time.
    ///
    /// If the caller stops waiting (its deadline passed, its client went
    /// away) before a thread picks the job up, the job is skipped.
    pub async fn run<T, F>(&self, name: &'static str, job: F) -> Result<Timed<T>, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.admission).try_acquire_owned().map_err(|_| {
            counter!(POOL_REJECTIONS).increment(1);
            PoolError::Saturated { capacity: self.capacity }
        })?;
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
        let admitted = Instant::now();
        let task_span = span.clone();
        self.pool.spawn(move || {
            depth.decrement(1.0);
            if tx.is_closed() {
                counter!(POOL_DEADLINE_DROPS).increment(1);
                return;
            }
            let _entered = task_span.enter();
            let queued = admitted.elapsed();
            let started = Instant::now();
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let ran = started.elapsed();
            task_span.record("queue_micros", micros(queued));
            task_span.record("run_micros", micros(ran));
            histogram!(POOL_QUEUE_WAIT, "task" => name).record(queued.as_secs_f64());
            histogram!(POOL_RUN, "task" => name).record(ran.as_secs_f64());
            gauge!(POOL_BUSY).increment(ran.as_secs_f64());
            // Free the slot before answering, so a caller that submits again
            // as soon as it has the result is not refused.
            drop(permit);
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

    fn pool(threads: usize, queue: usize) -> CpuPool {
        CpuPool::new(NonZeroUsize::new(threads).expect("non-zero"), queue).expect("pool starts")
    }

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_threads() {
        let pool = pool(1, 0);
        let timed = pool.run("probe", || std::thread::current().name().map(str::to_owned)).await;
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
                pool.run("hold", move || {
                    let _ = blocked.lock().map(|rx| rx.recv());
                })
                .await
            }));
        }
        // Wait until both are admitted.
        while pool.admission.available_permits() > 0 {
            tokio::task::yield_now().await;
        }

        let third = pool.run("rejected", || ()).await;
        assert_eq!(third, Err(PoolError::Saturated { capacity: 2 }));

        release.send(()).expect("release first");
        release.send(()).expect("release second");
        for job in held {
            job.await.expect("task").expect("held job completes");
        }
        // Capacity is back once the jobs are done.
        assert!(pool.run("after", || ()).await.is_ok());
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_before_it_started_is_skipped() {
        let pool = pool(1, 1);
        let (release, blocked) = mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run("hold", move || {
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
            pool.run("queued", move || ran.store(true, Ordering::SeqCst))
        };
        let waited = tokio::time::timeout(Duration::from_millis(20), queued).await;
        assert!(waited.is_err(), "the queued job cannot finish while the pool is held");

        release.send(()).expect("release");
        holder.await.expect("task").expect("holder completes");
        // Once the holder is done the queue drains; the abandoned job must
        // have been skipped, not run.
        assert!(pool.run("after", || ()).await.is_ok());
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
        let mut job = Box::pin(pool.run_cancellable("long", move |cancel| {
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
        let result = pool.run("boom", || -> u8 { panic!("job failed") }).await;
        assert_eq!(result, Err(PoolError::Panicked));
        assert_eq!(pool.run("next", || 7).await.map(|t| t.value), Ok(7));
    }
}

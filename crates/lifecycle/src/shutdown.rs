//! [`Shutdown`]: how a service stops, in one place (the edge's HTTP services
//! and the analytics worker alike).
//!
//! Two steps, each a token of one cancellation tree, and one tracker:
//! - **draining** fires at the signal: readiness answers 503 (the worker's
//!   gRPC health NOT_SERVING) at once, so load balancers stop sending, while
//!   every request is still served for the drain delay;
//! - **closing** fires after it: the listener closes, long-lived
//!   connections (WebSocket, SSE) end with their close frame, background
//!   tasks stop;
//! - the **tracker** holds what the HTTP server no longer sees (upgraded
//!   WebSockets, background tasks): the drain waits for each, within the
//!   grace period.
//!
//! `closing` is the root and `draining` its child, so closing implies
//! draining whichever way a service stops.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The shutdown of one service. Cheap to clone: each clone is the same
/// shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown {
    closing: CancellationToken,
    draining: CancellationToken,
    tasks: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let closing = CancellationToken::new();
        let draining = closing.child_token();
        Self { closing, draining, tasks: TaskTracker::new() }
    }

    /// Whether readiness should fail: shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Fires when long-lived connections must end: select on it in every
    /// stream, and send the close frame.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Begins the drain: readiness fails from now on.
    pub fn begin_drain(&self) {
        self.draining.cancel();
    }

    /// Closes the listener and every long-lived connection.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Runs `task` until it ends or closing fires, and makes the drain wait
    /// for it: for a connection the HTTP server no longer sees, or a
    /// background loop.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let closing = self.closing.clone();
        self.tasks.spawn(async move {
            closing.run_until_cancelled(task).await;
        })
    }

    /// Makes the drain wait for `future` (which ends by itself once closing
    /// fires, after sending its close frame), without cutting it short.
    pub fn track<F: Future>(&self, future: F) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.tasks.track_future(future)
    }

    /// Keeps the drain waiting while held: taken for a connection before it
    /// leaves the HTTP server (a WebSocket upgrade), dropped once its close
    /// frame is sent.
    pub fn hold(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.tasks.token()
    }

    /// Resolves once every tracked task has ended; call after closing.
    pub async fn tasks_ended(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closing_implies_draining_but_not_the_other_way() {
        let shutdown = Shutdown::new();
        shutdown.begin_drain();
        assert!(shutdown.is_draining());
        assert!(!shutdown.closing().is_cancelled());

        let other = Shutdown::new();
        other.close();
        assert!(other.is_draining(), "closing drains too");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_for_tracked_work_and_stops_spawned_loops() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending());
        let tracked = shutdown.track(tokio::time::sleep(Duration::from_secs(2)));
        let connection = tokio::spawn(tracked);
        shutdown.close();
        let started = tokio::time::Instant::now();
        shutdown.tasks_ended().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2), "waited for the tracked connection");
        connection.await.expect("joined");
    }
}

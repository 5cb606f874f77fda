//! Process lifecycle shared by both services.
//!
//! A service stops in two steps: a signal (Ctrl-C or SIGTERM) tells it to
//! stop accepting work, then in-flight work drains for at most a grace
//! period. A drain that runs out of time is cut short with a warning instead
//! of holding up the orchestrator's restart forever. [`Shutdown`] is the
//! one cancellation tree and task tracker both services drain with.

mod shutdown;

use std::{future::Future, time::Duration};

pub use shutdown::Shutdown;

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c; relying on SIGTERM");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM; relying on ctrl-c");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished within the grace period.
    Completed,
    /// The grace period ran out; what was still running was dropped.
    TimedOut,
}

/// Runs `server` (a future that resolves once it has stopped accepting and
/// finished its in-flight work) until it completes, but once `stop` has
/// fired gives it at most `grace` more.
pub async fn run_with_grace<S, E>(
    server: S,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Result<Drained, E>
where
    S: Future<Output = Result<(), E>>,
{
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map(|()| Drained::Completed),
        () = stop => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map(|()| Drained::Completed),
        Err(_) => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "grace period over, dropping in-flight work");
            Ok(Drained::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type NoError = std::convert::Infallible;

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_finishes_in_time_completes() {
        let server = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, NoError>(())
        };
        let stop = tokio::time::sleep(Duration::from_secs(1));
        let outcome = run_with_grace(server, stop, Duration::from_secs(5)).await;
        assert_eq!(outcome, Ok(Drained::Completed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_overruns_the_grace_period_is_cut_short() {
        let started = tokio::time::Instant::now();
        let server = std::future::pending::<Result<(), NoError>>();
        let stop = tokio::time::sleep(Duration::from_secs(1));
        let outcome = run_with_grace(server, stop, Duration::from_secs(5)).await;
        assert_eq!(outcome, Ok(Drained::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_by_itself_is_not_waited_on() {
        let server = async { Err::<(), _>("bind failed") };
        let outcome = run_with_grace(server, std::future::pending(), Duration::from_secs(5)).await;
        assert_eq!(outcome, Err("bind failed"));
    }
}

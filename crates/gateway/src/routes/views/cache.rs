//! The shared caches of the dashboard's views: bounded, short-lived, and
//! each a single flight per key, so a burst of identical requests (every
//! viewer's page after a goal) costs one call behind it.
//!
//! Kept apart from the handlers so that the gateway's state can hold them
//! without importing the handlers that take that state.

use std::{future::Future, hash::Hash, sync::Arc, time::Duration};

use store::StoreError;
use tokio::sync::OnceCell;

use crate::worker::{ScoreLine, WinProbabilities, WorkerError, XtGrid};

/// Match states whose win probability is kept. A page asks for the current
/// state of each match it shows and for a handful of past states (the
/// timeline's goals and cards), so this covers thousands of live matches.
const WIN_PROBABILITY_ENTRIES: u64 = 20_000;
/// How long a computed win probability is shared. Long enough for every
/// viewer of a state change to ask; a state changes at least every minute.
const WIN_PROBABILITY_TTL: Duration = Duration::from_secs(120);
/// How long the list of match ids is shared.
const MATCH_IDS_TTL: Duration = Duration::from_secs(5);
/// How long the xT grid is shared: it changes only when the batch job
/// refits the model.
const XT_GRID_TTL: Duration = Duration::from_secs(10);

/// The views' caches, shared by every request of the gateway.
#[derive(Debug)]
pub struct ViewCaches {
    /// By match and score line: the probabilities depend on nothing else,
    /// so events that do not move the score line (passes, shots) share
    /// the entry of the state before them.
    pub(crate) win_probability: SingleFlight<(String, ScoreLine), Arc<WinProbabilities>>,
    pub(crate) xt_grid: SingleFlight<(), Arc<XtGrid>>,
    pub(crate) match_ids: SingleFlight<(), Arc<Vec<String>>, StoreError>,
}

impl Default for ViewCaches {
    fn default() -> Self {
        Self {
            win_probability: SingleFlight::new(WIN_PROBABILITY_ENTRIES, WIN_PROBABILITY_TTL),
            xt_grid: SingleFlight::new(1, XT_GRID_TTL),
            match_ids: SingleFlight::new(1, MATCH_IDS_TTL),
        }
    }
}

/// A bounded, short-lived cache in which concurrent misses of one key share
/// a single call: the first caller runs it, the others wait for its result.
/// A failure is handed to the callers that waited for it and then dropped,
/// so the next request tries again instead of reading a cached error.
pub(crate) struct SingleFlight<K, V, E = WorkerError> {
    cells: moka::sync::Cache<K, Arc<OnceCell<Result<V, E>>>>,
}

impl<K, V, E> std::fmt::Debug for SingleFlight<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight").finish_non_exhaustive()
    }
}

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self { cells: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(ttl).build() }
    }

    pub(crate) async fn get(&self, key: K, call: impl Future<Output = Result<V, E>>) -> Result<V, E> {
        // `get_with` inserts at most one cell per key, even when many
        // requests miss at once; the cell then runs `call` at most once.
        let cell = self.cells.get_with(key.clone(), || Arc::new(OnceCell::new()));
        let result = cell.get_or_init(|| call).await.clone();
        if result.is_err() && self.cells.get(&key).is_some_and(|current| Arc::ptr_eq(&current, &cell)) {
            self.cells.invalidate(&key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_call_and_failures_are_not_kept() {
        let flight: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::new(10, Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (flight, calls) = (Arc::clone(&flight), Arc::clone(&calls));
                tokio::spawn(async move {
                    flight
                        .get(7, async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(42)
                        })
                        .await
                })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.await.expect("joins"), Ok(42));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for fifty concurrent misses");

        let failed = flight.get(8, async { Err(WorkerError::Busy("full".into())) }).await;
        assert!(failed.is_err());
        assert_eq!(flight.get(8, async { Ok(1) }).await, Ok(1), "the failure was not cached");
    }
}

//! The in-process backend: a map behind a mutex and a broadcast channel per
//! pub/sub channel. The embedded default for a one-process run; state lives
//! as long as the process.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{
    AppendOutcome, HistoryLimits, LIVE_CHANNEL, LogAppend, LogSlice, StateStore, StoreError, Subscription,
};

/// Messages a subscriber may fall behind by before it starts losing them.
const CHANNEL_CAPACITY: usize = 1024;

/// The in-process [`StateStore`]. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<String, Bytes>,
    channels: HashMap<String, broadcast::Sender<Bytes>>,
    logs: HashMap<String, Log>,
    /// The durable event stream. In memory it lasts as long as the process,
    /// like everything else here.
    feed: Vec<Bytes>,
}

#[derive(Debug, Default)]
struct Log {
    head: u64,
    state: Bytes,
    history: VecDeque<(u64, Bytes)>,
    last_append: Option<Instant>,
}

impl Inner {
    fn publish(&mut self, channel: &str, payload: Bytes) -> usize {
        let Some(sender) = self.channels.get(channel) else {
            return 0;
        };
        match sender.send(payload) {
            Ok(receivers) => receivers,
            Err(_) => {
                // Every subscription is gone: forget the channel so idle
                // channels do not accumulate.
                self.channels.remove(channel);
                0
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every critical section is a single map operation), so a poisoned
        // lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().values.get(key).cloned())
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.lock().values.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().values.remove(key).is_some())
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError> {
        Ok(self.lock().publish(channel, payload))
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let receiver = self
            .lock()
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        let channel = channel.to_owned();
        let messages = BroadcastStream::new(receiver).filter_map(move |item| {
            let message = match item {
                Ok(payload) => Some(payload),
                Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                    tracing::warn!(%channel, skipped, "memory store subscriber fell behind");
                    None
                }
            };
            std::future::ready(message)
        });
        Ok(Subscription::new(messages))
    }

    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let log = inner.logs.entry(append.log.clone()).or_default();
        if log.last_append.is_some_and(|at| now.duration_since(at) > limits.max_idle) {
            log.history.clear();
        }
        if append.seq <= log.head {
            return Ok(AppendOutcome::Duplicate { head: log.head });
        }
        if append.seq != log.head + 1 {
            return Ok(AppendOutcome::Gap { head: log.head });
        }
        log.head = append.seq;
        log.state = append.state.clone();
        log.history.push_back((append.seq, append.entry.clone()));
        while log.history.len() > limits.max_entries {
            log.history.pop_front();
        }
        log.last_append = Some(now);
        inner.feed.push(append.feed_entry.clone());
        inner.publish(LIVE_CHANNEL, append.entry.clone());
        Ok(AppendOutcome::Applied)
    }

    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
        Ok(self.lock().logs.get(log).filter(|l| l.head > 0).map(|l| (l.head, l.state.clone())))
    }

    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .logs
            .iter()
            .filter(|(_, l)| l.head > 0)
            .map(|(name, l)| (name.clone(), l.state.clone()))
            .collect())
    }

    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let inner = self.lock();
        let Some(log) = inner.logs.get(log) else { return Ok(LogSlice::default()) };
        let entries = log.history.iter().filter(|(seq, _)| *seq > after).take(limit).cloned().collect();
        Ok(LogSlice { entries, head: log.head, oldest: log.history.front().map(|(seq, _)| *seq) })
    }

    async fn feed_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().feed.len() as u64)
    }
}

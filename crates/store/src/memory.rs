//! The in-process backend: a map behind a mutex and a broadcast channel per
//! pub/sub channel. The embedded default for a one-process run; state lives
//! as long as the process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{StateStore, StoreError, Subscription};

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
        let mut inner = self.lock();
        let Some(sender) = inner.channels.get(channel) else {
            return Ok(0);
        };
        match sender.send(payload) {
            Ok(receivers) => Ok(receivers),
            Err(_) => {
                // Every subscription is gone: forget the channel so idle
                // channels do not accumulate.
                inner.channels.remove(channel);
                Ok(0)
            }
        }
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
}

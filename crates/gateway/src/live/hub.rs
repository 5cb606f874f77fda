//! In-process fan-out: one Redis subscription per gateway, any number of
//! local subscribers.
//!
//! The bridge task holds the gateway's single subscription to the store's
//! live channel. Each update arrives once, is decoded once (just its match
//! id, sequence number and state), and is handed to the match's broadcast
//! channel as one shared [`Frame`]: every local subscriber forwards the same
//! bytes. The broadcast preserves per-match order.
//!
//! Slow subscribers are measured in bytes. Each match channel counts the
//! bytes it has published (`head_offset`), and each frame carries the offset
//! at which it ends, so a subscriber receiving a frame knows how far behind
//! the newest update it is. Past the configured limit it is disconnected;
//! the broadcast ring bounds memory whatever subscribers do.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use store::{LIVE_CHANNEL, StateStore};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::wire::FrameHeader;

/// One update, shared by every local subscriber of its match.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    /// The JSON text sent to clients, as published.
    pub text: Utf8Bytes,
    /// Bytes published on this match's channel up to and including this
    /// frame.
    pub end_offset: u64,
    /// When the update arrived from pub/sub.
    pub received: Instant,
}

/// The local fan-out point of one match.
#[derive(Debug)]
pub struct Channel {
    sender: broadcast::Sender<Arc<Frame>>,
    head_offset: AtomicU64,
}

impl Channel {
    /// How many bytes were published on this channel after `frame`.
    pub fn bytes_behind(&self, frame: &Frame) -> u64 {
        self.head_offset.load(Ordering::Acquire).saturating_sub(frame.end_offset)
    }
}

/// The gateway's fan-out hub, with the bounded cache of match states that
/// the same updates keep fresh.
#[derive(Debug)]
pub struct Hub {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    ring_capacity: usize,
    /// Each match's latest known state and its sequence number: an older
    /// state never replaces a newer one, whichever path brings it (this
    /// gateway's own ingest, the update stream, a store read).
    states: moka::sync::Cache<String, (u64, Bytes)>,
    updates: metrics::Counter,
}

impl Hub {
    /// `ring_capacity`: updates a match channel keeps for subscribers that
    /// are behind; `cached_matches`: states kept in the read cache.
    pub fn new(ring_capacity: usize, cached_matches: u64) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            ring_capacity: ring_capacity.max(1),
            states: moka::sync::Cache::builder()
                .max_capacity(cached_matches)
                // A backstop only: updates refresh entries long before.
                .time_to_live(Duration::from_secs(300))
                .build(),
            updates: metrics::counter!(crate::metrics::LIVE_UPDATES),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        // Critical sections are single map operations; a poisoned lock
        // cannot have left the map inconsistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts receiving the updates of `match_id`. Subscribe before reading
    /// history, so nothing published in between is missed.
    pub fn subscribe(&self, match_id: &str) -> (Arc<Channel>, broadcast::Receiver<Arc<Frame>>) {
        let mut channels = self.lock();
        let channel = channels
            .entry(match_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    sender: broadcast::channel(self.ring_capacity).0,
                    head_offset: AtomicU64::new(0),
                })
            })
            .clone();
        let receiver = channel.sender.subscribe();
        (channel, receiver)
    }

    /// Forgets channels nobody listens to any more.
    pub fn prune(&self) {
        self.lock().retain(|_, channel| channel.sender.receiver_count() > 0);
    }

    /// Forgets `match_id`'s channel if nobody listens to it: a subscription
    /// that failed (no such match, store down) or was abandoned leaves
    /// nothing behind.
    pub fn release(&self, match_id: &str) {
        let mut channels = self.lock();
        if channels.get(match_id).is_some_and(|channel| channel.sender.receiver_count() == 0) {
            channels.remove(match_id);
        }
    }

    /// Channels held, one per match with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Local subscriptions, for metrics and tests.
    pub fn subscriber_count(&self) -> usize {
        self.lock().values().map(|channel| channel.sender.receiver_count()).sum()
    }

    /// The cached state of a match, if the cache has it.
    pub fn cached_state(&self, match_id: &str) -> Option<Bytes> {
        self.states.get(match_id).map(|(_, state)| state)
    }

    /// Caches `state`, the match's state after event `seq`, unless the cache
    /// already holds a later one.
    pub fn cache_state(&self, match_id: &str, seq: u64, state: Bytes) {
        use moka::ops::compute::Op;
        self.states.entry(match_id.to_owned()).and_compute_with(|cached| match cached {
            Some(cached) if cached.value().0 >= seq => Op::Nop,
            _ => Op::Put((seq, state)),
        });
    }

    /// Drops every cached state: after losing the update stream the cache
    /// may be stale.
    pub fn clear_cache(&self) {
        self.states.invalidate_all();
    }

    /// Routes one published update to the local subscribers of its match.
    pub fn dispatch(&self, payload: Bytes) {
        let received = Instant::now();
        self.updates.increment(1);
        let header: FrameHeader = match serde_json::from_slice(&payload) {
            Ok(header) => header,
            Err(err) => {
                tracing::warn!(%err, "ignoring a malformed live update");
                return;
            }
        };
        self.cache_state(&header.match_id, header.seq, Bytes::copy_from_slice(header.state.get().as_bytes()));

        let Some(channel) = self.lock().get(&header.match_id).cloned() else { return };
        let Ok(text) = Utf8Bytes::try_from(payload) else { return };
        let len = text.as_str().len() as u64;
        let end_offset = channel.head_offset.fetch_add(len, Ordering::AcqRel) + len;
        let frame = Frame { seq: header.seq, text, end_offset, received };
        // One span per update, not per recipient: at 15,000 subscribers a
        // span each would cost more than the delivery.
        let span = tracing::info_span!(
            "live.fanout",
            otel.name = "live fanout",
            match_id = %header.match_id,
            seq = header.seq,
            fan_out = tracing::field::Empty,
        );
        let fan_out = span.in_scope(|| channel.sender.send(Arc::new(frame)).unwrap_or(0));
        span.record("fan_out", fan_out);
    }
}

/// Holds the gateway's one subscription to the live channel and feeds the
/// hub until `stop`. Reconnects with backoff when the subscription fails or
/// ends; subscribers notice any update lost meanwhile by its sequence number
/// and fill the gap from history.
pub async fn run_bridge(hub: Arc<Hub>, store: Arc<dyn StateStore>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let subscribed = tokio::select! {
            subscribed = store.subscribe(LIVE_CHANNEL) => subscribed,
            () = stop.cancelled() => return,
        };
        match subscribed {
            Ok(mut subscription) => {
                tracing::info!(backend = store.backend(), "live updates: subscribed");
                backoff = Duration::from_millis(100);
                hub.clear_cache();
                loop {
                    tokio::select! {
                        message = subscription.next() => match message {
                            Some(payload) => hub.dispatch(payload),
                            None => break,
                        },
                        () = stop.cancelled() => return,
                    }
                }
                tracing::warn!("live updates: subscription ended, resubscribing");
                hub.clear_cache();
            }
            Err(err) => {
                tracing::warn!(%err, retry_in_ms = backoff.as_millis(), "live updates: cannot subscribe");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

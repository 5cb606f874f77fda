//! In-process fan-out: one store subscription per process, any number of
//! local subscribers.
//!
//! The bridge task holds the process's single subscription to the store's
//! live channel. Each update arrives once, is decoded once (just its topic,
//! sequence number and state), and is handed to the topic's broadcast
//! channel as one shared [`Frame`]: every local subscriber forwards the same
//! bytes. The broadcast preserves per-topic order.
//!
//! Slow subscribers are measured in bytes. Each topic channel counts the
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

use crate::states::StateCache;

/// One update, shared by every local subscriber of its topic.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    /// The JSON text sent to clients, as published.
    pub text: Utf8Bytes,
    /// Bytes published on this topic's channel up to and including this
    /// frame.
    pub end_offset: u64,
    /// When the update arrived from pub/sub.
    pub received: Instant,
}

/// The local fan-out point of one topic.
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

/// The process's fan-out hub, with the bounded cache of topic states that
/// the same updates keep fresh.
#[derive(Debug)]
pub struct Hub {
    /// The key naming the topic in each update ([`crate::Domain::TOPIC`]).
    topic_key: &'static str,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    ring_capacity: usize,
    /// Each topic's latest known state and its sequence number: an older
    /// state never replaces a newer one, whichever path brings it (this
    /// process's own ingest, the update stream, a store read).
    states: StateCache,
    updates: metrics::Counter,
}

impl Hub {
    /// `topic_key`: the key naming the topic in each update;
    /// `ring_capacity`: updates a topic channel keeps for subscribers that
    /// are behind; `cached_topics`: states kept in the read cache.
    pub fn new(topic_key: &'static str, ring_capacity: usize, cached_topics: u64) -> Self {
        Self {
            topic_key,
            channels: Mutex::new(HashMap::new()),
            ring_capacity: ring_capacity.max(1),
            // The time to live is a backstop only: updates refresh entries
            // long before.
            states: StateCache::new(
                usize::try_from(cached_topics).unwrap_or(usize::MAX),
                Duration::from_secs(300),
            ),
            updates: metrics::counter!(crate::metrics::UPDATES),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        // Critical sections are single map operations; a poisoned lock
        // cannot have left the map inconsistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts receiving the updates of `topic`. Subscribe before reading
    /// history, so nothing published in between is missed.
    pub fn subscribe(&self, topic: &str) -> (Arc<Channel>, broadcast::Receiver<Arc<Frame>>) {
        let mut channels = self.lock();
        let channel = channels
            .entry(topic.to_owned())
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

    /// Forgets `topic`'s channel if nobody listens to it: a subscription
    /// that failed (no such topic, store down) or was abandoned leaves
    /// nothing behind.
    pub fn release(&self, topic: &str) {
        let mut channels = self.lock();
        if channels.get(topic).is_some_and(|channel| channel.sender.receiver_count() == 0) {
            channels.remove(topic);
        }
    }

    /// Channels held, one per topic with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Local subscriptions, for metrics and tests.
    pub fn subscriber_count(&self) -> usize {
        self.lock().values().map(|channel| channel.sender.receiver_count()).sum()
    }

    /// The cached state of a topic, if the cache has it.
    pub fn cached_state(&self, topic: &str) -> Option<Bytes> {
        self.states.get(topic).map(|(_, state)| state)
    }

    /// Caches `state`, the topic's state after event `seq`, unless the cache
    /// already holds a later one.
    pub fn cache_state(&self, topic: &str, seq: u64, state: Bytes) {
        self.states.store(topic, seq, state);
    }

    /// Drops every cached state: after losing the update stream the cache
    /// may be stale.
    pub fn clear_cache(&self) {
        self.states.clear();
    }

    /// Routes each update of one message from the live channel (one, or
    /// several joined by newlines: [`store::live_entries`]) to the local
    /// subscribers of its topic.
    pub fn dispatch(&self, message: &Bytes) {
        for update in store::live_entries(message) {
            self.dispatch_one(update);
        }
    }

    fn dispatch_one(&self, payload: Bytes) {
        let received = Instant::now();
        self.updates.increment(1);
        let header = match FrameHeader::read(&payload, self.topic_key) {
            Ok(header) => header,
            Err(err) => {
                tracing::warn!(%err, "ignoring a malformed live update");
                return;
            }
        };
        // The replica that ingested the update has cached its state already:
        // no copy then.
        if !self.states.has(&header.topic, header.seq) {
            self.cache_state(
                &header.topic,
                header.seq,
                Bytes::copy_from_slice(header.state.get().as_bytes()),
            );
        }

        let Some(channel) = self.lock().get(&header.topic).cloned() else { return };
        let Ok(text) = Utf8Bytes::try_from(payload) else { return };
        let len = text.as_str().len() as u64;
        let end_offset = channel.head_offset.fetch_add(len, Ordering::AcqRel) + len;
        let frame = Frame { seq: header.seq, text, end_offset, received };
        // One span per update, not per recipient: at 15,000 subscribers a
        // span each would cost more than the delivery.
        let span = tracing::info_span!(
            "live.fanout",
            otel.name = "live fanout",
            topic = %header.topic,
            seq = header.seq,
            fan_out = tracing::field::Empty,
        );
        let fan_out = span.in_scope(|| channel.sender.send(Arc::new(frame)).unwrap_or(0));
        span.record("fan_out", fan_out);
    }
}

/// Holds the process's one subscription to the live channel and feeds the
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
                            Some(message) => hub.dispatch(&message),
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

/// What the hub needs to route an update without decoding all of it: the
/// topic (under its domain's key), the sequence number and the state.
#[derive(Debug)]
struct FrameHeader {
    topic: String,
    seq: u64,
    state: Box<serde_json::value::RawValue>,
}

impl FrameHeader {
    fn read(payload: &[u8], topic_key: &'static str) -> serde_json::Result<Self> {
        use serde::de::DeserializeSeed as _;
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let header = HeaderSeed { topic_key }.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(header)
    }
}

/// Reads a [`FrameHeader`] whose topic key is known only at run time.
struct HeaderSeed {
    topic_key: &'static str,
}

impl<'de> serde::de::DeserializeSeed<'de> for HeaderSeed {
    type Value = FrameHeader;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<FrameHeader, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for HeaderSeed {
    type Value = FrameHeader;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an update with `{}`, `seq` and `state`", self.topic_key)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FrameHeader, A::Error> {
        use serde::de::Error as _;
        let (mut topic, mut seq, mut state) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "seq" => seq = Some(map.next_value()?),
                "state" => state = Some(map.next_value()?),
                key if key == self.topic_key => topic = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(FrameHeader {
            topic: topic.ok_or_else(|| A::Error::missing_field(self.topic_key))?,
            seq: seq.ok_or_else(|| A::Error::missing_field("seq"))?,
            state: state.ok_or_else(|| A::Error::missing_field("state"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_is_routed_by_its_domains_topic_key() {
        let header = FrameHeader::read(
            br#"{"type":"event","lot":"l1","seq":3,"event":{"a":[1]},"state":{"b":2}}"#,
            "lot",
        )
        .expect("a header");
        assert_eq!((header.topic.as_str(), header.seq, header.state.get()), ("l1", 3, r#"{"b":2}"#));

        let err = FrameHeader::read(br#"{"item":"i1","seq":3,"state":{}}"#, "lot").expect_err("no lot");
        assert!(err.to_string().contains("missing field `lot`"), "{err}");
    }

    #[tokio::test]
    async fn subscribers_of_a_topic_share_each_frame_and_others_see_nothing() {
        let hub = Hub::new("lot", 8, 10);
        let (_, mut first) = hub.subscribe("l1");
        let (_, mut second) = hub.subscribe("l1");
        let (_, mut other) = hub.subscribe("l2");
        hub.dispatch(&Bytes::from_static(
            br#"{"type":"event","lot":"l1","seq":1,"event":{},"state":{"n":1}}"#,
        ));
        let (a, b) = (first.recv().await.expect("a frame"), second.recv().await.expect("a frame"));
        assert!(Arc::ptr_eq(&a, &b), "each subscriber got its own copy");
        assert_eq!(a.seq, 1);
        assert!(other.try_recv().is_err(), "another topic's subscriber got the update");
        assert_eq!(hub.cached_state("l1").as_deref(), Some(&br#"{"n":1}"#[..]));
    }

    #[tokio::test]
    async fn a_message_of_several_updates_reaches_each_topic_in_order() {
        let hub = Hub::new("lot", 8, 10);
        let (_, mut l1) = hub.subscribe("l1");
        let (_, mut l2) = hub.subscribe("l2");
        // Format 2: one store call's updates in one message, one per line.
        hub.dispatch(&Bytes::from_static(
            br#"{"type":"event","lot":"l1","seq":1,"event":{},"state":{"n":1}}
{"type":"event","lot":"l1","seq":2,"event":{},"state":{"n":2}}
{"type":"event","lot":"l2","seq":7,"event":{},"state":{"n":7}}"#,
        ));
        assert_eq!(l1.recv().await.expect("a frame").seq, 1);
        let second = l1.recv().await.expect("a frame");
        assert_eq!(second.seq, 2);
        assert!(
            second.text.as_str().starts_with('{') && second.text.as_str().ends_with('}'),
            "one whole update"
        );
        assert_eq!(l2.recv().await.expect("a frame").seq, 7);
        assert_eq!(hub.cached_state("l1").as_deref(), Some(&br#"{"n":2}"#[..]));
    }
}

//! In-process fan-out: one store subscription per process, any number of
//! local subscribers.
//!
//! The bridge task holds the process's single subscription to the store's
//! live channel. Each update arrives once, is decoded once (just its topic,
//! sequence number and state), and becomes one shared [`Frame`]: its JSON
//! text and, when the topic has WebSocket subscribers, its WebSocket frame,
//! encoded once.
//!
//! - **WebSocket** subscribers are written to by the hub itself, in one loop
//!   per update, straight to each socket ([`crate::outlet`]): no task is
//!   woken for a subscriber that keeps up. A subscription that is opening,
//!   or met a gap, is *held*: its frames wait in a bounded list for its
//!   connection's task, which sends what must come first (the snapshot, a
//!   replay, the gap from history) and then puts it back in the loop.
//! - **SSE** subscribers each follow the topic's broadcast channel. The
//!   channel counts the bytes it has published (`head_offset`), and each
//!   frame carries the offset at which it ends, so a subscriber knows how
//!   far behind the newest update it is; the broadcast ring bounds memory
//!   whatever subscribers do.
//!
//! Both keep per-topic order, and both cut off a subscriber that falls more
//! than the configured number of bytes behind.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use store::{LIVE_CHANNEL, StateStore};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    outlet::{Outlet, Sent, frame},
    states::{Cached, StateCache},
};

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
    /// The topic, for leaving it.
    topic: Box<str>,
    /// SSE subscribers; made for the first (its ring is the largest part
    /// of a channel, and most topics may have none).
    sender: OnceLock<broadcast::Sender<Arc<Frame>>>,
    head_offset: AtomicU64,
    /// WebSocket subscribers, written to by the hub.
    members: Mutex<Members>,
}

impl Channel {
    fn new(topic: &str) -> Self {
        Self {
            topic: topic.into(),
            sender: OnceLock::new(),
            head_offset: AtomicU64::new(0),
            members: Mutex::new(Members::default()),
        }
    }

    /// How many bytes were published on this channel after `frame`.
    pub fn bytes_behind(&self, frame: &Frame) -> u64 {
        self.head_offset.load(Ordering::Acquire).saturating_sub(frame.end_offset)
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // Each critical section leaves the list consistent at every step.
        self.members.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_unused(&self) -> bool {
        self.followers() == 0 && self.members().list.is_empty()
    }

    /// SSE subscribers.
    fn followers(&self) -> usize {
        self.sender.get().map_or(0, broadcast::Sender::receiver_count)
    }
}

/// A topic's WebSocket subscriptions: a list, for the fan-out loop, and
/// where each is in it, so joining and leaving cost the same for a topic of
/// ten subscribers and one of fifty thousand.
#[derive(Debug, Default)]
struct Members {
    next_id: u64,
    list: Vec<Member>,
    at: HashMap<u64, usize>,
}

impl Members {
    fn add(&mut self, member: Member) {
        self.at.insert(member.id, self.list.len());
        self.list.push(member);
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Member> {
        let at = *self.at.get(&id)?;
        self.list.get_mut(at)
    }

    fn remove(&mut self, id: u64) {
        let Some(at) = self.at.remove(&id) else { return };
        self.list.swap_remove(at);
        if let Some(moved) = self.list.get(at) {
            self.at.insert(moved.id, at);
        }
    }
}

/// One WebSocket subscription, as the hub sees it.
#[derive(Debug)]
struct Member {
    id: u64,
    outlet: Arc<Outlet>,
    /// The next sequence number its client expects: earlier frames are
    /// replays it has seen, a later one means a gap.
    next_seq: u64,
    /// Frames waiting for the connection's task, while the subscription is
    /// opening or filling a gap; `None` while the hub writes to it.
    held: Option<Held>,
}

#[derive(Debug, Default)]
struct Held {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
}

/// A WebSocket subscription's place in its topic's fan-out; leaving it
/// (dropping) removes the subscription, and the topic's channel once
/// nobody else listens.
#[derive(Debug)]
pub(crate) struct Membership {
    hub: Arc<Hub>,
    channel: Arc<Channel>,
    id: u64,
}

impl Membership {
    /// Frames held for this subscription, with the sequence number its
    /// client expects next; `None` once nothing is held, and then (if it
    /// was held) the hub writes to it from `next_seq` on.
    pub(crate) fn take_held(&self) -> Option<(u64, VecDeque<Arc<Frame>>)> {
        let mut members = self.channel.members();
        let member = members.get_mut(self.id)?;
        let held = member.held.as_mut()?;
        if held.frames.is_empty() {
            member.held = None;
            return None;
        }
        held.bytes = 0;
        Some((member.next_seq, std::mem::take(&mut held.frames)))
    }

    pub(crate) fn channel(&self) -> Arc<Channel> {
        Arc::clone(&self.channel)
    }

    /// Sets the sequence number the client expects next, while held.
    pub(crate) fn expect(&self, next_seq: u64) {
        let mut members = self.channel.members();
        if let Some(member) = members.get_mut(self.id) {
            member.next_seq = next_seq;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.channel.members().remove(self.id);
        self.hub.release(&self.channel.topic);
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
    /// Bytes a held WebSocket subscription may have waiting before its
    /// client is cut off as a slow consumer.
    max_lag_bytes: usize,
    /// Each topic's latest known state and its sequence number: an older
    /// state never replaces a newer one, whichever path brings it (this
    /// process's own ingest, the update stream, a store read).
    states: StateCache,
    updates: metrics::Counter,
    /// Messages written to subscribers, both transports.
    delivered: AtomicU64,
    websocket: Deliveries,
}

/// The WebSocket series the hub's own writes count in.
#[derive(Debug)]
struct Deliveries {
    delivered: metrics::Counter,
    lag: metrics::Histogram,
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
            max_lag_bytes: 256 * 1024,
            // The time to live is a backstop only: updates refresh entries
            // long before.
            states: StateCache::new(
                usize::try_from(cached_topics).unwrap_or(usize::MAX),
                Duration::from_secs(300),
            ),
            updates: metrics::counter!(crate::metrics::UPDATES),
            delivered: AtomicU64::new(0),
            websocket: Deliveries {
                delivered: metrics::counter!(crate::metrics::DELIVERED, "transport" => "websocket"),
                lag: metrics::histogram!(crate::metrics::DELIVERY_LAG, "transport" => "websocket"),
            },
        }
    }

    /// How far, in bytes, a held WebSocket subscription may fall behind
    /// (the engine's `max_lag_bytes`; 256 KiB unless set).
    pub fn with_max_lag_bytes(mut self, bytes: u64) -> Self {
        self.max_lag_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// Messages written to subscribers so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub(crate) fn count_delivered(&self, messages: u64) {
        self.delivered.fetch_add(messages, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        // Critical sections are single map operations; a poisoned lock
        // cannot have left the map inconsistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts receiving the updates of `topic`. Subscribe before reading
    /// history, so nothing published in between is missed.
    pub fn subscribe(&self, topic: &str) -> (Arc<Channel>, broadcast::Receiver<Arc<Frame>>) {
        let channel = self.channel(topic);
        let receiver = channel.sender.get_or_init(|| broadcast::channel(self.ring_capacity).0).subscribe();
        (channel, receiver)
    }

    fn channel(&self, topic: &str) -> Arc<Channel> {
        let mut channels = self.lock();
        Arc::clone(channels.entry(topic.to_owned()).or_insert_with(|| Arc::new(Channel::new(topic))))
    }

    /// Adds a WebSocket subscription to `topic`'s fan-out, held (see the
    /// module documentation) until its connection's task has sent what
    /// comes first. Join before reading history, so nothing published in
    /// between is missed.
    pub(crate) fn join(self: &Arc<Self>, topic: &str, outlet: &Arc<Outlet>) -> Membership {
        let channel = self.channel(topic);
        let id = {
            let mut members = channel.members();
            let id = members.next_id;
            members.next_id += 1;
            members.add(Member { id, outlet: Arc::clone(outlet), next_seq: 0, held: Some(Held::default()) });
            id
        };
        Membership { hub: Arc::clone(self), channel, id }
    }

    /// Forgets channels nobody listens to any more.
    pub fn prune(&self) {
        self.lock().retain(|_, channel| !channel.is_unused());
    }

    /// Forgets `topic`'s channel if nobody listens to it: a subscription
    /// that failed (no such topic, store down) or was abandoned leaves
    /// nothing behind.
    pub fn release(&self, topic: &str) {
        let mut channels = self.lock();
        if channels.get(topic).is_some_and(|channel| channel.is_unused()) {
            channels.remove(topic);
        }
    }

    /// Channels held, one per topic with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Local subscriptions, for metrics and tests.
    pub fn subscriber_count(&self) -> usize {
        self.lock().values().map(|channel| channel.followers() + channel.members().list.len()).sum()
    }

    /// The cached state of a topic, if the cache has it.
    pub fn cached_state(&self, topic: &str) -> Option<Bytes> {
        match self.states.get(topic)? {
            (_, Cached::State(state)) => Some(state),
            (seq, Cached::InUpdate(update)) => {
                let header = FrameHeader::read(&update, self.topic_key).ok()?;
                let state = Bytes::copy_from_slice(header.state.get().as_bytes());
                self.states.store(topic, seq, Cached::State(state.clone()));
                Some(state)
            }
        }
    }

    /// Caches `state`, the topic's state after event `seq`, unless the cache
    /// already holds a later one.
    pub fn cache_state(&self, topic: &str, seq: u64, state: Bytes) {
        self.states.store(topic, seq, Cached::State(state));
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
        // Routing needs only the topic and the sequence number, read off the
        // front of the update (in bulk ingest a full parse of every update
        // was an eighth of the gateway's CPU). Its state is cached as the
        // update, cut out when read: the replica that ingested it caches the
        // state itself when its append returns, and most of the rest are
        // replaced before anyone reads them.
        let (topic, seq) = match routing(&payload, self.topic_key) {
            Some((topic, seq)) => {
                if !self.states.has(topic, seq) {
                    self.states.store(topic, seq, Cached::InUpdate(Bytes::copy_from_slice(&payload)));
                }
                (Cow::Borrowed(topic), seq)
            }
            None => {
                let header = match FrameHeader::read(&payload, self.topic_key) {
                    Ok(header) => header,
                    Err(err) => {
                        tracing::warn!(%err, "ignoring a malformed live update");
                        return;
                    }
                };
                if !self.states.has(&header.topic, header.seq) {
                    self.cache_state(
                        &header.topic,
                        header.seq,
                        Bytes::copy_from_slice(header.state.get().as_bytes()),
                    );
                }
                (Cow::Owned(header.topic), header.seq)
            }
        };
        let Some(channel) = self.lock().get(topic.as_ref()).cloned() else { return };
        let Ok(text) = Utf8Bytes::try_from(payload) else { return };
        let len = text.as_str().len() as u64;
        let end_offset = channel.head_offset.fetch_add(len, Ordering::AcqRel) + len;
        let frame = Arc::new(Frame { seq, text, end_offset, received });
        // One span per update, not per recipient: at 15,000 subscribers a
        // span each would cost more than the delivery.
        let span = tracing::info_span!(
            "live.fanout",
            otel.name = "live fanout",
            topic = %channel.topic,
            seq,
            fan_out = tracing::field::Empty,
        );
        let fan_out = span.in_scope(|| {
            let followers = if let Some(sender) = channel.sender.get()
                && sender.receiver_count() > 0
            {
                sender.send(Arc::clone(&frame)).unwrap_or(0)
            } else {
                0
            };
            followers + self.write_members(&channel, &frame)
        });
        span.record("fan_out", fan_out);
    }

    /// Writes `frame` to the topic's WebSocket subscribers, in one loop:
    /// the frame is encoded once, and each socket that has room takes it at
    /// once. Returns how many subscriptions got it or will.
    fn write_members(&self, channel: &Channel, frame: &Arc<Frame>) -> usize {
        let mut members = channel.members();
        if members.list.is_empty() {
            return 0;
        }
        let wire = frame::text(frame.text.as_str());
        let (mut written, mut reached) = (0u64, 0usize);
        for member in &mut members.list {
            if let Some(held) = &mut member.held {
                held.bytes += frame.text.len();
                held.frames.push_back(Arc::clone(frame));
                if held.bytes > self.max_lag_bytes || held.frames.len() > self.ring_capacity {
                    member.outlet.cut_off(held.bytes as u64);
                    member.held = Some(Held::default());
                } else {
                    reached += 1;
                }
                continue;
            }
            if frame.seq < member.next_seq {
                continue;
            }
            if frame.seq > member.next_seq {
                // A gap (a lost pub/sub message): the connection's task
                // fills it from history before this frame.
                member.held =
                    Some(Held { frames: VecDeque::from([Arc::clone(frame)]), bytes: frame.text.len() });
                member.outlet.hand_back();
                reached += 1;
                continue;
            }
            if member.outlet.send(&wire) == Sent::Accepted {
                member.next_seq += 1;
                written += 1;
                reached += 1;
            }
        }
        drop(members);
        if written > 0 {
            self.count_delivered(written);
            self.websocket.delivered.increment(written);
            self.websocket.lag.record_many(frame.received.elapsed().as_secs_f64(), written as usize);
        }
        reached
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
/// The topic and sequence number of an update in the form
/// [`crate::ingest`] writes it, `{"type":"event","<topic key>":"<topic>",
/// "seq":N,...`, read off its front. `None` for any other form (a topic
/// with escapes, say): the full parse then reads it.
fn routing<'a>(payload: &'a [u8], topic_key: &str) -> Option<(&'a str, u64)> {
    let rest = payload.strip_prefix(b"{\"type\":\"event\",\"")?;
    let rest = rest.strip_prefix(topic_key.as_bytes())?.strip_prefix(b"\":\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    let (topic, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(b"\",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if rest.get(digits) != Some(&b',') {
        return None;
    }
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((std::str::from_utf8(topic).ok()?, seq))
}

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
    fn the_front_of_an_update_routes_it_and_any_other_form_is_parsed_in_full() {
        let update = br#"{"type":"event","lot":"l-7","seq":42,"event":{"bid":5},"state":{"leading":5}}"#;
        assert_eq!(routing(update, "lot"), Some(("l-7", 42)));
        let header = FrameHeader::read(update, "lot").expect("a valid update");
        assert_eq!((header.topic.as_str(), header.seq), ("l-7", 42));

        for other in [
            &br#"{"type":"event","lot":"l\"7","seq":42,"state":{}}"#[..],
            br#"{"type":"event","match":"l-7","seq":42,"state":{}}"#,
            br#"{"type":"event","lot":"l-7","seq":"42","state":{}}"#,
            br#"{"type":"event","lot":"l-7","seq":,"state":{}}"#,
            br#"{"type":"event","lot":"l-7","seq":99999999999999999999,"state":{}}"#,
            br#"{"lot":"l-7","type":"event","seq":42,"state":{}}"#,
            br#"{"type":"event","lot":"l-7"#,
        ] {
            assert_eq!(routing(other, "lot"), None, "{}", String::from_utf8_lossy(other));
        }
    }

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

    fn update(seq: u64) -> Bytes {
        Bytes::from(format!(
            r#"{{"type":"event","lot":"l1","seq":{seq},"event":{{}},"state":{{"n":{seq}}}}}"#
        ))
    }

    /// What an outlet without a socket has queued, as the frames' texts.
    async fn written(outlet: &Outlet) -> Vec<String> {
        let (writer, mut reader) = tokio::io::duplex(1 << 20);
        let mut wire = crate::outlet::Wire::Stream(Box::new(writer));
        while outlet.has_queued() {
            outlet.drain(&mut wire).await.expect("drain");
        }
        drop(wire);
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes).await.expect("read");
        let mut texts = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert_eq!(bytes[at], 0x81, "not a final text frame");
            let len = usize::from(bytes[at + 1]);
            assert!(len < 126, "a short test frame");
            texts.push(String::from_utf8(bytes[at + 2..at + 2 + len].to_vec()).expect("utf-8"));
            at += 2 + len;
        }
        texts
    }

    fn seqs(texts: &[String]) -> Vec<u64> {
        texts
            .iter()
            .map(|text| {
                serde_json::from_str::<serde_json::Value>(text).expect("json")["seq"].as_u64().expect("seq")
            })
            .collect()
    }

    #[tokio::test]
    async fn a_websocket_member_is_held_until_handed_to_the_hub_then_written_in_order() {
        let hub = Arc::new(Hub::new("lot", 8, 10));
        let outlet = Arc::new(Outlet::new(None, 1 << 20));
        let membership = hub.join("l1", &outlet);
        // While opening: held, nothing written.
        hub.dispatch(&update(1));
        hub.dispatch(&update(2));
        assert!(!outlet.has_queued(), "a held member was written to");
        membership.expect(2);
        let (next, held) = membership.take_held().expect("held frames");
        assert_eq!((next, held.iter().map(|frame| frame.seq).collect::<Vec<_>>()), (2, vec![1, 2]));
        // Nothing more held: the hub takes it from seq 2 on, skipping what
        // the client has.
        assert!(membership.take_held().is_none());
        hub.dispatch(&update(1));
        hub.dispatch(&update(2));
        hub.dispatch(&update(3));
        assert_eq!(seqs(&written(&outlet).await), vec![2, 3]);
        assert_eq!(hub.delivered(), 2);
        assert!(!outlet.take_handed_back());

        // A gap: handed back with the frame that revealed it.
        hub.dispatch(&update(6));
        assert!(outlet.take_handed_back(), "a gap was not handed back");
        hub.dispatch(&update(7));
        let (next, held) = membership.take_held().expect("held after a gap");
        assert_eq!((next, held.iter().map(|frame| frame.seq).collect::<Vec<_>>()), (4, vec![6, 7]));
        assert!(!outlet.has_queued(), "written past a gap");

        assert_eq!(hub.subscriber_count(), 1);
        drop(membership);
        assert_eq!((hub.subscriber_count(), hub.channel_count()), (0, 0), "leaving left the channel behind");
    }

    #[tokio::test]
    async fn a_held_member_that_falls_too_far_behind_is_cut_off_and_others_are_served() {
        let hub = Arc::new(Hub::new("lot", 1024, 10).with_max_lag_bytes(1_000));
        let (stuck, keeping_up) =
            (Arc::new(Outlet::new(None, 1 << 20)), Arc::new(Outlet::new(None, 1 << 20)));
        let _stuck = hub.join("l1", &stuck);
        let live = hub.join("l1", &keeping_up);
        live.expect(1);
        assert!(live.take_held().is_none());
        for seq in 1..=30 {
            hub.dispatch(&update(seq));
        }
        assert!(
            matches!(stuck.fault(), Some(crate::outlet::Fault::Slow(behind)) if behind > 1_000),
            "{:?}",
            stuck.fault()
        );
        assert_eq!(seqs(&written(&keeping_up).await), (1..=30).collect::<Vec<_>>());
    }
}

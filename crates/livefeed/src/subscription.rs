//! The subscription logic shared by every transport (WebSocket, SSE):
//! opening a subscription (snapshot, or replay from a sequence number) and
//! turning each broadcast frame into what the client must receive next.
//!
//! Every subscription tracks the next sequence number its client expects.
//! Frames at or below it are replays and are skipped; a frame beyond it
//! means something was lost (a pub/sub reconnect, a race between history
//! and live), and the gap is filled from the topic's history before the
//! frame is sent. So a client sees each event once, in order, or is told
//! with a `resync` that it must start again from a fresh state.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use axum::extract::ws::Utf8Bytes;
use futures::Stream;
use serde::{Serialize, ser::SerializeMap as _};
use serde_json::value::RawValue;
use store::{HistoryLimits, StateStore, StoreError};
use tokio::sync::broadcast;
use tokio_stream::{
    StreamExt as _,
    wrappers::{BroadcastStream, errors::BroadcastStreamRecvError},
};

use crate::{
    hub::{Channel, Frame, Hub, Membership},
    outlet::Outlet,
};

/// Why a subscription could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// `topic` is the domain's word for it ([`crate::Domain::TOPIC`]).
    #[error("{topic} {id} does not exist")]
    UnknownTopic { topic: &'static str, id: String },
    #[error("since {since} is beyond the head of {topic} {id} ({head})")]
    SinceBeyondHead { topic: &'static str, id: String, since: u64, head: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored {0} state is not valid json")]
    CorruptState(&'static str),
}

impl SubscribeError {
    /// Stable code for clients, a topic that does not exist named in the
    /// domain's words ([`crate::Domain::UNKNOWN_TOPIC`]: `unknown_match`).
    pub fn code<D: crate::Domain>(&self) -> &'static str {
        match self {
            Self::UnknownTopic { .. } => D::UNKNOWN_TOPIC,
            Self::SinceBeyondHead { .. } => "since_beyond_head",
            Self::Store(_) => "store_unavailable",
            Self::CorruptState(_) => "internal",
        }
    }
}

/// Why a subscriber is cut off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Disconnect {
    #[error("slow consumer: {0} bytes behind the live feed")]
    SlowConsumer(u64),
    #[error("slow consumer: missed {0} updates")]
    Lagged(u64),
    #[error("state store unavailable")]
    StoreUnavailable,
}

/// One message for a subscriber.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The sequence number it brings the client to (the SSE event id).
    pub seq: u64,
    /// `subscribed`, `event` or `resync`: the message's `type`, and the SSE
    /// event name.
    pub kind: &'static str,
    /// The JSON text, shared with every other subscriber of the update.
    pub text: Utf8Bytes,
    /// For a live update: when this gateway received it from pub/sub, to
    /// measure delivery lag. Replays and replies have none.
    pub received: Option<Instant>,
}

/// A freshly opened subscription.
#[derive(Debug)]
pub struct Opened {
    /// Messages to send before any live update.
    pub first: Vec<Outgoing>,
    pub cursor: Cursor,
    pub receiver: broadcast::Receiver<Arc<Frame>>,
}

/// Where one subscription stands.
#[derive(Debug)]
pub struct Cursor {
    topic: String,
    channel: Arc<Channel>,
    next_seq: u64,
}

impl Cursor {
    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The sequence number the client expects next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn expect(&mut self, next_seq: u64) {
        self.next_seq = next_seq;
    }
}

/// Releases a topic's channel unless the subscription opened: the error
/// path and a cancelled call alike leave no channel behind.
struct Pending<'a> {
    hub: &'a Hub,
    topic: &'a str,
    opened: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.opened {
            self.hub.release(self.topic);
        }
    }
}

/// The live feed as subscribers see it.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    /// What a topic is called ([`crate::Domain::TOPIC`]): the key naming it
    /// in messages.
    pub topic_key: &'static str,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn StateStore>,
    pub limits: HistoryLimits,
    /// How far a subscriber may fall behind, in bytes, before it is cut off.
    pub max_lag_bytes: u64,
}

/// The first message of a subscription, or a `resync`. Written by hand
/// because the topic's key is the domain's.
struct Subscribed<'a> {
    kind: &'static str,
    topic_key: &'static str,
    topic: &'a str,
    /// Sequence number of the state below: the topic's head.
    seq: u64,
    since: Option<u64>,
    /// With `since`: whether every missed event follows (`true`), or history
    /// no longer has them and the state below replaces them (`false`).
    recovered: Option<bool>,
    /// How many missed events follow this message.
    replayed: usize,
    state: &'a RawValue,
}

impl Serialize for Subscribed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry(self.topic_key, self.topic)?;
        map.serialize_entry("seq", &self.seq)?;
        if let Some(since) = self.since {
            map.serialize_entry("since", &since)?;
        }
        if let Some(recovered) = self.recovered {
            map.serialize_entry("recovered", &recovered)?;
        }
        map.serialize_entry("replayed", &self.replayed)?;
        map.serialize_entry("state", self.state)?;
        map.end()
    }
}

impl Subscriptions {
    /// Subscribes to `topic`, from its current state or, with `since`,
    /// replaying what the client missed after that sequence number.
    pub async fn open(&self, topic: &str, since: Option<u64>) -> Result<Opened, SubscribeError> {
        // Live first, then history: anything published in between arrives
        // on the receiver and is skipped by sequence number if already sent.
        // The channel is made before the topic is known to exist, so every
        // way out but success (an unknown topic, a store error, the client
        // gone mid-call) releases it again.
        let mut pending = Pending { hub: &self.hub, topic, opened: false };
        let (channel, receiver) = self.hub.subscribe(topic);
        let opened = self.open_from(topic, since).await.map(|(first, next_seq)| Opened {
            first,
            cursor: Cursor { topic: topic.to_owned(), channel, next_seq },
            receiver,
        });
        pending.opened = opened.is_ok();
        opened
    }

    /// Subscribes a WebSocket connection (`outlet`) to `topic`, as
    /// [`Subscriptions::open`] does: the messages to send first, the
    /// cursor, and the subscription's place in the hub's fan-out, held until
    /// the first messages are sent. An error leaves nothing behind.
    pub(crate) async fn open_member(
        &self,
        topic: &str,
        since: Option<u64>,
        outlet: &Arc<Outlet>,
    ) -> Result<(Vec<Outgoing>, Cursor, Membership), SubscribeError> {
        let membership = self.hub.join(topic, outlet);
        let (first, next_seq) = self.open_from(topic, since).await?;
        let cursor = Cursor { topic: topic.to_owned(), channel: membership.channel(), next_seq };
        membership.expect(next_seq);
        Ok((first, cursor, membership))
    }

    /// What a new subscription sends first, and the sequence number its
    /// client expects after it.
    async fn open_from(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> Result<(Vec<Outgoing>, u64), SubscribeError> {
        let Some((head, state)) = self.store.log_state(topic).await? else {
            return Err(SubscribeError::UnknownTopic { topic: self.topic_key, id: topic.to_owned() });
        };
        let state = parse_raw(&state).ok_or(SubscribeError::CorruptState(self.topic_key))?;

        let mut first = Vec::new();
        let mut replay = Vec::new();
        let recovered = match since {
            None => None,
            Some(since) if since > head => {
                return Err(SubscribeError::SinceBeyondHead {
                    topic: self.topic_key,
                    id: topic.to_owned(),
                    since,
                    head,
                });
            }
            Some(since) => {
                let slice = self.store.read_log(topic, since, self.limits.max_entries).await?;
                let complete = slice.is_complete_after(since);
                if complete {
                    replay = slice.entries;
                }
                recovery(if complete { "recovered" } else { "reset" });
                Some(complete)
            }
        };
        // The state is always the head's; replayed events follow, each with
        // the state after it, for clients that show what they missed.
        let replayed = replay.len();
        let subscribed = Subscribed {
            kind: "subscribed",
            topic_key: self.topic_key,
            topic,
            seq: head,
            since,
            recovered,
            replayed,
            state: &state,
        };
        let text = to_text(&subscribed).ok_or(SubscribeError::CorruptState(self.topic_key))?;
        first.push(Outgoing { seq: head, kind: "subscribed", text, received: None });
        let mut next_seq = head + 1;
        for (seq, entry) in replay {
            next_seq = seq + 1;
            let text =
                Utf8Bytes::try_from(entry).map_err(|_| SubscribeError::CorruptState(self.topic_key))?;
            first.push(Outgoing { seq, kind: "event", text, received: None });
        }
        Ok((first, next_seq))
    }

    /// Everything one subscription must receive, in order: the opening
    /// messages, then each live update. When the subscriber must be cut off
    /// the last item says why; the stream also ends if the hub goes away.
    /// Transports with one subscription per connection (SSE) send this as
    /// it comes; a transport multiplexing several calls [`Subscriptions::on_frame`].
    pub fn follow(
        &self,
        opened: Opened,
    ) -> impl Stream<Item = Result<Outgoing, Disconnect>> + Send + 'static {
        struct Following {
            subscriptions: Subscriptions,
            cursor: Cursor,
            receiver: BroadcastStream<Arc<Frame>>,
            pending: VecDeque<Outgoing>,
            done: bool,
        }
        let state = Following {
            subscriptions: self.clone(),
            cursor: opened.cursor,
            receiver: BroadcastStream::new(opened.receiver),
            pending: opened.first.into(),
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(message) = state.pending.pop_front() {
                    return Some((Ok(message), state));
                }
                if state.done {
                    return None;
                }
                let outgoing = match state.receiver.next().await? {
                    Ok(frame) => state.subscriptions.on_frame(&mut state.cursor, &frame).await,
                    Err(BroadcastStreamRecvError::Lagged(missed)) => Err(Disconnect::Lagged(missed)),
                };
                match outgoing {
                    Ok(messages) => state.pending.extend(messages),
                    Err(reason) => {
                        state.done = true;
                        return Some((Err(reason), state));
                    }
                }
            }
        })
    }

    /// What to send for a frame received on the cursor's channel.
    pub async fn on_frame(&self, cursor: &mut Cursor, frame: &Frame) -> Result<Vec<Outgoing>, Disconnect> {
        let behind = cursor.channel.bytes_behind(frame);
        if behind > self.max_lag_bytes {
            return Err(Disconnect::SlowConsumer(behind));
        }
        self.next_for(cursor, frame).await
    }

    /// What to send for `frame`, whose lag is bounded elsewhere (a held
    /// WebSocket subscription's).
    pub(crate) async fn next_for(
        &self,
        cursor: &mut Cursor,
        frame: &Frame,
    ) -> Result<Vec<Outgoing>, Disconnect> {
        if frame.seq < cursor.next_seq {
            return Ok(Vec::new());
        }
        if frame.seq == cursor.next_seq {
            cursor.next_seq += 1;
            return Ok(vec![Outgoing {
                seq: frame.seq,
                kind: "event",
                text: frame.text.clone(),
                received: Some(frame.received),
            }]);
        }
        self.fill_gap(cursor, frame).await
    }

    async fn fill_gap(&self, cursor: &mut Cursor, frame: &Frame) -> Result<Vec<Outgoing>, Disconnect> {
        let after = cursor.next_seq - 1;
        let slice = self
            .store
            .read_log(&cursor.topic, after, self.limits.max_entries)
            .await
            .map_err(|_| Disconnect::StoreUnavailable)?;
        let contiguous = slice.entries.first().is_some_and(|(seq, _)| *seq == cursor.next_seq)
            && slice.entries.last().is_some_and(|(seq, _)| *seq >= frame.seq);
        if contiguous {
            let mut out = Vec::new();
            for (seq, entry) in slice.entries {
                if let Ok(text) = Utf8Bytes::try_from(entry) {
                    let received = (seq == frame.seq).then_some(frame.received);
                    out.push(Outgoing { seq, kind: "event", text, received });
                    cursor.next_seq = seq + 1;
                }
            }
            tracing::debug!(topic = %cursor.topic, filled = out.len(), "filled a gap from history");
            recovery("gap_filled");
            return Ok(out);
        }
        // History no longer covers the gap: start the client over.
        let (head, state) = self
            .store
            .log_state(&cursor.topic)
            .await
            .map_err(|_| Disconnect::StoreUnavailable)?
            .ok_or(Disconnect::StoreUnavailable)?;
        let state = parse_raw(&state).ok_or(Disconnect::StoreUnavailable)?;
        cursor.next_seq = head + 1;
        let resync = Subscribed {
            kind: "resync",
            topic_key: self.topic_key,
            topic: &cursor.topic,
            seq: head,
            since: None,
            recovered: Some(false),
            replayed: 0,
            state: &state,
        };
        let text = to_text(&resync).ok_or(Disconnect::StoreUnavailable)?;
        recovery("resync");
        Ok(vec![Outgoing { seq: head, kind: "resync", text, received: None }])
    }
}

/// Counts a resume (`recovered`, or `reset` when history no longer covers
/// it) or a gap met live (`gap_filled`, or `resync`).
fn recovery(outcome: &'static str) {
    metrics::counter!(crate::metrics::RECOVERIES, "outcome" => outcome).increment(1);
}

fn parse_raw(state: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(state).ok()?;
    RawValue::from_string(text.to_owned()).ok()
}

fn to_text<T: Serialize>(message: &T) -> Option<Utf8Bytes> {
    serde_json::to_string(message).map(Utf8Bytes::from).ok()
}

//! The subscription logic shared by the WebSocket and SSE endpoints:
//! opening a subscription (snapshot, or replay from a sequence number) and
//! turning each broadcast frame into what the client must receive next.
//!
//! Every subscription tracks the next sequence number its client expects.
//! Frames at or below it are replays and are skipped; a frame beyond it
//! means something was lost (a pub/sub reconnect, a race between history
//! and live), and the gap is filled from the match's history before the
//! frame is sent. So a client sees each event once, in order, or is told
//! with a `resync` that it must start again from a fresh state.

use std::{sync::Arc, time::Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use store::{HistoryLimits, StateStore, StoreError};
use tokio::sync::broadcast;

use super::hub::{Channel, Frame, Hub};

/// Why a subscription could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("match {0} does not exist")]
    UnknownMatch(String),
    #[error("since {since} is beyond the head of match {match_id} ({head})")]
    SinceBeyondHead { match_id: String, since: u64, head: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored match state is not valid json")]
    CorruptState,
}

impl SubscribeError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownMatch(_) => "unknown_match",
            Self::SinceBeyondHead { .. } => "since_beyond_head",
            Self::Store(_) => "store_unavailable",
            Self::CorruptState => "internal",
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
    match_id: String,
    channel: Arc<Channel>,
    next_seq: u64,
}

impl Cursor {
    pub fn match_id(&self) -> &str {
        &self.match_id
    }
}

/// Releases a match's channel unless the subscription opened: the error
/// path and a cancelled call alike leave no channel behind.
struct Pending<'a> {
    hub: &'a Hub,
    match_id: &'a str,
    opened: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.opened {
            self.hub.release(self.match_id);
        }
    }
}

/// The live feed as subscribers see it.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn StateStore>,
    pub limits: HistoryLimits,
    /// How far a subscriber may fall behind, in bytes, before it is cut off.
    pub max_lag_bytes: u64,
}

#[derive(Serialize)]
struct Subscribed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match")]
    match_id: &'a str,
    /// Sequence number of the state below: the match's head.
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    /// With `since`: whether every missed event follows (`true`), or history
    /// no longer has them and the state below replaces them (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    /// How many missed events follow this message.
    replayed: usize,
    state: &'a RawValue,
}

impl Subscriptions {
    /// Subscribes to `match_id`, from its current state or, with `since`,
    /// replaying what the client missed after that sequence number.
    pub async fn open(&self, match_id: &str, since: Option<u64>) -> Result<Opened, SubscribeError> {
        // Live first, then history: anything published in between arrives
        // on the receiver and is skipped by sequence number if already sent.
        // The channel is made before the match is known to exist, so every
        // way out but success (an unknown match, a store error, the client
        // gone mid-call) releases it again.
        let mut pending = Pending { hub: &self.hub, match_id, opened: false };
        let (channel, receiver) = self.hub.subscribe(match_id);
        let opened = self.open_from(match_id, since, channel, receiver).await;
        pending.opened = opened.is_ok();
        opened
    }

    async fn open_from(
        &self,
        match_id: &str,
        since: Option<u64>,
        channel: Arc<Channel>,
        receiver: broadcast::Receiver<Arc<Frame>>,
    ) -> Result<Opened, SubscribeError> {
        let Some((head, state)) = self.store.log_state(match_id).await? else {
            return Err(SubscribeError::UnknownMatch(match_id.to_owned()));
        };
        let state = parse_raw(&state)?;

        let mut first = Vec::new();
        let mut replay = Vec::new();
        let recovered = match since {
            None => None,
            Some(since) if since > head => {
                return Err(SubscribeError::SinceBeyondHead { match_id: match_id.to_owned(), since, head });
            }
            Some(since) => {
                let slice = self.store.read_log(match_id, since, self.limits.max_entries).await?;
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
        let subscribed =
            Subscribed { kind: "subscribed", match_id, seq: head, since, recovered, replayed, state: &state };
        first.push(Outgoing { seq: head, kind: "subscribed", text: to_text(&subscribed)?, received: None });
        let mut next_seq = head + 1;
        for (seq, entry) in replay {
            next_seq = seq + 1;
            let text = Utf8Bytes::try_from(entry).map_err(|_| SubscribeError::CorruptState)?;
            first.push(Outgoing { seq, kind: "event", text, received: None });
        }
        let cursor = Cursor { match_id: match_id.to_owned(), channel, next_seq };
        Ok(Opened { first, cursor, receiver })
    }

    /// What to send for a frame received on the cursor's channel.
    pub async fn on_frame(&self, cursor: &mut Cursor, frame: &Frame) -> Result<Vec<Outgoing>, Disconnect> {
        let behind = cursor.channel.bytes_behind(frame);
        if behind > self.max_lag_bytes {
            return Err(Disconnect::SlowConsumer(behind));
        }
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
            .read_log(&cursor.match_id, after, self.limits.max_entries)
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
            tracing::debug!(match_id = %cursor.match_id, filled = out.len(), "filled a gap from history");
            recovery("gap_filled");
            return Ok(out);
        }
        // History no longer covers the gap: start the client over.
        let (head, state) = self
            .store
            .log_state(&cursor.match_id)
            .await
            .map_err(|_| Disconnect::StoreUnavailable)?
            .ok_or(Disconnect::StoreUnavailable)?;
        let state = parse_raw(&state).map_err(|_| Disconnect::StoreUnavailable)?;
        cursor.next_seq = head + 1;
        let resync = Subscribed {
            kind: "resync",
            match_id: &cursor.match_id,
            seq: head,
            since: None,
            recovered: Some(false),
            replayed: 0,
            state: &state,
        };
        let text = to_text(&resync).map_err(|_| Disconnect::StoreUnavailable)?;
        recovery("resync");
        Ok(vec![Outgoing { seq: head, kind: "resync", text, received: None }])
    }
}

/// Counts a resume (`recovered`, or `reset` when history no longer covers
/// it) or a gap met live (`gap_filled`, or `resync`).
fn recovery(outcome: &'static str) {
    metrics::counter!(crate::metrics::LIVE_RECOVERIES, "outcome" => outcome).increment(1);
}

fn parse_raw(state: &[u8]) -> Result<Box<RawValue>, SubscribeError> {
    let text = std::str::from_utf8(state).map_err(|_| SubscribeError::CorruptState)?;
    RawValue::from_string(text.to_owned()).map_err(|_| SubscribeError::CorruptState)
}

fn to_text<T: Serialize>(message: &T) -> Result<Utf8Bytes, SubscribeError> {
    serde_json::to_string(message).map(Utf8Bytes::from).map_err(|_| SubscribeError::CorruptState)
}

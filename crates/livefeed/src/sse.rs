//! One topic's feed as Server-Sent Events (`GET /v1/matches/{id}/live` on
//! the gateway, `/lots/{id}/live` in the auction): the same updates as the
//! WebSocket feed, for clients that only read.
//!
//! Each message is an SSE event named after its `type` (`subscribed`,
//! `event`, `resync`) whose id is the topic's sequence number, so a
//! reconnecting `EventSource` resumes by itself: it sends `Last-Event-ID`,
//! and the feed replays what it missed exactly as for `since` on the
//! WebSocket. A subscriber cut off gets one last `error` event saying why
//! (`slow_consumer`, `store_unavailable`).
//!
//! What it costs is paid in order: the reader's token, the topic id and
//! `since`, then a connection slot (the client address's share, then the
//! server's cap), then the store read.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use edge::{
    EdgeError,
    extract::{Path, Query},
    limits::ClientKey,
    streams::StreamSlot,
};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;

use crate::{
    Domain,
    engine::{Engine, FeedError, Transport},
    subscription::{Disconnect, Outgoing},
};

/// Seconds between keep-alive comments, so idle proxies keep the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// Resume after this sequence number (`Last-Event-ID` takes precedence).
    pub since: Option<u64>,
    /// Read token, for clients that cannot set headers.
    pub token: Option<String>,
}

/// The feed of the topic named by the route's path parameter.
pub async fn handler<D: Domain>(
    State(engine): State<Arc<Engine<D>>>,
    Path(id): Path<String>,
    Query(query): Query<LiveQuery>,
    request: Request,
) -> Response {
    let client = ClientKey::of(&engine.edge.limits, &request);
    match open(engine, &id, request.headers(), client, query).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn open<D: Domain>(
    engine: Arc<Engine<D>>,
    id: &str,
    headers: &HeaderMap,
    client: ClientKey,
    query: LiveQuery,
) -> Result<Response, FeedError> {
    engine.edge.auth.authorize_read(headers, query.token.as_deref()).map_err(EdgeError::from)?;
    D::check_topic(id).map_err(EdgeError::InvalidParameter)?;
    let since = match headers.get("last-event-id") {
        Some(value) => {
            Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                EdgeError::InvalidParameter("`Last-Event-ID` must be a sequence number".to_owned())
            })?)
        }
        None => query.since,
    };

    let slot = engine.edge.streams.open(client)?;
    let opened = engine.subscriptions.open(id, since).await.map_err(FeedError::subscribe::<D>)?;
    engine.count_connection(Transport::Sse, 1);
    let connection = Connection { engine: Arc::clone(&engine), _slot: slot };
    let stream = events(engine.subscriptions.follow(opened), connection);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// Counts the connection while the response body lives.
struct Connection<D: Domain> {
    engine: Arc<Engine<D>>,
    _slot: StreamSlot,
}

impl<D: Domain> Drop for Connection<D> {
    fn drop(&mut self) {
        self.engine.count_connection(Transport::Sse, -1);
        self.engine.subscriptions.hub.prune();
    }
}

/// The data of the last event a cut-off subscriber gets: why, with a code
/// clients branch on.
fn closing_message(reason: &Disconnect) -> String {
    let code = match reason {
        Disconnect::StoreUnavailable => "store_unavailable",
        Disconnect::SlowConsumer(_) | Disconnect::Lagged(_) => "slow_consumer",
    };
    serde_json::json!({"type": "error", "code": code, "message": reason.to_string()}).to_string()
}

/// The subscription's messages as SSE events, until it ends, the client must
/// be cut off (one last `error` event says why), or the service stops.
fn events<D: Domain>(
    messages: impl Stream<Item = Result<Outgoing, Disconnect>> + Send + 'static,
    connection: Connection<D>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let stop = connection.engine.edge.shutdown.closing().clone().cancelled_owned();
    messages.take_until(stop).map(move |message| {
        let engine = &connection.engine;
        Ok(match message {
            Ok(message) => {
                engine.count_delivered(Transport::Sse, &message);
                Event::default().event(message.kind).id(message.seq.to_string()).data(message.text.as_str())
            }
            Err(reason) => {
                // Say why; the stream ends after this, and the client's
                // EventSource reconnects and resumes.
                tracing::info!(%reason, "closing an SSE subscriber");
                if !matches!(reason, Disconnect::StoreUnavailable) {
                    engine.count_slow_disconnect(Transport::Sse);
                }
                Event::default().event("error").data(closing_message(&reason))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_is_not_called_a_slow_consumer() {
        let parsed =
            |reason| serde_json::from_str::<serde_json::Value>(&closing_message(&reason)).expect("json");
        let store = parsed(Disconnect::StoreUnavailable);
        assert_eq!(
            (store["type"].as_str(), store["code"].as_str()),
            (Some("error"), Some("store_unavailable"))
        );
        assert_eq!(parsed(Disconnect::Lagged(3))["code"], "slow_consumer");
        let slow = parsed(Disconnect::SlowConsumer(1 << 20));
        assert_eq!(slow["code"], "slow_consumer");
        assert!(slow["message"].as_str().is_some_and(|m| m.contains("1048576")), "{slow}");
    }
}

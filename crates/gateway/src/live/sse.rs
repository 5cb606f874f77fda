//! `GET /v1/matches/{id}/live`: the same updates as the WebSocket feed, as
//! Server-Sent Events, for clients that only read.
//!
//! Each message is an SSE event named after its `type` (`subscribed`,
//! `event`, `resync`) whose id is the match's sequence number, so a
//! reconnecting `EventSource` resumes by itself: it sends `Last-Event-ID`,
//! and the gateway replays what it missed exactly as for `since` on the
//! WebSocket.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use domain::live::MatchId;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{
    LiveState, Transport,
    subscription::{Disconnect, Outgoing},
};
use edge::{
    auth::Auth,
    extract::{Path, Query},
};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// Resume after this sequence number (`Last-Event-ID` takes precedence).
    pub since: Option<u64>,
    /// Read token, for clients that cannot set headers.
    pub token: Option<String>,
}

/// One match's updates as Server-Sent Events; resumes from `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/matches/{id}/live", tag = "live",
    params(
        ("id" = String, Path, description = "match id"),
        ("since" = Option<u64>, Query, description = "resume after this sequence number"),
        ("token" = Option<String>, Query, description = "read token, when reads need one"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this sequence number (set by EventSource)"),
    ),
    responses(
        (status = 200, description = "`subscribed`, then `event` (or `resync`) messages", content_type = "text/event-stream", body = super::wire::LiveMessage),
        (status = 400, description = "`since` beyond the match's head", body = edge::error::ErrorBody),
        (status = 404, description = "no such match", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "connection limit reached", body = edge::error::ErrorBody),
    ))]
pub async fn live_sse(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    Path(match_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Result<Response, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let id = MatchId::parse(&match_id).map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let since = match headers.get("last-event-id") {
        Some(value) => {
            Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                ApiError::invalid_parameter("`Last-Event-ID` must be a sequence number".into())
            })?)
        }
        None => query.since,
    };

    let permit = live
        .connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Edge(edge::EdgeError::TooManyConnections(live.config.max_connections)))?;
    let opened = live.subscriptions.open(id.as_str(), since).await?;
    live.metrics_connections(Transport::Sse, 1);
    let connection = Connection { live: Arc::clone(&live), _permit: permit };
    let stream = events(live.subscriptions.follow(opened), connection);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// Counts the connection while the response body lives.
struct Connection {
    live: Arc<LiveState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.live.metrics_connections(Transport::Sse, -1);
        self.live.subscriptions.hub.prune();
    }
}

/// The subscription's messages as SSE events, until it ends, the client must
/// be cut off (one last `error` event says why), or the gateway stops.
fn events(
    messages: impl Stream<Item = Result<Outgoing, Disconnect>> + Send + 'static,
    connection: Connection,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let stop = connection.live.stop.clone().cancelled_owned();
    messages.take_until(stop).map(move |message| {
        let live = &connection.live;
        Ok(match message {
            Ok(message) => {
                live.metrics_delivered(Transport::Sse, &message);
                Event::default().event(message.kind).id(message.seq.to_string()).data(message.text.as_str())
            }
            Err(reason) => {
                // Say why; the stream ends after this, and the client's
                // EventSource reconnects and resumes.
                tracing::info!(%reason, "closing an SSE subscriber");
                let code = match reason {
                    Disconnect::StoreUnavailable => "store_unavailable",
                    Disconnect::SlowConsumer(_) | Disconnect::Lagged(_) => {
                        live.metrics_slow_disconnect(Transport::Sse);
                        "slow_consumer"
                    }
                };
                let body = serde_json::json!({"type": "error", "code": code, "message": reason.to_string()});
                Event::default().event("error").data(body.to_string())
            }
        })
    })
}

//! A live auction on courtside's live-feed engine: sellers open lots,
//! bidders bid, and everyone watching a lot sees each bid as it lands, over
//! Server-Sent Events that resume where they left off.
//!
//! The domain is in [`lot`]; this file is its HTTP face:
//! - `POST /events`: one lot event (`open`, `bid`, `close`) as JSON.
//! - `GET /lots/{id}`: the lot's current state.
//! - `GET /lots/{id}/live`: `subscribed`, then each `event`, as SSE; resumes
//!   after `Last-Event-ID` (or `?since=`).
//!
//! The engine does the rest: sequence numbers, history, fan-out across
//! processes sharing a Redis, resume, and slow subscribers.

pub mod lot;

use std::{convert::Infallible, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response, Sse, sse::Event},
    routing::{get, post},
};
use futures::{Stream, StreamExt as _};
use livefeed::{Accepted, Domain as _, Hub, Ingestor, Rejected, SubscribeError, Subscriptions};
use serde_json::json;
use store::{HistoryLimits, StateStore};
use tokio_util::sync::CancellationToken;

use crate::lot::{Auction, LotEvent};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    ingestor: Ingestor<Auction>,
    subscriptions: Subscriptions,
    /// Ends every live stream, so a graceful shutdown is not held open.
    stop: CancellationToken,
}

impl App {
    /// The auction on `store`, with its fan-out bridge running until `stop`.
    pub fn new(store: Arc<dyn StateStore>, stop: CancellationToken) -> Self {
        let limits = HistoryLimits::default();
        let hub = Arc::new(Hub::new(Auction::TOPIC, 1024, 10_000));
        tokio::spawn(livefeed::run_bridge(Arc::clone(&hub), Arc::clone(&store), stop.clone()));
        Self {
            stop,
            ingestor: Ingestor::new(Arc::clone(&store), limits, Arc::clone(&hub)),
            subscriptions: Subscriptions {
                topic_key: Auction::TOPIC,
                hub,
                store,
                limits,
                max_lag_bytes: 256 * 1024,
            },
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/events", post(publish))
            .route("/lots/{id}", get(read_lot))
            .route("/lots/{id}/live", get(follow_lot))
            .with_state(self)
    }
}

/// A JSON error: `{"error": {"code": .., "message": ..}}`.
fn error(status: StatusCode, code: &str, message: impl ToString) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.to_string()}}))).into_response()
}

fn unavailable(err: impl ToString) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", err);
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

async fn publish(State(app): State<App>, body: Bytes) -> Response {
    let event: LotEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(err) => return error(StatusCode::BAD_REQUEST, "invalid_event", err),
    };
    let mut results = match app.ingestor.ingest(std::slice::from_ref(&event)).await {
        Ok(results) => results,
        Err(err) => return unavailable(err),
    };
    match results.pop() {
        Some(Ok(Accepted::Applied)) => Json(json!({"status": "applied", "seq": event.seq})).into_response(),
        Some(Ok(Accepted::Duplicate)) => {
            Json(json!({"status": "duplicate", "seq": event.seq})).into_response()
        }
        Some(Err(Rejected::Apply(err))) => error(StatusCode::UNPROCESSABLE_ENTITY, err.code(), err),
        Some(Err(rejected @ Rejected::Gap { .. })) => error(StatusCode::CONFLICT, "sequence_gap", rejected),
        Some(Err(rejected)) => error(StatusCode::CONFLICT, "conflict", rejected),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no result"),
    }
}

async fn read_lot(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.subscriptions.store.log_state(&id).await {
        Ok(Some((_, state))) => ([(header::CONTENT_TYPE, "application/json")], state).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "unknown_lot", format!("lot {id} does not exist")),
        Err(err) => unavailable(err),
    }
}

#[derive(Debug, serde::Deserialize)]
struct LiveQuery {
    since: Option<u64>,
}

async fn follow_lot(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Response {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.trim().parse().ok());
    let opened = match app.subscriptions.open(&id, last_event_id.or(query.since)).await {
        Ok(opened) => opened,
        Err(err @ SubscribeError::UnknownTopic { .. }) => {
            return error(StatusCode::NOT_FOUND, "unknown_lot", err);
        }
        Err(err @ SubscribeError::SinceBeyondHead { .. }) => {
            return error(StatusCode::BAD_REQUEST, err.code(), err);
        }
        Err(err) => return unavailable(err),
    };
    let messages = app.subscriptions.follow(opened).take_until(app.stop.cancelled_owned());
    Sse::new(sse_events(messages)).into_response()
}

/// Each message as an SSE event named by its type, its id the sequence
/// number a reconnecting client resumes after.
fn sse_events(
    messages: impl Stream<Item = Result<livefeed::Outgoing, livefeed::Disconnect>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    messages.map(|message| {
        Ok(match message {
            Ok(message) => {
                Event::default().event(message.kind).id(message.seq.to_string()).data(message.text.as_str())
            }
            Err(reason) => Event::default()
                .event("error")
                .data(json!({"type": "error", "message": reason.to_string()}).to_string()),
        })
    })
}

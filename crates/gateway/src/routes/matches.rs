//! Publishing events and reading matches: the plain HTTP side of the live
//! feed (the streaming side is [`crate::live::ws`] and [`crate::live::sse`]).
//!
//! Batch semantics, as the API documents them:
//! - `POST /v1/events` takes one event or a JSON array. An array is parsed
//!   whole first: if any element is malformed, nothing is applied and the
//!   answer is 400 naming the element and field. Then the events are applied
//!   in order, each atomically; the answer lists the ones rejected by the
//!   sequencing rule or the match state (a gap, an unknown team, ...).
//! - `POST /v1/events/bulk` takes NDJSON, one event per line, read as a
//!   stream (memory stays flat whatever the body size). Each line stands
//!   alone: a bad line is reported by number and skipped, the others are
//!   applied in order.
//! - Either way an event is acknowledged only once stored, a replayed event
//!   is acknowledged as a duplicate without being applied twice, and so
//!   retrying a whole request after any failure is safe.

use std::{collections::VecDeque, sync::Arc};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{FromRequest as _, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::live::{MatchEvent, MatchId};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::value::RawValue;

use edge::{
    auth::Auth,
    extract::{Path, Query},
    limits::{Lane, Limits},
};

use crate::{
    error::ApiError,
    live::{
        Accepted, Committed, IngestFailure, LiveState, Rejected, Session,
        football::rejection_code,
        ndjson::{Line, LineSplitter},
        sse::LiveQuery,
        wire::{EventBody, MatchView, Publication, parse_line, parse_publication},
    },
    state::{BodyLimit, LineLimit},
};

/// Events applied per store commit in bulk ingest. The store writes a
/// match's consecutive events of one commit together (one history entry,
/// one event stream entry, its state once), so what a commit holds of each
/// match decides the store's cost per event: a body spread round-robin over
/// a thousand matches has twelve events of each per chunk (at three, Redis
/// spent more than twice the CPU per event). Bounded by memory: a chunk's
/// updates are held until its commit is over, about 10 MB here.
const BULK_CHUNK: usize = 12_288;
/// Chunks on their way to the store at once in bulk ingest. The next chunk
/// is read, checked and folded while this one is stored, so the gateway's
/// CPU work and the store's overlap; one in flight keeps each match's
/// events in order on the way (the store sends a chunk in several
/// pipelines) and the memory to two chunks.
const CHUNKS_IN_FLIGHT: usize = 1;
/// Rejected lines listed in a bulk report; the count covers all of them.
const MAX_REPORTED_REJECTIONS: usize = 1_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventAck {
    pub status: &'static str,
    #[serde(rename = "match")]
    pub match_id: String,
    pub seq: u64,
}

#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct BatchReport {
    /// Events stored (applied now or earlier).
    pub accepted: u64,
    /// Of those, replays that were already stored.
    pub duplicates: u64,
    /// Events not applied, with why.
    pub rejected: Vec<RejectedItem>,
    /// All rejections, including any beyond the listed ones.
    pub rejected_count: u64,
    /// Applied and duplicate events not yet in the metrics. They are counted
    /// per chunk: a counter's label lookup per event cost more than the
    /// rest of the report's bookkeeping.
    #[serde(skip)]
    uncounted: Uncounted,
}

#[derive(Debug, Default)]
struct Uncounted {
    applied: u64,
    duplicates: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectedItem {
    /// Position in the array (from 0), for `POST /v1/events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Line number (from 1), for `POST /v1/events/bulk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub code: &'static str,
    pub message: String,
}

impl BatchReport {
    fn record(&mut self, position: Position, result: Result<Accepted, RejectedReason>) {
        match result {
            Ok(Accepted::Applied) => {
                self.accepted += 1;
                self.uncounted.applied += 1;
            }
            Ok(Accepted::Duplicate) => {
                self.accepted += 1;
                self.duplicates += 1;
                self.uncounted.duplicates += 1;
            }
            Err(reason) => {
                count_outcome(Err(reason.code), 1);
                self.rejected_count += 1;
                if self.rejected.len() < MAX_REPORTED_REJECTIONS {
                    let (index, line) = match position {
                        Position::Index(i) => (Some(i), None),
                        Position::Line(l) => (None, Some(l)),
                    };
                    self.rejected.push(RejectedItem {
                        index,
                        line,
                        code: reason.code,
                        message: reason.message,
                    });
                }
            }
        }
    }

    /// Adds the applied and duplicate events recorded since the last call
    /// to the metrics.
    fn count(&mut self) {
        let Uncounted { applied, duplicates } = std::mem::take(&mut self.uncounted);
        if applied > 0 {
            count_outcome(Ok(Accepted::Applied), applied);
        }
        if duplicates > 0 {
            count_outcome(Ok(Accepted::Duplicate), duplicates);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Position {
    Index(usize),
    Line(u64),
}

struct RejectedReason {
    code: &'static str,
    message: String,
}

impl From<Rejected> for RejectedReason {
    fn from(rejected: Rejected) -> Self {
        Self { code: rejection_code(&rejected), message: rejected.to_string() }
    }
}

/// Counts `n` events of one outcome: `applied`, `duplicate`, or `rejected`
/// with the rejection's code as the reason.
fn count_outcome(outcome: Result<Accepted, &'static str>, n: u64) {
    let (outcome, reason) = match outcome {
        Ok(Accepted::Applied) => ("applied", ""),
        Ok(Accepted::Duplicate) => ("duplicate", ""),
        Err(code) => ("rejected", code),
    };
    metrics::counter!(crate::metrics::INGEST_EVENTS, "outcome" => outcome, "reason" => reason).increment(n);
}

/// A request refused whole for a body that is not valid events.
fn invalid(message: String) -> ApiError {
    count_outcome(Err("invalid_event"), 1);
    ApiError::InvalidEvent(message)
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn ingest_failure(failure: IngestFailure) -> ApiError {
    match failure {
        IngestFailure::Store(err) => ApiError::Store(err),
        IngestFailure::Unexpected(err) => ApiError::Unexpected(err),
    }
}

/// What `POST /v1/events` takes (documentation only).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PublishRequest {
    One(Box<EventBody>),
    Many(Vec<EventBody>),
}

/// What `POST /v1/events` answers (documentation only).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PublishResponse {
    One(EventAck),
    Many(BatchReport),
}

/// Publishes one event, or a JSON array applied in order (see the module
/// documentation for the batch rules).
#[utoipa::path(post, path = "/v1/events", tag = "live",
    request_body(content = PublishRequest, description = "one event, or an array of events"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "stored (or already stored); for an array, a per-event report", body = PublishResponse),
        (status = 400, description = "malformed event; nothing applied", body = edge::error::ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = edge::error::ErrorBody),
        (status = 409, description = "sequence gap, or the match is not started, already started or finished", body = edge::error::ErrorBody),
        (status = 413, description = "body too large", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address or this publish token; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 422, description = "the team does not play in the match, or the event would break a limit every match keeps (goals, players sent off)", body = edge::error::ErrorBody),
        (status = 503, description = "state store unavailable; nothing applied; see Retry-After", body = edge::error::ErrorBody),
    ))]
pub async fn publish(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    State(limits): State<Arc<Limits>>,
    State(BodyLimit(body_limit)): State<BodyLimit>,
    request: Request,
) -> Result<Response, ApiError> {
    // The token first, the body after: an anonymous client must not get the
    // gateway to buffer up to the body limit for it. (The client address's
    // rate was taken before the token check, by the route's layer.)
    let publisher = auth.authorize_publisher(request.headers())?;
    limits.check_publisher(Lane::Ingest, publisher)?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| ApiError::from_body_rejection(rejection, body_limit))?;

    match parse_publication(&body, now_ms()).map_err(invalid)? {
        Publication::One(event) => {
            let mut results =
                live.ingestor.ingest(std::slice::from_ref(&event)).await.map_err(ingest_failure)?;
            let result =
                results.pop().ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("no ingest result")))?;
            count_outcome(result.as_ref().map(|accepted| *accepted).map_err(rejection_code), 1);
            let status = match result.map_err(ApiError::Rejected)? {
                Accepted::Applied => "applied",
                Accepted::Duplicate => "duplicate",
            };
            let ack = EventAck { status, match_id: event.match_id().to_string(), seq: event.seq() };
            Ok((StatusCode::OK, Json(ack)).into_response())
        }
        Publication::Many(events) => {
            let results = live.ingestor.ingest(&events).await.map_err(ingest_failure)?;
            let mut report = BatchReport::default();
            for (index, result) in results.into_iter().enumerate() {
                report.record(Position::Index(index), result.map_err(RejectedReason::from));
            }
            report.count();
            Ok(Json(report).into_response())
        }
    }
}

/// Publishes NDJSON, one event per line, read as a stream.
#[utoipa::path(post, path = "/v1/events/bulk", tag = "live",
    request_body(content = String, content_type = "application/x-ndjson", description = "one event per line"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "per-line report", body = BatchReport),
        (status = 401, description = "missing or invalid bearer token", body = edge::error::ErrorBody),
        (status = 415, description = "content type is not application/x-ndjson", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address or this publish token; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "state store unavailable; retrying the body is safe", body = edge::error::ErrorBody),
    ))]
pub async fn publish_bulk(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    State(limits): State<Arc<Limits>>,
    State(LineLimit(max_line_bytes)): State<LineLimit>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchReport>, ApiError> {
    let publisher = auth.authorize_publisher(&headers)?;
    limits.check_publisher(Lane::Ingest, publisher)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-ndjson") {
        return Err(ApiError::Edge(edge::EdgeError::UnsupportedMediaType("application/x-ndjson")));
    }

    let mut report = BatchReport::default();
    let mut lines = LineReader::new(body, max_line_bytes);
    let mut chunk: Vec<(u64, MatchEvent)> = Vec::with_capacity(BULK_CHUNK);
    let mut session = Session::default();
    // Chunks in flight to the store while the next is parsed and folded:
    // the gateway's CPU work and the store's overlap. Each commit knows when
    // the one before it is over, so a chunk that overtakes its predecessor
    // (see `Ingestor::commit_after`) still stores each match's events in
    // order; commits are finished in order too.
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(CHUNKS_IN_FLIGHT);
    let mut previous_done: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let now = now_ms();
    loop {
        let line = lines
            .next()
            .await
            .map_err(|err| ApiError::InvalidEvent(format!("cannot read the body: {err}")))?;
        let end_of_body = line.is_none();
        match line {
            None => {}
            Some(Line::TooLong(number)) => report.record(
                Position::Line(number),
                Err(RejectedReason {
                    code: "line_too_long",
                    message: format!("line exceeds {} bytes", max_line_bytes),
                }),
            ),
            Some(Line::Text(number, text)) => match parse_line(&text, now) {
                None => {}
                Some(Ok(event)) => chunk.push((number, event)),
                Some(Err(message)) => {
                    report.record(
                        Position::Line(number),
                        Err(RejectedReason { code: "invalid_event", message }),
                    );
                }
            },
        }
        if chunk.len() >= BULK_CHUNK || (end_of_body && !chunk.is_empty()) {
            let (numbers, events): (Vec<u64>, Vec<MatchEvent>) = chunk.drain(..).unzip();
            let prepared = live.ingestor.prepare(&mut session, &events).await.map_err(ingest_failure)?;
            if in_flight.len() >= CHUNKS_IN_FLIGHT
                && let Some(oldest) = in_flight.pop_front()
            {
                oldest.finish(&mut session, &mut report).await?;
            }
            let ingestor = live.ingestor.clone();
            let (done, next_waits) = tokio::sync::oneshot::channel::<()>();
            let previous = previous_done.replace(next_waits);
            in_flight.push_back(InFlight {
                numbers,
                commit: tokio::spawn(async move {
                    let committed = ingestor.commit_after(prepared, previous).await;
                    drop(done);
                    committed
                }),
            });
        }
        if end_of_body {
            break;
        }
    }
    while let Some(last) = in_flight.pop_front() {
        last.finish(&mut session, &mut report).await?;
    }
    Ok(Json(report))
}

/// A chunk whose appends are on their way to the store.
struct InFlight {
    numbers: Vec<u64>,
    commit: tokio::task::JoinHandle<Result<Committed, IngestFailure>>,
}

impl InFlight {
    async fn finish(self, session: &mut Session, report: &mut BatchReport) -> Result<(), ApiError> {
        let committed =
            self.commit.await.map_err(|err| ApiError::Unexpected(anyhow::anyhow!("commit task: {err}")))?;
        session.settle(&committed);
        let committed = committed.map_err(ingest_failure)?;
        for (number, result) in self.numbers.into_iter().zip(committed.results) {
            report.record(Position::Line(number), result.map_err(RejectedReason::from));
        }
        report.count();
        Ok(())
    }
}

/// Feeds a streamed body to a [`LineSplitter`], one chunk at a time.
struct LineReader {
    body: axum::body::BodyDataStream,
    lines: LineSplitter,
    finished: bool,
}

impl LineReader {
    fn new(body: Body, max: usize) -> Self {
        Self { body: body.into_data_stream(), lines: LineSplitter::new(max), finished: false }
    }

    async fn next(&mut self) -> Result<Option<Line>, axum::Error> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return Ok(Some(line));
            }
            if self.finished {
                return Ok(self.lines.finish());
            }
            match self.body.next().await {
                Some(chunk) => self.lines.push(&chunk?),
                None => self.finished = true,
            }
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchList {
    #[schema(value_type = Vec<MatchView>)]
    pub matches: Vec<Box<RawValue>>,
}

/// Every match with its current state.
#[utoipa::path(get, path = "/v1/matches", tag = "live",
    params(("token" = Option<String>, Query, description = "read token, when reads need one")),
    responses(
        (status = 200, description = "all matches", body = MatchList),
        (status = 401, description = "read tokens are configured and none was given", body = edge::error::ErrorBody),
        (status = 503, description = "state store unavailable", body = edge::error::ErrorBody),
    ))]
pub async fn list_matches(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Result<Json<MatchList>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let mut states = live.subscriptions.store.log_states().await?;
    states.sort_by(|a, b| a.0.cmp(&b.0));
    let matches = states
        .into_iter()
        .filter_map(|(_, state)| {
            String::from_utf8(state.to_vec()).ok().and_then(|s| RawValue::from_string(s).ok())
        })
        .collect();
    Ok(Json(MatchList { matches }))
}

/// One match, from the in-process cache when the update stream has it, else
/// from the store.
#[utoipa::path(get, path = "/v1/matches/{id}", tag = "live",
    params(("id" = String, Path, description = "match id"), ("token" = Option<String>, Query, description = "read token, when reads need one")),
    responses(
        (status = 200, description = "the match", body = MatchView),
        (status = 404, description = "no such match", body = edge::error::ErrorBody),
    ))]
pub async fn get_match(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    Path(match_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Result<Response, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let id = MatchId::parse(&match_id).map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let hub = &live.subscriptions.hub;
    let state_json = match hub.cached_state(id.as_str()) {
        Some(cached) => cached,
        None => {
            let (seq, stored) = live
                .subscriptions
                .store
                .log_state(id.as_str())
                .await?
                .ok_or_else(|| ApiError::UnknownMatch(id.to_string()))?;
            // An update may have cached a newer state since the read: the
            // cache keeps whichever is later.
            hub.cache_state(id.as_str(), seq, stored.clone());
            stored
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], state_json).into_response())
}

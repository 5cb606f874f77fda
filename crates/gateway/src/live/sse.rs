//! `GET /v1/matches/{id}/live`: one match's updates as Server-Sent Events,
//! as the API documents them. The engine serves it ([`livefeed::sse`]:
//! resume from `Last-Event-ID`, the closing `error` event).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    response::Response,
};
use edge::extract::{Path, Query};
pub use livefeed::sse::LiveQuery;

use super::LiveState;

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
        (status = 429, description = "over the rate limit for this client address (`rate_limited`), or the address holds its share of live connections already (`too_many_connections_from_address`); see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "connection limit reached", body = edge::error::ErrorBody),
    ))]
pub async fn live_sse(
    State(live): State<Arc<LiveState>>,
    id: Path<String>,
    query: Query<LiveQuery>,
    request: Request,
) -> Response {
    livefeed::sse::handler(State(live), id, query, request).await
}

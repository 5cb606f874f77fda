//! `GET /v1/live`: the WebSocket live feed, as the API documents it. The
//! engine serves it ([`livefeed::ws`], where the protocol and its close
//! codes are); football gives it the `match` key and the match id rule.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    response::Response,
};

use super::LiveState;

/// The WebSocket live feed (protocol in [`livefeed::ws`]; each message is
/// a [`LiveMessage`](super::wire::LiveMessage)).
#[utoipa::path(get, path = "/v1/live", tag = "live",
    params(("token" = Option<String>, Query, description = "read token, when reads need one")),
    responses(
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 101, description = "switching to the WebSocket protocol", body = super::wire::LiveMessage),
        (status = 429, description = "over the rate limit for this client address (`rate_limited`), or the address holds its share of live connections already (`too_many_connections_from_address`); see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "connection limit reached", body = edge::error::ErrorBody),
    ))]
pub async fn live_ws(State(live): State<Arc<LiveState>>, request: Request) -> Response {
    livefeed::ws::handler(State(live), request).await
}

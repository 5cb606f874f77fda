//! A live auction on courtside's edge and live-feed engine: sellers open
//! lots, bidders bid, and everyone watching a lot sees each bid as it lands,
//! over Server-Sent Events that resume where they left off.
//!
//! The domain is in [`lot`]; this file is its HTTP face:
//! - `POST /events`: one lot event (`open`, `bid`, `close`) as JSON, with a
//!   publish token.
//! - `GET /lots/{id}`: the lot's current state.
//! - `GET /lots/{id}/live`: `subscribed`, then each `event`, as SSE; resumes
//!   after `Last-Event-ID` (or `?since=`).
//!
//! The engine ([`livefeed::Engine`]) does the sequencing, history, fan-out
//! across processes sharing a Redis, the SSE feed with its resume and slow
//! subscribers; the edge
//! ([`edge::Server`]) does the rest of what a public service needs: tokens,
//! rate limits, connection caps, timeouts, request ids, traces, metrics,
//! health, JSON errors and the drain on shutdown.

pub mod lot;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest as _, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use edge::{
    ApiErrorKind, Checks, Edge, EdgeError,
    auth::TokenQuery,
    extract::{Path, Query},
    limits::Lane,
    middleware::rate_limit,
};
use livefeed::{Accepted, Domain as _, Engine, Rejected};
use serde_json::json;
use store::{StateStore, StoreError};

use crate::lot::{Auction, BidError, LotEvent};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The live feed of lots: ingest, fan-out and the SSE transport.
    live: Arc<Engine<Auction>>,
    edge: Edge,
}

impl App {
    /// The auction on `store`, served through `edge`; its fan-out bridge
    /// runs until the edge closes.
    pub fn new(store: Arc<dyn StateStore>, edge: &Edge) -> Self {
        let live = Engine::new(store, livefeed::Settings::default(), edge);
        live.start_bridge();
        Self { live, edge: edge.clone() }
    }

    /// The routes, each behind the edge's pieces it needs: publishing
    /// spends from the ingest lane, following from the subscribe lane, and
    /// the ordinary requests get the request timeout.
    pub fn router(self) -> Router {
        let lane = |lane| from_fn_with_state(self.edge.lane(lane), rate_limit);
        Router::new()
            .route("/events", post(publish).route_layer(lane(Lane::Ingest)).route_layer(self.edge.timeout()))
            .route("/lots/{id}", get(read_lot).route_layer(self.edge.timeout()))
            .route("/lots/{id}/live", self.live.sse().route_layer(lane(Lane::Subscribe)))
            .with_state(self)
    }

    /// What readiness asks: the store, which every route needs.
    pub fn checks(&self) -> Checks {
        self.live.checks()
    }
}

/// Every way an auction request fails, with its status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum AuctionError {
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("{0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Bid(#[from] BidError),
    #[error(transparent)]
    Rejected(Rejected<BidError>),
    #[error("lot {0} does not exist")]
    UnknownLot(String),
    #[error("state store unavailable, retry later")]
    Store(#[source] anyhow::Error),
}

impl ApiErrorKind for AuctionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Edge(err) => err.status(),
            Self::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            Self::Bid(_) | Self::Rejected(Rejected::Apply(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Rejected(_) => StatusCode::CONFLICT,
            Self::UnknownLot(_) => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Edge(err) => err.code(),
            Self::InvalidEvent(_) => "invalid_event",
            Self::Bid(err) | Self::Rejected(Rejected::Apply(err)) => err.code(),
            Self::Rejected(Rejected::Gap { .. }) => "sequence_gap",
            Self::Rejected(Rejected::Conflict { .. }) => "conflict",
            Self::UnknownLot(_) => "unknown_lot",
            Self::Store(_) => "store_unavailable",
        }
    }

    fn message(&self) -> String {
        match self {
            // The store's own text (addresses, versions) is for the log.
            Self::Store(_) => "state store unavailable, retry later".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AuctionError {
    fn into_response(self) -> Response {
        match self {
            Self::Edge(err) => err.into_response(),
            other => edge::error::respond(&other),
        }
    }
}

fn store_failure(err: impl Into<anyhow::Error>) -> AuctionError {
    AuctionError::Store(err.into())
}

/// The token first, the body after: an anonymous client must not get the
/// service to buffer up to the body limit for it.
async fn publish(State(app): State<App>, request: Request) -> Result<Json<serde_json::Value>, AuctionError> {
    let publisher = app.edge.auth.authorize_publisher(request.headers()).map_err(EdgeError::from)?;
    app.edge.limits.check_publisher(Lane::Ingest, publisher).map_err(EdgeError::from)?;
    if !is_json(request.headers()) {
        return Err(EdgeError::UnsupportedMediaType("application/json").into());
    }
    let body = Bytes::from_request(request, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AuctionError::Edge(EdgeError::PayloadTooLarge(app.edge.body_limit))
        } else {
            AuctionError::InvalidEvent(rejection.body_text())
        }
    })?;
    let event: LotEvent =
        serde_json::from_slice(&body).map_err(|err| AuctionError::InvalidEvent(err.to_string()))?;
    let mut results = app.live.ingestor.ingest(std::slice::from_ref(&event)).await.map_err(store_failure)?;
    let status = match results.pop() {
        Some(Ok(Accepted::Applied)) => "applied",
        Some(Ok(Accepted::Duplicate)) => "duplicate",
        Some(Err(rejected)) => return Err(AuctionError::Rejected(rejected)),
        None => return Err(store_failure(anyhow::anyhow!("no ingest result"))),
    };
    Ok(Json(json!({"status": status, "seq": event.seq})))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Checks the reader's token (reads are public without read tokens) and
/// the lot id, before anything is looked up.
fn admit(app: &App, headers: &HeaderMap, token: Option<&str>, id: &str) -> Result<(), AuctionError> {
    app.edge.auth.authorize_read(headers, token).map_err(EdgeError::from)?;
    Auction::check_topic(id).map_err(|reason| EdgeError::InvalidParameter(reason).into())
}

async fn read_lot(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, AuctionError> {
    admit(&app, &headers, query.token.as_deref(), &id)?;
    match app.live.subscriptions.store.log_state(&id).await {
        Ok(Some((_, state))) => Ok(([(header::CONTENT_TYPE, "application/json")], state).into_response()),
        Ok(None) => Err(AuctionError::UnknownLot(id)),
        Err(err) => Err(store_failure(err)),
    }
}

impl From<StoreError> for AuctionError {
    fn from(err: StoreError) -> Self {
        store_failure(err)
    }
}

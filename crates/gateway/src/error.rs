//! [`ApiError`]: every way a gateway request can fail, and the one place
//! that gives each failure its HTTP status and stable code. The edge renders
//! it in its one shape, `{"error":{"code":"...","message":"..."}}`
//! ([`edge::error::respond`]); the edge's own refusals (no route, no token,
//! over the rate, too large, too slow) pass through as [`EdgeError`].
//!
//! Client mistakes (4xx) say exactly what was wrong. Server-side failures
//! (5xx) say what the client can do about it, never internal details: those
//! go to the log and the trace, recorded by the request span.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use domain::live::ApplyError;
use edge::{ApiErrorKind, EdgeError, auth::AuthError, limits::RateLimited};

use crate::{
    live::{
        Rejected, SubscribeError,
        football::{rejection_code, subscribe_code},
    },
    worker::WorkerError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Refused by the edge: a bad query or path, no token, over the rate,
    /// too many connections, a body too large.
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// An event (or batch) that does not parse; nothing was applied.
    #[error("{0}")]
    InvalidEvent(String),
    /// A well-formed event the sequencing rule or the match state refused.
    #[error(transparent)]
    Rejected(Rejected),
    #[error("match {0} does not exist")]
    UnknownMatch(String),
    #[error("player {0} has no rated move yet")]
    NotRated(u32),
    #[error("{0}")]
    Subscribe(#[from] SubscribeError),
    #[error("state store unavailable, retry later")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Anything unexpected; the details stay server-side.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        Self::Edge(err.into())
    }
}

impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        Self::Edge(limited.into())
    }
}

impl ApiError {
    /// A query parameter or body field is missing or malformed.
    pub fn invalid_parameter(message: String) -> Self {
        Self::Edge(EdgeError::InvalidParameter(message))
    }

    /// Maps a failure to read the request body: too large, or cut short.
    pub fn from_body_rejection(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::Edge(EdgeError::PayloadTooLarge(limit))
        } else {
            Self::InvalidEvent(rejection.body_text())
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Edge(err) => (err.status(), err.code()),
            Self::InvalidEvent(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
            Self::Rejected(
                rejected @ Rejected::Apply(
                    ApplyError::UnknownTeam { .. }
                    | ApplyError::TooManyGoals { .. }
                    | ApplyError::TooManyRedCards { .. },
                ),
            ) => (StatusCode::UNPROCESSABLE_ENTITY, rejection_code(rejected)),
            Self::Rejected(rejected) => (StatusCode::CONFLICT, rejection_code(rejected)),
            Self::UnknownMatch(_) => (StatusCode::NOT_FOUND, "unknown_match"),
            Self::NotRated(_) => (StatusCode::NOT_FOUND, "not_rated"),
            Self::Subscribe(err @ SubscribeError::UnknownTopic { .. }) => {
                (StatusCode::NOT_FOUND, subscribe_code(err))
            }
            Self::Subscribe(err @ SubscribeError::SinceBeyondHead { .. }) => {
                (StatusCode::BAD_REQUEST, subscribe_code(err))
            }
            Self::Subscribe(SubscribeError::Store(store::StoreError::Unavailable(_)))
            | Self::Store(store::StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            Self::Subscribe(_) | Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Worker(WorkerError::InvalidArgument(_)) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::Worker(WorkerError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "worker_unavailable")
            }
            Self::Worker(WorkerError::Busy(_)) => (StatusCode::SERVICE_UNAVAILABLE, "worker_busy"),
            Self::Worker(WorkerError::DeadlineExceeded(_)) => (StatusCode::GATEWAY_TIMEOUT, "worker_timeout"),
            Self::Worker(WorkerError::Failed(_)) => (StatusCode::BAD_GATEWAY, "worker_failed"),
            Self::Worker(WorkerError::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiErrorKind for ApiError {
    fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn message(&self) -> String {
        // Server-side failures keep their details in the span, not the body.
        match self {
            Self::Unexpected(_) | Self::Store(store::StoreError::Backend(_)) => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // The edge's own refusals carry their extras (`Retry-After` of
            // a rate limit, the lane for its metric).
            Self::Edge(err) => err.into_response(),
            other => edge::error::respond(&other),
        }
    }
}

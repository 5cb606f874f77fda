//! [`ApiError`]: every way a request can fail, and the one place that turns
//! a failure into an HTTP status and a JSON body:
//! `{"error":{"code":"...","message":"..."}}`.
//!
//! Client mistakes (4xx) say exactly what was wrong. Server-side failures
//! (5xx) say what the client can do about it, never internal details: those
//! go to the log and the trace, recorded by the request span.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::live::ApplyError;
use serde::Serialize;

use crate::{
    auth::AuthError,
    limits::{Lane, RateLimited},
    live::{
        Rejected, SubscribeError,
        wire::{rejection_code, subscribe_code},
    },
    worker::WorkerError,
};

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or body field is missing or malformed.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("no route for {0}")]
    NotFound(String),
    /// `method` is a label from a closed set (`_OTHER` for the rest), not
    /// the client's text.
    #[error("{path} does not accept method {method}")]
    MethodNotAllowed { method: &'static str, path: String },
    #[error("request took longer than {0} ms")]
    RequestTimeout(u64),
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
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The client went over its rate in a lane; `Retry-After` says when to
    /// come back.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("this gateway already holds {0} live connections; try another replica or retry later")]
    TooManyConnections(usize),
    #[error("content type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
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

/// Why a request failed server-side: the full error chain, for the log line
/// of a 5xx response (never for its body).
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Put on a `429` response: which lane refused, for the metrics middleware,
/// which knows the route.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitedIn(pub Lane);

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: clients branch on this, not on the message.
    pub code: &'static str,
    /// For humans; may change between releases.
    pub message: String,
}

impl ApiError {
    /// Maps a failure to read the request body: too large, or cut short.
    pub fn from_body_rejection(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(limit)
        } else {
            Self::InvalidEvent(rejection.body_text())
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::RequestTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "request_timeout"),
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
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::TooManyConnections(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let cause = status.is_server_error().then(|| {
            let cause = format!("{self:#}");
            // Recorded on the request span, and handed to the line that
            // logs the response (it runs outside this call).
            tracing::Span::current().record("error.message", tracing::field::display(&cause));
            ErrorCause(cause)
        });
        // Server-side failures keep their details in the span, not the body.
        let message = match &self {
            Self::Unexpected(_) | Self::Store(store::StoreError::Backend(_)) => "internal error".to_owned(),
            _ => self.to_string(),
        };
        let body = ErrorBody { error: ErrorDetail { code, message } };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Self::RateLimited(limited) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs()));
            response.extensions_mut().insert(RateLimitedIn(limited.lane));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

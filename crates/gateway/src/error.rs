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
use serde::Serialize;

use crate::worker::WorkerError;

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or body field is missing or malformed.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("request took longer than {0} ms")]
    RequestTimeout(u64),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Anything unexpected; the details stay server-side.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: clients branch on this, not on the message.
    pub code: &'static str,
    /// For humans; may change between releases.
    pub message: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::RequestTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "request_timeout"),
            Self::Worker(WorkerError::InvalidArgument(_)) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::Worker(WorkerError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "worker_unavailable")
            }
            Self::Worker(WorkerError::Busy(_)) => (StatusCode::SERVICE_UNAVAILABLE, "worker_busy"),
            Self::Worker(WorkerError::DeadlineExceeded(_)) => (StatusCode::GATEWAY_TIMEOUT, "worker_timeout"),
            Self::Worker(WorkerError::Failed(_)) => (StatusCode::BAD_GATEWAY, "worker_failed"),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // Recorded on the request span; the TraceLayer logs 5xx responses.
            tracing::Span::current().record("error.message", tracing::field::display(format!("{self:#}")));
        }
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string() } };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

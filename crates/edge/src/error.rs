//! The one error shape of every service on the edge:
//! `{"error":{"code":"...","message":"..."}}`.
//!
//! [`EdgeError`] is what the edge itself refuses (no route, a bad query, no
//! token, over the rate, too large, too slow). A service's own errors
//! implement [`ApiErrorKind`] (status, stable code, message) and answer
//! through [`respond`], so a client sees one shape whichever layer refused.
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

use crate::{
    auth::AuthError,
    limits::{Lane, RateLimited},
};

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// What a failure tells its client. A service's error enum implements it
/// and answers with [`respond`].
pub trait ApiErrorKind: std::error::Error {
    /// The HTTP status.
    fn status(&self) -> StatusCode;

    /// Stable and machine-readable: clients branch on this, not on the
    /// message. From a closed set.
    fn code(&self) -> &'static str;

    /// For humans. A 5xx's message must not carry internal details; the
    /// default, the error's `Display`, suits errors whose text says only
    /// what the client can do.
    fn message(&self) -> String {
        self.to_string()
    }
}

/// Refusals of the edge itself, before or around any handler.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A query parameter, path segment or body field is missing or malformed.
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
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The client went over its rate in a lane; `Retry-After` says when to
    /// come back.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("this server already holds {0} live connections; try another replica or retry later")]
    TooManyConnections(usize),
    #[error(
        "this client address already holds {0} live connections, the most one address may hold; close one first"
    )]
    TooManyConnectionsFromAddress(usize),
    #[error("content type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
}

impl ApiErrorKind for EdgeError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooManyConnections(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnectionsFromAddress(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidParameter(_) => "invalid_parameter",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Unauthorized(_) => "unauthorized",
            Self::RateLimited(_) => "rate_limited",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::TooManyConnectionsFromAddress(_) => "too_many_connections_from_address",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let mut response = respond(&self);
        if let Self::RateLimited(limited) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs()));
            response.extensions_mut().insert(RateLimitedIn(limited.lane));
        }
        if let Self::TooManyConnectionsFromAddress(_) = &self {
            // A slot frees as soon as one of the address's connections
            // closes; there is no refill to wait for.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
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

/// The response for `error`: its status, the JSON body, `Retry-After` on a
/// 503 (every dependency failure is worth retrying), `WWW-Authenticate` on
/// a 401, and for a 5xx the error chain on the request span and the log.
pub fn respond<E: ApiErrorKind + ?Sized>(error: &E) -> Response {
    let status = error.status();
    let cause = status.is_server_error().then(|| {
        let cause = error_chain(error);
        // Recorded on the request span, and handed to the line that logs
        // the response (it runs outside this call).
        tracing::Span::current().record("error.message", tracing::field::display(&cause));
        ErrorCause(cause)
    });
    let body = ErrorBody { error: ErrorDetail { code: error.code(), message: error.message() } };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(cause) = cause {
        response.extensions_mut().insert(cause);
    }
    response
}

/// The error and its sources, `: `-separated, as anyhow's `{:#}` prints it.
fn error_chain<E: std::error::Error + ?Sized>(error: &E) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        // `#[error(transparent)]` and `{0}` wrappers repeat their source.
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = next.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_each_source_once() {
        let err = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&err), "outer: disk on fire");
    }

    #[test]
    fn a_503_asks_to_retry_and_a_401_names_the_scheme() {
        let busy = EdgeError::TooManyConnections(3).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let denied = EdgeError::Unauthorized(AuthError::Missing).into_response();
        assert_eq!(denied.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}

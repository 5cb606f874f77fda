//! `Query` and `Path` as axum's, except that a request they cannot parse is
//! refused with the edge's JSON error (`400 invalid_parameter`) instead
//! of axum's plain-text rejection: every 4xx a service sends has the same
//! shape, whatever went wrong.

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::de::DeserializeOwned;

use crate::error::EdgeError;

/// Query parameters, refused as JSON when malformed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = EdgeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, EdgeError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| EdgeError::InvalidParameter(rejection.body_text()))
    }
}

/// Path parameters, refused as JSON when malformed (not UTF-8, say).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = EdgeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, EdgeError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| EdgeError::InvalidParameter(rejection.body_text()))
    }
}

//! The live dashboard: three static files compiled into the binary, so the
//! gateway serves its own front end with no build step and no files to
//! deploy beside it.
//!
//! One page serves every view: `/` (the scores), `/matches/{id}` (one
//! match), `/season` (leaderboards and the threat map) and `/ops` (the
//! operators' figures). The script picks the view from the path, so each
//! view has an address to share, bookmark and reload.

use axum::{http::header, response::IntoResponse};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");

/// The live dashboard page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses((status = 200, description = "the script", content_type = "text/javascript", body = String)))]
pub async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS)
}

/// The dashboard's styles.
#[utoipa::path(get, path = "/dashboard/style.css", tag = "dashboard",
    responses((status = 200, description = "the styles", content_type = "text/css", body = String)))]
pub async fn style_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS)
}

/// The page's other addresses, each serving the same page.
pub fn pages() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(match_page)).routes(routes!(season_page)).routes(routes!(ops_page))
}

/// The dashboard page, opened on one match. The id is not checked here:
/// the page asks the API, which answers 404 for an unknown match.
#[utoipa::path(get, path = "/matches/{id}", tag = "dashboard",
    params(("id" = String, Path, description = "match id")),
    responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
pub async fn match_page() -> impl IntoResponse {
    index().await
}

/// The dashboard page, opened on the season view.
#[utoipa::path(get, path = "/season", tag = "dashboard",
    responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
pub async fn season_page() -> impl IntoResponse {
    index().await
}

/// The dashboard page, opened on the operators' view (its figures come
/// from the read-protected `/v1/views/ops`).
#[utoipa::path(get, path = "/ops", tag = "dashboard",
    responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
pub async fn ops_page() -> impl IntoResponse {
    index().await
}

//! The live dashboard: three static files compiled into the binary, so the
//! gateway serves its own front end with no build step and no files to
//! deploy beside it.

use axum::{http::header, response::IntoResponse};

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

//! The OpenAPI document of the gateway, served at `/openapi.json`.
//!
//! It is generated from the handlers themselves: every route is registered
//! through `utoipa_axum::routes!`, which adds the handler's `#[utoipa::path]`
//! description to the document as it adds the route to the router, so the
//! two cannot drift apart.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "courtside gateway",
        description = "The edge tier of courtside: live score feed (ingest, reads, WebSocket and SSE delivery), \
                       the compute and I/O benchmarks, health. Errors are `{\"error\":{\"code\":...,\"message\":...}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "live", description = "publishing events, reading matches, live delivery"),
        (name = "analytics", description = "player impact, win probability, batch jobs"),
        (name = "bench", description = "the I/O- and CPU-bound benchmark endpoints"),
        (name = "health", description = "liveness and readiness"),
        (name = "ops", description = "metrics and the runtime-fit report, for operators"),
        (name = "dashboard", description = "the live dashboard page"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

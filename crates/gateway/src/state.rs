//! [`AppState`]: what the handlers share, and the parts each handler takes
//! on its own (axum's `FromRef`), so a handler names only what it uses:
//! `State<WorkerClient>`, `State<Arc<LiveState>>`, `State<Arc<Auth>>`, ...

use std::sync::Arc;

use axum::extract::FromRef;
use edge::{Edge, auth::Auth, limits::Limits};
use store::StateStore;

use crate::{live::LiveState, routes::views::cache::ViewCaches, worker::WorkerClient};

/// What every handler can reach. One `Arc`: the middleware and the
/// extractors clone it a few times per request, so a clone must be a single
/// reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn StateStore>,
    pub worker: WorkerClient,
    pub live: Arc<LiveState>,
    /// Tokens, rate limits, the request timeout and body limit.
    pub edge: Edge,
    /// The dashboard's shared caches (win probability per match state, the
    /// xT grid).
    pub views: Arc<ViewCaches>,
    pub bench_routes: crate::config::BenchRoutes,
    /// The longest NDJSON line bulk ingest accepts, in bytes.
    pub max_line_bytes: usize,
}

/// The largest request body read whole, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The longest NDJSON line bulk ingest accepts, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct LineLimit(pub usize);

impl FromRef<AppState> for LineLimit {
    fn from_ref(state: &AppState) -> Self {
        LineLimit(state.max_line_bytes)
    }
}

impl FromRef<AppState> for Arc<dyn StateStore> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.store)
    }
}

impl FromRef<AppState> for WorkerClient {
    fn from_ref(state: &AppState) -> Self {
        state.worker.clone()
    }
}

impl FromRef<AppState> for Arc<LiveState> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.live)
    }
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.edge.auth)
    }
}

impl FromRef<AppState> for Arc<Limits> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.edge.limits)
    }
}

impl FromRef<AppState> for Arc<ViewCaches> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.views)
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        BodyLimit(state.edge.body_limit)
    }
}

impl FromRef<AppState> for Arc<edge::fit::RuntimeFit> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.edge.fit)
    }
}

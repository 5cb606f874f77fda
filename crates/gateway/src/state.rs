//! [`AppState`]: what the handlers share, and the parts each handler takes
//! on its own (axum's `FromRef`), so a handler names only what it uses:
//! `State<WorkerClient>`, `State<Arc<LiveState>>`, `State<Arc<Auth>>`, ...

use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use store::StateStore;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Auth, fit::RuntimeFit, limits::Limits, live::LiveState, routes::views::cache::ViewCaches,
    worker::WorkerClient,
};

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
    pub auth: Arc<Auth>,
    /// Rate limits per client address and per publish token.
    pub limits: Arc<Limits>,
    pub fit: Arc<RuntimeFit>,
    /// The dashboard's shared caches (win probability per match state, the
    /// xT grid).
    pub views: Arc<ViewCaches>,
    pub request_timeout: Duration,
    pub body_limit: usize,
    pub bench_routes: crate::config::BenchRoutes,
    /// Fires when shutdown begins: readiness fails from then on.
    pub draining: CancellationToken,
}

/// Fires when the gateway begins to shut down.
#[derive(Debug, Clone)]
pub struct Draining(pub CancellationToken);

impl FromRef<AppState> for Draining {
    fn from_ref(state: &AppState) -> Self {
        Draining(state.draining.clone())
    }
}

/// The largest request body read whole, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

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
        Arc::clone(&state.auth)
    }
}

impl FromRef<AppState> for Arc<Limits> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.limits)
    }
}

impl FromRef<AppState> for Arc<RuntimeFit> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.fit)
    }
}

impl FromRef<AppState> for Arc<ViewCaches> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.views)
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        BodyLimit(state.body_limit)
    }
}

//! The engine's transports as routes a service mounts where it likes:
//! `.route("/v1/live", engine.websocket())`,
//! `.route("/lots/{id}/live", engine.sse())`. Apart from [`crate::engine`]
//! so that the transports can use the engine without the engine naming
//! them.

use std::sync::Arc;

use axum::routing::{MethodRouter, get};

use crate::{Domain, Engine, sse, ws};

impl<D: Domain> Engine<D> {
    /// The WebSocket feed as a route's `GET`:
    /// `.route("/v1/live", engine.websocket())` (protocol in [`crate::ws`]).
    pub fn websocket<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> MethodRouter<S> {
        get(ws::handler::<D>).with_state(Arc::clone(self))
    }

    /// One topic's feed as Server-Sent Events, as a route's `GET`; the
    /// route's one path parameter is the topic id:
    /// `.route("/lots/{id}/live", engine.sse())`.
    pub fn sse<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> MethodRouter<S> {
        get(sse::handler::<D>).with_state(Arc::clone(self))
    }
}

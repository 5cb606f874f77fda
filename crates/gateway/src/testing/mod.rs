//! Test support for the gateway's tests, the cross-tier tests and forks
//! (feature `testing`): a gateway on a free port, a stand-in worker that
//! speaks the real gRPC contract, and clients for the live feed.
//!
//! The stand-in lets the edge be tested alone: deleting or replacing the
//! analytics worker does not break the gateway's tests.

pub mod live;
pub mod stand_in;

use std::{net::SocketAddr, sync::Arc};

use store::StateStore;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{Application, GatewayConfig, live::LiveState};

/// A running gateway and the means to stop it.
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    /// The admin listener's address, when the config asked for one.
    pub admin_addr: Option<SocketAddr>,
    pub live: Arc<LiveState>,
    pub store: Arc<dyn StateStore>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningGateway {
    /// Builds a gateway with `config` on `store` and serves it in the
    /// background until [`RunningGateway::stop`].
    pub async fn spawn(config: GatewayConfig, store: Arc<dyn StateStore>) -> Self {
        Self::spawn_app(Application::build(config, Arc::clone(&store)).await.expect("gateway builds"), store)
    }

    /// Serves an already built gateway (one with extra routes, say).
    pub fn spawn_app(app: Application, store: Arc<dyn StateStore>) -> Self {
        let addr = app.local_addr();
        let admin_addr = app.admin_addr();
        let live = app.live();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self { addr, admin_addr, live, store, stop: Some(stop), task }
    }

    /// Signals shutdown and waits until the gateway has drained.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal_stop();
        self.task.await?
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the gateway has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Reads a JSON error body and returns its `code` and `message`.
pub async fn error_of(response: reqwest::Response) -> (String, String) {
    let body: serde_json::Value = response.json().await.expect("error body is json");
    let code = body["error"]["code"].as_str().expect("error.code is a string").to_owned();
    let message = body["error"]["message"].as_str().expect("error.message is a string").to_owned();
    (code, message)
}

/// Polls `check` until it holds or `within` runs out.
pub async fn eventually(within: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

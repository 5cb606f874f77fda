//! Test support: a real worker and a real gateway on free loopback ports,
//! talking real gRPC, one pair per test.

#![allow(dead_code, unreachable_pub)]

pub mod live;

use std::net::SocketAddr;

use analytics::WorkerConfig;
use gateway::GatewayConfig;
use tokio::{sync::oneshot, task::JoinHandle};

/// A running service and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The gateway's live-feed state (None for a worker).
    pub live: Option<std::sync::Arc<gateway::live::LiveState>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Signals shutdown and waits until the service has drained.
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

    /// Waits until the service has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

pub struct TestApp {
    pub gateway: Running,
    pub worker: Option<Running>,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request reaches the gateway")
    }
}

pub async fn spawn_worker(config: WorkerConfig) -> Running {
    let app = analytics::Application::build(config).await.expect("worker builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Running { addr, live: None, stop: Some(stop), task }
}

pub async fn spawn_gateway(config: GatewayConfig) -> Running {
    let app = gateway::Application::build(config).await.expect("gateway builds");
    let addr = app.local_addr();
    let live = Some(app.live());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Running { addr, live, stop: Some(stop), task }
}

/// A gateway and a worker, each adjusted by the caller's closures.
pub async fn spawn_app_with(
    adjust_worker: impl FnOnce(&mut WorkerConfig),
    adjust_gateway: impl FnOnce(&mut GatewayConfig),
) -> TestApp {
    let mut worker_config = WorkerConfig::for_tests();
    adjust_worker(&mut worker_config);
    let worker = spawn_worker(worker_config).await;
    let mut gateway_config = GatewayConfig::for_tests(format!("http://{}", worker.addr));
    adjust_gateway(&mut gateway_config);
    let gateway = spawn_gateway(gateway_config).await;
    TestApp { gateway, worker: Some(worker), client: reqwest::Client::new() }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, |_| {}).await
}

/// A gateway whose worker address has nothing listening.
pub async fn spawn_app_without_worker() -> TestApp {
    // Bind and drop a listener to get a port that is (for now) unused.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let gateway = spawn_gateway(GatewayConfig::for_tests(format!("http://{unused}"))).await;
    TestApp { gateway, worker: None, client: reqwest::Client::new() }
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

#[allow(unused_imports)]
pub use store::testing::eventually as eventually_async;

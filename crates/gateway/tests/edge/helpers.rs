//! Test support: a gateway on a free loopback port in front of a stand-in
//! worker, one pair per test. Shared by this binary and
//! `slow_consumer.rs`; each uses a part.

#![allow(dead_code, unused_imports)]

use gateway::{
    GatewayConfig,
    testing::{
        RunningGateway,
        stand_in::{StandInConfig, StandInWorker},
    },
};
use store::StoreArgs;

pub(crate) use gateway::testing::{error_of, eventually, live};
pub(crate) use store::testing::eventually as eventually_async;

pub(crate) struct TestApp {
    pub(crate) gateway: RunningGateway,
    pub(crate) worker: Option<StandInWorker>,
    pub(crate) client: reqwest::Client,
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request reaches the gateway")
    }
}

/// A gateway on the store `store` names (in process by default).
pub(crate) async fn spawn_gateway(config: GatewayConfig, store: &StoreArgs) -> RunningGateway {
    RunningGateway::spawn(config, store::open(store).expect("store opens")).await
}

/// A gateway and a stand-in worker, each adjusted by the caller's closures.
pub(crate) async fn spawn_app_with(
    adjust_worker: impl FnOnce(&mut StandInConfig),
    adjust_gateway: impl FnOnce(&mut GatewayConfig, &mut StoreArgs),
) -> TestApp {
    let mut worker_config = StandInConfig::default();
    adjust_worker(&mut worker_config);
    let worker = StandInWorker::spawn(worker_config).await;
    let mut gateway_config = GatewayConfig::for_tests(worker.url());
    let mut store = StoreArgs::default();
    adjust_gateway(&mut gateway_config, &mut store);
    let gateway = spawn_gateway(gateway_config, &store).await;
    TestApp { gateway, worker: Some(worker), client: reqwest::Client::new() }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, |_, _| {}).await
}

/// A gateway with the per-client limits on (rate lanes and the per-address
/// connection cap) and every rate lane off until `adjust` sets the one
/// under test.
pub(crate) async fn spawn_limited(adjust: impl FnOnce(&mut GatewayConfig)) -> TestApp {
    spawn_app_with(
        |_| {},
        |config, _| {
            config.edge.rate_limit = gateway::config::RateLimiting::On;
            config.edge.rate_limit_ingest = edge::limits::Rate::Off;
            config.edge.rate_limit_subscribe = edge::limits::Rate::Off;
            config.edge.rate_limit_compute = edge::limits::Rate::Off;
            config.edge.rate_limit_per_token = edge::limits::Rate::Off;
            adjust(config);
        },
    )
    .await
}

/// A gateway whose worker address has nothing listening.
pub(crate) async fn spawn_app_without_worker() -> TestApp {
    // Bind and drop a listener to get a port that is (for now) unused.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let gateway =
        spawn_gateway(GatewayConfig::for_tests(format!("http://{unused}")), &StoreArgs::default()).await;
    TestApp { gateway, worker: None, client: reqwest::Client::new() }
}

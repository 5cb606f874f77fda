//! Test support for the cross-tier tests: the real analytics worker and a
//! real gateway on free loopback ports, talking real gRPC and sharing one
//! store, as the all-in-one binary runs them.

#![allow(dead_code, unused_imports, unreachable_pub)]

use std::{net::SocketAddr, sync::Arc};

use analytics::WorkerConfig;
use gateway::{GatewayConfig, testing::RunningGateway};
use store::{StateStore, StoreArgs};

pub use gateway::testing::{error_of, eventually, live};
pub use store::testing::eventually as eventually_async;

/// Both tiers, running.
pub struct Tiers {
    pub gateway: RunningGateway,
    pub worker: SocketAddr,
    pub worker_metrics: Option<SocketAddr>,
    pub client: reqwest::Client,
}

impl Tiers {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request reaches the gateway")
    }
}

/// Starts a worker and a gateway on `store`, each adjusted by the caller.
pub async fn spawn_tiers_with(
    store: Arc<dyn StateStore>,
    adjust_worker: impl FnOnce(&mut WorkerConfig),
    adjust_gateway: impl FnOnce(&mut GatewayConfig),
) -> Tiers {
    let mut worker_config = WorkerConfig::for_tests();
    adjust_worker(&mut worker_config);
    let worker =
        analytics::Application::build(worker_config, Arc::clone(&store)).await.expect("worker builds");
    let worker_addr = worker.local_addr();
    let worker_metrics = worker.metrics_addr();
    tokio::spawn(worker.run_until_stopped(std::future::pending()));
    let mut gateway_config = GatewayConfig::for_tests(format!("http://{worker_addr}"));
    adjust_gateway(&mut gateway_config);
    let gateway = RunningGateway::spawn(gateway_config, store).await;
    Tiers { gateway, worker: worker_addr, worker_metrics, client: reqwest::Client::new() }
}

/// Both tiers on one in-process store.
pub async fn spawn_tiers() -> Tiers {
    spawn_tiers_with(store::open(&StoreArgs::default()).expect("store"), |_| {}, |_| {}).await
}

/// A store on the test Redis with a fresh key prefix, or `None` when the
/// test should be skipped (outside CI, no Redis answers).
pub async fn test_redis() -> Option<Arc<dyn StateStore>> {
    let redis = store::testing::redis_config().await?;
    Some(Arc::new(store::RedisStore::connect_lazy(&redis).expect("redis config")))
}

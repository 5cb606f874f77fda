//! Test support: a real worker on a free loopback port, its gRPC clients,
//! and feed entries written as the gateway writes them.

#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, sync::Arc};

use analytics::{Application, WorkerConfig, model::RatingModel, stream};
use bytes::Bytes;
use contracts::v1::analytics_service_client::AnalyticsServiceClient;
use store::{AppendOutcome, HistoryLimits, LogAppend, StateStore};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// A running worker and the means to stop it.
pub struct Worker {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal_stop();
        self.task.await?
    }

    /// Signals shutdown without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn client(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid url")
            .connect()
            .await
            .expect("worker accepts connections")
    }
}

pub async fn spawn_worker(config: WorkerConfig, store: Arc<dyn StateStore>) -> Worker {
    let app = Application::build(config, store).await.expect("worker builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Worker { addr, stop: Some(stop), task }
}

/// The model a test worker fits at start-up (no model stored).
pub fn bootstrap_model(config: &WorkerConfig) -> RatingModel {
    let season = RatingModel::bootstrap_season(config.xt_bootstrap_matches, config.xt_bootstrap_seed)
        .expect("valid season");
    RatingModel::bootstrap(season).expect("fits")
}

/// Appends one protobuf feed entry through the store's atomic append, as
/// the gateway does on ingest.
pub async fn append(store: &dyn StateStore, match_id: &str, seq: u64, stream_entry: Vec<u8>) {
    let outcome = store
        .append(
            &LogAppend {
                log: match_id.into(),
                seq,
                entry: Bytes::from(format!("{match_id}#{seq}")),
                state: Bytes::from_static(b"{}"),
                stream_entry: Bytes::from(stream_entry),
            },
            HistoryLimits::default(),
        )
        .await
        .expect("append");
    assert_eq!(outcome, AppendOutcome::Applied);
}

/// One successful pass by `player` of `match_id` at `seq`; positions vary
/// with `seq` so ratings differ.
pub fn pass(match_id: &str, seq: u64, player: u32) -> Vec<u8> {
    let x = 5.0 + (seq % 13) as f64 * 7.0;
    let y = 4.0 + (seq % 7) as f64 * 9.0;
    stream::encode_move(match_id, seq, 1, player, (x, y), ((x + 15.0).min(104.0), (y + 3.0).min(67.0)), true)
}

#[allow(unused_imports)]
pub use store::testing::eventually;

//! `courtside-analytics`: the analytics worker on its own, for deployments
//! that run each tier separately.

use std::{process::ExitCode, sync::Arc};

use analytics::{
    Application,
    config::{Cli, Command},
};
use anyhow::Context as _;
use clap::Parser as _;
use store::{MemoryStore, RedisStore, StateStore};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let redis = match cli.store.redis_config() {
        Ok(redis) => redis,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return match analytics::health::healthcheck(url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("unhealthy: {err:#}");
                ExitCode::FAILURE
            }
        };
    }

    let telemetry = match telemetry::init("courtside-analytics", cli.log_format) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(cli, redis).await;
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, redis: Option<store::RedisConfig>) -> anyhow::Result<()> {
    let store: Arc<dyn StateStore> = match redis {
        Some(redis) => {
            tracing::info!(url = %redis.redacted_url(), prefix = %redis.key_prefix, "state store: redis");
            Arc::new(RedisStore::connect_lazy(&redis).context("failed to set up the redis store")?)
        }
        None => {
            tracing::warn!(
                "state store: in process (set COURTSIDE_REDIS_URL to read the gateway's event stream)"
            );
            Arc::new(MemoryStore::new())
        }
    };
    let app = Application::build(cli.worker).await?.with_store(store);
    app.run_until_stopped(lifecycle::shutdown_signal()).await
}

//! `courtside-analytics`: the analytics worker on its own, for deployments
//! that run each tier separately.

use std::process::ExitCode;

use analytics::{
    Application,
    config::{Cli, Command},
};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = cli.store.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return match analytics::health::healthcheck(url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("unhealthy: {err:#}");
                ExitCode::FAILURE
            }
        };
    }

    let log_format = cli.log_format;
    telemetry::run_service("courtside-analytics", log_format, run(cli)).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = store::open(&cli.store)?;
    let app = Application::build(cli.worker, store).await?;
    app.run_until_stopped(lifecycle::shutdown_signal()).await
}

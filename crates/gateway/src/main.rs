//! `courtside-gateway`: the edge gateway on its own, for deployments that
//! run each tier separately.

use std::process::ExitCode;

use clap::Parser as _;
use gateway::{
    Application,
    config::{Cli, Command},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { addr }) = cli.command {
        return match gateway::healthcheck::healthcheck(addr).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("unhealthy: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(err) = cli.gateway.validate().and_then(|()| cli.store.validate()) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }

    let log_format = cli.log_format;
    telemetry::run_service("courtside-gateway", log_format, run(cli)).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = store::open(&cli.store)?;
    let app = Application::build(cli.gateway, store).await?;
    app.run_until_stopped(lifecycle::shutdown_signal()).await
}

//! `cargo run -p auction`: the live auction on the edge, on 127.0.0.1:8080
//! like the gateway (`--gateway-addr` / `COURTSIDE_GATEWAY_ADDR`), state in
//! process, or in Redis with `COURTSIDE_REDIS_URL`. Every `COURTSIDE_*`
//! setting of the edge applies (`--help` lists them); publishing needs
//! `COURTSIDE_PUBLISH_TOKENS`. The binary, its logs and its traces take the
//! package's name, so a renamed copy needs no change here but the
//! `auction::` path below.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "a live auction on the courtside edge and live-feed engine")]
struct Cli {
    #[command(flatten)]
    edge: edge::EdgeConfig,
    #[command(flatten)]
    store: store::StoreArgs,
    /// Log line format: "pretty" or "json".
    #[arg(long, env = "COURTSIDE_LOG_FORMAT", default_value_t = telemetry::LogFormat::Pretty)]
    log_format: telemetry::LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = cli.edge.validate().and_then(|()| cli.store.validate()) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let log_format = cli.log_format;
    telemetry::run_service(env!("CARGO_PKG_NAME"), log_format, run(cli)).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = edge::Server::bind(cli.edge)?;
    let app = auction::App::new(store::open(&cli.store)?, server.edge());
    let checks = app.checks();
    println!("{} listening on http://{}", env!("CARGO_PKG_NAME"), server.local_addr());
    server.serve(app.router(), checks, lifecycle::shutdown_signal()).await
}

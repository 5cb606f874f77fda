//! `courtside`: the whole system in one process, for `cargo run --release`.
//!
//! The gateway and the analytics worker each get their own tokio runtime (and
//! the worker its rayon pool), and they talk real gRPC over loopback, exactly
//! as they do when deployed apart. Only the packaging differs: nothing here
//! takes a shortcut the separate binaries would not.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Options of the all-in-one binary: the gateway's and the worker's.
#[derive(Debug, clap::Parser)]
#[command(
    name = "courtside",
    version,
    about = "courtside: live sports edge gateway and analytics worker in one process",
    // The embedded worker's address is known; the flag would only mislead.
    mut_arg("worker_url", |arg| arg.hide(true))
)]
struct Cli {
    #[command(flatten)]
    gateway: gateway::GatewayConfig,

    #[command(flatten)]
    worker: analytics::WorkerConfig,

    /// Log line format: "pretty" or "json".
    #[arg(long, env = "COURTSIDE_LOG_FORMAT", default_value_t = telemetry::LogFormat::Pretty)]
    log_format: telemetry::LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Asks a running gateway's /healthz; exits 0 if it answers 200.
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = cli.gateway.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Some(Command::Healthcheck { addr }) => {
            runtime("healthcheck", 1).and_then(|rt| rt.block_on(gateway::health::healthcheck(addr)))
        }
        None => run(cli.gateway, cli.worker, cli.log_format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    mut gateway_config: gateway::GatewayConfig,
    worker_config: analytics::WorkerConfig,
    log_format: telemetry::LogFormat,
) -> anyhow::Result<()> {
    // The worker's runtime only moves bytes between sockets and the pool, so
    // one thread is plenty; the CPU work runs on the rayon pool.
    let worker_rt = runtime("analytics-io", 1)?;
    let gateway_rt = runtime("gateway-io", 0)?;

    // The OTLP exporter needs a runtime to build its channel.
    let telemetry = gateway_rt.block_on(async { telemetry::init("courtside", log_format) })?;

    let stop = CancellationToken::new();
    let worker = worker_rt.block_on(analytics::Application::build(worker_config))?;
    gateway_config.worker_url = format!("http://{}", worker.local_addr());
    let worker_addr = worker.local_addr();
    let worker_task = worker_rt.spawn(worker.run_until_stopped(stop.clone().cancelled_owned()));

    let served = gateway_rt.block_on(async {
        let gateway = gateway::Application::build(gateway_config).await?;
        print_banner(gateway.local_addr(), worker_addr);
        let signal = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = lifecycle::shutdown_signal() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            }
        };
        gateway.run_until_stopped(signal).await
    });

    // The gateway has drained (or failed); now stop the worker behind it.
    stop.cancel();
    let worker_stopped = worker_rt.block_on(worker_task).context("analytics worker task failed")?;
    telemetry.shutdown();
    served.and(worker_stopped)
}

/// A multi-threaded runtime; `threads == 0` means one per core.
fn runtime(name: &str, threads: usize) -> anyhow::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("failed to start the {name} runtime"))
}

fn print_banner(gateway: std::net::SocketAddr, worker: std::net::SocketAddr) {
    println!();
    println!("  courtside is running");
    println!("    gateway (HTTP):    http://{gateway}");
    println!("    analytics (gRPC):  {worker}");
    println!("    try:               curl 'http://{gateway}/v1/bench/compute?n=20000000'");
    println!("    stop:              Ctrl-C");
    println!();
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_combined_flags_do_not_collide() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_parse_and_the_worker_url_flag_is_hidden() {
        let cli = Cli::try_parse_from(["courtside"]).expect("defaults parse");
        assert!(cli.command.is_none());
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("--worker-url"), "{help}");
        assert!(help.contains("--pool-threads"), "{help}");
    }
}

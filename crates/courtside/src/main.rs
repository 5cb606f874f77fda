//! `courtside`: the whole system in one process, for `cargo run --release`.
//!
//! The gateway and the analytics worker each get their own tokio runtime (and
//! the worker its rayon pool), and they talk real gRPC over loopback, exactly
//! as they do when deployed apart. Only the packaging differs: nothing here
//! takes a shortcut the separate binaries would not.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
use secrecy::ExposeSecret as _;
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

    #[command(flatten)]
    store: store::StoreArgs,

    /// Log line format: "pretty" or "json".
    #[arg(long, env = "COURTSIDE_LOG_FORMAT", default_value_t = telemetry::LogFormat::Pretty)]
    log_format: telemetry::LogFormat,

    /// Play simulated matches through the ingest API, so the dashboard has
    /// something to show. On by default; `--simulate false` to turn off.
    #[arg(long, env = "COURTSIDE_SIMULATE", default_value_t = true, action = clap::ArgAction::Set)]
    simulate: bool,

    #[command(flatten)]
    simulation: SimulationArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

/// How the demo feed plays.
#[derive(Debug, Clone, clap::Args)]
struct SimulationArgs {
    /// Matches played at the same time.
    #[arg(long = "sim-matches", env = "COURTSIDE_SIM_MATCHES", default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    matches: u64,

    /// Events per second over all simulated matches.
    #[arg(long = "sim-rate", env = "COURTSIDE_SIM_RATE", default_value_t = 12.0)]
    rate: f64,

    /// Seed of the simulation: the same seed plays the same matches.
    #[arg(long = "sim-seed", env = "COURTSIDE_SIM_SEED", default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Asks a running gateway's /healthz; exits 0 if it answers 200.
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Fits Expected Threat on a CSV of SPADL actions and writes the grid and
    /// per-player totals as JSON (compare with socceraction's `xthreat`).
    Xt {
        /// CSV with SPADL columns: type_name, result_name, start_x, start_y,
        /// end_x, end_y, player_id.
        #[arg(long)]
        actions: std::path::PathBuf,
        /// Where to write the JSON report.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Threads for counting and rating (the result does not depend on
        /// it); defaults to the number of cores.
        #[arg(long)]
        threads: Option<std::num::NonZeroUsize>,
    },
    /// Publishes simulated matches to a running gateway's ingest API.
    Simulate {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A publish token of that gateway.
        #[arg(long, env = "COURTSIDE_SIM_TOKEN", hide_env_values = true)]
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = cli.gateway.validate().and_then(|()| cli.store.validate()) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if !(cli.simulation.rate.is_finite() && cli.simulation.rate > 0.0 && cli.simulation.rate <= 100_000.0) {
        eprintln!(
            "error: invalid --sim-rate / COURTSIDE_SIM_RATE: must be between 0 and 100000 events per second"
        );
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Some(Command::Healthcheck { addr }) => {
            runtime("healthcheck", 1).and_then(|rt| rt.block_on(gateway::healthcheck::healthcheck(addr)))
        }
        Some(Command::Simulate { url, token }) => simulate_only(url, token, &cli.simulation, cli.log_format),
        Some(Command::Xt { actions, out, threads }) => {
            let threads = threads
                .or_else(|| std::thread::available_parallelism().ok())
                .unwrap_or(std::num::NonZeroUsize::MIN);
            spadl::run(&actions, &out, threads).map(|report| {
                println!(
                    "{} actions, {} moves rated, {} iterations; {} players; wrote {}",
                    report.actions,
                    report.rated_moves,
                    report.iterations,
                    report.players.len(),
                    out.display()
                );
            })
        }
        None => {
            run(cli.gateway, cli.worker, &cli.store, cli.log_format, cli.simulate.then_some(cli.simulation))
        }
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
    mut worker_config: analytics::WorkerConfig,
    store_args: &store::StoreArgs,
    log_format: telemetry::LogFormat,
    simulation: Option<SimulationArgs>,
) -> anyhow::Result<()> {
    // The embedded simulator publishes through the public API like any
    // publisher, so it needs a token; without a configured one, mint one
    // that lives as long as this process.
    let sim_token = match simulation {
        Some(_) if gateway_config.edge.publish_tokens.expose_secret().trim().is_empty() => {
            let token = random_token();
            gateway_config.edge.publish_tokens = token.clone().into();
            Some(token)
        }
        Some(_) => {
            gateway_config.edge.publish_tokens.expose_secret().split(',').next().map(|t| t.trim().to_owned())
        }
        None => None,
    };
    // The worker's runtime only moves bytes between sockets and the pool, so
    // one thread is plenty; the CPU work runs on the rayon pool.
    let worker_rt = runtime("analytics-io", 1)?;
    let gateway_rt = runtime("gateway-io", 0)?;

    // The OTLP exporter needs a runtime to build its channel.
    let telemetry = gateway_rt.block_on(async { telemetry::init("courtside", log_format) })?;

    let stop = CancellationToken::new();
    // The worker consumes the event stream the gateway appends to, so both
    // use one store (with the in-process store, one instance).
    let store = gateway_rt.block_on(async { store::open(store_args) })?;
    // Both tiers record into one registry here, which the gateway's
    // /metrics serves whole: no second listener.
    worker_config.metrics_addr = analytics::config::MetricsAddr(None);
    let worker = worker_rt.block_on(analytics::Application::build(worker_config, Arc::clone(&store)))?;
    gateway_config.worker_url = format!("http://{}", worker.local_addr());
    let worker_addr = worker.local_addr();
    // The worker stops only once the gateway in front of it has drained.
    let worker_stop = CancellationToken::new();
    let mut worker_task = None;

    let served = gateway_rt.block_on(async {
        let gateway = gateway::Application::build(gateway_config, store).await?;
        worker_task = Some(worker_rt.spawn(worker.run_until_stopped(worker_stop.clone().cancelled_owned())));
        print_banner(gateway.local_addr(), worker_addr);
        if let (Some(args), Some(token)) = (&simulation, sim_token) {
            let config = simulator::SimConfig {
                gateway_url: format!("http://{}", gateway.local_addr()),
                token,
                matches: usize::try_from(args.matches).unwrap_or(1),
                events_per_second: args.rate,
                seed: args.seed,
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(err) = simulator::run(config, stop).await {
                    tracing::error!("simulator stopped: {err:#}");
                }
            });
        }
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
    worker_stop.cancel();
    let worker_stopped = match worker_task {
        Some(task) => worker_rt.block_on(task).context("analytics worker task failed")?,
        None => Ok(()),
    };
    telemetry.shutdown();
    served.and(worker_stopped)
}

/// `courtside simulate`: only the simulator, against a gateway elsewhere.
fn simulate_only(
    url: String,
    token: String,
    args: &SimulationArgs,
    log_format: telemetry::LogFormat,
) -> anyhow::Result<()> {
    let rt = runtime("simulator", 1)?;
    rt.block_on(async {
        let telemetry = telemetry::init("courtside-simulator", log_format)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = {
            let stop = stop.clone();
            async move {
                lifecycle::shutdown_signal().await;
                stop.cancel();
            }
        };
        tokio::spawn(signal);
        let config = simulator::SimConfig {
            gateway_url: url,
            token,
            matches: usize::try_from(args.matches).unwrap_or(1),
            events_per_second: args.rate,
            seed: args.seed,
        };
        let outcome = simulator::run(config, stop).await;
        telemetry.shutdown();
        outcome
    })
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    println!("    live dashboard:    http://{gateway}/");
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

//! `courtside-hostile`: attacks a running courtside gateway by address, as a
//! hostile client would, and checks each of the gateway's promises about
//! what such a client gets (a precise JSON error, a close code, a closed
//! connection, nothing applied, nothing held). One line per case, then
//! `N passed, M failed`; the exit code is 1 if any case failed.
//!
//! With `--edge-only` and the service's routes (`--publish-path`,
//! `--topic-path`, `--sse-path`, `--first-event`, `--next-event`) it runs
//! the domain-free cases against any service on the edge and the live-feed
//! engine, such as `examples/auction` or a fork's own.
//!
//! Works against a deployed gateway as well as a local one: the cases only
//! need its address and its tokens, and create matches under a prefix of
//! their own. With `--pid` (a gateway on this machine) it also reads the
//! process's memory and open descriptors before and after.
//!
//! # Layout
//!
//! - `suite`: settings, the context cases share, the runner.
//! - `cases`: the cases, one module per surface (routing, ingest, auth,
//!   limits, live feed, connections, rate limits, footprint).
//! - `http`, `ws`: HTTP/1.1 and WebSocket written by hand on TCP, so a case
//!   can send exactly the malformed bytes it means to.
//! - `events`: valid events to break one field at a time.

mod cases;
mod events;
mod http;
mod suite;
mod ws;

use std::process::ExitCode;

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
#[command(
    name = "courtside-hostile",
    about = "attack a running courtside gateway as a hostile client would, and check each promise it makes"
)]
struct Cli {
    #[command(flatten)]
    settings: suite::Settings,

    /// Lists the cases without running them.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cases = cases::selected(cli.settings.surface.edge_only);
    if cli.list {
        for case in &cases {
            println!("{}", case.name);
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let only = cli.settings.only.clone();
        let ctx = match suite::Ctx::new(cli.settings).await {
            Ok(ctx) => ctx,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(2);
            }
        };
        println!("courtside-hostile: {} cases against {} (matches {}-*)", cases.len(), ctx.addr, ctx.run);
        let tally = suite::run(&ctx, &cases, only.as_deref()).await;
        if tally.skipped > 0 {
            println!("{} skipped", tally.skipped);
        }
        println!("{} passed, {} failed", tally.passed, tally.failed);
        if tally.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
    })
}

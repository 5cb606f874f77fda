//! `cargo run -p auction`: the live auction on 127.0.0.1:8090, state in
//! process, or in Redis with `COURTSIDE_REDIS_URL`.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, env = "AUCTION_LISTEN", default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    store: store::StoreArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let cli = Cli::parse();
    cli.store.validate().map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let app = auction::App::new(store::open(&cli.store)?, stop.clone());
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("auction listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.router())
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await?;
    Ok(())
}

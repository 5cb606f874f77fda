//! The gateway's three hot paths as fixed workloads, for the guard that keeps
//! them cheap (`loadtest/instructions.sh`).
//!
//! ```text
//! courtside-hotpaths <slow-request|ingest|fanout> <count>
//! ```
//!
//! Each run builds a gateway in process (default settings, the in-process
//! store, the same telemetry as the binaries), does a fixed warm-up, then
//! `count` operations. The guard runs it under callgrind twice, with 0 and
//! with N operations, and divides the difference by N: set-up and warm-up
//! cancel out, and what is left is the cost of one operation. Instruction
//! counts repeat exactly for the same binary and input, whatever else the
//! machine does, so a rise means the code got more expensive.
//!
//! The runtime is single-threaded with a paused clock: timers (the 200 ms of
//! `/v1/bench/slow`) complete at once and in the same order every run.

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context as _, bail};
use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use clap::Parser as _;
use gateway::{Application, config::Cli};
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;

/// Operations before the measured ones: caches, lazily built routes and
/// metric handles settle.
const WARM_UP: usize = 50;
/// Inputs are prepared for this many operations whatever `count` is, so
/// preparing them costs the same in both runs.
const MAX_COUNT: usize = 2_000;
/// Local subscribers of the fan-out path.
const SUBSCRIBERS: usize = 1_000;
const TOKEN: &str = "hotpaths-publish-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Path {
    /// One `GET /v1/bench/slow` through the whole middleware.
    SlowRequest,
    /// The same with traces exported as the deployments export them
    /// (parent-based, 10 %), to an exporter that drops what it is given:
    /// what tracing costs the average request, sampled or not.
    SlowRequestTraced,
    /// The reference for it: the same request to a bare axum router with
    /// the load test's ceiling handler (`courtside-loadtest bare-axum`), no
    /// middleware, no telemetry.
    BareSlowRequest,
    /// One `POST /v1/events`: token, body, parse, sequence, fold, encode,
    /// append to the in-process store, acknowledge.
    Ingest,
    /// One update routed by the hub to 1,000 local subscribers, each taking
    /// it from its channel.
    Fanout,
}

#[derive(Debug, clap::Parser)]
struct Args {
    #[arg(value_enum)]
    path: Path,
    /// Operations after the warm-up, at most 2,000.
    count: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.count > MAX_COUNT {
        bail!("count must be at most {MAX_COUNT}, got {}", args.count);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.path {
        Path::BareSlowRequest => bare_slow_requests(args.count).await,
        Path::SlowRequest => {
            let (app, telemetry) = gateway().await?;
            slow_requests(&app.router(), args.count).await?;
            telemetry.shutdown();
            Ok(())
        }
        Path::SlowRequestTraced => {
            let sampler =
                telemetry::sampling::Sampler::from_env_values(Some("parentbased_traceidratio"), Some("0.1"));
            let telemetry = telemetry::init_with_exporter(
                "courtside-gateway",
                telemetry::LogFormat::Pretty,
                sampler,
                Dropped,
            )?;
            let app = build_gateway().await?;
            slow_requests(&app.router(), args.count).await?;
            telemetry.shutdown();
            Ok(())
        }
        Path::Ingest => {
            let (app, telemetry) = gateway().await?;
            ingest(&app.router(), args.count).await?;
            telemetry.shutdown();
            Ok(())
        }
        Path::Fanout => {
            let (app, telemetry) = gateway().await?;
            fanout(&app, args.count);
            telemetry.shutdown();
            Ok(())
        }
    }
}

/// A gateway with what `cargo run --release` runs with: the default
/// settings and the same telemetry, except a free port, a token to publish
/// with, and ingest limits this workload stays under (the limiter still
/// checks every event, as by default).
async fn gateway() -> anyhow::Result<(Application, telemetry::TelemetryGuard)> {
    let telemetry = telemetry::init("courtside-gateway", telemetry::LogFormat::Pretty)?;
    Ok((build_gateway().await?, telemetry))
}

/// The gateway of [`gateway`], telemetry left to the caller.
async fn build_gateway() -> anyhow::Result<Application> {
    let cli = Cli::try_parse_from([
        "courtside-gateway",
        "--gateway-addr",
        "127.0.0.1:0",
        "--publish-tokens",
        TOKEN,
        "--rate-limit-ingest",
        "1000000/s",
        "--rate-limit-per-token",
        "1000000/s",
    ])
    .context("invalid settings")?;
    let store = store::open(&cli.store)?;
    Application::build(cli.gateway, store).await
}

/// A span exporter that drops what it is given: the cost of exporting
/// without a collector's.
#[derive(Debug)]
struct Dropped;

impl opentelemetry_sdk::trace::SpanExporter for Dropped {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

async fn slow_requests(router: &Router, count: usize) -> anyhow::Result<()> {
    for _ in 0..WARM_UP + count {
        let request = Request::get("/v1/bench/slow").body(Body::empty())?;
        send(router, request).await?;
    }
    Ok(())
}

async fn bare_slow_requests(count: usize) -> anyhow::Result<()> {
    use axum::{Json, routing::get};
    async fn slow() -> Json<serde_json::Value> {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Json(serde_json::json!({"status": "ok", "t": t}))
    }
    let router = Router::new().route("/slow", get(slow));
    for _ in 0..WARM_UP + count {
        send(&router, Request::get("/slow").body(Body::empty())?).await?;
    }
    Ok(())
}

async fn ingest(router: &Router, count: usize) -> anyhow::Result<()> {
    let mut bodies = Vec::with_capacity(1 + WARM_UP + MAX_COUNT);
    bodies.push(Bytes::from_static(
        br#"{"match_id":"hot","seq":1,"kind":"kickoff","minute":0,"home":{"id":1,"name":"Rovers"},"away":{"id":2,"name":"United"}}"#,
    ));
    for seq in 2..=(1 + WARM_UP + MAX_COUNT) {
        bodies.push(Bytes::from(format!(
            r#"{{"match_id":"hot","seq":{seq},"kind":"pass","minute":3,"team":1,"player":7,"start":{{"x":40.0,"y":30.0}},"end":{{"x":60.5,"y":20.0}},"success":true}}"#
        )));
    }
    for body in bodies.into_iter().take(1 + WARM_UP + count) {
        let request = Request::post("/v1/events")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))?;
        send(router, request).await?;
    }
    Ok(())
}

fn fanout(app: &Application, count: usize) {
    let hub = Arc::clone(&app.live().subscriptions.hub);
    let mut receivers: Vec<_> = (0..SUBSCRIBERS).map(|_| hub.subscribe("hot").1).collect();
    // The same shape as an update that ingest writes.
    let updates: Vec<Bytes> = (1..=(WARM_UP + MAX_COUNT))
        .map(|seq| {
            Bytes::from(format!(
                r#"{{"type":"event","match":"hot","seq":{seq},"event":{{"kind":"pass","minute":3,"ts":1764000000000,"team":1,"player":7,"start":{{"x":40.0,"y":30.0}},"end":{{"x":60.5,"y":20.0}},"success":true}},"state":{{"id":"hot","home":{{"id":1,"name":"Rovers"}},"away":{{"id":2,"name":"United"}},"status":"first_half","minute":3,"score":{{"home":0,"away":0}},"red_cards":{{"home":0,"away":0}},"seq":{seq},"updated_ms":1764000000000}}}}"#
            ))
        })
        .collect();
    for update in updates.into_iter().take(WARM_UP + count) {
        hub.dispatch(&update);
        for receiver in &mut receivers {
            // Each subscriber takes the shared frame, as its cursor does.
            let _ = receiver.try_recv();
        }
    }
}

async fn send(router: &Router, mut request: Request<Body>) -> anyhow::Result<()> {
    // The client address, as the accept loop records it.
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    if status != StatusCode::OK {
        bail!("answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

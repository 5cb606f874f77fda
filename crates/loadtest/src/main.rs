//! `courtside-loadtest`: measures what the benchmarks report.
//!
//! - `startup`: time from exec until a system answers its health probe,
//!   over several runs.
//! - `latency`: closed-loop request latency at a fixed concurrency, after a
//!   warm-up, as an HDR histogram (p50/p90/p99/p99.9/max).
//! - `oha-fields`: an `oha` JSON report as the harness's fields (see
//!   [`oha`]).
//! - `fanout`: WebSocket subscribers in child processes, publish-to-receive
//!   latency, completeness and server memory per connection (see
//!   [`fanout`]).
//! - `viewers`: dashboard viewers on one gateway, and the worker's
//!   win-probability computations they caused (see [`viewers`]).
//! - `report`: a results folder's lines as `report.md` and plots (see
//!   [`report`]; the scale scenario's plots over time in [`timeline`]).
//!
//! Every loop is bounded in count and time, and targets are meant to be
//! loopback addresses: this harness measures systems on the same machine.

mod caption;
mod fanout;
mod oha;
mod otlp_sink;
mod report;
mod timeline;
mod viewers;

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Mutex,
};

#[derive(Debug, clap::Parser)]
#[command(name = "courtside-loadtest", about = "measure start-up time and request latency")]
enum Cli {
    /// Start a command repeatedly and time exec → first healthy probe.
    Startup {
        /// `http://host:port/path` (expects 200) or `grpc://host:port`
        /// (expects the gRPC health service to report SERVING).
        #[arg(long)]
        probe: String,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Give up on a run after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Many WebSocket subscribers against one or more servers.
    Fanout(fanout::FanoutArgs),
    /// Dashboard viewers (WebSocket clients behaving like the live page) on
    /// one gateway: worker win-probability computations against the match
    /// states they saw.
    Viewers(viewers::ViewersArgs),
    /// One subscriber process of `fanout` (started by it).
    #[command(name = "fanout-client", hide = true)]
    FanoutClient(fanout::ClientArgs),
    /// Writes NDJSON match events to stdout, for the bulk ingest benchmark:
    /// `matches` matches, round robin, each a kickoff then passes, until
    /// `bytes` have been written.
    Ndjson {
        #[arg(long, default_value_t = 1000)]
        matches: u64,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Prefix of the match ids, so runs do not collide.
        #[arg(long, default_value = "bulk")]
        prefix: String,
    },
    /// Times xT (count, fit, rate, player totals) on a seeded synthetic
    /// season on 1 and 2 threads, and writes the actions as SPADL CSV for
    /// the socceraction peer.
    Xt {
        #[arg(long, default_value_t = 10_000_000)]
        actions: u64,
        /// Where to write the SPADL CSV (skipped when absent).
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// The ceiling reference: a bare axum server with the same `/slow`
    /// handler as the gateway and no middleware at all.
    BareAxum {
        #[arg(long, default_value = "127.0.0.1:18400")]
        addr: std::net::SocketAddr,
    },
    /// Writes report.md and SVG plots from a results folder's JSON lines,
    /// each figure the median of its runs.
    Report {
        #[arg(long)]
        results: std::path::PathBuf,
        /// Fail when any result line reports errors or gaps.
        #[arg(long)]
        check: bool,
    },
    /// A stand-in OTLP collector that counts and drops spans.
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:14317")]
        addr: std::net::SocketAddr,
    },
    /// Prints an `oha --output-format json` report as the `"key":value`
    /// fields the scripts write into their JSON lines.
    OhaFields {
        /// The report oha wrote.
        #[arg(long)]
        file: std::path::PathBuf,
        /// The rate oha was asked for (`-q`), for the count of requests
        /// that fell due but were never sent.
        #[arg(long)]
        offered_rps: Option<f64>,
        /// The run's length (`-z`), in seconds.
        #[arg(long)]
        secs: f64,
    },
    /// Closed-loop GET requests against a URL.
    Latency {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 2_000)]
        requests: u64,
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        /// Stop early after this many seconds, whatever the count.
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Subscriber processes run single-threaded: one core each is the budget.
    let runtime = match cli {
        Cli::FanoutClient(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli {
        Cli::Fanout(args) => fanout::run(args).await,
        Cli::Viewers(args) => viewers::run(args).await,
        Cli::FanoutClient(args) => fanout::client(args).await,
        Cli::Startup { probe, runs, timeout_ms, command } => {
            startup(&probe, runs, Duration::from_millis(timeout_ms), &command).await
        }
        Cli::Ndjson { matches, bytes, prefix } => ndjson(matches, bytes, &prefix),
        Cli::Xt { actions, csv, repeats } => xt(actions, csv.as_deref(), repeats),
        Cli::BareAxum { addr } => bare_axum(addr).await,
        Cli::OtlpSink { addr } => otlp_sink::run(addr).await,
        Cli::Report { results, check } => report::run(&results, check),
        Cli::OhaFields { file, offered_rps, secs } => {
            let json = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
            println!("{}", oha::fields(&json, offered_rps, secs)?);
            Ok(())
        }
        Cli::Latency { url, concurrency, requests, warmup, max_secs } => {
            latency(&url, concurrency, requests, warmup, Duration::from_secs(max_secs)).await
        }
    }
}

async fn bare_axum(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use axum::{Json, Router, routing::get};
    async fn slow() -> Json<serde_json::Value> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Json(serde_json::json!({"status": "ok", "t": t}))
    }
    let app = Router::new().route("/slow", get(slow)).route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    // As the gateway serves: one clone of the router per connection.
    axum::serve(listener, app.into_make_service()).await.context("serve")
}

fn xt(total: u64, csv: Option<&std::path::Path>, repeats: usize) -> anyhow::Result<()> {
    use domain::season::{Season, SeasonConfig};
    let started = Instant::now();
    let record = Season::new(SeasonConfig::with_total_actions(total, 1)?).play_all();
    eprintln!("generated {} actions in {:.1} s", record.actions.len(), started.elapsed().as_secs_f64());
    if let Some(path) = csv {
        spadl::write_actions(std::fs::File::create(path)?, &record.actions, |_| 0)?;
        eprintln!("wrote {}", path.display());
    }
    let mut best = [f64::MAX; 2];
    let mut players = [0usize; 2];
    for _ in 0..repeats.max(1) {
        for (slot, threads) in [1usize, 2].into_iter().enumerate() {
            let threads = std::num::NonZeroUsize::new(threads).context("threads")?;
            let t0 = Instant::now();
            let report = spadl::fit(&record.actions, threads, domain::xt::FitConfig::default())?;
            best[slot] = best[slot].min(t0.elapsed().as_secs_f64());
            players[slot] = report.players.len();
        }
    }
    anyhow::ensure!(players[0] == players[1], "thread counts disagree");
    println!(
        "{{\"label\":\"courtside-xt\",\"actions\":{},\"seconds_1_thread\":{:.4},\"seconds_2_threads\":{:.4},\"parallel_efficiency\":{:.3}}}",
        record.actions.len(),
        best[0],
        best[1],
        best[0] / (2.0 * best[1])
    );
    Ok(())
}

fn ndjson(matches: u64, bytes: u64, prefix: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut written = 0u64;
    let mut seq = 1u64;
    while written < bytes {
        for m in 0..matches.max(1) {
            let line = if seq == 1 {
                format!(
                    "{{\"match_id\":\"{prefix}-{m}\",\"seq\":1,\"kind\":\"kickoff\",\"home\":{{\"id\":1,\"name\":\"Bulk Home\"}},\"away\":{{\"id\":2,\"name\":\"Bulk Away\"}}}}\n"
                )
            } else {
                let x = (seq * 7 % 90) as f64 + 5.5;
                format!(
                    "{{\"match_id\":\"{prefix}-{m}\",\"seq\":{seq},\"kind\":\"pass\",\"minute\":{},\"team\":{},\"player\":{},\"start\":{{\"x\":{x},\"y\":30.5}},\"end\":{{\"x\":{},\"y\":40.0}},\"success\":true}}\n",
                    (seq / 40).min(90),
                    1 + seq % 2,
                    100 + seq % 11,
                    x + 8.0
                )
            };
            if out.write_all(line.as_bytes()).is_err() {
                return Ok(()); // the reader went away
            }
            written += line.len() as u64;
        }
        seq += 1;
    }
    out.flush().ok();
    Ok(())
}

async fn startup(probe: &str, runs: usize, timeout: Duration, command: &[String]) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no command given")?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let healthy = loop {
            if probe_once(probe).await {
                break Some(started.elapsed());
            }
            if started.elapsed() > timeout {
                break None;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        child.kill().await.ok();
        child.wait().await.ok();
        match healthy {
            Some(elapsed) => samples.push(elapsed),
            None => bail!("run {run}: no healthy answer within {timeout:?}"),
        }
        // Let the port be released before the next run binds it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Name the system by its binary, not by a wrapper such as `env`.
    let name = command.iter().rev().find(|arg| !arg.contains('=')).map_or(program.as_str(), String::as_str);
    println!(
        "startup {name}: runs={} min={:.1}ms p50={:.1}ms max={:.1}ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    );
    Ok(())
}

async fn probe_once(probe: &str) -> bool {
    if let Some(rest) = probe.strip_prefix("grpc://") {
        grpc_healthy(rest).await
    } else if let Some(rest) = probe.strip_prefix("http://") {
        http_ok(rest).await
    } else {
        false
    }
}

/// One HTTP/1.1 GET over a fresh connection; true on a 200.
async fn http_ok(rest: &str) -> bool {
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = TcpStream::connect(host).await else { return false };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200")
}

async fn grpc_healthy(host: &str) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{host}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else { return false };
    match HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await {
        Ok(response) => response.into_inner().status() == ServingStatus::Serving,
        Err(_) => false,
    }
}

async fn latency(
    url: &str,
    concurrency: usize,
    requests: u64,
    warmup: u64,
    max_time: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    for _ in 0..warmup {
        client.get(url).send().await?.error_for_status()?.bytes().await?;
    }

    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let per_task = requests.div_ceil(concurrency as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, histogram) = (client.clone(), url.to_owned(), Arc::clone(&histogram));
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            for _ in 0..per_task {
                if started.elapsed() > max_time {
                    break;
                }
                let sent = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    local.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                } else {
                    errors += 1;
                }
            }
            histogram.lock().await.add(&local)?;
            Ok::<_, anyhow::Error>(errors)
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await??;
    }
    let elapsed = started.elapsed();
    let h = histogram.lock().await;
    let us = |q: f64| h.value_at_quantile(q);
    println!(
        "latency {url} c={concurrency}: n={} errors={errors} rps={:.0} p50={}us p90={}us p99={}us p99.9={}us max={}us",
        h.len(),
        h.len() as f64 / elapsed.as_secs_f64(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max()
    );
    Ok(())
}

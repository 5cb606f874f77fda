//! The fan-out scenario: many WebSocket subscribers, many channels, a steady
//! publish rate; publish-to-receive latency, delivery completeness, and the
//! server's memory per connection.
//!
//! No standard tool measures publish-to-receive, so this is ours. The
//! coordinator publishes each event at the start of a millisecond with that
//! millisecond as its `ts`; subscribers subtract it from their receive time
//! (microseconds), so latency is measured from the moment of publishing.
//! Subscribers live in child processes (a process may open at most 20,000
//! files), each binding its own 127.0.0.x source address so ephemeral ports
//! never run out. Everything targets loopback and stops by itself.
//!
//! With `--rss-log` the coordinator also samples the servers' resident
//! memory every few seconds for the whole run, which `loadtest/soak.sh`
//! checks for growth.

use std::{
    io::{BufRead as _, Write as _},
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

/// Settings of one fan-out run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Name of the system under test, for the report.
    #[arg(long)]
    pub(crate) label: String,
    /// WebSocket URLs of the servers; subscribers are spread over them.
    #[arg(long = "ws", required = true)]
    pub(crate) ws: Vec<String>,
    /// Where events are published (any one server: they share state).
    #[arg(long)]
    pub(crate) publish: String,
    /// Bearer token for publishing, if the server needs one.
    #[arg(long, default_value = "")]
    pub(crate) token: String,
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Seconds of publishing, one event per channel per round.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// Seconds per round: each channel gets one event every this many
    /// seconds (the seed's cadence is 1; the scale run's balancer target
    /// is 4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub(crate) round_secs: u64,
    /// Subscriber processes.
    #[arg(long, default_value_t = 2)]
    pub(crate) processes: usize,
    /// Connections opened per second while ramping up.
    #[arg(long, default_value_t = 3000)]
    pub(crate) ramp_per_second: u64,
    /// Seconds every subscriber process may take to connect all of its
    /// subscribers before the run fails.
    #[arg(long, default_value_t = 120)]
    pub(crate) connect_timeout_secs: u64,
    /// Server process ids whose memory is sampled (RSS per connection).
    #[arg(long = "server-pid")]
    pub(crate) server_pids: Vec<u32>,
    /// Also samples the servers' RSS every `--rss-interval` seconds for the
    /// whole run into this CSV file (for the soak).
    #[arg(long)]
    pub(crate) rss_log: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub(crate) rss_interval: u64,
    /// Publishes each second's events back to back, as when a goal lands in
    /// many matches at once, instead of spreading them over the second. The
    /// report then adds each round's completion: from its first publish to
    /// its last delivery to any subscriber. That figure compares systems
    /// that queue in different places: one that acknowledges before fanning
    /// out queues the burst inside itself, one that answers after writing
    /// every socket queues it in the publisher.
    #[arg(long)]
    pub(crate) burst: bool,
    /// Also writes each publish's answer time into this CSV file
    /// (`match_id,micros`), so a script can compare the matches of one
    /// store shard with the others'.
    #[arg(long)]
    pub(crate) publish_latency_log: Option<std::path::PathBuf>,
}

/// One subscriber process's share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    #[arg(long = "ws", required = true)]
    pub(crate) ws: Vec<String>,
    /// Global index of this process's first subscriber.
    #[arg(long)]
    pub(crate) first: usize,
    #[arg(long)]
    pub(crate) count: usize,
    #[arg(long)]
    pub(crate) channels: usize,
    #[arg(long)]
    pub(crate) run_id: String,
    #[arg(long)]
    pub(crate) source_ip: IpAddr,
    #[arg(long)]
    pub(crate) ramp_per_second: u64,
    /// Keeps, per sequence number, when the last subscriber received it.
    #[arg(long)]
    pub(crate) track_rounds: bool,
}

/// What a subscriber process reports when told to stop.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ClientReport {
    connected: usize,
    received: u64,
    gaps: u64,
    duplicates: u64,
    disconnects: u64,
    /// `(latency_us, count)` pairs of the process's histogram.
    latencies: Vec<(u64, u64)>,
    /// With `--track-rounds`: `(seq, µs since the epoch)` of the last
    /// delivery of each sequence number in this process.
    #[serde(default)]
    last_delivery: Vec<(u64, u64)>,
}

fn channel_id(run_id: &str, index: usize) -> String {
    format!("fan-{run_id}-{index}")
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

/// Runs the coordinator: publishes, drives the subscriber processes, and
/// prints the report.
pub(crate) async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let run_id = format!("{}", now_micros() / 1000);
    let http = reqwest::Client::new();
    let publish = |body: serde_json::Value| {
        let mut request = http.post(&args.publish).json(&body);
        if !args.token.is_empty() {
            request = request.bearer_auth(&args.token);
        }
        request.send()
    };
    for channel in 0..args.channels {
        let kickoff = serde_json::json!({
            "match_id": channel_id(&run_id, channel), "seq": 1, "kind": "kickoff",
            "home": {"id": 1, "name": "Fan Out"}, "away": {"id": 2, "name": "Load Test"}
        });
        let response = publish(kickoff).await.context("publish kickoff")?;
        if !response.status().is_success() {
            bail!("kickoff refused: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
    }

    let rss_before = rss_kib(&args.server_pids);
    let started = Instant::now();
    let phase = Arc::new(AtomicU64::new(PHASE_CONNECTING));
    let sampler = match &args.rss_log {
        Some(path) => Some(tokio::spawn(sample_rss(
            path.clone(),
            args.server_pids.clone(),
            Duration::from_secs(args.rss_interval.max(1)),
            Arc::clone(&phase),
        ))),
        None => None,
    };
    let exe = std::env::current_exe().context("own executable")?;
    let per_process = args.subscribers.div_ceil(args.processes.max(1));
    let mut children = Vec::new();
    for process in 0..args.processes.max(1) {
        let first = process * per_process;
        let count = per_process.min(args.subscribers.saturating_sub(first));
        if count == 0 {
            break;
        }
        let mut command = tokio::process::Command::new(&exe);
        command.arg("fanout-client");
        for url in &args.ws {
            command.arg("--ws").arg(url);
        }
        command
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--channels", &args.channels.to_string(), "--run-id", &run_id])
            .args(["--source-ip", &format!("127.0.0.{}", 2 + process)])
            .args([
                "--ramp-per-second",
                &(args.ramp_per_second / args.processes.max(1) as u64).max(1).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if args.burst {
            command.arg("--track-rounds");
        }
        children.push(command.spawn().context("start a subscriber process")?);
    }
    let mut readers = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(args.connect_timeout_secs), lines.next_line())
            .await
            .with_context(|| {
                format!("subscribers did not connect within {} s", args.connect_timeout_secs)
            })??;
        if ready.as_deref() != Some("ready") {
            bail!("subscriber process said {ready:?} instead of ready");
        }
        readers.push(lines);
    }
    let ramp = started.elapsed();
    // Let the servers settle before sampling memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(&args.server_pids);

    // Publish: every round, one event per channel, each at the start of a
    // millisecond, spread evenly over the round. Spread publishes do not
    // wait for the one before (a slow answer must not stretch the round and
    // so lower the rate), except their own channel's previous one, so each
    // match's events arrive in order. Burst publishes go back to back, each
    // awaited: that queueing is what the burst mode compares.
    let round = Duration::from_secs(args.round_secs);
    let spacing = Duration::from_micros(round.as_micros() as u64 / args.channels.max(1) as u64);
    phase.store(PHASE_PUBLISHING, Ordering::Release);
    let cpu_before = cpu_secs(&args.server_pids);
    let publishing = Instant::now();
    let mut stats = PublishStats::new(args.publish_latency_log.is_some())?;
    let mut in_flight: Vec<Option<tokio::task::JoinHandle<(u64, bool)>>> =
        (0..args.channels).map(|_| None).collect();
    // Burst mode: when each round's first publish left, by sequence number.
    let mut round_started_us: Vec<(u64, u64)> = Vec::new();
    for round_index in 0..args.duration / args.round_secs {
        let round_start = Instant::now();
        if args.burst {
            round_started_us.push((round_index + 2, now_micros()));
        }
        for (channel, slot) in in_flight.iter_mut().enumerate() {
            let ts_ms = if args.burst {
                now_micros() / 1000
            } else {
                let due = round_start + spacing * channel as u32;
                tokio::time::sleep_until(due.into()).await;
                wait_for_millisecond_boundary()
            };
            let event = serde_json::json!({
                "match_id": channel_id(&run_id, channel), "seq": round_index + 2, "kind": "pass", "minute": 1,
                "ts": ts_ms, "team": 1, "player": 7,
                "start": {"x": 50.0, "y": 30.0}, "end": {"x": 60.0, "y": 30.0}, "success": true
            });
            if let Some(previous) = slot.take() {
                let (micros, ok) = previous.await.context("a publish task")?;
                stats.record(&channel_id(&run_id, channel), micros, ok)?;
            }
            let pending = publish(event);
            let answer = async move {
                let sent = Instant::now();
                let ok = matches!(pending.await, Ok(response) if response.status().is_success());
                (u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX), ok)
            };
            if args.burst {
                let (micros, ok) = answer.await;
                stats.record(&channel_id(&run_id, channel), micros, ok)?;
            } else {
                *slot = Some(tokio::spawn(answer));
            }
        }
        let elapsed = round_start.elapsed();
        if elapsed < round {
            tokio::time::sleep(round - elapsed).await;
        }
    }
    for (channel, previous) in in_flight.into_iter().enumerate() {
        if let Some(previous) = previous {
            let (micros, ok) = previous.await.context("a publish task")?;
            stats.record(&channel_id(&run_id, channel), micros, ok)?;
        }
    }
    let publish_secs = publishing.elapsed().as_secs_f64();
    let PublishStats { published, errors: publish_errors, times: publish_times, log: publish_log, .. } =
        stats;
    let rss_end = rss_kib(&args.server_pids);
    phase.store(PHASE_DONE, Ordering::Release);
    if let Some(path) = &args.publish_latency_log {
        std::fs::write(path, format!("match_id,micros\n{publish_log}")).context("write the publish log")?;
    }
    if let Some(sampler) = sampler {
        sampler.await.context("rss sampler")??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // From the first publish to two seconds after the last: every delivery
    // is in, and what the servers spent on it (and on little else).
    let cpu_after = cpu_secs(&args.server_pids);

    let mut total = ClientReport::default();
    let mut last_delivery: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for (child, mut lines) in children.iter_mut().zip(readers) {
        if let Some(stdin) = child.stdin.as_mut() {
            stdin.write_all(b"stop\n").await.ok();
        }
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("subscriber report timed out")??
            .context("subscriber process ended without a report")?;
        let report: ClientReport = serde_json::from_str(&line).context("subscriber report")?;
        total.connected += report.connected;
        total.received += report.received;
        total.gaps += report.gaps;
        total.duplicates += report.duplicates;
        total.disconnects += report.disconnects;
        for (value, count) in report.latencies {
            histogram.record_n(value.max(1), count)?;
        }
        for (seq, at) in report.last_delivery {
            let last = last_delivery.entry(seq).or_default();
            *last = (*last).max(at);
        }
        child.wait().await.ok();
    }

    // Each subscriber should receive every event of its channel.
    let expected = (published / args.channels.max(1) as u64) * args.subscribers as u64;
    let per_connection = |after: Option<u64>| match (rss_before, after) {
        (Some(before), Some(after)) if args.subscribers > 0 => {
            Some((after.saturating_sub(before)) as f64 * 1024.0 / args.subscribers as f64)
        }
        _ => None,
    };
    let server_cpu = cpu_before.zip(cpu_after).map(|(before, after)| after - before);
    let report = serde_json::json!({
        "label": args.label,
        "subscribers": args.subscribers,
        "connected": total.connected,
        "channels": args.channels,
        "round_secs": args.round_secs,
        "publish_secs": publish_secs,
        "target_deliveries_per_second": args.subscribers as f64 / args.round_secs as f64,
        "deliveries_per_second": total.received as f64 / publish_secs.max(1e-9),
        "servers": args.ws.len(),
        "ramp_secs": ramp.as_secs_f64(),
        "published": published,
        "publish_errors": publish_errors,
        "publish_ms": {
            "p50": publish_times.value_at_quantile(0.5) as f64 / 1e3,
            "p99": publish_times.value_at_quantile(0.99) as f64 / 1e3,
        },
        "expected_deliveries": expected,
        "received": total.received,
        "gaps": total.gaps,
        "duplicates": total.duplicates,
        "disconnects": total.disconnects,
        "latency_ms": {
            "p50": histogram.value_at_quantile(0.5) as f64 / 1e3,
            "p90": histogram.value_at_quantile(0.9) as f64 / 1e3,
            "p99": histogram.value_at_quantile(0.99) as f64 / 1e3,
            "p999": histogram.value_at_quantile(0.999) as f64 / 1e3,
            "max": histogram.max() as f64 / 1e3,
        },
        "server_rss_kib": {"before": rss_before, "connected": rss_connected, "end": rss_end},
        "rss_bytes_per_connection": per_connection(rss_connected),
        "rss_bytes_per_connection_end": per_connection(rss_end),
        "server_cpu_secs": server_cpu,
        "server_cpu_us_per_delivery": server_cpu
            .filter(|_| total.received > 0)
            .map(|secs| secs * 1e6 / total.received as f64),
        "mode": if args.burst { "burst" } else { "spread" },
        "round_completion_ms": args.burst.then(|| round_completion(&round_started_us, &last_delivery)),
    });
    println!("{report}");
    Ok(())
}

/// What the publisher saw: answers, failures, answer times, and with a
/// publish log each answer's time by match.
struct PublishStats {
    published: u64,
    errors: u64,
    times: Histogram<u64>,
    log: String,
    keep_log: bool,
}

impl PublishStats {
    fn new(keep_log: bool) -> anyhow::Result<Self> {
        Ok(Self {
            published: 0,
            errors: 0,
            times: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            log: String::new(),
            keep_log,
        })
    }

    fn record(&mut self, match_id: &str, micros: u64, ok: bool) -> anyhow::Result<()> {
        if !ok {
            self.errors += 1;
            return Ok(());
        }
        self.published += 1;
        self.times.record(micros.clamp(1, 120_000_000))?;
        if self.keep_log {
            self.log.push_str(&format!("{match_id},{micros}\n"));
        }
        Ok(())
    }
}

/// Each burst round's completion, first publish to last delivery: its
/// median and maximum in milliseconds over the rounds, and how many rounds
/// no subscriber received at all.
fn round_completion(
    started: &[(u64, u64)],
    last_delivery: &std::collections::HashMap<u64, u64>,
) -> serde_json::Value {
    let mut completions: Vec<f64> = started
        .iter()
        .filter_map(|(seq, at)| last_delivery.get(seq).map(|last| last.saturating_sub(*at) as f64 / 1e3))
        .collect();
    completions.sort_by(f64::total_cmp);
    let median = completions.get(completions.len() / 2).copied();
    serde_json::json!({
        "p50": median,
        "max": completions.last().copied(),
        "rounds": started.len(),
        "undelivered_rounds": started.len() - completions.len(),
    })
}

const PHASE_CONNECTING: u64 = 0;
const PHASE_PUBLISHING: u64 = 1;
const PHASE_DONE: u64 = 2;

/// Writes one CSV row per `interval` until publishing is over: seconds
/// since the run began, the phase (`connecting` while subscribers connect,
/// then `publishing`), and the servers' RSS in KiB (empty if unreadable).
async fn sample_rss(
    path: std::path::PathBuf,
    pids: Vec<u32>,
    interval: Duration,
    phase: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    writeln!(file, "t_secs,phase,rss_kib").context("write the csv header")?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let name = match phase.load(Ordering::Acquire) {
            PHASE_CONNECTING => "connecting",
            PHASE_PUBLISHING => "publishing",
            _ => return Ok(()),
        };
        let rss = rss_kib(&pids).map(|kib| kib.to_string()).unwrap_or_default();
        writeln!(file, "{:.1},{name},{rss}", started.elapsed().as_secs_f64())
            .context("write an rss sample")?;
        file.flush().ok();
    }
}

/// Sleeps (spinning for the last stretch) until the wall clock crosses into
/// a new millisecond, and returns that millisecond.
fn wait_for_millisecond_boundary() -> u64 {
    let start_ms = now_micros() / 1000;
    loop {
        let now = now_micros();
        if now / 1000 > start_ms {
            return now / 1000;
        }
        std::hint::spin_loop();
    }
}

/// CPU time (user and system, all threads) `pids` have used so far, in
/// seconds: fields 14 and 15 of `/proc/PID/stat`, in the kernel's clock
/// ticks, 100 a second for user space on Linux.
fn cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces; the fields after it do not.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// Sum of the resident set sizes of `pids`, in KiB.
fn rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<u64>,
    event: Option<IncomingEvent>,
}

#[derive(Debug, Deserialize)]
struct IncomingEvent {
    ts: Option<u64>,
}

/// What a subscriber process times, shared by its subscribers (its runtime
/// has one thread: the locks are never contended).
#[derive(Debug)]
struct Timings {
    latency: std::sync::Mutex<Histogram<u64>>,
    /// With `--track-rounds`: the last delivery of each sequence number, in
    /// µs since the epoch.
    rounds: Option<std::sync::Mutex<std::collections::HashMap<u64, u64>>>,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    disconnects: AtomicU64,
}

/// A subscriber process: opens its connections, says `ready` once all are
/// subscribed, and reports when told to stop (a line on stdin).
pub(crate) async fn client(args: ClientArgs) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let timings = Arc::new(Timings {
        latency: std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?),
        rounds: args.track_rounds.then(Default::default),
    });
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel::<()>(args.count.max(1));
    let stop = tokio_util_free_token();
    let pause = Duration::from_micros(1_000_000 / args.ramp_per_second.max(1));

    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let global = args.first + i;
        let url = args.ws[global % args.ws.len()].clone();
        let channel = channel_id(&args.run_id, global % args.channels.max(1));
        let (counters, timings, subscribed, stop) =
            (Arc::clone(&counters), Arc::clone(&timings), subscribed_tx.clone(), stop.clone());
        let source = args.source_ip;
        tasks.push(tokio::spawn(async move {
            if let Err(err) =
                subscriber(url, source, channel, counters.clone(), timings, subscribed, stop).await
            {
                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                eprintln!("subscriber {global}: {err:#}");
            }
        }));
        tokio::time::sleep(pause).await;
    }
    drop(subscribed_tx);
    let mut ready = 0;
    while ready < args.count {
        match tokio::time::timeout(Duration::from_secs(60), subscribed_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => break,
        }
    }
    println!("ready");
    std::io::stdout().flush().ok();

    // Wait for "stop" on stdin.
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().lock().read_line(&mut line)).await??;
    stop.store(true, Ordering::Release);
    let histogram = timings.latency.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let report = ClientReport {
        connected: counters.connected.load(Ordering::Relaxed) as usize,
        received: counters.received.load(Ordering::Relaxed),
        gaps: counters.gaps.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        disconnects: counters.disconnects.load(Ordering::Relaxed),
        latencies: histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
        last_delivery: timings
            .rounds
            .as_ref()
            .and_then(|rounds| rounds.lock().ok().map(|r| r.iter().map(|(s, t)| (*s, *t)).collect()))
            .unwrap_or_default(),
    };
    println!("{}", serde_json::to_string(&report)?);
    std::io::stdout().flush().ok();
    for task in tasks {
        task.abort();
    }
    Ok(())
}

fn tokio_util_free_token() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

async fn subscriber(
    url: String,
    source: IpAddr,
    channel: String,
    counters: Arc<Counters>,
    timings: Arc<Timings>,
    subscribed: tokio::sync::mpsc::Sender<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let target: SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("url has no host")?
        .parse()
        .context("url host must be ip:port")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await.context("connect")?;
    stream.set_nodelay(true).ok();
    // Small buffers: 8,000 connections in one process at tungstenite's
    // 128 KiB default would be a gigabyte of client memory.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
        .await
        .context("websocket handshake")?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let subscribe = serde_json::json!({"op": "subscribe", "match": channel});
    ws.send(Message::text(subscribe.to_string())).await?;

    let mut last_seq: Option<u64> = None;
    while let Some(message) = ws.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let received_at = now_micros();
        let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else { continue };
        match incoming.kind.as_str() {
            "subscribed" => {
                last_seq = incoming.seq;
                subscribed.send(()).await.ok();
            }
            "event" => {
                let seq = incoming.seq.unwrap_or(0);
                match last_seq {
                    Some(last) if seq <= last => {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some(last) if seq > last + 1 => {
                        counters.gaps.fetch_add(seq - last - 1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                last_seq = Some(seq);
                counters.received.fetch_add(1, Ordering::Relaxed);
                // The subscriber runtime has one thread: this lock is never
                // contended.
                if let (Some(ts), Ok(mut shared)) =
                    (incoming.event.and_then(|e| e.ts), timings.latency.lock())
                {
                    shared.saturating_record(received_at.saturating_sub(ts * 1000).max(1));
                }
                if let Some(Ok(mut rounds)) = timings.rounds.as_ref().map(|r| r.lock()) {
                    let last = rounds.entry(seq).or_default();
                    *last = (*last).max(received_at);
                }
            }
            _ => {}
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(())
}

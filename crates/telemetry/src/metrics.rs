//! Prometheus metrics shared by both tiers: the process-wide recorder, its
//! bucket layout, and the runtime probe every tokio runtime runs.
//!
//! Instrumented code records through the `metrics` facade macros; this
//! module installs the one recorder they feed and renders it as Prometheus
//! text for the `/metrics` routes. Names follow the OpenTelemetry semantic
//! conventions where one exists (`http.server.request.duration` becomes
//! `http_server_request_duration_seconds`), and `courtside_*` otherwise.
//!
//! In the all-in-one binary both tiers share the recorder, so one scrape
//! shows both; deployed apart, each process exports its own.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use metrics::{Unit, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Upper bounds of every latency histogram, in seconds: 100 µs to 10 s,
/// dense where an event loop's and a pool's latencies live. Explicit
/// buckets make the exporter write real histograms (aggregatable across
/// replicas) instead of summaries.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const EVENT_LOOP_LAG: &str = "courtside_runtime_event_loop_lag_seconds";
pub const TOKIO_WORKERS: &str = "tokio_workers";
pub const TOKIO_ALIVE_TASKS: &str = "tokio_alive_tasks";
pub const TOKIO_GLOBAL_QUEUE_DEPTH: &str = "tokio_global_queue_depth";
pub const TOKIO_BUSY_RATIO: &str = "tokio_worker_busy_ratio";

/// How often the probe asks to be woken. Lag is how late the wake-up comes.
const PROBE_PERIOD: Duration = Duration::from_millis(100);
/// Runtime gauges are sampled every this many probe periods.
const SAMPLE_EVERY: u32 = 10;
/// Histogram buckets are folded this often even when nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. Every
/// later call (a second tier in the same process, another test) gets the
/// same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder =
                PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(err) = metrics::set_global_recorder(recorder) {
                // Someone else installed a recorder first: their metrics go
                // there, and ours render empty rather than take the process down.
                tracing::warn!(%err, "metrics recorder already installed; /metrics will be empty");
            }
            describe_runtime();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_PERIOD);
                    upkeep.run_upkeep();
                }
            });
            if let Err(err) = spawned {
                tracing::warn!(%err, "cannot start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

/// Counts one unit of work in flight on `gauge` for as long as it lives:
/// decremented on drop, so a request whose client went away (its future
/// dropped mid-way) does not stay counted.
#[derive(Debug)]
pub struct InFlight(metrics::Gauge);

impl InFlight {
    pub fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The current metrics as Prometheus text.
pub fn render() -> String {
    install().render()
}

fn describe_runtime() {
    describe_histogram!(
        EVENT_LOOP_LAG,
        Unit::Seconds,
        "how late a task asking to wake every 100 ms is polled: time the runtime's threads were busy \
         with other work (about 1 ms is timer resolution)"
    );
    describe_gauge!(TOKIO_WORKERS, "worker threads of the tokio runtime");
    describe_gauge!(TOKIO_ALIVE_TASKS, "tasks alive on the tokio runtime");
    describe_gauge!(TOKIO_GLOBAL_QUEUE_DEPTH, "tasks waiting in the runtime's global queue");
    describe_gauge!(
        TOKIO_BUSY_RATIO,
        "share of the last second the runtime's worker threads spent polling tasks (0..1)"
    );
}

/// Measures the calling tokio runtime until it shuts down: event-loop lag
/// as a histogram, and the runtime's own counters as gauges, labelled
/// `runtime = name`.
///
/// Lag is the seed's "event-loop lag" made concrete: a task that asks to be
/// woken every 100 ms and records how late it actually runs. Anything
/// hogging a worker thread (a CPU loop, a blocking call) shows up here
/// before it shows up in request latency.
pub fn spawn_runtime_probe(name: &'static str) -> tokio::task::JoinHandle<()> {
    install();
    tokio::spawn(async move {
        let handle = tokio::runtime::Handle::current();
        let lag = histogram!(EVENT_LOOP_LAG, "runtime" => name);
        let mut busy_before = total_busy(&handle);
        let mut sampled_at = Instant::now();
        let mut ticks = 0u32;
        loop {
            let asked = Instant::now();
            tokio::time::sleep(PROBE_PERIOD).await;
            lag.record(asked.elapsed().saturating_sub(PROBE_PERIOD).as_secs_f64());

            ticks += 1;
            if ticks.is_multiple_of(SAMPLE_EVERY) {
                let metrics = handle.metrics();
                let workers = metrics.num_workers();
                gauge!(TOKIO_WORKERS, "runtime" => name).set(workers as f64);
                gauge!(TOKIO_ALIVE_TASKS, "runtime" => name).set(metrics.num_alive_tasks() as f64);
                gauge!(TOKIO_GLOBAL_QUEUE_DEPTH, "runtime" => name).set(metrics.global_queue_depth() as f64);
                let busy = total_busy(&handle);
                let window = sampled_at.elapsed().as_secs_f64() * workers.max(1) as f64;
                if window > 0.0 {
                    let ratio = (busy - busy_before).as_secs_f64() / window;
                    gauge!(TOKIO_BUSY_RATIO, "runtime" => name).set(ratio.clamp(0.0, 1.0));
                }
                busy_before = busy;
                sampled_at = Instant::now();
            }
        }
    })
}

fn total_busy(handle: &tokio::runtime::Handle) -> Duration {
    let metrics = handle.metrics();
    (0..metrics.num_workers()).map(|worker| metrics.worker_total_busy_duration(worker)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_reports_lag_when_a_worker_thread_is_blocked() {
        spawn_runtime_probe("probe-test");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Block both worker threads for 300 ms: the probe wakes that late.
        let blockers: Vec<_> =
            (0..2).map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(300)) })).collect();
        for blocker in blockers {
            blocker.await.expect("blocker finishes");
        }
        tokio::time::sleep(Duration::from_millis(1_200)).await;

        let text = render();
        let sum = sample(&text, "courtside_runtime_event_loop_lag_seconds_sum{runtime=\"probe-test\"}")
            .expect("lag histogram exported");
        assert!(sum >= 0.15, "lag sum {sum} should include most of the 300 ms block");
        let workers = sample(&text, "tokio_workers{runtime=\"probe-test\"}").expect("runtime gauge exported");
        assert_eq!(workers, 2.0);
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }
}

//! `courtside-loadtest report`: turns a results folder's JSON lines into
//! `report.md` and SVG plots.
//!
//! Each scenario script appends one line per measured point and run. Here
//! the runs of a point are folded into their median, figure by figure, so
//! one noisy run on a shared machine moves nothing; the report says how
//! many runs each point had. Courtside's targets are checked against the
//! peers measured in the same folder, and every ratio is printed, met or
//! not.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use plotters::{
    coord::ranged1d::{AsRangedCoord, ValueFormatter},
    drawing::DrawingAreaErrorKind,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde_json::Value;

/// One measured point: its runs' figures folded into medians.
#[derive(Debug, Clone)]
struct Point {
    scenario: String,
    system: String,
    x: Option<f64>,
    runs: usize,
    figures: BTreeMap<String, f64>,
}

impl Point {
    fn get(&self, figure: &str) -> Option<f64> {
        self.figures.get(figure).copied()
    }
}

/// Reads `results`, writes `report.md` and the plots there, and with
/// `check` fails when any line reports errors.
pub(crate) fn run(results: &Path, check: bool) -> anyhow::Result<()> {
    let (lines, skipped) = read_lines(results)?;
    anyhow::ensure!(!lines.is_empty(), "no result lines with a \"scenario\" in {}", results.display());
    let points = fold(&lines);
    let mut plots = plot_all(results, &points)?;
    plots.extend(crate::timeline::plot(results)?);
    let markdown = render(results, &points, &plots, skipped);
    let path = results.join("report.md");
    std::fs::write(&path, markdown).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {} ({} points from {} lines, {} plots)",
        path.display(),
        points.len(),
        lines.len(),
        plots.len()
    );

    if check {
        let failed: Vec<String> = lines
            .iter()
            .filter(|line| {
                number(line, "errors").unwrap_or(0.0) > 0.0 || number(line, "gaps").unwrap_or(0.0) > 0.0
            })
            .map(Value::to_string)
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "{} result lines report errors:\n{}",
            failed.len(),
            failed.join("\n")
        );
        eprintln!("check: no errors in {} lines", lines.len());
    }
    Ok(())
}

fn read_lines(results: &Path) -> anyhow::Result<(Vec<Value>, usize)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(results)
        .with_context(|| format!("cannot read {}", results.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    let mut skipped = 0;
    for file in files {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not json", file.display(), number + 1))?;
            // Lines from before the common schema carry no scenario.
            if value.get("scenario").and_then(Value::as_str).is_some() {
                lines.push(value);
            } else {
                skipped += 1;
            }
        }
    }
    Ok((lines, skipped))
}

fn number(line: &Value, key: &str) -> Option<f64> {
    line.get(key).and_then(Value::as_f64)
}

/// Groups lines by scenario, system and x, and takes each figure's median.
fn fold(lines: &[Value]) -> Vec<Point> {
    type Key = (String, String, Option<u64>);
    let mut groups: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    for line in lines {
        let text = |key: &str| line.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let x = number(line, "x").map(f64::to_bits);
        groups.entry((text("scenario"), text("system"), x)).or_default().push(line);
    }
    groups
        .into_iter()
        .map(|((scenario, system, x), runs)| {
            let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for run in &runs {
                if let Some(object) = run.as_object() {
                    for (key, value) in object {
                        if let Some(v) = value.as_f64()
                            && key != "x"
                            && key != "run"
                        {
                            samples.entry(key.clone()).or_default().push(v);
                        }
                    }
                }
            }
            let figures = samples.into_iter().map(|(key, values)| (key, median(values))).collect();
            Point { scenario, system, x: x.map(f64::from_bits), runs: runs.len(), figures }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

/// Which figures each scenario's table shows: (header, figure, scale).
fn columns(scenario: &str) -> &'static [(&'static str, &'static str, f64)] {
    match scenario {
        "slow" | "compute" | "compute-small" => &[
            ("req/s", "rps", 1.0),
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("p99.9 ms", "p999_ms", 1.0),
            ("max ms", "max_ms", 1.0),
            ("errors", "errors", 1.0),
            ("RSS MiB", "rss_kib", 1.0 / 1024.0),
            ("RSS/conn KB", "rss_per_conn_bytes", 1.0 / 1000.0),
        ],
        "latency" => &[
            ("achieved req/s", "rps", 1.0),
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("p99.9 ms", "p999_ms", 1.0),
            ("max ms", "max_ms", 1.0),
            ("unsent", "unsent", 1.0),
            ("errors", "errors", 1.0),
            ("oha CPU", "client_cpu", 1.0),
            ("RSS MiB", "rss_kib", 1.0 / 1024.0),
        ],
        "mixed" => &[
            ("unloaded p99 ms", "unloaded_p99_ms", 1.0),
            ("loaded p99 ms", "loaded_p99_ms", 1.0),
            ("loaded/unloaded", "ratio", 1.0),
            ("errors", "errors", 1.0),
        ],
        "fanout" => &[
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("p99.9 ms", "p999_ms", 1.0),
            ("max ms", "max_ms", 1.0),
            ("gaps", "gaps", 1.0),
            ("errors", "errors", 1.0),
            ("RSS/conn KB", "rss_per_conn_bytes", 1.0 / 1000.0),
            ("server CPU µs/delivery", "server_cpu_us_per_delivery", 1.0),
        ],
        "fanout-burst" => &[
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("max ms", "max_ms", 1.0),
            ("round completion p50 ms", "completion_p50_ms", 1.0),
            ("round completion max ms", "completion_max_ms", 1.0),
            ("gaps", "gaps", 1.0),
            ("errors", "errors", 1.0),
        ],
        "ingest" => &[
            ("events/s", "events_per_second", 1.0),
            ("peak RSS MiB", "rss_peak_kib", 1.0 / 1024.0),
            ("errors", "errors", 1.0),
        ],
        "startup" => &[("p50 ms", "p50_ms", 1.0), ("max ms", "max_ms", 1.0), ("errors", "errors", 1.0)],
        "scale" => &[
            ("deliveries/s", "deliveries_per_second", 1.0),
            ("ramp s", "ramp_secs", 1.0),
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("max ms", "max_ms", 1.0),
            ("gaps", "gaps", 1.0),
            ("errors", "errors", 1.0),
            ("gateway RSS/sub KB", "gateway_rss_per_subscriber_bytes", 1.0 / 1000.0),
            ("gateways CPU µs/delivery", "gateways_cpu_us_per_delivery", 1.0),
            ("HAProxy CPU µs/delivery", "haproxy_cpu_us_per_delivery", 1.0),
            ("load generator CPU µs/delivery", "load_generator_cpu_us_per_delivery", 1.0),
            ("Redis CPU s", "redis_cpu_secs", 1.0),
            ("HAProxy RSS MiB", "haproxy_rss_mib", 1.0),
            ("load generator peak RSS MiB/process", "load_generator_peak_rss_mib_per_process", 1.0),
        ],
        "soak" => &[
            ("secs", "secs", 1.0),
            ("RSS at warm-up end MiB", "rss_warmup_end_kib", 1.0 / 1024.0),
            ("max RSS after MiB", "rss_max_after_kib", 1.0 / 1024.0),
            ("growth MiB", "growth_kib", 1.0 / 1024.0),
            ("bound MiB", "bound_kib", 1.0 / 1024.0),
            ("p99 ms", "p99_ms", 1.0),
            ("errors", "errors", 1.0),
        ],
        "overhead" => &[
            ("req/s", "rps", 1.0),
            ("p50 ms", "p50_ms", 1.0),
            ("p99 ms", "p99_ms", 1.0),
            ("CPU µs/request", "cpu_us_per_request", 1.0),
            ("errors", "errors", 1.0),
        ],
        "callgrind-slow" => &[
            ("instructions/request", "instructions_per_request", 1.0),
            ("requests", "requests", 1.0),
            ("errors", "errors", 1.0),
        ],
        _ => &[],
    }
}

const ORDER: &[&str] = &[
    "startup",
    "slow",
    "latency",
    "compute",
    "compute-small",
    "mixed",
    "fanout",
    "fanout-burst",
    "ingest",
    "scale",
    "overhead",
    "callgrind-slow",
    "soak",
];

fn x_label(scenario: &str) -> &'static str {
    match scenario {
        "fanout" | "fanout-burst" | "soak" | "scale" => "subscribers",
        "compute" | "compute-small" => "concurrency",
        "latency" | "mixed" => "offered req/s",
        _ => "connections",
    }
}

fn render(results: &Path, points: &[Point], plots: &[(String, String)], skipped: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Load-test report\n");
    let _ = writeln!(out, "Results folder: `{}`. Each figure is the median of its runs.", results.display());
    if skipped > 0 {
        let _ = writeln!(out, "{skipped} lines in an older format were left out.");
    }
    if let Ok(machine) = std::fs::read_to_string(results.join("machine.json"))
        && let Ok(machine) = serde_json::from_str::<Value>(&machine)
        && let Some(object) = machine.as_object()
    {
        let _ = writeln!(out, "\n## Machine\n");
        for (key, value) in object {
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            let _ = writeln!(out, "- {key}: {value}");
        }
    }

    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "courtside against peers measured in this folder.\n");
    let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
    for line in targets(points) {
        let _ = writeln!(out, "| {} | {} | {} |", line.0, line.1, line.2);
    }

    let mut scenarios: Vec<&str> = points.iter().map(|p| p.scenario.as_str()).collect();
    scenarios.sort_by_key(|s| ORDER.iter().position(|o| o == s).unwrap_or(ORDER.len()));
    scenarios.dedup();
    for scenario in scenarios {
        let mut rows: Vec<&Point> = points.iter().filter(|p| p.scenario == scenario).collect();
        rows.sort_by(|a, b| a.system.cmp(&b.system).then(a.x.unwrap_or(0.0).total_cmp(&b.x.unwrap_or(0.0))));
        let cols = columns(scenario);
        let _ = writeln!(out, "\n## {scenario}\n");
        let has_x = rows.iter().any(|p| p.x.is_some());
        let mut header = String::from("| system |");
        let mut rule = String::from("|---|");
        if has_x {
            let _ = write!(header, " {} |", x_label(scenario));
            rule.push_str("---:|");
        }
        for (title, _, _) in cols {
            let _ = write!(header, " {title} |");
            rule.push_str("---:|");
        }
        header.push_str(" runs |");
        rule.push_str("---:|");
        let _ = writeln!(out, "{header}\n{rule}");
        for point in rows {
            let mut row = format!("| {} |", point.system);
            if has_x {
                let _ = write!(row, " {} |", point.x.map_or("".into(), |x| format!("{x}")));
            }
            for (_, figure, scale) in cols {
                let _ =
                    write!(row, " {} |", point.get(figure).map_or("–".into(), |v| format_figure(v * scale)));
            }
            let _ = write!(row, " {} |", point.runs);
            let _ = writeln!(out, "{row}");
        }
        for (plot_scenario, file) in plots {
            if plot_scenario == scenario {
                let _ = writeln!(out, "\n![{file}]({file})");
                if let Some(caption) = caption_of(file) {
                    let _ = writeln!(out, "\n*{caption}*");
                }
            }
        }
    }
    out
}

fn format_figure(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn find<'a>(points: &'a [Point], scenario: &str, system: &str, x: Option<f64>) -> Option<&'a Point> {
    points.iter().find(|p| p.scenario == scenario && p.system == system && (x.is_none() || p.x == x))
}

type Verdict = (String, String, String);

/// `ours / theirs` against `bound` (a floor or a ceiling), when both exist.
fn ratio(
    out: &mut Vec<Verdict>,
    what: String,
    ours: Option<f64>,
    theirs: Option<f64>,
    bound: f64,
    at_least: bool,
) {
    let (Some(ours), Some(theirs)) = (ours, theirs) else { return };
    if theirs == 0.0 {
        return;
    }
    let r = ours / theirs;
    let met = if at_least { r >= bound } else { r <= bound };
    let sign = if at_least { "≥" } else { "≤" };
    out.push((
        format!("{what} {sign} {bound}×"),
        format!("{r:.2}× ({} vs {})", format_figure(ours), format_figure(theirs)),
        if met { "met".into() } else { format!("missed by {:.0}%", ((r / bound) - 1.0).abs() * 100.0) },
    ));
}

/// Every target of the load-test issue, as (target, measured, verdict).
fn targets(points: &[Point]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for conns in [5000.0, 10000.0] {
        let ours = find(points, "slow", "courtside", Some(conns));
        let figure =
            |system: &str, key: &str| find(points, "slow", system, Some(conns)).and_then(|p| p.get(key));
        let get = |p: Option<&Point>, key: &str| p.and_then(|p| p.get(key));
        ratio(
            &mut out,
            format!("slow@{conns} req/s vs node"),
            get(ours, "rps"),
            figure("node", "rps"),
            2.0,
            true,
        );
        ratio(
            &mut out,
            format!("slow@{conns} req/s vs fastapi"),
            get(ours, "rps"),
            figure("fastapi", "rps"),
            10.0,
            true,
        );
        ratio(
            &mut out,
            format!("slow@{conns} p99 vs node"),
            get(ours, "p99_ms"),
            figure("node", "p99_ms"),
            0.6,
            false,
        );
        ratio(
            &mut out,
            format!("slow@{conns} RSS/conn vs node"),
            get(ours, "rss_per_conn_bytes"),
            figure("node", "rss_per_conn_bytes"),
            1.0,
            false,
        );
    }
    edge_targets(points, &mut out);
    let compute = |system: &str| find(points, "compute", system, Some(2.0)).and_then(|p| p.get("rps"));
    ratio(&mut out, "compute@2 req/s vs node".into(), compute("courtside"), compute("node"), 3.0, true);
    if let Some(mixed) = find(points, "mixed", "courtside", None).and_then(|p| p.get("ratio")) {
        out.push((
            "mixed: slow p99 loaded/unloaded ≤ 1.1×".into(),
            format!("{mixed:.2}×"),
            if mixed <= 1.1 {
                "met".into()
            } else {
                format!("missed by {:.0}%", (mixed / 1.1 - 1.0) * 100.0)
            },
        ));
    }
    let fanout =
        |system: &str, key: &str| find(points, "fanout", system, Some(15000.0)).and_then(|p| p.get(key));
    ratio(
        &mut out,
        "fanout@15000 p99 vs node ws".into(),
        fanout("courtside", "p99_ms"),
        fanout("node-ws", "p99_ms"),
        1.0,
        false,
    );
    ratio(
        &mut out,
        "fanout@15000 RSS/conn vs node ws".into(),
        fanout("courtside", "rss_per_conn_bytes"),
        fanout("node-ws", "rss_per_conn_bytes"),
        1.0,
        false,
    );
    for conns in [1000.0, 5000.0] {
        let overhead = |config: &str, key: &str| {
            find(points, "overhead", &format!("courtside-trace-{config}"), Some(conns))
                .and_then(|p| p.get(key))
        };
        ratio(
            &mut out,
            format!("slow@{conns} req/s, traces at 10% vs off"),
            overhead("sampled-10", "rps"),
            overhead("off", "rps"),
            0.95,
            true,
        );
        ratio(
            &mut out,
            format!("slow@{conns} CPU per request, traces at 10% vs off"),
            overhead("sampled-10", "cpu_us_per_request"),
            overhead("off", "cpu_us_per_request"),
            1.05,
            false,
        );
    }
    let instructions = |system: &str| {
        find(points, "callgrind-slow", system, None).and_then(|p| p.get("instructions_per_request"))
    };
    ratio(
        &mut out,
        "instructions per /slow request, traces at 10% vs off".into(),
        instructions("courtside"),
        instructions("courtside-untraced"),
        1.05,
        false,
    );
    for system in ["courtside-gateway", "courtside-all-in-one", "courtside"] {
        if let Some(p50) = find(points, "startup", system, None).and_then(|p| p.get("p50_ms")) {
            out.push((
                format!("startup {system} < 100 ms"),
                format!("{p50:.1} ms"),
                if p50 < 100.0 { "met".into() } else { "missed".into() },
            ));
        }
    }
    out
}

/// The edge's own targets, each against the bare axum ceiling and the
/// Node.js peer measured beside it, in both configurations: (b) the gateway
/// and the all-in-one as the compose observability profile runs them
/// (traces exported at 10 %, JSON logs), (a) the all-in-one as `cargo run
/// --release` starts it (`-untraced`: no exporter). Instructions per request
/// also for the gateway without an exporter (`courtside-untraced`).
fn edge_targets(points: &[Point], out: &mut Vec<Verdict>) {
    let figure = |scenario: &str, system: &str, x: f64, key: &str| {
        find(points, scenario, system, Some(x)).and_then(|p| p.get(key))
    };
    for system in ["courtside", "courtside-all-in-one", "courtside-all-in-one-untraced"] {
        // (at, req/s floor against bare axum, p99 ceiling against bare axum)
        for (conns, rps_floor, p99_ceiling) in [(5000.0, 0.95, 1.2), (10000.0, 0.9, 1.5)] {
            let ours = |key: &str| figure("slow", system, conns, key);
            ratio(
                out,
                format!("slow@{conns} {system} req/s vs bare axum"),
                ours("rps"),
                figure("slow", "bare-axum", conns, "rps"),
                rps_floor,
                true,
            );
            ratio(
                out,
                format!("slow@{conns} {system} p99 vs bare axum"),
                ours("p99_ms"),
                figure("slow", "bare-axum", conns, "p99_ms"),
                p99_ceiling,
                false,
            );
            if system != "courtside" {
                // The gateway's row is among the argument's targets above.
                ratio(
                    out,
                    format!("slow@{conns} {system} RSS/conn vs node"),
                    ours("rss_per_conn_bytes"),
                    figure("slow", "node", conns, "rss_per_conn_bytes"),
                    1.0,
                    false,
                );
            }
            if conns == 10000.0 {
                ratio(
                    out,
                    format!("slow@{conns} {system} req/s vs node"),
                    ours("rps"),
                    figure("slow", "node", conns, "rps"),
                    1.5,
                    true,
                );
            }
        }
        ratio(
            out,
            format!("latency@20000 {system} p99 vs bare axum"),
            figure("latency", system, 20000.0, "p99_ms"),
            figure("latency", "bare-axum", 20000.0, "p99_ms"),
            1.1,
            false,
        );
    }
    // Instructions repeat where seconds do not: the real servers under
    // callgrind (`callgrind.sh`), exporting (b) and not (a).
    for (system, ceiling) in [
        ("courtside", 1.3),
        ("courtside-all-in-one", 1.3),
        ("courtside-untraced", 1.15),
        ("courtside-all-in-one-untraced", 1.15),
    ] {
        ratio(
            out,
            format!("instructions per /slow request, {system} vs bare axum"),
            find(points, "callgrind-slow", system, None).and_then(|p| p.get("instructions_per_request")),
            find(points, "callgrind-slow", "bare-axum", None).and_then(|p| p.get("instructions_per_request")),
            ceiling,
            false,
        );
    }
    // The Redis backend's p99 and RSS against Node are among the argument's
    // targets above; the in-process backend's are here.
    ratio(
        out,
        "fanout@15000 courtside-memory p99 vs node ws".into(),
        figure("fanout", "courtside-memory", 15000.0, "p99_ms"),
        figure("fanout", "node-ws", 15000.0, "p99_ms"),
        1.0,
        false,
    );
    for system in ["courtside", "courtside-memory"] {
        let name = if system == "courtside" { String::new() } else { format!("{system} ") };
        ratio(
            out,
            format!("fanout@15000 {name}RSS/conn vs half of node ws"),
            figure("fanout", system, 15000.0, "rss_per_conn_bytes"),
            figure("fanout", "node-ws", 15000.0, "rss_per_conn_bytes").map(|b| b / 2.0),
            1.0,
            false,
        );
        ratio(
            out,
            format!("fanout@15000 {name}server CPU/delivery vs 0.7× node ws"),
            figure("fanout", system, 15000.0, "server_cpu_us_per_delivery"),
            figure("fanout", "node-ws", 15000.0, "server_cpu_us_per_delivery").map(|us| us * 0.7),
            1.0,
            false,
        );
        ratio(
            out,
            format!("fanout-burst@15000 {name}round completion vs node ws"),
            figure("fanout-burst", system, 15000.0, "completion_p50_ms"),
            figure("fanout-burst", "node-ws", 15000.0, "completion_p50_ms"),
            1.0,
            false,
        );
    }
    if let Some(rate) = find(points, "ingest", "courtside", None).and_then(|p| p.get("events_per_second")) {
        out.push((
            "bulk ingest into one Redis ≥ 100000 events/s".into(),
            format!("{rate:.0} events/s"),
            if rate >= 100_000.0 {
                "met".into()
            } else {
                format!("missed by {:.0}%", (1.0 - rate / 100_000.0) * 100.0)
            },
        ));
    }
}

/// One plot of the report: a figure of a scenario against its x axis.
struct Chart {
    scenario: &'static str,
    figure: &'static str,
    title: &'static str,
    /// What was measured and how, under the plot and in the report.
    caption: &'static str,
    scale: f64,
    /// Open-loop latency spans 200 ms to timeouts, which only a log axis
    /// shows side by side.
    log_y: bool,
}

const CHARTS: &[Chart] = &[
    Chart {
        scenario: "slow",
        figure: "p99_ms",
        title: "p99 latency (ms)",
        caption: "GET /slow (200 ms of waiting, no CPU) with wrk holding each number of connections open \
                  (closed loop); 99th percentile, median of the runs.",
        scale: 1.0,
        log_y: false,
    },
    Chart {
        scenario: "slow",
        figure: "rps",
        title: "requests per second",
        caption: "Requests per second served on GET /slow at each number of open connections (wrk, closed \
                  loop); median of the runs.",
        scale: 1.0,
        log_y: false,
    },
    Chart {
        scenario: "slow",
        figure: "rss_per_conn_bytes",
        title: "server RSS per open connection (KB)",
        caption: "Resident memory of the server process during the GET /slow run, divided by the open \
                  connections; median of the runs.",
        scale: 1.0 / 1000.0,
        log_y: false,
    },
    Chart {
        scenario: "latency",
        figure: "p99_ms",
        title: "p99 latency at a fixed rate (ms, log)",
        caption: "oha sending at a fixed rate whatever the answers (open loop): a server that falls behind \
                  shows its queue as seconds; 99th percentile, log scale.",
        scale: 1.0,
        log_y: true,
    },
    Chart {
        scenario: "compute",
        figure: "rps",
        title: "requests per second",
        caption: "The CPU-bound benchmark (sum of square roots) at each concurrency (wrk, closed loop); \
                  completed requests per second, median of the runs.",
        scale: 1.0,
        log_y: false,
    },
    Chart {
        scenario: "compute",
        figure: "p99_ms",
        title: "p99 latency (ms)",
        caption: "The CPU-bound benchmark at each concurrency (wrk, closed loop); 99th percentile latency, \
                  median of the runs.",
        scale: 1.0,
        log_y: false,
    },
    Chart {
        scenario: "fanout",
        figure: "p99_ms",
        title: "publish-to-receive p99 (ms)",
        caption: "One event per match per second published to many WebSocket subscribers; time from the \
                  publish to each subscriber's receipt, 99th percentile.",
        scale: 1.0,
        log_y: false,
    },
    Chart {
        scenario: "fanout",
        figure: "rss_per_conn_bytes",
        title: "server RSS per connection (KB)",
        caption: "Resident memory of the server with every subscriber connected, divided by the \
                  subscribers; median of the runs.",
        scale: 1.0 / 1000.0,
        log_y: false,
    },
];

/// The caption of a plot file, for the report's text.
fn caption_of(file: &str) -> Option<&'static str> {
    CHARTS.iter().find(|c| plot_file(c) == file).map(|c| c.caption)
}

fn plot_file(chart: &Chart) -> String {
    format!("{}-{}.svg", chart.scenario, chart.figure.trim_end_matches("_ms").replace('_', "-"))
}

/// The plots: per scenario with an x axis, p99 (and req/s, RSS per
/// connection where measured) against x, one line per system.
fn plot_all(results: &Path, points: &[Point]) -> anyhow::Result<Vec<(String, String)>> {
    let mut plots = Vec::new();
    for chart in CHARTS {
        let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for point in points.iter().filter(|p| p.scenario == chart.scenario) {
            if let (Some(x), Some(y)) = (point.x, point.get(chart.figure)) {
                series.entry(point.system.as_str()).or_default().push((x, y * chart.scale));
            }
        }
        if series.values().all(|s| s.len() < 2) {
            continue;
        }
        for line in series.values_mut() {
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let file = plot_file(chart);
        plot(&results.join(&file), chart, &series)?;
        plots.push((chart.scenario.to_owned(), file));
    }
    Ok(plots)
}

/// The colour of a system, the same in every plot: a family per runtime
/// (courtside blue, Node.js green, FastAPI orange, the bare axum ceiling
/// grey), a shade per variant, and a fixed pick by name for anything else.
fn system_colour(system: &str) -> RGBColor {
    match system {
        "courtside" => RGBColor(31, 95, 191),
        "node" => RGBColor(46, 158, 68),
        "fastapi" => RGBColor(224, 123, 0),
        "bare-axum" => RGBColor(110, 110, 110),
        "node-blocking" => RGBColor(120, 196, 120),
        "node-ws" => RGBColor(27, 107, 46),
        "fastapi-blocking" => RGBColor(245, 179, 92),
        "fastapi-ws" => RGBColor(166, 90, 0),
        other => {
            const SHADES: [RGBColor; 4] = [
                RGBColor(106, 158, 232),
                RGBColor(20, 60, 130),
                RGBColor(70, 130, 210),
                RGBColor(140, 180, 240),
            ];
            const OTHERS: [RGBColor; 4] = [
                RGBColor(148, 103, 189),
                RGBColor(214, 39, 40),
                RGBColor(23, 190, 207),
                RGBColor(188, 189, 34),
            ];
            let pick = other.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
            if other.starts_with("courtside") {
                SHADES[pick % SHADES.len()]
            } else {
                OTHERS[pick % OTHERS.len()]
            }
        }
    }
}

/// Ticks at 1, 2 and 5 times each power of ten inside `lo..=hi`: 1k, 2k,
/// 5k, 10k, 20k for connection counts.
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    if !(lo > 0.0 && hi >= lo) {
        return ticks;
    }
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    for exponent in first..=last {
        for mantissa in [1.0, 2.0, 5.0] {
            let value = mantissa * 10f64.powi(exponent);
            if value >= lo * 0.999 && value <= hi * 1.001 {
                ticks.push(value);
            }
        }
    }
    ticks
}

/// A tick label without needless decimals: 1k, 20k, 500, 2.5, 0.05.
fn tick_label(value: f64) -> String {
    if value >= 1000.0 && (value / 1000.0).fract() == 0.0 {
        format!("{}k", value / 1000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn plot(path: &Path, chart: &Chart, series: &BTreeMap<&str, Vec<(f64, f64)>>) -> anyhow::Result<()> {
    let ys = series.values().flatten().map(|p| p.1);
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if chart.log_y {
        let low = (y_min * 0.8).max(1e-3);
        let high = (y_max * 1.25).max(low * 2.0);
        plot_on(path, chart, series, (low..high).log_scale(), (low, high), Some(ticks_125(low, high)))
    } else {
        let high = (y_max * 1.1).max(1e-9);
        plot_on(path, chart, series, 0.0..high, (0.0, high), None)
    }
}

/// Draws one plot. Log axes get their ticks from [`ticks_125`], drawn here:
/// plotters' own log ticks include every integer multiple (a dense mesh,
/// and labels that run into each other).
fn plot_on<Y>(
    path: &Path,
    chart_spec: &Chart,
    series: &BTreeMap<&str, Vec<(f64, f64)>>,
    y_range: Y,
    (y_lo, y_hi): (f64, f64),
    y_log_ticks: Option<Vec<f64>>,
) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");
    let xs = series.values().flatten().map(|p| p.0);
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    // Connections and rates ramp by large factors: a log axis spaces them
    // evenly. A little room either side keeps the end points off the frame.
    let (x_lo, x_hi) = ((x_min * 0.85).max(1.0), (x_max * 1.15).max(2.0));
    let root = SVGBackend::new(path, (720, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(420);
    let grid = RGBColor(228, 228, 228);
    let axis_text = ("sans-serif", 13).into_font().color(&RGBColor(60, 60, 60));
    let mut chart = ChartBuilder::on(&upper)
        .caption(format!("{}: {}", chart_spec.scenario, chart_spec.title), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), y_range)
        .map_err(err)?;
    let label = |v: &f64| tick_label(*v);
    // Axes whose ticks are drawn below still get one label from plotters
    // whatever the count asked for: an empty one.
    let blank = |_: &f64| String::new();
    let mut mesh = chart.configure_mesh();
    // Major grid lines only, light: the data is what should stand out.
    mesh.bold_line_style(grid)
        .light_line_style(TRANSPARENT)
        .max_light_lines(0)
        .axis_style(RGBColor(120, 120, 120))
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&blank)
        .y_labels(6)
        .y_label_formatter(&label)
        .y_label_style(axis_text.clone())
        .x_desc(x_label(chart_spec.scenario))
        .y_desc(chart_spec.title)
        .axis_desc_style(axis_text.clone());
    if y_log_ticks.is_some() {
        mesh.disable_y_mesh().y_labels(0).y_label_formatter(&blank);
    }
    mesh.draw().map_err(err)?;

    let centred = axis_text.pos(Pos::new(HPos::Center, VPos::Top));
    for tick in ticks_125(x_lo, x_hi) {
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(tick, y_lo), (tick, y_hi)], grid)))
            .map_err(err)?;
        let (x, y) = chart.backend_coord(&(tick, y_lo));
        root.draw_text(&tick_label(tick), &centred, (x, y + 6)).map_err(err)?;
    }
    if let Some(ticks) = &y_log_ticks {
        let right = axis_text.pos(Pos::new(HPos::Right, VPos::Center));
        for &tick in ticks {
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(x_lo, tick), (x_hi, tick)], grid)))
                .map_err(err)?;
            let (x, y) = chart.backend_coord(&(x_lo, tick));
            root.draw_text(&tick_label(tick), &right, (x - 6, y)).map_err(err)?;
        }
    }
    for (system, line) in series {
        let color = system_colour(system).to_rgba();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(*system)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    crate::caption::draw(&lower, chart_spec.caption)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fold_into_medians_and_targets_compare_peers() {
        let line = |system: &str, x: f64, run: u64, rps: f64, p99: f64| serde_json::json!({"scenario": "slow", "system": system, "x": x, "run": run, "rps": rps, "p99_ms": p99, "errors": 0});
        let lines = vec![
            line("courtside", 5000.0, 1, 20_000.0, 300.0),
            line("courtside", 5000.0, 2, 22_000.0, 250.0),
            line("courtside", 5000.0, 3, 90_000.0, 240.0),
            line("node", 5000.0, 1, 10_000.0, 350.0),
        ];
        let points = fold(&lines);
        let ours = find(&points, "slow", "courtside", Some(5000.0)).expect("folded");
        assert_eq!((ours.runs, ours.get("rps"), ours.get("p99_ms")), (3, Some(22_000.0), Some(250.0)));
        let verdicts = targets(&points);
        let rps = verdicts.iter().find(|t| t.0.starts_with("slow@5000 req/s vs node")).expect("rps target");
        assert_eq!((rps.1.as_str(), rps.2.as_str()), ("2.20× (22000 vs 10000)", "met"));
        let p99 = verdicts.iter().find(|t| t.0.starts_with("slow@5000 p99 vs node")).expect("p99 target");
        assert_eq!(p99.2, "missed by 19%", "0.71× against a bound of 0.6×");
    }

    #[test]
    fn open_loop_latency_is_tabled_and_plotted_on_a_log_axis() {
        let line = |system: &str, rate: f64, p99: f64| serde_json::json!({"scenario": "latency", "system": system, "x": rate, "run": 1, "p99_ms": p99, "unsent": 0, "errors": 0});
        let lines = vec![
            line("courtside", 1000.0, 203.0),
            line("courtside", 10000.0, 260.0),
            line("fastapi", 1000.0, 240.0),
            line("fastapi", 10000.0, 19_000.0),
        ];
        let points = fold(&lines);
        let dir = std::env::temp_dir().join(format!("courtside-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let plots = plot_all(&dir, &points).expect("plotted");
        let file = plots.iter().find(|(scenario, _)| scenario == "latency").map(|(_, f)| f.clone());
        let svg = std::fs::read_to_string(dir.join(file.expect("a latency plot"))).expect("svg written");
        let markdown = render(&dir, &points, &plots, 0);
        std::fs::remove_dir_all(&dir).ok();
        assert!(svg.contains("log"), "the title names the log axis");
        for tick in ["1k", "2k", "5k", "10k"] {
            assert!(svg.contains(&format!(">\n{tick}\n<")), "x tick {tick} in {svg}");
        }
        assert!(!svg.contains("10000.0") && !svg.contains("9000"), "no decimals, no minor ticks");
        assert!(svg.contains("open loop"), "the caption is drawn under the plot");
        assert!(markdown.contains("*oha sending at a fixed rate"), "the caption is in the report");
        assert!(markdown.contains("| system | offered req/s | achieved req/s |"), "{markdown}");
        assert!(markdown.contains("| fastapi | 10000 |"), "{markdown}");
    }

    #[test]
    fn axes_tick_at_one_two_five_with_plain_labels_and_colours_follow_the_system() {
        let ticks = ticks_125(900.0, 25_000.0);
        assert_eq!(ticks, [1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0]);
        let labels: Vec<String> = ticks.into_iter().map(tick_label).collect();
        assert_eq!(labels, ["1k", "2k", "5k", "10k", "20k"]);
        assert_eq!(
            (tick_label(200.0), tick_label(2.5), tick_label(0.05)),
            ("200".into(), "2.5".into(), "0.05".into())
        );
        assert_ne!(system_colour("courtside"), system_colour("node"));
        assert_eq!(system_colour("courtside-2-replicas"), system_colour("courtside-2-replicas"));
        assert_eq!(crate::caption::wrap("a bb ccc", 4), ["a bb", "ccc"]);
    }
}

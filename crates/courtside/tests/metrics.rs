//! `/metrics` on both tiers after real traffic (HTTP, gRPC, the CPU pool,
//! ingest into a real Redis, a WebSocket subscriber, the stream consumer):
//! every series the observability issue names and every series the Grafana
//! dashboard queries is exported, with sane values.
//!
//! In a binary of its own: metrics live in one registry per process, and
//! other tests' traffic would blur the counts.

mod helpers;

use std::{collections::BTreeSet, time::Duration};

use helpers::live::{WsClient, kickoff, pass, publish, publish_ok};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tiers_export_every_named_series_after_traffic() {
    let Some(shared) = helpers::test_redis().await else { return };
    let tiers = helpers::spawn_tiers_with(shared, |_| {}, |_| {}).await;
    let worker_metrics = tiers.worker_metrics.expect("the test worker serves metrics");
    let addr = tiers.gateway.addr;
    let client = tiers.client.clone();

    // Compute through the worker's pool.
    let compute =
        client.get(format!("http://{addr}/v1/bench/compute?n=10000")).send().await.expect("compute");
    assert_eq!(compute.status(), 200);

    // Ingest: applied, a duplicate, a gap, and a body that is no event.
    publish_ok(&client, addr, &kickoff("metered")).await;
    let mut ws = WsClient::connect(addr).await;
    assert_eq!(ws.subscribe("metered", None).await["type"], "subscribed");
    for seq in 2..=4 {
        publish_ok(&client, addr, &pass("metered", seq)).await;
    }
    publish_ok(&client, addr, &pass("metered", 4)).await;
    assert_eq!(publish(&client, addr, &pass("metered", 9)).await.status(), 409);
    assert_eq!(publish(&client, addr, &json!({"match": "metered"})).await.status(), 400);
    for seq in 2..=4 {
        assert_eq!(ws.recv().await["seq"], seq);
    }

    // The probes sample every second and the consumer every second; wait
    // until the slowest of them has reported.
    let gateway_url = format!("http://{addr}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (text, ready) = loop {
        let text = client.get(&gateway_url).send().await.expect("scrape").text().await.expect("text");
        let ready = sample(&text, "tokio_workers", &[("runtime", "worker")]).is_some()
            && sample(&text, "courtside_consumer_entries_total", &[("outcome", "applied")]) >= Some(4.0)
            && sample(&text, "courtside_consumer_lag_entries", &[]) == Some(0.0);
        if ready || tokio::time::Instant::now() > deadline {
            break (text, ready);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ready, "probes and consumer never reported:\n{text}");

    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let value = total(&text, name, labels);
        assert!(value.is_some_and(|v| v >= min), "{name}{labels:?} = {value:?}, expected >= {min}");
    };
    // HTTP, by route template and status.
    let compute_route = [
        ("http_request_method", "GET"),
        ("http_route", "/v1/bench/compute"),
        ("http_response_status_code", "200"),
    ];
    at_least("http_server_request_duration_seconds_count", &compute_route, 1.0);
    at_least(
        "http_server_request_duration_seconds_bucket",
        &[("http_route", "/v1/events"), ("le", "+Inf")],
        7.0,
    );
    let conflict = [("http_route", "/v1/events"), ("http_response_status_code", "409")];
    assert_eq!(sample(&text, "http_server_request_duration_seconds_count", &conflict), Some(1.0));
    assert_eq!(
        sample(&text, "http_server_active_requests", &[("http_route", "/v1/bench/compute")]),
        Some(0.0)
    );
    // gRPC from both ends, the pool behind it.
    let compute_rpc =
        [("rpc_method", "courtside.v1.AnalyticsService/Compute"), ("rpc_grpc_status_code", "0")];
    at_least("rpc_client_call_duration_seconds_count", &compute_rpc, 1.0);
    at_least("rpc_server_call_duration_seconds_count", &compute_rpc, 1.0);
    at_least("courtside_pool_task_duration_seconds_count", &[("task", "compute")], 1.0);
    at_least("courtside_pool_queue_wait_seconds_count", &[("task", "compute")], 1.0);
    assert_eq!(sample(&text, "courtside_pool_threads", &[]), Some(2.0));
    at_least("courtside_pool_busy_seconds_total", &[], 0.0);
    assert_eq!(sample(&text, "courtside_pool_queue_depth", &[]), Some(0.0));
    for reason in ["jobs", "backlog"] {
        assert_eq!(sample(&text, "courtside_pool_rejections_total", &[("reason", reason)]), Some(0.0));
    }
    assert_eq!(sample(&text, "courtside_pool_backlog_seconds", &[]), Some(0.0));
    assert_eq!(sample(&text, "courtside_pool_deadline_drops_total", &[]), Some(0.0));
    at_least("courtside_consumer_pending_entries", &[], 0.0);
    // Ingest outcomes and the Redis round trips behind them.
    at_least("courtside_ingest_events_total", &[("outcome", "applied")], 4.0);
    at_least("courtside_ingest_events_total", &[("outcome", "duplicate")], 1.0);
    at_least("courtside_ingest_events_total", &[("outcome", "rejected"), ("reason", "sequence_gap")], 1.0);
    at_least("courtside_ingest_events_total", &[("outcome", "rejected"), ("reason", "invalid_event")], 1.0);
    at_least(
        "db_client_operation_duration_seconds_count",
        &[("db_system_name", "redis"), ("db_operation_name", "EVALSHA")],
        4.0,
    );
    // The live feed.
    assert_eq!(sample(&text, "courtside_live_connections", &[("transport", "websocket")]), Some(1.0));
    assert_eq!(sample(&text, "courtside_live_connections", &[("transport", "sse")]), Some(0.0));
    at_least("courtside_live_messages_delivered_total", &[("transport", "websocket")], 4.0);
    at_least("courtside_live_delivery_lag_seconds_count", &[("transport", "websocket")], 3.0);
    at_least("courtside_live_updates_received_total", &[], 4.0);
    assert_eq!(
        sample(&text, "courtside_live_slow_consumer_disconnects_total", &[("transport", "websocket")]),
        Some(0.0)
    );
    // Runtime: lag histograms of both runtimes, tokio's gauges, runtime fit.
    at_least("courtside_runtime_event_loop_lag_seconds_count", &[("runtime", "gateway")], 5.0);
    at_least("courtside_runtime_event_loop_lag_seconds_count", &[("runtime", "worker")], 5.0);
    at_least("tokio_alive_tasks", &[("runtime", "gateway")], 1.0);
    let cpu_share = sample(&text, "courtside_route_cpu_share", &[("http_route", "/v1/bench/compute")])
        .expect("runtime fit exported");
    assert!((0.0..=1.0).contains(&cpu_share), "{cpu_share}");
    // Histograms, not summaries: explicit buckets.
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"), "{text}");

    // The worker's own listener serves the same registry.
    let worker_text = client
        .get(format!("http://{worker_metrics}/metrics"))
        .send()
        .await
        .expect("worker scrape")
        .text()
        .await
        .expect("text");
    assert!(sample(&worker_text, "rpc_server_call_duration_seconds_count", &compute_rpc).is_some());

    // Every series the Grafana dashboard queries exists.
    let exported = names(&text);
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards/courtside.json"
    ))
    .expect("dashboard file");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("dashboard is json");
    let queried = dashboard_metrics(&dashboard);
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "the dashboard queries series nobody exports: {missing:?}");
}

/// The value of the one series named `name` whose labels include `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values = matching(text, name, labels);
    assert!(values.len() <= 1, "{name}{labels:?} matches several series: {values:?}");
    values.first().copied()
}

/// The sum over every series named `name` whose labels include `labels`.
fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values = matching(text, name, labels);
    (!values.is_empty()).then(|| values.iter().sum())
}

fn matching(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if !matches {
                return None;
            }
            value.parse().ok()
        })
        .collect()
}

/// Metric names in the exposition, histograms also under their base name.
fn names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap_or_default().to_owned();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                names.insert(base.to_owned());
            }
        }
        names.insert(name);
    }
    names
}

/// The metric names in every PromQL `expr` of a dashboard: identifiers left
/// once label matchers (`{...}`) and grouping clauses (`by (...)`) are cut
/// out, minus PromQL's own words.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    const PROMQL: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "le",
        "count",
        "topk",
        "clamp_min",
        "clamp_max",
        "abs",
        "vector",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
    ];
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    let mut metrics = BTreeSet::new();
    for expr in exprs {
        let mut cleaned = String::new();
        let mut depth = 0usize;
        for c in expr.chars() {
            match c {
                '{' | '[' => depth += 1,
                '}' | ']' => depth = depth.saturating_sub(1),
                _ if depth == 0 => cleaned.push(c),
                _ => {}
            }
        }
        for grouping in ["by", "without"] {
            while let Some(start) = cleaned.find(&format!("{grouping} (")) {
                let end = cleaned[start..].find(')').map_or(cleaned.len(), |i| start + i + 1);
                cleaned.replace_range(start..end, "");
            }
        }
        for word in cleaned.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            let is_name = word.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
            if is_name && !PROMQL.contains(&word) {
                metrics.insert(word.to_owned());
            }
        }
    }
    metrics
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

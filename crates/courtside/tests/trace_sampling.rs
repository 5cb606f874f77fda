//! Sampling decided before a span exists (`telemetry::sampling`), as the
//! deployments run it: parent-based ratio sampling, here at 50 %.
//! - Every response names its trace (`x-trace-id`), sampled or not.
//! - A sampled request is one whole trace, gateway to pool; an unsampled
//!   one leaves no span at all, in either tier: the worker got its
//!   `traceparent` with the sampled flag off and kept nothing either.
//! - An incoming sampled flag is honoured both ways.
//!
//! This file holds a single test because it installs the process-wide
//! tracing subscriber and sampler.

mod helpers;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest::StatusCode;
use telemetry::sampling::{PresetIds, Sampler};
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _};

const REQUESTS: usize = 40;
const COMPUTE: &str = "GET /v1/bench/compute";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sampled_requests_leave_spans_and_every_response_names_its_trace() {
    let exporter = InMemorySpanExporter::default();
    let sampler = Sampler::from_env_values(Some("parentbased_traceidratio"), Some("0.5"));
    telemetry::sampling::install(sampler);
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler.to_sdk())
        .with_id_generator(PresetIds::default())
        .with_simple_exporter(exporter.clone())
        .build();
    telemetry::install_propagator();
    let opened = RequestSpans::default();
    // Shaped as `telemetry::init` shapes it: the exporter behind its filter.
    let subscriber = tracing_subscriber::registry()
        .with(telemetry::otel_layer(&provider, "courtside-test").with_filter(telemetry::export_filter()))
        .with(opened.clone().with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span())));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this process");

    let app = helpers::spawn_tiers().await;
    let mut traces = Vec::new();
    for _ in 0..REQUESTS {
        let response = app.get("/v1/bench/compute?n=1000").await;
        assert_eq!(response.status(), StatusCode::OK);
        let trace = response.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        traces.push(trace.expect("every response names its trace, sampled or not"));
    }
    let asked: HashSet<&str> = traces.iter().map(String::as_str).collect();
    assert_eq!(asked.len(), REQUESTS, "one trace per request");

    // A caller's sampled flag decides: 01 is kept, 00 is not.
    let kept_parent = "4bf92f3577b34da6a3ce929d0e0e4736";
    let dropped_parent = "5bf92f3577b34da6a3ce929d0e0e4737";
    for (trace, flags) in [(kept_parent, "01"), (dropped_parent, "00")] {
        let response = app
            .client
            .get(app.url("/v1/bench/compute?n=1000"))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-{flags}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("x-trace-id").and_then(|v| v.to_str().ok()), Some(trace));
    }

    // The sampled requests' traces are whole: wait until each has its four
    // spans (server spans end a moment after the response).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let roots: HashSet<String> = spans
            .iter()
            .filter(|s| s.name == COMPUTE && s.span_kind == SpanKind::Server)
            .map(|s| s.span_context.trace_id().to_string())
            .collect();
        if roots.iter().all(|trace| complete(&spans, trace)) && roots.contains(kept_parent) {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "incomplete traces: {:#?}", names_of(&spans));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let exported: HashSet<String> = spans.iter().map(|s| s.span_context.trace_id().to_string()).collect();
    let sampled: Vec<&str> = asked.iter().copied().filter(|trace| exported.contains(*trace)).collect();
    assert!((5..=35).contains(&sampled.len()), "{} of {REQUESTS} requests sampled at 50 %", sampled.len());
    for trace in &sampled {
        assert!(complete(&spans, trace), "trace {trace} is not whole");
    }
    assert!(exported.contains(kept_parent), "a sampled caller's trace was dropped");
    // The point of deciding first: an unsampled request opened no span.
    assert_eq!(
        opened.count(),
        sampled.len() + 1,
        "request spans opened for {} sampled requests",
        sampled.len() + 1
    );
    assert!(!exported.contains(dropped_parent), "an unsampled caller's trace was kept");
    // No span of a request's work in a trace of its own (a root the
    // worker or the client would have opened without the caller's context).
    let work = [COMPUTE, "courtside.v1.AnalyticsService/Compute", "pool compute"];
    let strays: Vec<SpanData> = spans
        .iter()
        .filter(|s| {
            let trace = s.span_context.trace_id().to_string();
            work.contains(&s.name.as_ref()) && !asked.contains(trace.as_str()) && trace != kept_parent
        })
        .cloned()
        .collect();
    assert!(strays.is_empty(), "request work in no request's trace: {:#?}", names_of(&strays));
}

/// Counts the request spans opened (`http.server`), kept or not.
#[derive(Clone, Default)]
struct RequestSpans(Arc<AtomicUsize>);

impl RequestSpans {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RequestSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "http.server" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Whether `trace` has its four spans: the gateway's server and client
/// spans, the worker's server span (its parent came over gRPC) and the pool
/// task.
fn complete(spans: &[SpanData], trace: &str) -> bool {
    let of = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .any(|s| s.span_context.trace_id().to_string() == trace && s.name == name && s.span_kind == kind)
    };
    of(COMPUTE, SpanKind::Server)
        && of("courtside.v1.AnalyticsService/Compute", SpanKind::Client)
        && of("courtside.v1.AnalyticsService/Compute", SpanKind::Server)
        && of("pool compute", SpanKind::Internal)
}

fn names_of(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| format!("{:?} {} {}", s.span_kind, s.name, s.span_context.trace_id())).collect()
}

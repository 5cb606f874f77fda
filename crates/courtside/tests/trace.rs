//! One request, one trace: `GET /v1/bench/compute` must produce the
//! gateway's HTTP server span, its gRPC client span, the worker's gRPC server
//! span and the pool task span, all in one trace and each the parent of the
//! next, with the context crossing a real gRPC hop on loopback.
//!
//! This file holds a single test because it installs the process-wide
//! tracing subscriber.

mod helpers;

use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest::StatusCode;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compute_request_is_one_trace_from_http_to_the_pool() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    telemetry::install_propagator();
    let subscriber = tracing_subscriber::registry().with(telemetry::otel_layer(&provider, "courtside-test"));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this process");

    let app = helpers::spawn_tiers().await;
    let response = app.get("/v1/bench/compute?n=1000").await;
    assert_eq!(response.status(), StatusCode::OK);
    let trace_header = response.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).map(str::to_owned);

    // Server spans end when their response body is done, which can be a
    // moment after the client has read it: poll until all four are in.
    let names = ["GET /v1/bench/compute", "courtside.v1.AnalyticsService/Compute", "pool compute"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let spans = loop {
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let compute_spans = spans.iter().filter(|s| names.contains(&s.name.as_ref())).count();
        if compute_spans >= 4 {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {compute_spans} spans: {:#?}",
            names_of(&spans)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let http = find(&spans, "GET /v1/bench/compute", SpanKind::Server);
    let client = find(&spans, "courtside.v1.AnalyticsService/Compute", SpanKind::Client);
    let server = find(&spans, "courtside.v1.AnalyticsService/Compute", SpanKind::Server);
    let pool = find(&spans, "pool compute", SpanKind::Internal);

    let trace_id = http.span_context.trace_id();
    assert_eq!(trace_header, Some(trace_id.to_string()), "the response names the request's trace");
    for span in [client, server, pool] {
        assert_eq!(span.span_context.trace_id(), trace_id, "{} is in another trace", span.name);
    }
    assert_eq!(http.parent_span_id, SpanId::INVALID, "the http span is the root");
    assert_eq!(client.parent_span_id, http.span_context.span_id());
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert!(server.parent_span_is_remote, "the worker's parent arrived over gRPC");
    assert_eq!(pool.parent_span_id, server.span_context.span_id());

    let route =
        http.attributes.iter().find(|kv| kv.key.as_str() == "http.route").map(|kv| kv.value.to_string());
    assert_eq!(route.as_deref(), Some("/v1/bench/compute"));
}

fn find<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && s.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span named {name:?} among {:#?}", names_of(spans)))
}

fn names_of(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| format!("{:?} {}", s.span_kind, s.name)).collect()
}

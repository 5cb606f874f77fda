//! One ingested event, followed across the event stream: the worker's
//! consumer span links to the trace of the `POST /v1/events` request that
//! stored the event, through the `traceparent` kept in the stream entry.
//! The ingest trace shows its Redis round trips as client spans, and each
//! update fanned out to subscribers gets one span with the fan-out count.
//!
//! Alone in its binary because it installs the process-wide subscriber.

mod helpers;

use std::time::Duration;

use helpers::live::{WsClient, kickoff, pass, publish_ok};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_span_links_to_the_ingest_request() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    telemetry::install_propagator();
    let subscriber = tracing_subscriber::registry().with(telemetry::otel_layer(&provider, "courtside-test"));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this process");

    // Gateway and worker share one Redis store, so the worker consumes what
    // the gateway ingests.
    let Some(shared) = helpers::test_redis().await else { return };
    let tiers = helpers::spawn_tiers_with(shared, |_| {}, |_| {}).await;
    let addr = tiers.gateway.addr;
    let client = tiers.client.clone();
    publish_ok(&client, addr, &kickoff("traced")).await;
    let mut subscriber = WsClient::connect(addr).await;
    assert_eq!(subscriber.subscribe("traced", None).await["type"], "subscribed");
    publish_ok(&client, addr, &pass("traced", 2)).await;
    assert_eq!(subscriber.recv().await["seq"], 2);

    // The two events may be consumed in one batch or in two: gather the
    // links of every consumer span until both ingest traces are covered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        let ingests: Vec<&SpanData> =
            spans.iter().filter(|s| s.name == "POST /v1/events" && s.span_kind == SpanKind::Server).collect();
        let consumers: Vec<&SpanData> = spans.iter().filter(|s| s.name == "consume events").collect();
        let linked: Vec<_> =
            consumers.iter().flat_map(|s| s.links.iter().map(|link| link.span_context.trace_id())).collect();
        let covered =
            ingests.len() == 2 && ingests.iter().all(|i| linked.contains(&i.span_context.trace_id()));
        // The pass's fan-out: the kickoff's pub/sub message may reach the
        // gateway after the subscriber joined, and fan out too.
        let fanout =
            spans.iter().find(|s| s.name == "live fanout" && attribute(s, "seq").as_deref() == Some("2"));
        if covered && let Some(fanout) = fanout {
            assert!(consumers.iter().all(|s| s.span_kind == SpanKind::Consumer), "{:?}", names(&spans));
            // The pass's ingest: its append went to Redis as a child span.
            let ingest = ingests[1];
            let redis: Vec<&SpanData> = spans
                .iter()
                .filter(|s| {
                    s.span_kind == SpanKind::Client
                        && s.span_context.trace_id() == ingest.span_context.trace_id()
                        && attribute(s, "db.system.name").as_deref() == Some("redis")
                })
                .collect();
            assert!(
                redis.iter().any(|s| s.name == "EVALSHA"),
                "no redis append span in the ingest trace: {:?}",
                names(&spans)
            );
            assert_eq!(attribute(fanout, "fan_out").as_deref(), Some("1"), "one local subscriber");
            assert_eq!(attribute(fanout, "seq").as_deref(), Some("2"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest traces not linked; spans: {:?}",
            names(&spans)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| format!("{:?} {}", s.span_kind, s.name)).collect()
}

//! A stand-in OpenTelemetry collector for the tracing-overhead benchmark:
//! accepts OTLP/gRPC trace exports, counts the spans, and drops them.
//!
//! Measuring what exporting costs the gateway needs something at the other
//! end that answers like a collector and costs nothing itself; a real
//! collector (or Jaeger) would compete for the same cores.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Debug, Default, Clone)]
struct Sink {
    exports: Arc<AtomicU64>,
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves until Ctrl-C or SIGTERM, then prints what it received as one
/// JSON line.
pub(crate) async fn run(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let sink = Sink::default();
    let counts = sink.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    eprintln!("otlp sink listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_shutdown(addr, stop)
        .await
        .context("otlp sink failed")?;
    println!(
        "{}",
        serde_json::json!({
            "exports": counts.exports.load(Ordering::Relaxed),
            "spans": counts.spans.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

//! Logging and tracing shared by both tiers.
//!
//! # Layout
//! - [`init`] installs the process-wide subscriber: an `EnvFilter` read from
//!   `RUST_LOG`, human or JSON log lines, and an OpenTelemetry layer that
//!   exports spans by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`propagation`] carries W3C trace context across the gRPC hop, so a
//!   request to the gateway and the work it causes in the analytics worker
//!   share one trace.
//!
//! The standard OpenTelemetry variables apply as the SDK reads them:
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.

pub mod propagation;

use std::{fmt, str::FromStr, time::Duration};

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, Tracer},
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, registry::LookupSpan, util::SubscriberInitExt as _,
};

/// The environment variable that switches OTLP export on.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Multi-line, coloured output for a developer's terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}, expected \"pretty\" or \"json\"")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pretty => "pretty",
            Self::Json => "json",
        })
    }
}

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes
/// spans that are still buffered. Dropping the guard flushes too.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter. Waits at most a few seconds so a dead
    /// collector cannot hold up process exit.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("telemetry: exporter shutdown failed: {err}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Installs the global subscriber for a process.
///
/// `service_name` becomes the OpenTelemetry `service.name` unless
/// `OTEL_SERVICE_NAME` overrides it. Without `OTEL_EXPORTER_OTLP_ENDPOINT`
/// no exporter is built and spans only feed the logs.
pub fn init(service_name: &'static str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    install_propagator();

    let provider =
        if std::env::var_os(ENV_OTLP_ENDPOINT).is_some() { Some(otlp_provider(service_name)?) } else { None };
    let otel = provider.as_ref().map(|p| otel_layer(p, service_name));

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("failed to install the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// Sets the W3C `traceparent`/`tracestate` propagator for this process.
/// Without it nothing is injected into outgoing requests.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// A `tracing` layer that records spans into `provider`. Public so tests can
/// build a subscriber around an in-memory exporter.
pub fn otel_layer<S>(
    provider: &SdkTracerProvider,
    service_name: &'static str,
) -> OpenTelemetryLayer<S, Tracer>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name))
}

fn otlp_provider(service_name: &'static str) -> anyhow::Result<SdkTracerProvider> {
    // The exporter reads the endpoint, headers and timeout from the standard
    // OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("failed to build the OTLP span exporter")?;
    let resource = Resource::builder().with_service_name(service_name).build();
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK's
    // default configuration; the batch processor exports on its own thread.
    Ok(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_case_insensitively_and_rejects_unknown_values() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        let err = "xml".parse::<LogFormat>().expect_err("unknown format");
        assert!(err.contains("\"xml\""), "{err}");
    }
}

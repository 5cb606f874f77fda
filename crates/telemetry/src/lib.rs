//! Logging and tracing shared by both tiers.
//!
//! # Layout
//! - [`init`] installs the process-wide subscriber: an `EnvFilter` read from
//!   `RUST_LOG`, human or JSON log lines, and an OpenTelemetry layer that
//!   exports spans by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`propagation`] carries W3C trace context across the gRPC hop, so a
//!   request to the gateway and the work it causes in the analytics worker
//!   share one trace.
//! - [`sampling`] decides whether a request is traced before its span
//!   exists, so an unsampled request costs no span.
//! - [`metrics`] installs the Prometheus recorder both tiers' `/metrics`
//!   render, and the event-loop lag probe.
//!
//! The standard OpenTelemetry variables apply as the SDK reads them:
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.

pub mod metrics;
pub mod propagation;
pub mod sampling;

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
    EnvFilter, Layer as _,
    filter::{LevelFilter, filter_fn},
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// The environment variable that switches OTLP export on.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The target of the span each served request opens (`http.server` on the
/// gateway). Those spans are at DEBUG: they are always exported when export
/// is on, but the logs see them only when asked (`RUST_LOG=info,request=debug`
/// adds the span to every line of a request and a line per request). At the
/// default `info` a request then costs no span at all unless traces are
/// exported: creating one and formatting its fields for logs that never
/// print them was a fifth of the gateway's CPU per request.
pub const REQUEST_SPAN_TARGET: &str = "request";

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
    // Compose files pass the variable through as empty when export is off.
    let export = std::env::var_os(ENV_OTLP_ENDPOINT).is_some_and(|endpoint| !endpoint.is_empty());
    let provider = if export { Some(otlp_provider(service_name)?) } else { None };
    install(service_name, format, provider)
}

/// [`init`] with `exporter` in place of OTLP and `sampler` in place of the
/// environment's: for the instruction guard, which measures a request's
/// cost with export on without a collector or a network (spans go to the
/// exporter as they end, on the calling thread, so the count repeats).
pub fn init_with_exporter(
    service_name: &'static str,
    format: LogFormat,
    sampler: sampling::Sampler,
    exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
) -> anyhow::Result<TelemetryGuard> {
    sampling::install(sampler);
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service_name))
        .with_sampler(sampler.to_sdk())
        .with_id_generator(sampling::PresetIds::default())
        .with_simple_exporter(exporter)
        .build();
    install(service_name, format, Some(provider))
}

fn install(
    service_name: &'static str,
    format: LogFormat,
    provider: Option<SdkTracerProvider>,
) -> anyhow::Result<TelemetryGuard> {
    install_propagator();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let dispatch = DispatchHandle::default();
    let fmt = match format {
        // Colours only on a terminal: in a file or `docker logs` escape
        // codes are noise. Every request span's fields are formatted when
        // the span opens, whether or not a line ever prints them, so they
        // are formatted plainly and the exporter's own `otel.*` fields are
        // left out: together that was a fifth of a request's instructions.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .fmt_fields(plain_fields())
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr, dispatch.clone()).boxed(),
    };
    let installed = tracing::Dispatch::new(subscriber(fmt, filter, provider.as_ref(), service_name));
    dispatch.set(&installed);
    installed.try_init().context("failed to install the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// Runs a service's body with telemetry installed, the way each binary's
/// `main` does: installs it (see [`init`]), awaits `service`, flushes the
/// exporter, and says how the process exits: success, or the error chain
/// on stderr and failure.
pub async fn run_service(
    service_name: &'static str,
    format: LogFormat,
    service: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let telemetry = match init(service_name, format) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = service.await;
    telemetry.shutdown();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `name=value` for each field but the OpenTelemetry layer's `otel.*`
/// ones, space-separated; an event's message as it is.
fn plain_fields() -> PlainFields {
    PlainFields
}

struct PlainFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = PlainVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Starts a field, returning whether to write it. Plain `write_str`
    /// calls, not `write!`: this runs for every field of every request span.
    fn start(&mut self, name: &str) -> bool {
        if self.result.is_err() || name.starts_with("otel.") {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_str(" ");
        }
        self.first = false;
        if name != "message" {
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_str("="));
        }
        self.result.is_ok()
    }
}

impl tracing::field::Visit for PlainVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.start(field.name()) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// Log lines filtered by `filter` (`RUST_LOG`), and spans for the exporter.
/// Traces keep every INFO span and every request span whatever the log
/// level: `RUST_LOG=warn` quiets the logs, it must not empty the traces.
fn subscriber(
    logs: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
    filter: EnvFilter,
    provider: Option<&SdkTracerProvider>,
    service_name: &'static str,
) -> Box<dyn Subscriber + Send + Sync> {
    let otel = provider.map(|p| otel_layer(p, service_name).with_filter(export_filter()));
    Box::new(tracing_subscriber::registry().with(logs.with_filter(filter)).with(otel))
}

/// The exporter's filter: what [`init`] puts in front of the OpenTelemetry
/// layer, for tests that build the same subscriber around their own
/// exporter.
pub fn export_filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    // The hint matters: without one the process's maximum level becomes
    // TRACE, and every `log` record of every dependency (tungstenite logs
    // each frame at trace) goes through the subscriber to be refused.
    filter_fn(exported as fn(&tracing::Metadata<'_>) -> bool).with_max_level_hint(LevelFilter::DEBUG)
}

/// What the exporter records: INFO and above, and the request spans (not
/// the request target's events: a span event per request is noise).
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() <= LevelFilter::INFO || (metadata.is_span() && metadata.target() == REQUEST_SPAN_TARGET)
}

/// One JSON object per log line, with the event's fields flattened in, the
/// current span's fields, and the trace id (asked of `dispatch`).
fn json_layer<S, W>(writer: W, dispatch: DispatchHandle) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .map_event_format(|format| WithTraceId { format, dispatch })
        .with_writer(writer)
}

/// The process's dispatcher, for [`WithTraceId`] to ask the OpenTelemetry
/// layer for a span's trace: a formatter has no handle on it, asking the
/// global default from inside the subscriber gets nothing, and a layer
/// behind a per-layer filter is never told which dispatcher it is in. So
/// whoever builds the dispatcher hands it over with [`DispatchHandle::set`].
#[derive(Clone, Default)]
struct DispatchHandle(std::sync::Arc<std::sync::OnceLock<tracing::dispatcher::WeakDispatch>>);

impl DispatchHandle {
    fn set(&self, dispatch: &tracing::Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }

    /// The trace of the span `event` is in: its explicit parent, else the
    /// thread's current span. The current span is the subscriber's, not the
    /// log layer's: the request span is filtered out of the logs at the
    /// default level (see [`REQUEST_SPAN_TARGET`]) and still holds the trace.
    /// Asked on every event, not cached at span creation: a span's parent
    /// (and so its trace) may be set after it is created.
    fn trace_id(&self, event: &tracing::Event<'_>) -> Option<String> {
        use opentelemetry::trace::TraceContextExt as _;
        let dispatch = self.0.get()?.upgrade()?;
        let id = match event.parent() {
            Some(parent) => Some(parent.clone()),
            None if event.is_contextual() => dispatch.current_span().id().cloned(),
            None => return None,
        };
        // An unsampled request has no span: its trace is in the context it
        // runs in (`sampling`).
        let cx = match id.and_then(|id| tracing_opentelemetry::get_otel_context(&id, &dispatch)) {
            Some(cx) => cx,
            None => propagation::unsampled_request()?,
        };
        let span_context = cx.span().span_context().clone();
        span_context.is_valid().then(|| span_context.trace_id().to_string())
    }
}

/// Puts the trace id of the current span first in each JSON log line, so
/// a log search finds every line of a request, across both tiers, from the
/// id a client got in `x-trace-id` (or a trace viewer shows).
struct WithTraceId<F> {
    format: F,
    dispatch: DispatchHandle,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(trace_id) = self.dispatch.trace_id(event) else {
            return self.format.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.format.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
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
    // Every request span passes through this layer, sampled or not, so it
    // keeps to what a trace needs. Off: source locations and thread names
    // (allocated attributes on every span, the same for every request),
    // busy/idle timing (two clock reads each time a span is entered or
    // left) and context activation on entry (nothing here reads the ambient
    // context: propagation takes a span's context explicitly).
    tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_tracer(provider.tracer(service_name))
}

fn otlp_provider(service_name: &'static str) -> anyhow::Result<SdkTracerProvider> {
    // The exporter reads the endpoint, headers and timeout from the standard
    // OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("failed to build the OTLP span exporter")?;
    let resource = resource(service_name);
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG). The edge decides with
    // it before a request's span exists (`sampling`), and the SDK with the
    // same one, drawing a root's trace id where that decision preset it; the
    // batch processor exports on its own thread.
    let sampler = sampling::Sampler::from_env();
    sampling::install(sampler);
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler.to_sdk())
        .with_id_generator(sampling::PresetIds::default())
        .with_batch_exporter(exporter)
        .build())
}

/// The process's resource. The environment wins, as the OpenTelemetry
/// conventions say and deployments expect: `OTEL_SERVICE_NAME`, then
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (both read by the SDK's
/// builder, with the rest of `OTEL_RESOURCE_ATTRIBUTES`); `default_name` only
/// when neither names the service.
pub fn resource(default_name: &'static str) -> Resource {
    let named = |variable: &str| std::env::var(variable).ok();
    match fallback_service_name(default_name, named("OTEL_SERVICE_NAME"), named("OTEL_RESOURCE_ATTRIBUTES")) {
        Some(name) => Resource::builder().with_service_name(name).build(),
        None => Resource::builder().build(),
    }
}

/// `default_name`, unless the environment names the service.
fn fallback_service_name(
    default_name: &'static str,
    service_name: Option<String>,
    attributes: Option<String>,
) -> Option<&'static str> {
    let by_variable = service_name.is_some_and(|name| !name.trim().is_empty());
    let by_attribute = attributes.is_some_and(|attributes| {
        attributes
            .split(',')
            .any(|pair| pair.split_once('=').is_some_and(|(key, _)| key.trim() == "service.name"))
    });
    (!by_variable && !by_attribute).then_some(default_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_service_before_the_default() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(fallback_service_name("courtside", None, None), Some("courtside"));
        assert_eq!(fallback_service_name("courtside", some(""), None), Some("courtside"));
        assert_eq!(fallback_service_name("courtside", some("edge-eu"), None), None);
        assert_eq!(fallback_service_name("courtside", None, some("service.name=edge,team=live")), None);
        assert_eq!(
            fallback_service_name("courtside", None, some("deployment.environment=prod")),
            Some("courtside")
        );
    }

    /// The real environment, read by the SDK: this test runs itself again
    /// as a child process with the variables set (changing the environment
    /// of a running test process would race with other tests).
    #[test]
    fn otel_service_name_and_resource_attributes_are_honoured() {
        const PROBE: &str = "COURTSIDE_TELEMETRY_RESOURCE_PROBE";
        let attribute = |resource: &Resource, key: &'static str| {
            resource.get(&opentelemetry::Key::from_static_str(key)).map(|value| value.to_string())
        };
        if std::env::var_os(PROBE).is_some() {
            let resource = resource("courtside-default");
            println!(
                "service.name={} deployment.environment={}",
                attribute(&resource, "service.name").unwrap_or_default(),
                attribute(&resource, "deployment.environment").unwrap_or_default()
            );
            return;
        }
        let run = |vars: &[(&str, &str)]| {
            let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"));
            child.args([
                "--exact",
                "tests::otel_service_name_and_resource_attributes_are_honoured",
                "--nocapture",
            ]);
            child.env(PROBE, "1").env_remove("OTEL_SERVICE_NAME").env_remove("OTEL_RESOURCE_ATTRIBUTES");
            for (key, value) in vars {
                child.env(key, value);
            }
            let output = child.output().expect("the test binary runs");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "{stdout}");
            stdout
        };
        assert!(run(&[]).contains("service.name=courtside-default "));
        let named = run(&[
            ("OTEL_SERVICE_NAME", "edge-eu"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ]);
        assert!(named.contains("service.name=edge-eu deployment.environment=prod"), "{named}");
        let by_attribute = run(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")]);
        assert!(by_attribute.contains("service.name=from-attributes "), "{by_attribute}");
    }

    #[test]
    fn log_format_parses_case_insensitively_and_rejects_unknown_values() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        let err = "xml".parse::<LogFormat>().expect_err("unknown format");
        assert!(err.contains("\"xml\""), "{err}");
    }

    #[test]
    fn a_quiet_log_level_keeps_info_spans_in_the_traces() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::sink).boxed();
        let quiet = subscriber(logs, EnvFilter::new("warn"), Some(&provider), "filter-test");
        tracing::subscriber::with_default(quiet, || {
            tracing::info_span!("request").in_scope(|| tracing::debug_span!("detail").in_scope(|| {}));
        });
        let names: Vec<String> =
            exporter.get_finished_spans().expect("spans").into_iter().map(|s| s.name.into_owned()).collect();
        assert_eq!(names, vec!["request".to_owned()], "info spans exported, debug ones not");
    }

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn json_lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("utf-8 logs");
            text.lines().map(|line| serde_json::from_str(line).expect("each line is json")).collect()
        }
    }

    /// The request span as the gateway opens it: exported, and named as
    /// the trace of each JSON line inside it, but neither formatted nor
    /// printed by the logs at the default level.
    #[test]
    fn request_spans_are_exported_and_trace_json_lines_without_being_logged() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let handle = DispatchHandle::default();
        let logs = json_layer(move || writer.clone(), handle.clone()).boxed();
        let default =
            tracing::Dispatch::new(subscriber(logs, EnvFilter::new("info"), Some(&provider), "request-test"));
        handle.set(&default);

        let expected = tracing::dispatcher::with_default(&default, || {
            let span = tracing::debug_span!(target: REQUEST_SPAN_TARGET, "http.server", request_id = "r-2");
            let _entered = span.enter();
            tracing::debug!(target: REQUEST_SPAN_TARGET, "request done");
            tracing::warn!(request_id = "r-2", "request failed");
            propagation::trace_id(&span).expect("an exported span has a trace id")
        });

        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 1, "only the warning is logged: {lines:?}");
        assert_eq!(lines[0]["message"], "request failed");
        assert_eq!(lines[0]["trace_id"], expected.as_str());
        assert!(lines[0].get("span").is_none(), "the request span is not logged at info: {lines:?}");
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "http.server");
        assert_eq!(spans[0].span_context.trace_id().to_string(), expected);
        let events: Vec<&str> = spans[0].events.iter().map(|event| event.name.as_ref()).collect();
        assert_eq!(events, ["request failed"], "the request target's debug events are not span events");
    }

    /// What the process's level macros and `log` records are checked
    /// against before any filter runs: DEBUG for the request spans with
    /// export on, never TRACE.
    #[test]
    fn the_subscriber_hints_its_most_verbose_level() {
        use tracing::Subscriber as _;
        let provider = SdkTracerProvider::builder().build();
        let logs = || tracing_subscriber::fmt::layer().with_writer(std::io::sink).boxed();
        let exporting = subscriber(logs(), EnvFilter::new("info"), Some(&provider), "hint-test");
        assert_eq!(exporting.max_level_hint(), Some(LevelFilter::DEBUG));
        let quiet = subscriber(logs(), EnvFilter::new("info"), None, "hint-test");
        assert_eq!(quiet.max_level_hint(), Some(LevelFilter::INFO));
    }

    /// JSON log lines into a buffer, beside an exporter, as `init` wires
    /// them; the provider must live as long as the subscriber is used.
    fn json_logging() -> (Buffer, tracing::Dispatch, SdkTracerProvider) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = SdkTracerProvider::builder().build();
        let handle = DispatchHandle::default();
        let subscriber = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(json_layer(move || writer.clone(), handle.clone()))
                .with(otel_layer(&provider, "log-test")),
        );
        handle.set(&subscriber);
        (buffer, subscriber, provider)
    }

    #[test]
    fn json_lines_inside_a_traced_span_carry_its_trace_id() {
        let (buffer, subscriber, _provider) = json_logging();

        let expected = tracing::dispatcher::with_default(&subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("request", request_id = "r-1");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside the span");
            propagation::trace_id(&span).expect("a traced span has a trace id")
        });

        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "outside any span");
        assert!(lines[0].get("trace_id").is_none(), "{lines:?}");
        assert_eq!(lines[1]["trace_id"], expected.as_str());
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["span"]["request_id"], "r-1");
    }

    #[test]
    fn json_lines_of_an_unsampled_request_carry_its_trace_id_without_a_span() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        let (buffer, subscriber, _provider) = json_logging();
        let trace = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
        let unsampled =
            SpanContext::new(trace, SpanId::from(7u64), TraceFlags::default(), false, TraceState::default());
        let request = opentelemetry::Context::new().with_remote_span_context(unsampled);

        tracing::dispatcher::with_default(&subscriber, || {
            let _attached = request.attach();
            tracing::warn!("inside an unsampled request");
            assert_eq!(
                propagation::trace_id(&tracing::Span::none()).as_deref(),
                Some(trace.to_string().as_str())
            );
            assert_eq!(
                propagation::traceparent(&tracing::Span::none()),
                format!("00-{trace}-0000000000000007-00"),
                "propagated with the sampled flag off"
            );
        });
        tracing::dispatcher::with_default(&subscriber, || tracing::warn!("after it"));

        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["trace_id"], trace.to_string().as_str());
        assert!(lines[1].get("trace_id").is_none(), "{lines:?}");
    }
}

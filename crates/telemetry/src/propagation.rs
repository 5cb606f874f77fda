//! W3C trace context across process boundaries.
//!
//! The gateway injects the context of its gRPC client span into the request
//! metadata; the worker extracts it from the HTTP/2 headers and makes it the
//! parent of its server span. The global propagator set by
//! [`crate::install_propagator`] decides the header names (`traceparent`,
//! `tracestate`).

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context `span` stands in: its own, or, for no span, that of the
/// unsampled request being served ([`crate::sampling`]), whose trace must
/// still travel with the sampled flag off.
fn context_of(span: &tracing::Span) -> Context {
    if span.is_disabled() { unsampled_request().unwrap_or_default() } else { span.context() }
}

/// The context of the unsampled request being polled on this thread, if
/// any: valid, with the sampled flag off.
pub fn unsampled_request() -> Option<Context> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = Context::current();
    let span_context = cx.span().span_context().clone();
    (span_context.is_valid() && !span_context.is_sampled()).then_some(cx)
}

/// Writes the context of `span` into outgoing gRPC metadata.
pub fn inject_into_metadata(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = context_of(span);
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// The W3C `traceparent` of `span`, or an empty string when it is not
/// sampled or tracing is off. Stored with data that outlives the request
/// (event stream entries), so whoever processes it later can link back.
pub fn traceparent(span: &tracing::Span) -> String {
    let cx = context_of(span);
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Links `span` to the span a stored W3C `traceparent` names: for work that
/// happens later than, and outside of, the request that caused it (a stream
/// consumer), where a parent would be wrong but the trail must stay
/// followable. Empty or malformed values are ignored.
pub fn link_to_traceparent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    if traceparent.is_empty() {
        return;
    }
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Whether the sampler keeps `span`'s trace; false when nothing exports.
/// Asking starts the span in the exporter, so the sampler decides now
/// rather than when the span closes: a caller can then record the
/// attributes only a kept span needs, instead of every request paying for
/// attributes that are dropped with it.
pub fn is_sampled(span: &tracing::Span) -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// The trace id of `span` (or of the unsampled request being served, for no
/// span) as 32 hex digits, or `None` when nothing is traced (no exporter).
/// An unsampled request has one too: its log lines carry it, so a log
/// search still finds the request.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = context_of(span);
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// [`trace_id`] as a header value, for the `x-trace-id` of every response:
/// the hex written by hand rather than through `format!`, which costs a
/// request about as much as the rest of this lookup.
pub fn trace_id_header(span: &tracing::Span) -> Option<http::HeaderValue> {
    use opentelemetry::trace::TraceContextExt as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let cx = context_of(span);
    let span = cx.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let mut text = [0u8; 32];
    for (pair, byte) in text.chunks_exact_mut(2).zip(span_context.trace_id().to_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    http::HeaderValue::from_bytes(&text).ok()
}

/// Reads a remote parent context from incoming HTTP or gRPC headers.
pub fn extract_from_headers(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes `parent` the parent of `span`.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    // Fails only when the span is disabled by the filter; nothing to link then.
    let _ = span.set_parent(parent);
}

/// Makes the caller's context, if the headers carry one, the parent of
/// `span`. Headers without trace context leave `span` a root span.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    // A span nobody records (export off, logs above INFO) has no parent to
    // take: skip parsing the headers on every request.
    if span.is_disabled() {
        return;
    }
    let parent = extract_from_headers(headers);
    // Fails only when the span is disabled by the filter; nothing to link then.
    let _ = span.set_parent(parent);
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagator keys and values are ASCII; skip anything that is not
        // rather than fail the request over tracing.
        if let (Ok(key), Ok(value)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str()))
        {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn context_injected_into_metadata_is_extracted_from_the_headers() {
        crate::install_propagator();
        let remote = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(remote.clone());

        let mut metadata = MetadataMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(&mut metadata));
        });
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );

        let headers = metadata.into_headers();
        let extracted = extract_from_headers(&headers);
        assert_eq!(extracted.span().span_context().trace_id(), remote.trace_id());
        assert_eq!(extracted.span().span_context().span_id(), remote.span_id());
    }

    #[test]
    fn the_trace_id_header_is_the_trace_ids_32_hex_digits() {
        for hex in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "000000000000000000000000000000a1",
            "fedcba98765432100123456789abcdef",
        ] {
            let remote = SpanContext::new(
                TraceId::from_hex(hex).expect("trace id"),
                SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
                TraceFlags::default(),
                true,
                TraceState::default(),
            );
            let _attached = Context::new().with_remote_span_context(remote).attach();
            let header = trace_id_header(&tracing::Span::none()).expect("a valid context has an id");
            assert_eq!(header.to_str().ok(), Some(hex));
            assert_eq!(trace_id(&tracing::Span::none()).as_deref(), Some(hex), "the same as the text form");
        }
        let _attached = Context::new().attach();
        assert!(trace_id_header(&tracing::Span::none()).is_none(), "nothing traced, no header");
    }
}

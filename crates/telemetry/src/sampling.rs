//! Head sampling decided before a request's span exists.
//!
//! The OpenTelemetry SDK samples when a span starts, but a `tracing` span
//! costs its creation, an enter and an exit on every poll, and a close
//! whether or not it is kept: at 10 % sampling nine requests in ten paid
//! for a trace nobody kept. So the edge asks [`decide`] first, with the same
//! sampler the SDK was given (`OTEL_TRACES_SAMPLER`, `_ARG`; parent-based
//! ratio sampling decides on the trace id, so both agree):
//! - **sampled**: the request span is opened as before; a root takes the
//!   trace id the decision was made on ([`with_trace_id`], through the
//!   provider's [`PresetIds`]), so the SDK's own decision is the same;
//! - **not sampled**: no span at all. The request runs in an OpenTelemetry
//!   context holding its trace id and a span id of its own with the sampled
//!   flag off: the response still names its trace (`x-trace-id`), log lines
//!   still carry it, `traceparent` still reaches the worker (flag off, so it
//!   does not record either), and any span opened inside takes that context
//!   as its parent, so the SDK drops it too.
//!
//! Without an exporter nothing is decided ([`Decision::Span`]): the request
//! span is opened as before, and at the default log level it costs nothing.

use std::{cell::Cell, sync::OnceLock};

use opentelemetry::{
    Context,
    trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceId},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler as SdkSampler};

/// The process's head sampler, once an exporter is installed.
static HEAD: OnceLock<Sampler> = OnceLock::new();

/// A head sampler as the OpenTelemetry environment variables configure it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Whether a remote parent's sampled flag decides (`parentbased_*`).
    parent_based: bool,
    /// What decides a root (and, without `parentbased_`, every span).
    root: Root,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    On,
    Off,
    /// Sampled when the trace id's low 63 bits fall under the ratio, as the
    /// SDK's `TraceIdRatioBased` decides.
    Ratio(f64),
}

impl Sampler {
    /// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name,
    /// read as the SDK reads them: unset or unknown is
    /// `parentbased_always_on`, a ratio that does not parse is 1.
    pub fn from_env_values(sampler: Option<&str>, arg: Option<&str>) -> Self {
        let ratio = || Root::Ratio(arg.and_then(|arg| arg.trim().parse::<f64>().ok()).unwrap_or(1.0));
        let (parent_based, root) = match sampler.map(str::trim) {
            Some("always_on") => (false, Root::On),
            Some("always_off") => (false, Root::Off),
            Some("traceidratio") => (false, ratio()),
            Some("parentbased_always_off") => (true, Root::Off),
            Some("parentbased_traceidratio") => (true, ratio()),
            _ => (true, Root::On),
        };
        Self { parent_based, root }
    }

    /// The sampler the process's environment names.
    pub fn from_env() -> Self {
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::from_env_values(sampler.as_deref(), arg.as_deref())
    }

    /// The same sampler for the SDK, so that a span this one kept is kept
    /// there too.
    pub fn to_sdk(self) -> SdkSampler {
        let root = match self.root {
            Root::On => SdkSampler::AlwaysOn,
            Root::Off => SdkSampler::AlwaysOff,
            Root::Ratio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        };
        if self.parent_based { SdkSampler::ParentBased(Box::new(root)) } else { root }
    }

    /// Whether a span of trace `trace_id` under `parent` (invalid for a
    /// root) is sampled.
    pub fn samples(self, parent: &SpanContext, trace_id: TraceId) -> bool {
        if self.parent_based && parent.is_valid() {
            return parent.is_sampled();
        }
        match self.root {
            Root::On => true,
            Root::Off => false,
            Root::Ratio(ratio) => ratio_samples(ratio, trace_id),
        }
    }
}

/// The SDK's `TraceIdRatioBased` rule, to the bit.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or([0; 8]));
    (low >> 1) < bound
}

/// Makes `sampler` decide for every request of the process. Called once,
/// by [`crate::init`] when it installs an exporter.
pub fn install(sampler: Sampler) {
    let _ = HEAD.set(sampler);
}

/// What to do with one request's trace.
#[derive(Debug)]
pub enum Decision {
    /// Nothing decided here (no exporter): open the span as before.
    Span,
    /// Sampled: open the span. A root takes `trace_id` (see
    /// [`with_trace_id`]); with a remote parent it is `None`.
    Sampled { trace_id: Option<TraceId> },
    /// Not sampled: open no span, and run the request in this context.
    NotSampled(Context),
}

/// Decides, from the request's headers (its W3C trace context, if any),
/// whether its trace is kept.
pub fn decide(headers: &http::HeaderMap) -> Decision {
    let Some(sampler) = HEAD.get() else { return Decision::Span };
    let ids = RandomIdGenerator::default();
    // Without a `traceparent` header there is nothing to parse.
    let parent_cx = if headers.contains_key("traceparent") {
        crate::propagation::extract_from_headers(headers)
    } else {
        Context::new()
    };
    let parent = parent_cx.span().span_context().clone();
    let trace_id = if parent.is_valid() { parent.trace_id() } else { ids.new_trace_id() };
    if sampler.samples(&parent, trace_id) {
        return Decision::Sampled { trace_id: (!parent.is_valid()).then_some(trace_id) };
    }
    let own = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        TraceFlags::default(),
        false,
        parent.trace_state().clone(),
    );
    Decision::NotSampled(parent_cx.with_remote_span_context(own))
}

thread_local! {
    /// The trace id the next root span started on this thread takes.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Runs `open`, which opens and starts a root span, with `trace_id` as the
/// trace id the SDK draws for it ([`PresetIds`]): the SDK's sampler then sees
/// the trace id [`decide`] saw, and decides alike.
pub fn with_trace_id<T>(trace_id: Option<TraceId>, open: impl FnOnce() -> T) -> T {
    NEXT_TRACE_ID.set(trace_id);
    let opened = open();
    NEXT_TRACE_ID.set(None);
    opened
}

/// The provider's id generator: random ids, except a trace id preset by
/// [`with_trace_id`] for the span being opened.
#[derive(Debug, Default)]
pub struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        self.0.new_span_id()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceState};

    use super::*;

    fn remote(sampled: bool) -> SpanContext {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(TraceId::from(7u128), SpanId::from(9u64), flags, true, TraceState::default())
    }

    #[test]
    fn the_environment_is_read_as_the_sdk_reads_it() {
        let parsed = |s: Option<&str>, a: Option<&str>| Sampler::from_env_values(s, a);
        assert_eq!(parsed(None, None), Sampler { parent_based: true, root: Root::On });
        assert_eq!(parsed(Some("nonsense"), None), Sampler { parent_based: true, root: Root::On });
        assert_eq!(
            parsed(Some("parentbased_traceidratio"), Some("0.1")),
            Sampler { parent_based: true, root: Root::Ratio(0.1) }
        );
        assert_eq!(
            parsed(Some("traceidratio"), Some("lots")),
            Sampler { parent_based: false, root: Root::Ratio(1.0) }
        );
        assert_eq!(parsed(Some("always_off"), None), Sampler { parent_based: false, root: Root::Off });
    }

    #[test]
    fn a_remote_parent_decides_under_parentbased_and_the_ratio_decides_roots() {
        let sampler = Sampler::from_env_values(Some("parentbased_traceidratio"), Some("0.1"));
        assert!(sampler.samples(&remote(true), TraceId::from(u128::MAX)));
        assert!(!sampler.samples(&remote(false), TraceId::from(0u128)));
        let kept = (0..10_000u128)
            .filter(|i| {
                sampler.samples(
                    &SpanContext::empty_context(),
                    TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                )
            })
            .count();
        assert!((800..1_200).contains(&kept), "{kept} of 10,000 roots kept at 10 %");
    }

    #[test]
    fn the_ratio_rule_agrees_with_the_sdks_sampler() {
        use opentelemetry::trace::SpanKind;
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample as _};
        let ours = Sampler::from_env_values(Some("traceidratio"), Some("0.25"));
        let sdk = ours.to_sdk();
        for i in 0..2_000u128 {
            let trace_id = TraceId::from(i.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15));
            let decided = sdk.should_sample(None, trace_id, "x", &SpanKind::Server, &[], &[]).decision;
            assert_eq!(
                ours.samples(&SpanContext::empty_context(), trace_id),
                decided == SamplingDecision::RecordAndSample
            );
        }
    }

    #[test]
    fn a_preset_trace_id_is_drawn_once() {
        let ids = PresetIds::default();
        let preset = TraceId::from(42u128);
        let drawn = with_trace_id(Some(preset), || (ids.new_trace_id(), ids.new_trace_id()));
        assert_eq!(drawn.0, preset);
        assert_ne!(drawn.1, preset, "only the first root takes it");
        assert_ne!(ids.new_trace_id(), preset);
    }
}
